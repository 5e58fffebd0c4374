"""reference_rules.py PROBE: the output parser against an independent transcription of
its rules (engine/chat/parser.c), on random model outputs built from markers, whitespace,
valid and malformed tool calls, JSON strings holding markers, stray quotes and unicode.

The reference works on the whole text with str.partition / str.find and Python's json
module, the way the rules are worded; the parser streams with a state machine (and stops
early on blocks that cannot become valid). Both must agree on every case."""
import json
import random
import subprocess
import sys

WS = " \t\n\r"


def arguments_span(body):
    """Source text of the first top-level "arguments" value, via json's raw_decode."""
    dec = json.JSONDecoder(strict=False)
    i = len(body) - len(body.lstrip(WS)) + 1  # past "{"
    while True:
        while body[i] in WS:
            i += 1
        if body[i] == "}":
            return None
        key, i = dec.raw_decode(body, i)
        while body[i] in WS:
            i += 1
        i += 1  # ":"
        while body[i] in WS:
            i += 1
        value, end = dec.raw_decode(body, i)
        if key == "arguments":
            return body[i:end]
        i = end
        while body[i] in WS:
            i += 1
        if body[i] == "}":
            return None
        i += 1  # ","


def as_call(body):
    try:
        obj = json.loads(body, strict=False)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        return None
    if "arguments" not in obj:
        return obj["name"], "{}"
    args = obj["arguments"]
    if isinstance(args, str):
        return obj["name"], args
    if isinstance(args, dict):
        return obj["name"], arguments_span(body)
    return None


def reference(text, flags):
    reasoning, content = None, text
    if "reasoning" in flags or "think_open" in flags:
        t = text.lstrip("\n")
        opened = "think_open" in flags  # by the prompt, or by the model:
        if t.startswith("<think>"):
            t, opened = t[len("<think>"):], True
        if opened:
            if "</think>" in t:
                r, _, content = t.partition("</think>")
                content = content.lstrip("\n")
            else:
                r, content = t, ""
            reasoning = r.strip("\n")
    if "tools" not in flags:
        return {"reasoning_content": reasoning or None, "content": content or None, "tool_calls": None}
    pieces, calls, seg, pos = [], [], "", 0
    while True:
        s = content.find("<tool_call>", pos)
        if s < 0:
            seg += content[pos:]
            break
        b = s + len("<tool_call>")
        first = content.find("</tool_call>", b)
        e, call = first, None
        while e >= 0 and call is None:
            call = as_call(content[b:e])
            if call is None:
                e = content.find("</tool_call>", e + 1)
        if call:
            pieces.append((seg + content[pos:s]).rstrip(WS))
            seg = ""
            calls.append(call)
            pos = e + len("</tool_call>")
        elif first < 0:
            seg += content[pos:]
            break
        else:
            seg += content[pos:first + len("</tool_call>")]
            pos = first + len("</tool_call>")
    if not (calls and seg.strip(WS) == ""):
        pieces.append(seg)
    content = "".join(pieces)
    return {
        "reasoning_content": reasoning or None,
        "content": content or None,
        "tool_calls": [
            {"id": f"call_{i}", "type": "function", "function": {"name": n, "arguments": a}}
            for i, (n, a) in enumerate(calls)
        ] or None,
    }


ARGS = ['{}', '{"city": "Paris"}', '{"q": "</tool_call>"}', '{"a": [1, {"b": "}"}], "c": null}',
        '{"s": "say \\"hi\\" \\\\"}', '{"t":"x","u":2.50}', '{"emoji": "👍🏽", "中": "文"}']
FRAGMENTS = ["Hello", " world", "世界", "é", "🙂", " ", "\n", "\n\n", "\t", "\r\n", "{", "}", '"', "\\",
             "<", ">", "/", "<tool", "<tool_call", "</tool_call", "<think", "</think", "<think>",
             "</think>", "<tool_call>", "</tool_call>", '{"name": "f"', '"arguments": ', ", ", ":"]


def random_call(rng):
    name = rng.choice(["get_weather", "f", "搜索", "x_y"])
    kind = rng.random()
    if kind < 0.6:
        body = '{"name": "%s", "arguments": %s}' % (name, rng.choice(ARGS))
    elif kind < 0.7:
        body = '{"arguments": %s, "name": "%s"}' % (rng.choice(ARGS), name)
    elif kind < 0.75:
        body = '{"name": "%s"}' % name
    elif kind < 0.8:
        body = json.dumps({"name": name, "arguments": rng.choice(ARGS)})  # arguments as a string
    else:
        body = rng.choice(['{bad json}', '{"name": "", "arguments": {}}', '[1, 2]', '{"name": "a", "arguments": {"x": "oops}}',
                           '{"name": "a", "arguments": 3}', '', '{"name": "a", "arguments": {"x": }'])
    ws1, ws2 = rng.choice(["\n", "", " "]), rng.choice(["\n", "", "\n\n"])
    return "<tool_call>" + ws1 + body + ws2 + rng.choice(["</tool_call>", "</tool_call>", ""])


def random_output(rng):
    parts = []
    if rng.random() < 0.5:
        parts.append(rng.choice(["<think>\n", "", "\n<think>", "<think>"]))
        parts += [rng.choice(FRAGMENTS) for _ in range(rng.randint(0, 5))]
        if rng.random() < 0.8:
            parts.append(rng.choice(["\n</think>\n\n", "</think>", "\n\n</think>\n"]))
    for _ in range(rng.randint(0, 8)):
        r = rng.random()
        parts.append(random_call(rng) if r < 0.35 else rng.choice(FRAGMENTS))
    return "".join(parts)


def main():
    probe = sys.argv[1]
    rng = random.Random(7)
    flag_sets = ["tools", "reasoning tools", "think_open tools", "", "reasoning", "think_open"]
    cases = [(random_output(rng), rng.choice(flag_sets)) for _ in range(4000)]
    text = "".join(json.dumps({"flags": f, "input": s}, ensure_ascii=False) + "\n" for s, f in cases)
    out = subprocess.run([probe], input=text.encode(), capture_output=True, check=True).stdout.decode()
    lines = out.splitlines()
    assert len(lines) == len(cases)
    bad = 0
    calls = 0
    for (s, flags), line in zip(cases, lines):
        got, want = json.loads(line), reference(s, flags.split())
        calls += len(want["tool_calls"] or [])
        if got != want:
            bad += 1
            if bad <= 10:
                print(f"input {s!r} (flags {flags!r}):\n  parser:    {got}\n  reference: {want}")
    print(f"reference_rules: {len(cases) - bad}/{len(cases)} outputs agree ({calls} tool calls)")
    sys.exit(1 if bad else 0)


main()

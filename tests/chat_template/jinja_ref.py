"""jinja_ref.py: the reference renderer, Jinja2 configured exactly as transformers does.

transformers compiles chat templates with ImmutableSandboxedEnvironment(trim_blocks=True,
lstrip_blocks=True, extensions=[loopcontrols]), overrides the tojson filter with
json.dumps(x, ensure_ascii=False, ...) and adds the raise_exception and strftime_now
globals. The request is prepared as engine/chat/template.c prepares it (which is what
vLLM does): text parts joined with "\\n", assistant content null -> "", tool call
arguments given as a JSON string parsed into an object, tools absent -> None,
add_generation_prompt default True, chat_template_kwargs and the special tokens of
tokenizer_config.json as template variables.

Usage: /usr/bin/python3 jinja_ref.py (--model DIR | --template FILE) --request FILE.json
"""
import argparse
import copy
import datetime
import json
import os
import sys

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt):
    return datetime.datetime.now().strftime(fmt)


def compile_template(source):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(source)


def _token_text(v):
    if isinstance(v, str):
        return v
    if isinstance(v, dict) and isinstance(v.get("content"), str):
        return v["content"]
    return None


def load_model(model_dir):
    """Returns (template source, special token variables) for a model directory."""
    special = {}
    cfg = None
    path = os.path.join(model_dir, "tokenizer_config.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
        for name in ("bos_token", "eos_token", "unk_token", "pad_token"):
            text = _token_text(cfg.get(name))
            if text is not None:
                special[name] = text
        extra = cfg.get("additional_special_tokens")
        if isinstance(extra, list):
            special["additional_special_tokens"] = [t for t in map(_token_text, extra) if t is not None]
    jinja_path = os.path.join(model_dir, "chat_template.jinja")
    if os.path.exists(jinja_path):
        with open(jinja_path, encoding="utf-8") as f:
            return f.read(), special
    return cfg["chat_template"], special


def prepare(request, special):
    """The template variables for a request, as template.c builds them."""
    messages = copy.deepcopy(request["messages"])
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            m["content"] = "\n".join(part["text"] for part in content)
        elif content is None and m["role"] == "assistant":
            m["content"] = ""
        if m["role"] == "assistant" and isinstance(m.get("tool_calls"), list):
            for call in m["tool_calls"]:
                fn = call["function"]
                args = fn.get("arguments")
                if args is None or args == "":
                    fn["arguments"] = {}
                elif isinstance(args, str):
                    fn["arguments"] = json.loads(args)
    variables = dict(special)
    tools = request.get("tools")
    variables.update(
        messages=messages,
        tools=tools if isinstance(tools, list) else None,
        documents=None,
        add_generation_prompt=request.get("add_generation_prompt", True),
    )
    variables.update(request.get("chat_template_kwargs") or {})
    return variables


def render(source, request, special=None):
    return compile_template(source).render(**prepare(request, special or {}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--template")
    ap.add_argument("--request", required=True)
    args = ap.parse_args()
    if args.model:
        source, special = load_model(args.model)
    else:
        with open(args.template, encoding="utf-8") as f:
            source, special = f.read(), {}
    with open(args.request, encoding="utf-8") as f:
        request = json.load(f)
    sys.stdout.write(render(source, request, special))


if __name__ == "__main__":
    main()

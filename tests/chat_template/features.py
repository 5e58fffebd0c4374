"""features.py: the Jinja interpreter against Jinja2 on many small templates.

Each case is a template and a JSON object of variables. Jinja2 is configured as
transformers configures it (jinja_ref.compile_template); the C side is jinja_run. A case
passes when the outputs are byte-identical, or when both sides reject the template
(syntax errors, raise_exception, undefined calls ...: the C message must then name the
template line, which is checked against Jinja2's lineno when Jinja2 reports one).

Usage: /usr/bin/python3 features.py --jinja-run BIN
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import jinja2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jinja_ref  # noqa: E402

V = {"s": "Hello, World", "n": 7, "f": 2.5, "neg": -3, "t": True, "no": False, "z": None,
     "l": [3, 1, 2], "words": ["b", "A", "c", "a"], "e": [], "d": {"b": 1, "a": 2, "c": 0},
     "u": "héllo wörld ✓ 你好", "msgs": [{"role": "user", "content": "hi", "n": 2},
                                      {"role": "assistant", "content": "yo", "n": 1},
                                      {"role": "user", "content": "bye", "n": 3}],
     "nested": {"a": {"b": {"c": [10, 20, {"d": "deep"}]}}}, "q": "it's \"quoted\"\n\ttab\\",
     "big": 9007199254740991, "fl": [0.1, 1e-05, 1e+16, 123456789.125, -0.0, 1e300, 3.14159]}

CASES = [
    # --- text, whitespace control, trim_blocks, lstrip_blocks, comments
    "plain text\nwith lines\n",
    "a\n{% if t %}\nyes\n{% endif %}\nb\n",
    "a\n    {% if t %}\n    yes\n    {% endif %}\nb",
    "a  {%- if t -%}  yes  {%- endif -%}  b",
    "x {{- ' y ' -}} z",
    "  {{ s }}  \n  {%+ if t %}kept indent{% endif %}\n",
    "line\n  {# comment #}\nafter\n  {#- c2 -#}  tail",
    "{% if t %}a{% endif +%}\nb",
    "{% for i in l %}\n  {{ i }}\n{% endfor %}\n",
    "{%- for i in l -%}\n  [{{ i }}]\n{%- endfor %}",
    "  {% for i in l %}{{ i }}{% endfor %}  ",
    "\t{% if t %}\n\tx\n\t{% endif %}",
    "a\r\nb\r\n{% if t %}\r\nc\r\n{% endif %}\r\n",
    "trailing newline kept?\n\n",
    "{{ '{{' }} {{ '}}' }} {{ {'a': {'b': 1}} }}",
    "{% raw %}{{ not rendered }} {% if %}{% endraw %} after",
    "  {%- raw -%}  x  {%- endraw -%}  y",
    "{# multi\nline\ncomment #}z",
    # --- literals and printing
    "{{ 1 }} {{ -1 }} {{ 1.5 }} {{ 1e3 }} {{ 1_000 }} {{ 0.1 + 0.2 }} {{ 10 / 4 }} {{ 10 // 4 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 2 ** -1 }}",
    "{{ true }} {{ True }} {{ false }} {{ none }} {{ None }} {{ z }} {{ undefined_var }}|",
    "{{ l }} {{ d }} {{ (1, 2) }} {{ (1,) }} {{ () }} {{ [] }} {{ {} }} {{ ['a', \"b'c\", 'd\"e', 'f\\'g\"h'] }}",
    "{{ fl }} {{ fl[0] }} {{ fl|tojson }}",
    "{{ [q] }} {{ [u] }} {{ {'k': [none, true, 1.0]} }}",
    "{{ 'a' 'b' \"c\" }} {{ '\\x41\\u00e9\\U0001F600\\n\\t|' }} {{ 'back\\\\slash' }} {{ 'unknown \\q escape' }}",
    "{{ 'a' ~ 1 ~ none ~ true ~ l }} {{ s ~ undefined_var ~ '!' }}",
    "{{ 'ab' * 3 }} {{ 3 * 'x' }} {{ [1] * 2 }} {{ 'ab' + 'cd' }} {{ l + [4] }} {{ 1 + 2.5 }} {{ true + 1 }}",
    "{{ big }} {{ big + 1 }} {{ -big }}",
    # --- comparisons, logic, membership, inline if
    "{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 1 == 1.0 }} {{ 'a' != 'b' }} {{ 'abc' < 'abd' }} {{ [1, 2] < [1, 3] }} {{ 1 == true }} {{ none == none }}",
    "{{ 'ell' in s }} {{ 'x' not in s }} {{ 2 in l }} {{ 'a' in d }} {{ 'zz' in d }} {{ 1 in [1.0] }}",
    "{{ t and 'yes' }} {{ no or 'fallback' }} {{ not t }} {{ not no and t }} {{ z or e or 'last' }} {{ 0 and 1 }}",
    "{{ 'a' if t else 'b' }} {{ 'a' if no else 'b' }} {{ 'x' if no }}| {{ 1 if no else 2 if t else 3 }}",
    "{{ (1 + 2) * 3 }} {{ 1 + 2 * 3 }} {{ 2 * 3 ** 2 }} {{ -2 ** 2 }} {{ 10 - 2 - 3 }} {{ 2 ** 3 ** 2 }}",
    # --- indexing, slicing, attributes
    "{{ l[0] }} {{ l[-1] }} {{ s[0] }} {{ s[-1] }} {{ u[1] }} {{ msgs[1].role }} {{ msgs[1]['content'] }} {{ nested.a.b.c[2].d }} {{ l.1 }}",
    "{{ l[::-1] }} {{ l[1:] }} {{ l[:1] }} {{ l[::2] }} {{ s[::-1] }} {{ u[::-1] }} {{ s[2:5] }} {{ s[-5:] }} {{ l[5:] }} {{ l[-10:10:3] }} {{ s[::-3] }}",
    "{{ msgs[5] }}|{{ d.missing }}|{{ d['missing'] }}|{{ msgs[0].nothing }}|",
    "{{ d.items is callable }} {{ s.upper is callable }}",
    "{{ d['b'] }} {{ d.get('a') }} {{ d.get('x') }} {{ d.get('x', 'dflt') }} {{ d.keys()|list }} {{ d.values()|list }} {{ d.items()|list }}",
    # --- for loops
    "{% for i in l %}{{ loop.index0 }}{{ loop.index }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }};{% endfor %}",
    "{% for i in l %}{{ loop.previtem }}-{{ loop.nextitem }}|{{ loop.cycle('odd', 'even') }};{% endfor %}",
    "{% for k in d %}{{ k }}{% endfor %} {% for k, v in d.items() %}{{ k }}={{ v }},{% endfor %} {% for c in 'héllo' %}[{{ c }}]{% endfor %}",
    "{% for i in e %}x{% else %}empty{% endfor %} {% for i in undefined_thing %}x{% else %}none{% endfor %}",
    "{% for i in l if i > 1 %}{{ i }}:{{ loop.index }}/{{ loop.length }} {% endfor %}",
    "{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 6 %}{% break %}{% endif %}{{ i }}{% endfor %}",
    "{% for a in [[1, 2], [3, 4]] %}{% for b in a %}{{ loop.index }}{{ b }}{% endfor %}|{{ loop.index }}{% endfor %}",
    "{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }}{% endfor %} {% for x in (1, 2) %}{{ x }}{% endfor %}",
    "{{ range(5)|list }} {{ range(2, 5)|list }} {{ range(10, 0, -3)|list }} {{ range(0)|list }} {{ range(5)|length }}",
    # --- set, scoping, namespace
    "{% set x = 5 %}{{ x }}{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set t2 = 1, 2 %}{{ t2 }}",
    "{% set x = 1 %}{% for i in l %}{% set x = i %}{{ x }}{% endfor %}{{ x }}",
    "{% set x = 1 %}{% if t %}{% set x = 2 %}{% endif %}{{ x }}",
    "{% set ns = namespace(count=0, names=[]) %}{% for m in msgs %}{% if m.role == 'user' %}{% set ns.count = ns.count + 1 %}{% endif %}{% endfor %}{{ ns.count }} {{ ns.names }}",
    "{% set ns = namespace() %}{% set ns.x = 'set later' %}{{ ns.x }}",
    "{% set block %}inside {{ s }}{% endset %}[{{ block }}]",
    "{% set upper_block | upper | trim %}  shout {{ n }}  {% endset %}[{{ upper_block }}]",
    "{% with a = 1, b = s %}{{ a }}{{ b }}{% endwith %}{{ a }}|",
    "{% set x = 'outer' %}{% for i in [1,2] %}[{{ x }}]{% set x = i %}{% endfor %}{{ x }}",
    "{% for i in [1,2] %}[{{ y }}]{% set y = i %}{% endfor %}[{{ y }}]",
    "{% for i in [1,2,3] %}{% if loop.first %}{% set first = i %}{% endif %}[{{ first }}]{% endfor %}",
    "{% set a = [1] %}{% for i in a %}{% set a = [5, 6] %}{{ a }}{% endfor %}{{ a }}",
    "{% set x = 'a' %}{% for x in [1, 2] %}{% endfor %}{{ x }} {% for q in [1] %}{% endfor %}[{{ q }}]",
    "{% set ns = namespace(a=1) %}{% macro m() %}{% set ns.a = 9 %}{% endmacro %}{{ m() }}{{ ns.a }}",
    "{% macro m() %}{{ late }}{% endmacro %}{% set late = 2 %}{{ m() }}",
    "{% if t: %}colon{% elif no: %}x{% else: %}y{% endif %} {% for i in l: %}{{ i }}{% endfor %}",
    "{{ d[] }}|{{ {(1, 2): 'tuple key'}[1, 2] }}|",
    # --- macros and call
    "{% macro hello(name, greeting='Hi') %}{{ greeting }}, {{ name }}!{% endmacro %}{{ hello('Bob') }} {{ hello('Ann', greeting='Yo') }} {{ hello(name='Z') }}",
    "{% macro m(a, b) %}[{{ a }}|{{ b }}|{{ varargs }}|{{ kwargs }}]{% endmacro %}{{ m(1) }}{{ m(1, 2, 3, 4) }}{{ m(1, b=2, c=3) }}",
    "{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}{% call wrap('b') %}bold {{ s }}{% endcall %}",
    "{% macro rows(items) %}{% for i in items %}{{ caller(i) }}{% endfor %}{% endmacro %}{% call(x) rows(l) %}<{{ x * 2 }}>{% endcall %}",
    "{% macro fact(n) %}{% if n <= 1 %}1{% else %}{{ n * fact(n - 1)|int }}{% endif %}{% endmacro %}{{ fact(6) }}",
    "{% set outer = 'O' %}{% macro see() %}{{ outer }}{% endmacro %}{{ see() }}",
    "{% filter upper %}loud {{ s }}{% endfilter %}",
    # --- filters
    "{{ s|length }} {{ u|length }} {{ l|length }} {{ d|count }} {{ e|length }} {{ undefined_var|length }}",
    "{{ l|first }} {{ l|last }} {{ s|first }} {{ d|first }} {{ e|first }}|",
    "{{ words|join }} {{ words|join(', ') }} {{ l|join('-') }} {{ msgs|join(', ', attribute='role') }}",
    "{{ '  pad  '|trim }}|{{ 'xxhixx'|trim('x') }}|{{ s|upper }} {{ s|lower }} {{ 'hello big-world (x)'|title }} {{ 'hELLO'|capitalize }} {{ u|upper }}",
    "{{ s|replace('l', 'L') }} {{ s|replace('l', 'L', 2) }} {{ s|replace('', '.') }}",
    "{{ undefined_var|default('dflt') }} {{ z|default('dflt') }} {{ ''|default('dflt', true) }} {{ 0|d('zero', boolean=true) }} {{ s|default('x') }}",
    "{{ d|items|list }} {{ d|dictsort }} {{ d|dictsort(reverse=true) }} {{ d|dictsort(by='value') }}",
    "{{ l|list }} {{ 'abc'|list }} {{ d|list }} {{ l|sort }} {{ l|sort(reverse=true) }} {{ words|sort }} {{ words|sort(case_sensitive=true) }} {{ msgs|sort(attribute='n')|map(attribute='content')|list }}",
    "{{ [none, 'x']|map('default', 'dflt', boolean=true)|list }} {{ [[1, 2], [3]]|map('join', '+')|list }}",
    "{{ msgs|map(attribute='role')|list }} {{ words|map('upper')|list }} {{ l|map('string')|join }} {{ msgs|map(attribute='missing', default='?')|list }}",
    "{{ msgs|selectattr('role', 'equalto', 'user')|map(attribute='content')|list }} {{ msgs|rejectattr('role', '==', 'user')|list|length }} {{ msgs|selectattr('n')|list|length }}",
    "{{ [0, 1, 2, none, '']|select|list }} {{ l|select('odd')|list }} {{ l|reject('odd')|list }} {{ range(10)|select('divisibleby', 3)|list }} {{ l|select('gt', 1)|list }}",
    "{{ l|sum }} {{ fl[:2]|sum }} {{ msgs|sum(attribute='n') }} {{ l|min }} {{ l|max }} {{ words|min }} {{ words|max(case_sensitive=true) }} {{ e|min }}|",
    "{{ ['a', 'A', 'b', 'a']|unique|list }} {{ l|reverse|list }} {{ s|reverse }} {{ -3|abs }} {{ -2.5|abs }}",
    "{{ '42'|int }} {{ '4.7'|int }} {{ 'x'|int }} {{ 'x'|int(9) }} {{ 3.9|int }} {{ '2.5'|float }} {{ 3|float }} {{ 'no'|float }} {{ true|int }}",
    "{{ 2.567|round }} {{ 2.567|round(2) }} {{ 2.5|round(0, 'floor') }} {{ 2.1|round(0, 'ceil') }} {{ 7|round }}",
    "{{ 'a\\nb\\n\\nc'|indent }}|{{ 'a\\nb'|indent(2, true) }}|{{ 'a\\n\\nb'|indent('> ', blank=true) }}",
    "{{ 'one two  three\\nfour'|wordcount }} {{ '<a href=\"x\">&\\'</a>'|e }} {{ '<b>'|safe }} {{ s|string }} {{ l|string }} {{ d|attr('items') is callable }}",
    "{{ l|batch(2)|list }} {{ l|batch(2, 'x')|list }}",
    # --- tojson (transformers' override)
    "{{ d|tojson }} {{ msgs|tojson }} {{ q|tojson }} {{ u|tojson }} {{ [none, true, false, 1, 2.5]|tojson }} {{ {}|tojson }} {{ []|tojson }}",
    "{{ nested|tojson(indent=2) }}",
    "{{ d|tojson(sort_keys=true) }} {{ l|tojson(separators=(',', ':')) }} {{ {1: 'int key', none: 'n', true: 't'}|tojson }}",
    "{{ '\\x00\\x01\\x1f\\x7f\\u2028'|tojson }} {{ fl|tojson }}",
    # --- string methods
    "{{ s.startswith('Hell') }} {{ s.startswith(('x', 'H')) }} {{ s.endswith('World') }} {{ s.endswith('x') }}",
    "{{ s.split(', ') }} {{ '  a  b \\n c '.split() }} {{ 'a,b,,c'.split(',') }} {{ 'a,b,c'.split(',', 1) }} {{ 'a,b,c'.rsplit(',', 1) }} {{ '  a b c '.split(none, 1) }}",
    "[{{ '  x  '.strip() }}][{{ '  x  '.lstrip() }}][{{ '  x  '.rstrip() }}][{{ '\\n\\nx\\n'.strip('\\n') }}][{{ 'xyxhixyx'.strip('xy') }}][{{ '\\u3000wide\\u00a0'.strip() }}]",
    "{{ s.replace('o', '0') }} {{ s.replace('o', '0', 1) }} {{ s.upper() }} {{ s.lower() }} {{ 'hello wORLD it\\'s'.title() }} {{ 'hELLO'.capitalize() }}",
    "{{ s.find('o') }} {{ s.rfind('o') }} {{ s.find('zz') }} {{ u.find('w') }} {{ s.count('l') }} {{ ', '.join(words) }} {{ 'a\\nb\\r\\nc'.splitlines() }}",
    "{{ '123'.isdigit() }} {{ 'abc'.isalpha() }} {{ 'a1'.isalnum() }} {{ '  '.isspace() }} {{ 'ABC'.isupper() }} {{ 'abc'.islower() }} {{ ''.isdigit() }}",
    "{{ msgs[2].content.split('y')[-1] }} {{ ('<think>a</think>b'.split('</think>')[0]).split('<think>')[-1] }}",
    # --- tests
    "{{ x is defined }} {{ s is defined }} {{ x is undefined }} {{ z is none }} {{ s is string }} {{ n is string }} {{ d is mapping }} {{ l is mapping }}",
    "{{ l is iterable }} {{ s is iterable }} {{ n is iterable }} {{ l is sequence }} {{ n is number }} {{ f is number }} {{ t is number }} {{ n is integer }} {{ f is float }} {{ t is boolean }}",
    "{{ t is true }} {{ no is false }} {{ 1 is true }} {{ n is odd }} {{ n is even }} {{ 9 is divisibleby 3 }} {{ 9 is divisibleby(4) }} {{ s is lower }} {{ 'ABC' is upper }}",
    "{{ n is eq 7 }} {{ n is ne 7 }} {{ n is lt 8 }} {{ n is ge 7 }} {{ n is gt(7) }} {{ 'a' is in 'abc' }} {{ 2 is in l }} {{ z is sameas none }} {{ t is sameas true }}",
    "{{ 1 is in undefined_var }} {{ 'a' is in undefined_var }}",
    "{{ x is not defined }} {{ not x is defined }} {{ s is not none }} {{ 'upper' is filter }} {{ 'nope' is filter }} {{ 'odd' is test }} {{ range is callable }}",
    # --- globals
    "{{ dict(a=1, b='x') }} {{ namespace(a=1).a }} {% set c = cycler('x', 'y') %}{{ c.next() }}{{ c.next() }}{{ c.next() }}{{ c.current }}",
    "{{ raise_exception is defined }}",
    # --- chat-template idioms
    "{%- for message in msgs %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt is not defined or add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}",
    "{%- set ns = namespace(last=msgs|length - 1) %}{%- for m in msgs[::-1] %}{%- set idx = (msgs|length - 1) - loop.index0 %}{%- if m.role == 'user' and ns.last == msgs|length - 1 %}{%- set ns.last = idx %}{%- endif %}{%- endfor %}{{ ns.last }}",
    "{{ (msgs|selectattr('role', 'eq', 'user')|list|last).content }} {{ msgs|map(attribute='content')|select('string')|join('|') }}",
    # --- found by differential fuzzing
    "{{ f|wordcount }} {{ 'a_b c-d é1'|wordcount }} {{ 2.0 is even }} {{ 3.0 is odd }} {{ 7.5 is divisibleby 2.5 }} {{ -3 is odd }} {{ d is lower }} {{ 'AB1' is upper }}",
    "{{ false % -0.5 }} {{ 0.0 % 2 }} {{ -1 % 0.5 }} {{ 7.5 % -2 }} {{ -7 // 2.0 }}",
    "{% if no %}{{ x|no_such_filter }}{{ x is no_such_test }}{% endif %}deferred inside if",
    "{{ 'a' if t else x|no_such_filter }} {{ s|upper.x if no }}|",
    # --- errors: both sides must reject
    "{% if t %}{% for i in l %}{{ i|no_such_filter }}{% endfor %}{% endif %}",
    "{% if t %}{{ s|no_such_filter }}{% endif %}",
    "{% macro m() %}{{ 1 is no_such_test }}{% endmacro %}",
    "{% set b %}{{ 1|nope }}{% endset %}",
    "{{ undefined_var|int }}",
    "{{ 10.0 ** 1000 }}",
    "{{ 5|indent }}",
    "{{ raise_exception('custom failure') }}",
    "line1\nline2 {{ raise_exception('on line 2') }}",
    "{% if t %}unclosed",
    "{% for x in l %}{% endif %}",
    "{% endfor %}",
    "{{ 1 + }}",
    "{{ (1, 2 }}",
    "{{ x | nosuchfilter }}",
    "{{ x is nosuchtest }}",
    "{{ undefined_fn() }}",
    "{{ undefined_var.attr }}",
    "{{ undefined_var + 1 }}",
    "{{ 'a' + 1 }}",
    "{{ 1 / 0 }}",
    "{{ 'a' < 1 }}",
    "{{ n() }}",
    "{% break %}",
    "{{ l[1,] }}",
    "{{ s is string 1 }}",
    "{{ s is defined(1) }}",
    "{{ 'unterminated }}",
    "{% set 1 = 2 %}",
    "{% nosuchtag %}",
    "{# unterminated comment",
    "{{ range(1000000)|length }}",
    "{% set x = z.attr %}",
    "{{ l.append(4) }}",
    "{% set d.x = 1 %}",
    "{{ none|tojson }}{{ undefined_var|tojson }}",
    "{% macro m(a) %}{{ a }}{% endmacro %}{{ m(1, a=2) }}",
    "{{ 'x'.split('') }}",
    "{% for a, b in [[1, 2, 3]] %}{% endfor %}",
    "{{ l[::0] }}",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jinja-run", required=True)
    args = ap.parse_args()
    failures = []
    ok = 0
    with tempfile.TemporaryDirectory() as tmp:
        vpath = os.path.join(tmp, "vars.json")
        with open(vpath, "w", encoding="utf-8") as f:
            json.dump(V, f, ensure_ascii=False)
        for i, src in enumerate(CASES):
            tpath = os.path.join(tmp, "t%d.jinja" % i)
            with open(tpath, "w", encoding="utf-8", newline="") as f:
                f.write(src)
            want = err = None
            lineno = None
            try:
                want = jinja_ref.compile_template(src).render(**V).encode("utf-8")
            except jinja2.exceptions.TemplateSyntaxError as e:
                err, lineno = "%s: %s" % (type(e).__name__, e), e.lineno
            except Exception as e:
                err = "%s: %s" % (type(e).__name__, e)
            run = subprocess.run([args.jinja_run, tpath, vpath], capture_output=True, timeout=60)
            stderr = run.stderr.decode(errors="replace").strip()
            label = "case %d %r" % (i, src[:70])
            if want is None:
                if run.returncode == 0:
                    failures.append("%s: Jinja2 failed (%s) but C rendered %r" % (label, err, run.stdout[:80]))
                elif run.returncode != 1 or "\n" in stderr or "template line" not in stderr:
                    failures.append("%s: bad error report (rc %d): %r" % (label, run.returncode, stderr))
                elif lineno is not None and ("template line %d:" % lineno) not in stderr:
                    failures.append("%s: Jinja2 says line %d, C says %r" % (label, lineno, stderr))
                else:
                    ok += 1
                continue
            if run.returncode != 0:
                failures.append("%s: C failed: %s" % (label, stderr))
            elif run.stdout != want:
                failures.append("%s:\n   C:      %r\n   Jinja2: %r" % (label, run.stdout, want))
            else:
                ok += 1
    for f in failures:
        print("FAIL", f)
    print("jinja features: %d of %d cases agree with Jinja2" % (ok, len(CASES)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

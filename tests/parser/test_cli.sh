#!/bin/sh
# test_cli.sh TANDEM: `tandem parse` on a few outputs, and each bad input gives one
# error line and a non-zero exit.
set -u
tandem="$1"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail=0
mkdir "$dir/model" "$dir/nocfg" "$dir/badcfg"
echo '{"model_type": "qwen3"}' > "$dir/model/config.json"
echo '[1, 2' > "$dir/badcfg/config.json"

expect_out() { # name, expected stdout, command...
    name=$1; want=$2; shift 2
    got=$("$@" 2>"$dir/err"); rc=$?
    if [ $rc -ne 0 ] || [ "$got" != "$want" ]; then
        echo "FAIL $name: rc=$rc"; echo "  got:  $got"; echo "  want: $want"; cat "$dir/err"; fail=1
    fi
}
expect_err() { # name, expected exit status, text the one error line must contain, command...
    name=$1; want_rc=$2; needle=$3; shift 3
    "$@" >"$dir/out" 2>"$dir/err" </dev/null; rc=$?
    lines=$(wc -l < "$dir/err")
    if [ $rc -ne "$want_rc" ] || [ "$lines" -ne 1 ] || ! grep -q -- "$needle" "$dir/err" || [ -s "$dir/out" ]; then
        echo "FAIL $name: rc=$rc (want $want_rc), $lines stderr line(s):"; cat "$dir/err"; fail=1
    fi
}

printf '<think>\nWeather first.\n</think>\n\nChecking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n' > "$dir/o1"
expect_out thinking_tool \
  '{"reasoning_content":"Weather first.","content":"Checking.","tool_calls":[{"id":"call_0","type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Paris\"}"}}]}' \
  sh -c "\"$tandem\" parse --model \"$dir/model\" < \"$dir/o1\""
expect_out no_think \
  '{"reasoning_content":null,"content":"<think>\nWeather first.\n</think>\n\nChecking.","tool_calls":[{"id":"call_0","type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Paris\"}"}}]}' \
  sh -c "\"$tandem\" parse --no-think --model \"$dir/model\" < \"$dir/o1\""
printf 'Just an answer.' > "$dir/o2"
expect_out plain '{"reasoning_content":null,"content":"Just an answer.","tool_calls":null}' \
  sh -c "\"$tandem\" parse --model \"$dir/model\" --no-think < \"$dir/o2\""
expect_out empty '{"reasoning_content":null,"content":null,"tool_calls":null}' \
  sh -c "\"$tandem\" parse --model \"$dir/model\" < /dev/null"
# --help: the usage on stdout, naming each option, nothing on stderr, exit 0
"$tandem" parse --help >"$dir/out" 2>"$dir/err" </dev/null; rc=$?
if [ $rc -ne 0 ] || [ -s "$dir/err" ] || ! head -n 1 "$dir/out" | grep -qi "^usage: tandem parse" ||
   ! grep -q -- "--model DIR" "$dir/out" || ! grep -q -- "--no-think" "$dir/out"; then
    echo "FAIL help: rc=$rc"; cat "$dir/out" "$dir/err"; fail=1
fi

expect_err no_model 2 "--model" "$tandem" parse
expect_err unknown_option 2 "--bogus" "$tandem" parse --model "$dir/model" --bogus
expect_err missing_value 2 "--model" "$tandem" parse --model
expect_err missing_dir 1 "$dir/none" "$tandem" parse --model "$dir/none"
expect_err not_a_dir 1 "not a directory" "$tandem" parse --model "$dir/model/config.json"
expect_err no_config 1 "config.json" "$tandem" parse --model "$dir/nocfg"
expect_err bad_config 1 "not a JSON object" "$tandem" parse --model "$dir/badcfg"
printf 'a\000b' > "$dir/nul"
expect_err nul_input 1 "NUL" sh -c "\"$tandem\" parse --model \"$dir/model\" < \"$dir/nul\""

[ $fail -eq 0 ] && echo "test_cli: tandem parse ok"
exit $fail

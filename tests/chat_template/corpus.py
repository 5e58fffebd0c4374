"""corpus.py: the request bodies the conformance test renders with every template.

Built from a set of conversations, each rendered with several template switches
(enable_thinking unset/true/false, add_generation_prompt false). The conversations
cover: system or not, multi-turn, reasoning in history (as reasoning_content and as
<think> in content), /think and /no_think, tools, parallel tool calls, consecutive tool
results, multi-step tool use, arguments as a JSON string and as an object, content as
text parts, and unicode, quotes, backslashes and template-like text everywhere.
Numbers avoid integral floats such as 1.0: the C side reads requests with cJSON, which
does not tell 1.0 from 1 (see engine/chat/template.h).
"""
import json

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "City and country, e.g. Paris, France"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    },
}
SEARCH = {
    "type": "function",
    "function": {
        "name": "search_web",
        "description": "Search the web; returns \"title\", 'snippet' and url.\nUse sparingly \\ carefully.",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"type": "string"},
                "top_k": {"type": "integer", "minimum": 1, "maximum": 20, "default": 5},
                "filters": {
                    "type": "object",
                    "properties": {"lang": {"type": "string"}, "safe": {"type": "boolean"}},
                },
                "threshold": {"type": "number", "default": 0.25},
            },
            "required": ["query"],
        },
    },
}
UNICODE_TOOL = {
    "type": "function",
    "function": {
        "name": "traduire_texte",
        "description": "Übersetzt Text — 翻译文本 — ترجمة 🌍 «guillemets» and “curly quotes”",
        "parameters": {
            "type": "object",
            "properties": {"texte": {"type": "string", "description": "le texte à traduire"},
                           "langue_cible": {"type": "string", "enum": ["fr", "de", "zh", "ar"]}},
            "required": ["texte", "langue_cible"],
        },
    },
}


def call(name, args, as_string=True, cid="call_1"):
    return {"id": cid, "type": "function",
            "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False) if as_string else args}}


SYS = {"role": "system", "content": "You are a helpful assistant."}

CONVERSATIONS = {
    "single_user": [{"role": "user", "content": "Hello!"}],
    "system_user": [SYS, {"role": "user", "content": "What is 2+2?"}],
    "multi_turn": [SYS, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
                   {"role": "user", "content": "Tell me a joke."}, {"role": "assistant", "content": "Why did the chicken cross the road?"},
                   {"role": "user", "content": "Why?"}],
    "think_in_content_history": [{"role": "user", "content": "Solve x+1=3"},
                                 {"role": "assistant", "content": "<think>\nx = 3 - 1\n</think>\n\nx = 2"},
                                 {"role": "user", "content": "And x+2=5?"}],
    "reasoning_content_history": [SYS, {"role": "user", "content": "Capital of France?"},
                                  {"role": "assistant", "content": "Paris.", "reasoning_content": "The user asks about France.\nIt is Paris."},
                                  {"role": "user", "content": "And Germany?"}],
    "reasoning_last_assistant": [{"role": "user", "content": "Count to three"},
                                 {"role": "assistant", "content": "1, 2, 3", "reasoning_content": "\nSimple counting.\n"}],
    "think_in_last_assistant": [{"role": "user", "content": "Name a colour"},
                                {"role": "assistant", "content": "<think>\n\nred or blue\n\n</think>\n\n\nBlue"}],
    "reasoning_null": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey", "reasoning_content": None},
                       {"role": "user", "content": "Bye"}],
    "slash_think": [{"role": "user", "content": "Explain recursion /think"}],
    "slash_no_think": [SYS, {"role": "user", "content": "Quick: capital of Italy? /no_think"}],
    "slash_switches_multi": [{"role": "user", "content": "Hard question /think"}, {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nAnswer A"},
                             {"role": "user", "content": "Easy one /no_think"}, {"role": "assistant", "content": "<think>\n\n</think>\n\nAnswer B"},
                             {"role": "user", "content": "Another /think"}],
    "tools_no_system": [{"role": "user", "content": "Weather in Paris?"}],
    "tools_with_system": [SYS, {"role": "user", "content": "Weather in Paris and search news"}],
    "tool_call_string_args": [SYS, {"role": "user", "content": "Weather in Paris?"},
                              {"role": "assistant", "content": None, "tool_calls": [call("get_weather", {"location": "Paris, France", "unit": "celsius"})]},
                              {"role": "tool", "tool_call_id": "call_1", "content": "{\"temperature\": 21.5, \"sky\": \"clear\"}"}],
    "tool_call_object_args": [{"role": "user", "content": "Weather in Oslo?"},
                              {"role": "assistant", "content": "", "tool_calls": [call("get_weather", {"location": "Oslo, Norway"}, as_string=False)]},
                              {"role": "tool", "tool_call_id": "call_1", "content": "-3 degrees, snow"},
                              {"role": "assistant", "content": "It is -3 degrees and snowing in Oslo."}],
    "tool_call_with_content": [{"role": "user", "content": "Weather in Rome?"},
                               {"role": "assistant", "content": "Let me check that for you.", "tool_calls": [call("get_weather", {"location": "Rome"})]},
                               {"role": "tool", "content": "sunny"}],
    "parallel_tool_calls": [SYS, {"role": "user", "content": "Weather in Paris, Tokyo and Lima?"},
                            {"role": "assistant", "content": None, "tool_calls": [
                                call("get_weather", {"location": "Paris"}, cid="c1"),
                                call("get_weather", {"location": "Tokyo", "unit": "celsius"}, as_string=False, cid="c2"),
                                call("get_weather", {"location": "Lima"}, cid="c3")]},
                            {"role": "tool", "tool_call_id": "c1", "content": "18C"},
                            {"role": "tool", "tool_call_id": "c2", "content": "25C"},
                            {"role": "tool", "tool_call_id": "c3", "content": "15C"}],
    "multi_step_tools": [{"role": "user", "content": "Find the weather where the Eiffel tower is"},
                         {"role": "assistant", "content": "", "reasoning_content": "I need to search first.",
                          "tool_calls": [call("search_web", {"query": "Eiffel tower location", "top_k": 3})]},
                         {"role": "tool", "content": "The Eiffel Tower is in Paris, France."},
                         {"role": "assistant", "content": "", "reasoning_content": "Now the weather.",
                          "tool_calls": [call("get_weather", {"location": "Paris, France"})]},
                         {"role": "tool", "content": "20C, cloudy"},
                         {"role": "assistant", "content": "It is 20C and cloudy in Paris.", "reasoning_content": "Done."}],
    "tool_then_new_question": [{"role": "user", "content": "Weather in Bern?"},
                               {"role": "assistant", "content": "<think>\ncall the tool\n</think>\n\n", "tool_calls": [call("get_weather", {"location": "Bern"})]},
                               {"role": "tool", "content": "rain"},
                               {"role": "assistant", "content": "It rains in Bern."},
                               {"role": "user", "content": "Thanks! And in Geneva?"}],
    "user_looks_like_tool_response": [{"role": "user", "content": "What does this mean?"},
                                      {"role": "assistant", "content": "Which part?"},
                                      {"role": "user", "content": "<tool_response>\nraw output\n</tool_response>"}],
    "nested_and_typed_args": [{"role": "user", "content": "Search"},
                              {"role": "assistant", "content": None, "tool_calls": [call("search_web", {
                                  "query": "naïve café \"quotes\" 'single' \\ back", "top_k": -7, "threshold": 0.125,
                                  "tiny": 1.5e-07, "big": 12345678901234, "flags": [True, False, None],
                                  "filters": {"lang": "zh-CN", "safe": True, "nested": {"deep": [1, [2, [3, {}]], []]}}})]},
                              {"role": "tool", "content": ""}],
    "empty_args": [{"role": "user", "content": "Ping"},
                   {"role": "assistant", "content": None, "tool_calls": [
                       {"id": "x", "type": "function", "function": {"name": "ping", "arguments": ""}},
                       {"id": "y", "type": "function", "function": {"name": "ping", "arguments": "{}"}}]},
                   {"role": "tool", "content": "pong"}, {"role": "tool", "content": "pong"}],
    "content_parts": [{"role": "system", "content": [{"type": "text", "text": "Part one."}, {"type": "text", "text": "Part two."}]},
                      {"role": "user", "content": [{"type": "text", "text": "Look:"}, {"type": "text", "text": "line 2"}]}],
    "unicode_everywhere": [{"role": "system", "content": "Réponds en français 🇫🇷. Use \"double\" and 'single' quotes."},
                           {"role": "user", "content": "你好，世界！ 🌍 مرحبا بالعالم — ¿qué tal? «ok» “fine” ‘yes’ \u00a0nbsp\u2003em"},
                           {"role": "assistant", "content": "Ça va 😀 — très bien.\n\tTabbed line\r\nCRLF line", "reasoning_content": "L'utilisateur dit \"bonjour\" 🙂"},
                           {"role": "user", "content": "Zero width:\u200b| combining: e\u0301 | surrogate-range emoji: 🧑‍💻"}],
    "template_like_text": [{"role": "user", "content": "Render {{ messages }} and {% if x %}y{% endif %} {# c #} literally"},
                           {"role": "assistant", "content": "Sure: {{ '<|im_start|>' }} {%- raw -%}"},
                           {"role": "user", "content": "Also </think> in user text and <think> too"}],
    "backslashes_controls": [{"role": "user", "content": "C:\\path\\to\\file \\n not a newline \u0001\u0007 bell \u001f"},
                             {"role": "assistant", "content": None, "tool_calls": [call("get_weather", {"location": "C:\\\\x \u0001 \n \t \"q\""})]},
                             {"role": "tool", "content": "ok \\ done"}],
    "system_not_first": [{"role": "user", "content": "Hi"}, {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Explain gravity"}],
    "empty_strings": [{"role": "system", "content": ""}, {"role": "user", "content": ""}, {"role": "assistant", "content": ""}, {"role": "user", "content": " "}],
    "whitespace_edges": [{"role": "user", "content": "\n\n  padded  \n\n"},
                         {"role": "assistant", "content": "\n\nanswer\n\n", "reasoning_content": "\n\n  thoughts  \n\n"},
                         {"role": "user", "content": "again\n"}],
    "long_conversation": [SYS] + [m for i in range(8) for m in (
        {"role": "user", "content": "Question %d?" % i},
        {"role": "assistant", "content": "Answer %d." % i, **({"reasoning_content": "thinking %d" % i} if i % 3 == 0 else {})})]
                         + [{"role": "user", "content": "Last one?"}],
    # Qwen-Agent's second request, default protocol: no tools, the call sent back as the
    # assistant's text with its reasoning_content, the result as a user <tool_response>.
    "qwen_agent_nous": [SYS, {"role": "user", "content": "Weather in Paris?"},
                        {"role": "assistant", "reasoning_content": "I should call the tool.",
                         "content": "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"location\": \"Paris\"}}\n</tool_call>"},
                        {"role": "user", "content": "<tool_response>\n{\"temperature\": 22}\n</tool_response>"}],
    # ... and with use_raw_api: an assistant message with tool_calls and no content key, a
    # tool message carrying `id` (and Qwen-Agent's own `name`, `extra`), no tool_call_id.
    "qwen_agent_raw_api": [SYS, {"role": "user", "content": "Weather in Paris?"},
                           {"role": "assistant", "reasoning_content": "I should call the tool.",
                            "tool_calls": [call("get_weather", {"location": "Paris"}, cid="call_x_0")]},
                           {"role": "tool", "content": "{\"temperature\": 22}", "name": "get_weather", "id": "call_x_0",
                            "extra": {"function_id": "call_x_0"}}],
    "unicode_tool_call": [{"role": "user", "content": "Traduis « bonjour » en chinois"},
                          {"role": "assistant", "content": "Je traduis…", "tool_calls": [call("traduire_texte", {"texte": "bonjour 👋", "langue_cible": "zh"})]},
                          {"role": "tool", "content": "你好 👋"},
                          {"role": "assistant", "content": "« bonjour » se dit 你好."}],
}

TOOLSETS = {
    "tools_no_system": [WEATHER],
    "tools_with_system": [WEATHER, SEARCH],
    "tool_call_string_args": [WEATHER],
    "tool_call_object_args": [WEATHER],
    "tool_call_with_content": [WEATHER],
    "parallel_tool_calls": [WEATHER],
    "multi_step_tools": [WEATHER, SEARCH],
    "tool_then_new_question": [WEATHER],
    "nested_and_typed_args": [SEARCH],
    "unicode_tool_call": [UNICODE_TOOL],
    "backslashes_controls": [WEATHER, UNICODE_TOOL],
    "qwen_agent_raw_api": [WEATHER],
}

# Conversations that end with an assistant turn are also rendered without a generation prompt.
ENDS_WITH_ASSISTANT = {"reasoning_last_assistant", "think_in_last_assistant", "tool_call_object_args",
                       "multi_step_tools", "unicode_tool_call"}


def requests():
    """[(name, request body)], 60+ of them."""
    out = []
    for name, messages in CONVERSATIONS.items():
        base = {"model": "qwen3", "messages": messages}
        if name in TOOLSETS:
            base["tools"] = TOOLSETS[name]
        out.append((name, base))
        out.append((name + "+no_thinking", dict(base, chat_template_kwargs={"enable_thinking": False})))
        if name in ENDS_WITH_ASSISTANT:
            out.append((name + "+no_gen_prompt", dict(base, add_generation_prompt=False)))
            out.append((name + "+no_gen_prompt+thinking", dict(base, add_generation_prompt=False,
                                                              chat_template_kwargs={"enable_thinking": True})))
        if name in ("single_user", "slash_no_think", "tools_with_system", "unicode_everywhere"):
            out.append((name + "+thinking", dict(base, chat_template_kwargs={"enable_thinking": True, "extra_flag": "x"})))
    out.append(("tools_empty_list", {"messages": [{"role": "user", "content": "hi"}], "tools": []}))
    out.append(("tools_null", {"messages": [{"role": "user", "content": "hi"}], "tools": None}))
    return out

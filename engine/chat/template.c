/* template.c: the chat layer over the Jinja interpreter; see template.h.
 *
 * Finds the model's chat template the way transformers does (chat_template.jinja
 * next to the tokenizer wins over tokenizer_config.json's `chat_template`, which is
 * a string or a list of named templates), checks the shape of an OpenAI request
 * and prepares it as vLLM does before rendering, so that the prompt matches what a
 * Python stack would build from the same request. */
#include "chat/template.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja.h"
#include "common/buf.h"
#include "common/file.h"

struct eng_chat_template {
    eng_jinja *def;      /* the template, or the "default" one of a named list */
    eng_jinja *tool_use; /* the "tool_use" one of a named list, if any */
    cJSON *special;      /* special token variables (bos_token, eos_token, ...) */
};

static int parse_one(const char *src, size_t len, const char *what, eng_jinja **out, eng_error *err)
{
    eng_error e;
    if (eng_jinja_parse(src, len, out, &e) == 0)
        return 0;
    return eng_fail(err, "%s: %s", what, e.msg);
}

/* A special token is written either as a string or as a serialised AddedToken. */
static const char *token_text(const cJSON *v)
{
    if (cJSON_IsString(v))
        return v->valuestring;
    if (cJSON_IsObject(v)) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
        if (cJSON_IsString(c))
            return c->valuestring;
    }
    return NULL;
}

static int load_special(eng_chat_template *t, const cJSON *cfg, eng_error *err)
{
    static const char *const NAMES[] = {"bos_token", "eos_token", "unk_token", "pad_token"};
    if (!(t->special = cJSON_CreateObject()))
        return eng_fail(err, "out of memory");
    for (size_t i = 0; i < sizeof NAMES / sizeof *NAMES; i++) {
        const char *s = token_text(cJSON_GetObjectItemCaseSensitive(cfg, NAMES[i]));
        if (s && !cJSON_AddStringToObject(t->special, NAMES[i], s))
            return eng_fail(err, "out of memory");
    }
    const cJSON *extra = cJSON_GetObjectItemCaseSensitive(cfg, "additional_special_tokens");
    if (cJSON_IsArray(extra)) {
        cJSON *list = cJSON_AddArrayToObject(t->special, "additional_special_tokens");
        if (!list)
            return eng_fail(err, "out of memory");
        const cJSON *it;
        cJSON_ArrayForEach(it, extra)
        {
            const char *s = token_text(it);
            if (s && !cJSON_AddItemToArray(list, cJSON_CreateString(s)))
                return eng_fail(err, "out of memory");
        }
    }
    return 0;
}

int eng_chat_template_load(const char *model_dir, eng_chat_template **out, eng_error *err)
{
    *out = NULL;
    char path[4096];
    size_t len;
    eng_chat_template *t = calloc(1, sizeof *t);
    if (!t)
        return eng_fail(err, "out of memory");
    cJSON *cfg = NULL;
    char *text = NULL;
    int rc = -1;

    snprintf(path, sizeof path, "%s/tokenizer_config.json", model_dir);
    text = eng_read_file(path, &len, NULL);
    if (text) {
        cfg = cJSON_ParseWithLength(text, len);
        free(text);
        text = NULL;
        if (!cJSON_IsObject(cfg)) {
            eng_fail(err, "%s is not a JSON object", path);
            goto done;
        }
        if (load_special(t, cfg, err))
            goto done;
    }

    snprintf(path, sizeof path, "%s/chat_template.jinja", model_dir);
    text = eng_read_file(path, &len, NULL);
    if (text) {
        rc = parse_one(text, len, path, &t->def, err);
        goto done;
    }
    if (!cfg) {
        eng_fail(err, "%s/tokenizer_config.json: cannot read it", model_dir);
        goto done;
    }
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
    if (cJSON_IsString(ct)) {
        rc = parse_one(ct->valuestring, strlen(ct->valuestring), "chat_template", &t->def, err);
    } else if (cJSON_IsArray(ct)) {
        const cJSON *it;
        cJSON_ArrayForEach(it, ct)
        {
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(it, "name");
            const cJSON *tmpl = cJSON_GetObjectItemCaseSensitive(it, "template");
            if (!cJSON_IsString(name) || !cJSON_IsString(tmpl)) {
                eng_fail(err, "chat_template list entries need string \"name\" and \"template\"");
                goto done;
            }
            eng_jinja **slot = !strcmp(name->valuestring, "default")    ? &t->def
                               : !strcmp(name->valuestring, "tool_use") ? &t->tool_use
                                                                        : NULL;
            if (slot && !*slot && parse_one(tmpl->valuestring, strlen(tmpl->valuestring), name->valuestring, slot, err))
                goto done;
        }
        if (!t->def && !t->tool_use) {
            eng_fail(err, "chat_template list has neither a \"default\" nor a \"tool_use\" template");
            goto done;
        }
        rc = 0;
    } else {
        eng_fail(err, "%s/tokenizer_config.json has no chat_template", model_dir);
    }
done:
    free(text);
    cJSON_Delete(cfg);
    if (rc) {
        eng_chat_template_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

int eng_chat_template_from_string(const char *source, eng_chat_template **out, eng_error *err)
{
    *out = NULL;
    eng_chat_template *t = calloc(1, sizeof *t);
    if (!t)
        return eng_fail(err, "out of memory");
    if (parse_one(source, strlen(source), "chat_template", &t->def, err)) {
        free(t);
        return -1;
    }
    *out = t;
    return 0;
}

void eng_chat_template_free(eng_chat_template *t)
{
    if (!t)
        return;
    eng_jinja_free(t->def);
    eng_jinja_free(t->tool_use);
    cJSON_Delete(t->special);
    free(t);
}

/* ---- request preparation ---- */

/* content: a string, or text parts joined with "\n" (as vLLM's "string" content
 * format); null/absent only for assistant messages, rendered as "". */
static int prepare_content(cJSON *msg, int i, int is_assistant, eng_error *err)
{
    cJSON *content = cJSON_GetObjectItemCaseSensitive(msg, "content");
    if (cJSON_IsString(content))
        return 0;
    if (!content || cJSON_IsNull(content)) {
        if (!is_assistant)
            return eng_fail(err, "messages[%d].content is missing (only assistant messages may omit it)", i);
        cJSON *empty = cJSON_CreateString("");
        if (!empty)
            return eng_fail(err, "out of memory");
        if (content)
            cJSON_ReplaceItemInObjectCaseSensitive(msg, "content", empty);
        else
            cJSON_AddItemToObject(msg, "content", empty);
        return 0;
    }
    if (!cJSON_IsArray(content))
        return eng_fail(err, "messages[%d].content must be a string or a list of text parts", i);
    eng_buf text = {0};
    int k = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, content)
    {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsObject(part) || !cJSON_IsString(type)) {
            eng_buf_free(&text);
            return eng_fail(err, "messages[%d].content[%d] must be an object with a string \"type\"", i, k);
        }
        if (strcmp(type->valuestring, "text")) {
            eng_fail(err, "messages[%d].content[%d]: content parts of type '%.64s' are not supported", i, k,
                     type->valuestring);
            eng_buf_free(&text);
            return -1;
        }
        if (!cJSON_IsString(t)) {
            eng_buf_free(&text);
            return eng_fail(err, "messages[%d].content[%d].text must be a string", i, k);
        }
        if ((k && eng_buf_puts(&text, "\n")) || eng_buf_puts(&text, t->valuestring) || eng_buf_append(&text, "", 0)) {
            eng_buf_free(&text);
            return eng_fail(err, "out of memory");
        }
        k++;
    }
    cJSON *joined = cJSON_CreateString(text.data ? text.data : "");
    eng_buf_free(&text);
    if (!joined)
        return eng_fail(err, "out of memory");
    cJSON_ReplaceItemInObjectCaseSensitive(msg, "content", joined);
    return 0;
}

/* tool_calls[].function.arguments: a JSON string becomes the object it encodes
 * (vLLM does this so that templates can `tojson` it); null or "" becomes {}. */
static int prepare_tool_calls(cJSON *msg, int i, eng_error *err)
{
    cJSON *calls = cJSON_GetObjectItemCaseSensitive(msg, "tool_calls");
    if (!calls || cJSON_IsNull(calls))
        return 0;
    if (!cJSON_IsArray(calls))
        return eng_fail(err, "messages[%d].tool_calls must be a list", i);
    int k = 0;
    cJSON *call;
    cJSON_ArrayForEach(call, calls)
    {
        if (!cJSON_IsObject(call))
            return eng_fail(err, "messages[%d].tool_calls[%d] must be an object", i, k);
        cJSON *fn = cJSON_GetObjectItemCaseSensitive(call, "function");
        if (!cJSON_IsObject(fn))
            return eng_fail(err, "messages[%d].tool_calls[%d].function must be an object", i, k);
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
        if (!cJSON_IsString(name))
            return eng_fail(err, "messages[%d].tool_calls[%d].function.name must be a string", i, k);
        cJSON *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
        cJSON *parsed = NULL;
        if (!args || cJSON_IsNull(args) || (cJSON_IsString(args) && !args->valuestring[0])) {
            parsed = cJSON_CreateObject();
        } else if (cJSON_IsString(args)) {
            parsed = cJSON_Parse(args->valuestring);
            if (!parsed)
                return eng_fail(err, "messages[%d].tool_calls[%d].function.arguments is not valid JSON", i, k);
        } else {
            k++;
            continue;
        }
        if (!parsed)
            return eng_fail(err, "out of memory");
        if (args)
            cJSON_ReplaceItemInObjectCaseSensitive(fn, "arguments", parsed);
        else
            cJSON_AddItemToObject(fn, "arguments", parsed);
        k++;
    }
    return 0;
}

static int prepare_messages(cJSON *messages, eng_error *err)
{
    if (!cJSON_IsArray(messages))
        return eng_fail(err, "request \"messages\" must be a list");
    if (!cJSON_GetArraySize(messages))
        return eng_fail(err, "request \"messages\" must not be empty");
    int i = 0;
    cJSON *msg;
    cJSON_ArrayForEach(msg, messages)
    {
        if (!cJSON_IsObject(msg))
            return eng_fail(err, "messages[%d] must be an object", i);
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(msg, "role");
        if (!cJSON_IsString(role))
            return eng_fail(err, "messages[%d] has no string \"role\"", i);
        int is_assistant = !strcmp(role->valuestring, "assistant");
        if (prepare_content(msg, i, is_assistant, err))
            return -1;
        if (is_assistant && prepare_tool_calls(msg, i, err))
            return -1;
        const cJSON *rc = cJSON_GetObjectItemCaseSensitive(msg, "reasoning_content");
        if (rc && !cJSON_IsString(rc) && !cJSON_IsNull(rc))
            return eng_fail(err, "messages[%d].reasoning_content must be a string or null", i);
        i++;
    }
    return 0;
}

/* Adds (or replaces) key in obj, taking ownership of item. */
static int put(cJSON *obj, const char *key, cJSON *item, eng_error *err)
{
    if (!item)
        return eng_fail(err, "out of memory");
    cJSON_DeleteItemFromObjectCaseSensitive(obj, key);
    if (!cJSON_AddItemToObject(obj, key, item)) {
        cJSON_Delete(item);
        return eng_fail(err, "out of memory");
    }
    return 0;
}

int eng_chat_template_render(const eng_chat_template *t, const cJSON *request, char **prompt, eng_error *err)
{
    *prompt = NULL;
    if (!cJSON_IsObject(request))
        return eng_fail(err, "the request must be a JSON object");
    const cJSON *messages = cJSON_GetObjectItemCaseSensitive(request, "messages");
    if (!messages)
        return eng_fail(err, "the request has no \"messages\"");
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(request, "tools");
    if (tools && !cJSON_IsNull(tools) && !cJSON_IsArray(tools))
        return eng_fail(err, "request \"tools\" must be a list");
    const cJSON *agp = cJSON_GetObjectItemCaseSensitive(request, "add_generation_prompt");
    if (agp && !cJSON_IsBool(agp))
        return eng_fail(err, "request \"add_generation_prompt\" must be true or false");
    const cJSON *kwargs = cJSON_GetObjectItemCaseSensitive(request, "chat_template_kwargs");
    if (kwargs && !cJSON_IsNull(kwargs) && !cJSON_IsObject(kwargs))
        return eng_fail(err, "request \"chat_template_kwargs\" must be an object");
    int has_tools = tools && cJSON_IsArray(tools);
    const eng_jinja *tmpl = has_tools && t->tool_use ? t->tool_use : t->def;
    if (!tmpl)
        return eng_fail(err, "the model has only a \"tool_use\" chat template and the request has no tools");

    /* The template variables, in the order transformers passes them. */
    cJSON *vars = t->special ? cJSON_Duplicate(t->special, 1) : cJSON_CreateObject();
    if (!vars)
        return eng_fail(err, "out of memory");
    int rc = -1;
    cJSON *msgs = cJSON_Duplicate(messages, 1);
    if (messages && !msgs) {
        eng_fail(err, "out of memory");
        goto done;
    }
    if (put(vars, "messages", msgs, err) || prepare_messages(msgs, err))
        goto done;
    if (put(vars, "tools", has_tools ? cJSON_Duplicate(tools, 1) : cJSON_CreateNull(), err) ||
        put(vars, "documents", cJSON_CreateNull(), err) ||
        put(vars, "add_generation_prompt", cJSON_CreateBool(agp ? cJSON_IsTrue(agp) : 1), err))
        goto done;
    if (cJSON_IsObject(kwargs)) {
        const cJSON *kw;
        cJSON_ArrayForEach(kw, kwargs)
        {
            if (!strcmp(kw->string, "messages")) {
                eng_fail(err, "chat_template_kwargs may not set \"messages\"");
                goto done;
            }
            if (put(vars, kw->string, cJSON_Duplicate(kw, 1), err))
                goto done;
        }
    }
    eng_buf out = {0};
    if (eng_jinja_render(tmpl, vars, &out, err)) {
        eng_buf_free(&out);
        goto done;
    }
    if (eng_buf_append(&out, "", 0)) {
        eng_buf_free(&out);
        eng_fail(err, "out of memory");
        goto done;
    }
    *prompt = eng_buf_take(&out);
    rc = 0;
done:
    cJSON_Delete(vars);
    return rc;
}

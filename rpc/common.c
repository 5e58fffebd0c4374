/* common.c: status codes, byte buffers, and the protobuf-c pack/unpack helpers that
 * make each control-plane call one line for its callers. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc_internal.h"

static const char *const code_names[] = {
    "OK",        "CANCELLED",       "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS",  "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",    "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED",
};

const char *rpc_code_name(int code)
{
    static _Thread_local char other[24];
    if (code >= 0 && code < (int)(sizeof code_names / sizeof code_names[0]))
        return code_names[code];
    snprintf(other, sizeof other, "CODE_%d", code);
    return other;
}

/* In tandem.proto's WorkerState order. */
static const char *const state_names[] = {"unknown", "ready", "failed", "draining", "cordoned", "drained", "starting"};

const char *rpc_worker_state_name(int state)
{
    return state > 0 && state < (int)(sizeof state_names / sizeof state_names[0]) ? state_names[state] : "unknown";
}

int rpc_status_set(rpc_status *st, int code, const char *fmt, ...)
{
    if (st) {
        st->code = code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(st->msg, sizeof st->msg, fmt, ap);
        va_end(ap);
    }
    return code == RPC_OK ? 0 : -1;
}

void rpc_status_from_grpc(rpc_status *st, grpc_status_code code, grpc_slice details)
{
    if (!st)
        return;
    st->code = (int)code;
    size_t n = GRPC_SLICE_LENGTH(details);
    if (n == 0) {
        snprintf(st->msg, sizeof st->msg, "%s", code == GRPC_STATUS_OK ? "" : rpc_code_name((int)code));
        return;
    }
    if (n >= sizeof st->msg)
        n = sizeof st->msg - 1;
    memcpy(st->msg, GRPC_SLICE_START_PTR(details), n);
    st->msg[n] = '\0';
}

void rpc_bytes_free(rpc_bytes *b)
{
    if (!b)
        return;
    free(b->data);
    b->data = NULL;
    b->len = 0;
}

grpc_byte_buffer *rpc_bb_from(const void *data, size_t len)
{
    grpc_slice s = grpc_slice_from_copied_buffer(len ? (const char *)data : "", len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

int rpc_bb_to_bytes(grpc_byte_buffer *bb, rpc_bytes *out)
{
    /* One copy: each slice gRPC received goes straight into the result. (Reading them
     * all into one slice first, grpc_byte_buffer_reader_readall, would copy a 64 MiB
     * message twice and hold three times its size at the peak.) The reader's output
     * buffer is the decompressed message, so its length is the result's. */
    grpc_byte_buffer_reader r;
    out->data = NULL;
    out->len = 0;
    if (!grpc_byte_buffer_reader_init(&r, bb))
        return -1;
    size_t n = grpc_byte_buffer_length(r.buffer_out), at = 0;
    uint8_t *data = malloc(n ? n : 1);
    grpc_slice s;
    while (data && grpc_byte_buffer_reader_next(&r, &s)) {
        size_t k = GRPC_SLICE_LENGTH(s);
        if (k > n - at)
            k = n - at; /* cannot happen: the slices make up the length */
        memcpy(data + at, GRPC_SLICE_START_PTR(s), k);
        at += k;
        grpc_slice_unref(s);
    }
    grpc_byte_buffer_reader_destroy(&r);
    if (!data)
        return -1;
    out->data = data;
    out->len = at;
    return 0;
}

gpr_timespec rpc_deadline_in(int ms)
{
    if (ms < 0)
        return gpr_inf_future(GPR_CLOCK_MONOTONIC);
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

/* ------------------------------------------------------------------ protobuf-c */

int rpc_pack(const ProtobufCMessage *m, rpc_bytes *out)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    out->data = malloc(n ? n : 1);
    out->len = 0;
    if (!out->data)
        return -1;
    out->len = protobuf_c_message_pack(m, out->data);
    return 0;
}

/* 1 when m or a message inside it holds a field numbered 0. Protobuf has no field 0,
 * and protobuf-c refuses one, except when its tag is written in more bytes than needed
 * (0x80 0x00): then it keeps it as an unknown field, and packing the message again
 * writes a tag (0x00) that no parser reads back (fuzz_rpc_messages found it). */
static int has_field_zero(const ProtobufCMessage *m)
{
    for (unsigned i = 0; i < m->n_unknown_fields; i++)
        if (m->unknown_fields[i].tag == 0)
            return 1;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        const char *at = (const char *)m + f->offset;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
            ProtobufCMessage *const *items = *(ProtobufCMessage *const *const *)at;
            for (size_t k = 0; k < n; k++)
                if (has_field_zero(items[k]))
                    return 1;
            continue;
        }
        /* a oneof member is there only while the oneof's case names it */
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(const uint32_t *)((const char *)m + f->quantifier_offset) != f->id)
            continue;
        const ProtobufCMessage *sub = *(ProtobufCMessage *const *)at;
        if (sub && has_field_zero(sub))
            return 1;
    }
    return 0;
}

void *rpc_unpack(const ProtobufCMessageDescriptor *d, const void *data, size_t len, rpc_status *st)
{
    static const uint8_t empty[1];
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, len, data ? data : empty);
    if (m && has_field_zero(m)) {
        protobuf_c_message_free_unpacked(m, NULL);
        rpc_status_set(st, RPC_INVALID_ARGUMENT, "%zu bytes as %s: a field numbered 0", len, d->name);
        return NULL;
    }
    if (!m)
        rpc_status_set(st, RPC_INVALID_ARGUMENT, "cannot parse %zu bytes as %s", len, d->name);
    return m;
}

void rpc_msg_free(void *m)
{
    if (m)
        protobuf_c_message_free_unpacked((ProtobufCMessage *)m, NULL);
}

int rpc_unary_msg(rpc_channel *ch, const char *method, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *resp_desc, int timeout_ms, void **resp, rpc_status *st)
{
    rpc_bytes in = {0}, out = {0};
    *resp = NULL;
    if (rpc_pack(req, &in) < 0)
        return rpc_status_set(st, RPC_RESOURCE_EXHAUSTED, "out of memory packing %s", method);
    int rc = rpc_unary(ch, method, in.data, in.len, timeout_ms, &out, st);
    rpc_bytes_free(&in);
    if (rc < 0)
        return -1;
    *resp = rpc_unpack(resp_desc, out.data, out.len, NULL);
    rpc_bytes_free(&out);
    if (!*resp)
        return rpc_status_set(st, RPC_INTERNAL, "%s: response does not parse as %s", method, resp_desc->name);
    return 0;
}

int rpc_stream_open_msg(rpc_channel *ch, const char *method, const ProtobufCMessage *req, int timeout_ms,
                        rpc_stream **out, rpc_status *st)
{
    rpc_bytes in = {0};
    *out = NULL;
    if (rpc_pack(req, &in) < 0)
        return rpc_status_set(st, RPC_RESOURCE_EXHAUSTED, "out of memory packing %s", method);
    int rc = rpc_stream_open(ch, method, in.data, in.len, timeout_ms, out, st);
    rpc_bytes_free(&in);
    return rc;
}

rpc_next rpc_stream_next_msg(rpc_stream *s, int timeout_ms, const ProtobufCMessageDescriptor *d, void **msg,
                             rpc_status *st)
{
    rpc_bytes b = {0};
    *msg = NULL;
    rpc_next r = rpc_stream_next(s, timeout_ms, &b, st);
    if (r != RPC_NEXT_MSG)
        return r;
    *msg = rpc_unpack(d, b.data, b.len, NULL);
    rpc_bytes_free(&b);
    if (*msg)
        return RPC_NEXT_MSG;
    /* The peer speaks another schema: nothing later on this stream can be trusted. */
    rpc_status_set(st, RPC_INTERNAL, "stream message does not parse as %s", d->name);
    rpc_stream_abort(s, st ? st : &(rpc_status){RPC_INTERNAL, "stream message does not parse"});
    return RPC_NEXT_END;
}

int rpc_call_send_msg(rpc_call *c, const ProtobufCMessage *m, int timeout_ms)
{
    rpc_bytes b = {0};
    if (rpc_pack(m, &b) < 0)
        return -1;
    int rc = rpc_call_send(c, b.data, b.len, timeout_ms);
    rpc_bytes_free(&b);
    return rc;
}

/* client.c: calling remote methods over gRPC core.
 *
 * Each call gets its own completion queue, polled by the calling thread, so a call
 * needs no library threads and blocks only its caller: a unary call is one batch of
 * six operations; a stream starts its request batch and its status operation at once,
 * then rpc_stream_next starts one RECV_MESSAGE at a time and waits for it with the
 * caller's timeout. Cancelling (grpc_call_cancel) is thread-safe in gRPC, which is
 * what lets any thread cancel a stream that another thread is reading. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc_security.h>

#include "rpc_internal.h"

struct rpc_channel {
    grpc_channel *ch;
};

enum { TAG_START = 1, TAG_RECV = 2, TAG_STATUS = 3 };
#define TAG(n) ((void *)(intptr_t)(n))

struct rpc_stream {
    grpc_completion_queue *cq;
    grpc_call *call;
    int pending; /* batches started and not yet seen complete */
    int recv_inflight;
    int md_requested; /* RECV_INITIAL_METADATA goes with the first RECV_MESSAGE */
    int status_done;
    int ended;
    rpc_status final;
    grpc_byte_buffer *send_bb; /* the request, kept until its batch completes */
    grpc_byte_buffer *recv_bb;
    grpc_metadata_array md, trailing;
    grpc_status_code code;
    grpc_slice details;
};

int rpc_channel_create(const char *target, rpc_channel **out, rpc_status *st)
{
    *out = NULL;
    if (!target || !*target)
        return rpc_status_set(st, RPC_INVALID_ARGUMENT, "empty target address");
    rpc_channel *c = calloc(1, sizeof *c);
    if (!c)
        return rpc_status_set(st, RPC_RESOURCE_EXHAUSTED, "out of memory");
    grpc_init();
    /* Reconnect quickly (the default backoff grows to two minutes, far too long for a
     * worker coming back); keepalive pings notice a peer that vanished without closing
     * its connection. The server side permits these pings (server.c). */
    grpc_arg args[7];
    memset(args, 0, sizeof args);
    args[0].type = GRPC_ARG_INTEGER, args[0].key = GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, args[0].value.integer = 100;
    args[1].type = GRPC_ARG_INTEGER, args[1].key = GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, args[1].value.integer = 100;
    args[2].type = GRPC_ARG_INTEGER, args[2].key = GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, args[2].value.integer = 1000;
    args[3].type = GRPC_ARG_INTEGER, args[3].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
    args[3].value.integer = RPC_MAX_MESSAGE;
    args[4].type = GRPC_ARG_INTEGER, args[4].key = GRPC_ARG_KEEPALIVE_TIME_MS, args[4].value.integer = 20000;
    args[5].type = GRPC_ARG_INTEGER, args[5].key = GRPC_ARG_KEEPALIVE_TIMEOUT_MS, args[5].value.integer = 10000;
    args[6].type = GRPC_ARG_INTEGER, args[6].key = GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, args[6].value.integer = 0;
    grpc_channel_args ca = {7, args};
    grpc_channel_credentials *creds = rpc_channel_credentials();
    c->ch = grpc_channel_create(target, creds, &ca);
    grpc_channel_credentials_release(creds);
    if (!c->ch) {
        free(c);
        grpc_shutdown();
        return rpc_status_set(st, RPC_INVALID_ARGUMENT, "cannot create a channel to %s", target);
    }
    *out = c;
    return rpc_status_set(st, RPC_OK, "%s", "");
}

void rpc_channel_destroy(rpc_channel *ch)
{
    if (!ch)
        return;
    grpc_channel_destroy(ch->ch);
    free(ch);
    grpc_shutdown();
}

static gpr_timespec call_deadline(int timeout_ms)
{
    return timeout_ms > 0 ? rpc_deadline_in(timeout_ms) : gpr_inf_future(GPR_CLOCK_MONOTONIC);
}

static void cq_destroy(grpc_completion_queue *cq)
{
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type != GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(cq);
}

int rpc_unary(rpc_channel *ch, const char *method, const void *req, size_t req_len, int timeout_ms, rpc_bytes *resp,
              rpc_status *st)
{
    resp->data = NULL;
    resp->len = 0;
    grpc_byte_buffer *send = rpc_bb_from(req, req_len);
    if (!send)
        return rpc_status_set(st, RPC_RESOURCE_EXHAUSTED, "out of memory");
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    grpc_slice m = grpc_slice_from_copied_string(method);
    grpc_call *call = grpc_channel_create_call(ch->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, m, NULL,
                                               call_deadline(timeout_ms), NULL);
    grpc_slice_unref(m);

    grpc_metadata_array md, trailing;
    grpc_metadata_array_init(&md);
    grpc_metadata_array_init(&trailing);
    grpc_byte_buffer *recv = NULL;
    grpc_status_code code = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing;
    ops[5].data.recv_status_on_client.status = &code;
    ops[5].data.recv_status_on_client.status_details = &details;

    int rc;
    grpc_call_error e = grpc_call_start_batch(call, ops, 6, TAG(TAG_START), NULL);
    if (e != GRPC_CALL_OK) {
        rc = rpc_status_set(st, RPC_INTERNAL, "%s: cannot start the call: %s", method, grpc_call_error_to_string(e));
    } else {
        /* The call's deadline guarantees this completes. */
        grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (code != GRPC_STATUS_OK) {
            rpc_status_from_grpc(st, code, details);
            rc = -1;
        } else if (!recv) {
            rc = rpc_status_set(st, RPC_INTERNAL, "%s: the server sent no response message", method);
        } else if (rpc_bb_to_bytes(recv, resp) < 0) {
            rc = rpc_status_set(st, RPC_RESOURCE_EXHAUSTED, "out of memory reading the response");
        } else {
            rc = rpc_status_set(st, RPC_OK, "%s", "");
        }
    }
    if (recv)
        grpc_byte_buffer_destroy(recv);
    grpc_byte_buffer_destroy(send);
    grpc_metadata_array_destroy(&md);
    grpc_metadata_array_destroy(&trailing);
    grpc_slice_unref(details);
    grpc_call_unref(call);
    cq_destroy(cq);
    return rc;
}

int rpc_stream_open(rpc_channel *ch, const char *method, const void *req, size_t req_len, int timeout_ms,
                    rpc_stream **out, rpc_status *st)
{
    *out = NULL;
    rpc_stream *s = calloc(1, sizeof *s);
    grpc_byte_buffer *send = s ? rpc_bb_from(req, req_len) : NULL;
    if (!send) {
        free(s);
        return rpc_status_set(st, RPC_RESOURCE_EXHAUSTED, "out of memory");
    }
    s->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_slice m = grpc_slice_from_copied_string(method);
    s->call = grpc_channel_create_call(ch->ch, NULL, GRPC_PROPAGATE_DEFAULTS, s->cq, m, NULL, call_deadline(timeout_ms),
                                       NULL);
    grpc_slice_unref(m);
    grpc_metadata_array_init(&s->md);
    grpc_metadata_array_init(&s->trailing);
    s->details = grpc_empty_slice();

    grpc_op ops[3];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    s->send_bb = send;
    grpc_call_error e1 = grpc_call_start_batch(s->call, ops, 3, TAG(TAG_START), NULL);
    if (e1 == GRPC_CALL_OK)
        s->pending++;

    grpc_op sop;
    memset(&sop, 0, sizeof sop);
    sop.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    sop.data.recv_status_on_client.trailing_metadata = &s->trailing;
    sop.data.recv_status_on_client.status = &s->code;
    sop.data.recv_status_on_client.status_details = &s->details;
    grpc_call_error e2 = grpc_call_start_batch(s->call, &sop, 1, TAG(TAG_STATUS), NULL);
    if (e2 == GRPC_CALL_OK)
        s->pending++;

    if (e1 != GRPC_CALL_OK || e2 != GRPC_CALL_OK) {
        rpc_status_set(st, RPC_INTERNAL, "%s: cannot start the call: %s", method,
                       grpc_call_error_to_string(e1 != GRPC_CALL_OK ? e1 : e2));
        rpc_stream_close(s);
        return -1;
    }
    *out = s;
    return rpc_status_set(st, RPC_OK, "%s", "");
}

/* Takes one completion; TIMEOUT when none came by the deadline. */
static grpc_completion_type take_event(rpc_stream *s, gpr_timespec deadline)
{
    grpc_event ev = grpc_completion_queue_next(s->cq, deadline, NULL);
    if (ev.type != GRPC_OP_COMPLETE)
        return ev.type;
    s->pending--;
    if (ev.tag == TAG(TAG_STATUS))
        s->status_done = 1;
    if (ev.tag == TAG(TAG_RECV))
        s->recv_inflight = 0;
    if (ev.tag == TAG(TAG_START) && s->send_bb) {
        grpc_byte_buffer_destroy(s->send_bb);
        s->send_bb = NULL;
    }
    return ev.type;
}

static void end_stream(rpc_stream *s)
{
    while (!s->status_done)
        take_event(s, gpr_inf_future(GPR_CLOCK_MONOTONIC));
    if (!s->ended) {
        rpc_status_from_grpc(&s->final, s->code, s->details);
        s->ended = 1;
    }
}

rpc_next rpc_stream_next(rpc_stream *s, int timeout_ms, rpc_bytes *msg, rpc_status *st)
{
    msg->data = NULL;
    msg->len = 0;
    if (!s->ended && !s->recv_inflight) {
        grpc_op ops[2];
        memset(ops, 0, sizeof ops);
        int n = 0;
        if (!s->md_requested) {
            ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
            ops[n].data.recv_initial_metadata.recv_initial_metadata = &s->md;
            n++;
        }
        ops[n].op = GRPC_OP_RECV_MESSAGE;
        ops[n].data.recv_message.recv_message = &s->recv_bb;
        n++;
        s->recv_bb = NULL;
        grpc_call_error e = grpc_call_start_batch(s->call, ops, (size_t)n, TAG(TAG_RECV), NULL);
        if (e != GRPC_CALL_OK) {
            grpc_call_cancel(s->call, NULL);
            end_stream(s);
            rpc_status_set(&s->final, RPC_INTERNAL, "cannot read the stream: %s", grpc_call_error_to_string(e));
        } else {
            s->md_requested = 1;
            s->recv_inflight = 1;
            s->pending++;
        }
    }
    if (!s->ended) {
        gpr_timespec deadline = rpc_deadline_in(timeout_ms);
        while (s->recv_inflight) {
            if (take_event(s, deadline) == GRPC_QUEUE_TIMEOUT) {
                rpc_status_set(st, RPC_DEADLINE_EXCEEDED, "no stream message within %d ms", timeout_ms);
                return RPC_NEXT_TIMEOUT;
            }
        }
        if (s->recv_bb) {
            int rc = rpc_bb_to_bytes(s->recv_bb, msg);
            grpc_byte_buffer_destroy(s->recv_bb);
            s->recv_bb = NULL;
            if (rc == 0) {
                rpc_status_set(st, RPC_OK, "%s", "");
                return RPC_NEXT_MSG;
            }
            grpc_call_cancel(s->call, NULL);
            end_stream(s);
            rpc_status_set(&s->final, RPC_RESOURCE_EXHAUSTED, "out of memory reading a stream message");
        }
        end_stream(s); /* no message: the stream is over, its status follows */
    }
    if (st)
        *st = s->final;
    return RPC_NEXT_END;
}

void rpc_stream_cancel(rpc_stream *s)
{
    if (s)
        grpc_call_cancel(s->call, NULL);
}

void rpc_stream_abort(rpc_stream *s, const rpc_status *final)
{
    grpc_call_cancel(s->call, NULL);
    while (s->recv_inflight)
        take_event(s, gpr_inf_future(GPR_CLOCK_MONOTONIC));
    if (s->recv_bb) {
        grpc_byte_buffer_destroy(s->recv_bb);
        s->recv_bb = NULL;
    }
    end_stream(s);
    s->final = *final;
}

void rpc_stream_close(rpc_stream *s)
{
    if (!s)
        return;
    if (!s->ended || s->pending > 0)
        grpc_call_cancel(s->call, NULL);
    while (s->pending > 0)
        take_event(s, gpr_inf_future(GPR_CLOCK_MONOTONIC));
    if (s->recv_bb)
        grpc_byte_buffer_destroy(s->recv_bb);
    if (s->send_bb)
        grpc_byte_buffer_destroy(s->send_bb);
    grpc_metadata_array_destroy(&s->md);
    grpc_metadata_array_destroy(&s->trailing);
    grpc_slice_unref(s->details);
    grpc_call_unref(s->call);
    cq_destroy(s->cq);
    free(s);
}

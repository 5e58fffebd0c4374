/* rpc.h: the control plane's transport, a small C wrapper over gRPC core.
 *
 * Servers register unary and server-streaming methods by full name
 * ("/tandem.Decode/Generate") with handler functions; clients call them with a
 * deadline and may cancel. Messages are opaque bytes (packed protobuf-c messages;
 * the *_msg helpers at the end pack and unpack them so a call is one line).
 *
 * Threads. A server polls its completion queue on two threads and runs every handler
 * on a pool that grows on demand, so a handler that blocks (a prefill, a long stream)
 * never holds up other calls. A streaming call, once handed to its handler, belongs to
 * its owner until rpc_call_finish: any thread may send on it, and the owner learns of
 * client cancellation (or a vanished client, or the server stopping) within
 * milliseconds through rpc_call_cancelled, rpc_call_wait_cancel or a callback.
 * A channel may be shared by any number of threads; one rpc_stream is read by one
 * thread at a time, while rpc_stream_cancel may come from any thread.
 *
 * Errors. Fallible functions return 0 or -1 and describe the failure in an rpc_status:
 * a gRPC status code plus one readable line. Nothing here prints or exits (gRPC itself
 * may log to stderr; GRPC_VERBOSITY=NONE silences it).
 *
 * Typical use:
 *   rpc_server_create("127.0.0.1:0", &port, &srv, &st);
 *   rpc_server_add_stream(srv, RPC_DECODE_GENERATE, on_generate, worker, &st);
 *   rpc_server_start(srv, &st);            ...            rpc_server_stop(srv);
 *
 *   rpc_channel_create("127.0.0.1:7000", &ch, &st);
 *   rpc_unary_msg(ch, RPC_REGISTRY_REGISTER, &info.base, &tandem__register_reply__descriptor,
 *                 2000, (void **)&reply, &st);  ...  rpc_msg_free(reply); */
#ifndef RPC_H
#define RPC_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

/* Full names of the methods of proto/tandem.proto (checked against it by the tests). */
#define RPC_REGISTRY_REGISTER "/tandem.Registry/RegisterWorker"
#define RPC_REGISTRY_HEARTBEAT "/tandem.Registry/Heartbeat"
#define RPC_DECODE_GENERATE "/tandem.Decode/Generate" /* server streaming */
#define RPC_DECODE_KV_READY "/tandem.Decode/KvReady"
#define RPC_DECODE_KV_HELLO "/tandem.Decode/KvHello" /* transport handshake relay */
#define RPC_DECODE_KV_RENEW "/tandem.Decode/KvRenew" /* the prefill worker keeps a reservation */
#define RPC_PREFILL_RUN "/tandem.Prefill/Run"
#define RPC_ADMIN_STATUS "/tandem.Admin/Status"
#define RPC_ADMIN_CANCEL "/tandem.Admin/Cancel"
#define RPC_ADMIN_CORDON "/tandem.Admin/Cordon"
#define RPC_ADMIN_UNCORDON "/tandem.Admin/Uncordon"
#define RPC_ADMIN_DRAIN "/tandem.Admin/Drain"
#define RPC_ADMIN_REQUESTS "/tandem.Admin/Requests"
#define RPC_ADMIN_SET_ROLE "/tandem.Admin/SetRole"
#define RPC_ADMIN_SET_LOG_LEVEL "/tandem.Admin/SetLogLevel"
#define RPC_ADMIN_CONFIG "/tandem.Admin/Config"
#define RPC_WORKER_DRAIN "/tandem.Worker/Drain"
#define RPC_WORKER_SET_ROLE "/tandem.Worker/SetRole"
#define RPC_WORKER_SET_LOG_LEVEL "/tandem.Worker/SetLogLevel"
#define RPC_WORKER_CONFIG "/tandem.Worker/Config"

/* gRPC's status codes, same numbers, so they travel unchanged. */
typedef enum rpc_code {
    RPC_OK = 0,
    RPC_CANCELLED = 1,
    RPC_UNKNOWN = 2,
    RPC_INVALID_ARGUMENT = 3,
    RPC_DEADLINE_EXCEEDED = 4,
    RPC_NOT_FOUND = 5,
    RPC_ALREADY_EXISTS = 6,
    RPC_PERMISSION_DENIED = 7,
    RPC_RESOURCE_EXHAUSTED = 8,
    RPC_FAILED_PRECONDITION = 9,
    RPC_ABORTED = 10,
    RPC_OUT_OF_RANGE = 11,
    RPC_UNIMPLEMENTED = 12,
    RPC_INTERNAL = 13,
    RPC_UNAVAILABLE = 14,
    RPC_DATA_LOSS = 15,
    RPC_UNAUTHENTICATED = 16,
} rpc_code;

typedef struct rpc_status {
    int code; /* an rpc_code */
    char msg[256];
} rpc_status;

/* Sets st (may be NULL) and returns 0 when code is RPC_OK, else -1, so that
 * `return rpc_status_set(st, RPC_NOT_FOUND, "no request %s", id);` reads naturally. */
int rpc_status_set(rpc_status *st, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* "DEADLINE_EXCEEDED", ...; "CODE_<n>" for numbers outside the table. */
const char *rpc_code_name(int code);
/* tandem.proto's WorkerState by value, as operators read it: "ready", "cordoned",
 * ...; "unknown" for 0 and numbers outside the enum. */
const char *rpc_worker_state_name(int state);

/* A heap buffer owned by whoever holds it; rpc_bytes_free releases and zeroes it. */
typedef struct rpc_bytes {
    uint8_t *data;
    size_t len;
} rpc_bytes;

void rpc_bytes_free(rpc_bytes *b);

/* ------------------------------------------------------------------ server */

/* Mutual TLS for every server and channel this process creates afterwards: PEM files
 * of the CA that signs every peer, this process's certificate and its key. A server
 * then refuses a client without a certificate that CA signed, and a channel checks
 * the server's certificate against the CA and the target's host name (or IP). All
 * three NULL: plaintext (the default). Call once, before any server or channel. */
int rpc_tls_configure(const char *ca_file, const char *cert_file, const char *key_file, rpc_status *st);

typedef struct rpc_server rpc_server;
typedef struct rpc_call rpc_call; /* one incoming call, server side */

/* Unary handler, run on a pool thread. Either fills *resp (heap bytes: the library
 * sends and frees them; rpc_pack makes them) and leaves st at RPC_OK, or sets st to an
 * error (rpc_status_set) which becomes the call's status. req is valid only during
 * the call. `call` serves rpc_call_cancelled/rpc_call_peer/rpc_call_method only; the
 * library finishes a unary call itself when the handler returns. */
typedef void (*rpc_unary_fn)(void *user, rpc_call *call, const rpc_bytes *req, rpc_bytes *resp, rpc_status *st);

/* Server-streaming handler, run on a pool thread. From now on the caller owns `call`:
 * it sends any number of messages (from any thread) and must end it with exactly one
 * rpc_call_finish, also when the call was cancelled; the handler may return before
 * that and leave the call to another thread. req is valid only during the handler. */
typedef void (*rpc_stream_fn)(void *user, rpc_call *call, const rpc_bytes *req);

/* Creates a server listening on bind ("127.0.0.1:0", "0.0.0.0:50051"; port 0 picks a
 * free one) and reports the bound port in *port (may be NULL). Register methods,
 * then rpc_server_start. */
int rpc_server_create(const char *bind, int *port, rpc_server **out, rpc_status *st);
int rpc_server_add_unary(rpc_server *s, const char *method, rpc_unary_fn fn, void *user, rpc_status *st);
int rpc_server_add_stream(rpc_server *s, const char *method, rpc_stream_fn fn, void *user, rpc_status *st);
/* Starts serving; calls to methods not registered get UNIMPLEMENTED. */
/* Handler threads at most (calls beyond wait in a queue; one whose deadline passes
 * there ends with DEADLINE_EXCEEDED without running); n <= 0: 512. Before start. */
void rpc_server_set_max_handlers(rpc_server *s, int n);
int rpc_server_start(rpc_server *s, rpc_status *st);
int rpc_server_port(const rpc_server *s);
/* Stops accepting calls, cancels open ones, waits until every open call has been
 * finished by its owner (owners see the cancellation and must finish promptly) and
 * every handler has returned, joins all threads and frees the server. Also frees a
 * server that was never started. NULL is fine. */
void rpc_server_stop(rpc_server *s);

/* Queues one message on a streaming call. Thread-safe; messages go out in the order of
 * the calls. At most RPC_SEND_QUEUE_MAX messages wait per call: when the queue is full
 * this waits up to timeout_ms (<0: no limit) for room. Returns 0 when queued, -1 when
 * the call is cancelled or broken (rpc_call_cancelled then says 1) or the queue stayed
 * full. The bytes are copied. */
#define RPC_SEND_QUEUE_MAX 1024
int rpc_call_send(rpc_call *c, const void *data, size_t len, int timeout_ms);
/* Ends a streaming call with a status (code RPC_OK, or an error and a message which
 * may be NULL) after the queued messages. Never blocks on the network. The call must
 * not be used afterwards, by any thread. If a cancel callback is running on another
 * thread, this waits for it to return. */
void rpc_call_finish(rpc_call *c, int code, const char *msg);

/* 1 once the client cancelled, went away, passed its deadline, or the server is
 * stopping (sends then fail); else 0. */
int rpc_call_cancelled(rpc_call *c);
/* Waits until the call is cancelled (returns 1) or timeout_ms passes (0; <0: forever). */
int rpc_call_wait_cancel(rpc_call *c, int timeout_ms);
/* fn(arg) runs once when the call is cancelled, on a library thread (it must not
 * block; it may call rpc_call_finish), or right away on this thread if the call is
 * already cancelled. Replaces an earlier callback; rpc_call_finish drops it. Like
 * rpc_call_finish, it first waits for a callback running on another thread. */
void rpc_call_on_cancel(rpc_call *c, void (*fn)(void *arg), void *arg);
const char *rpc_call_method(const rpc_call *c);
/* The client's address ("ipv4:127.0.0.1:40312"), for logs. */
const char *rpc_call_peer(const rpc_call *c);

/* ------------------------------------------------------------------ client */

typedef struct rpc_channel rpc_channel;
typedef struct rpc_stream rpc_stream;

/* A channel to "host:port". Connects lazily and reconnects by itself (backoff capped
 * at one second, so a restarted peer is reachable again quickly). */
int rpc_channel_create(const char *target, rpc_channel **out, rpc_status *st);
void rpc_channel_destroy(rpc_channel *ch); /* NULL is fine; no call may be open */

/* One unary call. timeout_ms bounds the whole call (<= 0: no deadline). Returns 0
 * with *resp filled (heap, caller frees with rpc_bytes_free), or -1 with the status:
 * the server's error, DEADLINE_EXCEEDED, UNAVAILABLE when the peer cannot be reached. */
int rpc_unary(rpc_channel *ch, const char *method, const void *req, size_t req_len, int timeout_ms, rpc_bytes *resp,
              rpc_status *st);

/* Opens a server-streaming call (timeout_ms bounds the whole stream; <= 0: none).
 * Failures to connect show up at the first rpc_stream_next. */
int rpc_stream_open(rpc_channel *ch, const char *method, const void *req, size_t req_len, int timeout_ms,
                    rpc_stream **out, rpc_status *st);

typedef enum rpc_next {
    RPC_NEXT_MSG = 1,     /* *msg holds a message (caller frees) */
    RPC_NEXT_END = 0,     /* the stream is over; *st holds its final status, OK or not */
    RPC_NEXT_TIMEOUT = -1 /* nothing within timeout_ms; the stream goes on */
} rpc_next;

/* Waits up to timeout_ms (<0: forever) for the next message. After RPC_NEXT_END every
 * further call returns RPC_NEXT_END with the same status. */
rpc_next rpc_stream_next(rpc_stream *s, int timeout_ms, rpc_bytes *msg, rpc_status *st);
/* Cancels the call; safe from any thread while the stream is open. The reader then
 * gets RPC_NEXT_END with CANCELLED (unless the status had already arrived). */
void rpc_stream_cancel(rpc_stream *s);
/* Cancels the call if still running and frees everything. NULL is fine. */
void rpc_stream_close(rpc_stream *s);

/* ------------------------------------------------------------------ protobuf-c helpers */

/* Packs m into fresh heap bytes. Returns 0, or -1 when memory runs out. */
int rpc_pack(const ProtobufCMessage *m, rpc_bytes *out);
/* Unpacks bytes into a message of type d (free with rpc_msg_free), or returns NULL
 * and sets st (may be NULL) to INVALID_ARGUMENT naming the type. */
void *rpc_unpack(const ProtobufCMessageDescriptor *d, const void *data, size_t len, rpc_status *st);
void rpc_msg_free(void *m); /* a message from rpc_unpack or the *_msg calls; NULL is fine */

/* rpc_unary with messages: *resp (of type resp_desc) is freed with rpc_msg_free. An
 * unparsable response is INTERNAL. */
int rpc_unary_msg(rpc_channel *ch, const char *method, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *resp_desc, int timeout_ms, void **resp, rpc_status *st);
int rpc_stream_open_msg(rpc_channel *ch, const char *method, const ProtobufCMessage *req, int timeout_ms,
                        rpc_stream **out, rpc_status *st);
/* rpc_stream_next unpacking into *msg (type d). A message that does not parse cancels
 * the stream and ends it with INTERNAL. */
rpc_next rpc_stream_next_msg(rpc_stream *s, int timeout_ms, const ProtobufCMessageDescriptor *d, void **msg,
                             rpc_status *st);
int rpc_call_send_msg(rpc_call *c, const ProtobufCMessage *m, int timeout_ms);

#endif

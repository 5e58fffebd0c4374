/* rpc_internal.h: what server.c, client.c and common.c share and nobody else sees:
 * completion-queue tags, byte-buffer conversion, deadlines, channel arguments. */
#ifndef RPC_INTERNAL_H
#define RPC_INTERNAL_H

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/support/time.h>

#include "rpc.h"

/* Every operation batch started on a server's completion queue carries one of these;
 * the polling thread calls done(tag, success). */
typedef struct rpc_tag {
    void (*done)(struct rpc_tag *t, int ok);
} rpc_tag;

#define RPC_CONTAINER(ptr, type, field) ((type *)((char *)(ptr)-offsetof(type, field)))

/* Messages up to this size in both directions (gRPC's default receive limit is 4 MiB). */
#define RPC_MAX_MESSAGE (64 * 1024 * 1024)

/* A byte buffer holding a copy of data; NULL when memory runs out. */
grpc_byte_buffer *rpc_bb_from(const void *data, size_t len);
/* Copies a byte buffer into heap bytes, slice by slice (one copy; always allocated, even
 * for 0 bytes). */
int rpc_bb_to_bytes(grpc_byte_buffer *bb, rpc_bytes *out);
/* now + ms on the monotonic clock; infinite when ms < 0. */
gpr_timespec rpc_deadline_in(int ms);
/* Copies a status slice into st->msg (the code's name when the slice is empty). */
void rpc_status_from_grpc(rpc_status *st, grpc_status_code code, grpc_slice details);
/* Cancels a client stream and ends it with *final: later rpc_stream_next calls
 * return RPC_NEXT_END with that status. */
void rpc_stream_abort(rpc_stream *s, const rpc_status *final);

/* tls.c: the credentials every server and channel uses (insecure until
 * rpc_tls_configure was called). The caller releases them. */
#include <grpc/grpc_security.h>
grpc_server_credentials *rpc_server_credentials(void);
grpc_channel_credentials *rpc_channel_credentials(void);

#endif

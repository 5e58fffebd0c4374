/* fuzz_rpc_messages.c: every protobuf message that crosses the gRPC control plane, on
 * arbitrary bytes. The first byte picks the message: the requests the handlers accept
 * (Registry, Decode, Prefill, Admin, Worker) and the replies and stream events their
 * callers read. Each goes through rpc_unpack, as the handlers do; what parses must pack
 * again and pack the same once more (nothing unpacked is left half-formed). Then the
 * handlers' own checks: a WorkerInfo or WorkerLoad goes through the real registry
 * (coord_registry_register / _heartbeat, the Registry handlers' whole work), and a
 * GenerateRequest or PrefillRequest through wrk_check_request, the checks the worker's
 * Decode.Generate and Prefill.Run run before taking a request (Qwen3's vocabulary, a
 * 4096-token context), and a PrefillRequest's KV target through wrk_check_target (a
 * prefill worker with an f16 bs16 L2 kv2 d64 pool on TCP). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "registry.h"
#include "request_check.h"
#include "rpc.h"
#include "tandem.pb-c.h"

static const ProtobufCMessageDescriptor *const MESSAGES[] = {
    &tandem__worker_info__descriptor,      &tandem__worker_load__descriptor,      &tandem__generate_request__descriptor,
    &tandem__kv_ready_request__descriptor, &tandem__kv_hello_request__descriptor, &tandem__prefill_request__descriptor,
    &tandem__cancel_request__descriptor,   &tandem__worker_request__descriptor,   &tandem__register_reply__descriptor,
    &tandem__heartbeat_reply__descriptor,  &tandem__generate_event__descriptor,   &tandem__kv_ready_reply__descriptor,
    &tandem__kv_hello_reply__descriptor,   &tandem__prefill_result__descriptor,   &tandem__cluster_status__descriptor,
    &tandem__cancel_reply__descriptor,     &tandem__worker_reply__descriptor,     &tandem__log_level_reply__descriptor,
    &tandem__config_reply__descriptor,     &tandem__request_list__descriptor,     &tandem__kv_renew_request__descriptor,
    &tandem__kv_renew_reply__descriptor,
};
#define N_MESSAGES (sizeof MESSAGES / sizeof MESSAGES[0])

static coord_registry *reg;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    eng_log_set_level(ENG_LOG_ERROR); /* refusals are logged as warnings: keep the run quiet */
    coord_registry_config cfg = {.model = "fuzz", .n_layers = 2, .n_kv_heads = 2, .head_dim = 64, .max_workers = 64};
    eng_error err;
    if (coord_registry_new(&cfg, &reg, &err) < 0)
        abort();
    return 0;
}

static void check_request(const ProtobufCMessage *m)
{
    eng_sampling s;
    char msg[512];
    if (m->descriptor == &tandem__generate_request__descriptor) {
        const Tandem__GenerateRequest *g = (const Tandem__GenerateRequest *)m;
        wrk_check_request(4096, 151936, g->prompt, g->n_prompt, g->generated, g->n_generated, g->sampling, &s, msg,
                          sizeof msg);
    } else {
        const Tandem__PrefillRequest *p = (const Tandem__PrefillRequest *)m;
        wrk_check_request(4096, 151936, p->prompt, p->n_prompt, p->generated, p->n_generated, p->sampling, &s, msg,
                          sizeof msg);
        static const eng_kv_layout mine = {
            .dtype = ENG_DT_F16, .block_size = 16, .n_layers = 2, .n_kv_heads = 2, .head_dim = 64};
        wrk_check_target(&mine, "tcp", p->target, (int)(p->n_prompt + p->n_generated), msg, sizeof msg);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const ProtobufCMessageDescriptor *d = MESSAGES[data[0] % N_MESSAGES];
    rpc_status st;
    ProtobufCMessage *m = rpc_unpack(d, data + 1, size - 1, &st);
    if (!m)
        return 0;
    rpc_bytes once = {0}, twice = {0};
    if (rpc_pack(m, &once) < 0)
        abort();
    ProtobufCMessage *again = rpc_unpack(d, once.data, once.len, &st);
    if (!again || rpc_pack(again, &twice) < 0 || twice.len != once.len || memcmp(once.data, twice.data, once.len))
        abort(); /* what this side packed must read back to the same message */
    rpc_msg_free(again);
    rpc_bytes_free(&once);
    rpc_bytes_free(&twice);
    char reason[512];
    if (d == &tandem__worker_info__descriptor)
        coord_registry_register(reg, (const Tandem__WorkerInfo *)m, reason, sizeof reason);
    else if (d == &tandem__worker_load__descriptor)
        coord_registry_heartbeat(reg, (const Tandem__WorkerLoad *)m);
    else if (d == &tandem__generate_request__descriptor || d == &tandem__prefill_request__descriptor)
        check_request(m);
    rpc_msg_free(m);
    return 0;
}

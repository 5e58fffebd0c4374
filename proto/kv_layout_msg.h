/* kv_layout_msg.h: eng_kv_layout to and from the KvLayout message, the one mapping
 * every process that sends or reads a layout uses (a worker's registration and KV
 * targets, the coordinator's registry and admin answers, tandemctl). */
#ifndef TANDEM_KV_LAYOUT_MSG_H
#define TANDEM_KV_LAYOUT_MSG_H

#include "model/kvcache.h"
#include "tandem.pb-c.h"

static inline void kv_layout_to_msg(const eng_kv_layout *l, Tandem__KvLayout *m)
{
    tandem__kv_layout__init(m);
    m->dtype = (Tandem__DType)l->dtype;
    m->block_size = (uint32_t)l->block_size;
    m->layers = (uint32_t)l->n_layers;
    m->kv_heads = (uint32_t)l->n_kv_heads;
    m->head_dim = (uint32_t)l->head_dim;
    m->matmul_dtype = (Tandem__DType)l->matmul_dtype;
}

/* All zero for a missing message (m NULL). Values are as sent: callers check them. */
static inline eng_kv_layout kv_layout_from_msg(const Tandem__KvLayout *m)
{
    if (!m)
        return (eng_kv_layout){0};
    return (eng_kv_layout){.dtype = (eng_dtype)m->dtype,
                           .block_size = (int)m->block_size,
                           .n_layers = (int)m->layers,
                           .n_kv_heads = (int)m->kv_heads,
                           .head_dim = (int)m->head_dim,
                           .matmul_dtype = (eng_dtype)m->matmul_dtype};
}

#endif

/* admission.h: early rejection against a time-to-first-token objective (Mooncake's).
 *
 * With `tandem coordinator --ttft-slo-ms N`, each request's TTFT is predicted when it
 * arrives, from what the prefill workers reported in their heartbeats: the prompt tokens
 * queued on a worker (plus what the router sent it since), the part of this prompt it
 * must compute (its prefix cache counted off), and its measured speed (input tokens per
 * second of forward steps). A request whose best prediction exceeds N is refused at once
 * with 503 and Retry-After, rather than queueing into a certain miss. An admitted prompt
 * counts on its prefill worker from admission until its Prefill.Run is answered
 * (coord_registry_note_admitted), so a burst between two heartbeats, and requests still
 * on their way to the worker, are seen. Pure functions: the router applies them. */
#ifndef COORD_ADMISSION_H
#define COORD_ADMISSION_H

#include "registry.h"

/* Seconds until a prompt of n_prompt tokens (cached_tokens of them cached there) gets
 * its first token on prefill worker v: (waiting + to compute) / measured speed, the
 * waiting tokens being the larger of the router's admitted count and the worker's queue.
 * Negative when v has not measured its speed yet (no prediction). */
double coord_predict_ttft_s(const coord_worker_view *v, int n_prompt);

/* Among healthy prefill-capable workers, the one with the lowest prediction; its index,
 * with *ttft_s set, or -1 when none can predict (nothing measured yet: admit). */
int coord_admission_best(const coord_worker_view *v, int n, int n_prompt, double *ttft_s);

#endif

/* admission.c: see admission.h. */
#include "admission.h"

double coord_predict_ttft_s(const coord_worker_view *v, int n_prompt)
{
    if (v->prefill_rate <= 0)
        return -1;
    double todo = (double)n_prompt - v->cached_tokens;
    /* the router's own count covers requests on their way too; the worker's queue, what
     * other coordinators' requests (or a restart) put there */
    double queued = (double)(v->queued_prompt_tokens + v->sent_prompt_tokens);
    if ((double)v->admitted_tokens > queued)
        queued = (double)v->admitted_tokens;
    return (queued + (todo > 1 ? todo : 1)) / v->prefill_rate;
}

int coord_admission_best(const coord_worker_view *v, int n, int n_prompt, double *ttft_s)
{
    int best = -1;
    for (int i = 0; i < n; i++) {
        if (!v[i].healthy || (v[i].role != TANDEM__ROLE__ROLE_PREFILL && v[i].role != TANDEM__ROLE__ROLE_BOTH))
            continue;
        double t = coord_predict_ttft_s(&v[i], n_prompt);
        if (t >= 0 && (best < 0 || t < *ttft_s))
            best = i, *ttft_s = t;
    }
    return best;
}

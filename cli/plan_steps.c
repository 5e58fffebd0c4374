/* plan_steps.c: a worker's logged steps read back for the planner: each step line
 * of a debug-level worker log (worker/engine.c writes the format) as the cost
 * model's terms and the step's measured time, so that a cluster's real steps can be
 * set against a profile's cost (`tandemctl plan-check`). */
#include <stdio.h>
#include <string.h>

#include "plan.h"

int plan_parse_step_line(const char *line, plan_logged_step *out)
{
    const char *step = strstr(line, ": step: ");
    if (!step)
        return 0;
    const char *id = step;
    while (id > line && id[-1] != ' ')
        id--;
    size_t n = (size_t)(step - id);
    if (n == 0 || n >= sizeof out->worker)
        return 0;
    int seqs, tokens, decoding, chunk, logits, streamed;
    long long positions;
    double forward_ms, after_ms, stream_ms;
    if (sscanf(step + 8,
               "%d sequences, %d tokens, %lld positions attended, %d decoding, longest prompt chunk %d, %d logits; "
               "forward %lf ms, then sampling and streaming %lf ms; streamed %d tokens in %lf ms",
               &seqs, &tokens, &positions, &decoding, &chunk, &logits, &forward_ms, &after_ms, &streamed,
               &stream_ms) != 10)
        return 0;
    if (seqs < 1 || tokens < seqs || positions < tokens || decoding < 0 || decoding > seqs || chunk < 0 ||
        chunk > tokens || logits < 0 || logits > seqs || streamed < 0 || !(forward_ms >= 0) || !(after_ms >= 0) ||
        !(stream_ms >= 0))
        return 0;
    memcpy(out->worker, id, n);
    out->worker[n] = 0;
    out->x[0] = 1;
    out->x[1] = tokens;
    out->x[2] = (double)positions;
    out->x[3] = logits;
    out->decode_items = decoding;
    out->longest_chunk = chunk;
    out->streamed_tokens = streamed;
    out->stream_seconds = stream_ms / 1e3;
    /* streaming is timed inside "sampling and streaming"; a clock step can make the
     * difference negative by a hair */
    double ms = forward_ms + after_ms - stream_ms;
    out->seconds = (ms > 0 ? ms : 0) / 1e3;
    return 1;
}

/* cli_drain.c: SIGTERM drains, SIGINT or a second SIGTERM stops (see cli_drain.h). */
#include "cli_drain.h"
#include "common/clock.h"
#include "common/log.h"

#include <pthread.h>
#include <stdio.h>
#include <time.h>

#define POLL_MS 100

void cli_block_signals(sigset_t *stop, int extra)
{
    sigemptyset(stop);
    sigaddset(stop, SIGINT);
    sigaddset(stop, SIGTERM);
    sigset_t blocked = *stop;
    if (extra)
        sigaddset(&blocked, extra);
    pthread_sigmask(SIG_BLOCK, &blocked, NULL);
    signal(SIGPIPE, SIG_IGN);
}

void cli_wait_and_drain(const sigset_t *set, double drain_timeout_s, const cli_drainable *d)
{
    int sig = 0;
    sigwait(set, &sig);
    if (sig != SIGTERM) {
        eng_log(ENG_LOG_INFO, d->who, NULL, "SIGINT, stopping");
        return;
    }
    d->drain(d->ctx);
    int left = d->in_flight(d->ctx);
    eng_log(ENG_LOG_INFO, d->who, NULL,
            "SIGTERM, draining: %d requests in flight, waiting up to %.0f s (SIGINT or SIGTERM again stops now)", left,
            drain_timeout_s);
    double deadline = eng_now_s() + drain_timeout_s + d->grace_s;
    const struct timespec poll = {0, POLL_MS * 1000000L};
    while ((left = d->in_flight(d->ctx)) > 0 && eng_now_s() < deadline) {
        if (sigtimedwait(set, NULL, &poll) > 0) {
            eng_log(ENG_LOG_WARN, d->who, NULL, "second signal, stopping with %d requests in flight", left);
            return;
        }
    }
    if (left > 0)
        eng_log(ENG_LOG_WARN, d->who, NULL, "drain timeout: stopping with %d requests in flight", left);
    else
        eng_log(ENG_LOG_INFO, d->who, NULL, "drained, stopping");
}

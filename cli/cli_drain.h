/* cli_drain.h: the Kubernetes shutdown convention of `tandem worker` and
 * `tandem coordinator`. The first SIGTERM drains: the process stops admitting new
 * requests, lets those in flight finish for up to the drain timeout, then returns so
 * that the caller stops it and exits 0. SIGINT, or a second SIGTERM, ends the wait at
 * once (the caller's stop then fails what is left, explicitly). */
#ifndef TANDEM_CLI_DRAIN_H
#define TANDEM_CLI_DRAIN_H

#include <signal.h>

typedef struct cli_drainable {
    const char *who;             /* "tandem worker" */
    void (*drain)(void *ctx);    /* stop admitting */
    int (*in_flight)(void *ctx); /* requests left */
    void *ctx;
    double grace_s; /* waited beyond the drain timeout for what the process itself ends
                       at that timeout (a worker hands its streams back) */
} cli_drainable;

/* Before any thread starts (they inherit the mask): blocks SIGINT and SIGTERM, and
 * `extra` unless it is 0, so that they are taken with sigwait, and ignores SIGPIPE
 * (a peer gone is an error on its socket). `stop` gets SIGINT and SIGTERM, the set
 * that cli_wait_and_drain waits for. */
void cli_block_signals(sigset_t *stop, int extra);

/* Waits for a signal of `set` (SIGINT, SIGTERM; blocked in every thread), drains on
 * SIGTERM as above, and returns once the process should stop. */
void cli_wait_and_drain(const sigset_t *set, double drain_timeout_s, const cli_drainable *d);

#endif

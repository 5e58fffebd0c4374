/* clock.h: the one monotonic clock of every Tandem process.
 *
 * Durations, rates, timeouts and deadlines all read CLOCK_MONOTONIC, which never
 * jumps when the wall clock is set; only differences of its values mean anything.
 * (Log timestamps, which must be wall-clock time, are log.h's business.) */
#ifndef ENG_CLOCK_H
#define ENG_CLOCK_H

#include <time.h>

/* Seconds on the monotonic clock. */
double eng_now_s(void);

/* The monotonic time ms milliseconds from now (ms <= 0: now), for
 * pthread_cond_timedwait on a condition variable set to CLOCK_MONOTONIC. */
void eng_deadline_after_ms(struct timespec *ts, int ms);

#endif

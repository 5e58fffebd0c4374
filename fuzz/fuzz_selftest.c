/* fuzz_selftest.c: a harness that misbehaves on purpose, for test_run_fuzzer.sh, which
 * checks that run_fuzzer.sh fails (and never reports "skipped") when a harness crashes or
 * hangs. FUZZ_SELFTEST picks the misbehaviour for every input: "crash", "hang" or none. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    (void)data, (void)size;
    const char *mode = getenv("FUZZ_SELFTEST");
    if (mode && strcmp(mode, "crash") == 0)
        abort();
    if (mode && strcmp(mode, "hang") == 0)
        for (;;)
            pause();
    return 0;
}

/* fuzz_file.h: harnesses for loaders that read a named file from a folder write the
 * input there first (one private folder per process, made once). */
#ifndef TANDEM_FUZZ_FILE_H
#define TANDEM_FUZZ_FILE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Writes data to <folder>/name; returns the folder, or aborts (the harness is broken). */
static const char *fuzz_write_file(const char *name, const uint8_t *data, size_t size)
{
    static char dir[] = "/tmp/tandem-fuzz-XXXXXX";
    static int made;
    if (!made && !mkdtemp(dir))
        abort();
    made = 1;
    char path[sizeof dir + 64];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f))
        abort();
    return dir;
}

#endif

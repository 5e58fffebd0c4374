/* rdma_none.c: the RDMA entry points of a build without libibverbs.
 *
 * The build must work on machines without rdma-core; kvt_open("auto") then picks TCP and
 * kvt_open("rdma") fails with this reason instead of a link error. */
#include <stdio.h>

#include "kvtransfer.h"

#define NOT_BUILT "RDMA support was not built (libibverbs was not found at configure time)"

int kvt_rdma_probe(char *name, size_t name_cap, char *why, size_t why_cap)
{
    if (name_cap)
        name[0] = '\0';
    snprintf(why, why_cap, "%s", NOT_BUILT);
    return 0;
}

int kvt_rdma_create(const kvt_rdma_options *opt, kvt_transport **out, eng_error *err)
{
    (void)opt;
    *out = NULL;
    return eng_fail(err, "kvtransfer: " NOT_BUILT);
}

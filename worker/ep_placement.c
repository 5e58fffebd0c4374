/* ep_placement.c: which rank of an EP group holds which experts (ep.h).
 *
 * By default rank r of N holds the contiguous range [E*r/N, E*(r+1)/N). A placement
 * file (--expert-placement) names each rank's experts instead, the same for every MoE
 * layer, and may give an expert to several ranks (replicas of a hot expert):
 *
 *     {"ranks": [[0, 1, 2, 3, 4, 5, 6, 7, 12], [8, 9, 10, 11, 12, 13, 14, 15]]}
 *
 * Every expert must be held by at least one rank; a rank's list has no duplicates. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "common/file.h"
#include "ep.h"

#define PLACEMENT_MAX_BYTES (16u << 20) /* a placement file, at most */

static int from_file(const char *path, wrk_ep_placement *p, eng_error *err)
{
    size_t len;
    char *text = eng_read_file(path, &len, err);
    if (!text)
        return -1;
    if (len > PLACEMENT_MAX_BYTES) {
        free(text);
        return eng_fail(err, "--expert-placement %s: larger than %u bytes", path, PLACEMENT_MAX_BYTES);
    }
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root)
        return eng_fail(err, "--expert-placement %s: not JSON", path);
    int rc = -1;
    const cJSON *ranks = cJSON_GetObjectItemCaseSensitive(root, "ranks");
    if (!cJSON_IsArray(ranks) || cJSON_GetArraySize(ranks) != p->size) {
        eng_fail(err, "--expert-placement %s: \"ranks\" must be an array of %d lists of expert ids (one per rank)",
                 path, p->size);
        goto done;
    }
    int r = 0;
    const cJSON *list;
    cJSON_ArrayForEach(list, ranks)
    {
        const cJSON *id;
        if (!cJSON_IsArray(list)) {
            eng_fail(err, "--expert-placement %s: rank %d's entry is not a list", path, r);
            goto done;
        }
        cJSON_ArrayForEach(id, list)
        {
            double v = cJSON_IsNumber(id) ? id->valuedouble : -1;
            if (v < 0 || v >= p->n_experts || v != (int)v) {
                eng_fail(err, "--expert-placement %s: rank %d: expert ids are integers in [0, %d)", path, r,
                         p->n_experts);
                goto done;
            }
            uint8_t *h = &p->held[(size_t)r * p->n_experts + (size_t)v];
            if (*h) {
                eng_fail(err, "--expert-placement %s: rank %d lists expert %d twice", path, r, (int)v);
                goto done;
            }
            *h = 1;
        }
        r++;
    }
    for (int e = 0; e < p->n_experts; e++) {
        int n = 0;
        for (int k = 0; k < p->size; k++)
            n += p->held[(size_t)k * p->n_experts + (size_t)e];
        if (!n) {
            eng_fail(err, "--expert-placement %s: no rank holds expert %d", path, e);
            goto done;
        }
    }
    rc = 0;
done:
    cJSON_Delete(root);
    return rc;
}

int wrk_ep_placement_load(const char *path, int n_experts, int size, wrk_ep_placement *p, eng_error *err)
{
    memset(p, 0, sizeof *p);
    if (size < 1 || size > WRK_EP_MAX_SIZE || n_experts < size)
        return eng_fail(err, "--ep-size %d does not fit the model's %d experts", size, n_experts);
    p->n_experts = n_experts;
    p->size = size;
    if (!(p->held = calloc((size_t)size * (size_t)n_experts, 1)))
        return eng_fail(err, "out of memory");
    if (path) {
        if (from_file(path, p, err) < 0) {
            wrk_ep_placement_free(p);
            return -1;
        }
        return 0;
    }
    for (int r = 0; r < size; r++) {
        int lo, hi;
        wrk_ep_range(n_experts, size, r, &lo, &hi);
        memset(p->held + (size_t)r * n_experts + lo, 1, (size_t)(hi - lo));
    }
    return 0;
}

void wrk_ep_placement_free(wrk_ep_placement *p)
{
    free(p->held);
    p->held = NULL;
}

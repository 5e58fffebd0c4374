/* kernel_bench.c: times eng_matmul on the Qwen3-0.6B projection shapes.
 *
 * Separates the kernels' speed from the rest of the forward pass: for each shape
 * it reports decode (1 token, as GB/s of weights streamed) and prefill (P tokens,
 * as GFLOP/s, and the CPU time it took), for the variant TANDEM_ISA selects and N
 * threads.
 *
 * usage: kernel_bench [--threads N] [--tokens P] [--dtype bf16|f16|f32|f8e4m3] [--matmul-dtype f32|bf16]
 *                     [--shape NAME]
 * (f8e4m3: with a scale per 128 x 128 block, as in Qwen's -FP8 checkpoints; --matmul-dtype
 * bf16: bf16 or FP8 weights on inputs rounded to bf16, as `tandem --matmul-dtype bf16` runs them) */
#include "common/clock.h"
#include "kernels/kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* CPU seconds used by the whole process so far (all threads). */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static const struct {
    const char *name;
    int n_in, n_out;
} SHAPES[] = {
    {"q_proj", 1024, 2048},    {"k_proj", 1024, 1024},    {"o_proj", 2048, 1024},
    {"gate_proj", 1024, 3072}, {"down_proj", 3072, 1024}, {"lm_head", 1024, 151936},
};

int main(int argc, char **argv)
{
    int threads = 2, tokens = 512;
    eng_dtype dt = ENG_DT_BF16;
    const char *only = NULL;
    int x_bf16 = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--threads") == 0)
            threads = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--tokens") == 0)
            tokens = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--matmul-dtype") == 0)
            x_bf16 = strcmp(argv[i + 1], "bf16") == 0;
        else if (strcmp(argv[i], "--shape") == 0)
            only = argv[i + 1];
        else if (strcmp(argv[i], "--dtype") == 0)
            dt = strcmp(argv[i + 1], "f32") == 0      ? ENG_DT_F32
                 : strcmp(argv[i + 1], "f16") == 0    ? ENG_DT_F16
                 : strcmp(argv[i + 1], "f8e4m3") == 0 ? ENG_DT_F8E4M3
                                                      : ENG_DT_BF16;
    }
    if (threads < 1 || tokens < 1) {
        fprintf(stderr, "usage: kernel_bench [--threads N] [--tokens P] [--dtype bf16|f16|f32|f8e4m3] "
                        "[--matmul-dtype f32|bf16] [--shape NAME]\n");
        return 2;
    }
    eng_pool *pool = eng_pool_create(threads);
    x_bf16 = x_bf16 && (dt == ENG_DT_BF16 || dt == ENG_DT_F8E4M3);
    printf("isa=%s threads=%d dtype=%s matmul_dtype=%s prefill_tokens=%d\n", eng_kernels_init(), threads,
           eng_dtype_name(dt), x_bf16 ? "bf16" : "f32", tokens);
    for (size_t s = 0; s < sizeof SHAPES / sizeof SHAPES[0]; s++) {
        if (only && strcmp(only, SHAPES[s].name) != 0)
            continue;
        int n_in = SHAPES[s].n_in, n_out = SHAPES[s].n_out;
        size_t wbytes = (size_t)n_in * n_out * eng_dtype_size(dt);
        unsigned char *w = malloc(wbytes);
        float *x = malloc((size_t)tokens * n_in * sizeof(float));
        float *y = malloc((size_t)tokens * n_out * sizeof(float));
        float *scratch = malloc((size_t)tokens * n_in * sizeof(float));
        size_t n_scales = (size_t)((n_out + 127) / 128) * ((n_in + 127) / 128);
        float *scales = malloc(n_scales * sizeof(float));
        if (!pool || !w || !x || !y || !scratch || !scales) {
            fprintf(stderr, "kernel_bench: out of memory\n");
            return 1;
        }
        /* Normal numbers in every dtype, none subnormal: on Intel cores each
         * subnormal operand costs a microcode assist, and an earlier byte pattern
         * (1 in 64 bf16 weights subnormal) made the kernels look 10x slower there
         * than on any real checkpoint. FP8: codes 0x08..0x77 of either sign. */
        size_t n_w = (size_t)n_in * n_out;
        if (dt == ENG_DT_F8E4M3) {
            for (size_t i = 0; i < n_w; i++) {
                unsigned h = (unsigned)(i * 2654435761u >> 13);
                w[i] = (unsigned char)((h & 0x80) | (0x08 + (h & 0x7f) % 0x70));
            }
        } else {
            float *wf = malloc(n_w * sizeof(float));
            if (!wf) {
                fprintf(stderr, "kernel_bench: out of memory\n");
                return 1;
            }
            for (size_t i = 0; i < n_w; i++)
                wf[i] = (float)((int)((i * 2654435761u >> 13) % 255) - 127) / 128.0f + (1.0f / 256);
            eng_from_f32(w, wf, dt, n_w);
            free(wf);
        }
        for (size_t i = 0; i < (size_t)tokens * n_in; i++)
            x[i] = (float)((i % 97) - 48) / 64.0f;
        for (size_t i = 0; i < n_scales; i++)
            scales[i] = 1.0f / (float)(64 + i % 64);
        eng_weight wt = {.w = w, .dt = dt, .x_bf16 = x_bf16};
        if (dt == ENG_DT_F8E4M3)
            wt = (eng_weight){.w = w, .dt = dt, .scale = scales, .block_out = 128, .block_in = 128, .x_bf16 = x_bf16};
        /* Decode: enough repetitions to stream ~2 GB, best of them. */
        int reps = (int)(2e9 / wbytes) + 2;
        double best = 1e30;
        for (int r = 0; r < reps; r++) {
            double t0 = eng_now_s();
            eng_matmul_weight(pool, y, x, scratch, &wt, 1, n_in, n_out);
            double d = eng_now_s() - t0;
            best = d < best ? d : best;
        }
        double dec_gbs = wbytes / best / 1e9;
        double flops = 2.0 * tokens * n_in * n_out;
        int preps = flops > 2e10 ? 1 : 3;
        double pbest = 1e30, pcpu = 1e30;
        for (int r = 0; r < preps; r++) {
            double t0 = eng_now_s(), c0 = cpu_s();
            eng_matmul_weight(pool, y, x, scratch, &wt, tokens, n_in, n_out);
            double d = eng_now_s() - t0, c = cpu_s() - c0;
            pbest = d < pbest ? d : pbest;
            pcpu = c < pcpu ? c : pcpu;
        }
        /* CPU seconds (all threads) next to wall time: on a shared machine they
         * still show the work done when the wall clock mostly shows the others. */
        printf("%-10s %5d x %-6d decode %6.1f GB/s (%7.3f ms)   prefill %6.1f GFLOP/s (%8.2f ms, cpu %8.2f ms)\n",
               SHAPES[s].name, n_out, n_in, dec_gbs, best * 1e3, flops / pbest / 1e9, pbest * 1e3, pcpu * 1e3);
        free(w);
        free(scales);
        free(x);
        free(y);
        free(scratch);
    }
    eng_pool_destroy(pool);
    return 0;
}

/*
 * A C program on the C ABI alone: `check BACKEND` runs lora_forward against a plain C
 * reference, an SVGD step (fused op) against the three ops it stands for, bf16 tensors
 * (bits in and out, cast, a bf16 matmul against a double reference), and the error paths. Exit status 0 when everything holds; each failure is printed.
 */
#include "bella.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;

#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                           \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fprintf(stderr, " [last error: %s]\n", bella_last_error());                    \
            failures++;                                                                    \
        }                                                                                  \
    } while (0)

#define OK(call) CHECK((call) == BELLA_OK, "%s", #call)

/* Deterministic values in [-0.5, 0.5). */
static void fill(float *v, size_t n, unsigned seed) {
    unsigned s = seed * 2654435761u + 1u;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        v[i] = (float)((s >> 8) & 0xFFFF) / 65536.0f - 0.5f;
    }
}

static BellaTensor *upload(BellaBackend *be, const float *data, const size_t *shape, size_t rank) {
    BellaTensor *t = NULL;
    OK(bella_tensor_upload(be, data, shape, rank, &t));
    return t;
}

static float *download(BellaBackend *be, const BellaTensor *t) {
    size_t n = bella_tensor_numel(t);
    float *v = malloc(n * sizeof(float));
    OK(bella_tensor_download(be, t, v, n));
    return v;
}

/* y_k = x W^T + s (x A_k^T) B_k^T for a shared x, in double. */
static void check_lora_forward(BellaBackend *be) {
    enum { K = 2, M = 3, I = 5, O = 4, R = 2 };
    float x[M * I], w[O * I], a[K * R * I], b[K * O * R];
    fill(x, M * I, 1), fill(w, O * I, 2), fill(a, K * R * I, 3), fill(b, K * O * R, 4);
    const float s = 2.0f;
    size_t sx[] = {M, I}, sw[] = {O, I}, sa[] = {K, R, I}, sb[] = {K, O, R};
    BellaTensor *tx = upload(be, x, sx, 2), *tw = upload(be, w, sw, 2);
    BellaTensor *ta = upload(be, a, sa, 3), *tb = upload(be, b, sb, 3);
    BellaTensor *y = NULL, *h = NULL;
    OK(bella_lora_forward(be, tx, tw, NULL, ta, tb, s, &y, &h));
    if (y && h) {
        size_t shape[3] = {0};
        CHECK(bella_tensor_shape(y, shape, 3) == 3 && shape[0] == K && shape[1] == M &&
                  shape[2] == O,
              "y shape [%zu, %zu, %zu]", shape[0], shape[1], shape[2]);
        CHECK(bella_tensor_dtype(y) == BELLA_F32, "dtype");
        float *got = download(be, y);
        for (int k = 0; k < K; k++)
            for (int m = 0; m < M; m++)
                for (int o = 0; o < O; o++) {
                    double want = 0.0;
                    for (int i = 0; i < I; i++) want += (double)x[m * I + i] * w[o * I + i];
                    for (int r = 0; r < R; r++) {
                        double hr = 0.0;
                        for (int i = 0; i < I; i++)
                            hr += (double)x[m * I + i] * a[(k * R + r) * I + i];
                        want += s * hr * b[(k * O + o) * R + r];
                    }
                    float g = got[(k * M + m) * O + o];
                    CHECK(fabs(g - want) <= 1e-5 * (1.0 + fabs(want)),
                          "lora_forward y[%d,%d,%d] = %g, want %g", k, m, o, g, want);
                }
        free(got);
    }
    bella_tensor_free(y), bella_tensor_free(h);

    /* A weight of the wrong shape: a shape error naming the op, nothing written. */
    size_t bad[] = {O, I + 1};
    float wbad[O * (I + 1)];
    fill(wbad, O * (I + 1), 5);
    BellaTensor *twbad = upload(be, wbad, bad, 2);
    BellaTensor *y2 = NULL, *h2 = NULL;
    CHECK(bella_lora_forward(be, tx, twbad, NULL, ta, tb, s, &y2, &h2) == BELLA_ERR_SHAPE,
          "a wrong weight shape is BELLA_ERR_SHAPE");
    CHECK(strstr(bella_last_error(), "lora_forward") != NULL, "the message names the op");
    CHECK(y2 == NULL && h2 == NULL, "no outputs on error");
    /* Null inputs and outputs. */
    CHECK(bella_lora_forward(be, NULL, tw, NULL, ta, tb, s, &y2, &h2) == BELLA_ERR_INVALID,
          "a null x is BELLA_ERR_INVALID");
    CHECK(bella_lora_forward(be, tx, tw, NULL, ta, tb, s, NULL, &h2) == BELLA_ERR_INVALID,
          "a null y_out is BELLA_ERR_INVALID");
    bella_tensor_free(twbad);
    bella_tensor_free(tx), bella_tensor_free(tw), bella_tensor_free(ta), bella_tensor_free(tb);
}

/* rbf_kernel, then the fused svgd_step against svgd_direction + axpby + adamw_step. */
static void check_svgd_step(BellaBackend *be) {
    enum { K = 3, D = 37 };
    float theta[K * D], score[K * D], m[K * D], v[K * D];
    fill(theta, K * D, 6), fill(score, K * D, 7), fill(m, K * D, 8), fill(v, K * D, 9);
    for (int i = 0; i < K * D; i++) m[i] *= 0.1f, v[i] = 0.01f + 0.05f * (v[i] + 0.5f);
    size_t sp[] = {K, D};
    BellaTensor *th = upload(be, theta, sp, 2), *sc = upload(be, score, sp, 2);
    BellaTensor *kern = NULL;
    float h = 0.0f;
    OK(bella_rbf_kernel(be, th, NULL, &kern, &h));
    CHECK(h > 0.0f, "median bandwidth %g", h);
    BellaAdamW hp = {1e-2f, 0.9f, 0.999f, 1e-8f, 0.0f, 3};
    const float gscale = -0.25f;

    BellaTensor *t1 = upload(be, theta, sp, 2), *m1 = upload(be, m, sp, 2), *v1 = upload(be, v, sp, 2);
    OK(bella_svgd_step(be, t1, sc, kern, h, gscale, m1, v1, &hp));

    BellaTensor *phi = NULL, *g = NULL;
    BellaTensor *t2 = upload(be, theta, sp, 2), *m2 = upload(be, m, sp, 2), *v2 = upload(be, v, sp, 2);
    OK(bella_svgd_direction(be, th, sc, kern, h, &phi));
    OK(bella_axpby(be, gscale, phi, 0.0f, phi, &g));
    OK(bella_adamw_step(be, t2, g, m2, v2, &hp));

    float *a = download(be, t1), *b = download(be, t2), *ma = download(be, m1), *mb = download(be, m2);
    CHECK(memcmp(a, b, sizeof(float) * K * D) == 0, "svgd_step theta: the bits of the three ops");
    CHECK(memcmp(ma, mb, sizeof(float) * K * D) == 0, "svgd_step m: the bits of the three ops");
    int moved = 0;
    for (int i = 0; i < K * D; i++) moved += a[i] != theta[i];
    CHECK(moved == K * D, "every parameter moved (%d of %d)", moved, K * D);
    free(a), free(b), free(ma), free(mb);

    /* Bad hyper-parameters: step 0. */
    BellaAdamW bad = hp;
    bad.step = 0;
    CHECK(bella_svgd_step(be, t1, sc, kern, h, gscale, m1, v1, &bad) == BELLA_ERR_INVALID,
          "step 0 is BELLA_ERR_INVALID");

    BellaTensor *all[] = {th, sc, kern, t1, m1, v1, phi, g, t2, m2, v2};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) bella_tensor_free(all[i]);
}

/* bfloat16 bits of x, rounded to nearest, ties to even (NaN to 0x7fff): written here from
 * the format's definition, independent of the library. */
static uint16_t bf16_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fff;
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static float bf16_value(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* 16-bit tensors: bits in and out, cast, a bf16 matmul (a b^T and a b) against a double
 * reference on the exact bf16 values, and the refusals. */
static void check_half(BellaBackend *be) {
    enum { M = 5, N = 7, KK = 24 };
    float af[M * KK], bf[N * KK];
    fill(af, M * KK, 11), fill(bf, N * KK, 12);
    uint16_t a[M * KK], bt[N * KK], b[KK * N];
    for (int i = 0; i < M * KK; i++) a[i] = bf16_bits(af[i]);
    for (int n = 0; n < N; n++)
        for (int k = 0; k < KK; k++) {
            bt[n * KK + k] = bf16_bits(bf[n * KK + k]);
            b[k * N + n] = bt[n * KK + k];
        }
    size_t sa[] = {M, KK}, sbt[] = {N, KK}, sb[] = {KK, N};
    BellaTensor *ta = NULL, *tbt = NULL, *tb = NULL;
    OK(bella_tensor_upload_bits(be, a, sa, 2, BELLA_BF16, &ta));
    OK(bella_tensor_upload_bits(be, bt, sbt, 2, BELLA_BF16, &tbt));
    OK(bella_tensor_upload_bits(be, b, sb, 2, BELLA_BF16, &tb));
    CHECK(bella_tensor_dtype(ta) == BELLA_BF16, "dtype of an uploaded bf16 tensor");
    CHECK(bella_tensor_dtype(NULL) == -1, "dtype of a null handle");

    /* The bits come back as they went in; download widens them exactly. */
    uint16_t back[M * KK];
    OK(bella_tensor_download_bits(be, ta, back, M * KK));
    CHECK(memcmp(back, a, sizeof a) == 0, "download_bits returns the uploaded bits");
    float *wide = download(be, ta);
    int exact = 1;
    for (int i = 0; i < M * KK; i++) exact &= wide[i] == bf16_value(a[i]);
    CHECK(exact, "download widens bf16 exactly");
    free(wide);

    for (int tb_case = 0; tb_case < 2; tb_case++) {
        BellaTensor *c = NULL;
        OK(bella_matmul(be, ta, tb_case ? tbt : tb, false, tb_case != 0, 0.5f, &c));
        if (!c) continue;
        CHECK(bella_tensor_dtype(c) == BELLA_F32, "a 16-bit product is f32");
        float *got = download(be, c);
        for (int m = 0; m < M; m++)
            for (int n = 0; n < N; n++) {
                double want = 0.0, mag = 0.0;
                for (int k = 0; k < KK; k++) {
                    double p = (double)bf16_value(a[m * KK + k]) * bf16_value(bt[n * KK + k]);
                    want += p, mag += fabs(p);
                }
                want *= 0.5, mag *= 0.5;
                float g = got[m * N + n];
                CHECK(fabs(g - want) <= 2e-6 * mag + 1e-12, "bf16 matmul (trans_b %d) c[%d,%d] = %g, want %g",
                      tb_case, m, n, g, want);
            }
        free(got);
        bella_tensor_free(c);
    }

    /* cast f32 -> bf16 rounds as bf16_bits (a tie included), bf16 -> f32 is exact. */
    float xs[6] = {1.0f, -0.1f, 3.14159265f, 1.00390625f /* tie: 1 + 2^-8 */, 1e-40f, -65504.0f};
    size_t s6[] = {6};
    BellaTensor *tx = upload(be, xs, s6, 1), *th = NULL, *tw = NULL;
    OK(bella_cast(be, tx, BELLA_BF16, &th));
    if (th) {
        uint16_t hb[6];
        OK(bella_tensor_download_bits(be, th, hb, 6));
        for (int i = 0; i < 6; i++)
            CHECK(hb[i] == bf16_bits(xs[i]), "cast %g: bits %04x, want %04x", xs[i], hb[i],
                  bf16_bits(xs[i]));
        OK(bella_cast(be, th, BELLA_F32, &tw));
        if (tw) {
            float *w = download(be, tw);
            for (int i = 0; i < 6; i++)
                CHECK(w[i] == bf16_value(hb[i]), "cast back %d: %g", i, w[i]);
            free(w);
        }
    }

    /* Refusals: an unknown dtype code, f32 through upload_bits, bits of an f32 tensor, a
     * wrong length, a 16-bit tensor into an op that takes f32 only (the message says cast). */
    BellaTensor *bad = NULL;
    CHECK(bella_tensor_upload_bits(be, a, sa, 2, 7, &bad) == BELLA_ERR_INVALID && bad == NULL,
          "dtype code 7 is BELLA_ERR_INVALID");
    CHECK(bella_tensor_upload_bits(be, a, sa, 2, BELLA_F32, &bad) == BELLA_ERR_INVALID,
          "upload_bits refuses BELLA_F32");
    CHECK(bella_cast(be, tx, 9, &bad) == BELLA_ERR_INVALID && bad == NULL, "cast to code 9");
    uint16_t six[6];
    CHECK(bella_tensor_download_bits(be, tx, six, 6) == BELLA_ERR_INVALID,
          "download_bits of an f32 tensor");
    CHECK(bella_tensor_download_bits(be, ta, back, 3) == BELLA_ERR_INVALID,
          "download_bits with a wrong length");
    CHECK(bella_relu_forward(be, ta, &bad) != BELLA_OK && bad == NULL,
          "relu_forward refuses a bf16 tensor");
    CHECK(strstr(bella_last_error(), "cast") != NULL, "the refusal says to cast");

    BellaTensor *all[] = {ta, tbt, tb, tx, th, tw};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) bella_tensor_free(all[i]);
}

int main(int argc, char **argv) {
    const char *name = argc > 1 ? argv[1] : "cpu";
    BellaBackend *nope = NULL;
    CHECK(bella_backend_open("no-such-backend", &nope) == BELLA_ERR_UNAVAILABLE && nope == NULL,
          "an unknown backend is BELLA_ERR_UNAVAILABLE");
    CHECK(strstr(bella_last_error(), "no-such-backend") != NULL, "the message names it");

    BellaBackend *be = NULL;
    if (bella_backend_open(name, &be) != BELLA_OK) {
        fprintf(stderr, "cannot open %s: %s\n", name, bella_last_error());
        return 2;
    }
    check_lora_forward(be);
    check_svgd_step(be);
    check_half(be);
    OK(bella_synchronize(be));
    bella_backend_free(be);
    if (failures) {
        fprintf(stderr, "%d failure(s) on %s\n", failures, name);
        return 1;
    }
    printf("ok %s (bella %s)\n", name, bella_version());
    return 0;
}

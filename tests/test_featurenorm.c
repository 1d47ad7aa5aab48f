/* Layer, RMS, group and instance normalization against a float64 reference: one table of cases
 * (kind x shape x layout x eps x data), forward and backward, fused residual, exact and
 * adversarial rows, determinism, bad input. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bn_reference.h"
#include "support.h"
#include <criterion/parameterized.h>

typedef enum kind { LAYER, RMS, GROUP, INSTANCE } kind;
static const char *const kind_names[] = {"layernorm", "rmsnorm", "groupnorm", "instancenorm"};

typedef enum data { RANDOM, OFFSET, CONSTANT, EXACT } data;

typedef struct fn_case {
    kind k;
    size_t n, c, hw, groups; /* rows x cols for LAYER/RMS is n x c, hw = 1 */
    int channels_last;
    double eps;
    int residual; /* fused h = x + residual */
    data d;
} fn_case;

/* ---- the float64 reference ----------------------------------------------------------------- */

static size_t total_of(const fn_case *t)
{
    return t->n * t->c * t->hw;
}

static size_t index_of(const fn_case *t, size_t n, size_t c, size_t s)
{
    return t->channels_last ? (n * t->hw + s) * t->c + c : (n * t->c + c) * t->hw + s;
}

/* Runs the body for every element i (channel ch) of group r = (n, g), in the group's position
 * order: channels-first plane after plane, channels-last position after position. */
#define FOR_GROUP(t, r, i, ch, ...)                                                                \
    do {                                                                                           \
        size_t n_ = (r) / (t)->groups, g_ = (r) % (t)->groups, cg_ = (t)->c / (t)->groups;         \
        for (size_t p_ = 0; p_ < cg_ * (t)->hw; p_++) {                                            \
            size_t j_ = (t)->channels_last ? p_ % cg_ : p_ / (t)->hw;                              \
            size_t s_ = (t)->channels_last ? p_ / cg_ : p_ % (t)->hw;                              \
            size_t ch = g_ * cg_ + j_, i = index_of((t), n_, ch, s_);                              \
            __VA_ARGS__;                                                                           \
        }                                                                                          \
    } while (0)

typedef struct reference {
    double *h, *y, *mean, *rstd, *tol_y, *tol_mean, *tol_rstd;
} reference;

static reference forward_reference(const fn_case *t, const float *x, const float *res,
                                   const float *w, const float *b)
{
    size_t total = total_of(t), R = t->n * t->groups, D = total / (R ? R : 1);
    const double e = FLT_EPSILON;
    reference ref;
    ref.h = malloc(total * sizeof(double));
    ref.y = malloc(total * sizeof(double));
    ref.tol_y = malloc(total * sizeof(double));
    ref.mean = calloc(R, sizeof(double));
    ref.rstd = calloc(R, sizeof(double));
    ref.tol_mean = calloc(R, sizeof(double));
    ref.tol_rstd = calloc(R, sizeof(double));
    for (size_t i = 0; i < total; i++)
        ref.h[i] = (double)x[i] + (res ? res[i] : 0.0);
    for (size_t r = 0; r < R; r++) {
        double sum = 0, x0 = 0, abs_shift = 0, sq_shift = 0;
        int first = 1;
        /* the kernels sum (float) h, shifted by the group's first value */
        FOR_GROUP(t, r, i, ch, {
            (void)ch;
            double v = (float)ref.h[i];
            if (first) {
                x0 = v;
                first = 0;
            }
            sum += v;
            abs_shift += fabs(v - x0);
            sq_shift += (v - x0) * (v - x0);
        });
        double mean = sum / D, m2 = 0;
        FOR_GROUP(t, r, i, ch, {
            (void)ch;
            double dv = (float)ref.h[i] - mean;
            m2 += dv * dv;
        });
        double var = m2 / D, tol_mean = (D + 2) * e * abs_shift / D + 2 * e * fabs(mean);
        double tol_var = (D + 4) * e * sq_shift / D;
        double v = var;
        if (t->k == RMS) {
            v = var + mean * mean;
            tol_var += 2 * fabs(mean) * tol_mean + 2 * e * v;
        }
        ref.mean[r] = mean;
        ref.rstd[r] = 1 / sqrt(v + t->eps);
        ref.tol_mean[r] = tol_mean + 1e-30;
        ref.tol_rstd[r] = ref.rstd[r] * (0.5 * tol_var / (v + t->eps) + 4 * e) + 1e-30;
        FOR_GROUP(t, r, i, ch, {
            double hv = (float)ref.h[i];
            double centered = t->k == RMS ? hv : hv - mean;
            double wv = w ? w[ch] : 1.0, bv = b ? b[ch] : 0.0;
            ref.y[i] = centered * ref.rstd[r] * wv + bv;
            ref.tol_y[i] = fabs(wv) * ((t->k == RMS ? 0 : tol_mean) * ref.rstd[r] +
                                       fabs(centered) * ref.tol_rstd[r]) +
                           4 * e * (fabs(ref.y[i]) + fabs(bv)) + 1e-30;
        });
    }
    return ref;
}

static void free_reference(reference *r)
{
    free(r->h);
    free(r->y);
    free(r->mean);
    free(r->rstd);
    free(r->tol_y);
    free(r->tol_mean);
    free(r->tol_rstd);
}

/* Gradients given the forward's (float) statistics. */
static void backward_reference(const fn_case *t, const float *h, const float *dy, const float *w,
                               const float *mean, const float *rstd, const float *dh_in,
                               double *dx, double *tol_dx, double *dw, double *tol_dw, double *db,
                               double *tol_db)
{
    size_t total = total_of(t), R = t->n * t->groups, D = total / R;
    const double e = FLT_EPSILON;
    for (size_t c = 0; c < t->c; c++)
        dw[c] = db[c] = tol_dw[c] = tol_db[c] = 0;
    for (size_t r = 0; r < R; r++) {
        double mu = t->k == RMS ? 0 : mean[r], rs = rstd[r];
        double s1 = 0, s2 = 0, a1 = 0, a2 = 0;
        FOR_GROUP(t, r, i, ch, {
            double g = dy[i] * (w ? w[ch] : 1.0), xhat = (h[i] - mu) * rs;
            s1 += g;
            s2 += g * xhat;
            a1 += fabs(g);
            a2 += fabs(g * xhat);
            dw[ch] += dy[i] * xhat;
            db[ch] += dy[i];
            tol_dw[ch] += fabs(dy[i] * xhat);
            tol_db[ch] += fabs(dy[i]);
        });
        FOR_GROUP(t, r, i, ch, {
            double g = dy[i] * (w ? w[ch] : 1.0), xhat = (h[i] - mu) * rs;
            double m1 = t->k == RMS ? 0 : s1 / D;
            dx[i] = rs * (g - m1 - xhat * s2 / D) + (dh_in ? dh_in[i] : 0.0);
            tol_dx[i] = rs * ((D + 1) * e * a1 / D + fabs(xhat) * (D + 4) * e * a2 / D) +
                        8 * e * (rs * (fabs(g) + fabs(m1) + fabs(xhat * s2 / D)) +
                                 (dh_in ? fabs(dh_in[i]) : 0)) +
                        1e-30;
        });
    }
    size_t M = t->n * t->hw; /* values per channel */
    for (size_t c = 0; c < t->c; c++) {
        tol_dw[c] = (M + 4) * e * tol_dw[c] + 1e-30;
        tol_db[c] = (M + 1) * e * tol_db[c] + 1e-30;
    }
}

/* ---- data --------------------------------------------------------------------------------------- */

static float *fill(const fn_case *t, unsigned long long seed, double lo, double hi)
{
    size_t total = total_of(t);
    rng r = {seed * 0x9E3779B97F4A7C15ull + 1};
    float *v = malloc((total ? total : 1) * sizeof(float));
    for (size_t i = 0; i < total; i++)
        v[i] = (float)(lo + (hi - lo) * rng_uniform(&r));
    return v;
}

static float *input(const fn_case *t, unsigned long long seed)
{
    size_t total = total_of(t), R = t->n * t->groups;
    rng r = {seed + 17};
    float *x = malloc((total ? total : 1) * sizeof(float));
    for (size_t i = 0; i < total; i++)
        x[i] = t->d == OFFSET ? (float)(1e4 + rng_normal(&r)) : (float)(2 * rng_normal(&r) - 0.5);
    for (size_t rr = 0; rr < R && (t->d == CONSTANT || t->d == EXACT); rr++) {
        /* CONSTANT: every group one value (2, 14, 1234, ...). EXACT: pairs mu +- k/8 (an odd
         * count ends with mu), mu = 2^(r % 3 - 1), in the order the statistics are taken: the
         * group's positions in channels-first (one contiguous run), each channel's positions in
         * channels-last (partials per channel, merged per group). */
        float mu = t->d == CONSTANT ? (float)(2 + 12 * (rr % 2) + 1000 * (rr % 3))
                                    : (float)ldexp(1.0, (int)(rr % 3) - 1);
        const bool per_channel = t->channels_last && t->hw > 1;
        size_t p = 0, prev = 0, D = per_channel ? t->hw : total / R;
        FOR_GROUP(t, rr, i, ch, {
            (void)ch;
            if (per_channel) /* p: the position of element i within its channel */
                p = (size_t)((i / t->c) % t->hw);
            if (t->d == CONSTANT || (p % 2 == 0 && p + 1 == D)) {
                x[i] = mu;
            } else if (p % 2 == 0) {
                x[i] = mu + (float)(1 + r.state % 7) / 8.0f;
                rng_uniform(&r);
                prev = i;
            } else {
                x[i] = 2 * mu - x[per_channel ? i - t->c : prev];
            }
            p++;
        });
    }
    return x;
}

/* ---- one case, forward and backward ------------------------------------------------------------------ */

static void describe(const fn_case *t, char *out, size_t size)
{
    snprintf(out, size, "%s N%zu C%zu HW%zu G%zu %s eps %g%s data %d", kind_names[t->k], t->n,
             t->c, t->hw, t->groups, t->channels_last ? "NHWC" : "NCHW", t->eps,
             t->residual ? " +residual" : "", (int)t->d);
}

static clnorm_shape shape_of(const fn_case *t)
{
    clnorm_shape s = {t->n, t->c, t->hw > 1 ? 1 : 0, {t->hw, 0, 0},
                      t->channels_last ? CLNORM_CHANNELS_LAST : CLNORM_CHANNELS_FIRST};
    return s;
}

static clnorm_status run_forward(clnorm_context *ctx, const fn_case *t,
                                 const clnorm_norm_buffers *b)
{
    clnorm_shape s = shape_of(t);
    switch (t->k) {
    case LAYER: return clnorm_layernorm_forward(ctx, t->n, t->c, t->eps, b, 0, NULL, NULL);
    case RMS: return clnorm_rmsnorm_forward(ctx, t->n, t->c, t->eps, b, 0, NULL, NULL);
    case GROUP: return clnorm_groupnorm_forward(ctx, &s, t->groups, t->eps, b, 0, NULL, NULL);
    default:
        return clnorm_instancenorm_forward(ctx, &s, t->eps, 0.1, 1, b, NULL, NULL, 0, NULL, NULL);
    }
}

static clnorm_status run_backward(clnorm_context *ctx, const fn_case *t,
                                  const clnorm_norm_grad_buffers *g)
{
    clnorm_shape s = shape_of(t);
    switch (t->k) {
    case LAYER: return clnorm_layernorm_backward(ctx, t->n, t->c, g, 0, NULL, NULL);
    case RMS: return clnorm_rmsnorm_backward(ctx, t->n, t->c, g, 0, NULL, NULL);
    case GROUP: return clnorm_groupnorm_backward(ctx, &s, t->groups, g, 0, NULL, NULL);
    default: return clnorm_instancenorm_backward(ctx, &s, g, 0, NULL, NULL);
    }
}

#define EXPECT_CLOSE(what, got, want, tol, count, label)                                           \
    do {                                                                                           \
        size_t worst_;                                                                             \
        double r_ = worst_ratio((got), (want), (tol), (count), &worst_);                           \
        cr_expect(r_ <= 1.0, "%s: %s[%zu] = %.9g, reference %.9g, tolerance %.3g (%.3g x)",        \
                  (label), (what), worst_, (double)(got)[worst_], (want)[worst_], (tol)[worst_],    \
                  r_);                                                                             \
    } while (0)

static float *read_back(clnorm_context *ctx, cl_mem m, size_t count)
{
    float *v = malloc((count ? count : 1) * sizeof(float));
    test_read(ctx, m, count, v);
    return v;
}

/* The forward again in place, as the API allows: h = x with a residual, else y = x. The same
 * path on the same values: the same bits as y and h out of place. */
static void check_in_place(clnorm_context *ctx, const fn_case *t, const clnorm_norm_buffers *b,
                           const float *x, const float *y, const float *h, const char *label)
{
    const size_t total = total_of(t);
    cl_mem d_io = test_buffer(ctx, total, x);
    cl_mem d_y = b->residual ? test_buffer(ctx, total, NULL) : d_io;
    clnorm_norm_buffers ib = *b;
    ib.x = d_io;
    ib.y = d_y;
    if (b->residual)
        ib.h = d_io;
    clnorm_status st = run_forward(ctx, t, &ib);
    cr_assert_eq(st, CLNORM_OK, "%s in place: %s", label, clnorm_last_error(ctx));
    float *got_y = read_back(ctx, d_y, total), *got_h = h ? read_back(ctx, d_io, total) : NULL;
    for (size_t i = 0; i < total; i++) {
        cr_assert(memcmp(&got_y[i], &y[i], sizeof(float)) == 0,
                  "%s in place: y[%zu] = %.9g, out of place %.9g", label, i, (double)got_y[i],
                  (double)y[i]);
        if (got_h)
            cr_assert(memcmp(&got_h[i], &h[i], sizeof(float)) == 0,
                      "%s in place: h[%zu] = %.9g, out of place %.9g", label, i,
                      (double)got_h[i], (double)h[i]);
    }
    free(got_y);
    free(got_h);
    if (d_y != d_io)
        clReleaseMemObject(d_y);
    clReleaseMemObject(d_io);
}

static void run_case(const fn_case *t)
{
    char label[200];
    describe(t, label, sizeof label);
    clnorm_context *ctx = test_context(NULL);
    size_t total = total_of(t), R = t->n * t->groups, C = t->c;
    unsigned long long seed = t->n * 31 + t->c * 7 + t->hw + t->groups * 3 + (size_t)t->k;
    float *x = input(t, seed), *res = t->residual ? fill(t, seed + 1, -1, 1) : NULL;
    fn_case wt = *t;
    wt.n = 1;
    wt.hw = 1;
    float *weight = fill(&wt, seed + 2, 0.5, 1.5), *bias = fill(&wt, seed + 3, -1, 1);
    float *dy = fill(t, seed + 4, -1, 1), *dh_in = t->residual ? fill(t, seed + 5, -1, 1) : NULL;
    cl_mem d_x = test_buffer(ctx, total, x), d_y = test_buffer(ctx, total, NULL),
           d_res = res ? test_buffer(ctx, total, res) : NULL,
           d_h = res ? test_buffer(ctx, total, NULL) : NULL, d_w = test_buffer(ctx, C, weight),
           d_b = t->k == RMS ? NULL : test_buffer(ctx, C, bias),
           d_mean = t->k == RMS ? NULL : test_buffer(ctx, R, NULL),
           d_rstd = test_buffer(ctx, R, NULL), d_dy = test_buffer(ctx, total, dy),
           d_dh = dh_in ? test_buffer(ctx, total, dh_in) : NULL,
           d_dx = test_buffer(ctx, total, NULL), d_dw = test_buffer(ctx, C, NULL),
           d_db = t->k == RMS ? NULL : test_buffer(ctx, C, NULL);
    clnorm_norm_buffers b = {.x = d_x,
                             .residual = d_res,
                             .h = d_h,
                             .weight = d_w,
                             .bias = d_b,
                             .y = d_y,
                             .mean = d_mean,
                             .rstd = d_rstd};
    clnorm_status st = run_forward(ctx, t, &b);
    cr_assert_eq(st, CLNORM_OK, "%s: %s", label, clnorm_last_error(ctx));
    reference ref = forward_reference(t, x, res, weight, t->k == RMS ? NULL : bias);
    float *y = read_back(ctx, d_y, total), *rstd = read_back(ctx, d_rstd, R);
    float *mean = d_mean ? read_back(ctx, d_mean, R) : NULL;
    float *h = res ? read_back(ctx, d_h, total) : NULL;
    EXPECT_CLOSE("y", y, ref.y, ref.tol_y, total, label);
    EXPECT_CLOSE("rstd", rstd, ref.rstd, ref.tol_rstd, R, label);
    if (mean)
        EXPECT_CLOSE("mean", mean, ref.mean, ref.tol_mean, R, label);
    if (h)
        for (size_t i = 0; i < total; i++)
            cr_assert_eq(h[i], (float)(x[i] + res[i]), "%s: h[%zu]", label, i);
    if (t->d == CONSTANT) {
        /* a constant group normalizes to exactly its bias (or 0 without one) */
        for (size_t i = 0; i < total && t->k != RMS; i++) {
            cr_assert_eq(y[i], bias[t->channels_last ? i % C : (i / t->hw) % C], "%s: y[%zu]",
                         label, i);
        }
    }
    if (t->d == EXACT && mean)
        for (size_t r = 0; r < R; r++)
            cr_assert_eq(mean[r], (float)ref.mean[r], "%s: exact mean[%zu] = %.9g vs %.9g", label,
                         r, (double)mean[r], ref.mean[r]);

    /* backward from the forward's own statistics (and h) */
    clnorm_norm_grad_buffers g = {.x = res ? d_h : d_x,
                                  .dy = d_dy,
                                  .weight = d_w,
                                  .mean = d_mean,
                                  .rstd = d_rstd,
                                  .dh_in = d_dh,
                                  .dx = d_dx,
                                  .dweight = d_dw,
                                  .dbias = d_db};
    if (t->d != CONSTANT || t->eps > 0) {
        st = run_backward(ctx, t, &g);
        cr_assert_eq(st, CLNORM_OK, "%s backward: %s", label, clnorm_last_error(ctx));
        float *dx = read_back(ctx, d_dx, total), *dw = read_back(ctx, d_dw, C);
        float *db = d_db ? read_back(ctx, d_db, C) : NULL;
        double *wdx = malloc(total * sizeof(double)), *tdx = malloc(total * sizeof(double));
        double *wdw = malloc(C * sizeof(double)), *tdw = malloc(C * sizeof(double));
        double *wdb = malloc(C * sizeof(double)), *tdb = malloc(C * sizeof(double));
        backward_reference(t, h ? h : x, dy, weight, mean, rstd, dh_in, wdx, tdx, wdw, tdw, wdb,
                           tdb);
        EXPECT_CLOSE("dx", dx, wdx, tdx, total, label);
        EXPECT_CLOSE("dweight", dw, wdw, tdw, C, label);
        if (db)
            EXPECT_CLOSE("dbias", db, wdb, tdb, C, label);
        free(dx);
        free(dw);
        free(db);
        free(wdx);
        free(tdx);
        free(wdw);
        free(tdw);
        free(wdb);
        free(tdb);
    }
    /* (after the backward: with it before, Oclgrind 21.10 reported uninitialized values stored
     * by the backward's per-channel kernel of a 1 x 1 layer norm on work-groups of 16, from the
     * sums of its stage 1. The report follows a buffer the library never sees: with the in-place
     * forward left out, creating and releasing a 4-byte buffer before the backward is enough;
     * none when that buffer is kept, or when a buffer of 64 bytes or more is released after it,
     * or one of 4 bytes created after it and kept. So it comes from Oclgrind handing the freed
     * 4-byte allocation to the library's next one. With every workspace filled with NaN when
     * created, this file passes on PoCL with the check before the backward, on work-groups of
     * 16, 64 and one: no unwritten workspace value reaches a result.) */
    check_in_place(ctx, t, &b, x, y, h, label);
    cl_mem all[] = {d_x, d_y, d_res, d_h, d_w, d_b, d_mean, d_rstd, d_dy, d_dh, d_dx, d_dw, d_db};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i])
            clReleaseMemObject(all[i]);
    clnorm_context_release(ctx);
    free_reference(&ref);
    free(x);
    free(res);
    free(weight);
    free(bias);
    free(dy);
    free(dh_in);
    free(y);
    free(rstd);
    free(mean);
    free(h);
}

/* ---- the table ------------------------------------------------------------------------------------ */

static const fn_case cases[] = {
    /* LayerNorm: D in {1, 33, 64, 256, 257, 1025, 65537}, R in {1, 3, 4096}, eps variety */
    {LAYER, 1, 1, 1, 1, 0, 1e-5, 0, RANDOM},
    {LAYER, 3, 33, 1, 1, 0, 1e-6, 0, RANDOM},
    {LAYER, 4096, 64, 1, 1, 0, 1e-5, 0, RANDOM},
    {LAYER, 3, 256, 1, 1, 0, 0.0, 0, RANDOM},
    {LAYER, 1, 257, 1, 1, 0, 0.1, 0, RANDOM},
    {LAYER, 3, 1025, 1, 1, 0, 1e-5, 0, RANDOM},
    {LAYER, 1, 65537, 1, 1, 0, 1e-5, 0, RANDOM},
    {LAYER, 4096, 1, 1, 1, 0, 1e-5, 0, RANDOM},
    {LAYER, 3, 257, 1, 1, 0, 1e-5, 1, RANDOM},
    {LAYER, 64, 1024, 1, 1, 0, 1e-5, 1, RANDOM},
    {LAYER, 16, 257, 1, 1, 0, 1e-5, 0, OFFSET},
    {LAYER, 6, 2, 1, 1, 0, 1e-5, 0, CONSTANT},
    {LAYER, 6, 33, 1, 1, 0, 1e-5, 0, CONSTANT},
    {LAYER, 6, 64, 1, 1, 0, 1e-5, 0, EXACT},
    {LAYER, 5, 257, 1, 1, 0, 1e-5, 0, EXACT},
    {LAYER, 8, 33, 1, 1, 0, 1e-5, 1, RANDOM}, /* small, R >= 8: CPUs' one-launch paths */
    {LAYER, 256, 4096, 1, 1, 0, 1e-5, 1, RANDOM}, /* 4 MiB: CPUs' streaming stores */
    /* CPUs' one-launch backward: the row sums 4 rows at a time (a partial vector; a last group
     * short of 4 rows), 2 where 4 rows of 12000 would not stay in the cache */
    {LAYER, 41, 1500, 1, 1, 0, 1e-5, 0, RANDOM},
    {RMS, 24, 12000, 1, 1, 0, 1e-5, 0, RANDOM},
    /* GPUs' register kernels in their long build: work-groups of 64 (CI) and of 128 (NVIDIA) */
    {LAYER, 3, 1800, 1, 1, 0, 1e-5, 1, RANDOM},
    {RMS, 2, 3000, 1, 1, 0, 1e-5, 0, RANDOM},
    /* past the register kernels of work-groups of 16 (Oclgrind's small shapes): the cached row
     * kernel where cached_kib allows (CI's GPU-shaped runs also send the row of 3000 there) */
    {LAYER, 1, 1500, 1, 1, 0, 1e-5, 1, RANDOM},
    /* RMSNorm */
    {RMS, 1, 1, 1, 1, 0, CLNORM_RMS_DEFAULT_EPS, 0, RANDOM},
    {RMS, 3, 33, 1, 1, 0, 1e-6, 0, RANDOM},
    {RMS, 4096, 64, 1, 1, 0, CLNORM_RMS_DEFAULT_EPS, 0, RANDOM},
    {RMS, 3, 1025, 1, 1, 0, 0.1, 0, RANDOM},
    {RMS, 1, 65537, 1, 1, 0, 1e-5, 0, RANDOM},
    {RMS, 3, 257, 1, 1, 0, 1e-5, 1, RANDOM},
    {RMS, 16, 257, 1, 1, 0, 1e-5, 0, OFFSET},
    {RMS, 9, 20, 1, 1, 0, 1e-5, 0, RANDOM},
    {RMS, 256, 4096, 1, 1, 0, CLNORM_RMS_DEFAULT_EPS, 0, RANDOM},
    /* GroupNorm, G in {1, 2, 32, C}, both layouts */
    {GROUP, 2, 64, 49, 32, 0, 1e-5, 0, RANDOM},
    {GROUP, 2, 64, 49, 32, 1, 1e-5, 0, RANDOM},
    {GROUP, 3, 6, 20, 2, 0, 1e-6, 0, RANDOM},
    {GROUP, 3, 6, 20, 2, 1, 0.1, 0, RANDOM},
    {GROUP, 1, 4, 9, 4, 0, 1e-5, 0, RANDOM},
    {GROUP, 1, 4, 9, 4, 1, 1e-5, 0, RANDOM},
    {GROUP, 2, 32, 16, 1, 0, 1e-5, 0, RANDOM},
    {GROUP, 2, 32, 16, 1, 1, 1e-5, 0, RANDOM},
    {GROUP, 4, 8, 1, 2, 1, 1e-5, 0, RANDOM},
    {GROUP, 3, 6, 13, 3, 0, 1e-5, 0, EXACT},
    {GROUP, 3, 6, 13, 3, 1, 1e-5, 0, EXACT},
    {GROUP, 2, 4, 9, 2, 1, 1e-5, 0, CONSTANT},
    {GROUP, 2, 4, 17, 2, 0, 1e-5, 0, OFFSET},
    {GROUP, 2, 4, 17, 2, 1, 1e-5, 0, OFFSET},
    {GROUP, 2, 6, 9, 3, 0, 1e-5, 1, RANDOM},
    {GROUP, 2, 6, 9, 3, 1, 1e-5, 1, RANDOM},
    {GROUP, 2, 64, 9, 4, 1, 1e-5, 1, RANDOM}, /* channels-last groups of whole vectors */
    {GROUP, 3, 32, 5, 4, 1, 1e-5, 0, OFFSET},
    /* channels-last, N >= 4: CPUs' one-launch forward a sample at a time (with 2 compute units) */
    {GROUP, 4, 64, 9, 4, 1, 1e-5, 0, RANDOM},
    {GROUP, 5, 12, 7, 3, 1, 1e-5, 1, RANDOM},
    {GROUP, 4, 6, 11, 1, 1, 1e-5, 0, OFFSET},
    {GROUP, 6, 16, 13, 2, 1, 1e-5, 0, CONSTANT},
    {GROUP, 4, 24, 6, 3, 1, 1e-5, 0, EXACT},
    {GROUP, 16, 64, 1024, 8, 0, 1e-5, 0, RANDOM}, /* 4 MiB, planes of whole vectors: streaming */
    /* InstanceNorm (G = C) */
    {INSTANCE, 3, 4, 25, 4, 0, 1e-5, 0, RANDOM},
    {INSTANCE, 3, 4, 25, 4, 1, 1e-5, 0, RANDOM},
    {INSTANCE, 2, 3, 7, 3, 1, 1e-5, 0, EXACT},
    {INSTANCE, 4, 20, 9, 20, 1, 1e-5, 1, RANDOM},
    /* channels-first, R = 64: CPUs' one-launch forward, 8 instances a work-item, each one's sum
     * taken during the previous one's apply (planes of partial vectors, a residual) */
    {INSTANCE, 4, 16, 25, 16, 0, 1e-5, 1, RANDOM},
};

ParameterizedTestParameters(featurenorm, matches_float64)
{
    bool small = getenv("CLNORM_TEST_SMALL") != NULL;
    size_t count = sizeof cases / sizeof cases[0], used = 0;
    fn_case *list = cr_malloc(count * sizeof *list);
    const char *only = getenv("CLNORM_TEST_ONLY"); /* a part of a case's description */
    for (size_t i = 0; i < count; i++) {
        char label[200];
        describe(&cases[i], label, sizeof label);
        if ((!small || total_of(&cases[i]) <= 2048) && (!only || strstr(label, only)))
            list[used++] = cases[i];
    }
    return cr_make_param_array(fn_case, list, used);
}

ParameterizedTest(fn_case *t, featurenorm, matches_float64)
{
    run_case(t);
}

/* ---- InstanceNorm's running statistics ------------------------------------------------------- */

Test(instancenorm, running_statistics_average_the_instances_and_evaluation_uses_them)
{
    clnorm_context *ctx = test_context(NULL);
    fn_case t = {INSTANCE, 4, 3, 10, 3, 1, 1e-5, 0, RANDOM};
    clnorm_shape s = shape_of(&t);
    size_t total = total_of(&t);
    float zeros[3] = {0, 0, 0}, ones[3] = {1, 1, 1};
    cl_mem rm = test_buffer(ctx, 3, zeros), rv = test_buffer(ctx, 3, ones);
    cl_mem d_x = test_buffer(ctx, total, NULL), d_y = test_buffer(ctx, total, NULL);
    double want_m[3] = {0, 0, 0}, want_v[3] = {1, 1, 1};
    float *x = NULL;
    for (int step = 0; step < 3; step++) {
        free(x);
        x = input(&t, 100 + step);
        CL_OK(clEnqueueWriteBuffer(clnorm_context_queue(ctx), d_x, CL_TRUE, 0, total * 4, x, 0,
                                   NULL, NULL));
        clnorm_norm_buffers b = {.x = d_x, .y = d_y};
        CLNORM_OK_(ctx, clnorm_instancenorm_forward(ctx, &s, 1e-5, 0.1, 1, &b, rm, rv, 0, NULL,
                                                    NULL));
        for (size_t c = 0; c < 3; c++) {
            double mean_avg = 0, var_avg = 0;
            for (size_t n = 0; n < t.n; n++) {
                double sum = 0, m2 = 0;
                for (size_t p = 0; p < t.hw; p++)
                    sum += x[index_of(&t, n, c, p)];
                double mean = sum / t.hw;
                for (size_t p = 0; p < t.hw; p++)
                    m2 += (x[index_of(&t, n, c, p)] - mean) * (x[index_of(&t, n, c, p)] - mean);
                mean_avg += mean / t.n;
                var_avg += m2 / (t.hw - 1) / t.n;
            }
            want_m[c] = 0.9 * want_m[c] + 0.1 * mean_avg;
            want_v[c] = 0.9 * want_v[c] + 0.1 * var_avg;
        }
    }
    float *grm = read_back(ctx, rm, 3), *grv = read_back(ctx, rv, 3);
    for (int c = 0; c < 3; c++) {
        cr_assert(fabs(grm[c] - want_m[c]) < 1e-5 * (1 + fabs(want_m[c])), "running_mean[%d] %g vs %g",
                  c, (double)grm[c], want_m[c]);
        cr_assert(fabs(grv[c] - want_v[c]) < 1e-5 * want_v[c], "running_var[%d] %g vs %g", c,
                  (double)grv[c], want_v[c]);
    }
    /* evaluation with the running statistics: per channel, independent of the batch */
    clnorm_norm_buffers b = {.x = d_x, .y = d_y};
    CLNORM_OK_(ctx, clnorm_instancenorm_forward(ctx, &s, 1e-5, 0.1, 0, &b, rm, rv, 0, NULL, NULL));
    float *y = read_back(ctx, d_y, total);
    for (size_t i = 0; i < total; i++) {
        size_t c = i % 3; /* channels-last */
        double want = (x[i] - grm[c]) / sqrt(grv[c] + 1e-5);
        cr_assert(fabs(y[i] - want) < 1e-5 * (1 + fabs(want)), "eval y[%zu]", i);
    }
    cr_assert_eq(clnorm_instancenorm_forward(ctx, &s, 1e-5, 0.1, 0, &b, NULL, NULL, 0, NULL, NULL),
                 CLNORM_INVALID_ARGUMENT, "evaluation needs the running statistics");
    free(x);
    free(y);
    free(grm);
    free(grv);
    clReleaseMemObject(rm);
    clReleaseMemObject(rv);
    clReleaseMemObject(d_x);
    clReleaseMemObject(d_y);
    clnorm_context_release(ctx);
}

/* ---- determinism and bad input --------------------------------------------------------------------- */

Test(featurenorm, results_are_the_same_bits_every_run)
{
    clnorm_context *ctx = test_context(NULL);
    fn_case t = {LAYER, 512, 257, 1, 1, 0, 1e-5, 0, RANDOM};
    size_t total = total_of(&t);
    float *x = input(&t, 5);
    cl_mem d_x = test_buffer(ctx, total, x), d_y = test_buffer(ctx, total, NULL),
           d_dx = test_buffer(ctx, total, NULL), d_r = test_buffer(ctx, 512, NULL),
           d_m = test_buffer(ctx, 512, NULL), d_dw = test_buffer(ctx, 257, NULL);
    float *first = NULL, *first_dx = NULL, *first_dw = NULL;
    for (int run = 0; run < 3; run++) {
        clnorm_norm_buffers b = {.x = d_x, .y = d_y, .mean = d_m, .rstd = d_r};
        CLNORM_OK_(ctx, clnorm_layernorm_forward(ctx, 512, 257, 1e-5, &b, 0, NULL, NULL));
        clnorm_norm_grad_buffers g = {
            .x = d_x, .dy = d_x, .mean = d_m, .rstd = d_r, .dx = d_dx, .dweight = d_dw};
        CLNORM_OK_(ctx, clnorm_layernorm_backward(ctx, 512, 257, &g, 0, NULL, NULL));
        float *y = read_back(ctx, d_y, total), *dx = read_back(ctx, d_dx, total),
              *dw = read_back(ctx, d_dw, 257);
        if (!first) {
            first = y;
            first_dx = dx;
            first_dw = dw;
            continue;
        }
        cr_assert(!memcmp(first, y, total * 4), "y differs on run %d", run);
        cr_assert(!memcmp(first_dx, dx, total * 4), "dx differs on run %d", run);
        cr_assert(!memcmp(first_dw, dw, 257 * 4), "dweight differs on run %d", run);
        free(y);
        free(dx);
        free(dw);
    }
    free(first);
    free(first_dx);
    free(first_dw);
    free(x);
    cl_mem all[] = {d_x, d_y, d_dx, d_r, d_m, d_dw};
    for (int i = 0; i < 6; i++)
        clReleaseMemObject(all[i]);
    clnorm_context_release(ctx);
}

Test(featurenorm, bad_input_is_refused_and_nothing_is_written)
{
    clnorm_context *ctx = test_context(NULL);
    cl_mem x = test_buffer(ctx, 60, NULL), y = test_buffer(ctx, 60, NULL),
           small = test_buffer(ctx, 59, NULL), w = test_buffer(ctx, 6, NULL),
           r = test_buffer(ctx, 10, NULL);
    clnorm_norm_buffers ok = {.x = x, .y = y};
    clnorm_norm_buffers with_bias = {.x = x, .y = y, .bias = w};
    clnorm_norm_buffers short_x = {.x = small, .y = y};
    clnorm_norm_buffers residual_no_h = {.x = x, .y = y, .residual = x};
    clnorm_shape s = {2, 6, 1, {5, 0, 0}, CLNORM_CHANNELS_FIRST};
    clnorm_shape one_value = {10, 6, 0, {0}, CLNORM_CHANNELS_FIRST};
    clnorm_shape bad_layout = s;
    bad_layout.layout = (clnorm_layout)3;
    cl_event ev = (cl_event)&s;
    struct {
        clnorm_status got, want;
    } rows[] = {
        {clnorm_layernorm_forward(ctx, 10, 0, 1e-5, &ok, 0, NULL, &ev), CLNORM_INVALID_SHAPE},
        {clnorm_layernorm_forward(ctx, 10, 6, -1.0, &ok, 0, NULL, &ev), CLNORM_INVALID_ARGUMENT},
        {clnorm_layernorm_forward(ctx, 10, 6, NAN, &ok, 0, NULL, &ev), CLNORM_INVALID_ARGUMENT},
        {clnorm_layernorm_forward(ctx, 10, 6, 1e-5, &short_x, 0, NULL, &ev), CLNORM_BUFFER_TOO_SMALL},
        {clnorm_layernorm_forward(ctx, 10, 6, 1e-5, NULL, 0, NULL, &ev), CLNORM_INVALID_ARGUMENT},
        {clnorm_layernorm_forward(ctx, 10, 6, 1e-5, &residual_no_h, 0, NULL, &ev), CLNORM_INVALID_ARGUMENT},
        {clnorm_rmsnorm_forward(ctx, 10, 6, 1e-5, &with_bias, 0, NULL, &ev), CLNORM_INVALID_ARGUMENT},
        {clnorm_groupnorm_forward(ctx, &s, 4, 1e-5, &ok, 0, NULL, &ev), CLNORM_INVALID_SHAPE},
        {clnorm_groupnorm_forward(ctx, &s, 0, 1e-5, &ok, 0, NULL, &ev), CLNORM_INVALID_SHAPE},
        {clnorm_groupnorm_forward(ctx, &bad_layout, 2, 1e-5, &ok, 0, NULL, &ev), CLNORM_INVALID_ARGUMENT},
        {clnorm_groupnorm_forward(ctx, &s, 2, 1e-5, &ok, 1, NULL, &ev), CLNORM_INVALID_ARGUMENT},
        {clnorm_instancenorm_forward(ctx, &s, 1e-5, 2.0, 1, &ok, NULL, NULL, 0, NULL, &ev), CLNORM_INVALID_ARGUMENT},
        {clnorm_instancenorm_forward(ctx, &s, 1e-5, 0.1, 1, &ok, r, NULL, 0, NULL, &ev), CLNORM_INVALID_ARGUMENT},
        /* one value per instance (as PyTorch: more than 1 spatial element) */
        {clnorm_instancenorm_forward(ctx, &one_value, 1e-5, 0.1, 1, &ok, NULL, NULL, 0, NULL, &ev), CLNORM_INVALID_SHAPE},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        cr_assert_eq(rows[i].got, rows[i].want, "row %zu: %s, want %s", i,
                     clnorm_status_name(rows[i].got), clnorm_status_name(rows[i].want));
        cr_assert_null(ev, "row %zu: no event on failure", i);
    }
    /* the messages, checked one call at a time (the last error belongs to the last call) */
    cr_assert_eq(clnorm_groupnorm_forward(ctx, &s, 4, 1e-5, &ok, 0, NULL, NULL),
                 CLNORM_INVALID_SHAPE);
    cr_assert(strstr(clnorm_last_error(ctx), "6 channels cannot be divided into 4 groups"), "%s",
              clnorm_last_error(ctx));
    cr_assert_eq(clnorm_rmsnorm_forward(ctx, 10, 6, 1e-5, &with_bias, 0, NULL, NULL),
                 CLNORM_INVALID_ARGUMENT);
    cr_assert(strstr(clnorm_last_error(ctx), "no bias"), "%s", clnorm_last_error(ctx));
    cr_assert_eq(clnorm_layernorm_forward(ctx, 10, 6, 1e-5, &short_x, 0, NULL, NULL),
                 CLNORM_BUFFER_TOO_SMALL);
    cr_assert(strstr(clnorm_last_error(ctx), "x holds 236 bytes but the call touches 240"), "%s",
              clnorm_last_error(ctx));
    float *v = read_back(ctx, y, 60);
    for (int i = 0; i < 60; i++)
        cr_assert(isnan(v[i]), "y[%d] written by a refused call", i);
    free(v);
    /* rows == 0 is a no-op that signals its event */
    CLNORM_OK_(ctx, clnorm_layernorm_forward(ctx, 0, 6, 1e-5, &ok, 0, NULL, &ev));
    cr_assert_not_null(ev);
    CL_OK(clWaitForEvents(1, &ev));
    clReleaseEvent(ev);
    cl_mem all[] = {x, y, small, w, r};
    for (int i = 0; i < 5; i++)
        clReleaseMemObject(all[i]);
    clnorm_context_release(ctx);
}

/* Batch normalization operations against a float64 reference, on exact-by-construction and
 * adversarial data, with events, in place, split into stages, and with bad input.
 * One table of cases (shape x layout x data) runs on every device. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bn_reference.h"
#include "support.h"
#include <criterion/parameterized.h>

typedef enum distribution {
    DIST_RANDOM,     /* 2 N(0,1) + 0.5 */
    DIST_OFFSET_1E4, /* 1e4 + N(0,1) */
    DIST_OFFSET_1E6, /* 1e6 + N(0,1) */
    DIST_CONSTANT,   /* every channel constant, 1234 or 1e7: variance 0, y = beta exactly */
    DIST_HUGE,       /* +-1e18 spreads: the variance fits in fp32, a sum of squares would not */
    DIST_NAN_INF,    /* random, with a NaN in channel 0 and an Inf in channel 1 */
    DIST_EXACT       /* pairs mu +- k/8 around a power-of-two mu: statistics exact in fp32 */
} distribution;

static const char *const dist_names[] = {"random",   "offset 1e4", "offset 1e6", "constant",
                                         "+-1e18",   "NaN/Inf",    "exact"};

typedef struct bn_case {
    size_t n, c;
    unsigned rank;
    size_t sp[3];
    clnorm_layout layout;
    distribution dist;
} bn_case;

static void describe(const bn_case *tc, char *out, size_t size)
{
    int used = snprintf(out, size, "N%zu C%zu", tc->n, tc->c);
    for (unsigned i = 0; i < tc->rank; i++)
        used += snprintf(out + used, size - (size_t)used, "%s%zu", i ? "x" : " ", tc->sp[i]);
    snprintf(out + used, size - (size_t)used, " %s %s",
             tc->layout == CLNORM_CHANNELS_FIRST ? "NCHW" : "NHWC", dist_names[tc->dist]);
}

static clnorm_shape shape_of(const bn_case *tc)
{
    clnorm_shape s = {tc->n, tc->c, tc->rank, {tc->sp[0], tc->sp[1], tc->sp[2]}, tc->layout};
    return s;
}

/* ---- data ------------------------------------------------------------------------------------ */

static void fill_input(const clnorm_shape *s, distribution dist, unsigned long long seed, float *x)
{
    rng r = {seed * 2654435761ull + 12345};
    size_t total = ref_total(s), sp = ref_spatial(s);
    for (size_t i = 0; i < total; i++) {
        size_t c = ref_channel(s, i);
        switch (dist) {
        case DIST_OFFSET_1E4: x[i] = (float)(1e4 + rng_normal(&r)); break;
        case DIST_OFFSET_1E6: x[i] = (float)(1e6 + rng_normal(&r)); break;
        case DIST_CONSTANT: x[i] = c % 2 ? 1234.0f : 1e7f; break;
        case DIST_HUGE: x[i] = (float)((rng_uniform(&r) < 0.5 ? -1 : 1) * 1e18 *
                                       (0.5 + rng_uniform(&r)));
            break;
        default: x[i] = (float)(2 * rng_normal(&r) + 0.5); break;
        }
    }
    if (dist == DIST_NAN_INF) {
        x[ref_index(s, s->n - 1, 0, sp - 1)] = NAN;
        if (s->c > 1)
            x[ref_index(s, 0, 1, sp / 2)] = INFINITY;
    }
    if (dist != DIST_EXACT)
        return;
    /* Pairs (mu + d, mu - d) in the order the kernels block values: within each plane for
     * channels-first, along the rows for channels-last; an odd count ends with mu itself. */
    for (size_t c = 0; c < s->c; c++) {
        const float mu = (float)ldexp(1.0, (int)(c % 3) - 1);
        size_t runs = s->layout == CLNORM_CHANNELS_FIRST ? s->n : 1;
        size_t len = s->layout == CLNORM_CHANNELS_FIRST ? sp : s->n * sp;
        for (size_t run = 0; run < runs; run++)
            for (size_t j = 0; j < len; j += 2) {
                size_t m = run * len + j; /* logical position n * sp + p */
                size_t i0 = ref_index(s, m / sp, c, m % sp);
                if (j + 1 == len) {
                    x[i0] = mu;
                    continue;
                }
                float d = (float)(1 + r.state % 7) / 8.0f;
                rng_uniform(&r);
                size_t i1 = ref_index(s, (m + 1) / sp, c, (m + 1) % sp);
                x[i0] = mu + d;
                x[i1] = mu - d;
            }
    }
}

static float *random_floats(size_t count, double lo, double hi, unsigned long long seed)
{
    rng r = {seed * 6364136223846793005ull + 1442695040888963407ull};
    float *v = malloc((count ? count : 1) * sizeof(float));
    for (size_t i = 0; i < count; i++)
        v[i] = (float)(lo + (hi - lo) * rng_uniform(&r));
    return v;
}

/* dy: small integers in [-2, 2], mostly zero (field notes 4) for DIST_EXACT, else normal. */
static float *make_dy(size_t count, distribution dist, unsigned long long seed)
{
    rng r = {seed + 99};
    float *v = malloc((count ? count : 1) * sizeof(float));
    for (size_t i = 0; i < count; i++)
        v[i] = dist == DIST_EXACT ? (float)((int)(r.state % 5) - 2) * (rng_uniform(&r) < 0.3)
                                  : (float)rng_normal(&r);
    return v;
}

static bool channel_finite(const clnorm_shape *s, const float *x, size_t c)
{
    size_t sp = ref_spatial(s);
    for (size_t n = 0; n < s->n; n++)
        for (size_t p = 0; p < sp; p++)
            if (!isfinite(x[ref_index(s, n, c, p)]))
                return false;
    return true;
}

/* ---- tolerances ------------------------------------------------------------------------------ */

/* Per-channel error bounds of the statistics, from the reduction length L (values per channel):
 * sums of L terms err by at most about L * eps * (sum of |terms|). The kernels sum x - x0 (x0 the
 * channel's first value), so the magnitudes are those of x - x0. */
typedef struct stat_bounds {
    double *mean, *var, *tol_mean, *tol_var, *tol_invstd;
} stat_bounds;

static stat_bounds bounds_for(const clnorm_shape *s, const float *x, double eps)
{
    stat_bounds b;
    size_t C = s->c, sp = ref_spatial(s), L = ref_rows(s);
    double e = FLT_EPSILON;
    b.mean = calloc(C, sizeof(double));
    b.var = calloc(C, sizeof(double));
    b.tol_mean = calloc(C, sizeof(double));
    b.tol_var = calloc(C, sizeof(double));
    b.tol_invstd = calloc(C, sizeof(double));
    ref_stats(s, x, b.mean, b.var, NULL);
    for (size_t c = 0; c < C; c++) {
        double x0 = x[ref_index(s, 0, c, 0)], abs_shift = 0, sq_shift = 0;
        for (size_t n = 0; n < s->n; n++)
            for (size_t p = 0; p < sp; p++) {
                double d = x[ref_index(s, n, c, p)] - x0;
                abs_shift += fabs(d);
                sq_shift += d * d;
            }
        b.tol_mean[c] = (L + 2) * e * abs_shift / L + 2 * e * fabs(b.mean[c]);
        b.tol_var[c] = (L + 4) * e * sq_shift / L;
        b.tol_invstd[c] = (0.5 * b.tol_var[c] / (b.var[c] + eps) + 4 * e) / sqrt(b.var[c] + eps);
    }
    return b;
}

static void free_bounds(stat_bounds *b)
{
    free(b->mean);
    free(b->var);
    free(b->tol_mean);
    free(b->tol_var);
    free(b->tol_invstd);
}

#define EXPECT_CLOSE(what, got, want, tol, count, label)                                           \
    do {                                                                                           \
        size_t worst_;                                                                             \
        double r_ = worst_ratio((got), (want), (tol), (count), &worst_);                           \
        cr_expect(r_ <= 1.0, "%s: %s[%zu] = %.9g, reference %.9g, tolerance %.3g (%.3g x)",        \
                  (label), (what), worst_, (double)(got)[worst_], (want)[worst_], (tol)[worst_],    \
                  r_);                                                                             \
    } while (0)

/* ---- a case's buffers -------------------------------------------------------------------------- */

typedef struct fixture {
    clnorm_context *ctx;
    clnorm_shape s;
    size_t total, C;
    float *x, *gamma, *beta, *rmean, *rvar, *residual, *dy;
    cl_mem d_x, d_y, d_gamma, d_beta, d_rmean, d_rvar, d_smean, d_sinvstd, d_residual, d_dy,
        d_dx, d_dgamma, d_dbeta, d_dres;
    char label[160];
} fixture;

static void fixture_init(fixture *f, const bn_case *tc, bool with_residual)
{
    memset(f, 0, sizeof *f);
    f->ctx = test_context(NULL);
    f->s = shape_of(tc);
    f->total = ref_total(&f->s);
    f->C = tc->c;
    describe(tc, f->label, sizeof f->label);
    unsigned long long seed = tc->n * 131 + tc->c * 7 + tc->rank * 3 + tc->dist;
    f->x = malloc((f->total ? f->total : 1) * sizeof(float));
    fill_input(&f->s, tc->dist, seed, f->x);
    f->gamma = random_floats(f->C, 0.5, 1.5, seed + 1);
    f->beta = random_floats(f->C, -1, 1, seed + 2);
    f->rmean = random_floats(f->C, -0.5, 0.5, seed + 3);
    f->rvar = random_floats(f->C, 0.5, 2, seed + 4);
    f->dy = make_dy(f->total, tc->dist, seed + 5);
    f->d_x = test_buffer(f->ctx, f->total, f->x);
    f->d_y = test_buffer(f->ctx, f->total, NULL);
    f->d_gamma = test_buffer(f->ctx, f->C, f->gamma);
    f->d_beta = test_buffer(f->ctx, f->C, f->beta);
    f->d_rmean = test_buffer(f->ctx, f->C, f->rmean);
    f->d_rvar = test_buffer(f->ctx, f->C, f->rvar);
    f->d_smean = test_buffer(f->ctx, f->C, NULL);
    f->d_sinvstd = test_buffer(f->ctx, f->C, NULL);
    f->d_dy = test_buffer(f->ctx, f->total, f->dy);
    f->d_dx = test_buffer(f->ctx, f->total, NULL);
    f->d_dgamma = test_buffer(f->ctx, f->C, NULL);
    f->d_dbeta = test_buffer(f->ctx, f->C, NULL);
    if (with_residual) {
        f->residual = random_floats(f->total, -1, 1, seed + 6);
        f->d_residual = test_buffer(f->ctx, f->total, f->residual);
        f->d_dres = test_buffer(f->ctx, f->total, NULL);
    }
}

static void fixture_release(fixture *f)
{
    cl_mem all[] = {f->d_x,  f->d_y,       f->d_gamma,    f->d_beta,  f->d_rmean,
                    f->d_rvar, f->d_smean, f->d_sinvstd, f->d_residual, f->d_dy,
                    f->d_dx, f->d_dgamma,  f->d_dbeta,    f->d_dres};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i])
            clReleaseMemObject(all[i]);
    clnorm_context_release(f->ctx);
    free(f->x);
    free(f->gamma);
    free(f->beta);
    free(f->rmean);
    free(f->rvar);
    free(f->residual);
    free(f->dy);
}

static clnorm_bn_buffers forward_buffers(const fixture *f)
{
    clnorm_bn_buffers b = {.x = f->d_x,
                           .y = f->d_y,
                           .residual = f->d_residual,
                           .gamma = f->d_gamma,
                           .beta = f->d_beta,
                           .running_mean = f->d_rmean,
                           .running_var = f->d_rvar,
                           .save_mean = f->d_smean,
                           .save_invstd = f->d_sinvstd};
    return b;
}

static float *read_floats(fixture *f, cl_mem buf, size_t count)
{
    float *v = malloc((count ? count : 1) * sizeof(float));
    test_read(f->ctx, buf, count, v);
    return v;
}

/* ---- the checks -------------------------------------------------------------------------------- */

/* Training forward: y, saved statistics and running statistics against float64. Returns the
 * saved statistics as the device computed them (input to the backward checks). */
static void check_training_forward(fixture *f, const clnorm_bn_config *cfg, float **save_mean,
                                   float **save_invstd)
{
    const clnorm_shape *s = &f->s;
    size_t C = f->C, L = ref_rows(s);
    clnorm_bn_buffers b = forward_buffers(f);
    cl_event done = NULL;
    CLNORM_OK_(f->ctx, clnorm_bn_forward_training(f->ctx, s, cfg, &b, 0, NULL, &done));
    cr_assert_not_null(done);
    CL_OK(clWaitForEvents(1, &done));
    clReleaseEvent(done);
    float *y = read_floats(f, f->d_y, f->total), *sm = read_floats(f, f->d_smean, C),
          *si = read_floats(f, f->d_sinvstd, C), *rm = read_floats(f, f->d_rmean, C),
          *rv = read_floats(f, f->d_rvar, C);

    stat_bounds bd = bounds_for(s, f->x, cfg->eps);
    double *want = malloc(f->total * sizeof(double)), *tol = malloc(f->total * sizeof(double));
    bool relu = cfg->activation == CLNORM_ACTIVATION_RELU;
    ref_forward(s, f->x, f->residual, f->gamma, f->beta, bd.mean, bd.var, cfg->eps, relu, want);
    const double e = FLT_EPSILON;
    for (size_t i = 0; i < f->total; i++) {
        size_t c = ref_channel(s, i);
        double invstd = 1 / sqrt(bd.var[c] + cfg->eps);
        tol[i] = fabs(f->gamma[c]) * (bd.tol_mean[c] * invstd +
                                      fabs(f->x[i] - bd.mean[c]) * bd.tol_invstd[c]) +
                 4 * e * (fabs(want[i]) + fabs(f->beta[c]) + (f->residual ? fabs(f->residual[i]) : 0)) +
                 1e-30;
    }
    EXPECT_CLOSE("y", y, want, tol, f->total, f->label);

    double *wm = malloc(C * sizeof(double)), *wi = malloc(C * sizeof(double)),
           *wrm = malloc(C * sizeof(double)), *wrv = malloc(C * sizeof(double)),
           *tm = malloc(C * sizeof(double)), *ti = malloc(C * sizeof(double)),
           *trm = malloc(C * sizeof(double)), *trv = malloc(C * sizeof(double));
    const double m = cfg->momentum;
    for (size_t c = 0; c < C; c++) {
        bool finite = channel_finite(s, f->x, c);
        /* a channel with NaN or Inf must be NaN, whatever the reference's inf arithmetic says */
        wm[c] = finite ? bd.mean[c] : NAN;
        wi[c] = finite ? 1 / sqrt(bd.var[c] + cfg->eps) : NAN;
        wrm[c] = finite ? (1 - m) * f->rmean[c] + m * bd.mean[c] : NAN;
        wrv[c] = finite ? (1 - m) * f->rvar[c] + m * bd.var[c] * L / (L - 1) : NAN;
        tm[c] = bd.tol_mean[c] + 1e-30;
        ti[c] = bd.tol_invstd[c] + 1e-30;
        trm[c] = m * bd.tol_mean[c] + 4 * e * (fabs(wrm[c]) + fabs(f->rmean[c])) + 1e-30;
        trv[c] = m * bd.tol_var[c] * L / (L - 1) + 4 * e * (fabs(wrv[c]) + fabs(f->rvar[c])) +
                 1e-30;
        if (!finite) {
            /* such a channel's statistics may be NaN or +-Inf (PyTorch gives Inf for a mean
             * with an Inf in it), never a finite number: count any non-finite value as NaN */
            float *outs[] = {sm, si, rm, rv};
            for (int k = 0; k < 4; k++)
                outs[k][c] = isfinite(outs[k][c]) ? outs[k][c] : NAN;
        }
    }
    EXPECT_CLOSE("save_mean", sm, wm, tm, C, f->label);
    EXPECT_CLOSE("save_invstd", si, wi, ti, C, f->label);
    EXPECT_CLOSE("running_mean", rm, wrm, trm, C, f->label);
    EXPECT_CLOSE("running_var", rv, wrv, trv, C, f->label);
    /* the host copies follow the device's running statistics from here on */
    memcpy(f->rmean, rm, C * sizeof(float));
    memcpy(f->rvar, rv, C * sizeof(float));
    *save_mean = sm;
    *save_invstd = si;
    free(y);
    free(rm);
    free(rv);
    free(want);
    free(tol);
    free(wm);
    free(wi);
    free(wrm);
    free(wrv);
    free(tm);
    free(ti);
    free(trm);
    free(trv);
    free_bounds(&bd);
}

static void check_inference(fixture *f, const clnorm_bn_config *cfg)
{
    const clnorm_shape *s = &f->s;
    clnorm_bn_buffers b = forward_buffers(f);
    CLNORM_OK_(f->ctx, clnorm_bn_forward_inference(f->ctx, s, cfg, &b, 0, NULL, NULL));
    float *y = read_floats(f, f->d_y, f->total);
    double *mean = malloc(f->C * sizeof(double)), *var = malloc(f->C * sizeof(double));
    for (size_t c = 0; c < f->C; c++) {
        mean[c] = f->rmean[c];
        var[c] = f->rvar[c];
    }
    double *want = malloc(f->total * sizeof(double)), *tol = malloc(f->total * sizeof(double));
    bool relu = cfg->activation == CLNORM_ACTIVATION_RELU;
    ref_forward(s, f->x, f->residual, f->gamma, f->beta, mean, var, cfg->eps, relu, want);
    for (size_t i = 0; i < f->total; i++) {
        size_t c = ref_channel(s, i);
        /* one subtraction, sqrt, division, multiply-adds: a few ulp of each term */
        double scale = fabs(f->gamma[c]) / sqrt(var[c] + cfg->eps);
        tol[i] = 8 * FLT_EPSILON *
                     (fabs(want[i]) + scale * (fabs(f->x[i]) + fabs(mean[c])) + fabs(f->beta[c]) +
                      (f->residual ? fabs(f->residual[i]) : 0)) +
                 1e-30;
    }
    EXPECT_CLOSE("inference y", y, want, tol, f->total, f->label);
    free(y);
    free(mean);
    free(var);
    free(want);
    free(tol);
}

/* Backward given the statistics (float, as the forward saved them); frozen uses running stats. */
static void check_backward(fixture *f, const clnorm_bn_config *cfg, const float *mean_f,
                           const float *invstd_f, bool frozen)
{
    const clnorm_shape *s = &f->s;
    size_t C = f->C, L = ref_rows(s);
    bool relu = cfg->activation == CLNORM_ACTIVATION_RELU;
    float *mask = NULL;
    if (relu) /* the forward output that masks the gradient */
        mask = read_floats(f, f->d_y, f->total);
    clnorm_bn_grad_buffers g = {.x = f->d_x,
                                .dy = f->d_dy,
                                .y = relu ? f->d_y : NULL,
                                .gamma = f->d_gamma,
                                .mean = frozen ? f->d_rmean : f->d_smean,
                                .invstd = frozen ? NULL : f->d_sinvstd,
                                .var = frozen ? f->d_rvar : NULL,
                                .dx = f->d_dx,
                                .dgamma = f->d_dgamma,
                                .dbeta = f->d_dbeta,
                                .dresidual = f->d_dres};
    clnorm_status st = frozen ? clnorm_bn_backward_frozen(f->ctx, s, cfg, &g, 0, NULL, NULL)
                              : clnorm_bn_backward(f->ctx, s, cfg, &g, 0, NULL, NULL);
    cr_assert_eq(st, CLNORM_OK, "%s: %s", f->label, clnorm_last_error(f->ctx));
    float *dx = read_floats(f, f->d_dx, f->total), *dg = read_floats(f, f->d_dgamma, C),
          *db = read_floats(f, f->d_dbeta, C);
    double *mean = malloc(C * sizeof(double)), *invstd = malloc(C * sizeof(double));
    for (size_t c = 0; c < C; c++) {
        mean[c] = frozen ? f->rmean[c] : mean_f[c];
        invstd[c] = frozen ? 1 / sqrt((double)f->rvar[c] + cfg->eps) : invstd_f[c];
    }
    double *wdx = malloc(f->total * sizeof(double)), *tdx = malloc(f->total * sizeof(double));
    double *wdg = malloc(C * sizeof(double)), *wdb = malloc(C * sizeof(double));
    double *tdg = calloc(C, sizeof(double)), *tdb = calloc(C, sizeof(double));
    double *abs_dy = calloc(C, sizeof(double)), *abs_dyx = calloc(C, sizeof(double));
    ref_backward(s, f->x, f->dy, mask, f->gamma, mean, invstd, frozen, wdx, wdg, wdb);
    const double e = FLT_EPSILON;
    for (size_t i = 0; i < f->total; i++) {
        size_t c = ref_channel(s, i);
        double g = mask && !(mask[i] > 0) ? 0 : f->dy[i];
        abs_dy[c] += fabs(g);
        abs_dyx[c] += fabs(g * (f->x[i] - mean[c]));
    }
    for (size_t c = 0; c < C; c++) {
        tdb[c] = (L + 1) * e * abs_dy[c] + 1e-30;
        tdg[c] = ((L + 2) * e * abs_dyx[c] + 4 * e * abs_dyx[c]) * invstd[c] + 1e-30;
    }
    for (size_t i = 0; i < f->total; i++) {
        size_t c = ref_channel(s, i);
        double a = fabs(f->gamma[c]) * invstd[c];
        double xhat = fabs(f->x[i] - mean[c]) * invstd[c];
        double g = mask && !(mask[i] > 0) ? 0 : fabs(f->dy[i]);
        tdx[i] = frozen ? 4 * e * a * g + 1e-30
                        : a * (tdb[c] / L + xhat * tdg[c] / L) +
                              8 * e * a * (g + fabs(wdb[c]) / L + xhat * fabs(wdg[c]) / L) + 1e-30;
    }
    char label[200];
    snprintf(label, sizeof label, "%s%s%s", f->label, frozen ? " frozen" : "",
             relu ? " relu" : "");
    EXPECT_CLOSE("dx", dx, wdx, tdx, f->total, label);
    EXPECT_CLOSE("dgamma", dg, wdg, tdg, C, label);
    EXPECT_CLOSE("dbeta", db, wdb, tdb, C, label);
    if (f->d_dres) {
        float *dres = read_floats(f, f->d_dres, f->total);
        for (size_t i = 0; i < f->total; i++) {
            float want_g = mask && !(mask[i] > 0) ? 0.0f : f->dy[i];
            cr_expect(dres[i] == want_g, "%s: dresidual[%zu] = %g, want %g", label, i,
                      (double)dres[i], (double)want_g);
            if (dres[i] != want_g)
                break;
        }
        free(dres);
    }
    free(mask);
    free(dx);
    free(dg);
    free(db);
    free(mean);
    free(invstd);
    free(wdx);
    free(tdx);
    free(wdg);
    free(wdb);
    free(tdg);
    free(tdb);
    free(abs_dy);
    free(abs_dyx);
}

/* ---- the case table -------------------------------------------------------------------------------- */

static const bn_case shape_table[] = {
    /* BatchNorm1d on (N, C) */
    {1, 1, 0, {0}, 0, 0},
    {2, 1, 0, {0}, 0, 0},
    {3, 3, 0, {0}, 0, 0},
    {16, 23, 0, {0}, 0, 0},
    {64, 257, 0, {0}, 0, 0},
    /* (N, C, L) and 2-d */
    {2, 3, 1, {1}, 0, 0},
    {1, 3, 2, {1, 1}, 0, 0},
    {3, 23, 1, {33}, 0, 0},
    {1, 64, 2, {7, 7}, 0, 0},
    {16, 3, 2, {7, 7}, 0, 0},
    {3, 23, 2, {13, 17}, 0, 0},
    {2, 257, 2, {13, 17}, 0, 0},
    {64, 3, 2, {1, 1}, 0, 0},
    {2, 64, 2, {56, 56}, 0, 0},
    {16, 64, 2, {56, 56}, 0, 0},
    {1, 1, 2, {251, 257}, 0, 0},
    /* channels of 1568 and 3136 values: GPUs' register kernels, in their long build at
     * work-groups of 64 (8 vectors per work-item) and 128 (CI and the NVIDIA row) */
    {2, 3, 2, {28, 28}, 0, 0},
    {4, 3, 2, {28, 28}, 0, 0},
    /* CPUs' one-launch channels-first kernels on tiles of 2 channels (their planes n by n),
     * planes of 49 values */
    {12, 16, 2, {7, 7}, 0, 0},
    /* 361 channels-last rows: past the register kernel of work-groups of 16 (Oclgrind's small
     * shapes), the general path */
    {1, 2, 2, {19, 19}, 0, 0},
    /* 256 values in whole vectors: GPUs' strided elementwise passes on a grid of whole samples
     * (channels-first) or rows (channels-last), each work-item's coefficients formed once */
    {4, 4, 2, {4, 4}, 0, 0},
    /* 3-d */
    {2, 3, 3, {5, 6, 7}, 0, 0},
    {3, 5, 3, {4, 4, 4}, 0, 0},
};

static const bn_case adversarial_table[] = {
    {4, 3, 2, {13, 17}, 0, DIST_OFFSET_1E4}, {4, 3, 2, {13, 17}, 0, DIST_OFFSET_1E6},
    {16, 5, 2, {7, 7}, 0, DIST_OFFSET_1E6},  {3, 4, 2, {5, 5}, 0, DIST_CONSTANT},
    {8, 3, 2, {9, 9}, 0, DIST_HUGE},         {4, 3, 2, {6, 7}, 0, DIST_NAN_INF},
    {64, 8, 0, {0}, 0, DIST_OFFSET_1E6},     {2, 4, 2, {56, 56}, 0, DIST_HUGE},
    {4, 8, 2, {9, 9}, 0, DIST_HUGE}, /* 8 channels: CPUs' one-launch kernels too */
};

static const bn_case exact_table[] = {
    {2, 3, 2, {4, 4}, 0, DIST_EXACT},   {3, 3, 2, {7, 7}, 0, DIST_EXACT},
    {16, 5, 2, {13, 17}, 0, DIST_EXACT}, {64, 23, 0, {0}, 0, DIST_EXACT},
    {5, 9, 1, {1}, 0, DIST_EXACT},      {4, 2, 2, {56, 56}, 0, DIST_EXACT},
    {2, 3, 3, {5, 6, 7}, 0, DIST_EXACT},
};

/* Both layouts of every row; CLNORM_TEST_SMALL keeps the small ones (for Oclgrind). */
static struct criterion_test_params both_layouts(const bn_case *rows, size_t count)
{
    bool small = getenv("CLNORM_TEST_SMALL") != NULL;
    bn_case *cases = cr_malloc(2 * count * sizeof *cases);
    size_t used = 0;
    for (size_t i = 0; i < count; i++)
        for (int layout = 0; layout < 2; layout++) {
            bn_case tc = rows[i];
            clnorm_shape s = shape_of(&tc);
            if (small && ref_total(&s) > 1200)
                continue;
            tc.layout = (clnorm_layout)layout;
            cases[used++] = tc;
        }
    return cr_make_param_array(bn_case, cases, used);
}

/* The whole life of one case: training forward, inference, backward, frozen backward. */
static void run_case(const bn_case *tc, clnorm_activation act, bool residual)
{
    fixture f;
    fixture_init(&f, tc, residual);
    clnorm_bn_config cfg;
    clnorm_bn_default_config(&cfg);
    cfg.activation = act;
    if (tc->dist == DIST_EXACT)
        cfg.eps = 1.0 / 16;
    if (ref_rows(&f.s) < 2) {
        /* one value per channel: training is an error, as in PyTorch; nothing is written */
        clnorm_bn_buffers b = forward_buffers(&f);
        cl_event ev = (cl_event)&f;
        cr_assert_eq(clnorm_bn_forward_training(f.ctx, &f.s, &cfg, &b, 0, NULL, &ev),
                     CLNORM_INVALID_SHAPE, "%s", f.label);
        cr_assert_null(ev);
        cr_assert(strstr(clnorm_last_error(f.ctx), "more than 1 value per channel"));
        float *y = read_floats(&f, f.d_y, f.total);
        for (size_t i = 0; i < f.total; i++)
            cr_assert(isnan(y[i]), "y untouched");
        free(y);
        check_inference(&f, &cfg);
        check_backward(&f, &cfg, NULL, NULL, true);
        fixture_release(&f);
        return;
    }
    float *sm, *si;
    check_training_forward(&f, &cfg, &sm, &si);
    if (tc->dist == DIST_CONSTANT) {
        /* variance 0: y = beta exactly */
        float *y = read_floats(&f, f.d_y, f.total);
        for (size_t i = 0; i < f.total; i++)
            cr_assert_eq(y[i], f.beta[ref_channel(&f.s, i)], "%s: y[%zu]", f.label, i);
        free(y);
    }
    if (tc->dist == DIST_HUGE) {
        float *y = read_floats(&f, f.d_y, f.total);
        for (size_t i = 0; i < f.total; i++)
            cr_assert(isfinite(y[i]), "%s: y[%zu] = %g", f.label, i, (double)y[i]);
        free(y);
    }
    if (tc->dist != DIST_NAN_INF) {
        check_backward(&f, &cfg, sm, si, false);
        check_backward(&f, &cfg, sm, si, true);
    }
    check_inference(&f, &cfg);
    free(sm);
    free(si);
    fixture_release(&f);
}

ParameterizedTestParameters(bn, every_shape_matches_float64)
{
    return both_layouts(shape_table, sizeof shape_table / sizeof shape_table[0]);
}

ParameterizedTest(bn_case *tc, bn, every_shape_matches_float64)
{
    run_case(tc, CLNORM_ACTIVATION_NONE, false);
}

ParameterizedTestParameters(bn, adversarial_data)
{
    return both_layouts(adversarial_table, sizeof adversarial_table / sizeof adversarial_table[0]);
}

ParameterizedTest(bn_case *tc, bn, adversarial_data)
{
    run_case(tc, CLNORM_ACTIVATION_NONE, false);
}

static const bn_case fused_table[] = {
    {3, 23, 2, {13, 17}, 0, 0}, {16, 3, 2, {7, 7}, 0, 0}, {4, 8, 2, {8, 8}, 0, 0},
    {2, 5, 0, {0}, 0, 0}, {12, 16, 2, {7, 7}, 0, 0},
};

ParameterizedTestParameters(bn, fused_relu_and_add_relu)
{
    return both_layouts(fused_table, sizeof fused_table / sizeof fused_table[0]);
}

ParameterizedTest(bn_case *tc, bn, fused_relu_and_add_relu)
{
    run_case(tc, CLNORM_ACTIVATION_RELU, false);
    run_case(tc, CLNORM_ACTIVATION_RELU, true);
    run_case(tc, CLNORM_ACTIVATION_NONE, true);
}

/* ---- exact-by-construction statistics ------------------------------------------------------------- */

ParameterizedTestParameters(bn, exact_statistics_are_bit_exact)
{
    return both_layouts(exact_table, sizeof exact_table / sizeof exact_table[0]);
}

/* Partials per channel the exact statistics are checked with, after the device's own: splits
 * that put partial boundaries where a tuner or another device's table might (pairs stay whole). */
static const long exact_splits[] = {2, 3, 5, 6};

/* Stage 1's (count, mean, variance) and the one-call forward's statistics and y, bit for bit
 * (y within 8 ulp), on data whose statistics are exact in fp32; `split` names the partials. */
static void check_exact(fixture *f, const double *mean, const double *var, const char *split)
{
    size_t C = f->C, L = ref_rows(&f->s);
    cl_mem set = test_buffer(f->ctx, 3 * C, NULL);
    CLNORM_OK_(f->ctx, clnorm_bn_partial_stats(f->ctx, &f->s, f->d_x, set, 0, NULL, NULL));
    float *got = read_floats(f, set, 3 * C);
    for (size_t c = 0; c < C; c++) {
        cr_assert_eq(got[c], (float)L, "%s (%s) count[%zu]", f->label, split, c);
        cr_assert_eq(got[C + c], (float)mean[c], "%s (%s) mean[%zu] = %.9g, exact %.9g", f->label,
                     split, c, (double)got[C + c], mean[c]);
        cr_assert_eq(got[2 * C + c], (float)var[c], "%s (%s) var[%zu] = %.9g, exact %.9g",
                     f->label, split, c, (double)got[2 * C + c], var[c]);
    }
    /* the one-call forward with momentum 1: running stats are the batch's, bit for bit */
    clnorm_bn_config cfg;
    clnorm_bn_default_config(&cfg);
    cfg.eps = 1.0 / 16;
    cfg.momentum = 1.0;
    clnorm_bn_buffers b = forward_buffers(f);
    CLNORM_OK_(f->ctx, clnorm_bn_forward_training(f->ctx, &f->s, &cfg, &b, 0, NULL, NULL));
    float *sm = read_floats(f, f->d_smean, C), *rm = read_floats(f, f->d_rmean, C),
          *rv = read_floats(f, f->d_rvar, C), *y = read_floats(f, f->d_y, f->total);
    for (size_t c = 0; c < C; c++) {
        cr_assert_eq(sm[c], (float)mean[c], "%s (%s) save_mean[%zu]", f->label, split, c);
        cr_assert_eq(rm[c], (float)mean[c], "%s (%s) running_mean[%zu]", f->label, split, c);
        cr_assert_eq(rv[c], (float)(var[c] * L / (L - 1)),
                     "%s (%s) running_var[%zu] = %.9g, exact %.9g", f->label, split, c,
                     (double)rv[c], var[c] * L / (L - 1));
    }
    double *want = malloc(f->total * sizeof(double));
    ref_forward(&f->s, f->x, NULL, f->gamma, f->beta, mean, var, cfg.eps, false, want);
    for (size_t i = 0; i < f->total; i++) {
        size_t c = ref_channel(&f->s, i);
        double ulps = fabs(y[i] - want[i]) / (FLT_EPSILON * (fabs(want[i]) + fabs(f->beta[c])));
        cr_assert(ulps <= 8, "%s (%s): y[%zu] = %.9g, exact %.9g (%.1f ulp)", f->label, split, i,
                  (double)y[i], want[i], ulps);
    }
    free(got);
    free(sm);
    free(rm);
    free(rv);
    free(y);
    free(want);
    clReleaseMemObject(set);
}

ParameterizedTest(bn_case *tc, bn, exact_statistics_are_bit_exact)
{
    fixture f;
    fixture_init(&f, tc, false);
    double *mean = malloc(f.C * sizeof(double)), *var = malloc(f.C * sizeof(double));
    ref_stats(&f.s, f.x, mean, var, NULL);
    check_exact(&f, mean, var, "the device's partials");
    for (size_t k = 0; k < sizeof exact_splits / sizeof exact_splits[0]; k++) {
        char split[48];
        snprintf(split, sizeof split, "partials_per_channel=%ld", exact_splits[k]);
        CLNORM_OK_(f.ctx, clnorm_set_param(f.ctx, "partials_per_channel", exact_splits[k]));
        check_exact(&f, mean, var, split);
    }
    free(mean);
    free(var);
    fixture_release(&f);
}

/* Stage 2's merge of many sets is one fixed tree: one work-item per channel (work-groups of one)
 * and teams of work-items per channel (larger work-groups) give the same bits. Counts differ per
 * set and per channel (one is 0), so every merge weighs its sides differently; 45 sets leave the
 * last team member a partial run, 64 fill every run. */
Test(bn_merge, many_sets_give_the_same_bits_on_every_work_group_size)
{
    enum { C = 5, MAX_SETS = 64, RUNS = 2, COUNTS = 2 };
    static const size_t set_counts[COUNTS] = {45, 64};
    float sets[MAX_SETS * 3 * C];
    rng r = {99};
    for (size_t k = 0; k < MAX_SETS; k++)
        for (size_t c = 0; c < C; c++) {
            sets[k * 3 * C + c] = (float)(1 + (int)(rng_uniform(&r) * 50));
            sets[k * 3 * C + C + c] = (float)(3.0 + rng_normal(&r));
            sets[k * 3 * C + 2 * C + c] = (float)(0.5 + rng_uniform(&r));
        }
    sets[7 * 3 * C + 2] = 0.0f; /* set 7 has no values of channel 2 */
    clnorm_context *ctx = test_context(NULL);
    /* the device's own work-group size, and one work-item or 16 (teams of 8) */
    long group_sizes[RUNS];
    CLNORM_OK_(ctx, clnorm_get_param(ctx, "work_group_size", &group_sizes[0]));
    group_sizes[1] = group_sizes[0] == 1 ? 16 : 1;
    cl_mem d_sets = test_buffer(ctx, MAX_SETS * 3 * C, sets);
    cl_mem out[4];
    for (int i = 0; i < 4; i++)
        out[i] = test_buffer(ctx, C, NULL);
    clnorm_bn_config cfg;
    clnorm_bn_default_config(&cfg);
    float got[RUNS][COUNTS][4][C];
    for (int run = 0; run < RUNS; run++) {
        CLNORM_OK_(ctx, clnorm_set_param(ctx, "work_group_size", group_sizes[run]));
        for (int q = 0; q < COUNTS; q++) {
            float zeros[C] = {0}, ones[C] = {1, 1, 1, 1, 1};
            CL_OK(clEnqueueWriteBuffer(clnorm_context_queue(ctx), out[0], CL_TRUE, 0,
                                       sizeof zeros, zeros, 0, NULL, NULL));
            CL_OK(clEnqueueWriteBuffer(clnorm_context_queue(ctx), out[1], CL_TRUE, 0,
                                       sizeof ones, ones, 0, NULL, NULL));
            CLNORM_OK_(ctx, clnorm_bn_merge_stats(ctx, C, set_counts[q], d_sets, &cfg, out[0],
                                                  out[1], out[2], out[3], 0, NULL, NULL));
            for (int i = 0; i < 4; i++)
                test_read(ctx, out[i], C, got[run][q][i]);
        }
    }
    /* the device's merge is the float64 one to within rounding */
    for (int q = 0; q < COUNTS; q++)
        for (size_t c = 0; c < C; c++) {
            double n = 0, mean = 0, m2 = 0;
            for (size_t k = 0; k < set_counts[q]; k++) {
                const double nb = sets[k * 3 * C + c], mb = sets[k * 3 * C + C + c],
                             m2b = sets[k * 3 * C + 2 * C + c] * nb, d = mb - mean;
                if (nb == 0)
                    continue;
                mean += d * nb / (n + nb);
                m2 += m2b + d * d * n * nb / (n + nb);
                n += nb;
            }
            const double invstd = 1 / sqrt(m2 / n + cfg.eps);
            cr_assert(fabs(got[0][q][2][c] - mean) <= 1e-5 * fabs(mean), "%zu sets: mean[%zu] %g vs %g",
                      set_counts[q], c, (double)got[0][q][2][c], mean);
            cr_assert(fabs(got[0][q][3][c] - invstd) <= 1e-5 * invstd,
                      "%zu sets: invstd[%zu] %g vs %g", set_counts[q], c, (double)got[0][q][3][c],
                      invstd);
        }
    for (int q = 0; q < COUNTS; q++)
        for (int i = 0; i < 4; i++)
            for (size_t c = 0; c < C; c++)
                cr_assert(!memcmp(&got[1][q][i][c], &got[0][q][i][c], sizeof(float)),
                          "%zu sets: output %d channel %zu: %.9g with work_group_size %ld, %.9g "
                          "with %ld",
                          set_counts[q], i, c, (double)got[1][q][i][c], group_sizes[1],
                          (double)got[0][q][i][c], group_sizes[0]);
    for (int i = 0; i < 4; i++)
        clReleaseMemObject(out[i]);
    clReleaseMemObject(d_sets);
    clnorm_context_release(ctx);
}

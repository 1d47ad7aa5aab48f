/* The feature-norm layer objects (clnorm_featurenorm): forward and backward of LayerNorm,
 * RMSNorm, GroupNorm and InstanceNorm layers against a float64 reference, the fused residual,
 * InstanceNorm's running statistics and mode contract, saved statistics that grow with the batch,
 * save/load and its validation, misuse and bad options. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bn_reference.h"
#include "support.h"

static const double E = FLT_EPSILON;

/* ---- the problem: statistics groups of an (N, C, H, W) tensor --------------------------------- */

/* LayerNorm and RMSNorm rows x D are N = rows, C = D, one group, no spatial dimensions. */
typedef struct problem {
    size_t n, c, sh, sw, groups;
    int channels_last;
    int rms;
} problem;

static size_t hw_of(const problem *p)
{
    return p->sh * p->sw;
}

static size_t total_of(const problem *p)
{
    return p->n * p->c * hw_of(p);
}

static size_t stats_of(const problem *p)
{
    return p->n * p->groups;
}

static size_t group_size(const problem *p)
{
    return p->c / p->groups * hw_of(p);
}

/* Offset of member j of statistics group r (r = n * groups + g), and its channel. */
static size_t member(const problem *p, size_t r, size_t j, size_t *channel)
{
    const size_t n = r / p->groups, g = r % p->groups, hw = hw_of(p);
    const size_t ch = g * (p->c / p->groups) + j / hw, s = j % hw;
    *channel = ch;
    return p->channels_last ? (n * hw + s) * p->c + ch : (n * p->c + ch) * hw + s;
}

static clnorm_shape shape_of(const problem *p)
{
    clnorm_shape s;
    memset(&s, 0, sizeof s);
    s.n = p->n;
    s.c = p->c;
    s.spatial_rank = 2;
    s.spatial[0] = p->sh;
    s.spatial[1] = p->sw;
    s.layout = p->channels_last ? CLNORM_CHANNELS_LAST : CLNORM_CHANNELS_FIRST;
    return s;
}

static problem rows_problem(size_t rows, size_t d, int rms)
{
    problem p = {rows, d, 1, 1, 1, 0, rms};
    return p;
}

/* ---- float64 reference ----------------------------------------------------------------------- */

/* Zeroed arrays carved one after another from a single allocation (`block`, freed alone). */
static double *carve(double **cursor, size_t count)
{
    double *p = *cursor;
    *cursor += count;
    return p;
}

typedef struct forward_ref {
    double *y, *tol_y;                         /* total */
    double *mean, *rstd, *tol_mean, *tol_rstd; /* one per statistics group */
    double *block;
} forward_ref;

/* h is the normalized input (x, or x + residual as the device rounds it). The tolerances: the
 * mean is a reduction of D values, (D + 2) eps mean|h|; the variance (D + 4) eps (var +
 * mean|h|^2); rstd half the variance's relative error plus a few ulp; y their propagation. */
static forward_ref reference_forward(const problem *p, const float *h, const float *w,
                                     const float *b, double eps)
{
    const size_t R = stats_of(p), D = group_size(p), total = total_of(p);
    forward_ref f;
    double *cursor = f.block = calloc(2 * total + 4 * R + 1, sizeof(double));
    cr_assert_not_null(f.block);
    f.y = carve(&cursor, total);
    f.tol_y = carve(&cursor, total);
    f.mean = carve(&cursor, R);
    f.rstd = carve(&cursor, R);
    f.tol_mean = carve(&cursor, R);
    f.tol_rstd = carve(&cursor, R);
    for (size_t r = 0; r < R; r++) {
        size_t ch;
        double sum = 0, sum_abs = 0, sum_sq = 0, m2 = 0;
        for (size_t j = 0; j < D; j++) {
            const double v = h[member(p, r, j, &ch)];
            sum += v;
            sum_abs += fabs(v);
            sum_sq += v * v;
        }
        const double mean = sum / D, mean_abs = sum_abs / D;
        for (size_t j = 0; j < D; j++) {
            const double d = h[member(p, r, j, &ch)] - mean;
            m2 += d * d;
        }
        const double var = p->rms ? sum_sq / D : m2 / D;
        const double tol_mean = (D + 2) * E * mean_abs + 2 * E * fabs(mean);
        const double tol_var = (D + 4) * E * (var + mean_abs * mean_abs);
        f.mean[r] = mean;
        f.rstd[r] = 1.0 / sqrt(var + eps);
        f.tol_mean[r] = tol_mean + 1e-30;
        f.tol_rstd[r] = f.rstd[r] * (0.5 * tol_var / (var + eps) + 4 * E);
        for (size_t j = 0; j < D; j++) {
            const size_t i = member(p, r, j, &ch);
            const double wv = w ? w[ch] : 1.0, bv = b ? b[ch] : 0.0;
            const double centered = p->rms ? h[i] : h[i] - mean;
            f.y[i] = centered * f.rstd[r] * wv + bv;
            f.tol_y[i] = fabs(wv) * ((p->rms ? 0 : tol_mean) * f.rstd[r] +
                                     fabs(centered) * f.tol_rstd[r]) +
                         4 * E * (fabs(f.y[i]) + fabs(bv)) + 1e-30;
        }
    }
    return f;
}

typedef struct backward_ref {
    double *dx, *tol_dx;               /* total */
    double *dw, *tol_dw, *db, *tol_db; /* per channel */
    double *block;
} backward_ref;

/* Gradients given the forward's (float) statistics: with g = dy * w and xhat = (h - mean) rstd,
 * dx = rstd (g - mean(g) - xhat mean(g xhat)) [+ dh_in] (no mean(g) for RMSNorm),
 * dw = sum dy xhat, db = sum dy over the channel's M values. Each sum of k terms is allowed
 * (k + 4) eps times the sum of the magnitudes. */
static backward_ref reference_backward(const problem *p, const float *h, const float *dy,
                                       const float *dh_in, const float *w, const float *mean,
                                       const float *rstd)
{
    const size_t R = stats_of(p), D = group_size(p), total = total_of(p);
    const size_t M = p->n * hw_of(p); /* values per channel */
    backward_ref g;
    double *cursor = g.block = calloc(2 * total + 4 * p->c + 1, sizeof(double));
    cr_assert_not_null(g.block);
    g.dx = carve(&cursor, total);
    g.tol_dx = carve(&cursor, total);
    g.dw = carve(&cursor, p->c);
    g.tol_dw = carve(&cursor, p->c);
    g.db = carve(&cursor, p->c);
    g.tol_db = carve(&cursor, p->c);
    for (size_t r = 0; r < R; r++) {
        const double mu = p->rms ? 0.0 : mean[r], rs = rstd[r];
        double s1 = 0, s2 = 0, a1 = 0, a2 = 0;
        size_t ch;
        for (size_t j = 0; j < D; j++) {
            const size_t i = member(p, r, j, &ch);
            const double gi = dy[i] * (w ? w[ch] : 1.0), xhat = (h[i] - mu) * rs;
            s1 += gi;
            s2 += gi * xhat;
            a1 += fabs(gi);
            a2 += fabs(gi * xhat);
            g.dw[ch] += dy[i] * xhat;
            g.tol_dw[ch] += fabs(dy[i] * xhat);
            g.db[ch] += dy[i];
            g.tol_db[ch] += fabs(dy[i]);
        }
        const double m1 = p->rms ? 0.0 : s1 / D, m2 = s2 / D;
        for (size_t j = 0; j < D; j++) {
            const size_t i = member(p, r, j, &ch);
            const double gi = dy[i] * (w ? w[ch] : 1.0), xhat = (h[i] - mu) * rs;
            const double extra = dh_in ? dh_in[i] : 0.0;
            g.dx[i] = rs * (gi - m1 - xhat * m2) + extra;
            g.tol_dx[i] = rs * ((D + 4) * E * a1 / D + fabs(xhat) * (D + 4) * E * a2 / D) +
                          8 * E * (rs * (fabs(gi) + fabs(m1) + fabs(xhat * m2)) + fabs(extra)) +
                          1e-30;
        }
    }
    for (size_t c = 0; c < p->c; c++) {
        g.tol_dw[c] = (M + 4) * E * g.tol_dw[c] + 1e-30;
        g.tol_db[c] = (M + 4) * E * g.tol_db[c] + 1e-30;
    }
    return g;
}

#define ASSERT_CLOSE(label, what, got, want, tol, count)                                           \
    do {                                                                                           \
        size_t worst_;                                                                             \
        const double r_ = worst_ratio((got), (want), (tol), (count), &worst_);                     \
        cr_assert(r_ <= 1.0, "%s: %s[%zu] = %.9g, reference %.9g, tolerance %.3g (%.3g x)",        \
                  (label), (what), worst_, (double)(got)[worst_], (want)[worst_], (tol)[worst_],   \
                  r_);                                                                             \
    } while (0)

/* ---- data and buffers ------------------------------------------------------------------------ */

static float *normal_floats(rng *r, size_t count, double scale, double offset)
{
    float *v = malloc((count ? count : 1) * sizeof(float));
    cr_assert_not_null(v);
    for (size_t i = 0; i < count; i++)
        v[i] = (float)(offset + scale * rng_normal(r));
    return v;
}

static float *read_floats(clnorm_context *ctx, cl_mem m, size_t count)
{
    float *v = malloc((count ? count : 1) * sizeof(float));
    cr_assert_not_null(v);
    if (count)
        test_read(ctx, m, count, v);
    return v;
}

static void write_floats(clnorm_context *ctx, cl_mem m, size_t count, const float *data)
{
    CL_OK(clEnqueueWriteBuffer(clnorm_context_queue(ctx), m, CL_TRUE, 0, count * sizeof(float),
                               data, 0, NULL, NULL));
}

static clnorm_featurenorm_buffers buffers_of(clnorm_context *ctx, clnorm_featurenorm *layer)
{
    clnorm_featurenorm_buffers b;
    CLNORM_OK_(ctx, clnorm_featurenorm_get_buffers(layer, &b));
    return b;
}

static clnorm_featurenorm_info info_of(clnorm_context *ctx, clnorm_featurenorm *layer)
{
    clnorm_featurenorm_info info;
    CLNORM_OK_(ctx, clnorm_featurenorm_get_info(layer, &info));
    return info;
}

/* Gives the layer's weight and bias (where it has them) random values, as an optimizer would;
 * returns host copies (NULL where absent). */
static void randomize_params(clnorm_context *ctx, clnorm_featurenorm *layer, rng *r, float **w,
                             float **b)
{
    const clnorm_featurenorm_info info = info_of(ctx, layer);
    const clnorm_featurenorm_buffers bufs = buffers_of(ctx, layer);
    *w = *b = NULL;
    if (bufs.weight) {
        *w = malloc(info.size * sizeof(float));
        for (size_t i = 0; i < info.size; i++)
            (*w)[i] = (float)((0.5 + rng_uniform(r)) * (i % 3 == 1 ? -1.0 : 1.0));
        write_floats(ctx, bufs.weight, info.size, *w);
    }
    if (bufs.bias) {
        *b = malloc(info.size * sizeof(float));
        for (size_t i = 0; i < info.size; i++)
            (*b)[i] = (float)(2.0 * rng_uniform(r) - 1.0);
        write_floats(ctx, bufs.bias, info.size, *b);
    }
}

/* The forward and backward that suit the layer's kind (InstanceNorm: in the layer's mode). */
static clnorm_status forward_any(clnorm_featurenorm *layer, const problem *p, cl_mem x,
                                 cl_mem residual, cl_mem h, cl_mem y, cl_event *event)
{
    const clnorm_shape s = shape_of(p);
    clnorm_featurenorm_info info;
    cr_assert_eq(clnorm_featurenorm_get_info(layer, &info), CLNORM_OK);
    switch (info.kind) {
    case CLNORM_LAYERNORM:
    case CLNORM_RMSNORM:
        return clnorm_featurenorm_forward_rows(layer, p->n, x, residual, h, y, 0, NULL, event);
    case CLNORM_GROUPNORM:
        return clnorm_featurenorm_forward_groups(layer, &s, x, y, 0, NULL, event);
    default:
        return clnorm_featurenorm_forward_instances(layer, info.mode, &s, x, y, 0, NULL, event);
    }
}

static clnorm_status backward_any(clnorm_featurenorm *layer, const problem *p, cl_mem x,
                                  cl_mem dy, cl_mem dh_in, cl_mem dx)
{
    const clnorm_shape s = shape_of(p);
    clnorm_featurenorm_info info;
    cr_assert_eq(clnorm_featurenorm_get_info(layer, &info), CLNORM_OK);
    switch (info.kind) {
    case CLNORM_LAYERNORM:
    case CLNORM_RMSNORM:
        return clnorm_featurenorm_backward_rows(layer, p->n, x, dy, dh_in, dx, 0, NULL, NULL);
    case CLNORM_GROUPNORM:
        return clnorm_featurenorm_backward_groups(layer, &s, x, dy, dx, 0, NULL, NULL);
    default:
        return clnorm_featurenorm_backward_instances(layer, &s, x, dy, dx, 0, NULL, NULL);
    }
}

/* One forward and backward of the layer on random data (with a fused residual when asked),
 * checked against the float64 reference: y, h, the saved mean and rstd, dx, dweight, dbias.
 * The weight and bias are randomized first. */
static void check_layer(clnorm_context *ctx, clnorm_featurenorm *layer, const problem *p,
                        int residual, unsigned long long seed, const char *label)
{
    rng r = {seed * 0x9E3779B97F4A7C15ull + 1};
    const size_t total = total_of(p), R = stats_of(p);
    const clnorm_featurenorm_info info = info_of(ctx, layer);
    float *w, *b;
    randomize_params(ctx, layer, &r, &w, &b);
    float *x = normal_floats(&r, total, 1.5, 0.5), *res = normal_floats(&r, total, 1.0, -0.25);
    cl_mem xb = test_buffer(ctx, total, x), yb = test_buffer(ctx, total, NULL);
    cl_mem rb = residual ? test_buffer(ctx, total, res) : NULL;
    cl_mem hb = residual ? test_buffer(ctx, total, NULL) : NULL;
    cl_event ev = NULL;
    CLNORM_OK_(ctx, forward_any(layer, p, xb, rb, hb, yb, &ev));
    cr_assert_not_null(ev, "%s: no event", label);
    CL_OK(clWaitForEvents(1, &ev));
    clReleaseEvent(ev);

    /* h: the float sum, exactly rounded */
    float *h = calloc(total + 1, sizeof(float));
    for (size_t i = 0; i < total; i++)
        h[i] = residual ? x[i] + res[i] : x[i];
    if (residual) {
        float *got_h = read_floats(ctx, hb, total);
        cr_assert(memcmp(got_h, h, total * sizeof(float)) == 0, "%s: h != x + residual", label);
        free(got_h);
    }
    forward_ref f = reference_forward(p, h, w, b, info.eps);
    float *y = read_floats(ctx, yb, total);
    ASSERT_CLOSE(label, "y", y, f.y, f.tol_y, total);
    const clnorm_featurenorm_buffers bufs = buffers_of(ctx, layer);
    cr_assert_eq(bufs.saved_count, R, "%s: saved_count %zu, expected %zu", label,
                 bufs.saved_count, R);
    float *rstd = read_floats(ctx, bufs.rstd, R), *mean = NULL;
    ASSERT_CLOSE(label, "rstd", rstd, f.rstd, f.tol_rstd, R);
    if (p->rms) {
        cr_assert_null(bufs.mean, "%s: an RMSNorm layer saves no mean", label);
    } else {
        mean = read_floats(ctx, bufs.mean, R);
        ASSERT_CLOSE(label, "mean", mean, f.mean, f.tol_mean, R);
    }

    /* backward from the saved statistics */
    float *dy = normal_floats(&r, total, 1.0, 0.1), *dh = normal_floats(&r, total, 0.5, 0.0);
    cl_mem dyb = test_buffer(ctx, total, dy), dxb = test_buffer(ctx, total, NULL);
    cl_mem dhb = residual ? test_buffer(ctx, total, dh) : NULL;
    CLNORM_OK_(ctx, backward_any(layer, p, residual ? hb : xb, dyb, dhb, dxb));
    backward_ref g = reference_backward(p, h, dy, residual ? dh : NULL, w, mean, rstd);
    float *dx = read_floats(ctx, dxb, total);
    ASSERT_CLOSE(label, "dx", dx, g.dx, g.tol_dx, total);
    if (w) {
        float *dw = read_floats(ctx, bufs.dweight, p->c);
        ASSERT_CLOSE(label, "dweight", dw, g.dw, g.tol_dw, p->c);
        free(dw);
    } else {
        cr_assert_null(bufs.dweight);
    }
    if (b) {
        float *db = read_floats(ctx, bufs.dbias, p->c);
        ASSERT_CLOSE(label, "dbias", db, g.db, g.tol_db, p->c);
        free(db);
    } else {
        cr_assert_null(bufs.dbias);
    }

    free(f.block);
    free(g.block);
    cl_mem all[] = {xb, yb, rb, hb, dyb, dxb, dhb};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i])
            clReleaseMemObject(all[i]);
    float *host[] = {w, b, x, res, h, y, rstd, mean, dy, dh, dx};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++)
        free(host[i]);
}

/* ---- layers ---------------------------------------------------------------------------------- */

/* A layer of any kind: size is D or C; groups matter for GroupNorm; bias for LayerNorm (with
 * affine); tracking for InstanceNorm. */
typedef struct layer_case {
    const char *label;
    clnorm_featurenorm_kind kind;
    size_t size, groups;
    int affine, bias, tracking;
} layer_case;

/* Creates the layer with eps (NAN: the kind's default) and, for InstanceNorm, momentum 0.25. */
static clnorm_featurenorm *make_layer(clnorm_context *ctx, const layer_case *lc, double eps)
{
    clnorm_featurenorm *layer = NULL;
    clnorm_status s = CLNORM_OK;
    switch (lc->kind) {
    case CLNORM_LAYERNORM: {
        clnorm_layernorm_options o;
        clnorm_layernorm_default_options(&o, lc->size);
        o.eps = isnan(eps) ? o.eps : eps;
        o.elementwise_affine = lc->affine;
        o.bias = lc->bias;
        s = clnorm_featurenorm_create_layernorm(ctx, &o, &layer);
        break;
    }
    case CLNORM_RMSNORM: {
        clnorm_rmsnorm_options o;
        clnorm_rmsnorm_default_options(&o, lc->size);
        o.eps = isnan(eps) ? o.eps : eps;
        o.elementwise_affine = lc->affine;
        s = clnorm_featurenorm_create_rmsnorm(ctx, &o, &layer);
        break;
    }
    case CLNORM_GROUPNORM: {
        clnorm_groupnorm_options o;
        clnorm_groupnorm_default_options(&o, lc->groups, lc->size);
        o.eps = isnan(eps) ? o.eps : eps;
        o.affine = lc->affine;
        s = clnorm_featurenorm_create_groupnorm(ctx, &o, &layer);
        break;
    }
    case CLNORM_INSTANCENORM: {
        clnorm_instancenorm_options o;
        clnorm_instancenorm_default_options(&o, lc->size);
        o.eps = isnan(eps) ? o.eps : eps;
        o.momentum = 0.25;
        o.affine = lc->affine;
        o.track_running_stats = lc->tracking;
        s = clnorm_featurenorm_create_instancenorm(ctx, &o, &layer);
        break;
    }
    }
    cr_assert_eq(s, CLNORM_OK, "%s: %s", lc->label, clnorm_last_error(ctx));
    cr_assert_not_null(layer);
    return layer;
}

static clnorm_featurenorm *new_layernorm(clnorm_context *ctx, size_t d, int affine, int bias)
{
    const layer_case lc = {"layernorm", CLNORM_LAYERNORM, d, 1, affine, bias, 0};
    return make_layer(ctx, &lc, NAN);
}

static clnorm_featurenorm *new_rmsnorm(clnorm_context *ctx, size_t d, int affine)
{
    const layer_case lc = {"rmsnorm", CLNORM_RMSNORM, d, 1, affine, 0, 0};
    return make_layer(ctx, &lc, NAN);
}

static clnorm_featurenorm *new_groupnorm(clnorm_context *ctx, size_t groups, size_t c, int affine)
{
    const layer_case lc = {"groupnorm", CLNORM_GROUPNORM, c, groups, affine, affine, 0};
    return make_layer(ctx, &lc, NAN);
}

/* InstanceNorm with PyTorch's momentum 0.1 (make_layer's 0.25 serves the file tests) */
static clnorm_featurenorm *new_instancenorm(clnorm_context *ctx, size_t c, int affine,
                                            int tracking)
{
    clnorm_instancenorm_options o;
    clnorm_instancenorm_default_options(&o, c);
    o.affine = affine;
    o.track_running_stats = tracking;
    clnorm_featurenorm *layer = NULL;
    CLNORM_OK_(ctx, clnorm_featurenorm_create_instancenorm(ctx, &o, &layer));
    return layer;
}

/* ---- forward and backward of each kind ------------------------------------------------------- */

/* A layer, a problem, a fused residual or not, and InstanceNorm's mode. */
typedef struct forward_case {
    layer_case layer;
    problem p;
    int residual;
    clnorm_mode mode;
} forward_case;

static const forward_case forward_cases[] = {
    {{"layernorm 5x33", CLNORM_LAYERNORM, 33, 1, 1, 1, 0}, {5, 33, 1, 1, 1, 0, 0}, 0, 0},
    {{"layernorm 5x33 + residual", CLNORM_LAYERNORM, 33, 1, 1, 1, 0}, {5, 33, 1, 1, 1, 0, 0}, 1, 0},
    {{"layernorm 5x33 bias=False", CLNORM_LAYERNORM, 33, 1, 1, 0, 0}, {5, 33, 1, 1, 1, 0, 0}, 0, 0},
    /* bias without elementwise_affine is ignored, as in PyTorch */
    {{"layernorm 5x33 no affine + residual", CLNORM_LAYERNORM, 33, 1, 0, 1, 0},
     {5, 33, 1, 1, 1, 0, 0}, 1, 0},
    {{"rmsnorm 4x64", CLNORM_RMSNORM, 64, 1, 1, 0, 0}, {4, 64, 1, 1, 1, 0, 1}, 0, 0},
    {{"rmsnorm 4x64 + residual", CLNORM_RMSNORM, 64, 1, 1, 0, 0}, {4, 64, 1, 1, 1, 0, 1}, 1, 0},
    {{"rmsnorm 4x64 no weight", CLNORM_RMSNORM, 64, 1, 0, 0, 0}, {4, 64, 1, 1, 1, 0, 1}, 0, 0},
    {{"groupnorm N2 C6 4x5 G3 NCHW", CLNORM_GROUPNORM, 6, 3, 1, 1, 0}, {2, 6, 4, 5, 3, 0, 0}, 0, 0},
    {{"groupnorm N2 C6 4x5 G3 NHWC", CLNORM_GROUPNORM, 6, 3, 1, 1, 0}, {2, 6, 4, 5, 3, 1, 0}, 0, 0},
    {{"groupnorm NHWC no affine", CLNORM_GROUPNORM, 6, 3, 0, 0, 0}, {2, 6, 4, 5, 3, 1, 0}, 0, 0},
    {{"instancenorm N3 C4 5x5 NCHW", CLNORM_INSTANCENORM, 4, 4, 1, 1, 0}, {3, 4, 5, 5, 4, 0, 0}, 0,
     0},
    {{"instancenorm N3 C4 5x5 NHWC", CLNORM_INSTANCENORM, 4, 4, 1, 1, 0}, {3, 4, 5, 5, 4, 1, 0}, 0,
     0},
    {{"instancenorm no affine", CLNORM_INSTANCENORM, 4, 4, 0, 0, 0}, {3, 4, 5, 5, 4, 1, 0}, 0, 0},
    /* without running statistics evaluation uses the instance statistics too */
    {{"instancenorm evaluation, no tracking", CLNORM_INSTANCENORM, 4, 4, 1, 1, 0},
     {3, 4, 5, 5, 4, 0, 0}, 0, CLNORM_EVALUATION},
    /* with them, training is the same */
    {{"instancenorm training, tracking", CLNORM_INSTANCENORM, 4, 4, 1, 1, 1},
     {3, 4, 5, 5, 4, 1, 0}, 0, CLNORM_TRAINING},
};

Test(featurenorm_layer, every_kind_forward_and_backward_match_float64)
{
    clnorm_context *ctx = test_context(NULL);
    for (size_t k = 0; k < sizeof forward_cases / sizeof forward_cases[0]; k++) {
        const forward_case *fc = &forward_cases[k];
        const layer_case *lc = &fc->layer;
        clnorm_featurenorm *layer = make_layer(ctx, lc, NAN);
        const clnorm_featurenorm_info info = info_of(ctx, layer);
        cr_assert(info.kind == lc->kind && info.size == lc->size &&
                      info.groups == (lc->kind == CLNORM_INSTANCENORM ? lc->size : lc->groups),
                  "%s: info", lc->label);
        cr_assert_eq(info.has_weight, lc->affine, "%s: weight", lc->label);
        cr_assert_eq(info.has_bias, lc->affine && lc->bias && lc->kind != CLNORM_RMSNORM,
                     "%s: bias", lc->label);
        cr_assert_eq(info.has_running_stats, lc->tracking, "%s: running statistics", lc->label);
        cr_assert_eq(info.eps, lc->kind == CLNORM_RMSNORM ? CLNORM_RMS_DEFAULT_EPS
                                                         : CLNORM_DEFAULT_EPS);
        CLNORM_OK_(ctx, clnorm_featurenorm_set_mode(layer, fc->mode));
        check_layer(ctx, layer, &fc->p, fc->residual, 1 + k, lc->label);
        clnorm_featurenorm_release(layer);
    }
    clnorm_context_release(ctx);
}

/* ---- InstanceNorm running statistics and modes ------------------------------------------------ */

Test(featurenorm_layer, instancenorm_running_statistics_follow_pytorch)
{
    clnorm_context *ctx = test_context(NULL);
    const size_t N = 3, C = 4, HW = 25, total = N * C * HW;
    const double m = 0.1, eps = CLNORM_DEFAULT_EPS;
    clnorm_featurenorm *layer = new_instancenorm(ctx, C, 1, 1);
    const clnorm_featurenorm_buffers bufs = buffers_of(ctx, layer);
    cr_assert_not_null(bufs.running_mean);
    cr_assert_not_null(bufs.running_var);
    float *rm0 = read_floats(ctx, bufs.running_mean, C), *rv0 = read_floats(ctx, bufs.running_var, C);
    for (size_t c = 0; c < C; c++)
        cr_assert(rm0[c] == 0.0f && rv0[c] == 1.0f, "initial running statistics");
    free(rm0);
    free(rv0);

    double rm[4] = {0, 0, 0, 0}, rv[4] = {1, 1, 1, 1}, tol_rm[4] = {0}, tol_rv[4] = {0};
    for (int step = 0; step < 3; step++) {
        const problem p = {N, C, 5, 5, C, step == 1, 0};
        rng r = {100 + (unsigned long long)step};
        float *x = normal_floats(&r, total, 1.0 + step, 0.5 * step - 0.3);
        cl_mem xb = test_buffer(ctx, total, x), yb = test_buffer(ctx, total, NULL);
        const clnorm_shape s = shape_of(&p);
        CLNORM_OK_(ctx, clnorm_featurenorm_forward_instances(layer, CLNORM_TRAINING, &s, xb, yb,
                                                             0, NULL, NULL));
        /* the batch mean of each instance's mean and unbiased variance, with momentum */
        for (size_t c = 0; c < C; c++) {
            double mean_sum = 0, var_sum = 0, tol_m = 0, tol_v = 0;
            for (size_t n = 0; n < N; n++) {
                size_t ch;
                double s = 0, sa = 0, m2 = 0;
                for (size_t j = 0; j < HW; j++) {
                    const double v = x[member(&p, n * C + c, j, &ch)];
                    s += v;
                    sa += fabs(v);
                }
                const double mean = s / HW, mean_abs = sa / HW;
                for (size_t j = 0; j < HW; j++) {
                    const double d = x[member(&p, n * C + c, j, &ch)] - mean;
                    m2 += d * d;
                }
                mean_sum += mean;
                var_sum += m2 / (HW - 1);
                tol_m += (HW + 2) * E * mean_abs;
                tol_v += (HW + 4) * E * (m2 / HW + mean_abs * mean_abs);
            }
            rm[c] = (1 - m) * rm[c] + m * mean_sum / N;
            rv[c] = (1 - m) * rv[c] + m * var_sum / N;
            tol_rm[c] = (1 - m) * tol_rm[c] + m * tol_m / N + 4 * E * fabs(rm[c]) + 1e-30;
            tol_rv[c] = (1 - m) * tol_rv[c] + m * tol_v / N + 4 * E * fabs(rv[c]);
        }
        float *got_rm = read_floats(ctx, bufs.running_mean, C);
        float *got_rv = read_floats(ctx, bufs.running_var, C);
        char label[64];
        snprintf(label, sizeof label, "step %d", step + 1);
        ASSERT_CLOSE(label, "running_mean", got_rm, rm, tol_rm, C);
        ASSERT_CLOSE(label, "running_var", got_rv, rv, tol_rv, C);
        free(got_rm);
        free(got_rv);
        clReleaseMemObject(xb);
        clReleaseMemObject(yb);
        free(x);
    }
    /* the training forward and backward themselves are those of instance statistics */
    const problem train = {N, C, 5, 5, C, 0, 0};
    check_layer(ctx, layer, &train, 0, 30, "instancenorm training with tracking");

    /* evaluation: y = (x - running_mean) / sqrt(running_var + eps) * w + b, and the backward
     * with those frozen statistics; the running statistics stay as they are */
    CLNORM_OK_(ctx, clnorm_featurenorm_set_mode(layer, CLNORM_EVALUATION));
    float *frm = read_floats(ctx, bufs.running_mean, C), *frv = read_floats(ctx, bufs.running_var, C);
    for (int cl = 0; cl < 2; cl++) {
        const problem p = {N, C, 5, 5, C, cl, 0};
        const clnorm_shape s = shape_of(&p);
        rng r = {200 + (unsigned long long)cl};
        float *w, *b;
        randomize_params(ctx, layer, &r, &w, &b);
        float *x = normal_floats(&r, total, 2.0, 0.3), *dy = normal_floats(&r, total, 1.0, 0.0);
        cl_mem xb = test_buffer(ctx, total, x), yb = test_buffer(ctx, total, NULL);
        cl_mem dyb = test_buffer(ctx, total, dy), dxb = test_buffer(ctx, total, NULL);
        CLNORM_OK_(ctx, clnorm_featurenorm_forward_instances(layer, CLNORM_EVALUATION, &s, xb, yb,
                                                             0, NULL, NULL));
        cr_assert_eq(buffers_of(ctx, layer).saved_count, 0, "evaluation saves no statistics");
        CLNORM_OK_(ctx, clnorm_featurenorm_backward_instances(layer, &s, xb, dyb, dxb, 0, NULL,
                                                              NULL));
        double *y_ref = calloc(total, sizeof(double)), *y_tol = calloc(total, sizeof(double));
        double *dx_ref = calloc(total, sizeof(double)), *dx_tol = calloc(total, sizeof(double));
        double dw[4] = {0}, db[4] = {0}, dw_tol[4] = {0}, db_tol[4] = {0};
        for (size_t rr = 0; rr < N * C; rr++)
            for (size_t j = 0; j < HW; j++) {
                size_t c;
                const size_t i = member(&p, rr, j, &c);
                const double inv = 1.0 / sqrt((double)frv[c] + eps), xhat = (x[i] - frm[c]) * inv;
                y_ref[i] = xhat * w[c] + b[c];
                y_tol[i] = 8 * E * (fabs(x[i]) + fabs(frm[c])) * inv * fabs(w[c]) +
                           8 * E * (fabs(y_ref[i]) + fabs(b[c])) + 1e-30;
                dx_ref[i] = dy[i] * w[c] * inv;
                dx_tol[i] = 8 * E * fabs(dx_ref[i]) + 1e-30;
                dw[c] += dy[i] * xhat;
                db[c] += dy[i];
                dw_tol[c] += fabs(dy[i] * xhat);
                db_tol[c] += fabs(dy[i]);
            }
        for (size_t c = 0; c < C; c++) {
            dw_tol[c] = (N * HW + 8) * E * dw_tol[c] + 1e-30;
            db_tol[c] = (N * HW + 4) * E * db_tol[c] + 1e-30;
        }
        const char *label = cl ? "evaluation NHWC" : "evaluation NCHW";
        float *y = read_floats(ctx, yb, total), *dx = read_floats(ctx, dxb, total);
        float *gdw = read_floats(ctx, bufs.dweight, C), *gdb = read_floats(ctx, bufs.dbias, C);
        ASSERT_CLOSE(label, "y", y, y_ref, y_tol, total);
        ASSERT_CLOSE(label, "dx", dx, dx_ref, dx_tol, total);
        ASSERT_CLOSE(label, "dweight", gdw, dw, dw_tol, C);
        ASSERT_CLOSE(label, "dbias", gdb, db, db_tol, C);
        float *rm_after = read_floats(ctx, bufs.running_mean, C);
        float *rv_after = read_floats(ctx, bufs.running_var, C);
        cr_assert(memcmp(rm_after, frm, C * sizeof(float)) == 0 &&
                      memcmp(rv_after, frv, C * sizeof(float)) == 0,
                  "evaluation changed the running statistics");
        cl_mem all[] = {xb, yb, dyb, dxb};
        for (size_t i = 0; i < 4; i++)
            clReleaseMemObject(all[i]);
        float *host[] = {w, b, x, dy, y, dx, gdw, gdb, rm_after, rv_after};
        for (size_t i = 0; i < sizeof host / sizeof host[0]; i++)
            free(host[i]);
        free(y_ref);
        free(y_tol);
        free(dx_ref);
        free(dx_tol);
    }
    free(frm);
    free(frv);
    clnorm_featurenorm_release(layer);
    clnorm_context_release(ctx);
}

Test(featurenorm_layer, instancenorm_mode_is_explicit_and_a_mismatch_enqueues_nothing)
{
    clnorm_context *ctx = test_context(NULL);
    const problem p = {2, 4, 3, 3, 4, 0, 0};
    const clnorm_shape s = shape_of(&p);
    const size_t total = total_of(&p);
    clnorm_featurenorm *layer = new_instancenorm(ctx, 4, 1, 1);
    cr_assert_eq(clnorm_featurenorm_mode(layer), CLNORM_TRAINING);
    const clnorm_featurenorm_buffers bufs = buffers_of(ctx, layer);
    rng r = {7};
    float *x = normal_floats(&r, total, 1.0, 0.0), *sentinel = normal_floats(&r, total, 1.0, 1e3);
    cl_mem xb = test_buffer(ctx, total, x), yb = test_buffer(ctx, total, sentinel);
    cl_event ev = (cl_event)(uintptr_t)0x1; /* garbage: a failed call must set it to NULL */

    clnorm_status st = clnorm_featurenorm_forward_instances(layer, CLNORM_EVALUATION, &s, xb, yb,
                                                            0, NULL, &ev);
    cr_assert_eq(st, CLNORM_WRONG_MODE, "got %s", clnorm_status_name(st));
    cr_assert_null(ev);
    const char *msg = clnorm_last_error(ctx);
    cr_assert(strstr(msg, "CLNORM_TRAINING") && strstr(msg, "CLNORM_EVALUATION") &&
                  strstr(msg, "clnorm_featurenorm_set_mode"),
              "message names both modes and the switch: %s", msg);
    CLNORM_OK_(ctx, clnorm_finish(ctx));
    float *back = read_floats(ctx, yb, total);
    cr_assert(memcmp(back, sentinel, total * sizeof(float)) == 0, "y written despite WRONG_MODE");
    free(back);

    /* invalid enums change nothing */
    cr_assert_eq(clnorm_featurenorm_set_mode(layer, (clnorm_mode)7), CLNORM_INVALID_ARGUMENT);
    cr_assert(strstr(clnorm_last_error(ctx), "mode"), "%s", clnorm_last_error(ctx));
    cr_assert_eq(clnorm_featurenorm_mode(layer), CLNORM_TRAINING);
    cr_assert_eq(clnorm_featurenorm_forward_instances(layer, (clnorm_mode)-1, &s, xb, yb, 0, NULL,
                                                      NULL),
                 CLNORM_INVALID_ARGUMENT);
    cr_assert(strstr(clnorm_last_error(ctx), "expected"), "%s", clnorm_last_error(ctx));

    /* switched to evaluation, expecting training fails; the running statistics never moved */
    CLNORM_OK_(ctx, clnorm_featurenorm_set_mode(layer, CLNORM_EVALUATION));
    cr_assert_eq(clnorm_featurenorm_mode(layer), CLNORM_EVALUATION);
    cr_assert_eq(clnorm_featurenorm_forward_instances(layer, CLNORM_TRAINING, &s, xb, yb, 0, NULL,
                                                      NULL),
                 CLNORM_WRONG_MODE);
    float *rmv = read_floats(ctx, bufs.running_mean, 4), *rvv = read_floats(ctx, bufs.running_var, 4);
    for (size_t c = 0; c < 4; c++)
        cr_assert(rmv[c] == 0.0f && rvv[c] == 1.0f, "a refused forward moved the statistics");
    free(rmv);
    free(rvv);
    CLNORM_OK_(ctx, clnorm_featurenorm_forward_instances(layer, CLNORM_EVALUATION, &s, xb, yb, 0,
                                                         NULL, &ev));
    cr_assert_not_null(ev);
    CL_OK(clWaitForEvents(1, &ev));
    clReleaseEvent(ev);

    /* LayerNorm, RMSNorm and GroupNorm take the mode but behave the same in both */
    clnorm_featurenorm *ln = new_layernorm(ctx, 9, 1, 1);
    const problem rows = rows_problem(8, 9, 0);
    float *y_train = NULL;
    for (int mode = 0; mode < 2; mode++) {
        CLNORM_OK_(ctx, clnorm_featurenorm_set_mode(ln, (clnorm_mode)mode));
        CLNORM_OK_(ctx, forward_any(ln, &rows, xb, NULL, NULL, yb, NULL));
        float *y = read_floats(ctx, yb, total);
        if (!y_train)
            y_train = y;
        else {
            cr_assert(memcmp(y, y_train, total * sizeof(float)) == 0,
                      "layernorm differs between training and evaluation");
            free(y);
        }
    }
    free(y_train);
    clReleaseMemObject(xb);
    clReleaseMemObject(yb);
    free(x);
    free(sentinel);
    clnorm_featurenorm_release(ln);
    clnorm_featurenorm_release(layer);
    clnorm_context_release(ctx);
}

/* ---- saved statistics that grow with the batch ----------------------------------------------- */

/* Batches of 2, 8, 4 and 8 again: the saved buffers grow once for 8 (both buffers alive at once,
 * so the handles differ) and the smaller and equal batches reuse them. */
static void check_growth(clnorm_context *ctx, clnorm_featurenorm *layer, problem p,
                         const size_t *batches, size_t count, const char *label)
{
    cl_mem mean = NULL, rstd = NULL;
    size_t most = 0;
    const clnorm_featurenorm_buffers before = buffers_of(ctx, layer);
    for (size_t k = 0; k < count; k++) {
        char what[96];
        p.n = batches[k];
        snprintf(what, sizeof what, "%s batch %zu", label, p.n);
        check_layer(ctx, layer, &p, 0, 40 + k, what);
        const clnorm_featurenorm_buffers b = buffers_of(ctx, layer);
        cr_assert_eq(b.weight, before.weight, "%s: the weight buffer changed", what);
        cr_assert_eq(b.dweight, before.dweight, "%s: the dweight buffer changed", what);
        if (p.n > most) {
            cr_assert_neq(b.rstd, rstd, "%s: a larger batch kept the old rstd buffer", what);
            most = p.n;
        } else {
            cr_assert_eq(b.rstd, rstd, "%s: rstd reallocated for a batch that fits", what);
            cr_assert_eq(b.mean, mean, "%s: mean reallocated for a batch that fits", what);
        }
        mean = b.mean;
        rstd = b.rstd;
        size_t bytes = 0;
        CL_OK(clGetMemObjectInfo(rstd, CL_MEM_SIZE, sizeof bytes, &bytes, NULL));
        cr_assert_eq(bytes, most * p.groups * sizeof(float), "%s: rstd holds %zu bytes", what,
                     bytes);
    }
}

Test(featurenorm_layer, saved_statistics_grow_with_the_batch_and_are_reused)
{
    clnorm_context *ctx = test_context(NULL);
    static const size_t batches[] = {2, 8, 4, 8, 1};
    clnorm_featurenorm *ln = new_layernorm(ctx, 33, 1, 1);
    const clnorm_featurenorm_buffers fresh = buffers_of(ctx, ln);
    cr_assert(fresh.mean == NULL && fresh.rstd == NULL && fresh.saved_count == 0);
    check_growth(ctx, ln, rows_problem(0, 33, 0), batches, 5, "layernorm D33");
    clnorm_featurenorm *rms = new_rmsnorm(ctx, 64, 1);
    check_growth(ctx, rms, rows_problem(0, 64, 1), batches, 5, "rmsnorm D64");
    clnorm_featurenorm *gn = new_groupnorm(ctx, 3, 6, 1);
    const problem gp = {0, 6, 4, 5, 3, 1, 0};
    check_growth(ctx, gn, gp, batches, 4, "groupnorm NHWC");
    clnorm_featurenorm *in = new_instancenorm(ctx, 4, 1, 1);
    const problem ip = {0, 4, 5, 5, 4, 0, 0};
    check_growth(ctx, in, ip, batches, 4, "instancenorm NCHW");
    clnorm_featurenorm_release(ln);
    clnorm_featurenorm_release(rms);
    clnorm_featurenorm_release(gn);
    clnorm_featurenorm_release(in);
    clnorm_context_release(ctx);
}

/* ---- misuse ------------------------------------------------------------------------------------ */

static void expect_status(clnorm_context *ctx, clnorm_status got, clnorm_status want,
                          const char *word, const char *what)
{
    cr_assert_eq(got, want, "%s: got %s, expected %s (%s)", what, clnorm_status_name(got),
                 clnorm_status_name(want), clnorm_last_error(ctx));
    cr_assert(strstr(clnorm_last_error(ctx), word), "%s: message \"%s\" lacks \"%s\"", what,
              clnorm_last_error(ctx), word);
}

Test(featurenorm_layer, misuse_is_refused_and_leaves_the_saved_statistics)
{
    clnorm_context *ctx = test_context(NULL);
    const problem p = rows_problem(4, 6, 0);
    const size_t total = total_of(&p);
    rng r = {99};
    float *x = normal_floats(&r, 16 * 6, 1.0, 0.0);
    cl_mem xb = test_buffer(ctx, 16 * 6, x), yb = test_buffer(ctx, total, NULL);
    cl_mem dyb = test_buffer(ctx, 16 * 6, x), dxb = test_buffer(ctx, 16 * 6, NULL);
    clnorm_featurenorm *ln = new_layernorm(ctx, 6, 1, 1);
    clnorm_featurenorm *gn = new_groupnorm(ctx, 3, 6, 1);
    const problem gp = {1, 6, 2, 2, 3, 0, 0};
    clnorm_shape gs = shape_of(&gp);
    cl_event ev = (cl_event)(uintptr_t)0x1;

    /* calls that do not suit the kind name the ones that do */
    expect_status(ctx, clnorm_featurenorm_forward_groups(ln, &gs, xb, yb, 0, NULL, &ev),
                  CLNORM_INVALID_ARGUMENT, "clnorm_featurenorm_forward_rows", "groups on layernorm");
    cr_assert_null(ev);
    expect_status(ctx, clnorm_featurenorm_forward_rows(gn, 1, xb, NULL, NULL, yb, 0, NULL, NULL),
                  CLNORM_INVALID_ARGUMENT, "clnorm_featurenorm_forward_groups", "rows on groupnorm");
    expect_status(ctx, clnorm_featurenorm_forward_instances(gn, CLNORM_TRAINING, &gs, xb, yb, 0,
                                                            NULL, NULL),
                  CLNORM_INVALID_ARGUMENT, "groupnorm", "instances on groupnorm");
    expect_status(ctx, clnorm_featurenorm_backward_instances(gn, &gs, xb, dyb, dxb, 0, NULL, NULL),
                  CLNORM_INVALID_ARGUMENT, "clnorm_featurenorm_backward_groups",
                  "backward instances on groupnorm");

    /* a backward needs a forward, of its shape */
    expect_status(ctx, clnorm_featurenorm_backward_rows(ln, 4, xb, dyb, NULL, dxb, 0, NULL, &ev),
                  CLNORM_INVALID_ARGUMENT, "no forward", "backward before forward");
    cr_assert_null(ev);
    CLNORM_OK_(ctx, clnorm_featurenorm_forward_rows(ln, 4, xb, NULL, NULL, yb, 0, NULL, NULL));
    expect_status(ctx, clnorm_featurenorm_backward_rows(ln, 3, xb, dyb, NULL, dxb, 0, NULL, NULL),
                  CLNORM_INVALID_SHAPE, "last forward", "backward of other rows");
    CLNORM_OK_(ctx, clnorm_featurenorm_forward_groups(gn, &gs, xb, yb, 0, NULL, NULL));
    gs.layout = CLNORM_CHANNELS_LAST;
    expect_status(ctx, clnorm_featurenorm_backward_groups(gn, &gs, xb, dyb, dxb, 0, NULL, NULL),
                  CLNORM_INVALID_SHAPE, "last forward", "backward in the other layout");
    gs.layout = CLNORM_CHANNELS_FIRST;
    CLNORM_OK_(ctx, clnorm_featurenorm_backward_groups(gn, &gs, xb, dyb, dxb, 0, NULL, NULL));
    gs.c = 5;
    expect_status(ctx, clnorm_featurenorm_forward_groups(gn, &gs, xb, yb, 0, NULL, NULL),
                  CLNORM_INVALID_SHAPE, "channels", "shape with other channels");
    expect_status(ctx, clnorm_featurenorm_forward_groups(gn, NULL, xb, yb, 0, NULL, NULL),
                  CLNORM_INVALID_ARGUMENT, "shape", "NULL shape");

    /* a failing forward that needed larger buffers changes nothing: the saved statistics of the
     * last good forward (4 rows) are still there for its backward */
    const clnorm_featurenorm_buffers before = buffers_of(ctx, ln);
    float *mean_before = read_floats(ctx, before.mean, 4);
    expect_status(ctx, clnorm_featurenorm_forward_rows(ln, 16, xb, NULL, NULL, yb, 0, NULL, &ev),
                  CLNORM_BUFFER_TOO_SMALL, "y", "y too small for 16 rows");
    cr_assert_null(ev);
    const clnorm_featurenorm_buffers after = buffers_of(ctx, ln);
    cr_assert(after.mean == before.mean && after.rstd == before.rstd && after.saved_count == 4);
    float *mean_after = read_floats(ctx, after.mean, 4);
    cr_assert(memcmp(mean_before, mean_after, 4 * sizeof(float)) == 0);
    CLNORM_OK_(ctx, clnorm_featurenorm_backward_rows(ln, 4, xb, dyb, NULL, dxb, 0, NULL, NULL));
    /* the functional call's own checks come through */
    expect_status(ctx, clnorm_featurenorm_forward_rows(ln, 4, xb, dyb, yb, xb, 0, NULL, NULL),
                  CLNORM_INVALID_ARGUMENT, "residual", "y = x with a residual");

    /* an empty batch is a no-op forward; its backward zeroes dweight and dbias */
    CLNORM_OK_(ctx, clnorm_featurenorm_forward_rows(ln, 0, xb, NULL, NULL, yb, 0, NULL, &ev));
    cr_assert_not_null(ev);
    CL_OK(clWaitForEvents(1, &ev));
    clReleaseEvent(ev);
    cr_assert_eq(buffers_of(ctx, ln).saved_count, 0);
    CLNORM_OK_(ctx, clnorm_featurenorm_backward_rows(ln, 0, xb, dyb, NULL, dxb, 0, NULL, NULL));
    float *dw = read_floats(ctx, after.dweight, 6), *db = read_floats(ctx, after.dbias, 6);
    for (size_t i = 0; i < 6; i++)
        cr_assert(dw[i] == 0.0f && db[i] == 0.0f, "empty backward: dweight/dbias not zero");

    /* NULL layers */
    cr_assert_eq(clnorm_featurenorm_forward_rows(NULL, 1, xb, NULL, NULL, yb, 0, NULL, &ev),
                 CLNORM_INVALID_ARGUMENT);
    cr_assert_null(ev);
    cr_assert_eq(clnorm_featurenorm_backward_groups(NULL, &gs, xb, dyb, dxb, 0, NULL, NULL),
                 CLNORM_INVALID_ARGUMENT);
    cr_assert_eq(clnorm_featurenorm_set_mode(NULL, CLNORM_TRAINING), CLNORM_INVALID_ARGUMENT);
    cr_assert_eq(clnorm_featurenorm_mode(NULL), CLNORM_TRAINING);
    cr_assert_eq(clnorm_featurenorm_get_buffers(NULL, NULL), CLNORM_INVALID_ARGUMENT);
    cr_assert_eq(clnorm_featurenorm_get_buffers(ln, NULL), CLNORM_INVALID_ARGUMENT);
    cr_assert_eq(clnorm_featurenorm_get_info(ln, NULL), CLNORM_INVALID_ARGUMENT);
    cr_assert_eq(clnorm_featurenorm_save(NULL, "x"), CLNORM_INVALID_ARGUMENT);
    cr_assert_eq(clnorm_featurenorm_load(ln, ""), CLNORM_INVALID_ARGUMENT);
    clnorm_featurenorm_release(NULL);

    cl_mem all[] = {xb, yb, dyb, dxb};
    for (size_t i = 0; i < 4; i++)
        clReleaseMemObject(all[i]);
    float *host[] = {x, mean_before, mean_after, dw, db};
    for (size_t i = 0; i < 5; i++)
        free(host[i]);
    clnorm_featurenorm_release(ln);
    clnorm_featurenorm_release(gn);
    clnorm_context_release(ctx);
}

/* ---- save and load ------------------------------------------------------------------------------ */

/* A layer's file-borne state: its four arrays (absent ones NULL), eps and momentum. */
typedef struct snapshot {
    float *arrays[4];
    size_t size;
    double eps, momentum;
} snapshot;

static snapshot take_snapshot(clnorm_context *ctx, clnorm_featurenorm *layer)
{
    const clnorm_featurenorm_info info = info_of(ctx, layer);
    const clnorm_featurenorm_buffers b = buffers_of(ctx, layer);
    const cl_mem src[4] = {b.weight, b.bias, b.running_mean, b.running_var};
    snapshot s = {{NULL}, info.size, info.eps, info.momentum};
    for (size_t a = 0; a < 4; a++)
        s.arrays[a] = src[a] ? read_floats(ctx, src[a], info.size) : NULL;
    return s;
}

static void assert_same_snapshot(const snapshot *a, const snapshot *b, const char *what)
{
    static const char *const names[] = {"weight", "bias", "running_mean", "running_var"};
    cr_assert_eq(a->size, b->size);
    for (size_t i = 0; i < 4; i++) {
        cr_assert_eq(!a->arrays[i], !b->arrays[i], "%s: %s present in one only", what, names[i]);
        cr_assert(!a->arrays[i] ||
                      memcmp(a->arrays[i], b->arrays[i], a->size * sizeof(float)) == 0,
                  "%s: %s differs", what, names[i]);
    }
    cr_assert(a->eps == b->eps && a->momentum == b->momentum, "%s: eps %g/%g momentum %g/%g",
              what, a->eps, b->eps, a->momentum, b->momentum);
}

static void free_snapshot(snapshot *s)
{
    for (size_t i = 0; i < 4; i++)
        free(s->arrays[i]);
}

static unsigned char *file_bytes(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "open %s", path);
    unsigned char *data = malloc(1 << 16);
    *size = fread(data, 1, 1 << 16, f);
    cr_assert(feof(f), "%s is larger than the test expects", path);
    fclose(f);
    return data;
}

static void put_file(const char *path, const unsigned char *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "create %s", path);
    cr_assert_eq(fwrite(data, 1, size, f), size);
    cr_assert_eq(fclose(f), 0);
}

static uint64_t le_value(const unsigned char *p, int bytes)
{
    uint64_t v = 0;
    while (bytes-- > 0)
        v = (v << 8) | p[bytes];
    return v;
}

/* The format's checksum, computed here independently of the library: FNV-1a 64. */
static uint64_t fnv1a64(const unsigned char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    while (n--) {
        h ^= *p++;
        h *= 0x100000001b3ull;
    }
    return h;
}

/* Stores a valid checksum after editing the bytes before it. */
static void reseal(unsigned char *data, size_t size)
{
    const uint64_t h = fnv1a64(data, size - 8);
    for (int i = 0; i < 8; i++)
        data[size - 8 + i] = (unsigned char)(h >> (8 * i));
}

/* Trains an InstanceNorm layer one step so that its running statistics are not the initial. */
static void train_once(clnorm_context *ctx, clnorm_featurenorm *layer, size_t c, unsigned seed)
{
    const problem p = {2, c, 3, 3, c, 0, 0};
    const clnorm_shape s = shape_of(&p);
    rng r = {seed};
    float *x = normal_floats(&r, total_of(&p), 2.0, 1.0);
    cl_mem xb = test_buffer(ctx, total_of(&p), x), yb = test_buffer(ctx, total_of(&p), NULL);
    CLNORM_OK_(ctx, clnorm_featurenorm_forward_instances(layer, CLNORM_TRAINING, &s, xb, yb, 0,
                                                         NULL, NULL));
    CLNORM_OK_(ctx, clnorm_finish(ctx));
    clReleaseMemObject(xb);
    clReleaseMemObject(yb);
    free(x);
}

/* A saved layer and what its file must hold. */
typedef struct file_case {
    layer_case layer;
    const char *magic;
    unsigned flags, arrays;
} file_case;

static const file_case file_cases[] = {
    {{"layernorm", CLNORM_LAYERNORM, 33, 1, 1, 1, 0}, "CLNORMLN", 3, 2},
    {{"layernorm no bias", CLNORM_LAYERNORM, 33, 1, 1, 0, 0}, "CLNORMLN", 1, 1},
    {{"layernorm no affine", CLNORM_LAYERNORM, 33, 1, 0, 0, 0}, "CLNORMLN", 0, 0},
    {{"rmsnorm", CLNORM_RMSNORM, 64, 1, 1, 0, 0}, "CLNORMRM", 1, 1},
    {{"groupnorm", CLNORM_GROUPNORM, 6, 3, 1, 1, 0}, "CLNORMGN", 3, 2},
    {{"instancenorm affine tracking", CLNORM_INSTANCENORM, 4, 4, 1, 1, 1}, "CLNORMIN", 7, 4},
    {{"instancenorm tracking", CLNORM_INSTANCENORM, 4, 4, 0, 0, 1}, "CLNORMIN", 4, 2},
};

Test(featurenorm_layer, save_and_load_round_trip_every_kind_in_the_documented_format)
{
    clnorm_context *ctx = test_context(NULL);
    char dir[512], path_a[600], path_b[600], nowhere[700];
    make_temp_dir(dir, sizeof dir);
    snprintf(path_a, sizeof path_a, "%s/a.fn", dir);
    snprintf(path_b, sizeof path_b, "%s/b.fn", dir);
    snprintf(nowhere, sizeof nowhere, "%s/no-such-folder/a.fn", dir);
    for (size_t k = 0; k < sizeof file_cases / sizeof file_cases[0]; k++) {
        const file_case *fc = &file_cases[k];
        clnorm_featurenorm *src = make_layer(ctx, &fc->layer, 1e-3);
        rng r = {300 + k};
        float *w, *b;
        randomize_params(ctx, src, &r, &w, &b);
        if (fc->layer.tracking)
            train_once(ctx, src, fc->layer.size, 400 + (unsigned)k);
        CLNORM_OK_(ctx, clnorm_featurenorm_save(src, path_a));

        size_t size;
        unsigned char *file = file_bytes(path_a, &size);
        cr_assert_eq(size, 48 + fc->arrays * fc->layer.size * 4 + 8, "%s: %zu bytes", fc->layer.label, size);
        cr_assert(memcmp(file, fc->magic, 8) == 0, "%s: magic", fc->layer.label);
        cr_assert_eq(le_value(file + 8, 4), 1, "%s: version", fc->layer.label);
        cr_assert_eq(le_value(file + 12, 4), fc->flags, "%s: flags", fc->layer.label);
        cr_assert_eq(le_value(file + 16, 8), fc->layer.size, "%s: size", fc->layer.label);
        cr_assert_eq(le_value(file + 24, 8), fc->layer.groups, "%s: groups", fc->layer.label);
        double eps, momentum;
        memcpy(&eps, file + 32, 8); /* the test host is little-endian like the file */
        memcpy(&momentum, file + 40, 8);
        cr_assert_eq(eps, 1e-3, "%s: eps", fc->layer.label);
        cr_assert_eq(momentum, fc->layer.kind == CLNORM_INSTANCENORM ? 0.25 : 0.0, "%s: momentum",
                     fc->layer.label);
        if (w) {
            float w0;
            memcpy(&w0, file + 48, 4);
            cr_assert_eq(w0, w[0], "%s: weight[0]", fc->layer.label);
        }
        cr_assert_eq(le_value(file + size - 8, 8), fnv1a64(file, size - 8), "%s: hash",
                     fc->layer.label);

        /* a layer created with another eps takes the file's; same state, same bytes again */
        clnorm_featurenorm *dst = make_layer(ctx, &fc->layer, CLNORM_DEFAULT_EPS);
        CLNORM_OK_(ctx, clnorm_featurenorm_load(dst, path_a));
        snapshot sa = take_snapshot(ctx, src), sb = take_snapshot(ctx, dst);
        assert_same_snapshot(&sa, &sb, fc->layer.label);
        CLNORM_OK_(ctx, clnorm_featurenorm_save(dst, path_b));
        size_t size_b;
        unsigned char *file_b = file_bytes(path_b, &size_b);
        cr_assert(size_b == size && memcmp(file, file_b, size) == 0, "%s: resaved bytes differ",
                  fc->layer.label);
        expect_status(ctx, clnorm_featurenorm_save(src, nowhere), CLNORM_IO_ERROR,
                      "no-such-folder", fc->layer.label);

        free_snapshot(&sa);
        free_snapshot(&sb);
        free(file);
        free(file_b);
        free(w);
        free(b);
        clnorm_featurenorm_release(src);
        clnorm_featurenorm_release(dst);
    }
    remove_tree(dir);
    clnorm_context_release(ctx);
}

/* Writes `data` as a file, loads it into the target: BAD_FILE (or `want`), a message holding
 * `word`, and the target as it was. */
static void expect_rejected(clnorm_context *ctx, clnorm_featurenorm *target, const snapshot *before,
                            const char *path, const unsigned char *data, size_t size,
                            clnorm_status want, const char *word, const char *what)
{
    put_file(path, data, size);
    expect_status(ctx, clnorm_featurenorm_load(target, path), want, word, what);
    snapshot after = take_snapshot(ctx, target);
    assert_same_snapshot(before, &after, what);
    free_snapshot(&after);
}

Test(featurenorm_layer, load_rejects_bad_files_and_leaves_the_layer_unchanged)
{
    clnorm_context *ctx = test_context(NULL);
    char dir[512], good[600], bad[600], missing[600];
    make_temp_dir(dir, sizeof dir);
    snprintf(good, sizeof good, "%s/good.fn", dir);
    snprintf(bad, sizeof bad, "%s/bad.fn", dir);
    snprintf(missing, sizeof missing, "%s/missing.fn", dir);

    /* InstanceNorm, affine and tracking, C = 4: weight at 48, bias 64, running_mean 80,
     * running_var 96, hash 112, 120 bytes */
    const file_case *fc = &file_cases[5];
    clnorm_featurenorm *src = make_layer(ctx, &fc->layer, 1e-3);
    rng r = {5};
    float *w, *b;
    randomize_params(ctx, src, &r, &w, &b);
    train_once(ctx, src, 4, 6);
    CLNORM_OK_(ctx, clnorm_featurenorm_save(src, good));
    size_t size;
    unsigned char *file = file_bytes(good, &size), *work = malloc(size + 1);
    cr_assert_eq(size, 120);

    /* the target has state of its own that must survive every rejection */
    clnorm_featurenorm *target = make_layer(ctx, &fc->layer, 1e-4);
    free(w); /* the source's host copies: not needed past its save */
    free(b);
    randomize_params(ctx, target, &r, &w, &b);
    train_once(ctx, target, 4, 7);
    train_once(ctx, target, 4, 8);
    snapshot before = take_snapshot(ctx, target);

    expect_rejected(ctx, target, &before, bad, file, size - 1, CLNORM_BAD_FILE, "truncated",
                    "one byte short");
    expect_rejected(ctx, target, &before, bad, file, 20, CLNORM_BAD_FILE, "truncated",
                    "shorter than a header");
    memcpy(work, file, size);
    work[size] = 0;
    expect_rejected(ctx, target, &before, bad, work, size + 1, CLNORM_BAD_FILE, "padded",
                    "one byte too many");

    struct edit {
        size_t offset;
        const void *bytes;
        size_t count;
        int reseal;
        const char *word, *what;
    };
    const float nan_value = NAN, negative = -1.0f, inf_value = INFINITY;
    const double bad_eps = -1.0, bad_momentum = 1.5;
    const uint32_t version2 = 2, flags3 = 3;
    const uint64_t size5 = 5;
    const unsigned char flip = 0x5a;
    const struct edit edits[] = {
        {0, "XLNORMIN", 8, 1, "magic", "wrong magic"},
        {0, "CLNORMGN", 8, 1, "groupnorm", "another kind's magic"},
        {8, &version2, 4, 1, "version", "version 2"},
        {12, &flags3, 4, 1, "flags", "other flags"},
        {16, &size5, 8, 1, "size", "C = 5 in the header"},
        {24, &size5, 8, 1, "groups", "5 groups in the header"},
        {32, &bad_eps, 8, 1, "eps", "negative eps"},
        {40, &bad_momentum, 8, 1, "momentum", "momentum 1.5"},
        {48 + 4, &nan_value, 4, 1, "weight[1]", "NaN in weight"},
        {64 + 8, &inf_value, 4, 1, "bias[2]", "infinity in bias"},
        {80, &nan_value, 4, 1, "running_mean[0]", "NaN in running_mean"},
        {96 + 12, &negative, 4, 1, "running_var[3]", "negative running_var"},
        {48 + 2, &flip, 1, 0, "hash", "flipped byte, hash left as it was"},
        {112, &flip, 1, 0, "hash", "flipped byte in the hash"},
    };
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        memcpy(work, file, size);
        if (edits[i].count == 1)
            work[edits[i].offset] ^= flip;
        else
            memcpy(work + edits[i].offset, edits[i].bytes, edits[i].count);
        if (edits[i].reseal)
            reseal(work, size);
        expect_rejected(ctx, target, &before, bad, work, size, CLNORM_BAD_FILE, edits[i].word,
                        edits[i].what);
    }

    /* files of other layers: another size, other flags, another kind with the same size */
    const file_case other[] = {
        {{"C = 5", CLNORM_INSTANCENORM, 5, 5, 1, 1, 1}, "CLNORMIN", 7, 4},
        {{"no affine", CLNORM_INSTANCENORM, 4, 4, 0, 0, 1}, "CLNORMIN", 4, 2},
        {{"groupnorm 4/4", CLNORM_GROUPNORM, 4, 4, 1, 1, 0}, "CLNORMGN", 3, 2},
    };
    const char *const words[] = {"size", "flags", "groupnorm"};
    for (size_t i = 0; i < 3; i++) {
        clnorm_featurenorm *o = make_layer(ctx, &other[i].layer, 1e-3);
        CLNORM_OK_(ctx, clnorm_featurenorm_save(o, bad));
        size_t n;
        unsigned char *data = file_bytes(bad, &n);
        expect_rejected(ctx, target, &before, bad, data, n, CLNORM_BAD_FILE, words[i],
                        other[i].layer.label);
        free(data);
        clnorm_featurenorm_release(o);
    }
    expect_status(ctx, clnorm_featurenorm_load(target, missing), CLNORM_IO_ERROR, "missing.fn",
                  "missing file");

    /* an RMSNorm file into a LayerNorm layer of the same D and flags */
    clnorm_featurenorm *rms = new_rmsnorm(ctx, 8, 1), *ln = new_layernorm(ctx, 8, 1, 0);
    CLNORM_OK_(ctx, clnorm_featurenorm_save(rms, bad));
    snapshot ln_before = take_snapshot(ctx, ln);
    size_t n;
    unsigned char *rms_file = file_bytes(bad, &n);
    expect_rejected(ctx, ln, &ln_before, bad, rms_file, n, CLNORM_BAD_FILE, "rmsnorm",
                    "rmsnorm file into layernorm");

    /* the good file still loads, with its eps */
    CLNORM_OK_(ctx, clnorm_featurenorm_load(target, good));
    cr_assert_eq(info_of(ctx, target).eps, 1e-3);

    free_snapshot(&before);
    free_snapshot(&ln_before);
    free(rms_file);
    free(file);
    free(work);
    free(w);
    free(b);
    clnorm_featurenorm_release(src);
    clnorm_featurenorm_release(target);
    clnorm_featurenorm_release(rms);
    clnorm_featurenorm_release(ln);
    remove_tree(dir);
    clnorm_context_release(ctx);
}

/* ---- options --------------------------------------------------------------------------------- */

/* `layer` is where the create wrote its *out (read after the call: argument order is unspecified). */
static void expect_bad_create(clnorm_context *ctx, clnorm_status got,
                              clnorm_featurenorm *const *layer, const char *word, const char *what)
{
    expect_status(ctx, got, CLNORM_INVALID_ARGUMENT, word, what);
    cr_assert_null(*layer, "%s: *out is not NULL", what);
}

Test(featurenorm_layer, bad_options_are_rejected_and_defaults_are_pytorchs)
{
    clnorm_context *ctx = test_context(NULL);
    clnorm_featurenorm *layer = (clnorm_featurenorm *)(uintptr_t)1;
    clnorm_layernorm_options lo;
    clnorm_layernorm_default_options(&lo, 0);
    cr_assert(lo.eps == 1e-5 && lo.elementwise_affine == 1 && lo.bias == 1);
    expect_bad_create(ctx, clnorm_featurenorm_create_layernorm(ctx, &lo, &layer), &layer,
                      "normalized_size", "layernorm D = 0");
    clnorm_layernorm_default_options(&lo, 8);
    const double bad_eps[] = {-1.0, NAN, INFINITY};
    for (size_t i = 0; i < 3; i++) {
        lo.eps = bad_eps[i];
        layer = (clnorm_featurenorm *)(uintptr_t)1;
        expect_bad_create(ctx, clnorm_featurenorm_create_layernorm(ctx, &lo, &layer), &layer,
                          "eps", "layernorm bad eps");
    }
    expect_bad_create(ctx, clnorm_featurenorm_create_layernorm(ctx, NULL, &layer), &layer,
                      "options", "NULL options");
    clnorm_layernorm_default_options(&lo, 8);
    cr_assert_eq(clnorm_featurenorm_create_layernorm(ctx, &lo, NULL), CLNORM_INVALID_ARGUMENT);
    cr_assert_eq(clnorm_featurenorm_create_layernorm(NULL, &lo, &layer), CLNORM_INVALID_ARGUMENT);
    cr_assert_null(layer);

    clnorm_rmsnorm_options ro;
    clnorm_rmsnorm_default_options(&ro, 0);
    cr_assert(ro.eps == CLNORM_RMS_DEFAULT_EPS && ro.elementwise_affine == 1);
    expect_bad_create(ctx, clnorm_featurenorm_create_rmsnorm(ctx, &ro, &layer), &layer,
                      "normalized_size", "rmsnorm D = 0");

    clnorm_groupnorm_options go;
    clnorm_groupnorm_default_options(&go, 4, 6);
    cr_assert(go.eps == 1e-5 && go.affine == 1);
    expect_bad_create(ctx, clnorm_featurenorm_create_groupnorm(ctx, &go, &layer), &layer,
                      "divisible", "groupnorm 6 channels in 4 groups");
    go.num_groups = 0;
    expect_bad_create(ctx, clnorm_featurenorm_create_groupnorm(ctx, &go, &layer), &layer,
                      "num_groups", "groupnorm 0 groups");
    clnorm_groupnorm_default_options(&go, 2, 0);
    expect_bad_create(ctx, clnorm_featurenorm_create_groupnorm(ctx, &go, &layer), &layer,
                      "num_channels", "groupnorm 0 channels");
    clnorm_groupnorm_default_options(&go, 2, 6);
    go.eps = -1e-5;
    expect_bad_create(ctx, clnorm_featurenorm_create_groupnorm(ctx, &go, &layer), &layer, "eps",
                      "groupnorm negative eps");

    clnorm_instancenorm_options io;
    clnorm_instancenorm_default_options(&io, 0);
    cr_assert(io.eps == 1e-5 && io.momentum == 0.1 && io.affine == 0 &&
              io.track_running_stats == 0);
    expect_bad_create(ctx, clnorm_featurenorm_create_instancenorm(ctx, &io, &layer), &layer,
                      "num_features", "instancenorm C = 0");
    clnorm_instancenorm_default_options(&io, 3);
    const double bad_momentum[] = {1.5, -0.1, NAN};
    for (size_t i = 0; i < 3; i++) {
        io.momentum = bad_momentum[i];
        expect_bad_create(ctx, clnorm_featurenorm_create_instancenorm(ctx, &io, &layer), &layer,
                          "momentum", "instancenorm bad momentum");
    }

    /* eps 0 is allowed; the buffers start as PyTorch's: weight 1, bias 0, gradients 0,
     * running_mean 0, running_var 1 */
    clnorm_instancenorm_default_options(&io, 3);
    io.eps = 0.0;
    io.affine = 1;
    io.track_running_stats = 1;
    CLNORM_OK_(ctx, clnorm_featurenorm_create_instancenorm(ctx, &io, &layer));
    cr_assert_str_eq(clnorm_last_error(ctx), "");
    const clnorm_featurenorm_buffers bufs = buffers_of(ctx, layer);
    const cl_mem all[] = {bufs.weight, bufs.bias, bufs.dweight, bufs.dbias, bufs.running_mean,
                          bufs.running_var};
    const float init[] = {1, 0, 0, 0, 0, 1};
    for (size_t i = 0; i < 6; i++) {
        cr_assert_not_null(all[i]);
        float *v = read_floats(ctx, all[i], 3);
        for (size_t c = 0; c < 3; c++)
            cr_assert_eq(v[c], init[i], "buffer %zu starts at %g", i, (double)v[c]);
        free(v);
    }
    cr_assert_eq(info_of(ctx, layer).eps, 0.0);
    clnorm_featurenorm_release(layer);
    clnorm_context_release(ctx);
}

/* The batch-norm layer object: mode contract, training and evaluation forward against a float64
 * reference, running statistics (momentum and cumulative average), backward in both modes,
 * save/load and its validation, folding into scale/shift and into a linear layer, options. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support.h"

/* ---- helpers --------------------------------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static double uniform(void) /* [0, 1) */
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

static clnorm_shape shape_nchw(size_t n, size_t c, size_t h, size_t w)
{
    clnorm_shape s;
    memset(&s, 0, sizeof s);
    s.n = n;
    s.c = c;
    s.spatial_rank = 2;
    s.spatial[0] = h;
    s.spatial[1] = w;
    s.layout = CLNORM_CHANNELS_FIRST;
    return s;
}

static clnorm_shape shape_nc(size_t n, size_t c)
{
    clnorm_shape s;
    memset(&s, 0, sizeof s);
    s.n = n;
    s.c = c;
    s.layout = CLNORM_CHANNELS_FIRST;
    return s;
}

/* Channels-first data: channel c is offset[c] + spread[c] * U(-1, 1). */
static float *random_tensor(size_t n, size_t c, size_t spatial, double shift)
{
    static const double offset[] = {1.5, -2.0, 0.25, 4.0, -0.5};
    static const double spread[] = {3.0, 0.5, 1.0, 2.0, 0.75};
    float *x = malloc(n * c * spatial * sizeof(float));
    cr_assert_not_null(x);
    for (size_t i = 0; i < n; i++)
        for (size_t ch = 0; ch < c; ch++)
            for (size_t s = 0; s < spatial; s++)
                x[(i * c + ch) * spatial + s] =
                    (float)(offset[ch % 5] + shift + spread[ch % 5] * (2.0 * uniform() - 1.0));
    return x;
}

static float *random_vector(size_t count, double lo, double hi)
{
    float *v = malloc((count ? count : 1) * sizeof(float));
    cr_assert_not_null(v);
    for (size_t i = 0; i < count; i++)
        v[i] = (float)(lo + (hi - lo) * uniform());
    return v;
}

/* Per-channel batch statistics in float64: mean, biased variance, mean |x|. */
typedef struct ref_stats {
    double mean[8], var[8], mean_abs[8];
} ref_stats;

static void batch_stats(const float *x, size_t n, size_t c, size_t spatial, ref_stats *r)
{
    cr_assert_leq(c, 8);
    const double rows = (double)(n * spatial);
    for (size_t ch = 0; ch < c; ch++) {
        double sum = 0.0, sum_abs = 0.0, m2 = 0.0;
        for (size_t i = 0; i < n; i++)
            for (size_t s = 0; s < spatial; s++) {
                double v = x[(i * c + ch) * spatial + s];
                sum += v;
                sum_abs += fabs(v);
            }
        const double mean = sum / rows;
        for (size_t i = 0; i < n; i++)
            for (size_t s = 0; s < spatial; s++) {
                double d = x[(i * c + ch) * spatial + s] - mean;
                m2 += d * d;
            }
        r->mean[ch] = mean;
        r->var[ch] = m2 / rows;
        r->mean_abs[ch] = sum_abs / rows;
    }
}

static clnorm_batchnorm *new_layer(clnorm_context *ctx, size_t c, int affine, int tracking,
                                   int cumulative)
{
    clnorm_batchnorm_options o;
    clnorm_batchnorm_default_options(&o, c);
    o.affine = affine;
    o.track_running_stats = tracking;
    o.cumulative_average = cumulative;
    clnorm_batchnorm *bn = NULL;
    CLNORM_OK_(ctx, clnorm_batchnorm_create(ctx, &o, &bn));
    cr_assert_not_null(bn);
    return bn;
}

static void write_buffer(clnorm_context *ctx, cl_mem buf, size_t count, const float *data)
{
    CL_OK(clEnqueueWriteBuffer(clnorm_context_queue(ctx), buf, CL_TRUE, 0, count * sizeof(float),
                               data, 0, NULL, NULL));
}

/* Sets non-trivial gamma and beta, as an optimizer would. */
static void set_affine(clnorm_context *ctx, clnorm_batchnorm *bn, size_t c, float *gamma,
                       float *beta)
{
    clnorm_batchnorm_buffers b;
    CLNORM_OK_(ctx, clnorm_batchnorm_get_buffers(bn, &b));
    for (size_t i = 0; i < c; i++) {
        gamma[i] = (float)(0.5 + 1.5 * uniform()) * (i % 2 ? -1.0f : 1.0f);
        beta[i] = (float)(2.0 * uniform() - 1.0);
    }
    write_buffer(ctx, b.gamma, c, gamma);
    write_buffer(ctx, b.beta, c, beta);
}

/* One training forward of a fresh random batch; returns its float64 statistics. */
static void train_step(clnorm_context *ctx, clnorm_batchnorm *bn, const clnorm_shape *shape,
                       double shift, ref_stats *stats)
{
    const size_t spatial = shape->spatial_rank ? shape->spatial[0] * shape->spatial[1] : 1;
    const size_t total = shape->n * shape->c * spatial;
    float *x = random_tensor(shape->n, shape->c, spatial, shift);
    cl_mem xb = test_buffer(ctx, total, x), yb = test_buffer(ctx, total, NULL);
    CLNORM_OK_(ctx, clnorm_batchnorm_forward(bn, CLNORM_TRAINING, shape, CLNORM_ACTIVATION_NONE,
                                             xb, NULL, yb, 0, NULL, NULL));
    CLNORM_OK_(ctx, clnorm_finish(ctx));
    if (stats)
        batch_stats(x, shape->n, shape->c, spatial, stats);
    clReleaseMemObject(xb);
    clReleaseMemObject(yb);
    free(x);
}

/* All four parameter buffers (C floats each, absent ones left as NaN) and num_batches_tracked. */
typedef struct snapshot {
    float v[4][8];
    int64_t tracked;
} snapshot;

static void take_snapshot(clnorm_context *ctx, clnorm_batchnorm *bn, size_t c, snapshot *s)
{
    clnorm_batchnorm_buffers b;
    CLNORM_OK_(ctx, clnorm_batchnorm_get_buffers(bn, &b));
    const cl_mem bufs[4] = {b.gamma, b.beta, b.running_mean, b.running_var};
    for (size_t i = 0; i < 4; i++) {
        for (size_t ch = 0; ch < 8; ch++)
            s->v[i][ch] = NAN;
        if (bufs[i])
            test_read(ctx, bufs[i], c, s->v[i]);
    }
    s->tracked = clnorm_batchnorm_num_batches_tracked(bn);
}

static void assert_same_snapshot(const snapshot *a, const snapshot *b, size_t c, const char *what)
{
    static const char *const names[] = {"gamma", "beta", "running_mean", "running_var"};
    for (size_t i = 0; i < 4; i++)
        cr_assert(memcmp(a->v[i], b->v[i], c * sizeof(float)) == 0, "%s: %s differs", what,
                  names[i]);
    cr_assert_eq(a->tracked, b->tracked, "%s: num_batches_tracked %lld vs %lld", what,
                 (long long)a->tracked, (long long)b->tracked);
}

static unsigned char *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *data = malloc((size_t)n + 1);
    cr_assert_eq(fread(data, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *size = (size_t)n;
    return data;
}

static void write_file(const char *path, const unsigned char *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "create %s", path);
    cr_assert_eq(fwrite(data, 1, size, f), size);
    cr_assert_eq(fclose(f), 0);
}

/* The format's hash, written independently of the library: FNV-1a 64 with seed 0. */
static uint64_t fnv1a(const unsigned char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static uint64_t get_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static void put_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void rehash(unsigned char *data, size_t size)
{
    put_le64(data + size - 8, fnv1a(data, size - 8));
}

/* ---- mode contract ------------------------------------------------------------------------------ */

Test(batchnorm_layer, mode_is_explicit_and_a_mismatch_enqueues_nothing)
{
    clnorm_context *ctx = test_context(NULL);
    const size_t C = 3, total = 2 * C * 4;
    clnorm_batchnorm *bn = new_layer(ctx, C, 1, 1, 0);
    cr_assert_eq(clnorm_batchnorm_mode(bn), CLNORM_TRAINING);
    cr_assert_eq(clnorm_batchnorm_num_batches_tracked(bn), 0);

    clnorm_shape shape = shape_nchw(2, C, 2, 2);
    float *x = random_tensor(2, C, 4, 0.0), sentinel[24], back[24];
    for (size_t i = 0; i < total; i++)
        sentinel[i] = 12345.0f + (float)i;
    cl_mem xb = test_buffer(ctx, total, x), yb = test_buffer(ctx, total, sentinel);
    cl_event ev = (cl_event)(uintptr_t)0x1; /* garbage: a failed call must set it to NULL */

    clnorm_status s = clnorm_batchnorm_forward(bn, CLNORM_EVALUATION, &shape,
                                               CLNORM_ACTIVATION_NONE, xb, NULL, yb, 0, NULL, &ev);
    cr_assert_eq(s, CLNORM_WRONG_MODE, "got %s", clnorm_status_name(s));
    cr_assert_null(ev);
    const char *msg = clnorm_last_error(ctx);
    cr_assert(strstr(msg, "CLNORM_TRAINING") && strstr(msg, "CLNORM_EVALUATION"),
              "message names both modes: %s", msg);
    CLNORM_OK_(ctx, clnorm_finish(ctx));
    test_read(ctx, yb, total, back);
    cr_assert(memcmp(back, sentinel, sizeof back) == 0, "y was written despite WRONG_MODE");
    cr_assert_eq(clnorm_batchnorm_num_batches_tracked(bn), 0);

    /* invalid enums: nothing changes */
    cr_assert_eq(clnorm_batchnorm_set_mode(bn, (clnorm_mode)7), CLNORM_INVALID_ARGUMENT);
    cr_assert(strstr(clnorm_last_error(ctx), "mode"), "%s", clnorm_last_error(ctx));
    cr_assert_eq(clnorm_batchnorm_mode(bn), CLNORM_TRAINING);
    cr_assert_eq(clnorm_batchnorm_forward(bn, (clnorm_mode)-1, &shape, CLNORM_ACTIVATION_NONE, xb,
                                          NULL, yb, 0, NULL, NULL),
                 CLNORM_INVALID_ARGUMENT);

    /* in training, expecting evaluation fails the other way round too once switched */
    CLNORM_OK_(ctx, clnorm_batchnorm_set_mode(bn, CLNORM_EVALUATION));
    cr_assert_eq(clnorm_batchnorm_mode(bn), CLNORM_EVALUATION);
    cr_assert_str_eq(clnorm_last_error(ctx), "");
    CLNORM_OK_(ctx, clnorm_batchnorm_forward(bn, CLNORM_EVALUATION, &shape,
                                             CLNORM_ACTIVATION_NONE, xb, NULL, yb, 0, NULL, &ev));
    cr_assert_not_null(ev);
    CL_OK(clWaitForEvents(1, &ev));
    clReleaseEvent(ev);
    test_read(ctx, yb, total, back);
    cr_assert(memcmp(back, sentinel, sizeof back) != 0, "the evaluation forward wrote y");
    cr_assert_eq(clnorm_batchnorm_forward(bn, CLNORM_TRAINING, &shape, CLNORM_ACTIVATION_NONE,
                                          xb, NULL, yb, 0, NULL, NULL),
                 CLNORM_WRONG_MODE);
    cr_assert_eq(clnorm_batchnorm_num_batches_tracked(bn), 0, "evaluation does not count");

    /* a shape with other channels than the layer's is refused */
    clnorm_shape wrong = shape_nchw(2, C - 1, 2, 2);
    cr_assert_eq(clnorm_batchnorm_forward(bn, CLNORM_EVALUATION, &wrong, CLNORM_ACTIVATION_NONE,
                                          xb, NULL, yb, 0, NULL, NULL),
                 CLNORM_INVALID_SHAPE);

    clReleaseMemObject(xb);
    clReleaseMemObject(yb);
    free(x);
    clnorm_batchnorm_release(bn);
    clnorm_batchnorm_release(NULL);
    clnorm_context_release(ctx);
}

/* ---- training forward ------------------------------------------------------------------------------ */

/* |y - ref| allowed for a normalized value: the statistics' rounding (a reduction of `rows`
 * values) scaled by gamma * invstd, plus a few ulp of the result. */
static double y_tolerance(double rows, double mean_abs_x, double gamma_invstd, double ref)
{
    return fabs(gamma_invstd) * rows * FLT_EPSILON * mean_abs_x + 8 * FLT_EPSILON * fabs(ref) +
           1e-6;
}

Test(batchnorm_layer, training_forward_and_running_statistics_follow_pytorch)
{
    clnorm_context *ctx = test_context(NULL);
    const size_t N = 4, C = 3, HW = 25, total = N * C * HW, rows = N * HW;
    const double eps = 1e-5, m = 0.1;
    clnorm_batchnorm *bn = new_layer(ctx, C, 1, 1, 0);
    float gamma[3], beta[3];
    set_affine(ctx, bn, C, gamma, beta);
    clnorm_batchnorm_buffers b;
    CLNORM_OK_(ctx, clnorm_batchnorm_get_buffers(bn, &b));
    clnorm_shape shape = shape_nchw(N, C, 5, 5);

    double rm[3] = {0, 0, 0}, rv[3] = {1, 1, 1};
    for (int step = 1; step <= 3; step++) {
        float *x = random_tensor(N, C, HW, 0.3 * step), *y = malloc(total * sizeof(float));
        cl_mem xb = test_buffer(ctx, total, x), yb = test_buffer(ctx, total, NULL);
        CLNORM_OK_(ctx, clnorm_batchnorm_forward(bn, CLNORM_TRAINING, &shape,
                                                 CLNORM_ACTIVATION_NONE, xb, NULL, yb, 0, NULL,
                                                 NULL));
        cr_assert_eq(clnorm_batchnorm_num_batches_tracked(bn), step);
        test_read(ctx, yb, total, y);
        ref_stats r;
        batch_stats(x, N, C, HW, &r);
        double max_err = 0.0;
        for (size_t ch = 0; ch < C; ch++) {
            const double invstd = 1.0 / sqrt(r.var[ch] + eps);
            for (size_t i = 0; i < N; i++)
                for (size_t s = 0; s < HW; s++) {
                    const size_t k = (i * C + ch) * HW + s;
                    const double ref = gamma[ch] * (x[k] - r.mean[ch]) * invstd + beta[ch];
                    const double tol = y_tolerance((double)rows, r.mean_abs[ch],
                                                   gamma[ch] * invstd, ref);
                    const double err = fabs(y[k] - ref);
                    max_err = fmax(max_err, err);
                    cr_assert(err <= tol, "step %d y[%zu] = %.9g, reference %.9g (tol %.3g)", step,
                              k, (double)y[k], ref, tol);
                }
            /* PyTorch's recurrence: unbiased variance into the running variance */
            rm[ch] = (1 - m) * rm[ch] + m * r.mean[ch];
            rv[ch] = (1 - m) * rv[ch] + m * r.var[ch] * rows / (rows - 1);
        }
        cr_assert_lt(max_err, 1e-3);

        float got_rm[3], got_rv[3], got_sm[3], got_si[3];
        test_read(ctx, b.running_mean, C, got_rm);
        test_read(ctx, b.running_var, C, got_rv);
        test_read(ctx, b.save_mean, C, got_sm);
        test_read(ctx, b.save_invstd, C, got_si);
        for (size_t ch = 0; ch < C; ch++) {
            const double tol_m = rows * FLT_EPSILON * r.mean_abs[ch] + 4 * FLT_EPSILON;
            const double tol_v = rows * FLT_EPSILON * r.mean_abs[ch] * r.mean_abs[ch] +
                                 8 * FLT_EPSILON * rv[ch];
            cr_assert(fabs(got_rm[ch] - rm[ch]) <= tol_m, "step %d running_mean[%zu] %.9g vs %.9g",
                      step, ch, (double)got_rm[ch], rm[ch]);
            cr_assert(fabs(got_rv[ch] - rv[ch]) <= tol_v, "step %d running_var[%zu] %.9g vs %.9g",
                      step, ch, (double)got_rv[ch], rv[ch]);
            cr_assert(fabs(got_sm[ch] - r.mean[ch]) <= tol_m, "save_mean[%zu]", ch);
            const double invstd = 1.0 / sqrt(r.var[ch] + eps);
            cr_assert(fabs(got_si[ch] - invstd) <= rows * FLT_EPSILON * invstd, "save_invstd[%zu]",
                      ch);
        }
        clReleaseMemObject(xb);
        clReleaseMemObject(yb);
        free(x);
        free(y);
    }

    /* N == 0 is a no-op that does not count as a batch */
    clnorm_shape empty = shape_nchw(0, C, 5, 5);
    cl_mem one = test_buffer(ctx, 1, NULL);
    cl_event ev = NULL;
    CLNORM_OK_(ctx, clnorm_batchnorm_forward(bn, CLNORM_TRAINING, &empty, CLNORM_ACTIVATION_NONE,
                                             one, NULL, one, 0, NULL, &ev));
    cr_assert_not_null(ev);
    CL_OK(clWaitForEvents(1, &ev));
    clReleaseEvent(ev);
    cr_assert_eq(clnorm_batchnorm_num_batches_tracked(bn), 3);

    /* a failing training forward (one value per channel) changes nothing */
    clnorm_shape single = shape_nc(1, C);
    cl_mem small = test_buffer(ctx, C, NULL);
    cr_assert_eq(clnorm_batchnorm_forward(bn, CLNORM_TRAINING, &single, CLNORM_ACTIVATION_NONE,
                                          small, NULL, small, 0, NULL, NULL),
                 CLNORM_INVALID_SHAPE);
    cr_assert_eq(clnorm_batchnorm_num_batches_tracked(bn), 3);
    clReleaseMemObject(one);
    clReleaseMemObject(small);
    clnorm_batchnorm_release(bn);
    clnorm_context_release(ctx);
}

Test(batchnorm_layer, cumulative_average_is_the_mean_over_batches)
{
    clnorm_context *ctx = test_context(NULL);
    const size_t N = 4, C = 3, HW = 25, rows = N * HW;
    clnorm_batchnorm *bn = new_layer(ctx, C, 1, 1, 1);
    clnorm_shape shape = shape_nchw(N, C, 5, 5);
    double sum_mean[3] = {0}, sum_var[3] = {0}, max_abs[3] = {0};
    const int steps = 4;
    for (int step = 0; step < steps; step++) {
        ref_stats r;
        train_step(ctx, bn, &shape, 1.0 * step - 1.5, &r);
        for (size_t ch = 0; ch < C; ch++) {
            sum_mean[ch] += r.mean[ch];
            sum_var[ch] += r.var[ch] * rows / (rows - 1.0);
            max_abs[ch] = fmax(max_abs[ch], r.mean_abs[ch]);
        }
    }
    cr_assert_eq(clnorm_batchnorm_num_batches_tracked(bn), steps);
    clnorm_batchnorm_buffers b;
    CLNORM_OK_(ctx, clnorm_batchnorm_get_buffers(bn, &b));
    float rm[3], rv[3];
    test_read(ctx, b.running_mean, C, rm);
    test_read(ctx, b.running_var, C, rv);
    for (size_t ch = 0; ch < C; ch++) {
        const double want_m = sum_mean[ch] / steps, want_v = sum_var[ch] / steps;
        const double tol_m = rows * FLT_EPSILON * max_abs[ch] + 8 * FLT_EPSILON;
        const double tol_v = rows * FLT_EPSILON * max_abs[ch] * max_abs[ch];
        cr_assert(fabs(rm[ch] - want_m) <= tol_m, "running_mean[%zu] = %.9g, mean of batch means %.9g",
                  ch, (double)rm[ch], want_m);
        cr_assert(fabs(rv[ch] - want_v) <= tol_v, "running_var[%zu] = %.9g, mean of batch vars %.9g",
                  ch, (double)rv[ch], want_v);
    }
    clnorm_batchnorm_release(bn);
    clnorm_context_release(ctx);
}

/* ---- evaluation --------------------------------------------------------------------------------- */

Test(batchnorm_layer, evaluation_output_of_an_example_does_not_depend_on_the_batch)
{
    clnorm_context *ctx = test_context(NULL);
    const size_t N = 4, C = 3, HW = 25, total = N * C * HW, per = C * HW;
    const double eps = 1e-5;
    clnorm_batchnorm *bn = new_layer(ctx, C, 1, 1, 0);
    float gamma[3], beta[3];
    set_affine(ctx, bn, C, gamma, beta);
    clnorm_shape shape = shape_nchw(N, C, 5, 5);
    for (int step = 0; step < 3; step++)
        train_step(ctx, bn, &shape, 0.5 * step, NULL);
    CLNORM_OK_(ctx, clnorm_batchnorm_set_mode(bn, CLNORM_EVALUATION));
    clnorm_batchnorm_buffers b;
    CLNORM_OK_(ctx, clnorm_batchnorm_get_buffers(bn, &b));
    float rm[3], rv[3], sm_before[3], sm_after[3];
    test_read(ctx, b.running_mean, C, rm);
    test_read(ctx, b.running_var, C, rv);
    test_read(ctx, b.save_mean, C, sm_before);

    float *x = random_tensor(N, C, HW, 3.0); /* far from the training data: batch stats differ */
    float *y = malloc(total * sizeof(float)), *y1 = malloc(per * sizeof(float));
    cl_mem xb = test_buffer(ctx, total, x), yb = test_buffer(ctx, total, NULL);
    CLNORM_OK_(ctx, clnorm_batchnorm_forward(bn, CLNORM_EVALUATION, &shape,
                                             CLNORM_ACTIVATION_NONE, xb, NULL, yb, 0, NULL, NULL));
    test_read(ctx, yb, total, y);
    clnorm_shape one = shape_nchw(1, C, 5, 5);
    for (size_t i = 0; i < N; i++) {
        cl_mem x1 = test_buffer(ctx, per, x + i * per), o1 = test_buffer(ctx, per, NULL);
        CLNORM_OK_(ctx, clnorm_batchnorm_forward(bn, CLNORM_EVALUATION, &one,
                                                 CLNORM_ACTIVATION_NONE, x1, NULL, o1, 0, NULL,
                                                 NULL));
        test_read(ctx, o1, per, y1);
        for (size_t k = 0; k < per; k++)
            cr_assert(y1[k] == y[i * per + k], "example %zu value %zu: alone %.9g, in batch %.9g",
                      i, k, (double)y1[k], (double)y[i * per + k]);
        clReleaseMemObject(x1);
        clReleaseMemObject(o1);
    }
    for (size_t i = 0; i < N; i++)
        for (size_t ch = 0; ch < C; ch++) {
            const double a = gamma[ch] / sqrt((double)rv[ch] + eps);
            const double sh = beta[ch] - rm[ch] * a;
            for (size_t s = 0; s < HW; s++) {
                const size_t k = (i * C + ch) * HW + s;
                const double ref = a * x[k] + sh;
                const double tol = 8 * FLT_EPSILON * (fabs(a * x[k]) + fabs(sh)) + 1e-7;
                cr_assert(fabs(y[k] - ref) <= tol, "y[%zu] = %.9g, reference %.9g", k,
                          (double)y[k], ref);
            }
        }
    /* evaluation neither counts nor touches the statistics */
    cr_assert_eq(clnorm_batchnorm_num_batches_tracked(bn), 3);
    float rm_after[3];
    test_read(ctx, b.running_mean, C, rm_after);
    test_read(ctx, b.save_mean, C, sm_after);
    cr_assert(memcmp(rm, rm_after, sizeof rm) == 0);
    cr_assert(memcmp(sm_before, sm_after, sizeof sm_after) == 0);

    clReleaseMemObject(xb);
    clReleaseMemObject(yb);
    free(x);
    free(y);
    free(y1);
    clnorm_batchnorm_release(bn);
    clnorm_context_release(ctx);
}

Test(batchnorm_layer, without_running_statistics_evaluation_uses_the_batch)
{
    clnorm_context *ctx = test_context(NULL);
    const size_t N = 4, C = 3, HW = 25, total = N * C * HW, rows = N * HW;
    const double eps = 1e-5;
    clnorm_batchnorm *bn = new_layer(ctx, C, 0, 0, 0);
    clnorm_batchnorm_buffers b;
    CLNORM_OK_(ctx, clnorm_batchnorm_get_buffers(bn, &b));
    cr_assert(!b.gamma && !b.beta && !b.dgamma && !b.dbeta && !b.running_mean && !b.running_var);
    cr_assert(b.save_mean && b.save_invstd);
    clnorm_shape shape = shape_nchw(N, C, 5, 5);
    train_step(ctx, bn, &shape, 0.0, NULL);
    cr_assert_eq(clnorm_batchnorm_num_batches_tracked(bn), 0, "nothing is tracked");

    CLNORM_OK_(ctx, clnorm_batchnorm_set_mode(bn, CLNORM_EVALUATION));
    float *x = random_tensor(N, C, HW, 2.0), *y = malloc(total * sizeof(float));
    cl_mem xb = test_buffer(ctx, total, x), yb = test_buffer(ctx, total, NULL);
    CLNORM_OK_(ctx, clnorm_batchnorm_forward(bn, CLNORM_EVALUATION, &shape,
                                             CLNORM_ACTIVATION_NONE, xb, NULL, yb, 0, NULL, NULL));
    test_read(ctx, yb, total, y);
    ref_stats r;
    batch_stats(x, N, C, HW, &r);
    for (size_t k = 0; k < total; k++) {
        const size_t ch = (k / HW) % C;
        const double invstd = 1.0 / sqrt(r.var[ch] + eps);
        const double ref = (x[k] - r.mean[ch]) * invstd;
        cr_assert(fabs(y[k] - ref) <= y_tolerance((double)rows, r.mean_abs[ch], invstd, ref),
                  "y[%zu] = %.9g, reference %.9g", k, (double)y[k], ref);
    }
    float scale[3], shift[3];
    cr_assert_eq(clnorm_batchnorm_fold(bn, scale, shift), CLNORM_INVALID_ARGUMENT);
    cl_mem w = test_buffer(ctx, C * 2, NULL), bias = test_buffer(ctx, C, NULL);
    cr_assert_eq(clnorm_batchnorm_fold_linear(bn, w, bias, 2, 0, NULL, NULL),
                 CLNORM_INVALID_ARGUMENT);
    clReleaseMemObject(w);
    clReleaseMemObject(bias);
    clReleaseMemObject(xb);
    clReleaseMemObject(yb);
    free(x);
    free(y);
    clnorm_batchnorm_release(bn);
    clnorm_context_release(ctx);
}

/* ---- backward ------------------------------------------------------------------------------------ */

typedef struct grad_case {
    size_t n, c, hw;
    float *x, *dy, *dx, dgamma[8], dbeta[8];
} grad_case;

/* Forward (in the layer's mode) then backward on random x and dy; results read back. */
static void run_backward(clnorm_context *ctx, clnorm_batchnorm *bn, clnorm_mode mode,
                         grad_case *g)
{
    const size_t total = g->n * g->c * g->hw;
    clnorm_shape shape = shape_nchw(g->n, g->c, 5, 5);
    g->x = random_tensor(g->n, g->c, g->hw, 0.7);
    g->dy = random_vector(total, -1.0, 1.0);
    g->dx = malloc(total * sizeof(float));
    cl_mem xb = test_buffer(ctx, total, g->x), yb = test_buffer(ctx, total, NULL);
    cl_mem dyb = test_buffer(ctx, total, g->dy), dxb = test_buffer(ctx, total, NULL);
    CLNORM_OK_(ctx, clnorm_batchnorm_forward(bn, mode, &shape, CLNORM_ACTIVATION_NONE, xb, NULL,
                                             yb, 0, NULL, NULL));
    cl_event ev = NULL;
    CLNORM_OK_(ctx, clnorm_batchnorm_backward(bn, &shape, CLNORM_ACTIVATION_NONE, xb, yb, dyb,
                                              dxb, NULL, 0, NULL, &ev));
    cr_assert_not_null(ev);
    CL_OK(clWaitForEvents(1, &ev));
    clReleaseEvent(ev);
    test_read(ctx, dxb, total, g->dx);
    clnorm_batchnorm_buffers b;
    CLNORM_OK_(ctx, clnorm_batchnorm_get_buffers(bn, &b));
    test_read(ctx, b.dgamma, g->c, g->dgamma);
    test_read(ctx, b.dbeta, g->c, g->dbeta);
    clReleaseMemObject(xb);
    clReleaseMemObject(yb);
    clReleaseMemObject(dyb);
    clReleaseMemObject(dxb);
}

static void free_case(grad_case *g)
{
    free(g->x);
    free(g->dy);
    free(g->dx);
}

Test(batchnorm_layer, backward_in_training_matches_the_batch_statistics_gradient)
{
    clnorm_context *ctx = test_context(NULL);
    const size_t N = 4, C = 3, HW = 25, rows = N * HW;
    const double eps = 1e-5;
    clnorm_batchnorm *bn = new_layer(ctx, C, 1, 1, 0);
    float gamma[3], beta[3];
    set_affine(ctx, bn, C, gamma, beta);

    /* backward before any forward has nothing to differentiate */
    clnorm_shape shape = shape_nchw(N, C, 5, 5);
    cl_mem t = test_buffer(ctx, N * C * HW, NULL);
    cr_assert_eq(clnorm_batchnorm_backward(bn, &shape, CLNORM_ACTIVATION_NONE, t, t, t, t, NULL,
                                           0, NULL, NULL),
                 CLNORM_INVALID_ARGUMENT);
    cr_assert(strstr(clnorm_last_error(ctx), "forward"), "%s", clnorm_last_error(ctx));
    clReleaseMemObject(t);

    grad_case g = {.n = N, .c = C, .hw = HW};
    run_backward(ctx, bn, CLNORM_TRAINING, &g);
    ref_stats r;
    batch_stats(g.x, N, C, HW, &r);
    for (size_t ch = 0; ch < C; ch++) {
        const double invstd = 1.0 / sqrt(r.var[ch] + eps);
        double dbeta = 0, dgamma = 0, s1 = 0, s2 = 0, max_xhat = 0;
        for (size_t i = 0; i < N; i++)
            for (size_t s = 0; s < HW; s++) {
                const size_t k = (i * C + ch) * HW + s;
                const double xhat = (g.x[k] - r.mean[ch]) * invstd;
                dbeta += g.dy[k];
                dgamma += g.dy[k] * xhat;
                s1 += fabs(g.dy[k]);
                s2 += fabs(g.dy[k] * xhat);
                max_xhat = fmax(max_xhat, fabs(xhat));
            }
        const double tol_sum = rows * FLT_EPSILON * (s2 + s1 * invstd * r.mean_abs[ch]) + 1e-6;
        cr_assert(fabs(g.dbeta[ch] - dbeta) <= rows * FLT_EPSILON * s1 + 1e-6,
                  "dbeta[%zu] = %.9g, reference %.9g", ch, (double)g.dbeta[ch], dbeta);
        cr_assert(fabs(g.dgamma[ch] - dgamma) <= tol_sum, "dgamma[%zu] = %.9g, reference %.9g",
                  ch, (double)g.dgamma[ch], dgamma);
        const double a = gamma[ch] * invstd, n = (double)rows;
        for (size_t i = 0; i < N; i++)
            for (size_t s = 0; s < HW; s++) {
                const size_t k = (i * C + ch) * HW + s;
                const double xhat = (g.x[k] - r.mean[ch]) * invstd;
                const double ref = a / n * (n * g.dy[k] - dbeta - xhat * dgamma);
                const double tol = fabs(a) / n * (tol_sum * (1 + max_xhat) + rows * FLT_EPSILON * s1) +
                                   rows * FLT_EPSILON * fabs(ref) + 1e-6;
                cr_assert(fabs(g.dx[k] - ref) <= tol, "dx[%zu] = %.9g, reference %.9g (tol %.3g)",
                          k, (double)g.dx[k], ref, tol);
            }
    }
    free_case(&g);
    clnorm_batchnorm_release(bn);
    clnorm_context_release(ctx);
}

Test(batchnorm_layer, backward_in_evaluation_uses_the_frozen_statistics)
{
    clnorm_context *ctx = test_context(NULL);
    const size_t N = 4, C = 3, HW = 25, rows = N * HW;
    const double eps = 1e-5;
    clnorm_batchnorm *bn = new_layer(ctx, C, 1, 1, 0);
    float gamma[3], beta[3];
    set_affine(ctx, bn, C, gamma, beta);
    clnorm_shape shape = shape_nchw(N, C, 5, 5);
    for (int step = 0; step < 2; step++)
        train_step(ctx, bn, &shape, 0.0, NULL);
    CLNORM_OK_(ctx, clnorm_batchnorm_set_mode(bn, CLNORM_EVALUATION));
    clnorm_batchnorm_buffers b;
    CLNORM_OK_(ctx, clnorm_batchnorm_get_buffers(bn, &b));
    float rm[3], rv[3];
    test_read(ctx, b.running_mean, C, rm);
    test_read(ctx, b.running_var, C, rv);

    grad_case g = {.n = N, .c = C, .hw = HW};
    run_backward(ctx, bn, CLNORM_EVALUATION, &g);
    for (size_t ch = 0; ch < C; ch++) {
        const double invstd = 1.0 / sqrt((double)rv[ch] + eps);
        double dbeta = 0, dgamma = 0, s1 = 0, s2 = 0;
        for (size_t i = 0; i < N; i++)
            for (size_t s = 0; s < HW; s++) {
                const size_t k = (i * C + ch) * HW + s;
                const double xhat = (g.x[k] - (double)rm[ch]) * invstd;
                dbeta += g.dy[k];
                dgamma += g.dy[k] * xhat;
                s1 += fabs(g.dy[k]);
                s2 += fabs(g.dy[k] * xhat);
                /* frozen: dx = dy * gamma / sqrt(running_var + eps) */
                const double ref = g.dy[k] * gamma[ch] * invstd;
                cr_assert(fabs(g.dx[k] - ref) <= 4 * FLT_EPSILON * fabs(ref) + 1e-7,
                          "dx[%zu] = %.9g, reference %.9g", k, (double)g.dx[k], ref);
            }
        cr_assert(fabs(g.dbeta[ch] - dbeta) <= rows * FLT_EPSILON * s1 + 1e-6,
                  "dbeta[%zu] = %.9g, reference %.9g", ch, (double)g.dbeta[ch], dbeta);
        cr_assert(fabs(g.dgamma[ch] - dgamma) <= rows * FLT_EPSILON * s2 + 1e-6,
                  "dgamma[%zu] = %.9g, reference %.9g", ch, (double)g.dgamma[ch], dgamma);
    }
    free_case(&g);
    clnorm_batchnorm_release(bn);
    clnorm_context_release(ctx);
}

/* ---- save and load ------------------------------------------------------------------------------ */

Test(batchnorm_layer, save_and_load_round_trip)
{
    clnorm_context *ctx = test_context(NULL);
    const size_t C = 3;
    char dir[512], path_a[600], path_b[600];
    make_temp_dir(dir, sizeof dir);
    snprintf(path_a, sizeof path_a, "%s/a.bn", dir);
    snprintf(path_b, sizeof path_b, "%s/b.bn", dir);

    clnorm_batchnorm *a = new_layer(ctx, C, 1, 1, 0);
    float gamma[3], beta[3];
    set_affine(ctx, a, C, gamma, beta);
    clnorm_shape shape = shape_nchw(4, C, 5, 5);
    for (int step = 0; step < 2; step++)
        train_step(ctx, a, &shape, 0.2 * step, NULL);
    CLNORM_OK_(ctx, clnorm_batchnorm_save(a, path_a));
    char nowhere[700];
    snprintf(nowhere, sizeof nowhere, "%s/no-such-folder/a.bn", dir);
    cr_assert_eq(clnorm_batchnorm_save(a, nowhere), CLNORM_IO_ERROR);
    cr_assert(strstr(clnorm_last_error(ctx), "no-such-folder"), "%s", clnorm_last_error(ctx));

    /* the documented format: header, four arrays, FNV-1a of everything before the hash */
    size_t size;
    unsigned char *file = read_file(path_a, &size);
    cr_assert_eq(size, 48 + 4 * C * 4 + 8);
    cr_assert(memcmp(file, "CLNORMBN", 8) == 0);
    cr_assert_eq(file[8], 1);  /* version */
    cr_assert_eq(file[12], 3); /* affine | tracking */
    cr_assert_eq(get_le64(file + 16), C);
    cr_assert_eq(get_le64(file + 40), 2);
    cr_assert_eq(get_le64(file + size - 8), fnv1a(file, size - 8));
    float g0;
    memcpy(&g0, file + 48, 4); /* the test host is little-endian like the file */
    cr_assert_eq(g0, gamma[0]);

    clnorm_batchnorm *bl = new_layer(ctx, C, 1, 1, 0);
    CLNORM_OK_(ctx, clnorm_batchnorm_load(bl, path_a));
    snapshot sa, sb;
    take_snapshot(ctx, a, C, &sa);
    take_snapshot(ctx, bl, C, &sb);
    assert_same_snapshot(&sa, &sb, C, "loaded layer");
    cr_assert_eq(sb.tracked, 2);

    /* saving the loaded layer gives the same bytes: eps, momentum and flags came along */
    CLNORM_OK_(ctx, clnorm_batchnorm_save(bl, path_b));
    size_t size_b;
    unsigned char *file_b = read_file(path_b, &size_b);
    cr_assert_eq(size_b, size);
    cr_assert(memcmp(file, file_b, size) == 0);

    /* a layer without affine or tracking has a header-only file */
    clnorm_batchnorm *bare = new_layer(ctx, C, 0, 0, 0);
    CLNORM_OK_(ctx, clnorm_batchnorm_save(bare, path_b));
    free(file_b);
    file_b = read_file(path_b, &size_b);
    cr_assert_eq(size_b, 56);
    cr_assert_eq(file_b[12], 0);
    CLNORM_OK_(ctx, clnorm_batchnorm_load(bare, path_b));

    free(file);
    free(file_b);
    clnorm_batchnorm_release(a);
    clnorm_batchnorm_release(bl);
    clnorm_batchnorm_release(bare);
    remove_tree(dir);
    clnorm_context_release(ctx);
}

/* Loads `data` into the target from a file and expects BAD_FILE, the message holding `word`,
 * and the target unchanged. */
static void expect_rejected(clnorm_context *ctx, clnorm_batchnorm *target, const snapshot *before,
                            const char *path, const unsigned char *data, size_t size,
                            const char *word, const char *what)
{
    write_file(path, data, size);
    clnorm_status s = clnorm_batchnorm_load(target, path);
    cr_assert_eq(s, CLNORM_BAD_FILE, "%s: got %s (%s)", what, clnorm_status_name(s),
                 clnorm_last_error(ctx));
    cr_assert(strstr(clnorm_last_error(ctx), word), "%s: message \"%s\" lacks \"%s\"", what,
              clnorm_last_error(ctx), word);
    snapshot after;
    take_snapshot(ctx, target, 3, &after);
    assert_same_snapshot(before, &after, 3, what);
}

Test(batchnorm_layer, load_rejects_bad_files_and_leaves_the_layer_unchanged)
{
    clnorm_context *ctx = test_context(NULL);
    const size_t C = 3;
    char dir[512], good[600], bad[600], missing[600];
    make_temp_dir(dir, sizeof dir);
    snprintf(good, sizeof good, "%s/good.bn", dir);
    snprintf(bad, sizeof bad, "%s/bad.bn", dir);
    snprintf(missing, sizeof missing, "%s/missing.bn", dir);

    clnorm_shape shape = shape_nchw(4, C, 5, 5);
    clnorm_batchnorm *src = new_layer(ctx, C, 1, 1, 0);
    float gamma[3], beta[3];
    set_affine(ctx, src, C, gamma, beta);
    train_step(ctx, src, &shape, 1.0, NULL);
    CLNORM_OK_(ctx, clnorm_batchnorm_save(src, good));
    size_t size;
    unsigned char *file = read_file(good, &size);
    unsigned char *work = malloc(size + 1);

    /* the target has state of its own that must survive every rejection */
    clnorm_batchnorm *target = new_layer(ctx, C, 1, 1, 0);
    set_affine(ctx, target, C, gamma, beta);
    for (int step = 0; step < 3; step++)
        train_step(ctx, target, &shape, -1.0, NULL);
    snapshot before;
    take_snapshot(ctx, target, C, &before);

    expect_rejected(ctx, target, &before, bad, file, size - 1, "truncated", "one byte short");
    expect_rejected(ctx, target, &before, bad, file, 20, "truncated", "shorter than a header");
    memcpy(work, file, size);
    work[size] = 0;
    expect_rejected(ctx, target, &before, bad, work, size + 1, "padded", "one byte too many");

    memcpy(work, file, size);
    work[0] = 'X';
    rehash(work, size);
    expect_rejected(ctx, target, &before, bad, work, size, "magic", "wrong magic");

    memcpy(work, file, size);
    work[8] = 2;
    rehash(work, size);
    expect_rejected(ctx, target, &before, bad, work, size, "version", "version 2");

    /* running_var[1] = NaN, with a valid hash so that the value check is what refuses it */
    memcpy(work, file, size);
    const float nan_value = NAN, negative = -1.0f;
    memcpy(work + 48 + 3 * C * 4 + 4, &nan_value, 4);
    rehash(work, size);
    expect_rejected(ctx, target, &before, bad, work, size, "running_var", "NaN in running_var");
    memcpy(work, file, size);
    memcpy(work + 48 + 3 * C * 4 + 8, &negative, 4);
    rehash(work, size);
    expect_rejected(ctx, target, &before, bad, work, size, "running_var", "negative running_var");

    memcpy(work, file, size);
    const double bad_eps = -1.0;
    memcpy(work + 24, &bad_eps, 8);
    rehash(work, size);
    expect_rejected(ctx, target, &before, bad, work, size, "eps", "negative eps");

    memcpy(work, file, size);
    work[48 + 2] ^= 0x10; /* a flipped bit in gamma[0], hash left as it was */
    expect_rejected(ctx, target, &before, bad, work, size, "hash", "flipped byte");

    /* a file of another layer size, and of another configuration */
    clnorm_batchnorm *four = new_layer(ctx, 4, 1, 1, 0);
    CLNORM_OK_(ctx, clnorm_batchnorm_save(four, bad));
    size_t size4;
    unsigned char *file4 = read_file(bad, &size4);
    expect_rejected(ctx, target, &before, bad, file4, size4, "channels", "C = 4 into C = 3");
    clnorm_batchnorm *plain = new_layer(ctx, C, 0, 1, 0);
    CLNORM_OK_(ctx, clnorm_batchnorm_save(plain, bad));
    size_t size_plain;
    unsigned char *file_plain = read_file(bad, &size_plain);
    expect_rejected(ctx, target, &before, bad, file_plain, size_plain, "flags",
                    "no affine into affine");

    cr_assert_eq(clnorm_batchnorm_load(target, missing), CLNORM_IO_ERROR);
    cr_assert(strstr(clnorm_last_error(ctx), "missing.bn"), "%s", clnorm_last_error(ctx));
    snapshot after;
    take_snapshot(ctx, target, C, &after);
    assert_same_snapshot(&before, &after, C, "missing file");

    /* the good file still loads */
    CLNORM_OK_(ctx, clnorm_batchnorm_load(target, good));
    cr_assert_eq(clnorm_batchnorm_num_batches_tracked(target), 1);

    free(file);
    free(file4);
    free(file_plain);
    free(work);
    clnorm_batchnorm_release(src);
    clnorm_batchnorm_release(target);
    clnorm_batchnorm_release(four);
    clnorm_batchnorm_release(plain);
    remove_tree(dir);
    clnorm_context_release(ctx);
}

/* ---- folding ------------------------------------------------------------------------------------ */

Test(batchnorm_layer, fold_gives_scale_and_shift)
{
    clnorm_context *ctx = test_context(NULL);
    const size_t C = 3;
    const double eps = 1e-5;
    clnorm_batchnorm *bn = new_layer(ctx, C, 1, 1, 0);
    float gamma[3], beta[3];
    set_affine(ctx, bn, C, gamma, beta);
    clnorm_shape shape = shape_nchw(4, C, 5, 5);
    for (int step = 0; step < 3; step++)
        train_step(ctx, bn, &shape, 0.0, NULL);
    clnorm_batchnorm_buffers b;
    CLNORM_OK_(ctx, clnorm_batchnorm_get_buffers(bn, &b));
    float rm[3], rv[3], scale[3], shift[3];
    test_read(ctx, b.running_mean, C, rm);
    test_read(ctx, b.running_var, C, rv);
    CLNORM_OK_(ctx, clnorm_batchnorm_fold(bn, scale, shift));
    for (size_t c = 0; c < C; c++) {
        const double s = gamma[c] / sqrt((double)rv[c] + eps);
        const double sh = beta[c] - rm[c] * s;
        cr_assert(fabs(scale[c] - s) <= FLT_EPSILON * fabs(s), "scale[%zu] %.9g vs %.9g", c,
                  (double)scale[c], s);
        cr_assert(fabs(shift[c] - sh) <= FLT_EPSILON * (fabs(sh) + 1e-30), "shift[%zu] %.9g vs %.9g",
                  c, (double)shift[c], sh);
    }
    cr_assert_eq(clnorm_batchnorm_fold(bn, NULL, shift), CLNORM_INVALID_ARGUMENT);
    clnorm_batchnorm_release(bn);
    clnorm_context_release(ctx);
}

/* Folds a C x K linear layer; B inputs check bn(W x + b) == W' x + b'. */
static void check_fold_linear(size_t C, size_t K, size_t B)
{
    clnorm_context *ctx = test_context(NULL);
    const double eps = 1e-5;
    cr_assert_leq(C, 8);
    clnorm_batchnorm *bn = new_layer(ctx, C, 1, 1, 0);
    float gamma[8], beta[8];
    set_affine(ctx, bn, C, gamma, beta);
    clnorm_shape train_shape = shape_nc(16, C);
    for (int step = 0; step < 3; step++)
        train_step(ctx, bn, &train_shape, 0.5, NULL);
    CLNORM_OK_(ctx, clnorm_batchnorm_set_mode(bn, CLNORM_EVALUATION));
    clnorm_batchnorm_buffers lb;
    CLNORM_OK_(ctx, clnorm_batchnorm_get_buffers(bn, &lb));
    float rm[8], rv[8];
    test_read(ctx, lb.running_mean, C, rm);
    test_read(ctx, lb.running_var, C, rv);

    float *w = random_vector(C * K, -1.0, 1.0), *bias = random_vector(C, -2.0, 2.0);
    float *x = random_vector(B * K, -1.0, 1.0);
    /* z = W x + b for B inputs, then bn(z) in evaluation mode on the device */
    float *z = malloc(B * C * sizeof(float)), *y = malloc(B * C * sizeof(float));
    for (size_t i = 0; i < B; i++)
        for (size_t c = 0; c < C; c++) {
            double acc = bias[c];
            for (size_t k = 0; k < K; k++)
                acc += (double)w[c * K + k] * x[i * K + k];
            z[i * C + c] = (float)acc;
        }
    cl_mem zb = test_buffer(ctx, B * C, z), yb = test_buffer(ctx, B * C, NULL);
    clnorm_shape shape = shape_nc(B, C);
    CLNORM_OK_(ctx, clnorm_batchnorm_forward(bn, CLNORM_EVALUATION, &shape,
                                             CLNORM_ACTIVATION_NONE, zb, NULL, yb, 0, NULL, NULL));
    test_read(ctx, yb, B * C, y);

    /* invalid calls leave the weight alone */
    cl_mem wb = test_buffer(ctx, C * K, w), bb = test_buffer(ctx, C, bias);
    cl_mem short_w = test_buffer(ctx, C * K - 1, w);
    cr_assert_eq(clnorm_batchnorm_fold_linear(bn, short_w, bb, K, 0, NULL, NULL),
                 CLNORM_BUFFER_TOO_SMALL);
    cr_assert_eq(clnorm_batchnorm_fold_linear(bn, wb, bb, 0, 0, NULL, NULL), CLNORM_INVALID_SHAPE);
    cr_assert_eq(clnorm_batchnorm_fold_linear(bn, wb, NULL, K, 0, NULL, NULL),
                 CLNORM_INVALID_ARGUMENT);
    cr_assert_eq(clnorm_batchnorm_fold_linear(bn, wb, bb, (size_t)-1, 0, NULL, NULL),
                 CLNORM_INVALID_SHAPE);
    float *w2 = malloc(C * K * sizeof(float)), b2[8];
    test_read(ctx, wb, C * K, w2);
    cr_assert(memcmp(w2, w, C * K * sizeof(float)) == 0);

    cl_event ev = NULL;
    CLNORM_OK_(ctx, clnorm_batchnorm_fold_linear(bn, wb, bb, K, 0, NULL, &ev));
    cr_assert_not_null(ev);
    CL_OK(clWaitForEvents(1, &ev));
    clReleaseEvent(ev);
    test_read(ctx, wb, C * K, w2);
    test_read(ctx, bb, C, b2);
    for (size_t c = 0; c < C; c++) {
        const double s = gamma[c] / sqrt((double)rv[c] + eps);
        for (size_t k = 0; k < K; k++) {
            const double ref = w[c * K + k] * s;
            cr_assert(fabs(w2[c * K + k] - ref) <= 8 * FLT_EPSILON * fabs(ref) + 1e-30,
                      "W'[%zu][%zu] = %.9g, reference %.9g", c, k, (double)w2[c * K + k], ref);
        }
        const double ref_b = (bias[c] - (double)rm[c]) * s + beta[c];
        const double tol_b =
            8 * FLT_EPSILON * (fabs(bias[c] * s) + fabs(rm[c] * s) + fabs(beta[c])) + 1e-7;
        cr_assert(fabs(b2[c] - ref_b) <= tol_b, "b'[%zu] = %.9g, reference %.9g", c,
                  (double)b2[c], ref_b);
    }
    /* bn(W x + b) == W' x + b' */
    double max_diff = 0.0;
    for (size_t i = 0; i < B; i++)
        for (size_t c = 0; c < C; c++) {
            double acc = b2[c], mag = fabs(b2[c]);
            for (size_t k = 0; k < K; k++) {
                acc += (double)w2[c * K + k] * x[i * K + k];
                mag += fabs((double)w2[c * K + k] * x[i * K + k]);
            }
            const double diff = fabs(y[i * C + c] - acc);
            max_diff = fmax(max_diff, diff);
            cr_assert(diff <= 32 * FLT_EPSILON * (mag + fabs(acc)) + 1e-6,
                      "input %zu feature %zu: bn(Wx+b) = %.9g, W'x+b' = %.9g", i, c,
                      (double)y[i * C + c], acc);
        }
    cr_assert_lt(max_diff, 1e-4);

    clReleaseMemObject(zb);
    clReleaseMemObject(yb);
    clReleaseMemObject(wb);
    clReleaseMemObject(bb);
    clReleaseMemObject(short_w);
    free(w);
    free(w2);
    free(bias);
    free(x);
    free(z);
    free(y);
    clnorm_batchnorm_release(bn);
    clnorm_context_release(ctx);
}

Test(batchnorm_layer, fold_linear_makes_bn_of_a_linear_layer_one_linear_layer)
{
    check_fold_linear(5, 7, 6);  /* rows and features straddle vectors: the scalar path */
    check_fold_linear(8, 16, 3); /* whole vectors: the vector paths */
    check_fold_linear(2, 1, 2);  /* one input feature */
}

/* ---- options ------------------------------------------------------------------------------------ */

static void expect_bad_options(clnorm_context *ctx, const clnorm_batchnorm_options *o,
                               const char *word)
{
    clnorm_batchnorm *bn = (clnorm_batchnorm *)(uintptr_t)1;
    clnorm_status s = clnorm_batchnorm_create(ctx, o, &bn);
    cr_assert_eq(s, CLNORM_INVALID_ARGUMENT, "%s: got %s", word, clnorm_status_name(s));
    cr_assert_null(bn);
    cr_assert(strstr(clnorm_last_error(ctx), word), "message \"%s\" lacks \"%s\"",
              clnorm_last_error(ctx), word);
}

Test(batchnorm_layer, bad_options_are_rejected)
{
    clnorm_context *ctx = test_context(NULL);
    clnorm_batchnorm_options o;
    clnorm_batchnorm_default_options(&o, 8);
    cr_assert_eq(o.num_features, 8);
    cr_assert_eq(o.eps, 1e-5);
    cr_assert_eq(o.momentum, 0.1);
    cr_assert(o.affine && o.track_running_stats && !o.cumulative_average);

    o.num_features = 0;
    expect_bad_options(ctx, &o, "num_features");
    clnorm_batchnorm_default_options(&o, 8);
    o.eps = -1.0;
    expect_bad_options(ctx, &o, "eps");
    o.eps = NAN;
    expect_bad_options(ctx, &o, "eps");
    o.eps = INFINITY;
    expect_bad_options(ctx, &o, "eps");
    clnorm_batchnorm_default_options(&o, 8);
    o.momentum = 2.0;
    expect_bad_options(ctx, &o, "momentum");
    o.momentum = -0.1;
    expect_bad_options(ctx, &o, "momentum");
    o.momentum = NAN;
    expect_bad_options(ctx, &o, "momentum");
    expect_bad_options(ctx, NULL, "options");
    clnorm_batchnorm_default_options(&o, 8);
    cr_assert_eq(clnorm_batchnorm_create(ctx, &o, NULL), CLNORM_INVALID_ARGUMENT);
    cr_assert_eq(clnorm_batchnorm_create(NULL, &o, NULL), CLNORM_INVALID_ARGUMENT);

    /* momentum is ignored under a cumulative average, like PyTorch's momentum=None */
    o.momentum = 2.0;
    o.cumulative_average = 1;
    clnorm_batchnorm *bn = NULL;
    CLNORM_OK_(ctx, clnorm_batchnorm_create(ctx, &o, &bn));
    cr_assert_str_eq(clnorm_last_error(ctx), "");
    clnorm_batchnorm_buffers b;
    CLNORM_OK_(ctx, clnorm_batchnorm_get_buffers(bn, &b));
    float ones[8], zeros[8];
    test_read(ctx, b.gamma, 8, ones);
    test_read(ctx, b.running_mean, 8, zeros);
    for (size_t i = 0; i < 8; i++)
        cr_assert(ones[i] == 1.0f && zeros[i] == 0.0f);
    test_read(ctx, b.running_var, 8, ones);
    test_read(ctx, b.beta, 8, zeros);
    for (size_t i = 0; i < 8; i++)
        cr_assert(ones[i] == 1.0f && zeros[i] == 0.0f);
    cr_assert_eq(clnorm_batchnorm_get_buffers(bn, NULL), CLNORM_INVALID_ARGUMENT);
    clnorm_batchnorm_release(bn);

    cr_assert_eq(clnorm_batchnorm_num_batches_tracked(NULL), -1);
    cr_assert_eq(clnorm_batchnorm_set_mode(NULL, CLNORM_TRAINING), CLNORM_INVALID_ARGUMENT);
    clnorm_context_release(ctx);
}

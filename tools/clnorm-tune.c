/* clnorm-tune: searches the device parameters for the device at hand and writes them to the
 * device's parameter file (see clnorm_param_file in clnorm.h), which later contexts read.
 *
 *   clnorm-tune [--device SELECTOR] [--quick] [--dry-run] [--out FILE] [--runs N] [--verbose]
 *
 * The workload: batch-norm training forward, inference forward and backward in both layouts on
 * three shapes (a large plane, 56x56; small planes, 14x14 and 7x7; the batch scaled so that a
 * tensor is about 16 MiB on a CPU, 64 MiB elsewhere, within the device's memory), and layer-norm
 * forward and backward (1024 features). Each operation is timed with OpenCL profiling
 * (clnorm_last_op_time), each run on one of a few rotating buffer sets so that inputs do not stay
 * in the caches. Every candidate's outputs are first compared with those of the built-in table's
 * parameters (tolerance from the reduction length); a candidate that differs or fails is rejected.
 *
 * The search is coordinate descent from the built-in table. For each parameter in turn, with the
 * others fixed, candidate values are tried outwards from the current one (up while each step is
 * faster than the last, then down if up gave nothing; partials_per_channel, which needs no program
 * build, tries every value). A candidate is timed against the current values in paired runs
 * (both, back to back, in alternating order, for every operation), so that the load of a shared
 * machine affects both alike; its score is the geometric mean over the operations of the median
 * ratio, and it replaces the current values when at least 2% faster. A second pass follows when
 * the first changed anything. A change is only made when a second paired measurement confirms
 * it. Work-group sizes stay within the device's limit. The winner and the table are finally
 * compared in 3x as many paired runs for the reported speedup; the table is kept when the winner
 * is not at least 2% faster there. --quick: two shapes, 4 MiB tensors, 3 runs, one pass, one
 * step per parameter. The search takes minutes on a 2-core CPU, mostly building programs. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clnorm.h"

#define MAX_PARAMS 32
#define MAX_CASES 32
#define MAX_GROUPS 16
#define MAX_SETS 3
#define MAX_CANDIDATES 16
#define MAX_OUTPUTS 3
#define MAX_RUNS 101

/* ---- small helpers --------------------------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static double geo_mean(const double *v, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += log(v[i]);
    return exp(s / (double)n);
}

static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("clnorm-tune: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

/* The first line of a (possibly multi-line) message. */
static const char *first_line(const char *s, char *buf, size_t size)
{
    snprintf(buf, size, "%.*s", (int)strcspn(s, "\n"), s);
    return buf;
}

/* ---- the workload ---------------------------------------------------------------------------- */

typedef enum op_kind { BN_TRAIN, BN_INFER, BN_BACKWARD, LN_FORWARD, LN_BACKWARD } op_kind;

/* Per-shape small buffers: batch norm's per-channel ones, or layer norm's (weight/bias/dweight/
 * dbias per feature in gamma/beta/dgamma/dbeta, mean/rstd per row in save_mean/save_invstd). */
typedef struct group {
    cl_mem gamma, beta, run_mean, run_var, inf_mean, inf_var, save_mean, save_invstd, dgamma,
        dbeta;
} group;

typedef struct work_case {
    op_kind op;
    int group;
    clnorm_shape shape; /* batch norm */
    size_t rows, cols;  /* layer norm */
    size_t elements, per_stat; /* tensor elements; C (batch norm) or rows (layer norm) */
    size_t per_feature;        /* layer norm: cols */
    size_t reduce_len;         /* longest reduction: the tolerance grows with it */
    char label[48];
    /* the outputs compared with the reference: count and host copies of the reference */
    int outputs;
    size_t out_count[MAX_OUTPUTS];
    float *reference[MAX_OUTPUTS];
} work_case;

typedef struct tensor_set {
    cl_mem x, y, dy, dx;
} tensor_set;

typedef struct tuner {
    clnorm_context *ctx;
    clnorm_device_info info;
    int quick, verbose, runs;
    size_t params;
    const char *names[MAX_PARAMS];
    char labels[MAX_PARAMS][8];
    long table[MAX_PARAMS];
    work_case cases[MAX_CASES];
    size_t num_cases;
    group groups[MAX_GROUPS];
    size_t num_groups;
    tensor_set sets[MAX_SETS];
    size_t num_sets, max_elements, max_small;
    float *scratch; /* host buffer for read-backs */
    size_t evaluated;
} tuner;

static cl_mem new_buffer(tuner *t, size_t count, const float *data)
{
    cl_int err = CL_SUCCESS;
    cl_mem m = clCreateBuffer(clnorm_context_cl_context(t->ctx), CL_MEM_READ_WRITE,
                              count * sizeof(float), NULL, &err);
    if (err != CL_SUCCESS)
        fail("clCreateBuffer of %zu bytes failed (%s)", count * sizeof(float),
             clnorm_cl_error_name(err));
    if (data)
        err = clEnqueueWriteBuffer(clnorm_context_queue(t->ctx), m, CL_TRUE, 0,
                                   count * sizeof(float), data, 0, NULL, NULL);
    if (err != CL_SUCCESS)
        fail("clEnqueueWriteBuffer failed (%s)", clnorm_cl_error_name(err));
    return m;
}

static unsigned long long lcg_state = 12345;
static float uniform(void) /* in [0, 1) */
{
    lcg_state = lcg_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((lcg_state >> 40) & 0xffffff) / 16777216.0f;
}

static void fill(float *v, size_t n, float lo, float hi)
{
    for (size_t i = 0; i < n; i++)
        v[i] = lo + (hi - lo) * uniform();
}

static void add_bn_cases(tuner *t, size_t c, size_t h, size_t w, size_t tensor_elements)
{
    size_t n = tensor_elements / (c * h * w);
    if (n < 2)
        n = 2;
    for (int layout = 0; layout < 2; layout++) {
        int g = (int)t->num_groups++;
        static const op_kind ops[] = {BN_TRAIN, BN_INFER, BN_BACKWARD};
        static const char *const op_names[] = {"bn train", "bn infer", "bn backward"};
        for (int o = 0; o < 3; o++) {
            work_case *k = &t->cases[t->num_cases++];
            memset(k, 0, sizeof *k);
            k->op = ops[o];
            k->group = g;
            k->shape = (clnorm_shape){.n = n, .c = c, .spatial_rank = 2, .spatial = {h, w},
                                      .layout = layout ? CLNORM_CHANNELS_LAST
                                                       : CLNORM_CHANNELS_FIRST};
            k->elements = n * c * h * w;
            k->per_stat = c;
            k->reduce_len = n * h * w;
            snprintf(k->label, sizeof k->label, "%s N%zu C%zu %zux%zu %s", op_names[o], n, c, h,
                     w, layout ? "NHWC" : "NCHW");
        }
    }
}

static void add_ln_cases(tuner *t, size_t cols, size_t tensor_elements)
{
    size_t rows = tensor_elements / cols;
    if (rows < 2)
        rows = 2;
    int g = (int)t->num_groups++;
    for (int o = 0; o < 2; o++) {
        work_case *k = &t->cases[t->num_cases++];
        memset(k, 0, sizeof *k);
        k->op = o ? LN_BACKWARD : LN_FORWARD;
        k->group = g;
        k->rows = rows;
        k->cols = cols;
        k->elements = rows * cols;
        k->per_stat = rows;
        k->per_feature = cols;
        k->reduce_len = rows > cols ? rows : cols;
        snprintf(k->label, sizeof k->label, "ln %s %zux%zu", o ? "backward" : "forward", rows,
                 cols);
    }
}

static void setup_workload(tuner *t)
{
    const clnorm_device_info *d = &t->info;
    size_t bytes = (d->type & CL_DEVICE_TYPE_CPU) ? (16u << 20) : (64u << 20);
    if (t->quick)
        bytes /= 4;
    t->num_sets = t->quick ? 2 : MAX_SETS;
    /* 4 tensors per set, and at most a quarter of the device's memory */
    while (bytes > (1u << 20) && (bytes > d->max_alloc_bytes / 2 ||
                                  4 * t->num_sets * bytes > d->global_mem_bytes / 4))
        bytes /= 2;
    size_t elements = bytes / sizeof(float);
    add_bn_cases(t, 64, 56, 56, elements);
    if (!t->quick)
        add_bn_cases(t, 256, 14, 14, elements);
    add_bn_cases(t, 512, 7, 7, elements);
    add_ln_cases(t, 1024, elements);

    for (size_t i = 0; i < t->num_cases; i++) {
        work_case *k = &t->cases[i];
        if (k->elements > t->max_elements)
            t->max_elements = k->elements;
        size_t small = k->per_stat > k->per_feature ? k->per_stat : k->per_feature;
        if (small > t->max_small)
            t->max_small = small;
        /* the outputs checked against the reference */
        switch (k->op) {
        case BN_TRAIN:
        case LN_FORWARD:
            k->outputs = 3; /* y, mean, invstd / rstd */
            k->out_count[0] = k->elements;
            k->out_count[1] = k->out_count[2] = k->per_stat;
            break;
        case BN_INFER:
            k->outputs = 1;
            k->out_count[0] = k->elements;
            break;
        case BN_BACKWARD:
            k->outputs = 3; /* dx, dgamma, dbeta */
            k->out_count[0] = k->elements;
            k->out_count[1] = k->out_count[2] = k->per_stat;
            break;
        case LN_BACKWARD:
            k->outputs = 3; /* dx, dweight, dbias */
            k->out_count[0] = k->elements;
            k->out_count[1] = k->out_count[2] = k->per_feature;
            break;
        }
    }

    float *host = malloc(t->max_elements * sizeof(float));
    float *dy = malloc(t->max_elements * sizeof(float));
    t->scratch = malloc(t->max_elements * sizeof(float));
    if (!host || !dy || !t->scratch)
        fail("out of host memory for %zu-element tensors", t->max_elements);
    fill(host, t->max_elements, 2.0f, 4.0f); /* an offset: the shifted statistics matter */
    fill(dy, t->max_elements, -1.0f, 1.0f);
    for (size_t s = 0; s < t->num_sets; s++) {
        t->sets[s].x = new_buffer(t, t->max_elements, host);
        t->sets[s].dy = new_buffer(t, t->max_elements, dy);
        t->sets[s].y = new_buffer(t, t->max_elements, NULL);
        t->sets[s].dx = new_buffer(t, t->max_elements, NULL);
    }
    size_t m = t->max_small;
    float *a = malloc(m * sizeof(float)), *b = malloc(m * sizeof(float));
    float *rm = malloc(m * sizeof(float)), *rv = malloc(m * sizeof(float));
    if (!a || !b || !rm || !rv)
        fail("out of host memory");
    fill(a, m, 0.5f, 1.5f);
    fill(b, m, -0.5f, 0.5f);
    fill(rm, m, 2.9f, 3.1f);
    fill(rv, m, 0.25f, 0.4f);
    for (size_t g = 0; g < t->num_groups; g++) {
        group *p = &t->groups[g];
        p->gamma = new_buffer(t, m, a);
        p->beta = new_buffer(t, m, b);
        p->run_mean = new_buffer(t, m, rm);
        p->run_var = new_buffer(t, m, rv);
        p->inf_mean = new_buffer(t, m, rm);
        p->inf_var = new_buffer(t, m, rv);
        p->save_mean = new_buffer(t, m, NULL);
        p->save_invstd = new_buffer(t, m, NULL);
        p->dgamma = new_buffer(t, m, NULL);
        p->dbeta = new_buffer(t, m, NULL);
    }
    free(host);
    free(dy);
    free(a);
    free(b);
    free(rm);
    free(rv);
}

static void release_workload(tuner *t)
{
    for (size_t s = 0; s < t->num_sets; s++) {
        cl_mem m[] = {t->sets[s].x, t->sets[s].y, t->sets[s].dy, t->sets[s].dx};
        for (size_t i = 0; i < 4; i++)
            clReleaseMemObject(m[i]);
    }
    for (size_t g = 0; g < t->num_groups; g++) {
        group *p = &t->groups[g];
        cl_mem m[] = {p->gamma,    p->beta,      p->run_mean, p->run_var, p->inf_mean,
                      p->inf_var,  p->save_mean, p->save_invstd, p->dgamma, p->dbeta};
        for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
            clReleaseMemObject(m[i]);
    }
    for (size_t i = 0; i < t->num_cases; i++)
        for (int o = 0; o < t->cases[i].outputs; o++)
            free(t->cases[i].reference[o]);
    free(t->scratch);
}

static clnorm_status run_case(tuner *t, const work_case *k, const tensor_set *s)
{
    const group *g = &t->groups[k->group];
    clnorm_bn_config cfg;
    clnorm_bn_default_config(&cfg);
    switch (k->op) {
    case BN_TRAIN: {
        clnorm_bn_buffers b = {.x = s->x, .y = s->y, .gamma = g->gamma, .beta = g->beta,
                               .running_mean = g->run_mean, .running_var = g->run_var,
                               .save_mean = g->save_mean, .save_invstd = g->save_invstd};
        return clnorm_bn_forward_training(t->ctx, &k->shape, &cfg, &b, 0, NULL, NULL);
    }
    case BN_INFER: {
        clnorm_bn_buffers b = {.x = s->x, .y = s->y, .gamma = g->gamma, .beta = g->beta,
                               .running_mean = g->inf_mean, .running_var = g->inf_var};
        return clnorm_bn_forward_inference(t->ctx, &k->shape, &cfg, &b, 0, NULL, NULL);
    }
    case BN_BACKWARD: {
        clnorm_bn_grad_buffers b = {.x = s->x, .dy = s->dy, .gamma = g->gamma,
                                    .mean = g->save_mean, .invstd = g->save_invstd, .dx = s->dx,
                                    .dgamma = g->dgamma, .dbeta = g->dbeta};
        return clnorm_bn_backward(t->ctx, &k->shape, &cfg, &b, 0, NULL, NULL);
    }
    case LN_FORWARD: {
        clnorm_norm_buffers b = {.x = s->x, .weight = g->gamma, .bias = g->beta, .y = s->y,
                                 .mean = g->save_mean, .rstd = g->save_invstd};
        return clnorm_layernorm_forward(t->ctx, k->rows, k->cols, CLNORM_DEFAULT_EPS, &b, 0,
                                        NULL, NULL);
    }
    case LN_BACKWARD: {
        clnorm_norm_grad_buffers b = {.x = s->x, .dy = s->dy, .weight = g->gamma,
                                      .mean = g->save_mean, .rstd = g->save_invstd, .dx = s->dx,
                                      .dweight = g->dgamma, .dbias = g->dbeta};
        return clnorm_layernorm_backward(t->ctx, k->rows, k->cols, &b, 0, NULL, NULL);
    }
    }
    return CLNORM_INVALID_ARGUMENT;
}

static cl_mem output_buffer(const tuner *t, const work_case *k, int o)
{
    const group *g = &t->groups[k->group];
    const tensor_set *s = &t->sets[0];
    switch (k->op) {
    case BN_TRAIN:
    case LN_FORWARD:
        return o == 0 ? s->y : o == 1 ? g->save_mean : g->save_invstd;
    case BN_INFER:
        return s->y;
    case BN_BACKWARD:
    case LN_BACKWARD:
        return o == 0 ? s->dx : o == 1 ? g->dgamma : g->dbeta;
    }
    return NULL;
}

/* Largest |got - want| / allowed over the output: allowed = tol * (|want| + rms(want)), with
 * tol = 2^-24 * (8 sqrt(L) + 64) for a reduction of length L; NaN where the reference has none
 * counts as infinitely far. */
static double worst_ratio(const float *got, const float *want, size_t n, size_t reduce_len)
{
    double sq = 0;
    for (size_t i = 0; i < n; i++)
        sq += (double)want[i] * want[i];
    double rms = sqrt(sq / (double)n) + 1e-30;
    double tol = ldexp(8.0 * sqrt((double)reduce_len) + 64.0, -24);
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(want[i]) != isnan(got[i]) || isinf(got[i]) != isinf(want[i]))
            return INFINITY;
        if (isnan(want[i]) || isinf(want[i]))
            continue;
        double r = fabs((double)got[i] - want[i]) / (tol * (fabs(want[i]) + rms));
        if (r > worst)
            worst = r;
    }
    return worst;
}

/* ---- evaluating a candidate ------------------------------------------------------------------ */

typedef struct result {
    int ok;            /* 0: rejected (reason in why) */
    int stopped_early; /* much slower than the reference in the first run: not timed further */
    double score;      /* geometric mean of the per-op medians, ms */
    double ref_score;  /* the same for the reference, timed in the same runs */
    double ratio;      /* geometric mean over the ops of the median of candidate / reference */
    double op_ms[MAX_CASES], ref_ms[MAX_CASES];
    double check_ratio; /* worst error / tolerance over the outputs */
    double wall_s;
    char why[256];
} result;

static int apply_values(tuner *t, const long *values, char *why, size_t size)
{
    for (size_t p = 0; p < t->params; p++) {
        if (clnorm_set_param(t->ctx, t->names[p], values[p]) != CLNORM_OK) {
            char line[200];
            snprintf(why, size, "%s", first_line(clnorm_last_error(t->ctx), line, sizeof line));
            return 0;
        }
    }
    return 1;
}

/* Runs every case once on set 0 and compares the outputs with the reference (or records them as
 * the reference). The first runs with new values also build their programs. */
static int check_outputs(tuner *t, int record, result *r)
{
    char line[200];
    r->check_ratio = 0;
    for (size_t i = 0; i < t->num_cases; i++) {
        work_case *k = &t->cases[i];
        clnorm_status st = run_case(t, k, &t->sets[0]);
        if (st == CLNORM_OK)
            st = clnorm_finish(t->ctx);
        if (st != CLNORM_OK) {
            snprintf(r->why, sizeof r->why, "%s: %s", k->label,
                     first_line(clnorm_last_error(t->ctx), line, sizeof line));
            return 0;
        }
        for (int o = 0; o < k->outputs; o++) {
            cl_int err = clEnqueueReadBuffer(clnorm_context_queue(t->ctx), output_buffer(t, k, o),
                                             CL_TRUE, 0, k->out_count[o] * sizeof(float),
                                             t->scratch, 0, NULL, NULL);
            if (err != CL_SUCCESS) {
                snprintf(r->why, sizeof r->why, "%s: reading the output failed (%s)", k->label,
                         clnorm_cl_error_name(err));
                return 0;
            }
            if (record) {
                k->reference[o] = malloc(k->out_count[o] * sizeof(float));
                if (!k->reference[o])
                    fail("out of host memory for the reference outputs");
                memcpy(k->reference[o], t->scratch, k->out_count[o] * sizeof(float));
                continue;
            }
            double ratio = worst_ratio(t->scratch, k->reference[o], k->out_count[o],
                                       k->reduce_len);
            if (ratio > r->check_ratio)
                r->check_ratio = ratio;
            if (!(ratio <= 1.0)) {
                snprintf(r->why, sizeof r->why,
                         "%s: output %d differs from the built-in parameters' (%.3g x the "
                         "tolerance)",
                         k->label, o, ratio);
                return 0;
            }
        }
    }
    return 1;
}

/* Sets `values`, checks the outputs, then times every case `runs` times. With a reference (the
 * current best), each run times the case with both value sets, back to back in alternating
 * order, so that a change in the machine's load affects both alike; the decision uses the ratio.
 * cutoff > 0: stop after the first run when that run's ratio exceeds it. */
static void evaluate(tuner *t, const long *values, const long *ref, int record, int runs,
                     double cutoff, result *r)
{
    memset(r, 0, sizeof *r);
    double start = now_s();
    static double mine[MAX_CASES][MAX_RUNS], theirs[MAX_CASES][MAX_RUNS];
    static double ratio[MAX_CASES][MAX_RUNS];
    if (!apply_values(t, values, r->why, sizeof r->why) || !check_outputs(t, record, r)) {
        r->wall_s = now_s() - start;
        return;
    }
    size_t next = 1; /* set 0 was just used by every case */
    int done = 0;
    for (int run = 0; run < runs; run++) {
        for (size_t i = 0; i < t->num_cases; i++) {
            for (int side = 0; side < (ref ? 2 : 1); side++) {
                int theirs_now = ref && (run + side) % 2 == 1;
                char line[200];
                double ms = 0;
                if (ref && !apply_values(t, theirs_now ? ref : values, r->why, sizeof r->why)) {
                    r->wall_s = now_s() - start;
                    return;
                }
                clnorm_status st = run_case(t, &t->cases[i], &t->sets[next++ % t->num_sets]);
                if (st == CLNORM_OK)
                    st = clnorm_last_op_time(t->ctx, &ms);
                if (st != CLNORM_OK) {
                    snprintf(r->why, sizeof r->why, "%s: %s", t->cases[i].label,
                             first_line(clnorm_last_error(t->ctx), line, sizeof line));
                    r->wall_s = now_s() - start;
                    return;
                }
                ms = ms > 1e-6 ? ms : 1e-6;
                if (theirs_now)
                    theirs[i][run] = ms;
                else
                    mine[i][run] = ms;
            }
            ratio[i][run] = ref ? mine[i][run] / theirs[i][run] : 1.0;
        }
        done = run + 1;
        if (run == 0 && ref && cutoff > 0) {
            double first[MAX_CASES];
            for (size_t i = 0; i < t->num_cases; i++)
                first[i] = ratio[i][0];
            if (geo_mean(first, t->num_cases) > cutoff) {
                r->stopped_early = 1;
                break;
            }
        }
    }
    double ratios[MAX_CASES];
    for (size_t i = 0; i < t->num_cases; i++) {
        r->op_ms[i] = median(mine[i], (size_t)done);
        r->ref_ms[i] = ref ? median(theirs[i], (size_t)done) : r->op_ms[i];
        ratios[i] = median(ratio[i], (size_t)done);
    }
    r->score = geo_mean(r->op_ms, t->num_cases);
    r->ref_score = geo_mean(r->ref_ms, t->num_cases);
    r->ratio = geo_mean(ratios, t->num_cases);
    r->ok = 1;
    r->wall_s = now_s() - start;
    t->evaluated++;
}

/* ---- the search ------------------------------------------------------------------------------ */

/* The values tried for parameter p, ascending; *exhaustive: try them all (partials_per_channel
 * needs no program build, so it is cheap), else step outwards from the current value. */
static size_t candidates_for(const tuner *t, size_t p, long *out, int *exhaustive)
{
    const char *name = t->names[p];
    static const long wg[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
    static const long pow2_8[] = {1, 2, 4, 8};
    static const long partials[] = {0, 1, 2, 4, 8, 16, 32, 64};
    static const long tiles[] = {1, 2, 4, 8, 16, 32, 64};
    static const long item_tile[] = {1, 2, 4, 8, 16};
    static const long kib[] = {0, 16, 32, 64, 128, 256};
    static const long tensor_kib[] = {0, 16384, 65536, 262144}; /* 16, 64, 256 MiB */
    static const long streams[] = {1, 2};
    static const long generic[] = {0, 1, 2, 4, 8, 16, 32};
    const long *list = generic;
    size_t n = sizeof generic / sizeof generic[0];
#define USE_LIST_(a) (list = (a), n = sizeof(a) / sizeof((a)[0]))
    if (!strcmp(name, "work_group_size"))
        USE_LIST_(wg);
    else if (!strcmp(name, "vector_width") || !strcmp(name, "block_vectors") ||
             !strcmp(name, "items_per_thread") || !strcmp(name, "gather_units"))
        USE_LIST_(pow2_8);
    else if (!strcmp(name, "partials_per_channel"))
        USE_LIST_(partials);
    else if (!strcmp(name, "channel_tile") || !strcmp(name, "plane_tile"))
        USE_LIST_(tiles);
    else if (!strcmp(name, "item_tile"))
        USE_LIST_(item_tile);
    else if (!strcmp(name, "cached_kib"))
        USE_LIST_(kib);
    else if (!strcmp(name, "rows_cached_kib"))
        USE_LIST_(tensor_kib);
    else if (!strcmp(name, "elementwise_streams"))
        USE_LIST_(streams);
#undef USE_LIST_
    /* (rows_cached_kib: no program build per value, and its small values may change nothing) */
    *exhaustive = !strcmp(name, "partials_per_channel") || !strcmp(name, "rows_cached_kib");
    /* the list, the table's value, each within the parameter's range for this device */
    size_t count = 0;
    for (size_t i = 0; i <= n && count < MAX_CANDIDATES; i++) {
        long v = i < n ? list[i] : t->table[p];
        if (!strcmp(name, "work_group_size") && (v < 1 || (size_t)v > t->info.max_work_group_size))
            continue;
        if (clnorm_set_param(t->ctx, name, v) != CLNORM_OK)
            continue;
        size_t j = 0;
        while (j < count && out[j] < v)
            j++;
        if (j < count && out[j] == v)
            continue;
        memmove(out + j + 1, out + j, (count - j) * sizeof *out);
        out[j] = v;
        count++;
    }
    return count;
}

/* Candidates already measured, so that a later pass does not time them again. */
typedef struct memo {
    long values[512][MAX_PARAMS];
    size_t count;
} memo;

static int memo_seen(const tuner *t, memo *m, const long *values)
{
    for (size_t i = 0; i < m->count; i++)
        if (memcmp(m->values[i], values, t->params * sizeof(long)) == 0)
            return 1;
    if (m->count < 512)
        memcpy(m->values[m->count++], values, t->params * sizeof(long));
    return 0;
}

static void print_header(const tuner *t)
{
    printf("%4s", "#");
    for (size_t p = 0; p < t->params; p++)
        printf(" %5s", t->labels[p]);
    printf(" %11s %9s  %s\n", "geo-mean ms", "vs table", "note");
}

/* vs_table: the row's speedup over the built-in table, from the chain of paired ratios. */
static void print_row(const tuner *t, size_t index, const long *values, int changed,
                      const result *r, double vs_table, const char *note)
{
    printf("%4zu", index);
    for (size_t p = 0; p < t->params; p++) {
        char cell[24];
        snprintf(cell, sizeof cell, "%ld%s", values[p], (int)p == changed ? "*" : "");
        printf(" %5s", cell);
    }
    if (r->ok)
        printf(" %11.3f %8.3fx  %s", r->score, vs_table, note);
    else
        printf(" %11s %9s  rejected: %s", "-", "-", r->why);
    if (t->verbose && (r->ok || r->check_ratio > 0))
        printf(" [check %.2g of tolerance, %.1f s]", r->check_ratio, r->wall_s);
    printf("\n");
    fflush(stdout);
}

typedef struct search {
    long current[MAX_PARAMS];
    double vs_table; /* the current values' speedup over the table (chain of paired ratios) */
    result current_result;
    memo seen;
    size_t rows;
} search;

/* Times `values` (parameter p changed) against the current values and prints a row. Returns the
 * ratio candidate / current (INFINITY when rejected, already seen or stopped early). */
static double try_values(tuner *t, search *s, size_t p, const long *values, result *r)
{
    if (memo_seen(t, &s->seen, values))
        return INFINITY;
    evaluate(t, values, s->current, 0, t->runs, 1.5, r);
    const char *note = !r->ok ? "" : r->stopped_early ? "slower (stopped after one run)"
                                   : r->ratio < 0.98  ? "faster"
                                                      : "";
    print_row(t, s->rows++, values, (int)p, r, r->ok ? s->vs_table / r->ratio : 0, note);
    return r->ok && !r->stopped_early ? r->ratio : INFINITY;
}

/* Whether parameter p can change anything at the current values: the register kernels'
 * parameters (register_units, register_short_units, register_backward), the strided passes'
 * gather_units, cached_kib, flat_planes and rows_cached_kib serve only work-groups of many,
 * elementwise_streams only work-groups of one. */
static int parameter_matters(const tuner *t, const search *s, size_t p)
{
    const int many_only = !strncmp(t->names[p], "register_", 9) ||
                          !strcmp(t->names[p], "gather_units") || !strcmp(t->names[p], "cached_kib") ||
                          !strcmp(t->names[p], "flat_planes") ||
                          !strcmp(t->names[p], "rows_cached_kib");
    const int one_only = !strcmp(t->names[p], "elementwise_streams");
    if (!many_only && !one_only)
        return 1;
    for (size_t q = 0; q < t->params; q++)
        if (!strcmp(t->names[q], "work_group_size"))
            return many_only ? s->current[q] > 1 : s->current[q] == 1;
    return 1;
}

/* One coordinate: the best value of parameter p with the others fixed. Returns 1 when it moved. */
static int tune_parameter(tuner *t, search *s, size_t p)
{
    if (!parameter_matters(t, s, p))
        return 0;
    long values[MAX_CANDIDATES];
    int exhaustive = 0;
    size_t n = candidates_for(t, p, values, &exhaustive);
    if (!apply_values(t, s->current, NULL, 0))
        fail("cannot restore the current values: %s", clnorm_last_error(t->ctx));
    size_t at = 0;
    while (at < n && values[at] != s->current[p])
        at++;
    double best_ratio = 0.98; /* a change must win by 2% */
    long best_value = s->current[p];
    static result r, winner;
    long trial[MAX_PARAMS];
    memcpy(trial, s->current, sizeof trial);
    if (exhaustive || at == n) {
        for (size_t i = 0; i < n; i++) {
            if (values[i] == s->current[p])
                continue;
            trial[p] = values[i];
            double ratio = try_values(t, s, p, trial, &r);
            if (ratio < best_ratio)
                best_ratio = ratio, best_value = values[i], winner = r;
        }
    } else {
        /* outwards from the current value: up while each step is faster than the last, then, if
         * up gave nothing, down the same way (--quick: one step, up where there is one) */
        int tried = 0;
        for (int dir = 1; dir >= -1 && !(t->quick && tried); dir -= 2) {
            double last = 1.0;
            for (long i = (long)at + dir; i >= 0 && i < (long)n; i += dir) {
                tried = 1;
                trial[p] = values[i];
                double ratio = try_values(t, s, p, trial, &r);
                if (ratio < best_ratio)
                    best_ratio = ratio, best_value = values[i], winner = r;
                if (!(ratio < last) || t->quick)
                    break;
                last = ratio;
            }
            if (best_value != s->current[p])
                break;
        }
    }
    if (best_value == s->current[p])
        return 0;
    /* a second, independent paired measurement must agree: one run of the machine's noise can
     * make a candidate look 2% faster */
    trial[p] = best_value;
    evaluate(t, trial, s->current, 0, t->runs, 0, &r);
    int confirmed = r.ok && r.ratio < 0.98;
    print_row(t, s->rows++, trial, (int)p, &r, r.ok ? s->vs_table / r.ratio : 0,
              confirmed ? "confirmed: new current values"
                        : "not confirmed: kept the current values");
    if (!confirmed)
        return 0;
    s->current[p] = best_value;
    s->vs_table /= sqrt(best_ratio * r.ratio);
    s->current_result = winner;
    return 1;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: clnorm-tune [--device SELECTOR] [--quick] [--dry-run] [--out FILE] [--runs N]\n"
            "                   [--verbose]\n"
            "  --device SELECTOR  P:D, gpu, cpu, accelerator or part of a name (default: "
            "CLNORM_DEVICE, else the default device)\n"
            "  --quick            two shapes, smaller tensors, 3 runs, one step per parameter\n"
            "  --dry-run          search and print, write nothing\n"
            "  --out FILE         write the parameter file there instead of the device's file in\n"
            "                     the disk cache folder (clnorm_param_file)\n"
            "  --runs N           timed runs per operation and candidate (default 7, quick 3)\n"
            "  --verbose          per candidate: worst output error / tolerance, seconds\n");
}

static void log_warnings(void *user, int level, const char *message)
{
    (void)user;
    if (level == CLNORM_LOG_WARNING)
        fprintf(stderr, "clnorm-tune: warning: %s\n", message);
}

int main(int argc, char **argv)
{
    const char *device = NULL, *out_path = NULL;
    int dry_run = 0;
    static tuner tu;
    tuner *t = &tu;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--device") && i + 1 < argc)
            device = argv[++i];
        else if (!strcmp(argv[i], "--out") && i + 1 < argc)
            out_path = argv[++i];
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc)
            t->runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--quick"))
            t->quick = 1;
        else if (!strcmp(argv[i], "--dry-run"))
            dry_run = 1;
        else if (!strcmp(argv[i], "--verbose"))
            t->verbose = 1;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (t->runs == 0)
        t->runs = t->quick ? 3 : 7;
    if (t->runs < 1 || 3 * t->runs > MAX_RUNS)
        fail("--runs must be between 1 and %d", MAX_RUNS / 3);
    double start = now_s();

    char message[4096];
    clnorm_settings settings;
    clnorm_default_settings(&settings);
    settings.device = device;
    settings.enable_profiling = 1;
    settings.log = log_warnings;
    if (clnorm_context_create(&t->ctx, &settings, message, sizeof message) != CLNORM_OK)
        fail("%s", message);
    if (clnorm_context_device_info(t->ctx, &t->info) != CLNORM_OK)
        fail("%s", clnorm_last_error(t->ctx));
    const char *target = out_path ? out_path : clnorm_param_file(t->ctx);
    if (!dry_run && !target[0])
        fail("the context has no disk cache folder (CLNORM_CACHE_DIR=off?): give --out FILE or "
             "--dry-run");

    /* the parameters, their table values, and where the context's values came from */
    int overridden = 0;
    for (size_t i = 0; clnorm_param_name(i); i++) {
        if (i == MAX_PARAMS)
            fail("more than %d device parameters", MAX_PARAMS);
        const char *name = clnorm_param_name(i);
        t->names[i] = name;
        if (clnorm_get_default_param(t->ctx, name, &t->table[i]) != CLNORM_OK)
            fail("%s", clnorm_last_error(t->ctx));
        const char *source = clnorm_param_source(t->ctx, name);
        if (strcmp(source, "table") != 0) {
            long v = 0;
            clnorm_get_param(t->ctx, name, &v);
            printf("note: %s = %ld comes from the %s; the search starts from the table's %ld\n",
                   name, v, source, t->table[i]);
            overridden = 1;
        }
        /* a short column label: the initials of the name's words, and a digit where an earlier
         * parameter has the same initials (register_backward, row_block) */
        size_t l = 0;
        for (const char *c = name; *c && l + 1 < sizeof t->labels[i]; c++)
            if (c == name || c[-1] == '_')
                t->labels[i][l++] = *c;
        for (size_t j = 0, same = 1; j < i; j++)
            if (strcmp(t->labels[j], t->labels[i]) == 0 && l + 1 < sizeof t->labels[i]) {
                t->labels[i][l] = (char)('0' + ++same);
                t->labels[i][l + 1] = '\0';
            }
        t->params = i + 1;
    }
    if (overridden)
        printf("\n");

    setup_workload(t);
    printf("clnorm-tune %s on [%u:%u] %s (%s, driver %s), max work-group %zu\n",
           CLNORM_VERSION_STRING, t->info.platform_index, t->info.device_index, t->info.name,
           t->info.platform_name, t->info.driver_version, t->info.max_work_group_size);
    printf("workload: %zu operations, median of %d paired runs each, %zu rotating buffer sets "
           "of %.1f MiB tensors%s\n",
           t->num_cases, t->runs, t->num_sets, t->max_elements * 4.0 / 1048576.0,
           t->quick ? " (--quick)" : "");
    for (size_t i = 0; i < t->num_cases; i++)
        printf("  %s\n", t->cases[i].label);
    printf("columns:");
    for (size_t p = 0; p < t->params; p++)
        printf(" %s=%s", t->labels[p], t->names[p]);
    printf("\n(* = the value the row changes; geo-mean ms = the row's own times, which move with "
           "the machine's load;\n vs table = speedup over the built-in table from the paired "
           "runs, which decide)\n\n");
    print_header(t);

    static search s;
    static result table_result;
    memcpy(s.current, t->table, sizeof s.current);
    s.vs_table = 1.0;
    memo_seen(t, &s.seen, s.current);
    evaluate(t, s.current, NULL, 1, t->runs, 0, &table_result);
    if (!table_result.ok)
        fail("the built-in table's parameters fail: %s", table_result.why);
    print_row(t, s.rows++, s.current, -1, &table_result, 1.0, "built-in table");
    s.current_result = table_result;

    const int max_passes = t->quick ? 1 : 2;
    for (int pass = 0; pass < max_passes; pass++) {
        int changed = 0;
        for (size_t p = 0; p < t->params; p++)
            changed |= tune_parameter(t, &s, p);
        if (!changed)
            break;
    }

    /* the winner against the table in one longer paired measurement, for the reported speedup */
    int same = memcmp(s.current, t->table, t->params * sizeof(long)) == 0;
    static result final;
    double table_score = table_result.score, best_score = table_result.score, speedup = 1.0;
    const double *table_ms = table_result.op_ms, *best_ms = table_result.op_ms;
    if (!same) {
        int runs = t->quick ? t->runs : 3 * t->runs;
        evaluate(t, s.current, t->table, 0, runs, 0, &final);
        if (!final.ok)
            fail("the final comparison failed: %s", final.why);
        table_score = final.ref_score;
        best_score = final.score;
        speedup = 1.0 / final.ratio;
        table_ms = final.ref_ms;
        best_ms = final.op_ms;
        printf("\nfinal comparison, %d paired runs: built-in table %.3f ms, tuned %.3f ms, "
               "speedup %.3fx\n",
               runs, table_score, best_score, speedup);
        if (speedup < 1.02) {
            printf("the tuned values were not at least 2%% faster there: keeping the built-in "
                   "table's\n");
            memcpy(s.current, t->table, sizeof s.current);
            best_score = table_score;
            best_ms = table_ms;
            speedup = 1.0;
            same = 1;
        }
    } else {
        /* the table's first timing may be long ago: time it again for the summary */
        int runs = t->quick ? t->runs : 3 * t->runs;
        evaluate(t, t->table, NULL, 0, runs, 0, &final);
        if (!final.ok)
            fail("the built-in table's parameters failed when timed again: %s", final.why);
        table_score = best_score = final.score;
        table_ms = best_ms = final.op_ms;
        printf("\nfinal timing of the built-in table, %d runs: %.3f ms\n", runs, table_score);
    }

    printf("\nper operation (ms, medians):\n");
    printf("  %-36s %9s %9s %8s\n", "operation", "table", "tuned", "speedup");
    for (size_t i = 0; i < t->num_cases; i++)
        printf("  %-36s %9.3f %9.3f %7.2fx\n", t->cases[i].label, table_ms[i], best_ms[i],
               table_ms[i] / best_ms[i]);
    printf("\nbest:");
    for (size_t p = 0; p < t->params; p++)
        printf(" %s=%ld", t->names[p], s.current[p]);
    printf("\nresult: geo-mean %.3f ms, built-in table %.3f ms, speedup %.3fx%s; %zu candidates "
           "timed in %.0f s\n",
           best_score, table_score, speedup,
           same ? " (the built-in table is the best found)" : "", t->evaluated, now_s() - start);

    int status = 0;
    if (dry_run) {
        printf("--dry-run: nothing written\n");
    } else {
        char comment[512], date[32];
        time_t now = time(NULL);
        strftime(date, sizeof date, "%Y-%m-%d %H:%M", localtime(&now));
        snprintf(comment, sizeof comment,
                 "clnorm-tune%s, %s: geo-mean %.3f ms over %zu operations, built-in table %.3f "
                 "ms (%.3fx)",
                 t->quick ? " --quick" : "", date, best_score, t->num_cases, table_score,
                 speedup);
        if (!apply_values(t, s.current, message, sizeof message) ||
            clnorm_save_params(t->ctx, out_path, comment) != CLNORM_OK) {
            fprintf(stderr, "clnorm-tune: %s\n", clnorm_last_error(t->ctx));
            status = 1;
        } else {
            printf("wrote %s\n", target);
        }
    }
    release_workload(t);
    clnorm_context_release(t->ctx);

    /* a new context on the device must read the file just written */
    if (status == 0 && !dry_run && !out_path) {
        clnorm_context *check = NULL;
        settings.enable_profiling = 0;
        if (clnorm_context_create(&check, &settings, message, sizeof message) != CLNORM_OK)
            fail("%s", message);
        size_t from_file = 0;
        for (size_t p = 0; p < t->params; p++)
            from_file += strcmp(clnorm_param_source(check, t->names[p]), "file") == 0;
        printf("a new context reads %zu of %zu parameters from it%s\n", from_file, t->params,
               from_file < t->params ? " (CLNORM_PARAMS overrides the others)" : "");
        clnorm_context_release(check);
        if (from_file == 0)
            status = 1;
    }
    return status;
}

/* Reliability: concurrency (own contexts, wrapped contexts sharing one cl_context, one shared
 * context), a soak that measures host memory and live OpenCL objects, and faults (allocations the
 * device refuses, releasing a context with work in flight). See docs/reliability.md.
 *
 * Worker threads never call Criterion's assertions: they return a message, which the test's own
 * thread asserts on after joining them.
 *
 * Environment:
 *   CLNORM_REL_ITERS   iterations of the 5-call sequence per thread in the concurrency tests (400)
 *   CLNORM_SOAK_CALLS  calls in the soak (100000, the number)
 *   CLNORM_SOAK_RSS_MIB  allowed growth of the resident set over the soak (8)
 */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef RELIABILITY_STANDALONE
#include "support.h"
#else
/* A build without Criterion, for ThreadSanitizer: Criterion's runner (BoxFort's inheritable
 * arena) cannot start under TSan. Only what the concurrency tests use; see main() at the end. */
#include "clnorm.h"
#define Test(suite, name, ...) static void suite##_##name(void)
#define cr_assert(c, ...)                                                                          \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__, #c);            \
            abort();                                                                               \
        }                                                                                          \
    } while (0)
#define cr_assert_not(c, ...) cr_assert(!(c))
#define cr_assert_eq(a, b, ...) cr_assert((a) == (b))
#define cr_assert_neq(a, b, ...) cr_assert((a) != (b))
#define cr_assert_geq(a, b, ...) cr_assert((a) >= (b))
#define cr_assert_null(a, ...) cr_assert((a) == NULL)
#define cr_assert_not_null(a, ...) cr_assert((a) != NULL)
#define cr_expect cr_assert
#define cr_expect_eq cr_assert_eq
#define cr_expect_lt(a, b, ...) cr_assert((a) < (b))
#define cr_skip_test(...) return
#define CL_OK(call) cr_assert_eq((call), CL_SUCCESS)
#define CLNORM_OK_(ctx, call) cr_assert_eq((call), CLNORM_OK)
static clnorm_context *test_context(const clnorm_settings *settings)
{
    char message[4096];
    clnorm_context *ctx = NULL;
    if (clnorm_context_create(&ctx, settings, message, sizeof message) != CLNORM_OK) {
        fprintf(stderr, "context: %s\n", message);
        abort();
    }
    return ctx;
}
#endif

#define THREADS 4
#define CALLS_PER_ITER 5
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static size_t env_size(const char *name, size_t fallback)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return fallback;
    char *end;
    unsigned long long n = strtoull(v, &end, 10);
    return *end || n == 0 ? fallback : (size_t)n;
}

/* ---- the workload: a fixed sequence of mixed calls on one context ----------------------------- */

/* Batch norm N4 C8 6x6 (channels-first), LayerNorm 16 x 64, GroupNorm N2 C8 G4 5x5
 * (channels-last). */
enum { BN_N = 4, BN_C = 8, BN_S = 36, BN_TOTAL = BN_N * BN_C * BN_S };
enum { LN_ROWS = 16, LN_COLS = 64, LN_TOTAL = LN_ROWS * LN_COLS };
enum { GN_N = 2, GN_C = 8, GN_G = 4, GN_S = 25, GN_TOTAL = GN_N * GN_C * GN_S };

enum buf {
    B_X, B_Y, B_GAMMA, B_BETA, B_RMEAN, B_RVAR, B_SMEAN, B_SINV, B_DY, B_DX, B_DGAMMA, B_DBETA,
    L_X, L_Y, L_W, L_B, L_MEAN, L_RSTD, L_DY, L_DX, L_DW, L_DB,
    G_X, G_Y, G_W, G_B,
    NBUF
};
static const size_t buf_count[NBUF] = {
    BN_TOTAL, BN_TOTAL, BN_C, BN_C, BN_C, BN_C, BN_C, BN_C, BN_TOTAL, BN_TOTAL, BN_C, BN_C,
    LN_TOTAL, LN_TOTAL, LN_COLS, LN_COLS, LN_ROWS, LN_ROWS, LN_TOTAL, LN_TOTAL, LN_COLS, LN_COLS,
    GN_TOTAL, GN_TOTAL, GN_C, GN_C,
};
/* The outputs compared between runs. The running statistics depend on the number of training
 * forwards so far; everything else depends only on the fixed inputs. */
static const enum buf stateful_outputs[] = {B_RMEAN, B_RVAR};
static const enum buf outputs[] = {B_Y,  B_DX,   B_DGAMMA, B_DBETA, L_Y,
                                   L_DX, L_DW,   L_DB,     G_Y,     L_MEAN};

typedef struct workload {
    clnorm_context *ctx;
    cl_command_queue queue; /* where the reads go: the context's queue */
    cl_mem m[NBUF];
    size_t calls; /* calls made so far */
    char err[1024];
} workload;

static int fail(workload *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(workload *w, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->err, sizeof w->err, fmt, ap);
    va_end(ap);
    return -1;
}

/* Deterministic inputs: the same for every workload. */
static float input_value(enum buf b, size_t i)
{
    uint32_t h = (uint32_t)(b * 2654435761u) ^ (uint32_t)(i * 40503u + 17u);
    h ^= h >> 13;
    h *= 0x5bd1e995u;
    h ^= h >> 15;
    float u = (float)(h & 0xffffff) / (float)0x1000000; /* [0, 1) */
    switch (b) {
    case B_GAMMA: case L_W: case G_W: return 0.5f + u;
    case B_BETA: case L_B: case G_B: return u - 0.5f;
    case B_RMEAN: return 0;
    case B_RVAR: return 1;
    default: return 4 * u - 1.5f;
    }
}

static int wl_init(workload *w, clnorm_context *ctx)
{
    memset(w, 0, sizeof *w);
    w->ctx = ctx;
    w->queue = clnorm_context_queue(ctx);
    float *host = malloc(BN_TOTAL * sizeof(float) > LN_TOTAL * sizeof(float)
                             ? BN_TOTAL * sizeof(float)
                             : LN_TOTAL * sizeof(float));
    if (!host)
        return fail(w, "out of host memory");
    for (int b = 0; b < NBUF; b++) {
        for (size_t i = 0; i < buf_count[b]; i++)
            host[i] = input_value((enum buf)b, i);
        cl_int err;
        w->m[b] = clCreateBuffer(clnorm_context_cl_context(ctx),
                                 CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR,
                                 buf_count[b] * sizeof(float), host, &err);
        if (err != CL_SUCCESS) {
            free(host);
            return fail(w, "clCreateBuffer(%d): %s", b, clnorm_cl_error_name(err));
        }
    }
    free(host);
    return 0;
}

static void wl_free(workload *w)
{
    for (int b = 0; b < NBUF; b++)
        if (w->m[b])
            clReleaseMemObject(w->m[b]);
    memset(w->m, 0, sizeof w->m);
}

/* One call of the sequence, waiting on *prev and replacing it with the call's event. */
#define STEP(w, name, call)                                                                        \
    do {                                                                                           \
        cl_event next_ = NULL;                                                                     \
        cl_uint nw_ = prev ? 1 : 0;                                                                \
        const cl_event *wl_ = prev ? &prev : NULL;                                                 \
        (void)nw_;                                                                                 \
        (void)wl_;                                                                                 \
        clnorm_status s_ = (call);                                                                 \
        if (s_ != CLNORM_OK) {                                                                     \
            if (prev)                                                                              \
                clReleaseEvent(prev);                                                              \
            return fail((w), "call %zu (%s) -> %s: %s", (w)->calls, (name),                     \
                        clnorm_status_name(s_), clnorm_last_error((w)->ctx));                      \
        }                                                                                          \
        if (!next_) {                                                                              \
            if (prev)                                                                              \
                clReleaseEvent(prev);                                                              \
            return fail((w), "call %zu (%s) returned no event", (w)->calls, (name));             \
        }                                                                                          \
        if (prev)                                                                                  \
            clReleaseEvent(prev);                                                                  \
        prev = next_;                                                                              \
        (w)->calls++;                                                                              \
    } while (0)

/* Enqueues `iters` iterations of the 5-call sequence, each call waiting on the one before. The
 * last event is handed to *last (NULL: waited for and released). */
static int wl_enqueue(workload *w, size_t iters, cl_event *last)
{
    cl_mem *m = w->m;
    clnorm_shape bn_shape = {BN_N, BN_C, 2, {6, 6, 0}, CLNORM_CHANNELS_FIRST};
    clnorm_shape gn_shape = {GN_N, GN_C, 2, {5, 5, 0}, CLNORM_CHANNELS_LAST};
    clnorm_bn_config cfg;
    clnorm_bn_default_config(&cfg);
    clnorm_bn_buffers bf = {.x = m[B_X],
                            .y = m[B_Y],
                            .gamma = m[B_GAMMA],
                            .beta = m[B_BETA],
                            .running_mean = m[B_RMEAN],
                            .running_var = m[B_RVAR],
                            .save_mean = m[B_SMEAN],
                            .save_invstd = m[B_SINV]};
    clnorm_bn_grad_buffers bg = {.x = m[B_X],
                                 .dy = m[B_DY],
                                 .gamma = m[B_GAMMA],
                                 .mean = m[B_SMEAN],
                                 .invstd = m[B_SINV],
                                 .dx = m[B_DX],
                                 .dgamma = m[B_DGAMMA],
                                 .dbeta = m[B_DBETA]};
    clnorm_norm_buffers lf = {.x = m[L_X],
                              .weight = m[L_W],
                              .bias = m[L_B],
                              .y = m[L_Y],
                              .mean = m[L_MEAN],
                              .rstd = m[L_RSTD]};
    clnorm_norm_grad_buffers lg = {.x = m[L_X],
                                   .dy = m[L_DY],
                                   .weight = m[L_W],
                                   .mean = m[L_MEAN],
                                   .rstd = m[L_RSTD],
                                   .dx = m[L_DX],
                                   .dweight = m[L_DW],
                                   .dbias = m[L_DB]};
    clnorm_norm_buffers gf = {.x = m[G_X], .weight = m[G_W], .bias = m[G_B], .y = m[G_Y]};
    cl_event prev = NULL;
    for (size_t i = 0; i < iters; i++) {
        STEP(w, "bn_forward_training",
             clnorm_bn_forward_training(w->ctx, &bn_shape, &cfg, &bf, nw_, wl_, &next_));
        STEP(w, "bn_backward", clnorm_bn_backward(w->ctx, &bn_shape, &cfg, &bg, nw_, wl_, &next_));
        STEP(w, "layernorm_forward",
             clnorm_layernorm_forward(w->ctx, LN_ROWS, LN_COLS, 1e-5, &lf, nw_, wl_, &next_));
        STEP(w, "layernorm_backward",
             clnorm_layernorm_backward(w->ctx, LN_ROWS, LN_COLS, &lg, nw_, wl_, &next_));
        STEP(w, "groupnorm_forward",
             clnorm_groupnorm_forward(w->ctx, &gn_shape, GN_G, 1e-5, &gf, nw_, wl_, &next_));
    }
    if (last) {
        *last = prev;
        return 0;
    }
    if (prev) {
        cl_int err = clWaitForEvents(1, &prev);
        clReleaseEvent(prev);
        if (err != CL_SUCCESS)
            return fail(w, "clWaitForEvents: %s", clnorm_cl_error_name(err));
    }
    return 0;
}

#define OUT_MAX (2 * BN_C + 4 * BN_TOTAL + 8 * LN_TOTAL + GN_TOTAL)

/* Reads the compared buffers into out (blocking); returns the number of floats, or -1. */
static long wl_read(workload *w, int with_state, float *out)
{
    size_t n = 0;
    for (size_t k = 0; k < (with_state ? ARRAY_LEN(stateful_outputs) : 0) + ARRAY_LEN(outputs);
         k++) {
        enum buf b = k < (with_state ? ARRAY_LEN(stateful_outputs) : 0)
                         ? stateful_outputs[k]
                         : outputs[k - (with_state ? ARRAY_LEN(stateful_outputs) : 0)];
        cl_int err = clEnqueueReadBuffer(w->queue, w->m[b], CL_TRUE, 0,
                                         buf_count[b] * sizeof(float), out + n, 0, NULL, NULL);
        if (err != CL_SUCCESS)
            return fail(w, "clEnqueueReadBuffer: %s", clnorm_cl_error_name(err));
        n += buf_count[b];
    }
    return (long)n;
}

/* ---- concurrency ------------------------------------------------------------------------------ */

typedef struct worker {
    pthread_t thread;
    int mode; /* 0: creates its own context; 1: uses ctx (wrapped or shared) */
    clnorm_context *ctx;
    size_t iters;
    workload w;
    float out[OUT_MAX];
    long out_count;
    int failed;
} worker;

static void *worker_main(void *arg)
{
    worker *k = arg;
    clnorm_context *ctx = k->ctx;
    if (k->mode == 0) {
        char message[900];
        clnorm_status st = clnorm_context_create(&ctx, NULL, message, sizeof message);
        if (st != CLNORM_OK) {
            snprintf(k->w.err, sizeof k->w.err, "context: %s", message);
            k->failed = 1;
            return NULL;
        }
    }
    if (wl_init(&k->w, ctx) || wl_enqueue(&k->w, k->iters, NULL) ||
        (k->out_count = wl_read(&k->w, 1, k->out)) < 0)
        k->failed = 1;
    wl_free(&k->w);
    if (k->mode == 0)
        clnorm_context_release(ctx);
    return NULL;
}

/* The single-threaded run of the same sequence, on a context of its own. */
static long reference_run(size_t iters, float *out)
{
    clnorm_context *ctx = test_context(NULL);
    workload w;
    int rc = wl_init(&w, ctx);
    cr_assert_eq(rc, 0, "%s", w.err);
    rc = wl_enqueue(&w, iters, NULL);
    cr_assert_eq(rc, 0, "%s", w.err);
    long n = wl_read(&w, 1, out);
    cr_assert_geq(n, 0, "%s", w.err);
    wl_free(&w);
    clnorm_context_release(ctx);
    return n;
}

/* Starts the workers, joins them, checks every result against the reference. */
static void run_workers(worker *ws, const char *label)
{
    size_t iters = ws[0].iters;
    static float ref[OUT_MAX];
    long ref_n = reference_run(iters, ref);
    for (int t = 0; t < THREADS; t++)
        cr_assert_eq(pthread_create(&ws[t].thread, NULL, worker_main, &ws[t]), 0);
    for (int t = 0; t < THREADS; t++)
        pthread_join(ws[t].thread, NULL);
    for (int t = 0; t < THREADS; t++) {
        cr_assert_not(ws[t].failed, "%s: thread %d: %s", label, t, ws[t].w.err);
        cr_assert_eq(ws[t].w.calls, iters * CALLS_PER_ITER);
        cr_assert_eq(ws[t].out_count, ref_n);
        size_t first = 0;
        while (first < (size_t)ref_n && !memcmp(&ws[t].out[first], &ref[first], sizeof(float)))
            first++;
        cr_assert_eq(first, (size_t)ref_n,
                     "%s: thread %d differs from the single-threaded run at output %zu: %a vs %a",
                     label, t, first, first < (size_t)ref_n ? ws[t].out[first] : 0.0f,
                     first < (size_t)ref_n ? ref[first] : 0.0f);
    }
    fprintf(stderr, "reliability: %s: %d threads x %zu calls, bit-identical to one thread\n",
            label, THREADS, iters * CALLS_PER_ITER);
}

Test(concurrency, threads_with_their_own_contexts_match_one_thread, .timeout = 900)
{
    static worker ws[THREADS];
    memset(ws, 0, sizeof ws);
    for (int t = 0; t < THREADS; t++) {
        ws[t].mode = 0;
        ws[t].iters = env_size("CLNORM_REL_ITERS", 400);
    }
    run_workers(ws, "own contexts");
}

Test(concurrency, wrapped_contexts_sharing_one_cl_context_with_their_own_queues,
     .timeout = 900)
{
    clnorm_context *base = test_context(NULL);
    cl_context clc = clnorm_context_cl_context(base);
    cl_device_id dev = clnorm_context_device(base);
    static worker ws[THREADS];
    memset(ws, 0, sizeof ws);
    cl_command_queue queues[THREADS];
    for (int t = 0; t < THREADS; t++) {
        cl_int err;
        queues[t] = clCreateCommandQueue(clc, dev, 0, &err);
        cr_assert_eq(err, CL_SUCCESS, "clCreateCommandQueue: %s", clnorm_cl_error_name(err));
        char message[4096];
        clnorm_status st =
            clnorm_context_wrap(&ws[t].ctx, clc, dev, queues[t], NULL, message, sizeof message);
        cr_assert_eq(st, CLNORM_OK, "wrap: %s", message);
        cr_assert_eq(clnorm_context_queue(ws[t].ctx), queues[t]);
        ws[t].mode = 1;
        ws[t].iters = env_size("CLNORM_REL_ITERS", 400);
    }
    run_workers(ws, "wrapped contexts on one cl_context");
    for (int t = 0; t < THREADS; t++) {
        clnorm_context_release(ws[t].ctx);
        clReleaseCommandQueue(queues[t]);
    }
    clnorm_context_release(base);
}

Test(concurrency, threads_sharing_one_context_match_one_thread, .timeout = 900)
{
    clnorm_context *ctx = test_context(NULL);
    static worker ws[THREADS];
    memset(ws, 0, sizeof ws);
    for (int t = 0; t < THREADS; t++) {
        ws[t].mode = 1;
        ws[t].ctx = ctx;
        ws[t].iters = env_size("CLNORM_REL_ITERS", 400);
    }
    run_workers(ws, "one shared context");
    clnorm_context_release(ctx);
}

/* ---- soak ------------------------------------------------------------------------------------- */

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return -1;
    long size = 0, resident = -1;
    if (fscanf(f, "%ld %ld", &size, &resident) != 2)
        resident = -1;
    fclose(f);
    return resident < 0 ? -1 : resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static cl_uint context_refs(cl_context c)
{
    cl_uint n = 0;
    cl_int err = clGetContextInfo(c, CL_CONTEXT_REFERENCE_COUNT, sizeof n, &n, NULL);
    cr_assert_eq(err, CL_SUCCESS);
    return n;
}

static cl_uint queue_refs(cl_command_queue q)
{
    cl_uint n = 0;
    cl_int err = clGetCommandQueueInfo(q, CL_QUEUE_REFERENCE_COUNT, sizeof n, &n, NULL);
    cr_assert_eq(err, CL_SUCCESS);
    return n;
}

/* Live OpenCL objects are counted through reference counts: most implementations (PoCL among
 * them) make buffers, queues, programs and user events retain their context, and events retain
 * their queue (kernels retain their program, which retains the context). This checks that the
 * device at hand does so; returns 0 when it does not (then the counts prove nothing). */
static int reference_counts_track_objects(clnorm_context *ctx)
{
    cl_context c = clnorm_context_cl_context(ctx);
    cl_command_queue q = clnorm_context_queue(ctx);
    clFinish(q);
    cl_uint c0 = context_refs(c), q0 = queue_refs(q);
    cl_int err;
    cl_mem b = clCreateBuffer(c, CL_MEM_READ_WRITE, 64, NULL, &err);
    cr_assert_eq(err, CL_SUCCESS);
    cl_uint c1 = context_refs(c);
    cl_event ev;
    float host[16] = {0};
    CL_OK(clEnqueueWriteBuffer(q, b, CL_TRUE, 0, sizeof host, host, 0, NULL, &ev));
    clFinish(q);
    cl_uint q1 = queue_refs(q);
    clReleaseEvent(ev);
    clReleaseMemObject(b);
    clFinish(q);
    cl_uint c2 = context_refs(c), q2 = queue_refs(q);
    fprintf(stderr,
            "reliability: reference counts: context %u -> %u with a buffer -> %u; queue %u -> %u "
            "with an event -> %u\n",
            c0, c1, c2, q0, q1, q2);
    return c1 == c0 + 1 && c2 == c0 && q1 == q0 + 1 && q2 == q0;
}

Test(soak, mixed_calls_keep_memory_objects_and_results_steady, .timeout = 1800)
{
    const size_t calls = env_size("CLNORM_SOAK_CALLS", 100000);
    const size_t iters = (calls + CALLS_PER_ITER - 1) / CALLS_PER_ITER;
    const long allowed_kib = (long)env_size("CLNORM_SOAK_RSS_MIB", 8) * 1024;
    const size_t warm_up = 100, batch = 8, check_every = 250;
    clnorm_context *ctx = test_context(NULL);
    cl_context c = clnorm_context_cl_context(ctx);
    cl_command_queue q = clnorm_context_queue(ctx);
    workload w;
    cr_assert_eq(wl_init(&w, ctx), 0, "%s", w.err);

    static float first[OUT_MAX], now[OUT_MAX];
    cr_assert_eq(wl_enqueue(&w, 1, NULL), 0, "%s", w.err);
    long n = wl_read(&w, 0, first);
    cr_assert_geq(n, 0, "%s", w.err);
    cr_assert_eq(wl_enqueue(&w, warm_up, NULL), 0, "%s", w.err);
    int counted = reference_counts_track_objects(ctx);
    /* The baseline is taken in the state the end is: after the workload's calls, the reads of
     * its results and a finish. PoCL keeps each buffer's last command's event (a reference on
     * the queue) until the next command on that buffer. */
    cr_assert_eq(wl_enqueue(&w, batch, NULL), 0, "%s", w.err);
    cr_assert_eq(wl_read(&w, 0, now), n, "%s", w.err);
    CLNORM_OK_(ctx, clnorm_finish(ctx));
    const cl_uint c0 = context_refs(c), q0 = queue_refs(q);
    const long rss0 = rss_kib();
    time_t start = time(NULL);

    size_t done = 0, checks = 0;
    while (done < iters) {
        size_t k = iters - done < batch ? iters - done : batch;
        cr_assert_eq(wl_enqueue(&w, k, NULL), 0, "%s", w.err);
        done += k;
        if (done % check_every < batch || done == iters) {
            cr_assert_eq(wl_read(&w, 0, now), n, "%s", w.err);
            cr_assert(!memcmp(now, first, (size_t)n * sizeof(float)),
                      "results after %zu calls differ from the first iteration's",
                      done * CALLS_PER_ITER);
            checks++;
        }
    }
    CLNORM_OK_(ctx, clnorm_finish(ctx));
    const long rss1 = rss_kib();
    const cl_uint c1 = context_refs(c), q1 = queue_refs(q);
    fprintf(stderr,
            "reliability: soak: %zu calls after %zu warm-up calls in %ld s; RSS %ld KiB -> %ld "
            "KiB (%+ld KiB); context references %u -> %u, queue references %u -> %u; %zu result "
            "checks bit-identical\n",
            done * CALLS_PER_ITER, (warm_up + 1 + batch) * CALLS_PER_ITER, (long)(time(NULL) - start),
            rss0, rss1, rss1 - rss0, c0, c1, q0, q1, checks);

    if (counted) {
        /* "do not grow": PoCL may drop one event it still held at the first count */
        cr_expect_leq(c1, c0, "live objects of the OpenCL context grew: %u -> %u", c0, c1);
        cr_expect_leq(q1, q0, "live events of the queue grew: %u -> %u", q0, q1);
    } else {
        fprintf(stderr, "reliability: soak: this device's reference counts do not follow its "
                        "objects; live objects not checked\n");
    }
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    /* AddressSanitizer keeps freed memory in quarantine (256 MiB by default), ThreadSanitizer its
     * shadow and history: the resident set measures the sanitizer, not the library. */
    fprintf(stderr, "reliability: soak: under a sanitizer, RSS growth (limit %ld KiB) is not "
                    "asserted\n", allowed_kib);
#else
    cr_expect(rss0 > 0 && rss1 > 0, "no /proc/self/statm");
    cr_expect_lt(rss1 - rss0, allowed_kib, "resident set grew by %ld KiB over %zu calls",
                 rss1 - rss0, done * CALLS_PER_ITER);
#endif
    wl_free(&w);
    clnorm_context_release(ctx);
}

/* ---- faults ----------------------------------------------------------------------------------- */

/* After a failure the context runs the workload and gets the reference results. */
static void assert_context_still_works(clnorm_context *ctx, const char *after)
{
    static float ref[OUT_MAX], got[OUT_MAX];
    long n = reference_run(2, ref);
    workload w;
    cr_assert_eq(wl_init(&w, ctx), 0, "%s", w.err);
    cr_assert_eq(wl_enqueue(&w, 2, NULL), 0, "after %s: %s", after, w.err);
    cr_assert_eq(wl_read(&w, 1, got), n, "%s", w.err);
    cr_assert(!memcmp(got, ref, (size_t)n * sizeof(float)), "after %s: results differ", after);
    wl_free(&w);
}

Test(faults, layers_larger_than_the_largest_allocation_fail_cleanly)
{
    clnorm_context *ctx = test_context(NULL);
    clnorm_device_info info;
    CLNORM_OK_(ctx, clnorm_context_device_info(ctx, &info));
    const size_t too_many = (size_t)(info.max_alloc_bytes / sizeof(float)) + 1;

    clnorm_featurenorm *ln = (clnorm_featurenorm *)&info;
    clnorm_layernorm_options lo;
    clnorm_layernorm_default_options(&lo, too_many);
    clnorm_status st = clnorm_featurenorm_create_layernorm(ctx, &lo, &ln);
    cr_assert_eq(st, CLNORM_UNSUPPORTED, "LayerNorm of %zu: %s", too_many,
                 clnorm_status_name(st));
    cr_assert_null(ln);
    cr_assert_neq(clnorm_last_error(ctx)[0], '\0');
    cr_assert(strstr(clnorm_last_error(ctx), "normalized_size") ||
                  strstr(clnorm_last_error(ctx), "largest"),
              "message: %s", clnorm_last_error(ctx));

    clnorm_featurenorm *gn = (clnorm_featurenorm *)&info;
    clnorm_groupnorm_options go;
    clnorm_groupnorm_default_options(&go, 1, too_many);
    st = clnorm_featurenorm_create_groupnorm(ctx, &go, &gn);
    cr_assert_eq(st, CLNORM_UNSUPPORTED, "GroupNorm of %zu: %s", too_many, clnorm_status_name(st));
    cr_assert_null(gn);

    clnorm_batchnorm *bn = (clnorm_batchnorm *)&info;
    clnorm_batchnorm_options bo;
    clnorm_batchnorm_default_options(&bo, too_many);
    st = clnorm_batchnorm_create(ctx, &bo, &bn);
    cr_assert_eq(st, CLNORM_UNSUPPORTED, "BatchNorm of %zu: %s", too_many, clnorm_status_name(st));
    cr_assert_null(bn);

    assert_context_still_works(ctx, "refused layers");
    clnorm_context_release(ctx);
}

/* LayerNorm of rows x 1: the tensor (4 bytes a row) fits the largest allocation, the per-row
 * coefficient workspace (16 bytes a row) does not. */
Test(faults, a_workspace_the_device_cannot_allocate_fails_cleanly_and_the_context_goes_on)
{
    clnorm_context *ctx = test_context(NULL);
    clnorm_device_info info;
    CLNORM_OK_(ctx, clnorm_context_device_info(ctx, &info));
    const size_t rows = (size_t)(info.max_alloc_bytes / 16) + 1;
    cl_int err;
    cl_mem x = clCreateBuffer(clnorm_context_cl_context(ctx), CL_MEM_READ_WRITE,
                              rows * sizeof(float), NULL, &err);
    if (err != CL_SUCCESS) {
        clnorm_context_release(ctx);
        cr_skip_test("the device refuses a buffer of %zu bytes (%s)", rows * sizeof(float),
                     clnorm_cl_error_name(err));
    }
    clnorm_norm_buffers b = {.x = x, .y = x};
    cl_event ev = (cl_event)&info;
    clnorm_status st = clnorm_layernorm_forward(ctx, rows, 1, 1e-5, &b, 0, NULL, &ev);
    fprintf(stderr, "reliability: LayerNorm %zu x 1 (%zu MiB tensor): %s: %s\n", rows,
            rows * sizeof(float) >> 20, clnorm_status_name(st), clnorm_last_error(ctx));
    cr_assert(st == CLNORM_UNSUPPORTED || st == CLNORM_OPENCL_ERROR ||
                  st == CLNORM_OUT_OF_HOST_MEMORY,
              "LayerNorm %zu x 1 -> %s", rows, clnorm_status_name(st));
    cr_assert_null(ev, "a failed call returned an event");
    cr_assert_neq(clnorm_last_error(ctx)[0], '\0');
    clReleaseMemObject(x);
    assert_context_still_works(ctx, "a refused workspace");
    clnorm_context_release(ctx);
}

Test(faults, releasing_a_context_with_work_in_flight_is_safe)
{
    for (int round = 0; round < 3; round++) {
        clnorm_context *ctx = test_context(NULL);
        workload w;
        cr_assert_eq(wl_init(&w, ctx), 0, "%s", w.err);
        cl_event last = NULL;
        cr_assert_eq(wl_enqueue(&w, 20, &last), 0, "%s", w.err);
        cr_assert_not_null(last);
        /* no wait: the queue still holds most of the 100 calls */
        clnorm_context_release(ctx);
        /* the caller's event outlives the context and completes */
        cl_int status = CL_QUEUED;
        CL_OK(clWaitForEvents(1, &last));
        CL_OK(clGetEventInfo(last, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof status, &status,
                             NULL));
        cr_assert_eq(status, CL_COMPLETE);
        clReleaseEvent(last);
        /* and so do the caller's buffers, with the results of the calls */
        float y[LN_TOTAL];
        cl_int err;
        cl_context clc;
        CL_OK(clGetMemObjectInfo(w.m[L_Y], CL_MEM_CONTEXT, sizeof clc, &clc, NULL));
        cl_device_id dev;
        CL_OK(clGetContextInfo(clc, CL_CONTEXT_DEVICES, sizeof dev, &dev, NULL));
        cl_command_queue q = clCreateCommandQueue(clc, dev, 0, &err);
        cr_assert_eq(err, CL_SUCCESS);
        CL_OK(clEnqueueReadBuffer(q, w.m[L_Y], CL_TRUE, 0, sizeof y, y, 0, NULL, NULL));
        for (size_t i = 0; i < LN_TOTAL; i++)
            cr_assert(isfinite(y[i]), "y[%zu] = %g", i, y[i]);
        clReleaseCommandQueue(q);
        wl_free(&w);
    }
}

#ifdef RELIABILITY_STANDALONE
int main(void)
{
    concurrency_threads_with_their_own_contexts_match_one_thread();
    concurrency_wrapped_contexts_sharing_one_cl_context_with_their_own_queues();
    concurrency_threads_sharing_one_context_match_one_thread();
    fprintf(stderr, "reliability: concurrency tests passed\n");
    return 0;
}
#endif

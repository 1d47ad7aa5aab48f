/* Allocation and OpenCL failures below the device's limits, injected one at a time (built only
 * with meson -Dfault_injection=true: see host/fault_injection.h and tests/fault_injection.h).
 *
 * For each operation below and k = 1, 2, ...: a fresh context (and the operation's buffers,
 * layers, files) is made without faults; the k-th wrapped call inside the operation then fails.
 * Until k passes the number of wrapped calls the operation makes, each try asserts:
 *   - a fault either makes the call fail with a status and a message that starts with the
 *     status's name (and, for an OpenCL failure, names the failing call and its error), or is
 *     absorbed (the library has a way around it, e.g. a disk-cache file it cannot load is
 *     rebuilt) and then the result is the reference result;
 *   - no event comes back from a failed call, and a failed create leaves *out NULL;
 *   - when the fault came before the operation enqueued anything, its outputs are untouched;
 *     when it came after (a later kernel could not be enqueued), the earlier kernels still run:
 *     that is counted and reported (see include/clnorm.h), not hidden;
 *   - the context works afterwards: the same call without faults, on the same context, gives
 *     the reference result (bit for bit: the results are deterministic);
 *   - nothing leaks: once the context and layers are released, the library holds no reference
 *     to any OpenCL object it created (counted by the wrappers: clnorm_fault_live), and the
 *     run.sh step runs this program under AddressSanitizer + LeakSanitizer for host memory.
 * The reference result of each operation comes from the same steps without any fault. */
#define _XOPEN_SOURCE 700
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fault_injection.h"
#include "support.h"

#define MAX_BUFFERS 10
#define SENTINEL_EVENT ((cl_event)(uintptr_t)0xfa17)

typedef struct blob {
    unsigned char *data;
    size_t size;
} blob;

static void blob_add(blob *b, const void *p, size_t n)
{
    b->data = realloc(b->data, b->size + n + 1);
    memcpy(b->data + b->size, p, n);
    b->size += n;
}

static void blob_text(blob *b, const char *text)
{
    blob_add(b, text, strlen(text));
}

static int blob_eq(const blob *a, const blob *b)
{
    return a->size == b->size && (a->size == 0 || !memcmp(a->data, b->data, a->size));
}

static void blob_free(blob *b)
{
    free(b->data);
    b->data = NULL;
    b->size = 0;
}

/* What one try works with. */
typedef struct env {
    const struct fault_op *op;
    clnorm_context *ctx; /* NULL while a create op has not made it */
    clnorm_context *made;
    cl_context app_ctx; /* clnorm_context_wrap's application objects */
    cl_command_queue app_queue;
    cl_device_id device;
    cl_mem m[MAX_BUFFERS];
    clnorm_batchnorm *bn, *made_bn;
    clnorm_featurenorm *fn, *made_fn;
    char dir[512], path[600], other_path[600];
    char message[4096]; /* clnorm_context_create/_wrap's error_message */
    cl_event ev;
} env;

typedef struct fault_op {
    const char *name;
    int creates_context; /* the call makes the context (the try starts without one) */
    int warm;            /* the context's programs are built before arming */
    int no_disk_cache;
    int count; /* buffers */
    size_t floats[MAX_BUFFERS];
    const char *kinds; /* per buffer: 'x' data, 'p' positive data, 'o' output (NaN) */
    void (*setup)(env *e);          /* layers, files: without faults */
    clnorm_status (*call)(env *e); /* under injection */
    void (*state)(env *e, blob *b); /* what a failed call must leave untouched */
    void (*result)(env *e, blob *b); /* what a successful call produced */
    int returns_event;
} fault_op;

/* ---- the probe: a LayerNorm forward on a context, to show that it works ------------------ */

enum { PROBE_ROWS = 4, PROBE_COLS = 30 };

static void probe(clnorm_context *ctx, blob *b)
{
    float x[PROBE_ROWS * PROBE_COLS], y[PROBE_ROWS * PROBE_COLS];
    for (int i = 0; i < PROBE_ROWS * PROBE_COLS; i++)
        x[i] = (float)sin(0.3 * i) * 3.0f + 1.0f;
    cl_mem dx = test_buffer(ctx, PROBE_ROWS * PROBE_COLS, x),
           dy = test_buffer(ctx, PROBE_ROWS * PROBE_COLS, NULL);
    clnorm_norm_buffers nb = {.x = dx, .y = dy};
    CLNORM_OK_(ctx, clnorm_layernorm_forward(ctx, PROBE_ROWS, PROBE_COLS, 1e-5, &nb, 0, NULL, NULL));
    test_read(ctx, dy, PROBE_ROWS * PROBE_COLS, y);
    blob_add(b, y, sizeof y);
    clReleaseMemObject(dx);
    clReleaseMemObject(dy);
}

/* ---- buffers ---------------------------------------------------------------------------------- */

static void reset_buffers(env *e)
{
    const fault_op *op = e->op;
    for (int i = 0; i < op->count; i++) {
        float *v = malloc(op->floats[i] * sizeof(float));
        for (size_t k = 0; k < op->floats[i]; k++)
            v[k] = op->kinds[i] == 'o'   ? NAN
                   : op->kinds[i] == 'p' ? 0.75f + 0.125f * (float)(k % 5)
                                         : (float)sin(0.37 * (double)k + i) * 2.0f + 0.25f;
        CL_OK(clEnqueueWriteBuffer(clnorm_context_queue(e->ctx), e->m[i], CL_TRUE, 0,
                                   op->floats[i] * sizeof(float), v, 0, NULL, NULL));
        free(v);
    }
}

static void read_buffers(env *e, blob *b)
{
    CL_OK(clFinish(clnorm_context_queue(e->ctx)));
    for (int i = 0; i < e->op->count; i++) {
        float *v = malloc(e->op->floats[i] * sizeof(float));
        test_read(e->ctx, e->m[i], e->op->floats[i], v);
        blob_add(b, v, e->op->floats[i] * sizeof(float));
        free(v);
    }
}

static void read_mem(clnorm_context *ctx, cl_mem m, blob *b)
{
    if (!m) {
        blob_text(b, "(none)");
        return;
    }
    size_t size = 0;
    CL_OK(clGetMemObjectInfo(m, CL_MEM_SIZE, sizeof size, &size, NULL));
    unsigned char *v = malloc(size);
    CL_OK(clEnqueueReadBuffer(clnorm_context_queue(ctx), m, CL_TRUE, 0, size, v, 0, NULL, NULL));
    blob_add(b, v, size);
    free(v);
}

static void bn_layer_blob(clnorm_context *ctx, clnorm_batchnorm *bn, blob *b)
{
    if (!bn) {
        blob_text(b, "(no layer)");
        return;
    }
    clnorm_batchnorm_buffers bb;
    CLNORM_OK_(ctx, clnorm_batchnorm_get_buffers(bn, &bb));
    cl_mem all[] = {bb.gamma, bb.beta, bb.running_mean, bb.running_var, bb.dgamma, bb.dbeta,
                    bb.save_mean, bb.save_invstd};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        read_mem(ctx, all[i], b);
    char text[128];
    snprintf(text, sizeof text, "mode %d tracked %lld", (int)clnorm_batchnorm_mode(bn),
             (long long)clnorm_batchnorm_num_batches_tracked(bn));
    blob_text(b, text);
}

static void fn_layer_blob(clnorm_context *ctx, clnorm_featurenorm *fn, blob *b)
{
    if (!fn) {
        blob_text(b, "(no layer)");
        return;
    }
    clnorm_featurenorm_buffers fb;
    clnorm_featurenorm_info info;
    CLNORM_OK_(ctx, clnorm_featurenorm_get_buffers(fn, &fb));
    CLNORM_OK_(ctx, clnorm_featurenorm_get_info(fn, &info));
    cl_mem all[] = {fb.weight, fb.bias, fb.dweight, fb.dbias, fb.running_mean, fb.running_var,
                    fb.mean, fb.rstd};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        read_mem(ctx, all[i], b);
    char text[256];
    snprintf(text, sizeof text, "kind %d mode %d size %zu groups %zu eps %a momentum %a saved %zu",
             (int)info.kind, (int)info.mode, info.size, info.groups, info.eps, info.momentum,
             fb.saved_count);
    blob_text(b, text);
}

/* The files in the try's folder (a failed save leaves none behind, not even a temporary one),
 * and the bytes of e->path. */
static void folder_blob(env *e, blob *b)
{
    DIR *d = opendir(e->dir);
    cr_assert_not_null(d);
    char names[16][256];
    int n = 0;
    for (struct dirent *de; (de = readdir(d));)
        if (de->d_name[0] != '.' && n < 16)
            snprintf(names[n++], sizeof names[0], "%s", de->d_name);
    closedir(d);
    qsort(names, (size_t)n, sizeof names[0], (int (*)(const void *, const void *))strcmp);
    for (int i = 0; i < n; i++) {
        blob_text(b, names[i]);
        blob_text(b, "\n");
    }
    FILE *f = fopen(e->path, "rb");
    if (f) {
        unsigned char data[4096];
        size_t got = fread(data, 1, sizeof data, f);
        fclose(f);
        blob_add(b, data, got);
    }
}

/* ---- the operations --------------------------------------------------------------------------- */

static void no_state(env *e, blob *b)
{
    (void)e;
    blob_text(b, "-");
}

static void probe_result(env *e, blob *b)
{
    probe(e->ctx, b);
}

static void made_context_state(env *e, blob *b)
{
    blob_text(b, e->made ? "made" : "none");
}

static void made_context_result(env *e, blob *b)
{
    cr_assert_not_null(e->made);
    probe(e->made, b);
}

static clnorm_status call_context_create(env *e)
{
    clnorm_status st = clnorm_context_create(&e->made, NULL, e->message, sizeof e->message);
    if (st != CLNORM_OK)
        cr_assert_null(e->made, "a failed clnorm_context_create left *out set");
    return st;
}

static void setup_app_context(env *e)
{
    cl_int err;
    clnorm_context *tmp = test_context(NULL);
    e->device = clnorm_context_device(tmp);
    CL_OK(clRetainDevice(e->device));
    clnorm_context_release(tmp);
    e->app_ctx = clCreateContext(NULL, 1, &e->device, NULL, NULL, &err);
    cr_assert_eq(err, CL_SUCCESS);
    e->app_queue = clCreateCommandQueue(e->app_ctx, e->device, 0, &err);
    cr_assert_eq(err, CL_SUCCESS);
}

static clnorm_status call_context_wrap(env *e)
{
    clnorm_status st = clnorm_context_wrap(&e->made, e->app_ctx, e->device, e->app_queue, NULL,
                                           e->message, sizeof e->message);
    if (st != CLNORM_OK)
        cr_assert_null(e->made, "a failed clnorm_context_wrap left *out set");
    return st;
}

static clnorm_status call_warm_up(env *e) { return clnorm_warm_up(e->ctx); }
static clnorm_status call_self_check(env *e) { return clnorm_self_check(e->ctx); }

static const clnorm_shape bn_shape = {4, 8, 2, {6, 6, 0}, CLNORM_CHANNELS_FIRST};
static const clnorm_shape gn_shape = {2, 8, 2, {5, 5, 0}, CLNORM_CHANNELS_LAST};
enum { BN_T = 4 * 8 * 36, BN_C = 8, LN_R = 16, LN_D = 64, GN_T = 2 * 8 * 25, GN_C = 8, GN_G = 4 };

static clnorm_status call_bn_train(env *e)
{
    clnorm_bn_config cfg;
    clnorm_bn_default_config(&cfg);
    clnorm_bn_buffers b = {.x = e->m[0], .y = e->m[1], .gamma = e->m[2], .beta = e->m[3],
                           .running_mean = e->m[4], .running_var = e->m[5],
                           .save_mean = e->m[6], .save_invstd = e->m[7]};
    return clnorm_bn_forward_training(e->ctx, &bn_shape, &cfg, &b, 0, NULL, &e->ev);
}

static clnorm_status call_bn_backward(env *e)
{
    clnorm_bn_config cfg;
    clnorm_bn_default_config(&cfg);
    clnorm_bn_grad_buffers g = {.x = e->m[0], .dy = e->m[1], .gamma = e->m[2], .mean = e->m[3],
                                .invstd = e->m[4], .dx = e->m[5], .dgamma = e->m[6],
                                .dbeta = e->m[7]};
    return clnorm_bn_backward(e->ctx, &bn_shape, &cfg, &g, 0, NULL, &e->ev);
}

static clnorm_status call_ln_forward(env *e)
{
    clnorm_norm_buffers b = {.x = e->m[0], .residual = e->m[1], .h = e->m[2], .weight = e->m[3],
                             .bias = e->m[4], .y = e->m[5], .mean = e->m[6], .rstd = e->m[7]};
    return clnorm_layernorm_forward(e->ctx, LN_R, LN_D, 1e-5, &b, 0, NULL, &e->ev);
}

static clnorm_status call_ln_backward(env *e)
{
    clnorm_norm_grad_buffers g = {.x = e->m[0], .dy = e->m[1], .weight = e->m[2],
                                  .mean = e->m[3], .rstd = e->m[4], .dh_in = e->m[5],
                                  .dx = e->m[6], .dweight = e->m[7], .dbias = e->m[8]};
    return clnorm_layernorm_backward(e->ctx, LN_R, LN_D, &g, 0, NULL, &e->ev);
}

static clnorm_status call_gn_forward(env *e)
{
    clnorm_norm_buffers b = {.x = e->m[0], .weight = e->m[1], .bias = e->m[2], .y = e->m[3],
                             .mean = e->m[4], .rstd = e->m[5]};
    return clnorm_groupnorm_forward(e->ctx, &gn_shape, GN_G, 1e-5, &b, 0, NULL, &e->ev);
}

static clnorm_status call_gn_backward(env *e)
{
    clnorm_norm_grad_buffers g = {.x = e->m[0], .dy = e->m[1], .weight = e->m[2],
                                  .mean = e->m[3], .rstd = e->m[4], .dx = e->m[5],
                                  .dweight = e->m[6], .dbias = e->m[7]};
    return clnorm_groupnorm_backward(e->ctx, &gn_shape, GN_G, &g, 0, NULL, &e->ev);
}

static clnorm_status call_in_forward(env *e)
{
    clnorm_norm_buffers b = {.x = e->m[0], .weight = e->m[1], .bias = e->m[2], .y = e->m[3]};
    return clnorm_instancenorm_forward(e->ctx, &gn_shape, 1e-5, 0.1, 1, &b, e->m[4], e->m[5], 0,
                                       NULL, &e->ev);
}

static clnorm_status call_bn_create(env *e)
{
    clnorm_batchnorm_options o;
    clnorm_batchnorm_default_options(&o, 6);
    e->made_bn = (clnorm_batchnorm *)(uintptr_t)1;
    clnorm_status st = clnorm_batchnorm_create(e->ctx, &o, &e->made_bn);
    if (st != CLNORM_OK)
        cr_assert_null(e->made_bn, "a failed clnorm_batchnorm_create left *out set");
    return st;
}

static void made_bn_state(env *e, blob *b)
{
    blob_text(b, e->made_bn ? "made" : "none");
}

static void made_bn_result(env *e, blob *b)
{
    bn_layer_blob(e->ctx, e->made_bn, b);
}

static clnorm_status call_gn_create(env *e)
{
    clnorm_groupnorm_options o;
    clnorm_groupnorm_default_options(&o, 2, 6);
    e->made_fn = (clnorm_featurenorm *)(uintptr_t)1;
    clnorm_status st = clnorm_featurenorm_create_groupnorm(e->ctx, &o, &e->made_fn);
    if (st != CLNORM_OK)
        cr_assert_null(e->made_fn, "a failed clnorm_featurenorm_create_groupnorm left *out set");
    return st;
}

static void made_fn_state(env *e, blob *b)
{
    blob_text(b, e->made_fn ? "made" : "none");
}

static void made_fn_result(env *e, blob *b)
{
    fn_layer_blob(e->ctx, e->made_fn, b);
}

static void setup_ln_layer(env *e)
{
    clnorm_layernorm_options o;
    clnorm_layernorm_default_options(&o, LN_D);
    CLNORM_OK_(e->ctx, clnorm_featurenorm_create_layernorm(e->ctx, &o, &e->fn));
}

static clnorm_status call_fn_forward_rows(env *e)
{
    /* the layer's first forward: it allocates its saved statistics */
    return clnorm_featurenorm_forward_rows(e->fn, LN_R, e->m[0], e->m[1], e->m[2], e->m[3], 0,
                                           NULL, &e->ev);
}

static void fn_layer_and_buffers(env *e, blob *b)
{
    fn_layer_blob(e->ctx, e->fn, b);
    read_buffers(e, b);
}

static void setup_bn_layer_file(env *e)
{
    clnorm_batchnorm_options o;
    clnorm_batchnorm_default_options(&o, 6);
    CLNORM_OK_(e->ctx, clnorm_batchnorm_create(e->ctx, &o, &e->bn));
    /* a forward gives the running statistics values other than the initial ones */
    cl_mem x = test_buffer(e->ctx, 2 * 6 * 9, NULL);
    float v[2 * 6 * 9];
    for (int i = 0; i < 2 * 6 * 9; i++)
        v[i] = (float)cos(0.9 * i) * 4.0f;
    CL_OK(clEnqueueWriteBuffer(clnorm_context_queue(e->ctx), x, CL_TRUE, 0, sizeof v, v, 0, NULL,
                               NULL));
    clnorm_shape s = {2, 6, 1, {9, 0, 0}, CLNORM_CHANNELS_FIRST};
    CLNORM_OK_(e->ctx, clnorm_batchnorm_forward(e->bn, CLNORM_TRAINING, &s,
                                                CLNORM_ACTIVATION_NONE, x, NULL, x, 0, NULL, NULL));
    CLNORM_OK_(e->ctx, clnorm_finish(e->ctx));
    clReleaseMemObject(x);
    make_temp_dir(e->dir, sizeof e->dir);
    snprintf(e->path, sizeof e->path, "%s/bn.bin", e->dir);
    snprintf(e->other_path, sizeof e->other_path, "%s/saved.bin", e->dir);
    CLNORM_OK_(e->ctx, clnorm_batchnorm_save(e->bn, e->other_path));
}

static clnorm_status call_bn_save(env *e) { return clnorm_batchnorm_save(e->bn, e->path); }

static void setup_bn_load(env *e)
{
    setup_bn_layer_file(e);
    /* the layer to load into: fresh, so that the file changes it */
    clnorm_batchnorm_release(e->bn);
    clnorm_batchnorm_options o;
    clnorm_batchnorm_default_options(&o, 6);
    CLNORM_OK_(e->ctx, clnorm_batchnorm_create(e->ctx, &o, &e->bn));
}

static clnorm_status call_bn_load(env *e) { return clnorm_batchnorm_load(e->bn, e->other_path); }

static void bn_layer_state(env *e, blob *b)
{
    bn_layer_blob(e->ctx, e->bn, b);
}

static void folder_state(env *e, blob *b)
{
    folder_blob(e, b);
}

static void setup_fn_layer_file(env *e)
{
    clnorm_instancenorm_options o;
    clnorm_instancenorm_default_options(&o, GN_C);
    o.affine = 1;
    o.track_running_stats = 1;
    CLNORM_OK_(e->ctx, clnorm_featurenorm_create_instancenorm(e->ctx, &o, &e->fn));
    cl_mem x = test_buffer(e->ctx, GN_T, NULL);
    float v[GN_T];
    for (int i = 0; i < GN_T; i++)
        v[i] = (float)cos(0.7 * i) * 3.0f;
    CL_OK(clEnqueueWriteBuffer(clnorm_context_queue(e->ctx), x, CL_TRUE, 0, sizeof v, v, 0, NULL,
                               NULL));
    CLNORM_OK_(e->ctx, clnorm_featurenorm_forward_instances(e->fn, CLNORM_TRAINING, &gn_shape, x,
                                                            x, 0, NULL, NULL));
    CLNORM_OK_(e->ctx, clnorm_finish(e->ctx));
    clReleaseMemObject(x);
    make_temp_dir(e->dir, sizeof e->dir);
    snprintf(e->path, sizeof e->path, "%s/in.bin", e->dir);
    snprintf(e->other_path, sizeof e->other_path, "%s/saved.bin", e->dir);
    CLNORM_OK_(e->ctx, clnorm_featurenorm_save(e->fn, e->other_path));
}

static clnorm_status call_fn_save(env *e) { return clnorm_featurenorm_save(e->fn, e->path); }

static void setup_fn_load(env *e)
{
    setup_fn_layer_file(e);
    clnorm_featurenorm_release(e->fn);
    clnorm_instancenorm_options o;
    clnorm_instancenorm_default_options(&o, GN_C);
    o.affine = 1;
    o.track_running_stats = 1;
    CLNORM_OK_(e->ctx, clnorm_featurenorm_create_instancenorm(e->ctx, &o, &e->fn));
}

static clnorm_status call_fn_load(env *e) { return clnorm_featurenorm_load(e->fn, e->other_path); }

static void fn_layer_state(env *e, blob *b)
{
    fn_layer_blob(e->ctx, e->fn, b);
}

static const fault_op ops[] = {
    {"clnorm_context_create", .creates_context = 1, .call = call_context_create,
     .state = made_context_state, .result = made_context_result},
    {"clnorm_context_wrap", .creates_context = 1, .setup = setup_app_context,
     .call = call_context_wrap, .state = made_context_state, .result = made_context_result},
    {"clnorm_warm_up (programs from the disk cache)", .call = call_warm_up, .state = no_state,
     .result = probe_result},
    {"clnorm_warm_up (no disk cache: programs built from source)", .no_disk_cache = 1,
     .call = call_warm_up, .state = no_state, .result = probe_result},
    {"clnorm_self_check", .call = call_self_check, .state = no_state, .result = probe_result},
    {"clnorm_bn_forward_training", .warm = 1, .count = 8,
     .floats = {BN_T, BN_T, BN_C, BN_C, BN_C, BN_C, BN_C, BN_C}, .kinds = "xoxxxpoo",
     .call = call_bn_train, .state = read_buffers, .result = read_buffers, .returns_event = 1},
    {"clnorm_bn_backward", .warm = 1, .count = 8,
     .floats = {BN_T, BN_T, BN_C, BN_C, BN_C, BN_T, BN_C, BN_C}, .kinds = "xxxxpooo",
     .call = call_bn_backward, .state = read_buffers, .result = read_buffers, .returns_event = 1},
    {"clnorm_layernorm_forward (fused residual)", .warm = 1, .count = 8,
     .floats = {LN_R * LN_D, LN_R * LN_D, LN_R * LN_D, LN_D, LN_D, LN_R * LN_D, LN_R, LN_R},
     .kinds = "xxoxxooo", .call = call_ln_forward, .state = read_buffers, .result = read_buffers,
     .returns_event = 1},
    {"clnorm_layernorm_backward", .warm = 1, .count = 9,
     .floats = {LN_R * LN_D, LN_R * LN_D, LN_D, LN_R, LN_R, LN_R * LN_D, LN_R * LN_D, LN_D, LN_D},
     .kinds = "xxxxpxooo", .call = call_ln_backward, .state = read_buffers,
     .result = read_buffers, .returns_event = 1},
    {"clnorm_groupnorm_forward (channels-last)", .warm = 1, .count = 6,
     .floats = {GN_T, GN_C, GN_C, GN_T, 2 * GN_G, 2 * GN_G}, .kinds = "xxxooo",
     .call = call_gn_forward, .state = read_buffers, .result = read_buffers, .returns_event = 1},
    {"clnorm_groupnorm_backward (channels-last)", .warm = 1, .count = 8,
     .floats = {GN_T, GN_T, GN_C, 2 * GN_G, 2 * GN_G, GN_T, GN_C, GN_C}, .kinds = "xxxxpooo",
     .call = call_gn_backward, .state = read_buffers, .result = read_buffers, .returns_event = 1},
    {"clnorm_instancenorm_forward (running statistics)", .warm = 1, .count = 6,
     .floats = {GN_T, GN_C, GN_C, GN_T, GN_C, GN_C}, .kinds = "xxxoxp", .call = call_in_forward,
     .state = read_buffers, .result = read_buffers, .returns_event = 1},
    {"clnorm_batchnorm_create", .call = call_bn_create, .state = made_bn_state,
     .result = made_bn_result},
    {"clnorm_featurenorm_create_groupnorm", .call = call_gn_create, .state = made_fn_state,
     .result = made_fn_result},
    {"clnorm_featurenorm_forward_rows (first forward: saved statistics allocated)", .warm = 1,
     .count = 4, .floats = {LN_R * LN_D, LN_R * LN_D, LN_R * LN_D, LN_R * LN_D}, .kinds = "xxoo",
     .setup = setup_ln_layer, .call = call_fn_forward_rows, .state = fn_layer_and_buffers,
     .result = fn_layer_and_buffers, .returns_event = 1},
    {"clnorm_batchnorm_save", .setup = setup_bn_layer_file, .call = call_bn_save,
     .state = folder_state, .result = folder_state},
    {"clnorm_batchnorm_load", .setup = setup_bn_load, .call = call_bn_load,
     .state = bn_layer_state, .result = bn_layer_state},
    {"clnorm_featurenorm_save (InstanceNorm)", .setup = setup_fn_layer_file, .call = call_fn_save,
     .state = folder_state, .result = folder_state},
    {"clnorm_featurenorm_load (InstanceNorm)", .setup = setup_fn_load, .call = call_fn_load,
     .state = fn_layer_state, .result = fn_layer_state},
};

/* ---- one try ---------------------------------------------------------------------------------- */

static void env_open(env *e, const fault_op *op)
{
    memset(e, 0, sizeof *e);
    e->op = op;
    e->ev = SENTINEL_EVENT;
    if (!op->creates_context) {
        clnorm_settings settings;
        clnorm_default_settings(&settings);
        if (op->no_disk_cache)
            settings.cache_dir = "";
        e->ctx = test_context(&settings);
        if (op->warm)
            CLNORM_OK_(e->ctx, clnorm_warm_up(e->ctx));
        for (int i = 0; i < op->count; i++)
            e->m[i] = test_buffer(e->ctx, op->floats[i], NULL);
        reset_buffers(e);
    }
    if (op->setup)
        op->setup(e);
}

static void env_close(env *e)
{
    for (int i = 0; i < MAX_BUFFERS; i++)
        if (e->m[i])
            clReleaseMemObject(e->m[i]);
    clnorm_batchnorm_release(e->bn);
    clnorm_featurenorm_release(e->fn);
    if (e->made_bn != (clnorm_batchnorm *)(uintptr_t)1)
        clnorm_batchnorm_release(e->made_bn);
    if (e->made_fn != (clnorm_featurenorm *)(uintptr_t)1)
        clnorm_featurenorm_release(e->made_fn);
    clnorm_context_release(e->made);
    clnorm_context_release(e->ctx);
    if (e->app_ctx) {
        /* the wrapper gave back every reference it took on the application's objects (the
         * driver may hold the last command's for a moment) */
        cl_uint refs = 0;
        for (int tries = 0; tries < 200; tries++) {
            CL_OK(clGetContextInfo(e->app_ctx, CL_CONTEXT_REFERENCE_COUNT, sizeof refs, &refs,
                                   NULL));
            if (refs == 2) /* the queue's and ours */
                break;
            struct timespec pause = {0, 5 * 1000 * 1000};
            nanosleep(&pause, NULL);
        }
        cr_assert_eq(refs, 2, "%s: the application's context keeps %u references, not 2",
                     e->op->name, refs);
        clReleaseCommandQueue(e->app_queue);
        clReleaseContext(e->app_ctx);
        clReleaseDevice(e->device);
    }
    if (e->dir[0])
        remove_tree(e->dir);
    /* every OpenCL object the library made is released */
    const long live = clnorm_fault_live();
    cr_assert_eq(live, 0, "%s: the library still holds %ld references to OpenCL objects it made",
                 e->op->name, live);
}

/* The call, without faults, on a fresh environment: the reference result. */
static void reference(const fault_op *op, blob *out)
{
    env e;
    env_open(&e, op);
    clnorm_fault_disarm();
    clnorm_status st = op->call(&e);
    cr_assert_eq(st, CLNORM_OK, "%s without faults: %s", op->name, clnorm_status_name(st));
    if (op->creates_context)
        e.ctx = e.made;
    if (op->returns_event) {
        cr_assert_not_null(e.ev);
        CL_OK(clWaitForEvents(1, &e.ev));
        clnorm_fault_handed_over(e.ev);
        clReleaseEvent(e.ev);
    }
    op->result(&e, out);
    if (op->creates_context)
        e.ctx = NULL;
    env_close(&e);
}

typedef struct op_stats {
    long points, failed, absorbed, after_enqueue;
    char absorbed_at[256]; /* the calls whose failure the library went around */
} op_stats;

/* Fault k in op; returns 0 once k is past the op's wrapped calls. */
static int try_fault(const fault_op *op, long k, const blob *ref, op_stats *stats)
{
    env e;
    env_open(&e, op);
    blob before = {0}, after = {0}, got = {0};
    op->state(&e, &before);
    clnorm_fault_arm(k);
    const clnorm_status st = op->call(&e);
    clnorm_fault_disarm();
    const int fired = clnorm_fault_fired();
    const char *site = clnorm_fault_site();
    const long enqueued = clnorm_fault_enqueued_before();
    char what[512];
    snprintf(what, sizeof what, "%s, fault %ld (%s)", op->name, k, fired ? site : "none");
    if (fired)
        stats->points++;
    if (!fired || st == CLNORM_OK) {
        /* no fault, or one the library absorbed: the reference result */
        cr_assert_eq(st, CLNORM_OK, "%s: %s: %s", what, clnorm_status_name(st),
                     e.ctx ? clnorm_last_error(e.ctx) : e.message);
        if (fired) {
            stats->absorbed++;
            if (!strstr(stats->absorbed_at, site)) {
                const size_t used = strlen(stats->absorbed_at);
                snprintf(stats->absorbed_at + used, sizeof stats->absorbed_at - used, "%s%s",
                         used ? ", " : " (", site);
            }
        }
        if (op->creates_context)
            e.ctx = e.made;
        if (op->returns_event) {
            cr_assert_not_null(e.ev, "%s: no event from a successful call", what);
            CL_OK(clWaitForEvents(1, &e.ev));
            clnorm_fault_handed_over(e.ev);
            clReleaseEvent(e.ev);
        }
        op->result(&e, &got);
        cr_assert(blob_eq(&got, ref), "%s: the call succeeded with another result than without "
                                      "faults", what);
    } else {
        stats->failed++;
        const char *message = op->creates_context ? e.message : clnorm_last_error(e.ctx);
        char prefix[64];
        snprintf(prefix, sizeof prefix, "%s: ", clnorm_status_name(st));
        cr_assert(!strncmp(message, prefix, strlen(prefix)),
                  "%s: %s with the message \"%s\", which does not start with its name", what,
                  clnorm_status_name(st), message);
        cr_assert(st == CLNORM_OUT_OF_HOST_MEMORY || st == CLNORM_OPENCL_ERROR ||
                      st == CLNORM_IO_ERROR,
                  "%s: %s (\"%s\"): an allocation failure is OUT_OF_HOST_MEMORY, OPENCL_ERROR or "
                  "(for a file) IO_ERROR",
                  what, clnorm_status_name(st), message);
        if (!strncmp(site, "cl", 2) && !op->creates_context) {
            /* an OpenCL failure names the call and its error code */
            cr_assert_neq(clnorm_last_cl_error(e.ctx), CL_SUCCESS, "%s: no OpenCL error code",
                          what);
            cr_assert(strstr(message, clnorm_cl_error_name(clnorm_last_cl_error(e.ctx))),
                      "%s: the message \"%s\" does not name the OpenCL error", what, message);
        }
        if (op->returns_event)
            cr_assert_null(e.ev, "%s: an event came back from a failed call", what);
        op->state(&e, &after);
        if (enqueued == 0)
            cr_assert(blob_eq(&before, &after),
                      "%s: the call failed before enqueueing anything but changed its outputs",
                      what);
        else if (!blob_eq(&before, &after))
            stats->after_enqueue++;
        /* the context (or a new one) works: the same call again, without faults */
        if (!op->creates_context)
            reset_buffers(&e);
        e.ev = SENTINEL_EVENT;
        const clnorm_status again = op->call(&e);
        cr_assert_eq(again, CLNORM_OK, "%s: the same call without faults afterwards: %s: %s",
                     what, clnorm_status_name(again), e.ctx ? clnorm_last_error(e.ctx) : e.message);
        if (op->creates_context)
            e.ctx = e.made;
        if (op->returns_event) {
            CL_OK(clWaitForEvents(1, &e.ev));
            clnorm_fault_handed_over(e.ev);
            clReleaseEvent(e.ev);
        }
        op->result(&e, &got);
        cr_assert(blob_eq(&got, ref),
                  "%s: after the failure, the same call gives another result than without faults",
                  what);
    }
    if (op->creates_context)
        e.ctx = NULL;
    blob_free(&before);
    blob_free(&after);
    blob_free(&got);
    env_close(&e);
    return fired;
}

static void inject_every_fault(size_t first, size_t last)
{
    long total_points = 0, total_failed = 0, total_absorbed = 0, total_after = 0;
    for (size_t o = first; o < last && o < sizeof ops / sizeof ops[0]; o++) {
        const fault_op *op = &ops[o];
        blob ref = {0};
        reference(op, &ref);
        op_stats stats = {0};
        long k = 1;
        while (try_fault(op, k, &ref, &stats))
            k++;
        blob_free(&ref);
        cr_assert_gt(stats.points, 0, "%s: no fault point", op->name);
        fprintf(stderr,
                "fault_injection: %s: %ld points: %ld failed cleanly, %ld absorbed%s%s, %ld "
                "changed outputs after kernels were enqueued\n",
                op->name, stats.points, stats.failed, stats.absorbed, stats.absorbed_at,
                stats.absorbed_at[0] ? ")" : "", stats.after_enqueue);
        total_points += stats.points;
        total_failed += stats.failed;
        total_absorbed += stats.absorbed;
        total_after += stats.after_enqueue;
    }
    fprintf(stderr,
            "fault_injection: total %ld fault points: %ld failed cleanly, %ld absorbed, %ld left "
            "earlier kernels' writes\n",
            total_points, total_failed, total_absorbed, total_after);
}

/* Split in three so that --jobs=2 runs them side by side. */
Test(fault_injection, contexts_programs_and_self_check, .timeout = 1200)
{
    inject_every_fault(0, 5);
}

Test(fault_injection, operations, .timeout = 1200)
{
    inject_every_fault(5, 12);
}

Test(fault_injection, layers_and_files, .timeout = 1200)
{
    inject_every_fault(12, sizeof ops / sizeof ops[0]);
}

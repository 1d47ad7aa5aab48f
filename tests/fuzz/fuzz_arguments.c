/* libFuzzer harness for argument and descriptor validation: every input is decoded into up to
 * four calls of the public functions (batch norm functional and layer, layer/RMS/group/instance
 * norm functional and layer objects, the split stages, fold, save/load, parameters, info), with
 * shapes, layouts, enum values, eps, momentum, group counts, buffers (small real ones of many
 * sizes, possibly too small, NULL, of another cl_context, aliased), wait lists and events taken
 * from the bytes. A byte 0 always decodes to the argument of a valid call, so the seeds
 * (opcode, then zeros) are valid calls the fuzzer mutates.
 *
 * Every buffer is a sub-buffer inside a parent of canary words; every parent is read before and
 * after each call. The invariant (abort() otherwise):
 *   - the status is OK or one of the errors the function documents (never OPENCL_ERROR or
 *     OUT_OF_HOST_MEMORY here: every valid call is small);
 *   - a failure has a message that starts with the status's name, returns no event, leaves a
 *     create's *out NULL and writes nothing: every parent, and every buffer of the layers, is
 *     byte for byte as before; the layers' mode and counters too;
 *   - a success writes only the buffers it was given, and no canary word around any of them;
 *     a requested event comes back and completes.
 * Leaks and memory errors: the harness and the library run under AddressSanitizer and
 * LeakSanitizer (tools/run.sh).
 *
 * Build (tools/run.sh does): the library with clang -fsanitize=fuzzer-no-link,address, then
 *   clang -fsanitize=fuzzer,address tests/fuzz/fuzz_arguments.c -lclnorm -lOpenCL -lm
 * Run: fuzz_arguments -max_total_time=60 WORK_DIR tests/fuzz/arguments-corpus
 * CLNORM_FUZZ_WRITE_SEEDS=DIR: writes the seed corpus (one valid call of every operation, and
 * a few with one argument broken) to DIR and exits. */
#define _POSIX_C_SOURCE 200809L
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clnorm.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define SENTINEL_EVENT ((cl_event)(uintptr_t)0x5e17)

static clnorm_context *ctx, *other;
static cl_command_queue queue, other_queue;
static size_t align;
static uint64_t max_alloc;
static cl_event own_event, foreign_event;
static char dir[512];
static unsigned long long calls, failures;

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_arguments: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    abort();
}

/* ---- buffers: sub-buffers inside canary parents ---------------------------------------------- */

/* The valid problem of every operation works on these (120-float tensors, as in
 * tests/test_bad_input.c); the odd sizes are for the fuzzer to pick. */
enum {
    T = 120, BN_C = 3, LN_ROWS = 4, LN_D = 30, GN_C = 6, GN_G = 2, FOLD_IN = 5,
};
static const size_t pool_floats[] = {
    T, T, T, T, T, T, T,                /* 0-6: tensors */
    BN_C, BN_C, BN_C, BN_C, BN_C, BN_C, BN_C, BN_C, /* 7-14: batch-norm channels */
    LN_D, LN_D, LN_D, LN_D,             /* 15-18: LayerNorm weight, bias, dweight, dbias */
    LN_ROWS, LN_ROWS,                   /* 19-20: per-row statistics (and N x G of GroupNorm) */
    GN_C, GN_C, GN_C, GN_C, GN_C, GN_C, /* 21-26: group/instance per-channel */
    2 * GN_C, 2 * GN_C,                 /* 27-28: instance statistics N x C */
    3 * BN_C, 6 * BN_C,                 /* 29-30: a statistics set, two sets */
    BN_C * FOLD_IN,                     /* 31: fold_linear's weight */
    1, 2, 5, 7, 8, 16, 31, 64, 119, 121, 256, /* 32-42: other sizes */
};
#define POOL ARRAY_LEN(pool_floats)
#define FOREIGN_COUNT 4
static const size_t foreign_floats[FOREIGN_COUNT] = {T, BN_C, LN_D, GN_C};

/* The buffers of a context are sub-buffers of one parent (an arena), each at a multiple of the
 * base-address alignment with at least that many canary bytes before and after: one read of
 * the arena shows every buffer and every canary. */
typedef struct buffer {
    cl_mem mem;
    size_t offset, bytes;
    int passed; /* given to the current call */
} buffer;

typedef struct arena {
    cl_mem parent;
    cl_command_queue queue;
    size_t bytes;
    unsigned char *before, *now; /* before: as the last call left it */
    buffer *buffers;
    size_t count;
} arena;

static buffer pool[POOL], foreign[FOREIGN_COUNT];
static arena arenas[2];

static uint32_t canary(size_t i)
{
    return 0xC0DE0000u | (uint32_t)(i & 0xffff);
}

static size_t round_up(size_t v, size_t m)
{
    return (v + m - 1) / m * m;
}

static void make_arena(arena *a, clnorm_context *c, buffer *buffers, const size_t *floats,
                       size_t count)
{
    cl_int err;
    a->queue = clnorm_context_queue(c);
    a->buffers = buffers;
    a->count = count;
    size_t at = align;
    for (size_t i = 0; i < count; i++) {
        buffers[i].offset = at;
        buffers[i].bytes = floats[i] * sizeof(float);
        at += round_up(buffers[i].bytes, align) + align;
    }
    a->bytes = at;
    uint32_t *fill = malloc(a->bytes);
    for (size_t i = 0; i < a->bytes / 4; i++)
        fill[i] = canary(i);
    for (size_t i = 0; i < count; i++) {
        float *payload = (float *)((unsigned char *)fill + buffers[i].offset);
        for (size_t k = 0; k < floats[i]; k++)
            payload[k] = 0.5f + 0.25f * (float)(k % 5);
    }
    a->parent = clCreateBuffer(clnorm_context_cl_context(c),
                               CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, a->bytes, fill, &err);
    if (err != CL_SUCCESS)
        die("clCreateBuffer", clnorm_cl_error_name(err));
    a->before = (unsigned char *)fill;
    a->now = malloc(a->bytes);
    for (size_t i = 0; i < count; i++) {
        cl_buffer_region region = {buffers[i].offset, buffers[i].bytes};
        buffers[i].mem = clCreateSubBuffer(a->parent, CL_MEM_READ_WRITE,
                                           CL_BUFFER_CREATE_TYPE_REGION, &region, &err);
        if (err != CL_SUCCESS)
            die("clCreateSubBuffer", clnorm_cl_error_name(err));
    }
}

/* ---- the layers an input uses (made on first use, released at the end of the input) ------- */

enum { L_BN, L_LN, L_RMS, L_GN, L_IN, LAYERS };
static clnorm_batchnorm *bn_layer;
static clnorm_featurenorm *fn_layer[LAYERS];
static void layer_made(void);

static clnorm_batchnorm *get_bn(void)
{
    if (!bn_layer) {
        clnorm_batchnorm_options o;
        clnorm_batchnorm_default_options(&o, BN_C);
        if (clnorm_batchnorm_create(ctx, &o, &bn_layer) != CLNORM_OK)
            die("clnorm_batchnorm_create", clnorm_last_error(ctx));
        layer_made();
    }
    return bn_layer;
}

static clnorm_featurenorm *get_fn(int kind)
{
    if (fn_layer[kind])
        return fn_layer[kind];
    clnorm_status st;
    if (kind == L_LN) {
        clnorm_layernorm_options o;
        clnorm_layernorm_default_options(&o, LN_D);
        st = clnorm_featurenorm_create_layernorm(ctx, &o, &fn_layer[kind]);
    } else if (kind == L_RMS) {
        clnorm_rmsnorm_options o;
        clnorm_rmsnorm_default_options(&o, LN_D);
        st = clnorm_featurenorm_create_rmsnorm(ctx, &o, &fn_layer[kind]);
    } else if (kind == L_GN) {
        clnorm_groupnorm_options o;
        clnorm_groupnorm_default_options(&o, GN_G, GN_C);
        st = clnorm_featurenorm_create_groupnorm(ctx, &o, &fn_layer[kind]);
    } else {
        clnorm_instancenorm_options o;
        clnorm_instancenorm_default_options(&o, GN_C);
        o.affine = 1;
        o.track_running_stats = 1;
        st = clnorm_featurenorm_create_instancenorm(ctx, &o, &fn_layer[kind]);
    }
    if (st != CLNORM_OK)
        die("creating a layer", clnorm_last_error(ctx));
    layer_made();
    return fn_layer[kind];
}

static void release_layers(void)
{
    clnorm_batchnorm_release(bn_layer);
    bn_layer = NULL;
    for (int l = 0; l < LAYERS; l++) {
        clnorm_featurenorm_release(fn_layer[l]);
        fn_layer[l] = NULL;
    }
}

/* The layers' buffers and state as bytes (a failed call must not change them). */
typedef struct state {
    unsigned char *data;
    size_t size, capacity;
} state;

static void state_add(state *s, const void *p, size_t n)
{
    if (s->size + n > s->capacity) {
        s->capacity = (s->size + n) * 2;
        s->data = realloc(s->data, s->capacity);
    }
    memcpy(s->data + s->size, p, n);
    s->size += n;
}

static void state_mem(state *s, cl_mem m)
{
    if (!m) {
        state_add(s, "-", 1);
        return;
    }
    size_t size = 0;
    clGetMemObjectInfo(m, CL_MEM_SIZE, sizeof size, &size, NULL);
    unsigned char *v = malloc(size);
    if (clEnqueueReadBuffer(queue, m, CL_TRUE, 0, size, v, 0, NULL, NULL) != CL_SUCCESS)
        die("reading a layer's buffer", NULL);
    state_add(s, &m, sizeof m);
    state_add(s, v, size);
    free(v);
}

static state before_state, after_state;
static int taking_state; /* a layer made during a call's decoding joins before_state */

static void layers_state(state *s)
{
    s->size = 0;
    if (bn_layer) {
        clnorm_batchnorm_buffers b;
        clnorm_batchnorm_get_buffers(bn_layer, &b);
        cl_mem all[] = {b.gamma, b.beta, b.running_mean, b.running_var,
                        b.dgamma, b.dbeta, b.save_mean, b.save_invstd};
        for (size_t i = 0; i < ARRAY_LEN(all); i++)
            state_mem(s, all[i]);
        int64_t tracked = clnorm_batchnorm_num_batches_tracked(bn_layer);
        clnorm_mode mode = clnorm_batchnorm_mode(bn_layer);
        state_add(s, &tracked, sizeof tracked);
        state_add(s, &mode, sizeof mode);
    }
    for (int l = 0; l < LAYERS; l++) {
        if (!fn_layer[l])
            continue;
        clnorm_featurenorm_buffers b;
        clnorm_featurenorm_info info;
        clnorm_featurenorm_get_buffers(fn_layer[l], &b);
        clnorm_featurenorm_get_info(fn_layer[l], &info);
        cl_mem all[] = {b.weight, b.bias, b.dweight, b.dbias, b.running_mean, b.running_var,
                        b.mean, b.rstd};
        for (size_t i = 0; i < ARRAY_LEN(all); i++)
            state_mem(s, all[i]);
        state_add(s, &b.saved_count, sizeof b.saved_count);
        state_add(s, &info, sizeof info);
    }
}

static void layer_made(void)
{
    if (taking_state)
        layers_state(&before_state);
}

/* ---- decoding ------------------------------------------------------------------------------ */

typedef struct input {
    const uint8_t *data;
    size_t size, at;
} input;

static uint8_t byte(input *in)
{
    return in->at < in->size ? in->data[in->at++] : 0;
}

static uint64_t raw(input *in, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v |= (uint64_t)byte(in) << (8 * i);
    return v;
}

/* A size: 0 = the valid value, 1..127 = 0..126, else a value at an edge. */
static size_t size_arg(input *in, size_t valid)
{
    const uint8_t b = byte(in);
    if (b == 0)
        return valid;
    if (b < 128)
        return (size_t)(b - 1);
    const size_t edges[] = {
        SIZE_MAX, SIZE_MAX / 2, SIZE_MAX / 3, SIZE_MAX / 4, SIZE_MAX / 4 + 1, SIZE_MAX / 8,
        SIZE_MAX / 12 + 1, SIZE_MAX / 16, (size_t)1 << 31, (size_t)1 << 32, (size_t)1 << 40,
        (size_t)1 << 62, (size_t)(max_alloc / 4), (size_t)(max_alloc / 4) + 1,
        (size_t)max_alloc, (size_t)1 << 20, 4096, 65536, 1000, 255, 256, 257, 1023, 1024,
        valid + 1, valid ? valid - 1 : 1, valid * 2, 2 * valid + 1,
    };
    if (b == 255)
        return (size_t)raw(in, 8);
    return edges[(b - 128) % ARRAY_LEN(edges)];
}

static double double_arg(input *in, double valid)
{
    const uint8_t b = byte(in);
    if (b == 0)
        return valid;
    if (b == 255) {
        const uint64_t bits = raw(in, 8);
        double v;
        memcpy(&v, &bits, sizeof v);
        return v;
    }
    const double values[] = {0.0,      -0.0,    1e-5,     -1e-5,   1e-12,   0.1,     0.5,
                             1.0,      1.5,     -0.1,     2.0,     NAN,     -NAN,    INFINITY,
                             -INFINITY, DBL_MAX, -DBL_MAX, DBL_MIN, 1e-300,  1e300,   0.9999999,
                             1.0000001, FLT_EPSILON};
    return values[(b - 1) % ARRAY_LEN(values)];
}

/* An enum or int: 0 = the valid value, small values, then the extremes. */
static int int_arg(input *in, int valid)
{
    const uint8_t b = byte(in);
    if (b == 0)
        return valid;
    if (b < 16)
        return b - 1;
    if (b < 32)
        return -(int)(b - 15);
    if (b == 255)
        return (int)(uint32_t)raw(in, 4);
    const int edges[] = {INT32_MAX, INT32_MIN, 255, 256, 65536, -65536};
    return edges[b % ARRAY_LEN(edges)];
}

/* A buffer: 0 = the valid one, 1 = NULL, 2 = another context's, 3 = the call's x (aliasing),
 * else any of the pool. */
static cl_mem mem_arg(input *in, int valid, cl_mem x)
{
    const uint8_t b = byte(in);
    buffer *chosen = NULL;
    if (b == 0)
        chosen = valid >= 0 ? &pool[valid] : NULL;
    else if (b == 1)
        return NULL;
    else if (b == 2) {
        const size_t want = valid >= 0 ? pool_floats[valid] : T;
        chosen = &foreign[0];
        for (int i = 0; i < FOREIGN_COUNT; i++)
            if (foreign_floats[i] == want)
                chosen = &foreign[i];
    } else if (b == 3)
        return x;
    else
        chosen = &pool[(b - 4) % POOL];
    if (!chosen)
        return NULL;
    chosen->passed = 1;
    return chosen->mem;
}

static clnorm_shape shape_arg(input *in, const clnorm_shape *valid)
{
    clnorm_shape s = *valid;
    const uint8_t which = byte(in); /* bit i: decode field i, else keep the valid one */
    if (which & 1)
        s.n = size_arg(in, valid->n);
    if (which & 2)
        s.c = size_arg(in, valid->c);
    if (which & 4) {
        const uint8_t r = byte(in);
        s.spatial_rank = r < 200 ? r % 5 : (unsigned)raw(in, 4);
    }
    if (which & 8)
        for (unsigned i = 0; i < CLNORM_MAX_SPATIAL_DIMS; i++)
            s.spatial[i] = size_arg(in, valid->spatial[i]);
    if (which & 16)
        s.layout = (clnorm_layout)int_arg(in, (int)valid->layout);
    return s;
}

/* The wait list and event of an enqueueing call. */
typedef struct events {
    cl_uint num_wait;
    const cl_event *wait;
    cl_event ev, *ev_p;
    cl_event list[2];
} events;

static void events_arg(input *in, events *e)
{
    const uint8_t b = byte(in);
    memset(e, 0, sizeof *e);
    e->ev = SENTINEL_EVENT;
    e->ev_p = (b & 0x80) ? NULL : &e->ev;
    switch (b & 7) {
    case 0: break;
    case 1: e->list[0] = own_event; e->num_wait = 1; e->wait = e->list; break;
    case 2: e->num_wait = 1; break; /* count without a list */
    case 3: e->list[0] = own_event; e->wait = e->list; break; /* list without a count */
    case 4: e->list[0] = foreign_event; e->num_wait = 1; e->wait = e->list; break;
    case 5:
        e->list[0] = own_event;
        e->list[1] = own_event;
        e->num_wait = 2;
        e->wait = e->list;
        break;
    default: e->list[0] = own_event; e->list[1] = foreign_event; e->num_wait = 2; e->wait = e->list; break;
    }
}

/* ---- the calls ------------------------------------------------------------------------------- */

/* Statuses a call may return (besides OK). */
enum {
    A_ARG = 1 << CLNORM_INVALID_ARGUMENT,
    A_SHAPE = 1 << CLNORM_INVALID_SHAPE,
    A_SMALL = 1 << CLNORM_BUFFER_TOO_SMALL,
    A_CONTEXT = 1 << CLNORM_WRONG_CONTEXT,
    A_UNSUPPORTED = 1 << CLNORM_UNSUPPORTED,
    A_IO = 1 << CLNORM_IO_ERROR,
    A_FILE = 1 << CLNORM_BAD_FILE,
    A_MODE = 1 << CLNORM_WRONG_MODE,
    A_ENQUEUE = A_ARG | A_SHAPE | A_SMALL | A_CONTEXT | A_UNSUPPORTED,
};

typedef struct outcome {
    clnorm_status status;
    unsigned allowed;
    int has_event;      /* ev is the call's event */
    int message_in_ctx; /* clnorm_last_error(ctx) holds the message of a failure */
    const void *out;    /* a create's *out after the call (NULL expected on failure) */
    int has_out;
} outcome;

static const clnorm_shape bn_valid = {2, BN_C, 2, {4, 5, 1}, CLNORM_CHANNELS_FIRST};
static const clnorm_shape gn_valid = {2, GN_C, 1, {10, 1, 1}, CLNORM_CHANNELS_FIRST};

enum op {
    OP_BN_TRAIN, OP_BN_INFER, OP_BN_BACKWARD, OP_BN_FROZEN, OP_BN_PARTIAL, OP_BN_MERGE,
    OP_BN_APPLY, OP_LN_FORWARD, OP_LN_BACKWARD, OP_RMS_FORWARD, OP_RMS_BACKWARD, OP_GN_FORWARD,
    OP_GN_BACKWARD, OP_IN_FORWARD, OP_IN_BACKWARD, OP_BNL_CREATE, OP_BNL_SET_MODE,
    OP_BNL_FORWARD, OP_BNL_BACKWARD, OP_BNL_FOLD, OP_BNL_FOLD_LINEAR, OP_BNL_SAVE_LOAD,
    OP_FNL_CREATE, OP_FNL_SET_MODE, OP_FNL_FORWARD_ROWS, OP_FNL_BACKWARD_ROWS,
    OP_FNL_FORWARD_GROUPS, OP_FNL_BACKWARD_GROUPS, OP_FNL_FORWARD_INSTANCES,
    OP_FNL_BACKWARD_INSTANCES, OP_FNL_SAVE_LOAD, OP_PARAMS, OP_INFO, OP_COUNT
};

static outcome run_op(input *in, int op)
{
    outcome o = {CLNORM_OK, 0, 0, 1, NULL, 0};
    events e;
    clnorm_bn_config cfg;
    clnorm_bn_default_config(&cfg);
    switch (op) {
    case OP_BN_TRAIN:
    case OP_BN_INFER:
    case OP_BN_APPLY: {
        clnorm_shape s = shape_arg(in, &bn_valid);
        cfg.eps = double_arg(in, cfg.eps);
        cfg.momentum = double_arg(in, cfg.momentum);
        cfg.activation = (clnorm_activation)int_arg(in, 0);
        clnorm_bn_buffers b;
        b.x = mem_arg(in, 0, NULL);
        b.y = mem_arg(in, 1, b.x);
        b.residual = mem_arg(in, 2, b.x);
        b.gamma = mem_arg(in, 7, b.x);
        b.beta = mem_arg(in, 8, b.x);
        b.running_mean = mem_arg(in, 9, b.x);
        b.running_var = mem_arg(in, 10, b.x);
        b.save_mean = mem_arg(in, 11, b.x);
        b.save_invstd = mem_arg(in, 12, b.x);
        const int null_buffers = byte(in) == 1, null_cfg = byte(in) == 1;
        events_arg(in, &e);
        clnorm_status (*f)(clnorm_context *, const clnorm_shape *, const clnorm_bn_config *,
                           const clnorm_bn_buffers *, cl_uint, const cl_event *, cl_event *) =
            op == OP_BN_TRAIN ? clnorm_bn_forward_training
            : op == OP_BN_INFER ? clnorm_bn_forward_inference
                                : clnorm_bn_apply;
        o.status = f(ctx, &s, null_cfg ? NULL : &cfg, null_buffers ? NULL : &b, e.num_wait,
                     e.wait, e.ev_p);
        o.allowed = A_ENQUEUE;
        o.has_event = 1;
        break;
    }
    case OP_BN_BACKWARD:
    case OP_BN_FROZEN: {
        clnorm_shape s = shape_arg(in, &bn_valid);
        cfg.eps = double_arg(in, cfg.eps);
        cfg.momentum = double_arg(in, cfg.momentum);
        cfg.activation = (clnorm_activation)int_arg(in, 0);
        clnorm_bn_grad_buffers g;
        g.x = mem_arg(in, 0, NULL);
        g.dy = mem_arg(in, 3, g.x);
        g.y = mem_arg(in, 1, g.x);
        g.gamma = mem_arg(in, 7, g.x);
        g.mean = mem_arg(in, op == OP_BN_FROZEN ? 9 : 11, g.x);
        g.invstd = mem_arg(in, 12, g.x);
        g.var = mem_arg(in, 10, g.x);
        g.dx = mem_arg(in, 4, g.x);
        g.dgamma = mem_arg(in, 13, g.x);
        g.dbeta = mem_arg(in, 14, g.x);
        g.dresidual = mem_arg(in, 5, g.x);
        events_arg(in, &e);
        o.status = (op == OP_BN_FROZEN ? clnorm_bn_backward_frozen : clnorm_bn_backward)(
            ctx, &s, &cfg, byte(in) == 1 ? NULL : &g, e.num_wait, e.wait, e.ev_p);
        o.allowed = A_ENQUEUE;
        o.has_event = 1;
        break;
    }
    case OP_BN_PARTIAL: {
        clnorm_shape s = shape_arg(in, &bn_valid);
        cl_mem x = mem_arg(in, 0, NULL), set = mem_arg(in, 29, x);
        events_arg(in, &e);
        o.status = clnorm_bn_partial_stats(ctx, byte(in) == 1 ? NULL : &s, x, set, e.num_wait,
                                           e.wait, e.ev_p);
        o.allowed = A_ENQUEUE;
        o.has_event = 1;
        break;
    }
    case OP_BN_MERGE: {
        const size_t channels = size_arg(in, BN_C), sets = size_arg(in, 2);
        cfg.eps = double_arg(in, cfg.eps);
        cfg.momentum = double_arg(in, cfg.momentum);
        cfg.activation = (clnorm_activation)int_arg(in, 0);
        cl_mem all = mem_arg(in, 30, NULL), rm = mem_arg(in, 9, all), rv = mem_arg(in, 10, all),
               sm = mem_arg(in, 11, all), si = mem_arg(in, 12, all);
        events_arg(in, &e);
        o.status = clnorm_bn_merge_stats(ctx, channels, sets, all, &cfg, rm, rv, sm, si,
                                         e.num_wait, e.wait, e.ev_p);
        o.allowed = A_ENQUEUE;
        o.has_event = 1;
        break;
    }
    case OP_LN_FORWARD:
    case OP_RMS_FORWARD:
    case OP_LN_BACKWARD:
    case OP_RMS_BACKWARD: {
        const int rms = op == OP_RMS_FORWARD || op == OP_RMS_BACKWARD;
        const size_t rows = size_arg(in, LN_ROWS), cols = size_arg(in, LN_D);
        const double eps = double_arg(in, 1e-5);
        if (op == OP_LN_FORWARD || op == OP_RMS_FORWARD) {
            clnorm_norm_buffers b;
            b.x = mem_arg(in, 0, NULL);
            b.residual = mem_arg(in, -1, b.x);
            b.h = mem_arg(in, -1, b.x);
            b.weight = mem_arg(in, 15, b.x);
            b.bias = mem_arg(in, rms ? -1 : 16, b.x);
            b.y = mem_arg(in, 1, b.x);
            b.mean = mem_arg(in, rms ? -1 : 19, b.x);
            b.rstd = mem_arg(in, 20, b.x);
            events_arg(in, &e);
            o.status = (rms ? clnorm_rmsnorm_forward : clnorm_layernorm_forward)(
                ctx, rows, cols, eps, byte(in) == 1 ? NULL : &b, e.num_wait, e.wait, e.ev_p);
        } else {
            clnorm_norm_grad_buffers g;
            g.x = mem_arg(in, 0, NULL);
            g.dy = mem_arg(in, 3, g.x);
            g.weight = mem_arg(in, 15, g.x);
            g.mean = mem_arg(in, rms ? -1 : 19, g.x);
            g.rstd = mem_arg(in, 20, g.x);
            g.dh_in = mem_arg(in, -1, g.x);
            g.dx = mem_arg(in, 4, g.x);
            g.dweight = mem_arg(in, 17, g.x);
            g.dbias = mem_arg(in, rms ? -1 : 18, g.x);
            events_arg(in, &e);
            o.status = (rms ? clnorm_rmsnorm_backward : clnorm_layernorm_backward)(
                ctx, rows, cols, byte(in) == 1 ? NULL : &g, e.num_wait, e.wait, e.ev_p);
        }
        o.allowed = A_ENQUEUE;
        o.has_event = 1;
        break;
    }
    case OP_GN_FORWARD:
    case OP_IN_FORWARD: {
        clnorm_shape s = shape_arg(in, &gn_valid);
        const size_t groups = size_arg(in, GN_G);
        const double eps = double_arg(in, 1e-5), momentum = double_arg(in, 0.1);
        const int use_input_stats = int_arg(in, 1);
        clnorm_norm_buffers b;
        b.x = mem_arg(in, 0, NULL);
        b.residual = mem_arg(in, -1, b.x);
        b.h = mem_arg(in, -1, b.x);
        b.weight = mem_arg(in, 21, b.x);
        b.bias = mem_arg(in, 22, b.x);
        b.y = mem_arg(in, 1, b.x);
        b.mean = mem_arg(in, op == OP_GN_FORWARD ? 19 : 27, b.x);
        b.rstd = mem_arg(in, op == OP_GN_FORWARD ? 20 : 28, b.x);
        cl_mem rm = mem_arg(in, 25, b.x), rv = mem_arg(in, 26, b.x);
        events_arg(in, &e);
        const clnorm_norm_buffers *bp = byte(in) == 1 ? NULL : &b;
        o.status = op == OP_GN_FORWARD
                       ? clnorm_groupnorm_forward(ctx, &s, groups, eps, bp, e.num_wait, e.wait,
                                                  e.ev_p)
                       : clnorm_instancenorm_forward(ctx, &s, eps, momentum, use_input_stats, bp,
                                                     rm, rv, e.num_wait, e.wait, e.ev_p);
        o.allowed = A_ENQUEUE;
        o.has_event = 1;
        break;
    }
    case OP_GN_BACKWARD:
    case OP_IN_BACKWARD: {
        clnorm_shape s = shape_arg(in, &gn_valid);
        const size_t groups = size_arg(in, GN_G);
        clnorm_norm_grad_buffers g;
        g.x = mem_arg(in, 0, NULL);
        g.dy = mem_arg(in, 3, g.x);
        g.weight = mem_arg(in, 21, g.x);
        g.mean = mem_arg(in, op == OP_GN_BACKWARD ? 19 : 27, g.x);
        g.rstd = mem_arg(in, op == OP_GN_BACKWARD ? 20 : 28, g.x);
        g.dh_in = mem_arg(in, -1, g.x);
        g.dx = mem_arg(in, 4, g.x);
        g.dweight = mem_arg(in, 23, g.x);
        g.dbias = mem_arg(in, 24, g.x);
        events_arg(in, &e);
        const clnorm_norm_grad_buffers *gp = byte(in) == 1 ? NULL : &g;
        o.status = op == OP_GN_BACKWARD
                       ? clnorm_groupnorm_backward(ctx, &s, groups, gp, e.num_wait, e.wait,
                                                   e.ev_p)
                       : clnorm_instancenorm_backward(ctx, &s, gp, e.num_wait, e.wait, e.ev_p);
        o.allowed = A_ENQUEUE;
        o.has_event = 1;
        break;
    }
    case OP_BNL_CREATE:
    case OP_FNL_CREATE: {
        const int kind = op == OP_BNL_CREATE ? L_BN : 1 + byte(in) % 4;
        const size_t size = size_arg(in, kind == L_LN || kind == L_RMS ? LN_D : kind == L_BN ? BN_C : GN_C);
        const size_t groups = size_arg(in, kind == L_GN ? GN_G : 1);
        const double eps = double_arg(in, 1e-5), momentum = double_arg(in, 0.1);
        const int flag_a = int_arg(in, 1), flag_b = int_arg(in, 1), flag_c = int_arg(in, 0);
        const int null_out = byte(in) == 1, null_options = byte(in) == 1;
        if (size > (1u << 20) && size <= (size_t)(max_alloc / sizeof(float)))
            return (outcome){CLNORM_OK, 0, 0, 0, NULL, 0}; /* valid but slow: not here */
        void *made = (void *)(uintptr_t)1;
        if (kind == L_BN) {
            clnorm_batchnorm_options opt;
            clnorm_batchnorm_default_options(&opt, size);
            opt.eps = eps;
            opt.momentum = momentum;
            opt.affine = flag_a;
            opt.track_running_stats = flag_b;
            opt.cumulative_average = flag_c;
            o.status = clnorm_batchnorm_create(ctx, null_options ? NULL : &opt,
                                               null_out ? NULL : (clnorm_batchnorm **)&made);
            if (o.status == CLNORM_OK)
                clnorm_batchnorm_release(made);
        } else {
            clnorm_featurenorm **out = null_out ? NULL : (clnorm_featurenorm **)&made;
            if (kind == L_LN) {
                clnorm_layernorm_options opt;
                clnorm_layernorm_default_options(&opt, size);
                opt.eps = eps;
                opt.elementwise_affine = flag_a;
                opt.bias = flag_b;
                o.status = clnorm_featurenorm_create_layernorm(ctx, null_options ? NULL : &opt, out);
            } else if (kind == L_RMS) {
                clnorm_rmsnorm_options opt;
                clnorm_rmsnorm_default_options(&opt, size);
                opt.eps = eps;
                opt.elementwise_affine = flag_a;
                o.status = clnorm_featurenorm_create_rmsnorm(ctx, null_options ? NULL : &opt, out);
            } else if (kind == L_GN) {
                clnorm_groupnorm_options opt;
                clnorm_groupnorm_default_options(&opt, groups, size);
                opt.eps = eps;
                opt.affine = flag_a;
                o.status = clnorm_featurenorm_create_groupnorm(ctx, null_options ? NULL : &opt, out);
            } else {
                clnorm_instancenorm_options opt;
                clnorm_instancenorm_default_options(&opt, size);
                opt.eps = eps;
                opt.momentum = momentum;
                opt.affine = flag_a;
                opt.track_running_stats = flag_b;
                o.status =
                    clnorm_featurenorm_create_instancenorm(ctx, null_options ? NULL : &opt, out);
            }
            if (o.status == CLNORM_OK)
                clnorm_featurenorm_release(made);
        }
        o.allowed = A_ARG | A_UNSUPPORTED;
        o.has_out = !null_out;
        o.out = o.status == CLNORM_OK ? NULL : made;
        break;
    }
    case OP_BNL_SET_MODE: {
        const int mode = int_arg(in, CLNORM_EVALUATION);
        const int null_layer = byte(in) == 1; /* no layer: no context to hold a message */
        o.status = clnorm_batchnorm_set_mode(null_layer ? NULL : get_bn(), (clnorm_mode)mode);
        o.allowed = A_ARG;
        o.message_in_ctx = !null_layer;
        break;
    }
    case OP_BNL_FORWARD:
    case OP_BNL_BACKWARD: {
        clnorm_batchnorm *layer = get_bn();
        const int expected = int_arg(in, (int)clnorm_batchnorm_mode(layer));
        clnorm_shape s = shape_arg(in, &bn_valid);
        const int activation = int_arg(in, 0);
        cl_mem x = mem_arg(in, 0, NULL), y = mem_arg(in, 1, x), residual = mem_arg(in, 2, x),
               dy = mem_arg(in, 3, x), dx = mem_arg(in, 4, x), dres = mem_arg(in, 5, x);
        events_arg(in, &e);
        const int null_shape = byte(in) == 1;
        if (op == OP_BNL_FORWARD)
            o.status = clnorm_batchnorm_forward(layer, (clnorm_mode)expected, null_shape ? NULL : &s,
                                                (clnorm_activation)activation, x, residual, y,
                                                e.num_wait, e.wait, e.ev_p);
        else
            o.status = clnorm_batchnorm_backward(layer, null_shape ? NULL : &s,
                                                 (clnorm_activation)activation, x, y, dy, dx,
                                                 dres, e.num_wait, e.wait, e.ev_p);
        o.allowed = A_ENQUEUE | A_MODE;
        o.has_event = 1;
        break;
    }
    case OP_BNL_FOLD: {
        static float host[16];
        const uint8_t b = byte(in);
        o.status = clnorm_batchnorm_fold(get_bn(), b == 1 ? NULL : host, b == 2 ? NULL : host + 8);
        o.allowed = A_ARG;
        break;
    }
    case OP_BNL_FOLD_LINEAR: {
        const size_t in_features = size_arg(in, FOLD_IN);
        cl_mem w = mem_arg(in, 31, NULL), bias = mem_arg(in, 7, w);
        events_arg(in, &e);
        o.status = clnorm_batchnorm_fold_linear(get_bn(), w, bias, in_features, e.num_wait,
                                                e.wait, e.ev_p);
        o.allowed = A_ENQUEUE;
        o.has_event = 1;
        break;
    }
    case OP_BNL_SAVE_LOAD:
    case OP_FNL_SAVE_LOAD: {
        const int kind = op == OP_BNL_SAVE_LOAD ? L_BN : 1 + byte(in) % 4;
        const uint8_t which = byte(in);
        char path[700];
        const char *names[] = {"layer.bin", "", "no-such-folder/layer.bin", "missing.bin"};
        snprintf(path, sizeof path, "%s/%s", dir, names[which % 4]);
        const char *p = which % 4 == 1 ? "" : (which & 4) ? NULL : path;
        const int load = (which & 8) != 0;
        if (kind == L_BN)
            o.status = load ? clnorm_batchnorm_load(get_bn(), p) : clnorm_batchnorm_save(get_bn(), p);
        else
            o.status = load ? clnorm_featurenorm_load(get_fn(kind), p)
                            : clnorm_featurenorm_save(get_fn(kind), p);
        o.allowed = A_ARG | A_IO | A_FILE;
        break;
    }
    case OP_FNL_SET_MODE: {
        const int kind = 1 + byte(in) % 4, mode = int_arg(in, CLNORM_EVALUATION);
        o.status = clnorm_featurenorm_set_mode(get_fn(kind), (clnorm_mode)mode);
        o.allowed = A_ARG;
        break;
    }
    case OP_FNL_FORWARD_ROWS:
    case OP_FNL_BACKWARD_ROWS: {
        clnorm_featurenorm *layer = get_fn(1 + byte(in) % 4);
        const size_t rows = size_arg(in, LN_ROWS);
        cl_mem x = mem_arg(in, 0, NULL), residual = mem_arg(in, -1, x), h = mem_arg(in, -1, x),
               y = mem_arg(in, 1, x), dy = mem_arg(in, 3, x), dh = mem_arg(in, -1, x),
               dx = mem_arg(in, 4, x);
        events_arg(in, &e);
        o.status = op == OP_FNL_FORWARD_ROWS
                       ? clnorm_featurenorm_forward_rows(layer, rows, x, residual, h, y,
                                                         e.num_wait, e.wait, e.ev_p)
                       : clnorm_featurenorm_backward_rows(layer, rows, x, dy, dh, dx, e.num_wait,
                                                          e.wait, e.ev_p);
        o.allowed = A_ENQUEUE;
        o.has_event = 1;
        break;
    }
    case OP_FNL_FORWARD_GROUPS:
    case OP_FNL_BACKWARD_GROUPS:
    case OP_FNL_FORWARD_INSTANCES:
    case OP_FNL_BACKWARD_INSTANCES: {
        const int instances = op == OP_FNL_FORWARD_INSTANCES || op == OP_FNL_BACKWARD_INSTANCES;
        const uint8_t k = byte(in);
        clnorm_featurenorm *layer = get_fn(k ? 1 + k % 4 : instances ? L_IN : L_GN);
        const int expected = int_arg(in, (int)clnorm_featurenorm_mode(layer));
        clnorm_shape s = shape_arg(in, &gn_valid);
        cl_mem x = mem_arg(in, 0, NULL), y = mem_arg(in, 1, x), dy = mem_arg(in, 3, x),
               dx = mem_arg(in, 4, x);
        events_arg(in, &e);
        const clnorm_shape *sp = byte(in) == 1 ? NULL : &s;
        switch (op) {
        case OP_FNL_FORWARD_GROUPS:
            o.status = clnorm_featurenorm_forward_groups(layer, sp, x, y, e.num_wait, e.wait, e.ev_p);
            break;
        case OP_FNL_BACKWARD_GROUPS:
            o.status = clnorm_featurenorm_backward_groups(layer, sp, x, dy, dx, e.num_wait, e.wait,
                                                          e.ev_p);
            break;
        case OP_FNL_FORWARD_INSTANCES:
            o.status = clnorm_featurenorm_forward_instances(layer, (clnorm_mode)expected, sp, x, y,
                                                            e.num_wait, e.wait, e.ev_p);
            break;
        default:
            o.status = clnorm_featurenorm_backward_instances(layer, sp, x, dy, dx, e.num_wait,
                                                             e.wait, e.ev_p);
            break;
        }
        o.allowed = A_ENQUEUE | A_MODE;
        o.has_event = 1;
        break;
    }
    case OP_PARAMS: {
        const char *names[] = {"vector_width", "work_group_size", "items_per_thread",
                               "partials_per_channel", "channel_tile", "block_vectors",
                               "item_tile", "no_such_parameter", "", NULL};
        const char *name = names[byte(in) % ARRAY_LEN(names)];
        const long value = (long)(int64_t)raw(in, 8);
        const uint8_t which = byte(in) % 3;
        long before = 0, got = 0;
        const int known = clnorm_get_param(ctx, name, &before) == CLNORM_OK;
        if (which == 0) {
            o.status = clnorm_set_param(ctx, name, value);
            /* a value it accepted: put the old one back before any kernel is built with it */
            if (o.status == CLNORM_OK && known && clnorm_set_param(ctx, name, before) != CLNORM_OK)
                die("clnorm_set_param could not restore a parameter", name);
        } else {
            o.status = (which == 1 ? clnorm_get_param : clnorm_get_default_param)(
                ctx, name, byte(in) == 1 ? NULL : &got);
        }
        o.allowed = A_ARG;
        break;
    }
    default: { /* OP_INFO */
        const uint8_t which = byte(in) % 6, null = byte(in) == 1;
        clnorm_featurenorm_info info;
        clnorm_featurenorm_buffers fb;
        clnorm_batchnorm_buffers bb;
        clnorm_cache_stats stats;
        double ms;
        clnorm_kernel_time kt[2];
        size_t count = 0;
        switch (which) {
        case 0: o.status = clnorm_featurenorm_get_info(get_fn(1 + byte(in) % 4), null ? NULL : &info); break;
        case 1: o.status = clnorm_featurenorm_get_buffers(get_fn(1 + byte(in) % 4), null ? NULL : &fb); break;
        case 2: o.status = clnorm_batchnorm_get_buffers(get_bn(), null ? NULL : &bb); break;
        case 3: o.status = clnorm_get_cache_stats(ctx, null ? NULL : &stats); break;
        case 4: o.status = clnorm_last_op_time(ctx, null ? NULL : &ms); break;
        default: { /* kernels NULL with a capacity, or count NULL */
            const size_t capacity = byte(in) % 3;
            const int no_count = byte(in) == 1;
            o.status = clnorm_last_op_kernels(ctx, null ? NULL : kt, capacity,
                                              no_count ? NULL : &count);
            break;
        }
        }
        o.allowed = A_ARG | A_UNSUPPORTED;
        break;
    }
    }
    if (o.has_event) {
        if (o.status != CLNORM_OK && e.ev_p && e.ev)
            die("a failed call returned an event", clnorm_last_error(ctx));
        if (o.status == CLNORM_OK && e.ev_p) {
            if (!e.ev || e.ev == SENTINEL_EVENT)
                die("a successful call returned no event", NULL);
            if (clWaitForEvents(1, &e.ev) != CL_SUCCESS)
                die("the event of a successful call did not complete", NULL);
            clReleaseEvent(e.ev);
        }
    }
    return o;
}

/* ---- one input ------------------------------------------------------------------------------- */

static void check_call(const outcome *o, int op)
{
    char detail[4200];
    calls++;
    clFinish(queue);
    clFinish(other_queue);
    const char *message = clnorm_last_error(ctx);
    if (o->status != CLNORM_OK) {
        failures++;
        if (!(o->allowed & (1u << o->status))) {
            snprintf(detail, sizeof detail, "operation %d: %s (%s)", op,
                     clnorm_status_name(o->status), message);
            die("a status the call does not document", detail);
        }
        char prefix[64];
        snprintf(prefix, sizeof prefix, "%s: ", clnorm_status_name(o->status));
        if (o->message_in_ctx && strncmp(message, prefix, strlen(prefix))) {
            snprintf(detail, sizeof detail, "operation %d: %s but the message is \"%s\"", op,
                     clnorm_status_name(o->status), message);
            die("a failure without its message", detail);
        }
        if (o->has_out && o->out) {
            snprintf(detail, sizeof detail, "operation %d: %s", op, message);
            die("a failed create left *out set", detail);
        }
    }
    /* the buffers: on failure all as before; on success only the given ones changed, and no
     * canary word anywhere */
    for (int a = 0; a < 2; a++) {
        arena *ar = &arenas[a];
        if (clEnqueueReadBuffer(ar->queue, ar->parent, CL_TRUE, 0, ar->bytes, ar->now, 0, NULL,
                                NULL) != CL_SUCCESS)
            die("clEnqueueReadBuffer", NULL);
        if (!memcmp(ar->now, ar->before, ar->bytes))
            continue;
        if (o->status != CLNORM_OK) {
            snprintf(detail, sizeof detail, "operation %d: %s (%s)", op,
                     clnorm_status_name(o->status), message);
            die("a failed call wrote a buffer", detail);
        }
        const uint32_t *words = (const uint32_t *)ar->now;
        size_t next = 0; /* the buffer at or after word w */
        for (size_t w = 0; w < ar->bytes / 4; w++) {
            while (next < ar->count && w * 4 >= ar->buffers[next].offset + ar->buffers[next].bytes)
                next++;
            const buffer *b = next < ar->count ? &ar->buffers[next] : NULL;
            const int inside = b && w * 4 >= b->offset;
            if (!inside && words[w] != canary(w)) {
                snprintf(detail, sizeof detail, "operation %d, arena %d, word %zu (%s buffer %zu)",
                         op, a, w, b ? "before" : "after", b ? next : ar->count - 1);
                die("a call wrote outside its buffers (a canary changed)", detail);
            }
            if (inside && !b->passed && words[w] != ((const uint32_t *)ar->before)[w]) {
                snprintf(detail, sizeof detail, "operation %d, arena %d, buffer %zu", op, a, next);
                die("a call wrote a buffer it was not given", detail);
            }
        }
        memcpy(ar->before, ar->now, ar->bytes);
    }
    layers_state(&after_state);
    if (o->status != CLNORM_OK &&
        (after_state.size != before_state.size ||
         memcmp(after_state.data, before_state.data, before_state.size))) {
        snprintf(detail, sizeof detail, "operation %d: %s (%s)", op, clnorm_status_name(o->status),
                 message);
        die("a failed call changed a layer", detail);
    }
}

/* Before a call: nothing has run since the last call's checks, which read the arenas; the
 * layers are read now, and again when the call's decoding makes one. */
static void snapshot(void)
{
    for (size_t i = 0; i < POOL; i++)
        pool[i].passed = 0;
    for (size_t i = 0; i < FOREIGN_COUNT; i++)
        foreign[i].passed = 0;
    layers_state(&before_state);
    taking_state = 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 512)
        return 0;
    input in = {data, size, 0};
    char p[700]; /* what a save left is not the next input's business */
    snprintf(p, sizeof p, "%s/layer.bin", dir);
    unlink(p);
    for (int n = 0; n < 4 && in.at < in.size; n++) {
        const int op = byte(&in) % OP_COUNT;
        snapshot();
        const outcome o = run_op(&in, op);
        taking_state = 0;
        check_call(&o, op);
    }
    release_layers();
    return 0;
}

/* ---- set-up and seeds ------------------------------------------------------------------------ */

static void write_seed(const char *folder, const char *name, const uint8_t *bytes, size_t n)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", folder, name);
    FILE *f = fopen(p, "wb");
    if (!f || fwrite(bytes, 1, n, f) != n || fclose(f))
        die("writing a seed", p);
}

static void write_seeds(const char *folder)
{
    /* every operation's valid call: its opcode, then zeros (each argument's valid value) */
    for (int op = 0; op < OP_COUNT; op++) {
        uint8_t bytes[48] = {(uint8_t)op};
        char name[64];
        snprintf(name, sizeof name, "valid-%02d", op);
        write_seed(folder, name, bytes, sizeof bytes);
    }
    /* a forward then its backward, for the layers */
    const uint8_t pairs[][2] = {{OP_BNL_FORWARD, OP_BNL_BACKWARD},
                                {OP_FNL_FORWARD_ROWS, OP_FNL_BACKWARD_ROWS},
                                {OP_FNL_FORWARD_GROUPS, OP_FNL_BACKWARD_GROUPS},
                                {OP_FNL_FORWARD_INSTANCES, OP_FNL_BACKWARD_INSTANCES}};
    for (size_t i = 0; i < ARRAY_LEN(pairs); i++) {
        uint8_t bytes[96] = {0};
        bytes[0] = pairs[i][0];
        bytes[48] = pairs[i][1];
        char name[64];
        snprintf(name, sizeof name, "pair-%zu", i);
        write_seed(folder, name, bytes, sizeof bytes);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char message[4096];
    if (clnorm_context_create(&ctx, NULL, message, sizeof message) != CLNORM_OK ||
        clnorm_context_create(&other, NULL, message, sizeof message) != CLNORM_OK)
        die("context", message);
    queue = clnorm_context_queue(ctx);
    other_queue = clnorm_context_queue(other);
    cl_uint bits = 0;
    clGetDeviceInfo(clnorm_context_device(ctx), CL_DEVICE_MEM_BASE_ADDR_ALIGN, sizeof bits, &bits,
                    NULL);
    align = bits / 8 < 4 ? 4 : bits / 8;
    clnorm_device_info info;
    if (clnorm_context_device_info(ctx, &info) != CLNORM_OK)
        die("device info", clnorm_last_error(ctx));
    max_alloc = info.max_alloc_bytes;
    make_arena(&arenas[0], ctx, pool, pool_floats, POOL);
    make_arena(&arenas[1], other, foreign, foreign_floats, FOREIGN_COUNT);
    cl_int err;
    own_event = clCreateUserEvent(clnorm_context_cl_context(ctx), &err);
    clSetUserEventStatus(own_event, CL_COMPLETE);
    foreign_event = clCreateUserEvent(clnorm_context_cl_context(other), &err);
    clSetUserEventStatus(foreign_event, CL_COMPLETE);
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/clnorm-fuzz-arguments-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir))
        die("mkdtemp", dir);
    if (clnorm_warm_up(ctx) != CLNORM_OK)
        die("warm up", clnorm_last_error(ctx));
    const char *seeds = getenv("CLNORM_FUZZ_WRITE_SEEDS");
    if (seeds && *seeds) {
        write_seeds(seeds);
        fprintf(stderr, "fuzz_arguments: seeds written to %s\n", seeds);
        exit(0);
    }
    return 0;
}

/* libFuzzer prints its own statistics; this adds the calls. The layers' files go with the
 * folder. */
__attribute__((destructor)) static void report(void)
{
    if (calls)
        fprintf(stderr, "fuzz_arguments: %llu calls, %llu refused\n", calls, failures);
    if (dir[0]) {
        const char *names[] = {"layer.bin", "missing.bin"};
        for (size_t i = 0; i < ARRAY_LEN(names); i++) {
            char p[700];
            snprintf(p, sizeof p, "%s/%s", dir, names[i]);
            unlink(p);
        }
        rmdir(dir);
    }
}

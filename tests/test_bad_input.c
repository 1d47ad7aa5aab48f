/* Bad input over every public function of include/clnorm.h and include/clnorm/ (every header).
 *
 * Read `rows` below as the specification: each row is {function, what is wrong with one
 * argument of an otherwise valid call, the status it returns, what clnorm_last_error names}.
 * For every row the test builds the valid call, breaks that one argument, calls, and asserts:
 *   - the documented status, and a message that starts with the status's name and names the
 *     argument (or the limit): clnorm_last_error of the context; of NULL for a NULL context
 *     ("context is NULL"); the error_message buffer for clnorm_context_create/_wrap. A NULL
 *     layer has no context to hold a message: those rows check the status only (names NULL);
 *   - no event: *event was set to a sentinel and must come back NULL; a create's *out is NULL;
 *   - nothing written: every buffer of the test (inputs, outputs, the buffers of every layer
 *     object, the buffers of the other context) is read back whole and compared byte for byte.
 *     The test's own buffers are sub-buffers at CL_DEVICE_MEM_BASE_ADDR_ALIGN inside a larger
 *     parent filled with a canary pattern, and the whole parent is compared: a write one
 *     element before or after a buffer is caught too. The layers' state (mode, counters, info,
 *     saved statistics) must not change either;
 *   - nothing leaks: the context's and the queue's OpenCL reference counts are the same after
 *     the call (on devices where they count objects, see test_reliability.c), and the whole
 *     program runs under AddressSanitizer + LeakSanitizer in the sanitized step of run.sh.
 *
 * functions_without_a_status_... covers the functions that return no status (names, defaults,
 * releases, getters) with NULL and out-of-range arguments. The `subbuffers` test runs valid
 * calls (batch norm forward training and inference, backward, LayerNorm forward and backward,
 * RMSNorm, GroupNorm forward and backward) on sub-buffers at the smallest offset the device
 * allows and odd multiples of it (and 1 and 3 floats in, off the vector grid, on devices that
 * accept such sub-buffers, as Oclgrind does), with odd sizes, and checks the results bit for
 * bit against the same calls on plain buffers (and against a float64 reference), and that the
 * canaries around every buffer are intact. run.sh also runs it under Oclgrind. */
#define _XOPEN_SOURCE 700
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bn_reference.h"
#include "support.h"

_Static_assert(sizeof(clnorm_layout) == sizeof(int) && sizeof(clnorm_mode) == sizeof(int) &&
                   sizeof(clnorm_activation) == sizeof(int),
               "enum arguments are written as int");

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define SENTINEL_EVENT ((cl_event)(uintptr_t)0x5e171e)

/* ---- the functions ------------------------------------------------------------------------- */

typedef enum fn {
    /* clnorm.h */
    F_LIST_DEVICES, F_CONTEXT_CREATE, F_CONTEXT_WRAP, F_DEVICE_INFO, F_FINISH, F_SET_PARAM,
    F_GET_PARAM, F_GET_DEFAULT_PARAM, F_SAVE_PARAMS, F_WARM_UP, F_SELF_CHECK, F_CACHE_STATS,
    F_LAST_OP_TIME, F_LAST_OP_KERNELS, F_CLEAR_DISK_CACHE,
    /* clnorm/batchnorm.h, functional */
    F_BN_TRAIN, F_BN_INFER, F_BN_BACKWARD, F_BN_FROZEN, F_BN_PARTIAL, F_BN_MERGE, F_BN_APPLY,
    /* clnorm/batchnorm.h, the layer object */
    F_BNL_CREATE, F_BNL_SET_MODE, F_BNL_GET_BUFFERS, F_BNL_FORWARD, F_BNL_BACKWARD, F_BNL_SAVE,
    F_BNL_LOAD, F_BNL_FOLD, F_BNL_FOLD_LINEAR,
    /* clnorm/featurenorm.h */
    F_LN_FORWARD, F_LN_BACKWARD, F_RMS_FORWARD, F_RMS_BACKWARD, F_GN_FORWARD, F_GN_BACKWARD,
    F_IN_FORWARD, F_IN_BACKWARD,
    /* clnorm/featurenorm_layer.h */
    F_FNL_CREATE_LN, F_FNL_CREATE_RMS, F_FNL_CREATE_GN, F_FNL_CREATE_IN, F_FNL_SET_MODE,
    F_FNL_GET_INFO, F_FNL_GET_BUFFERS, F_FNL_FORWARD_ROWS, F_FNL_BACKWARD_ROWS,
    F_FNL_FORWARD_GROUPS, F_FNL_BACKWARD_GROUPS, F_FNL_FORWARD_INSTANCES,
    F_FNL_BACKWARD_INSTANCES, F_FNL_SAVE, F_FNL_LOAD,
    F_COUNT
} fn;

static const char *const fn_names[F_COUNT] = {
    "clnorm_list_devices", "clnorm_context_create", "clnorm_context_wrap",
    "clnorm_context_device_info", "clnorm_finish", "clnorm_set_param", "clnorm_get_param",
    "clnorm_get_default_param", "clnorm_save_params", "clnorm_warm_up", "clnorm_self_check", "clnorm_get_cache_stats", "clnorm_last_op_time",
    "clnorm_last_op_kernels", "clnorm_clear_disk_cache",
    "clnorm_bn_forward_training", "clnorm_bn_forward_inference", "clnorm_bn_backward",
    "clnorm_bn_backward_frozen", "clnorm_bn_partial_stats", "clnorm_bn_merge_stats",
    "clnorm_bn_apply",
    "clnorm_batchnorm_create", "clnorm_batchnorm_set_mode", "clnorm_batchnorm_get_buffers",
    "clnorm_batchnorm_forward", "clnorm_batchnorm_backward", "clnorm_batchnorm_save",
    "clnorm_batchnorm_load", "clnorm_batchnorm_fold", "clnorm_batchnorm_fold_linear",
    "clnorm_layernorm_forward", "clnorm_layernorm_backward", "clnorm_rmsnorm_forward",
    "clnorm_rmsnorm_backward", "clnorm_groupnorm_forward", "clnorm_groupnorm_backward",
    "clnorm_instancenorm_forward", "clnorm_instancenorm_backward",
    "clnorm_featurenorm_create_layernorm", "clnorm_featurenorm_create_rmsnorm",
    "clnorm_featurenorm_create_groupnorm", "clnorm_featurenorm_create_instancenorm",
    "clnorm_featurenorm_set_mode", "clnorm_featurenorm_get_info",
    "clnorm_featurenorm_get_buffers", "clnorm_featurenorm_forward_rows",
    "clnorm_featurenorm_backward_rows", "clnorm_featurenorm_forward_groups",
    "clnorm_featurenorm_backward_groups", "clnorm_featurenorm_forward_instances",
    "clnorm_featurenorm_backward_instances", "clnorm_featurenorm_save",
    "clnorm_featurenorm_load",
};

/* Which header a function is declared in: one Test per header. */
typedef enum group { G_CONTEXT, G_BN, G_BN_LAYER, G_FN, G_FN_LAYER } group;

static group group_of(fn f)
{
    return f < F_BN_TRAIN ? G_CONTEXT
           : f < F_BNL_CREATE ? G_BN
           : f < F_LN_FORWARD ? G_BN_LAYER
           : f < F_FNL_CREATE_LN ? G_FN
                                 : G_FN_LAYER;
}

/* Every argument of every function: a row breaks one of these fields. */
typedef struct call {
    clnorm_context *ctx;
    clnorm_shape shape;
    const clnorm_shape *shape_p;
    clnorm_bn_config cfg;
    const clnorm_bn_config *cfg_p;
    clnorm_bn_buffers bn;
    const clnorm_bn_buffers *bn_p;
    clnorm_bn_grad_buffers bg;
    const clnorm_bn_grad_buffers *bg_p;
    clnorm_norm_buffers nb;
    const clnorm_norm_buffers *nb_p;
    clnorm_norm_grad_buffers ng;
    const clnorm_norm_grad_buffers *ng_p;
    cl_mem x, y, residual, h, dy, dx, dh_in, dresidual, stats, running_mean, running_var,
        save_mean, save_invstd, weight, bias;
    size_t rows, cols, groups, channels, num_sets, in_features;
    double eps, momentum;
    int use_input_stats;
    clnorm_mode mode;
    clnorm_activation activation;
    /* layer objects */
    clnorm_batchnorm *bnl;
    clnorm_featurenorm *fnl;
    clnorm_batchnorm_options bno;
    const clnorm_batchnorm_options *bno_p;
    clnorm_layernorm_options lno;
    const clnorm_layernorm_options *lno_p;
    clnorm_rmsnorm_options rmo;
    const clnorm_rmsnorm_options *rmo_p;
    clnorm_groupnorm_options gno;
    const clnorm_groupnorm_options *gno_p;
    clnorm_instancenorm_options ino;
    const clnorm_instancenorm_options *ino_p;
    clnorm_batchnorm *made_bn, **bn_out;
    clnorm_featurenorm *made_fn, **fn_out;
    const char *path;
    float *scale, *shift;
    /* context calls */
    clnorm_context *made_ctx, **ctx_out;
    clnorm_settings settings;
    const clnorm_settings *settings_p;
    cl_context cl_ctx;
    cl_device_id device;
    cl_command_queue queue;
    char message[4096];
    clnorm_device_info infos[2], *infos_p, info, *info_p;
    size_t capacity, count, *count_p;
    const char *name;
    long value, *value_p;
    clnorm_cache_stats stats_out, *stats_p;
    double ms, *ms_p;
    clnorm_kernel_time ktimes[2], *ktimes_p;
    size_t kcapacity;
    clnorm_featurenorm_info finfo, *finfo_p;
    clnorm_batchnorm_buffers bbufs, *bbufs_p;
    clnorm_featurenorm_buffers fbufs, *fbufs_p;
    /* events */
    cl_uint num_wait;
    const cl_event *wait;
    cl_event ev, *ev_p;
} call;

/* ---- the table -------------------------------------------------------------------------------- */

typedef enum kind {
    K_NULL,    /* the field (a pointer or a buffer) becomes NULL */
    K_SHORT,   /* the buffer becomes a sub-buffer one float shorter, inside a canary parent */
    K_FOREIGN, /* the buffer becomes one of the same size from another cl_context */
    K_SIZE, K_DOUBLE, K_INT, K_UINT, K_LONG, K_STRING, /* the field takes the row's value */
    K_ALIAS,   /* the field takes the value of another field */
    K_SPECIAL  /* see apply_special */
} kind;

typedef enum special {
    S_NONE,
    S_WAIT_LIST_WITHOUT_COUNT, /* num_wait 0 with a wait list */
    S_FOREIGN_EVENT,           /* the wait list holds an event of another cl_context */
    S_PAST_MAX_ALLOC,          /* the leading dimension makes the tensor one step larger than
                                  CL_DEVICE_MAX_MEM_ALLOC_SIZE */
    S_ONE_VALUE_PER_CHANNEL,   /* N = 1 and spatial 1 x 1 in training */
    S_RELU_WITHOUT_Y,          /* fused ReLU in a backward, without the forward's output */
    S_MERGE_SIZE_OVERFLOW,     /* num_sets x 3C floats past SIZE_MAX */
    S_EMPTY_HUGE_C,            /* N = 0 and more channels than the largest buffer can count */
    S_FEATURES_PAST_MAX_ALLOC, /* a layer size one float past the largest buffer */
    S_FRESH_LAYER,             /* a layer that has run no forward */
    S_UNTRACKED_LAYER,         /* a batch-norm layer without running statistics */
    S_OTHER_KIND_LAYER,        /* a feature-norm layer of a kind the call does not suit */
    S_LAYERNORM_LAYER,         /* ... a LayerNorm layer */
    S_QUEUE_OF_OTHER_CONTEXT,  /* clnorm_context_wrap with a queue of another cl_context */
    S_NO_PROFILING,            /* clnorm_last_op_time/_kernels on a context without profiling */
    S_NOTHING_RAN,             /* ... on a profiling context before any call */
    S_INSTANCE_EVAL_WITH_STATS,   /* use_input_stats 0 with mean and rstd outputs */
    S_INSTANCE_EVAL_NO_RUNNING,   /* use_input_stats 0 without running statistics */
    S_LONG_PATH,                  /* a path longer than any the library takes */
} special;

typedef struct row {
    fn f;
    const char *bad; /* what is wrong, in words */
    size_t off;      /* the field of `call` it breaks */
    kind k;
    size_t z;
    double d;
    long long i;
    const char *s; /* K_STRING; "@name" is a file in the test's temporary folder */
    size_t src;    /* K_ALIAS */
    special sp;
    clnorm_status want;
    const char *names; /* in the message; NULL: no context to hold one (a NULL layer) */
} row;

#define OFF(field) offsetof(call, field)
#define ROW_NULL(F, field, W, N) {F, #field " = NULL", OFF(field), K_NULL, .want = CLNORM_##W, .names = N}
#define ROW_SHORT(F, field, name)                                                                  \
    {F, #field " one float short", OFF(field), K_SHORT, .want = CLNORM_BUFFER_TOO_SMALL,           \
     .names = "buffer " name " holds"}
#define ROW_FOREIGN(F, field, name)                                                                \
    {F, #field " from another cl_context", OFF(field), K_FOREIGN, .want = CLNORM_WRONG_CONTEXT,    \
     .names = "buffer " name " belongs to another OpenCL context"}
#define ROW_SIZE(F, field, v, W, N) {F, #field " = " #v, OFF(field), K_SIZE, .z = (v), .want = CLNORM_##W, .names = N}
#define ROW_DOUBLE(F, field, v, W, N) {F, #field " = " #v, OFF(field), K_DOUBLE, .d = (v), .want = CLNORM_##W, .names = N}
#define ROW_INT(F, field, v, W, N) {F, #field " = " #v, OFF(field), K_INT, .i = (v), .want = CLNORM_##W, .names = N}
#define ROW_UINT(F, field, v, W, N) {F, #field " = " #v, OFF(field), K_UINT, .i = (v), .want = CLNORM_##W, .names = N}
#define ROW_LONG(F, field, v, W, N) {F, #field " = " #v, OFF(field), K_LONG, .i = (v), .want = CLNORM_##W, .names = N}
#define ROW_STRING(F, field, v, W, N) {F, #field " = \"" v "\"", OFF(field), K_STRING, .s = v, .want = CLNORM_##W, .names = N}
#define ROW_ALIAS(F, field, from, W, N) {F, #field " = " #from, OFF(field), K_ALIAS, .src = OFF(from), .want = CLNORM_##W, .names = N}
#define ROW_SPECIAL(F, S, what, W, N) {F, what, 0, K_SPECIAL, .sp = S, .want = CLNORM_##W, .names = N}

/* A required buffer: NULL, one float short, from another context. An optional one: the last two. */
#define REQUIRED(F, field, name) ROW_NULL(F, field, INVALID_ARGUMENT, "buffer " name " is NULL"), OPTIONAL(F, field, name)
#define OPTIONAL(F, field, name) ROW_SHORT(F, field, name), ROW_FOREIGN(F, field, name)
#define NO_CONTEXT(F) ROW_NULL(F, ctx, INVALID_ARGUMENT, "context is NULL")
#define NO_LAYER(F, field) ROW_NULL(F, field, INVALID_ARGUMENT, NULL)
#define WAIT_LIST(F)                                                                               \
    ROW_UINT(F, num_wait, 1, INVALID_ARGUMENT, "num_wait is 1 but wait_list is NULL"),              \
    ROW_SPECIAL(F, S_WAIT_LIST_WITHOUT_COUNT, "wait_list given with num_wait = 0", INVALID_ARGUMENT, \
                "num_wait is 0 but wait_list is not NULL"),                                         \
    ROW_SPECIAL(F, S_FOREIGN_EVENT, "wait_list[0] of another cl_context", WRONG_CONTEXT,           \
                "wait_list[0] belongs to another OpenCL context")
/* The checks of a (N, C, spatial...) shape. */
#define SHAPE(F)                                                                                   \
    LAYER_SHAPE(F),                                                                                 \
    ROW_SIZE(F, shape.c, 0, INVALID_SHAPE, "shape->c (channels) is 0"),                             \
    ROW_SIZE(F, shape.c, SIZE_MAX / 8, INVALID_SHAPE, "overflows")
/* ... of a layer's call, whose channels the layer checks first (CHANNEL_MISMATCH) */
#define LAYER_SHAPE(F)                                                                             \
    ROW_NULL(F, shape_p, INVALID_ARGUMENT, "shape is NULL"),                                        \
    ROW_INT(F, shape.layout, 7, INVALID_ARGUMENT, "shape->layout = 7"),                             \
    ROW_INT(F, shape.layout, -1, INVALID_ARGUMENT, "shape->layout = -1"),                           \
    ROW_UINT(F, shape.spatial_rank, 4, INVALID_SHAPE, "shape->spatial_rank = 4"),                   \
    ROW_UINT(F, shape.spatial_rank, UINT_MAX, INVALID_SHAPE, "shape->spatial_rank"),               \
    ROW_SIZE(F, shape.spatial[0], 0, INVALID_SHAPE, "shape->spatial[0] is 0"),                      \
    ROW_SIZE(F, shape.n, SIZE_MAX / 4, INVALID_SHAPE, "overflows"),                                 \
    ROW_SIZE(F, shape.spatial[0], SIZE_MAX / 2, INVALID_SHAPE, "overflows"),                        \
    ROW_SIZE(F, shape.n, (size_t)1 << 40, UNSUPPORTED, "largest buffer"),                          \
    ROW_SPECIAL(F, S_PAST_MAX_ALLOC, "shape.n: the tensor one row past the largest buffer",         \
                UNSUPPORTED, "largest buffer")
#define EPS(F, field, name)                                                                        \
    ROW_DOUBLE(F, field, -1e-5, INVALID_ARGUMENT, name " = -1e-05 must be finite and >= 0"),       \
    ROW_DOUBLE(F, field, NAN, INVALID_ARGUMENT, name " = nan must be finite and >= 0"),            \
    ROW_DOUBLE(F, field, INFINITY, INVALID_ARGUMENT, name " = inf must be finite and >= 0"),       \
    ROW_DOUBLE(F, field, -INFINITY, INVALID_ARGUMENT, name " = -inf must be finite and >= 0")
#define MOMENTUM(F, field, name)                                                                   \
    ROW_DOUBLE(F, field, 1.5, INVALID_ARGUMENT, name " = 1.5 is outside [0, 1]"),                  \
    ROW_DOUBLE(F, field, -0.1, INVALID_ARGUMENT, name " = -0.1 is outside [0, 1]"),                \
    ROW_DOUBLE(F, field, NAN, INVALID_ARGUMENT, name " = nan is outside [0, 1]"),                  \
    ROW_DOUBLE(F, field, INFINITY, INVALID_ARGUMENT, name " = inf is outside [0, 1]")
#define CONFIG(F)                                                                                  \
    ROW_NULL(F, cfg_p, INVALID_ARGUMENT, "config is NULL"), EPS(F, cfg.eps, "config->eps"),         \
    MOMENTUM(F, cfg.momentum, "config->momentum"),                                                  \
    ROW_INT(F, cfg.activation, 2, INVALID_ARGUMENT, "config->activation = 2 is unknown"),          \
    ROW_INT(F, cfg.activation, -1, INVALID_ARGUMENT, "config->activation = -1 is unknown")
#define CHANNEL_MISMATCH(F, N) ROW_SIZE(F, shape.c, 4, INVALID_SHAPE, N)
#define MODE(F, field, name)                                                                       \
    ROW_INT(F, field, 2, INVALID_ARGUMENT, name " = 2 is not CLNORM_TRAINING or CLNORM_EVALUATION"), \
    ROW_INT(F, field, -1, INVALID_ARGUMENT, name " = -1 is not CLNORM_TRAINING or CLNORM_EVALUATION")
#define PATH(F)                                                                                    \
    ROW_NULL(F, path, INVALID_ARGUMENT, "path is NULL or empty"),                                  \
    ROW_STRING(F, path, "", INVALID_ARGUMENT, "path is NULL or empty")
#define LAYER_SIZE(F, opts, field, name)                                                           \
    ROW_NULL(F, opts##_p, INVALID_ARGUMENT, "options is NULL"),                                     \
    ROW_SIZE(F, opts.field, 0, INVALID_ARGUMENT, "options->" name " is 0"),                         \
    ROW_SIZE(F, opts.field, SIZE_MAX, UNSUPPORTED, "options->" name " = "),                         \
    ROW_SPECIAL(F, S_FEATURES_PAST_MAX_ALLOC, "options->" name " one float past the largest buffer", \
                UNSUPPORTED, "largest allocation"),                                                 \
    EPS(F, opts.eps, "options->eps")

static const row rows[] = {
    /* ---- clnorm.h ---- */
    ROW_NULL(F_LIST_DEVICES, count_p, INVALID_ARGUMENT, NULL),
    ROW_NULL(F_LIST_DEVICES, infos_p, INVALID_ARGUMENT, NULL), /* with capacity 2 */

    ROW_NULL(F_CONTEXT_CREATE, ctx_out, INVALID_ARGUMENT, "out is NULL"),
    ROW_STRING(F_CONTEXT_CREATE, settings.device, "no-such-device", DEVICE_NOT_FOUND,
               "selector \"no-such-device\" matches no OpenCL device"),
    ROW_STRING(F_CONTEXT_CREATE, settings.device, "99:99", DEVICE_NOT_FOUND,
               "selector \"99:99\" matches no OpenCL device"),

    ROW_NULL(F_CONTEXT_WRAP, ctx_out, INVALID_ARGUMENT, "must not be NULL"),
    ROW_NULL(F_CONTEXT_WRAP, cl_ctx, INVALID_ARGUMENT, "must not be NULL"),
    ROW_NULL(F_CONTEXT_WRAP, device, INVALID_ARGUMENT, "must not be NULL"),
    ROW_NULL(F_CONTEXT_WRAP, queue, INVALID_ARGUMENT, "must not be NULL"),
    ROW_SPECIAL(F_CONTEXT_WRAP, S_QUEUE_OF_OTHER_CONTEXT, "queue of another cl_context",
                WRONG_CONTEXT, "the queue must belong to the given context"),

    NO_CONTEXT(F_DEVICE_INFO),
    ROW_NULL(F_DEVICE_INFO, info_p, INVALID_ARGUMENT, "info is NULL"),
    NO_CONTEXT(F_FINISH),
    NO_CONTEXT(F_SET_PARAM),
    ROW_NULL(F_SET_PARAM, name, INVALID_ARGUMENT, "name is NULL"),
    ROW_STRING(F_SET_PARAM, name, "no_such_parameter", INVALID_ARGUMENT,
               "unknown device parameter \"no_such_parameter\""),
    ROW_LONG(F_SET_PARAM, value, 3, INVALID_ARGUMENT, "vector_width = 3 is out of range"),
    ROW_LONG(F_SET_PARAM, value, 0, INVALID_ARGUMENT, "vector_width = 0 is out of range"),
    ROW_LONG(F_SET_PARAM, value, -8, INVALID_ARGUMENT, "vector_width = -8 is out of range"),
    ROW_LONG(F_SET_PARAM, value, LONG_MAX, INVALID_ARGUMENT, "vector_width = "),
    NO_CONTEXT(F_GET_PARAM),
    ROW_NULL(F_GET_PARAM, name, INVALID_ARGUMENT, "name is NULL"),
    ROW_STRING(F_GET_PARAM, name, "no_such_parameter", INVALID_ARGUMENT,
               "unknown device parameter \"no_such_parameter\""),
    ROW_NULL(F_GET_PARAM, value_p, INVALID_ARGUMENT, "value is NULL"),
    NO_CONTEXT(F_GET_DEFAULT_PARAM),
    ROW_NULL(F_GET_DEFAULT_PARAM, name, INVALID_ARGUMENT, "name is NULL"),
    ROW_STRING(F_GET_DEFAULT_PARAM, name, "no_such_parameter", INVALID_ARGUMENT,
               "unknown device parameter \"no_such_parameter\""),
    ROW_NULL(F_GET_DEFAULT_PARAM, value_p, INVALID_ARGUMENT, "value is NULL"),
    NO_CONTEXT(F_SAVE_PARAMS),
    ROW_STRING(F_SAVE_PARAMS, path, "", INVALID_ARGUMENT, "path is empty"),
    ROW_STRING(F_SAVE_PARAMS, path, "@no-such-folder/params.txt", IO_ERROR,
               "cannot create a file next to"),
    ROW_SPECIAL(F_SAVE_PARAMS, S_LONG_PATH, "a path of 4000 characters", INVALID_ARGUMENT,
                "path is too long"),
    NO_CONTEXT(F_WARM_UP),
    NO_CONTEXT(F_SELF_CHECK),
    NO_CONTEXT(F_CACHE_STATS),
    ROW_NULL(F_CACHE_STATS, stats_p, INVALID_ARGUMENT, "stats is NULL"),
    NO_CONTEXT(F_LAST_OP_TIME),
    ROW_NULL(F_LAST_OP_TIME, ms_p, INVALID_ARGUMENT, "milliseconds is NULL"),
    ROW_SPECIAL(F_LAST_OP_TIME, S_NO_PROFILING, "a context without profiling", UNSUPPORTED,
                "the queue has no profiling"),
    ROW_SPECIAL(F_LAST_OP_TIME, S_NOTHING_RAN, "a profiling context that ran nothing",
                INVALID_ARGUMENT, "no operation has run on this context"),
    NO_CONTEXT(F_LAST_OP_KERNELS),
    ROW_NULL(F_LAST_OP_KERNELS, count_p, INVALID_ARGUMENT, "count is NULL"),
    ROW_NULL(F_LAST_OP_KERNELS, ktimes_p, INVALID_ARGUMENT, "kernels is NULL but capacity is 2"),
    ROW_SPECIAL(F_LAST_OP_KERNELS, S_NO_PROFILING, "a context without profiling", UNSUPPORTED,
                "the queue has no profiling"),
    ROW_SPECIAL(F_LAST_OP_KERNELS, S_NOTHING_RAN, "a profiling context that ran nothing",
                INVALID_ARGUMENT, "no operation has run on this context"),
    NO_CONTEXT(F_CLEAR_DISK_CACHE),

    /* ---- clnorm/batchnorm.h: functional ---- */
    NO_CONTEXT(F_BN_TRAIN), SHAPE(F_BN_TRAIN), CONFIG(F_BN_TRAIN),
    ROW_NULL(F_BN_TRAIN, bn_p, INVALID_ARGUMENT, "buffers is NULL"),
    REQUIRED(F_BN_TRAIN, bn.x, "x"), REQUIRED(F_BN_TRAIN, bn.y, "y"),
    OPTIONAL(F_BN_TRAIN, bn.residual, "residual"), OPTIONAL(F_BN_TRAIN, bn.gamma, "gamma"),
    OPTIONAL(F_BN_TRAIN, bn.beta, "beta"),
    ROW_NULL(F_BN_TRAIN, bn.running_mean, INVALID_ARGUMENT,
             "running_mean and running_var must both be given or both be NULL"),
    OPTIONAL(F_BN_TRAIN, bn.running_mean, "running_mean"),
    ROW_NULL(F_BN_TRAIN, bn.running_var, INVALID_ARGUMENT,
             "running_mean and running_var must both be given or both be NULL"),
    OPTIONAL(F_BN_TRAIN, bn.running_var, "running_var"),
    OPTIONAL(F_BN_TRAIN, bn.save_mean, "save_mean"),
    OPTIONAL(F_BN_TRAIN, bn.save_invstd, "save_invstd"),
    ROW_SPECIAL(F_BN_TRAIN, S_ONE_VALUE_PER_CHANNEL, "N = 1, spatial 1 x 1: one value per channel",
                INVALID_SHAPE, "expected more than 1 value per channel when training"),
    WAIT_LIST(F_BN_TRAIN),

    NO_CONTEXT(F_BN_INFER), SHAPE(F_BN_INFER), CONFIG(F_BN_INFER),
    ROW_NULL(F_BN_INFER, bn_p, INVALID_ARGUMENT, "buffers is NULL"),
    REQUIRED(F_BN_INFER, bn.x, "x"), REQUIRED(F_BN_INFER, bn.y, "y"),
    REQUIRED(F_BN_INFER, bn.running_mean, "running_mean"),
    REQUIRED(F_BN_INFER, bn.running_var, "running_var"),
    OPTIONAL(F_BN_INFER, bn.residual, "residual"), OPTIONAL(F_BN_INFER, bn.gamma, "gamma"),
    OPTIONAL(F_BN_INFER, bn.beta, "beta"), OPTIONAL(F_BN_INFER, bn.save_mean, "save_mean"),
    OPTIONAL(F_BN_INFER, bn.save_invstd, "save_invstd"),
    WAIT_LIST(F_BN_INFER),

    NO_CONTEXT(F_BN_BACKWARD), SHAPE(F_BN_BACKWARD), CONFIG(F_BN_BACKWARD),
    ROW_SPECIAL(F_BN_BACKWARD, S_EMPTY_HUGE_C, "N = 0 with 2^62 + 1 channels", UNSUPPORTED,
                "shape->c = 4611686018427387905 exceeds"),
    ROW_NULL(F_BN_BACKWARD, bg_p, INVALID_ARGUMENT, "buffers is NULL"),
    REQUIRED(F_BN_BACKWARD, bg.x, "x"), REQUIRED(F_BN_BACKWARD, bg.dy, "dy"),
    REQUIRED(F_BN_BACKWARD, bg.dx, "dx"), REQUIRED(F_BN_BACKWARD, bg.mean, "mean (save_mean)"),
    REQUIRED(F_BN_BACKWARD, bg.invstd, "invstd (save_invstd)"),
    OPTIONAL(F_BN_BACKWARD, bg.y, "y"), OPTIONAL(F_BN_BACKWARD, bg.gamma, "gamma"),
    OPTIONAL(F_BN_BACKWARD, bg.dgamma, "dgamma"), OPTIONAL(F_BN_BACKWARD, bg.dbeta, "dbeta"),
    OPTIONAL(F_BN_BACKWARD, bg.dresidual, "dresidual"),
    ROW_SPECIAL(F_BN_BACKWARD, S_RELU_WITHOUT_Y, "fused ReLU without y", INVALID_ARGUMENT,
                "buffer y (the forward output, needed with ReLU) is NULL"),
    WAIT_LIST(F_BN_BACKWARD),

    NO_CONTEXT(F_BN_FROZEN), SHAPE(F_BN_FROZEN), CONFIG(F_BN_FROZEN),
    ROW_NULL(F_BN_FROZEN, bg_p, INVALID_ARGUMENT, "buffers is NULL"),
    REQUIRED(F_BN_FROZEN, bg.x, "x"), REQUIRED(F_BN_FROZEN, bg.dy, "dy"),
    REQUIRED(F_BN_FROZEN, bg.dx, "dx"), REQUIRED(F_BN_FROZEN, bg.mean, "mean (running_mean)"),
    REQUIRED(F_BN_FROZEN, bg.var, "var (running_var)"),
    OPTIONAL(F_BN_FROZEN, bg.y, "y"), OPTIONAL(F_BN_FROZEN, bg.gamma, "gamma"),
    OPTIONAL(F_BN_FROZEN, bg.dgamma, "dgamma"), OPTIONAL(F_BN_FROZEN, bg.dbeta, "dbeta"),
    OPTIONAL(F_BN_FROZEN, bg.dresidual, "dresidual"),
    ROW_SPECIAL(F_BN_FROZEN, S_RELU_WITHOUT_Y, "fused ReLU without y", INVALID_ARGUMENT,
                "buffer y (the forward output, needed with ReLU) is NULL"),
    WAIT_LIST(F_BN_FROZEN),

    NO_CONTEXT(F_BN_PARTIAL), SHAPE(F_BN_PARTIAL),
    REQUIRED(F_BN_PARTIAL, x, "x"), REQUIRED(F_BN_PARTIAL, stats, "stats_set"),
    WAIT_LIST(F_BN_PARTIAL),

    NO_CONTEXT(F_BN_MERGE), CONFIG(F_BN_MERGE),
    ROW_SIZE(F_BN_MERGE, channels, 0, INVALID_SHAPE, "channels is 0"),
    ROW_SIZE(F_BN_MERGE, channels, 4, BUFFER_TOO_SMALL, "buffer stats_sets holds 72 bytes but the call touches 96"),
    ROW_SIZE(F_BN_MERGE, num_sets, 0, INVALID_SHAPE, "num_sets = 0 is not in [1, 2^32)"),
    ROW_SIZE(F_BN_MERGE, num_sets, 3, BUFFER_TOO_SMALL, "buffer stats_sets holds 72 bytes but the call touches 108"),
    ROW_SIZE(F_BN_MERGE, num_sets, (size_t)1 << 32, INVALID_SHAPE, "num_sets = 4294967296 is not in [1, 2^32)"),
    ROW_SPECIAL(F_BN_MERGE, S_MERGE_SIZE_OVERFLOW, "num_sets x 3 x channels floats past SIZE_MAX",
                INVALID_SHAPE, "stats_sets size overflows"),
    ROW_SIZE(F_BN_MERGE, channels, (size_t)1 << 40, UNSUPPORTED, "channels = 1099511627776 exceeds"),
    REQUIRED(F_BN_MERGE, stats, "stats_sets"),
    ROW_NULL(F_BN_MERGE, running_mean, INVALID_ARGUMENT,
             "running_mean and running_var must both be given or both be NULL"),
    ROW_NULL(F_BN_MERGE, running_var, INVALID_ARGUMENT,
             "running_mean and running_var must both be given or both be NULL"),
    OPTIONAL(F_BN_MERGE, running_mean, "running_mean"),
    OPTIONAL(F_BN_MERGE, running_var, "running_var"),
    OPTIONAL(F_BN_MERGE, save_mean, "save_mean"), OPTIONAL(F_BN_MERGE, save_invstd, "save_invstd"),
    WAIT_LIST(F_BN_MERGE),

    NO_CONTEXT(F_BN_APPLY), SHAPE(F_BN_APPLY), CONFIG(F_BN_APPLY),
    ROW_NULL(F_BN_APPLY, bn_p, INVALID_ARGUMENT, "buffers is NULL"),
    REQUIRED(F_BN_APPLY, bn.x, "x"), REQUIRED(F_BN_APPLY, bn.y, "y"),
    REQUIRED(F_BN_APPLY, bn.save_mean, "save_mean"),
    REQUIRED(F_BN_APPLY, bn.save_invstd, "save_invstd"),
    OPTIONAL(F_BN_APPLY, bn.residual, "residual"), OPTIONAL(F_BN_APPLY, bn.gamma, "gamma"),
    OPTIONAL(F_BN_APPLY, bn.beta, "beta"),
    OPTIONAL(F_BN_APPLY, bn.running_mean, "running_mean"),
    OPTIONAL(F_BN_APPLY, bn.running_var, "running_var"),
    WAIT_LIST(F_BN_APPLY),

    /* ---- clnorm/batchnorm.h: the layer object ---- */
    NO_CONTEXT(F_BNL_CREATE),
    ROW_NULL(F_BNL_CREATE, bn_out, INVALID_ARGUMENT, "out is NULL"),
    LAYER_SIZE(F_BNL_CREATE, bno, num_features, "num_features"),
    MOMENTUM(F_BNL_CREATE, bno.momentum, "options->momentum"),

    NO_LAYER(F_BNL_SET_MODE, bnl), MODE(F_BNL_SET_MODE, mode, "mode"),
    NO_LAYER(F_BNL_GET_BUFFERS, bnl),
    ROW_NULL(F_BNL_GET_BUFFERS, bbufs_p, INVALID_ARGUMENT, "buffers is NULL"),

    NO_LAYER(F_BNL_FORWARD, bnl), MODE(F_BNL_FORWARD, mode, "expected"),
    ROW_INT(F_BNL_FORWARD, mode, CLNORM_EVALUATION, WRONG_MODE,
            "the layer is in CLNORM_TRAINING mode but the caller expected CLNORM_EVALUATION"),
    LAYER_SHAPE(F_BNL_FORWARD),
    CHANNEL_MISMATCH(F_BNL_FORWARD, "shape->c = 4 but the layer has num_features = 3"),
    ROW_SIZE(F_BNL_FORWARD, shape.c, 0, INVALID_SHAPE, "shape->c = 0 but the layer has num_features = 3"),
    ROW_INT(F_BNL_FORWARD, activation, 2, INVALID_ARGUMENT, "activation = 2 is unknown"),
    REQUIRED(F_BNL_FORWARD, x, "x"), REQUIRED(F_BNL_FORWARD, y, "y"),
    OPTIONAL(F_BNL_FORWARD, residual, "residual"),
    ROW_SPECIAL(F_BNL_FORWARD, S_ONE_VALUE_PER_CHANNEL, "N = 1, spatial 1 x 1 in training",
                INVALID_SHAPE, "expected more than 1 value per channel when training"),
    WAIT_LIST(F_BNL_FORWARD),

    NO_LAYER(F_BNL_BACKWARD, bnl),
    ROW_SPECIAL(F_BNL_BACKWARD, S_FRESH_LAYER, "a layer that ran no forward", INVALID_ARGUMENT,
                "no training forward to differentiate"),
    LAYER_SHAPE(F_BNL_BACKWARD),
    CHANNEL_MISMATCH(F_BNL_BACKWARD, "shape->c = 4 but the layer has num_features = 3"),
    ROW_INT(F_BNL_BACKWARD, activation, 7, INVALID_ARGUMENT, "activation = 7 is unknown"),
    REQUIRED(F_BNL_BACKWARD, x, "x"), REQUIRED(F_BNL_BACKWARD, dy, "dy"),
    REQUIRED(F_BNL_BACKWARD, dx, "dx"), OPTIONAL(F_BNL_BACKWARD, y, "y"),
    OPTIONAL(F_BNL_BACKWARD, dresidual, "dresidual"),
    ROW_SPECIAL(F_BNL_BACKWARD, S_RELU_WITHOUT_Y, "fused ReLU without y", INVALID_ARGUMENT,
                "buffer y (the forward output, needed with ReLU) is NULL"),
    WAIT_LIST(F_BNL_BACKWARD),

    NO_LAYER(F_BNL_SAVE, bnl), PATH(F_BNL_SAVE),
    ROW_STRING(F_BNL_SAVE, path, "@no-such-folder/bn.bin", IO_ERROR,
               "cannot create a temporary file next to"),
    NO_LAYER(F_BNL_LOAD, bnl), PATH(F_BNL_LOAD),
    ROW_STRING(F_BNL_LOAD, path, "@no-such-file.bin", IO_ERROR, "cannot open"),
    ROW_STRING(F_BNL_LOAD, path, "@garbage.bin", BAD_FILE, "is not a clnorm batch-norm file"),
    ROW_STRING(F_BNL_LOAD, path, "@truncated-bn.bin", BAD_FILE, "truncated"),
    ROW_STRING(F_BNL_LOAD, path, "@layernorm.bin", BAD_FILE, "is not a clnorm batch-norm file"),
    ROW_STRING(F_BNL_LOAD, path, "@bn-other-channels.bin", BAD_FILE,
               "holds 4 channels but the layer has num_features = 3"),
    NO_LAYER(F_BNL_FOLD, bnl),
    ROW_NULL(F_BNL_FOLD, scale, INVALID_ARGUMENT, "scale is NULL"),
    ROW_NULL(F_BNL_FOLD, shift, INVALID_ARGUMENT, "shift is NULL"),
    ROW_SPECIAL(F_BNL_FOLD, S_UNTRACKED_LAYER, "a layer without running statistics",
                INVALID_ARGUMENT, "track_running_stats = 0"),
    NO_LAYER(F_BNL_FOLD_LINEAR, bnl),
    ROW_SPECIAL(F_BNL_FOLD_LINEAR, S_UNTRACKED_LAYER, "a layer without running statistics",
                INVALID_ARGUMENT, "track_running_stats = 0"),
    ROW_SIZE(F_BNL_FOLD_LINEAR, in_features, 0, INVALID_SHAPE, "in_features is 0"),
    ROW_SIZE(F_BNL_FOLD_LINEAR, in_features, SIZE_MAX / 2, INVALID_SHAPE,
             "weight element count (C x in_features) overflows"),
    ROW_SIZE(F_BNL_FOLD_LINEAR, in_features, SIZE_MAX / 8, INVALID_SHAPE,
             "weight size in bytes overflows"),
    ROW_SIZE(F_BNL_FOLD_LINEAR, in_features, 6, BUFFER_TOO_SMALL,
             "buffer weight holds 60 bytes but the call touches 72"),
    REQUIRED(F_BNL_FOLD_LINEAR, weight, "weight"), REQUIRED(F_BNL_FOLD_LINEAR, bias, "bias"),
    WAIT_LIST(F_BNL_FOLD_LINEAR),

    /* ---- clnorm/featurenorm.h ---- */
    NO_CONTEXT(F_LN_FORWARD),
    ROW_NULL(F_LN_FORWARD, nb_p, INVALID_ARGUMENT, "buffers is NULL"),
    ROW_SIZE(F_LN_FORWARD, cols, 0, INVALID_SHAPE, "cols (the normalized size) is 0"),
    ROW_SIZE(F_LN_FORWARD, rows, SIZE_MAX / 2, INVALID_SHAPE, "rows x cols overflows"),
    ROW_SIZE(F_LN_FORWARD, cols, SIZE_MAX / 2, INVALID_SHAPE, "rows x cols overflows"),
    ROW_SIZE(F_LN_FORWARD, rows, SIZE_MAX / 64, INVALID_SHAPE, "tensor size in bytes overflows"),
    ROW_SPECIAL(F_LN_FORWARD, S_PAST_MAX_ALLOC, "rows: the tensor one row past the largest buffer",
                UNSUPPORTED, "largest buffer"),
    EPS(F_LN_FORWARD, eps, "eps"),
    REQUIRED(F_LN_FORWARD, nb.x, "x"), REQUIRED(F_LN_FORWARD, nb.y, "y"),
    REQUIRED(F_LN_FORWARD, nb.h, "h (x + residual)"), /* required with a residual */
    OPTIONAL(F_LN_FORWARD, nb.residual, "residual"), OPTIONAL(F_LN_FORWARD, nb.weight, "weight"),
    OPTIONAL(F_LN_FORWARD, nb.bias, "bias"), OPTIONAL(F_LN_FORWARD, nb.mean, "mean"),
    OPTIONAL(F_LN_FORWARD, nb.rstd, "rstd"),
    ROW_ALIAS(F_LN_FORWARD, nb.y, nb.x, INVALID_ARGUMENT,
              "y may not be x when a residual is added"),
    WAIT_LIST(F_LN_FORWARD),

    NO_CONTEXT(F_LN_BACKWARD),
    ROW_NULL(F_LN_BACKWARD, ng_p, INVALID_ARGUMENT, "buffers is NULL"),
    ROW_SIZE(F_LN_BACKWARD, cols, 0, INVALID_SHAPE, "cols (the normalized size) is 0"),
    ROW_SIZE(F_LN_BACKWARD, rows, SIZE_MAX / 2, INVALID_SHAPE, "rows x cols overflows"),
    ROW_SPECIAL(F_LN_BACKWARD, S_PAST_MAX_ALLOC, "rows: the tensor one row past the largest buffer",
                UNSUPPORTED, "largest buffer"),
    REQUIRED(F_LN_BACKWARD, ng.x, "x"), REQUIRED(F_LN_BACKWARD, ng.dy, "dy"),
    REQUIRED(F_LN_BACKWARD, ng.dx, "dx"),
    REQUIRED(F_LN_BACKWARD, ng.mean, "mean (from the forward)"),
    REQUIRED(F_LN_BACKWARD, ng.rstd, "rstd (from the forward)"),
    OPTIONAL(F_LN_BACKWARD, ng.dh_in, "dh_in"), OPTIONAL(F_LN_BACKWARD, ng.weight, "weight"),
    OPTIONAL(F_LN_BACKWARD, ng.dweight, "dweight"), OPTIONAL(F_LN_BACKWARD, ng.dbias, "dbias"),
    WAIT_LIST(F_LN_BACKWARD),

    NO_CONTEXT(F_RMS_FORWARD),
    ROW_NULL(F_RMS_FORWARD, nb_p, INVALID_ARGUMENT, "buffers is NULL"),
    ROW_SIZE(F_RMS_FORWARD, cols, 0, INVALID_SHAPE, "cols (the normalized size) is 0"),
    ROW_SIZE(F_RMS_FORWARD, rows, SIZE_MAX / 2, INVALID_SHAPE, "rows x cols overflows"),
    EPS(F_RMS_FORWARD, eps, "eps"),
    REQUIRED(F_RMS_FORWARD, nb.x, "x"), REQUIRED(F_RMS_FORWARD, nb.y, "y"),
    REQUIRED(F_RMS_FORWARD, nb.h, "h (x + residual)"),
    OPTIONAL(F_RMS_FORWARD, nb.residual, "residual"), OPTIONAL(F_RMS_FORWARD, nb.weight, "weight"),
    OPTIONAL(F_RMS_FORWARD, nb.rstd, "rstd"),
    ROW_ALIAS(F_RMS_FORWARD, nb.bias, nb.weight, INVALID_ARGUMENT, "RMSNorm has no bias and no mean"),
    ROW_ALIAS(F_RMS_FORWARD, nb.mean, nb.rstd, INVALID_ARGUMENT, "RMSNorm has no bias and no mean"),
    WAIT_LIST(F_RMS_FORWARD),

    NO_CONTEXT(F_RMS_BACKWARD),
    ROW_NULL(F_RMS_BACKWARD, ng_p, INVALID_ARGUMENT, "buffers is NULL"),
    ROW_SIZE(F_RMS_BACKWARD, cols, 0, INVALID_SHAPE, "cols (the normalized size) is 0"),
    ROW_SIZE(F_RMS_BACKWARD, rows, SIZE_MAX / 2, INVALID_SHAPE, "rows x cols overflows"),
    REQUIRED(F_RMS_BACKWARD, ng.x, "x"), REQUIRED(F_RMS_BACKWARD, ng.dy, "dy"),
    REQUIRED(F_RMS_BACKWARD, ng.dx, "dx"),
    REQUIRED(F_RMS_BACKWARD, ng.rstd, "rstd (from the forward)"),
    OPTIONAL(F_RMS_BACKWARD, ng.dh_in, "dh_in"), OPTIONAL(F_RMS_BACKWARD, ng.weight, "weight"),
    OPTIONAL(F_RMS_BACKWARD, ng.dweight, "dweight"),
    ROW_ALIAS(F_RMS_BACKWARD, ng.dbias, ng.dweight, INVALID_ARGUMENT, "RMSNorm has no bias and no mean"),
    ROW_ALIAS(F_RMS_BACKWARD, ng.mean, ng.rstd, INVALID_ARGUMENT, "RMSNorm has no bias and no mean"),
    WAIT_LIST(F_RMS_BACKWARD),

    NO_CONTEXT(F_GN_FORWARD), SHAPE(F_GN_FORWARD),
    ROW_NULL(F_GN_FORWARD, nb_p, INVALID_ARGUMENT, "buffers is NULL"),
    ROW_SIZE(F_GN_FORWARD, groups, 0, INVALID_SHAPE, "6 channels cannot be divided into 0 groups"),
    ROW_SIZE(F_GN_FORWARD, groups, 4, INVALID_SHAPE, "6 channels cannot be divided into 4 groups"),
    ROW_SIZE(F_GN_FORWARD, groups, 12, INVALID_SHAPE, "6 channels cannot be divided into 12 groups"),
    ROW_SIZE(F_GN_FORWARD, groups, SIZE_MAX, INVALID_SHAPE, "cannot be divided into"),
    EPS(F_GN_FORWARD, eps, "eps"),
    REQUIRED(F_GN_FORWARD, nb.x, "x"), REQUIRED(F_GN_FORWARD, nb.y, "y"),
    OPTIONAL(F_GN_FORWARD, nb.weight, "weight"), OPTIONAL(F_GN_FORWARD, nb.bias, "bias"),
    OPTIONAL(F_GN_FORWARD, nb.mean, "mean"), OPTIONAL(F_GN_FORWARD, nb.rstd, "rstd"),
    WAIT_LIST(F_GN_FORWARD),

    NO_CONTEXT(F_GN_BACKWARD), SHAPE(F_GN_BACKWARD),
    ROW_NULL(F_GN_BACKWARD, ng_p, INVALID_ARGUMENT, "buffers is NULL"),
    ROW_SIZE(F_GN_BACKWARD, groups, 0, INVALID_SHAPE, "6 channels cannot be divided into 0 groups"),
    ROW_SIZE(F_GN_BACKWARD, groups, 4, INVALID_SHAPE, "6 channels cannot be divided into 4 groups"),
    REQUIRED(F_GN_BACKWARD, ng.x, "x"), REQUIRED(F_GN_BACKWARD, ng.dy, "dy"),
    REQUIRED(F_GN_BACKWARD, ng.dx, "dx"),
    REQUIRED(F_GN_BACKWARD, ng.mean, "mean (from the forward)"),
    REQUIRED(F_GN_BACKWARD, ng.rstd, "rstd (from the forward)"),
    OPTIONAL(F_GN_BACKWARD, ng.weight, "weight"), OPTIONAL(F_GN_BACKWARD, ng.dh_in, "dh_in"),
    OPTIONAL(F_GN_BACKWARD, ng.dweight, "dweight"), OPTIONAL(F_GN_BACKWARD, ng.dbias, "dbias"),
    WAIT_LIST(F_GN_BACKWARD),

    NO_CONTEXT(F_IN_FORWARD), SHAPE(F_IN_FORWARD),
    ROW_NULL(F_IN_FORWARD, nb_p, INVALID_ARGUMENT, "buffers is NULL"),
    EPS(F_IN_FORWARD, eps, "eps"), MOMENTUM(F_IN_FORWARD, momentum, "momentum"),
    REQUIRED(F_IN_FORWARD, nb.x, "x"), REQUIRED(F_IN_FORWARD, nb.y, "y"),
    OPTIONAL(F_IN_FORWARD, nb.weight, "weight"), OPTIONAL(F_IN_FORWARD, nb.bias, "bias"),
    OPTIONAL(F_IN_FORWARD, nb.mean, "mean"), OPTIONAL(F_IN_FORWARD, nb.rstd, "rstd"),
    ROW_NULL(F_IN_FORWARD, running_var, INVALID_ARGUMENT,
             "running_mean and running_var must both be given or both be NULL"),
    OPTIONAL(F_IN_FORWARD, running_mean, "running_mean"),
    OPTIONAL(F_IN_FORWARD, running_var, "running_var"),
    ROW_SPECIAL(F_IN_FORWARD, S_INSTANCE_EVAL_WITH_STATS,
                "use_input_stats = 0 with mean and rstd outputs", INVALID_ARGUMENT,
                "takes no residual, mean or rstd"),
    ROW_SPECIAL(F_IN_FORWARD, S_INSTANCE_EVAL_NO_RUNNING,
                "use_input_stats = 0 without running statistics", INVALID_ARGUMENT,
                "buffer running_mean is NULL"),
    WAIT_LIST(F_IN_FORWARD),

    NO_CONTEXT(F_IN_BACKWARD), SHAPE(F_IN_BACKWARD),
    ROW_NULL(F_IN_BACKWARD, ng_p, INVALID_ARGUMENT, "buffers is NULL"),
    REQUIRED(F_IN_BACKWARD, ng.x, "x"), REQUIRED(F_IN_BACKWARD, ng.dy, "dy"),
    REQUIRED(F_IN_BACKWARD, ng.dx, "dx"),
    REQUIRED(F_IN_BACKWARD, ng.mean, "mean (from the forward)"),
    REQUIRED(F_IN_BACKWARD, ng.rstd, "rstd (from the forward)"),
    OPTIONAL(F_IN_BACKWARD, ng.weight, "weight"), OPTIONAL(F_IN_BACKWARD, ng.dweight, "dweight"),
    OPTIONAL(F_IN_BACKWARD, ng.dbias, "dbias"),
    WAIT_LIST(F_IN_BACKWARD),

    /* ---- clnorm/featurenorm_layer.h ---- */
    NO_CONTEXT(F_FNL_CREATE_LN),
    ROW_NULL(F_FNL_CREATE_LN, fn_out, INVALID_ARGUMENT, "out is NULL"),
    LAYER_SIZE(F_FNL_CREATE_LN, lno, normalized_size, "normalized_size"),
    NO_CONTEXT(F_FNL_CREATE_RMS),
    ROW_NULL(F_FNL_CREATE_RMS, fn_out, INVALID_ARGUMENT, "out is NULL"),
    LAYER_SIZE(F_FNL_CREATE_RMS, rmo, normalized_size, "normalized_size"),
    NO_CONTEXT(F_FNL_CREATE_GN),
    ROW_NULL(F_FNL_CREATE_GN, fn_out, INVALID_ARGUMENT, "out is NULL"),
    LAYER_SIZE(F_FNL_CREATE_GN, gno, num_channels, "num_channels"),
    ROW_SIZE(F_FNL_CREATE_GN, gno.num_groups, 0, INVALID_ARGUMENT, "options->num_groups is 0"),
    ROW_SIZE(F_FNL_CREATE_GN, gno.num_groups, 4, INVALID_ARGUMENT,
             "options->num_channels = 6 is not divisible by options->num_groups = 4"),
    ROW_SIZE(F_FNL_CREATE_GN, gno.num_groups, 12, INVALID_ARGUMENT,
             "options->num_channels = 6 is not divisible by options->num_groups = 12"),
    NO_CONTEXT(F_FNL_CREATE_IN),
    ROW_NULL(F_FNL_CREATE_IN, fn_out, INVALID_ARGUMENT, "out is NULL"),
    LAYER_SIZE(F_FNL_CREATE_IN, ino, num_features, "num_features"),
    MOMENTUM(F_FNL_CREATE_IN, ino.momentum, "options->momentum"),

    NO_LAYER(F_FNL_SET_MODE, fnl), MODE(F_FNL_SET_MODE, mode, "mode"),
    NO_LAYER(F_FNL_GET_INFO, fnl),
    ROW_NULL(F_FNL_GET_INFO, finfo_p, INVALID_ARGUMENT, "info is NULL"),
    NO_LAYER(F_FNL_GET_BUFFERS, fnl),
    ROW_NULL(F_FNL_GET_BUFFERS, fbufs_p, INVALID_ARGUMENT, "buffers is NULL"),

    NO_LAYER(F_FNL_FORWARD_ROWS, fnl),
    ROW_SPECIAL(F_FNL_FORWARD_ROWS, S_OTHER_KIND_LAYER, "a GroupNorm layer", INVALID_ARGUMENT,
                "clnorm_featurenorm_forward_rows does not suit a groupnorm layer"),
    ROW_SIZE(F_FNL_FORWARD_ROWS, rows, SIZE_MAX / 2, INVALID_SHAPE, "rows x cols overflows"),
    ROW_SPECIAL(F_FNL_FORWARD_ROWS, S_PAST_MAX_ALLOC, "rows: the tensor one row past the largest buffer",
                UNSUPPORTED, "largest buffer"),
    REQUIRED(F_FNL_FORWARD_ROWS, x, "x"), REQUIRED(F_FNL_FORWARD_ROWS, y, "y"),
    REQUIRED(F_FNL_FORWARD_ROWS, h, "h (x + residual)"),
    OPTIONAL(F_FNL_FORWARD_ROWS, residual, "residual"),
    ROW_ALIAS(F_FNL_FORWARD_ROWS, y, x, INVALID_ARGUMENT, "y may not be x when a residual is added"),
    WAIT_LIST(F_FNL_FORWARD_ROWS),

    NO_LAYER(F_FNL_BACKWARD_ROWS, fnl),
    ROW_SPECIAL(F_FNL_BACKWARD_ROWS, S_FRESH_LAYER, "a layer that ran no forward", INVALID_ARGUMENT,
                "no forward to differentiate"),
    ROW_SPECIAL(F_FNL_BACKWARD_ROWS, S_OTHER_KIND_LAYER, "a GroupNorm layer", INVALID_ARGUMENT,
                "clnorm_featurenorm_backward_rows does not suit a groupnorm layer"),
    ROW_SIZE(F_FNL_BACKWARD_ROWS, rows, 3, INVALID_SHAPE, "is not the last forward's"),
    ROW_SIZE(F_FNL_BACKWARD_ROWS, rows, SIZE_MAX / 2, INVALID_SHAPE, "is not the last forward's"),
    REQUIRED(F_FNL_BACKWARD_ROWS, x, "x"), REQUIRED(F_FNL_BACKWARD_ROWS, dy, "dy"),
    REQUIRED(F_FNL_BACKWARD_ROWS, dx, "dx"), OPTIONAL(F_FNL_BACKWARD_ROWS, dh_in, "dh_in"),
    WAIT_LIST(F_FNL_BACKWARD_ROWS),

    NO_LAYER(F_FNL_FORWARD_GROUPS, fnl),
    ROW_SPECIAL(F_FNL_FORWARD_GROUPS, S_LAYERNORM_LAYER, "a LayerNorm layer", INVALID_ARGUMENT,
                "clnorm_featurenorm_forward_groups does not suit a layernorm layer"),
    LAYER_SHAPE(F_FNL_FORWARD_GROUPS),
    CHANNEL_MISMATCH(F_FNL_FORWARD_GROUPS, "shape->c = 4 but the groupnorm layer has 6 channels"),
    REQUIRED(F_FNL_FORWARD_GROUPS, x, "x"), REQUIRED(F_FNL_FORWARD_GROUPS, y, "y"),
    WAIT_LIST(F_FNL_FORWARD_GROUPS),

    NO_LAYER(F_FNL_BACKWARD_GROUPS, fnl),
    ROW_SPECIAL(F_FNL_BACKWARD_GROUPS, S_FRESH_LAYER, "a layer that ran no forward", INVALID_ARGUMENT,
                "no forward to differentiate"),
    ROW_SPECIAL(F_FNL_BACKWARD_GROUPS, S_LAYERNORM_LAYER, "a LayerNorm layer", INVALID_ARGUMENT,
                "clnorm_featurenorm_backward_groups does not suit a layernorm layer"),
    ROW_NULL(F_FNL_BACKWARD_GROUPS, shape_p, INVALID_ARGUMENT, "shape is NULL"),
    CHANNEL_MISMATCH(F_FNL_BACKWARD_GROUPS, "shape->c = 4 but the groupnorm layer has 6 channels"),
    ROW_SIZE(F_FNL_BACKWARD_GROUPS, shape.n, 1, INVALID_SHAPE, "is not the last forward's"),
    ROW_INT(F_FNL_BACKWARD_GROUPS, shape.layout, 1, INVALID_SHAPE, "is not the last forward's"),
    ROW_INT(F_FNL_BACKWARD_GROUPS, shape.layout, 7, INVALID_SHAPE, "is not the last forward's"),
    REQUIRED(F_FNL_BACKWARD_GROUPS, x, "x"), REQUIRED(F_FNL_BACKWARD_GROUPS, dy, "dy"),
    REQUIRED(F_FNL_BACKWARD_GROUPS, dx, "dx"),
    WAIT_LIST(F_FNL_BACKWARD_GROUPS),

    NO_LAYER(F_FNL_FORWARD_INSTANCES, fnl), MODE(F_FNL_FORWARD_INSTANCES, mode, "expected"),
    ROW_INT(F_FNL_FORWARD_INSTANCES, mode, CLNORM_EVALUATION, WRONG_MODE,
            "the layer is in CLNORM_TRAINING mode but the caller expected CLNORM_EVALUATION"),
    ROW_SPECIAL(F_FNL_FORWARD_INSTANCES, S_OTHER_KIND_LAYER, "a GroupNorm layer", INVALID_ARGUMENT,
                "clnorm_featurenorm_forward_instances does not suit a groupnorm layer"),
    LAYER_SHAPE(F_FNL_FORWARD_INSTANCES),
    CHANNEL_MISMATCH(F_FNL_FORWARD_INSTANCES, "shape->c = 4 but the instancenorm layer has 6 channels"),
    REQUIRED(F_FNL_FORWARD_INSTANCES, x, "x"), REQUIRED(F_FNL_FORWARD_INSTANCES, y, "y"),
    WAIT_LIST(F_FNL_FORWARD_INSTANCES),

    NO_LAYER(F_FNL_BACKWARD_INSTANCES, fnl),
    ROW_SPECIAL(F_FNL_BACKWARD_INSTANCES, S_FRESH_LAYER, "a layer that ran no forward",
                INVALID_ARGUMENT, "no forward to differentiate"),
    ROW_NULL(F_FNL_BACKWARD_INSTANCES, shape_p, INVALID_ARGUMENT, "shape is NULL"),
    ROW_SIZE(F_FNL_BACKWARD_INSTANCES, shape.spatial[0], 5, INVALID_SHAPE,
             "is not the last forward's"),
    REQUIRED(F_FNL_BACKWARD_INSTANCES, x, "x"), REQUIRED(F_FNL_BACKWARD_INSTANCES, dy, "dy"),
    REQUIRED(F_FNL_BACKWARD_INSTANCES, dx, "dx"),
    WAIT_LIST(F_FNL_BACKWARD_INSTANCES),

    NO_LAYER(F_FNL_SAVE, fnl), PATH(F_FNL_SAVE),
    ROW_STRING(F_FNL_SAVE, path, "@no-such-folder/ln.bin", IO_ERROR,
               "cannot create a temporary file next to"),
    NO_LAYER(F_FNL_LOAD, fnl), PATH(F_FNL_LOAD),
    ROW_STRING(F_FNL_LOAD, path, "@no-such-file.bin", IO_ERROR, "cannot open"),
    ROW_STRING(F_FNL_LOAD, path, "@garbage.bin", BAD_FILE, "is not a clnorm layernorm file"),
    ROW_STRING(F_FNL_LOAD, path, "@batchnorm.bin", BAD_FILE, "is not a clnorm layernorm file"),
    ROW_STRING(F_FNL_LOAD, path, "@groupnorm.bin", BAD_FILE,
               "is a clnorm groupnorm file (magic \"CLNORMGN\"), not a layernorm file"),
    ROW_STRING(F_FNL_LOAD, path, "@truncated-ln.bin", BAD_FILE, "truncated"),
    ROW_STRING(F_FNL_LOAD, path, "@layernorm-other-size.bin", BAD_FILE,
               "holds size 31 with 1 groups but the layernorm layer has size 30 with 1 groups"),
};

/* ---- the world every row runs in ------------------------------------------------------------ */

/* Valid problem sizes: every tensor is 120 floats.
 *   batch norm:      (N 2, C 3, 4 x 5) channels-first
 *   LayerNorm/RMS:   4 rows x 30
 *   Group/Instance:  (N 2, C 6, 10), 2 groups (GroupNorm), 4 (N x G) or 12 (N x C) statistics */
enum { T = 120, BN_C = 3, LN_ROWS = 4, LN_D = 30, GN_C = 6, GN_G = 2, FOLD_IN = 5 };

/* The test's buffers: each a sub-buffer inside a canary parent. */
enum buffer_id {
    B_X, B_Y, B_RESIDUAL, B_H, B_DY, B_DX, B_DH_IN, B_DRESIDUAL,            /* T floats */
    B_GAMMA, B_BETA, B_RMEAN, B_RVAR, B_SMEAN, B_SINVSTD, B_DGAMMA, B_DBETA, /* BN_C */
    B_SET, B_SETS,                                                           /* 3 C, 2 x 3 C */
    B_FOLD_W, B_FOLD_B,                                                      /* C x 5, C */
    B_LN_W, B_LN_B, B_LN_DW, B_LN_DB, B_LN_MEAN, B_LN_RSTD,                  /* D, rows */
    B_GN_W, B_GN_B, B_GN_DW, B_GN_DB, B_GN_RMEAN, B_GN_RVAR,                 /* C */
    B_GN_MEAN, B_GN_RSTD, B_IN_MEAN, B_IN_RSTD,                              /* N G, N C */
    BUFFER_COUNT
};
static const size_t buffer_floats[BUFFER_COUNT] = {
    T, T, T, T, T, T, T, T,
    BN_C, BN_C, BN_C, BN_C, BN_C, BN_C, BN_C, BN_C,
    3 * BN_C, 6 * BN_C,
    BN_C * FOLD_IN, BN_C,
    LN_D, LN_D, LN_D, LN_D, LN_ROWS, LN_ROWS,
    GN_C, GN_C, GN_C, GN_C, GN_C, GN_C,
    2 * GN_G, 2 * GN_G, 2 * GN_C, 2 * GN_C,
};

#define MAX_SLOTS 128
#define MAX_WATCHED 256

typedef struct slot {
    cl_mem parent, mem;
    cl_command_queue queue;
    size_t bytes;
} slot;

/* One buffer the snapshot reads back, and what it held. */
typedef struct watched {
    cl_mem mem;
    cl_command_queue queue;
    size_t bytes;
    unsigned char *data;
} watched;

typedef enum layer_id { L_LN, L_RMS, L_GN, L_IN, FN_LAYERS } layer_id;

typedef struct world {
    clnorm_context *ctx, *other, *profiling;
    cl_command_queue queue, other_queue;
    size_t align; /* CL_DEVICE_MEM_BASE_ADDR_ALIGN in bytes */
    uint64_t max_alloc;
    slot slots[MAX_SLOTS];
    size_t slot_count;
    cl_mem b[BUFFER_COUNT];
    cl_event own_event, foreign_event;
    clnorm_batchnorm *bnl, *bnl_untracked;
    clnorm_featurenorm *fnl[FN_LAYERS];
    clnorm_batchnorm *fresh_bn;
    clnorm_featurenorm *fresh_fn;
    float host[64]; /* fold's scale and shift live inside, with canaries around */
    char dir[512];
    int counts_objects;
    /* the snapshot */
    watched w[MAX_WATCHED];
    size_t watched_count;
    float host_before[64];
    cl_uint context_refs, queue_refs;
} world;

static uint32_t canary_word(size_t i)
{
    return 0xC0DE0000u | (uint32_t)(i & 0xffff);
}

static size_t mem_size(cl_mem m)
{
    size_t size = 0;
    CL_OK(clGetMemObjectInfo(m, CL_MEM_SIZE, sizeof size, &size, NULL));
    return size;
}

/* A sub-buffer of `bytes` at offset `align` inside a parent filled with canary words, the
 * sub-buffer then holding `data` (NULL: canary words too). */
static cl_mem make_slot(world *w, clnorm_context *ctx, size_t bytes, const float *data)
{
    cr_assert_lt(w->slot_count, MAX_SLOTS);
    cl_context c = clnorm_context_cl_context(ctx);
    cl_command_queue q = clnorm_context_queue(ctx);
    const size_t parent_bytes = w->align + (bytes + w->align - 1) / w->align * w->align + w->align;
    uint32_t *fill = malloc(parent_bytes);
    for (size_t i = 0; i < parent_bytes / 4; i++)
        fill[i] = canary_word(i);
    if (data)
        memcpy((unsigned char *)fill + w->align, data, bytes);
    cl_int err;
    cl_mem parent = clCreateBuffer(c, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, parent_bytes, fill,
                                   &err);
    cr_assert_eq(err, CL_SUCCESS, "clCreateBuffer: %s", clnorm_cl_error_name(err));
    free(fill);
    cl_buffer_region region = {w->align, bytes};
    cl_mem sub = clCreateSubBuffer(parent, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, &region,
                                   &err);
    cr_assert_eq(err, CL_SUCCESS, "clCreateSubBuffer: %s", clnorm_cl_error_name(err));
    slot *s = &w->slots[w->slot_count++];
    s->parent = parent;
    s->mem = sub;
    s->queue = q;
    s->bytes = bytes;
    return sub;
}

/* The test's buffer of `bytes` in the other context (K_FOREIGN), or one float short of
 * `bytes` in ours (K_SHORT); made once per size. */
static cl_mem variant(world *w, size_t bytes, kind k)
{
    const size_t want = k == K_SHORT ? bytes - sizeof(float) : bytes;
    const cl_command_queue q = k == K_SHORT ? w->queue : w->other_queue;
    for (size_t i = 0; i < w->slot_count; i++)
        if (w->slots[i].bytes == want && w->slots[i].queue == q && i >= BUFFER_COUNT)
            return w->slots[i].mem;
    float *data = malloc(want ? want : 1);
    for (size_t i = 0; i < want / sizeof(float); i++)
        data[i] = 0.25f * (float)(i % 7);
    cl_mem m = make_slot(w, k == K_SHORT ? w->ctx : w->other, want, data);
    free(data);
    return m;
}

static void path_in(const world *w, const char *name, char *out, size_t size)
{
    snprintf(out, size, "%s/%s", w->dir, name);
}

static void write_bytes(const char *path, const void *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s", path);
    cr_assert_eq(fwrite(data, 1, size, f), size);
    cr_assert_eq(fclose(f), 0);
}

static unsigned char *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    unsigned char *data = malloc(1 << 16);
    *size = fread(data, 1, 1 << 16, f);
    fclose(f);
    return data;
}

static clnorm_featurenorm *make_fn_layer(clnorm_context *ctx, layer_id id, size_t size)
{
    clnorm_featurenorm *layer = NULL;
    switch (id) {
    case L_LN: {
        clnorm_layernorm_options o;
        clnorm_layernorm_default_options(&o, size);
        CLNORM_OK_(ctx, clnorm_featurenorm_create_layernorm(ctx, &o, &layer));
        break;
    }
    case L_RMS: {
        clnorm_rmsnorm_options o;
        clnorm_rmsnorm_default_options(&o, size);
        CLNORM_OK_(ctx, clnorm_featurenorm_create_rmsnorm(ctx, &o, &layer));
        break;
    }
    case L_GN: {
        clnorm_groupnorm_options o;
        clnorm_groupnorm_default_options(&o, GN_G, size);
        CLNORM_OK_(ctx, clnorm_featurenorm_create_groupnorm(ctx, &o, &layer));
        break;
    }
    default: {
        clnorm_instancenorm_options o;
        clnorm_instancenorm_default_options(&o, size);
        o.affine = 1;
        o.track_running_stats = 1;
        CLNORM_OK_(ctx, clnorm_featurenorm_create_instancenorm(ctx, &o, &layer));
        break;
    }
    }
    return layer;
}

static clnorm_batchnorm *make_bn_layer(clnorm_context *ctx, size_t channels, int tracking)
{
    clnorm_batchnorm_options o;
    clnorm_batchnorm_default_options(&o, channels);
    o.track_running_stats = tracking;
    clnorm_batchnorm *bn = NULL;
    CLNORM_OK_(ctx, clnorm_batchnorm_create(ctx, &o, &bn));
    return bn;
}

static cl_uint context_refs(cl_context c)
{
    cl_uint n = 0;
    CL_OK(clGetContextInfo(c, CL_CONTEXT_REFERENCE_COUNT, sizeof n, &n, NULL));
    return n;
}

static cl_uint queue_refs(cl_command_queue q)
{
    cl_uint n = 0;
    CL_OK(clGetCommandQueueInfo(q, CL_QUEUE_REFERENCE_COUNT, sizeof n, &n, NULL));
    return n;
}

/* Whether this device's reference counts count buffers (context) and events (queue): then a
 * failed call that left an object behind changes them. */
static int counts_objects(world *w)
{
    cl_context c = clnorm_context_cl_context(w->ctx);
    CL_OK(clFinish(w->queue));
    cl_uint c0 = context_refs(c), q0 = queue_refs(w->queue);
    cl_int err;
    cl_mem b = clCreateBuffer(c, CL_MEM_READ_WRITE, 64, NULL, &err);
    cr_assert_eq(err, CL_SUCCESS);
    cl_uint c1 = context_refs(c);
    cl_event ev;
    float host[16] = {0};
    CL_OK(clEnqueueWriteBuffer(w->queue, b, CL_TRUE, 0, sizeof host, host, 0, NULL, &ev));
    CL_OK(clFinish(w->queue));
    cl_uint q1 = queue_refs(w->queue);
    clReleaseEvent(ev);
    clReleaseMemObject(b);
    CL_OK(clFinish(w->queue));
    return c1 == c0 + 1 && context_refs(c) == c0 && q1 == q0 + 1 && queue_refs(w->queue) == q0;
}

static void world_init(world *w)
{
    memset(w, 0, sizeof *w);
    w->ctx = test_context(NULL);
    w->other = test_context(NULL);
    clnorm_settings settings;
    clnorm_default_settings(&settings);
    settings.enable_profiling = 1;
    w->profiling = test_context(&settings);
    w->queue = clnorm_context_queue(w->ctx);
    w->other_queue = clnorm_context_queue(w->other);
    cl_uint align_bits = 0;
    CL_OK(clGetDeviceInfo(clnorm_context_device(w->ctx), CL_DEVICE_MEM_BASE_ADDR_ALIGN,
                          sizeof align_bits, &align_bits, NULL));
    w->align = align_bits / 8 < sizeof(float) ? sizeof(float) : align_bits / 8;
    clnorm_device_info info;
    CLNORM_OK_(w->ctx, clnorm_context_device_info(w->ctx, &info));
    w->max_alloc = info.max_alloc_bytes;
    /* the valid buffers: finite data, positive where a variance or a scale goes */
    for (int b = 0; b < BUFFER_COUNT; b++) {
        float data[T];
        for (size_t i = 0; i < buffer_floats[b]; i++)
            data[i] = (b == B_RVAR || b == B_GN_RVAR || b == B_SINVSTD || b == B_LN_RSTD ||
                       b == B_GN_RSTD || b == B_IN_RSTD)
                          ? 1.0f + 0.125f * (float)(i % 3)
                          : (float)sin(0.7 * (double)i + b) * 2.0f;
        w->b[b] = make_slot(w, w->ctx, buffer_floats[b] * sizeof(float), data);
    }
    cl_int err;
    w->own_event = clCreateUserEvent(clnorm_context_cl_context(w->ctx), &err);
    cr_assert_eq(err, CL_SUCCESS);
    CL_OK(clSetUserEventStatus(w->own_event, CL_COMPLETE));
    w->foreign_event = clCreateUserEvent(clnorm_context_cl_context(w->other), &err);
    cr_assert_eq(err, CL_SUCCESS);
    CL_OK(clSetUserEventStatus(w->foreign_event, CL_COMPLETE));
    w->bnl = make_bn_layer(w->ctx, BN_C, 1);
    w->bnl_untracked = make_bn_layer(w->ctx, BN_C, 0);
    const size_t fn_sizes[FN_LAYERS] = {LN_D, LN_D, GN_C, GN_C};
    for (int l = 0; l < FN_LAYERS; l++)
        w->fnl[l] = make_fn_layer(w->ctx, (layer_id)l, fn_sizes[l]);
    for (size_t i = 0; i < ARRAY_LEN(w->host); i++)
        w->host[i] = (float)canary_word(i);
    /* files the load rows read */
    make_temp_dir(w->dir, sizeof w->dir);
    char path[600];
    path_in(w, "batchnorm.bin", path, sizeof path);
    CLNORM_OK_(w->ctx, clnorm_batchnorm_save(w->bnl, path));
    size_t size;
    unsigned char *data = read_file(path, &size);
    path_in(w, "truncated-bn.bin", path, sizeof path);
    write_bytes(path, data, size - 9);
    free(data);
    path_in(w, "layernorm.bin", path, sizeof path);
    CLNORM_OK_(w->ctx, clnorm_featurenorm_save(w->fnl[L_LN], path));
    data = read_file(path, &size);
    path_in(w, "truncated-ln.bin", path, sizeof path);
    write_bytes(path, data, 30);
    free(data);
    path_in(w, "groupnorm.bin", path, sizeof path);
    CLNORM_OK_(w->ctx, clnorm_featurenorm_save(w->fnl[L_GN], path));
    clnorm_batchnorm *bn4 = make_bn_layer(w->ctx, 4, 1);
    path_in(w, "bn-other-channels.bin", path, sizeof path);
    CLNORM_OK_(w->ctx, clnorm_batchnorm_save(bn4, path));
    clnorm_batchnorm_release(bn4);
    clnorm_featurenorm *ln31 = make_fn_layer(w->ctx, L_LN, 31);
    path_in(w, "layernorm-other-size.bin", path, sizeof path);
    CLNORM_OK_(w->ctx, clnorm_featurenorm_save(ln31, path));
    clnorm_featurenorm_release(ln31);
    char garbage[400]; /* longer than any of the layers' files, and not one */
    for (size_t i = 0; i < sizeof garbage; i++)
        garbage[i] = "not a clnorm parameter file "[i % 28];
    path_in(w, "garbage.bin", path, sizeof path);
    write_bytes(path, garbage, sizeof garbage);
    /* a profiling context that has run an operation (clnorm_last_op_time's valid call) */
    cl_mem px = test_buffer(w->profiling, LN_ROWS * LN_D, NULL);
    clnorm_norm_buffers nb = {.x = px, .y = px};
    CLNORM_OK_(w->profiling,
               clnorm_layernorm_forward(w->profiling, LN_ROWS, LN_D, 1e-5, &nb, 0, NULL, NULL));
    CLNORM_OK_(w->profiling, clnorm_finish(w->profiling));
    clReleaseMemObject(px);
    w->counts_objects = counts_objects(w);
    if (!w->counts_objects)
        fprintf(stderr, "bad_input: this device's reference counts do not count objects; "
                        "leaks are left to LeakSanitizer\n");
}

static void world_release(world *w)
{
    clnorm_batchnorm_release(w->bnl);
    clnorm_batchnorm_release(w->bnl_untracked);
    for (int l = 0; l < FN_LAYERS; l++)
        clnorm_featurenorm_release(w->fnl[l]);
    for (size_t i = 0; i < w->slot_count; i++) {
        clReleaseMemObject(w->slots[i].mem);
        clReleaseMemObject(w->slots[i].parent);
    }
    clReleaseEvent(w->own_event);
    clReleaseEvent(w->foreign_event);
    remove_tree(w->dir);
    clnorm_context_release(w->profiling);
    clnorm_context_release(w->other);
    clnorm_context_release(w->ctx);
}

/* ---- the valid call of each function ------------------------------------------------------------ */

static const clnorm_shape bn_shape = {2, BN_C, 2, {4, 5, 0}, CLNORM_CHANNELS_FIRST};
static const clnorm_shape gn_shape = {2, GN_C, 1, {10, 0, 0}, CLNORM_CHANNELS_FIRST};

static void run_layer_forward(world *w, call *c)
{
    /* the backward calls' valid state: a forward of the same shape */
    cl_mem *b = w->b;
    if (c->bnl)
        CLNORM_OK_(w->ctx, clnorm_batchnorm_forward(c->bnl, CLNORM_TRAINING, &bn_shape,
                                                    CLNORM_ACTIVATION_NONE, b[B_X], NULL, b[B_Y],
                                                    0, NULL, NULL));
    else if (c->fnl == w->fnl[L_LN])
        CLNORM_OK_(w->ctx, clnorm_featurenorm_forward_rows(c->fnl, LN_ROWS, b[B_X], NULL, NULL,
                                                           b[B_Y], 0, NULL, NULL));
    else if (c->fnl == w->fnl[L_GN])
        CLNORM_OK_(w->ctx, clnorm_featurenorm_forward_groups(c->fnl, &gn_shape, b[B_X], b[B_Y], 0,
                                                             NULL, NULL));
    else
        CLNORM_OK_(w->ctx, clnorm_featurenorm_forward_instances(c->fnl, CLNORM_TRAINING,
                                                                &gn_shape, b[B_X], b[B_Y], 0,
                                                                NULL, NULL));
    CL_OK(clFinish(w->queue));
}

static void valid_call(world *w, fn f, call *c)
{
    cl_mem *b = w->b;
    memset(c, 0, sizeof *c);
    c->ctx = w->ctx;
    c->shape_p = &c->shape;
    c->cfg_p = &c->cfg;
    c->bn_p = &c->bn;
    c->bg_p = &c->bg;
    c->nb_p = &c->nb;
    c->ng_p = &c->ng;
    clnorm_bn_default_config(&c->cfg);
    c->ev = SENTINEL_EVENT;
    c->ev_p = &c->ev;
    c->eps = 1e-5;
    c->momentum = 0.1;
    c->mode = CLNORM_TRAINING;
    c->activation = CLNORM_ACTIVATION_NONE;
    c->made_bn = (clnorm_batchnorm *)(uintptr_t)1; /* must come back NULL */
    c->made_fn = (clnorm_featurenorm *)(uintptr_t)1;
    c->made_ctx = (clnorm_context *)(uintptr_t)1;
    c->bn_out = &c->made_bn;
    c->fn_out = &c->made_fn;
    c->ctx_out = &c->made_ctx;
    clnorm_default_settings(&c->settings);
    c->settings_p = &c->settings;
    c->cl_ctx = clnorm_context_cl_context(w->ctx);
    c->device = clnorm_context_device(w->ctx);
    c->queue = clnorm_context_queue(w->ctx);
    c->infos_p = c->infos;
    c->capacity = ARRAY_LEN(c->infos);
    c->count_p = &c->count;
    c->info_p = &c->info;
    c->name = "vector_width";
    c->value = 4;
    c->value_p = &c->value;
    c->stats_p = &c->stats_out;
    c->ms_p = &c->ms;
    c->ktimes_p = c->ktimes;
    c->kcapacity = ARRAY_LEN(c->ktimes);
    c->finfo_p = &c->finfo;
    c->bbufs_p = &c->bbufs;
    c->fbufs_p = &c->fbufs;
    c->scale = &w->host[8];
    c->shift = &w->host[24];
    c->bno_p = &c->bno;
    c->lno_p = &c->lno;
    c->rmo_p = &c->rmo;
    c->gno_p = &c->gno;
    c->ino_p = &c->ino;
    clnorm_batchnorm_default_options(&c->bno, BN_C);
    clnorm_layernorm_default_options(&c->lno, LN_D);
    clnorm_rmsnorm_default_options(&c->rmo, LN_D);
    clnorm_groupnorm_default_options(&c->gno, GN_G, GN_C);
    clnorm_instancenorm_default_options(&c->ino, GN_C);
    switch (group_of(f)) {
    case G_BN:
    case G_BN_LAYER:
        c->shape = bn_shape;
        break;
    default:
        c->shape = gn_shape;
        break;
    }
    switch (f) {
    case F_LAST_OP_TIME:
    case F_LAST_OP_KERNELS:
        c->ctx = w->profiling;
        break;
    case F_SAVE_PARAMS:
        c->path = "@saved.bin";
        break;
    case F_BN_TRAIN:
    case F_BN_INFER:
    case F_BN_APPLY: {
        clnorm_bn_buffers bn = {b[B_X],     b[B_Y],     b[B_RESIDUAL], b[B_GAMMA],  b[B_BETA],
                                b[B_RMEAN], b[B_RVAR],  b[B_SMEAN],    b[B_SINVSTD]};
        c->bn = bn;
        break;
    }
    case F_BN_BACKWARD:
    case F_BN_FROZEN: {
        clnorm_bn_grad_buffers bg = {.x = b[B_X],
                                     .dy = b[B_DY],
                                     .y = b[B_Y],
                                     .gamma = b[B_GAMMA],
                                     .mean = f == F_BN_FROZEN ? b[B_RMEAN] : b[B_SMEAN],
                                     .invstd = b[B_SINVSTD],
                                     .var = b[B_RVAR],
                                     .dx = b[B_DX],
                                     .dgamma = b[B_DGAMMA],
                                     .dbeta = b[B_DBETA],
                                     .dresidual = b[B_DRESIDUAL]};
        c->bg = bg;
        break;
    }
    case F_BN_PARTIAL:
        c->x = b[B_X];
        c->stats = b[B_SET];
        break;
    case F_BN_MERGE:
        c->channels = BN_C;
        c->num_sets = 2;
        c->stats = b[B_SETS];
        c->running_mean = b[B_RMEAN];
        c->running_var = b[B_RVAR];
        c->save_mean = b[B_SMEAN];
        c->save_invstd = b[B_SINVSTD];
        break;
    case F_BNL_SET_MODE:
    case F_BNL_GET_BUFFERS:
    case F_BNL_FORWARD:
    case F_BNL_SAVE:
    case F_BNL_LOAD:
    case F_BNL_FOLD:
    case F_BNL_FOLD_LINEAR:
    case F_BNL_BACKWARD:
        c->bnl = w->bnl;
        c->x = b[B_X];
        c->y = b[B_Y];
        c->residual = b[B_RESIDUAL];
        c->dy = b[B_DY];
        c->dx = b[B_DX];
        c->dresidual = b[B_DRESIDUAL];
        c->weight = b[B_FOLD_W];
        c->bias = b[B_FOLD_B];
        c->in_features = FOLD_IN;
        c->path = f == F_BNL_LOAD ? "@batchnorm.bin" : "@saved.bin";
        if (f == F_BNL_BACKWARD)
            run_layer_forward(w, c);
        break;
    case F_LN_FORWARD:
    case F_RMS_FORWARD:
        c->rows = LN_ROWS;
        c->cols = LN_D;
        c->nb.x = b[B_X];
        c->nb.residual = b[B_RESIDUAL];
        c->nb.h = b[B_H];
        c->nb.weight = b[B_LN_W];
        c->nb.bias = f == F_LN_FORWARD ? b[B_LN_B] : NULL;
        c->nb.y = b[B_Y];
        c->nb.mean = f == F_LN_FORWARD ? b[B_LN_MEAN] : NULL;
        c->nb.rstd = b[B_LN_RSTD];
        break;
    case F_LN_BACKWARD:
    case F_RMS_BACKWARD:
        c->rows = LN_ROWS;
        c->cols = LN_D;
        c->ng.x = b[B_X];
        c->ng.dy = b[B_DY];
        c->ng.weight = b[B_LN_W];
        c->ng.mean = f == F_LN_BACKWARD ? b[B_LN_MEAN] : NULL;
        c->ng.rstd = b[B_LN_RSTD];
        c->ng.dh_in = b[B_DH_IN];
        c->ng.dx = b[B_DX];
        c->ng.dweight = b[B_LN_DW];
        c->ng.dbias = f == F_LN_BACKWARD ? b[B_LN_DB] : NULL;
        break;
    case F_GN_FORWARD:
    case F_IN_FORWARD:
        c->groups = GN_G;
        c->use_input_stats = 1;
        c->nb.x = b[B_X];
        c->nb.y = b[B_Y];
        c->nb.weight = b[B_GN_W];
        c->nb.bias = b[B_GN_B];
        c->nb.mean = f == F_GN_FORWARD ? b[B_GN_MEAN] : b[B_IN_MEAN];
        c->nb.rstd = f == F_GN_FORWARD ? b[B_GN_RSTD] : b[B_IN_RSTD];
        c->running_mean = b[B_GN_RMEAN];
        c->running_var = b[B_GN_RVAR];
        break;
    case F_GN_BACKWARD:
    case F_IN_BACKWARD:
        c->groups = GN_G;
        c->ng.x = b[B_X];
        c->ng.dy = b[B_DY];
        c->ng.weight = b[B_GN_W];
        c->ng.mean = f == F_GN_BACKWARD ? b[B_GN_MEAN] : b[B_IN_MEAN];
        c->ng.rstd = f == F_GN_BACKWARD ? b[B_GN_RSTD] : b[B_IN_RSTD];
        c->ng.dh_in = f == F_GN_BACKWARD ? b[B_DH_IN] : NULL;
        c->ng.dx = b[B_DX];
        c->ng.dweight = b[B_GN_DW];
        c->ng.dbias = b[B_GN_DB];
        break;
    case F_FNL_SET_MODE:
    case F_FNL_GET_INFO:
    case F_FNL_GET_BUFFERS:
    case F_FNL_FORWARD_ROWS:
    case F_FNL_BACKWARD_ROWS:
    case F_FNL_SAVE:
    case F_FNL_LOAD:
        c->fnl = w->fnl[L_LN];
        c->rows = LN_ROWS;
        c->x = b[B_X];
        c->residual = b[B_RESIDUAL];
        c->h = b[B_H];
        c->y = b[B_Y];
        c->dy = b[B_DY];
        c->dx = b[B_DX];
        c->dh_in = b[B_DH_IN];
        c->path = f == F_FNL_LOAD ? "@layernorm.bin" : "@saved.bin";
        if (f == F_FNL_BACKWARD_ROWS)
            run_layer_forward(w, c);
        break;
    case F_FNL_FORWARD_GROUPS:
    case F_FNL_BACKWARD_GROUPS:
    case F_FNL_FORWARD_INSTANCES:
    case F_FNL_BACKWARD_INSTANCES:
        c->fnl = f <= F_FNL_BACKWARD_GROUPS ? w->fnl[L_GN] : w->fnl[L_IN];
        c->x = b[B_X];
        c->y = b[B_Y];
        c->dy = b[B_DY];
        c->dx = b[B_DX];
        if (f == F_FNL_BACKWARD_GROUPS || f == F_FNL_BACKWARD_INSTANCES)
            run_layer_forward(w, c);
        break;
    default:
        break;
    }
}

/* ---- breaking one argument ------------------------------------------------------------------------ */

static void apply_special(world *w, const row *r, call *c)
{
    switch (r->sp) {
    case S_WAIT_LIST_WITHOUT_COUNT:
        c->num_wait = 0;
        c->wait = &w->own_event;
        break;
    case S_FOREIGN_EVENT:
        c->num_wait = 1;
        c->wait = &w->foreign_event;
        break;
    case S_PAST_MAX_ALLOC: {
        /* the leading dimension one step past the device's largest buffer */
        size_t per_step;
        if (r->f == F_LN_FORWARD || r->f == F_LN_BACKWARD || r->f == F_FNL_FORWARD_ROWS) {
            per_step = LN_D * sizeof(float);
            c->rows = (size_t)(w->max_alloc / per_step) + 1;
        } else {
            per_step = T / c->shape.n * sizeof(float);
            c->shape.n = (size_t)(w->max_alloc / per_step) + 1;
        }
        break;
    }
    case S_ONE_VALUE_PER_CHANNEL:
        c->shape.n = 1;
        c->shape.spatial[0] = c->shape.spatial[1] = 1;
        break;
    case S_RELU_WITHOUT_Y:
        c->cfg.activation = CLNORM_ACTIVATION_RELU;
        c->activation = CLNORM_ACTIVATION_RELU;
        c->bg.y = NULL;
        c->y = NULL;
        break;
    case S_EMPTY_HUGE_C:
        c->shape.n = 0;
        c->shape.c = ((size_t)1 << 62) + 1;
        break;
    case S_MERGE_SIZE_OVERFLOW:
        c->num_sets = (size_t)1 << 31;
        c->channels = (size_t)1 << 40;
        break;
    case S_FEATURES_PAST_MAX_ALLOC: {
        const size_t past = (size_t)(w->max_alloc / sizeof(float)) + 1;
        c->bno.num_features = past;
        c->lno.normalized_size = past;
        c->rmo.normalized_size = past;
        c->gno.num_channels = past;
        c->gno.num_groups = 1;
        c->ino.num_features = past;
        break;
    }
    case S_FRESH_LAYER:
        if (c->bnl) {
            w->fresh_bn = make_bn_layer(w->ctx, BN_C, 1);
            c->bnl = w->fresh_bn;
        } else {
            const layer_id id = c->fnl == w->fnl[L_LN]   ? L_LN
                                : c->fnl == w->fnl[L_GN] ? L_GN
                                                         : L_IN;
            w->fresh_fn = make_fn_layer(w->ctx, id, id == L_LN ? LN_D : GN_C);
            c->fnl = w->fresh_fn;
        }
        break;
    case S_UNTRACKED_LAYER:
        c->bnl = w->bnl_untracked;
        break;
    case S_OTHER_KIND_LAYER:
        c->fnl = w->fnl[L_GN];
        break;
    case S_LAYERNORM_LAYER:
        c->fnl = w->fnl[L_LN];
        break;
    case S_QUEUE_OF_OTHER_CONTEXT:
        c->queue = w->other_queue;
        break;
    case S_NO_PROFILING:
        c->ctx = w->ctx;
        break;
    case S_NOTHING_RAN: {
        clnorm_settings settings;
        clnorm_default_settings(&settings);
        settings.enable_profiling = 1;
        c->made_ctx = test_context(&settings); /* released by run_row */
        c->ctx = c->made_ctx;
        break;
    }
    case S_INSTANCE_EVAL_WITH_STATS:
        c->use_input_stats = 0;
        break;
    case S_INSTANCE_EVAL_NO_RUNNING:
        c->use_input_stats = 0;
        c->nb.mean = c->nb.rstd = NULL;
        c->running_mean = c->running_var = NULL;
        break;
    case S_LONG_PATH: {
        static char long_path[4001];
        memset(long_path, 'a', sizeof long_path - 1);
        long_path[0] = '/';
        c->path = long_path;
        break;
    }
    case S_NONE:
        break;
    }
}

static void break_argument(world *w, const row *r, call *c)
{
    void *field = (char *)c + r->off;
    void *const null = NULL;
    switch (r->k) {
    case K_NULL:
        memcpy(field, &null, sizeof null);
        break;
    case K_SHORT:
    case K_FOREIGN: {
        cl_mem m;
        memcpy(&m, field, sizeof m);
        cr_assert_not_null(m, "%s: %s: the valid call has no buffer there", fn_names[r->f],
                           r->bad);
        m = variant(w, mem_size(m), r->k);
        memcpy(field, &m, sizeof m);
        break;
    }
    case K_SIZE:
        memcpy(field, &r->z, sizeof r->z);
        break;
    case K_DOUBLE:
        memcpy(field, &r->d, sizeof r->d);
        break;
    case K_INT: {
        const int v = (int)r->i;
        memcpy(field, &v, sizeof v);
        break;
    }
    case K_UINT: {
        const unsigned v = (unsigned)r->i;
        memcpy(field, &v, sizeof v);
        break;
    }
    case K_LONG: {
        const long v = (long)r->i;
        memcpy(field, &v, sizeof v);
        break;
    }
    case K_STRING:
        memcpy(field, &r->s, sizeof r->s);
        break;
    case K_ALIAS:
        memcpy(field, (char *)c + r->src, sizeof(void *));
        break;
    case K_SPECIAL:
        apply_special(w, r, c);
        break;
    }
}

/* ---- calling --------------------------------------------------------------------------------- */

static const char *resolve(const world *w, const char *path, char *buf, size_t size)
{
    if (path && path[0] == '@') {
        path_in(w, path + 1, buf, size);
        return buf;
    }
    return path;
}

static clnorm_status invoke(world *w, fn f, call *c)
{
    char path_buf[700];
    const char *path = resolve(w, c->path, path_buf, sizeof path_buf);
    cl_event *ev = c->ev_p;
    switch (f) {
    case F_LIST_DEVICES: return clnorm_list_devices(c->infos_p, c->capacity, c->count_p);
    case F_CONTEXT_CREATE:
        return clnorm_context_create(c->ctx_out, c->settings_p, c->message, sizeof c->message);
    case F_CONTEXT_WRAP:
        return clnorm_context_wrap(c->ctx_out, c->cl_ctx, c->device, c->queue, c->settings_p,
                                   c->message, sizeof c->message);
    case F_DEVICE_INFO: return clnorm_context_device_info(c->ctx, c->info_p);
    case F_FINISH: return clnorm_finish(c->ctx);
    case F_SET_PARAM: return clnorm_set_param(c->ctx, c->name, c->value);
    case F_GET_PARAM: return clnorm_get_param(c->ctx, c->name, c->value_p);
    case F_GET_DEFAULT_PARAM: return clnorm_get_default_param(c->ctx, c->name, c->value_p);
    case F_SAVE_PARAMS: return clnorm_save_params(c->ctx, path, "bad input test");
    case F_WARM_UP: return clnorm_warm_up(c->ctx);
    case F_SELF_CHECK: return clnorm_self_check(c->ctx);
    case F_CACHE_STATS: return clnorm_get_cache_stats(c->ctx, c->stats_p);
    case F_LAST_OP_TIME: return clnorm_last_op_time(c->ctx, c->ms_p);
    case F_LAST_OP_KERNELS: return clnorm_last_op_kernels(c->ctx, c->ktimes_p, c->kcapacity, c->count_p);
    case F_CLEAR_DISK_CACHE: return clnorm_clear_disk_cache(c->ctx);
    case F_BN_TRAIN:
        return clnorm_bn_forward_training(c->ctx, c->shape_p, c->cfg_p, c->bn_p, c->num_wait,
                                          c->wait, ev);
    case F_BN_INFER:
        return clnorm_bn_forward_inference(c->ctx, c->shape_p, c->cfg_p, c->bn_p, c->num_wait,
                                           c->wait, ev);
    case F_BN_BACKWARD:
        return clnorm_bn_backward(c->ctx, c->shape_p, c->cfg_p, c->bg_p, c->num_wait, c->wait,
                                  ev);
    case F_BN_FROZEN:
        return clnorm_bn_backward_frozen(c->ctx, c->shape_p, c->cfg_p, c->bg_p, c->num_wait,
                                         c->wait, ev);
    case F_BN_PARTIAL:
        return clnorm_bn_partial_stats(c->ctx, c->shape_p, c->x, c->stats, c->num_wait, c->wait,
                                       ev);
    case F_BN_MERGE:
        return clnorm_bn_merge_stats(c->ctx, c->channels, c->num_sets, c->stats, c->cfg_p,
                                     c->running_mean, c->running_var, c->save_mean,
                                     c->save_invstd, c->num_wait, c->wait, ev);
    case F_BN_APPLY:
        return clnorm_bn_apply(c->ctx, c->shape_p, c->cfg_p, c->bn_p, c->num_wait, c->wait, ev);
    case F_BNL_CREATE: return clnorm_batchnorm_create(c->ctx, c->bno_p, c->bn_out);
    case F_BNL_SET_MODE: return clnorm_batchnorm_set_mode(c->bnl, c->mode);
    case F_BNL_GET_BUFFERS: return clnorm_batchnorm_get_buffers(c->bnl, c->bbufs_p);
    case F_BNL_FORWARD:
        return clnorm_batchnorm_forward(c->bnl, c->mode, c->shape_p, c->activation, c->x,
                                        c->residual, c->y, c->num_wait, c->wait, ev);
    case F_BNL_BACKWARD:
        return clnorm_batchnorm_backward(c->bnl, c->shape_p, c->activation, c->x, c->y, c->dy,
                                         c->dx, c->dresidual, c->num_wait, c->wait, ev);
    case F_BNL_SAVE: return clnorm_batchnorm_save(c->bnl, path);
    case F_BNL_LOAD: return clnorm_batchnorm_load(c->bnl, path);
    case F_BNL_FOLD: return clnorm_batchnorm_fold(c->bnl, c->scale, c->shift);
    case F_BNL_FOLD_LINEAR:
        return clnorm_batchnorm_fold_linear(c->bnl, c->weight, c->bias, c->in_features,
                                            c->num_wait, c->wait, ev);
    case F_LN_FORWARD:
        return clnorm_layernorm_forward(c->ctx, c->rows, c->cols, c->eps, c->nb_p, c->num_wait,
                                        c->wait, ev);
    case F_LN_BACKWARD:
        return clnorm_layernorm_backward(c->ctx, c->rows, c->cols, c->ng_p, c->num_wait, c->wait,
                                         ev);
    case F_RMS_FORWARD:
        return clnorm_rmsnorm_forward(c->ctx, c->rows, c->cols, c->eps, c->nb_p, c->num_wait,
                                      c->wait, ev);
    case F_RMS_BACKWARD:
        return clnorm_rmsnorm_backward(c->ctx, c->rows, c->cols, c->ng_p, c->num_wait, c->wait,
                                       ev);
    case F_GN_FORWARD:
        return clnorm_groupnorm_forward(c->ctx, c->shape_p, c->groups, c->eps, c->nb_p,
                                        c->num_wait, c->wait, ev);
    case F_GN_BACKWARD:
        return clnorm_groupnorm_backward(c->ctx, c->shape_p, c->groups, c->ng_p, c->num_wait,
                                         c->wait, ev);
    case F_IN_FORWARD:
        return clnorm_instancenorm_forward(c->ctx, c->shape_p, c->eps, c->momentum,
                                           c->use_input_stats, c->nb_p, c->running_mean,
                                           c->running_var, c->num_wait, c->wait, ev);
    case F_IN_BACKWARD:
        return clnorm_instancenorm_backward(c->ctx, c->shape_p, c->ng_p, c->num_wait, c->wait,
                                            ev);
    case F_FNL_CREATE_LN: return clnorm_featurenorm_create_layernorm(c->ctx, c->lno_p, c->fn_out);
    case F_FNL_CREATE_RMS: return clnorm_featurenorm_create_rmsnorm(c->ctx, c->rmo_p, c->fn_out);
    case F_FNL_CREATE_GN: return clnorm_featurenorm_create_groupnorm(c->ctx, c->gno_p, c->fn_out);
    case F_FNL_CREATE_IN:
        return clnorm_featurenorm_create_instancenorm(c->ctx, c->ino_p, c->fn_out);
    case F_FNL_SET_MODE: return clnorm_featurenorm_set_mode(c->fnl, c->mode);
    case F_FNL_GET_INFO: return clnorm_featurenorm_get_info(c->fnl, c->finfo_p);
    case F_FNL_GET_BUFFERS: return clnorm_featurenorm_get_buffers(c->fnl, c->fbufs_p);
    case F_FNL_FORWARD_ROWS:
        return clnorm_featurenorm_forward_rows(c->fnl, c->rows, c->x, c->residual, c->h, c->y,
                                               c->num_wait, c->wait, ev);
    case F_FNL_BACKWARD_ROWS:
        return clnorm_featurenorm_backward_rows(c->fnl, c->rows, c->x, c->dy, c->dh_in, c->dx,
                                                c->num_wait, c->wait, ev);
    case F_FNL_FORWARD_GROUPS:
        return clnorm_featurenorm_forward_groups(c->fnl, c->shape_p, c->x, c->y, c->num_wait,
                                                 c->wait, ev);
    case F_FNL_BACKWARD_GROUPS:
        return clnorm_featurenorm_backward_groups(c->fnl, c->shape_p, c->x, c->dy, c->dx,
                                                  c->num_wait, c->wait, ev);
    case F_FNL_FORWARD_INSTANCES:
        return clnorm_featurenorm_forward_instances(c->fnl, c->mode, c->shape_p, c->x, c->y,
                                                    c->num_wait, c->wait, ev);
    case F_FNL_BACKWARD_INSTANCES:
        return clnorm_featurenorm_backward_instances(c->fnl, c->shape_p, c->x, c->dy, c->dx,
                                                     c->num_wait, c->wait, ev);
    case F_FNL_SAVE: return clnorm_featurenorm_save(c->fnl, path);
    case F_FNL_LOAD: return clnorm_featurenorm_load(c->fnl, path);
    case F_COUNT: break;
    }
    cr_assert_fail("no such function");
    return CLNORM_OK;
}

static int has_event(fn f)
{
    switch (f) {
    case F_BN_TRAIN: case F_BN_INFER: case F_BN_BACKWARD: case F_BN_FROZEN: case F_BN_PARTIAL:
    case F_BN_MERGE: case F_BN_APPLY: case F_BNL_FORWARD: case F_BNL_BACKWARD:
    case F_BNL_FOLD_LINEAR: case F_LN_FORWARD: case F_LN_BACKWARD: case F_RMS_FORWARD:
    case F_RMS_BACKWARD: case F_GN_FORWARD: case F_GN_BACKWARD: case F_IN_FORWARD:
    case F_IN_BACKWARD: case F_FNL_FORWARD_ROWS: case F_FNL_BACKWARD_ROWS:
    case F_FNL_FORWARD_GROUPS: case F_FNL_BACKWARD_GROUPS: case F_FNL_FORWARD_INSTANCES:
    case F_FNL_BACKWARD_INSTANCES:
        return 1;
    default:
        return 0;
    }
}

/* ---- nothing written, nothing left behind ------------------------------------------------------ */

static void watch(world *w, cl_mem m, cl_command_queue q)
{
    if (!m)
        return;
    cr_assert_lt(w->watched_count, MAX_WATCHED);
    watched *e = &w->w[w->watched_count++];
    e->mem = m;
    e->queue = q;
    e->bytes = mem_size(m);
    e->data = malloc(e->bytes);
    CL_OK(clEnqueueReadBuffer(q, m, CL_TRUE, 0, e->bytes, e->data, 0, NULL, NULL));
}

/* A layer's state that a failed call must leave alone, as text: compared before and after. */
static void bn_layer_state(clnorm_batchnorm *bn, char *out, size_t size)
{
    clnorm_batchnorm_buffers b;
    cr_assert_eq(clnorm_batchnorm_get_buffers(bn, &b), CLNORM_OK);
    snprintf(out, size, "mode %d tracked %lld buffers %p %p %p %p %p %p %p %p",
             (int)clnorm_batchnorm_mode(bn), (long long)clnorm_batchnorm_num_batches_tracked(bn),
             (void *)b.gamma, (void *)b.beta, (void *)b.running_mean, (void *)b.running_var,
             (void *)b.dgamma, (void *)b.dbeta, (void *)b.save_mean, (void *)b.save_invstd);
}

static void fn_layer_state(clnorm_featurenorm *l, char *out, size_t size)
{
    clnorm_featurenorm_info i;
    clnorm_featurenorm_buffers b;
    cr_assert_eq(clnorm_featurenorm_get_info(l, &i), CLNORM_OK);
    cr_assert_eq(clnorm_featurenorm_get_buffers(l, &b), CLNORM_OK);
    snprintf(out, size,
             "kind %d mode %d size %zu groups %zu eps %a momentum %a flags %d%d%d buffers %p %p "
             "%p %p %p %p %p %p saved %zu",
             (int)i.kind, (int)i.mode, i.size, i.groups, i.eps, i.momentum, i.has_weight,
             i.has_bias, i.has_running_stats, (void *)b.weight, (void *)b.bias, (void *)b.dweight,
             (void *)b.dbias, (void *)b.running_mean, (void *)b.running_var, (void *)b.mean,
             (void *)b.rstd, b.saved_count);
}

typedef struct layer_states {
    char text[8][512];
} layer_states;

static void all_layers(world *w, clnorm_batchnorm **bn, clnorm_featurenorm **fnl)
{
    bn[0] = w->bnl;
    bn[1] = w->bnl_untracked;
    bn[2] = w->fresh_bn;
    for (int l = 0; l < FN_LAYERS; l++)
        fnl[l] = w->fnl[l];
    fnl[FN_LAYERS] = w->fresh_fn;
}

static void layers_state(world *w, layer_states *s)
{
    clnorm_batchnorm *bn[3];
    clnorm_featurenorm *fnl[FN_LAYERS + 1];
    all_layers(w, bn, fnl);
    memset(s, 0, sizeof *s);
    for (int i = 0; i < 3; i++)
        if (bn[i])
            bn_layer_state(bn[i], s->text[i], sizeof s->text[i]);
    for (int i = 0; i <= FN_LAYERS; i++)
        if (fnl[i])
            fn_layer_state(fnl[i], s->text[3 + i], sizeof s->text[3 + i]);
}

static void snapshot(world *w)
{
    CL_OK(clFinish(w->queue));
    CL_OK(clFinish(w->other_queue));
    w->watched_count = 0;
    for (size_t i = 0; i < w->slot_count; i++)
        watch(w, w->slots[i].parent, w->slots[i].queue);
    clnorm_batchnorm *bn[3];
    clnorm_featurenorm *fnl[FN_LAYERS + 1];
    all_layers(w, bn, fnl);
    for (int i = 0; i < 3; i++) {
        if (!bn[i])
            continue;
        clnorm_batchnorm_buffers b;
        cr_assert_eq(clnorm_batchnorm_get_buffers(bn[i], &b), CLNORM_OK);
        cl_mem all[] = {b.gamma, b.beta, b.running_mean, b.running_var,
                        b.dgamma, b.dbeta, b.save_mean, b.save_invstd};
        for (size_t k = 0; k < ARRAY_LEN(all); k++)
            watch(w, all[k], w->queue);
    }
    for (int i = 0; i <= FN_LAYERS; i++) {
        if (!fnl[i])
            continue;
        clnorm_featurenorm_buffers b;
        cr_assert_eq(clnorm_featurenorm_get_buffers(fnl[i], &b), CLNORM_OK);
        cl_mem all[] = {b.weight, b.bias, b.dweight, b.dbias, b.running_mean, b.running_var,
                        b.mean, b.rstd};
        for (size_t k = 0; k < ARRAY_LEN(all); k++)
            watch(w, all[k], w->queue);
    }
    memcpy(w->host_before, w->host, sizeof w->host);
    CL_OK(clFinish(w->queue));
    w->context_refs = context_refs(clnorm_context_cl_context(w->ctx));
    w->queue_refs = queue_refs(w->queue);
}

/* Every watched buffer byte for byte as it was; the test's own buffers are whole parents, so
 * the canaries before and after each buffer are compared too. */
static void assert_unchanged(world *w, const char *what)
{
    CL_OK(clFinish(w->queue));
    CL_OK(clFinish(w->other_queue));
    cl_uint crefs = context_refs(clnorm_context_cl_context(w->ctx));
    cl_uint qrefs = queue_refs(w->queue);
    unsigned char *now = malloc(1 << 16);
    for (size_t i = 0; i < w->watched_count; i++) {
        watched *e = &w->w[i];
        cr_assert_leq(e->bytes, (size_t)1 << 16);
        CL_OK(clEnqueueReadBuffer(e->queue, e->mem, CL_TRUE, 0, e->bytes, now, 0, NULL, NULL));
        for (size_t k = 0; k < e->bytes; k++)
            cr_assert_eq(now[k], e->data[k],
                         "%s: buffer %zu (%s, %zu bytes) changed at byte %zu: 0x%02x, was 0x%02x",
                         what, i, i < w->slot_count ? "a canary parent" : "a layer's buffer",
                         e->bytes, k, now[k], e->data[k]);
    }
    free(now);
    cr_assert(!memcmp(w->host_before, w->host, sizeof w->host),
              "%s: the host memory of clnorm_batchnorm_fold changed", what);
    if (w->counts_objects) {
        /* must not grow (the driver may drop an event it held meanwhile: it may shrink) */
        cr_assert_leq(crefs, w->context_refs,
                      "%s: the context's reference count went from %u to %u: an object was left "
                      "behind",
                      what, w->context_refs, crefs);
        cr_assert_leq(qrefs, w->queue_refs,
                      "%s: the queue's reference count went from %u to %u: an event was left "
                      "behind",
                      what, w->queue_refs, qrefs);
    }
}

static void drop_snapshot(world *w)
{
    for (size_t i = 0; i < w->watched_count; i++)
        free(w->w[i].data);
    w->watched_count = 0;
}

/* ---- one row ----------------------------------------------------------------------------------- */

static int run_row(world *w, const row *r)
{
    call c;
    valid_call(w, r->f, &c);
    break_argument(w, r, &c);
    char what[512];
    snprintf(what, sizeof what, "%s with %s", fn_names[r->f], r->bad);
    layer_states before, after;
    layers_state(w, &before);
    snapshot(w);

    const clnorm_status got = invoke(w, r->f, &c);

    /* the message first: the checks below call the library, which clears it */
    char message[4096] = "";
    const int no_layer = (r->off == OFF(bnl) || r->off == OFF(fnl)) && r->k == K_NULL;
    const char *source = "clnorm_last_error";
    if (r->f == F_CONTEXT_CREATE || r->f == F_CONTEXT_WRAP) {
        snprintf(message, sizeof message, "%s", c.message);
        source = "error_message";
    } else if (r->f != F_LIST_DEVICES && !no_layer) {
        /* c.ctx: the call's context, or the layers' (w->ctx), NULL in the NO_CONTEXT rows */
        snprintf(message, sizeof message, "%s", clnorm_last_error(c.ctx));
    }
    cr_assert_eq(got, r->want, "%s: %s, want %s (%s: \"%s\")", what, clnorm_status_name(got),
                 clnorm_status_name(r->want), source, message);
    if (r->names) {
        char prefix[64];
        snprintf(prefix, sizeof prefix, "%s: ", clnorm_status_name(r->want));
        cr_assert(!strncmp(message, prefix, strlen(prefix)),
                  "%s: the %s message \"%s\" does not start with \"%s\"", what, source, message,
                  prefix);
        cr_assert(strstr(message, r->names), "%s: the %s message \"%s\" does not name \"%s\"",
                  what, source, message, r->names);
    }
    if (has_event(r->f) && c.ev_p == &c.ev)
        cr_assert_null(c.ev, "%s: an event came back from a failed call", what);
    if (c.bn_out == &c.made_bn && r->f == F_BNL_CREATE)
        cr_assert_null(c.made_bn, "%s: *out is not NULL after a failed create", what);
    if (c.fn_out == &c.made_fn && r->f >= F_FNL_CREATE_LN && r->f <= F_FNL_CREATE_IN)
        cr_assert_null(c.made_fn, "%s: *out is not NULL after a failed create", what);
    if (c.ctx_out == &c.made_ctx && (r->f == F_CONTEXT_CREATE || r->f == F_CONTEXT_WRAP))
        cr_assert_null(c.made_ctx, "%s: *out is not NULL after a failed create", what);
    assert_unchanged(w, what);
    layers_state(w, &after);
    for (int i = 0; i < 8; i++)
        cr_assert_str_eq(after.text[i], before.text[i], "%s: a layer's state changed", what);
    drop_snapshot(w);
    if (r->sp == S_NOTHING_RAN)
        clnorm_context_release(c.made_ctx);
    if (w->fresh_bn) {
        clnorm_batchnorm_release(w->fresh_bn);
        w->fresh_bn = NULL;
    }
    if (w->fresh_fn) {
        clnorm_featurenorm_release(w->fresh_fn);
        w->fresh_fn = NULL;
    }
    return 1;
}

static void run_group(group g)
{
    world w;
    world_init(&w);
    size_t count = 0;
    int covered[F_COUNT] = {0};
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        if (group_of(rows[i].f) != g)
            continue;
        count += (size_t)run_row(&w, &rows[i]);
        covered[rows[i].f]++;
    }
    for (int f = 0; f < F_COUNT; f++)
        if (group_of((fn)f) == g)
            cr_assert_gt(covered[f], 0, "%s has no row", fn_names[f]);
    /* the save rows wrote nothing */
    char path[600];
    path_in(&w, "saved.bin", path, sizeof path);
    cr_assert_neq(access(path, F_OK), 0, "a failed save left %s", path);
    fprintf(stderr, "bad_input: %zu rows passed\n", count);
    world_release(&w);
}

Test(bad_input, context_and_device_calls, .timeout = 600) { run_group(G_CONTEXT); }
Test(bad_input, batchnorm_functional_calls, .timeout = 600) { run_group(G_BN); }
Test(bad_input, batchnorm_layer_calls, .timeout = 600) { run_group(G_BN_LAYER); }
Test(bad_input, featurenorm_functional_calls, .timeout = 600) { run_group(G_FN); }
Test(bad_input, featurenorm_layer_calls, .timeout = 600) { run_group(G_FN_LAYER); }

Test(bad_input, the_table_covers_every_function)
{
    int covered[F_COUNT] = {0};
    for (size_t i = 0; i < ARRAY_LEN(rows); i++)
        covered[rows[i].f]++;
    for (int f = 0; f < F_COUNT; f++)
        cr_assert_gt(covered[f], 0, "%s has no row", fn_names[f]);
    fprintf(stderr, "bad_input: %zu rows over %d functions that return a status\n",
            ARRAY_LEN(rows), (int)F_COUNT);
}

/* ---- the functions that return no status ------------------------------------------------------ */

Test(bad_input, functions_without_a_status_accept_null_and_out_of_range_values)
{
    /* names and descriptions: unknown values have a name that says so */
    cr_assert_str_eq(clnorm_status_name((clnorm_status)99), "CLNORM_UNKNOWN_STATUS");
    cr_assert_str_eq(clnorm_status_name((clnorm_status)-1), "CLNORM_UNKNOWN_STATUS");
    cr_assert_str_eq(clnorm_status_description((clnorm_status)99), "unknown status value");
    cr_assert_str_eq(clnorm_cl_error_name(-12345), "CL_UNKNOWN_ERROR");
    cr_assert_str_eq(clnorm_cl_error_name(1), "CL_UNKNOWN_ERROR");
    /* defaults and releases take NULL */
    clnorm_default_settings(NULL);
    clnorm_bn_default_config(NULL);
    clnorm_batchnorm_default_options(NULL, 3);
    clnorm_layernorm_default_options(NULL, 3);
    clnorm_rmsnorm_default_options(NULL, 3);
    clnorm_groupnorm_default_options(NULL, 1, 3);
    clnorm_instancenorm_default_options(NULL, 3);
    clnorm_context_release(NULL);
    clnorm_batchnorm_release(NULL);
    clnorm_featurenorm_release(NULL);
    /* getters on NULL: NULL handles, "" strings, the documented fallbacks */
    cr_assert_null(clnorm_context_cl_context(NULL));
    cr_assert_null(clnorm_context_device(NULL));
    cr_assert_null(clnorm_context_queue(NULL));
    cr_assert_str_eq(clnorm_last_error(NULL), "CLNORM_INVALID_ARGUMENT: context is NULL");
    cr_assert_eq(clnorm_last_cl_error(NULL), CL_SUCCESS);
    cr_assert_str_eq(clnorm_cache_dir(NULL), "");
    cr_assert_eq(clnorm_batchnorm_mode(NULL), CLNORM_TRAINING);
    cr_assert_eq(clnorm_batchnorm_num_batches_tracked(NULL), -1);
    cr_assert_eq(clnorm_featurenorm_mode(NULL), CLNORM_TRAINING);
    cr_assert_null(clnorm_param_source(NULL, "vector_width"));
    cr_assert_null(clnorm_param_name(SIZE_MAX));
    cr_assert_str_eq(clnorm_param_file(NULL), "");
    /* a call that fails clears nothing it should not: the last error of a context is "" after a
     * success and the failure's message after a failure */
    clnorm_context *ctx = test_context(NULL);
    cr_assert_str_eq(clnorm_last_error(ctx), "");
    cr_assert_eq(clnorm_warm_up(ctx), CLNORM_OK);
    cr_assert_str_eq(clnorm_last_error(ctx), "");
    cr_assert_eq(clnorm_set_param(ctx, "vector_width", 3), CLNORM_INVALID_ARGUMENT);
    cr_assert(strstr(clnorm_last_error(ctx), "vector_width"));
    cr_assert_eq(clnorm_last_cl_error(ctx), CL_SUCCESS);
    long v = 0;
    cr_assert_eq(clnorm_get_param(ctx, "vector_width", &v), CLNORM_OK);
    cr_assert_str_eq(clnorm_last_error(ctx), "");
    cr_assert_null(clnorm_param_source(ctx, NULL));
    cr_assert_null(clnorm_param_source(ctx, "no_such_parameter"));
    cr_assert_not_null(clnorm_param_source(ctx, "vector_width"));
    clnorm_context_release(ctx);
}

/* ---- valid calls on sub-buffers ---------------------------------------------------------------- */

/* A buffer of the sub-buffer tests: a sub-buffer at `offset` inside a parent of canary words, or
 * a plain buffer (offset 0, no parent). */
typedef struct placed {
    cl_mem parent, mem;
    size_t offset, bytes, parent_bytes;
} placed;

static void place(clnorm_context *ctx, size_t align, size_t offset, size_t count,
                  const float *data, placed *p)
{
    memset(p, 0, sizeof *p);
    p->bytes = count * sizeof(float);
    p->offset = offset;
    cl_int err;
    if (!offset) { /* plain */
        p->mem = test_buffer(ctx, count, data);
        return;
    }
    p->parent_bytes = offset + (p->bytes + align - 1) / align * align + align;
    uint32_t *fill = malloc(p->parent_bytes);
    for (size_t i = 0; i < p->parent_bytes / 4; i++)
        fill[i] = canary_word(i);
    memcpy((unsigned char *)fill + offset, data, p->bytes);
    p->parent = clCreateBuffer(clnorm_context_cl_context(ctx),
                               CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, p->parent_bytes, fill,
                               &err);
    cr_assert_eq(err, CL_SUCCESS);
    free(fill);
    cl_buffer_region region = {offset, p->bytes};
    p->mem = clCreateSubBuffer(p->parent, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, &region,
                               &err);
    cr_assert_eq(err, CL_SUCCESS, "clCreateSubBuffer at %zu: %s", offset,
                 clnorm_cl_error_name(err));
}

/* The canary words around a placed buffer are intact. */
static void assert_canaries(clnorm_context *ctx, const placed *p, const char *what, int index)
{
    if (!p->parent)
        return;
    uint32_t *all = malloc(p->parent_bytes);
    CL_OK(clEnqueueReadBuffer(clnorm_context_queue(ctx), p->parent, CL_TRUE, 0, p->parent_bytes,
                              all, 0, NULL, NULL));
    for (size_t i = 0; i < p->parent_bytes / 4; i++) {
        if (i * 4 >= p->offset && i * 4 < p->offset + p->bytes)
            continue;
        cr_assert_eq(all[i], canary_word(i),
                     "%s: buffer %d: the canary word %zu %s the buffer was overwrite (0x%08x)",
                     what, index, i, i * 4 < p->offset ? "before" : "after", all[i]);
    }
    free(all);
}

static void release_placed(placed *p)
{
    clReleaseMemObject(p->mem);
    if (p->parent)
        clReleaseMemObject(p->parent);
}

#define MAX_OPERANDS 12

/* One valid call over `count` buffers of the given sizes; kind[i] says what the buffer holds
 * ('x' data, 'p' positive values such as variances and invstd, 'o' an output). */
typedef struct valid_op {
    const char *name;
    int count;
    size_t floats[MAX_OPERANDS];
    const char *kinds;
    void (*run)(clnorm_context *ctx, cl_mem *m);
    /* a float64 check of the output (NULL: only compared with the plain-buffer run) */
    void (*check)(const float *const *host);
} valid_op;

static const clnorm_shape sub_bn_cf = {3, 5, 2, {7, 7, 0}, CLNORM_CHANNELS_FIRST};
static const clnorm_shape sub_bn_cl = {3, 5, 2, {7, 7, 0}, CLNORM_CHANNELS_LAST};
static const clnorm_shape sub_gn_cl = {2, 6, 2, {3, 5, 0}, CLNORM_CHANNELS_LAST};
static const clnorm_shape sub_gn_cf = {2, 6, 2, {3, 5, 0}, CLNORM_CHANNELS_FIRST};
enum { SUB_T = 735, SUB_C = 5, SUB_LN_R = 5, SUB_LN_D = 37, SUB_GN_T = 180 };

static void op_bn_train(clnorm_context *ctx, const clnorm_shape *s, cl_mem *m)
{
    clnorm_bn_config cfg;
    clnorm_bn_default_config(&cfg);
    clnorm_bn_buffers b = {.x = m[0], .y = m[1], .gamma = m[2], .beta = m[3],
                           .running_mean = m[4], .running_var = m[5], .save_mean = m[6],
                           .save_invstd = m[7]};
    CLNORM_OK_(ctx, clnorm_bn_forward_training(ctx, s, &cfg, &b, 0, NULL, NULL));
}
static void op_bn_train_cf(clnorm_context *ctx, cl_mem *m) { op_bn_train(ctx, &sub_bn_cf, m); }
static void op_bn_train_cl(clnorm_context *ctx, cl_mem *m) { op_bn_train(ctx, &sub_bn_cl, m); }

static void check_bn_train(const clnorm_shape *s, const float *const *h)
{
    double mean[SUB_C], var[SUB_C], *y = malloc(SUB_T * sizeof(double));
    ref_stats(s, h[0], mean, var, NULL);
    ref_forward(s, h[0], NULL, h[2], h[3], mean, var, 1e-5, false, y);
    for (size_t i = 0; i < SUB_T; i++)
        cr_assert(fabs(h[1][i] - y[i]) <= 1e-4 * (1 + fabs(y[i])), "y[%zu] = %g, reference %g",
                  i, (double)h[1][i], y[i]);
    for (int c = 0; c < SUB_C; c++)
        cr_assert(fabs(h[6][c] - mean[c]) <= 1e-5 * (1 + fabs(mean[c])), "save_mean[%d]", c);
    free(y);
}
static void check_bn_train_cf(const float *const *h) { check_bn_train(&sub_bn_cf, h); }
static void check_bn_train_cl(const float *const *h) { check_bn_train(&sub_bn_cl, h); }

static void op_bn_infer_cl(clnorm_context *ctx, cl_mem *m)
{
    clnorm_bn_config cfg;
    clnorm_bn_default_config(&cfg);
    cfg.activation = CLNORM_ACTIVATION_RELU;
    clnorm_bn_buffers b = {.x = m[0], .y = m[1], .residual = m[2], .gamma = m[3], .beta = m[4],
                           .running_mean = m[5], .running_var = m[6]};
    CLNORM_OK_(ctx, clnorm_bn_forward_inference(ctx, &sub_bn_cl, &cfg, &b, 0, NULL, NULL));
}

static void op_bn_backward(clnorm_context *ctx, const clnorm_shape *s, int relu, cl_mem *m)
{
    clnorm_bn_config cfg;
    clnorm_bn_default_config(&cfg);
    cfg.activation = relu ? CLNORM_ACTIVATION_RELU : CLNORM_ACTIVATION_NONE;
    clnorm_bn_grad_buffers g = {.x = m[0], .dy = m[1], .y = m[2], .gamma = m[3], .mean = m[4],
                                .invstd = m[5], .dx = m[6], .dgamma = m[7], .dbeta = m[8],
                                .dresidual = relu ? m[9] : NULL};
    CLNORM_OK_(ctx, clnorm_bn_backward(ctx, s, &cfg, &g, 0, NULL, NULL));
}
static void op_bn_backward_cf(clnorm_context *ctx, cl_mem *m) { op_bn_backward(ctx, &sub_bn_cf, 0, m); }
static void op_bn_backward_cl(clnorm_context *ctx, cl_mem *m) { op_bn_backward(ctx, &sub_bn_cl, 1, m); }

static void check_bn_backward_cf(const float *const *h)
{
    double mean[SUB_C], invstd[SUB_C], dg[SUB_C], db[SUB_C];
    double *dx = malloc(SUB_T * sizeof(double));
    for (int c = 0; c < SUB_C; c++) {
        mean[c] = h[4][c];
        invstd[c] = h[5][c];
    }
    ref_backward(&sub_bn_cf, h[0], h[1], NULL, h[3], mean, invstd, false, dx, dg, db);
    for (size_t i = 0; i < SUB_T; i++)
        cr_assert(fabs(h[6][i] - dx[i]) <= 1e-3 * (1 + fabs(dx[i])), "dx[%zu] = %g, reference %g",
                  i, (double)h[6][i], dx[i]);
    for (int c = 0; c < SUB_C; c++)
        cr_assert(fabs(h[8][c] - db[c]) <= 1e-3 * (1 + fabs(db[c])), "dbeta[%d]", c);
    free(dx);
}

static void op_ln_forward(clnorm_context *ctx, cl_mem *m)
{
    clnorm_norm_buffers b = {.x = m[0], .residual = m[1], .h = m[2], .weight = m[3],
                             .bias = m[4], .y = m[5], .mean = m[6], .rstd = m[7]};
    CLNORM_OK_(ctx, clnorm_layernorm_forward(ctx, SUB_LN_R, SUB_LN_D, 1e-5, &b, 0, NULL, NULL));
}

static void check_ln_forward(const float *const *h)
{
    for (int r = 0; r < SUB_LN_R; r++) {
        double v[SUB_LN_D], mean = 0, var = 0;
        for (int j = 0; j < SUB_LN_D; j++) {
            v[j] = (double)(h[0][r * SUB_LN_D + j] + h[1][r * SUB_LN_D + j]);
            cr_assert_eq(h[2][r * SUB_LN_D + j], (float)v[j], "h[%d][%d]", r, j);
            mean += v[j] / SUB_LN_D;
        }
        for (int j = 0; j < SUB_LN_D; j++)
            var += (v[j] - mean) * (v[j] - mean) / SUB_LN_D;
        const double rstd = 1 / sqrt(var + 1e-5);
        for (int j = 0; j < SUB_LN_D; j++) {
            const double y = (v[j] - mean) * rstd * h[3][j] + h[4][j];
            cr_assert(fabs(h[5][r * SUB_LN_D + j] - y) <= 1e-4 * (1 + fabs(y)),
                      "y[%d][%d] = %g, reference %g", r, j, (double)h[5][r * SUB_LN_D + j], y);
        }
        cr_assert(fabs(h[6][r] - mean) <= 1e-5 * (1 + fabs(mean)), "mean[%d]", r);
        cr_assert(fabs(h[7][r] - rstd) <= 1e-4 * rstd, "rstd[%d]", r);
    }
}

static void op_ln_backward(clnorm_context *ctx, cl_mem *m)
{
    clnorm_norm_grad_buffers g = {.x = m[0], .dy = m[1], .weight = m[2], .mean = m[3],
                                  .rstd = m[4], .dh_in = m[5], .dx = m[6], .dweight = m[7],
                                  .dbias = m[8]};
    CLNORM_OK_(ctx, clnorm_layernorm_backward(ctx, SUB_LN_R, SUB_LN_D, &g, 0, NULL, NULL));
}

static void op_rms_forward(clnorm_context *ctx, cl_mem *m)
{
    clnorm_norm_buffers b = {.x = m[0], .weight = m[1], .y = m[2], .rstd = m[3]};
    CLNORM_OK_(ctx, clnorm_rmsnorm_forward(ctx, SUB_LN_R, SUB_LN_D, 1e-6, &b, 0, NULL, NULL));
}

static void op_gn_forward_cl(clnorm_context *ctx, cl_mem *m)
{
    clnorm_norm_buffers b = {.x = m[0], .weight = m[1], .bias = m[2], .y = m[3], .mean = m[4],
                             .rstd = m[5]};
    CLNORM_OK_(ctx, clnorm_groupnorm_forward(ctx, &sub_gn_cl, 3, 1e-5, &b, 0, NULL, NULL));
}

static void op_gn_backward_cf(clnorm_context *ctx, cl_mem *m)
{
    clnorm_norm_grad_buffers g = {.x = m[0], .dy = m[1], .weight = m[2], .mean = m[3],
                                  .rstd = m[4], .dx = m[5], .dweight = m[6], .dbias = m[7]};
    CLNORM_OK_(ctx, clnorm_groupnorm_backward(ctx, &sub_gn_cf, 3, &g, 0, NULL, NULL));
}

static const valid_op valid_ops[] = {
    {"batch norm training forward, channels-first (3, 5, 7x7)", 8,
     {SUB_T, SUB_T, SUB_C, SUB_C, SUB_C, SUB_C, SUB_C, SUB_C}, "xoxxxpoo", op_bn_train_cf,
     check_bn_train_cf},
    {"batch norm training forward, channels-last (3, 7x7, 5)", 8,
     {SUB_T, SUB_T, SUB_C, SUB_C, SUB_C, SUB_C, SUB_C, SUB_C}, "xoxxxpoo", op_bn_train_cl,
     check_bn_train_cl},
    {"batch norm inference + residual + ReLU, channels-last", 7,
     {SUB_T, SUB_T, SUB_T, SUB_C, SUB_C, SUB_C, SUB_C}, "xoxxxxp", op_bn_infer_cl, NULL},
    {"batch norm backward, channels-first", 9,
     {SUB_T, SUB_T, SUB_T, SUB_C, SUB_C, SUB_C, SUB_T, SUB_C, SUB_C}, "xxxxxpooo",
     op_bn_backward_cf, check_bn_backward_cf},
    {"batch norm backward with ReLU and dresidual, channels-last", 10,
     {SUB_T, SUB_T, SUB_T, SUB_C, SUB_C, SUB_C, SUB_T, SUB_C, SUB_C, SUB_T}, "xxxxxpoooo",
     op_bn_backward_cl, NULL},
    {"LayerNorm forward with residual, 5 x 37", 8,
     {SUB_LN_R * SUB_LN_D, SUB_LN_R * SUB_LN_D, SUB_LN_R * SUB_LN_D, SUB_LN_D, SUB_LN_D,
      SUB_LN_R * SUB_LN_D, SUB_LN_R, SUB_LN_R},
     "xxoxxooo", op_ln_forward, check_ln_forward},
    {"LayerNorm backward, 5 x 37", 9,
     {SUB_LN_R * SUB_LN_D, SUB_LN_R * SUB_LN_D, SUB_LN_D, SUB_LN_R, SUB_LN_R,
      SUB_LN_R * SUB_LN_D, SUB_LN_R * SUB_LN_D, SUB_LN_D, SUB_LN_D},
     "xxxxpxooo", op_ln_backward, NULL},
    {"RMSNorm forward, 5 x 37", 4, {SUB_LN_R * SUB_LN_D, SUB_LN_D, SUB_LN_R * SUB_LN_D, SUB_LN_R},
     "xxoo", op_rms_forward, NULL},
    {"GroupNorm forward, channels-last (2, 3x5, 6), 3 groups", 6,
     {SUB_GN_T, 6, 6, SUB_GN_T, 6, 6}, "xxxooo", op_gn_forward_cl, NULL},
    {"GroupNorm backward, channels-first", 8, {SUB_GN_T, SUB_GN_T, 6, 6, 6, SUB_GN_T, 6, 6},
     "xxxxpooo", op_gn_backward_cf, NULL},
};

/* Runs op on buffers at `offset` (0: plain buffers) from the same host data; returns the host
 * copies of every buffer after the call. */
static float **run_placed(clnorm_context *ctx, size_t align, size_t offset, const valid_op *op,
                          float *const *data)
{
    placed p[MAX_OPERANDS];
    cl_mem m[MAX_OPERANDS];
    for (int i = 0; i < op->count; i++) {
        place(ctx, align, offset, op->floats[i], data[i], &p[i]);
        m[i] = p[i].mem;
    }
    op->run(ctx, m);
    CL_OK(clFinish(clnorm_context_queue(ctx)));
    float **out = malloc(op->count * sizeof *out);
    for (int i = 0; i < op->count; i++) {
        out[i] = malloc(op->floats[i] * sizeof(float));
        test_read(ctx, p[i].mem, op->floats[i], out[i]);
        assert_canaries(ctx, &p[i], op->name, i);
        release_placed(&p[i]);
    }
    return out;
}

Test(subbuffers, valid_calls_at_the_smallest_offset_match_plain_buffers_and_keep_canaries,
     .timeout = 600)
{
    clnorm_context *ctx = test_context(NULL);
    cl_uint align_bits = 0;
    CL_OK(clGetDeviceInfo(clnorm_context_device(ctx), CL_DEVICE_MEM_BASE_ADDR_ALIGN,
                          sizeof align_bits, &align_bits, NULL));
    const size_t align = align_bits / 8 < sizeof(float) ? sizeof(float) : align_bits / 8;
    long vector_width = 1;
    CLNORM_OK_(ctx, clnorm_get_param(ctx, "vector_width", &vector_width));
    const size_t align_floats = align / sizeof(float);
    clnorm_device_info info;
    CLNORM_OK_(ctx, clnorm_context_device_info(ctx, &info));
    /* Some devices accept sub-buffers at offsets below the alignment they state (Oclgrind
     * does): then one and three floats in, off every vector grid, are tried too. */
    int finer = 0;
    {
        cl_int err;
        cl_mem scratch = clCreateBuffer(clnorm_context_cl_context(ctx), CL_MEM_READ_WRITE,
                                        4 * align, NULL, &err);
        cr_assert_eq(err, CL_SUCCESS);
        cl_buffer_region region = {sizeof(float), align};
        cl_mem sub = clCreateSubBuffer(scratch, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION,
                                       &region, &err);
        finer = err == CL_SUCCESS && align > sizeof(float);
        if (sub)
            clReleaseMemObject(sub);
        clReleaseMemObject(scratch);
    }
    fprintf(stderr,
            "subbuffers: %s: CL_DEVICE_MEM_BASE_ADDR_ALIGN %u bits = %zu floats, vector_width "
            "%ld: %s\n",
            info.name, align_bits, align_floats, vector_width,
            finer ? "the device also accepts sub-buffers 1 and 3 floats in: tried (off the vector "
                    "grid)"
            : align_floats % (size_t)vector_width
                ? "sub-buffers at odd multiples of the alignment start off the vector grid"
                : "every sub-buffer the device allows starts on the vector grid (offsets off "
                  "the grid cannot be made here)");
    /* offsets: the smallest the device allows, odd multiples of it, and finer ones if it takes
     * them (place() needs at least one float of canary before the buffer) */
    const size_t offsets[] = {align, 3 * align, 5 * align, sizeof(float), 3 * sizeof(float)};
    const size_t offset_count = finer ? 5 : 3;
    for (size_t o = 0; o < ARRAY_LEN(valid_ops); o++) {
        const valid_op *op = &valid_ops[o];
        rng r = {o * 7919 + 17};
        float *data[MAX_OPERANDS];
        for (int i = 0; i < op->count; i++) {
            data[i] = malloc(op->floats[i] * sizeof(float));
            for (size_t k = 0; k < op->floats[i]; k++)
                data[i][k] = op->kinds[i] == 'p'   ? (float)(0.5 + rng_uniform(&r))
                             : op->kinds[i] == 'o' ? NAN
                                                   : (float)(2 * rng_normal(&r) + 0.5);
        }
        float **plain = run_placed(ctx, align, 0, op, data);
        if (op->check)
            op->check((const float *const *)plain);
        for (size_t k = 0; k < offset_count; k++) {
            float **sub = run_placed(ctx, align, offsets[k], op, data);
            for (int i = 0; i < op->count; i++) {
                cr_assert(!memcmp(sub[i], plain[i], op->floats[i] * sizeof(float)),
                          "%s: buffer %d at offset %zu differs from the plain buffer's result",
                          op->name, i, offsets[k]);
                free(sub[i]);
            }
            free(sub);
        }
        for (int i = 0; i < op->count; i++) {
            free(plain[i]);
            free(data[i]);
        }
        free(plain);
    }
    clnorm_context_release(ctx);
}

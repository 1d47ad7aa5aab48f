/* The layer objects of the feature-axis norms (clnorm_featurenorm). LayerNorm, RMSNorm, GroupNorm
 * and InstanceNorm share one object, one forward core, one backward core and one file format; a
 * kind is a row of a table plus the functional call (groupnorm.c) that its forward and backward
 * run. As in batchnorm_layer.c, the functional calls take the context lock themselves (it is not
 * recursive), so the layer calls them without holding it and locks only to record its own
 * errors. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

enum { FLAG_WEIGHT = 1, FLAG_BIAS = 2, FLAG_RUNNING = 4 };

#define FILE_VERSION 1u
#define FILE_HEADER_SIZE 48 /* magic, version, flags, size, groups, eps, momentum */
#define FILE_HASH_SIZE 8

/* The per-feature buffers. The first FILE_PARAMS are a file's arrays, in file order. */
enum { P_WEIGHT, P_BIAS, P_RUNNING_MEAN, P_RUNNING_VAR, P_DWEIGHT, P_DBIAS, PARAM_COUNT };
#define FILE_PARAMS 4

static const struct param_info {
    const char *name;
    float init;
    unsigned flag; /* the buffer exists when the layer has this flag */
} param_infos[PARAM_COUNT] = {
    {"weight", 1.0f, FLAG_WEIGHT},        {"bias", 0.0f, FLAG_BIAS},
    {"running_mean", 0.0f, FLAG_RUNNING}, {"running_var", 1.0f, FLAG_RUNNING},
    {"dweight", 0.0f, FLAG_WEIGHT},       {"dbias", 0.0f, FLAG_BIAS},
};

static const struct kind_info {
    const char *name;
    char magic[9];
    const char *calls; /* the suffix of the forward and backward calls that suit the kind */
} kind_infos[] = {
    [CLNORM_LAYERNORM] = {"layernorm", "CLNORMLN", "rows"},
    [CLNORM_RMSNORM] = {"rmsnorm", "CLNORMRM", "rows"},
    [CLNORM_GROUPNORM] = {"groupnorm", "CLNORMGN", "groups"},
    [CLNORM_INSTANCENORM] = {"instancenorm", "CLNORMIN", "instances"},
};

/* What a layer is, as the options (and a loaded file's eps and momentum) make it. */
typedef struct layer_spec {
    clnorm_featurenorm_kind kind;
    size_t size;   /* D or C: the length of every parameter buffer */
    size_t groups; /* statistics per sample: 1, G, or C */
    double eps, momentum;
    unsigned flags;
} layer_spec;

/* What the last successful forward left for its backward. */
typedef enum saved_state {
    SAVED_NONE = 0,  /* no forward yet */
    SAVED_INPUT = 1, /* mean and rstd of the input, in the saved buffers */
    SAVED_FROZEN = 2 /* InstanceNorm in evaluation: the running statistics */
} saved_state;

struct clnorm_featurenorm {
    clnorm_context *ctx;
    layer_spec spec;
    clnorm_mode mode;
    cl_mem param[PARAM_COUNT]; /* NULL where the flags leave a buffer out */
    cl_mem mean, rstd;         /* saved statistics, `capacity` floats each; no mean for RMSNorm */
    size_t capacity;
    saved_state state;
    size_t saved_count; /* statistics the last forward saved */
    clnorm_shape last;  /* the last forward's shape (rows x D as (N, C) for LayerNorm, RMSNorm) */
};

/* ---- errors without holding the lock --------------------------------------------------------- */

static void layer_begin(clnorm_context *ctx)
{
    context_begin_call(ctx);
    context_unlock(ctx);
}

static clnorm_status fail(clnorm_context *ctx, clnorm_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static clnorm_status fail(clnorm_context *ctx, clnorm_status status, const char *fmt, ...)
{
    char message[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    context_lock(ctx);
    set_error(ctx, status, "%s", message);
    context_unlock(ctx);
    return status;
}

static clnorm_status fail_cl(clnorm_context *ctx, cl_int code, const char *what)
{
    context_lock(ctx);
    clnorm_status status = set_cl_error(ctx, code, what);
    context_unlock(ctx);
    return status;
}

static const char *kind_name(const clnorm_featurenorm *layer)
{
    return kind_infos[layer->spec.kind].name;
}

static const char *mode_name(clnorm_mode mode)
{
    return mode == CLNORM_TRAINING ? "CLNORM_TRAINING" : "CLNORM_EVALUATION";
}

/* ---- creation and release -------------------------------------------------------------------- */

void clnorm_layernorm_default_options(clnorm_layernorm_options *options, size_t normalized_size)
{
    if (!options)
        return;
    memset(options, 0, sizeof *options);
    options->normalized_size = normalized_size;
    options->eps = CLNORM_DEFAULT_EPS;
    options->elementwise_affine = 1;
    options->bias = 1;
}

void clnorm_rmsnorm_default_options(clnorm_rmsnorm_options *options, size_t normalized_size)
{
    if (!options)
        return;
    memset(options, 0, sizeof *options);
    options->normalized_size = normalized_size;
    options->eps = CLNORM_RMS_DEFAULT_EPS;
    options->elementwise_affine = 1;
}

void clnorm_groupnorm_default_options(clnorm_groupnorm_options *options, size_t num_groups,
                                      size_t num_channels)
{
    if (!options)
        return;
    memset(options, 0, sizeof *options);
    options->num_groups = num_groups;
    options->num_channels = num_channels;
    options->eps = CLNORM_DEFAULT_EPS;
    options->affine = 1;
}

void clnorm_instancenorm_default_options(clnorm_instancenorm_options *options,
                                         size_t num_features)
{
    if (!options)
        return;
    memset(options, 0, sizeof *options);
    options->num_features = num_features;
    options->eps = CLNORM_DEFAULT_EPS;
    options->momentum = 0.1;
}

/* A device buffer of `count` floats (at least one), all `value`. Copied from the host at
 * creation: no queue work to wait for, and Oclgrind's uninitialised-value check, which does not
 * see clEnqueueFillBuffer, sees it. */
static clnorm_status new_buffer(clnorm_context *ctx, size_t count, float value, cl_mem *out)
{
    count = count ? count : 1;
    *out = NULL;
    float *host = malloc(count * sizeof(float));
    if (!host)
        return fail(ctx, CLNORM_OUT_OF_HOST_MEMORY, "no host memory for %zu floats", count);
    for (size_t i = 0; i < count; i++)
        host[i] = value;
    cl_int err = CL_SUCCESS;
    *out = clCreateBuffer(ctx->cl_ctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR,
                          count * sizeof(float), host, &err);
    free(host);
    if (err == CL_SUCCESS)
        return CLNORM_OK;
    *out = NULL;
    return fail_cl(ctx, err, "clCreateBuffer(feature-norm layer buffer)");
}

static void release_mem(cl_mem *mem)
{
    if (*mem)
        clReleaseMemObject(*mem);
    *mem = NULL;
}

static void release_layer(clnorm_featurenorm *layer)
{
    for (size_t p = 0; p < PARAM_COUNT; p++)
        release_mem(&layer->param[p]);
    release_mem(&layer->mean);
    release_mem(&layer->rstd);
    free(layer);
}

/* The option checks every kind shares; `size_name` names the size's option field. */
static clnorm_status check_spec(clnorm_context *ctx, const layer_spec *s, const char *size_name)
{
    if (s->size == 0)
        return fail(ctx, CLNORM_INVALID_ARGUMENT, "options->%s is 0", size_name);
    if (s->size > ctx->dev.max_alloc_bytes / sizeof(float))
        return fail(ctx, CLNORM_UNSUPPORTED,
                    "options->%s = %zu: a buffer of that many floats exceeds the device's largest "
                    "allocation (%llu bytes)",
                    size_name, s->size, (unsigned long long)ctx->dev.max_alloc_bytes);
    if (s->groups == 0)
        return fail(ctx, CLNORM_INVALID_ARGUMENT, "options->num_groups is 0");
    if (s->size % s->groups != 0)
        return fail(ctx, CLNORM_INVALID_ARGUMENT,
                    "options->num_channels = %zu is not divisible by options->num_groups = %zu",
                    s->size, s->groups);
    if (!isfinite(s->eps) || s->eps < 0)
        return fail(ctx, CLNORM_INVALID_ARGUMENT, "options->eps = %g must be finite and >= 0",
                    s->eps);
    if (!(s->momentum >= 0.0 && s->momentum <= 1.0))
        return fail(ctx, CLNORM_INVALID_ARGUMENT, "options->momentum = %g is outside [0, 1]",
                    s->momentum);
    return CLNORM_OK;
}

/* Every create: `have_options` says whether the caller's options pointer (read into s) was set. */
static clnorm_status create_layer(clnorm_context *ctx, bool have_options, const layer_spec *s,
                                  const char *size_name, clnorm_featurenorm **out)
{
    if (out)
        *out = NULL;
    if (!ctx)
        return CLNORM_INVALID_ARGUMENT;
    layer_begin(ctx);
    if (!out)
        return fail(ctx, CLNORM_INVALID_ARGUMENT, "out is NULL");
    if (!have_options)
        return fail(ctx, CLNORM_INVALID_ARGUMENT, "options is NULL");
    clnorm_status status = check_spec(ctx, s, size_name);
    if (status != CLNORM_OK)
        return status;
    clnorm_featurenorm *layer = calloc(1, sizeof *layer);
    if (!layer)
        return fail(ctx, CLNORM_OUT_OF_HOST_MEMORY, "no host memory for the layer");
    layer->ctx = ctx;
    layer->spec = *s;
    layer->mode = CLNORM_TRAINING;
    for (size_t p = 0; p < PARAM_COUNT; p++)
        if (s->flags & param_infos[p].flag)
            TRY(new_buffer(ctx, s->size, param_infos[p].init, &layer->param[p]));
    *out = layer;
    return CLNORM_OK;
fail:
    release_layer(layer);
    return status;
}

clnorm_status clnorm_featurenorm_create_layernorm(clnorm_context *ctx,
                                                  const clnorm_layernorm_options *options,
                                                  clnorm_featurenorm **out)
{
    layer_spec s = {.kind = CLNORM_LAYERNORM, .groups = 1};
    if (options) {
        s.size = options->normalized_size;
        s.eps = options->eps;
        /* as nn.LayerNorm: a bias only with elementwise_affine */
        s.flags = options->elementwise_affine
                      ? FLAG_WEIGHT | (options->bias ? (unsigned)FLAG_BIAS : 0u)
                      : 0u;
    }
    return create_layer(ctx, options != NULL, &s, "normalized_size", out);
}

clnorm_status clnorm_featurenorm_create_rmsnorm(clnorm_context *ctx,
                                                const clnorm_rmsnorm_options *options,
                                                clnorm_featurenorm **out)
{
    layer_spec s = {.kind = CLNORM_RMSNORM, .groups = 1};
    if (options) {
        s.size = options->normalized_size;
        s.eps = options->eps;
        s.flags = options->elementwise_affine ? FLAG_WEIGHT : 0u;
    }
    return create_layer(ctx, options != NULL, &s, "normalized_size", out);
}

clnorm_status clnorm_featurenorm_create_groupnorm(clnorm_context *ctx,
                                                  const clnorm_groupnorm_options *options,
                                                  clnorm_featurenorm **out)
{
    layer_spec s = {.kind = CLNORM_GROUPNORM, .groups = 1};
    if (options) {
        s.size = options->num_channels;
        s.groups = options->num_groups;
        s.eps = options->eps;
        s.flags = options->affine ? FLAG_WEIGHT | FLAG_BIAS : 0u;
    }
    return create_layer(ctx, options != NULL, &s, "num_channels", out);
}

clnorm_status clnorm_featurenorm_create_instancenorm(clnorm_context *ctx,
                                                     const clnorm_instancenorm_options *options,
                                                     clnorm_featurenorm **out)
{
    layer_spec s = {.kind = CLNORM_INSTANCENORM, .groups = 1};
    if (options) {
        s.size = options->num_features;
        s.groups = options->num_features ? options->num_features : 1;
        s.eps = options->eps;
        s.momentum = options->momentum;
        s.flags = (options->affine ? FLAG_WEIGHT | FLAG_BIAS : 0u) |
                  (options->track_running_stats ? (unsigned)FLAG_RUNNING : 0u);
    }
    return create_layer(ctx, options != NULL, &s, "num_features", out);
}

void clnorm_featurenorm_release(clnorm_featurenorm *layer)
{
    if (!layer)
        return;
    clFinish(layer->ctx->queue); /* work in flight may still use the buffers */
    release_layer(layer);
}

/* ---- mode and accessors ---------------------------------------------------------------------- */

clnorm_status clnorm_featurenorm_set_mode(clnorm_featurenorm *layer, clnorm_mode mode)
{
    if (!layer)
        return CLNORM_INVALID_ARGUMENT;
    layer_begin(layer->ctx);
    if (mode != CLNORM_TRAINING && mode != CLNORM_EVALUATION)
        return fail(layer->ctx, CLNORM_INVALID_ARGUMENT,
                    "mode = %d is not CLNORM_TRAINING or CLNORM_EVALUATION", (int)mode);
    layer->mode = mode;
    return CLNORM_OK;
}

clnorm_mode clnorm_featurenorm_mode(const clnorm_featurenorm *layer)
{
    return layer ? layer->mode : CLNORM_TRAINING;
}

clnorm_status clnorm_featurenorm_get_info(const clnorm_featurenorm *layer,
                                          clnorm_featurenorm_info *info)
{
    if (!layer)
        return CLNORM_INVALID_ARGUMENT;
    layer_begin(layer->ctx);
    if (!info)
        return fail(layer->ctx, CLNORM_INVALID_ARGUMENT, "info is NULL");
    const layer_spec *s = &layer->spec;
    memset(info, 0, sizeof *info);
    info->kind = s->kind;
    info->mode = layer->mode;
    info->size = s->size;
    info->groups = s->groups;
    info->eps = s->eps;
    info->momentum = s->momentum;
    info->has_weight = (s->flags & FLAG_WEIGHT) != 0;
    info->has_bias = (s->flags & FLAG_BIAS) != 0;
    info->has_running_stats = (s->flags & FLAG_RUNNING) != 0;
    return CLNORM_OK;
}

clnorm_status clnorm_featurenorm_get_buffers(const clnorm_featurenorm *layer,
                                             clnorm_featurenorm_buffers *buffers)
{
    if (!layer)
        return CLNORM_INVALID_ARGUMENT;
    layer_begin(layer->ctx);
    if (!buffers)
        return fail(layer->ctx, CLNORM_INVALID_ARGUMENT, "buffers is NULL");
    buffers->weight = layer->param[P_WEIGHT];
    buffers->bias = layer->param[P_BIAS];
    buffers->dweight = layer->param[P_DWEIGHT];
    buffers->dbias = layer->param[P_DBIAS];
    buffers->running_mean = layer->param[P_RUNNING_MEAN];
    buffers->running_var = layer->param[P_RUNNING_VAR];
    buffers->mean = layer->mean;
    buffers->rstd = layer->rstd;
    buffers->saved_count = layer->state == SAVED_INPUT ? layer->saved_count : 0;
    return CLNORM_OK;
}

/* ---- forward and backward -------------------------------------------------------------------- */

/* The checks every forward and backward starts with, before the functional call's own: a layer,
 * a call that suits its kind (`call` is "forward" or "backward", `calls` the suffix: "rows",
 * "groups", "instances"), the mode the caller expects (InstanceNorm's forward; NULL for the
 * others), and for the tensor calls a shape with the layer's channels (the per-channel buffers
 * would pass the functional call's size check for fewer). */
static clnorm_status check_call(clnorm_featurenorm *layer, cl_event *event, const char *call,
                                const char *calls, const clnorm_mode *expected,
                                const clnorm_shape *shape)
{
    if (event)
        *event = NULL;
    if (!layer)
        return CLNORM_INVALID_ARGUMENT;
    clnorm_context *ctx = layer->ctx;
    layer_begin(ctx);
    const char *own = kind_infos[layer->spec.kind].calls;
    if (strcmp(own, calls) != 0)
        return fail(ctx, CLNORM_INVALID_ARGUMENT,
                    "clnorm_featurenorm_%s_%s does not suit a %s layer: use "
                    "clnorm_featurenorm_%s_%s",
                    call, calls, kind_name(layer), call, own);
    if (expected && *expected != CLNORM_TRAINING && *expected != CLNORM_EVALUATION)
        return fail(ctx, CLNORM_INVALID_ARGUMENT,
                    "expected = %d is not CLNORM_TRAINING or CLNORM_EVALUATION", (int)*expected);
    if (expected && *expected != layer->mode)
        return fail(ctx, CLNORM_WRONG_MODE,
                    "the layer is in %s mode but the caller expected %s (switch with "
                    "clnorm_featurenorm_set_mode)",
                    mode_name(layer->mode), mode_name(*expected));
    if (strcmp(calls, "rows") == 0)
        return CLNORM_OK;
    if (!shape)
        return fail(ctx, CLNORM_INVALID_ARGUMENT, "shape is NULL");
    if (shape->c != layer->spec.size)
        return fail(ctx, CLNORM_INVALID_SHAPE, "shape->c = %zu but the %s layer has %zu channels",
                    shape->c, kind_name(layer), layer->spec.size);
    return CLNORM_OK;
}

static clnorm_shape rows_shape(const clnorm_featurenorm *layer, size_t rows)
{
    clnorm_shape s;
    memset(&s, 0, sizeof s);
    s.n = rows;
    s.c = layer->spec.size;
    s.layout = CLNORM_CHANNELS_FIRST;
    return s;
}

static bool same_shape(const clnorm_shape *a, const clnorm_shape *b)
{
    if (a->n != b->n || a->c != b->c || a->layout != b->layout ||
        a->spatial_rank != b->spatial_rank || a->spatial_rank > CLNORM_MAX_SPATIAL_DIMS)
        return false;
    for (unsigned i = 0; i < a->spatial_rank; i++)
        if (a->spatial[i] != b->spatial[i])
            return false;
    return true;
}

/* Whether the shape is a tensor the device can hold (then N * groups cannot overflow: groups
 * <= C). When it is not, the layer does not grow its buffers: the functional call rejects the
 * shape before it looks at them. C is the layer's own, never 0. */
static bool tensor_fits(const clnorm_context *ctx, const clnorm_shape *shape)
{
    if (shape->spatial_rank > CLNORM_MAX_SPATIAL_DIMS || shape->n > SIZE_MAX / shape->c)
        return false;
    size_t total = shape->n * shape->c;
    for (unsigned i = 0; i < shape->spatial_rank; i++) {
        if (shape->spatial[i] == 0 || total > SIZE_MAX / shape->spatial[i])
            return false;
        total *= shape->spatial[i];
    }
    return total <= ctx->dev.max_alloc_bytes / sizeof(float);
}

/* The functional forward of the layer's kind. */
static clnorm_status run_forward(clnorm_featurenorm *layer, const clnorm_shape *shape,
                                 bool use_input_stats, const clnorm_norm_buffers *b,
                                 cl_uint num_wait, const cl_event *wait, cl_event *event)
{
    clnorm_context *ctx = layer->ctx;
    const layer_spec *s = &layer->spec;
    switch (s->kind) {
    case CLNORM_LAYERNORM:
        return clnorm_layernorm_forward(ctx, shape->n, s->size, s->eps, b, num_wait, wait, event);
    case CLNORM_RMSNORM:
        return clnorm_rmsnorm_forward(ctx, shape->n, s->size, s->eps, b, num_wait, wait, event);
    case CLNORM_GROUPNORM:
        return clnorm_groupnorm_forward(ctx, shape, s->groups, s->eps, b, num_wait, wait, event);
    case CLNORM_INSTANCENORM:
        break;
    }
    /* with running statistics: updated in training, used in evaluation (!use_input_stats) */
    return clnorm_instancenorm_forward(ctx, shape, s->eps, s->momentum, use_input_stats, b,
                                       layer->param[P_RUNNING_MEAN],
                                       layer->param[P_RUNNING_VAR], num_wait, wait, event);
}

/* Every forward. The saved statistics grow (new buffers) when the batch needs more than the
 * layer has; they replace the old ones only when the forward succeeds, so that a failed call
 * leaves the layer as it was. */
static clnorm_status layer_forward(clnorm_featurenorm *layer, const clnorm_shape *shape, cl_mem x,
                                   cl_mem residual, cl_mem h, cl_mem y, cl_uint num_wait,
                                   const cl_event *wait, cl_event *event)
{
    clnorm_context *ctx = layer->ctx;
    const layer_spec *s = &layer->spec;
    const bool rms = s->kind == CLNORM_RMSNORM;
    const bool frozen = s->kind == CLNORM_INSTANCENORM && (s->flags & FLAG_RUNNING) &&
                        layer->mode == CLNORM_EVALUATION;
    const size_t count = shape->n * s->groups; /* used only when the tensor fits */
    cl_mem mean = layer->mean, rstd = layer->rstd;
    clnorm_status status = CLNORM_OK;
    if (!frozen && (count > layer->capacity || !rstd) && tensor_fits(ctx, shape)) {
        mean = rstd = NULL;
        if (!rms)
            TRY(new_buffer(ctx, count, 0.0f, &mean));
        TRY(new_buffer(ctx, count, 0.0f, &rstd));
    }
    clnorm_norm_buffers b = {.x = x,
                             .residual = residual,
                             .h = h,
                             .weight = layer->param[P_WEIGHT],
                             .bias = layer->param[P_BIAS],
                             .y = y,
                             .mean = frozen || rms ? NULL : mean,
                             .rstd = frozen ? NULL : rstd};
    TRY(run_forward(layer, shape, !frozen, &b, num_wait, wait, event));
    if (rstd != layer->rstd) {
        release_mem(&layer->mean);
        release_mem(&layer->rstd);
        layer->mean = mean;
        layer->rstd = rstd;
        layer->capacity = count ? count : 1;
    }
    layer->state = frozen ? SAVED_FROZEN : SAVED_INPUT;
    layer->saved_count = frozen ? 0 : count;
    layer->last = *shape;
    return CLNORM_OK;
fail:
    if (mean != layer->mean && mean)
        clReleaseMemObject(mean);
    if (rstd != layer->rstd && rstd)
        clReleaseMemObject(rstd);
    return status;
}

/* Every backward: the statistics of the last forward, which must have had this shape. */
static clnorm_status layer_backward(clnorm_featurenorm *layer, const clnorm_shape *shape,
                                    cl_mem x, cl_mem dy, cl_mem dh_in, cl_mem dx,
                                    cl_uint num_wait, const cl_event *wait, cl_event *event)
{
    clnorm_context *ctx = layer->ctx;
    const layer_spec *s = &layer->spec;
    if (layer->state == SAVED_NONE)
        return fail(ctx, CLNORM_INVALID_ARGUMENT,
                    "no forward to differentiate: run clnorm_featurenorm_forward_%s before "
                    "clnorm_featurenorm_backward_%s",
                    kind_infos[s->kind].calls, kind_infos[s->kind].calls);
    if (!same_shape(shape, &layer->last))
        return fail(ctx, CLNORM_INVALID_SHAPE,
                    "the backward's shape (N = %zu, C = %zu, spatial rank %u) is not the last "
                    "forward's (N = %zu, C = %zu, spatial rank %u), whose statistics it needs",
                    shape->n, shape->c, shape->spatial_rank, layer->last.n, layer->last.c,
                    layer->last.spatial_rank);
    if (layer->state == SAVED_FROZEN) {
        /* evaluation with running statistics is batch norm in evaluation */
        clnorm_bn_config config;
        clnorm_bn_default_config(&config);
        config.eps = s->eps;
        clnorm_bn_grad_buffers g = {.x = x,
                                    .dy = dy,
                                    .gamma = layer->param[P_WEIGHT],
                                    .mean = layer->param[P_RUNNING_MEAN],
                                    .var = layer->param[P_RUNNING_VAR],
                                    .dx = dx,
                                    .dgamma = layer->param[P_DWEIGHT],
                                    .dbeta = layer->param[P_DBIAS]};
        return clnorm_bn_backward_frozen(ctx, shape, &config, &g, num_wait, wait, event);
    }
    clnorm_norm_grad_buffers g = {.x = x,
                                  .dy = dy,
                                  .weight = layer->param[P_WEIGHT],
                                  .mean = s->kind == CLNORM_RMSNORM ? NULL : layer->mean,
                                  .rstd = layer->rstd,
                                  .dh_in = dh_in,
                                  .dx = dx,
                                  .dweight = layer->param[P_DWEIGHT],
                                  .dbias = layer->param[P_DBIAS]};
    switch (s->kind) {
    case CLNORM_LAYERNORM:
        return clnorm_layernorm_backward(ctx, shape->n, s->size, &g, num_wait, wait, event);
    case CLNORM_RMSNORM:
        return clnorm_rmsnorm_backward(ctx, shape->n, s->size, &g, num_wait, wait, event);
    case CLNORM_GROUPNORM:
        return clnorm_groupnorm_backward(ctx, shape, s->groups, &g, num_wait, wait, event);
    case CLNORM_INSTANCENORM:
        break;
    }
    return clnorm_instancenorm_backward(ctx, shape, &g, num_wait, wait, event);
}

clnorm_status clnorm_featurenorm_forward_rows(clnorm_featurenorm *layer, size_t rows, cl_mem x,
                                              cl_mem residual, cl_mem h, cl_mem y,
                                              cl_uint num_wait, const cl_event *wait_list,
                                              cl_event *event)
{
    const clnorm_status status = check_call(layer, event, "forward", "rows", NULL, NULL);
    if (status != CLNORM_OK)
        return status;
    const clnorm_shape shape = rows_shape(layer, rows);
    return layer_forward(layer, &shape, x, residual, h, y, num_wait, wait_list, event);
}

clnorm_status clnorm_featurenorm_backward_rows(clnorm_featurenorm *layer, size_t rows, cl_mem x,
                                               cl_mem dy, cl_mem dh_in, cl_mem dx,
                                               cl_uint num_wait, const cl_event *wait_list,
                                               cl_event *event)
{
    const clnorm_status status = check_call(layer, event, "backward", "rows", NULL, NULL);
    if (status != CLNORM_OK)
        return status;
    const clnorm_shape shape = rows_shape(layer, rows);
    return layer_backward(layer, &shape, x, dy, dh_in, dx, num_wait, wait_list, event);
}

clnorm_status clnorm_featurenorm_forward_groups(clnorm_featurenorm *layer,
                                                const clnorm_shape *shape, cl_mem x, cl_mem y,
                                                cl_uint num_wait, const cl_event *wait_list,
                                                cl_event *event)
{
    const clnorm_status status = check_call(layer, event, "forward", "groups", NULL, shape);
    return status != CLNORM_OK
               ? status
               : layer_forward(layer, shape, x, NULL, NULL, y, num_wait, wait_list, event);
}

clnorm_status clnorm_featurenorm_backward_groups(clnorm_featurenorm *layer,
                                                 const clnorm_shape *shape, cl_mem x, cl_mem dy,
                                                 cl_mem dx, cl_uint num_wait,
                                                 const cl_event *wait_list, cl_event *event)
{
    const clnorm_status status = check_call(layer, event, "backward", "groups", NULL, shape);
    return status != CLNORM_OK
               ? status
               : layer_backward(layer, shape, x, dy, NULL, dx, num_wait, wait_list, event);
}

clnorm_status clnorm_featurenorm_forward_instances(clnorm_featurenorm *layer, clnorm_mode expected,
                                                   const clnorm_shape *shape, cl_mem x, cl_mem y,
                                                   cl_uint num_wait, const cl_event *wait_list,
                                                   cl_event *event)
{
    const clnorm_status status =
        check_call(layer, event, "forward", "instances", &expected, shape);
    return status != CLNORM_OK
               ? status
               : layer_forward(layer, shape, x, NULL, NULL, y, num_wait, wait_list, event);
}

clnorm_status clnorm_featurenorm_backward_instances(clnorm_featurenorm *layer,
                                                    const clnorm_shape *shape, cl_mem x,
                                                    cl_mem dy, cl_mem dx, cl_uint num_wait,
                                                    const cl_event *wait_list, cl_event *event)
{
    const clnorm_status status = check_call(layer, event, "backward", "instances", NULL, shape);
    return status != CLNORM_OK
               ? status
               : layer_backward(layer, shape, x, dy, NULL, dx, num_wait, wait_list, event);
}

/* ---- the file -------------------------------------------------------------------------------- */

/* Little-endian integers of `bytes` bytes, whatever the host. */
static void put_le(unsigned char *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le(const unsigned char *p, int bytes)
{
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static void put_double(unsigned char *p, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    put_le(p, bits, 8);
}

static double get_double(const unsigned char *p)
{
    const uint64_t bits = get_le(p, 8);
    double v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

/* The layer's file length. The size is the layer's own, so no overflow: its buffers exist. */
static size_t file_size_of(const layer_spec *s)
{
    size_t arrays = 0;
    for (size_t p = 0; p < FILE_PARAMS; p++)
        arrays += (s->flags & param_infos[p].flag) != 0;
    return FILE_HEADER_SIZE + arrays * s->size * sizeof(float) + FILE_HASH_SIZE;
}

/* Serializes the layer: the host copies of its file arrays are read from the device (blocks). */
static clnorm_status encode(clnorm_featurenorm *layer, unsigned char *data)
{
    const layer_spec *s = &layer->spec;
    const size_t bytes = s->size * sizeof(float);
    memcpy(data, kind_infos[s->kind].magic, 8);
    put_le(data + 8, FILE_VERSION, 4);
    put_le(data + 12, s->flags, 4);
    put_le(data + 16, s->size, 8);
    put_le(data + 24, s->groups, 8);
    put_double(data + 32, s->eps);
    put_double(data + 40, s->momentum);
    unsigned char *p = data + FILE_HEADER_SIZE;
    float *host = malloc(bytes);
    if (!host)
        return fail(layer->ctx, CLNORM_OUT_OF_HOST_MEMORY, "no host memory for %zu bytes", bytes);
    /* clFinish first: on an out-of-order queue a read would not wait for earlier kernels */
    cl_int err = clFinish(layer->ctx->queue);
    for (size_t a = 0; a < FILE_PARAMS && err == CL_SUCCESS; a++) {
        if (!layer->param[a])
            continue;
        err = clEnqueueReadBuffer(layer->ctx->queue, layer->param[a], CL_TRUE, 0, bytes, host, 0,
                                  NULL, NULL);
        for (size_t i = 0; i < s->size && err == CL_SUCCESS; i++, p += 4) {
            uint32_t bits;
            memcpy(&bits, &host[i], 4);
            put_le(p, bits, 4);
        }
    }
    free(host);
    if (err != CL_SUCCESS)
        return fail_cl(layer->ctx, err, "clEnqueueReadBuffer(feature-norm layer buffer)");
    put_le(p, hash_bytes(0, data, (size_t)(p - data)), 8);
    return CLNORM_OK;
}

/* Writes a temporary file next to `path` and renames it over `path`: readers never see a
 * partial file. */
static clnorm_status write_atomically(clnorm_context *ctx, const char *path,
                                      const unsigned char *data, size_t size)
{
    char *tmp = malloc(strlen(path) + 8);
    if (!tmp)
        return fail(ctx, CLNORM_OUT_OF_HOST_MEMORY, "no host memory for a file name");
    sprintf(tmp, "%s.XXXXXX", path);
    clnorm_status status = CLNORM_OK;
    const int fd = mkstemp(tmp);
    FILE *f = fd < 0 ? NULL : fdopen(fd, "wb");
    if (!f) {
        status = fail(ctx, CLNORM_IO_ERROR, "cannot create a temporary file next to %s: %s", path,
                      strerror(errno));
        if (fd >= 0) {
            close(fd);
            unlink(tmp);
        }
        free(tmp);
        return status;
    }
    bool ok = fwrite(data, 1, size, f) == size;
    ok = fclose(f) == 0 && ok;
    if (!ok) {
        status = fail(ctx, CLNORM_IO_ERROR, "cannot write %s: %s", tmp, strerror(errno));
    } else {
        chmod(tmp, 0644); /* mkstemp makes the file private; give it the usual permissions */
        if (rename(tmp, path) != 0)
            status = fail(ctx, CLNORM_IO_ERROR, "cannot rename %s to %s: %s", tmp, path,
                          strerror(errno));
    }
    if (status != CLNORM_OK)
        unlink(tmp);
    free(tmp);
    return status;
}

clnorm_status clnorm_featurenorm_save(clnorm_featurenorm *layer, const char *path)
{
    if (!layer)
        return CLNORM_INVALID_ARGUMENT;
    layer_begin(layer->ctx);
    if (!path || !*path)
        return fail(layer->ctx, CLNORM_INVALID_ARGUMENT, "path is NULL or empty");
    const size_t size = file_size_of(&layer->spec);
    unsigned char *data = malloc(size);
    if (!data)
        return fail(layer->ctx, CLNORM_OUT_OF_HOST_MEMORY, "no host memory for a %zu-byte file",
                    size);
    clnorm_status status = encode(layer, data);
    if (status == CLNORM_OK)
        status = write_atomically(layer->ctx, path, data, size);
    free(data);
    return status;
}

/* Checks a file's bytes against the layer; `size` bytes are at data (at most the layer's own file
 * length), the file itself has file_size bytes. On success *loaded holds the file's settings and
 * `arrays` (FILE_PARAMS x the layer's size floats) its values. */
static clnorm_status parse_file(clnorm_featurenorm *layer, const char *path,
                                const unsigned char *data, size_t size, size_t file_size,
                                layer_spec *loaded, float *arrays)
{
    clnorm_context *ctx = layer->ctx;
    const layer_spec *s = &layer->spec;
    const char *name = kind_name(layer);
    const size_t want_size = file_size_of(s);
    if (file_size < FILE_HEADER_SIZE + FILE_HASH_SIZE)
        return fail(ctx, CLNORM_BAD_FILE,
                    "%s is %zu bytes, shorter than the %d bytes of an empty %s file: truncated",
                    path, file_size, FILE_HEADER_SIZE + FILE_HASH_SIZE, name);
    if (memcmp(data, kind_infos[s->kind].magic, 8) != 0) {
        for (size_t k = 0; k < ARRAY_SIZE(kind_infos); k++)
            if (memcmp(data, kind_infos[k].magic, 8) == 0)
                return fail(ctx, CLNORM_BAD_FILE,
                            "%s is a clnorm %s file (magic \"%s\"), not a %s file (magic "
                            "\"%s\")",
                            path, kind_infos[k].name, kind_infos[k].magic, name,
                            kind_infos[s->kind].magic);
        return fail(ctx, CLNORM_BAD_FILE, "%s is not a clnorm %s file (magic is not \"%s\")",
                    path, name, kind_infos[s->kind].magic);
    }
    const uint64_t version = get_le(data + 8, 4);
    if (version != FILE_VERSION)
        return fail(ctx, CLNORM_BAD_FILE,
                    "%s has format version %llu; this library reads version %u", path,
                    (unsigned long long)version, FILE_VERSION);
    const uint64_t flags = get_le(data + 12, 4);
    if (flags != s->flags)
        return fail(ctx, CLNORM_BAD_FILE,
                    "%s has flags %llu but the layer has flags %u (1 weight, 2 bias, 4 running "
                    "statistics)",
                    path, (unsigned long long)flags, s->flags);
    const uint64_t file_features = get_le(data + 16, 8), file_groups = get_le(data + 24, 8);
    if (file_features != s->size || file_groups != s->groups)
        return fail(ctx, CLNORM_BAD_FILE,
                    "%s holds size %llu with %llu groups but the %s layer has size %zu with %zu "
                    "groups",
                    path, (unsigned long long)file_features, (unsigned long long)file_groups,
                    name, s->size, s->groups);
    if (file_size != want_size)
        return fail(ctx, CLNORM_BAD_FILE,
                    "%s is %zu bytes but a %s file of size %zu with flags %u is %zu bytes: "
                    "truncated or padded",
                    path, file_size, name, s->size, s->flags, want_size);
    if (size != want_size)
        return fail(ctx, CLNORM_IO_ERROR, "%s: read %zu of its %zu bytes", path, size, want_size);
    if (hash_bytes(0, data, size - FILE_HASH_SIZE) != get_le(data + size - FILE_HASH_SIZE, 8))
        return fail(ctx, CLNORM_BAD_FILE, "%s is corrupt: its hash does not match", path);

    *loaded = *s;
    loaded->eps = get_double(data + 32);
    loaded->momentum = get_double(data + 40);
    if (!isfinite(loaded->eps) || loaded->eps < 0)
        return fail(ctx, CLNORM_BAD_FILE, "%s has eps = %g: not finite and >= 0", path,
                    loaded->eps);
    if (s->kind == CLNORM_INSTANCENORM ? !(loaded->momentum >= 0.0 && loaded->momentum <= 1.0)
                                       : loaded->momentum != 0.0)
        return fail(ctx, CLNORM_BAD_FILE, "%s has momentum = %g: a %s layer needs %s", path,
                    loaded->momentum, name,
                    s->kind == CLNORM_INSTANCENORM ? "a value in [0, 1]" : "0");
    const unsigned char *p = data + FILE_HEADER_SIZE;
    for (size_t a = 0; a < FILE_PARAMS; a++) {
        if (!(s->flags & param_infos[a].flag))
            continue;
        for (size_t i = 0; i < s->size; i++, p += 4) {
            const uint32_t bits = (uint32_t)get_le(p, 4);
            float v;
            memcpy(&v, &bits, sizeof v);
            if (!isfinite(v))
                return fail(ctx, CLNORM_BAD_FILE, "%s: %s[%zu] = %g is not finite", path,
                            param_infos[a].name, i, (double)v);
            if (a == P_RUNNING_VAR && v < 0)
                return fail(ctx, CLNORM_BAD_FILE, "%s: running_var[%zu] = %g is negative", path,
                            i, (double)v);
            arrays[a * s->size + i] = v;
        }
    }
    return CLNORM_OK;
}

/* Reads at most `capacity` bytes of the file into data; *file_size is its length. */
static clnorm_status read_prefix(clnorm_context *ctx, const char *path, unsigned char *data,
                                 size_t capacity, size_t *got, size_t *file_size)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (!f || fstat(fileno(f), &st) != 0) {
        clnorm_status status =
            fail(ctx, CLNORM_IO_ERROR, "cannot open %s: %s", path, strerror(errno));
        if (f)
            fclose(f);
        return status;
    }
    *file_size = (size_t)st.st_size;
    const size_t to_read = *file_size < capacity ? *file_size : capacity;
    *got = fread(data, 1, to_read, f);
    const bool error = ferror(f) != 0;
    fclose(f);
    if (*got != to_read)
        return fail(ctx, CLNORM_IO_ERROR, "cannot read %s: %s", path,
                    error ? strerror(errno) : "shorter than it was");
    return CLNORM_OK;
}

clnorm_status clnorm_featurenorm_load(clnorm_featurenorm *layer, const char *path)
{
    if (!layer)
        return CLNORM_INVALID_ARGUMENT;
    clnorm_context *ctx = layer->ctx;
    layer_begin(ctx);
    if (!path || !*path)
        return fail(ctx, CLNORM_INVALID_ARGUMENT, "path is NULL or empty");
    const size_t size = layer->spec.size, want_size = file_size_of(&layer->spec);
    /* never more than the layer's own file length: a longer file is rejected by its length */
    unsigned char *data = malloc(want_size);
    float *arrays = malloc(FILE_PARAMS * size * sizeof(float));
    size_t got = 0, file_size = 0;
    layer_spec loaded;
    clnorm_status status;
    if (!data || !arrays) {
        status = fail(ctx, CLNORM_OUT_OF_HOST_MEMORY, "no host memory for %zu bytes", want_size);
        goto fail;
    }
    TRY(read_prefix(ctx, path, data, want_size, &got, &file_size));
    TRY(parse_file(layer, path, data, got, file_size, &loaded, arrays));

    /* the file is valid: now change the layer (after earlier work that may use the buffers) */
    cl_int err = clFinish(ctx->queue);
    for (size_t a = 0; a < FILE_PARAMS && err == CL_SUCCESS; a++)
        if (layer->param[a])
            err = clEnqueueWriteBuffer(ctx->queue, layer->param[a], CL_TRUE, 0,
                                       size * sizeof(float), arrays + a * size, 0, NULL, NULL);
    if (err != CL_SUCCESS) {
        status = fail_cl(ctx, err, "clEnqueueWriteBuffer(feature-norm layer buffer)");
        goto fail;
    }
    layer->spec = loaded;
    status = CLNORM_OK;
fail:
    free(data);
    free(arrays);
    return status;
}

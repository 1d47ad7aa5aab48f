/* The batch-norm layer object (clnorm_batchnorm): owns the parameters, running statistics and
 * saved batch statistics, tracks the training/evaluation mode, and builds on the functional
 * operations of batchnorm.c. Those take the context lock themselves (it is not recursive), so the
 * layer calls them without holding it and locks only around its own use of the context. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "batchnorm_internal.h"

enum { FLAG_AFFINE = 1, FLAG_TRACKING = 2, FLAG_CUMULATIVE = 4 };

#define FILE_MAGIC "CLNORMBN"
#define FILE_VERSION 1u
#define FILE_HEADER_SIZE 48 /* magic, version, flags, C, eps, momentum, num_batches_tracked */
#define FILE_HASH_SIZE 8

struct clnorm_batchnorm {
    clnorm_context *ctx;
    size_t channels;
    double eps, momentum;
    bool affine, tracking, cumulative;
    clnorm_mode mode;
    int64_t num_batches_tracked;
    cl_mem gamma, beta;               /* affine */
    cl_mem running_mean, running_var; /* tracking */
    cl_mem dgamma, dbeta;             /* affine */
    cl_mem save_mean, save_invstd;    /* always */
    bool have_saved; /* a forward saved batch statistics that backward can use */
};

/* ---- errors without holding the lock ----------------------------------------------------------- */

static void layer_begin(clnorm_context *ctx)
{
    context_begin_call(ctx);
    context_unlock(ctx);
}

static clnorm_status layer_error(const clnorm_batchnorm *bn, clnorm_status status,
                                 const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static clnorm_status layer_error(const clnorm_batchnorm *bn, clnorm_status status,
                                 const char *fmt, ...)
{
    char message[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    context_lock(bn->ctx);
    set_error(bn->ctx, status, "%s", message);
    context_unlock(bn->ctx);
    return status;
}

static clnorm_status layer_cl_error(const clnorm_batchnorm *bn, cl_int code, const char *what)
{
    context_lock(bn->ctx);
    clnorm_status status = set_cl_error(bn->ctx, code, what);
    context_unlock(bn->ctx);
    return status;
}

static const char *mode_name(clnorm_mode mode)
{
    return mode == CLNORM_TRAINING ? "CLNORM_TRAINING" : "CLNORM_EVALUATION";
}

static unsigned layer_flags(const clnorm_batchnorm *bn)
{
    return (bn->affine ? FLAG_AFFINE : 0u) | (bn->tracking ? FLAG_TRACKING : 0u) |
           (bn->cumulative ? FLAG_CUMULATIVE : 0u);
}

/* ---- creation and release ------------------------------------------------------------------- */

void clnorm_batchnorm_default_options(clnorm_batchnorm_options *options, size_t num_features)
{
    if (!options)
        return;
    memset(options, 0, sizeof *options);
    options->num_features = num_features;
    options->eps = 1e-5;
    options->momentum = 0.1;
    options->affine = 1;
    options->track_running_stats = 1;
}

static void release_buffers(clnorm_batchnorm *bn)
{
    cl_mem *all[] = {&bn->gamma,  &bn->beta,  &bn->running_mean, &bn->running_var,
                     &bn->dgamma, &bn->dbeta, &bn->save_mean,    &bn->save_invstd};
    for (size_t i = 0; i < ARRAY_SIZE(all); i++) {
        if (*all[i])
            clReleaseMemObject(*all[i]);
        *all[i] = NULL;
    }
}

/* A buffer of C floats, all `value`, written before returning. Caller holds the lock. */
static clnorm_status create_filled(clnorm_context *ctx, size_t channels, float value,
                                   const char *name, cl_mem *out)
{
    clnorm_status status = CLNORM_OK;
    float *host = malloc(channels * sizeof(float));
    if (!host)
        return set_error(ctx, CLNORM_OUT_OF_HOST_MEMORY, "no host memory for %zu floats (%s)",
                         channels, name);
    for (size_t i = 0; i < channels; i++)
        host[i] = value;
    cl_int err = CL_SUCCESS;
    *out = clCreateBuffer(ctx->cl_ctx, CL_MEM_READ_WRITE, channels * sizeof(float), NULL, &err);
    if (err != CL_SUCCESS) {
        *out = NULL;
        status = set_cl_error(ctx, err, "clCreateBuffer(batch-norm layer buffer)");
    } else {
        err = clEnqueueWriteBuffer(ctx->queue, *out, CL_TRUE, 0, channels * sizeof(float), host,
                                   0, NULL, NULL);
        if (err != CL_SUCCESS)
            status = set_cl_error(ctx, err, "clEnqueueWriteBuffer(batch-norm layer buffer)");
    }
    free(host);
    return status;
}

static clnorm_status check_options(clnorm_context *ctx, const clnorm_batchnorm_options *o)
{
    if (!o)
        return set_error(ctx, CLNORM_INVALID_ARGUMENT, "options is NULL");
    if (o->num_features == 0)
        return set_error(ctx, CLNORM_INVALID_ARGUMENT, "options->num_features is 0");
    if (o->num_features > ctx->dev.max_alloc_bytes / sizeof(float))
        return set_error(ctx, CLNORM_UNSUPPORTED,
                         "options->num_features = %zu: a buffer of that many floats exceeds the "
                         "device's largest allocation (%llu bytes)",
                         o->num_features, (unsigned long long)ctx->dev.max_alloc_bytes);
    if (!isfinite(o->eps) || o->eps < 0)
        return set_error(ctx, CLNORM_INVALID_ARGUMENT, "options->eps = %g must be finite and >= 0",
                         o->eps);
    if (!o->cumulative_average && !(o->momentum >= 0.0 && o->momentum <= 1.0))
        return set_error(ctx, CLNORM_INVALID_ARGUMENT,
                         "options->momentum = %g is outside [0, 1] (set cumulative_average for "
                         "PyTorch's momentum=None)",
                         o->momentum);
    return CLNORM_OK;
}

clnorm_status clnorm_batchnorm_create(clnorm_context *ctx, const clnorm_batchnorm_options *options,
                                      clnorm_batchnorm **out)
{
    if (out)
        *out = NULL;
    if (!ctx)
        return CLNORM_INVALID_ARGUMENT;
    context_begin_call(ctx);
    clnorm_status status = CLNORM_OK;
    clnorm_batchnorm *bn = NULL;
    if (!out) {
        status = set_error(ctx, CLNORM_INVALID_ARGUMENT, "out is NULL");
        goto fail;
    }
    TRY(check_options(ctx, options));
    bn = calloc(1, sizeof *bn);
    if (!bn) {
        status = set_error(ctx, CLNORM_OUT_OF_HOST_MEMORY, "no host memory for the layer");
        goto fail;
    }
    bn->ctx = ctx;
    bn->channels = options->num_features;
    bn->eps = options->eps;
    bn->momentum = options->momentum;
    bn->affine = options->affine != 0;
    bn->tracking = options->track_running_stats != 0;
    bn->cumulative = options->cumulative_average != 0;
    bn->mode = CLNORM_TRAINING;
    const size_t c = bn->channels;
    if (bn->affine) {
        TRY(create_filled(ctx, c, 1.0f, "gamma", &bn->gamma));
        TRY(create_filled(ctx, c, 0.0f, "beta", &bn->beta));
        TRY(create_filled(ctx, c, 0.0f, "dgamma", &bn->dgamma));
        TRY(create_filled(ctx, c, 0.0f, "dbeta", &bn->dbeta));
    }
    if (bn->tracking) {
        TRY(create_filled(ctx, c, 0.0f, "running_mean", &bn->running_mean));
        TRY(create_filled(ctx, c, 1.0f, "running_var", &bn->running_var));
    }
    TRY(create_filled(ctx, c, 0.0f, "save_mean", &bn->save_mean));
    TRY(create_filled(ctx, c, 1.0f, "save_invstd", &bn->save_invstd));
    context_unlock(ctx);
    *out = bn;
    return CLNORM_OK;
fail:
    if (bn) {
        release_buffers(bn);
        free(bn);
    }
    context_unlock(ctx);
    return status;
}

void clnorm_batchnorm_release(clnorm_batchnorm *bn)
{
    if (!bn)
        return;
    /* work in flight may still use the buffers */
    clFinish(bn->ctx->queue);
    release_buffers(bn);
    free(bn);
}

/* ---- mode and accessors ------------------------------------------------------------------------ */

clnorm_status clnorm_batchnorm_set_mode(clnorm_batchnorm *bn, clnorm_mode mode)
{
    if (!bn)
        return CLNORM_INVALID_ARGUMENT;
    layer_begin(bn->ctx);
    if (mode != CLNORM_TRAINING && mode != CLNORM_EVALUATION)
        return layer_error(bn, CLNORM_INVALID_ARGUMENT,
                           "mode = %d is not CLNORM_TRAINING or CLNORM_EVALUATION", (int)mode);
    bn->mode = mode;
    return CLNORM_OK;
}

clnorm_mode clnorm_batchnorm_mode(const clnorm_batchnorm *bn)
{
    return bn ? bn->mode : CLNORM_TRAINING;
}

int64_t clnorm_batchnorm_num_batches_tracked(const clnorm_batchnorm *bn)
{
    return bn ? bn->num_batches_tracked : -1;
}

clnorm_status clnorm_batchnorm_get_buffers(const clnorm_batchnorm *bn,
                                           clnorm_batchnorm_buffers *buffers)
{
    if (!bn)
        return CLNORM_INVALID_ARGUMENT;
    layer_begin(bn->ctx);
    if (!buffers)
        return layer_error(bn, CLNORM_INVALID_ARGUMENT, "buffers is NULL");
    buffers->gamma = bn->gamma;
    buffers->beta = bn->beta;
    buffers->running_mean = bn->running_mean;
    buffers->running_var = bn->running_var;
    buffers->dgamma = bn->dgamma;
    buffers->dbeta = bn->dbeta;
    buffers->save_mean = bn->save_mean;
    buffers->save_invstd = bn->save_invstd;
    return CLNORM_OK;
}

/* ---- forward and backward ------------------------------------------------------------------- */

/* The checks the functional calls cannot make: the shape must have the layer's channels (the
 * per-channel buffers would pass a size check for fewer). */
static clnorm_status check_layer_shape(const clnorm_batchnorm *bn, const clnorm_shape *shape)
{
    if (!shape)
        return layer_error(bn, CLNORM_INVALID_ARGUMENT, "shape is NULL");
    if (shape->c != bn->channels)
        return layer_error(bn, CLNORM_INVALID_SHAPE,
                           "shape->c = %zu but the layer has num_features = %zu", shape->c,
                           bn->channels);
    return CLNORM_OK;
}

static clnorm_bn_config layer_config(const clnorm_batchnorm *bn, clnorm_activation activation,
                                     double momentum)
{
    clnorm_bn_config config;
    clnorm_bn_default_config(&config);
    config.eps = bn->eps;
    config.momentum = momentum;
    config.activation = activation;
    return config;
}

clnorm_status clnorm_batchnorm_forward(clnorm_batchnorm *bn, clnorm_mode expected,
                                       const clnorm_shape *shape, clnorm_activation activation,
                                       cl_mem x, cl_mem residual, cl_mem y, cl_uint num_wait,
                                       const cl_event *wait_list, cl_event *event)
{
    if (event)
        *event = NULL;
    if (!bn)
        return CLNORM_INVALID_ARGUMENT;
    layer_begin(bn->ctx);
    if (expected != CLNORM_TRAINING && expected != CLNORM_EVALUATION)
        return layer_error(bn, CLNORM_INVALID_ARGUMENT,
                           "expected = %d is not CLNORM_TRAINING or CLNORM_EVALUATION",
                           (int)expected);
    if (expected != bn->mode)
        return layer_error(bn, CLNORM_WRONG_MODE,
                           "the layer is in %s mode but the caller expected %s (switch with "
                           "clnorm_batchnorm_set_mode)",
                           mode_name(bn->mode), mode_name(expected));
    clnorm_status status = check_layer_shape(bn, shape);
    if (status != CLNORM_OK)
        return status;

    clnorm_bn_buffers b = {.x = x,
                           .y = y,
                           .residual = residual,
                           .gamma = bn->gamma,
                           .beta = bn->beta,
                           .save_mean = bn->save_mean,
                           .save_invstd = bn->save_invstd};
    if (bn->mode == CLNORM_EVALUATION && bn->tracking) {
        b.running_mean = bn->running_mean;
        b.running_var = bn->running_var;
        b.save_mean = b.save_invstd = NULL; /* inference leaves the saved statistics alone */
        clnorm_bn_config config = layer_config(bn, activation, 0.0);
        return clnorm_bn_forward_inference(bn->ctx, shape, &config, &b, num_wait, wait_list,
                                           event);
    }

    /* Batch statistics: training, or evaluation without running statistics (as PyTorch). */
    const bool update = bn->mode == CLNORM_TRAINING && bn->tracking && shape->n > 0;
    double momentum = 0.0; /* unused without running statistics */
    if (update) {
        b.running_mean = bn->running_mean;
        b.running_var = bn->running_var;
        momentum = bn->cumulative ? 1.0 / ((double)bn->num_batches_tracked + 1.0) : bn->momentum;
    }
    clnorm_bn_config config = layer_config(bn, activation, momentum);
    status = clnorm_bn_forward_training(bn->ctx, shape, &config, &b, num_wait, wait_list, event);
    if (status != CLNORM_OK)
        return status; /* nothing enqueued: the layer's state is unchanged */
    if (update && bn->num_batches_tracked < INT64_MAX)
        bn->num_batches_tracked++;
    bn->have_saved = true;
    return CLNORM_OK;
}

clnorm_status clnorm_batchnorm_backward(clnorm_batchnorm *bn, const clnorm_shape *shape,
                                        clnorm_activation activation, cl_mem x, cl_mem y,
                                        cl_mem dy, cl_mem dx, cl_mem dresidual, cl_uint num_wait,
                                        const cl_event *wait_list, cl_event *event)
{
    if (event)
        *event = NULL;
    if (!bn)
        return CLNORM_INVALID_ARGUMENT;
    layer_begin(bn->ctx);
    clnorm_status status = check_layer_shape(bn, shape);
    if (status != CLNORM_OK)
        return status;
    clnorm_bn_config config = layer_config(bn, activation, 0.0);
    clnorm_bn_grad_buffers g = {.x = x,
                                .dy = dy,
                                .y = y,
                                .gamma = bn->gamma,
                                .dx = dx,
                                .dgamma = bn->dgamma,
                                .dbeta = bn->dbeta,
                                .dresidual = dresidual};
    if (bn->mode == CLNORM_EVALUATION && bn->tracking) {
        g.mean = bn->running_mean;
        g.var = bn->running_var;
        return clnorm_bn_backward_frozen(bn->ctx, shape, &config, &g, num_wait, wait_list, event);
    }
    if (!bn->have_saved)
        return layer_error(bn, CLNORM_INVALID_ARGUMENT,
                           "no training forward to differentiate: run clnorm_batchnorm_forward "
                           "before clnorm_batchnorm_backward");
    g.mean = bn->save_mean;
    g.invstd = bn->save_invstd;
    return clnorm_bn_backward(bn->ctx, shape, &config, &g, num_wait, wait_list, event);
}

/* ---- host copies of the parameters ------------------------------------------------------------ */

/* gamma, beta, running_mean, running_var: the buffers a file holds, in file order. */
typedef struct host_params {
    float *gamma, *beta, *running_mean, *running_var;
    float *block; /* one allocation of 4 * C floats behind all four */
} host_params;

static clnorm_status host_params_alloc(const clnorm_batchnorm *bn, host_params *h)
{
    memset(h, 0, sizeof *h);
    h->block = calloc(4 * bn->channels, sizeof(float));
    if (!h->block)
        return layer_error(bn, CLNORM_OUT_OF_HOST_MEMORY, "no host memory for %zu floats",
                           4 * bn->channels);
    h->gamma = h->block;
    h->beta = h->block + bn->channels;
    h->running_mean = h->block + 2 * bn->channels;
    h->running_var = h->block + 3 * bn->channels;
    return CLNORM_OK;
}

/* Blocking reads of the layer's buffers that exist (others keep gamma 1, beta 0). */
static clnorm_status read_params(const clnorm_batchnorm *bn, host_params *h)
{
    const size_t bytes = bn->channels * sizeof(float);
    for (size_t i = 0; i < bn->channels; i++) {
        h->gamma[i] = 1.0f;
        h->beta[i] = 0.0f;
    }
    /* clFinish first: on an out-of-order queue a read would not wait for earlier kernels */
    cl_int err = clFinish(bn->ctx->queue);
    if (err != CL_SUCCESS)
        return layer_cl_error(bn, err, "clFinish");
    const cl_mem src[] = {bn->gamma, bn->beta, bn->running_mean, bn->running_var};
    float *dst[] = {h->gamma, h->beta, h->running_mean, h->running_var};
    for (size_t i = 0; i < 4; i++) {
        if (!src[i])
            continue;
        err = clEnqueueReadBuffer(bn->ctx->queue, src[i], CL_TRUE, 0, bytes, dst[i], 0, NULL,
                                  NULL);
        if (err != CL_SUCCESS)
            return layer_cl_error(bn, err, "clEnqueueReadBuffer(batch-norm layer buffer)");
    }
    return CLNORM_OK;
}

/* ---- save and load ------------------------------------------------------------------------------ */

/* Little-endian whatever the host. */
static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put_f64(unsigned char *p, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    put_u64(p, bits);
}

static void put_f32(unsigned char *p, float v)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    put_u32(p, bits);
}

static uint32_t get_u32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static double get_f64(const unsigned char *p)
{
    uint64_t bits = get_u64(p);
    double v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

static float get_f32(const unsigned char *p)
{
    uint32_t bits = get_u32(p);
    float v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

/* The size of a file for C channels and these flags. C is the layer's own, so no overflow:
 * its buffers exist. */
static size_t file_size_for(size_t channels, unsigned flags)
{
    size_t arrays = ((flags & FLAG_AFFINE) ? 2 : 0) + ((flags & FLAG_TRACKING) ? 2 : 0);
    return FILE_HEADER_SIZE + arrays * channels * sizeof(float) + FILE_HASH_SIZE;
}

clnorm_status clnorm_batchnorm_save(clnorm_batchnorm *bn, const char *path)
{
    if (!bn)
        return CLNORM_INVALID_ARGUMENT;
    layer_begin(bn->ctx);
    if (!path || !*path)
        return layer_error(bn, CLNORM_INVALID_ARGUMENT, "path is NULL or empty");
    const unsigned flags = layer_flags(bn);
    const size_t c = bn->channels;
    const size_t size = file_size_for(c, flags);
    host_params h;
    unsigned char *data = NULL;
    char *tmp = NULL;
    FILE *f = NULL;
    clnorm_status status;
    TRY(host_params_alloc(bn, &h));
    TRY(read_params(bn, &h));
    data = malloc(size);
    tmp = malloc(strlen(path) + 8);
    if (!data || !tmp) {
        status = layer_error(bn, CLNORM_OUT_OF_HOST_MEMORY, "no host memory for a %zu-byte file",
                             size);
        goto fail;
    }

    unsigned char *p = data;
    memcpy(p, FILE_MAGIC, 8);
    put_u32(p + 8, FILE_VERSION);
    put_u32(p + 12, flags);
    put_u64(p + 16, c);
    put_f64(p + 24, bn->eps);
    put_f64(p + 32, bn->momentum);
    put_u64(p + 40, (uint64_t)bn->num_batches_tracked);
    p += FILE_HEADER_SIZE;
    const float *arrays[] = {h.gamma, h.beta, h.running_mean, h.running_var};
    for (size_t a = 0; a < 4; a++) {
        if (!(flags & (a < 2 ? FLAG_AFFINE : FLAG_TRACKING)))
            continue;
        for (size_t i = 0; i < c; i++, p += 4)
            put_f32(p, arrays[a][i]);
    }
    put_u64(p, hash_bytes(0, data, size - FILE_HASH_SIZE));

    /* a temporary file next to the target, renamed over it: readers never see a partial file */
    sprintf(tmp, "%s.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        status = layer_error(bn, CLNORM_IO_ERROR, "cannot create a temporary file next to %s: %s",
                             path, strerror(errno));
        free(tmp);
        tmp = NULL; /* nothing to unlink */
        goto fail;
    }
    f = fdopen(fd, "wb");
    if (!f) {
        close(fd);
        status = layer_error(bn, CLNORM_IO_ERROR, "cannot write %s: %s", tmp, strerror(errno));
        goto fail;
    }
    bool ok = fwrite(data, 1, size, f) == size;
    ok = fclose(f) == 0 && ok;
    f = NULL;
    if (!ok) {
        status = layer_error(bn, CLNORM_IO_ERROR, "cannot write %s: %s", tmp, strerror(errno));
        goto fail;
    }
    /* mkstemp makes the file private; give it the usual permissions */
    chmod(tmp, 0644);
    if (rename(tmp, path) != 0) {
        status = layer_error(bn, CLNORM_IO_ERROR, "cannot rename %s to %s: %s", tmp, path,
                             strerror(errno));
        goto fail;
    }
    free(tmp);
    free(data);
    free(h.block);
    return CLNORM_OK;
fail:
    if (tmp)
        unlink(tmp);
    free(tmp);
    free(data);
    free(h.block);
    return status;
}

/* Checks a file's bytes against the layer; fills h with its arrays. `size` bytes are at data
 * (at most the layer's own file size), the file itself has file_size bytes. */
static clnorm_status parse_file(const clnorm_batchnorm *bn, const char *path,
                                const unsigned char *data, size_t size, size_t file_size,
                                double *eps, double *momentum, int64_t *tracked, host_params *h)
{
    const unsigned want_flags = layer_flags(bn);
    const size_t want_size = file_size_for(bn->channels, want_flags);
    if (file_size < FILE_HEADER_SIZE + FILE_HASH_SIZE)
        return layer_error(bn, CLNORM_BAD_FILE,
                           "%s is %zu bytes, shorter than the %d bytes of an empty batch-norm "
                           "file: truncated",
                           path, file_size, FILE_HEADER_SIZE + FILE_HASH_SIZE);
    if (memcmp(data, FILE_MAGIC, 8) != 0)
        return layer_error(bn, CLNORM_BAD_FILE,
                           "%s is not a clnorm batch-norm file (magic is not \"" FILE_MAGIC "\")",
                           path);
    const uint32_t version = get_u32(data + 8);
    if (version != FILE_VERSION)
        return layer_error(bn, CLNORM_BAD_FILE,
                           "%s has format version %u; this library reads version %u", path,
                           version, FILE_VERSION);
    const uint32_t flags = get_u32(data + 12);
    if (flags != want_flags)
        return layer_error(bn, CLNORM_BAD_FILE,
                           "%s has flags %u (affine %d, tracking %d, cumulative average %d) but "
                           "the layer has flags %u (affine %d, tracking %d, cumulative average %d)",
                           path, flags, (flags & FLAG_AFFINE) != 0, (flags & FLAG_TRACKING) != 0,
                           (flags & FLAG_CUMULATIVE) != 0, want_flags, bn->affine, bn->tracking,
                           bn->cumulative);
    const uint64_t channels = get_u64(data + 16);
    if (channels != bn->channels)
        return layer_error(bn, CLNORM_BAD_FILE,
                           "%s holds %llu channels but the layer has num_features = %zu", path,
                           (unsigned long long)channels, bn->channels);
    if (file_size != want_size)
        return layer_error(bn, CLNORM_BAD_FILE,
                           "%s is %zu bytes but a file for %zu channels with flags %u is %zu "
                           "bytes: truncated or padded",
                           path, file_size, bn->channels, want_flags, want_size);
    if (size != want_size)
        return layer_error(bn, CLNORM_IO_ERROR, "%s: read %zu of its %zu bytes", path, size,
                           want_size);
    const uint64_t stored_hash = get_u64(data + size - FILE_HASH_SIZE);
    if (hash_bytes(0, data, size - FILE_HASH_SIZE) != stored_hash)
        return layer_error(bn, CLNORM_BAD_FILE, "%s is corrupt: its hash does not match", path);

    *eps = get_f64(data + 24);
    *momentum = get_f64(data + 32);
    *tracked = (int64_t)get_u64(data + 40);
    if (!isfinite(*eps) || *eps < 0)
        return layer_error(bn, CLNORM_BAD_FILE, "%s has eps = %g: not finite and >= 0", path,
                           *eps);
    /* under a cumulative average momentum is ignored, as in the options */
    if (!bn->cumulative && !(*momentum >= 0.0 && *momentum <= 1.0))
        return layer_error(bn, CLNORM_BAD_FILE, "%s has momentum = %g: outside [0, 1]", path,
                           *momentum);
    if (*tracked < 0)
        return layer_error(bn, CLNORM_BAD_FILE, "%s has num_batches_tracked = %lld < 0", path,
                           (long long)*tracked);

    static const char *const names[] = {"gamma", "beta", "running_mean", "running_var"};
    float *arrays[] = {h->gamma, h->beta, h->running_mean, h->running_var};
    const unsigned char *p = data + FILE_HEADER_SIZE;
    for (size_t a = 0; a < 4; a++) {
        if (!(flags & (a < 2 ? FLAG_AFFINE : FLAG_TRACKING)))
            continue;
        for (size_t i = 0; i < bn->channels; i++, p += 4) {
            const float v = get_f32(p);
            if (!isfinite(v))
                return layer_error(bn, CLNORM_BAD_FILE, "%s: %s[%zu] = %g is not finite", path,
                                   names[a], i, (double)v);
            if (a == 3 && v < 0)
                return layer_error(bn, CLNORM_BAD_FILE, "%s: running_var[%zu] = %g is negative",
                                   path, i, (double)v);
            arrays[a][i] = v;
        }
    }
    return CLNORM_OK;
}

clnorm_status clnorm_batchnorm_load(clnorm_batchnorm *bn, const char *path)
{
    if (!bn)
        return CLNORM_INVALID_ARGUMENT;
    layer_begin(bn->ctx);
    if (!path || !*path)
        return layer_error(bn, CLNORM_INVALID_ARGUMENT, "path is NULL or empty");
    const size_t want_size = file_size_for(bn->channels, layer_flags(bn));
    unsigned char *data = NULL;
    host_params h = {0};
    clnorm_status status;
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (!f || fstat(fileno(f), &st) != 0) {
        status = layer_error(bn, CLNORM_IO_ERROR, "cannot open %s: %s", path, strerror(errno));
        goto fail;
    }
    /* never more than the layer's own file size: a longer file is rejected by its size */
    const size_t file_size = (size_t)st.st_size;
    const size_t to_read = file_size < want_size ? file_size : want_size;
    data = malloc(want_size);
    if (!data) {
        status = layer_error(bn, CLNORM_OUT_OF_HOST_MEMORY, "no host memory for %zu bytes",
                             want_size);
        goto fail;
    }
    const size_t got = fread(data, 1, to_read, f);
    if (got != to_read) {
        status = layer_error(bn, CLNORM_IO_ERROR, "cannot read %s: %s", path,
                             ferror(f) ? strerror(errno) : "shorter than it was");
        goto fail;
    }
    fclose(f);
    f = NULL;

    double eps = 0.0, momentum = 0.0;
    int64_t tracked = 0;
    TRY(host_params_alloc(bn, &h));
    TRY(parse_file(bn, path, data, got, file_size, &eps, &momentum, &tracked, &h));

    /* the file is valid: now change the layer (after earlier work that may use the buffers) */
    cl_int err = clFinish(bn->ctx->queue);
    if (err != CL_SUCCESS) {
        status = layer_cl_error(bn, err, "clFinish");
        goto fail;
    }
    const size_t bytes = bn->channels * sizeof(float);
    const cl_mem dst[] = {bn->gamma, bn->beta, bn->running_mean, bn->running_var};
    const float *src[] = {h.gamma, h.beta, h.running_mean, h.running_var};
    for (size_t i = 0; i < 4; i++) {
        if (!dst[i])
            continue;
        err = clEnqueueWriteBuffer(bn->ctx->queue, dst[i], CL_TRUE, 0, bytes, src[i], 0, NULL,
                                   NULL);
        if (err != CL_SUCCESS) {
            status = layer_cl_error(bn, err, "clEnqueueWriteBuffer(batch-norm layer buffer)");
            goto fail;
        }
    }
    bn->eps = eps;
    bn->momentum = momentum;
    bn->num_batches_tracked = tracked;
    status = CLNORM_OK;
fail:
    if (f)
        fclose(f);
    free(data);
    free(h.block);
    return status;
}

/* ---- folding ----------------------------------------------------------------------------------- */

clnorm_status clnorm_batchnorm_fold(clnorm_batchnorm *bn, float *scale, float *shift)
{
    if (!bn)
        return CLNORM_INVALID_ARGUMENT;
    layer_begin(bn->ctx);
    if (!scale || !shift)
        return layer_error(bn, CLNORM_INVALID_ARGUMENT, "%s is NULL", !scale ? "scale" : "shift");
    if (!bn->tracking)
        return layer_error(bn, CLNORM_INVALID_ARGUMENT,
                           "folding needs running statistics: the layer was created with "
                           "track_running_stats = 0");
    host_params h;
    clnorm_status status = host_params_alloc(bn, &h);
    if (status == CLNORM_OK)
        status = read_params(bn, &h);
    if (status == CLNORM_OK) {
        for (size_t c = 0; c < bn->channels; c++) {
            const double s = (double)h.gamma[c] / sqrt((double)h.running_var[c] + bn->eps);
            scale[c] = (float)s;
            shift[c] = (float)((double)h.beta[c] - (double)h.running_mean[c] * s);
        }
    }
    free(h.block);
    return status;
}

static clnorm_status fold_linear(clnorm_batchnorm *bn, cl_mem weight, cl_mem bias,
                                 size_t in_features, cl_uint num_wait, const cl_event *wait,
                                 cl_event *event)
{
    clnorm_context *ctx = bn->ctx;
    const size_t c = bn->channels;
    launch_chain chain;
    chain_begin(&chain, num_wait, wait);
    const program_entry *prog;
    cl_mem coef;
    size_t total, weight_bytes;
    clnorm_status status;
    if (!bn->tracking)
        return set_error(ctx, CLNORM_INVALID_ARGUMENT,
                         "folding needs running statistics: the layer was created with "
                         "track_running_stats = 0");
    if (in_features == 0)
        return set_error(ctx, CLNORM_INVALID_SHAPE, "in_features is 0");
    TRY(checked_mul(ctx, c, in_features, "weight element count (C x in_features)", &total));
    TRY(checked_mul(ctx, total, sizeof(float), "weight size in bytes", &weight_bytes));
    TRY(check_buffer(ctx, weight, "weight", weight_bytes, false));
    TRY(check_buffer(ctx, bias, "bias", c * sizeof(float), false));
    TRY(check_events(ctx, num_wait, wait));
    TRY(program_get(ctx, FAMILY_NORM, &prog));
    TRY(workspace_reserve(ctx, WS_COEF, 4 * c * sizeof(float), &coef));
    /* coef = (a, b, e, center) = (scale, beta, scale, mean) per output feature: the weight is
     * a * W (no shift), the bias b + e * (bias - center) = beta + scale * (bias - mean) */
    const given_stats running = {bn->running_mean, bn->running_var, bn->gamma, bn->beta, 0,
                                 (float)bn->eps};
    TRY(bn_enqueue_coef(ctx, &chain, prog, c, &running, coef));
    const elementwise_args w = {.in1 = weight, .out = weight, .coef = coef,
                                .flags = FLAG_NO_SHIFT};
    TRY(bn_enqueue_elementwise(ctx, &chain, prog, total, in_features, c, &w));
    const elementwise_args b = {.in2 = bias, .out = bias, .coef = coef, .flags = 0};
    TRY(bn_enqueue_elementwise(ctx, &chain, prog, c, 1, c, &b));
    chain_end(ctx, &chain, event, true);
    return CLNORM_OK;
fail:
    chain_abandon(&chain);
    return status;
}

clnorm_status clnorm_batchnorm_fold_linear(clnorm_batchnorm *bn, cl_mem weight, cl_mem bias,
                                           size_t in_features, cl_uint num_wait,
                                           const cl_event *wait_list, cl_event *event)
{
    if (event)
        *event = NULL;
    if (!bn)
        return CLNORM_INVALID_ARGUMENT;
    context_begin_call(bn->ctx);
    clnorm_status status =
        fold_linear(bn, weight, bias, in_features, num_wait, wait_list, event);
    context_unlock(bn->ctx);
    return status;
}

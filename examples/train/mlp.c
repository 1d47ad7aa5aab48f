#include "mlp.h"

#include <clblast_c.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct layer {
    size_t in, out;
    cl_mem w, b;        /* out x in (row o is output feature o), out; b NULL before a norm with a
                         * shift (batch, layer, group) */
    cl_mem dw, db;      /* gradients */
    cl_mem vw, vb;      /* momentum buffers */
    cl_mem z;           /* rows x out: linear output (plus bias) */
    cl_mem a;           /* rows x out: after norm and ReLU; == z without a norm (ReLU in place) */
    cl_mem g;           /* rows x out: gradient of a, then of z (in place) */
    clnorm_batchnorm *bn;              /* NORM_BATCH */
    clnorm_batchnorm_buffers bn_bufs;  /* the layer's gamma, beta, dgamma, dbeta, running stats */
    clnorm_featurenorm *fn;            /* NORM_LAYER, NORM_GROUP, NORM_RMS */
    clnorm_featurenorm_buffers fn_bufs; /* its weight, bias (not RMS), dweight, dbias */
    cl_mem vgamma, vbeta;              /* momentum buffers of the norm's gamma/weight, beta/bias */
    cl_mem stats_backup;               /* 2 x out: running mean and variance set aside */
} layer;

struct mlp {
    clnorm_context *ctx;
    cl_context cl;
    cl_command_queue queue;
    const train_kernels *k;
    mlp_shape shape;
    size_t max_rows;
    size_t num_layers; /* depth hidden layers + the output layer */
    layer *layers;
    cl_mem row_loss, row_correct; /* max_rows each */
    char err[4096];
};

static const char *const norm_names[NORM_KIND_COUNT] = {"none", "batch", "layer", "group", "rms"};

const char *norm_name(norm_kind kind)
{
    return kind < NORM_KIND_COUNT ? norm_names[kind] : "?";
}

int norm_from_name(const char *name, norm_kind *kind)
{
    for (int i = 0; i < NORM_KIND_COUNT; i++)
        if (strcmp(name, norm_names[i]) == 0) {
            *kind = (norm_kind)i;
            return 0;
        }
    return -1;
}

int norm_available(norm_kind kind)
{
    return kind < NORM_KIND_COUNT;
}

size_t default_groups(size_t hidden)
{
    /* groups of at least 8 features: a group of 2 normalizes to about +-1, whatever the values */
    size_t g = hidden / 8 < 32 ? hidden / 8 : 32;
    while (g > 1 && hidden % g != 0)
        g--;
    return g ? g : 1;
}

static int fail(mlp *net, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(mlp *net, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(net->err, sizeof net->err, fmt, ap);
    va_end(ap);
    return -1;
}

static int fail_clnorm(mlp *net, const char *what, clnorm_status status)
{
    return fail(net, "%s failed: %s: %s", what, clnorm_status_name(status),
                clnorm_last_error(net->ctx));
}

static int fail_cl(mlp *net, const char *what, cl_int code)
{
    return fail(net, "%s failed: %s", what, clnorm_cl_error_name(code));
}

const char *mlp_error(const mlp *net)
{
    return net ? net->err : "no network";
}

const mlp_shape *mlp_get_shape(const mlp *net)
{
    return &net->shape;
}

cl_mem mlp_logits(const mlp *net)
{
    return net->layers[net->num_layers - 1].z;
}

/* ---- creation ------------------------------------------------------------------------------- */

/* splitmix64: a small, well-mixed generator; the same seed gives the same stream everywhere. */
static uint64_t next_u64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double next_uniform(uint64_t *state) /* (0, 1) */
{
    return ((double)(next_u64(state) >> 11) + 0.5) / 9007199254740992.0;
}

static double next_normal(uint64_t *state) /* Box-Muller, one value per pair of uniforms */
{
    double u = next_uniform(state), v = next_uniform(state);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

static int new_buffer(mlp *net, size_t floats, const char *what, cl_mem *out)
{
    cl_int code = CL_SUCCESS;
    *out = clCreateBuffer(net->cl, CL_MEM_READ_WRITE, floats * sizeof(float), NULL, &code);
    if (code != CL_SUCCESS) {
        *out = NULL;
        return fail(net, "clCreateBuffer(%s, %zu floats) failed: %s", what, floats,
                    clnorm_cl_error_name(code));
    }
    return 0;
}

static int zero_buffer(mlp *net, cl_mem buffer, size_t floats)
{
    const float zero = 0.0f;
    cl_int code = clEnqueueFillBuffer(net->queue, buffer, &zero, sizeof zero, 0,
                                      floats * sizeof(float), 0, NULL, NULL);
    return code == CL_SUCCESS ? 0 : fail_cl(net, "clEnqueueFillBuffer", code);
}

static int new_zero_buffer(mlp *net, size_t floats, const char *what, cl_mem *out)
{
    if (new_buffer(net, floats, what, out) != 0)
        return -1;
    return zero_buffer(net, *out, floats);
}

static void release_mem(cl_mem *m)
{
    if (*m)
        clReleaseMemObject(*m);
    *m = NULL;
}

static int create_layer(mlp *net, layer *l, size_t in, size_t out, int hidden, uint64_t *rng)
{
    l->in = in;
    l->out = out;
    const size_t rows = net->max_rows;
    const int has_norm = hidden && net->shape.norm != NORM_NONE;
    /* a norm with a shift (bias, beta) makes the linear layer's bias redundant; RMS norm has
     * none */
    const int has_bias = !has_norm || net->shape.norm == NORM_RMS;
    /* weights: Kaiming-normal (std sqrt(2/in)) before a ReLU, LeCun-normal (sqrt(1/in)) for the
     * output layer */
    float *host = malloc(in * out * sizeof(float));
    if (!host)
        return fail(net, "no host memory for %zu weights", in * out);
    const double std = sqrt((hidden ? 2.0 : 1.0) / (double)in);
    for (size_t i = 0; i < in * out; i++)
        host[i] = (float)(std * next_normal(rng));
    int rc = new_buffer(net, in * out, "weights", &l->w);
    if (rc == 0) {
        cl_int code = clEnqueueWriteBuffer(net->queue, l->w, CL_TRUE, 0, in * out * sizeof(float),
                                           host, 0, NULL, NULL);
        if (code != CL_SUCCESS)
            rc = fail_cl(net, "clEnqueueWriteBuffer(weights)", code);
    }
    free(host);
    if (rc != 0)
        return -1;
    if (new_buffer(net, in * out, "weight gradient", &l->dw) != 0 ||
        new_zero_buffer(net, in * out, "weight momentum", &l->vw) != 0 ||
        new_buffer(net, rows * out, "layer output", &l->z) != 0 ||
        new_buffer(net, rows * out, "layer gradient", &l->g) != 0)
        return -1;
    if (has_bias && (new_zero_buffer(net, out, "bias", &l->b) != 0 ||
                     new_buffer(net, out, "bias gradient", &l->db) != 0 ||
                     new_zero_buffer(net, out, "bias momentum", &l->vb) != 0))
        return -1;
    if (!has_norm) {
        l->a = l->z;
        return 0;
    }
    if (new_buffer(net, rows * out, "normalized output", &l->a) != 0 ||
        new_zero_buffer(net, out, "gamma momentum", &l->vgamma) != 0 ||
        new_zero_buffer(net, out, "beta momentum", &l->vbeta) != 0 ||
        new_buffer(net, 2 * out, "running statistics backup", &l->stats_backup) != 0)
        return -1;
    switch (net->shape.norm) {
    case NORM_BATCH: {
        clnorm_batchnorm_options options;
        clnorm_batchnorm_default_options(&options, out);
        clnorm_status s = clnorm_batchnorm_create(net->ctx, &options, &l->bn);
        if (s != CLNORM_OK)
            return fail_clnorm(net, "clnorm_batchnorm_create", s);
        s = clnorm_batchnorm_get_buffers(l->bn, &l->bn_bufs);
        if (s != CLNORM_OK)
            return fail_clnorm(net, "clnorm_batchnorm_get_buffers", s);
        return 0;
    }
    case NORM_LAYER: {
        clnorm_layernorm_options options;
        clnorm_layernorm_default_options(&options, out);
        clnorm_status s = clnorm_featurenorm_create_layernorm(net->ctx, &options, &l->fn);
        if (s != CLNORM_OK)
            return fail_clnorm(net, "clnorm_featurenorm_create_layernorm", s);
        break;
    }
    case NORM_GROUP: {
        if (net->shape.groups == 0 || out % net->shape.groups != 0)
            return fail(net, "group norm: %zu groups do not divide the %zu hidden features",
                        net->shape.groups, out);
        clnorm_groupnorm_options options;
        clnorm_groupnorm_default_options(&options, net->shape.groups, out);
        clnorm_status s = clnorm_featurenorm_create_groupnorm(net->ctx, &options, &l->fn);
        if (s != CLNORM_OK)
            return fail_clnorm(net, "clnorm_featurenorm_create_groupnorm", s);
        break;
    }
    case NORM_RMS: {
        clnorm_rmsnorm_options options;
        clnorm_rmsnorm_default_options(&options, out);
        clnorm_status s = clnorm_featurenorm_create_rmsnorm(net->ctx, &options, &l->fn);
        if (s != CLNORM_OK)
            return fail_clnorm(net, "clnorm_featurenorm_create_rmsnorm", s);
        break;
    }
    default:
        return fail(net, "normalization '%s' is not available in this build yet",
                    norm_name(net->shape.norm));
    }
    clnorm_status s = clnorm_featurenorm_get_buffers(l->fn, &l->fn_bufs);
    if (s != CLNORM_OK)
        return fail_clnorm(net, "clnorm_featurenorm_get_buffers", s);
    if (!l->fn_bufs.weight || !l->fn_bufs.dweight ||
        (net->shape.norm != NORM_RMS && (!l->fn_bufs.bias || !l->fn_bufs.dbias)))
        return fail(net, "%s norm layer without its learnable parameters",
                    norm_name(net->shape.norm));
    return 0;
}

static void release_layer(layer *l)
{
    if (l->bn)
        clnorm_batchnorm_release(l->bn);
    l->bn = NULL;
    if (l->fn)
        clnorm_featurenorm_release(l->fn);
    l->fn = NULL;
    if (l->a == l->z)
        l->a = NULL;
    cl_mem *all[] = {&l->w,  &l->b,  &l->dw,     &l->db,    &l->vw,          &l->vb, &l->z,
                     &l->a,  &l->g,  &l->vgamma, &l->vbeta, &l->stats_backup};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        release_mem(all[i]);
}

void mlp_release(mlp *net)
{
    if (!net)
        return;
    if (net->queue)
        clFinish(net->queue);
    for (size_t i = 0; net->layers && i < net->num_layers; i++)
        release_layer(&net->layers[i]);
    free(net->layers);
    release_mem(&net->row_loss);
    release_mem(&net->row_correct);
    free(net);
}

int mlp_create(clnorm_context *ctx, const train_kernels *kernels, const mlp_shape *shape,
               size_t max_rows, uint64_t seed, mlp **out, char *err, size_t err_size)
{
    *out = NULL;
    if (shape->input == 0 || shape->hidden == 0 || shape->classes == 0 || max_rows == 0) {
        snprintf(err, err_size, "the network needs nonzero sizes");
        return -1;
    }
    if (shape->norm == NORM_GROUP && (shape->groups == 0 || shape->hidden % shape->groups != 0)) {
        snprintf(err, err_size, "group norm: %zu groups do not divide the hidden width %zu",
                 shape->groups, shape->hidden);
        return -1;
    }
    if (!norm_available(shape->norm)) {
        snprintf(err, err_size, "normalization '%s' is not available in this build yet",
                 norm_name(shape->norm));
        return -1;
    }
    mlp *net = calloc(1, sizeof *net);
    if (!net) {
        snprintf(err, err_size, "no host memory for the network");
        return -1;
    }
    net->ctx = ctx;
    net->cl = clnorm_context_cl_context(ctx);
    net->queue = clnorm_context_queue(ctx);
    net->k = kernels;
    net->shape = *shape;
    net->max_rows = max_rows;
    net->num_layers = shape->depth + 1;
    net->layers = calloc(net->num_layers, sizeof *net->layers);
    if (!net->layers) {
        snprintf(err, err_size, "no host memory for the network");
        free(net);
        return -1;
    }
    uint64_t rng = seed;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < net->num_layers; i++) {
        const int hidden = i < shape->depth;
        rc = create_layer(net, &net->layers[i], i == 0 ? shape->input : shape->hidden,
                          hidden ? shape->hidden : shape->classes, hidden, &rng);
    }
    if (rc == 0)
        rc = new_buffer(net, max_rows, "row losses", &net->row_loss);
    if (rc == 0) {
        cl_int code = CL_SUCCESS;
        net->row_correct =
            clCreateBuffer(net->cl, CL_MEM_READ_WRITE, max_rows * sizeof(cl_int), NULL, &code);
        if (code != CL_SUCCESS) {
            net->row_correct = NULL;
            rc = fail_cl(net, "clCreateBuffer(row results)", code);
        }
    }
    if (rc == 0) {
        cl_int code = clFinish(net->queue);
        if (code != CL_SUCCESS)
            rc = fail_cl(net, "clFinish", code);
    }
    if (rc != 0) {
        snprintf(err, err_size, "%s", net->err);
        mlp_release(net);
        return -1;
    }
    *out = net;
    return 0;
}

size_t mlp_parameter_count(const mlp *net)
{
    size_t count = 0;
    for (size_t i = 0; i < net->num_layers; i++) {
        const layer *l = &net->layers[i];
        count += l->in * l->out + (l->b ? l->out : 0) + (l->bn ? 2 * l->out : 0) +
                 (l->fn_bufs.weight ? l->out : 0) + (l->fn_bufs.bias ? l->out : 0);
    }
    return count;
}

/* ---- forward, loss, backward, update -------------------------------------------------------- */

static int gemm(mlp *net, CLBlastTranspose ta, CLBlastTranspose tb, size_t m, size_t n, size_t k,
                cl_mem a, size_t lda, cl_mem b, size_t ldb, cl_mem c, size_t ldc,
                const char *what)
{
    cl_command_queue queue = net->queue;
    CLBlastStatusCode s = CLBlastSgemm(CLBlastLayoutRowMajor, ta, tb, m, n, k, 1.0f, a, 0, lda, b,
                                       0, ldb, 0.0f, c, 0, ldc, &queue, NULL);
    if (s != CLBlastSuccess)
        return fail(net, "CLBlastSgemm (%s, %zu x %zu x %zu) failed with status %d%s%s", what, m, n,
                    k, (int)s, s > -100 ? ": " : "", s > -100 ? clnorm_cl_error_name(s) : "");
    return 0;
}

static int launch(mlp *net, cl_kernel kernel, const char *name, cl_uint dims, const size_t *global,
                  size_t num_args, const kernel_arg *args)
{
    return kernels_launch(net->queue, kernel, name, dims, global, num_args, args, net->err,
                          sizeof net->err);
}

static int bias_act(mlp *net, cl_mem y, cl_mem b, size_t rows, size_t cols, int relu)
{
    cl_uint c = (cl_uint)cols;
    cl_int r = relu;
    const size_t global[2] = {cols, rows};
    const kernel_arg args[] = {KARG(y), KARG(b), KARG(c), KARG(r)};
    return launch(net, net->k->bias_act, "bias_act", 2, global, 4, args);
}

static clnorm_shape norm_shape(size_t n, size_t c)
{
    clnorm_shape s;
    memset(&s, 0, sizeof s);
    s.n = n;
    s.c = c;
    s.spatial_rank = 0;
    s.layout = CLNORM_CHANNELS_FIRST;
    return s;
}

int mlp_set_mode(mlp *net, clnorm_mode mode)
{
    for (size_t i = 0; i < net->num_layers; i++) {
        layer *l = &net->layers[i];
        if (l->bn) {
            clnorm_status s = clnorm_batchnorm_set_mode(l->bn, mode);
            if (s != CLNORM_OK)
                return fail_clnorm(net, "clnorm_batchnorm_set_mode", s);
        }
        if (l->fn) {
            clnorm_status s = clnorm_featurenorm_set_mode(l->fn, mode);
            if (s != CLNORM_OK)
                return fail_clnorm(net, "clnorm_featurenorm_set_mode", s);
        }
    }
    return 0;
}

/* Layer, group or RMS norm of z into a, then the ReLU in place. */
static int fn_forward(mlp *net, layer *l, size_t n)
{
    clnorm_status s;
    const char *what;
    if (net->shape.norm == NORM_GROUP) {
        clnorm_shape shape = norm_shape(n, l->out);
        s = clnorm_featurenorm_forward_groups(l->fn, &shape, l->z, l->a, 0, NULL, NULL);
        what = "clnorm_featurenorm_forward_groups";
    } else {
        s = clnorm_featurenorm_forward_rows(l->fn, n, l->z, NULL, NULL, l->a, 0, NULL, NULL);
        what = "clnorm_featurenorm_forward_rows";
    }
    if (s != CLNORM_OK)
        return fail_clnorm(net, what, s);
    const size_t global[1] = {n * l->out};
    const kernel_arg args[] = {KARG(l->a)};
    return launch(net, net->k->relu, "relu", 1, global, 1, args);
}

/* l->g holds the gradient of a: through the ReLU, then the norm's backward (in place), which
 * writes the norm's dweight and dbias. */
static int fn_backward(mlp *net, layer *l, size_t n)
{
    const size_t global[1] = {n * l->out};
    const kernel_arg args[] = {KARG(l->g), KARG(l->a)};
    if (launch(net, net->k->relu_grad, "relu_grad", 1, global, 2, args) != 0)
        return -1;
    clnorm_status s;
    const char *what;
    if (net->shape.norm == NORM_GROUP) {
        clnorm_shape shape = norm_shape(n, l->out);
        s = clnorm_featurenorm_backward_groups(l->fn, &shape, l->z, l->g, l->g, 0, NULL, NULL);
        what = "clnorm_featurenorm_backward_groups";
    } else {
        s = clnorm_featurenorm_backward_rows(l->fn, n, l->z, l->g, NULL, l->g, 0, NULL, NULL);
        what = "clnorm_featurenorm_backward_rows";
    }
    return s == CLNORM_OK ? 0 : fail_clnorm(net, what, s);
}

int mlp_forward(mlp *net, cl_mem x, size_t n, clnorm_mode expected)
{
    if (n == 0 || n > net->max_rows)
        return fail(net, "mlp_forward: %zu rows (the buffers hold 1..%zu)", n, net->max_rows);
    cl_mem in = x;
    for (size_t i = 0; i < net->num_layers; i++) {
        layer *l = &net->layers[i];
        const int hidden = i + 1 < net->num_layers;
        /* z = in W^T: (n x in) (out x in)^T */
        if (gemm(net, CLBlastTransposeNo, CLBlastTransposeYes, n, l->out, l->in, in, l->in, l->w,
                 l->in, l->z, l->out, "forward") != 0)
            return -1;
        if (l->b) {
            /* the ReLU fused here without a norm; after the norm with one (RMS) */
            if (bias_act(net, l->z, l->b, n, l->out, hidden && !l->fn) != 0)
                return -1;
        }
        if (l->fn) {
            if (fn_forward(net, l, n) != 0)
                return -1;
        } else if (l->bn) {
            clnorm_shape shape = norm_shape(n, l->out);
            clnorm_status s = clnorm_batchnorm_forward(l->bn, expected, &shape,
                                                       CLNORM_ACTIVATION_RELU, l->z, NULL, l->a,
                                                       0, NULL, NULL);
            if (s != CLNORM_OK)
                return fail_clnorm(net, "clnorm_batchnorm_forward", s);
        }
        in = l->a;
    }
    return 0;
}

int mlp_loss(mlp *net, cl_mem labels, size_t n, int want_grad, cl_mem slot_loss,
             cl_mem slot_correct, size_t slot)
{
    layer *out = &net->layers[net->num_layers - 1];
    cl_uint classes = (cl_uint)out->out, rows = (cl_uint)n, slot_u = (cl_uint)slot;
    cl_float scale = 1.0f / (float)n;
    cl_int grad = want_grad;
    const size_t global[1] = {n};
    const kernel_arg args[] = {KARG(out->z),         KARG(labels),   KARG(classes),
                               KARG(scale),          KARG(grad),     KARG(out->g),
                               KARG(net->row_loss), KARG(net->row_correct)};
    if (launch(net, net->k->softmax_xent, "softmax_xent", 1, global, 8, args) != 0)
        return -1;
    const size_t one[1] = {1};
    const kernel_arg sum_args[] = {KARG(net->row_loss), KARG(net->row_correct), KARG(rows),
                                   KARG(slot_loss),     KARG(slot_correct),     KARG(slot_u)};
    return launch(net, net->k->sum_rows, "sum_rows", 1, one, 6, sum_args);
}

int mlp_backward(mlp *net, cl_mem x, size_t n)
{
    for (size_t i = net->num_layers; i-- > 0;) {
        layer *l = &net->layers[i];
        const int hidden = i + 1 < net->num_layers;
        cl_mem in = i == 0 ? x : net->layers[i - 1].a;
        /* l->g holds the gradient of a; turn it into the gradient of z */
        if (l->fn && fn_backward(net, l, n) != 0)
            return -1;
        if (l->b) {
            /* the ReLU's gradient here without a norm (with RMS norm, fn_backward did it) */
            cl_uint rows = (cl_uint)n, cols = (cl_uint)l->out;
            cl_int relu = hidden && !l->fn;
            const size_t global[1] = {l->out};
            const kernel_arg args[] = {KARG(l->g), KARG(l->a), KARG(l->db),
                                       KARG(rows), KARG(cols), KARG(relu)};
            if (launch(net, net->k->bias_grad, "bias_grad", 1, global, 6, args) != 0)
                return -1;
        }
        if (l->bn) {
            clnorm_shape shape = norm_shape(n, l->out);
            clnorm_status s = clnorm_batchnorm_backward(l->bn, &shape, CLNORM_ACTIVATION_RELU,
                                                        l->z, l->a, l->g, l->g, NULL, 0, NULL,
                                                        NULL);
            if (s != CLNORM_OK)
                return fail_clnorm(net, "clnorm_batchnorm_backward", s);
        }
        /* dW = dz^T in: (out x n) (n x in) */
        if (gemm(net, CLBlastTransposeYes, CLBlastTransposeNo, l->out, l->in, n, l->g, l->out, in,
                 l->in, l->dw, l->in, "weight gradient") != 0)
            return -1;
        /* d(in) = dz W: (n x out) (out x in), into the previous layer's gradient */
        if (i > 0 && gemm(net, CLBlastTransposeNo, CLBlastTransposeNo, n, l->in, l->out, l->g,
                          l->out, l->w, l->in, net->layers[i - 1].g, l->in, "input gradient") != 0)
            return -1;
    }
    return 0;
}

static int sgd(mlp *net, cl_mem w, cl_mem g, cl_mem v, size_t count, float lr, float momentum,
               float weight_decay)
{
    const size_t global[1] = {count};
    const kernel_arg args[] = {KARG(w),  KARG(g),        KARG(v),
                               KARG(lr), KARG(momentum), KARG(weight_decay)};
    return launch(net, net->k->sgd_momentum, "sgd_momentum", 1, global, 6, args);
}

int mlp_sgd_step(mlp *net, float lr, float momentum, float weight_decay)
{
    for (size_t i = 0; i < net->num_layers; i++) {
        layer *l = &net->layers[i];
        if (sgd(net, l->w, l->dw, l->vw, l->in * l->out, lr, momentum, weight_decay) != 0)
            return -1;
        if (l->b && sgd(net, l->b, l->db, l->vb, l->out, lr, momentum, 0.0f) != 0)
            return -1;
        if (l->bn && (sgd(net, l->bn_bufs.gamma, l->bn_bufs.dgamma, l->vgamma, l->out, lr,
                          momentum, 0.0f) != 0 ||
                      sgd(net, l->bn_bufs.beta, l->bn_bufs.dbeta, l->vbeta, l->out, lr, momentum,
                          0.0f) != 0))
            return -1;
        if (l->fn && sgd(net, l->fn_bufs.weight, l->fn_bufs.dweight, l->vgamma, l->out, lr,
                         momentum, 0.0f) != 0)
            return -1;
        if (l->fn_bufs.bias && sgd(net, l->fn_bufs.bias, l->fn_bufs.dbias, l->vbeta, l->out, lr,
                                   momentum, 0.0f) != 0)
            return -1;
    }
    return 0;
}

/* ---- running statistics, folding ------------------------------------------------------------ */

static int copy(mlp *net, cl_mem from, size_t from_offset, cl_mem to, size_t to_offset,
                size_t floats)
{
    cl_int code = clEnqueueCopyBuffer(net->queue, from, to, from_offset * sizeof(float),
                                      to_offset * sizeof(float), floats * sizeof(float), 0, NULL,
                                      NULL);
    return code == CL_SUCCESS ? 0 : fail_cl(net, "clEnqueueCopyBuffer", code);
}

int mlp_stats_backup(mlp *net)
{
    for (size_t i = 0; i < net->num_layers; i++) {
        layer *l = &net->layers[i];
        if (l->bn && (copy(net, l->bn_bufs.running_mean, 0, l->stats_backup, 0, l->out) != 0 ||
                      copy(net, l->bn_bufs.running_var, 0, l->stats_backup, l->out, l->out) != 0))
            return -1;
    }
    return 0;
}

int mlp_stats_restore(mlp *net)
{
    for (size_t i = 0; i < net->num_layers; i++) {
        layer *l = &net->layers[i];
        if (l->bn && (copy(net, l->stats_backup, 0, l->bn_bufs.running_mean, 0, l->out) != 0 ||
                      copy(net, l->stats_backup, l->out, l->bn_bufs.running_var, 0, l->out) != 0))
            return -1;
    }
    return 0;
}

int mlp_fold(mlp *net, mlp **folded)
{
    *folded = NULL;
    if (net->shape.norm != NORM_NONE && net->shape.norm != NORM_BATCH)
        return fail(net, "mlp_fold: %s norm does not fold into the linear layers",
                    norm_name(net->shape.norm));
    mlp_shape shape = net->shape;
    shape.norm = NORM_NONE;
    mlp *f = NULL;
    if (mlp_create(net->ctx, net->k, &shape, net->max_rows, 0, &f, net->err, sizeof net->err) !=
        0)
        return -1;
    for (size_t i = 0; i < net->num_layers; i++) {
        layer *src = &net->layers[i], *dst = &f->layers[i];
        if (copy(net, src->w, 0, dst->w, 0, src->in * src->out) != 0)
            goto fail;
        if (src->b) {
            if (copy(net, src->b, 0, dst->b, 0, src->out) != 0)
                goto fail;
        } else if (zero_buffer(net, dst->b, src->out) != 0) {
            goto fail;
        }
        if (src->bn) {
            /* W' = W * scale (per output row), b' = (b - running_mean) * scale + beta */
            clnorm_status s = clnorm_batchnorm_fold_linear(src->bn, dst->w, dst->b, src->in, 0,
                                                           NULL, NULL);
            if (s != CLNORM_OK) {
                fail_clnorm(net, "clnorm_batchnorm_fold_linear", s);
                goto fail;
            }
        }
    }
    cl_int code = clFinish(net->queue);
    if (code != CL_SUCCESS) {
        fail_cl(net, "clFinish", code);
        goto fail;
    }
    *folded = f;
    return 0;
fail:
    mlp_release(f);
    return -1;
}

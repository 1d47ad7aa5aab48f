#include "train.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

uint64_t rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int fail(train_env *env, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(train_env *env, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(env->err, sizeof env->err, fmt, ap);
    va_end(ap);
    return -1;
}

static int fail_net(train_env *env, const mlp *net)
{
    return fail(env, "%s", mlp_error(net));
}

static int fail_cl(train_env *env, const char *what, cl_int code)
{
    return fail(env, "%s failed: %s", what, clnorm_cl_error_name(code));
}

static void release_mem(cl_mem *m)
{
    if (*m)
        clReleaseMemObject(*m);
    *m = NULL;
}

static int new_buffer(train_env *env, size_t bytes, const void *host, const char *what,
                      cl_mem *out)
{
    cl_int code = CL_SUCCESS;
    cl_mem_flags flags = CL_MEM_READ_WRITE | (host ? CL_MEM_COPY_HOST_PTR : 0);
    *out = clCreateBuffer(env->cl, flags, bytes, (void *)host, &code);
    if (code != CL_SUCCESS) {
        *out = NULL;
        return fail(env, "clCreateBuffer(%s, %zu bytes) failed: %s", what, bytes,
                    clnorm_cl_error_name(code));
    }
    return 0;
}

static int upload_set(train_env *env, const idx_set *set, size_t limit, device_set *out)
{
    out->count = limit && limit < set->count ? limit : set->count;
    out->dim = set->rows * set->cols;
    int *order = malloc(out->count * sizeof(int));
    if (!order)
        return fail(env, "no host memory for %zu indices", out->count);
    for (size_t i = 0; i < out->count; i++)
        order[i] = (int)i;
    int rc = new_buffer(env, out->count * out->dim, set->images, "images", &out->images);
    if (rc == 0)
        rc = new_buffer(env, out->count, set->labels, "labels", &out->labels);
    if (rc == 0)
        rc = new_buffer(env, out->count * sizeof(int), order, "order", &out->order);
    free(order);
    return rc;
}

static void release_set(device_set *set)
{
    release_mem(&set->images);
    release_mem(&set->labels);
    release_mem(&set->order);
}

int env_create(train_env *env, clnorm_context *ctx, const train_kernels *k, const idx_set *train,
               size_t train_limit, const idx_set *test, size_t test_limit, size_t max_rows)
{
    char keep[sizeof env->err];
    memset(env, 0, sizeof *env);
    env->ctx = ctx;
    env->cl = clnorm_context_cl_context(ctx);
    env->queue = clnorm_context_queue(ctx);
    env->k = k;
    env->max_rows = max_rows;
    env->progress = 1;
    if (upload_set(env, train, train_limit, &env->train) != 0 ||
        upload_set(env, test, test_limit, &env->test) != 0)
        goto fail;
    /* input normalization from the training pixels in use */
    double sum = 0.0, sum2 = 0.0;
    const size_t pixels = env->train.count * env->train.dim;
    for (size_t i = 0; i < pixels; i++) {
        double v = train->images[i] / 255.0;
        sum += v;
        sum2 += v * v;
    }
    double mean = sum / (double)pixels, var = sum2 / (double)pixels - mean * mean;
    env->pixel_mean = (float)mean;
    env->pixel_inv_std = (float)(1.0 / sqrt(var > 1e-12 ? var : 1e-12));
    env->slots = env->train.count > env->test.count ? env->train.count : env->test.count;
    if (new_buffer(env, max_rows * env->train.dim * sizeof(float), NULL, "batch", &env->x) != 0 ||
        new_buffer(env, max_rows * sizeof(int), NULL, "batch labels", &env->labels) != 0 ||
        new_buffer(env, env->train.count * sizeof(int), NULL, "permutation", &env->perm) != 0 ||
        new_buffer(env, env->slots * sizeof(float), NULL, "step losses", &env->slot_loss) != 0 ||
        new_buffer(env, env->slots * sizeof(int), NULL, "step counts", &env->slot_correct) != 0)
        goto fail;
    {
        /* defined contents before the first gather (the warm-up runs on them) */
        const float zero_f = 0.0f;
        const cl_int zero_i = 0;
        cl_int fill = clEnqueueFillBuffer(env->queue, env->x, &zero_f, sizeof zero_f, 0,
                                          max_rows * env->train.dim * sizeof(float), 0, NULL, NULL);
        if (fill == CL_SUCCESS)
            fill = clEnqueueFillBuffer(env->queue, env->labels, &zero_i, sizeof zero_i, 0,
                                       max_rows * sizeof(int), 0, NULL, NULL);
        if (fill != CL_SUCCESS) {
            fail_cl(env, "clEnqueueFillBuffer", fill);
            goto fail;
        }
    }
    env->host_loss = malloc(env->slots * sizeof(float));
    env->host_correct = malloc(env->slots * sizeof(int));
    if (!env->host_loss || !env->host_correct) {
        fail(env, "no host memory for %zu step results", env->slots);
        goto fail;
    }
    cl_int code = clFinish(env->queue);
    if (code != CL_SUCCESS) {
        fail_cl(env, "clFinish", code);
        goto fail;
    }
    return 0;
fail:
    memcpy(keep, env->err, sizeof keep);
    env_release(env);
    memcpy(env->err, keep, sizeof keep);
    return -1;
}

void env_release(train_env *env)
{
    if (env->queue)
        clFinish(env->queue);
    release_set(&env->train);
    release_set(&env->test);
    release_mem(&env->x);
    release_mem(&env->labels);
    release_mem(&env->perm);
    release_mem(&env->slot_loss);
    release_mem(&env->slot_correct);
    free(env->host_loss);
    free(env->host_correct);
    env->host_loss = NULL;
    env->host_correct = NULL;
}

/* x, labels = normalized rows index[first .. first + n) of the set */
static int gather(train_env *env, const device_set *set, cl_mem index, size_t first, size_t n)
{
    cl_uint first_u = (cl_uint)first, dim = (cl_uint)set->dim;
    const size_t global[2] = {set->dim, n};
    const kernel_arg args[] = {KARG(set->images),      KARG(set->labels),
                               KARG(index),            KARG(first_u),
                               KARG(dim),              KARG(env->pixel_mean),
                               KARG(env->pixel_inv_std), KARG(env->x),
                               KARG(env->labels)};
    return kernels_launch(env->queue, env->k->gather_batch, "gather_batch", 2, global, 9, args,
                          env->err, sizeof env->err);
}

/* Blocking read of the first n slots. */
static int read_slots(train_env *env, size_t n)
{
    cl_int code = clEnqueueReadBuffer(env->queue, env->slot_loss, CL_TRUE, 0, n * sizeof(float),
                                      env->host_loss, 0, NULL, NULL);
    if (code == CL_SUCCESS)
        code = clEnqueueReadBuffer(env->queue, env->slot_correct, CL_TRUE, 0, n * sizeof(int),
                                   env->host_correct, 0, NULL, NULL);
    return code == CL_SUCCESS ? 0 : fail_cl(env, "clEnqueueReadBuffer(step results)", code);
}

int env_train_epoch(train_env *env, mlp *net, const sgd_settings *sgd, uint64_t *rng,
                    size_t *step, const char *label, epoch_stats *stats, float *step_losses)
{
    memset(stats, 0, sizeof *stats);
    stats->first_bad_step = -1;
    const double t0 = now_seconds();
    const size_t n = env->train.count, batch = sgd->batch;
    if (batch < 2 || batch > env->max_rows || batch > n)
        return fail(env, "batch size %zu: must be 2..%zu (and at most the %zu training examples)",
                    batch, env->max_rows, n);
    const size_t steps = n / batch;
    /* this epoch's order */
    int *perm = malloc(n * sizeof(int));
    if (!perm)
        return fail(env, "no host memory for the permutation");
    for (size_t i = 0; i < n; i++)
        perm[i] = (int)i;
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)(rng_next(rng) % (i + 1));
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    cl_int code = clEnqueueWriteBuffer(env->queue, env->perm, CL_TRUE, 0, n * sizeof(int), perm,
                                       0, NULL, NULL);
    free(perm);
    if (code != CL_SUCCESS)
        return fail_cl(env, "clEnqueueWriteBuffer(permutation)", code);

    const int tty = isatty(STDERR_FILENO);
    double last_note = t0;
    size_t done = steps; /* fewer when the loss went non-finite */
    for (size_t s = 0; s < steps; s++) {
        double lr = sgd->lr;
        if (sgd->cosine && sgd->total_steps > 0)
            lr = sgd->lr * 0.5 * (1.0 + cos(3.141592653589793 * (double)*step /
                                            (double)sgd->total_steps));
        if (gather(env, &env->train, env->perm, s * batch, batch) != 0)
            return -1;
        if (mlp_forward(net, env->x, batch, CLNORM_TRAINING) != 0 ||
            mlp_loss(net, env->labels, batch, 1, env->slot_loss, env->slot_correct, s) != 0 ||
            mlp_backward(net, env->x, batch) != 0 ||
            mlp_sgd_step(net, (float)lr, (float)sgd->momentum, (float)sgd->weight_decay) != 0)
            return fail_net(env, net);
        (*step)++;
        if ((s + 1) % 64 == 0 || s + 1 == steps) {
            /* Reading this step's loss (one scalar) keeps the queue short, the progress honest,
             * and ends a diverged training early: once the loss is not finite, it stays so. */
            float last = 0.0f;
            code = clEnqueueReadBuffer(env->queue, env->slot_loss, CL_TRUE, s * sizeof(float),
                                       sizeof(float), &last, 0, NULL, NULL);
            if (code != CL_SUCCESS)
                return fail_cl(env, "clEnqueueReadBuffer(step loss)", code);
            if (!isfinite(last)) {
                done = s + 1;
                break;
            }
            double t = now_seconds();
            if (env->progress && tty) {
                fprintf(stderr, "\r\033[K  %s: step %zu/%zu, %.0f s", label, s + 1, steps, t - t0);
                fflush(stderr);
            } else if (env->progress && t - last_note >= 30.0) {
                fprintf(stderr, "  %s: step %zu/%zu, %.0f s\n", label, s + 1, steps, t - t0);
                last_note = t;
            }
        }
    }
    if (env->progress && tty) {
        fprintf(stderr, "\r\033[K");
        fflush(stderr);
    }
    if (read_slots(env, done) != 0)
        return -1;
    double loss = 0.0;
    size_t correct = 0;
    for (size_t s = 0; s < done; s++) {
        double step_loss = env->host_loss[s] / (double)batch;
        if (!isfinite(step_loss) && stats->first_bad_step < 0)
            stats->first_bad_step = (long)s;
        if (step_losses)
            step_losses[s] = (float)step_loss;
        loss += step_loss;
        correct += (size_t)env->host_correct[s];
    }
    stats->steps = done;
    stats->train_loss = loss / (double)done;
    stats->train_acc = (double)correct / (double)(done * batch);
    stats->seconds = now_seconds() - t0;
    return 0;
}

/* The chunks of an evaluation: full ones of `batch`; in training mode a last chunk of one example
 * joins the one before. Returns the number of chunks; first/size of chunk i via chunk_at. */
static size_t chunk_count(size_t count, size_t batch, clnorm_mode mode)
{
    size_t chunks = (count + batch - 1) / batch;
    if (mode == CLNORM_TRAINING && chunks > 1 && count % batch == 1)
        chunks--;
    return chunks;
}

static void chunk_at(size_t count, size_t batch, size_t chunks, size_t i, size_t *first,
                     size_t *size)
{
    *first = i * batch;
    *size = i + 1 == chunks ? count - *first : batch;
}

int env_evaluate(train_env *env, mlp *net, size_t batch, clnorm_mode mode, double *loss,
                 double *accuracy)
{
    const size_t count = env->test.count;
    if (batch == 0 || batch + 1 > env->max_rows)
        return fail(env, "evaluation batch %zu: must be 1..%zu", batch, env->max_rows - 1);
    if (mode == CLNORM_TRAINING && (batch < 2 || count < 2))
        return fail(env, "training-mode evaluation needs chunks of at least 2 examples");
    const size_t chunks = chunk_count(count, batch, mode);
    for (size_t i = 0; i < chunks; i++) {
        size_t first, size;
        chunk_at(count, batch, chunks, i, &first, &size);
        if (gather(env, &env->test, env->test.order, first, size) != 0)
            return -1;
        if (mlp_forward(net, env->x, size, mode) != 0 ||
            mlp_loss(net, env->labels, size, 0, env->slot_loss, env->slot_correct, i) != 0)
            return fail_net(env, net);
    }
    if (read_slots(env, chunks) != 0)
        return -1;
    double sum = 0.0;
    size_t correct = 0;
    for (size_t i = 0; i < chunks; i++) {
        sum += env->host_loss[i];
        correct += (size_t)env->host_correct[i];
    }
    *loss = sum / (double)count;
    *accuracy = (double)correct / (double)count;
    return 0;
}

int env_test_logits(train_env *env, mlp *net, size_t batch, float *logits)
{
    const size_t count = env->test.count, classes = mlp_get_shape(net)->classes;
    const size_t chunks = chunk_count(count, batch, CLNORM_EVALUATION);
    for (size_t i = 0; i < chunks; i++) {
        size_t first, size;
        chunk_at(count, batch, chunks, i, &first, &size);
        if (gather(env, &env->test, env->test.order, first, size) != 0)
            return -1;
        if (mlp_forward(net, env->x, size, CLNORM_EVALUATION) != 0)
            return fail_net(env, net);
        cl_int code = clEnqueueReadBuffer(env->queue, mlp_logits(net), CL_TRUE, 0,
                                          size * classes * sizeof(float),
                                          logits + first * classes, 0, NULL, NULL);
        if (code != CL_SUCCESS)
            return fail_cl(env, "clEnqueueReadBuffer(logits)", code);
    }
    return 0;
}

int env_time_inference(train_env *env, mlp *net, size_t batch, int passes, double *ms_per_batch)
{
    const size_t count = env->test.count;
    const size_t chunks = chunk_count(count, batch, CLNORM_EVALUATION);
    double best = INFINITY;
    for (int p = 0; p < passes; p++) {
        cl_int code = clFinish(env->queue);
        if (code != CL_SUCCESS)
            return fail_cl(env, "clFinish", code);
        double t0 = now_seconds();
        for (size_t i = 0; i < chunks; i++) {
            size_t first, size;
            chunk_at(count, batch, chunks, i, &first, &size);
            if (gather(env, &env->test, env->test.order, first, size) != 0)
                return -1;
            if (mlp_forward(net, env->x, size, CLNORM_EVALUATION) != 0)
                return fail_net(env, net);
        }
        code = clFinish(env->queue);
        if (code != CL_SUCCESS)
            return fail_cl(env, "clFinish", code);
        double t = (now_seconds() - t0) / (double)chunks;
        if (t < best)
            best = t;
    }
    *ms_per_batch = best * 1e3;
    return 0;
}

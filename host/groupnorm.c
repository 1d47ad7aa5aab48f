/* Layer, RMS, group and instance normalization: one engine for "group normalization of an
 * (N, C, HW) tensor" (see kernels/groupnorm.cl), and the public calls that map onto it. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "batchnorm_internal.h"

enum { GN_FORWARD = 0, GN_BACKWARD = 1 }; /* as in kernels/groupnorm.cl */

typedef struct gn_problem {
    const char *name; /* for messages: "layernorm", ... */
    size_t n, c, spatial, groups;
    bool channels_last, rms;
    size_t rows;  /* R = N * groups: one set of statistics each */
    size_t total; /* elements */
} gn_problem;

/* ---- validation ------------------------------------------------------------------------------ */

static clnorm_status finish_problem(clnorm_context *ctx, gn_problem *pb)
{
    size_t bytes;
    clnorm_status status = check_channel_count(ctx, pb->spatial == 1 && pb->groups == 1 ? "cols" : "shape->c", pb->c);
    if (status == CLNORM_OK)
        status = checked_mul(ctx, pb->n, pb->groups, "rows x groups", &pb->rows);
    if (status == CLNORM_OK)
        status = checked_mul(ctx, pb->total, sizeof(float), "tensor size in bytes", &bytes);
    if (status != CLNORM_OK)
        return status;
    if (bytes > ctx->dev.max_alloc_bytes)
        return set_error(ctx, CLNORM_UNSUPPORTED,
                         "a tensor of %zu bytes exceeds the device's largest buffer (%llu bytes)",
                         bytes, (unsigned long long)ctx->dev.max_alloc_bytes);
    return CLNORM_OK;
}

/* rows x cols, as (N = rows, C = cols, HW = 1, G = 1). */
static clnorm_status row_problem(clnorm_context *ctx, const char *name, size_t rows, size_t cols,
                                 bool rms, gn_problem *pb)
{
    memset(pb, 0, sizeof *pb);
    pb->name = name;
    if (cols == 0)
        return set_error(ctx, CLNORM_INVALID_SHAPE, "%s: cols (the normalized size) is 0", name);
    pb->n = rows;
    pb->c = cols;
    pb->spatial = 1;
    pb->groups = 1;
    pb->rms = rms;
    clnorm_status status = checked_mul(ctx, rows, cols, "rows x cols", &pb->total);
    return status == CLNORM_OK ? finish_problem(ctx, pb) : status;
}

static clnorm_status group_problem(clnorm_context *ctx, const char *name,
                                   const clnorm_shape *shape, size_t groups, gn_problem *pb)
{
    memset(pb, 0, sizeof *pb);
    pb->name = name;
    bn_geometry g;
    clnorm_status status = bn_check_shape(ctx, shape, &g);
    if (status != CLNORM_OK)
        return status;
    if (groups == 0 || g.c % groups != 0)
        return set_error(ctx, CLNORM_INVALID_SHAPE,
                         "%s: %zu channels cannot be divided into %zu groups", name, g.c, groups);
    pb->n = g.n;
    pb->c = g.c;
    pb->spatial = g.spatial;
    pb->groups = groups;
    pb->channels_last = g.layout == CLNORM_CHANNELS_LAST;
    pb->total = g.total;
    return finish_problem(ctx, pb);
}

static clnorm_status check_forward_buffers(clnorm_context *ctx, const gn_problem *pb,
                                           const clnorm_norm_buffers *b)
{
    if (!b)
        return set_error(ctx, CLNORM_INVALID_ARGUMENT, "buffers is NULL");
    const size_t bytes = pb->total * sizeof(float), per_row = pb->rows * sizeof(float),
                 per_channel = pb->c * sizeof(float);
    clnorm_status status;
    TRY(check_buffer(ctx, b->x, "x", bytes, false));
    TRY(check_buffer(ctx, b->y, "y", bytes, false));
    TRY(check_buffer(ctx, b->residual, "residual", bytes, true));
    TRY(check_buffer(ctx, b->h, "h (x + residual)", bytes, !b->residual));
    if (b->residual && b->y == b->x)
        return set_error(ctx, CLNORM_INVALID_ARGUMENT,
                         "%s: y may not be x when a residual is added (x is read twice)", pb->name);
    TRY(check_buffer(ctx, b->weight, "weight", per_channel, true));
    TRY(check_buffer(ctx, b->bias, "bias", per_channel, true));
    if (pb->rms && (b->bias || b->mean))
        return set_error(ctx, CLNORM_INVALID_ARGUMENT,
                         "%s: RMSNorm has no bias and no mean: pass NULL", pb->name);
    TRY(check_buffer(ctx, b->mean, "mean", per_row, true));
    TRY(check_buffer(ctx, b->rstd, "rstd", per_row, true));
fail:
    return status;
}

static clnorm_status check_grad_buffers(clnorm_context *ctx, const gn_problem *pb,
                                        const clnorm_norm_grad_buffers *b)
{
    if (!b)
        return set_error(ctx, CLNORM_INVALID_ARGUMENT, "buffers is NULL");
    const size_t bytes = pb->total * sizeof(float), per_row = pb->rows * sizeof(float),
                 per_channel = pb->c * sizeof(float);
    clnorm_status status;
    TRY(check_buffer(ctx, b->x, "x", bytes, false));
    TRY(check_buffer(ctx, b->dy, "dy", bytes, false));
    TRY(check_buffer(ctx, b->dx, "dx", bytes, false));
    TRY(check_buffer(ctx, b->dh_in, "dh_in", bytes, true));
    TRY(check_buffer(ctx, b->weight, "weight", per_channel, true));
    if (pb->rms && (b->dbias || b->mean))
        return set_error(ctx, CLNORM_INVALID_ARGUMENT,
                         "%s: RMSNorm has no bias and no mean: pass NULL", pb->name);
    TRY(check_buffer(ctx, b->mean, "mean (from the forward)", per_row, pb->rms));
    TRY(check_buffer(ctx, b->rstd, "rstd (from the forward)", per_row, false));
    TRY(check_buffer(ctx, b->dweight, "dweight", per_channel, true));
    TRY(check_buffer(ctx, b->dbias, "dbias", per_channel, true));
fail:
    return status;
}

/* ---- the engine -------------------------------------------------------------------------------- */

static clnorm_status enqueue_apply(clnorm_context *ctx, launch_chain *chain,
                                   const program_entry *prog, const gn_problem *pb, int mode,
                                   cl_mem x, cl_mem addend, cl_mem dy, cl_mem extra, cl_mem stat_a,
                                   cl_mem stat_b, cl_mem weight, cl_mem bias, cl_mem out,
                                   cl_mem out2)
{
    size_t global, chunk, local = (size_t)prog->work_group_size;
    cl_int contiguous;
    const size_t vec = (size_t)ctx->params.vector_width;
    /* segments as gn_apply walks them: rows of C channels, or channels-first planes */
    const size_t seg_len = pb->channels_last || pb->spatial == 1 ? pb->c : pb->spatial;
    elementwise_grid(ctx, prog, pb->total / seg_len * ceil_div(seg_len, vec), &global, &chunk,
                     &contiguous);
    cl_ulong total = pb->total, c = pb->c, hw = pb->spatial, g = pb->groups, ch = chunk;
    cl_ulong item_stride = contiguous ? chunk : 1, step = contiguous ? 1 : global;
    cl_int cl = pb->channels_last, m = mode;
    kernel_arg args[] = {ARG(x),      ARG(addend), ARG(dy),    ARG(extra),    ARG(stat_a),
                         ARG(stat_b), ARG(weight), ARG(bias),  ARG(out),      ARG(out2),
                         ARG(total),  ARG(c),      ARG(hw),    ARG(g),        ARG(cl),
                         ARG(m),      ARG(ch),     ARG(item_stride), ARG(step)};
    return chain_launch(ctx, chain, prog, program_kernel_index(FAMILY_NORM, "gn_apply"), args,
                        ARRAY_SIZE(args), 1, &global, &local);
}

/* Stage 1 over the groups: statistics, or the sums of the backward, into `sets` (reserved by
 * the caller for group_splits() sets). */
static size_t group_splits(const clnorm_context *ctx, const program_entry *prog,
                           const gn_problem *pb)
{
    const size_t pairs = ceil_div(pb->total / pb->rows, 2);
    return stage1_splits(ctx, prog, (size_t)prog->work_group_size, pairs, pb->rows);
}

static clnorm_status enqueue_group_stats(clnorm_context *ctx, launch_chain *chain,
                                         const program_entry *prog, const gn_problem *pb,
                                         cl_mem x, cl_mem addend, cl_mem pivots, cl_mem sets)
{
    const size_t wg = (size_t)prog->work_group_size, s = group_splits(ctx, prog, pb);
    cl_ulong c = pb->c, hw = pb->spatial, g = pb->groups;
    cl_int cl = pb->channels_last;
    cl_uint splits = (cl_uint)s;
    kernel_arg args[] = {ARG(x),  ARG(addend), ARG(c),    ARG(hw),   ARG(g),
                         ARG(cl), ARG(splits), ARG(sets), ARG(pivots)};
    size_t global[2] = {s * wg, pb->rows}, local[2] = {wg, 1};
    return chain_launch(ctx, chain, prog, program_kernel_index(FAMILY_NORM, "gn_stats"), args,
                        ARRAY_SIZE(args), 2, global, local);
}

/* Stage 1 through batch norm's, per (sample, channel): channels-first planes as channels, or
 * channels-last rows split by sample; then gn_combine per group into out_groups (count | a | b,
 * R each) and, for the gradients, per channel into out_channels (dbias and dweight sums).
 * Statistics: the pivots (pivots, C or N x C floats) per channel in, per group out
 * (out_pivots, R floats). */
static clnorm_status enqueue_sample_partials(clnorm_context *ctx, launch_chain *chain,
                                             const program_entry *prog, const gn_problem *pb,
                                             int mode, cl_mem x, cl_mem dy, cl_mem weight,
                                             cl_mem mean, cl_mem rstd, cl_mem pivots,
                                             cl_mem out_groups, cl_mem out_pivots,
                                             cl_mem out_channels)
{
    const bool by_rows = pb->channels_last || pb->spatial == 1;
    bn_geometry g = {.layout = by_rows ? CLNORM_CHANNELS_LAST : CLNORM_CHANNELS_FIRST,
                     .n = by_rows ? pb->n : 1,
                     .c = by_rows ? pb->c : pb->n * pb->c,
                     .spatial = pb->spatial,
                     .rows = by_rows ? pb->n * pb->spatial : pb->spatial,
                     .total = pb->total,
                     .bytes = pb->total * sizeof(float)};
    stage1_inputs in = {.x = x,
                        .dy = dy,
                        .mean = mean,
                        .pivots = pivots,
                        .mode = mode,
                        .samples = by_rows ? pb->n : 1,
                        .mean_group = pb->c / pb->groups};
    cl_mem sets;
    cl_uint num_sets;
    clnorm_status status;
    TRY(bn_enqueue_stage1(ctx, chain, prog, &g, &in, &sets, &num_sets));
    /* where part j of (n, c) is: sets of 3 x g.c floats */
    cl_uint k = by_rows ? num_sets / (cl_uint)pb->n : num_sets;
    cl_ulong part_stride = by_rows ? 3 * pb->c : 3 * pb->n * pb->c;
    cl_ulong sample_stride = by_rows ? (cl_ulong)k * 3 * pb->c : pb->c;
    cl_ulong comp = g.c, pivot_stride = by_rows ? 0 : pb->c;
    cl_ulong n = pb->n, c = pb->c, groups = pb->groups;
    cl_int m = mode;
    kernel_arg args[] = {ARG(sets),  ARG(k),          ARG(part_stride), ARG(sample_stride),
                         ARG(comp),  ARG(pivots),     ARG(pivot_stride), ARG(n),
                         ARG(c),     ARG(groups),     ARG(m),           ARG(weight),
                         ARG(rstd),  ARG(out_groups), ARG(out_pivots), ARG(out_channels)};
    const int kernel = program_kernel_index(FAMILY_NORM, "gn_combine");
    size_t local = per_item_local(prog, kernel);
    size_t global = round_up(pb->rows > pb->c ? pb->rows : pb->c, local);
    return chain_launch(ctx, chain, prog, kernel, args, ARRAY_SIZE(args), 1, &global, &local);
fail:
    return status;
}

/* Groups are contiguous rows in channels-first (and whenever there is no spatial extent): batch
 * norm's vectorized stage 1 then serves, with each group as one channel of one plane. */
static bool groups_are_rows(const gn_problem *pb)
{
    return !pb->channels_last || pb->spatial == 1;
}

/* ... and with one group and no spatial extent (LayerNorm, RMSNorm), position p uses weight[p]. */
static bool plain_rows(const gn_problem *pb)
{
    return pb->groups == 1 && pb->spatial == 1;
}

/* Whether layer and RMS norm rows go to the cached row kernels (gn_forward_rows_cached,
 * gn_backward_rows_cached): work-groups of many (GPUs), rows of at most cached_kib KiB per
 * input, where the register kernels do not serve (the caller checks). */
static bool cached_row(const clnorm_context *ctx, const program_entry *prog, const gn_problem *pb)
{
    return plain_rows(pb) && prog->work_group_size > 1 &&
           pb->c * sizeof(float) <= (size_t)ctx->params.cached_kib * 1024;
}

/* Launches a one-launch row kernel (layer and RMS norm, work-groups of many): the register
 * kernel `name`'s build for runs of `width` work-items, whose last argument is that width, or
 * with width 0 the cached one, `name`_cached, a row per work-group, without it. */
static clnorm_status enqueue_row_kernel(clnorm_context *ctx, launch_chain *chain,
                                        const program_entry *prog, const gn_problem *pb,
                                        const char *name, size_t width, size_t row_vectors,
                                        const kernel_arg *args, size_t nargs)
{
    char cached_name[64];
    snprintf(cached_name, sizeof cached_name, "%s_cached", name);
    size_t local = (size_t)prog->work_group_size;
    size_t global = width ? ceil_div(pb->rows, local / width) * local : pb->rows * local;
    return chain_launch(ctx, chain, prog,
                        width ? bn_register_kernel(ctx, name, width, row_vectors)
                              : program_kernel_index(FAMILY_NORM, cached_name),
                        args, width ? nargs : nargs - 1, 1, &global, &local);
}

static bn_geometry rows_geometry(const gn_problem *pb, clnorm_layout layout)
{
    bn_geometry g = {.layout = layout, .total = pb->total, .bytes = pb->total * sizeof(float)};
    if (layout == CLNORM_CHANNELS_FIRST) { /* one plane of rows x D */
        g.n = 1;
        g.c = pb->rows;
        g.spatial = pb->total / pb->rows;
        g.rows = g.spatial;
    } else { /* rows of C channels: the column sums */
        g.n = pb->rows;
        g.c = pb->c;
        g.spatial = 1;
        g.rows = pb->rows;
    }
    return g;
}

/* Groups per work-item of the one-launch kernels (CPUs), where a group is one contiguous row of
 * whole planes or channels and `tensors` of its rows fit in cache; 0 where they don't serve. */
static size_t fused_tile(const clnorm_context *ctx, const program_entry *prog,
                         const gn_problem *pb, size_t tensors)
{
    const bn_geometry group_rows = rows_geometry(pb, CLNORM_CHANNELS_FIRST);
    const bool contiguous = pb->spatial == 1 ? pb->groups == 1 : !pb->channels_last;
    return contiguous ? bn_fused_tile(ctx, prog, &group_rows, tensors) : 0;
}

/* The channels-last one-launch forward (CPUs: gn_forward_sample), a work-item per sample: where
 * there are two samples per compute unit, and a sample of every input (x [and the residual])
 * fits in bn_cache_share. */
static bool sample_fused(const clnorm_context *ctx, const program_entry *prog,
                         const gn_problem *pb, size_t tensors)
{
    const uint64_t sample_bytes = (uint64_t)pb->spatial * pb->c * sizeof(float) * tensors;
    return prog->work_group_size == 1 && pb->channels_last && pb->spatial > 1 &&
           pb->n >= 2 * (size_t)ctx->dev.compute_units && sample_bytes <= bn_cache_share(ctx);
}

/* Forward. With running_mean (InstanceNorm), the per-instance statistics also update them. */
static clnorm_status group_forward(clnorm_context *ctx, const gn_problem *pb, double eps,
                                   const clnorm_norm_buffers *b, double momentum,
                                   cl_mem running_mean, cl_mem running_var, cl_uint num_wait,
                                   const cl_event *wait, cl_event *event)
{
    launch_chain chain;
    chain_begin(&chain, num_wait, wait);
    const program_entry *prog;
    cl_mem sets, pivots, group_pivots, coef, mean = b->mean, rstd = b->rstd, instance_sets = NULL;
    cl_uint num_sets;
    clnorm_status status;
    const size_t per_row = pb->rows * sizeof(float);
    TRY(program_get(ctx, FAMILY_NORM, &prog));
    /* pivots: one per group, or per channel (or plane) for the per-sample partials */
    TRY(workspace_reserve(ctx, WS_PIVOTS, (pb->rows > pb->n * pb->c ? pb->rows : pb->n * pb->c) *
                                              sizeof(float),
                          &pivots));
    group_pivots = pivots;
    TRY(workspace_reserve(ctx, WS_COEF, 4 * per_row, &coef));
    if (!mean && !pb->rms)
        TRY(workspace_reserve(ctx, WS_MEAN, per_row, &mean));
    if (!rstd)
        TRY(workspace_reserve(ctx, WS_RSTD, per_row, &rstd));
    if (running_mean)
        TRY(workspace_reserve(ctx, WS_SETS, 3 * per_row, &instance_sets));
    const bn_geometry group_rows = rows_geometry(pb, CLNORM_CHANNELS_FIRST);
    /* layer and RMS norm: a row in the registers of a run of work-items (GPUs; it writes no
     * running statistics' sets) */
    const size_t row_vectors = ceil_div(pb->c, (size_t)ctx->params.vector_width);
    const size_t width =
        plain_rows(pb) && !running_mean ? bn_register_width(ctx, prog, row_vectors) : 0;
    /* ... or past them, a row per work-group re-read from the cache (not with the residual: on
     * an H200 that took 1.07-1.14x the time of the general path) */
    const bool cached = !width && !running_mean && !b->residual && cached_row(ctx, prog, pb);
    const size_t tile = width || cached ? 0 : fused_tile(ctx, prog, pb, b->residual ? 2 : 1);
    const bool by_sample =
        !width && !cached && !tile && sample_fused(ctx, prog, pb, b->residual ? 2 : 1);
    if (width || cached) {
        cl_ulong rows = pb->rows, cols = pb->c;
        cl_uint w = (cl_uint)width;
        float e = (float)eps;
        cl_int flags = pb->rms ? CHF_RMS : 0;
        cl_mem mean_out = pb->rms ? NULL : mean;
        kernel_arg args[] = {ARG(b->x),  ARG(b->residual), ARG(b->weight), ARG(b->bias),
                             ARG(mean_out), ARG(rstd),     ARG(b->y),      ARG(b->h),
                             ARG(rows),  ARG(cols),        ARG(e),         ARG(flags),
                             ARG(w)};
        TRY(enqueue_row_kernel(ctx, &chain, prog, pb, "gn_forward_rows", width, row_vectors, args,
                               ARRAY_SIZE(args)));
    } else if (tile) {
        cl_ulong rows = pb->rows, c = pb->c, hw = pb->spatial, groups = pb->groups;
        cl_uint t = (cl_uint)tile;
        float e = (float)eps;
        cl_int flags = (pb->rms ? CHF_RMS : 0) |
                       (bn_streams_output(ctx, prog, pb->total) ? CHF_STREAM : 0);
        cl_mem mean_out = pb->rms ? NULL : mean;
        kernel_arg args[] = {ARG(b->x),     ARG(b->residual), ARG(b->weight), ARG(b->bias),
                             ARG(mean_out), ARG(rstd),        ARG(instance_sets), ARG(b->y),
                             ARG(b->h),     ARG(rows),        ARG(c),          ARG(hw),
                             ARG(groups),   ARG(t),           ARG(e),          ARG(flags)};
        size_t local = 1, global = ceil_div(pb->rows, tile);
        const char *name = b->residual ? "gn_forward_fused_residual" : "gn_forward_fused";
        TRY(chain_launch(ctx, &chain, prog, program_kernel_index(FAMILY_NORM, name),
                         args, ARRAY_SIZE(args), 1, &global, &local));
    } else if (by_sample) {
        cl_ulong n = pb->n, c = pb->c, hw = pb->spatial, groups = pb->groups;
        float e = (float)eps;
        TRY(workspace_reserve(ctx, WS_PARTIALS, pb->n * 3 * pb->c * sizeof(float), &sets));
        kernel_arg args[] = {ARG(b->x),    ARG(b->residual), ARG(b->weight), ARG(b->bias),
                             ARG(mean),    ARG(rstd),        ARG(instance_sets), ARG(b->y),
                             ARG(b->h),    ARG(n),           ARG(c),          ARG(hw),
                             ARG(groups),  ARG(e),           ARG(sets)};
        size_t local = 1, global = pb->n;
        TRY(chain_launch(ctx, &chain, prog, program_kernel_index(FAMILY_NORM, "gn_forward_sample"),
                         args, ARRAY_SIZE(args), 1, &global, &local));
    } else if (groups_are_rows(pb)) {
        stage1_inputs in = {
            .x = b->x, .addend = b->residual, .pivots = pivots, .mode = REDUCE_STATS};
        TRY(bn_enqueue_stage1(ctx, &chain, prog, &group_rows, &in, &sets, &num_sets));
    } else if (!b->residual) {
        /* channels-last groups: per (sample, channel), merged per group with absolute means */
        TRY(workspace_reserve(ctx, WS_GROUPS, 3 * per_row, &sets));
        TRY(workspace_reserve(ctx, WS_GROUP_PIVOTS, per_row, &group_pivots));
        TRY(enqueue_sample_partials(ctx, &chain, prog, pb, REDUCE_STATS, b->x, NULL, NULL, NULL,
                                    NULL, pivots, sets, group_pivots, NULL));
        num_sets = 1;
    } else {
        num_sets = (cl_uint)group_splits(ctx, prog, pb);
        TRY(workspace_reserve(ctx, WS_PARTIALS, num_sets * 3 * per_row, &sets));
        TRY(enqueue_group_stats(ctx, &chain, prog, pb, b->x, b->residual, pivots, sets));
    }
    channel_args ca = {.sets = sets,
                       .num_sets = num_sets,
                       .pivots = group_pivots,
                       .mode = CH_FINALIZE,
                       .eps = (float)eps,
                       .flags = pb->rms ? CHF_RMS : 0,
                       .save_mean = pb->rms ? NULL : mean,
                       .save_invstd = rstd,
                       .out_sets = instance_sets,
                       .coef = coef};
    const bool one_launch = width || cached || tile || by_sample;
    if (!one_launch)
        TRY(bn_enqueue_channel(ctx, &chain, prog, pb->rows, &ca));
    if (running_mean) {
        cl_ulong n = pb->n, c = pb->c;
        float m = (float)momentum;
        kernel_arg args[] = {ARG(instance_sets), ARG(n), ARG(c), ARG(m), ARG(running_mean),
                             ARG(running_var)};
        const int kernel = program_kernel_index(FAMILY_NORM, "in_running");
        size_t local = per_item_local(prog, kernel), global = round_up(pb->c, local);
        TRY(chain_launch(ctx, &chain, prog, kernel, args, ARRAY_SIZE(args), 1, &global, &local));
    }
    if (!one_launch)
        TRY(enqueue_apply(ctx, &chain, prog, pb, GN_FORWARD, b->x, b->residual, NULL, NULL,
                          pb->rms ? NULL : mean, rstd, b->weight, b->bias, b->y, b->h));
    chain_end(ctx, &chain, event, true);
    return CLNORM_OK;
fail:
    chain_abandon(&chain);
    return status;
}

/* dweight and dbias from per-channel sets (count | sum dy | sum dy * xhat): stage 2 with no
 * statistics (mean 0, invstd 1) gives dgamma = sum dy * xhat, dbeta = sum dy. */
static clnorm_status enqueue_param_finish(clnorm_context *ctx, launch_chain *chain,
                                          const program_entry *prog, const gn_problem *pb,
                                          const clnorm_norm_grad_buffers *b, cl_mem sets,
                                          cl_uint num_sets, bool uniform_counts, cl_mem coef)
{
    channel_args pa = {.sets = sets,
                       .num_sets = num_sets,
                       .uniform_counts = uniform_counts,
                       .mode = CH_GRAD,
                       .coef = coef,
                       .dgamma = b->dweight,
                       .dbeta = b->dbias};
    return bn_enqueue_channel(ctx, chain, prog, pb->c, &pa);
}

static clnorm_status group_backward(clnorm_context *ctx, const gn_problem *pb,
                                    const clnorm_norm_grad_buffers *b, cl_uint num_wait,
                                    const cl_event *wait, cl_event *event)
{
    launch_chain chain;
    chain_begin(&chain, num_wait, wait);
    const program_entry *prog;
    cl_mem sets, coef;
    cl_uint num_sets;
    clnorm_status status;
    const bool params = b->dweight || b->dbias;
    TRY(program_get(ctx, FAMILY_NORM, &prog));
    TRY(workspace_reserve(ctx, WS_COEF, 4 * (pb->rows > pb->c ? pb->rows : pb->c) * sizeof(float),
                          &coef));
    const size_t fitting_rows = fused_tile(ctx, prog, pb, 2);
    if (fitting_rows) {
        /* one launch (CPUs): sums, coefficients and dx per group, a group at a time; then each
         * work-item's per-channel sums merge into dweight and dbias. Four work-items per compute
         * unit: each writes a set of 3C sums (with a work-item per few groups, layer norm's
         * 16384 columns measured 3.5x slower). */
        const size_t tile = ceil_div(pb->rows, 4 * (size_t)ctx->dev.compute_units);
        /* Rows of channels whose per-channel sums and weight (3C floats) would not stay in half
         * a 32 KiB L1 take their sums up to 4 rows at a time, loading and storing the sums once
         * per group: as many rows as stay in the cache for the dx pass after (fused_tile's
         * count). On a 2-core EPYC (PoCL), by the median of in-process A/Bs: rows of 4096 took
         * 0.92x the time, of 16384 (2 rows) 0.97x; rows of 1024, whose sums stay in L1, 1.08x
         * with 4 rows, so they keep a row at a time. */
        const bool sums_leave_l1 = 3 * pb->c * sizeof(float) > 16 * 1024;
        /* (the kernel rounds it down to a group size it takes: 1, 2 or 4) */
        const cl_uint rows_at_once =
            sums_leave_l1 ? (cl_uint)(fitting_rows < 4 ? fitting_rows : 4) : 1;
        const size_t items = ceil_div(pb->rows, tile);
        cl_mem col_sets = NULL;
        if (params)
            TRY(workspace_reserve(ctx, WS_PARTIALS, items * 3 * pb->c * sizeof(float),
                                  &col_sets));
        cl_ulong rows = pb->rows, c = pb->c, hw = pb->spatial, groups = pb->groups;
        cl_uint t = (cl_uint)tile;
        cl_int flags = (pb->rms ? CHF_RMS : 0) |
                       (bn_streams_output(ctx, prog, pb->total) ? CHF_STREAM : 0);
        kernel_arg args[] = {ARG(b->x),    ARG(b->dy),   ARG(b->dh_in),  ARG(b->mean),
                             ARG(b->rstd), ARG(b->weight), ARG(rows),    ARG(c),
                             ARG(hw),      ARG(groups),  ARG(t),         ARG(rows_at_once),
                             ARG(flags),   ARG(b->dx),   ARG(col_sets)};
        size_t local = 1;
        TRY(chain_launch(ctx, &chain, prog, program_kernel_index(FAMILY_NORM, "gn_backward_fused"),
                         args, ARRAY_SIZE(args), 1, &items, &local));
        if (params)
            /* a work-item's rows count once in every column (layer/RMS norm: rows of channels) */
            TRY(enqueue_param_finish(ctx, &chain, prog, pb, b, col_sets, (cl_uint)items,
                                     pb->spatial == 1, coef));
        chain_end(ctx, &chain, event, true);
        return CLNORM_OK;
    }
    /* parameter gradients first: their stage 2 also writes (unused) coefficients */
    if (plain_rows(pb)) {
        const bn_geometry columns = rows_geometry(pb, CLNORM_CHANNELS_LAST);
        /* the column sums' pass can also take the row sums (CPUs), else a pass of their own */
        cl_mem row_sets = NULL;
        if (params && bn_stage1_writes_rows(prog, &columns))
            TRY(workspace_reserve(ctx, WS_GROUPS, 3 * pb->rows * sizeof(float), &row_sets));
        if (params) {
            /* column sums over the rows, with each row's statistics */
            stage1_inputs in = {.x = b->x,
                                .dy = b->dy,
                                .row_mean = b->mean,
                                .row_rstd = b->rstd,
                                .row_weight = b->weight,
                                .row_sets = row_sets,
                                .mode = REDUCE_GRAD};
            TRY(bn_enqueue_stage1(ctx, &chain, prog, &columns, &in, &sets, &num_sets));
            TRY(enqueue_param_finish(ctx, &chain, prog, pb, b, sets, num_sets, true, coef));
        }
        /* dx in one launch (GPUs): a row in the registers of a run of work-items, or else a row
         * per work-group, re-read from the cache */
        const size_t row_vectors = ceil_div(pb->c, (size_t)ctx->params.vector_width);
        const size_t width = ctx->params.register_backward
                                 ? bn_register_width(ctx, prog, row_vectors)
                                 : 0;
        if (width || cached_row(ctx, prog, pb)) {
            cl_ulong rows = pb->rows, cols = pb->c;
            cl_uint w = (cl_uint)width;
            cl_int flags = pb->rms ? CHF_RMS : 0;
            kernel_arg args[] = {ARG(b->x),    ARG(b->dy),     ARG(b->dh_in), ARG(b->mean),
                                 ARG(b->rstd), ARG(b->weight), ARG(rows),     ARG(cols),
                                 ARG(flags),   ARG(b->dx),     ARG(w)};
            TRY(enqueue_row_kernel(ctx, &chain, prog, pb, "gn_backward_rows", width, row_vectors,
                                   args, ARRAY_SIZE(args)));
            chain_end(ctx, &chain, event, true);
            return CLNORM_OK;
        }
        if (row_sets) {
            sets = row_sets;
            num_sets = 1;
        } else {
            bn_geometry g = rows_geometry(pb, CLNORM_CHANNELS_FIRST);
            stage1_inputs in = {.x = b->x,
                                .dy = b->dy,
                                .plane_weight = b->weight,
                                .mean = b->mean,
                                .mode = REDUCE_GRAD};
            TRY(bn_enqueue_stage1(ctx, &chain, prog, &g, &in, &sets, &num_sets));
        }
    } else {
        /* one pass over x and dy: per (sample, channel) sums, then per group and per channel */
        cl_mem channels = NULL;
        TRY(workspace_reserve(ctx, WS_GROUPS, 3 * pb->rows * sizeof(float), &sets));
        if (params)
            TRY(workspace_reserve(ctx, WS_SETS, 3 * pb->c * sizeof(float), &channels));
        TRY(enqueue_sample_partials(ctx, &chain, prog, pb, REDUCE_GRAD, b->x, b->dy, b->weight,
                                    b->mean, b->rstd, NULL, sets, NULL, channels));
        if (params)
            TRY(enqueue_param_finish(ctx, &chain, prog, pb, b, channels, 1, false, coef));
        num_sets = 1;
    }
    channel_args ca = {.sets = sets,
                       .num_sets = num_sets,
                       .mode = CH_GRAD,
                       .flags = pb->rms ? CHF_RMS : 0,
                       .mean_in = b->mean,
                       .var_in = b->rstd,
                       .var_in_is_invstd = 1,
                       .coef = coef};
    TRY(bn_enqueue_channel(ctx, &chain, prog, pb->rows, &ca));
    TRY(enqueue_apply(ctx, &chain, prog, pb, GN_BACKWARD, b->x, NULL, b->dy, b->dh_in, coef, NULL,
                      b->weight, NULL, b->dx, NULL));
    chain_end(ctx, &chain, event, true);
    return CLNORM_OK;
fail:
    chain_abandon(&chain);
    return status;
}

/* ---- public calls ---------------------------------------------------------------------------------- */

static clnorm_status forward_call(clnorm_context *ctx, gn_problem *pb, clnorm_status shape_status,
                                  double eps, const clnorm_norm_buffers *b, double momentum,
                                  cl_mem running_mean, cl_mem running_var, cl_uint num_wait,
                                  const cl_event *wait, cl_event *event)
{
    clnorm_status status = shape_status;
    if (status != CLNORM_OK)
        return status;
    TRY(check_finite_nonneg(ctx, "eps", eps));
    TRY(check_events(ctx, num_wait, wait));
    TRY(check_forward_buffers(ctx, pb, b));
    if (pb->rows == 0)
        return zero_and_signal(ctx, NULL, NULL, 0, num_wait, wait, event);
    return group_forward(ctx, pb, eps, b, momentum, running_mean, running_var, num_wait, wait,
                         event);
fail:
    return status;
}

static clnorm_status backward_call(clnorm_context *ctx, gn_problem *pb,
                                   clnorm_status shape_status, const clnorm_norm_grad_buffers *b,
                                   cl_uint num_wait, const cl_event *wait, cl_event *event)
{
    clnorm_status status = shape_status;
    if (status != CLNORM_OK)
        return status;
    TRY(check_events(ctx, num_wait, wait));
    TRY(check_grad_buffers(ctx, pb, b));
    if (pb->rows == 0) {
        const cl_mem zeroed[] = {b->dweight, b->dbias};
        const size_t sizes[] = {pb->c * sizeof(float), pb->c * sizeof(float)};
        return zero_and_signal(ctx, zeroed, sizes, 2, num_wait, wait, event);
    }
    return group_backward(ctx, pb, b, num_wait, wait, event);
fail:
    return status;
}

/* The public calls build their problem description in pb_. */
#define LOCKED(ctx, event, call)                                                                   \
    do {                                                                                           \
        gn_problem pb_;                                                                            \
        LOCKED_CALL(ctx, event, call);                                                             \
    } while (0)

clnorm_status clnorm_layernorm_forward(clnorm_context *ctx, size_t rows, size_t cols, double eps,
                                       const clnorm_norm_buffers *buffers, cl_uint num_wait,
                                       const cl_event *wait_list, cl_event *event)
{
    LOCKED(ctx, event,
           forward_call(ctx, &pb_, row_problem(ctx, "layernorm", rows, cols, false, &pb_), eps,
                        buffers, 0, NULL, NULL, num_wait, wait_list, event));
}

clnorm_status clnorm_layernorm_backward(clnorm_context *ctx, size_t rows, size_t cols,
                                        const clnorm_norm_grad_buffers *buffers, cl_uint num_wait,
                                        const cl_event *wait_list, cl_event *event)
{
    LOCKED(ctx, event,
           backward_call(ctx, &pb_, row_problem(ctx, "layernorm", rows, cols, false, &pb_),
                         buffers, num_wait, wait_list, event));
}

clnorm_status clnorm_rmsnorm_forward(clnorm_context *ctx, size_t rows, size_t cols, double eps,
                                     const clnorm_norm_buffers *buffers, cl_uint num_wait,
                                     const cl_event *wait_list, cl_event *event)
{
    LOCKED(ctx, event,
           forward_call(ctx, &pb_, row_problem(ctx, "rmsnorm", rows, cols, true, &pb_), eps,
                        buffers, 0, NULL, NULL, num_wait, wait_list, event));
}

clnorm_status clnorm_rmsnorm_backward(clnorm_context *ctx, size_t rows, size_t cols,
                                      const clnorm_norm_grad_buffers *buffers, cl_uint num_wait,
                                      const cl_event *wait_list, cl_event *event)
{
    LOCKED(ctx, event,
           backward_call(ctx, &pb_, row_problem(ctx, "rmsnorm", rows, cols, true, &pb_), buffers,
                         num_wait, wait_list, event));
}

clnorm_status clnorm_groupnorm_forward(clnorm_context *ctx, const clnorm_shape *shape,
                                       size_t groups, double eps,
                                       const clnorm_norm_buffers *buffers, cl_uint num_wait,
                                       const cl_event *wait_list, cl_event *event)
{
    LOCKED(ctx, event,
           forward_call(ctx, &pb_, group_problem(ctx, "groupnorm", shape, groups, &pb_), eps,
                        buffers, 0, NULL, NULL, num_wait, wait_list, event));
}

clnorm_status clnorm_groupnorm_backward(clnorm_context *ctx, const clnorm_shape *shape,
                                        size_t groups, const clnorm_norm_grad_buffers *buffers,
                                        cl_uint num_wait, const cl_event *wait_list,
                                        cl_event *event)
{
    LOCKED(ctx, event,
           backward_call(ctx, &pb_, group_problem(ctx, "groupnorm", shape, groups, &pb_), buffers,
                         num_wait, wait_list, event));
}

static clnorm_status instance_forward(clnorm_context *ctx, gn_problem *pb,
                                      const clnorm_shape *shape, double eps, double momentum,
                                      int use_input_stats, const clnorm_norm_buffers *b,
                                      cl_mem running_mean, cl_mem running_var, cl_uint num_wait,
                                      const cl_event *wait, cl_event *event)
{
    clnorm_status status = group_problem(ctx, "instancenorm", shape, shape ? shape->c : 1, pb);
    if (status != CLNORM_OK)
        return status;
    if (!(momentum >= 0.0 && momentum <= 1.0))
        return set_error(ctx, CLNORM_INVALID_ARGUMENT, "momentum = %g is outside [0, 1]",
                         momentum);
    if ((!running_mean) != (!running_var))
        return set_error(ctx, CLNORM_INVALID_ARGUMENT,
                         "running_mean and running_var must both be given or both be NULL");
    /* as PyTorch's F.instance_norm: one value per instance has no statistics */
    if (use_input_stats && pb->spatial == 1)
        return set_error(ctx, CLNORM_INVALID_SHAPE,
                         "instancenorm: expected more than 1 spatial element when normalizing by "
                         "the instance statistics, got a spatial size of 1");
    TRY(check_buffer(ctx, running_mean, "running_mean", pb->c * sizeof(float), use_input_stats));
    TRY(check_buffer(ctx, running_var, "running_var", pb->c * sizeof(float), use_input_stats));
    if (!use_input_stats) {
        /* the running statistics per channel: batch norm in evaluation, with its checks */
        if (!b)
            return set_error(ctx, CLNORM_INVALID_ARGUMENT, "buffers is NULL");
        if (b->residual || b->mean || b->rstd)
            return set_error(ctx, CLNORM_INVALID_ARGUMENT,
                             "instancenorm with running statistics takes no residual, mean or "
                             "rstd");
        clnorm_bn_config cfg;
        clnorm_bn_default_config(&cfg);
        cfg.eps = eps;
        clnorm_bn_buffers bb = {.x = b->x,
                                .y = b->y,
                                .gamma = b->weight,
                                .beta = b->bias,
                                .running_mean = running_mean,
                                .running_var = running_var};
        return bn_forward_inference_locked(ctx, shape, &cfg, &bb, num_wait, wait, event);
    }
    return forward_call(ctx, pb, CLNORM_OK, eps, b, momentum, running_mean, running_var, num_wait,
                        wait, event);
fail:
    return status;
}

clnorm_status clnorm_instancenorm_forward(clnorm_context *ctx, const clnorm_shape *shape,
                                          double eps, double momentum, int use_input_stats,
                                          const clnorm_norm_buffers *buffers, cl_mem running_mean,
                                          cl_mem running_var, cl_uint num_wait,
                                          const cl_event *wait_list, cl_event *event)
{
    LOCKED(ctx, event,
           instance_forward(ctx, &pb_, shape, eps, momentum, use_input_stats, buffers,
                            running_mean, running_var, num_wait, wait_list, event));
}

clnorm_status clnorm_instancenorm_backward(clnorm_context *ctx, const clnorm_shape *shape,
                                           const clnorm_norm_grad_buffers *buffers,
                                           cl_uint num_wait, const cl_event *wait_list,
                                           cl_event *event)
{
    LOCKED(ctx, event,
           backward_call(ctx, &pb_,
                         group_problem(ctx, "instancenorm", shape, shape ? shape->c : 1, &pb_),
                         buffers, num_wait, wait_list, event));
}

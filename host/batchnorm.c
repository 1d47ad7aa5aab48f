/* Batch normalization operations: validate -> plan -> enqueue stage 1 (bn_reduce_*),
 * stage 2 (bn_channel) and the elementwise pass (bn_elementwise). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "batchnorm_internal.h"


size_t floor_pow2_size(size_t v)
{
    size_t p = 1;
    while (p * 2 <= v)
        p *= 2;
    return p;
}

void clnorm_bn_default_config(clnorm_bn_config *config)
{
    if (!config)
        return;
    memset(config, 0, sizeof *config);
    config->eps = 1e-5;
    config->momentum = 0.1;
}

/* ---- validation ------------------------------------------------------------------------------ */

/* Per-channel work buffers hold 4 floats a channel (the coefficients): more channels than the
 * device's largest buffer can hold that way is UNSUPPORTED, whatever N (also N = 0), and no
 * size computed from the count can overflow. */
clnorm_status check_channel_count(clnorm_context *ctx, const char *name, size_t channels)
{
    const uint64_t limit = ctx->dev.max_alloc_bytes / (4 * sizeof(float));
    if (channels > limit)
        return set_error(ctx, CLNORM_UNSUPPORTED,
                         "%s = %zu exceeds the %llu channels the device's largest buffer allows",
                         name, channels, (unsigned long long)limit);
    return CLNORM_OK;
}

clnorm_status bn_check_shape(clnorm_context *ctx, const clnorm_shape *shape, bn_geometry *g)
{
    if (!shape)
        return set_error(ctx, CLNORM_INVALID_ARGUMENT, "shape is NULL");
    if (shape->layout != CLNORM_CHANNELS_FIRST && shape->layout != CLNORM_CHANNELS_LAST)
        return set_error(ctx, CLNORM_INVALID_ARGUMENT,
                         "shape->layout = %d is not CLNORM_CHANNELS_FIRST or CLNORM_CHANNELS_LAST",
                         (int)shape->layout);
    if (shape->spatial_rank > CLNORM_MAX_SPATIAL_DIMS)
        return set_error(ctx, CLNORM_INVALID_SHAPE, "shape->spatial_rank = %u exceeds %d",
                         shape->spatial_rank, CLNORM_MAX_SPATIAL_DIMS);
    if (shape->c == 0)
        return set_error(ctx, CLNORM_INVALID_SHAPE, "shape->c (channels) is 0");
    clnorm_status status;
    memset(g, 0, sizeof *g);
    g->n = shape->n;
    g->c = shape->c;
    g->layout = shape->layout;
    g->spatial = 1;
    for (unsigned i = 0; i < shape->spatial_rank; i++) {
        if (shape->spatial[i] == 0)
            return set_error(ctx, CLNORM_INVALID_SHAPE, "shape->spatial[%u] is 0", i);
        status = checked_mul(ctx, g->spatial, shape->spatial[i], "spatial size", &g->spatial);
        if (status != CLNORM_OK)
            return status;
    }
    status = checked_mul(ctx, g->n, g->spatial, "N x spatial size", &g->rows);
    if (status == CLNORM_OK)
        status = checked_mul(ctx, g->rows, g->c, "element count", &g->total);
    if (status == CLNORM_OK)
        status = checked_mul(ctx, g->total, sizeof(float), "tensor size in bytes", &g->bytes);
    if (status == CLNORM_OK) /* (after the products: an overflow is INVALID_SHAPE) */
        status = check_channel_count(ctx, "shape->c", g->c);
    if (status != CLNORM_OK)
        return status;
    if (g->bytes > ctx->dev.max_alloc_bytes)
        return set_error(ctx, CLNORM_UNSUPPORTED,
                         "a tensor of %zu bytes exceeds the device's largest buffer (%llu bytes)",
                         g->bytes, (unsigned long long)ctx->dev.max_alloc_bytes);
    /* the kernels count in fp32: exact to 2^24 values per channel, close enough beyond */
    if (g->rows > (size_t)1 << 40)
        return set_error(ctx, CLNORM_UNSUPPORTED, "%zu values per channel is beyond 2^40",
                         g->rows);
    return CLNORM_OK;
}

clnorm_status bn_check_config(clnorm_context *ctx, const clnorm_bn_config *config)
{
    if (!config)
        return set_error(ctx, CLNORM_INVALID_ARGUMENT, "config is NULL");
    clnorm_status status = check_finite_nonneg(ctx, "config->eps", config->eps);
    if (status != CLNORM_OK)
        return status;
    if (!(config->momentum >= 0.0 && config->momentum <= 1.0))
        return set_error(ctx, CLNORM_INVALID_ARGUMENT, "config->momentum = %g is outside [0, 1]",
                         config->momentum);
    if (config->activation != CLNORM_ACTIVATION_NONE &&
        config->activation != CLNORM_ACTIVATION_RELU)
        return set_error(ctx, CLNORM_INVALID_ARGUMENT, "config->activation = %d is unknown",
                         (int)config->activation);
    return CLNORM_OK;
}

/* Checks a per-channel buffer (C floats). */
static clnorm_status check_channel_buffer(clnorm_context *ctx, cl_mem buf, const char *name,
                                          size_t channels, bool may_be_null)
{
    return check_buffer(ctx, buf, name, channels * sizeof(float), may_be_null);
}

/* ---- plans ------------------------------------------------------------------------------------- */

/* Values per contiguous run a channels-first reduction aims for (see plan_reduce). */
#define PLANE_RUN 2048

typedef struct reduce_plan {
    cl_uint sets, pieces, lanes, per_group, tile;
    cl_uint per_sample; /* channels-last: sets per sample (all of them for one sample) */
    bool whole_rows;    /* channels-last with bn_reduce_rows */
    size_t global[2], local[2];
} reduce_plan;

size_t stage1_splits(const clnorm_context *ctx, const program_entry *prog, size_t parallel,
                     size_t items, size_t reductions)
{
    const size_t target = ctx->dev.compute_units * (prog->work_group_size > 1 ? 8 : 4);
    const size_t fixed = (size_t)ctx->params.partials_per_channel;
    const size_t s_max = items / (parallel * 4);
    return clamp_size(fixed ? fixed : ceil_div(target, reductions), 1, s_max ? s_max : 1);
}

/* Channels-last partials per sample: at least one set per sample, about `s` in all. */
static size_t sample_sets(size_t s, size_t samples, cl_uint *per_sample)
{
    *per_sample = (cl_uint)ceil_div(s, samples);
    return *per_sample * samples;
}

static void plan_reduce(const clnorm_context *ctx, const program_entry *prog, const bn_geometry *g,
                        size_t samples, reduce_plan *p)
{
    const size_t wg = (size_t)prog->work_group_size;
    const size_t vec = (size_t)ctx->params.vector_width;
    p->pieces = 1;
    p->lanes = 1;
    p->per_group = 1;
    p->tile = 1;
    p->per_sample = 1;
    p->whole_rows = false;
    p->local[0] = wg;
    p->local[1] = 1;
    if (g->layout == CLNORM_CHANNELS_FIRST) {
        /* a work-item takes `tile` neighbouring channels plane by plane: runs of about
         * PLANE_RUN values however small the planes (a CPU's prefetcher needs long runs) */
        size_t tile = clamp_size(PLANE_RUN / g->spatial, 1,
                                 (size_t)ctx->params.plane_tile < g->c ? (size_t)ctx->params.plane_tile : g->c);
        size_t tiles = ceil_div(g->c, tile);
        /* The `width` work-items that share a tile take blocks sl, sl + width, ... of each plane:
         * about 2 blocks each, so that small planes do not leave most of them idle (N64 C2048
         * 7x7 on an H100: 13 blocks a plane for 256 work-items, 0.44 ms), but at least 8 side by
         * side (128 contiguous bytes); the work-group's other work-items take other tiles. */
        const size_t plane_blocks = ceil_div(ceil_div(g->spatial, vec),
                                             (size_t)stats_block_vectors(&ctx->params));
        const size_t width =
            clamp_size(floor_pow2_size(ceil_div(plane_blocks, 2)), wg < 8 ? wg : 8, wg);
        const size_t per_group = wg / width;
        size_t s = stage1_splits(ctx, prog, width, g->rows / vec, ceil_div(tiles, per_group));
        if (ctx->params.flat_planes && wg > 1 && g->spatial % (vec < 2 ? 2 : vec) == 0) {
            /* the planes as one run of vectors, shared in whole steps of the `width` work-items
             * (a block of each): at least a step each. Planes of an even length, so that no
             * block splits a pair of neighbouring values (exact-by-construction data stays
             * exact: with scalars, blocks of an even count start at even values). */
            const size_t per_step = width * (size_t)stats_block_vectors(&ctx->params);
            p->pieces = 0;
            s = clamp_size(s, 1, ceil_div(g->rows / vec, per_step));
        } else if (s > g->n) {
            /* fewer planes than partials: cut each plane into pieces of whole statistics blocks */
            p->pieces = (cl_uint)clamp_size(ceil_div(s, g->n), 1, plane_blocks);
            s = g->n * p->pieces;
        }
        p->per_group = (cl_uint)per_group;
        p->tile = (cl_uint)tile;
        p->sets = (cl_uint)s;
        p->global[0] = s * wg;
        p->global[1] = ceil_div(tiles, per_group);
    } else if (bn_stage1_writes_rows(prog, g)) {
        /* work-groups of one (CPUs): bn_reduce_rows, a work-item per partial, whole rows */
        size_t s = sample_sets(stage1_splits(ctx, prog, 1, ceil_div(g->rows, 2), 1), samples,
                               &p->per_sample);
        p->whole_rows = true;
        p->sets = (cl_uint)s;
        p->global[0] = s;
        p->global[1] = 1;
    } else {
        /* a work-item reduces item_tile channel vectors; lanes of them share a work-group */
        size_t item_tiles = ceil_div(ceil_div(g->c, vec), (size_t)ctx->params.item_tile);
        size_t lanes =
            floor_pow2_size(clamp_size((size_t)ctx->params.channel_tile, 1, item_tiles));
        if (lanes > wg)
            lanes = wg;
        size_t tiles = ceil_div(item_tiles, lanes);
        size_t s = sample_sets(stage1_splits(ctx, prog, wg / lanes, ceil_div(g->rows, 2), tiles),
                               samples, &p->per_sample);
        p->lanes = (cl_uint)lanes;
        p->sets = (cl_uint)s;
        p->global[0] = tiles * wg;
        p->global[1] = s;
    }
}

bool bn_stage1_writes_rows(const program_entry *prog, const bn_geometry *g)
{
    return g->layout == CLNORM_CHANNELS_LAST && prog->work_group_size == 1;
}

clnorm_status bn_enqueue_stage1(clnorm_context *ctx, launch_chain *chain,
                                const program_entry *prog, const bn_geometry *g,
                                const stage1_inputs *in, cl_mem *sets, cl_uint *num_sets)
{
    reduce_plan p;
    const size_t samples = in->samples ? in->samples : 1, group = in->mean_group ? in->mean_group : 1;
    plan_reduce(ctx, prog, g, samples, &p);
    /* bn_reduce_rows' statistics also hold 2C floats per work-item after the sets */
    const size_t floats_per_set = p.whole_rows && in->mode == REDUCE_STATS ? 5 : 3;
    clnorm_status status = workspace_reserve(
        ctx, WS_PARTIALS, (size_t)p.sets * floats_per_set * g->c * sizeof(float), sets);
    if (status != CLNORM_OK)
        return status;
    *num_sets = p.sets;
    cl_ulong n = g->n, c = g->c, spatial = g->spatial, rows = g->rows / samples, cg = group;
    cl_int m = in->mode;
    if (g->layout == CLNORM_CHANNELS_FIRST) {
        kernel_arg args[] = {ARG(in->x),        ARG(in->addend), ARG(in->dy),    ARG(in->mask),
                             ARG(in->plane_weight), ARG(in->mean), ARG(cg), ARG(n),       ARG(c),
                             ARG(spatial),      ARG(p.pieces),   ARG(p.sets),    ARG(p.per_group), ARG(p.tile), ARG(m),
                             ARG(*sets),        ARG(in->pivots)};
        return chain_launch(ctx, chain, prog, program_kernel_index(FAMILY_NORM, "bn_reduce_cf"),
                            args, ARRAY_SIZE(args), 2, p.global, p.local);
    }
    if (p.whole_rows) {
        kernel_arg args[] = {ARG(in->x),         ARG(in->dy),         ARG(in->mask),
                             ARG(in->masked_dy), ARG(in->mean),       ARG(in->row_mean),
                             ARG(in->row_rstd),  ARG(in->row_weight), ARG(rows),
                             ARG(c),             ARG(cg),             ARG(p.sets),
                             ARG(p.per_sample),  ARG(m),              ARG(*sets),
                             ARG(in->pivots),    ARG(in->row_sets)};
        return chain_launch(ctx, chain, prog, program_kernel_index(FAMILY_NORM, "bn_reduce_rows"),
                            args, ARRAY_SIZE(args), 1, p.global, p.local);
    }
    kernel_arg args[] = {ARG(in->x),        ARG(in->dy),       ARG(in->mask),
                         ARG(in->mean),     ARG(in->row_mean), ARG(in->row_rstd),
                         ARG(rows),         ARG(c),            ARG(cg),
                         ARG(p.lanes),      ARG(p.sets),       ARG(p.per_sample),
                         ARG(m),            ARG(*sets),        ARG(in->pivots)};
    return chain_launch(ctx, chain, prog, program_kernel_index(FAMILY_NORM, "bn_reduce_cl"), args,
                        ARRAY_SIZE(args), 2, p.global, p.local);
}

/* (batchnorm_internal.h) Work-groups of one (CPUs) become 16 work-items: the runtime then
 * schedules a group per 16 channels, not per channel (N8 C1024 14 x 14 channels-last forward:
 * 0.88x the time on PoCL). */
size_t per_item_local(const program_entry *prog, int kernel)
{
    const size_t wg = (size_t)prog->work_group_size, limit = prog->kernel_wg[kernel];
    return wg != 1 ? wg : floor_pow2_size(limit < 16 ? limit : 16);
}

clnorm_status bn_enqueue_channel(clnorm_context *ctx, launch_chain *chain,
                                 const program_entry *prog, size_t channels, const channel_args *a)
{
    cl_ulong c = channels;
    /* CPUs merge VEC channels at once where the sets allow it: a channel's merges are a chain of
     * divisions, and 2048 channels took 0.13 ms of a 0.7 ms channels-last forward */
    const cl_int lanes = a->uniform_counts && prog->work_group_size == 1 && !a->sets_are_var;
    /* GPUs: many sets are a long chain of dependent loads for one work-item; a team of work-items
     * per channel merges about 4 sets each, then log2(team) tree steps (a power of two no larger
     * than the work-group, itself a power of two: program_get) */
    const size_t wg = (size_t)prog->work_group_size;
    const size_t quarter = a->num_sets / 4;
    const cl_uint team =
        !lanes && wg > 1 && quarter >= 4 ? (cl_uint)floor_pow2_size(quarter < wg ? quarter : wg) : 1;
    kernel_arg args[] = {ARG(a->sets),         ARG(a->num_sets),    ARG(a->sets_are_var),
                         ARG(a->pivots),       ARG(c),               ARG(a->mode),        ARG(a->eps),
                         ARG(a->momentum),     ARG(a->flags),      ARG(a->mean_in),
                         ARG(a->var_in),       ARG(a->var_in_is_invstd), ARG(a->gamma),
                         ARG(a->beta),         ARG(a->running_mean), ARG(a->running_var),
                         ARG(a->save_mean),    ARG(a->save_invstd), ARG(a->out_sets),
                         ARG(a->coef),         ARG(a->dgamma),      ARG(a->dbeta),
                         ARG(lanes),           ARG(team)};
    const int kernel = program_kernel_index(FAMILY_NORM, "bn_channel");
    const size_t items = lanes ? ceil_div(channels, (size_t)ctx->params.vector_width) : channels;
    size_t local = team > 1 ? wg : per_item_local(prog, kernel);
    size_t global = round_up(items * team, local);
    return chain_launch(ctx, chain, prog, kernel, args, ARRAY_SIZE(args), 1, &global, &local);
}

void elementwise_grid(const clnorm_context *ctx, const program_entry *prog, size_t units,
                      size_t *global, size_t *chunk, cl_int *contiguous)
{
    const size_t wg = (size_t)prog->work_group_size;
    /* Work-groups of one (CPUs): a few long contiguous runs per core; else (GPUs) neighbouring
     * work-items on neighbouring units, each taking `items_per_thread` of them strided by the
     * grid. (Keyed to the parameters, not the device type, so one device tests both.) */
    *contiguous = wg == 1;
    if (*contiguous) {
        *chunk = ceil_div(units, ctx->dev.compute_units * 4);
        *global = round_up(ceil_div(units, *chunk), wg);
    } else {
        *global = round_up(ceil_div(units, (size_t)ctx->params.items_per_thread), wg);
        *chunk = ceil_div(units, *global);
    }
}

clnorm_status bn_enqueue_elementwise(clnorm_context *ctx, launch_chain *chain,
                                     const program_entry *prog, size_t total, size_t inner,
                                     size_t channels, const elementwise_args *a)
{
    const size_t vec = (size_t)ctx->params.vector_width;
    const size_t wg = (size_t)prog->work_group_size;
    /* segments: the planes of channels-first, else rows of the C channels (also for inner 1) */
    const size_t seg_len = inner == 1 ? channels : inner;
    const size_t segments = total / seg_len;
    /* Contiguous runs over planes that don't end on a vector (7 x 7, 14 x 14) walk the tensor
     * as one run of whole vectors instead: no partial vector per plane. */
    const bool flat = wg == 1 && inner > 1 && inner >= vec && inner % vec != 0;
    const cl_int walk = inner == 1 ? WALK_ROWS : flat ? WALK_FLAT : WALK_PLANES;
    size_t global, chunk;
    cl_int contiguous;
    elementwise_grid(ctx, prog, flat ? ceil_div(total, vec) : segments * ceil_div(seg_len, vec),
                     &global, &chunk, &contiguous);
    cl_ulong segs = segments, len = seg_len, c = channels, ch = chunk;
    cl_ulong item_stride = contiguous ? chunk : 1, step = contiguous ? 1 : global;
    /* streaming stores where every unit starts on a whole vector */
    cl_int flags = a->flags;
    if ((flat || seg_len % vec == 0) && bn_streams_output(ctx, prog, total))
        flags |= FLAG_STREAM;
    /* Rows on contiguous runs (CPUs): each work-item first copies the C channels' coefficients
     * into __local memory, each vector of channels' side by side, where it applies them to 8
     * rows or more and the copy fits (FLAG_OWN_COEF). Without coefficients it forms them there
     * from the statistics (saving a launch and the gap before the pass); else a bn_channel
     * launch forms them. Per vector (as strided runs form them) the channels-last inference of
     * N8 C512 28x28 took 1.07-1.23x the time. */
    cl_mem coef = a->coef;
    const bool rows = walk == WALK_ROWS && contiguous;
    const size_t own_bytes = (a->in1 ? 4 : 3) * round_up(channels, vec) * sizeof(float);
    const bool own = rows && chunk >= 8 * ceil_div(channels, vec) &&
                     own_bytes <= ctx->dev.local_mem_bytes;
    if (own)
        flags |= FLAG_OWN_COEF;
    /* Strided by the grid (GPUs) with a step of whole rows (channels-last) or whole samples
     * (channels-first): each work-item's units sit at one place of their rows, or in one
     * channel, whose coefficients it then forms once, not per unit (FLAG_FIXED_COEF). The grid
     * (items_per_thread units a work-item, work-groups of a power of two) gives that step for
     * rows of a power-of-two number of vectors, and for N a multiple of items_per_thread. */
    const size_t fixed_span = ceil_div(seg_len, vec) * (walk == WALK_ROWS ? 1 : channels);
    if (!contiguous && step % fixed_span == 0)
        flags |= FLAG_FIXED_COEF;
    if (!coef && !own && rows) {
        clnorm_status status =
            workspace_reserve(ctx, WS_COEF, 4 * channels * sizeof(float), &coef);
        if (status == CLNORM_OK)
            status = bn_enqueue_coef(ctx, chain, prog, channels, &a->stats, coef);
        if (status != CLNORM_OK)
            return status;
    }
    const given_stats *st = &a->stats;
    kernel_arg args[] = {ARG(a->in1),      ARG(a->in2),      ARG(a->residual),
                         ARG(a->mask),     ARG(coef),        ARG(st->mean),
                         ARG(st->var),     ARG(st->var_is_invstd), ARG(st->eps),
                         ARG(st->gamma),   ARG(st->beta),    ARG(a->out),
                         ARG(a->out2),     ARG(segs),        ARG(len),
                         ARG(c),           ARG(walk),        ARG(ch),
                         ARG(item_stride), ARG(step),        ARG(flags),
                         LOCAL_ARG(own ? own_bytes : sizeof(float))};
    return chain_launch(ctx, chain, prog, program_kernel_index(FAMILY_NORM, "bn_elementwise"),
                        args, ARRAY_SIZE(args), 1, &global, &wg);
}

clnorm_status bn_enqueue_coef(clnorm_context *ctx, launch_chain *chain, const program_entry *prog,
                              size_t channels, const given_stats *stats, cl_mem coef)
{
    channel_args a = {.mode = CH_COEF,
                      .eps = stats->eps,
                      .mean_in = stats->mean,
                      .var_in = stats->var,
                      .var_in_is_invstd = stats->var_is_invstd,
                      .gamma = stats->gamma,
                      .beta = stats->beta,
                      .coef = coef,
                      .uniform_counts = true}; /* (no sets: VEC channels per work-item on CPUs) */
    return bn_enqueue_channel(ctx, chain, prog, channels, &a);
}

/* ---- operations ------------------------------------------------------------------------------ */

static size_t inner_size(const bn_geometry *g)
{
    return g->layout == CLNORM_CHANNELS_FIRST ? g->spatial : 1;
}

/* For calls with nothing to compute (N == 0): zero the given buffers, then signal *event after
 * the wait list and those fills. */
clnorm_status zero_and_signal(clnorm_context *ctx, const cl_mem *buffers,
                                     const size_t *sizes, size_t count, cl_uint num_wait,
                                     const cl_event *wait, cl_event *event)
{
    cl_event fills[4];
    cl_uint num_fills = 0;
    clnorm_status status = CLNORM_OK;
    const float zero = 0.0f;
    for (size_t i = 0; i < count && i < 4; i++) {
        if (!buffers[i] || sizes[i] == 0)
            continue;
        CL_TRY(ctx,
               clEnqueueFillBuffer(ctx->queue, buffers[i], &zero, sizeof zero, 0, sizes[i],
                                   num_wait, wait, &fills[num_fills]),
               "clEnqueueFillBuffer");
        num_fills++;
    }
    if (event)
        CL_TRY(ctx,
               clEnqueueMarkerWithWaitList(ctx->queue, num_fills ? num_fills : num_wait,
                                           num_fills ? fills : wait, event),
               "clEnqueueMarkerWithWaitList");
fail:
    for (cl_uint i = 0; i < num_fills; i++)
        clReleaseEvent(fills[i]);
    return status;
}

/* y = act(beta + scale * (x - mean) [+ residual]) with the coefficients of bn_channel (coef), or
 * without coef, with those the kernel forms from `stats`. */
static clnorm_status enqueue_forward_apply(clnorm_context *ctx, launch_chain *chain,
                                           const program_entry *prog, const bn_geometry *g,
                                           const clnorm_bn_config *config,
                                           const clnorm_bn_buffers *b, cl_mem coef,
                                           const given_stats *stats)
{
    elementwise_args ea = {.in2 = b->x,
                           .residual = b->residual,
                           .coef = coef,
                           .out = b->y,
                           .flags = config->activation == CLNORM_ACTIVATION_RELU ? FLAG_RELU : 0};
    if (stats)
        ea.stats = *stats;
    else
        ea.flags |= FLAG_LAST_FIRST; /* after the statistics' pass over x */
    return bn_enqueue_elementwise(ctx, chain, prog, g->total, inner_size(g), g->c, &ea);
}

typedef enum forward_kind { FORWARD_TRAINING, FORWARD_INFERENCE, FORWARD_APPLY } forward_kind;

static clnorm_status check_forward(clnorm_context *ctx, const clnorm_shape *shape,
                                   const clnorm_bn_config *config, const clnorm_bn_buffers *b,
                                   forward_kind kind, cl_uint num_wait, const cl_event *wait,
                                   bn_geometry *g)
{
    clnorm_status status;
    TRY(bn_check_shape(ctx, shape, g));
    TRY(bn_check_config(ctx, config));
    TRY(check_events(ctx, num_wait, wait));
    if (!b)
        return set_error(ctx, CLNORM_INVALID_ARGUMENT, "buffers is NULL");
    TRY(check_buffer(ctx, b->x, "x", g->bytes, false));
    TRY(check_buffer(ctx, b->y, "y", g->bytes, false));
    TRY(check_buffer(ctx, b->residual, "residual", g->bytes, true));
    TRY(check_channel_buffer(ctx, b->gamma, "gamma", g->c, true));
    TRY(check_channel_buffer(ctx, b->beta, "beta", g->c, true));
    bool need_running = kind == FORWARD_INFERENCE;
    if (kind == FORWARD_TRAINING && (!b->running_mean) != (!b->running_var))
        return set_error(ctx, CLNORM_INVALID_ARGUMENT,
                         "running_mean and running_var must both be given or both be NULL");
    TRY(check_channel_buffer(ctx, b->running_mean, "running_mean", g->c, !need_running));
    TRY(check_channel_buffer(ctx, b->running_var, "running_var", g->c, !need_running));
    bool need_saved = kind == FORWARD_APPLY;
    TRY(check_channel_buffer(ctx, b->save_mean, "save_mean", g->c, !need_saved));
    TRY(check_channel_buffer(ctx, b->save_invstd, "save_invstd", g->c, !need_saved));
    if (kind == FORWARD_TRAINING && g->rows == 1)
        return set_error(ctx, CLNORM_INVALID_SHAPE,
                         "expected more than 1 value per channel when training, got N = %zu and a "
                         "spatial size of %zu",
                         g->n, g->spatial);
fail:
    return status;
}

/* Bytes of channel data a fused kernel's work-item keeps in a core's own cache (L2) between its
 * reads: the tiles of small channels. */
#define FUSED_BYTES (256 * 1024)

/* (batchnorm_internal.h) */
uint64_t bn_cache_share(const clnorm_context *ctx)
{
    const uint64_t units = ctx->dev.compute_units ? ctx->dev.compute_units : 1;
    const uint64_t cache = ctx->dev.cache_bytes ? ctx->dev.cache_bytes : units << 20;
    return cache / (4 * units);
}

/* (batchnorm_internal.h) */
bool bn_streams_output(const clnorm_context *ctx, const program_entry *prog, size_t elements)
{
    return prog->work_group_size == 1 && elements * sizeof(float) >= bn_cache_share(ctx);
}

/* (batchnorm_internal.h) */
size_t bn_fused_tile(const clnorm_context *ctx, const program_entry *prog, const bn_geometry *g,
                     size_t tensors)
{
    const uint64_t channel_bytes = (uint64_t)g->rows * sizeof(float) * tensors;
    const uint64_t share = bn_cache_share(ctx);
    if (prog->work_group_size != 1 || g->layout != CLNORM_CHANNELS_FIRST ||
        channel_bytes > (share > FUSED_BYTES ? share : FUSED_BYTES) ||
        g->c < 4 * (size_t)ctx->dev.compute_units)
        return 0;
    size_t tile = clamp_size(FUSED_BYTES / channel_bytes, 1, (size_t)ctx->params.plane_tile);
    /* keep four work-items per compute unit */
    return clamp_size(tile, 1, g->c / (4 * (size_t)ctx->dev.compute_units));
}

/* (batchnorm_internal.h) */
size_t bn_register_width(const clnorm_context *ctx, const program_entry *prog, size_t units)
{
    const size_t wg = (size_t)prog->work_group_size, per_item = (size_t)ctx->params.register_units;
    if (wg == 1 || per_item == 0 || units > wg * per_item)
        return 0;
    size_t width = 1;
    while (width < wg && (width * 4 < units || width * per_item < units))
        width *= 2;
    return width;
}

/* (batchnorm_internal.h) */
int bn_register_kernel(const clnorm_context *ctx, const char *name, size_t width, size_t units)
{
    const size_t short_units = (size_t)short_register_units(&ctx->params);
    char short_name[64];
    snprintf(short_name, sizeof short_name, "%s_short", name);
    return program_kernel_index(FAMILY_NORM,
                                units <= width * short_units ? short_name : name);
}

/* Channel vectors per row of bn_forward_rows_tile (channels-last training forward in one launch
 * on work-groups of many), where all rows fit in the registers of the work-group's row lanes
 * (register_units each): the most, up to 8 (rows of 128 bytes in float4), that still fit and
 * that the channels fill; 0 where not even one lane fits. */
static size_t rows_tile_lanes(const clnorm_context *ctx, const program_entry *prog,
                              const bn_geometry *g)
{
    const size_t wg = (size_t)prog->work_group_size, units = (size_t)ctx->params.register_units;
    const size_t vectors = ceil_div(g->c, (size_t)ctx->params.vector_width);
    if (wg == 1 || units == 0 || g->layout != CLNORM_CHANNELS_LAST)
        return 0;
    for (size_t lanes = wg < 8 ? wg : 8; lanes >= 1; lanes /= 2)
        if (g->rows <= wg / lanes * units && (lanes <= vectors || lanes == 1))
            return lanes;
    return 0;
}

/* Channel vectors per row of bn_forward_rows_cached (as bn_forward_rows_tile, the rows read again
 * from the cache), where x is within rows_cached_kib: the most, up to 8, that still leave a
 * work-group for each compute unit; 0 where even 1 would leave compute units without one (a
 * work-group takes all rows of its channels: few channels, few work-groups). */
static size_t rows_cached_lanes(const clnorm_context *ctx, const program_entry *prog,
                                const bn_geometry *g)
{
    const size_t vectors = ceil_div(g->c, (size_t)ctx->params.vector_width);
    const uint64_t bytes = (uint64_t)g->rows * g->c * sizeof(float);
    if (prog->work_group_size == 1 || g->layout != CLNORM_CHANNELS_LAST ||
        bytes > (uint64_t)ctx->params.rows_cached_kib * 1024 ||
        vectors < (size_t)ctx->dev.compute_units)
        return 0;
    size_t lanes = 8;
    while (lanes > 1 && (lanes > (size_t)prog->work_group_size || lanes > vectors ||
                         ceil_div(vectors, lanes) < (size_t)ctx->dev.compute_units))
        lanes /= 2;
    return lanes;
}

/* The training forward in one launch: `kernel` (the index) is bn_forward_fused (work-groups of
 * one, `split` channels per work-item), a build of bn_forward_channel (`split` work-items per
 * channel) or bn_forward_rows_tile or _cached (`split` channel vectors per row), on `global`
 * work-items. */
static clnorm_status enqueue_one_launch_forward(clnorm_context *ctx, launch_chain *chain,
                                                const program_entry *prog, const bn_geometry *g,
                                                const clnorm_bn_config *config,
                                                const clnorm_bn_buffers *b, int kernel,
                                                size_t split, size_t global)
{
    cl_ulong n = g->n, c = g->c, spatial = g->spatial;
    cl_uint t = (cl_uint)split;
    float eps = (float)config->eps, momentum = (float)config->momentum;
    cl_int flags = config->activation == CLNORM_ACTIVATION_RELU ? FLAG_RELU : 0;
    kernel_arg args[] = {ARG(b->x),           ARG(b->residual),    ARG(b->gamma),
                         ARG(b->beta),        ARG(b->running_mean), ARG(b->running_var),
                         ARG(b->save_mean),   ARG(b->save_invstd), ARG(n),
                         ARG(c),              ARG(spatial),        ARG(t),
                         ARG(eps),            ARG(momentum),       ARG(flags),
                         ARG(b->y)};
    size_t local = (size_t)prog->work_group_size;
    return chain_launch(ctx, chain, prog, kernel, args, ARRAY_SIZE(args), 1, &global, &local);
}

static clnorm_status forward_training(clnorm_context *ctx, const clnorm_shape *shape,
                                      const clnorm_bn_config *config, const clnorm_bn_buffers *b,
                                      cl_uint num_wait, const cl_event *wait, cl_event *event)
{
    bn_geometry g;
    launch_chain chain;
    chain_begin(&chain, num_wait, wait);
    const program_entry *prog;
    cl_mem sets, coef, pivots;
    cl_uint num_sets;
    clnorm_status status;
    TRY(check_forward(ctx, shape, config, b, FORWARD_TRAINING, num_wait, wait, &g));
    if (g.rows == 0)
        return zero_and_signal(ctx, NULL, NULL, 0, num_wait, wait, event);
    TRY(program_get(ctx, FAMILY_NORM, &prog));
    /* a channel in the registers of a run of work-items (GPUs: small planes) */
    const size_t channel_vectors = ceil_div(g.rows, (size_t)ctx->params.vector_width);
    const size_t width =
        g.layout == CLNORM_CHANNELS_FIRST ? bn_register_width(ctx, prog, channel_vectors) : 0;
    /* ... or all rows of a tile of channels in the registers of a work-group (channels-last),
     * or read again from the cache */
    const size_t lanes = rows_tile_lanes(ctx, prog, &g), wg = (size_t)prog->work_group_size;
    const size_t cached_lanes = width || lanes ? 0 : rows_cached_lanes(ctx, prog, &g);
    const size_t row_lanes = lanes ? lanes : cached_lanes;
    size_t tile = width || row_lanes ? 0 : bn_fused_tile(ctx, prog, &g, 1);
    if (width || row_lanes || tile) {
        if (width)
            TRY(enqueue_one_launch_forward(
                ctx, &chain, prog, &g, config, b,
                bn_register_kernel(ctx, "bn_forward_channel", width, channel_vectors), width,
                ceil_div(g.c, wg / width) * wg));
        else if (row_lanes)
            TRY(enqueue_one_launch_forward(
                ctx, &chain, prog, &g, config, b,
                program_kernel_index(FAMILY_NORM,
                                     lanes ? "bn_forward_rows_tile" : "bn_forward_rows_cached"),
                row_lanes, ceil_div(g.c, row_lanes * (size_t)ctx->params.vector_width) * wg));
        else
            TRY(enqueue_one_launch_forward(ctx, &chain, prog, &g, config, b,
                                           program_kernel_index(FAMILY_NORM, "bn_forward_fused"),
                                           tile, ceil_div(g.c, tile)));
        chain_end(ctx, &chain, event, true);
        return CLNORM_OK;
    }
    TRY(workspace_reserve(ctx, WS_COEF, 4 * g.c * sizeof(float), &coef));
    TRY(workspace_reserve(ctx, WS_PIVOTS, g.c * sizeof(float), &pivots));
    stage1_inputs in = {.x = b->x, .pivots = pivots, .mode = REDUCE_STATS};
    TRY(bn_enqueue_stage1(ctx, &chain, prog, &g, &in, &sets, &num_sets));
    channel_args ca = {.sets = sets,
                       .num_sets = num_sets,
                       .pivots = pivots,
                       .mode = CH_FINALIZE,
                       .eps = (float)config->eps,
                       .momentum = (float)config->momentum,
                       .gamma = b->gamma,
                       .beta = b->beta,
                       .running_mean = b->running_mean,
                       .running_var = b->running_var,
                       .save_mean = b->save_mean,
                       .save_invstd = b->save_invstd,
                       .coef = coef,
                       .uniform_counts = true};
    TRY(bn_enqueue_channel(ctx, &chain, prog, g.c, &ca));
    TRY(enqueue_forward_apply(ctx, &chain, prog, &g, config, b, coef, NULL));
    chain_end(ctx, &chain, event, true);
    return CLNORM_OK;
fail:
    chain_abandon(&chain);
    return status;
}

/* Inference and apply: y = act(scale * x + shift [+ residual]) with (scale, shift) from the
 * running statistics or from the saved batch statistics. */
static clnorm_status forward_with_stats(clnorm_context *ctx, const clnorm_shape *shape,
                                        const clnorm_bn_config *config,
                                        const clnorm_bn_buffers *b, forward_kind kind,
                                        cl_uint num_wait, const cl_event *wait, cl_event *event)
{
    bn_geometry g;
    launch_chain chain;
    chain_begin(&chain, num_wait, wait);
    const program_entry *prog;
    clnorm_status status;
    TRY(check_forward(ctx, shape, config, b, kind, num_wait, wait, &g));
    if (g.rows == 0)
        return zero_and_signal(ctx, NULL, NULL, 0, num_wait, wait, event);
    TRY(program_get(ctx, FAMILY_NORM, &prog));
    bool saved = kind == FORWARD_APPLY;
    given_stats stats = {saved ? b->save_mean : b->running_mean,
                         saved ? b->save_invstd : b->running_var, b->gamma, b->beta, saved,
                         (float)config->eps};
    /* bn_elementwise forms the coefficients from the statistics (over channels-last rows on a
     * CPU, bn_enqueue_elementwise has bn_channel form them first) */
    TRY(enqueue_forward_apply(ctx, &chain, prog, &g, config, b, NULL, &stats));
    chain_end(ctx, &chain, event, true);
    return CLNORM_OK;
fail:
    chain_abandon(&chain);
    return status;
}

clnorm_status bn_forward_inference_locked(clnorm_context *ctx, const clnorm_shape *shape,
                                          const clnorm_bn_config *config,
                                          const clnorm_bn_buffers *b, cl_uint num_wait,
                                          const cl_event *wait, cl_event *event)
{
    return forward_with_stats(ctx, shape, config, b, FORWARD_INFERENCE, num_wait, wait, event);
}

static clnorm_status backward(clnorm_context *ctx, const clnorm_shape *shape,
                              const clnorm_bn_config *config, const clnorm_bn_grad_buffers *b,
                              bool frozen, cl_uint num_wait, const cl_event *wait, cl_event *event)
{
    bn_geometry g;
    launch_chain chain;
    chain_begin(&chain, num_wait, wait);
    const program_entry *prog;
    cl_mem sets, coef;
    cl_uint num_sets;
    clnorm_status status;
    TRY(bn_check_shape(ctx, shape, &g));
    TRY(bn_check_config(ctx, config));
    TRY(check_events(ctx, num_wait, wait));
    if (!b)
        return set_error(ctx, CLNORM_INVALID_ARGUMENT, "buffers is NULL");
    bool relu = config->activation == CLNORM_ACTIVATION_RELU;
    TRY(check_buffer(ctx, b->x, "x", g.bytes, false));
    TRY(check_buffer(ctx, b->dy, "dy", g.bytes, false));
    TRY(check_buffer(ctx, b->y, relu ? "y (the forward output, needed with ReLU)" : "y", g.bytes,
                     !relu));
    TRY(check_buffer(ctx, b->dx, "dx", g.bytes, false));
    TRY(check_buffer(ctx, b->dresidual, "dresidual", g.bytes, true));
    TRY(check_channel_buffer(ctx, b->gamma, "gamma", g.c, true));
    TRY(check_channel_buffer(ctx, b->mean, frozen ? "mean (running_mean)" : "mean (save_mean)",
                             g.c, false));
    if (frozen)
        TRY(check_channel_buffer(ctx, b->var, "var (running_var)", g.c, false));
    else
        TRY(check_channel_buffer(ctx, b->invstd, "invstd (save_invstd)", g.c, false));
    TRY(check_channel_buffer(ctx, b->dgamma, "dgamma", g.c, true));
    TRY(check_channel_buffer(ctx, b->dbeta, "dbeta", g.c, true));
    if (g.rows == 0) {
        const cl_mem zeroed[] = {b->dgamma, b->dbeta};
        const size_t sizes[] = {g.c * sizeof(float), g.c * sizeof(float)};
        return zero_and_signal(ctx, zeroed, sizes, 2, num_wait, wait, event);
    }
    TRY(program_get(ctx, FAMILY_NORM, &prog));
    cl_mem mask = relu ? b->y : NULL;
    size_t tile = bn_fused_tile(ctx, prog, &g, relu ? 3 : 2);
    if (tile) {
        cl_ulong n = g.n, c = g.c, spatial = g.spatial;
        cl_uint t = (cl_uint)tile;
        float eps = (float)config->eps;
        cl_int flags = frozen ? CHF_FROZEN : 0;
        cl_mem var = frozen ? b->var : b->invstd;
        kernel_arg args[] = {ARG(b->x),    ARG(b->dy),    ARG(mask),     ARG(b->mean),
                             ARG(var),     ARG(eps),      ARG(flags),    ARG(b->gamma),
                             ARG(b->dgamma), ARG(b->dbeta), ARG(n),      ARG(c),
                             ARG(spatial), ARG(t),        ARG(b->dx),    ARG(b->dresidual)};
        size_t local = 1, global = ceil_div(g.c, tile);
        TRY(chain_launch(ctx, &chain, prog, program_kernel_index(FAMILY_NORM, "bn_backward_fused"),
                         args, ARRAY_SIZE(args), 1, &global, &local));
        chain_end(ctx, &chain, event, true);
        return CLNORM_OK;
    }
    TRY(workspace_reserve(ctx, WS_COEF, 4 * g.c * sizeof(float), &coef));
    /* With a fused add + ReLU on bn_reduce_rows, the sums' pass also writes the residual's
     * gradient (the masked dy), and the dx pass reads it instead of dy and the mask: 7 passes
     * instead of 8. */
    const bool masked_first = mask && b->dresidual && bn_stage1_writes_rows(prog, &g);
    stage1_inputs in = {.x = b->x,
                        .dy = b->dy,
                        .mask = mask,
                        .masked_dy = masked_first ? b->dresidual : NULL,
                        .mean = b->mean,
                        .mode = REDUCE_GRAD};
    TRY(bn_enqueue_stage1(ctx, &chain, prog, &g, &in, &sets, &num_sets));
    channel_args ca = {.sets = sets,
                       .num_sets = num_sets,
                       .mode = CH_GRAD,
                       .eps = (float)config->eps,
                       .flags = frozen ? CHF_FROZEN : 0,
                       .mean_in = b->mean,
                       .var_in = frozen ? b->var : b->invstd,
                       .var_in_is_invstd = !frozen,
                       .gamma = b->gamma,
                       .coef = coef,
                       .dgamma = b->dgamma,
                       .dbeta = b->dbeta,
                       .uniform_counts = true};
    TRY(bn_enqueue_channel(ctx, &chain, prog, g.c, &ca));
    elementwise_args ea = {.in1 = masked_first ? b->dresidual : b->dy,
                           .in2 = frozen ? NULL : b->x,
                           .mask = masked_first ? NULL : mask,
                           .coef = coef,
                           .out = b->dx,
                           .out2 = masked_first ? NULL : b->dresidual,
                           .flags = FLAG_LAST_FIRST}; /* after the gradient sums' pass */
    TRY(bn_enqueue_elementwise(ctx, &chain, prog, g.total, inner_size(&g), g.c, &ea));
    chain_end(ctx, &chain, event, true);
    return CLNORM_OK;
fail:
    chain_abandon(&chain);
    return status;
}

static clnorm_status partial_stats(clnorm_context *ctx, const clnorm_shape *shape, cl_mem x,
                                   cl_mem stats_set, cl_uint num_wait, const cl_event *wait,
                                   cl_event *event)
{
    bn_geometry g;
    launch_chain chain;
    chain_begin(&chain, num_wait, wait);
    const program_entry *prog;
    cl_mem sets, pivots;
    cl_uint num_sets;
    clnorm_status status;
    TRY(bn_check_shape(ctx, shape, &g));
    TRY(check_events(ctx, num_wait, wait));
    TRY(check_buffer(ctx, x, "x", g.bytes, false));
    TRY(check_buffer(ctx, stats_set, "stats_set", 3 * g.c * sizeof(float), false));
    if (g.rows == 0) {
        /* an empty set: count 0 merges as nothing */
        const size_t size = 3 * g.c * sizeof(float);
        return zero_and_signal(ctx, &stats_set, &size, 1, num_wait, wait, event);
    }
    TRY(program_get(ctx, FAMILY_NORM, &prog));
    TRY(workspace_reserve(ctx, WS_PIVOTS, g.c * sizeof(float), &pivots));
    stage1_inputs in = {.x = x, .pivots = pivots, .mode = REDUCE_STATS};
    TRY(bn_enqueue_stage1(ctx, &chain, prog, &g, &in, &sets, &num_sets));
    channel_args ca = {.sets = sets,
                       .num_sets = num_sets,
                       .pivots = pivots,
                       .mode = CH_STATS_OUT,
                       .out_sets = stats_set,
                       .uniform_counts = true};
    TRY(bn_enqueue_channel(ctx, &chain, prog, g.c, &ca));
    chain_end(ctx, &chain, event, true);
    return CLNORM_OK;
fail:
    chain_abandon(&chain);
    return status;
}

static clnorm_status merge_stats(clnorm_context *ctx, size_t channels, size_t num_sets,
                                 cl_mem stats_sets, const clnorm_bn_config *config,
                                 cl_mem running_mean, cl_mem running_var, cl_mem save_mean,
                                 cl_mem save_invstd, cl_uint num_wait, const cl_event *wait,
                                 cl_event *event)
{
    launch_chain chain;
    chain_begin(&chain, num_wait, wait);
    const program_entry *prog;
    cl_mem coef;
    clnorm_status status;
    size_t set_bytes;
    if (channels == 0)
        return set_error(ctx, CLNORM_INVALID_SHAPE, "channels is 0");
    if (num_sets == 0 || num_sets > UINT32_MAX)
        return set_error(ctx, CLNORM_INVALID_SHAPE, "num_sets = %zu is not in [1, 2^32)",
                         num_sets);
    TRY(bn_check_config(ctx, config));
    TRY(check_events(ctx, num_wait, wait));
    TRY(checked_mul(ctx, channels, 3 * sizeof(float), "stats_sets size", &set_bytes));
    TRY(checked_mul(ctx, num_sets, set_bytes, "stats_sets size", &set_bytes));
    TRY(check_channel_count(ctx, "channels", channels));
    TRY(check_buffer(ctx, stats_sets, "stats_sets", set_bytes, false));
    if ((!running_mean) != (!running_var))
        return set_error(ctx, CLNORM_INVALID_ARGUMENT,
                         "running_mean and running_var must both be given or both be NULL");
    TRY(check_channel_buffer(ctx, running_mean, "running_mean", channels, true));
    TRY(check_channel_buffer(ctx, running_var, "running_var", channels, true));
    TRY(check_channel_buffer(ctx, save_mean, "save_mean", channels, true));
    TRY(check_channel_buffer(ctx, save_invstd, "save_invstd", channels, true));
    TRY(program_get(ctx, FAMILY_NORM, &prog));
    TRY(workspace_reserve(ctx, WS_COEF, 4 * channels * sizeof(float), &coef));
    channel_args ca = {.sets = stats_sets,
                       .num_sets = (cl_uint)num_sets,
                       .sets_are_var = 1,
                       .mode = CH_FINALIZE,
                       .eps = (float)config->eps,
                       .momentum = (float)config->momentum,
                       .running_mean = running_mean,
                       .running_var = running_var,
                       .save_mean = save_mean,
                       .save_invstd = save_invstd,
                       .coef = coef};
    TRY(bn_enqueue_channel(ctx, &chain, prog, channels, &ca));
    chain_end(ctx, &chain, event, true);
    return CLNORM_OK;
fail:
    chain_abandon(&chain);
    return status;
}

/* ---- public entry points: lock, clear the event, run ------------------------------------------ */

clnorm_status clnorm_bn_forward_training(clnorm_context *ctx, const clnorm_shape *shape,
                                         const clnorm_bn_config *config,
                                         const clnorm_bn_buffers *buffers, cl_uint num_wait,
                                         const cl_event *wait_list, cl_event *event)
{
    LOCKED_CALL(ctx, event,
                forward_training(ctx, shape, config, buffers, num_wait, wait_list, event));
}

clnorm_status clnorm_bn_forward_inference(clnorm_context *ctx, const clnorm_shape *shape,
                                          const clnorm_bn_config *config,
                                          const clnorm_bn_buffers *buffers, cl_uint num_wait,
                                          const cl_event *wait_list, cl_event *event)
{
    LOCKED_CALL(ctx, event,
                bn_forward_inference_locked(ctx, shape, config, buffers, num_wait, wait_list,
                                            event));
}

clnorm_status clnorm_bn_apply(clnorm_context *ctx, const clnorm_shape *shape,
                              const clnorm_bn_config *config, const clnorm_bn_buffers *buffers,
                              cl_uint num_wait, const cl_event *wait_list, cl_event *event)
{
    LOCKED_CALL(ctx, event,
                forward_with_stats(ctx, shape, config, buffers, FORWARD_APPLY, num_wait,
                                   wait_list, event));
}

clnorm_status clnorm_bn_backward(clnorm_context *ctx, const clnorm_shape *shape,
                                 const clnorm_bn_config *config,
                                 const clnorm_bn_grad_buffers *buffers, cl_uint num_wait,
                                 const cl_event *wait_list, cl_event *event)
{
    LOCKED_CALL(ctx, event,
                backward(ctx, shape, config, buffers, false, num_wait, wait_list, event));
}

clnorm_status clnorm_bn_backward_frozen(clnorm_context *ctx, const clnorm_shape *shape,
                                        const clnorm_bn_config *config,
                                        const clnorm_bn_grad_buffers *buffers, cl_uint num_wait,
                                        const cl_event *wait_list, cl_event *event)
{
    LOCKED_CALL(ctx, event,
                backward(ctx, shape, config, buffers, true, num_wait, wait_list, event));
}

clnorm_status clnorm_bn_partial_stats(clnorm_context *ctx, const clnorm_shape *shape, cl_mem x,
                                      cl_mem stats_set, cl_uint num_wait,
                                      const cl_event *wait_list, cl_event *event)
{
    LOCKED_CALL(ctx, event,
                partial_stats(ctx, shape, x, stats_set, num_wait, wait_list, event));
}

clnorm_status clnorm_bn_merge_stats(clnorm_context *ctx, size_t channels, size_t num_sets,
                                    cl_mem stats_sets, const clnorm_bn_config *config,
                                    cl_mem running_mean, cl_mem running_var, cl_mem save_mean,
                                    cl_mem save_invstd, cl_uint num_wait,
                                    const cl_event *wait_list, cl_event *event)
{
    LOCKED_CALL(ctx, event,
                merge_stats(ctx, channels, num_sets, stats_sets, config, running_mean,
                            running_var, save_mean, save_invstd, num_wait, wait_list, event));
}

/* Shared by batchnorm.c (operations) and batchnorm_layer.c (the layer object). */
#ifndef CLNORM_BATCHNORM_INTERNAL_H
#define CLNORM_BATCHNORM_INTERNAL_H

#include "internal.h"

/* A validated (N, C, spatial...) tensor. rows = N * spatial = values per channel. */
typedef struct bn_geometry {
    size_t n, c, spatial, rows, total, bytes;
    clnorm_layout layout;
} bn_geometry;

/* Values shared with kernels/batchnorm.cl. */
enum { REDUCE_STATS = 0, REDUCE_GRAD = 1 };
enum { CH_FINALIZE = 0, CH_STATS_OUT = 1, CH_GRAD = 2, CH_COEF = 3 };
enum { CHF_FROZEN = 1, CHF_RMS = 2, CHF_STREAM = 4 };

static inline size_t ceil_div(size_t a, size_t b)
{
    return (a + b - 1) / b;
}

static inline size_t clamp_size(size_t v, size_t lo, size_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

size_t floor_pow2_size(size_t v);

/* Stage-1 partials per reduction: enough work-groups to fill the device (a GPU wants several per
 * compute unit, a CPU a few long slices per core), none with less than 4 items per work-item.
 * `parallel` work-items share one partial of `items` units of work. */
size_t stage1_splits(const clnorm_context *ctx, const program_entry *prog, size_t parallel,
                     size_t items, size_t reductions);
/* The grid of an elementwise pass over `units` (vectors or values). */
void elementwise_grid(const clnorm_context *ctx, const program_entry *prog, size_t units,
                      size_t *global, size_t *chunk, cl_int *contiguous);

/* The arguments of bn_channel, in its order; NULL buffers are allowed where the kernel checks. */
typedef struct channel_args {
    cl_mem sets;
    cl_uint num_sets;
    cl_int sets_are_var;
    cl_mem pivots; /* written by stage 1: partial means are relative to these */
    cl_int mode;
    float eps, momentum;
    cl_int flags; /* CHF_FROZEN, CHF_RMS */
    cl_mem mean_in, var_in;
    cl_int var_in_is_invstd;
    cl_mem gamma, beta, running_mean, running_var, save_mean, save_invstd, out_sets, coef,
        dgamma, dbeta;
    bool uniform_counts; /* every channel has the same count in a set (batch norm's stage 1) */
} channel_args;

clnorm_status bn_enqueue_channel(clnorm_context *ctx, launch_chain *chain,
                                 const program_entry *prog, size_t channels,
                                 const channel_args *a);

clnorm_status bn_check_shape(clnorm_context *ctx, const clnorm_shape *shape, bn_geometry *g);
clnorm_status bn_check_config(clnorm_context *ctx, const clnorm_bn_config *config);
/* clnorm_bn_forward_inference for a caller that already holds the context lock. */
clnorm_status bn_forward_inference_locked(clnorm_context *ctx, const clnorm_shape *shape,
                                          const clnorm_bn_config *config,
                                          const clnorm_bn_buffers *b, cl_uint num_wait,
                                          const cl_event *wait, cl_event *event);

/* For calls with nothing to compute (N == 0): zero the given buffers, then signal *event after
 * the wait list and those fills. */
clnorm_status zero_and_signal(clnorm_context *ctx, const cl_mem *buffers, const size_t *sizes,
                              size_t count, cl_uint num_wait, const cl_event *wait,
                              cl_event *event);

/* Stage 1 (bn_reduce_cf / bn_reduce_cl) over a tensor: its inputs (NULL where unused). */
typedef struct stage1_inputs {
    cl_mem x, addend, dy, mask;
    cl_mem plane_weight;       /* channels-first gradients: dy * plane_weight[position] */
    cl_mem mean;               /* gradients: per-channel mean */
    cl_mem row_mean, row_rstd; /* channels-last gradients: xhat from per-row statistics */
    cl_mem pivots;             /* statistics: receives each channel's pivot */
    int mode;                  /* REDUCE_STATS or REDUCE_GRAD */
    /* GroupNorm: channels-last partials per sample (0: one sample), and gradients' `mean` per
     * group of mean_group channels (0: per channel): mean[c / mean_group] in channels-first,
     * mean[n * (C / mean_group) + c / mean_group] in channels-last */
    size_t samples, mean_group;
    /* LayerNorm's backward on bn_reduce_rows (see bn_stage1_writes_rows): with the column sums,
     * each row's sums of row_weight * dy and row_weight * dy * (x - row_mean), 3 x rows floats */
    cl_mem row_weight, row_sets;
    /* gradients with mask on bn_reduce_rows (see bn_stage1_writes_rows): receives dy masked by
     * mask > 0, the gradient of a fused add's residual */
    cl_mem masked_dy;
} stage1_inputs;

/* Channels per work-item of the one-launch kernels (bn_forward_fused, bn_backward_fused,
 * gn_forward_fused), or 0 where they do not serve: work-groups of one (CPUs), channels-first,
 * a channel (N planes) of each of `tensors` inputs within the larger of 256 KiB and
 * bn_cache_share, and at least 4 channels per compute unit. Tiles of several channels stay
 * within 256 KiB. */
size_t bn_fused_tile(const clnorm_context *ctx, const program_entry *prog, const bn_geometry *g,
                     size_t tensors);

/* Work-items per run of the register kernels for work-groups of many (GPUs: gn_forward_rows,
 * bn_forward_channel), where a run holds `units` vectors (VEC values each) in registers, at most
 * the register_units parameter per work-item: about 4 each (several loads in flight, short
 * trees), at most a work-group. 0 where they do not serve: work-groups of one, register_units 0,
 * or too many units. */
size_t bn_register_width(const clnorm_context *ctx, const program_entry *prog, size_t units);
/* The build of register kernel `name` (REGISTER_KERNELS in common.cl) for a run of `width`
 * work-items holding `units` vectors: its short build where that holds them (fewer registers), else
 * the long one. */
int bn_register_kernel(const clnorm_context *ctx, const char *name, size_t width, size_t units);

/* The bytes a one-launch kernel's work-item may keep for its re-reads in the device's cache:
 * a quarter of a compute unit's share (1 MiB per unit where the device does not report its
 * cache): the other units, the streams in flight and other processes use the rest. */
uint64_t bn_cache_share(const clnorm_context *ctx);

/* Whether an output of `elements` values written by contiguous runs (work-groups of one) goes
 * through streaming stores past the cache (FLAG_STREAM, CHF_STREAM): a plain store first reads
 * each line, 1.5x the bytes of a copy (oneDNN's fp32 batch norm streams its stores too). Outputs
 * within a compute unit's cache share stay in the cache for the op that reads them next. */
bool bn_streams_output(const clnorm_context *ctx, const program_entry *prog, size_t elements);

/* Whether stage 1 over this channels-last geometry is bn_reduce_rows, which can also take row
 * sums in the same pass (stage1_inputs.row_sets). */
bool bn_stage1_writes_rows(const program_entry *prog, const bn_geometry *g);

/* UNSUPPORTED (naming `name`) when per-channel work buffers of 4 floats a channel would not fit
 * in the device's largest buffer. */
clnorm_status check_channel_count(clnorm_context *ctx, const char *name, size_t channels);

/* Plans stage 1 for the device, reserves WS_PARTIALS and enqueues it; the partials are in *sets,
 * *num_sets sets of 3C floats. */
clnorm_status bn_enqueue_stage1(clnorm_context *ctx, launch_chain *chain,
                                const program_entry *prog, const bn_geometry *g,
                                const stage1_inputs *in, cl_mem *sets, cl_uint *num_sets);

/* Operands of bn_elementwise: out = [a*in1'] + b [+ e*(in2 - center)] [+ residual] [ReLU];
 * in1' is in1 masked by mask > 0. The per-channel (a, b, e, center) come from bn_channel (coef):
 * for the forward (scale, beta, scale, mean), so y = beta + scale * (x - mean) with in2 = x.
 * Without coef, the kernel forms the forward's from `stats` (one launch): per plane
 * (channels-first), per vector (channels-last rows, strided runs), or, channels-last rows on
 * contiguous runs, into a copy of all C per work-item in __local memory (where a work-item also
 * copies given ones) or from a bn_channel launch that bn_enqueue_elementwise adds (where the copy
 * would not pay or fit). */
typedef struct given_stats {
    cl_mem mean, var, gamma, beta; /* any may be NULL: mean 0, invstd 1, gamma 1, beta 0 */
    cl_int var_is_invstd;
    float eps;
} given_stats;

typedef struct elementwise_args {
    cl_mem in1, in2, residual, mask, coef, out, out2;
    cl_int flags;
    given_stats stats;
} elementwise_args;

/* as in kernels/batchnorm.cl (bits 64 and up are the kernel's own: which operands are given) */
enum {
    FLAG_RELU = 1,
    FLAG_NO_SHIFT = 2,
    FLAG_LAST_FIRST = 4,
    FLAG_STREAM = 8,
    FLAG_OWN_COEF = 16,
    FLAG_FIXED_COEF = 32
};
enum { WALK_PLANES = 0, WALK_ROWS = 1, WALK_FLAT = 2 }; /* bn_elementwise's walks, as there */

/* Work-group size for kernels with a work-item per channel (or group) and no barriers. */
size_t per_item_local(const program_entry *prog, int kernel);

/* Per-channel coefficients (scale, beta, scale, mean) from a mean and a variance (or invstd). */
clnorm_status bn_enqueue_coef(clnorm_context *ctx, launch_chain *chain, const program_entry *prog,
                              size_t channels, const given_stats *stats, cl_mem coef);
/* Elementwise pass over `total` values, channel of value i = (i / inner) % channels. */
clnorm_status bn_enqueue_elementwise(clnorm_context *ctx, launch_chain *chain,
                                     const program_entry *prog, size_t total, size_t inner,
                                     size_t channels, const elementwise_args *a);

#endif

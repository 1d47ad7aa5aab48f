/* Shared by batchnorm.c (operations) and batchnorm_layer.c (the layer object). */
#ifndef CLNORM_BATCHNORM_INTERNAL_H
#define CLNORM_BATCHNORM_INTERNAL_H

#include "internal.h"

/* A validated (N, C, spatial...) tensor. rows = N * spatial = values per channel. */
typedef struct bn_geometry {
    size_t n, c, spatial, rows, total, bytes;
    clnorm_layout layout;
} bn_geometry;

clnorm_status bn_check_shape(clnorm_context *ctx, const clnorm_shape *shape, bn_geometry *g);
clnorm_status bn_check_config(clnorm_context *ctx, const clnorm_bn_config *config);

/* Operands of bn_elementwise: out = [a*in1'] + b [+ e*(in2 - center)] [+ residual] [ReLU];
 * in1' is in1 masked by mask > 0. The per-channel (a, b, e, center) come from bn_channel: for
 * the forward (scale, beta, scale, mean), so y = beta + scale * (x - mean) with in2 = x. */
typedef struct elementwise_args {
    cl_mem in1, in2, residual, mask, coef, out, out2;
    cl_int flags;
} elementwise_args;

enum { FLAG_RELU = 1, FLAG_NO_SHIFT = 2 }; /* as in kernels/batchnorm.cl */

/* Per-channel coefficients (scale, beta, scale, mean) from a mean and a variance (or invstd). */
clnorm_status bn_enqueue_coef(clnorm_context *ctx, launch_chain *chain, const program_entry *prog,
                              size_t channels, cl_mem mean, cl_mem var, bool var_is_invstd,
                              float eps, cl_mem gamma, cl_mem beta, cl_mem coef);
/* Elementwise pass over `total` values, channel of value i = (i / inner) % channels. */
clnorm_status bn_enqueue_elementwise(clnorm_context *ctx, launch_chain *chain,
                                     const program_entry *prog, size_t total, size_t inner,
                                     size_t channels, const elementwise_args *a);

#endif

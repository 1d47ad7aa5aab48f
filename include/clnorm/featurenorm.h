/* Layer, RMS, group and instance normalization (included by clnorm.h).
 *
 * PyTorch semantics (F.layer_norm, F.rms_norm, F.group_norm, F.instance_norm):
 *   LayerNorm:    per row of D = cols values: y = (x - mean) * rstd * weight + bias,
 *                 rstd = 1 / sqrt(var + eps), var biased; saves mean and rstd (one per row).
 *   RMSNorm:      y = x * rstd * weight, rstd = 1 / sqrt(mean(x^2) + eps); no mean, no bias.
 *   GroupNorm(G): for (N, C, spatial...), statistics per (n, group) over C/G channels and all
 *                 positions; weight and bias per channel; C % G != 0 is an error.
 *   InstanceNorm: GroupNorm with G = C, plus optional running statistics (the mean over the batch
 *                 of the per-instance mean and unbiased variance, with momentum).
 * Rows are contiguous (row-major rows x cols): a normalized_shape of any rank is cols = its
 * product. Per-row / per-group buffers hold rows (or N * G) floats, weight and bias cols (or C).
 * rows == 0 (or N == 0) is a successful no-op. Statistics come from the same two-stage tree
 * reductions as batch norm (Chan's formula, fixed order: deterministic).
 */
#ifndef CLNORM_FEATURENORM_H
#define CLNORM_FEATURENORM_H

#ifdef __cplusplus
extern "C" {
#endif

/* PyTorch's defaults: 1e-5 for layer, group and instance norm; RMSNorm's eps=None is the machine
 * epsilon of the data type. */
#define CLNORM_DEFAULT_EPS 1e-5
#define CLNORM_RMS_DEFAULT_EPS 1.1920928955078125e-07

typedef struct clnorm_norm_buffers {
    cl_mem x;        /* input */
    cl_mem residual; /* optional, same size: normalize h = x + residual (pre-norm blocks) ... */
    cl_mem h;        /* ... and write h here (required with residual; may be x) */
    cl_mem weight;   /* optional (NULL = 1) */
    cl_mem bias;     /* optional (NULL = 0); RMSNorm has none */
    cl_mem y;        /* output, may be x when there is no residual */
    cl_mem mean;     /* optional output, one per row / group (not for RMSNorm) */
    cl_mem rstd;     /* optional output, one per row / group */
} clnorm_norm_buffers;

typedef struct clnorm_norm_grad_buffers {
    cl_mem x;       /* the forward's normalized input: x, or h with a fused residual */
    cl_mem dy;      /* gradient of y */
    cl_mem weight;  /* NULL = 1 */
    cl_mem mean;    /* from the forward (not for RMSNorm) */
    cl_mem rstd;    /* from the forward */
    cl_mem dh_in;   /* optional: gradient reaching h from elsewhere (the residual stream) */
    cl_mem dx;      /* gradient of x (and of the residual, which is the same); may be dy */
    cl_mem dweight; /* optional: written, not accumulated */
    cl_mem dbias;   /* optional (not for RMSNorm) */
} clnorm_norm_grad_buffers;

CLNORM_API clnorm_status clnorm_layernorm_forward(clnorm_context *ctx, size_t rows, size_t cols,
                                                  double eps, const clnorm_norm_buffers *buffers,
                                                  cl_uint num_wait, const cl_event *wait_list,
                                                  cl_event *event);
CLNORM_API clnorm_status clnorm_layernorm_backward(clnorm_context *ctx, size_t rows, size_t cols,
                                                   const clnorm_norm_grad_buffers *buffers,
                                                   cl_uint num_wait, const cl_event *wait_list,
                                                   cl_event *event);
CLNORM_API clnorm_status clnorm_rmsnorm_forward(clnorm_context *ctx, size_t rows, size_t cols,
                                                double eps, const clnorm_norm_buffers *buffers,
                                                cl_uint num_wait, const cl_event *wait_list,
                                                cl_event *event);
CLNORM_API clnorm_status clnorm_rmsnorm_backward(clnorm_context *ctx, size_t rows, size_t cols,
                                                 const clnorm_norm_grad_buffers *buffers,
                                                 cl_uint num_wait, const cl_event *wait_list,
                                                 cl_event *event);

/* GroupNorm of an (N, C, spatial...) tensor in either layout; mean and rstd hold N * groups. */
CLNORM_API clnorm_status clnorm_groupnorm_forward(clnorm_context *ctx, const clnorm_shape *shape,
                                                  size_t groups, double eps,
                                                  const clnorm_norm_buffers *buffers,
                                                  cl_uint num_wait, const cl_event *wait_list,
                                                  cl_event *event);
CLNORM_API clnorm_status clnorm_groupnorm_backward(clnorm_context *ctx, const clnorm_shape *shape,
                                                   size_t groups,
                                                   const clnorm_norm_grad_buffers *buffers,
                                                   cl_uint num_wait, const cl_event *wait_list,
                                                   cl_event *event);

/* InstanceNorm. use_input_stats (training, or evaluation without running statistics): per
 * instance statistics (mean and rstd hold N * C), and when running_mean/running_var are given
 * they are updated with momentum; a spatial size of 1 is CLNORM_INVALID_SHAPE, as in PyTorch.
 * !use_input_stats: normalize with the running statistics, which are then required (as batch
 * norm in evaluation). */
CLNORM_API clnorm_status clnorm_instancenorm_forward(clnorm_context *ctx,
                                                     const clnorm_shape *shape, double eps,
                                                     double momentum, int use_input_stats,
                                                     const clnorm_norm_buffers *buffers,
                                                     cl_mem running_mean, cl_mem running_var,
                                                     cl_uint num_wait, const cl_event *wait_list,
                                                     cl_event *event);
/* Backward of the instance-statistics forward (use_input_stats); with running statistics the
 * forward is batch norm in evaluation: use clnorm_bn_backward_frozen. */
CLNORM_API clnorm_status clnorm_instancenorm_backward(clnorm_context *ctx,
                                                      const clnorm_shape *shape,
                                                      const clnorm_norm_grad_buffers *buffers,
                                                      cl_uint num_wait,
                                                      const cl_event *wait_list, cl_event *event);

#ifdef __cplusplus
}
#endif

#endif

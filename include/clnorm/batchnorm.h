/* Batch normalization (included by clnorm.h).
 *
 * Semantics are PyTorch's BatchNorm1d/2d/3d. For a tensor of shape (N, C, S1..Sk), every channel c
 * has its statistics over N and all spatial positions (n = N * S1 * ... * Sk values):
 *   training:  y = gamma * (x - mean_B) / sqrt(var_B + eps) + beta, var_B biased (divides by n);
 *              running_mean = (1 - m) * running_mean + m * mean_B,
 *              running_var  = (1 - m) * running_var  + m * var_B * n / (n - 1)  (unbiased);
 *              save_mean = mean_B, save_invstd = 1 / sqrt(var_B + eps).
 *   inference: y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta: an example's
 *              output never depends on the rest of the batch.
 * PyTorch's momentum=None (a cumulative average) is momentum = 1 / num_batches_tracked after
 * incrementing it; the layer object (clnorm_batchnorm) does that for you.
 *
 * Buffers hold fp32. x and y may be the same buffer (in place). Per-channel buffers hold C floats.
 * N == 0 is a successful no-op (the returned event, if asked for, completes after the wait list).
 */
#ifndef CLNORM_BATCHNORM_H
#define CLNORM_BATCHNORM_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum clnorm_activation {
    CLNORM_ACTIVATION_NONE = 0,
    CLNORM_ACTIVATION_RELU = 1 /* y = max(bn(x) [+ residual], 0); NaN stays NaN */
} clnorm_activation;

typedef struct clnorm_bn_config {
    double eps;      /* >= 0, finite; default 1e-5 */
    double momentum; /* in [0, 1]; default 0.1 */
    clnorm_activation activation; /* fused after the (optional) residual add */
    uint8_t reserved[32];         /* zero */
} clnorm_bn_config;

/* eps 1e-5, momentum 0.1, no activation. */
CLNORM_API void clnorm_bn_default_config(clnorm_bn_config *config);

typedef struct clnorm_bn_buffers {
    cl_mem x;            /* input, N*C*S floats in the shape's layout */
    cl_mem y;            /* output, same size; may be x */
    cl_mem residual;     /* optional, same size: y = act(bn(x) + residual) (ResNet blocks) */
    cl_mem gamma, beta;  /* optional affine parameters; NULL = 1 and 0 */
    cl_mem running_mean; /* inference: required. training: optional, both or neither; updated */
    cl_mem running_var;
    cl_mem save_mean;   /* training: written when not NULL (needed for backward) */
    cl_mem save_invstd; /* apply: the statistics to normalize with (from clnorm_bn_merge_stats) */
} clnorm_bn_buffers;

/* Forward in training mode: batch statistics (two-stage tree reduction), running statistics,
 * saved mean and invstd, y. Fails with CLNORM_INVALID_SHAPE when a channel has one value. */
CLNORM_API clnorm_status clnorm_bn_forward_training(clnorm_context *ctx, const clnorm_shape *shape,
                                                    const clnorm_bn_config *config,
                                                    const clnorm_bn_buffers *buffers,
                                                    cl_uint num_wait, const cl_event *wait_list,
                                                    cl_event *event);

/* Forward in inference mode with running_mean and running_var. */
CLNORM_API clnorm_status clnorm_bn_forward_inference(clnorm_context *ctx,
                                                     const clnorm_shape *shape,
                                                     const clnorm_bn_config *config,
                                                     const clnorm_bn_buffers *buffers,
                                                     cl_uint num_wait, const cl_event *wait_list,
                                                     cl_event *event);

typedef struct clnorm_bn_grad_buffers {
    cl_mem x;      /* forward input */
    cl_mem dy;     /* gradient of the output */
    cl_mem y;      /* forward output: required with a fused ReLU, which passes dy where y > 0 */
    cl_mem gamma;  /* NULL = 1 */
    cl_mem mean;   /* training: save_mean of the forward; frozen: running_mean */
    cl_mem invstd; /* training: save_invstd of the forward; frozen: unused */
    cl_mem var;    /* frozen: running_var; training: unused */
    cl_mem dx;     /* gradient of x; may be dy (in place) */
    cl_mem dgamma, dbeta; /* optional: written (not accumulated) when not NULL */
    cl_mem dresidual;     /* optional: gradient of the residual of a fused add (= masked dy) */
} clnorm_bn_grad_buffers;

/* Backward of the training forward:
 *   dbeta = sum(dy), dgamma = sum(dy * xhat), xhat = (x - mean) * invstd,
 *   dx = gamma * invstd / n * (n * dy - dbeta - xhat * dgamma). */
CLNORM_API clnorm_status clnorm_bn_backward(clnorm_context *ctx, const clnorm_shape *shape,
                                            const clnorm_bn_config *config,
                                            const clnorm_bn_grad_buffers *buffers,
                                            cl_uint num_wait, const cl_event *wait_list,
                                            cl_event *event);

/* Backward with frozen statistics (evaluation-mode backward, fine-tuning with frozen BN):
 *   dx = dy * gamma / sqrt(running_var + eps); dgamma, dbeta as above with the running stats. */
CLNORM_API clnorm_status clnorm_bn_backward_frozen(clnorm_context *ctx, const clnorm_shape *shape,
                                                   const clnorm_bn_config *config,
                                                   const clnorm_bn_grad_buffers *buffers,
                                                   cl_uint num_wait, const cl_event *wait_list,
                                                   cl_event *event);

/* The forward's three stages, for synchronized batch norm across devices or processes.
 * A statistics set is 3*C floats: count[C], mean[C], var[C] (biased variance). */

/* Stage 1: this tensor's per-channel statistics set. */
CLNORM_API clnorm_status clnorm_bn_partial_stats(clnorm_context *ctx, const clnorm_shape *shape,
                                                 cl_mem x, cl_mem stats_set, cl_uint num_wait,
                                                 const cl_event *wait_list, cl_event *event);

/* Stage 2: merges num_sets consecutive sets (Chan's formula, a fixed tree; counts may differ),
 * writes save_mean and save_invstd, and updates the running statistics when given. */
CLNORM_API clnorm_status clnorm_bn_merge_stats(clnorm_context *ctx, size_t channels,
                                               size_t num_sets, cl_mem stats_sets,
                                               const clnorm_bn_config *config,
                                               cl_mem running_mean, cl_mem running_var,
                                               cl_mem save_mean, cl_mem save_invstd,
                                               cl_uint num_wait, const cl_event *wait_list,
                                               cl_event *event);

/* Stage 3: y = act(gamma * (x - save_mean) * save_invstd + beta [+ residual]). */
CLNORM_API clnorm_status clnorm_bn_apply(clnorm_context *ctx, const clnorm_shape *shape,
                                         const clnorm_bn_config *config,
                                         const clnorm_bn_buffers *buffers, cl_uint num_wait,
                                         const cl_event *wait_list, cl_event *event);

/* ---------------------------------------------------------------------------------------------
 * The layer object, like torch.nn.BatchNorm1d/2d/3d. It owns gamma, beta (affine), running
 * statistics and num_batches_tracked (tracking), the gradients dgamma and dbeta, and the batch
 * statistics saved by the last training forward. Its mode is explicit: every forward states the
 * mode the caller expects and fails with CLNORM_WRONG_MODE when the layer is in the other one,
 * so "forgot to switch to evaluation" is an error, not silently worse predictions.
 */
typedef struct clnorm_batchnorm clnorm_batchnorm;

typedef enum clnorm_mode { CLNORM_TRAINING = 0, CLNORM_EVALUATION = 1 } clnorm_mode;

typedef struct clnorm_batchnorm_options {
    size_t num_features;     /* C, required */
    double eps;              /* default 1e-5 */
    double momentum;         /* default 0.1; ignored when cumulative_average */
    int cumulative_average;  /* PyTorch momentum=None: running stats are the mean over batches */
    int affine;              /* learnable gamma (init 1) and beta (init 0); default 1 */
    int track_running_stats; /* default 1; without them evaluation uses batch statistics */
    uint8_t reserved[32];
} clnorm_batchnorm_options;

CLNORM_API void clnorm_batchnorm_default_options(clnorm_batchnorm_options *options,
                                                 size_t num_features);

/* Creates the layer in training mode, its buffers initialised (blocks until they are). Bad options
 * fail with CLNORM_INVALID_ARGUMENT (NULL options or out, num_features 0, eps negative or not
 * finite, momentum outside [0, 1] without cumulative_average) or CLNORM_UNSUPPORTED
 * (num_features over the device's largest buffer); *out is NULL on failure. */
CLNORM_API clnorm_status clnorm_batchnorm_create(clnorm_context *ctx,
                                                 const clnorm_batchnorm_options *options,
                                                 clnorm_batchnorm **out);
CLNORM_API void clnorm_batchnorm_release(clnorm_batchnorm *bn);

CLNORM_API clnorm_status clnorm_batchnorm_set_mode(clnorm_batchnorm *bn, clnorm_mode mode);
/* CLNORM_TRAINING for NULL. */
CLNORM_API clnorm_mode clnorm_batchnorm_mode(const clnorm_batchnorm *bn);
/* -1 for NULL. */
CLNORM_API int64_t clnorm_batchnorm_num_batches_tracked(const clnorm_batchnorm *bn);

/* The layer's buffers (C floats each; NULL where the options leave them out). The layer keeps
 * ownership; an optimizer may update gamma and beta in place from dgamma and dbeta. */
typedef struct clnorm_batchnorm_buffers {
    cl_mem gamma, beta, running_mean, running_var, dgamma, dbeta, save_mean, save_invstd;
} clnorm_batchnorm_buffers;
CLNORM_API clnorm_status clnorm_batchnorm_get_buffers(const clnorm_batchnorm *bn,
                                                      clnorm_batchnorm_buffers *buffers);

/* Forward: `expected` must equal the layer's mode. Training: batch statistics, running
 * statistics and num_batches_tracked updated, statistics saved for backward. Evaluation: running
 * statistics (batch statistics when the layer does not track them). residual may be NULL. */
CLNORM_API clnorm_status clnorm_batchnorm_forward(clnorm_batchnorm *bn, clnorm_mode expected,
                                                  const clnorm_shape *shape,
                                                  clnorm_activation activation, cl_mem x,
                                                  cl_mem residual, cl_mem y, cl_uint num_wait,
                                                  const cl_event *wait_list, cl_event *event);

/* Backward of the last forward: in training mode from the saved batch statistics, in evaluation
 * mode with frozen running statistics. Writes dx and the layer's dgamma/dbeta (when affine);
 * y is the forward's output (needed with ReLU), dresidual optional. */
CLNORM_API clnorm_status clnorm_batchnorm_backward(clnorm_batchnorm *bn, const clnorm_shape *shape,
                                                   clnorm_activation activation, cl_mem x,
                                                   cl_mem y, cl_mem dy, cl_mem dx,
                                                   cl_mem dresidual, cl_uint num_wait,
                                                   const cl_event *wait_list, cl_event *event);

/* Saves gamma, beta, running statistics, num_batches_tracked, eps and momentum to a file, and
 * loads them back (blocking). The format (little-endian):
 *   "CLNORMBN" | u32 version = 1 | u32 flags (1 affine, 2 tracking, 4 cumulative average) |
 *   u64 C | f64 eps | f64 momentum | i64 num_batches_tracked |
 *   f32 gamma[C], beta[C] (when affine) | f32 running_mean[C], running_var[C] (when tracking) |
 *   u64 FNV-1a hash of all bytes before it.
 * Loading validates everything (size, magic, version, C and flags equal to the layer's, finite
 * values, running_var >= 0, hash) and leaves the layer unchanged on CLNORM_BAD_FILE (and
 * CLNORM_IO_ERROR, CLNORM_OUT_OF_HOST_MEMORY); an OpenCL failure while the valid file's values
 * are written to the layer's buffers (CLNORM_OPENCL_ERROR) may leave them partly loaded. */
CLNORM_API clnorm_status clnorm_batchnorm_save(clnorm_batchnorm *bn, const char *path);
CLNORM_API clnorm_status clnorm_batchnorm_load(clnorm_batchnorm *bn, const char *path);

/* Folding for inference: scale = gamma / sqrt(running_var + eps), shift = beta - running_mean *
 * scale (C floats each, host memory; blocks). */
CLNORM_API clnorm_status clnorm_batchnorm_fold(clnorm_batchnorm *bn, float *scale, float *shift);

/* Folds the layer into the linear layer before it: weight (C x in_features, row-major, output
 * feature c in row c) and bias (C) become W' = W * scale (per row), b' = (b - mean) * scale + beta,
 * so that bn(W x + b) == W' x + b' in inference. Enqueued in place. */
CLNORM_API clnorm_status clnorm_batchnorm_fold_linear(clnorm_batchnorm *bn, cl_mem weight,
                                                      cl_mem bias, size_t in_features,
                                                      cl_uint num_wait, const cl_event *wait_list,
                                                      cl_event *event);

#ifdef __cplusplus
}
#endif

#endif

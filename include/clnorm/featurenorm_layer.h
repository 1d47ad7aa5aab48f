/* Layer objects for the feature-axis norms (included by clnorm.h), like torch.nn.LayerNorm,
 * torch.nn.RMSNorm, torch.nn.GroupNorm and torch.nn.InstanceNorm1d/2d/3d.
 *
 * One object type, clnorm_featurenorm, serves the four kinds. It owns the learnable weight
 * (init 1) and bias (init 0), their gradients dweight and dbias, InstanceNorm's running
 * statistics (init mean 0, variance 1), and the mean and rstd saved by the last forward for the
 * backward. Those saved statistics live in layer-owned buffers sized for the last forward's
 * rows (LayerNorm, RMSNorm) or N * groups (GroupNorm, InstanceNorm); a larger batch grows them,
 * a smaller one reuses them: a steady batch size allocates nothing per call.
 *
 * Every call builds on the functional operations of featurenorm.h (same semantics, same checks,
 * same statuses); the layer adds its own checks first: the call must suit the layer's kind, the
 * tensor must have the layer's normalized size or channels, and a backward must follow a forward
 * of the same shape. A failed call changes nothing in the layer.
 *
 * Modes: only InstanceNorm behaves differently in training and evaluation, so only its forward
 * states the mode it expects (CLNORM_WRONG_MODE when the layer is in the other one, as batch
 * norm). With track_running_stats, training normalizes with each instance's statistics and
 * updates the running statistics; evaluation normalizes with the running statistics. Without
 * them both use the instance statistics (PyTorch). LayerNorm, RMSNorm and GroupNorm accept
 * clnorm_featurenorm_set_mode (so a whole model can be switched) and behave the same in both.
 *
 * A layer, like a batch-norm layer, is used from one thread at a time.
 */
#ifndef CLNORM_FEATURENORM_LAYER_H
#define CLNORM_FEATURENORM_LAYER_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct clnorm_featurenorm clnorm_featurenorm;

typedef enum clnorm_featurenorm_kind {
    CLNORM_LAYERNORM = 0,
    CLNORM_RMSNORM = 1,
    CLNORM_GROUPNORM = 2,
    CLNORM_INSTANCENORM = 3
} clnorm_featurenorm_kind;

/* nn.LayerNorm(normalized_shape, eps, elementwise_affine, bias). */
typedef struct clnorm_layernorm_options {
    size_t normalized_size; /* D = the product of normalized_shape, required */
    double eps;             /* >= 0, finite; default CLNORM_DEFAULT_EPS */
    int elementwise_affine; /* learnable weight of D values; default 1 */
    int bias;               /* learnable bias too (only with elementwise_affine); default 1 */
    uint8_t reserved[32];
} clnorm_layernorm_options;

/* nn.RMSNorm(normalized_shape, eps, elementwise_affine). */
typedef struct clnorm_rmsnorm_options {
    size_t normalized_size; /* D, required */
    double eps;             /* default CLNORM_RMS_DEFAULT_EPS (PyTorch's eps=None for fp32) */
    int elementwise_affine; /* learnable weight; default 1 */
    uint8_t reserved[32];
} clnorm_rmsnorm_options;

/* nn.GroupNorm(num_groups, num_channels, eps, affine). */
typedef struct clnorm_groupnorm_options {
    size_t num_groups;   /* G, required, divides num_channels */
    size_t num_channels; /* C, required */
    double eps;          /* default CLNORM_DEFAULT_EPS */
    int affine;          /* learnable per-channel weight and bias; default 1 */
    uint8_t reserved[32];
} clnorm_groupnorm_options;

/* nn.InstanceNorm1d/2d/3d(num_features, eps, momentum, affine, track_running_stats). */
typedef struct clnorm_instancenorm_options {
    size_t num_features;     /* C, required */
    double eps;              /* default CLNORM_DEFAULT_EPS */
    double momentum;         /* in [0, 1]; default 0.1 (PyTorch's None is 0: no update) */
    int affine;              /* learnable per-channel weight and bias; default 0 */
    int track_running_stats; /* default 0 */
    uint8_t reserved[32];
} clnorm_instancenorm_options;

/* Fill the options with PyTorch's defaults and the given sizes. */
CLNORM_API void clnorm_layernorm_default_options(clnorm_layernorm_options *options,
                                                 size_t normalized_size);
CLNORM_API void clnorm_rmsnorm_default_options(clnorm_rmsnorm_options *options,
                                               size_t normalized_size);
CLNORM_API void clnorm_groupnorm_default_options(clnorm_groupnorm_options *options,
                                                 size_t num_groups, size_t num_channels);
CLNORM_API void clnorm_instancenorm_default_options(clnorm_instancenorm_options *options,
                                                    size_t num_features);

/* Create a layer in training mode, its buffers initialised (blocks until they are). Bad options
 * fail with CLNORM_INVALID_ARGUMENT (a size of 0, groups not dividing the channels, eps negative
 * or not finite, momentum outside [0, 1]) or CLNORM_UNSUPPORTED (a size over the device's
 * largest buffer); *out is NULL on failure. */
CLNORM_API clnorm_status clnorm_featurenorm_create_layernorm(
    clnorm_context *ctx, const clnorm_layernorm_options *options, clnorm_featurenorm **out);
CLNORM_API clnorm_status clnorm_featurenorm_create_rmsnorm(clnorm_context *ctx,
                                                           const clnorm_rmsnorm_options *options,
                                                           clnorm_featurenorm **out);
CLNORM_API clnorm_status clnorm_featurenorm_create_groupnorm(
    clnorm_context *ctx, const clnorm_groupnorm_options *options, clnorm_featurenorm **out);
CLNORM_API clnorm_status clnorm_featurenorm_create_instancenorm(
    clnorm_context *ctx, const clnorm_instancenorm_options *options, clnorm_featurenorm **out);

/* Waits for the context's queue, then releases the layer's buffers. NULL is allowed. */
CLNORM_API void clnorm_featurenorm_release(clnorm_featurenorm *layer);

CLNORM_API clnorm_status clnorm_featurenorm_set_mode(clnorm_featurenorm *layer, clnorm_mode mode);
/* CLNORM_TRAINING for NULL. */
CLNORM_API clnorm_mode clnorm_featurenorm_mode(const clnorm_featurenorm *layer);

typedef struct clnorm_featurenorm_info {
    clnorm_featurenorm_kind kind;
    clnorm_mode mode;
    size_t size;     /* D (LayerNorm, RMSNorm) or C: the length of every parameter buffer */
    size_t groups;   /* statistics per sample: 1 (LayerNorm, RMSNorm), G, or C (InstanceNorm) */
    double eps;      /* as created, or as loaded */
    double momentum; /* InstanceNorm; 0 for the others */
    int has_weight, has_bias, has_running_stats;
} clnorm_featurenorm_info;
CLNORM_API clnorm_status clnorm_featurenorm_get_info(const clnorm_featurenorm *layer,
                                                     clnorm_featurenorm_info *info);

/* The layer's buffers; the layer keeps ownership. weight, bias, dweight, dbias and the running
 * statistics hold `size` floats and stay the same buffers for the layer's life (NULL where the
 * options leave them out); an optimizer may update weight and bias in place from dweight and
 * dbias. mean (not for RMSNorm) and rstd hold the `saved_count` statistics of the last forward
 * (NULL before the first); a forward with a larger batch replaces them with larger buffers. */
typedef struct clnorm_featurenorm_buffers {
    cl_mem weight, bias, dweight, dbias, running_mean, running_var;
    cl_mem mean, rstd;
    size_t saved_count;
} clnorm_featurenorm_buffers;
CLNORM_API clnorm_status clnorm_featurenorm_get_buffers(const clnorm_featurenorm *layer,
                                                        clnorm_featurenorm_buffers *buffers);

/* LayerNorm and RMSNorm over `rows` rows of D contiguous values (x is rows x D, row-major).
 * residual may be NULL; with it, the pre-norm block's fused add: h = x + residual is written to
 * h (required then, may be x) and normalized. y may be x when there is no residual. Saves the
 * rows' mean (LayerNorm) and rstd for the backward. */
CLNORM_API clnorm_status clnorm_featurenorm_forward_rows(clnorm_featurenorm *layer, size_t rows,
                                                         cl_mem x, cl_mem residual, cl_mem h,
                                                         cl_mem y, cl_uint num_wait,
                                                         const cl_event *wait_list,
                                                         cl_event *event);
/* Backward of the last forward_rows, whose `rows` it must repeat. x is the forward's normalized
 * input (h with a residual); dh_in (optional) is the gradient reaching h from elsewhere (the
 * residual stream). Writes dx (the gradient of x, and of the residual, which is the same; may be
 * dy) and the layer's dweight and dbias (written, not accumulated). */
CLNORM_API clnorm_status clnorm_featurenorm_backward_rows(clnorm_featurenorm *layer, size_t rows,
                                                          cl_mem x, cl_mem dy, cl_mem dh_in,
                                                          cl_mem dx, cl_uint num_wait,
                                                          const cl_event *wait_list,
                                                          cl_event *event);

/* GroupNorm of an (N, C, spatial...) tensor in either layout, shape->c the layer's channels.
 * Saves mean and rstd per (n, group). y may be x. */
CLNORM_API clnorm_status clnorm_featurenorm_forward_groups(clnorm_featurenorm *layer,
                                                           const clnorm_shape *shape, cl_mem x,
                                                           cl_mem y, cl_uint num_wait,
                                                           const cl_event *wait_list,
                                                           cl_event *event);
/* Backward of the last forward_groups, of the same shape: dx (may be dy), dweight, dbias. */
CLNORM_API clnorm_status clnorm_featurenorm_backward_groups(clnorm_featurenorm *layer,
                                                            const clnorm_shape *shape, cl_mem x,
                                                            cl_mem dy, cl_mem dx,
                                                            cl_uint num_wait,
                                                            const cl_event *wait_list,
                                                            cl_event *event);

/* InstanceNorm of an (N, C, spatial...) tensor: `expected` must equal the layer's mode. Instance
 * statistics (saved, N * C) in training and without running statistics; training with them also
 * updates them (momentum; the mean over the batch of each instance's mean and unbiased
 * variance). Evaluation with running statistics normalizes with them and saves nothing. */
CLNORM_API clnorm_status clnorm_featurenorm_forward_instances(clnorm_featurenorm *layer,
                                                              clnorm_mode expected,
                                                              const clnorm_shape *shape,
                                                              cl_mem x, cl_mem y,
                                                              cl_uint num_wait,
                                                              const cl_event *wait_list,
                                                              cl_event *event);
/* Backward of the last forward_instances, of the same shape: from the saved instance statistics,
 * or, after an evaluation forward with running statistics, with those frozen statistics
 * (dx = dy * weight / sqrt(running_var + eps)). */
CLNORM_API clnorm_status clnorm_featurenorm_backward_instances(clnorm_featurenorm *layer,
                                                               const clnorm_shape *shape,
                                                               cl_mem x, cl_mem dy, cl_mem dx,
                                                               cl_uint num_wait,
                                                               const cl_event *wait_list,
                                                               cl_event *event);

/* Saves the layer's parameters and settings to a file, and loads them back (blocking). Saving
 * writes a temporary file next to `path` and renames it over `path`. The format (little-endian):
 *   magic, 8 bytes: "CLNORMLN" (LayerNorm), "CLNORMRM" (RMSNorm), "CLNORMGN" (GroupNorm) or
 *                   "CLNORMIN" (InstanceNorm) |
 *   u32 version = 1 | u32 flags (1 weight, 2 bias, 4 running statistics) |
 *   u64 size (D or C) | u64 groups (1, G, or C) | f64 eps | f64 momentum (0 but InstanceNorm) |
 *   f32 weight[size] (flag 1) | f32 bias[size] (flag 2) |
 *   f32 running_mean[size], running_var[size] (flag 4) |
 *   u64 FNV-1a hash (64-bit, offset basis 0xcbf29ce484222325) of all bytes before it.
 * Loading validates everything (length, magic of the layer's kind, version, flags, size and
 * groups equal to the layer's, hash, eps finite and >= 0, momentum in [0, 1] (0 but InstanceNorm),
 * finite values, running_var >= 0) and leaves the layer unchanged on CLNORM_BAD_FILE (and
 * CLNORM_IO_ERROR, CLNORM_OUT_OF_HOST_MEMORY); a valid file sets the parameters, eps and momentum.
 * An OpenCL failure while a valid file's values are written to the layer's buffers
 * (CLNORM_OPENCL_ERROR) may leave them partly loaded, with the old eps and momentum. */
CLNORM_API clnorm_status clnorm_featurenorm_save(clnorm_featurenorm *layer, const char *path);
CLNORM_API clnorm_status clnorm_featurenorm_load(clnorm_featurenorm *layer, const char *path);

#ifdef __cplusplus
}
#endif

#endif

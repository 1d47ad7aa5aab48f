/* The multilayer perceptron of clnorm-train:
 *   input -> [Linear -> norm -> ReLU] x depth -> Linear -> logits
 * Linear layers are CLBlast SGEMMs on the clnorm context's queue; the normalization comes from
 * clnorm: batch norm (clnorm_batchnorm, with its fused ReLU), layer, group and RMS norm
 * (clnorm_featurenorm layer objects, followed by the program's own ReLU kernel); everything else
 * is one of train_kernels. Every call only enqueues work on the in-order queue unless it says it
 * blocks. */
#ifndef CLNORM_TRAIN_MLP_H
#define CLNORM_TRAIN_MLP_H

#include <clnorm.h>
#include <stdint.h>

#include "kernels.h"

/* The normalization after each hidden linear layer, over the layer's H features of each example:
 *   batch: per feature over the batch (running statistics for evaluation);
 *   layer: per example over its H features;
 *   group: per example over each of `groups` groups of H / groups features (GroupNorm on shape
 *          N = batch, C = H, no spatial dimensions);
 *   rms:   per example, x / rms(x) * weight (no mean, no shift: the linear layer keeps its bias).
 * norm_available says which ones this build of clnorm-train has (all of them now). */
typedef enum norm_kind {
    NORM_NONE = 0,
    NORM_BATCH = 1,
    NORM_LAYER = 2,
    NORM_GROUP = 3,
    NORM_RMS = 4,
    NORM_KIND_COUNT
} norm_kind;

const char *norm_name(norm_kind kind);
/* 0 and *kind set when name is one of none, batch, layer, group, rms; -1 otherwise. */
int norm_from_name(const char *name, norm_kind *kind);
/* Whether this build of clnorm offers the normalization. */
int norm_available(norm_kind kind);

typedef struct mlp_shape {
    size_t input, hidden, depth, classes;
    norm_kind norm;
    size_t groups; /* NORM_GROUP: groups per hidden layer, dividing hidden */
} mlp_shape;

/* The default number of groups for a hidden width: the largest divisor of hidden up to 32 that
 * leaves at least 8 features per group (32 for the default 256: groups of 8; 8 for 64), else 1. */
size_t default_groups(size_t hidden);

typedef struct mlp mlp;

/* Creates the network with buffers for batches of up to max_rows examples; weights drawn from
 * a generator seeded with `seed` (Kaiming-normal for hidden layers, LeCun-normal for the output
 * layer, zero biases): the same seed gives the same network. Hidden linear layers have a bias
 * without normalization and before RMS norm; batch, layer and group norm's shift replaces it.
 * The norms' weights start at 1 and their biases at 0. Blocks. 0 or -1 with a message. */
int mlp_create(clnorm_context *ctx, const train_kernels *kernels, const mlp_shape *shape,
               size_t max_rows, uint64_t seed, mlp **out, char *err, size_t err_size);
void mlp_release(mlp *net);

/* The message of the last failure. */
const char *mlp_error(const mlp *net);
const mlp_shape *mlp_get_shape(const mlp *net);
size_t mlp_parameter_count(const mlp *net);

/* Switches every normalization layer to training or evaluation mode (only batch norm behaves
 * differently; layer, group and RMS norm compute the same in both). */
int mlp_set_mode(mlp *net, clnorm_mode mode);

/* Forward of n rows of x (n x input floats); the normalization layers must be in `expected`
 * mode. The logits (n x classes) are then in mlp_logits(net). */
int mlp_forward(mlp *net, cl_mem x, size_t n, clnorm_mode expected);
cl_mem mlp_logits(const mlp *net);

/* Softmax cross-entropy of the last forward against labels (n ints): slot_loss[slot] = sum of
 * the n losses, slot_correct[slot] = number of correct predictions; with want_grad, the gradient
 * of the mean loss for mlp_backward. */
int mlp_loss(mlp *net, cl_mem labels, size_t n, int want_grad, cl_mem slot_loss,
             cl_mem slot_correct, size_t slot);

/* Backward of the last training forward (x is its input): every parameter's gradient. */
int mlp_backward(mlp *net, cl_mem x, size_t n);

/* One step of SGD with momentum on every parameter (the norms' weights and biases too, without
 * weight decay, as the linear biases). */
int mlp_sgd_step(mlp *net, float lr, float momentum, float weight_decay);

/* Copies the running statistics of every normalization layer aside / back (to run the layers in
 * training mode on data that must not change them). */
int mlp_stats_backup(mlp *net);
int mlp_stats_restore(mlp *net);

/* A network without normalization layers computing the same function as `net` in evaluation
 * mode: each batch norm folded into the linear layer before it (clnorm_batchnorm_fold_linear on
 * copies of the weights). Only for networks with batch norm or none (the per-example norms depend
 * on each input: they cannot fold). Blocks. */
int mlp_fold(mlp *net, mlp **folded);

#endif

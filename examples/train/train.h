/* Training and evaluation loops of clnorm-train: the data sets on the device, one epoch of SGD,
 * evaluation in either mode, inference timing. The host reads only per-step scalars (loss sums
 * and correct counts), once per epoch or evaluation. */
#ifndef CLNORM_TRAIN_TRAIN_H
#define CLNORM_TRAIN_TRAIN_H

#include <clnorm.h>
#include <stdint.h>

#include "idx.h"
#include "kernels.h"
#include "mlp.h"

typedef struct device_set {
    cl_mem images; /* count x dim bytes */
    cl_mem labels; /* count bytes */
    cl_mem order;  /* count ints: 0, 1, 2, ... (evaluation order) */
    size_t count, dim;
} device_set;

typedef struct train_env {
    clnorm_context *ctx;
    cl_context cl;
    cl_command_queue queue;
    const train_kernels *k;
    float pixel_mean, pixel_inv_std; /* input normalization, from the training images */
    device_set train, test;
    size_t max_rows;
    cl_mem x, labels;                /* one batch: max_rows x dim floats, max_rows ints */
    cl_mem perm;                     /* train.count ints: this epoch's shuffled order */
    cl_mem slot_loss, slot_correct;  /* per-step (or per-chunk) results */
    size_t slots;
    float *host_loss;                /* slots each */
    int *host_correct;
    int progress;                    /* print progress lines to stderr */
    char err[4096];
} train_env;

/* Uploads the first train_limit / test_limit examples (0: all) and allocates batch buffers for up
 * to max_rows examples. The input normalization (mean and standard deviation of the training
 * pixels) is computed from the uploaded training images. Blocks. */
int env_create(train_env *env, clnorm_context *ctx, const train_kernels *k, const idx_set *train,
               size_t train_limit, const idx_set *test, size_t test_limit, size_t max_rows);
void env_release(train_env *env);

typedef struct epoch_stats {
    double train_loss;   /* mean of the step losses */
    double train_acc;    /* fraction of training examples predicted right during the epoch */
    size_t steps;
    long first_bad_step; /* first step whose loss is not finite, -1 when none */
    double seconds;
} epoch_stats;

typedef struct sgd_settings {
    size_t batch;
    double lr, momentum, weight_decay;
    int cosine; /* anneal the learning rate to 0 over total_steps */
    size_t total_steps;
} sgd_settings;

/* One epoch over the training set in a shuffled order (from *rng), dropping the last partial
 * batch. *step counts steps over the whole run (for the schedule). step_losses, when not NULL,
 * receives the mean loss of each step (stats->steps values, at most train.count / batch). The
 * epoch ends early (stats->steps smaller, first_bad_step set) when the loss stops being finite. */
int env_train_epoch(train_env *env, mlp *net, const sgd_settings *sgd, uint64_t *rng,
                    size_t *step, const char *label, epoch_stats *stats, float *step_losses);

/* Loss and accuracy on the test set in chunks of `batch`, with the network's normalization layers
 * in `mode` (which must be their current mode). In training mode a last chunk of one example
 * joins the chunk before it (batch statistics need two values). */
int env_evaluate(train_env *env, mlp *net, size_t batch, clnorm_mode mode, double *loss,
                 double *accuracy);

/* The logits of the whole test set in evaluation mode (test.count x classes floats). Blocks. */
int env_test_logits(train_env *env, mlp *net, size_t batch, float *logits);

/* Wall time of a forward pass over the test set in chunks of `batch`, best of `passes`, per
 * chunk, in milliseconds (the input already on the device: gathering is included for both). */
int env_time_inference(train_env *env, mlp *net, size_t batch, int passes, double *ms_per_batch);

/* The next number of a splitmix64 stream (the shuffles): the same seed gives the same order. */
uint64_t rng_next(uint64_t *state);

double now_seconds(void);

#endif

/* clnorm-train's own OpenCL kernels (data gathering, bias and ReLU, ReLU alone and its gradient,
 * softmax cross-entropy, reductions of per-row results, SGD with momentum). */
#ifndef CLNORM_TRAIN_KERNELS_H
#define CLNORM_TRAIN_KERNELS_H

#include <clnorm.h>

typedef struct train_kernels {
    cl_program program;
    cl_kernel gather_batch, bias_act, bias_grad, softmax_xent, sum_rows, sgd_momentum, relu,
        relu_grad;
} train_kernels;

/* Builds the program from the source string (once, at start-up). 0 on success; -1 with a message
 * (the build log on a build failure). */
int kernels_build(cl_context context, cl_device_id device, train_kernels *k, char *err,
                  size_t err_size);
void kernels_release(train_kernels *k);

typedef struct kernel_arg {
    size_t size;
    const void *value;
} kernel_arg;
#define KARG(v) ((kernel_arg){sizeof(v), &(v)})

/* Sets the arguments and enqueues the kernel over `global` (no local size: the driver picks).
 * A zero global size enqueues nothing. */
int kernels_launch(cl_command_queue queue, cl_kernel kernel, const char *name, cl_uint dims,
                   const size_t *global, size_t num_args, const kernel_arg *args, char *err,
                   size_t err_size);

#endif

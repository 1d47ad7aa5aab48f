/* The small elementwise and per-row kernels of clnorm-train, as one OpenCL C 1.2 program built
 * once at start-up. The matrix products are CLBlast's and the normalization is clnorm's. */
#include "kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char kernel_source[] =
    "/* x[r, :] = (pixels of example index[first + r] / 255 - mean) * inv_std; y[r] = its label */\n"
    "__kernel void gather_batch(__global const uchar *images, __global const uchar *labels,\n"
    "                           __global const int *index, uint first, uint dim, float mean,\n"
    "                           float inv_std, __global float *x, __global int *y)\n"
    "{\n"
    "    size_t j = get_global_id(0), r = get_global_id(1);\n"
    "    size_t src = (size_t)index[first + r];\n"
    "    x[r * dim + j] = ((float)images[src * dim + j] * (1.0f / 255.0f) - mean) * inv_std;\n"
    "    if (j == 0)\n"
    "        y[r] = labels[src];\n"
    "}\n"
    "\n"
    "/* In place, rows x cols: y = y + b[col], then ReLU when relu != 0 (NaN stays NaN). */\n"
    "__kernel void bias_act(__global float *y, __global const float *b, uint cols, int relu)\n"
    "{\n"
    "    size_t j = get_global_id(0), r = get_global_id(1);\n"
    "    float v = y[r * cols + j] + b[j];\n"
    "    if (relu && v < 0.0f)\n"
    "        v = 0.0f;\n"
    "    y[r * cols + j] = v;\n"
    "}\n"
    "\n"
    "/* In place: y = max(y, 0) (NaN stays NaN), after the norms that have no fused ReLU. */\n"
    "__kernel void relu(__global float *y)\n"
    "{\n"
    "    size_t i = get_global_id(0);\n"
    "    float v = y[i];\n"
    "    if (v < 0.0f)\n"
    "        y[i] = 0.0f;\n"
    "}\n"
    "\n"
    "/* In place: the gradient of the ReLU's output becomes that of its input, g = a > 0 ? g : 0\n"
    " * (a the ReLU's output; PyTorch's rule, 0 at 0). */\n"
    "__kernel void relu_grad(__global float *g, __global const float *a)\n"
    "{\n"
    "    size_t i = get_global_id(0);\n"
    "    if (!(a[i] > 0.0f))\n"
    "        g[i] = 0.0f;\n"
    "}\n"
    "\n"
    "/* One work-item per column: with relu, dz = dz where a > 0 else 0 (in place); db = sum over\n"
    " * rows of dz (written, not accumulated). */\n"
    "__kernel void bias_grad(__global float *dz, __global const float *a, __global float *db,\n"
    "                        uint rows, uint cols, int relu)\n"
    "{\n"
    "    size_t j = get_global_id(0);\n"
    "    float s = 0.0f;\n"
    "    for (uint r = 0; r < rows; r++) {\n"
    "        size_t i = (size_t)r * cols + j;\n"
    "        float g = dz[i];\n"
    "        if (relu && !(a[i] > 0.0f)) {\n"
    "            g = 0.0f;\n"
    "            dz[i] = g;\n"
    "        }\n"
    "        s += g;\n"
    "    }\n"
    "    db[j] = s;\n"
    "}\n"
    "\n"
    "/* One work-item per row: softmax cross-entropy of the logits against the label, the\n"
    " * predicted class, and when want_grad the gradient (softmax - onehot) * grad_scale. */\n"
    "__kernel void softmax_xent(__global const float *logits, __global const int *labels,\n"
    "                           uint classes, float grad_scale, int want_grad,\n"
    "                           __global float *dlogits, __global float *row_loss,\n"
    "                           __global int *row_correct)\n"
    "{\n"
    "    size_t r = get_global_id(0);\n"
    "    __global const float *l = logits + r * classes;\n"
    "    int label = labels[r];\n"
    "    float m = l[0];\n"
    "    uint best = 0;\n"
    "    for (uint k = 1; k < classes; k++)\n"
    "        if (l[k] > m) {\n"
    "            m = l[k];\n"
    "            best = k;\n"
    "        }\n"
    "    float s = 0.0f;\n"
    "    for (uint k = 0; k < classes; k++)\n"
    "        s += exp(l[k] - m);\n"
    "    row_loss[r] = m + log(s) - l[label];\n"
    "    row_correct[r] = (int)best == label;\n"
    "    if (want_grad)\n"
    "        for (uint k = 0; k < classes; k++)\n"
    "            dlogits[r * classes + k] =\n"
    "                (exp(l[k] - m) / s - (k == (uint)label ? 1.0f : 0.0f)) * grad_scale;\n"
    "}\n"
    "\n"
    "/* One work-item: slot_loss[slot] = sum of n row losses, slot_correct[slot] = correct rows\n"
    " * (a fixed order: the same numbers every run). */\n"
    "__kernel void sum_rows(__global const float *row_loss, __global const int *row_correct,\n"
    "                       uint n, __global float *slot_loss, __global int *slot_correct,\n"
    "                       uint slot)\n"
    "{\n"
    "    if (get_global_id(0) != 0)\n"
    "        return;\n"
    "    float s = 0.0f, c = 0.0f; /* Kahan sum of the losses */\n"
    "    int correct = 0;\n"
    "    for (uint i = 0; i < n; i++) {\n"
    "        float y = row_loss[i] - c;\n"
    "        float t = s + y;\n"
    "        c = (t - s) - y;\n"
    "        s = t;\n"
    "        correct += row_correct[i];\n"
    "    }\n"
    "    slot_loss[slot] = s;\n"
    "    slot_correct[slot] = correct;\n"
    "}\n"
    "\n"
    "/* SGD with momentum (PyTorch's form): v = momentum * v + g + wd * w; w -= lr * v. */\n"
    "__kernel void sgd_momentum(__global float *w, __global const float *g, __global float *v,\n"
    "                           float lr, float momentum, float weight_decay)\n"
    "{\n"
    "    size_t i = get_global_id(0);\n"
    "    float vi = momentum * v[i] + g[i] + weight_decay * w[i];\n"
    "    v[i] = vi;\n"
    "    w[i] -= lr * vi;\n"
    "}\n";

int kernels_build(cl_context context, cl_device_id device, train_kernels *k, char *err,
                  size_t err_size)
{
    memset(k, 0, sizeof *k);
    cl_int code = CL_SUCCESS;
    const char *src = kernel_source;
    k->program = clCreateProgramWithSource(context, 1, &src, NULL, &code);
    if (code != CL_SUCCESS) {
        snprintf(err, err_size, "clCreateProgramWithSource(clnorm-train kernels) failed: %s",
                 clnorm_cl_error_name(code));
        k->program = NULL;
        return -1;
    }
    code = clBuildProgram(k->program, 1, &device, "-cl-std=CL1.2", NULL, NULL);
    if (code != CL_SUCCESS) {
        char log[8192] = "";
        clGetProgramBuildInfo(k->program, device, CL_PROGRAM_BUILD_LOG, sizeof log - 1, log,
                              NULL);
        snprintf(err, err_size, "clBuildProgram(clnorm-train kernels) failed: %s\n%s",
                 clnorm_cl_error_name(code), log);
        kernels_release(k);
        return -1;
    }
    struct {
        cl_kernel *slot;
        const char *name;
    } all[] = {{&k->gather_batch, "gather_batch"}, {&k->bias_act, "bias_act"},
               {&k->bias_grad, "bias_grad"},       {&k->softmax_xent, "softmax_xent"},
               {&k->sum_rows, "sum_rows"},         {&k->sgd_momentum, "sgd_momentum"},
               {&k->relu, "relu"},                 {&k->relu_grad, "relu_grad"}};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        *all[i].slot = clCreateKernel(k->program, all[i].name, &code);
        if (code != CL_SUCCESS) {
            *all[i].slot = NULL;
            snprintf(err, err_size, "clCreateKernel(%s) failed: %s", all[i].name,
                     clnorm_cl_error_name(code));
            kernels_release(k);
            return -1;
        }
    }
    return 0;
}

void kernels_release(train_kernels *k)
{
    cl_kernel *all[] = {&k->gather_batch, &k->bias_act, &k->bias_grad, &k->softmax_xent,
                        &k->sum_rows,     &k->sgd_momentum, &k->relu,     &k->relu_grad};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        if (*all[i])
            clReleaseKernel(*all[i]);
        *all[i] = NULL;
    }
    if (k->program)
        clReleaseProgram(k->program);
    k->program = NULL;
}

int kernels_launch(cl_command_queue queue, cl_kernel kernel, const char *name, cl_uint dims,
                   const size_t *global, size_t num_args, const kernel_arg *args, char *err,
                   size_t err_size)
{
    for (size_t i = 0; i < num_args; i++) {
        cl_int code = clSetKernelArg(kernel, (cl_uint)i, args[i].size, args[i].value);
        if (code != CL_SUCCESS) {
            snprintf(err, err_size, "clSetKernelArg(%s, %zu) failed: %s", name, i,
                     clnorm_cl_error_name(code));
            return -1;
        }
    }
    for (cl_uint d = 0; d < dims; d++)
        if (global[d] == 0)
            return 0; /* nothing to do */
    cl_int code = clEnqueueNDRangeKernel(queue, kernel, dims, NULL, global, NULL, 0, NULL, NULL);
    if (code != CL_SUCCESS) {
        snprintf(err, err_size, "clEnqueueNDRangeKernel(%s) failed: %s", name,
                 clnorm_cl_error_name(code));
        return -1;
    }
    return 0;
}

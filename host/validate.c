/* Argument checks shared by every operation: run before anything is enqueued. */
#include <math.h>

#include "internal.h"

clnorm_status check_buffer(clnorm_context *ctx, cl_mem buffer, const char *name, size_t bytes,
                           bool may_be_null)
{
    if (!buffer) {
        if (may_be_null)
            return CLNORM_OK;
        return set_error(ctx, CLNORM_INVALID_ARGUMENT, "buffer %s is NULL", name);
    }
    cl_context owner = NULL;
    size_t size = 0;
    cl_int err = clGetMemObjectInfo(buffer, CL_MEM_CONTEXT, sizeof owner, &owner, NULL);
    if (err == CL_SUCCESS)
        err = clGetMemObjectInfo(buffer, CL_MEM_SIZE, sizeof size, &size, NULL);
    if (err != CL_SUCCESS) {
        ctx->cl_error = err;
        return set_error(ctx, CLNORM_INVALID_ARGUMENT, "%s is not a valid buffer (%s)", name,
                         clnorm_cl_error_name(err));
    }
    if (owner != ctx->cl_ctx)
        return set_error(ctx, CLNORM_WRONG_CONTEXT,
                         "buffer %s belongs to another OpenCL context than the clnorm context's",
                         name);
    if (size < bytes)
        return set_error(ctx, CLNORM_BUFFER_TOO_SMALL,
                         "buffer %s holds %zu bytes but the call touches %zu bytes", name, size,
                         bytes);
    return CLNORM_OK;
}

clnorm_status check_events(clnorm_context *ctx, cl_uint num_wait, const cl_event *wait)
{
    if ((num_wait > 0) != (wait != NULL))
        return set_error(ctx, CLNORM_INVALID_ARGUMENT,
                         "num_wait is %u but wait_list is %s: they must agree", num_wait,
                         wait ? "not NULL" : "NULL");
    for (cl_uint i = 0; i < num_wait; i++) {
        cl_context owner = NULL;
        cl_int err = clGetEventInfo(wait[i], CL_EVENT_CONTEXT, sizeof owner, &owner, NULL);
        if (err != CL_SUCCESS)
            return set_error(ctx, CLNORM_INVALID_ARGUMENT, "wait_list[%u] is not a valid event",
                             i);
        if (owner != ctx->cl_ctx)
            return set_error(ctx, CLNORM_WRONG_CONTEXT,
                             "wait_list[%u] belongs to another OpenCL context", i);
    }
    return CLNORM_OK;
}

clnorm_status check_finite_nonneg(clnorm_context *ctx, const char *name, double value)
{
    if (!isfinite(value) || value < 0)
        return set_error(ctx, CLNORM_INVALID_ARGUMENT, "%s = %g must be finite and >= 0", name,
                         value);
    return CLNORM_OK;
}

clnorm_status checked_mul(clnorm_context *ctx, size_t a, size_t b, const char *what, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a)
        return set_error(ctx, CLNORM_INVALID_SHAPE, "%s overflows: %zu x %zu", what, a, b);
    *out = a * b;
    return CLNORM_OK;
}

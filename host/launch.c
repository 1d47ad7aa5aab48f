/* Kernel launches: arguments from an array, ND-range rounding, event chaining, workspace. */
#include <string.h>

#include "internal.h"

size_t round_up(size_t value, size_t multiple)
{
    return (value + multiple - 1) / multiple * multiple;
}

void chain_begin(launch_chain *chain, cl_uint num_wait, const cl_event *wait)
{
    chain->num_wait = num_wait;
    chain->wait = wait;
    chain->count = 0;
    chain->last = NULL;
}

clnorm_status chain_launch(clnorm_context *ctx, launch_chain *chain, const program_entry *prog,
                           int kernel, const kernel_arg *args, size_t nargs, cl_uint dims,
                           const size_t *global, const size_t *local)
{
    cl_kernel k = prog->kernels[kernel];
    for (size_t i = 0; i < nargs; i++) {
        cl_int err = clSetKernelArg(k, (cl_uint)i, args[i].size, args[i].value);
        if (err != CL_SUCCESS)
            return set_cl_error(ctx, err, "clSetKernelArg");
    }
    /* The first kernel waits on the caller's events and, on an out-of-order queue, on the last
     * user of the shared workspace; each later kernel waits on the one before it. */
    cl_event waits[2];
    cl_uint num_wait = 0;
    const cl_event *wait = NULL;
    cl_event marker = NULL;
    if (chain->last) {
        waits[num_wait++] = chain->last;
        wait = waits;
    } else if (ctx->out_of_order && ctx->workspace_busy) {
        if (chain->num_wait > 0) {
            cl_int err = clEnqueueMarkerWithWaitList(ctx->queue, chain->num_wait, chain->wait,
                                                     &marker);
            if (err != CL_SUCCESS)
                return set_cl_error(ctx, err, "clEnqueueMarkerWithWaitList");
            waits[num_wait++] = marker;
        }
        waits[num_wait++] = ctx->workspace_busy;
        wait = waits;
    } else {
        num_wait = chain->num_wait;
        wait = chain->wait;
    }
    cl_event done = NULL;
    cl_int err = clEnqueueNDRangeKernel(ctx->queue, k, dims, NULL, global, local, num_wait, wait,
                                        &done);
    if (marker)
        clReleaseEvent(marker);
    if (err != CL_SUCCESS)
        return set_cl_error(ctx, err, "clEnqueueNDRangeKernel");
    if (chain->last)
        clReleaseEvent(chain->last);
    if (ctx->profiling && chain->count < CLNORM_MAX_OP_KERNELS &&
        clRetainEvent(done) == CL_SUCCESS) {
        chain->names[chain->count] = program_kernel_name(prog->family, kernel);
        chain->kept[chain->count++] = done;
    }
    chain->last = done;
    return CLNORM_OK;
}

void chain_end(clnorm_context *ctx, launch_chain *chain, cl_event *event, bool used_workspace)
{
    if (used_workspace && ctx->out_of_order && chain->last) {
        if (ctx->workspace_busy)
            clReleaseEvent(ctx->workspace_busy);
        clRetainEvent(chain->last);
        ctx->workspace_busy = chain->last;
    }
    if (chain->count > 0) {
        /* remember the operation's kernels for clnorm_last_op_time and clnorm_last_op_kernels */
        timing_release(ctx);
        clRetainEvent(chain->last);
        memcpy(ctx->timing_kernels, chain->kept, chain->count * sizeof *chain->kept);
        memcpy(ctx->timing_names, chain->names, chain->count * sizeof *chain->names);
        ctx->timing_count = chain->count;
        ctx->timing_last = chain->last;
        chain->count = 0;
    }
    if (event)
        *event = chain->last;
    else if (chain->last)
        clReleaseEvent(chain->last);
    chain->last = NULL;
}

/* Releases `count` kept events and the last one; empties both. */
static void release_kept(cl_event *kept, unsigned *count, cl_event *last)
{
    for (unsigned i = 0; i < *count; i++)
        clReleaseEvent(kept[i]);
    if (*last)
        clReleaseEvent(*last);
    *count = 0;
    *last = NULL;
}

void chain_abandon(launch_chain *chain)
{
    release_kept(chain->kept, &chain->count, &chain->last);
}

void timing_release(clnorm_context *ctx)
{
    release_kept(ctx->timing_kernels, &ctx->timing_count, &ctx->timing_last);
}

/* The START of the last operation's first kernel, after the operation has finished; the common
 * checks of clnorm_last_op_time and clnorm_last_op_kernels. */
static clnorm_status last_op_start(clnorm_context *ctx, cl_ulong *start)
{
    if (!ctx->profiling)
        return set_error(ctx, CLNORM_UNSUPPORTED,
                         "the queue has no profiling (settings.enable_profiling, or "
                         "CL_QUEUE_PROFILING_ENABLE on a wrapped queue)");
    if (!ctx->timing_last)
        return set_error(ctx, CLNORM_INVALID_ARGUMENT, "no operation has run on this context");
    cl_int err = clWaitForEvents(1, &ctx->timing_last);
    if (err == CL_SUCCESS)
        err = clGetEventProfilingInfo(ctx->timing_kernels[0], CL_PROFILING_COMMAND_START,
                                      sizeof *start, start, NULL);
    return err == CL_SUCCESS ? CLNORM_OK : set_cl_error(ctx, err, "clGetEventProfilingInfo");
}

clnorm_status clnorm_last_op_time(clnorm_context *ctx, double *milliseconds)
{
    if (!ctx)
        return CLNORM_INVALID_ARGUMENT;
    context_begin_call(ctx);
    clnorm_status status = CLNORM_OK;
    cl_ulong start = 0, end = 0;
    if (!milliseconds)
        status = set_error(ctx, CLNORM_INVALID_ARGUMENT, "milliseconds is NULL");
    else
        status = last_op_start(ctx, &start);
    if (status == CLNORM_OK) {
        cl_int err = clGetEventProfilingInfo(ctx->timing_last, CL_PROFILING_COMMAND_END,
                                             sizeof end, &end, NULL);
        if (err != CL_SUCCESS)
            status = set_cl_error(ctx, err, "clGetEventProfilingInfo");
        else
            *milliseconds = (double)(end - start) * 1e-6;
    }
    context_unlock(ctx);
    return status;
}

clnorm_status clnorm_last_op_kernels(clnorm_context *ctx, clnorm_kernel_time *kernels,
                                     size_t capacity, size_t *count)
{
    if (!ctx)
        return CLNORM_INVALID_ARGUMENT;
    context_begin_call(ctx);
    clnorm_status status = CLNORM_OK;
    cl_ulong start = 0;
    if (!count)
        status = set_error(ctx, CLNORM_INVALID_ARGUMENT, "count is NULL");
    else if (!kernels && capacity > 0)
        status = set_error(ctx, CLNORM_INVALID_ARGUMENT, "kernels is NULL but capacity is %zu",
                           capacity);
    else
        status = last_op_start(ctx, &start);
    for (unsigned i = 0; status == CLNORM_OK && i < ctx->timing_count && i < capacity; i++) {
        cl_ulong begin = 0, end = 0;
        cl_int err = clGetEventProfilingInfo(ctx->timing_kernels[i], CL_PROFILING_COMMAND_START,
                                             sizeof begin, &begin, NULL);
        if (err == CL_SUCCESS)
            err = clGetEventProfilingInfo(ctx->timing_kernels[i], CL_PROFILING_COMMAND_END,
                                          sizeof end, &end, NULL);
        if (err != CL_SUCCESS) {
            status = set_cl_error(ctx, err, "clGetEventProfilingInfo");
            break;
        }
        kernels[i].name = ctx->timing_names[i];
        /* (signed: a driver may stamp a kernel a little before the one before it ends) */
        kernels[i].start_ms = (double)(cl_long)(begin - start) * 1e-6;
        kernels[i].end_ms = (double)(cl_long)(end - start) * 1e-6;
    }
    if (status == CLNORM_OK)
        *count = ctx->timing_count;
    context_unlock(ctx);
    return status;
}

clnorm_status workspace_reserve(clnorm_context *ctx, workspace_slot slot, size_t bytes,
                                cl_mem *out)
{
    if (bytes == 0)
        bytes = 16;
    if (ctx->workspace_size[slot] < bytes) {
        if (bytes > ctx->dev.max_alloc_bytes)
            return set_error(ctx, CLNORM_UNSUPPORTED,
                             "workspace of %zu bytes exceeds the device's largest allocation "
                             "(%llu bytes)",
                             bytes, (unsigned long long)ctx->dev.max_alloc_bytes);
        /* grow geometrically so that a sequence of growing shapes allocates only a few times */
        size_t size = ctx->workspace_size[slot] * 2 > bytes ? ctx->workspace_size[slot] * 2 : bytes;
        if (size > ctx->dev.max_alloc_bytes)
            size = bytes;
        cl_int err = CL_SUCCESS;
        cl_mem grown = clCreateBuffer(ctx->cl_ctx, CL_MEM_READ_WRITE, size, NULL, &err);
        if (err != CL_SUCCESS)
            return set_cl_error(ctx, err, "clCreateBuffer(workspace)");
        /* Kernels already enqueued may still use the old buffer. OpenCL defers the deletion of
         * a released buffer until they finish, but not every implementation does (Oclgrind
         * frees at once): keep it until the context goes, or until the queue has drained. */
        if (ctx->workspace[slot]) {
            if (ctx->retired_count == ARRAY_SIZE(ctx->retired)) {
                clFinish(ctx->queue); /* rare: growth is geometric */
                workspace_release_retired(ctx);
            }
            ctx->retired[ctx->retired_count++] = ctx->workspace[slot];
        }
        ctx->workspace[slot] = grown;
        ctx->workspace_size[slot] = size;
    }
    *out = ctx->workspace[slot];
    return CLNORM_OK;
}

void workspace_release_retired(clnorm_context *ctx)
{
    for (size_t i = 0; i < ctx->retired_count; i++)
        clReleaseMemObject(ctx->retired[i]);
    ctx->retired_count = 0;
}

/* clnorm_context: the OpenCL objects (created or wrapped), the lock, caches and workspace. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

void clnorm_default_settings(clnorm_settings *settings)
{
    if (settings)
        memset(settings, 0, sizeof *settings);
}

void context_lock(clnorm_context *ctx)
{
    pthread_mutex_lock(&ctx->lock);
}

void context_begin_call(clnorm_context *ctx)
{
    pthread_mutex_lock(&ctx->lock);
    clear_error(ctx);
}

void context_unlock(clnorm_context *ctx)
{
    pthread_mutex_unlock(&ctx->lock);
}

static void report(char *message, size_t size, const clnorm_context *ctx, const char *fallback)
{
    copy_message(message, size, ctx && ctx->error[0] ? ctx->error : fallback);
}

/* Everything after the OpenCL objects exist: device facts, parameters, disk cache folder. */
static clnorm_status finish_setup(clnorm_context *ctx, const clnorm_settings *settings)
{
    if (settings) {
        ctx->log = settings->log;
        ctx->log_user = settings->log_user;
    }
    if (device_query_facts(ctx->device, &ctx->dev) != CLNORM_OK)
        return set_error(ctx, CLNORM_OPENCL_ERROR, "could not query the device's properties");
    cl_command_queue_properties props = 0;
    cl_int err = clGetCommandQueueInfo(ctx->queue, CL_QUEUE_PROPERTIES, sizeof props, &props, NULL);
    if (err != CL_SUCCESS)
        return set_cl_error(ctx, err, "clGetCommandQueueInfo(CL_QUEUE_PROPERTIES)");
    ctx->out_of_order = (props & CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE) != 0;
    ctx->profiling = (props & CL_QUEUE_PROFILING_ENABLE) != 0;
    disk_cache_resolve_dir(settings ? settings->cache_dir : NULL, ctx->cache_dir,
                           sizeof ctx->cache_dir);
    disk_cache_prepare_dir(ctx->cache_dir);
    ctx->dev_hash = device_hash(&ctx->dev);
    /* table, then the parameter file in the cache folder, then CLNORM_PARAMS */
    clnorm_status status = params_for_device(ctx);
    if (status != CLNORM_OK)
        return status;
    log_info(ctx, "context on %s (%s), disk cache %s", ctx->dev.name, ctx->dev.platform_name,
             ctx->cache_dir[0] ? ctx->cache_dir : "off");
    return CLNORM_OK;
}

static clnorm_context *context_alloc(void)
{
    clnorm_context *ctx = calloc(1, sizeof *ctx);
    if (ctx && pthread_mutex_init(&ctx->lock, NULL) != 0) {
        free(ctx);
        return NULL;
    }
    return ctx;
}

clnorm_status clnorm_context_create(clnorm_context **out, const clnorm_settings *settings,
                                    char *error_message, size_t error_message_size)
{
    copy_message(error_message, error_message_size, "");
    if (!out) {
        copy_message(error_message, error_message_size, "CLNORM_INVALID_ARGUMENT: out is NULL");
        return CLNORM_INVALID_ARGUMENT;
    }
    *out = NULL;
    cl_platform_id platform;
    cl_device_id device;
    clnorm_status status = device_select(settings ? settings->device : NULL, &platform, &device,
                                         error_message, error_message_size);
    if (status != CLNORM_OK)
        return status;
    clnorm_context *ctx = context_alloc();
    if (!ctx) {
        copy_message(error_message, error_message_size, "CLNORM_OUT_OF_HOST_MEMORY: context");
        return CLNORM_OUT_OF_HOST_MEMORY;
    }
    cl_int err = CL_SUCCESS;
    cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)platform, 0};
    ctx->device = device;
    clRetainDevice(device);
    ctx->cl_ctx = clCreateContext(props, 1, &device, NULL, NULL, &err);
    CL_TRY(ctx, err, "clCreateContext");
    ctx->queue = clCreateCommandQueue(ctx->cl_ctx, device,
                                      settings && settings->enable_profiling
                                          ? CL_QUEUE_PROFILING_ENABLE
                                          : 0,
                                      &err);
    CL_TRY(ctx, err, "clCreateCommandQueue");
    TRY(finish_setup(ctx, settings));
    *out = ctx;
    return CLNORM_OK;
fail:
    report(error_message, error_message_size, ctx, clnorm_status_description(status));
    clnorm_context_release(ctx);
    return status;
}

clnorm_status clnorm_context_wrap(clnorm_context **out, cl_context cl_ctx, cl_device_id device,
                                  cl_command_queue queue, const clnorm_settings *settings,
                                  char *error_message, size_t error_message_size)
{
    copy_message(error_message, error_message_size, "");
    if (out)
        *out = NULL;
    if (!out || !cl_ctx || !device || !queue) {
        copy_message(error_message, error_message_size,
                     "CLNORM_INVALID_ARGUMENT: out, cl_context, device and queue must not be NULL");
        return CLNORM_INVALID_ARGUMENT;
    }
    *out = NULL;
    cl_context queue_ctx = NULL;
    cl_device_id queue_dev = NULL;
    cl_uint num_devices = 0;
    cl_device_id devices[64];
    bool device_in_context = false;
    if (clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof queue_ctx, &queue_ctx, NULL) !=
            CL_SUCCESS ||
        clGetCommandQueueInfo(queue, CL_QUEUE_DEVICE, sizeof queue_dev, &queue_dev, NULL) !=
            CL_SUCCESS ||
        clGetContextInfo(cl_ctx, CL_CONTEXT_NUM_DEVICES, sizeof num_devices, &num_devices, NULL) !=
            CL_SUCCESS) {
        copy_message(error_message, error_message_size,
                     "CLNORM_INVALID_ARGUMENT: the queue or context is not a valid OpenCL object");
        return CLNORM_INVALID_ARGUMENT;
    }
    if (num_devices <= 64 && clGetContextInfo(cl_ctx, CL_CONTEXT_DEVICES, sizeof devices, devices,
                                              NULL) == CL_SUCCESS)
        for (cl_uint i = 0; i < num_devices; i++)
            device_in_context |= devices[i] == device;
    if (queue_ctx != cl_ctx || queue_dev != device || !device_in_context) {
        copy_message(error_message, error_message_size,
                     "CLNORM_WRONG_CONTEXT: the queue must belong to the given context and device, "
                     "and the device to the context");
        return CLNORM_WRONG_CONTEXT;
    }
    clnorm_context *ctx = context_alloc();
    if (!ctx) {
        copy_message(error_message, error_message_size, "CLNORM_OUT_OF_HOST_MEMORY: context");
        return CLNORM_OUT_OF_HOST_MEMORY;
    }
    clnorm_status status;
    clRetainContext(cl_ctx);
    clRetainDevice(device);
    clRetainCommandQueue(queue);
    ctx->cl_ctx = cl_ctx;
    ctx->device = device;
    ctx->queue = queue;
    TRY(finish_setup(ctx, settings));
    *out = ctx;
    return CLNORM_OK;
fail:
    report(error_message, error_message_size, ctx, clnorm_status_description(status));
    clnorm_context_release(ctx);
    return status;
}

void clnorm_context_release(clnorm_context *ctx)
{
    if (!ctx)
        return;
    if (ctx->queue)
        clFinish(ctx->queue); /* work in flight may still use the workspace and kernels */
    if (ctx->workspace_busy)
        clReleaseEvent(ctx->workspace_busy);
    timing_release(ctx);
    for (int i = 0; i < WORKSPACE_COUNT; i++)
        if (ctx->workspace[i])
            clReleaseMemObject(ctx->workspace[i]);
    workspace_release_retired(ctx);
    program_cache_release(ctx);
    if (ctx->queue)
        clReleaseCommandQueue(ctx->queue);
    if (ctx->cl_ctx)
        clReleaseContext(ctx->cl_ctx);
    if (ctx->device)
        clReleaseDevice(ctx->device);
    pthread_mutex_destroy(&ctx->lock);
    free(ctx);
}

cl_context clnorm_context_cl_context(const clnorm_context *ctx)
{
    return ctx ? ctx->cl_ctx : NULL;
}

cl_device_id clnorm_context_device(const clnorm_context *ctx)
{
    return ctx ? ctx->device : NULL;
}

cl_command_queue clnorm_context_queue(const clnorm_context *ctx)
{
    return ctx ? ctx->queue : NULL;
}

const char *clnorm_cache_dir(const clnorm_context *ctx)
{
    return ctx ? ctx->cache_dir : "";
}

clnorm_status clnorm_context_device_info(clnorm_context *ctx, clnorm_device_info *info)
{
    if (!ctx)
        return CLNORM_INVALID_ARGUMENT;
    context_begin_call(ctx);
    clnorm_status status = CLNORM_OK;
    size_t count = 0;
    if (!info) {
        status = set_error(ctx, CLNORM_INVALID_ARGUMENT, "info is NULL");
        goto done;
    }
    /* find this device in the global list so that the P:D indexes are right */
    clnorm_device_info all[64];
    clnorm_list_devices(all, 64, &count);
    for (size_t i = 0; i < count && i < 64; i++) {
        if (strcmp(all[i].name, ctx->dev.name) == 0 &&
            strcmp(all[i].platform_name, ctx->dev.platform_name) == 0) {
            *info = all[i];
            goto done;
        }
    }
    status = set_error(ctx, CLNORM_DEVICE_NOT_FOUND, "the context's device is not listed by any "
                                                     "platform");
done:
    context_unlock(ctx);
    return status;
}

clnorm_status clnorm_finish(clnorm_context *ctx)
{
    if (!ctx)
        return CLNORM_INVALID_ARGUMENT;
    cl_int err = clFinish(ctx->queue);
    if (err == CL_SUCCESS)
        return CLNORM_OK;
    context_lock(ctx);
    clnorm_status status = set_cl_error(ctx, err, "clFinish");
    context_unlock(ctx);
    return status;
}

clnorm_status clnorm_get_cache_stats(clnorm_context *ctx, clnorm_cache_stats *stats)
{
    if (!ctx)
        return CLNORM_INVALID_ARGUMENT;
    context_begin_call(ctx);
    clnorm_status status = CLNORM_OK;
    if (stats)
        *stats = ctx->stats;
    else
        status = set_error(ctx, CLNORM_INVALID_ARGUMENT, "stats is NULL");
    context_unlock(ctx);
    return status;
}

clnorm_status clnorm_clear_disk_cache(clnorm_context *ctx)
{
    if (!ctx)
        return CLNORM_INVALID_ARGUMENT;
    context_begin_call(ctx);
    if (ctx->cache_dir[0])
        disk_cache_remove_device(ctx->cache_dir, ctx->dev_hash);
    context_unlock(ctx);
    return CLNORM_OK;
}

clnorm_status clnorm_warm_up(clnorm_context *ctx)
{
    if (!ctx)
        return CLNORM_INVALID_ARGUMENT;
    context_begin_call(ctx);
    clnorm_status status = CLNORM_OK;
    for (int f = 0; f < FAMILY_COUNT && status == CLNORM_OK; f++) {
        const program_entry *prog;
        status = program_get(ctx, (kernel_family)f, &prog);
    }
    context_unlock(ctx);
    return status;
}

clnorm_status clnorm_self_check(clnorm_context *ctx)
{
    if (!ctx)
        return CLNORM_INVALID_ARGUMENT;
    enum { COUNT = 1000 }; /* not a multiple of any work-group size */
    float host_x[COUNT], host_y[COUNT];
    for (int i = 0; i < COUNT; i++)
        host_x[i] = (float)i;
    context_begin_call(ctx);
    clnorm_status status = CLNORM_OK;
    cl_int err = CL_SUCCESS;
    const program_entry *prog;
    launch_chain chain;
    chain_begin(&chain, 0, NULL);
    cl_mem x = clCreateBuffer(ctx->cl_ctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, sizeof host_x,
                              host_x, &err);
    CL_TRY(ctx, err, "clCreateBuffer");
    TRY(program_get(ctx, FAMILY_UTIL, &prog));
    cl_ulong n = COUNT;
    float scale = 2.0f, shift = 1.0f;
    kernel_arg args[] = {ARG(x), ARG(x), ARG(n), ARG(scale), ARG(shift)};
    size_t local = (size_t)prog->work_group_size;
    size_t global = round_up(COUNT, local);
    TRY(chain_launch(ctx, &chain, prog, program_kernel_index(FAMILY_UTIL, "scale_shift"), args,
                     ARRAY_SIZE(args), 1, &global, &local));
    CL_TRY(ctx,
           clEnqueueReadBuffer(ctx->queue, x, CL_TRUE, 0, sizeof host_y, host_y, 1, &chain.last,
                               NULL),
           "clEnqueueReadBuffer");
    for (int i = 0; i < COUNT; i++) {
        if (host_y[i] != 2.0f * (float)i + 1.0f) {
            status = set_error(ctx, CLNORM_UNSUPPORTED,
                               "self-check kernel gave %g at %d instead of %g on %s",
                               (double)host_y[i], i, 2.0 * i + 1.0, ctx->dev.name);
            break;
        }
    }
fail:
    chain_abandon(&chain);
    if (x)
        clReleaseMemObject(x);
    context_unlock(ctx);
    return status;
}

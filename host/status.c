/* Status names and descriptions (from the table in clnorm.h) and the per-context messages. */
#include <stdio.h>
#include <string.h>

#include "internal.h"

typedef struct status_row {
    clnorm_status status;
    const char *name;
    const char *description;
} status_row;

static const status_row status_rows[] = {
#define STATUS_ROW_(name, value, text) {CLNORM_##name, "CLNORM_" #name, text},
    CLNORM_STATUS_TABLE(STATUS_ROW_)
#undef STATUS_ROW_
};

static const status_row *find_status(clnorm_status status)
{
    for (size_t i = 0; i < ARRAY_SIZE(status_rows); i++)
        if (status_rows[i].status == status)
            return &status_rows[i];
    return NULL;
}

const char *clnorm_status_name(clnorm_status status)
{
    const status_row *row = find_status(status);
    return row ? row->name : "CLNORM_UNKNOWN_STATUS";
}

const char *clnorm_status_description(clnorm_status status)
{
    const status_row *row = find_status(status);
    return row ? row->description : "unknown status value";
}

const char *clnorm_cl_error_name(cl_int code)
{
#define CL_ERROR_CASE_(c)                                                                          \
    case c:                                                                                        \
        return #c;
    switch (code) {
        CL_ERROR_CASE_(CL_SUCCESS)
        CL_ERROR_CASE_(CL_DEVICE_NOT_FOUND)
        CL_ERROR_CASE_(CL_DEVICE_NOT_AVAILABLE)
        CL_ERROR_CASE_(CL_COMPILER_NOT_AVAILABLE)
        CL_ERROR_CASE_(CL_MEM_OBJECT_ALLOCATION_FAILURE)
        CL_ERROR_CASE_(CL_OUT_OF_RESOURCES)
        CL_ERROR_CASE_(CL_OUT_OF_HOST_MEMORY)
        CL_ERROR_CASE_(CL_PROFILING_INFO_NOT_AVAILABLE)
        CL_ERROR_CASE_(CL_MEM_COPY_OVERLAP)
        CL_ERROR_CASE_(CL_IMAGE_FORMAT_MISMATCH)
        CL_ERROR_CASE_(CL_IMAGE_FORMAT_NOT_SUPPORTED)
        CL_ERROR_CASE_(CL_BUILD_PROGRAM_FAILURE)
        CL_ERROR_CASE_(CL_MAP_FAILURE)
        CL_ERROR_CASE_(CL_MISALIGNED_SUB_BUFFER_OFFSET)
        CL_ERROR_CASE_(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST)
        CL_ERROR_CASE_(CL_COMPILE_PROGRAM_FAILURE)
        CL_ERROR_CASE_(CL_LINKER_NOT_AVAILABLE)
        CL_ERROR_CASE_(CL_LINK_PROGRAM_FAILURE)
        CL_ERROR_CASE_(CL_DEVICE_PARTITION_FAILED)
        CL_ERROR_CASE_(CL_KERNEL_ARG_INFO_NOT_AVAILABLE)
        CL_ERROR_CASE_(CL_INVALID_VALUE)
        CL_ERROR_CASE_(CL_INVALID_DEVICE_TYPE)
        CL_ERROR_CASE_(CL_INVALID_PLATFORM)
        CL_ERROR_CASE_(CL_INVALID_DEVICE)
        CL_ERROR_CASE_(CL_INVALID_CONTEXT)
        CL_ERROR_CASE_(CL_INVALID_QUEUE_PROPERTIES)
        CL_ERROR_CASE_(CL_INVALID_COMMAND_QUEUE)
        CL_ERROR_CASE_(CL_INVALID_HOST_PTR)
        CL_ERROR_CASE_(CL_INVALID_MEM_OBJECT)
        CL_ERROR_CASE_(CL_INVALID_IMAGE_FORMAT_DESCRIPTOR)
        CL_ERROR_CASE_(CL_INVALID_IMAGE_SIZE)
        CL_ERROR_CASE_(CL_INVALID_SAMPLER)
        CL_ERROR_CASE_(CL_INVALID_BINARY)
        CL_ERROR_CASE_(CL_INVALID_BUILD_OPTIONS)
        CL_ERROR_CASE_(CL_INVALID_PROGRAM)
        CL_ERROR_CASE_(CL_INVALID_PROGRAM_EXECUTABLE)
        CL_ERROR_CASE_(CL_INVALID_KERNEL_NAME)
        CL_ERROR_CASE_(CL_INVALID_KERNEL_DEFINITION)
        CL_ERROR_CASE_(CL_INVALID_KERNEL)
        CL_ERROR_CASE_(CL_INVALID_ARG_INDEX)
        CL_ERROR_CASE_(CL_INVALID_ARG_VALUE)
        CL_ERROR_CASE_(CL_INVALID_ARG_SIZE)
        CL_ERROR_CASE_(CL_INVALID_KERNEL_ARGS)
        CL_ERROR_CASE_(CL_INVALID_WORK_DIMENSION)
        CL_ERROR_CASE_(CL_INVALID_WORK_GROUP_SIZE)
        CL_ERROR_CASE_(CL_INVALID_WORK_ITEM_SIZE)
        CL_ERROR_CASE_(CL_INVALID_GLOBAL_OFFSET)
        CL_ERROR_CASE_(CL_INVALID_EVENT_WAIT_LIST)
        CL_ERROR_CASE_(CL_INVALID_EVENT)
        CL_ERROR_CASE_(CL_INVALID_OPERATION)
        CL_ERROR_CASE_(CL_INVALID_GL_OBJECT)
        CL_ERROR_CASE_(CL_INVALID_BUFFER_SIZE)
        CL_ERROR_CASE_(CL_INVALID_MIP_LEVEL)
        CL_ERROR_CASE_(CL_INVALID_GLOBAL_WORK_SIZE)
        CL_ERROR_CASE_(CL_INVALID_PROPERTY)
        CL_ERROR_CASE_(CL_INVALID_IMAGE_DESCRIPTOR)
        CL_ERROR_CASE_(CL_INVALID_COMPILER_OPTIONS)
        CL_ERROR_CASE_(CL_INVALID_LINKER_OPTIONS)
        CL_ERROR_CASE_(CL_INVALID_DEVICE_PARTITION_COUNT)
    default:
        return "CL_UNKNOWN_ERROR";
    }
#undef CL_ERROR_CASE_
}

void copy_message(char *dst, size_t size, const char *src)
{
    if (!dst || size == 0)
        return;
    snprintf(dst, size, "%s", src ? src : "");
}

static void emit(clnorm_context *ctx, int level, const char *message)
{
    if (ctx && ctx->log)
        ctx->log(ctx->log_user, level, message);
}

clnorm_status set_error(clnorm_context *ctx, clnorm_status status, const char *fmt, ...)
{
    if (!ctx)
        return status;
    int prefix = snprintf(ctx->error, sizeof ctx->error, "%s: ", clnorm_status_name(status));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->error + prefix, sizeof ctx->error - (size_t)prefix, fmt, ap);
    va_end(ap);
    emit(ctx, CLNORM_LOG_ERROR, ctx->error);
    return status;
}

clnorm_status set_cl_error(clnorm_context *ctx, cl_int code, const char *what)
{
    clnorm_status status = code == CL_OUT_OF_HOST_MEMORY ? CLNORM_OUT_OF_HOST_MEMORY
                                                          : CLNORM_OPENCL_ERROR;
    if (ctx)
        ctx->cl_error = code;
    return set_error(ctx, status, "%s failed with %s (%d)", what, clnorm_cl_error_name(code),
                     (int)code);
}

void clear_error(clnorm_context *ctx)
{
    ctx->error[0] = '\0';
    ctx->cl_error = CL_SUCCESS;
}

static void log_at(clnorm_context *ctx, int level, const char *fmt, va_list ap)
{
    if (!ctx || !ctx->log)
        return;
    char body[1024];
    vsnprintf(body, sizeof body, fmt, ap);
    ctx->log(ctx->log_user, level, body);
}

void log_info(clnorm_context *ctx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_at(ctx, CLNORM_LOG_INFO, fmt, ap);
    va_end(ap);
}

void log_warning(clnorm_context *ctx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_at(ctx, CLNORM_LOG_WARNING, fmt, ap);
    va_end(ap);
}

const char *clnorm_last_error(const clnorm_context *ctx)
{
    return ctx ? ctx->error : "CLNORM_INVALID_ARGUMENT: context is NULL";
}

cl_int clnorm_last_cl_error(const clnorm_context *ctx)
{
    return ctx ? ctx->cl_error : CL_SUCCESS;
}

#define _XOPEN_SOURCE 700 /* nftw */
#include "support.h"

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

clnorm_context *test_context(const clnorm_settings *settings)
{
    char message[8192];
    clnorm_context *ctx = NULL;
    clnorm_status status = clnorm_context_create(&ctx, settings, message, sizeof message);
    cr_assert_eq(status, CLNORM_OK, "context: %s", message);
    return ctx;
}

clnorm_context *test_context_shared(const clnorm_settings *settings)
{
    static clnorm_context *shared;
    if (!shared)
        shared = test_context(NULL);
    char message[8192];
    clnorm_context *ctx = NULL;
    clnorm_status status = clnorm_context_wrap(&ctx, clnorm_context_cl_context(shared),
                                               clnorm_context_device(shared),
                                               clnorm_context_queue(shared), settings, message,
                                               sizeof message);
    cr_assert_eq(status, CLNORM_OK, "context: %s", message);
    return ctx;
}

void make_temp_dir(char *path, size_t size)
{
    const char *base = getenv("TMPDIR");
    snprintf(path, size, "%s/clnorm-test-XXXXXX", base && *base ? base : "/tmp");
    cr_assert_not_null(mkdtemp(path), "mkdtemp %s", path);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void remove_tree(const char *path)
{
    nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

cl_mem test_buffer(clnorm_context *ctx, size_t count, const float *data)
{
    cl_int err = CL_SUCCESS;
    size_t bytes = (count ? count : 1) * sizeof(float);
    cl_mem mem = clCreateBuffer(clnorm_context_cl_context(ctx), CL_MEM_READ_WRITE, bytes, NULL,
                                &err);
    cr_assert_eq(err, CL_SUCCESS, "clCreateBuffer(%zu) failed: %d", bytes, err);
    float *host = malloc(bytes);
    cr_assert_not_null(host);
    for (size_t i = 0; i < (count ? count : 1); i++)
        host[i] = data && count ? data[i] : NAN;
    err = clEnqueueWriteBuffer(clnorm_context_queue(ctx), mem, CL_TRUE, 0, bytes, host, 0, NULL,
                               NULL);
    free(host);
    cr_assert_eq(err, CL_SUCCESS, "clEnqueueWriteBuffer failed: %d", err);
    return mem;
}

void test_read(clnorm_context *ctx, cl_mem buffer, size_t count, float *out)
{
    cl_int err = clEnqueueReadBuffer(clnorm_context_queue(ctx), buffer, CL_TRUE, 0,
                                     count * sizeof(float), out, 0, NULL, NULL);
    cr_assert_eq(err, CL_SUCCESS, "clEnqueueReadBuffer failed: %d", err);
}

void test_device_info(clnorm_device_info *info)
{
    clnorm_context *ctx = test_context(NULL);
    CLNORM_OK_(ctx, clnorm_context_device_info(ctx, info));
    clnorm_context_release(ctx);
}

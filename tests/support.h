/* Helpers shared by the test programs. Every test opens its own context inside the test (never
 * before Criterion forks), on the device named by CLNORM_DEVICE (set per device by
 * run-on-devices.sh). */
#ifndef CLNORM_TEST_SUPPORT_H
#define CLNORM_TEST_SUPPORT_H

#include <criterion/criterion.h>
#include <stddef.h>

#include "clnorm.h"

/* A context on the device under test; fails the test with the message when that is impossible. */
clnorm_context *test_context(const clnorm_settings *settings);

/* A context like test_context's, wrapping one OpenCL context and queue that the test process
 * shares (created on first use, released with the process): for tests that make many contexts
 * (a new OpenCL context per context made test programs outrun their 60 s cap on NVIDIA). */
clnorm_context *test_context_shared(const clnorm_settings *settings);

/* A fresh empty folder under the build's temporary area; the caller removes it with remove_tree. */
void make_temp_dir(char *path, size_t size);
void remove_tree(const char *path);

/* Buffers: create from host data (NULL = poison with NaN), read back (blocking). */
cl_mem test_buffer(clnorm_context *ctx, size_t count, const float *data);
void test_read(clnorm_context *ctx, cl_mem buffer, size_t count, float *out);

/* The device under test's info (the one CLNORM_DEVICE selects). */
void test_device_info(clnorm_device_info *info);

#define CL_OK(call) cr_assert_eq((call), CL_SUCCESS, "%s failed", #call)
#define CLNORM_OK_(ctx, call)                                                                      \
    do {                                                                                           \
        clnorm_status s_ = (call);                                                                 \
        cr_assert_eq(s_, CLNORM_OK, "%s -> %s: %s", #call, clnorm_status_name(s_),                 \
                     clnorm_last_error(ctx));                                                      \
    } while (0)

#endif

/*
 * clnorm — normalization layers for every OpenCL device.
 *
 * Conventions of this header:
 *  - Every call returns a clnorm_status; CLNORM_OK (0) is success. On failure nothing has been
 *    enqueued, no output buffer has been written and no event is returned. The context keeps a
 *    message with the details (clnorm_last_error) and, when an OpenCL call failed, its code
 *    (clnorm_last_cl_error). Every argument is checked before anything is enqueued; the one
 *    exception to "nothing enqueued" is an OpenCL failure (CLNORM_OPENCL_ERROR, or
 *    CLNORM_OUT_OF_HOST_MEMORY with clnorm_last_cl_error set) after some of an operation's
 *    kernels were enqueued: those still run, so the outputs they write (e.g. the running and
 *    saved statistics of a training forward, or a layer's parameters during a load) may have
 *    changed; the call's other outputs are not written and no event is returned. A call that
 *    takes a context or layer handle and gets NULL returns CLNORM_INVALID_ARGUMENT (there is no
 *    context to hold a message; clnorm_last_error(NULL) says "context is NULL").
 *  - Enqueueing calls end with the OpenCL triple (num_wait, wait_list, event): the work starts after
 *    the events in the wait list, and *event (when event is not NULL) completes when all of the
 *    call's work has completed. The caller releases that event. Nothing blocks unless its
 *    documentation says "blocks".
 *  - Tensors are cl_mem buffers of fp32 values owned by the caller; the library checks each
 *    buffer's size (CL_MEM_SIZE) and context against what the call touches before enqueueing.
 *  - Thread safety: a context may be used from several threads; calls on one context are
 *    serialized by the context's own lock. Separate contexts share nothing.
 */
#ifndef CLNORM_H
#define CLNORM_H

#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#include <CL/cl.h>
#include <stddef.h>
#include <stdint.h>

#include "clnorm/version.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(CLNORM_BUILDING_LIBRARY) && defined(__GNUC__)
#define CLNORM_API __attribute__((visibility("default")))
#else
#define CLNORM_API
#endif

/* ---------------------------------------------------------------------------------------------
 * Status: one table gives the enum, the names and the descriptions. Numbers are stable.
 */
#define CLNORM_STATUS_TABLE(X)                                                                     \
    X(OK, 0, "success")                                                                            \
    X(INVALID_ARGUMENT, 1, "an argument is NULL, out of range or inconsistent")                    \
    X(INVALID_SHAPE, 2, "a dimension is zero, too large, or not allowed for this operation")       \
    X(BUFFER_TOO_SMALL, 3, "a buffer is smaller than the region the call touches")                 \
    X(WRONG_CONTEXT, 4, "a buffer or queue belongs to another OpenCL context")                     \
    X(DEVICE_NOT_FOUND, 5, "no OpenCL device matches the selector")                                \
    X(UNSUPPORTED, 6, "the device cannot run this operation (size or feature)")                    \
    X(OPENCL_ERROR, 7, "an OpenCL call failed (see clnorm_last_cl_error)")                         \
    X(BUILD_FAILED, 8, "a kernel program failed to build (the message holds the build log)")       \
    X(OUT_OF_HOST_MEMORY, 9, "a host allocation failed")                                           \
    X(IO_ERROR, 10, "a file could not be read or written")                                         \
    X(BAD_FILE, 11, "a file is truncated, corrupt, or of another format or version")               \
    X(WRONG_MODE, 12, "the call does not match the layer's training/evaluation mode")

typedef enum clnorm_status {
#define CLNORM_STATUS_ENUM_(name, value, text) CLNORM_##name = value,
    CLNORM_STATUS_TABLE(CLNORM_STATUS_ENUM_)
#undef CLNORM_STATUS_ENUM_
} clnorm_status;

/* "CLNORM_OK", "CLNORM_INVALID_ARGUMENT", ...; "CLNORM_UNKNOWN_STATUS" for other values. */
CLNORM_API const char *clnorm_status_name(clnorm_status status);
/* One line in English describing the status. */
CLNORM_API const char *clnorm_status_description(clnorm_status status);
/* "CL_OUT_OF_RESOURCES" and the like for an OpenCL error code. */
CLNORM_API const char *clnorm_cl_error_name(cl_int code);

/* ---------------------------------------------------------------------------------------------
 * Devices
 */
typedef struct clnorm_device_info {
    unsigned platform_index, device_index; /* the "P:D" selector of this device */
    char platform_name[128];
    char platform_version[128];
    char name[128];
    char vendor[128];
    char driver_version[128];
    char opencl_c_version[64];
    cl_device_type type;
    unsigned compute_units;
    uint64_t global_mem_bytes;
    uint64_t local_mem_bytes;
    uint64_t max_alloc_bytes;
    size_t max_work_group_size;
    int has_fp16, has_fp64;
    int has_disk_cache; /* a program built by this library version is in the disk cache */
} clnorm_device_info;

/* Lists every device of every platform. Writes at most `capacity` entries and sets *count to the
 * number of devices present (call with capacity 0 to count). */
CLNORM_API clnorm_status clnorm_list_devices(clnorm_device_info *infos, size_t capacity,
                                             size_t *count);

/* ---------------------------------------------------------------------------------------------
 * Contexts
 */
typedef struct clnorm_context clnorm_context;

enum clnorm_log_level { CLNORM_LOG_ERROR = 0, CLNORM_LOG_WARNING = 1, CLNORM_LOG_INFO = 2 };
typedef void (*clnorm_log_fn)(void *user, int level, const char *message);

typedef struct clnorm_settings {
    /* Which device, when the library creates the OpenCL context (clnorm_context_create).
     * NULL: the CLNORM_DEVICE environment variable, else the first GPU, else the first
     * accelerator, else the first CPU device. Forms: "P:D" (platform and device index),
     * "gpu", "cpu", "accelerator", or a case-insensitive substring of the platform or device name. */
    const char *device;
    /* Disk cache folder for program binaries. NULL: CLNORM_CACHE_DIR, else
     * $XDG_CACHE_HOME/clnorm, else $HOME/.cache/clnorm. "" (or CLNORM_CACHE_DIR=off): no disk
     * cache. A folder that cannot be created or written means no disk cache, not an error. */
    const char *cache_dir;
    /* Called with every error message and with informational notes (program built or loaded). */
    clnorm_log_fn log;
    void *log_user;
    /* Create the library's queue with profiling enabled (clnorm_context_create only). */
    int enable_profiling;
    uint8_t reserved[64]; /* zero */
} clnorm_settings;

/* Fills the settings with the defaults above (all NULL / 0). */
CLNORM_API void clnorm_default_settings(clnorm_settings *settings);

/* Creates a context, OpenCL context and in-order queue on the selected device. settings may be
 * NULL (defaults). On failure *out is NULL and, when error_message is not NULL, a description of
 * the failure (for a selector that matches nothing: the list of devices present) is written there. */
CLNORM_API clnorm_status clnorm_context_create(clnorm_context **out,
                                               const clnorm_settings *settings,
                                               char *error_message, size_t error_message_size);

/* Wraps the application's own OpenCL objects; the library retains them and never creates another
 * OpenCL context. The queue may be in-order or out-of-order (the library orders its own kernels
 * through events). settings->device is ignored. On failure *out is NULL (when out is not NULL)
 * and the message is written to error_message, as for clnorm_context_create. */
CLNORM_API clnorm_status clnorm_context_wrap(clnorm_context **out, cl_context cl_ctx,
                                             cl_device_id device, cl_command_queue queue,
                                             const clnorm_settings *settings,
                                             char *error_message, size_t error_message_size);

/* Waits for the context's queue, then releases everything the context owns. NULL is allowed. */
CLNORM_API void clnorm_context_release(clnorm_context *ctx);

CLNORM_API cl_context clnorm_context_cl_context(const clnorm_context *ctx);
CLNORM_API cl_device_id clnorm_context_device(const clnorm_context *ctx);
CLNORM_API cl_command_queue clnorm_context_queue(const clnorm_context *ctx);
CLNORM_API clnorm_status clnorm_context_device_info(clnorm_context *ctx, clnorm_device_info *info);

/* Blocks until all work enqueued on the context's queue has finished. */
CLNORM_API clnorm_status clnorm_finish(clnorm_context *ctx);

/* The details of the last failure on this context (never NULL; "" after success). The string is
 * valid until the next call on the context. */
CLNORM_API const char *clnorm_last_error(const clnorm_context *ctx);
/* The OpenCL error code of the last failed OpenCL call (CL_SUCCESS when none). */
CLNORM_API cl_int clnorm_last_cl_error(const clnorm_context *ctx);

/* Device parameters (work-group size, vector width, ...) come from a built-in table keyed by
 * vendor, architecture and device name; these override one of them for this context, e.g.
 * ("work_group_size", 64). The environment variable CLNORM_PARAMS="name=value,..." does the same
 * for every context. Programs built with other values are rebuilt on next use.
 * Precedence, lowest first: the built-in table < the device's parameter file (below) <
 * CLNORM_PARAMS < clnorm_set_param. */
CLNORM_API clnorm_status clnorm_set_param(clnorm_context *ctx, const char *name, long value);
CLNORM_API clnorm_status clnorm_get_param(clnorm_context *ctx, const char *name, long *value);
/* The built-in table's value of a parameter for the context's device (what clnorm_get_param
 * would give without the parameter file, CLNORM_PARAMS and clnorm_set_param). */
CLNORM_API clnorm_status clnorm_get_default_param(clnorm_context *ctx, const char *name,
                                                  long *value);
/* Where a parameter's current value comes from: "table", "file" (the parameter file),
 * "environment" (CLNORM_PARAMS) or "set" (clnorm_set_param). NULL for a NULL context or an
 * unknown name. The string is static. */
CLNORM_API const char *clnorm_param_source(clnorm_context *ctx, const char *name);
/* Names of the device parameters: index 0, 1, ... until NULL. */
CLNORM_API const char *clnorm_param_name(size_t index);

/* The per-device parameter file. At context creation the library reads
 * <cache folder>/params-<device hash>.txt (the device hash names the device, vendor, driver,
 * platform and library version, as for the cached programs; no disk cache folder: no file), as
 * written by clnorm-tune or clnorm_save_params. Its format, text:
 *     clnorm-params 1 library=0.1.0 device="<device name>" driver="<driver version>"
 *     # comments and blank lines are allowed
 *     work_group_size=1
 *     vector_width=8
 *     ...                      (any of the parameters, each at most once)
 *     end
 * The file is applied as a whole or not at all: a file that is malformed, truncated (no "end"
 * line), over 64 KiB, for another format version, library version, device or driver, names an
 * unknown parameter or one twice, or holds a value out of range is ignored, with a
 * CLNORM_LOG_WARNING message to the settings' log callback (never an error); the built-in table
 * then stands. clnorm_clear_disk_cache leaves the file in place.
 * clnorm_param_file: that path for this context ("" when it has no disk cache folder), whether or
 * not the file exists. */
CLNORM_API const char *clnorm_param_file(const clnorm_context *ctx);
/* Writes the context's current parameters (all of them) as a parameter file for its device, to
 * path, or to clnorm_param_file(ctx) when path is NULL; comment (NULL: none) becomes "#" lines.
 * Atomic: the file is written next to the target, then renamed over it. Contexts created later
 * read it; this one is unchanged. Blocks. */
CLNORM_API clnorm_status clnorm_save_params(clnorm_context *ctx, const char *path,
                                            const char *comment);

/* Builds (or loads from the disk cache) every kernel program for the context's device now, so the
 * first operation does not pay for it. Blocks. */
CLNORM_API clnorm_status clnorm_warm_up(clnorm_context *ctx);

/* Runs a small kernel on the device and checks its result. Blocks. */
CLNORM_API clnorm_status clnorm_self_check(clnorm_context *ctx);

/* Counters of the context's program cache, for tests and diagnostics. */
typedef struct clnorm_cache_stats {
    unsigned long memory_hits; /* program found already built in this context */
    unsigned long disk_hits;   /* program loaded from a disk cache file */
    unsigned long builds;      /* program compiled from source */
    unsigned long disk_writes; /* disk cache files written */
    unsigned long disk_rejects; /* disk cache files found corrupt, truncated or foreign */
    double last_build_ms;      /* wall time of the last build or load */
} clnorm_cache_stats;
CLNORM_API clnorm_status clnorm_get_cache_stats(clnorm_context *ctx, clnorm_cache_stats *stats);
/* The disk cache folder in use ("" when there is none). */
CLNORM_API const char *clnorm_cache_dir(const clnorm_context *ctx);

/* Device time of the last operation enqueued on this context, from the start of its first kernel
 * to the end of its last, in milliseconds; needs a profiling queue (settings.enable_profiling,
 * or CL_QUEUE_PROFILING_ENABLE on a wrapped queue). Blocks until that operation has finished. */
CLNORM_API clnorm_status clnorm_last_op_time(clnorm_context *ctx, double *milliseconds);

/* One kernel of an operation, from its profiling events. */
typedef struct clnorm_kernel_time {
    const char *name; /* the kernel's function name (static storage) */
    double start_ms;  /* from the start of the operation's first kernel */
    double end_ms;
} clnorm_kernel_time;
/* The most kernels of one operation that a context keeps the times of. */
#define CLNORM_MAX_OP_KERNELS 16
/* The kernels the last operation on this context launched, in launch order: their number to
 * *count (at most CLNORM_MAX_OP_KERNELS: an operation that launched more keeps its first ones;
 * none does today), and the first min(*count, capacity) of them to kernels (which may be NULL
 * when capacity is 0). Where the sum of their durations falls short of clnorm_last_op_time, the
 * rest is the gaps between launches. "The last operation" is the last that launched a kernel, as
 * for clnorm_last_op_time: one on an empty tensor, or one that failed, leaves the record as it
 * was. On failure *count is left as it was. Needs a profiling queue, as clnorm_last_op_time;
 * blocks until that operation has finished. */
CLNORM_API clnorm_status clnorm_last_op_kernels(clnorm_context *ctx, clnorm_kernel_time *kernels,
                                                size_t capacity, size_t *count);

/* Removes this context's device's entries from the disk cache. */
CLNORM_API clnorm_status clnorm_clear_disk_cache(clnorm_context *ctx);

/* ---------------------------------------------------------------------------------------------
 * Tensors for the normalization layers
 */
typedef enum clnorm_layout {
    CLNORM_CHANNELS_FIRST = 0, /* (N, C, S...) row-major: NCHW */
    CLNORM_CHANNELS_LAST = 1   /* (N, S..., C) row-major: NHWC */
} clnorm_layout;

#define CLNORM_MAX_SPATIAL_DIMS 3

/* Shape (N, C, S1..Sk) with k = spatial_rank in 0..3; the element order is given by layout. */
typedef struct clnorm_shape {
    size_t n, c;
    unsigned spatial_rank;
    size_t spatial[CLNORM_MAX_SPATIAL_DIMS];
    clnorm_layout layout;
} clnorm_shape;

#ifdef __cplusplus
}
#endif

#include "clnorm/batchnorm.h"
#include "clnorm/featurenorm.h"
#include "clnorm/featurenorm_layer.h"

#endif /* CLNORM_H */

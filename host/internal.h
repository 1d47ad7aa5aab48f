/* Private declarations shared by the library's source files. */
#ifndef CLNORM_INTERNAL_H
#define CLNORM_INTERNAL_H

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>

#include "clnorm.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define CLNORM_ERROR_SIZE 65536
#define CLNORM_PATH_SIZE 1024

/* ---- per-device parameters (params.c) ------------------------------------------------------ */
#define CLNORM_PARAM_TABLE(X)                                                                      \
    X(work_group_size, "work-items per work-group for reductions and elementwise kernels")         \
    X(vector_width, "elements per vector load (1, 2, 4, 8)")                                   \
    X(items_per_thread, "vectors each work-item handles per step of an elementwise kernel")        \
    X(partials_per_channel, "work-groups that share one channel's statistics (stage-1 split)")     \
    X(channel_tile, "channels per work-group in channels-last reductions")                         \
    X(block_vectors, "vectors per exact two-pass statistics block (1..8; even value counts)")      \
    X(item_tile, "channel vectors one work-item reduces in channels-last (1..16)")               \
    X(plane_tile, "channels one work-item reduces in channels-first, for small planes (1..64)")   \
    X(register_units, "vectors a work-item holds in registers in the one-launch kernels for "      \
                      "work-groups of many (0: off, 1..32)")                                       \
    X(gather_units, "vectors of a strided elementwise pass (work-groups of many) a work-item "     \
                    "loads before it stores any (1: one at a time, 1..8)")                         \
    X(register_short_units, "vectors a work-item holds in the register kernels' short build, for " \
                            "runs that need no more (0: no short build; below register_units)")   \
    X(register_backward, "1: layer and RMS norm backward in one launch where a row fits the "       \
                         "register kernels (work-groups of many); 0: the general path")            \
    X(cached_kib, "most KiB per input a work-group of the cached one-launch kernels re-reads "   \
                  "from the cache where the register kernels do not serve: a layer or RMS norm "   \
                  "row (forward without the residual, backward's dx); work-groups of many; 0: "    \
                  "the general path")                                                              \
    X(elementwise_streams, "streams a work-item's contiguous elementwise chunk is read and "      \
                           "written as (work-groups of one): 1, or 2 (its two halves in turn)")   \
    X(flat_planes, "1: channels-first reductions on work-groups of many take a channel's planes " \
                   "as one run of vectors that the partials share evenly (planes of an even "     \
                   "length, a multiple of vector_width); 0: plane by plane")                      \
    X(row_block, "rows per channels-last statistics block (2, 4, 8; 0: 2 on work-groups of "      \
                 "many, from block_vectors on work-groups of one)")                                \
    X(rows_cached_kib, "most KiB of x a channels-last training forward on work-groups of many "    \
                       "takes in one launch, its rows read again from the cache, where they do "  \
                       "not fit the registers (0: three launches)")

typedef struct device_params {
#define PARAM_FIELD_(name, text) long name;
    CLNORM_PARAM_TABLE(PARAM_FIELD_)
#undef PARAM_FIELD_
} device_params;

typedef struct device_facts {
    cl_platform_id platform;
    char platform_name[128], platform_version[128];
    char name[128], vendor[128], driver_version[128], version[128];
    cl_device_type type;
    unsigned compute_units;
    size_t max_work_group_size;
    uint64_t local_mem_bytes, max_alloc_bytes, global_mem_bytes;
    uint64_t cache_bytes; /* global memory cache; 0 where the device does not say */
    bool correct_div_sqrt; /* accepts -cl-fp32-correctly-rounded-divide-sqrt */
} device_facts;

#define PARAM_COUNT_ONE_(name, text) +1
enum { DEVICE_PARAM_COUNT = 0 CLNORM_PARAM_TABLE(PARAM_COUNT_ONE_) };
#undef PARAM_COUNT_ONE_

/* Where a parameter's value came from, in increasing precedence. */
typedef enum param_origin {
    PARAM_FROM_TABLE = 0,
    PARAM_FROM_FILE,
    PARAM_FROM_ENV,
    PARAM_FROM_SET
} param_origin;

/* Sets ctx->params, ctx->table_params, ctx->param_origin and ctx->param_file: the built-in table's
 * entry for ctx->dev, then the device's parameter file in ctx->cache_dir (needs ctx->dev_hash;
 * ignored as a whole, with a warning, when it is not valid), then CLNORM_PARAMS. */
clnorm_status params_for_device(clnorm_context *ctx);
/* Index of a parameter by name, or -1. */
int params_index(const char *name);
clnorm_status params_set(clnorm_context *ctx, device_params *p, const char *name, long value);
long *params_field(device_params *p, int index);
/* Vectors per statistics block as the kernels are built with them: block_vectors, rounded up so
 * that a block holds an even number of values (vector_width 1), so that data in pairs (field
 * notes §4) give every block the same mean. */
long stats_block_vectors(const device_params *p);
/* Vectors per work-item of the register kernels' short build (-DSHORT_UNITS): register_short_units
 * where it is below register_units, else 0 (no short build). */
long short_register_units(const device_params *p);

/* ---- program cache (program.c, disk_cache.c) ------------------------------------------------ */
typedef enum kernel_family { FAMILY_UTIL = 0, FAMILY_NORM, FAMILY_COUNT } kernel_family;

#define MAX_KERNELS_PER_FAMILY 32

typedef struct program_entry {
    kernel_family family;
    char options[512];
    cl_program program;
    cl_kernel kernels[MAX_KERNELS_PER_FAMILY];
    size_t kernel_wg[MAX_KERNELS_PER_FAMILY]; /* CL_KERNEL_WORK_GROUP_SIZE of each */
    long work_group_size;                     /* the WG_SIZE the program was built with */
} program_entry;

/* Returns the program of `family` for the context's current parameters, built or loaded on
 * first use. Caller holds ctx->lock. */
clnorm_status program_get(clnorm_context *ctx, kernel_family family, const program_entry **out);
/* Kernel by name within the family's program; index into entry->kernels. */
int program_kernel_index(kernel_family family, const char *name);
/* ... and the name of kernel `index` (static storage) */
const char *program_kernel_name(kernel_family family, int index);
void program_cache_release(clnorm_context *ctx);

/* Disk cache: a file per (device, source, options). */
void disk_cache_resolve_dir(const char *setting, char *dir, size_t size);
void disk_cache_prepare_dir(char *dir);
uint64_t hash_bytes(uint64_t seed, const void *data, size_t size);
uint64_t device_hash(const device_facts *dev);
bool disk_cache_has_device(const char *dir, uint64_t dev_hash);
/* Returns malloc'd binary or NULL (reason in *why when the file existed but was rejected). */
unsigned char *disk_cache_load(const char *dir, uint64_t dev_hash, uint64_t key, size_t *size,
                               const char **why);
bool disk_cache_store(const char *dir, uint64_t dev_hash, uint64_t key, const unsigned char *bin,
                      size_t size);
void disk_cache_path(const char *dir, uint64_t dev_hash, uint64_t key, char *path, size_t size);
int disk_cache_remove_device(const char *dir, uint64_t dev_hash);

/* Embedded kernel sources (generated kernels_embedded.c). */
typedef struct embedded_source {
    const char *name;
    const char *text;
} embedded_source;
extern const embedded_source clnorm_embedded_sources[];
extern const size_t clnorm_embedded_source_count;

/* Workspace buffers owned by the context: partial results of stage 1, per-channel coefficients. */
typedef enum workspace_slot {
    WS_PARTIALS = 0, /* stage-1 partials */
    WS_COEF,         /* per-channel (or per-group) coefficients */
    WS_PIVOTS,       /* per-group pivots of the feature-axis norms */
    WS_MEAN,         /* per-group statistics when the caller does not want them */
    WS_RSTD,
    WS_SETS,   /* per-instance statistics (InstanceNorm's running statistics), per-channel sums */
    WS_GROUPS, /* GroupNorm's per-group statistics or sums, merged from per-channel partials */
    WS_GROUP_PIVOTS, /* ... and their pivots */
    WORKSPACE_COUNT
} workspace_slot;

/* ---- the context ---------------------------------------------------------------------------- */
struct clnorm_context {
    cl_context cl_ctx;
    cl_device_id device;
    cl_command_queue queue;
    bool out_of_order;
    bool profiling;                       /* the queue records profiling information */
    /* the last operation's kernels, when profiling: the first CLNORM_MAX_OP_KERNELS of them
     * (timing_kernels[0] the first) and their names, and its last */
    cl_event timing_kernels[CLNORM_MAX_OP_KERNELS], timing_last;
    const char *timing_names[CLNORM_MAX_OP_KERNELS];
    unsigned timing_count;
    device_facts dev;
    device_params params;
    device_params table_params;                     /* the built-in table's entry for the device */
    unsigned char param_origin[DEVICE_PARAM_COUNT]; /* where each parameter's value came from */
    char param_file[CLNORM_PATH_SIZE + 64]; /* the device's parameter file ("": no disk cache) */

    pthread_mutex_t lock; /* serializes calls: kernel arguments, caches, workspace, messages */
    char error[CLNORM_ERROR_SIZE];
    cl_int cl_error;
    clnorm_log_fn log;
    void *log_user;

    char cache_dir[CLNORM_PATH_SIZE]; /* "" = no disk cache */
    uint64_t dev_hash;
    program_entry **programs;
    size_t program_count, program_capacity;
    clnorm_cache_stats stats;

    cl_mem workspace[WORKSPACE_COUNT]; /* scratch for partial results, grown on demand */
    size_t workspace_size[WORKSPACE_COUNT];
    cl_event workspace_busy; /* last kernel that used the workspace (out-of-order queues) */
    cl_mem retired[16];      /* outgrown workspace buffers, released with the context */
    size_t retired_count;
};

/* ---- status (status.c) ---------------------------------------------------------------------- */
clnorm_status set_error(clnorm_context *ctx, clnorm_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
clnorm_status set_cl_error(clnorm_context *ctx, cl_int code, const char *what);
void clear_error(clnorm_context *ctx);
void log_info(clnorm_context *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_warning(clnorm_context *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void copy_message(char *dst, size_t size, const char *src);

/* FFmpeg-style error flow: set `status` and jump to `fail`. */
#define CL_TRY(ctx, call, what)                                                                    \
    do {                                                                                           \
        cl_int cl_try_err_ = (call);                                                               \
        if (cl_try_err_ != CL_SUCCESS) {                                                           \
            status = set_cl_error((ctx), cl_try_err_, (what));                                     \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)
#define TRY(call)                                                                                  \
    do {                                                                                           \
        status = (call);                                                                           \
        if (status != CLNORM_OK)                                                                   \
            goto fail;                                                                             \
    } while (0)

/* ---- devices (device.c) --------------------------------------------------------------------- */
clnorm_status device_query_facts(cl_device_id device, device_facts *facts);
/* Resolves a selector to a device; on failure writes a message naming what exists. */
clnorm_status device_select(const char *selector, cl_platform_id *platform, cl_device_id *device,
                            char *message, size_t message_size);

/* ---- launching (launch.c) ------------------------------------------------------------------- */
typedef struct kernel_arg {
    size_t size;
    const void *value; /* NULL with size > 0: local memory of that many bytes */
} kernel_arg;
#define ARG(x) {sizeof(x), &(x)}
#define LOCAL_ARG(bytes) {(bytes), NULL}

/* A sequence of kernels making up one operation: the first waits on the caller's events, each
 * next one on the previous, and the caller gets the last one's event. */
typedef struct launch_chain {
    cl_uint num_wait;
    const cl_event *wait;
    /* kept only on profiling queues, for clnorm_last_op_time and clnorm_last_op_kernels */
    cl_event kept[CLNORM_MAX_OP_KERNELS];
    const char *names[CLNORM_MAX_OP_KERNELS];
    unsigned count;
    cl_event last;
} launch_chain;

void chain_begin(launch_chain *chain, cl_uint num_wait, const cl_event *wait);
clnorm_status chain_launch(clnorm_context *ctx, launch_chain *chain, const program_entry *prog,
                           int kernel, const kernel_arg *args, size_t nargs, cl_uint dims,
                           const size_t *global, const size_t *local);
/* Hands the last event to *event (or releases it) and records workspace use. */
void chain_end(clnorm_context *ctx, launch_chain *chain, cl_event *event, bool used_workspace);
void chain_abandon(launch_chain *chain);
/* Releases the last operation's kept profiling events (a new operation, or the context's end). */
void timing_release(clnorm_context *ctx);
size_t round_up(size_t value, size_t multiple);

/* Releases outgrown workspace buffers (the queue must have drained). */
void workspace_release_retired(clnorm_context *ctx);
/* Workspace slot of at least `bytes`, owned by the context. */
clnorm_status workspace_reserve(clnorm_context *ctx, workspace_slot slot, size_t bytes,
                                cl_mem *out);

/* ---- validation (validate.c) ---------------------------------------------------------------- */
clnorm_status check_buffer(clnorm_context *ctx, cl_mem buffer, const char *name, size_t bytes,
                           bool may_be_null);
clnorm_status check_events(clnorm_context *ctx, cl_uint num_wait, const cl_event *wait);
clnorm_status check_finite_nonneg(clnorm_context *ctx, const char *name, double value);
/* Product a*b, or fails with INVALID_SHAPE naming `what` when it overflows. */
clnorm_status checked_mul(clnorm_context *ctx, size_t a, size_t b, const char *what, size_t *out);

/* Every public call that touches the context runs between context_lock (or context_begin_call,
 * which also clears the last error: for calls that can fail) and context_unlock. */
void context_lock(clnorm_context *ctx);
void context_begin_call(clnorm_context *ctx);
void context_unlock(clnorm_context *ctx);

/* The body of a public call: clear *event, lock the context (clearing its last error), run. */
#define LOCKED_CALL(ctx, event, call)                                                              \
    do {                                                                                           \
        if (event)                                                                                 \
            *(event) = NULL;                                                                       \
        if (!(ctx))                                                                                \
            return CLNORM_INVALID_ARGUMENT;                                                        \
        context_begin_call(ctx);                                                                   \
        clnorm_status locked_status_ = (call);                                                     \
        context_unlock(ctx);                                                                       \
        return locked_status_;                                                                     \
    } while (0)

/* ---- fault injection (tests only: meson -Dfault_injection=true) ----------------------------- */
/* Last, after every system header: maps allocations and OpenCL calls to counting wrappers. */
#ifdef CLNORM_FAULT_INJECTION
#include "fault_injection.h"
#endif

#endif

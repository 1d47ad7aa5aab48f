/* Kernel programs: embedded sources -> per-device build with a -D prelude from the device
 * parameters, cached in memory per (context, family, options) and on disk as binaries. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

typedef struct family_desc {
    const char *name;
    const char *sources[4];                       /* concatenated in this order */
    const char *kernels[MAX_KERNELS_PER_FAMILY]; /* created once per program */
} family_desc;

static const family_desc families[FAMILY_COUNT] = {
    [FAMILY_UTIL] = {"util", {"common", "util"}, {"scale_shift"}},
    [FAMILY_NORM] = {"norm",
                     {"common", "batchnorm", "groupnorm"},
                     {"bn_reduce_cf", "bn_reduce_cl", "bn_reduce_rows", "bn_forward_fused",
                      "bn_backward_fused", "bn_channel", "bn_elementwise", "gn_stats",
                      "gn_combine", "gn_apply", "gn_forward_fused", "gn_forward_fused_residual",
                      "gn_forward_sample", "gn_backward_fused",
                      "gn_forward_rows", "gn_forward_rows_short", "bn_forward_channel",
                      "bn_forward_channel_short", "gn_backward_rows", "gn_backward_rows_short",
                      "bn_forward_rows_tile", "bn_forward_rows_cached", "gn_forward_rows_cached",
                      "gn_backward_rows_cached",
                      "in_running"}},
};

int program_kernel_index(kernel_family family, const char *name)
{
    for (int i = 0; i < MAX_KERNELS_PER_FAMILY && families[family].kernels[i]; i++)
        if (strcmp(families[family].kernels[i], name) == 0)
            return i;
    return -1;
}

const char *program_kernel_name(kernel_family family, int index)
{
    return families[family].kernels[index];
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* The source of one file: CLNORM_KERNEL_DIR/<name>.cl when that exists (kernel development,
 * fault injection), else the copy embedded at build time. Returns malloc'd text or NULL. */
static char *load_source(const char *name)
{
    const char *dir = getenv("CLNORM_KERNEL_DIR");
    if (dir && *dir) {
        char path[CLNORM_PATH_SIZE];
        snprintf(path, sizeof path, "%s/%s.cl", dir, name);
        FILE *f = fopen(path, "rb");
        if (f) {
            char *text = NULL;
            long size = -1;
            if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
                (text = malloc((size_t)size + 1)) && fread(text, 1, (size_t)size, f) == (size_t)size)
                text[size] = '\0';
            else {
                free(text);
                text = NULL;
            }
            fclose(f);
            return text;
        }
    }
    for (size_t i = 0; i < clnorm_embedded_source_count; i++)
        if (strcmp(clnorm_embedded_sources[i].name, name) == 0)
            return strdup(clnorm_embedded_sources[i].text);
    return NULL;
}

static clnorm_status assemble_source(clnorm_context *ctx, kernel_family family, char **out)
{
    size_t total = 1;
    char *parts[4] = {NULL};
    clnorm_status status = CLNORM_OK;
    for (int i = 0; i < 4 && families[family].sources[i]; i++) {
        parts[i] = load_source(families[family].sources[i]);
        if (!parts[i]) {
            status = set_error(ctx, CLNORM_IO_ERROR, "kernel source %s.cl could not be read",
                               families[family].sources[i]);
            goto done;
        }
        total += strlen(parts[i]) + 1;
    }
    char *text = malloc(total);
    if (!text) {
        status = set_error(ctx, CLNORM_OUT_OF_HOST_MEMORY, "kernel source of %zu bytes", total);
        goto done;
    }
    text[0] = '\0';
    for (int i = 0; i < 4 && parts[i]; i++) {
        strcat(text, parts[i]);
        strcat(text, "\n");
    }
    *out = text;
done:
    for (int i = 0; i < 4; i++)
        free(parts[i]);
    return status;
}

static long floor_pow2(long v)
{
    long p = 1;
    while (p * 2 <= v)
        p *= 2;
    return p;
}

static void format_options(const clnorm_context *ctx, long wg, char *out, size_t size)
{
    const device_params *p = &ctx->params;
    /* No fast-math flags, and correctly rounded division and square roots where the device has
     * them (OpenCL's default allows 2.5 ulp: NVIDIA's variances of exact data were 1 ulp off). */
    snprintf(out, size,
             "-cl-std=CL1.2 -DWG_SIZE=%ld -DVEC=%ld -DITEMS=%ld -DCHANNEL_TILE=%ld -DBLOCK_VECS=%ld "
             "-DITEM_TILE=%ld -DPLANE_TILE=%ld -DROW_UNITS=%ld -DSHORT_UNITS=%ld -DGATHER_UNITS=%ld "
             "-DEW_STREAMS=%ld -DROW_BLOCK_PARAM=%ld -DFLAT_PLANES=%ld%s",
             wg, p->vector_width, p->items_per_thread, p->channel_tile, stats_block_vectors(p),
             p->item_tile, p->plane_tile, p->register_units > 0 ? p->register_units : 1,
             short_register_units(p), p->gather_units, p->elementwise_streams, p->row_block,
             p->flat_planes,
             ctx->dev.correct_div_sqrt ? " -cl-fp32-correctly-rounded-divide-sqrt" : "");
}

static clnorm_status build_failure(clnorm_context *ctx, cl_program program, cl_int err,
                                   const char *family, const char *options)
{
    size_t size = 0;
    char *log = NULL;
    if (clGetProgramBuildInfo(program, ctx->device, CL_PROGRAM_BUILD_LOG, 0, NULL, &size) ==
            CL_SUCCESS &&
        (log = malloc(size + 1)) &&
        clGetProgramBuildInfo(program, ctx->device, CL_PROGRAM_BUILD_LOG, size, log, NULL) ==
            CL_SUCCESS)
        log[size] = '\0';
    ctx->cl_error = err;
    clnorm_status status =
        set_error(ctx, CLNORM_BUILD_FAILED, "program \"%s\" (%s) failed to build on %s: %s (%d)\n%s",
                  family, options, ctx->dev.name, clnorm_cl_error_name(err), (int)err,
                  log ? log : "(no build log)");
    free(log);
    return status;
}

/* Tries the disk cache; returns a built program or NULL. */
static cl_program load_from_disk(clnorm_context *ctx, uint64_t key, const char *family)
{
    if (!ctx->cache_dir[0])
        return NULL;
    size_t size = 0;
    const char *why = NULL;
    unsigned char *bin = disk_cache_load(ctx->cache_dir, ctx->dev_hash, key, &size, &why);
    cl_program program = NULL;
    if (bin) {
        cl_int err = CL_SUCCESS, bin_status = CL_SUCCESS;
        const unsigned char *bins[1] = {bin};
        program = clCreateProgramWithBinary(ctx->cl_ctx, 1, &ctx->device, &size, bins, &bin_status,
                                            &err);
        if (err != CL_SUCCESS || bin_status != CL_SUCCESS ||
            clBuildProgram(program, 1, &ctx->device, NULL, NULL, NULL) != CL_SUCCESS) {
            if (program)
                clReleaseProgram(program);
            program = NULL;
            why = "the driver refused the binary";
        }
        free(bin);
    }
    if (why) {
        ctx->stats.disk_rejects++;
        log_info(ctx, "disk cache file for \"%s\" rejected (%s); rebuilding", family, why);
    }
    return program;
}

static void store_to_disk(clnorm_context *ctx, cl_program program, uint64_t key)
{
    size_t size = 0;
    if (!ctx->cache_dir[0] ||
        clGetProgramInfo(program, CL_PROGRAM_BINARY_SIZES, sizeof size, &size, NULL) !=
            CL_SUCCESS ||
        size == 0)
        return;
    unsigned char *bin = malloc(size);
    unsigned char *bins[1] = {bin};
    if (bin && clGetProgramInfo(program, CL_PROGRAM_BINARIES, sizeof bins, bins, NULL) ==
                   CL_SUCCESS &&
        disk_cache_store(ctx->cache_dir, ctx->dev_hash, key, bin, size))
        ctx->stats.disk_writes++;
    free(bin);
}

static clnorm_status build_program(clnorm_context *ctx, kernel_family family, const char *options,
                                   cl_program *out)
{
    const char *name = families[family].name;
    char *source = NULL;
    clnorm_status status = assemble_source(ctx, family, &source);
    if (status != CLNORM_OK)
        return status;
    uint64_t key = hash_bytes(ctx->dev_hash, source, strlen(source));
    key = hash_bytes(key, options, strlen(options));
    double start = now_ms();
    cl_program program = load_from_disk(ctx, key, name);
    if (program) {
        ctx->stats.disk_hits++;
    } else {
        cl_int err = CL_SUCCESS;
        const char *text = source;
        program = clCreateProgramWithSource(ctx->cl_ctx, 1, &text, NULL, &err);
        if (err != CL_SUCCESS) {
            free(source);
            return set_cl_error(ctx, err, "clCreateProgramWithSource");
        }
        err = clBuildProgram(program, 1, &ctx->device, options, NULL, NULL);
        if (err != CL_SUCCESS) {
            /* a compile error has a build log; running out of resources is not one */
            status = err == CL_OUT_OF_RESOURCES || err == CL_OUT_OF_HOST_MEMORY
                         ? set_cl_error(ctx, err, "clBuildProgram")
                         : build_failure(ctx, program, err, name, options);
            clReleaseProgram(program);
            free(source);
            return status;
        }
        ctx->stats.builds++;
        store_to_disk(ctx, program, key);
    }
    free(source);
    ctx->stats.last_build_ms = now_ms() - start;
    log_info(ctx, "program \"%s\" ready in %.1f ms (%s)", name, ctx->stats.last_build_ms,
             options);
    *out = program;
    return CLNORM_OK;
}

static void release_entry(program_entry *e)
{
    for (int k = 0; k < MAX_KERNELS_PER_FAMILY; k++)
        if (e->kernels[k])
            clReleaseKernel(e->kernels[k]);
    if (e->program)
        clReleaseProgram(e->program);
    memset(e, 0, sizeof *e);
}

/* Builds the program with work-group size wg and creates its kernels. Sets *kernel_limit to the
 * smallest CL_KERNEL_WORK_GROUP_SIZE among them. */
static clnorm_status make_entry(clnorm_context *ctx, kernel_family family, long wg,
                                program_entry *e, size_t *kernel_limit)
{
    char options[512];
    format_options(ctx, wg, options, sizeof options);
    memset(e, 0, sizeof *e);
    e->family = family;
    e->work_group_size = wg;
    clnorm_status status = build_program(ctx, family, options, &e->program);
    if (status != CLNORM_OK)
        return status;
    *kernel_limit = (size_t)wg;
    for (int k = 0; k < MAX_KERNELS_PER_FAMILY && families[family].kernels[k]; k++) {
        cl_int err = CL_SUCCESS;
        e->kernels[k] = clCreateKernel(e->program, families[family].kernels[k], &err);
        if (err != CL_SUCCESS) {
            /* a kernel the source lacks, or the driver out of resources */
            if (err == CL_INVALID_KERNEL_NAME || err == CL_INVALID_KERNEL_DEFINITION)
                status = set_error(ctx, CLNORM_BUILD_FAILED,
                                   "kernel %s missing from program \"%s\" (%s)",
                                   families[family].kernels[k], families[family].name,
                                   clnorm_cl_error_name(err));
            else
                status = set_cl_error(ctx, err, "clCreateKernel");
            ctx->cl_error = err;
            release_entry(e);
            return status;
        }
        err = clGetKernelWorkGroupInfo(e->kernels[k], ctx->device, CL_KERNEL_WORK_GROUP_SIZE,
                                       sizeof e->kernel_wg[k], &e->kernel_wg[k], NULL);
        if (err != CL_SUCCESS) {
            release_entry(e);
            return set_cl_error(ctx, err, "clGetKernelWorkGroupInfo");
        }
        if (e->kernel_wg[k] < *kernel_limit)
            *kernel_limit = e->kernel_wg[k];
    }
    return CLNORM_OK;
}

clnorm_status program_get(clnorm_context *ctx, kernel_family family, const program_entry **out)
{
    long wg = ctx->params.work_group_size;
    if ((size_t)wg > ctx->dev.max_work_group_size)
        wg = (long)ctx->dev.max_work_group_size;
    wg = floor_pow2(wg);
    char options[512];
    format_options(ctx, wg, options, sizeof options);
    for (size_t i = 0; i < ctx->program_count; i++) {
        if (ctx->programs[i]->family == family && strcmp(ctx->programs[i]->options, options) == 0) {
            ctx->stats.memory_hits++;
            *out = ctx->programs[i];
            return CLNORM_OK;
        }
    }
    if (ctx->program_count == ctx->program_capacity) {
        size_t cap = ctx->program_capacity ? 2 * ctx->program_capacity : 8;
        program_entry **grown = realloc(ctx->programs, cap * sizeof *grown);
        if (!grown)
            return set_error(ctx, CLNORM_OUT_OF_HOST_MEMORY, "program cache of %zu entries", cap);
        ctx->programs = grown;
        ctx->program_capacity = cap;
    }
    /* entries stay where they are: callers keep pointers while the table grows */
    program_entry *e = calloc(1, sizeof *e);
    if (!e)
        return set_error(ctx, CLNORM_OUT_OF_HOST_MEMORY, "program cache entry");
    size_t limit = 0;
    clnorm_status status = make_entry(ctx, family, wg, e, &limit);
    /* A kernel may allow fewer work-items than the device (registers, local memory): rebuild
     * with the largest power of two it accepts. */
    while (status == CLNORM_OK && limit < (size_t)e->work_group_size) {
        long smaller = floor_pow2((long)limit);
        release_entry(e);
        status = make_entry(ctx, family, smaller, e, &limit);
    }
    if (status != CLNORM_OK) {
        free(e);
        return status;
    }
    /* keyed by the options the parameters asked for, whatever size the kernels settled on */
    copy_message(e->options, sizeof e->options, options);
    ctx->programs[ctx->program_count++] = e;
    *out = e;
    return CLNORM_OK;
}

void program_cache_release(clnorm_context *ctx)
{
    for (size_t i = 0; i < ctx->program_count; i++) {
        release_entry(ctx->programs[i]);
        free(ctx->programs[i]);
    }
    free(ctx->programs);
    ctx->programs = NULL;
    ctx->program_count = ctx->program_capacity = 0;
}

/* clnorm-info: lists the OpenCL devices clnorm can use, and checks one.
 *   clnorm-info              every device with its facts
 *   clnorm-info --selectors  one "P:D" selector per line (for running tests on every device)
 *   clnorm-info --check [SELECTOR]
 *                            creates a context, times the first program build (cold or from the
 *                            disk cache), runs the self-check kernel, prints the device
 *                            parameters in use and where each came from
 *   clnorm-info --params [SELECTOR]
 *                            only the device parameters and their sources (builds nothing) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clnorm.h"

static const char *type_name(cl_device_type t)
{
    if (t & CL_DEVICE_TYPE_GPU)
        return "GPU";
    if (t & CL_DEVICE_TYPE_CPU)
        return "CPU";
    if (t & CL_DEVICE_TYPE_ACCELERATOR)
        return "accelerator";
    return "other";
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int list_devices(int selectors_only)
{
    size_t count = 0;
    clnorm_list_devices(NULL, 0, &count);
    if (count == 0) {
        fprintf(stderr, "clnorm-info: no OpenCL device found (install an OpenCL driver such as "
                        "pocl-opencl-icd)\n");
        return 1;
    }
    clnorm_device_info *infos = calloc(count, sizeof *infos);
    if (!infos)
        return 1;
    clnorm_list_devices(infos, count, &count);
    for (size_t i = 0; i < count; i++) {
        const clnorm_device_info *d = &infos[i];
        if (selectors_only) {
            printf("%u:%u\n", d->platform_index, d->device_index);
            continue;
        }
        printf("[%u:%u] %s\n", d->platform_index, d->device_index, d->name);
        printf("    platform        %s (%s)\n", d->platform_name, d->platform_version);
        printf("    vendor          %s\n", d->vendor);
        printf("    type            %s\n", type_name(d->type));
        printf("    driver          %s\n", d->driver_version);
        printf("    OpenCL C        %s\n", d->opencl_c_version);
        printf("    compute units   %u\n", d->compute_units);
        printf("    global memory   %.1f MiB\n", d->global_mem_bytes / 1048576.0);
        printf("    local memory    %.1f KiB\n", d->local_mem_bytes / 1024.0);
        printf("    max allocation  %.1f MiB\n", d->max_alloc_bytes / 1048576.0);
        printf("    max work-group  %zu\n", d->max_work_group_size);
        printf("    fp16 / fp64     %s / %s\n", d->has_fp16 ? "yes" : "no",
               d->has_fp64 ? "yes" : "no");
        printf("    disk cache      %s\n", d->has_disk_cache ? "programs cached" : "empty");
    }
    free(infos);
    return 0;
}

/* Warnings of the context (a parameter file that was ignored), kept for print_params. */
typedef struct warnings {
    int count;
    char last[2048];
} warnings;

static void keep_warnings(void *user, int level, const char *message)
{
    warnings *w = user;
    if (level == CLNORM_LOG_WARNING) {
        w->count++;
        snprintf(w->last, sizeof w->last, "%s", message);
    }
}

/* The parameters in use, with their sources (table < file < environment < set). */
static void print_params(clnorm_context *ctx, const warnings *w)
{
    const char *file = clnorm_param_file(ctx);
    int from_file = 0;
    for (size_t i = 0; clnorm_param_name(i); i++)
        from_file |= strcmp(clnorm_param_source(ctx, clnorm_param_name(i)), "file") == 0;
    if (!file[0])
        printf("param file  none (no disk cache folder)\n");
    else if (from_file)
        printf("param file  %s (applied)\n", file);
    else if (w->count && strstr(w->last, file))
        printf("param file  %s\n            IGNORED: %s\n", file, w->last);
    else
        printf("param file  %s (%s)\n", file,
               access(file, F_OK) == 0 ? "present, sets nothing" : "absent: run clnorm-tune");
    printf("parameters ");
    for (size_t i = 0; clnorm_param_name(i); i++) {
        const char *name = clnorm_param_name(i);
        long value = 0, table = 0;
        clnorm_get_param(ctx, name, &value);
        clnorm_get_default_param(ctx, name, &table);
        const char *source = clnorm_param_source(ctx, name);
        printf("%s%-22s %6ld  (%s", i ? "            " : " ", name, value, source);
        if (strcmp(source, "table") != 0)
            printf("; table %ld", table);
        printf(")\n");
    }
}

/* A context on the selected device that keeps its warnings in *w; NULL (reported) on failure. */
static clnorm_context *open_context(const char *selector, warnings *w)
{
    char message[4096];
    clnorm_settings settings;
    clnorm_default_settings(&settings);
    settings.device = selector;
    settings.log = keep_warnings;
    settings.log_user = w;
    clnorm_context *ctx = NULL;
    if (clnorm_context_create(&ctx, &settings, message, sizeof message) != CLNORM_OK)
        fprintf(stderr, "clnorm-info: %s\n", message);
    return ctx;
}

static int show_params(const char *selector)
{
    warnings w = {0, ""};
    clnorm_context *ctx = open_context(selector, &w);
    if (!ctx)
        return 1;
    clnorm_device_info info;
    clnorm_context_device_info(ctx, &info);
    printf("device      [%u:%u] %s (%s)\n", info.platform_index, info.device_index, info.name,
           info.platform_name);
    print_params(ctx, &w);
    clnorm_context_release(ctx);
    return 0;
}

static int check_device(const char *selector)
{
    warnings w = {0, ""};
    double start = now_ms();
    clnorm_context *ctx = open_context(selector, &w);
    if (!ctx)
        return 1;
    clnorm_device_info info;
    clnorm_context_device_info(ctx, &info);
    int had_cache = info.has_disk_cache;
    clnorm_status status = clnorm_warm_up(ctx);
    double ready = now_ms() - start;
    if (status == CLNORM_OK)
        status = clnorm_self_check(ctx);
    clnorm_cache_stats stats;
    clnorm_get_cache_stats(ctx, &stats);
    if (status != CLNORM_OK) {
        fprintf(stderr, "clnorm-info: self-check failed on %s: %s\n", info.name,
                clnorm_last_error(ctx));
        clnorm_context_release(ctx);
        return 1;
    }
    printf("device      [%u:%u] %s (%s)\n", info.platform_index, info.device_index, info.name,
           info.platform_name);
    printf("disk cache  %s\n", clnorm_cache_dir(ctx)[0] ? clnorm_cache_dir(ctx) : "off");
    printf("first call  %.1f ms from context creation to built kernels (%s: %lu built, %lu "
           "loaded from disk)\n",
           ready, had_cache ? "warm" : "cold", stats.builds, stats.disk_hits);
    printf("self-check  passed\n");
    print_params(ctx, &w);
    clnorm_context_release(ctx);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "--selectors") == 0)
        return list_devices(1);
    if (argc >= 2 && strcmp(argv[1], "--check") == 0)
        return check_device(argc >= 3 ? argv[2] : NULL);
    if (argc >= 2 && strcmp(argv[1], "--params") == 0)
        return show_params(argc >= 3 ? argv[2] : NULL);
    if (argc >= 2) {
        fprintf(stderr, "usage: clnorm-info [--selectors | --check [SELECTOR] | --params "
                        "[SELECTOR]]\n");
        return 2;
    }
    return list_devices(0);
}

/* The foundation: status table, device listing and selectors, wrapped contexts, the program
 * cache in memory and on disk, build failures, device parameters. */
#define _GNU_SOURCE /* strcasestr */
#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "support.h"

/* ---- status ---------------------------------------------------------------------------------- */

Test(status, numbers_are_stable_and_every_status_has_a_name_and_description)
{
    static const struct {
        clnorm_status status;
        int value;
        const char *name;
    } expected[] = {
        {CLNORM_OK, 0, "CLNORM_OK"},
        {CLNORM_INVALID_ARGUMENT, 1, "CLNORM_INVALID_ARGUMENT"},
        {CLNORM_INVALID_SHAPE, 2, "CLNORM_INVALID_SHAPE"},
        {CLNORM_BUFFER_TOO_SMALL, 3, "CLNORM_BUFFER_TOO_SMALL"},
        {CLNORM_WRONG_CONTEXT, 4, "CLNORM_WRONG_CONTEXT"},
        {CLNORM_DEVICE_NOT_FOUND, 5, "CLNORM_DEVICE_NOT_FOUND"},
        {CLNORM_UNSUPPORTED, 6, "CLNORM_UNSUPPORTED"},
        {CLNORM_OPENCL_ERROR, 7, "CLNORM_OPENCL_ERROR"},
        {CLNORM_BUILD_FAILED, 8, "CLNORM_BUILD_FAILED"},
        {CLNORM_OUT_OF_HOST_MEMORY, 9, "CLNORM_OUT_OF_HOST_MEMORY"},
        {CLNORM_IO_ERROR, 10, "CLNORM_IO_ERROR"},
        {CLNORM_BAD_FILE, 11, "CLNORM_BAD_FILE"},
        {CLNORM_WRONG_MODE, 12, "CLNORM_WRONG_MODE"},
    };
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++) {
        cr_assert_eq((int)expected[i].status, expected[i].value);
        cr_assert_str_eq(clnorm_status_name(expected[i].status), expected[i].name);
        const char *d = clnorm_status_description(expected[i].status);
        cr_assert(strlen(d) > 5, "description of %s", expected[i].name);
        for (size_t j = 0; j < i; j++)
            cr_assert_str_neq(d, clnorm_status_description(expected[j].status));
    }
    cr_assert_str_eq(clnorm_status_name((clnorm_status)999), "CLNORM_UNKNOWN_STATUS");
    cr_assert_str_eq(clnorm_cl_error_name(CL_OUT_OF_RESOURCES), "CL_OUT_OF_RESOURCES");
    cr_assert_str_eq(clnorm_cl_error_name(CL_INVALID_KERNEL_ARGS), "CL_INVALID_KERNEL_ARGS");
    cr_assert_str_eq(clnorm_cl_error_name(-12345), "CL_UNKNOWN_ERROR");
}

/* ---- devices and selectors ------------------------------------------------------------------- */

static clnorm_device_info *all_devices(size_t *count)
{
    cr_assert_eq(clnorm_list_devices(NULL, 0, count), CLNORM_OK);
    cr_assert_gt(*count, 0, "no OpenCL device");
    clnorm_device_info *infos = calloc(*count, sizeof *infos);
    cr_assert_eq(clnorm_list_devices(infos, *count, count), CLNORM_OK);
    return infos;
}

Test(devices, listing_reports_the_facts_of_every_device)
{
    size_t count;
    clnorm_device_info *infos = all_devices(&count);
    for (size_t i = 0; i < count; i++) {
        const clnorm_device_info *d = &infos[i];
        cr_assert(strlen(d->name) > 0 && strlen(d->platform_name) > 0);
        cr_assert(strlen(d->driver_version) > 0 && strlen(d->opencl_c_version) > 0);
        cr_assert(strncmp(d->opencl_c_version, "OpenCL C ", 9) == 0, "%s", d->opencl_c_version);
        cr_assert_gt(d->compute_units, 0);
        cr_assert_gt(d->max_work_group_size, 0);
        cr_assert_gt(d->global_mem_bytes, 0);
        cr_assert_gt(d->local_mem_bytes, 0);
        cr_assert_geq(d->global_mem_bytes, d->max_alloc_bytes);
    }
    cr_assert_eq(clnorm_list_devices(NULL, 1, &count), CLNORM_INVALID_ARGUMENT);
    free(infos);
}

static void expect_selector(const char *selector, const clnorm_device_info *want)
{
    clnorm_settings s;
    clnorm_default_settings(&s);
    s.device = selector;
    clnorm_context *ctx = test_context(&s);
    clnorm_device_info got;
    CLNORM_OK_(ctx, clnorm_context_device_info(ctx, &got));
    cr_assert_str_eq(got.name, want->name, "selector \"%s\"", selector);
    cr_assert_str_eq(got.platform_name, want->platform_name, "selector \"%s\"", selector);
    clnorm_context_release(ctx);
}

Test(devices, index_selectors_pick_each_device)
{
    size_t count;
    clnorm_device_info *infos = all_devices(&count);
    for (size_t i = 0; i < count; i++) {
        char sel[32];
        snprintf(sel, sizeof sel, "%u:%u", infos[i].platform_index, infos[i].device_index);
        expect_selector(sel, &infos[i]);
    }
    free(infos);
}

Test(devices, type_selectors_pick_the_first_device_of_that_type_or_fail)
{
    size_t count;
    clnorm_device_info *infos = all_devices(&count);
    static const struct {
        const char *word;
        cl_device_type type;
    } types[] = {{"gpu", CL_DEVICE_TYPE_GPU},
                 {"CPU", CL_DEVICE_TYPE_CPU},
                 {"accelerator", CL_DEVICE_TYPE_ACCELERATOR}};
    for (size_t t = 0; t < 3; t++) {
        const clnorm_device_info *first = NULL;
        for (size_t i = 0; i < count && !first; i++)
            if (infos[i].type & types[t].type)
                first = &infos[i];
        if (first) {
            expect_selector(types[t].word, first);
        } else {
            clnorm_settings s;
            clnorm_default_settings(&s);
            s.device = types[t].word;
            clnorm_context *ctx = NULL;
            char msg[4096];
            cr_assert_eq(clnorm_context_create(&ctx, &s, msg, sizeof msg),
                         CLNORM_DEVICE_NOT_FOUND);
            cr_assert_null(ctx);
            cr_assert(strstr(msg, types[t].word), "%s", msg);
        }
    }
    free(infos);
}

Test(devices, name_substrings_match_ignoring_case)
{
    clnorm_device_info me;
    test_device_info(&me);
    /* the middle of the device name, upper-cased: still selects a device of that name */
    char sub[64];
    size_t len = strlen(me.name);
    size_t take = len > 6 ? 6 : len;
    memcpy(sub, me.name + (len - take) / 2, take);
    sub[take] = '\0';
    for (char *p = sub; *p; p++)
        *p = (char)toupper((unsigned char)*p);
    size_t count;
    clnorm_device_info *infos = all_devices(&count);
    const clnorm_device_info *first = NULL;
    for (size_t i = 0; i < count && !first; i++)
        if (strcasestr(infos[i].name, sub) || strcasestr(infos[i].platform_name, sub))
            first = &infos[i];
    cr_assert_not_null(first);
    expect_selector(sub, first);
    free(infos);
}

Test(devices, a_selector_that_matches_nothing_names_what_exists)
{
    clnorm_device_info me;
    test_device_info(&me);
    const char *bad[] = {"no-such-device-xyz", "99:99", "0:"};
    for (size_t i = 0; i < 3; i++) {
        clnorm_settings s;
        clnorm_default_settings(&s);
        s.device = bad[i];
        clnorm_context *ctx = (clnorm_context *)&s; /* must be reset to NULL */
        char msg[4096];
        cr_assert_eq(clnorm_context_create(&ctx, &s, msg, sizeof msg), CLNORM_DEVICE_NOT_FOUND,
                     "%s", bad[i]);
        cr_assert_null(ctx);
        cr_assert(strstr(msg, bad[i]), "message names the selector: %s", msg);
        cr_assert(strstr(msg, me.name), "message lists the devices present: %s", msg);
    }
}

Test(devices, the_environment_variable_selects_when_no_selector_is_given)
{
    clnorm_device_info me;
    test_device_info(&me);
    setenv("CLNORM_DEVICE", "no-such-device-xyz", 1);
    clnorm_context *ctx = NULL;
    char msg[4096];
    cr_assert_eq(clnorm_context_create(&ctx, NULL, msg, sizeof msg), CLNORM_DEVICE_NOT_FOUND);
    cr_assert(strstr(msg, "CLNORM_DEVICE"), "%s", msg);
    char sel[32];
    snprintf(sel, sizeof sel, "%u:%u", me.platform_index, me.device_index);
    setenv("CLNORM_DEVICE", sel, 1);
    expect_selector(NULL, &me);
}

/* ---- contexts ---------------------------------------------------------------------------------- */

Test(context, runs_the_self_check_kernel)
{
    clnorm_context *ctx = test_context(NULL);
    CLNORM_OK_(ctx, clnorm_self_check(ctx));
    cr_assert_str_eq(clnorm_last_error(ctx), "");
    clnorm_context_release(ctx);
    clnorm_context_release(NULL);
}

static void make_cl_objects(cl_context *c, cl_device_id *d, cl_command_queue *q,
                            cl_command_queue_properties props)
{
    clnorm_context *probe = test_context(NULL);
    *d = clnorm_context_device(probe);
    CL_OK(clRetainDevice(*d));
    clnorm_context_release(probe);
    cl_int err;
    *c = clCreateContext(NULL, 1, d, NULL, NULL, &err);
    cr_assert_eq(err, CL_SUCCESS);
    *q = clCreateCommandQueue(*c, *d, props, &err);
    cr_assert_eq(err, CL_SUCCESS);
}

Test(context, wraps_the_applications_own_context_and_queue)
{
    cl_context c;
    cl_device_id d;
    cl_command_queue q;
    make_cl_objects(&c, &d, &q, 0);
    cl_uint refs_before = 0, refs = 0;
    CL_OK(clGetContextInfo(c, CL_CONTEXT_REFERENCE_COUNT, sizeof refs, &refs_before, NULL));
    clnorm_context *ctx = NULL;
    char msg[4096];
    cr_assert_eq(clnorm_context_wrap(&ctx, c, d, q, NULL, msg, sizeof msg), CLNORM_OK, "%s", msg);
    cr_assert_eq(clnorm_context_cl_context(ctx), c);
    cr_assert_eq(clnorm_context_queue(ctx), q);
    cr_assert_eq(clnorm_context_device(ctx), d);
    CLNORM_OK_(ctx, clnorm_self_check(ctx));
    clnorm_context_release(ctx);
    /* the application's objects outlive the wrapper, which gave back every reference it took;
     * the driver may still hold the last command's event for a moment (PoCL does) */
    CL_OK(clFinish(q));
    for (int tries = 0; tries < 100; tries++) {
        CL_OK(clGetContextInfo(c, CL_CONTEXT_REFERENCE_COUNT, sizeof refs, &refs, NULL));
        if (refs == refs_before)
            break;
        struct timespec pause = {0, 10 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    cr_assert_eq(refs, refs_before);
    CL_OK(clFinish(q));
    clReleaseCommandQueue(q);
    clReleaseContext(c);
    clReleaseDevice(d);
}

Test(context, wraps_an_out_of_order_queue)
{
    cl_context c;
    cl_device_id d;
    cl_command_queue q;
    cl_command_queue_properties supported = 0;
    clnorm_context *probe = test_context(NULL);
    clGetDeviceInfo(clnorm_context_device(probe), CL_DEVICE_QUEUE_PROPERTIES, sizeof supported,
                    &supported, NULL);
    clnorm_context_release(probe);
    if (!(supported & CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE))
        cr_skip_test("the device has no out-of-order queues");
    make_cl_objects(&c, &d, &q, CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE);
    clnorm_context *ctx = NULL;
    char msg[4096];
    cr_assert_eq(clnorm_context_wrap(&ctx, c, d, q, NULL, msg, sizeof msg), CLNORM_OK, "%s", msg);
    for (int i = 0; i < 3; i++)
        CLNORM_OK_(ctx, clnorm_self_check(ctx));
    clnorm_context_release(ctx);
    clReleaseCommandQueue(q);
    clReleaseContext(c);
    clReleaseDevice(d);
}

Test(context, wrapping_rejects_mismatched_or_missing_objects)
{
    cl_context c1, c2;
    cl_device_id d1, d2;
    cl_command_queue q1, q2;
    make_cl_objects(&c1, &d1, &q1, 0);
    make_cl_objects(&c2, &d2, &q2, 0);
    clnorm_context *ctx = NULL;
    char msg[4096];
    cr_assert_eq(clnorm_context_wrap(&ctx, c1, d1, q2, NULL, msg, sizeof msg),
                 CLNORM_WRONG_CONTEXT);
    cr_assert_null(ctx);
    cr_assert(strstr(msg, "queue"), "%s", msg);
    cr_assert_eq(clnorm_context_wrap(&ctx, NULL, d1, q1, NULL, msg, sizeof msg),
                 CLNORM_INVALID_ARGUMENT);
    cr_assert_eq(clnorm_context_wrap(NULL, c1, d1, q1, NULL, msg, sizeof msg),
                 CLNORM_INVALID_ARGUMENT);
    clReleaseCommandQueue(q1);
    clReleaseCommandQueue(q2);
    clReleaseContext(c1);
    clReleaseContext(c2);
    clReleaseDevice(d1);
    clReleaseDevice(d2);
}

Test(context, several_contexts_work_side_by_side)
{
    size_t count;
    clnorm_device_info *infos = all_devices(&count);
    enum { MAX = 4 };
    clnorm_context *ctxs[MAX];
    size_t n = 0;
    /* one per device present, and at least two */
    for (size_t i = 0; n < MAX && (i < count || n < 2); i++) {
        char sel[32];
        snprintf(sel, sizeof sel, "%u:%u", infos[i % count].platform_index,
                 infos[i % count].device_index);
        clnorm_settings s;
        clnorm_default_settings(&s);
        s.device = sel;
        ctxs[n++] = test_context(&s);
    }
    for (size_t i = 0; i < n; i++)
        CLNORM_OK_(ctxs[i], clnorm_self_check(ctxs[i]));
    for (size_t i = 0; i < n; i++)
        clnorm_context_release(ctxs[i]);
    free(infos);
}

static int log_lines;
static char last_log[1024];
static void count_log(void *user, int level, const char *message)
{
    (void)level;
    *(int *)user += 1;
    snprintf(last_log, sizeof last_log, "%s", message);
}

Test(context, the_log_callback_receives_notes_and_errors)
{
    clnorm_settings s;
    clnorm_default_settings(&s);
    s.log = count_log;
    s.log_user = &log_lines;
    s.cache_dir = "";
    clnorm_context *ctx = test_context(&s);
    CLNORM_OK_(ctx, clnorm_warm_up(ctx));
    cr_assert_gt(log_lines, 0);
    int before = log_lines;
    cr_assert_eq(clnorm_set_param(ctx, "no_such_param", 1), CLNORM_INVALID_ARGUMENT);
    cr_assert_gt(log_lines, before);
    cr_assert(strstr(last_log, "no_such_param"), "%s", last_log);
    cr_assert(strstr(clnorm_last_error(ctx), "no_such_param"));
    clnorm_context_release(ctx);
}

/* ---- device parameters ------------------------------------------------------------------------- */

Test(params, overrides_change_the_build_and_keep_results_right)
{
    clnorm_context *ctx = test_context(NULL);
    long wg = 0;
    CLNORM_OK_(ctx, clnorm_get_param(ctx, "work_group_size", &wg));
    cr_assert_geq(wg, 1);
    const long sizes[] = {1, 2, 16, 64};
    for (size_t i = 0; i < 4; i++) {
        CLNORM_OK_(ctx, clnorm_set_param(ctx, "work_group_size", sizes[i]));
        CLNORM_OK_(ctx, clnorm_get_param(ctx, "work_group_size", &wg));
        cr_assert_eq(wg, sizes[i]);
        CLNORM_OK_(ctx, clnorm_self_check(ctx));
    }
    cr_assert_eq(clnorm_set_param(ctx, "vector_width", 3), CLNORM_INVALID_ARGUMENT);
    cr_assert(strstr(clnorm_last_error(ctx), "vector_width"));
    cr_assert_eq(clnorm_set_param(ctx, "work_group_size", 0), CLNORM_INVALID_ARGUMENT);
    cr_assert_eq(clnorm_get_param(ctx, "work_group_size", NULL), CLNORM_INVALID_ARGUMENT);
    clnorm_context_release(ctx);
}

Test(params, the_environment_overrides_the_table_and_bad_entries_are_reported)
{
    setenv("CLNORM_PARAMS", "work_group_size=2,vector_width=2", 1);
    clnorm_context *ctx = test_context(NULL);
    long v = 0;
    CLNORM_OK_(ctx, clnorm_get_param(ctx, "vector_width", &v));
    cr_assert_eq(v, 2);
    CLNORM_OK_(ctx, clnorm_self_check(ctx));
    clnorm_context_release(ctx);
    setenv("CLNORM_PARAMS", "work_group_size=lots", 1);
    char msg[4096];
    ctx = NULL;
    cr_assert_eq(clnorm_context_create(&ctx, NULL, msg, sizeof msg), CLNORM_INVALID_ARGUMENT);
    cr_assert(strstr(msg, "work_group_size"), "%s", msg);
    cr_assert_null(ctx);
}

/* ---- the program cache --------------------------------------------------------------------------- */

static clnorm_cache_stats warm_up_in(const char *dir)
{
    clnorm_settings s;
    clnorm_default_settings(&s);
    s.cache_dir = dir;
    clnorm_context *ctx = test_context(&s);
    CLNORM_OK_(ctx, clnorm_warm_up(ctx));
    CLNORM_OK_(ctx, clnorm_self_check(ctx));
    clnorm_cache_stats stats;
    CLNORM_OK_(ctx, clnorm_get_cache_stats(ctx, &stats));
    clnorm_context_release(ctx);
    return stats;
}

/* The first cache file in dir (there is one per program). */
static void first_cache_file(const char *dir, char *path, size_t size)
{
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    path[0] = '\0';
    for (struct dirent *e = readdir(d); e; e = readdir(d))
        if (strstr(e->d_name, ".clbin") && !path[0])
            snprintf(path, size, "%s/%s", dir, e->d_name);
    closedir(d);
    cr_assert(path[0], "no cache file in %s", dir);
}

static long file_size(const char *path)
{
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    return (long)st.st_size;
}

Test(cache, builds_once_then_hits_memory_then_disk)
{
    char dir[512];
    make_temp_dir(dir, sizeof dir);
    clnorm_settings s;
    clnorm_default_settings(&s);
    s.cache_dir = dir;
    clnorm_context *ctx = test_context(&s);
    cr_assert_str_eq(clnorm_cache_dir(ctx), dir);
    CLNORM_OK_(ctx, clnorm_warm_up(ctx));
    CLNORM_OK_(ctx, clnorm_warm_up(ctx));
    clnorm_cache_stats st;
    CLNORM_OK_(ctx, clnorm_get_cache_stats(ctx, &st));
    cr_assert_gt(st.builds, 0);
    cr_assert_eq(st.disk_hits, 0);
    cr_assert_eq(st.disk_writes, st.builds);
    cr_assert_geq(st.memory_hits, st.builds, "second warm-up comes from memory");
    clnorm_device_info info;
    CLNORM_OK_(ctx, clnorm_context_device_info(ctx, &info));
    clnorm_context_release(ctx);

    clnorm_cache_stats again = warm_up_in(dir);
    cr_assert_eq(again.builds, 0, "a second context loads from disk");
    cr_assert_eq(again.disk_hits, st.builds);
    cr_assert_eq(again.disk_rejects, 0);
    remove_tree(dir);
}

Test(cache, a_corrupt_truncated_or_foreign_file_is_rebuilt)
{
    char dir[512], path[1024];
    make_temp_dir(dir, sizeof dir);
    clnorm_cache_stats first = warm_up_in(dir);
    cr_assert_gt(first.disk_writes, 0);
    first_cache_file(dir, path, sizeof path);
    long size = file_size(path);

    enum { FLIP_PAYLOAD, TRUNCATE, FOREIGN_MAGIC, OTHER_VERSION, EMPTY };
    for (int damage = FLIP_PAYLOAD; damage <= EMPTY; damage++) {
        FILE *f = fopen(path, "r+b");
        cr_assert_not_null(f);
        if (damage == FLIP_PAYLOAD) {
            fseek(f, size - 5, SEEK_SET);
            int c = fgetc(f);
            fseek(f, size - 5, SEEK_SET);
            fputc(c ^ 0x5a, f);
        } else if (damage == FOREIGN_MAGIC) {
            fwrite("NOTCLNRM", 1, 8, f);
        } else if (damage == OTHER_VERSION) {
            fseek(f, 12, SEEK_SET); /* the library version field */
            unsigned v = 0xfffff;
            fwrite(&v, sizeof v, 1, f);
        }
        fclose(f);
        if (damage == TRUNCATE)
            cr_assert_eq(truncate(path, size / 2), 0);
        if (damage == EMPTY)
            cr_assert_eq(truncate(path, 0), 0);
        clnorm_cache_stats st = warm_up_in(dir);
        cr_assert_eq(st.disk_rejects, 1, "damage %d detected", damage);
        cr_assert_eq(st.builds, 1, "damage %d: that program rebuilt from source", damage);
        cr_assert_eq(st.disk_hits, first.builds - 1, "damage %d: the others loaded", damage);
        cr_assert_gt(file_size(path), 64, "damage %d: file rewritten", damage);
        clnorm_cache_stats healed = warm_up_in(dir);
        cr_assert_eq(healed.disk_rejects, 0);
        cr_assert_eq(healed.builds, 0);
    }
    remove_tree(dir);
}

Test(cache, an_unusable_folder_means_no_disk_cache_not_an_error)
{
    char dir[512], blocker[600];
    make_temp_dir(dir, sizeof dir);
    snprintf(blocker, sizeof blocker, "%s/file", dir);
    FILE *f = fopen(blocker, "w");
    fputs("a file where the cache folder would go", f);
    fclose(f);
    char below[700];
    snprintf(below, sizeof below, "%s/cache", blocker);
    clnorm_settings s;
    clnorm_default_settings(&s);
    s.cache_dir = below;
    clnorm_context *ctx = test_context(&s);
    cr_assert_str_eq(clnorm_cache_dir(ctx), "");
    CLNORM_OK_(ctx, clnorm_self_check(ctx));
    clnorm_cache_stats st;
    CLNORM_OK_(ctx, clnorm_get_cache_stats(ctx, &st));
    cr_assert_gt(st.builds, 0);
    cr_assert_eq(st.disk_writes, 0);
    clnorm_context_release(ctx);
    remove_tree(dir);
}

Test(cache, the_environment_relocates_or_disables_it)
{
    char dir[512];
    make_temp_dir(dir, sizeof dir);
    setenv("CLNORM_CACHE_DIR", dir, 1);
    clnorm_context *ctx = test_context(NULL);
    cr_assert_str_eq(clnorm_cache_dir(ctx), dir);
    clnorm_context_release(ctx);
    setenv("CLNORM_CACHE_DIR", "off", 1);
    ctx = test_context(NULL);
    cr_assert_str_eq(clnorm_cache_dir(ctx), "");
    clnorm_context_release(ctx);
    unsetenv("CLNORM_CACHE_DIR");
    setenv("XDG_CACHE_HOME", dir, 1);
    ctx = test_context(NULL);
    char want[600];
    snprintf(want, sizeof want, "%s/clnorm", dir);
    cr_assert_str_eq(clnorm_cache_dir(ctx), want);
    CLNORM_OK_(ctx, clnorm_warm_up(ctx));
    clnorm_device_info info;
    CLNORM_OK_(ctx, clnorm_context_device_info(ctx, &info));
    cr_assert(info.has_disk_cache, "device info reports the cached programs");
    CLNORM_OK_(ctx, clnorm_clear_disk_cache(ctx));
    CLNORM_OK_(ctx, clnorm_context_device_info(ctx, &info));
    cr_assert(!info.has_disk_cache, "cleared");
    clnorm_context_release(ctx);
    remove_tree(dir);
}

Test(build, a_kernel_that_fails_to_build_returns_the_build_log)
{
    char dir[512], path[700];
    make_temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/util.cl", dir);
    FILE *f = fopen(path, "w");
    fputs("__kernel void fill(__global float *y) { y[0] = undeclared_identifier_42; }\n", f);
    fclose(f);
    setenv("CLNORM_KERNEL_DIR", dir, 1);
    clnorm_settings s;
    clnorm_default_settings(&s);
    s.cache_dir = "";
    clnorm_context *ctx = test_context(&s);
    cr_assert_eq(clnorm_warm_up(ctx), CLNORM_BUILD_FAILED);
    const char *msg = clnorm_last_error(ctx);
    cr_assert(strstr(msg, "undeclared_identifier_42"), "the build log is in the message: %s", msg);
    cr_assert(strstr(msg, "util"), "names the program: %s", msg);
    cr_assert_neq(clnorm_last_cl_error(ctx), CL_SUCCESS);
    /* the same context still works once the source is fixed */
    unsetenv("CLNORM_KERNEL_DIR");
    CLNORM_OK_(ctx, clnorm_self_check(ctx));
    clnorm_context_release(ctx);
    remove_tree(dir);
}

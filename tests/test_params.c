/* The per-device parameter file: applied at context creation from the disk cache folder, between
 * the built-in table and CLNORM_PARAMS; a file that is not valid as a whole is ignored with a
 * warning; clnorm_save_params writes one; where each value came from (clnorm_param_source). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support.h"

/* ---- helpers ---------------------------------------------------------------------------------- */

typedef struct log_record {
    int warnings, errors;
    char last_warning[2048];
} log_record;

static void record_log(void *user, int level, const char *message)
{
    log_record *r = user;
    if (level == CLNORM_LOG_WARNING) {
        r->warnings++;
        snprintf(r->last_warning, sizeof r->last_warning, "%s", message);
    } else if (level == CLNORM_LOG_ERROR) {
        r->errors++;
    }
}

/* Every test sets its own CLNORM_PARAMS (run.sh runs the suite under GPU-shaped overrides). */
static void no_environment_overrides(void)
{
    unsetenv("CLNORM_PARAMS");
}

TestSuite(params, .init = no_environment_overrides);

static size_t param_count(void)
{
    size_t n = 0;
    while (clnorm_param_name(n))
        n++;
    return n;
}

/* A context whose disk cache folder is `dir`, logging into *log (a test makes hundreds). */
static clnorm_context *context_in(const char *dir, log_record *log)
{
    clnorm_settings s;
    clnorm_default_settings(&s);
    s.cache_dir = dir;
    s.log = record_log;
    s.log_user = log;
    memset(log, 0, sizeof *log);
    return test_context_shared(&s);
}

static void write_file(const char *path, const char *text, size_t size)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "cannot write %s", path);
    cr_assert_eq(fwrite(text, 1, size, f), size);
    cr_assert_eq(fclose(f), 0);
}

/* The header line this library expects for the device under test. */
static void header_for_device(char *out, size_t size)
{
    clnorm_device_info info;
    test_device_info(&info);
    snprintf(out, size, "clnorm-params 1 library=%s device=\"%s\" driver=\"%s\"",
             CLNORM_VERSION_STRING, info.name, info.driver_version);
}

/* For each parameter a valid value other than the table's: the first of 2*d, d/2, 1, 2, 4 that
 * clnorm_set_param accepts. */
static void other_values(clnorm_context *ctx, long *table, long *other)
{
    for (size_t i = 0; clnorm_param_name(i); i++) {
        const char *name = clnorm_param_name(i);
        CLNORM_OK_(ctx, clnorm_get_default_param(ctx, name, &table[i]));
        long d = table[i], tries[] = {2 * d, d / 2, 1, 2, 4};
        other[i] = d;
        for (size_t t = 0; t < sizeof tries / sizeof tries[0] && other[i] == d; t++) {
            if (tries[t] == d) /* work-group sizes above the device's limit are clamped */
                continue;
            if (clnorm_set_param(ctx, name, tries[t]) == CLNORM_OK)
                other[i] = tries[t];
        }
        cr_assert_neq(other[i], d, "no other valid value for %s", name);
        CLNORM_OK_(ctx, clnorm_set_param(ctx, name, d));
    }
}

static void expect_table_values(clnorm_context *ctx, const char *label)
{
    for (size_t i = 0; clnorm_param_name(i); i++) {
        const char *name = clnorm_param_name(i);
        long value = -1, table = -2;
        CLNORM_OK_(ctx, clnorm_get_param(ctx, name, &value));
        CLNORM_OK_(ctx, clnorm_get_default_param(ctx, name, &table));
        cr_assert_eq(value, table, "%s: %s = %ld, table %ld", label, name, value, table);
        cr_assert_str_eq(clnorm_param_source(ctx, name), "table", "%s: %s", label, name);
    }
}

/* ---- the API without a file ------------------------------------------------------------------- */

Test(params, names_sources_and_defaults)
{
    char dir[512];
    make_temp_dir(dir, sizeof dir);
    log_record log;
    clnorm_context *ctx = context_in(dir, &log);
    size_t n = param_count();
    cr_assert_geq(n, 7, "the seven parameters of the table at least");
    for (size_t i = 0; i < n; i++) {
        long v;
        CLNORM_OK_(ctx, clnorm_get_param(ctx, clnorm_param_name(i), &v));
        CLNORM_OK_(ctx, clnorm_get_default_param(ctx, clnorm_param_name(i), &v));
    }
    expect_table_values(ctx, "no file");
    cr_assert_null(clnorm_param_name(n));
    cr_assert_null(clnorm_param_source(ctx, "no_such_param"));
    cr_assert_null(clnorm_param_source(NULL, "vector_width"));
    long v;
    cr_assert_eq(clnorm_get_default_param(ctx, "no_such_param", &v), CLNORM_INVALID_ARGUMENT);
    cr_assert_eq(clnorm_get_default_param(ctx, "vector_width", NULL), CLNORM_INVALID_ARGUMENT);
    cr_assert_eq(clnorm_get_default_param(NULL, "vector_width", &v), CLNORM_INVALID_ARGUMENT);
    /* the file's path is in the cache folder, named by the device hash */
    const char *path = clnorm_param_file(ctx);
    cr_assert(strncmp(path, dir, strlen(dir)) == 0 && strstr(path, "/params-") &&
                  strstr(path, ".txt"),
              "%s", path);
    cr_assert_eq(log.warnings, 0, "no file, no warning: %s", log.last_warning);
    clnorm_context_release(ctx);
    remove_tree(dir);
}

Test(params, no_disk_cache_folder_means_no_file)
{
    log_record log;
    clnorm_context *ctx = context_in("", &log);
    cr_assert_str_eq(clnorm_param_file(ctx), "");
    expect_table_values(ctx, "no cache folder");
    cr_assert_eq(clnorm_save_params(ctx, NULL, NULL), CLNORM_INVALID_ARGUMENT);
    cr_assert(strstr(clnorm_last_error(ctx), "disk cache"), "%s", clnorm_last_error(ctx));
    cr_assert_eq(clnorm_save_params(NULL, NULL, NULL), CLNORM_INVALID_ARGUMENT);
    cr_assert_str_eq(clnorm_param_file(NULL), "");
    clnorm_context_release(ctx);
}

/* ---- a valid file ----------------------------------------------------------------------------- */

Test(params, a_saved_file_is_applied_by_later_contexts)
{
    char dir[512];
    make_temp_dir(dir, sizeof dir);
    log_record log;
    clnorm_context *ctx = context_in(dir, &log);
    size_t n = param_count();
    long table[64], other[64];
    cr_assert_leq(n, 64);
    other_values(ctx, table, other);
    for (size_t i = 0; i < n; i++)
        CLNORM_OK_(ctx, clnorm_set_param(ctx, clnorm_param_name(i), other[i]));
    CLNORM_OK_(ctx, clnorm_save_params(ctx, NULL, "a test\nof two lines"));
    char path[2048];
    snprintf(path, sizeof path, "%s", clnorm_param_file(ctx));
    clnorm_context_release(ctx);

    /* atomic write: the file and nothing else (no temporary left behind) */
    DIR *d = opendir(dir);
    int entries = 0;
    for (struct dirent *e = readdir(d); e; e = readdir(d))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            entries++;
            cr_assert(strstr(path, e->d_name), "unexpected file %s", e->d_name);
        }
    closedir(d);
    cr_assert_eq(entries, 1);

    clnorm_context *again = context_in(dir, &log);
    for (size_t i = 0; i < n; i++) {
        long v;
        CLNORM_OK_(again, clnorm_get_param(again, clnorm_param_name(i), &v));
        cr_assert_eq(v, other[i], "%s = %ld, file %ld", clnorm_param_name(i), v, other[i]);
        cr_assert_str_eq(clnorm_param_source(again, clnorm_param_name(i)), "file");
        CLNORM_OK_(again, clnorm_get_default_param(again, clnorm_param_name(i), &v));
        cr_assert_eq(v, table[i], "the table value stays visible");
    }
    cr_assert_eq(log.warnings, 0, "%s", log.last_warning);
    cr_assert_eq(log.errors, 0);
    /* the kernels build and run with the file's values */
    CLNORM_OK_(again, clnorm_self_check(again));
    clnorm_context_release(again);
    remove_tree(dir);
}

Test(params, a_hand_written_file_with_some_parameters_sets_only_those)
{
    char dir[512], header[1024], text[2048];
    make_temp_dir(dir, sizeof dir);
    header_for_device(header, sizeof header);
    log_record log;
    clnorm_context *ctx = context_in(dir, &log);
    long table_vw, table_it;
    CLNORM_OK_(ctx, clnorm_get_default_param(ctx, "vector_width", &table_vw));
    CLNORM_OK_(ctx, clnorm_get_default_param(ctx, "item_tile", &table_it));
    long vw = table_vw == 2 ? 4 : 2, it = table_it == 3 ? 5 : 3;
    /* comments, blank lines, spaces around '=' and CRLF line ends are allowed */
    snprintf(text, sizeof text, "%s\r\n# by hand\n\n  vector_width = %ld\r\nitem_tile=%ld\nend\n",
             header, vw, it);
    char path[2048];
    snprintf(path, sizeof path, "%s", clnorm_param_file(ctx));
    clnorm_context_release(ctx);
    write_file(path, text, strlen(text));

    ctx = context_in(dir, &log);
    long v;
    CLNORM_OK_(ctx, clnorm_get_param(ctx, "vector_width", &v));
    cr_assert_eq(v, vw);
    CLNORM_OK_(ctx, clnorm_get_param(ctx, "item_tile", &v));
    cr_assert_eq(v, it);
    for (size_t i = 0; clnorm_param_name(i); i++) {
        const char *name = clnorm_param_name(i);
        int in_file = !strcmp(name, "vector_width") || !strcmp(name, "item_tile");
        cr_assert_str_eq(clnorm_param_source(ctx, name), in_file ? "file" : "table", "%s", name);
    }
    cr_assert_eq(log.warnings, 0, "%s", log.last_warning);
    clnorm_context_release(ctx);
    remove_tree(dir);
}

Test(params, clnorm_params_and_set_param_win_over_the_file)
{
    char dir[512], header[1024], text[2048];
    make_temp_dir(dir, sizeof dir);
    header_for_device(header, sizeof header);
    log_record log;
    clnorm_context *ctx = context_in(dir, &log);
    char path[2048];
    snprintf(path, sizeof path, "%s", clnorm_param_file(ctx));
    clnorm_context_release(ctx);
    snprintf(text, sizeof text, "%s\nvector_width=4\nitem_tile=2\nblock_vectors=2\nend\n", header);
    write_file(path, text, strlen(text));

    setenv("CLNORM_PARAMS", "vector_width=2", 1);
    ctx = context_in(dir, &log);
    long v;
    CLNORM_OK_(ctx, clnorm_get_param(ctx, "vector_width", &v));
    cr_assert_eq(v, 2, "CLNORM_PARAMS wins over the file");
    cr_assert_str_eq(clnorm_param_source(ctx, "vector_width"), "environment");
    CLNORM_OK_(ctx, clnorm_get_param(ctx, "item_tile", &v));
    cr_assert_eq(v, 2);
    cr_assert_str_eq(clnorm_param_source(ctx, "item_tile"), "file");
    CLNORM_OK_(ctx, clnorm_set_param(ctx, "item_tile", 4));
    CLNORM_OK_(ctx, clnorm_get_param(ctx, "item_tile", &v));
    cr_assert_eq(v, 4, "clnorm_set_param wins over the file");
    cr_assert_str_eq(clnorm_param_source(ctx, "item_tile"), "set");
    CLNORM_OK_(ctx, clnorm_set_param(ctx, "vector_width", 1));
    cr_assert_str_eq(clnorm_param_source(ctx, "vector_width"), "set");
    cr_assert_str_eq(clnorm_param_source(ctx, "block_vectors"), "file");
    /* a rejected clnorm_set_param leaves value and source alone */
    cr_assert_eq(clnorm_set_param(ctx, "block_vectors", 99), CLNORM_INVALID_ARGUMENT);
    CLNORM_OK_(ctx, clnorm_get_param(ctx, "block_vectors", &v));
    cr_assert_eq(v, 2);
    cr_assert_str_eq(clnorm_param_source(ctx, "block_vectors"), "file");
    cr_assert_eq(log.warnings, 0, "%s", log.last_warning);
    clnorm_context_release(ctx);
    unsetenv("CLNORM_PARAMS");
    remove_tree(dir);
}

/* ---- files that are ignored as a whole -------------------------------------------------------- */

/* Writes `text` as the device's parameter file; a new context must keep the table's values for
 * every parameter, log one warning naming the file, and no error. */
static void expect_ignored(const char *dir, const char *path, const char *text, size_t size,
                           const char *label, const char *reason)
{
    write_file(path, text, size);
    log_record log;
    clnorm_context *ctx = context_in(dir, &log);
    expect_table_values(ctx, label);
    cr_assert_eq(log.warnings, 1, "%s: one warning (got %d)", label, log.warnings);
    cr_assert(strstr(log.last_warning, path) && strstr(log.last_warning, "ignored"),
              "%s: the warning names the file: %s", label, log.last_warning);
    if (reason)
        cr_assert(strstr(log.last_warning, reason), "%s: the warning says \"%s\": %s", label,
                  reason, log.last_warning);
    cr_assert_eq(log.errors, 0, "%s: no error", label);
    cr_assert_str_eq(clnorm_last_error(ctx), "");
    clnorm_context_release(ctx);
}

Test(params, malformed_foreign_and_out_of_range_files_are_ignored_entirely)
{
    char dir[512], header[1024];
    make_temp_dir(dir, sizeof dir);
    header_for_device(header, sizeof header);
    log_record log;
    clnorm_context *ctx = context_in(dir, &log);
    char path[2048];
    snprintf(path, sizeof path, "%s", clnorm_param_file(ctx));
    long table_vw;
    CLNORM_OK_(ctx, clnorm_get_default_param(ctx, "vector_width", &table_vw));
    clnorm_context_release(ctx);
    long vw = table_vw == 2 ? 4 : 2; /* valid, and not the table's: applied if the file were */

    clnorm_device_info info;
    test_device_info(&info);
    char other_device[1024], other_driver[1024], other_library[1024], other_format[1024];
    snprintf(other_device, sizeof other_device,
             "clnorm-params 1 library=%s device=\"%s (another)\" driver=\"%s\"",
             CLNORM_VERSION_STRING, info.name, info.driver_version);
    snprintf(other_driver, sizeof other_driver,
             "clnorm-params 1 library=%s device=\"%s\" driver=\"%s.1\"", CLNORM_VERSION_STRING,
             info.name, info.driver_version);
    snprintf(other_library, sizeof other_library,
             "clnorm-params 1 library=%s.99 device=\"%s\" driver=\"%s\"", CLNORM_VERSION_STRING,
             info.name, info.driver_version);
    snprintf(other_format, sizeof other_format,
             "clnorm-params 2 library=%s device=\"%s\" driver=\"%s\"", CLNORM_VERSION_STRING,
             info.name, info.driver_version);

    static const struct {
        int header; /* 0: this device's, 1..4: the foreign headers above, 5: none */
        const char *body;
        const char *reason;
        const char *label;
    } cases[] = {
        {0, "vector_width=%ld\nitem_tile=0\nend\n", "out of range", "out of range (last line)"},
        {0, "vector_width=%ld\nblock_vectors=9\nend\n", "out of range", "block_vectors 9"},
        {0, "vector_width=%ld\nvector_width=3\nend\n", "twice", "a parameter twice"},
        {0, "vector_width=%ld\nwork_group_size=-4\nend\n", "out of range", "negative"},
        {0, "vector_width=%ld\npartials_per_channel=99999999999999999999\nend\n", "integer",
         "overflow"},
        {0, "vector_width=%ld\nitems_per_thread=4x\nend\n", "integer", "not an integer"},
        {0, "vector_width=%ld\nitems_per_thread=\nend\n", "integer", "empty value"},
        {0, "vector_width=%ld\nitems_per_thread 4\nend\n", "name=value", "no '='"},
        {0, "vector_width=%ld\nno_such_param=4\nend\n", "unknown parameter", "unknown name"},
        {0, "vector_width=%ld\n", "truncated", "no end line"},
        {0, "vector_width=%ld\nend\nitem_tile=2\n", "after", "text after end"},
        {1, "vector_width=%ld\nend\n", "device or driver", "another device"},
        {2, "vector_width=%ld\nend\n", "device or driver", "another driver"},
        {3, "vector_width=%ld\nend\n", "library version", "another library version"},
        {4, "vector_width=%ld\nend\n", "format version", "format 2"},
        {5, "vector_width=%ld\nend\n", "not a clnorm parameter file", "no header"},
    };
    const char *headers[] = {header, other_device, other_driver, other_library, other_format, ""};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char body[512], text[4096];
        snprintf(body, sizeof body, cases[i].body, vw);
        snprintf(text, sizeof text, "%s%s%s", headers[cases[i].header],
                 cases[i].header == 5 ? "" : "\n", body);
        expect_ignored(dir, path, text, strlen(text), cases[i].label, cases[i].reason);
    }
    /* not text, and too large */
    static const char binary[] = "clnorm-params 1\0garbage\n";
    expect_ignored(dir, path, binary, sizeof binary - 1, "a NUL byte", "NUL");
    size_t big = 70000;
    char *huge = malloc(big);
    cr_assert_not_null(huge);
    int h = snprintf(huge, big, "%s\n", header);
    memset(huge + h, '#', big - (size_t)h);
    for (size_t i = (size_t)h + 100; i < big; i += 100)
        huge[i] = '\n';
    expect_ignored(dir, path, huge, big, "over 64 KiB", "larger");
    free(huge);
    expect_ignored(dir, path, "", 0, "empty file", "empty");
    remove_tree(dir);
}

Test(params, every_truncation_of_a_valid_file_is_ignored)
{
    char dir[512];
    make_temp_dir(dir, sizeof dir);
    log_record log;
    clnorm_context *ctx = context_in(dir, &log);
    size_t n = param_count();
    long table[64], other[64];
    other_values(ctx, table, other);
    for (size_t i = 0; i < n; i++)
        CLNORM_OK_(ctx, clnorm_set_param(ctx, clnorm_param_name(i), other[i]));
    CLNORM_OK_(ctx, clnorm_save_params(ctx, NULL, NULL));
    char path[2048];
    snprintf(path, sizeof path, "%s", clnorm_param_file(ctx));
    clnorm_context_release(ctx);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    char text[8192];
    size_t size = fread(text, 1, sizeof text, f);
    fclose(f);
    cr_assert(size > 10 && size < sizeof text && memcmp(text + size - 5, "\nend\n", 5) == 0,
              "the file ends with an end line");
    /* every prefix that cuts into or before the "end" line (the full file, and the full file less
     * its last newline, are valid) */
    for (size_t cut = 0; cut + 1 < size; cut++) {
        char label[64];
        snprintf(label, sizeof label, "first %zu of %zu bytes", cut, size);
        expect_ignored(dir, path, text, cut, label, NULL);
    }
    /* and the whole file is applied */
    write_file(path, text, size);
    ctx = context_in(dir, &log);
    for (size_t i = 0; i < n; i++)
        cr_assert_str_eq(clnorm_param_source(ctx, clnorm_param_name(i)), "file");
    clnorm_context_release(ctx);
    remove_tree(dir);
}

Test(params, save_reports_unwritable_paths)
{
    char dir[512], path[1024];
    make_temp_dir(dir, sizeof dir);
    log_record log;
    clnorm_context *ctx = context_in(dir, &log);
    snprintf(path, sizeof path, "%s/no/such/folder/params.txt", dir);
    cr_assert_eq(clnorm_save_params(ctx, path, NULL), CLNORM_IO_ERROR);
    cr_assert(strstr(clnorm_last_error(ctx), path), "%s", clnorm_last_error(ctx));
    cr_assert_eq(clnorm_save_params(ctx, "", NULL), CLNORM_INVALID_ARGUMENT);
    /* an explicit path: written, and valid for this device when copied into place */
    snprintf(path, sizeof path, "%s/elsewhere.txt", dir);
    CLNORM_OK_(ctx, clnorm_save_params(ctx, path, "copied by hand"));
    cr_assert_eq(rename(path, clnorm_param_file(ctx)), 0);
    clnorm_context_release(ctx);
    ctx = context_in(dir, &log);
    cr_assert_eq(log.warnings, 0, "%s", log.last_warning);
    for (size_t i = 0; clnorm_param_name(i); i++)
        cr_assert_str_eq(clnorm_param_source(ctx, clnorm_param_name(i)), "file");
    clnorm_context_release(ctx);
    remove_tree(dir);
}

/* Per-device parameters: the built-in table (vendor -> architecture -> device name -> default),
 * the device's parameter file in the disk cache folder (written by clnorm-tune), CLNORM_PARAMS and
 * clnorm_set_param, in that order of precedence. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

/* A row applies when every non-NULL field is a case-insensitive substring of the device's
 * vendor, of its version string (which names the architecture on PoCL and Mesa), of its name, and
 * when its type matches. The first row that applies wins: keep specific rows above generic ones.
 * Values come from measurements (field notes §3); 0 for partials_per_channel means "enough
 * work-groups for the compute units". */
typedef struct param_row {
    const char *vendor, *arch, *device;
    cl_device_type type;
    device_params params;
} param_row;

static const param_row param_rows[] = {
    /* PoCL on CPUs: barriers are costly, so one work-item per work-group with long vector loops.
     * An elementwise chunk as one stream where PoCL targets AVX-512: on the 2-core AVX-512
     * machine (an AMD EPYC VM), in-process A/B, 3 rounds, 112 batch-norm rows: inference
     * 0.79-0.98x the time of two streams on 32 of 36 rows (0.99-1.10x on 4), training forward
     * and backward 0.83-1.19x, median 1.00. Two streams elsewhere: a copy kernel on the AVX2
     * machine of the earlier runs moved 1.1-1.3x the bytes per second so. */
    {NULL, "pthread", "avx512", CL_DEVICE_TYPE_CPU, {1, 8, 1, 0, 8, 8, 8, 32, 16, 1, 0, 0, 0, 1, 0, 0, 0}},
    {NULL, "pthread", NULL, CL_DEVICE_TYPE_CPU, {1, 8, 1, 0, 8, 8, 8, 32, 16, 1, 0, 0, 0, 2, 0, 0, 0}},
    /* NVIDIA: work-groups of 128 took 0.83-1.00x the time of 256 on all 18 batch-norm rows of an
     * in-process A/B on an H200 (bench/results/nvidia-h200-2026-11-27-sweep.txt). Register
     * kernels of 8 vectors per work-item, against 16, took 0.51-0.75x the time on 13 of 26
     * rows (N64, N32 C2048 7x7 and N8 C1024/C2048 channels-first; N32 C2048 channels-last, which
     * then takes the general path; layer and RMS norm 16384x4096, 65536x1024, also with the
     * residual) and 1.07-1.35x on 6, where a row or channel no longer fits (N8 C512 28x28, layer
     * and RMS norm 4096x8192) or takes fewer lanes (N8 C1024/C2048 channels-last); geometric
     * mean 0.84x (-run3-sweep-register.txt). The short build of 4 vectors (for runs that hold
     * no more): without it, the rows it serves took 1.24-1.48x the time (layer/RMS norm
     * 65536x1024 forward, channels-first N8 and N32 C2048 7x7 training forward;
     * -run5-short-units.txt); a GPU allocates registers for the most a kernel may hold.
     * gather_units 1: 4 took 1.06-1.47x the time of 1 on the N64 C64 112x112 rows, 2 0.91-1.12x
     * with no direction (-run4-sweep.txt). From 2026-11-28 (-run6-sweep.txt, -run7-block-sweep.txt):
     * register_backward 1 and cached_kib 64 took layer and RMS norm backward 0.48-0.69x the time
     * and the 4096x8192 forward 0.70x, other rows 0.98-1.03x; block_vectors 4 took channels-first
     * training forward of N64 C64-C1024 0.79-0.87x, its backward 1.02-1.04x (N8 C512 28x28
     * 1.11x), other rows 0.97-1.03x. */
    {"NVIDIA", NULL, NULL, CL_DEVICE_TYPE_GPU, {128, 4, 4, 0, 32, 4, 1, 1, 8, 1, 4, 1, 64, 2, 0, 0, 0}},
    /* AMD (unmeasured on a device): register kernels of 8 vectors, not 16, from LLVM's own
     * allocation for gfx90a (tools/kernel-resources.py): at 16, bn_forward_channel takes 256
     * VGPRs and spills 16 more (one wave per SIMD), at 8 it takes 143 (3 waves). */
    {"Advanced Micro Devices", NULL, NULL, CL_DEVICE_TYPE_GPU, {256, 4, 4, 0, 32, 1, 1, 1, 8, 1, 0, 0, 0, 2, 0, 0, 0}},
    {"Intel", NULL, NULL, CL_DEVICE_TYPE_GPU, {128, 4, 2, 0, 16, 1, 1, 1, 16, 1, 0, 0, 0, 2, 0, 0, 0}},
    {NULL, NULL, NULL, CL_DEVICE_TYPE_CPU, {1, 8, 1, 0, 8, 8, 8, 32, 16, 1, 0, 0, 0, 2, 0, 0, 0}},
    {NULL, NULL, NULL, 0, {128, 4, 2, 0, 16, 1, 1, 1, 16, 1, 0, 0, 0, 2, 0, 0, 0}},
};

static const char *const param_names[] = {
#define PARAM_NAME_(name, text) #name,
    CLNORM_PARAM_TABLE(PARAM_NAME_)
#undef PARAM_NAME_
};

int params_index(const char *name)
{
    for (size_t i = 0; i < ARRAY_SIZE(param_names); i++)
        if (name && strcmp(name, param_names[i]) == 0)
            return (int)i;
    return -1;
}

long *params_field(device_params *p, int index)
{
    long *fields[] = {
#define PARAM_ADDR_(name, text) &p->name,
        CLNORM_PARAM_TABLE(PARAM_ADDR_)
#undef PARAM_ADDR_
    };
    return fields[index];
}

static bool field_matches(const char *pattern, const char *value)
{
    if (!pattern)
        return true;
    size_t n = strlen(pattern);
    for (const char *p = value; *p; p++)
        if (strncasecmp(p, pattern, n) == 0)
            return true;
    return false;
}

static bool value_allowed(int index, long value)
{
    if (index == params_index("vector_width"))
        return value == 1 || value == 2 || value == 4 || value == 8;
    if (index == params_index("partials_per_channel"))
        return value >= 0 && value <= 65536;
    if (index == params_index("block_vectors"))
        return value >= 1 && value <= 8;
    if (index == params_index("item_tile"))
        return value >= 1 && value <= 16;
    if (index == params_index("plane_tile"))
        return value >= 1 && value <= 64;
    if (index == params_index("register_units"))
        return value >= 0 && value <= 32;
    if (index == params_index("gather_units"))
        return value >= 1 && value <= 8;
    if (index == params_index("register_short_units"))
        return value >= 0 && value <= 32;
    if (index == params_index("register_backward"))
        return value == 0 || value == 1;
    if (index == params_index("cached_kib"))
        return value >= 0 && value <= 1024;
    if (index == params_index("elementwise_streams"))
        return value == 1 || value == 2;
    if (index == params_index("flat_planes"))
        return value == 0 || value == 1;
    if (index == params_index("row_block"))
        return value == 0 || value == 2 || value == 4 || value == 8;
    if (index == params_index("rows_cached_kib"))
        return value >= 0 && value <= 16 * 1024 * 1024;
    return value >= 1 && value <= 65536;
}

long stats_block_vectors(const device_params *p)
{
    /* vector_width is 1 or a power of two: only 1 can give blocks of an odd number of values */
    return p->vector_width == 1 && p->block_vectors % 2 ? p->block_vectors + 1 : p->block_vectors;
}

long short_register_units(const device_params *p)
{
    return p->register_short_units < p->register_units ? p->register_short_units : 0;
}

clnorm_status params_set(clnorm_context *ctx, device_params *p, const char *name, long value)
{
    int index = params_index(name);
    if (!name)
        return set_error(ctx, CLNORM_INVALID_ARGUMENT, "name is NULL");
    if (index < 0)
        return set_error(ctx, CLNORM_INVALID_ARGUMENT, "unknown device parameter \"%s\"", name);
    if (!value_allowed(index, value))
        return set_error(ctx, CLNORM_INVALID_ARGUMENT, "device parameter %s = %ld is out of range",
                         name, value);
    *params_field(p, index) = value;
    return CLNORM_OK;
}

/* Applies "name=value,name=value" from CLNORM_PARAMS. */
static clnorm_status apply_environment(clnorm_context *ctx, device_params *p)
{
    const char *env = getenv("CLNORM_PARAMS");
    if (!env || !*env)
        return CLNORM_OK;
    char copy[512];
    copy_message(copy, sizeof copy, env);
    for (char *save = NULL, *item = strtok_r(copy, ",", &save); item;
         item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        char *end = NULL;
        if (eq) {
            *eq = '\0';
            long value = strtol(eq + 1, &end, 10);
            if (end != eq + 1 && *end == '\0') {
                clnorm_status status = params_set(ctx, p, item, value);
                if (status != CLNORM_OK)
                    return status;
                ctx->param_origin[params_index(item)] = PARAM_FROM_ENV;
                continue;
            }
        }
        return set_error(ctx, CLNORM_INVALID_ARGUMENT,
                         "CLNORM_PARAMS entry \"%s\" is not name=integer", item);
    }
    return CLNORM_OK;
}

/* ---- the parameter file ----------------------------------------------------------------------
 * Line 1: the header of format_header (format version, library version, device name, driver).
 * Then "name=value" lines (any subset of the parameters, each at most once), "#" comments and blank
 * lines, and a last line "end" (so that a truncated file is recognisably incomplete). */
#define PARAM_FILE_MAGIC "clnorm-params"
#define PARAM_FILE_FORMAT 1
#define PARAM_FILE_MAX_BYTES 65536

static const char *const origin_names[] = {"table", "file", "environment", "set"};

/* Device strings go into the header between quotes: no quotes or control characters there. */
static void header_field(const char *in, char *out, size_t size)
{
    size_t i = 0;
    for (; in[i] && i + 1 < size; i++)
        out[i] = (in[i] == '"' || (unsigned char)in[i] < 0x20) ? '?' : in[i];
    out[i] = '\0';
}

static void format_header(const clnorm_context *ctx, char *out, size_t size)
{
    char name[128], driver[128];
    header_field(ctx->dev.name, name, sizeof name);
    header_field(ctx->dev.driver_version, driver, sizeof driver);
    snprintf(out, size, PARAM_FILE_MAGIC " %d library=%s device=\"%s\" driver=\"%s\"",
             PARAM_FILE_FORMAT, CLNORM_VERSION_STRING, name, driver);
}

/* Why a header that is not this context's was rejected. */
static void explain_header(const clnorm_context *ctx, const char *line, char *why, size_t size)
{
    const size_t magic_len = strlen(PARAM_FILE_MAGIC);
    char expected[512], library[64];
    format_header(ctx, expected, sizeof expected);
    snprintf(library, sizeof library, " library=%s ", CLNORM_VERSION_STRING);
    if (strncmp(line, PARAM_FILE_MAGIC " ", magic_len + 1) != 0) {
        snprintf(why, size, "not a clnorm parameter file (its first line is not \"%s ...\")",
                 PARAM_FILE_MAGIC);
        return;
    }
    char *end = NULL;
    long format = strtol(line + magic_len + 1, &end, 10);
    if (end == line + magic_len + 1 || format != PARAM_FILE_FORMAT)
        snprintf(why, size, "format version \"%.16s\" (this library reads %d)",
                 line + magic_len + 1, PARAM_FILE_FORMAT);
    else if (strncmp(end, library, strlen(library)) != 0)
        snprintf(why, size, "written by library version %.*s (this is %s)",
                 strncmp(end, " library=", 9) == 0 ? (int)strcspn(end + 9, " ") : 1,
                 strncmp(end, " library=", 9) == 0 ? end + 9 : "?", CLNORM_VERSION_STRING);
    else
        snprintf(why, size, "written for another device or driver (the file: %.200s; this one: "
                 "%.200s)", end + strlen(library), strstr(expected, library) + strlen(library));
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

/* Parses the whole file into *p (which holds the table's values) and marks the parameters it
 * sets in `given`. Returns false with the reason in `why` at the first problem. */
static bool parse_param_file(const clnorm_context *ctx, char *text, device_params *p,
                             bool *given, char *why, size_t why_size)
{
    char expected[512];
    format_header(ctx, expected, sizeof expected);
    bool ended = false;
    int line_no = 0;
    for (char *line = text, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        else if (!*line)
            break; /* the text ended with a newline */
        line_no++;
        size_t len = strlen(line);
        if (len > 0 && line[len - 1] == '\r')
            line[len - 1] = '\0';
        if (line_no == 1) {
            if (strcmp(line, expected) != 0) {
                explain_header(ctx, line, why, why_size);
                return false;
            }
            continue;
        }
        char *item = trim(line);
        if (ended) {
            if (*item) {
                snprintf(why, why_size, "line %d: text after the \"end\" line", line_no);
                return false;
            }
            continue;
        }
        if (!*item || *item == '#')
            continue;
        if (strcmp(item, "end") == 0) {
            ended = true;
            continue;
        }
        char *eq = strchr(item, '=');
        if (!eq) {
            snprintf(why, why_size, "line %d: \"%.60s\" is not name=value", line_no, item);
            return false;
        }
        *eq = '\0';
        char *name = trim(item), *digits = trim(eq + 1), *end = NULL;
        int index = params_index(name);
        if (index < 0) {
            snprintf(why, why_size, "line %d: unknown parameter \"%.60s\"", line_no, name);
            return false;
        }
        if (given[index]) {
            snprintf(why, why_size, "line %d: %s is given twice", line_no, name);
            return false;
        }
        errno = 0;
        long value = strtol(digits, &end, 10);
        if (end == digits || *end || errno == ERANGE) {
            snprintf(why, why_size, "line %d: %s = \"%.40s\" is not an integer", line_no, name,
                     digits);
            return false;
        }
        if (!value_allowed(index, value)) {
            snprintf(why, why_size, "line %d: %s = %ld is out of range", line_no, name, value);
            return false;
        }
        *params_field(p, index) = value;
        given[index] = true;
    }
    if (line_no == 0) {
        snprintf(why, why_size, "empty");
        return false;
    }
    if (!ended) {
        snprintf(why, why_size, "truncated (no \"end\" line)");
        return false;
    }
    return true;
}

/* Applies ctx->param_file when it exists and is valid as a whole; otherwise warns and applies
 * nothing. */
static void apply_param_file(clnorm_context *ctx)
{
    const char *path = ctx->param_file;
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno != ENOENT)
            log_warning(ctx, "parameter file %s ignored: it cannot be opened (errno %d)", path, errno);
        return;
    }
    char why[640] = "";
    char *text = malloc(PARAM_FILE_MAX_BYTES + 1);
    size_t size = text ? fread(text, 1, PARAM_FILE_MAX_BYTES + 1, f) : 0;
    bool read_failed = !text || ferror(f);
    fclose(f);
    device_params p = ctx->params;
    bool given[DEVICE_PARAM_COUNT] = {false};
    if (read_failed)
        snprintf(why, sizeof why, "it could not be read");
    else if (size > PARAM_FILE_MAX_BYTES)
        snprintf(why, sizeof why, "larger than %d bytes", PARAM_FILE_MAX_BYTES);
    else if (memchr(text, '\0', size))
        snprintf(why, sizeof why, "not a text file (it holds a NUL byte)");
    if (!why[0]) {
        text[size] = '\0';
        if (parse_param_file(ctx, text, &p, given, why, sizeof why)) {
            ctx->params = p;
            for (int i = 0; i < DEVICE_PARAM_COUNT; i++)
                if (given[i])
                    ctx->param_origin[i] = PARAM_FROM_FILE;
            log_info(ctx, "device parameters from %s", path);
        }
    }
    free(text);
    if (why[0])
        log_warning(ctx, "parameter file %s ignored: %s; using the built-in parameters", path, why);
}

clnorm_status params_for_device(clnorm_context *ctx)
{
    const device_facts *dev = &ctx->dev;
    for (size_t i = 0; i < ARRAY_SIZE(param_rows); i++) {
        const param_row *row = &param_rows[i];
        if (field_matches(row->vendor, dev->vendor) && field_matches(row->arch, dev->version) &&
            field_matches(row->device, dev->name) && (!row->type || (row->type & dev->type))) {
            ctx->params = row->params;
            break;
        }
    }
    ctx->table_params = ctx->params;
    memset(ctx->param_origin, PARAM_FROM_TABLE, sizeof ctx->param_origin);
    ctx->param_file[0] = '\0';
    if (ctx->cache_dir[0]) {
        snprintf(ctx->param_file, sizeof ctx->param_file, "%s/params-%016llx.txt",
                 ctx->cache_dir, (unsigned long long)ctx->dev_hash);
        apply_param_file(ctx);
    }
    return apply_environment(ctx, &ctx->params);
}

clnorm_status clnorm_set_param(clnorm_context *ctx, const char *name, long value)
{
    if (!ctx)
        return CLNORM_INVALID_ARGUMENT;
    context_begin_call(ctx);
    clnorm_status status = params_set(ctx, &ctx->params, name, value);
    if (status == CLNORM_OK)
        ctx->param_origin[params_index(name)] = PARAM_FROM_SET;
    context_unlock(ctx);
    return status;
}

/* clnorm_get_param and clnorm_get_default_param: the value of `name` in *from. */
static clnorm_status get_param_of(clnorm_context *ctx, const device_params *from,
                                  const char *name, long *value)
{
    if (!ctx)
        return CLNORM_INVALID_ARGUMENT;
    context_begin_call(ctx);
    clnorm_status status = CLNORM_OK;
    int index = params_index(name);
    if (!value)
        status = set_error(ctx, CLNORM_INVALID_ARGUMENT, "value is NULL");
    else if (!name)
        status = set_error(ctx, CLNORM_INVALID_ARGUMENT, "name is NULL");
    else if (index < 0)
        status = set_error(ctx, CLNORM_INVALID_ARGUMENT, "unknown device parameter \"%s\"", name);
    else
        *value = *params_field((device_params *)from, index);
    context_unlock(ctx);
    return status;
}

clnorm_status clnorm_get_param(clnorm_context *ctx, const char *name, long *value)
{
    return get_param_of(ctx, ctx ? &ctx->params : NULL, name, value);
}

const char *clnorm_param_name(size_t index)
{
    return index < ARRAY_SIZE(param_names) ? param_names[index] : NULL;
}

clnorm_status clnorm_get_default_param(clnorm_context *ctx, const char *name, long *value)
{
    return get_param_of(ctx, ctx ? &ctx->table_params : NULL, name, value);
}

const char *clnorm_param_source(clnorm_context *ctx, const char *name)
{
    int index = params_index(name);
    if (!ctx || index < 0)
        return NULL;
    context_lock(ctx);
    const char *source = origin_names[ctx->param_origin[index]];
    context_unlock(ctx);
    return source;
}

const char *clnorm_param_file(const clnorm_context *ctx)
{
    return ctx ? ctx->param_file : "";
}

clnorm_status clnorm_save_params(clnorm_context *ctx, const char *path, const char *comment)
{
    if (!ctx)
        return CLNORM_INVALID_ARGUMENT;
    context_begin_call(ctx);
    clnorm_status status = CLNORM_OK;
    char tmp[CLNORM_PATH_SIZE + 80], header[512];
    const char *target = path ? path : ctx->param_file;
    FILE *f = NULL;
    int fd = -1;
    tmp[0] = '\0';
    if (!target[0]) {
        status = set_error(ctx, CLNORM_INVALID_ARGUMENT,
                           path ? "path is empty"
                                : "the context has no disk cache folder: give a path");
        goto done;
    }
    if (strlen(target) >= CLNORM_PATH_SIZE + 64) {
        status = set_error(ctx, CLNORM_INVALID_ARGUMENT, "path is too long");
        goto done;
    }
    /* written next to the target, then renamed over it: readers see the old or the new file */
    snprintf(tmp, sizeof tmp, "%s.XXXXXX", target);
    fd = mkstemp(tmp);
    if (fd < 0) {
        status = set_error(ctx, CLNORM_IO_ERROR, "cannot create a file next to %s (errno %d)",
                           target, errno);
        tmp[0] = '\0';
        goto done;
    }
    f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        status = set_error(ctx, CLNORM_IO_ERROR, "cannot write %s (errno %d)", tmp, errno);
        goto done;
    }
    format_header(ctx, header, sizeof header);
    bool ok = fprintf(f, "%s\n", header) > 0;
    for (const char *c = comment; ok && c && *c;) {
        size_t n = strcspn(c, "\n");
        ok = fprintf(f, "# %.*s\n", (int)n, c) > 0;
        c += n + (c[n] == '\n');
    }
    for (int i = 0; ok && i < DEVICE_PARAM_COUNT; i++)
        ok = fprintf(f, "%s=%ld\n", param_names[i], *params_field(&ctx->params, i)) > 0;
    ok = ok && fprintf(f, "end\n") > 0;
    ok = (fclose(f) == 0) && ok;
    if (!ok || chmod(tmp, 0644) != 0 || rename(tmp, target) != 0) {
        status = set_error(ctx, CLNORM_IO_ERROR, "cannot write %s (errno %d)", target, errno);
        goto done;
    }
    tmp[0] = '\0';
done:
    if (tmp[0])
        unlink(tmp);
    context_unlock(ctx);
    return status;
}

/* Per-device parameter table (vendor -> architecture -> device name -> default) and overrides. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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
    /* PoCL on CPUs: barriers are costly, so one work-item per work-group with long vector loops. */
    {NULL, "pthread", NULL, CL_DEVICE_TYPE_CPU, {1, 8, 1, 0, 8, 4, 8}},
    {"NVIDIA", NULL, NULL, CL_DEVICE_TYPE_GPU, {256, 4, 4, 0, 32, 1, 1}},
    {"Advanced Micro Devices", NULL, NULL, CL_DEVICE_TYPE_GPU, {256, 4, 4, 0, 32, 1, 1}},
    {"Intel", NULL, NULL, CL_DEVICE_TYPE_GPU, {128, 4, 2, 0, 16, 1, 1}},
    {NULL, NULL, NULL, CL_DEVICE_TYPE_CPU, {1, 8, 1, 0, 8, 4, 8}},
    {NULL, NULL, NULL, 0, {128, 4, 2, 0, 16, 1, 1}},
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
    return value >= 1 && value <= 65536;
}

clnorm_status params_set(clnorm_context *ctx, device_params *p, const char *name, long value)
{
    int index = params_index(name);
    if (index < 0)
        return set_error(ctx, CLNORM_INVALID_ARGUMENT, "unknown device parameter \"%s\"",
                         name ? name : "(null)");
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
                continue;
            }
        }
        return set_error(ctx, CLNORM_INVALID_ARGUMENT,
                         "CLNORM_PARAMS entry \"%s\" is not name=integer", item);
    }
    return CLNORM_OK;
}

clnorm_status params_for_device(clnorm_context *ctx, const device_facts *dev, device_params *out)
{
    for (size_t i = 0; i < ARRAY_SIZE(param_rows); i++) {
        const param_row *row = &param_rows[i];
        if (field_matches(row->vendor, dev->vendor) && field_matches(row->arch, dev->version) &&
            field_matches(row->device, dev->name) && (!row->type || (row->type & dev->type))) {
            *out = row->params;
            break;
        }
    }
    return apply_environment(ctx, out);
}

clnorm_status clnorm_set_param(clnorm_context *ctx, const char *name, long value)
{
    if (!ctx)
        return CLNORM_INVALID_ARGUMENT;
    context_begin_call(ctx);
    clnorm_status status = params_set(ctx, &ctx->params, name, value);
    context_unlock(ctx);
    return status;
}

clnorm_status clnorm_get_param(clnorm_context *ctx, const char *name, long *value)
{
    if (!ctx)
        return CLNORM_INVALID_ARGUMENT;
    context_begin_call(ctx);
    clnorm_status status = CLNORM_OK;
    int index = params_index(name);
    if (!value)
        status = set_error(ctx, CLNORM_INVALID_ARGUMENT, "value is NULL");
    else if (index < 0)
        status = set_error(ctx, CLNORM_INVALID_ARGUMENT, "unknown device parameter \"%s\"",
                           name ? name : "(null)");
    else
        *value = *params_field(&ctx->params, index);
    context_unlock(ctx);
    return status;
}

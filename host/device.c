/* Platform and device discovery, the device selector, and device facts. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

#define MAX_PLATFORMS 16
#define MAX_DEVICES 64

/* Every (platform, device) pair, in platform then device order. */
typedef struct device_list {
    size_t count;
    struct {
        unsigned platform_index, device_index;
        cl_platform_id platform;
        cl_device_id device;
    } items[MAX_DEVICES];
} device_list;

static void enumerate_devices(device_list *list)
{
    cl_platform_id platforms[MAX_PLATFORMS];
    cl_uint num_platforms = 0;
    list->count = 0;
    if (clGetPlatformIDs(MAX_PLATFORMS, platforms, &num_platforms) != CL_SUCCESS)
        return;
    if (num_platforms > MAX_PLATFORMS)
        num_platforms = MAX_PLATFORMS;
    for (cl_uint p = 0; p < num_platforms; p++) {
        cl_device_id devices[MAX_DEVICES];
        cl_uint num_devices = 0;
        if (clGetDeviceIDs(platforms[p], CL_DEVICE_TYPE_ALL, MAX_DEVICES, devices, &num_devices) !=
            CL_SUCCESS)
            continue;
        for (cl_uint d = 0; d < num_devices && d < MAX_DEVICES && list->count < MAX_DEVICES; d++) {
            list->items[list->count].platform_index = p;
            list->items[list->count].device_index = d;
            list->items[list->count].platform = platforms[p];
            list->items[list->count].device = devices[d];
            list->count++;
        }
    }
}

static void get_string(cl_device_id device, cl_device_info what, char *out, size_t size)
{
    out[0] = '\0';
    if (clGetDeviceInfo(device, what, size, out, NULL) != CL_SUCCESS)
        out[0] = '\0';
    out[size - 1] = '\0';
}

static void get_platform_string(cl_platform_id platform, cl_platform_info what, char *out,
                                size_t size)
{
    out[0] = '\0';
    if (clGetPlatformInfo(platform, what, size, out, NULL) != CL_SUCCESS)
        out[0] = '\0';
    out[size - 1] = '\0';
}

clnorm_status device_query_facts(cl_device_id device, device_facts *facts)
{
    memset(facts, 0, sizeof *facts);
    cl_uint units = 0;
    cl_ulong local = 0, alloc = 0, global = 0;
    if (clGetDeviceInfo(device, CL_DEVICE_PLATFORM, sizeof facts->platform, &facts->platform,
                        NULL) != CL_SUCCESS ||
        clGetDeviceInfo(device, CL_DEVICE_TYPE, sizeof facts->type, &facts->type, NULL) !=
            CL_SUCCESS ||
        clGetDeviceInfo(device, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof units, &units, NULL) !=
            CL_SUCCESS ||
        clGetDeviceInfo(device, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof facts->max_work_group_size,
                        &facts->max_work_group_size, NULL) != CL_SUCCESS ||
        clGetDeviceInfo(device, CL_DEVICE_LOCAL_MEM_SIZE, sizeof local, &local, NULL) !=
            CL_SUCCESS ||
        clGetDeviceInfo(device, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof alloc, &alloc, NULL) !=
            CL_SUCCESS ||
        clGetDeviceInfo(device, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof global, &global, NULL) !=
            CL_SUCCESS)
        return CLNORM_OPENCL_ERROR;
    /* optional: 0 when the device does not report it */
    if (clGetDeviceInfo(device, CL_DEVICE_GLOBAL_MEM_CACHE_SIZE, sizeof facts->cache_bytes,
                        &facts->cache_bytes, NULL) != CL_SUCCESS)
        facts->cache_bytes = 0;
    /* optional too: without it, a division or square root may be off by a few ulp */
    cl_device_fp_config fp = 0;
    if (clGetDeviceInfo(device, CL_DEVICE_SINGLE_FP_CONFIG, sizeof fp, &fp, NULL) != CL_SUCCESS)
        fp = 0;
    facts->correct_div_sqrt = (fp & CL_FP_CORRECTLY_ROUNDED_DIVIDE_SQRT) != 0;
    facts->compute_units = units;
    facts->local_mem_bytes = local;
    facts->max_alloc_bytes = alloc;
    facts->global_mem_bytes = global;
    get_string(device, CL_DEVICE_NAME, facts->name, sizeof facts->name);
    get_string(device, CL_DEVICE_VENDOR, facts->vendor, sizeof facts->vendor);
    get_string(device, CL_DRIVER_VERSION, facts->driver_version, sizeof facts->driver_version);
    get_string(device, CL_DEVICE_VERSION, facts->version, sizeof facts->version);
    get_platform_string(facts->platform, CL_PLATFORM_NAME, facts->platform_name,
                        sizeof facts->platform_name);
    get_platform_string(facts->platform, CL_PLATFORM_VERSION, facts->platform_version,
                        sizeof facts->platform_version);
    return CLNORM_OK;
}

static bool has_extension(cl_device_id device, const char *ext)
{
    size_t size = 0;
    if (clGetDeviceInfo(device, CL_DEVICE_EXTENSIONS, 0, NULL, &size) != CL_SUCCESS || size == 0)
        return false;
    char *all = malloc(size + 1);
    if (!all)
        return false;
    bool found = false;
    if (clGetDeviceInfo(device, CL_DEVICE_EXTENSIONS, size, all, NULL) == CL_SUCCESS) {
        all[size] = '\0';
        size_t len = strlen(ext);
        for (const char *p = strstr(all, ext); p && !found; p = strstr(p + 1, ext))
            found = (p == all || p[-1] == ' ') && (p[len] == ' ' || p[len] == '\0');
    }
    free(all);
    return found;
}

static void fill_info(unsigned pi, unsigned di, cl_device_id device, clnorm_device_info *info)
{
    device_facts f;
    memset(info, 0, sizeof *info);
    info->platform_index = pi;
    info->device_index = di;
    if (device_query_facts(device, &f) != CLNORM_OK)
        return;
    copy_message(info->platform_name, sizeof info->platform_name, f.platform_name);
    copy_message(info->platform_version, sizeof info->platform_version, f.platform_version);
    copy_message(info->name, sizeof info->name, f.name);
    copy_message(info->vendor, sizeof info->vendor, f.vendor);
    copy_message(info->driver_version, sizeof info->driver_version, f.driver_version);
    get_string(device, CL_DEVICE_OPENCL_C_VERSION, info->opencl_c_version,
               sizeof info->opencl_c_version);
    info->type = f.type;
    info->compute_units = f.compute_units;
    info->global_mem_bytes = f.global_mem_bytes;
    info->local_mem_bytes = f.local_mem_bytes;
    info->max_alloc_bytes = f.max_alloc_bytes;
    info->max_work_group_size = f.max_work_group_size;
    info->has_fp16 = has_extension(device, "cl_khr_fp16");
    info->has_fp64 = has_extension(device, "cl_khr_fp64");
    char dir[CLNORM_PATH_SIZE];
    disk_cache_resolve_dir(NULL, dir, sizeof dir);
    info->has_disk_cache = dir[0] && disk_cache_has_device(dir, device_hash(&f));
}

clnorm_status clnorm_list_devices(clnorm_device_info *infos, size_t capacity, size_t *count)
{
    if (!count || (capacity > 0 && !infos))
        return CLNORM_INVALID_ARGUMENT;
    device_list list;
    enumerate_devices(&list);
    for (size_t i = 0; i < list.count && i < capacity; i++)
        fill_info(list.items[i].platform_index, list.items[i].device_index, list.items[i].device,
                  &infos[i]);
    *count = list.count;
    return CLNORM_OK;
}

static bool contains_ignoring_case(const char *haystack, const char *needle)
{
    size_t n = strlen(needle);
    if (n == 0)
        return false;
    for (; *haystack; haystack++) {
        size_t i = 0;
        while (i < n && haystack[i] &&
               tolower((unsigned char)haystack[i]) == tolower((unsigned char)needle[i]))
            i++;
        if (i == n)
            return true;
    }
    return false;
}

static cl_device_type device_type(cl_device_id device)
{
    cl_device_type type = 0;
    clGetDeviceInfo(device, CL_DEVICE_TYPE, sizeof type, &type, NULL);
    return type;
}

/* Index into the list of the first device that matches, or -1. */
static long match_selector(const device_list *list, const char *sel)
{
    unsigned p, d;
    char tail;
    if (sscanf(sel, "%u:%u%c", &p, &d, &tail) == 2) {
        for (size_t i = 0; i < list->count; i++)
            if (list->items[i].platform_index == p && list->items[i].device_index == d)
                return (long)i;
        return -1;
    }
    static const struct {
        const char *word;
        cl_device_type type;
    } types[] = {{"gpu", CL_DEVICE_TYPE_GPU},
                 {"cpu", CL_DEVICE_TYPE_CPU},
                 {"accelerator", CL_DEVICE_TYPE_ACCELERATOR}};
    for (size_t t = 0; t < ARRAY_SIZE(types); t++) {
        if (strcasecmp(sel, types[t].word) != 0)
            continue;
        for (size_t i = 0; i < list->count; i++)
            if (device_type(list->items[i].device) & types[t].type)
                return (long)i;
        return -1;
    }
    for (size_t i = 0; i < list->count; i++) {
        char name[256], platform[256];
        get_string(list->items[i].device, CL_DEVICE_NAME, name, sizeof name);
        get_platform_string(list->items[i].platform, CL_PLATFORM_NAME, platform, sizeof platform);
        if (contains_ignoring_case(name, sel) || contains_ignoring_case(platform, sel))
            return (long)i;
    }
    return -1;
}

static void describe_devices(const device_list *list, char *out, size_t size)
{
    size_t used = (size_t)snprintf(out, size, "devices present:");
    if (list->count == 0)
        snprintf(out + used, size - used, " none (is an OpenCL driver such as pocl-opencl-icd "
                                          "installed?)");
    for (size_t i = 0; i < list->count && used < size; i++) {
        char name[128], platform[128];
        get_string(list->items[i].device, CL_DEVICE_NAME, name, sizeof name);
        get_platform_string(list->items[i].platform, CL_PLATFORM_NAME, platform, sizeof platform);
        used += (size_t)snprintf(out + used, size - used, " [%u:%u] %s (%s);",
                                 list->items[i].platform_index, list->items[i].device_index, name,
                                 platform);
    }
}

clnorm_status device_select(const char *selector, cl_platform_id *platform, cl_device_id *device,
                            char *message, size_t message_size)
{
    device_list list;
    enumerate_devices(&list);
    const char *sel = selector;
    const char *origin = "selector";
    if (!sel || !*sel) {
        sel = getenv("CLNORM_DEVICE");
        origin = "CLNORM_DEVICE";
    }
    long found = -1;
    if (sel && *sel) {
        found = match_selector(&list, sel);
    } else {
        static const char *const preference[] = {"gpu", "accelerator", "cpu"};
        for (size_t i = 0; i < ARRAY_SIZE(preference) && found < 0; i++)
            found = match_selector(&list, preference[i]);
        if (found < 0 && list.count > 0)
            found = 0;
        sel = "(default)";
    }
    if (found < 0) {
        char present[2048];
        describe_devices(&list, present, sizeof present);
        if (message && message_size)
            snprintf(message, message_size,
                     "CLNORM_DEVICE_NOT_FOUND: %s \"%s\" matches no OpenCL device (forms: P:D, gpu, "
                     "cpu, accelerator, or part of a platform or device name); %s",
                     origin, sel, present);
        return CLNORM_DEVICE_NOT_FOUND;
    }
    *platform = list.items[found].platform;
    *device = list.items[found].device;
    return CLNORM_OK;
}

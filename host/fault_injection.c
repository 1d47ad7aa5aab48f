/* The counting wrappers of host/fault_injection.h and their test-only controls
 * (tests/fault_injection.h). Built only with meson -Dfault_injection=true. */
#define CLNORM_FAULT_INJECTION_IMPL
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>

#include "fault_injection.h"

#define FAULT_API __attribute__((visibility("default")))

static atomic_long armed;     /* k: the wrapped call to fail; 0 = disarmed */
static atomic_long calls;     /* wrapped calls since arming */
static atomic_long enqueued;  /* commands enqueued successfully since arming, before the fault */
static atomic_int fired;      /* the k-th call has failed */
static const char *_Atomic site = "";

static void track(const void *handle, long delta, int create);

/* Counts a call while armed; true for the one call that must fail. */
static int should_fail(const char *name)
{
    const long k = atomic_load(&armed);
    if (k <= 0)
        return 0;
    if (atomic_fetch_add(&calls, 1) + 1 != k)
        return 0;
    atomic_store(&site, name);
    atomic_store(&fired, 1);
    return 1;
}

/* A successful enqueue: counted until the fault fires; its event is a reference. */
static void count_enqueue(cl_int err, const cl_event *event)
{
    if (err != CL_SUCCESS)
        return;
    if (atomic_load(&armed) > 0 && !atomic_load(&fired))
        atomic_fetch_add(&enqueued, 1);
    if (event)
        track(*event, 1, 1);
}

/* ---- the references the library holds ---------------------------------------------------- */

#define MAX_TRACKED 65536
static pthread_mutex_t tracked_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    const void *handle;
    long refs;
} tracked[MAX_TRACKED];
static size_t tracked_count;
static long tracked_overflow; /* handles that did not fit: the count is then unknown */

static void track(const void *handle, long delta, int create)
{
    if (!handle)
        return;
    pthread_mutex_lock(&tracked_lock);
    size_t i = 0;
    while (i < tracked_count && tracked[i].handle != handle)
        i++;
    if (i == tracked_count) {
        /* not created by the library (an application's object): only creations are counted */
        if (create) {
            if (tracked_count < MAX_TRACKED) {
                tracked[tracked_count].handle = handle;
                tracked[tracked_count].refs = delta;
                tracked_count++;
            } else {
                tracked_overflow++;
            }
        }
    } else {
        tracked[i].refs += delta;
        if (tracked[i].refs <= 0)
            tracked[i] = tracked[--tracked_count];
    }
    pthread_mutex_unlock(&tracked_lock);
}

/* ---- controls (declared in tests/fault_injection.h) ----------------------------------------- */

FAULT_API void clnorm_fault_arm(long k)
{
    atomic_store(&armed, 0);
    atomic_store(&calls, 0);
    atomic_store(&enqueued, 0);
    atomic_store(&fired, 0);
    atomic_store(&site, "");
    atomic_store(&armed, k > 0 ? k : 0);
}

FAULT_API void clnorm_fault_disarm(void)
{
    atomic_store(&armed, 0);
}

FAULT_API int clnorm_fault_fired(void)
{
    return atomic_load(&fired);
}

FAULT_API long clnorm_fault_calls(void)
{
    return atomic_load(&calls);
}

FAULT_API long clnorm_fault_enqueued_before(void)
{
    return atomic_load(&enqueued);
}

FAULT_API const char *clnorm_fault_site(void)
{
    return atomic_load(&site);
}

FAULT_API long clnorm_fault_live(void)
{
    pthread_mutex_lock(&tracked_lock);
    long live = tracked_overflow ? -1 : 0;
    for (size_t i = 0; i < tracked_count && live >= 0; i++)
        live += tracked[i].refs;
    pthread_mutex_unlock(&tracked_lock);
    return live;
}

FAULT_API void clnorm_fault_handed_over(const void *handle)
{
    track(handle, -1, 0);
}

/* ---- host allocations ------------------------------------------------------------------------ */

void *clnorm_fault_malloc(size_t size)
{
    if (should_fail("malloc")) {
        errno = ENOMEM;
        return NULL;
    }
    return malloc(size);
}

void *clnorm_fault_calloc(size_t count, size_t size)
{
    if (should_fail("calloc")) {
        errno = ENOMEM;
        return NULL;
    }
    return calloc(count, size);
}

void *clnorm_fault_realloc(void *pointer, size_t size)
{
    if (should_fail("realloc")) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc(pointer, size);
}

char *clnorm_fault_strdup(const char *text)
{
    if (should_fail("strdup")) {
        errno = ENOMEM;
        return NULL;
    }
    return strdup(text);
}

FILE *clnorm_fault_fopen(const char *path, const char *mode)
{
    if (should_fail("fopen")) {
        errno = ENOMEM;
        return NULL;
    }
    return fopen(path, mode);
}

FILE *clnorm_fault_fdopen(int fd, const char *mode)
{
    if (should_fail("fdopen")) {
        errno = ENOMEM;
        return NULL;
    }
    return fdopen(fd, mode);
}

/* ---- OpenCL ---------------------------------------------------------------------------------- */

#define FAIL_OBJECT(name, code)                                                                    \
    do {                                                                                           \
        if (should_fail(name)) {                                                                   \
            if (err)                                                                               \
                *err = (code);                                                                     \
            return NULL;                                                                           \
        }                                                                                          \
    } while (0)

cl_context clnorm_fault_clCreateContext(const cl_context_properties *properties,
                                        cl_uint num_devices, const cl_device_id *devices,
                                        void(CL_CALLBACK *notify)(const char *, const void *,
                                                                  size_t, void *),
                                        void *user, cl_int *err)
{
    FAIL_OBJECT("clCreateContext", CL_OUT_OF_HOST_MEMORY);
    cl_context made = clCreateContext(properties, num_devices, devices, notify, user, err);
    track(made, 1, 1);
    return made;
}

cl_command_queue clnorm_fault_clCreateCommandQueue(cl_context context, cl_device_id device,
                                                   cl_command_queue_properties properties,
                                                   cl_int *err)
{
    FAIL_OBJECT("clCreateCommandQueue", CL_OUT_OF_RESOURCES);
    cl_command_queue made = clCreateCommandQueue(context, device, properties, err);
    track(made, 1, 1);
    return made;
}

cl_program clnorm_fault_clCreateProgramWithSource(cl_context context, cl_uint count,
                                                  const char **strings, const size_t *lengths,
                                                  cl_int *err)
{
    FAIL_OBJECT("clCreateProgramWithSource", CL_OUT_OF_HOST_MEMORY);
    cl_program made = clCreateProgramWithSource(context, count, strings, lengths, err);
    track(made, 1, 1);
    return made;
}

cl_program clnorm_fault_clCreateProgramWithBinary(cl_context context, cl_uint num_devices,
                                                  const cl_device_id *devices,
                                                  const size_t *lengths,
                                                  const unsigned char **binaries,
                                                  cl_int *binary_status, cl_int *err)
{
    FAIL_OBJECT("clCreateProgramWithBinary", CL_OUT_OF_RESOURCES);
    cl_program made = clCreateProgramWithBinary(context, num_devices, devices, lengths, binaries,
                                                binary_status, err);
    track(made, 1, 1);
    return made;
}

cl_int clnorm_fault_clBuildProgram(cl_program program, cl_uint num_devices,
                                   const cl_device_id *devices, const char *options,
                                   void(CL_CALLBACK *notify)(cl_program, void *), void *user)
{
    if (should_fail("clBuildProgram"))
        return CL_OUT_OF_RESOURCES;
    return clBuildProgram(program, num_devices, devices, options, notify, user);
}

cl_kernel clnorm_fault_clCreateKernel(cl_program program, const char *name, cl_int *err)
{
    FAIL_OBJECT("clCreateKernel", CL_OUT_OF_RESOURCES);
    cl_kernel made = clCreateKernel(program, name, err);
    track(made, 1, 1);
    return made;
}

cl_mem clnorm_fault_clCreateBuffer(cl_context context, cl_mem_flags flags, size_t size,
                                   void *host, cl_int *err)
{
    FAIL_OBJECT("clCreateBuffer", CL_MEM_OBJECT_ALLOCATION_FAILURE);
    cl_mem made = clCreateBuffer(context, flags, size, host, err);
    track(made, 1, 1);
    return made;
}

cl_mem clnorm_fault_clCreateSubBuffer(cl_mem buffer, cl_mem_flags flags,
                                      cl_buffer_create_type type, const void *info, cl_int *err)
{
    FAIL_OBJECT("clCreateSubBuffer", CL_OUT_OF_RESOURCES);
    cl_mem made = clCreateSubBuffer(buffer, flags, type, info, err);
    track(made, 1, 1);
    return made;
}

cl_int clnorm_fault_clEnqueueNDRangeKernel(cl_command_queue queue, cl_kernel kernel,
                                           cl_uint dims, const size_t *offset,
                                           const size_t *global, const size_t *local,
                                           cl_uint num_wait, const cl_event *wait,
                                           cl_event *event)
{
    if (should_fail("clEnqueueNDRangeKernel"))
        return CL_OUT_OF_RESOURCES;
    cl_int err = clEnqueueNDRangeKernel(queue, kernel, dims, offset, global, local, num_wait,
                                        wait, event);
    count_enqueue(err, event);
    return err;
}

cl_int clnorm_fault_clEnqueueWriteBuffer(cl_command_queue queue, cl_mem buffer, cl_bool blocking,
                                         size_t offset, size_t size, const void *host,
                                         cl_uint num_wait, const cl_event *wait, cl_event *event)
{
    if (should_fail("clEnqueueWriteBuffer"))
        return CL_OUT_OF_RESOURCES;
    cl_int err = clEnqueueWriteBuffer(queue, buffer, blocking, offset, size, host, num_wait, wait,
                                      event);
    count_enqueue(err, event);
    return err;
}

cl_int clnorm_fault_clEnqueueReadBuffer(cl_command_queue queue, cl_mem buffer, cl_bool blocking,
                                        size_t offset, size_t size, void *host, cl_uint num_wait,
                                        const cl_event *wait, cl_event *event)
{
    if (should_fail("clEnqueueReadBuffer"))
        return CL_OUT_OF_RESOURCES;
    cl_int err = clEnqueueReadBuffer(queue, buffer, blocking, offset, size, host, num_wait, wait,
                                     event);
    if (err == CL_SUCCESS && event)
        track(*event, 1, 1);
    return err;
}

cl_int clnorm_fault_clEnqueueFillBuffer(cl_command_queue queue, cl_mem buffer,
                                        const void *pattern, size_t pattern_size, size_t offset,
                                        size_t size, cl_uint num_wait, const cl_event *wait,
                                        cl_event *event)
{
    if (should_fail("clEnqueueFillBuffer"))
        return CL_OUT_OF_RESOURCES;
    cl_int err = clEnqueueFillBuffer(queue, buffer, pattern, pattern_size, offset, size, num_wait,
                                     wait, event);
    count_enqueue(err, event);
    return err;
}

cl_int clnorm_fault_clEnqueueMarkerWithWaitList(cl_command_queue queue, cl_uint num_wait,
                                                const cl_event *wait, cl_event *event)
{
    if (should_fail("clEnqueueMarkerWithWaitList"))
        return CL_OUT_OF_RESOURCES;
    cl_int err = clEnqueueMarkerWithWaitList(queue, num_wait, wait, event);
    if (err == CL_SUCCESS && event)
        track(*event, 1, 1);
    return err;
}

cl_int clnorm_fault_clFinish(cl_command_queue queue)
{
    if (should_fail("clFinish"))
        return CL_OUT_OF_RESOURCES;
    return clFinish(queue);
}

/* ---- references ----------------------------------------------------------------------------- */

cl_int clnorm_fault_clRetainEvent(cl_event event)
{
    cl_int err = clRetainEvent(event);
    if (err == CL_SUCCESS)
        track(event, 1, 0);
    return err;
}

#define RELEASE(type, call)                                                                        \
    cl_int clnorm_fault_##call(type object)                                                        \
    {                                                                                              \
        cl_int err = call(object);                                                                 \
        if (err == CL_SUCCESS)                                                                     \
            track(object, -1, 0);                                                                  \
        return err;                                                                                \
    }
RELEASE(cl_event, clReleaseEvent)
RELEASE(cl_mem, clReleaseMemObject)
RELEASE(cl_kernel, clReleaseKernel)
RELEASE(cl_program, clReleaseProgram)
RELEASE(cl_command_queue, clReleaseCommandQueue)
RELEASE(cl_context, clReleaseContext)

/* Fault injection, for tests only: compiled in by `meson setup -Dfault_injection=true`, which
 * defines CLNORM_FAULT_INJECTION and adds host/fault_injection.c to the library. Normal builds
 * never include this file and have no such global state.
 *
 * internal.h includes this header last, after every system header the library uses, so that
 * the names below, in the library's own sources only, become counting wrappers. Armed with
 * k (tests/fault_injection.h), the k-th wrapped call after arming fails once, the way the real
 * call fails when memory or resources run out (NULL, or CL_MEM_OBJECT_ALLOCATION_FAILURE /
 * CL_OUT_OF_RESOURCES / CL_OUT_OF_HOST_MEMORY); every other call goes through unchanged.
 * The wrappers also count the references the library holds on the OpenCL objects it created
 * (contexts, queues, buffers, programs, kernels, events: created or retained +1, released -1),
 * so that a test can see an object the library forgot to release, which LeakSanitizer cannot
 * (the driver's allocations are suppressed). */
#ifndef CLNORM_FAULT_INJECTION_H
#define CLNORM_FAULT_INJECTION_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clnorm.h"

void *clnorm_fault_malloc(size_t size);
void *clnorm_fault_calloc(size_t count, size_t size);
void *clnorm_fault_realloc(void *pointer, size_t size);
char *clnorm_fault_strdup(const char *text);
FILE *clnorm_fault_fopen(const char *path, const char *mode);
FILE *clnorm_fault_fdopen(int fd, const char *mode);

cl_context clnorm_fault_clCreateContext(const cl_context_properties *properties,
                                        cl_uint num_devices, const cl_device_id *devices,
                                        void(CL_CALLBACK *notify)(const char *, const void *,
                                                                  size_t, void *),
                                        void *user, cl_int *err);
cl_command_queue clnorm_fault_clCreateCommandQueue(cl_context context, cl_device_id device,
                                                   cl_command_queue_properties properties,
                                                   cl_int *err);
cl_program clnorm_fault_clCreateProgramWithSource(cl_context context, cl_uint count,
                                                  const char **strings, const size_t *lengths,
                                                  cl_int *err);
cl_program clnorm_fault_clCreateProgramWithBinary(cl_context context, cl_uint num_devices,
                                                  const cl_device_id *devices,
                                                  const size_t *lengths,
                                                  const unsigned char **binaries,
                                                  cl_int *binary_status, cl_int *err);
cl_int clnorm_fault_clBuildProgram(cl_program program, cl_uint num_devices,
                                   const cl_device_id *devices, const char *options,
                                   void(CL_CALLBACK *notify)(cl_program, void *), void *user);
cl_kernel clnorm_fault_clCreateKernel(cl_program program, const char *name, cl_int *err);
cl_mem clnorm_fault_clCreateBuffer(cl_context context, cl_mem_flags flags, size_t size,
                                   void *host, cl_int *err);
cl_mem clnorm_fault_clCreateSubBuffer(cl_mem buffer, cl_mem_flags flags,
                                      cl_buffer_create_type type, const void *info, cl_int *err);
cl_int clnorm_fault_clEnqueueNDRangeKernel(cl_command_queue queue, cl_kernel kernel,
                                           cl_uint dims, const size_t *offset,
                                           const size_t *global, const size_t *local,
                                           cl_uint num_wait, const cl_event *wait,
                                           cl_event *event);
cl_int clnorm_fault_clEnqueueWriteBuffer(cl_command_queue queue, cl_mem buffer, cl_bool blocking,
                                         size_t offset, size_t size, const void *host,
                                         cl_uint num_wait, const cl_event *wait, cl_event *event);
cl_int clnorm_fault_clEnqueueReadBuffer(cl_command_queue queue, cl_mem buffer, cl_bool blocking,
                                        size_t offset, size_t size, void *host, cl_uint num_wait,
                                        const cl_event *wait, cl_event *event);
cl_int clnorm_fault_clEnqueueFillBuffer(cl_command_queue queue, cl_mem buffer,
                                        const void *pattern, size_t pattern_size, size_t offset,
                                        size_t size, cl_uint num_wait, const cl_event *wait,
                                        cl_event *event);
cl_int clnorm_fault_clEnqueueMarkerWithWaitList(cl_command_queue queue, cl_uint num_wait,
                                                const cl_event *wait, cl_event *event);
cl_int clnorm_fault_clFinish(cl_command_queue queue);
/* Not failed, only counted: the references the library holds (see clnorm_fault_live). */
cl_int clnorm_fault_clRetainEvent(cl_event event);
cl_int clnorm_fault_clReleaseEvent(cl_event event);
cl_int clnorm_fault_clReleaseMemObject(cl_mem mem);
cl_int clnorm_fault_clReleaseKernel(cl_kernel kernel);
cl_int clnorm_fault_clReleaseProgram(cl_program program);
cl_int clnorm_fault_clReleaseCommandQueue(cl_command_queue queue);
cl_int clnorm_fault_clReleaseContext(cl_context context);

#ifndef CLNORM_FAULT_INJECTION_IMPL
#undef malloc
#undef calloc
#undef realloc
#undef strdup
#undef fopen
#undef fdopen
#define malloc(size) clnorm_fault_malloc(size)
#define calloc(count, size) clnorm_fault_calloc(count, size)
#define realloc(pointer, size) clnorm_fault_realloc(pointer, size)
#define strdup(text) clnorm_fault_strdup(text)
#define fopen(path, mode) clnorm_fault_fopen(path, mode)
#define fdopen(fd, mode) clnorm_fault_fdopen(fd, mode)
#define clCreateContext clnorm_fault_clCreateContext
#define clCreateCommandQueue clnorm_fault_clCreateCommandQueue
#define clCreateProgramWithSource clnorm_fault_clCreateProgramWithSource
#define clCreateProgramWithBinary clnorm_fault_clCreateProgramWithBinary
#define clBuildProgram clnorm_fault_clBuildProgram
#define clCreateKernel clnorm_fault_clCreateKernel
#define clCreateBuffer clnorm_fault_clCreateBuffer
#define clCreateSubBuffer clnorm_fault_clCreateSubBuffer
#define clEnqueueNDRangeKernel clnorm_fault_clEnqueueNDRangeKernel
#define clEnqueueWriteBuffer clnorm_fault_clEnqueueWriteBuffer
#define clEnqueueReadBuffer clnorm_fault_clEnqueueReadBuffer
#define clEnqueueFillBuffer clnorm_fault_clEnqueueFillBuffer
#define clEnqueueMarkerWithWaitList clnorm_fault_clEnqueueMarkerWithWaitList
#define clFinish clnorm_fault_clFinish
#define clRetainEvent clnorm_fault_clRetainEvent
#define clReleaseEvent clnorm_fault_clReleaseEvent
#define clReleaseMemObject clnorm_fault_clReleaseMemObject
#define clReleaseKernel clnorm_fault_clReleaseKernel
#define clReleaseProgram clnorm_fault_clReleaseProgram
#define clReleaseCommandQueue clnorm_fault_clReleaseCommandQueue
#define clReleaseContext clnorm_fault_clReleaseContext
#endif

#endif

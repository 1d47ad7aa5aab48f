/* Controls of the fault-injection build (meson -Dfault_injection=true; host/fault_injection.c).
 * Test-only: these functions exist only in that build's library and are not in the public
 * headers. A "wrapped call" is one of the library's allocations (malloc, calloc, realloc,
 * strdup, fopen, fdopen) or OpenCL calls that can fail for lack of memory or resources
 * (clCreateContext, clCreateCommandQueue, clCreateProgramWithSource/WithBinary, clBuildProgram,
 * clCreateKernel, clCreateBuffer, clCreateSubBuffer, clEnqueueNDRangeKernel,
 * clEnqueueWrite/Read/FillBuffer, clEnqueueMarkerWithWaitList, clFinish). */
#ifndef CLNORM_TEST_FAULT_INJECTION_H
#define CLNORM_TEST_FAULT_INJECTION_H

/* Fails the k-th wrapped call from now on (k >= 1), once; resets the counters below. */
void clnorm_fault_arm(long k);
/* No more faults (the counters keep their values). */
void clnorm_fault_disarm(void);
/* Whether the armed fault has fired, and in which call ("clCreateBuffer", "malloc", ...). */
int clnorm_fault_fired(void);
const char *clnorm_fault_site(void);
/* Wrapped calls since arming. */
long clnorm_fault_calls(void);
/* Commands (kernels, fills, writes) enqueued successfully after arming and before the fault. */
long clnorm_fault_enqueued_before(void);
/* References the library holds on OpenCL objects it created (-1: too many to count). 0 once
 * every context and layer is released. */
long clnorm_fault_live(void);
/* The caller took over a reference the library created (an event a call returned). */
void clnorm_fault_handed_over(const void *handle);

#endif

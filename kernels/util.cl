/* Small utility kernels: the self-check, buffer fills and the bandwidth reference copy. */

__kernel void fill(__global DATA_T *y, ulong n, float value)
{
    size_t i = get_global_id(0);
    if (i < n)
        STORE(y, i, value);
}

__kernel void scale_shift(__global const DATA_T *x, __global DATA_T *y, ulong n, float scale,
                          float shift)
{
    size_t i = get_global_id(0);
    if (i < n)
        STORE(y, i, LOAD(x, i) * scale + shift);
}

/* y = x over n vectors of VEC floats: the reference for the device's copy bandwidth. */
__kernel void copy(__global const float *x, __global float *y, ulong nvec)
{
    size_t i = get_global_id(0);
    if (i < nvec)
        STOREV(y, i, LOADV(x, i));
}

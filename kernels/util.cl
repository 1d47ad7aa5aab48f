/* Small utility kernels: the self-check's. */

__kernel void scale_shift(__global const DATA_T *x, __global DATA_T *y, ulong n, float scale,
                          float shift)
{
    size_t i = get_global_id(0);
    if (i < n)
        STORE(y, i, LOAD(x, i) * scale + shift);
}

/* Shared by every program: storage type macros and Welford/Chan helpers.
 * Built with -DWG_SIZE (power of two, work-items per work-group), -DVEC (elements per vector
 * load), -DITEMS (vectors a work-item takes in a strided elementwise pass), -DCHANNEL_TILE
 * (channels per channels-last group), -DROW_UNITS and -DSHORT_UNITS (vectors a work-item of the
 * register kernels holds, see REGISTER_KERNELS), -DGATHER_UNITS (see GATHER), -DEW_STREAMS (see
 * elementwise_chunk) and the tiles of params.c. The register kernels unroll their loops over
 * those vectors (#pragma unroll): looped, clang's PTX kept the array on the stack
 * (tools/kernel-resources.py reports what LLVM's GPU back ends allocate).
 * Every function that is not a kernel is static: once inlined, its out-of-line copy is then
 * dropped, and a driver parses the program's IR on every load, warm ones included (PoCL's CPU
 * device: IR 1.24 -> 0.62 MB, a warm load of the norm program 40-50 -> 17-28 ms). */

/* The register kernels (one launch, a run of work-items holding a row or channel in registers;
 * work-groups of many only) in two builds from one body: NAME with ROW_UNITS vectors per
 * work-item and NAME_short with SHORT_UNITS (0: empty), for runs that need no more. A GPU
 * allocates registers for the most a kernel may hold, so a short run in the long build keeps
 * fewer work-groups resident. DEFINE(name, units) defines one kernel. */
#define REGISTER_KERNELS(DEFINE, name)                                                             \
    DEFINE(name, ROW_UNITS)                                                                        \
    DEFINE(name##_short, SHORT_UNITS)
/* Whether a register kernel's build of `units` has a body (SHORT_UNITS 0: no short build; in
 * builds for work-groups of one, the bodies are empty anyway: #if WG_SIZE > 1) */
#define REGISTER_BUILT(units) ((units) > 0)

/* Units of a strided elementwise pass (GPUs) a work-item loads before it stores any */
#define GATHER (ITEMS < GATHER_UNITS ? ITEMS : GATHER_UNITS)

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)

/* Storage type. fp32 today; a half or bfloat16 build redefines these and STREAM_STOREV. */
#define DATA_T float
#define LOAD(p, i) ((p)[i])
#define STORE(p, i, v) ((p)[i] = (v))
#if VEC == 1
#define FLOATV float
#define LOADV(p, i) ((p)[i])
#define STOREV(p, i, v) ((p)[i] = (v))
#else
#define FLOATV CAT(float, VEC)
#define LOADV(p, i) CAT(vload, VEC)((i), (p))
#define STOREV(p, i, v) CAT(vstore, VEC)((v), (i), (p))
#endif

/* A whole vector's store that bypasses the cache (a non-temporal store: no read of the line
 * before it is written), for outputs not read again soon; p + i must be aligned to the vector.
 * Where the compiler lacks the builtin, a plain store. */
#if defined(__has_builtin)
#if __has_builtin(__builtin_nontemporal_store)
#define STREAM_STOREV(p, i, v) __builtin_nontemporal_store((v), (__global FLOATV *)((p) + (i)))
#endif
#endif
#ifndef STREAM_STOREV
#define STREAM_STOREV(p, i, v) STOREV((p) + (i), 0, (v))
#endif

/* For the small helpers of per-vector loops: PoCL's LLVM otherwise leaves some of them as calls
 * with a stack frame per vector, costing more than the vector's loads.
 * (Static, as every helper.) */
#define ALWAYS_INLINE static __attribute__((always_inline))
/* For helpers that stay calls where static would let the compiler inline them: form_own_coefs
 * (bn_elementwise keeps the code it was measured with) and the cached sums of
 * gn_forward_fused_residual (inlined, measured slower). */
#define NOINLINE static __attribute__((noinline))

/* Each lane's index, as the integer vector that select() takes with FLOATV. */
#define INTV CAT(int, VEC)
#if VEC == 1
#undef INTV
#define INTV int
#define LANE_IDS 0
#elif VEC == 2
#define LANE_IDS ((INTV)(0, 1))
#elif VEC == 4
#define LANE_IDS ((INTV)(0, 1, 2, 3))
#elif VEC == 8
#define LANE_IDS ((INTV)(0, 1, 2, 3, 4, 5, 6, 7))
#endif

/* Horizontal sum of a vector (dot with ones: every device has it, and Oclgrind's shadow-memory
 * checks handle it where they crash on component swizzles). */
#if VEC == 1
#define HSUM(v) (v)
#elif VEC == 2
#define HSUM(v) dot((v), (float2)(1.0f))
#elif VEC == 4
#define HSUM(v) dot((v), (float4)(1.0f))
#elif VEC == 8
#define HSUM(v) (dot((v).lo, (float4)(1.0f)) + dot((v).hi, (float4)(1.0f)))
#endif

/* a / b, by a 32-bit division where both fit: a 64-bit one is a long software routine on GPUs
 * (per unit of a strided pass, it costs more than the unit's loads). */
static ulong quotient(ulong a, ulong b)
{
    return (a | b) <= UINT_MAX ? (ulong)((uint)a / (uint)b) : a / b;
}

/* Statistics of a set of values: count, mean, and m2n = M2 / P, where M2 is the sum of squared
 * deviations from the mean and P the largest power of two <= count. Scaling by a power of two is
 * exact, so Chan's merge below rounds exactly as it would on M2 itself (exact-by-construction
 * data stays exact), yet m2n stays below 2 * variance: no overflow while the variance fits in
 * fp32, where a plain M2 overflows at count * variance. */

/* The largest power of two <= n, for n >= 1: n with its mantissa bits cleared. */
static float pow2_floor(float n)
{
    return as_float(as_uint(n) & 0xff800000u);
}

/* Chan's merge of (nb, mb, m2b) into (count, mean, m2n), for T = float, or T = a vector of
 * lanes that share their count. (Pointers, not returned structs: simpler for every compiler.) */
#define DEFINE_STATS_MERGE(name, T)                                                                \
    static void name(float *count, T *mean, T *m2n, float nb, T mb, T m2b)                         \
    {                                                                                              \
        const float na = *count, n = na + nb;                                                      \
        if (nb == 0.0f)                                                                            \
            return;                                                                                \
        *count = n;                                                                                \
        if (na == 0.0f) {                                                                          \
            *mean = mb;                                                                            \
            *m2n = m2b;                                                                            \
            return;                                                                                \
        }                                                                                          \
        /* 1/p is exact (p a power of two), so the products by it equal the quotients */       \
        const float inv_p = 1.0f / pow2_floor(n);                                                  \
        T d = mb - *mean;                                                                          \
        *mean += d * (nb / n);                                                                     \
        *m2n = *m2n * (pow2_floor(na) * inv_p) + m2b * (pow2_floor(nb) * inv_p) +                  \
               d * d * ((na / n) * (nb * inv_p));                                                  \
    }

DEFINE_STATS_MERGE(stats_merge, float)

/* Biased variance M2 / count, and the unbiased M2 / (count - 1). */
static float stats_variance(float count, float m2n)
{
    return m2n / count * pow2_floor(count);
}

static float stats_unbiased_variance(float count, float m2n)
{
    return m2n / (count - 1.0f) * pow2_floor(count);
}

/* Shared by every program: storage type macros and Welford/Chan helpers.
 * Built with -DWG_SIZE (power of two, work-items per work-group), -DVEC (elements per vector
 * load), -DITEMS (vectors per work-item step), -DCHANNEL_TILE (channels per channels-last group). */

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)

/* Storage type. fp32 today; a half or bfloat16 build redefines these five and nothing else. */
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

/* Horizontal sum of a vector, pairwise. */
#if VEC == 1
#define HSUM(v) (v)
#elif VEC == 2
#define HSUM(v) ((v).s0 + (v).s1)
#elif VEC == 4
#define HSUM(v) (((v).s0 + (v).s1) + ((v).s2 + (v).s3))
#elif VEC == 8
#define HSUM4_(v) (((v).s0 + (v).s1) + ((v).s2 + (v).s3))
#define HSUM(v) (HSUM4_((v).lo) + HSUM4_((v).hi))
#elif VEC == 16
#define HSUM4_(v) (((v).s0 + (v).s1) + ((v).s2 + (v).s3))
#define HSUM8_(v) (HSUM4_((v).lo) + HSUM4_((v).hi))
#define HSUM(v) (HSUM8_((v).lo) + HSUM8_((v).hi))
#endif

/* Statistics of a set of values: count, mean, and m2n = M2 / P, where M2 is the sum of squared
 * deviations from the mean and P the largest power of two <= count. Scaling by a power of two is
 * exact, so Chan's merge below rounds exactly as it would on M2 itself (exact-by-construction
 * data stays exact), yet m2n stays below 2 * variance: no overflow while the variance fits in
 * fp32, where a plain M2 overflows at count * variance. */
typedef struct stats {
    float count, mean, m2n;
} stats;

float pow2_floor(float n)
{
    int e;
    frexp(n, &e);
    return ldexp(1.0f, e - 1);
}

stats stats_empty(void)
{
    stats s = {0.0f, 0.0f, 0.0f};
    return s;
}

stats stats_make(float count, float mean, float m2n)
{
    stats s = {count, mean, m2n};
    return s;
}

/* Chan's parallel formula in the m2n form. */
stats stats_merge(stats a, stats b)
{
    if (b.count == 0.0f)
        return a;
    if (a.count == 0.0f)
        return b;
    float n = a.count + b.count;
    float p = pow2_floor(n);
    float d = b.mean - a.mean;
    stats r;
    r.count = n;
    r.mean = a.mean + d * (b.count / n);
    r.m2n = a.m2n * (pow2_floor(a.count) / p) + b.m2n * (pow2_floor(b.count) / p) +
            d * d * ((a.count / n) * (b.count / p));
    return r;
}

/* Biased variance M2 / count, and the unbiased M2 / (count - 1). */
float stats_variance(stats s)
{
    return s.m2n / s.count * pow2_floor(s.count);
}

float stats_unbiased_variance(stats s)
{
    return s.m2n / (s.count - 1.0f) * pow2_floor(s.count);
}

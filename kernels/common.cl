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

/* Running statistics of a set of values: count, mean and M2 = sum of squared deviations.
 * Merging two sets uses Chan's formula, which never forms a large sum of squares. */
typedef struct stats {
    float count, mean, m2;
} stats;

inline stats stats_empty(void)
{
    stats s = {0.0f, 0.0f, 0.0f};
    return s;
}

inline stats stats_push(stats s, float x)
{
    s.count += 1.0f;
    float d = x - s.mean;
    s.mean += d / s.count;
    s.m2 += d * (x - s.mean);
    return s;
}

inline stats stats_merge(stats a, stats b)
{
    float n = a.count + b.count;
    if (b.count == 0.0f)
        return a;
    if (a.count == 0.0f)
        return b;
    float d = b.mean - a.mean;
    float wb = b.count / n;
    stats r;
    r.count = n;
    r.mean = a.mean + d * wb;
    r.m2 = a.m2 + b.m2 + d * d * a.count * wb;
    return r;
}

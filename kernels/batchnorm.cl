/* Batch normalization kernels.
 *
 * Stage 1 (bn_reduce_cf, bn_reduce_cl): each work-group reduces a slice of one or more channels
 * over (N x spatial) to one partial per channel: statistics (count, mean, m2n) of x, or for the
 * backward pass the sums of dy and dy * (x - mean). Partials go to `sets`, set s at s * 3C:
 * [count | mean-or-sum_dy | m2n-or-sum_dy_xmu], C floats each.
 * Stage 2 (bn_channel): one work-item per channel (a team of them on GPUs, for many partials)
 * merges that channel's partials as a tree and finalizes: batch mean and 1/sqrt(var + eps),
 * running statistics, per-channel coefficients.
 * Stage 3 (bn_elementwise): out = a*in1 + b + e*(in2 - center), per channel (a, b, e, center),
 * plus residual and ReLU: the forward apply and the backward dx are both of this form.
 *
 * Within a work-item, values are taken in aligned blocks (a vector of VEC elements of one plane,
 * or two consecutive rows in channels-last); each block's mean and squared deviations are exact
 * two-pass values, and blocks merge with Chan's formula. Statistics are taken of x - K, with K the
 * channel's first value: a large common offset (1e6 + N(0, 1)) then costs no precision. Stage 1
 * writes K to pivots[c]; partial means stay relative to it and stage 2 adds it once, at the end.
 * LayerNorm and RMSNorm use bn_reduce_cf with each row as a channel (N = 1, C = rows, HW = cols),
 * hence the optional addend (a fused residual: statistics of x + addend) and plane_weight
 * (the backward's dxhat = dy * weight[position]), and bn_reduce_cl's optional per-row statistics
 * (column sums of dy * xhat for dweight). */

#define REDUCE_STATS 0
#define REDUCE_GRAD 1
/* rows per statistics block in channels-last, a power of two (bn_reduce_rows merges two blocks
 * exactly): the row_block parameter (ROW_BLOCK_PARAM), else by default: blocks past 8 rows
 * measured slower on CPUs. Work-groups of many keep 2, whatever block_vectors: on an H200 its 4
 * (8 rows here) took the channels-last statistics 1.11-1.17x the time, where the channels-first
 * blocks of 4 vectors took 0.79-0.81x. */
#if ROW_BLOCK_PARAM > 0
#define ROW_BLOCK ROW_BLOCK_PARAM
#elif WG_SIZE > 1
#define ROW_BLOCK 2
#else
#define ROW_BLOCK (BLOCK_VECS >= 4 ? 8 : BLOCK_VECS >= 2 ? 4 : 2)
#endif

DEFINE_STATS_MERGE(stats_merge_lanes, FLOATV)

/* Merges partial (nb, ab, bb) into (count, a, b): Chan for statistics (a = mean, b = m2n), plain
 * sums for gradients (a = sum dy, b = sum dy * (x - mean)). */
#define DEFINE_PARTIAL_MERGE(name, T, stats_fn)                                                    \
    static void name(float *count, T *a, T *b, float nb, T ab, T bb, int mode)                     \
    {                                                                                              \
        if (mode == REDUCE_STATS) {                                                                \
            stats_fn(count, a, b, nb, ab, bb);                                                     \
            return;                                                                                \
        }                                                                                          \
        *count += nb;                                                                              \
        *a += ab;                                                                                  \
        *b += bb;                                                                                  \
    }

DEFINE_PARTIAL_MERGE(partial_merge, float, stats_merge)
DEFINE_PARTIAL_MERGE(lanes_merge, FLOATV, stats_merge_lanes)

/* The gradient mask of a fused ReLU: dy where the forward output was positive. */
#define RELU_MASK(dy, y) select((FLOATV)0.0f, (dy), isgreater((y), (FLOATV)0.0f))

/* Tree-merges the partials of a work-group held in local memory, within each run of `width`
 * work-items (a power of two): neighbours first, then neighbouring pairs, ..., the tree of
 * merge_sets' stack (bn_channel's teams rely on it). Every work-item reaches every barrier. */
static void group_tree_merge(__local float *cnt, __local float *a, __local float *b, uint lid,
                             uint width, int mode)
{
    for (uint stride = 1; stride < width; stride *= 2) {
        barrier(CLK_LOCAL_MEM_FENCE);
        if ((lid & (2 * stride - 1)) == 0) {
            float n = cnt[lid], ra = a[lid], rb = b[lid];
            partial_merge(&n, &ra, &rb, cnt[lid + stride], a[lid + stride], b[lid + stride], mode);
            cnt[lid] = n;
            a[lid] = ra;
            b[lid] = rb;
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
}

/* The sum of v over the work-items of a work-group whose local ids differ only in bits lo..hi/2
 * (powers of two, lo < hi <= WG_SIZE), by a fixed tree, given to each of them: runs of `width`
 * neighbours (lo 1, hi width), or every `lanes`-th work-item (lo lanes, hi WG_SIZE). Every
 * work-item reaches every barrier; the first one frees l from its previous use. For T = float
 * (tree_sum), two sums at once (tree_sum_pair) or a vector of lanes summed lane by lane
 * (tree_sum_lanes). */
#define DEFINE_TREE_SUM(name, T)                                                                   \
    static T name(T v, __local T *l, uint lid, uint lo, uint hi)                                   \
    {                                                                                              \
        barrier(CLK_LOCAL_MEM_FENCE);                                                              \
        l[lid] = v;                                                                                \
        for (uint stride = hi / 2; stride >= lo; stride /= 2) {                                    \
            barrier(CLK_LOCAL_MEM_FENCE);                                                          \
            if ((lid & (hi - 1)) < stride)                                                         \
                l[lid] += l[lid + stride];                                                         \
        }                                                                                          \
        barrier(CLK_LOCAL_MEM_FENCE);                                                              \
        return l[(lid & ~(hi - 1)) | (lid & (lo - 1))];                                            \
    }

DEFINE_TREE_SUM(tree_sum, float)
DEFINE_TREE_SUM(tree_sum_pair, float2)
DEFINE_TREE_SUM(tree_sum_lanes, FLOATV)

/* VEC values from p + offset, of which lanes_left (when fewer than VEC) exist: the others read
 * as 0 (channels past C, values past a plane's end). */
static FLOATV load_lanes(__global const DATA_T *p, ulong offset, long lanes_left)
{
    if (lanes_left >= VEC)
        return LOADV(p + offset, 0);
#if VEC == 1
    return 0.0f;
#else
    float lanes[VEC];
    for (uint i = 0; i < VEC; i++)
        lanes[i] = (long)i < lanes_left ? LOAD(p, offset + i) : 0.0f;
    return LOADV(lanes, 0);
#endif
}

/* Stores the first `lanes_left` lanes of v (all of them when lanes_left >= VEC). */
static void store_lanes(__global DATA_T *p, ulong offset, long lanes_left, FLOATV v)
{
    if (lanes_left >= VEC) {
        STOREV(p + offset, 0, v);
        return;
    }
#if VEC > 1
    float lanes[VEC];
    STOREV(lanes, 0, v);
    for (uint i = 0; i < VEC && (long)i < lanes_left; i++)
        STORE(p, offset + i, lanes[i]);
#endif
}

/* v with the lanes at and past lanes_left set to 0. */
static FLOATV lane_select(FLOATV v, long lanes_left)
{
#if VEC == 1
    return lanes_left >= 1 ? v : 0.0f;
#else
    if (lanes_left >= VEC)
        return v;
    float lanes[VEC];
    STOREV(lanes, 0, v);
    for (uint i = 0; i < VEC; i++)
        lanes[i] = (long)i < lanes_left ? lanes[i] : 0.0f;
    return LOADV(lanes, 0);
#endif
}

/* The rows of partial set s in channels-last: with `per_sample` sets per sample of M rows
 * (GroupNorm's statistics are per sample; batch norm has one sample), set s takes row pairs
 * [j*P/k, (j+1)*P/k) of sample s / k, j = s % k. */
static void set_rows(ulong s, uint per_sample, ulong M, ulong *r_begin, ulong *r_end, ulong *sample)
{
    const ulong n = s / per_sample, j = s - n * per_sample, pairs = (M + 1) / 2;
    const ulong p_end = (j + 1) * pairs / per_sample;
    *sample = n;
    *r_begin = n * M + 2 * (j * pairs / per_sample);
    *r_end = n * M + (2 * p_end < M ? 2 * p_end : M);
}

/* Per-group values stat[r_first + c / Cg] for channels c0.. (the lanes); Cg = 1: per channel. */
static FLOATV group_lanes(__global const float *stat, ulong r_first, ulong c0, ulong Cg,
                          long lanes_left)
{
    if (Cg == 1)
        return load_lanes(stat + r_first, c0, lanes_left);
    const ulong last = c0 + (lanes_left < VEC ? (ulong)lanes_left : VEC) - 1;
    if (c0 / Cg == last / Cg)
        return (FLOATV)stat[r_first + c0 / Cg];
#if VEC == 1
    return stat[r_first + c0 / Cg];
#else
    float v[VEC];
    for (uint i = 0; i < VEC; i++)
        v[i] = (long)i < lanes_left ? stat[r_first + (c0 + i) / Cg] : 0.0f;
    return LOADV(v, 0);
#endif
}

/* The channels (or rows) of a work-item's tile from c_first: `tile`, fewer at the end of C, 0
 * past it (the last work-group may have fewer). */
static uint tile_count(ulong c_first, ulong C, uint tile)
{
    return c_first >= C ? 0 : C - c_first < tile ? (uint)(C - c_first) : tile;
}

/* A vector of a channel's N planes taken as one run of N * HW / VEC vectors (channels-first on
 * work-groups of many, HW a multiple of VEC and even; built with FLAT_PLANES): plane n, vector b
 * of it. */
typedef struct flat_pos {
    ulong n, b;
} flat_pos;

static flat_pos flat_at(ulong f, ulong nvec)
{
    const ulong n = quotient(f, nvec);
    flat_pos p = {n, f - n * nvec};
    return p;
}

/* d vectors on, without a division (a step of the walks below crosses one plane at most, unless
 * the planes are shorter than the step) */
static flat_pos flat_add(flat_pos p, ulong d, ulong nvec)
{
    p.b += d;
    while (p.b >= nvec) {
        p.b -= nvec;
        p.n++;
    }
    return p;
}

/* Where work-item sl of `width` starts, in a channel's run of `total` vectors, as partial s of
 * S: the run is cut into steps of `per_step` vectors (a step: one block of every work-item) and
 * each partial takes whole steps, as evenly as they go, so that no work-item idles
 * at the end of each plane and no partial takes a whole plane more than another. */
static void flat_range(ulong total, ulong per_step, ulong s, ulong S, ulong *begin, ulong *end)
{
    const ulong steps = (total + per_step - 1) / per_step;
    *begin = s * steps / S * per_step;
    *end = min((s + 1) * steps / S * per_step, total);
}

/* cf_reduce_tile over vectors [f_begin, f_end) of each channel's run of planes (work-groups of
 * many, pieces = 0), whatever plane each vector lies in: blocks of BLOCK_VECS vectors vs apart,
 * for the statistics as in cf_reduce_tile, and for the gradient sums too, so that a work-item
 * has a block's loads in flight at once. All lanes of every vector are values (HW a multiple of
 * VEC): only the range's end cuts a block short. */
ALWAYS_INLINE void cf_reduce_flat(__global const DATA_T *x, __global const DATA_T *addend,
                                  __global const DATA_T *dy, __global const DATA_T *mask,
                                  __global const float *plane_weight, ulong C, ulong HW,
                                  ulong f_begin, ulong f_end, ulong c_first, uint here, uint sl,
                                  uint width, int mode, const float *k, const float *mu,
                                  float *count, float *mean, float *m2n, FLOATV *g1, FLOATV *g2)
{
    const ulong nvec = HW / VEC, vs = VEC == 1 ? 1 : width, stride = (ulong)width * BLOCK_VECS;
    const ulong first = f_begin + (VEC == 1 ? sl * BLOCK_VECS : sl);
    for (uint t = 0; t < here; t++) {
        const ulong c = c_first + t;
        flat_pos p = flat_at(first, nvec);
        for (ulong f = first; f < f_end; f += stride, p = flat_add(p, stride, nvec)) {
            /* statistics: a = x [+ addend] - k; gradients: a = dy', b = x - mu */
            FLOATV a[BLOCK_VECS], b[BLOCK_VECS], sum = 0.0f, sq = 0.0f;
            const uint live = (uint)min((f_end - f + vs - 1) / vs, (ulong)BLOCK_VECS);
            flat_pos q = p;
#pragma unroll
            for (uint j = 0; j < BLOCK_VECS; j++, q = flat_add(q, vs, nvec)) {
                const ulong o = (q.n * C + c) * HW + q.b * VEC;
                a[j] = b[j] = 0.0f;
                if (j < live && mode == REDUCE_STATS) {
                    a[j] = LOADV(x + o, 0) + (addend ? LOADV(addend + o, 0) : 0.0f) - k[t];
                } else if (j < live) {
                    a[j] = LOADV(dy + o, 0);
                    if (mask)
                        a[j] = RELU_MASK(a[j], LOADV(mask + o, 0));
                    if (plane_weight)
                        a[j] *= LOADV(plane_weight + q.b * VEC, 0);
                    b[j] = LOADV(x + o, 0) - mu[t];
                }
                sum += a[j];
            }
            const float bn = (float)(live * VEC);
            if (mode == REDUCE_GRAD) {
#pragma unroll
                for (uint j = 0; j < BLOCK_VECS; j++)
                    sq += a[j] * b[j]; /* (0 past the range's end) */
                g1[t] += sum;
                g2[t] += sq;
                count[t] += bn;
                continue;
            }
            /* a whole block divides by a constant (a multiplication where it is a power of two) */
            const float bmean =
                live == BLOCK_VECS ? HSUM(sum) / (float)(BLOCK_VECS * VEC) : HSUM(sum) / bn;
#pragma unroll
            for (uint j = 0; j < BLOCK_VECS; j++) {
                const FLOATV d = a[j] - bmean;
                if (j < live)
                    sq += d * d;
            }
            stats_merge(&count[t], &mean[t], &m2n[t], bn, bmean, HSUM(sq) / pow2_floor(bn));
        }
    }
}

/* Channels-first stage 1 of the `here` channels c_first.. over units [u_begin, u_end) (a unit is
 * piece q of plane n: its vectors from q*B/pieces to (q+1)*B/pieces blocks of BLOCK_VECS vectors;
 * every vector starts at an even value, so data in pairs stay exact), as work-item sl of the
 * `width` that share them: statistics of x [+ addend] - k[t] (count, mean, m2n), or the gradient
 * sums (count, g1 = sum dy', g2 = sum dy' * (x - mu[t]), lane by lane), with the pivots k[t] and
 * means mu[t] (mean_in[c / mean_div]) it sets first. */
ALWAYS_INLINE void cf_reduce_tile(__global const DATA_T *x, __global const DATA_T *addend,
                                  __global const DATA_T *dy, __global const DATA_T *mask,
                                  __global const float *plane_weight,
                                  __global const float *mean_in, ulong mean_div, ulong C, ulong HW,
                                  uint pieces, ulong u_begin, ulong u_end, ulong c_first,
                                  uint here, uint sl, uint width, int mode, float *k, float *mu,
                                  float *count, float *mean, float *m2n, FLOATV *g1, FLOATV *g2)
{
    for (uint t = 0; t < PLANE_TILE; t++) {
        const ulong c = c_first + t;
        count[t] = mean[t] = m2n[t] = k[t] = mu[t] = 0.0f;
        g1[t] = g2[t] = 0.0f;
        if (t >= here)
            continue;
        if (mode == REDUCE_GRAD && mean_in)
            mu[t] = mean_in[c / mean_div]; /* GroupNorm's planes: the group's mean */
        /* the pivot: element (n, c, position) = (0, c, 0) */
        if (mode == REDUCE_STATS)
            k[t] = LOAD(x, c * HW) + (addend ? LOAD(addend, c * HW) : 0.0f);
    }
    const ulong nvec = (HW + VEC - 1) / VEC; /* vectors per plane, the last maybe partial */
#if FLAT_PLANES /* (a build option: the plane-by-plane builds do not pay its registers) */
    if (pieces == 0) {
        cf_reduce_flat(x, addend, dy, mask, plane_weight, C, HW, u_begin, u_end, c_first, here,
                       sl, width, mode, k, mu, count, mean, m2n, g1, g2);
        return;
    }
#endif
    const ulong nblk = (nvec + BLOCK_VECS - 1) / BLOCK_VECS;
    for (ulong u = u_begin; u < u_end; u++) {
        const ulong n = u / pieces, q = u - n * pieces; /* (no %: one division) */
        const ulong b_end = min((q + 1) * nblk / pieces * BLOCK_VECS, nvec);
        const ulong b_begin = min(q * nblk / pieces * BLOCK_VECS, nvec);
        for (uint t = 0; t < here; t++) {
            const ulong base = (n * C + c_first + t) * HW;
            /* statistics: blocks of up to BLOCK_VECS vectors, each an exact two-pass mean, m2n.
             * A block's vectors are vs apart: the `width` work-items that share the plane take
             * neighbouring vectors, so that each of a block's loads is one run across them (a
             * GPU's coalesced load; contiguous blocks gave each load a stride of BLOCK_VECS
             * vectors). Scalars (VEC 1) keep consecutive values, so that pairs of values stay in
             * one block; vectors start at even values anyway. One work-item (CPUs): the same. */
            const ulong vs = VEC == 1 ? 1 : width;
            for (ulong b = b_begin + (VEC == 1 ? sl * BLOCK_VECS : sl);
                 mode == REDUCE_STATS && b < b_end; b += width * BLOCK_VECS) {
                const ulong last = b + (BLOCK_VECS - 1) * vs; /* the block's last vector */
                FLOATV vals[BLOCK_VECS], sum = 0.0f, sq = 0.0f;
                if (last < b_end && (last + 1) * VEC <= HW) {
                    /* a whole block: fixed trip counts, no lane masks */
                    __global const DATA_T *px = x + base + b * VEC;
#pragma unroll
                    for (uint j = 0; j < BLOCK_VECS; j++) {
                        vals[j] = LOADV(px, j * vs);
                        if (addend)
                            vals[j] += LOADV(addend + base + b * VEC, j * vs);
                        vals[j] -= k[t];
                        sum += vals[j];
                    }
                    const float bn = (float)(BLOCK_VECS * VEC), bmean = HSUM(sum) / bn;
#pragma unroll
                    for (uint j = 0; j < BLOCK_VECS; j++) {
                        FLOATV d = vals[j] - bmean;
                        sq += d * d;
                    }
                    stats_merge(&count[t], &mean[t], &m2n[t], bn, bmean,
                                HSUM(sq) / pow2_floor(bn));
                    continue;
                }
                /* the end of a piece or plane: vectors past b_end left out, the plane's partial
                 * last vector by its lanes */
                float bn = 0.0f;
#pragma unroll
                for (uint j = 0; j < BLOCK_VECS; j++) {
                    const ulong v = b + j * vs;
                    const long lanes = (long)HW - (long)(v * VEC);
                    vals[j] = 0.0f;
                    if (v < b_end) {
                        vals[j] = load_lanes(x + base, v * VEC, lanes);
                        if (addend)
                            vals[j] += load_lanes(addend + base, v * VEC, lanes);
                        vals[j] = lane_select(vals[j] - k[t], lanes);
                        sum += vals[j];
                        bn += lanes < VEC ? (float)lanes : (float)VEC;
                    }
                }
                const float bmean = HSUM(sum) / bn;
#pragma unroll
                for (uint j = 0; j < BLOCK_VECS; j++) {
                    const ulong v = b + j * vs;
                    FLOATV d = lane_select(vals[j] - bmean, (long)HW - (long)(v * VEC));
                    if (v < b_end)
                        sq += d * d;
                }
                stats_merge(&count[t], &mean[t], &m2n[t], bn, bmean, HSUM(sq) / pow2_floor(bn));
            }
            /* gradients: missing lanes load as 0 and add nothing */
            for (ulong b = b_begin + sl; mode == REDUCE_GRAD && b < b_end; b += width) {
                const long lanes = (long)(HW - b * VEC);
                FLOATV g = load_lanes(dy + base, b * VEC, lanes);
                if (mask)
                    g = RELU_MASK(g, load_lanes(mask + base, b * VEC, lanes));
                if (plane_weight)
                    g *= load_lanes(plane_weight, b * VEC, lanes);
                g1[t] += g;
                g2[t] += g * (load_lanes(x + base, b * VEC, lanes) - mu[t]);
                count[t] += lanes < VEC ? (float)lanes : (float)VEC;
            }
        }
    }
}

/* A value of a fused kernel's statistics: x [+ addend] - k, `left` lanes of VEC from o. */
static FLOATV pivoted(__global const DATA_T *x, __global const DATA_T *addend, ulong o, long left,
                      float k)
{
    FLOATV v = load_lanes(x, o, left);
    if (addend)
        v += load_lanes(addend, o, left);
    return lane_select(v - k, left);
}

/* Sums f(v) over the run of `len` values at o of pivoted values v = x [+ addend] - k: f(v) = v
 * (cached_sum), or (v - center) * scale * (v - center) (cached_sum_squares: scale = 1 / P gives
 * m2n directly, and a term does not overflow where the plain square would, deviations past
 * 2^64, while the sum stays within about twice the largest square). Four accumulators in four
 * variables (an array or a flag here and PoCL keeps them in memory), so the adds are
 * independent; missing lanes of the run's last vector add nothing. name##_lanes: the lane sums,
 * before the horizontal one. The one-launch kernels' "cached statistics" take two passes with
 * them over values they read again while in cache (the mean, then the squared deviations from
 * it; pivot k = the first value): exact for exact data, with no per-block merges. name##_call:
 * the sum as a call, where inlined it measured slower (gn_forward_fused_residual). */
#define TERM_VALUE(v, center, scale) (v)
#define TERM_SQUARE(v, center, scale) (((v) - (center)) * (scale) * ((v) - (center)))
#define DEFINE_CACHED_SUM(name, TERM)                                                              \
    ALWAYS_INLINE FLOATV name##_lanes(__global const DATA_T *x, __global const DATA_T *addend,     \
                                      ulong o, ulong len, float k, float center, float scale)      \
    {                                                                                              \
        const ulong whole = len / VEC;                                                             \
        FLOATV a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;                                         \
        ulong j = 0;                                                                               \
        for (; j + 4 <= whole; j += 4) {                                                           \
            const FLOATV v0 = pivoted(x, addend, o + j * VEC, VEC, k);                             \
            const FLOATV v1 = pivoted(x, addend, o + (j + 1) * VEC, VEC, k);                       \
            const FLOATV v2 = pivoted(x, addend, o + (j + 2) * VEC, VEC, k);                       \
            const FLOATV v3 = pivoted(x, addend, o + (j + 3) * VEC, VEC, k);                       \
            a0 += TERM(v0, center, scale);                                                         \
            a1 += TERM(v1, center, scale);                                                         \
            a2 += TERM(v2, center, scale);                                                         \
            a3 += TERM(v3, center, scale);                                                         \
        }                                                                                          \
        for (; j < whole; j++)                                                                     \
            a0 += TERM(pivoted(x, addend, o + j * VEC, VEC, k), center, scale);                    \
        if (whole * VEC < len) {                                                                   \
            const long left = (long)(len - whole * VEC);                                           \
            const FLOATV v = pivoted(x, addend, o + whole * VEC, left, k);                         \
            a1 += lane_select(TERM(v, center, scale), left);                                       \
        }                                                                                          \
        return (a0 + a1) + (a2 + a3);                                                              \
    }                                                                                              \
    ALWAYS_INLINE float name(__global const DATA_T *x, __global const DATA_T *addend, ulong o,    \
                             ulong len, float k, float center, float scale)                        \
    {                                                                                              \
        return HSUM(name##_lanes(x, addend, o, len, k, center, scale));                            \
    }                                                                                              \
    NOINLINE float name##_call(__global const DATA_T *x, __global const DATA_T *addend, ulong o,  \
                               ulong len, float k, float center, float scale)                      \
    {                                                                                              \
        return name(x, addend, o, len, k, center, scale);                                          \
    }

DEFINE_CACHED_SUM(cached_sum, TERM_VALUE)
DEFINE_CACHED_SUM(cached_sum_squares, TERM_SQUARE)

/* Channels-first: a channel is N planes of HW contiguous values, each ceil(HW / VEC) vectors
 * (the last one partial when VEC does not divide HW: its missing lanes load as 0 and are left
 * out). The channel's work is cut into N * pieces units (a unit is a range of vectors of one
 * plane); partial s takes units [s*U/S, (s+1)*U/S). With pieces 0 (work-groups of many,
 * flat_planes: FLAT_PLANES, HW even and a multiple of VEC) a channel's planes are instead one run
 * of vectors that the partials share in whole steps of the work-group (cf_reduce_flat). A
 * work-item reduces `tile` (<= PLANE_TILE) consecutive channels, plane by plane, so that small
 * planes still make long contiguous runs (a CPU's prefetcher needs them); a work-group serves
 * per_group such tiles (small planes, short rows) with WG_SIZE / per_group work-items each.
 * Work-groups: (S x WG_SIZE) x ceil(C / (per_group * tile)). */
__kernel __attribute__((reqd_work_group_size(WG_SIZE, 1, 1))) void
bn_reduce_cf(__global const DATA_T *x, __global const DATA_T *addend, __global const DATA_T *dy,
             __global const DATA_T *mask, __global const float *plane_weight,
             __global const float *mean_in, ulong mean_div, ulong N, ulong C, ulong HW,
             uint pieces, uint S, uint per_group, uint tile, int mode, __global float *sets,
             __global float *pivots)
{
    __local float l_cnt[WG_SIZE], l_mean[WG_SIZE], l_m2n[WG_SIZE];
    const uint lid = get_local_id(0), width = WG_SIZE / per_group;
    const uint sub = lid / width, sl = lid - sub * width; /* tile within the group, item */
    const ulong s = get_group_id(0);
    const ulong c_first = (get_group_id(1) * per_group + sub) * tile;
    const uint here = tile_count(c_first, C, tile);
    /* units [u_begin, u_end) of N * pieces, or (pieces 0) vectors of the channel's run */
    const ulong units = N * pieces;
    ulong u_begin = s * units / S, u_end = (s + 1) * units / S;
#if FLAT_PLANES
    if (pieces == 0)
        flat_range(N * (HW / VEC), (ulong)width * BLOCK_VECS, s, S, &u_begin, &u_end);
#endif

    /* per channel t of the tile: statistics of x - k[t] (or gradient sums, lane by lane) */
    float count[PLANE_TILE], mean[PLANE_TILE], m2n[PLANE_TILE], k[PLANE_TILE], mu[PLANE_TILE];
    FLOATV g1[PLANE_TILE], g2[PLANE_TILE];
    cf_reduce_tile(x, addend, dy, mask, plane_weight, mean_in, mean_div, C, HW, pieces,
                   here ? u_begin : u_end, u_end, c_first, here, sl, width, mode, k, mu, count,
                   mean, m2n, g1, g2);
    /* per channel of the tile: a tree over the work-items that share it (the same `tile` for
     * every work-item, so every work-item reaches every barrier) */
    for (uint t = 0; t < tile; t++) {
        barrier(CLK_LOCAL_MEM_FENCE);
        l_cnt[lid] = count[t];
        l_mean[lid] = mode == REDUCE_GRAD ? HSUM(g1[t]) : mean[t];
        l_m2n[lid] = mode == REDUCE_GRAD ? HSUM(g2[t]) : m2n[t];
        group_tree_merge(l_cnt, l_mean, l_m2n, lid, width, mode);
        if (sl == 0 && t < here) {
            const ulong c = c_first + t;
            __global float *set = sets + s * 3 * C;
            set[c] = l_cnt[lid];
            set[C + c] = l_mean[lid];
            set[2 * C + c] = l_m2n[lid];
            if (s == 0 && pivots)
                pivots[c] = k[t];
        }
    }
}

/* Channels-last statistics of channels c0.. (`left` of them from c0 to C, at most VEC) over rows
 * r0 + j * step, j < nr <= ROW_BLOCK, of x - k: an exact two-pass block mean and m2n. Whole
 * blocks divide by multiplying with the exact reciprocal of a power of two (a vector division
 * costs as much as the loads it follows). */
ALWAYS_INLINE
void row_block_stats(__global const DATA_T *x, ulong r0, uint nr, ulong step, ulong C, ulong c0,
                     long left, FLOATV k, FLOATV *mean, FLOATV *m2n)
{
    FLOATV vals[ROW_BLOCK], sum = 0.0f, second = 0.0f;
    /* fixed trip counts, so the values stay in registers (looped over nr, a short block's went
     * through the stack, and with the streams' old layout, where 6 of the 7 blocks of a partial
     * of N8 C2048 7x7 were short, held a third of the kernel's perf samples); a short block (the
     * end of a partial's rows, or of bn_reduce_cl's) skips the rows it lacks */
#pragma unroll
    for (uint j = 0; j < ROW_BLOCK; j++) {
        vals[j] = 0.0f;
        if (j < nr) {
            vals[j] = load_lanes(x, (r0 + j * step) * C + c0, left) - k;
            sum += vals[j];
        }
    }
    const FLOATV bmean = nr == ROW_BLOCK ? sum * (1.0f / ROW_BLOCK) : sum / (float)nr;
#pragma unroll
    for (uint j = 0; j < ROW_BLOCK; j++)
        if (j < nr)
            second += (vals[j] - bmean) * (vals[j] - bmean);
    *mean = bmean;
    *m2n = second * (1.0f / pow2_floor((float)nr));
}

/* row_block_stats merged into (count, mean, m2n) with Chan's formula */
ALWAYS_INLINE
void row_block_merge(__global const DATA_T *x, ulong r0, uint nr, ulong step, ulong C, ulong c0,
                     long left, FLOATV k, float *count, FLOATV *mean, FLOATV *m2n)
{
    FLOATV bmean, bm2n;
    row_block_stats(x, r0, nr, step, C, c0, left, k, &bmean, &bm2n);
    stats_merge_lanes(count, mean, m2n, (float)nr, bmean, bm2n);
}

/* Channels-last: row r (r = n * spatial + position) holds C contiguous values. A work-item owns
 * ITEM_TILE consecutive vectors of VEC channels (one vector lane per channel) and takes blocks of
 * up to ROW_BLOCK rows (even, starting at even rows), each an exact two-pass mean and m2n, or for
 * gradients every slots-th row: a CPU
 * streams whole rows (ITEM_TILE x VEC channels), a GPU has ITEM_TILE = 1 and `lanes` work-items
 * side by side on a row. lanes = item tiles per work-group (a power of two dividing WG_SIZE);
 * WG_SIZE / lanes work-items share the rows of one tile. Partial s takes row pairs
 * [s*P/S, (s+1)*P/S). Work-groups: (channel tiles x WG_SIZE) x S. */
__kernel __attribute__((reqd_work_group_size(WG_SIZE, 1, 1))) void
bn_reduce_cl(__global const DATA_T *x, __global const DATA_T *dy, __global const DATA_T *mask,
             __global const float *mean_in, __global const float *row_mean,
             __global const float *row_rstd, ulong M, ulong C, ulong mean_cg, uint lanes, uint S,
             uint per_sample, int mode, __global float *sets, __global float *pivots)
{
#if WG_SIZE > 1 /* (work-groups of one never launch it: not compiled for them) */
    __local float l_cnt[WG_SIZE];
    __local FLOATV l_mean[WG_SIZE], l_m2n[WG_SIZE];
    const uint lid = get_local_id(0);
    const uint slot = lid / lanes, slots = WG_SIZE / lanes;
    const ulong c_item = (get_group_id(0) * lanes + (lid - slot * lanes)) * ITEM_TILE * VEC;
    const ulong s = get_group_id(1);
    ulong r_begin, r_end, n;
    set_rows(s, per_sample, M, &r_begin, &r_end, &n);

    /* per channel vector t: lane-wise statistics (or gradient sums), the mean (gradients), the
     * pivot (statistics: row 0) */
    float count[ITEM_TILE];
    FLOATV mean[ITEM_TILE], m2n[ITEM_TILE], mu[ITEM_TILE], k[ITEM_TILE];
    for (uint t = 0; t < ITEM_TILE; t++) {
        const ulong c0 = c_item + t * VEC;
        const long left = (long)C - (long)c0; /* <= 0: past the last channel */
        count[t] = 0.0f;
        mean[t] = m2n[t] = mu[t] = k[t] = 0.0f;
        if (mode == REDUCE_GRAD && left > 0 && mean_in)
            mu[t] = group_lanes(mean_in, n * (C / mean_cg), c0, mean_cg, left);
        if (mode == REDUCE_STATS && left > 0)
            k[t] = load_lanes(x, c0, left);
    }
    /* gradients: plain sums, row by row (a row's tiles are one contiguous run) */
    for (ulong r = r_begin + slot; mode == REDUCE_GRAD && r < r_end; r += slots) {
        /* xhat with the statistics of each row (LayerNorm's dweight), else x - mean */
        const float rm = row_rstd && row_mean ? row_mean[r] : 0.0f;
        const float rs = row_rstd ? row_rstd[r] : 0.0f;
        for (uint t = 0; t < ITEM_TILE; t++) {
            const ulong c0 = c_item + t * VEC;
            const long left = (long)C - (long)c0;
            if (left <= 0)
                break;
            FLOATV g = load_lanes(dy, r * C + c0, left);
            if (mask)
                g = RELU_MASK(g, load_lanes(mask, r * C + c0, left));
            const FLOATV xv = load_lanes(x, r * C + c0, left);
            mean[t] += g;
            m2n[t] += g * (row_rstd ? (xv - rm) * rs : xv - mu[t]);
            count[t] += 1.0f;
        }
    }
    /* statistics: blocks of up to ROW_BLOCK rows, each an exact two-pass mean and m2n */
    for (ulong r0 = r_begin + slot * ROW_BLOCK; mode == REDUCE_STATS && r0 < r_end;
         r0 += slots * ROW_BLOCK) {
        const uint nr = r_end - r0 < ROW_BLOCK ? (uint)(r_end - r0) : ROW_BLOCK;
        for (uint t = 0; t < ITEM_TILE; t++) {
            const ulong c0 = c_item + t * VEC;
            const long left = (long)C - (long)c0;
            if (left <= 0)
                break;
            row_block_merge(x, r0, nr, 1, C, c0, left, k[t], &count[t], &mean[t], &m2n[t]);
        }
    }
    /* per channel vector: a tree over the work-items that share it, all lanes at once */
    for (uint t = 0; t < ITEM_TILE; t++) {
        const ulong c0 = c_item + t * VEC;
        const long left = (long)C - (long)c0;
        barrier(CLK_LOCAL_MEM_FENCE);
        l_cnt[lid] = count[t];
        l_mean[lid] = mean[t];
        l_m2n[lid] = m2n[t];
        for (uint stride = slots / 2; stride > 0; stride >>= 1) {
            barrier(CLK_LOCAL_MEM_FENCE);
            if (slot < stride) {
                const uint other = lid + stride * lanes;
                float cn = l_cnt[lid];
                FLOATV mn = l_mean[lid], q = l_m2n[lid];
                lanes_merge(&cn, &mn, &q, l_cnt[other], l_mean[other], l_m2n[other], mode);
                l_cnt[lid] = cn;
                l_mean[lid] = mn;
                l_m2n[lid] = q;
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        if (slot == 0 && left > 0) {
            __global float *set = sets + s * 3 * C;
            /* lane i of this vector, read through the work-item's own local slot */
            __local const float *lane_mean = (__local const float *)&l_mean[lid];
            __local const float *lane_m2n = (__local const float *)&l_m2n[lid];
            for (uint i = 0; i < VEC && (long)i < left; i++) {
                set[c0 + i] = l_cnt[lid];
                set[C + c0 + i] = lane_mean[i];
                set[2 * C + c0 + i] = lane_m2n[i];
            }
            if (s == 0 && pivots && mode == REDUCE_STATS)
                for (uint i = 0; i < VEC && (long)i < left; i++)
                    pivots[c0 + i] = LOAD(x, c0 + i); /* row 0 */
        }
    }
#endif
}

/* One vector's gradient sums at o (`left` values): sum dy' and sum dy' * (x - mu), dy' = dy
 * masked by mask > 0 when given; dy' also goes to masked_dy when given. */
ALWAYS_INLINE void grad_unit(__global const DATA_T *x, __global const DATA_T *dy,
                             __global const DATA_T *mask, __global DATA_T *masked_dy, ulong o,
                             long left, FLOATV mu, FLOATV *sum, FLOATV *second)
{
    FLOATV g = load_lanes(dy, o, left);
    if (mask)
        g = RELU_MASK(g, load_lanes(mask, o, left));
    if (masked_dy)
        store_lanes(masked_dy, o, left, g);
    *sum += g;
    *second += g * lane_select(load_lanes(x, o, left) - mu, left);
}

/* Gradient sums over rows r0 + j * step, j < nr, of channels c0.. (`left` to the row's end),
 * without per-row statistics. */
ALWAYS_INLINE void grad_rows(__global const DATA_T *x, __global const DATA_T *dy,
                             __global const DATA_T *mask, __global DATA_T *masked_dy, ulong r0,
                             uint nr, ulong step, ulong C, ulong c0, long left, FLOATV mu,
                             FLOATV *sum, FLOATV *second)
{
    for (uint j = 0; j < nr; j++)
        grad_unit(x, dy, mask, masked_dy, (r0 + j * step) * C + c0, left, mu, sum, second);
}

/* Gradient sums over the run of `len` values at o: whole vectors two at a time into independent
 * sums, then the run's partial one. */
ALWAYS_INLINE void plane_grad_sums(__global const DATA_T *x, __global const DATA_T *dy,
                                   __global const DATA_T *mask, ulong o, ulong len, float mu,
                                   FLOATV *sum, FLOATV *second)
{
    const ulong whole = len / VEC * VEC;
    FLOATV a1 = 0.0f, a2 = 0.0f, b1 = 0.0f, b2 = 0.0f;
    ulong p = 0;
    for (; p + 2 * VEC <= whole; p += 2 * VEC) {
        grad_unit(x, dy, mask, NULL, o + p, VEC, mu, &a1, &a2);
        grad_unit(x, dy, mask, NULL, o + p + VEC, VEC, mu, &b1, &b2);
    }
    for (; p < whole; p += VEC)
        grad_unit(x, dy, mask, NULL, o + p, VEC, mu, &a1, &a2);
    if (whole < len)
        grad_unit(x, dy, mask, NULL, o + whole, (long)(len - whole), mu, &b1, &b2);
    *sum = a1 + b1;
    *second = a2 + b2;
}

/* bn_reduce_rows' options, as bits that its common sets pass as constants (no vector tests
 * them): gradients (else statistics), ReLU's mask, the masked dy written, a mean per channel
 * (mean_in with mean_cg 1), a mean per group of channels, per-row values (layer norm). */
#define ROWS_GRAD 1
#define ROWS_MASK 2
#define ROWS_MASKED_DY 4
#define ROWS_MEAN 8
#define ROWS_GROUP_MEAN 16
#define ROWS_PER_ROW 32

/* How a statistics block of bn_reduce_rows merges: into the partial set, or held (first of a
 * pair), or merged with the held one and then into the set (second of a pair) */
#define BLOCK_ALONE 0
#define BLOCK_FIRST 1
#define BLOCK_SECOND 2

/* bn_reduce_rows' work on channels c0.. (`left` of them to C) for the block of rows r0 + j * step,
 * j < nr: the gradient sums (and each row's, into row_a, row_b), or the statistics, merged into
 * the partial set as `phase` says (held: 2C floats). mean_in + mean_first: this sample's means. */
ALWAYS_INLINE
void rows_vector(__global const DATA_T *x, __global const DATA_T *dy, __global const DATA_T *mask,
                 __global DATA_T *masked_dy, __global const float *mean_in,
                 __global const float *row_mean, __global const float *row_rstd,
                 __global const float *row_weight, __global float *row_sets, ulong mean_first,
                 ulong C, ulong mean_cg, int options, __global float *set, __global float *held,
                 int phase, ulong r0, uint nr, ulong step, float count, ulong c0, long left,
                 FLOATV *row_a, FLOATV *row_b)
{
    if (!(options & ROWS_GRAD)) {
        FLOATV bmean, bm2n; /* the pivot: row 0 */
        row_block_stats(x, r0, nr, step, C, c0, left, load_lanes(x, c0, left), &bmean, &bm2n);
        if (phase == BLOCK_FIRST) {
            store_lanes(held, c0, left, bmean);
            store_lanes(held + C, c0, left, bm2n);
            return;
        }
        float n = (float)nr;
        if (phase == BLOCK_SECOND) { /* equal counts, a power of two: an exact merge */
            FLOATV hmean = load_lanes(held, c0, left), hm2n = load_lanes(held + C, c0, left);
            stats_merge_lanes(&n, &hmean, &hm2n, (float)nr, bmean, bm2n);
            bmean = hmean;
            bm2n = hm2n;
        }
        FLOATV a = load_lanes(set + C, c0, left), b = load_lanes(set + 2 * C, c0, left);
        float cnt = count;
        stats_merge_lanes(&cnt, &a, &b, n, bmean, bm2n);
        store_lanes(set + C, c0, left, a);
        store_lanes(set + 2 * C, c0, left, b);
        return;
    }
    FLOATV sum = 0.0f, second = 0.0f;
    /* xhat with the statistics of each row (LayerNorm's dweight), else x - mean */
    const FLOATV mu = options & ROWS_MEAN ? load_lanes(mean_in + mean_first, c0, left)
                      : options & ROWS_GROUP_MEAN
                          ? group_lanes(mean_in, mean_first, c0, mean_cg, left)
                          : (FLOATV)0.0f;
    const FLOATV w = row_weight ? load_lanes(row_weight, c0, left) : (FLOATV)1.0f;
    if (!(options & ROWS_PER_ROW)) { /* batch and group norm */
        if ((options & ROWS_MASK) && (options & ROWS_MASKED_DY))
            grad_rows(x, dy, mask, masked_dy, r0, nr, step, C, c0, left, mu, &sum, &second);
        else if (options & ROWS_MASK)
            grad_rows(x, dy, mask, NULL, r0, nr, step, C, c0, left, mu, &sum, &second);
        else
            grad_rows(x, dy, NULL, NULL, r0, nr, step, C, c0, left, mu, &sum, &second);
    }
    for (uint j = 0; (options & ROWS_PER_ROW) && j < nr; j++) {
        const ulong r = r0 + j * step;
        const float rm = row_mean ? row_mean[r] : 0.0f;
        FLOATV g = load_lanes(dy, r * C + c0, left);
        if (mask)
            g = RELU_MASK(g, load_lanes(mask, r * C + c0, left));
        const FLOATV xv = load_lanes(x, r * C + c0, left);
        sum += g;
        second += g * (row_rstd ? (xv - rm) * row_rstd[r] : xv - mu);
        if (row_sets) {
            const FLOATV gw = g * w;
            row_a[j] += gw;
            row_b[j] += gw * (xv - rm);
        }
    }
    const FLOATV a = load_lanes(set + C, c0, left), b = load_lanes(set + 2 * C, c0, left);
    store_lanes(set + C, c0, left, a + sum);
    store_lanes(set + 2 * C, c0, left, b + second);
}

/* bn_reduce_rows' work on the block of rows r0 + j * step, j < nr: rows_vector across the row */
ALWAYS_INLINE void rows_block(__global const DATA_T *x, __global const DATA_T *dy,
                              __global const DATA_T *mask, __global DATA_T *masked_dy,
                              __global const float *mean_in, __global const float *row_mean,
                              __global const float *row_rstd, __global const float *row_weight,
                              __global float *row_sets, ulong mean_first, ulong M, ulong C,
                              ulong mean_cg, int options, __global float *set,
                              __global float *held, int phase, ulong r0, uint nr, ulong step,
                              float count)
{
    FLOATV row_a[ROW_BLOCK], row_b[ROW_BLOCK]; /* row sums, lane by lane */
    for (uint j = 0; j < ROW_BLOCK; j++)
        row_a[j] = row_b[j] = 0.0f;
    /* whole vectors (`left` a constant, so the lane checks fold away), then the partial one */
    const ulong whole = C / VEC * VEC;
    for (ulong c0 = 0; c0 < whole; c0 += VEC)
        rows_vector(x, dy, mask, masked_dy, mean_in, row_mean, row_rstd, row_weight, row_sets,
                    mean_first, C, mean_cg, options, set, held, phase, r0, nr, step, count, c0,
                    VEC, row_a, row_b);
    if (whole < C)
        rows_vector(x, dy, mask, masked_dy, mean_in, row_mean, row_rstd, row_weight, row_sets,
                    mean_first, C, mean_cg, options, set, held, phase, r0, nr, step, count, whole,
                    (long)(C - whole), row_a, row_b);
    for (uint j = 0; row_sets && j < nr; j++) {
        const ulong r = r0 + j * step;
        row_sets[r] = (float)C;
        row_sets[M + r] = HSUM(row_a[j]);
        row_sets[2 * M + r] = HSUM(row_b[j]);
    }
}

/* bn_reduce_rows' work for partial s (rows r_begin..r_end; the sample's means from
 * mean_in + mean_first), its options given; held: 2C floats of its own */
ALWAYS_INLINE void reduce_rows_partial(__global const DATA_T *x, __global const DATA_T *dy,
                                       __global const DATA_T *mask, __global DATA_T *masked_dy,
                                       __global const float *mean_in,
                                       __global const float *row_mean,
                                       __global const float *row_rstd,
                                       __global const float *row_weight, ulong M, ulong C,
                                       ulong mean_cg, int options, __global float *set,
                                       __global float *held, __global float *pivots,
                                       __global float *row_sets, ulong s, ulong r_begin,
                                       ulong r_end, ulong mean_first)
{
    float count = 0.0f; /* the same for every channel */
    const ulong rows = r_end - r_begin;
    /* Block k takes row k of each of `block` equal runs of the partial's rows, so that memory is
     * read as `block` streams in address order: neighbouring rows of 1-2 KiB read in turn cut the
     * prefetchers' streams short, and PoCL read them at half the bandwidth of one stream. */
    if (!(options & ROWS_GRAD)) {
        /* Statistics: ROW_BLOCK runs of an even length (step), then the rest (under 2 ROW_BLOCK
         * rows) in blocks of rows in turn. Blocks k and k + 1 (k even) hold each other's row
         * neighbours and merge as a pair first, so that the rows of a pair (r, r + 1) with r even
         * always meet in one merge of equal counts: data in such pairs around a common mean (field
         * notes 4) then give every merge into the set the same mean, exact in any split. */
        const ulong step = 2 * (rows / (2 * ROW_BLOCK));
        for (ulong r0 = r_begin; r0 < r_begin + step; r0 += 2, count += 2 * ROW_BLOCK) {
            rows_block(x, dy, mask, masked_dy, mean_in, row_mean, row_rstd, row_weight, row_sets,
                       mean_first, M, C, mean_cg, options, set, held, BLOCK_FIRST, r0, ROW_BLOCK,
                       step, count);
            rows_block(x, dy, mask, masked_dy, mean_in, row_mean, row_rstd, row_weight, row_sets,
                       mean_first, M, C, mean_cg, options, set, held, BLOCK_SECOND, r0 + 1,
                       ROW_BLOCK, step, count);
        }
        for (ulong r0 = r_begin + ROW_BLOCK * step; r0 < r_end; r0 += ROW_BLOCK) {
            const uint nr = r_end - r0 < ROW_BLOCK ? (uint)(r_end - r0) : ROW_BLOCK;
            rows_block(x, dy, mask, masked_dy, mean_in, row_mean, row_rstd, row_weight, row_sets,
                       mean_first, M, C, mean_cg, options, set, held, BLOCK_ALONE, r0, nr, 1,
                       count);
            count += (float)nr;
        }
    } else {
        /* Gradients without per-row sums take 4 streams of x and dy, with ReLU's mask 2 (writing
         * the masked dy too, 1 on rows of 4 KiB or more), per-row sums ROW_BLOCK. (Measured on
         * PoCL's CPU device: with 8 streams of each input the gradient sums of 2 KiB rows took no
         * less time than with the rows read in turn, 4 took 0.75-0.9x the time of the op. With
         * the mask on rows of 8 KiB, 2 streams took 0.82x the kernel time of 1.) The last run
         * may be shorter: its block then lacks the last row. */
        const uint block = row_sets                                     ? ROW_BLOCK
                           : !mask                                      ? 4
                           : masked_dy && C * sizeof(DATA_T) >= 4096 ? 1
                                                                        : 2;
        const ulong step = (rows + block - 1) / block;
        for (ulong r0 = r_begin; r0 < r_begin + step; r0++) {
            const uint nr = (uint)((r_begin + rows - r0 + step - 1) / step);
            rows_block(x, dy, mask, masked_dy, mean_in, row_mean, row_rstd, row_weight, row_sets,
                       mean_first, M, C, mean_cg, options, set, held, BLOCK_ALONE, r0, nr, step,
                       count);
            count += (float)nr;
        }
    }
    for (ulong c0 = 0; c0 < C; c0 += VEC) {
        store_lanes(set, c0, (long)(C - c0), (FLOATV)count);
        if (s == 0 && pivots && !(options & ROWS_GRAD))
            store_lanes(pivots, c0, (long)(C - c0), load_lanes(x, c0, (long)(C - c0)));
    }
}

/* Channels-last for a work-group of one work-item (CPUs): partial s's rows across every channel,
 * so that each row is one contiguous run, ROW_BLOCK rows at a time. The exact two-pass blocks and
 * Chan merges of bn_reduce_cl, but the blocks' rows are streams (reduce_rows_partial) and the
 * running values live in the partial set itself (set s belongs to this work-item alone), so no tile
 * of channels has to fit in private memory. sets: S sets of 3C, then 2C floats per work-item for
 * the statistics block it holds. With row_sets (gradients, LayerNorm's backward), the same pass
 * also writes each row's sums, count | sum w*dy | sum w*dy*(x - row_mean) (w = row_weight, 1 when
 * NULL), M each: the row reduction of the backward without a pass of its own. With mask and
 * masked_dy (batch norm's backward of a fused add + ReLU), the masked dy goes to masked_dy, the
 * residual's gradient: the dx pass then reads it alone instead of dy and mask. Work-items: S. */
__kernel void bn_reduce_rows(__global const DATA_T *x, __global const DATA_T *dy,
                             __global const DATA_T *mask, __global DATA_T *masked_dy,
                             __global const float *mean_in, __global const float *row_mean,
                             __global const float *row_rstd, __global const float *row_weight,
                             ulong M, ulong C, ulong mean_cg, uint S, uint per_sample, int mode,
                             __global float *sets, __global float *pivots,
                             __global float *row_sets)
{
#if WG_SIZE == 1 /* (work-groups of many never launch it: not compiled for them) */
    const ulong s = get_global_id(0);
    if (s >= S)
        return;
    ulong r_begin, r_end, n;
    set_rows(s, per_sample, M, &r_begin, &r_end, &n);
    __global float *set = sets + s * 3 * C; /* count | mean or sum dy | m2n or sum dy * xc */
    __global float *held = sets + ((ulong)S * 3 + s * 2) * C; /* (after the S sets) */
    for (ulong c0 = 0; c0 < C; c0 += VEC) {
        store_lanes(set + C, c0, (long)(C - c0), (FLOATV)0.0f);
        store_lanes(set + 2 * C, c0, (long)(C - c0), (FLOATV)0.0f);
    }
    int options = mode == REDUCE_GRAD ? ROWS_GRAD : 0;
    if (mode == REDUCE_GRAD)
        options |= (mask ? ROWS_MASK : 0) | (masked_dy ? ROWS_MASKED_DY : 0) |
                   (!mean_in ? 0 : mean_cg == 1 ? ROWS_MEAN : ROWS_GROUP_MEAN) |
                   (row_mean || row_rstd || row_sets ? ROWS_PER_ROW : 0);
    const ulong mean_first = mean_in ? n * (C / mean_cg) : 0;
    /* batch norm's statistics and gradient sums with the options constants; the rest tests them */
#define ROWS_CASE(set_options)                                                                     \
    if (options == (set_options)) {                                                                \
        reduce_rows_partial(x, dy, mask, masked_dy, mean_in, row_mean, row_rstd, row_weight, M, C, \
                            mean_cg, (set_options), set, held, pivots, row_sets, s, r_begin,      \
                            r_end, mean_first);                                                    \
        return;                                                                                    \
    }
    ROWS_CASE(0)
    ROWS_CASE(ROWS_GRAD | ROWS_MEAN)
    ROWS_CASE(ROWS_GRAD | ROWS_MEAN | ROWS_MASK)
    ROWS_CASE(ROWS_GRAD | ROWS_MEAN | ROWS_MASK | ROWS_MASKED_DY)
#undef ROWS_CASE
    reduce_rows_partial(x, dy, mask, masked_dy, mean_in, row_mean, row_rstd, row_weight, M, C,
                        mean_cg, options, set, held, pivots, row_sets, s, r_begin, r_end,
                        mean_first);
#endif
}

/* 1/sqrt(var + eps) of channel c from a variance, or the invstd itself (1 without either) */
static float given_invstd(__global const float *var, int var_is_invstd, float eps, ulong c)
{
    return !var ? 1.0f : var_is_invstd ? var[c] : 1.0f / sqrt(var[c] + eps);
}

/* Coefficients of y = beta + scale * (x - mean) (the elementwise form that gives y = beta exactly
 * for a constant channel), and a = scale for folding a linear layer's weight. */
static void apply_coefficients(__global float *coef, ulong C, ulong c, float scale, float beta,
                               float mean)
{
    coef[c] = scale;
    coef[C + c] = beta;
    coef[2 * C + c] = scale;
    coef[3 * C + c] = mean;
}

#define CH_FINALIZE 0  /* merge statistics; batch mean/invstd, running stats, apply coefficients */
#define CH_STATS_OUT 1 /* merge statistics; write one (count, mean, variance) set */
#define CH_GRAD 2      /* merge gradient sums; dgamma, dbeta, dx coefficients */
#define CH_COEF 3      /* apply coefficients from given mean and variance-or-invstd */
#define CHF_FROZEN 1   /* CH_GRAD: statistics are constants (frozen batch norm) */
#define CHF_RMS 2      /* RMS norm: no mean subtraction */
#define CHF_STREAM 4   /* one-launch kernels: streaming stores (see FLAG_STREAM) */

/* The end of stage 2 for channel c from its merged statistics (count, mean, m2n): the saved and
 * running statistics, (count, mean, biased variance) into out_sets when given; returns the
 * scale gamma * invstd. */
static float finalize_stats(ulong c, ulong C, float count, float mean, float m2n, float eps,
                            float momentum, int flags, __global const float *gamma,
                            __global float *running_mean, __global float *running_var,
                            __global float *save_mean, __global float *save_invstd,
                            __global float *out_sets)
{
    const float var = stats_variance(count, m2n);
    /* RMS norm divides by the root mean square: mean(x^2) = var + mean^2 */
    const float invstd = 1.0f / sqrt((flags & CHF_RMS ? var + mean * mean : var) + eps);
    if (out_sets) {
        out_sets[c] = count;
        out_sets[C + c] = mean;
        out_sets[2 * C + c] = var;
    }
    if (save_mean)
        save_mean[c] = mean;
    if (save_invstd)
        save_invstd[c] = invstd;
    if (running_mean) {
        running_mean[c] = (1.0f - momentum) * running_mean[c] + momentum * mean;
        running_var[c] = (1.0f - momentum) * running_var[c] +
                         momentum * stats_unbiased_variance(count, m2n);
    }
    return (gamma ? gamma[c] : 1.0f) * invstd;
}

/* CH_GRAD's end for channel c from its sums (count, sum_a, sum_b) = (n, sum dy, sum dy * (x -
 * mean)): dgamma and dbeta when given, and dx = a * dy + b + e * (x - mean). */
static void grad_coefficients(ulong c, float count, float sum_a, float sum_b, float gamma_c,
                              float invstd, int flags, __global float *dgamma,
                              __global float *dbeta, float *a, float *b, float *e)
{
    const float dg = sum_b * invstd;
    if (dgamma)
        dgamma[c] = dg;
    if (dbeta)
        dbeta[c] = sum_a;
    const bool frozen = flags & CHF_FROZEN;
    *a = gamma_c * invstd;
    *b = frozen || (flags & CHF_RMS) ? 0.0f : -*a * sum_a / count;
    *e = frozen ? 0.0f : -*a * invstd * dg / count;
}

/* The sets' tree merge for stage 2: sets [k_begin, k_end), set k's (count, a, b) at k * 3C, read
 * by LOAD_SET for the channel (T = float) or the VEC channels from c0 (T = FLOATV, the sets' counts
 * then the same for every channel: batch norm's stage 1); a stack of partial results whose level
 * k holds a merge of 2^k sets, so the tree is the same whatever the device. */
#define LOAD_SET_ONE(set, C, c, left, q) ((set)[(q) * (C) + (c)])
#define LOAD_SET_LANES(set, C, c, left, q) load_lanes((set) + (q) * (C), (c), (left))
#define DEFINE_SETS_MERGE(name, T, LOAD_SET, merge_fn)                                             \
    /* (n, a, b) := level lvl's merge with (n, a, b), the level's partial first */                 \
    ALWAYS_INLINE void name##_level(float *lv_n, T *lv_a, T *lv_b, uint lvl, float *n, T *a,      \
                                    T *b, int merge_mode)                                          \
    {                                                                                              \
        merge_fn(&lv_n[lvl], &lv_a[lvl], &lv_b[lvl], *n, *a, *b, merge_mode);                      \
        *n = lv_n[lvl];                                                                            \
        *a = lv_a[lvl];                                                                            \
        *b = lv_b[lvl];                                                                            \
    }                                                                                              \
    ALWAYS_INLINE void name(__global const float *sets, uint k_begin, uint k_end,                  \
                            int sets_are_var, ulong C, ulong c, long left, int merge_mode,         \
                            float *count, T *sum_a, T *sum_b)                                      \
    {                                                                                              \
        float lv_n[32];                                                                            \
        T lv_a[32], lv_b[32];                                                                      \
        uint filled = 0; /* bit k set: level k holds a merge of 2^k sets */                       \
        for (uint k = k_begin; k < k_end; k++) {                                                   \
            __global const float *set = sets + (ulong)k * 3 * C;                                   \
            float n = set[c];                                                                      \
            T a = LOAD_SET(set, C, c, left, 1), b = LOAD_SET(set, C, c, left, 2);                  \
            if (sets_are_var && n > 0.0f)                                                          \
                b *= n / pow2_floor(n); /* variance -> m2n */                                      \
            uint lvl = 0;                                                                          \
            for (; filled & (1u << lvl); lvl++) {                                                  \
                name##_level(lv_n, lv_a, lv_b, lvl, &n, &a, &b, merge_mode);                       \
                filled &= ~(1u << lvl);                                                            \
            }                                                                                      \
            lv_n[lvl] = n;                                                                         \
            lv_a[lvl] = a;                                                                         \
            lv_b[lvl] = b;                                                                         \
            filled |= 1u << lvl;                                                                   \
        }                                                                                          \
        float n = 0.0f; /* (count, mean, m2n) or gradient sums */                                  \
        T a = 0.0f, b = 0.0f;                                                                      \
        for (uint lvl = 0; filled >> lvl; lvl++) /* (the levels that hold a merge) */              \
            if (filled & (1u << lvl))                                                              \
                name##_level(lv_n, lv_a, lv_b, lvl, &n, &a, &b, merge_mode);                       \
        *count = n;                                                                                \
        *sum_a = a;                                                                                \
        *sum_b = b;                                                                                \
    }

DEFINE_SETS_MERGE(merge_sets, float, LOAD_SET_ONE, partial_merge)
DEFINE_SETS_MERGE(merge_sets_lanes, FLOATV, LOAD_SET_LANES, lanes_merge)

/* Stage 2: one work-item per channel (or per row or group of the feature-axis norms), or with
 * `lanes` (work-groups of one, sets with the same count for every channel) per VEC channels, their
 * merges a vector's lanes (the same operations as one channel's), or with `team` > 1 (a power of
 * two dividing WG_SIZE, work-groups of WG_SIZE; not with lanes) that many work-items per channel:
 * many sets are a long chain of dependent loads for one work-item (the statistics of a
 * channels-last N8 C64 112x112, 784 sets, took 0.28 ms on an H100). Member m merges the aligned
 * run of `per` sets from m * per (per a power of two), and the members' tree then merges the runs
 * exactly as the one work-item's stack does: the same tree, so the same bits. mean_in NULL means
 * 0 and var_in NULL an invstd of 1 (parameter gradients); with out_sets, CH_FINALIZE also writes
 * (count, mean, biased variance). `sets` holds num_sets partials (m2n form, or (count, mean, var)
 * when sets_are_var). */
__kernel void bn_channel(__global const float *sets, uint num_sets, int sets_are_var,
                         __global const float *pivots, ulong C,
                         int mode, float eps, float momentum, int flags,
                         __global const float *mean_in, __global const float *var_in,
                         int var_in_is_invstd, __global const float *gamma,
                         __global const float *beta, __global float *running_mean,
                         __global float *running_var, __global float *save_mean,
                         __global float *save_invstd, __global float *out_sets,
                         __global float *coef, __global float *dgamma, __global float *dbeta,
                         int lanes, uint team)
{
    __local float l_n[WG_SIZE], l_a[WG_SIZE], l_b[WG_SIZE];
    const ulong c0 = get_global_id(0) / team * (lanes ? VEC : 1);
    const int merge_mode = mode == CH_GRAD ? REDUCE_GRAD : REDUCE_STATS;
    const uint here = lanes ? (C - c0 < VEC ? (uint)(C - c0) : VEC) : 1; /* (if c0 < C) */
    float count, a_lane[VEC], b_lane[VEC];
    if (team > 1) {
        /* every member reaches the tree's barriers, also past C (with no sets) */
        const uint lid = get_local_id(0);
        ulong per = 1; /* (in 64 bits: up to 2^32 - 1 sets) */
        while (per * team < num_sets)
            per *= 2;
        const ulong k_begin = c0 < C ? min((lid & (team - 1)) * per, (ulong)num_sets) : num_sets;
        float n, ma, mb;
        merge_sets(sets, (uint)k_begin, (uint)min(k_begin + per, (ulong)num_sets), sets_are_var,
                   C, c0, 1, merge_mode, &n, &ma, &mb);
        l_n[lid] = n;
        l_a[lid] = ma;
        l_b[lid] = mb;
        group_tree_merge(l_n, l_a, l_b, lid, team, merge_mode);
        /* the team's first member goes on with the channel (no return before the barriers'
         * end: PoCL 3.1 gave zeros with one in this branch) */
        count = l_n[lid];
        a_lane[0] = l_a[lid];
        b_lane[0] = l_b[lid];
    } else if (lanes && c0 < C) {
        FLOATV va, vb;
        merge_sets_lanes(sets, 0, num_sets, 0, C, c0, (long)here, merge_mode, &count, &va, &vb);
        STOREV(a_lane, 0, va);
        STOREV(b_lane, 0, vb);
    } else if (c0 < C) {
        merge_sets(sets, 0, num_sets, sets_are_var, C, c0, 1, merge_mode, &count, &a_lane[0],
                   &b_lane[0]);
    }
    if (c0 >= C || (get_local_id(0) & (team - 1)) != 0)
        return;
    for (uint i = 0; i < here; i++) {
        const ulong c = c0 + i;
        float sum_a = a_lane[i];
        const float sum_b = b_lane[i];
        /* stage-1 partials are relative to the channel's pivot (see the top of this file) */
        if (pivots && count > 0.0f)
            sum_a += pivots[c];
        const float g = gamma ? gamma[c] : 1.0f;
        const float b = beta ? beta[c] : 0.0f;
        if (mode == CH_STATS_OUT) {
            out_sets[c] = count;
            out_sets[C + c] = sum_a;
            out_sets[2 * C + c] = stats_variance(count, sum_b);
            continue;
        }
        if (mode == CH_FINALIZE) {
            apply_coefficients(coef, C, c,
                               finalize_stats(c, C, count, sum_a, sum_b, eps, momentum, flags,
                                              gamma, running_mean, running_var, save_mean,
                                              save_invstd, out_sets),
                               b, sum_a);
            continue;
        }
        const float mean = mean_in ? mean_in[c] : 0.0f;
        const float invstd = given_invstd(var_in, var_in_is_invstd, eps, c);
        if (mode == CH_COEF) {
            apply_coefficients(coef, C, c, g * invstd, b, mean);
            continue;
        }
        float a, b_coef, e;
        grad_coefficients(c, count, sum_a, sum_b, g, invstd, flags, dgamma, dbeta, &a, &b_coef,
                          &e);
        coef[c] = a;
        coef[C + c] = b_coef;
        coef[2 * C + c] = e;
        coef[3 * C + c] = mean;
    }
}

/* The elementwise passes walk "segments": a channels-first plane (inner values of one channel),
 * or a channels-last row (C values, one per channel). A segment is cut into units of VEC values;
 * its last unit may be partial (a plane of 7 x 7 = 49 values is 6 vectors and 1 value), so every
 * shape takes vector loads, and only a segment's tail takes lane-by-lane ones. Work-item k takes
 * `chunk` units from k * item_stride, `step` apart: contiguous runs for CPUs (item_stride = chunk,
 * step = 1), strided by the grid for GPUs (item_stride = 1, step = global size). */
typedef struct unit_walk {
    ulong seg, pos;   /* unit = seg * units_per_seg + pos */
    ulong c;          /* seg % C: the channel of a channels-first plane */
    ulong dseg, dpos, dc, ups, C;
} unit_walk;

static unit_walk walk_start(ulong u, ulong du, ulong ups, ulong C)
{
    const ulong seg = quotient(u, ups), dseg = quotient(du, ups);
    unit_walk w = {seg, u - seg * ups, seg - quotient(seg, C) * C, dseg, du - dseg * ups,
                   dseg - quotient(dseg, C) * C, ups, C};
    return w;
}

static void walk_advance(unit_walk *w)
{
    w->seg += w->dseg;
    w->pos += w->dpos;
    w->c += w->dc;
    if (w->pos >= w->ups) {
        w->pos -= w->ups;
        w->seg++;
        w->c++;
    }
    if (w->c >= w->C)
        w->c -= w->C;
}

/* Where bn_elementwise takes a channel's (a, b, e, center): the coef buffer bn_channel wrote, or,
 * when coef is NULL (inference and apply over planes, one launch), the given statistics. */
typedef struct coef_source {
    __global const float *coef, *mean, *var, *gamma, *beta;
    float eps;
    int var_is_invstd;
    ulong C;
    /* channels-last rows on contiguous runs (CPUs) with FLAG_OWN_COEF: the work-item's own copy
     * of the coefficients (form_own_coefs); NULL otherwise */
    __local const float *own;
} coef_source;

/* A channel's coefficients (a, b, e, center). Named fields, not an array: the flat walk's
 * copies of an array went through the stack, each a 16-byte load of four 4-byte stores (a
 * store-forwarding stall: a fifth of that kernel's samples in perf). */
typedef struct channel_coef {
    float a, b, e, center;
} channel_coef;

ALWAYS_INLINE void channel_coefs(const coef_source *s, ulong c, channel_coef *v)
{
    if (s->coef) {
        v->a = s->coef[c];
        v->b = s->coef[s->C + c];
        v->e = s->coef[2 * s->C + c];
        v->center = s->coef[3 * s->C + c];
        return;
    }
    const float scale =
        (s->gamma ? s->gamma[c] : 1.0f) * given_invstd(s->var, s->var_is_invstd, s->eps, c);
    v->a = scale; /* as apply_coefficients */
    v->b = s->beta ? s->beta[c] : 0.0f;
    v->e = scale;
    v->center = s->mean ? s->mean[c] : 0.0f;
}

/* Coefficient `which` (0..3) of VEC consecutive channels from c (a channels-last row's unit). */
static FLOATV row_coef(__global const float *coef, int which, ulong C, ulong c, long lanes_left)
{
    return load_lanes(coef + which * C, c, lanes_left);
}

#define FLAG_RELU 1     /* out = max(out, 0), NaN kept */
#define FLAG_NO_SHIFT 2 /* out = a * in1 (folding a linear layer's weight) */
/* contiguous chunks last first: after a reduction over the same tensors, whose work-items took
 * the same chunks first to last, the first chunks read are those it left in the cache */
#define FLAG_LAST_FIRST 4
/* whole vectors of out through streaming stores (cleared where out is not aligned to the
 * vector). A second output (out2) keeps plain stores: a layer norm writing y and h both so ran
 * up to 5x slower on PoCL's CPU device (rows of 16 KiB), where y alone ran 0.7-0.8x the time. */
#define FLAG_STREAM 8
/* channels-last rows on contiguous runs: each work-item first copies the coefficients (from
 * coef, or formed from the given statistics without it) into own_coef (form_own_coefs) */
#define FLAG_OWN_COEF 16
/* strided by the grid (GPUs), every unit of a work-item takes the same coefficients (channels-last
 * rows: a step of whole rows; channels-first planes: of whole samples), so they are formed once */
#define FLAG_FIXED_COEF 32
/* Which operands are given, as bits of the same flags (set in the kernel from its pointers):
 * the per-vector code tests these bits, so that where a caller passes a constant set, no vector
 * tests anything (3 tests and branches fewer per vector in the inference loop; its time in the
 * cache, 3.2 MB, went from 0.27 to 0.14 ms in one buffer layout and was 0.14 ms in another) */
#define OPERAND_IN1 64
#define OPERAND_IN2 128
#define OPERAND_RESIDUAL 256
#define OPERAND_MASK 512
#define OPERAND_OUT2 1024
/* vectors per unit of channels in FLAG_OWN_COEF's copy: (a,) b, e, center */
#define OWN_COEF_VECTORS(flags) ((flags) & OPERAND_IN1 ? 4 : 3)

/* flags (the host's bits, below OPERAND_IN1) with the bits of the operands given */
static int with_operands(int flags, __global const DATA_T *in1, __global const DATA_T *in2,
                         __global const DATA_T *residual, __global const DATA_T *mask,
                         __global const DATA_T *out2)
{
    return (flags & (OPERAND_IN1 - 1)) | (in1 ? OPERAND_IN1 : 0) | (in2 ? OPERAND_IN2 : 0) |
           (residual ? OPERAND_RESIDUAL : 0) | (mask ? OPERAND_MASK : 0) |
           (out2 ? OPERAND_OUT2 : 0);
}

/* One of the given statistics (p: mean, var, gamma or beta) of VEC channels from c, or `absent`
 * where p is NULL */
static FLOATV row_given(__global const float *p, ulong c, long lanes_left, float absent)
{
    return p ? load_lanes(p, c, lanes_left) : (FLOATV)absent;
}

/* The coefficients of VEC consecutive channels from c of a channels-last row (lanes_left of them
 * real): from coef, or, without it (inference over rows in one launch, strided runs: GPUs),
 * formed from the given statistics as channel_coefs forms one channel's. Only those the unit
 * uses (flags). */
ALWAYS_INLINE void row_coefs(const coef_source *s, ulong c, long lanes_left, int flags, FLOATV *a,
                             FLOATV *b, FLOATV *e, FLOATV *center)
{
    if (s->own) { /* whole vectors: the copy's lanes past C are zeros */
        __local const float *unit = s->own + OWN_COEF_VECTORS(flags) * c;
        const int k = OWN_COEF_VECTORS(flags) - 3; /* (a first when there is one) */
        if (k)
            *a = LOADV(unit, 0);
        *b = LOADV(unit + k * VEC, 0);
        *e = LOADV(unit + (k + 1) * VEC, 0);
        *center = LOADV(unit + (k + 2) * VEC, 0);
        return;
    }
    if (s->coef) {
        if (flags & OPERAND_IN1)
            *a = row_coef(s->coef, 0, s->C, c, lanes_left);
        if (!(flags & FLAG_NO_SHIFT))
            *b = row_coef(s->coef, 1, s->C, c, lanes_left);
        if (flags & OPERAND_IN2) {
            *e = row_coef(s->coef, 2, s->C, c, lanes_left);
            *center = row_coef(s->coef, 3, s->C, c, lanes_left);
        }
        return;
    }
    FLOATV invstd = (FLOATV)1.0f;
    if (s->var && s->var_is_invstd)
        invstd = load_lanes(s->var, c, lanes_left);
    else if (s->var)
        invstd = (FLOATV)1.0f / sqrt(load_lanes(s->var, c, lanes_left) + s->eps);
    const FLOATV scale = row_given(s->gamma, c, lanes_left, 1.0f) * invstd;
    *a = scale;
    *b = row_given(s->beta, c, lanes_left, 0.0f);
    *e = scale;
    *center = row_given(s->mean, c, lanes_left, 0.0f);
}

/* The coefficients of all C channels (s->coef's, or formed from the given statistics without
 * it) into own, as row_coefs gives them per vector: for each vector of channels, its a (with in1
 * only), b, e and center side by side (one run of 3 or 4 vectors a unit reads: the forward's
 * three as separate arrays took 1.04x the time by the median of 5 A/B rounds on 12
 * channels-last inference rows); the lanes past C are zeros. In __local memory: a copy in
 * global scratch, read back in the same launch, Oclgrind took for uninitialized
 * (docs/performance.md, "Tried and not kept"). */
NOINLINE void form_own_coefs(const coef_source *s, __local float *own, int flags)
{
    const int k = OWN_COEF_VECTORS(flags) - 3;
    for (ulong c = 0; c < s->C; c += VEC) {
        FLOATV a = 0.0f, b = 0.0f, e = 0.0f, center = 0.0f;
        row_coefs(s, c, (long)(s->C - c), flags, &a, &b, &e, &center);
        __local float *unit = own + OWN_COEF_VECTORS(flags) * c;
        if (k)
            STOREV(unit, 0, a);
        STOREV(unit + k * VEC, 0, b);
        STOREV(unit + (k + 1) * VEC, 0, e);
        STOREV(unit + (k + 2) * VEC, 0, center);
    }
}

/* out's whole vectors through a streaming store with FLAG_STREAM, else store_lanes */
ALWAYS_INLINE void store_result(__global DATA_T *p, ulong o, long left, FLOATV v, int flags)
{
    if ((flags & FLAG_STREAM) && left >= VEC)
        STREAM_STOREV(p, o, v);
    else
        store_lanes(p, o, left, v);
}

/* True when p is aligned to a vector (streaming stores need it) */
static bool vector_aligned(__global const DATA_T *p)
{
    return ((ulong)p & (VEC * sizeof(DATA_T) - 1)) == 0;
}

/* out = [a*in1'] + b [+ e*(in2 - center)] [+ residual], then ReLU when asked, where
 * in1' = in1 masked by mask > 0 when mask is given; in1' is also written to out2 when given.
 * The forward is b + e*(x - center) (no in1); the backward a*dy + b + e*(x - center).
 * Coefficients (a | b | e | center), C each. Segments of seg_len values: planes of channel
 * seg % C (lane_channels = 0) or rows of the C channels (lane_channels = 1, seg_len = C). */
/* The operands of one unit of bn_elementwise at element o (left values to the segment's end):
 * in1 (masked by mask > 0 when there is a mask), in2 and residual, those that the OPERAND_ bits
 * of flags (with_operands) name, not the pointers; unit_store forms and stores the result. Two
 * steps, so that a work-item of a GPU can load several units before it stores any. */
typedef struct unit_operands {
    FLOATV g, v, res;
} unit_operands;

/* (into *u, not returned: a returned struct's hidden pointer is noalias, and inlining it emits
 * llvm.experimental.noalias.scope.decl, which Oclgrind cannot run) */
ALWAYS_INLINE void unit_load(__global const DATA_T *in1, __global const DATA_T *in2,
                             __global const DATA_T *residual, __global const DATA_T *mask, ulong o,
                             long left, int flags, unit_operands *u)
{
    u->g = u->v = u->res = (FLOATV)0.0f;
    if (flags & OPERAND_IN1) {
        u->g = load_lanes(in1, o, left);
        if (flags & OPERAND_MASK)
            u->g = RELU_MASK(u->g, load_lanes(mask, o, left));
    }
    if (flags & OPERAND_IN2)
        u->v = load_lanes(in2, o, left);
    if (flags & OPERAND_RESIDUAL)
        u->res = load_lanes(residual, o, left);
}

/* out = [a*in1'] [+ b] [+ e*(in2 - center)] [+ residual] (b unless FLAG_NO_SHIFT), then ReLU
 * when asked, from the operands unit_load loaded at o; in1' also goes to out2 when given. */
ALWAYS_INLINE void unit_store(const unit_operands *u, __global DATA_T *out, __global DATA_T *out2,
                              ulong o, long left, FLOATV a, FLOATV b, FLOATV e, FLOATV center,
                              int flags)
{
    FLOATV r = flags & FLAG_NO_SHIFT ? (FLOATV)0.0f : b;
    if (flags & OPERAND_IN1) {
        if (flags & OPERAND_OUT2)
            store_lanes(out2, o, left, u->g);
        r += a * u->g;
    }
    if (flags & OPERAND_IN2)
        r += e * (u->v - center);
    if (flags & OPERAND_RESIDUAL)
        r += u->res;
    if (flags & FLAG_RELU)
        r = select(r, (FLOATV)0.0f, isless(r, (FLOATV)0.0f));
    store_result(out, o, left, r, flags);
}

/* One unit at element o, coefficients (a, b, e, center) given: loaded, formed and stored. */
ALWAYS_INLINE
void elementwise_unit(__global const DATA_T *in1, __global const DATA_T *in2,
                      __global const DATA_T *residual, __global const DATA_T *mask,
                      __global DATA_T *out, __global DATA_T *out2, ulong o, long left, FLOATV a,
                      FLOATV b, FLOATV e, FLOATV center, int flags)
{
    unit_operands u;
    unit_load(in1, in2, residual, mask, o, left, flags, &u);
    unit_store(&u, out, out2, o, left, a, b, e, center, flags);
}

/* Units [pos, stop) of segment seg (bn_elementwise's contiguous path). With `whole`, every unit
 * has VEC values: `left` is then a constant and, once inlined, the lane checks fold away. */
ALWAYS_INLINE
void elementwise_run(__global const DATA_T *in1, __global const DATA_T *in2,
                     __global const DATA_T *residual, __global const DATA_T *mask,
                     const coef_source *src, __global DATA_T *out, __global DATA_T *out2,
                     ulong seg, ulong seg_len, int lane_channels, ulong pos, ulong stop,
                     int flags, int whole, FLOATV a, FLOATV b, FLOATV e, FLOATV center)
{
    for (; pos < stop; pos++) {
        const long left = whole ? VEC : (long)(seg_len - pos * VEC);
        if (lane_channels) /* only what the unit uses: each is a load per vector */
            row_coefs(src, pos * VEC, left, flags, &a, &b, &e, &center);
        elementwise_unit(in1, in2, residual, mask, out, out2, seg * seg_len + pos * VEC, left, a,
                         b, e, center, flags);
    }
}

/* Lanes at and past `first_next` take next, the others cur: a vector across a plane's end. */
static FLOATV split_lanes(FLOATV cur, FLOATV next, ulong first_next)
{
    return select(cur, next, LANE_IDS >= (INTV)(int)(first_next < VEC ? first_next : VEC));
}

/* Units [u, u_end) of the flat walk over channels-first planes of seg_len >= VEC values: unit u is
 * values [u * VEC, u * VEC + VEC) of the whole tensor, so small planes (7 x 7) take whole aligned
 * vectors with no partial one per plane. Plane by plane: the units inside the plane with its
 * channel's coefficients, then the unit across its end (at most two planes, as seg_len >= VEC),
 * blending the two channels' lane by lane. Coefficients are formed once per plane. */
ALWAYS_INLINE
void elementwise_flat(__global const DATA_T *in1, __global const DATA_T *in2,
                      __global const DATA_T *residual, __global const DATA_T *mask,
                      const coef_source *src, __global DATA_T *out, __global DATA_T *out2,
                      ulong total, ulong seg_len, ulong C, ulong u, ulong u_end, int flags)
{
    ulong o = u * VEC;
    const ulong o_end = u_end * VEC, whole_end = o_end < total ? o_end : total;
    ulong r = o % seg_len;       /* o's position in its plane */
    ulong c = (o / seg_len) % C; /* o's channel */
    channel_coef cur, next;
    if (o < o_end)
        channel_coefs(src, c, &cur);
    while (o < o_end) {
        /* whole units inside the plane: `left` a constant, so the lane checks fold away */
        ulong inside = (seg_len - r) / VEC;
        if (inside > (whole_end - o) / VEC)
            inside = (whole_end - o) / VEC;
        for (ulong k = 0; k < inside; k++, o += VEC)
            elementwise_unit(in1, in2, residual, mask, out, out2, o, VEC, cur.a, cur.b, cur.e,
                             cur.center, flags);
        r += inside * VEC;
        if (o >= o_end)
            break;
        c = c + 1 == C ? 0 : c + 1;
        channel_coefs(src, c, &next);
        if (r < seg_len) { /* the unit across the plane's end, or the tensor's partial last one */
            const ulong first_next = seg_len - r;
            elementwise_unit(in1, in2, residual, mask, out, out2, o,
                             o + VEC <= total ? VEC : (long)(total - o),
                             split_lanes(cur.a, next.a, first_next),
                             split_lanes(cur.b, next.b, first_next),
                             split_lanes(cur.e, next.e, first_next),
                             split_lanes(cur.center, next.center, first_next), flags);
            o += VEC;
            r += VEC;
        }
        r -= seg_len;
        cur = next;
    }
}

#define WALK_PLANES 0 /* segments are channels-first planes */
#define WALK_ROWS 1   /* segments are channels-last rows of C values */
#define WALK_FLAT 2   /* channels-first as one run of units (contiguous runs only, planes >= VEC) */

/* Units [u, u_end) of channels-last rows of whole vectors (ups of them a row) with the
 * work-item's own copy of the coefficients (FLAG_OWN_COEF, aligned to the vector): one loop
 * over the run, the coefficients' pointer wrapping at each row's end. Row by row, row_coefs
 * testing per vector where the coefficients come from, PoCL's loop took 28 instructions and 4
 * branches a vector, this one 11 and 1: the channels-last forward ops took 0.85-1.00x the time
 * by the median of 3 in-process A/B rounds (AVX-512 machine; the backward 0.94-1.02x). */
ALWAYS_INLINE void elementwise_rows_own(__global const DATA_T *in1, __global const DATA_T *in2,
                                        __global const DATA_T *residual,
                                        __global const DATA_T *mask, __local const float *own_coef,
                                        __global DATA_T *out, __global DATA_T *out2, ulong ups,
                                        ulong u, ulong u_end, int flags)
{
    const uint per_unit = OWN_COEF_VECTORS(flags), k = per_unit - 3; /* (a first, with in1) */
    __local const FLOATV *own = (__local const FLOATV *)own_coef;
    __local const FLOATV *coef = own + per_unit * (u % ups), *row_end = own + per_unit * ups;
    for (ulong o = u * VEC; o < u_end * VEC; o += VEC) {
        unit_operands ops;
        unit_load(in1, in2, residual, mask, o, VEC, flags, &ops);
        unit_store(&ops, out, out2, o, VEC, k ? coef[0] : (FLOATV)0.0f, coef[k], coef[k + 1],
                   coef[k + 2], flags);
        coef += per_unit;
        if (coef == row_end)
            coef = own;
    }
}

/* bn_elementwise's contiguous runs (CPUs): work-item `first`'s `chunk` units, segment by
 * segment (a plane's coefficients formed once), or the flat walk, or channels-last rows of
 * whole vectors with the own copy as one loop (elementwise_rows_own). */
ALWAYS_INLINE void elementwise_contiguous(__global const DATA_T *in1, __global const DATA_T *in2,
                                          __global const DATA_T *residual,
                                          __global const DATA_T *mask, const coef_source *src,
                                          __global DATA_T *out, __global DATA_T *out2,
                                          ulong segments, ulong seg_len, ulong C, int walk,
                                          ulong first, ulong chunk, int flags)
{
    const int lane_channels = walk == WALK_ROWS; /* (rows here always take coef) */
    const ulong ups = (seg_len + VEC - 1) / VEC, units = segments * ups;
    channel_coef v = {0.0f, 0.0f, 0.0f, 0.0f};
    if (walk == WALK_FLAT) {
        const ulong total = segments * seg_len, flat_units = (total + VEC - 1) / VEC;
        elementwise_flat(in1, in2, residual, mask, src, out, out2, total, seg_len, C, first,
                         first + chunk < flat_units ? first + chunk : flat_units, flags);
        return;
    }
    const ulong u_end = first + chunk < units ? first + chunk : units;
    if (lane_channels && src->own && seg_len % VEC == 0 &&
        ((ulong)src->own & (sizeof(FLOATV) - 1)) == 0) {
        elementwise_rows_own(in1, in2, residual, mask, src->own, out, out2, ups, first, u_end,
                             flags);
        return;
    }
    for (ulong u = first, seg = first / ups, pos = first - seg * ups; u < u_end; seg++) {
        const ulong stop = ups - pos < u_end - u ? ups : pos + (u_end - u);
        if (!lane_channels)
            channel_coefs(src, seg % C, &v);
        /* whole vectors, then the segment's partial one */
        const ulong whole = seg_len / VEC < stop ? seg_len / VEC : stop;
        /* (lane_channels a constant in the whole vectors' loop: no vector tests it) */
        if (pos < whole && lane_channels)
            elementwise_run(in1, in2, residual, mask, src, out, out2, seg, seg_len, 1, pos,
                            whole, flags, 1, v.a, v.b, v.e, v.center);
        else if (pos < whole)
            elementwise_run(in1, in2, residual, mask, src, out, out2, seg, seg_len, 0, pos,
                            whole, flags, 1, v.a, v.b, v.e, v.center);
        if ((pos > whole ? pos : whole) < stop)
            elementwise_run(in1, in2, residual, mask, src, out, out2, seg, seg_len,
                            lane_channels, pos > whole ? pos : whole, stop, flags, 0, v.a, v.b,
                            v.e, v.center);
        u += stop - pos;
        pos = 0;
    }
}

#define STREAM_UNITS 512 /* units (vectors) of one stream before the other's turn */

/* A work-item's chunk of `chunk` units from `first`: with EW_STREAMS 2, its two halves in turn,
 * STREAM_UNITS at a time, two streams in address order (a copy kernel on PoCL's CPU device of
 * the AVX2 machine moved 1.1-1.3x the bytes per second so); with EW_STREAMS 1, one stream. */
ALWAYS_INLINE void elementwise_chunk(__global const DATA_T *in1, __global const DATA_T *in2,
                                     __global const DATA_T *residual, __global const DATA_T *mask,
                                     const coef_source *src, __global DATA_T *out,
                                     __global DATA_T *out2, ulong segments, ulong seg_len, ulong C,
                                     int walk, ulong first, ulong chunk, int flags)
{
    const ulong first_half = EW_STREAMS == 1 ? chunk : (chunk + 1) / 2;
    for (ulong k = 0; k < first_half; k += STREAM_UNITS)
        for (int second = 0; second < 2; second++) {
            const ulong units = second ? chunk - first_half : first_half;
            if (k < units)
                elementwise_contiguous(in1, in2, residual, mask, src, out, out2, segments, seg_len,
                                       C, walk, first + (second ? first_half : 0) + k,
                                       units - k < STREAM_UNITS ? units - k : STREAM_UNITS, flags);
        }
}

/* elementwise_chunk with the operands and ReLU a constant for the common sets, so that no vector
 * tests them (streaming stays a test per vector: as a constant too, it took as long and twice
 * the compile time); the other sets (folding, the frozen backward, dresidual without ReLU) test
 * them per vector. */
#define CHUNK_CASE(set)                                                                            \
    if ((flags & ~FLAG_STREAM) == (set)) {                                                         \
        elementwise_chunk(in1, in2, residual, mask, src, out, out2, segments, seg_len, C, walk,    \
                          first, chunk, (set) | (flags & FLAG_STREAM));                            \
        return;                                                                                    \
    }
ALWAYS_INLINE void elementwise_span(__global const DATA_T *in1, __global const DATA_T *in2,
                                    __global const DATA_T *residual, __global const DATA_T *mask,
                                    const coef_source *src, __global DATA_T *out,
                                    __global DATA_T *out2, ulong segments, ulong seg_len, ulong C,
                                    int walk, ulong first, ulong chunk, int flags)
{
    flags &= ~FLAG_LAST_FIRST; /* (taken by the caller) */
    /* the forward: plain, ReLU, add, add + ReLU */
    CHUNK_CASE(OPERAND_IN2)
    CHUNK_CASE(OPERAND_IN2 | FLAG_RELU)
    CHUNK_CASE(OPERAND_IN2 | OPERAND_RESIDUAL)
    CHUNK_CASE(OPERAND_IN2 | OPERAND_RESIDUAL | FLAG_RELU)
    /* the backward's dx: plain, through ReLU's mask, also writing dresidual */
    CHUNK_CASE(OPERAND_IN1 | OPERAND_IN2)
    CHUNK_CASE(OPERAND_IN1 | OPERAND_IN2 | OPERAND_MASK)
    CHUNK_CASE(OPERAND_IN1 | OPERAND_IN2 | OPERAND_MASK | OPERAND_OUT2)
    elementwise_chunk(in1, in2, residual, mask, src, out, out2, segments, seg_len, C, walk, first,
                      chunk, flags);
}
#undef CHUNK_CASE

/* The coefficients of the unit at w of the strided walks (GPUs): a channels-last row's VEC
 * channels there, or a channels-first plane's channel */
ALWAYS_INLINE void unit_coefs(const coef_source *src, int walk, const unit_walk *w, ulong seg_len,
                              int flags, FLOATV *a, FLOATV *b, FLOATV *e, FLOATV *center)
{
    if (walk == WALK_ROWS) {
        row_coefs(src, w->pos * VEC, (long)(seg_len - w->pos * VEC), flags, a, b, e, center);
        return;
    }
    channel_coef v;
    channel_coefs(src, w->c, &v);
    *a = v.a;
    *b = v.b;
    *e = v.e;
    *center = v.center;
}

__kernel void bn_elementwise(__global const DATA_T *in1, __global const DATA_T *in2,
                             __global const DATA_T *residual, __global const DATA_T *mask,
                             __global const float *coef, __global const float *stat_mean,
                             __global const float *stat_var, int var_is_invstd, float eps,
                             __global const float *gamma, __global const float *beta,
                             __global DATA_T *out, __global DATA_T *out2, ulong segments,
                             ulong seg_len, ulong C, int walk, ulong chunk, ulong item_stride,
                             ulong step, int flags, __local float *own_coef)
{
    coef_source src = {coef, stat_mean, stat_var, gamma, beta, eps, var_is_invstd, C, NULL};
    flags = with_operands(flags, in1, in2, residual, mask, out2);
    if (!vector_aligned(out))
        flags &= ~FLAG_STREAM;
    /* One path per build (the host takes contiguous runs exactly for work-groups of one, step
     * 1): a GPU allocates registers for a kernel's largest path, and the CPU path's would cost
     * it occupancy (AMD gfx90a, LLVM 15: 90 VGPRs with both paths, 54 with the strided one). */
#if WG_SIZE == 1
    /* the work-item's own copy of the coefficients first (own_coef is the work-group's, and the
     * work-group this one work-item) */
    if (flags & FLAG_OWN_COEF) {
        flags &= ~FLAG_OWN_COEF;
        form_own_coefs(&src, own_coef, flags);
        src.own = own_coef;
    }
    /* a contiguous chunk per work-item (CPUs); with FLAG_LAST_FIRST the last chunk first */
    const ulong item = flags & FLAG_LAST_FIRST ? get_global_size(0) - 1 - get_global_id(0)
                                               : get_global_id(0);
    elementwise_span(in1, in2, residual, mask, &src, out, out2, segments, seg_len, C, walk,
                     item * item_stride, chunk, flags);
#else
    /* Strided by the grid (GPUs): neighbouring work-items on neighbouring units, GATHER of a
     * work-item's units at a time, all their operands loaded before any result is stored: as far
     * as the compiler knows, out may alias an input, so a unit's loads would wait for the
     * previous unit's store (one unit in flight per work-item). Fixed trip counts, unrolled, so
     * that the operands stay in registers (round 19's loops kept them on the stack: 544 bytes
     * per work-item in clang's PTX, and took 2.7-3.8x the time on an H200). The walk is taken
     * twice, for the loads and for the stores. */
    const ulong ups = (seg_len + VEC - 1) / VEC, units = segments * ups;
    unit_walk w = walk_start(get_global_id(0), step, ups, C);
    /* FLAG_FIXED_COEF: the coefficients formed once (from the given statistics, a division and
     * a square root per lane) instead of per unit, in the registers the per-unit ones take */
    const int fixed = flags & FLAG_FIXED_COEF;
    FLOATV a = 0.0f, b = 0.0f, e = 0.0f, center = 0.0f;
    if (fixed)
        unit_coefs(&src, walk, &w, seg_len, flags, &a, &b, &e, &center);
    for (ulong k0 = 0, u0 = get_global_id(0); k0 < chunk && u0 < units;
         k0 += GATHER, u0 += GATHER * step) {
        unit_operands ops[GATHER];
        const unit_walk w0 = w;
#pragma unroll
        for (uint k = 0; k < GATHER; k++, walk_advance(&w))
            if (k0 + k < chunk && u0 + k * step < units)
                unit_load(in1, in2, residual, mask, w.seg * seg_len + w.pos * VEC,
                          (long)(seg_len - w.pos * VEC), flags, &ops[k]);
        w = w0;
#pragma unroll
        for (uint k = 0; k < GATHER; k++, walk_advance(&w)) {
            if (k0 + k >= chunk || u0 + k * step >= units)
                continue;
            if (!fixed)
                unit_coefs(&src, walk, &w, seg_len, flags, &a, &b, &e, &center);
            unit_store(&ops[k], out, out2, w.seg * seg_len + w.pos * VEC,
                       (long)(seg_len - w.pos * VEC), a, b, e, center, flags);
        }
    }
#endif
}

/* bn_elementwise's arithmetic over the run of `len` values at o: whole vectors, then the run's
 * partial one. */
ALWAYS_INLINE void plane_apply(__global const DATA_T *in1, __global const DATA_T *in2,
                               __global const DATA_T *residual, __global const DATA_T *mask,
                               __global DATA_T *out, __global DATA_T *out2, ulong o, ulong len,
                               FLOATV a, FLOATV b, FLOATV e, FLOATV center, int flags)
{
    const ulong whole = len / VEC * VEC;
    flags = with_operands(flags, in1, in2, residual, mask, out2);
    for (ulong p = 0; p < whole; p += VEC)
        elementwise_unit(in1, in2, residual, mask, out, out2, o + p, VEC, a, b, e, center, flags);
    if (whole < len)
        elementwise_unit(in1, in2, residual, mask, out, out2, o + whole, (long)(len - whole), a, b,
                         e, center, flags);
}

/* statement, with o the offset of plane (n, c_first + t), for the `here` channels' planes n by n:
 * each n one run of here * HW contiguous values (the one-launch channels-first kernels' passes).
 * Channel by channel instead, N runs of HW values C * HW apart, the training forward took up to
 * 1.8x the time (N64 C2048 7x7, 2.2x with a residual) and the backward up to 2.2x (N8 C2048 7x7
 * with add + ReLU), by the median of 3 in-process A/B rounds; no row of 7x7 to 28x28 planes
 * took less than 0.98x (a prefetcher follows one run, not N runs far apart). */
#define TILE_PLANES(statement)                                                                     \
    for (ulong n = 0; n < N; n++)                                                                  \
        for (uint t = 0; t < here; t++) {                                                          \
            const ulong o = (n * C + c_first + t) * HW;                                            \
            statement;                                                                             \
        }

/* Training forward of channels-first in one launch, for work-groups of one (CPUs) when a tile
 * of channels (N planes each) fits in the cache: each work-item takes the statistics of its
 * `tile` channels (the cached statistics: pivot, mean, then the squared deviations from it),
 * finalizes them as bn_channel does, then normalizes those planes while they are still in
 * cache: x is read from memory once, y written once (2 passes instead of 3), each pass over the
 * tile's planes n by n (TILE_PLANES). Work-items: ceil(C / tile). */
__kernel void bn_forward_fused(__global const DATA_T *x, __global const DATA_T *residual,
                               __global const float *gamma, __global const float *beta,
                               __global float *running_mean, __global float *running_var,
                               __global float *save_mean, __global float *save_invstd, ulong N,
                               ulong C, ulong HW, uint tile, float eps, float momentum, int flags,
                               __global DATA_T *y)
{
#if WG_SIZE == 1 /* (work-groups of many never launch it: not compiled for them) */
    const ulong c_first = get_global_id(0) * tile;
    const uint here = tile_count(c_first, C, tile);
    const float count = (float)(N * HW), inv_p = 1.0f / pow2_floor(count);
    float k[PLANE_TILE], mean[PLANE_TILE], scale[PLANE_TILE];
    FLOATV acc[PLANE_TILE]; /* (lane sums: one horizontal sum per channel, not per plane) */
    for (uint t = 0; t < here; t++) {
        k[t] = LOAD(x, (c_first + t) * HW); /* the pivot: the channel's first value */
        acc[t] = 0.0f;
    }
    TILE_PLANES(acc[t] += cached_sum_lanes(x, NULL, o, HW, k[t], 0.0f, 1.0f))
    for (uint t = 0; t < here; t++) {
        mean[t] = HSUM(acc[t]) / count;
        acc[t] = 0.0f;
    }
    TILE_PLANES(acc[t] += cached_sum_squares_lanes(x, NULL, o, HW, k[t], mean[t], inv_p))
    for (uint t = 0; t < here; t++) {
        mean[t] += k[t];
        scale[t] = finalize_stats(c_first + t, C, count, mean[t], HSUM(acc[t]), eps, momentum,
                                  0, gamma, running_mean, running_var, save_mean, save_invstd,
                                  NULL);
    }
    /* y = beta + scale * (x - mean), as the coefficients of bn_channel give it */
    TILE_PLANES(plane_apply(NULL, x, residual, NULL, y, NULL, o, HW, 0.0f,
                            beta ? beta[c_first + t] : 0.0f, scale[t], mean[t], flags))
#endif
}

/* Element o of value i = u * width + member of channel c (planes of hw values, C apart), stepped
 * by width per u (bn_forward_channel): one division at the start instead of one per value, which
 * on a GPU is a long instruction sequence. p: the value's position in its plane. */
typedef struct channel_walk {
    ulong o, jump, wrap;
    uint p, dp, hw;
} channel_walk;

static channel_walk channel_walk_start(uint member, uint width, uint hw, ulong c, ulong C)
{
    const uint n = member / hw, dn = width / hw;
    channel_walk w = {(n * C + c) * hw + (member - n * hw), (ulong)dn * C * hw + (width - dn * hw),
                      C * hw - hw, member - n * hw, width - dn * hw, hw};
    return w;
}

static void channel_walk_next(channel_walk *w)
{
    w->o += w->jump;
    w->p += w->dp;
    if (w->p >= w->hw) { /* into the next plane: C * hw - hw further on */
        w->p -= w->hw;
        w->o += w->wrap;
    }
}

/* Training forward of channels-first in one launch for work-groups of many (GPUs), where a
 * channel's N planes of HW values fit in the registers of `width` work-items (a power of two <=
 * WG_SIZE; WG_SIZE / width channels per work-group), `units` * VEC values each (REGISTER_KERNELS'
 * builds): value u of member m is the channel's u * width + m (plane by plane, so that neighbouring work-items read
 * neighbouring values). The statistics are bn_forward_fused's (cached statistics: pivot k = the
 * channel's first value; the mean, then the squared deviations from it) with tree sums over the
 * run; finalized as bn_channel does (the run's first writes the saved and running statistics);
 * then y = act(beta + scale * (x - mean) [+ residual]) from the registers: x is read once and y
 * written once in one launch, where the general path takes three (small planes such as 7x7 and
 * 14x14: the launches cost more than the data). Work-groups: ceil(C / (WG_SIZE / width)). */
ALWAYS_INLINE void forward_channel(__global const DATA_T *x, __global const DATA_T *residual,
                                   __global const float *gamma, __global const float *beta,
                                   __global float *running_mean, __global float *running_var,
                                   __global float *save_mean, __global float *save_invstd,
                                   ulong N, ulong C, ulong HW, uint width, float eps,
                                   float momentum, int flags, __global DATA_T *y,
                                   __local float *l_sum, const uint units)
{
#if WG_SIZE > 1 /* (work-groups of one never launch the register kernels: not compiled for them) */
    const uint lid = get_local_id(0), member = lid & (width - 1);
    const ulong c = get_group_id(0) * (WG_SIZE / width) + lid / width;
    const int live = c < C;
    /* (at most width * units * VEC values: 32-bit positions) */
    const uint count = live ? (uint)(N * HW) : 0, hw = (uint)HW;
    const float k = live ? LOAD(x, c * HW) : 0.0f;
    float v[ROW_UNITS * VEC], acc = 0.0f;
    channel_walk w = channel_walk_start(member, width, hw, c, C);
#pragma unroll
    for (uint u = 0; u < ROW_UNITS * VEC; u++, channel_walk_next(&w)) {
        const int held = u < units * VEC && u * width + member < count;
        v[u] = held ? LOAD(x, w.o) : 0.0f;
        acc += held ? v[u] - k : 0.0f;
    }
    const float total = (float)(N * HW);
    const float mean_k = tree_sum(acc, l_sum, lid, 1, width) / total;
    /* m2n = the sum of (d / P) * d (cached_sum_squares' scaling: no overflow at 1e18) */
    const float inv_p = 1.0f / pow2_floor(total);
    acc = 0.0f;
#pragma unroll
    for (uint u = 0; u < ROW_UNITS * VEC; u++) {
        const float d = (v[u] - k) - mean_k;
        acc += u < units * VEC && u * width + member < count ? d * inv_p * d : 0.0f;
    }
    const float m2n = tree_sum(acc, l_sum, lid, 1, width);
    /* every member finalizes alike; the run's first writes the channel's statistics */
    const int writer = live && member == 0;
    const float mean = mean_k + k;
    const float scale = finalize_stats(c, C, total, mean, m2n, eps, momentum, 0,
                                       live ? gamma : NULL, writer ? running_mean : NULL,
                                       writer ? running_var : NULL, writer ? save_mean : NULL,
                                       writer ? save_invstd : NULL, NULL);
    const float shift = live && beta ? beta[c] : 0.0f;
    /* every pivot read of x before the first write of y (which may be x) */
    barrier(CLK_GLOBAL_MEM_FENCE);
    w = channel_walk_start(member, width, hw, c, C);
#pragma unroll
    for (uint u = 0; u < ROW_UNITS * VEC; u++, channel_walk_next(&w)) {
        if (u < units * VEC && u * width + member < count) {
            float r = shift + scale * (v[u] - mean);
            if (residual)
                r += LOAD(residual, w.o);
            if (flags & FLAG_RELU)
                r = r < 0.0f ? 0.0f : r;
            STORE(y, w.o, r);
        }
    }
#endif
}

/* A one-launch training forward kernel (enqueue_one_launch_forward's arguments, also those of
 * its body helpers; `split`: the work-items per channel, or the channel vectors per row), its
 * body the statements given */
#define BN_ONE_LAUNCH_PARAMS                                                                       \
    __global const DATA_T *x, __global const DATA_T *residual, __global const float *gamma,      \
        __global const float *beta, __global float *running_mean, __global float *running_var,   \
        __global float *save_mean, __global float *save_invstd, ulong N, ulong C, ulong HW,      \
        uint split, float eps, float momentum, int flags, __global DATA_T *y
/* (the body follows in braces: OpenCL C has no variadic macros, and NVIDIA's compiler rejects
 * them where PoCL's accepts) */
#define BN_ONE_LAUNCH_KERNEL(name)                                                                 \
    __kernel __attribute__((reqd_work_group_size(WG_SIZE, 1, 1))) void name(BN_ONE_LAUNCH_PARAMS)
/* the arguments of a body helper, after those of the kernel: its local memory */
#define BN_ONE_LAUNCH_ARGS(local)                                                                  \
    x, residual, gamma, beta, running_mean, running_var, save_mean, save_invstd, N, C, HW, split,  \
        eps, momentum, flags, y, local

#define BN_FORWARD_CHANNEL(name, units)                                                            \
    BN_ONE_LAUNCH_KERNEL(name)                                                                     \
    {                                                                                              \
        __local float l_sum[WG_SIZE];                                                              \
        if (REGISTER_BUILT(units))                                                                 \
            forward_channel(BN_ONE_LAUNCH_ARGS(l_sum), units);                                     \
    }
REGISTER_KERNELS(BN_FORWARD_CHANNEL, bn_forward_channel)

/* The statistics of VEC channels from c0 (`left` of them to C's end), lane-wise (count, mean,
 * m2n), finalized as bn_channel does: each lane's scale (gamma * invstd) and shift (beta). Where
 * `writer` is set, the saved and running statistics of those channels are written. */
ALWAYS_INLINE void finalize_lanes(ulong c0, long left, ulong C, float count, FLOATV mean,
                                  FLOATV m2n, float eps, float momentum, int writer,
                                  __global const float *gamma, __global const float *beta,
                                  __global float *running_mean, __global float *running_var,
                                  __global float *save_mean, __global float *save_invstd,
                                  FLOATV *scale, FLOATV *shift)
{
    float lane_mean[VEC], lane_m2n[VEC], lane_scale[VEC], lane_shift[VEC];
    STOREV(lane_mean, 0, mean);
    STOREV(lane_m2n, 0, m2n);
    for (uint i = 0; i < VEC; i++) {
        const ulong c = c0 + i;
        const int live = (long)i < left;
        lane_scale[i] = finalize_stats(c, C, count, lane_mean[i], lane_m2n[i], eps, momentum, 0,
                                       live ? gamma : NULL, live && writer ? running_mean : NULL,
                                       live && writer ? running_var : NULL,
                                       live && writer ? save_mean : NULL,
                                       live && writer ? save_invstd : NULL, NULL);
        lane_shift[i] = live && beta ? beta[c] : 0.0f;
    }
    *scale = LOADV(lane_scale, 0);
    *shift = LOADV(lane_shift, 0);
}

/* y = act(shift + scale * (v - mean) [+ residual]) for `left` lanes at o: the apply of the
 * one-launch channels-last kernel, from the values it holds. */
ALWAYS_INLINE void rows_apply(__global const DATA_T *residual, __global DATA_T *y, ulong o,
                              long left, FLOATV v, FLOATV mean, FLOATV scale, FLOATV shift,
                              int flags)
{
    FLOATV out = shift + scale * (v - mean);
    if (residual)
        out += load_lanes(residual, o, left);
    if (flags & FLAG_RELU)
        out = select(out, (FLOATV)0.0f, isless(out, (FLOATV)0.0f));
    store_lanes(y, o, left, out);
}

/* Where a work-item of bn_forward_rows_tile or _cached works: row lane `lane` of L, channel
 * vector lid % lanes of its work-group's `lanes` (split), channels c0.. (`left` of them to C's
 * end; <= 0: none), M rows; k: the pivots (row 0's values of its channels); inv_p: the squared
 * deviations' scale (bn_forward_channel's: no overflow at 1e18). */
typedef struct rows_place {
    ulong M, c0;
    long left;
    uint lid, lanes, lane, L;
    FLOATV k;
    float inv_p;
} rows_place;

ALWAYS_INLINE void rows_place_start(__global const DATA_T *x, ulong N, ulong C, ulong HW,
                                    uint split, rows_place *p)
{
    p->M = N * HW;
    p->lanes = split;
    p->lid = get_local_id(0);
    p->lane = p->lid / split;
    p->L = WG_SIZE / split;
    p->c0 = (get_group_id(0) * split + p->lid % split) * VEC;
    p->left = (long)C - (long)p->c0;
    p->k = p->left > 0 ? load_lanes(x, p->c0, p->left) : (FLOATV)0.0f;
    p->inv_p = 1.0f / pow2_floor((float)p->M);
}

/* The mean of x - k over the place's channels, from each row lane's sum (sum_k) */
ALWAYS_INLINE FLOATV rows_place_mean_k(const rows_place *p, FLOATV sum_k, __local FLOATV *l_sum)
{
    return tree_sum_lanes(sum_k, l_sum, p->lid, p->lanes, WG_SIZE) / (float)p->M;
}

/* The statistics of a place's channels, finalized as bn_channel does (row lane 0 writes them):
 * the mean, scale and shift of the apply, from mean_k (the mean of x - k) and m2n (this
 * work-item's sum of the squared deviations from it, scaled as bn_forward_channel's; summed over
 * the row lanes here). */
ALWAYS_INLINE void rows_place_finish(BN_ONE_LAUNCH_PARAMS, __local FLOATV *l_sum,
                                     const rows_place *p, FLOATV mean_k, FLOATV m2n,
                                     FLOATV *mean, FLOATV *scale, FLOATV *shift)
{
    *mean = mean_k + p->k;
    finalize_lanes(p->c0, p->left, C, (float)p->M, *mean,
                   tree_sum_lanes(m2n, l_sum, p->lid, p->lanes, WG_SIZE), eps, momentum,
                   p->lane == 0, gamma, beta, running_mean, running_var, save_mean, save_invstd,
                   scale, shift);
}

/* Training forward of channels-last in one launch for work-groups of many (GPUs), where a tile
 * of `lanes` (split) x VEC channels over all M rows fits in the registers of the work-group:
 * work-item (row lane l, channel vector j) = local id l * lanes + j holds vectors j of rows l,
 * l + L, l + 2L, ... (L = WG_SIZE / lanes row lanes, at most ROW_UNITS rows each), so that
 * neighbouring work-items read neighbouring vectors of a row. The statistics are
 * bn_forward_channel's (pivot k = each channel's value in row 0; the mean, then the scaled
 * squared deviations from it) with the tree sums over the row lanes of each channel vector; every
 * work-item finalizes its channels alike, those of row lane 0 write their statistics; then the
 * apply from the registers, after a barrier that follows every pivot read of x (y may be x): x
 * read once, y written once, one launch. Work-groups: ceil(C / (lanes * VEC)). */
ALWAYS_INLINE void forward_rows_tile(BN_ONE_LAUNCH_PARAMS, __local FLOATV *l_sum)
{
#if WG_SIZE > 1 /* (work-groups of one never launch it: not compiled for them) */
    rows_place p;
    rows_place_start(x, N, C, HW, split, &p);
    const ulong M = p.M, c0 = p.c0;
    const long left = p.left;
    FLOATV v[ROW_UNITS], acc = 0.0f;
#pragma unroll
    for (uint u = 0; u < ROW_UNITS; u++) {
        const ulong r = (ulong)u * p.L + p.lane;
        v[u] = r < M && left > 0 ? load_lanes(x, r * C + c0, left) : (FLOATV)0.0f;
        acc += r < M ? v[u] - p.k : (FLOATV)0.0f;
    }
    const FLOATV mean_k = rows_place_mean_k(&p, acc, l_sum);
    acc = 0.0f;
#pragma unroll
    for (uint u = 0; u < ROW_UNITS; u++) {
        const FLOATV d = (v[u] - p.k) - mean_k;
        acc += (ulong)u * p.L + p.lane < M ? d * p.inv_p * d : (FLOATV)0.0f;
    }
    FLOATV mean, scale, shift;
    rows_place_finish(BN_ONE_LAUNCH_ARGS(l_sum), &p, mean_k, acc, &mean, &scale, &shift);
    barrier(CLK_GLOBAL_MEM_FENCE);
#pragma unroll
    for (uint u = 0; u < ROW_UNITS; u++) {
        const ulong r = (ulong)u * p.L + p.lane;
        if (r < M && left > 0)
            rows_apply(residual, y, r * C + c0, left, v[u], mean, scale, shift, flags);
    }
#endif
}
BN_ONE_LAUNCH_KERNEL(bn_forward_rows_tile)
{
    __local FLOATV l_sum[WG_SIZE];
    forward_rows_tile(BN_ONE_LAUNCH_ARGS(l_sum));
}

/* bn_forward_rows_tile where the rows do not fit the registers (the host's rows_cached_kib): the
 * same work-items, rows and sums in the same order (with the same lanes, the same results where
 * the compiler rounds both alike: bit for bit on PoCL), but each pass reads the rows again
 * instead of holding them, the second and third from the cache: x read from memory once, y
 * written once, one launch instead of three. Work-groups: ceil(C / (lanes * VEC)). */
ALWAYS_INLINE void forward_rows_cached(BN_ONE_LAUNCH_PARAMS, __local FLOATV *l_sum)
{
#if WG_SIZE > 1 /* (work-groups of one never launch it: not compiled for them) */
    rows_place p;
    rows_place_start(x, N, C, HW, split, &p);
    const ulong c0 = p.c0, rows = p.left > 0 ? p.M : 0; /* (past C: no rows, but every barrier) */
    const long left = p.left;
    FLOATV acc = 0.0f;
    for (ulong r = p.lane; r < rows; r += p.L)
        acc += load_lanes(x, r * C + c0, left) - p.k;
    const FLOATV mean_k = rows_place_mean_k(&p, acc, l_sum);
    acc = 0.0f;
    for (ulong r = p.lane; r < rows; r += p.L) {
        const FLOATV d = (load_lanes(x, r * C + c0, left) - p.k) - mean_k;
        /* (a statement of its own, as in bn_forward_rows_tile, so that no compiler fuses the
         * product into the sum there and not here: a fused one rounds once, not twice) */
        const FLOATV square = d * p.inv_p * d;
        acc += square;
    }
    FLOATV mean, scale, shift;
    rows_place_finish(BN_ONE_LAUNCH_ARGS(l_sum), &p, mean_k, acc, &mean, &scale, &shift);
    /* every pivot read of x (row 0) before the first write of y (which may be x) */
    barrier(CLK_GLOBAL_MEM_FENCE);
    for (ulong r = p.lane; r < rows; r += p.L)
        rows_apply(residual, y, r * C + c0, left, load_lanes(x, r * C + c0, left), mean, scale,
                   shift, flags);
#endif
}
BN_ONE_LAUNCH_KERNEL(bn_forward_rows_cached)
{
    __local FLOATV l_sum[WG_SIZE];
    forward_rows_cached(BN_ONE_LAUNCH_ARGS(l_sum));
}

/* Backward of channels-first in one launch, as bn_forward_fused: each work-item takes the sums of
 * its `tile` channels (plane_grad_sums, a plane at a time), their coefficients (bn_channel's
 * CH_GRAD), then dx (and dresidual) while x and dy are still in cache: 3 passes instead of 5,
 * each over the tile's planes n by n (TILE_PLANES). mask: the forward's output for a fused
 * ReLU. Statistics: mean, and invstd (or var, frozen: flags). */
__kernel void bn_backward_fused(__global const DATA_T *x, __global const DATA_T *dy,
                                __global const DATA_T *mask, __global const float *mean_in,
                                __global const float *var_in, float eps, int flags,
                                __global const float *gamma, __global float *dgamma,
                                __global float *dbeta, ulong N, ulong C, ulong HW, uint tile,
                                __global DATA_T *dx, __global DATA_T *dresidual)
{
#if WG_SIZE == 1 /* (work-groups of many never launch it: not compiled for them) */
    const ulong c_first = get_global_id(0) * tile;
    const uint here = tile_count(c_first, C, tile);
    const bool frozen = flags & CHF_FROZEN;
    FLOATV g1[PLANE_TILE], g2[PLANE_TILE];
    float mu[PLANE_TILE], a[PLANE_TILE], b[PLANE_TILE], e[PLANE_TILE];
    for (uint t = 0; t < here; t++) {
        g1[t] = g2[t] = 0.0f;
        mu[t] = mean_in ? mean_in[c_first + t] : 0.0f;
    }
    FLOATV s1, s2;
    if (mask) /* (with NULL known, the compiler drops the mask's checks) */
        TILE_PLANES(plane_grad_sums(x, dy, mask, o, HW, mu[t], &s1, &s2); g1[t] += s1; g2[t] += s2)
    else
        TILE_PLANES(plane_grad_sums(x, dy, NULL, o, HW, mu[t], &s1, &s2); g1[t] += s1; g2[t] += s2)
    for (uint t = 0; t < here; t++) {
        const ulong c = c_first + t;
        grad_coefficients(c, (float)(N * HW), HSUM(g1[t]), HSUM(g2[t]),
                          gamma ? gamma[c] : 1.0f, given_invstd(var_in, !frozen, eps, c),
                          flags, dgamma, dbeta, &a[t], &b[t], &e[t]);
    }
    TILE_PLANES(plane_apply(dy, frozen ? NULL : x, NULL, mask, dx, dresidual, o, HW, a[t], b[t],
                            e[t], mu[t], 0))
#endif
}

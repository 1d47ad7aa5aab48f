/* Feature-axis normalizations, all as group normalization of an (N, C, HW) tensor:
 *   GroupNorm(G)    statistics per (n, g) over C/G channels x HW positions
 *   InstanceNorm    G = C
 *   LayerNorm       R rows of D values = (N = R, C = D, HW = 1, G = 1)
 *   RMSNorm         the same with rms: no mean subtraction, mean(x^2) in place of the variance
 * Group r = n * G + g holds D = (C/G) * HW values; its position p is
 *   channels-first: element r * D + p (contiguous), channel g * Cg + p / HW;
 *   channels-last:  element (n * HW + p / Cg) * C + g * Cg + p % Cg, channel g * Cg + p % Cg.
 * Statistics use the two stages of batchnorm.cl: gn_stats writes per-group partials (pairs of
 * consecutive positions are the blocks, merged with Chan's formula; values shifted by the group's
 * first value, which goes to `pivots`), bn_channel merges them as a tree. Built together with
 * common.cl and batchnorm.cl. */

typedef struct gn_layout {
    ulong C, HW, G, Cg, D;
    int channels_last;
} gn_layout;

#define GN_LAYOUT(C, HW, G, channels_last) {(C), (HW), (G), (C) / (G), (C) / (G) * (HW), (channels_last)}

ulong gn_index(const gn_layout *l, ulong r, ulong p)
{
    if (!l->channels_last)
        return r * l->D + p;
    const ulong n = r / l->G, g = r - n * l->G, s = p / l->Cg;
    return (n * l->HW + s) * l->C + g * l->Cg + (p - s * l->Cg);
}

ulong gn_channel(const gn_layout *l, ulong r, ulong p)
{
    const ulong g = r - r / l->G * l->G;
    if (l->channels_last)
        return g * l->Cg + (p - p / l->Cg * l->Cg);
    return g * l->Cg + (l->HW == 1 ? p : p / l->HW);
}

/* Stage 1 over groups. REDUCE_STATS: statistics of x (+ addend). REDUCE_GRAD: sums of
 * dxhat = dy * weight[channel] and dxhat * (x - mean_in[r]) (mean_in NULL: 0, for RMS).
 * Work-groups: (S x WG_SIZE) x R; partial s of group r takes pairs [s*P/S, (s+1)*P/S). */
__kernel __attribute__((reqd_work_group_size(WG_SIZE, 1, 1))) void
gn_stats(__global const DATA_T *x, __global const DATA_T *addend, __global const DATA_T *dy,
         __global const float *weight, __global const float *mean_in, ulong C, ulong HW, ulong G,
         int channels_last, uint S, int mode, __global float *sets, __global float *pivots)
{
    __local float l_cnt[WG_SIZE], l_a[WG_SIZE], l_b[WG_SIZE];
    const gn_layout l = GN_LAYOUT(C, HW, G, channels_last);
    const uint lid = get_local_id(0);
    const ulong s = get_group_id(0), r = get_global_id(1), R = get_global_size(1);
    const ulong pairs = (l.D + 1) / 2, q_end = (s + 1) * pairs / S;
    const ulong i0 = gn_index(&l, r, 0);
    const float k = mode == REDUCE_STATS ? LOAD(x, i0) + (addend ? LOAD(addend, i0) : 0.0f) : 0.0f;
    const float mu = mode == REDUCE_GRAD && mean_in ? mean_in[r] : 0.0f;
    float count = 0.0f, a = 0.0f, b = 0.0f;
    for (ulong q = s * pairs / S + lid; q < q_end; q += WG_SIZE) {
        const ulong p = 2 * q;
        const bool two = p + 1 < l.D;
        const ulong ia = gn_index(&l, r, p), ib = two ? gn_index(&l, r, p + 1) : ia;
        float va = LOAD(x, ia), vb = LOAD(x, ib);
        if (addend) {
            va += LOAD(addend, ia);
            vb += LOAD(addend, ib);
        }
        if (mode == REDUCE_STATS) {
            const float dev = (va - vb) * 0.5f;
            stats_merge(&count, &a, &b, two ? 2.0f : 1.0f, ((va - k) + (vb - k)) * 0.5f,
                        dev * dev);
        } else {
            float ga = LOAD(dy, ia), gb = two ? LOAD(dy, ib) : 0.0f;
            if (weight) {
                ga *= weight[gn_channel(&l, r, p)];
                gb *= two ? weight[gn_channel(&l, r, p + 1)] : 0.0f;
            }
            count += two ? 2.0f : 1.0f;
            a += ga + gb;
            b += ga * (va - mu) + gb * (vb - mu);
        }
    }
    l_cnt[lid] = count;
    l_a[lid] = a;
    l_b[lid] = b;
    group_tree_merge(l_cnt, l_a, l_b, lid, WG_SIZE, mode);
    if (lid == 0) {
        __global float *set = sets + s * 3 * R;
        set[r] = l_cnt[0];
        set[R + r] = l_a[0];
        set[2 * R + r] = l_b[0];
        if (s == 0 && pivots)
            pivots[r] = k;
    }
}

/* Stage 1 of the parameter gradients: per channel c, sums over (n, position) of dy and
 * dy * xhat, xhat = (x - mean[r]) * rstd[r] with r = n * G + c / Cg (mean NULL: 0).
 * Work-groups: (S x WG_SIZE) x C; partial s takes values [s*M/S, (s+1)*M/S), M = N * HW. */
__kernel __attribute__((reqd_work_group_size(WG_SIZE, 1, 1))) void
gn_param_partials(__global const DATA_T *x, __global const DATA_T *dy,
                  __global const float *mean, __global const float *rstd, ulong N, ulong C,
                  ulong HW, ulong G, int channels_last, uint S, __global float *sets)
{
    __local float l_cnt[WG_SIZE], l_a[WG_SIZE], l_b[WG_SIZE];
    const uint lid = get_local_id(0);
    const ulong s = get_group_id(0), c = get_global_id(1);
    const ulong M = N * HW, m_end = (s + 1) * M / S, group = c / (C / G);
    float count = 0.0f, a = 0.0f, b = 0.0f;
    for (ulong m = s * M / S + lid; m < m_end; m += WG_SIZE) {
        const ulong n = m / HW;
        const ulong i = channels_last ? m * C + c : (n * C + c) * HW + (m - n * HW);
        const ulong r = n * G + group;
        const float g = LOAD(dy, i);
        const float xhat = (LOAD(x, i) - (mean ? mean[r] : 0.0f)) * rstd[r];
        count += 1.0f;
        a += g;
        b += g * xhat;
    }
    l_cnt[lid] = count;
    l_a[lid] = a;
    l_b[lid] = b;
    group_tree_merge(l_cnt, l_a, l_b, lid, WG_SIZE, REDUCE_GRAD);
    if (lid == 0) {
        __global float *set = sets + s * 3 * C;
        set[c] = l_cnt[0];
        set[C + c] = l_a[0];
        set[2 * C + c] = l_b[0];
    }
}

#define GN_FORWARD 0  /* out = (x [+ addend] - mean[r]) * rstd[r] * weight[c] + bias[c] */
#define GN_BACKWARD 1 /* out = a[r] * weight[c] * dy + b[r] + e[r] * (x - center[r]) [+ dh_in] */

/* The elementwise pass of both directions. Forward: `stat_a` = mean (NULL for RMS), `stat_b` =
 * rstd; with an addend, x + addend is also written to out2 (the fused residual's h). Backward:
 * `stat_a` = the (a | b | e | center) coefficients of bn_channel's CH_GRAD, R each; `extra` =
 * dh_in. The tensor is walked in segments as bn_elementwise does: channels-first planes of HW
 * values (one channel, one group), or, in channels-last and whenever HW = 1, rows of C channels. */
__kernel void gn_apply(__global const DATA_T *x, __global const DATA_T *addend,
                       __global const DATA_T *dy, __global const DATA_T *extra,
                       __global const float *stat_a, __global const float *stat_b,
                       __global const float *weight, __global const float *bias,
                       __global DATA_T *out, __global DATA_T *out2, ulong total, ulong C, ulong HW,
                       ulong G, int channels_last, int mode, ulong chunk, ulong item_stride,
                       ulong step)
{
    const ulong Cg = C / G, R = total / (Cg * HW);
    const int lanes = channels_last || HW == 1; /* vector lanes are channels */
    const ulong seg_len = lanes ? C : HW, ups = (seg_len + VEC - 1) / VEC;
    const ulong units = total / seg_len * ups;
    const ulong first = get_global_id(0) * item_stride;
    unit_walk w = walk_start(first, step, ups, C);
    ulong seg = ~(ulong)0, r_first = 0; /* the segment whose group is known */
    for (ulong k = 0, u = first; k < chunk && u < units; k++, u += step, walk_advance(&w)) {
        if (w.seg != seg) { /* one division per segment */
            seg = w.seg;
            r_first = lanes ? seg / HW * G : seg / Cg;
        }
        const long left = (long)(seg_len - w.pos * VEC);
        const ulong o = seg * seg_len + w.pos * VEC, c0 = w.pos * VEC;
        const FLOATV wt = !weight ? (FLOATV)1.0f
                          : lanes ? load_lanes(weight, c0, left)
                                  : (FLOATV)weight[w.c];
        FLOATV v = load_lanes(x, o, left);
#define GROUP_STAT(p) (lanes ? group_lanes((p), r_first, c0, Cg, left) : (FLOATV)((p)[r_first]))
        if (mode == GN_FORWARD) {
            if (addend) {
                v += load_lanes(addend, o, left);
                store_lanes(out2, o, left, v);
            }
            FLOATV y = (stat_a ? v - GROUP_STAT(stat_a) : v) * GROUP_STAT(stat_b) * wt;
            if (bias)
                y += lanes ? load_lanes(bias, c0, left) : (FLOATV)bias[w.c];
            store_lanes(out, o, left, y);
        } else {
            FLOATV d = GROUP_STAT(stat_a) * wt * load_lanes(dy, o, left) +
                       GROUP_STAT(stat_a + R) +
                       GROUP_STAT(stat_a + 2 * R) * (v - GROUP_STAT(stat_a + 3 * R));
            if (extra)
                d += load_lanes(extra, o, left);
            store_lanes(out, o, left, d);
        }
#undef GROUP_STAT
    }
}

/* InstanceNorm's running statistics: the mean over the batch of the per-instance mean and
 * unbiased variance. `stats` = (count | mean | biased variance), N * C each. */
__kernel void in_running(__global const float *stats, ulong N, ulong C, float momentum,
                         __global float *running_mean, __global float *running_var)
{
    const ulong c = get_global_id(0);
    if (c >= C)
        return;
    const ulong R = N * C;
    float mean = 0.0f, var = 0.0f;
    for (ulong n = 0; n < N; n++) {
        const float count = stats[n * C + c];
        mean += stats[R + n * C + c];
        var += stats[2 * R + n * C + c] * (count / (count - 1.0f));
    }
    running_mean[c] = (1.0f - momentum) * running_mean[c] + momentum * (mean / N);
    running_var[c] = (1.0f - momentum) * running_var[c] + momentum * (var / N);
}

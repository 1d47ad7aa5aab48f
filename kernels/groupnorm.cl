/* Feature-axis normalizations, all as group normalization of an (N, C, HW) tensor:
 *   GroupNorm(G)    statistics per (n, g) over C/G channels x HW positions
 *   InstanceNorm    G = C
 *   LayerNorm       R rows of D values = (N = R, C = D, HW = 1, G = 1)
 *   RMSNorm         the same with rms: no mean subtraction, mean(x^2) in place of the variance
 * Group r = n * G + g holds D = (C/G) * HW values; its position p is
 *   channels-first: element r * D + p (contiguous), channel g * Cg + p / HW;
 *   channels-last:  element (n * HW + p / Cg) * C + g * Cg + p % Cg, channel g * Cg + p % Cg.
 * Stage 1 is batch norm's (batchnorm.cl): groups as channels where they are contiguous rows
 * (channels-first, LayerNorm), else partials per (sample, channel) that gn_combine merges per
 * group; gn_stats serves the one remaining case (channels-last groups with a fused residual).
 * bn_channel then finalizes per group and gn_apply is the elementwise pass. Built together with
 * common.cl and batchnorm.cl. */

typedef struct gn_layout {
    ulong C, HW, G, Cg, D;
    int channels_last;
} gn_layout;

#define GN_LAYOUT(C, HW, G, channels_last) {(C), (HW), (G), (C) / (G), (C) / (G) * (HW), (channels_last)}

static ulong gn_index(const gn_layout *l, ulong r, ulong p)
{
    if (!l->channels_last)
        return r * l->D + p;
    const ulong n = r / l->G, g = r - n * l->G, s = p / l->Cg;
    return (n * l->HW + s) * l->C + g * l->Cg + (p - s * l->Cg);
}

/* Stage 1 over groups, for channels-last groups with a fused residual: statistics of x + addend.
 * Work-groups: (S x WG_SIZE) x R; partial s of group r takes pairs [s*P/S, (s+1)*P/S). */
__kernel __attribute__((reqd_work_group_size(WG_SIZE, 1, 1))) void
gn_stats(__global const DATA_T *x, __global const DATA_T *addend, ulong C, ulong HW, ulong G,
         int channels_last, uint S, __global float *sets, __global float *pivots)
{
    __local float l_cnt[WG_SIZE], l_a[WG_SIZE], l_b[WG_SIZE];
    const gn_layout l = GN_LAYOUT(C, HW, G, channels_last);
    const uint lid = get_local_id(0);
    const ulong s = get_group_id(0), r = get_global_id(1), R = get_global_size(1);
    const ulong pairs = (l.D + 1) / 2, q_end = (s + 1) * pairs / S;
    const ulong i0 = gn_index(&l, r, 0);
    const float k = LOAD(x, i0) + (addend ? LOAD(addend, i0) : 0.0f);
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
        const float dev = (va - vb) * 0.5f;
        stats_merge(&count, &a, &b, two ? 2.0f : 1.0f, ((va - k) + (vb - k)) * 0.5f, dev * dev);
    }
    l_cnt[lid] = count;
    l_a[lid] = a;
    l_b[lid] = b;
    group_tree_merge(l_cnt, l_a, l_b, lid, WG_SIZE, REDUCE_STATS);
    if (lid == 0) {
        __global float *set = sets + s * 3 * R;
        set[r] = l_cnt[0];
        set[R + r] = l_a[0];
        set[2 * R + r] = l_b[0];
        if (s == 0)
            pivots[r] = k;
    }
}

/* GroupNorm from per-(sample n, channel c) partials of batch norm's stage 1 (channels-last
 * statistics, and the gradients of both layouts): component q (0 count, 1 mean or sum dy, 2 m2n
 * or sum dy * (x - mean)) of part j at parts[j * part_stride + n * sample_stride + q * comp + c],
 * j < k. Per group r = n * G + g, into out_groups (count | a | b, R each): statistics merged with
 * Chan's formula over the group's channels and parts, their means moved from each channel's
 * pivot (pivots[n * pivot_stride + c]) to the group's first channel's, which goes to
 * out_pivots[r] (a common offset such as 1e4 + N(0, 1) then costs no precision); gradients summed with the weights, sum w[c] * dy and
 * sum w[c] * dy * (x - mean). Per channel, into out_channels when given (gradients): over the
 * samples, sum dy and sum rstd[r] * dy * (x - mean[r]), the sums of dbias and dweight.
 * One work-item per group and per channel: max(R, C). A fixed order: deterministic. */
__kernel void gn_combine(__global const float *parts, uint k, ulong part_stride,
                         ulong sample_stride, ulong comp, __global const float *pivots,
                         ulong pivot_stride, ulong N, ulong C, ulong G, int mode,
                         __global const float *weight, __global const float *rstd,
                         __global float *out_groups, __global float *out_pivots,
                         __global float *out_channels)
{
    const ulong i = get_global_id(0), Cg = C / G, R = N * G;
    if (i < R) {
        const ulong n = i / G, c_first = (i - n * G) * Cg;
        const float k_group = mode == REDUCE_STATS ? pivots[n * pivot_stride + c_first] : 0.0f;
        float count = 0.0f, a = 0.0f, b = 0.0f;
        for (ulong c = c_first; c < c_first + Cg; c++) {
            const float w = weight ? weight[c] : 1.0f;
            const float shift =
                mode == REDUCE_STATS ? pivots[n * pivot_stride + c] - k_group : 0.0f;
            for (uint j = 0; j < k; j++) {
                __global const float *p = parts + j * part_stride + n * sample_stride + c;
                const float pn = p[0];
                float pa = p[comp];
                if (mode == REDUCE_STATS) {
                    if (pn > 0.0f)
                        pa += shift;
                    stats_merge(&count, &a, &b, pn, pa, p[2 * comp]);
                } else {
                    count += pn;
                    a += w * pa;
                    b += w * p[2 * comp];
                }
            }
        }
        out_groups[i] = count;
        out_groups[R + i] = a;
        out_groups[2 * R + i] = b;
        if (mode == REDUCE_STATS)
            out_pivots[i] = k_group;
    }
    if (mode == REDUCE_GRAD && out_channels && i < C) {
        const ulong c = i, g = c / Cg;
        float count = 0.0f, a = 0.0f, b = 0.0f;
        for (ulong n = 0; n < N; n++) {
            float pa = 0.0f, pb = 0.0f;
            for (uint j = 0; j < k; j++) {
                __global const float *p = parts + j * part_stride + n * sample_stride + c;
                count += p[0];
                pa += p[comp];
                pb += p[2 * comp];
            }
            a += pa;
            b += rstd[n * G + g] * pb;
        }
        out_channels[c] = count;
        out_channels[C + c] = a;
        out_channels[2 * C + c] = b;
    }
}

#define GN_FORWARD 0  /* out = (x [+ addend] - mean[r]) * rstd[r] * weight[c] + bias[c] */
#define GN_BACKWARD 1 /* out = a[r] * weight[c] * dy + b[r] + e[r] * (x - center[r]) [+ dh_in] */

/* Whether a one-launch kernel's stores of `out` stream past the cache (CHF_STREAM, as
 * bn_elementwise's FLAG_STREAM): asked for, out aligned to the vector, segments of whole
 * vectors. */
static int streams(int flags, __global const DATA_T *out, ulong seg_len)
{
    return (flags & CHF_STREAM) && seg_len % VEC == 0 && vector_aligned(out);
}

/* A per-group value for the lanes of a unit at channel c0 = g0 * Cg + rem (`left` channels to
 * the segment's end): one value for a channels-first plane (lanes = 0), a vector load for
 * per-channel values (Cg = 1), one value when the unit lies in one group, else lane by lane. */
ALWAYS_INLINE
FLOATV group_stat(__global const float *p, ulong r_first, ulong c0, ulong g0, ulong rem, ulong Cg,
                  int lanes, long left)
{
    if (!lanes)
        return (FLOATV)p[r_first];
    if (Cg == 1)
        return load_lanes(p + r_first, c0, left);
    if (rem + (left < VEC ? (ulong)left : VEC) <= Cg)
        return (FLOATV)p[r_first + g0];
    return group_lanes(p, r_first, c0, Cg, left);
}

/* The per-group values of a unit: forward (v0, v1) = (mean, rstd), backward (v0..v3) = the
 * (a, b, e, center) coefficients. Named fields, not an array: merged code paths indexed an array
 * at run time, which kept it in memory (NVPTX: 64 bytes of stack per work-item). */
typedef struct unit_values {
    FLOATV v0, v1, v2, v3;
} unit_values;

/* The per-group values a unit at channel c0 = g0 * Cg + rem needs, lane by lane as group_stat
 * gives them. */
ALWAYS_INLINE
void gn_stats_at(__global const float *stat_a, __global const float *stat_b, ulong R, int mode,
                 ulong r_first, ulong c0, ulong g0, ulong rem, ulong Cg, int lanes, long left,
                 unit_values *s)
{
#define GROUP_STAT(p) group_stat((p), r_first, c0, g0, rem, Cg, lanes, left)
    if (mode == GN_FORWARD) {
        s->v0 = stat_a ? GROUP_STAT(stat_a) : 0.0f;
        s->v1 = GROUP_STAT(stat_b);
        return;
    }
    s->v0 = GROUP_STAT(stat_a);
    s->v1 = GROUP_STAT(stat_a + R);
    s->v2 = GROUP_STAT(stat_a + 2 * R);
    s->v3 = GROUP_STAT(stat_a + 3 * R);
#undef GROUP_STAT
}

/* One unit of gn_apply at element o, channel c0 (channels-last; the plane's channel c for
 * channels-first), with the group values s of gn_stats_at. */
ALWAYS_INLINE
void gn_unit(__global const DATA_T *x, __global const DATA_T *addend, __global const DATA_T *dy,
             __global const DATA_T *extra, int centered, __global const float *weight,
             __global const float *bias, __global DATA_T *out, __global DATA_T *out2, int lanes,
             int mode, ulong o, long left, ulong c, ulong c0, const unit_values *s, int stream)
{
    const int store_flags = stream ? FLAG_STREAM : 0;
    const FLOATV wt = !weight ? (FLOATV)1.0f : lanes ? load_lanes(weight, c0, left) : weight[c];
    FLOATV v = load_lanes(x, o, left);
    if (mode == GN_FORWARD) {
        if (addend) {
            v += load_lanes(addend, o, left);
            store_lanes(out2, o, left, v);
        }
        FLOATV y = (centered ? v - s->v0 : v) * s->v1 * wt;
        if (bias)
            y += lanes ? load_lanes(bias, c0, left) : (FLOATV)bias[c];
        store_result(out, o, left, y, store_flags);
        return;
    }
    FLOATV d = s->v0 * wt * load_lanes(dy, o, left) + s->v1 + s->v2 * (v - s->v3);
    if (extra)
        d += load_lanes(extra, o, left);
    store_result(out, o, left, d, store_flags);
}

/* Units [pos, stop) of segment seg (gn_apply's contiguous path); along a row the group of each
 * unit (g0, rem) is stepped, not divided (a division costs more than the unit's loads). With
 * `whole`, every unit has VEC values: `left` is a constant and the lane checks fold away. With
 * `fixed` (a channels-first plane, or rows with one group), the group values are loaded once. */
ALWAYS_INLINE
void gn_run(__global const DATA_T *x, __global const DATA_T *addend, __global const DATA_T *dy,
            __global const DATA_T *extra, __global const float *stat_a,
            __global const float *stat_b, __global const float *weight,
            __global const float *bias, __global DATA_T *out, __global DATA_T *out2, ulong R,
            ulong Cg, int lanes, int mode, ulong seg, ulong seg_len, ulong c, ulong r_first,
            ulong pos, ulong stop, int whole, int fixed, ulong g0, ulong rem, int stream)
{
    unit_values s;
    if (fixed) /* one group: the values of group r_first, on every lane */
        gn_stats_at(stat_a, stat_b, R, mode, r_first, 0, 0, 0, 1, 0, 1, &s);
    for (; pos < stop; pos++) {
        const long left = whole ? VEC : (long)(seg_len - pos * VEC);
        if (!fixed)
            gn_stats_at(stat_a, stat_b, R, mode, r_first, pos * VEC, g0, rem, Cg, lanes, left, &s);
        gn_unit(x, addend, dy, extra, stat_a != NULL, weight, bias, out, out2, lanes, mode,
                seg * seg_len + pos * VEC, left, c, pos * VEC, &s, stream);
        if (lanes && Cg > 1) /* (per-channel values need no group) */
            for (rem += VEC; rem >= Cg; rem -= Cg)
                g0++;
    }
}

/* The forward over one whole channels-last row at o_row (C channels, groups r_first..) whose
 * groups are whole vectors (Cg a multiple of VEC): group by group, its mean and rstd loaded once
 * and broadcast; the same arithmetic as gn_unit. */
ALWAYS_INLINE void gn_forward_row(__global const DATA_T *x, __global const DATA_T *addend,
                                  __global const float *mean, __global const float *rstd,
                                  __global const float *weight, __global const float *bias,
                                  __global DATA_T *out, __global DATA_T *out2, ulong o_row,
                                  ulong r_first, ulong G, ulong Cg)
{
    for (ulong g = 0; g < G; g++) {
        const FLOATV m = mean ? mean[r_first + g] : 0.0f, rs = rstd[r_first + g];
        for (ulong c0 = g * Cg; c0 < (g + 1) * Cg; c0 += VEC) {
            const ulong o = o_row + c0;
            FLOATV v = LOADV(x + o, 0);
            if (addend) {
                v += LOADV(addend + o, 0);
                STOREV(out2 + o, 0, v);
            }
            FLOATV y = (mean ? v - m : v) * rs * (weight ? LOADV(weight + c0, 0) : (FLOATV)1.0f);
            if (bias)
                y += LOADV(bias + c0, 0);
            STOREV(out + o, 0, y);
        }
    }
}

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
    /* one path per build, as in bn_elementwise */
#if WG_SIZE == 1
    /* a contiguous run (CPUs): segment by segment */
    const int fixed = !lanes || G == 1; /* one group per segment */
    const ulong u_end = first + chunk < units ? first + chunk : units;
    for (ulong u = first, seg = first / ups, pos = first - seg * ups; u < u_end; seg++) {
        const ulong stop = ups - pos < u_end - u ? ups : pos + (u_end - u);
        const ulong r_first = lanes ? seg / HW * G : seg / Cg, c = seg % C;
        const ulong g0 = lanes ? pos * VEC / Cg : 0, rem = lanes ? pos * VEC - g0 * Cg : 0;
        if (lanes && !fixed && mode == GN_FORWARD && Cg % VEC == 0 && pos == 0 &&
            stop == ups) {
            gn_forward_row(x, addend, stat_a, stat_b, weight, bias, out, out2, seg * seg_len,
                           r_first, G, Cg);
            u += ups;
            continue;
        }
        /* whole vectors, then the segment's partial one */
        const ulong whole = seg_len / VEC < stop ? seg_len / VEC : stop;
        gn_run(x, addend, dy, extra, stat_a, stat_b, weight, bias, out, out2, R, Cg, lanes,
               mode, seg, seg_len, c, r_first, pos, pos < whole ? whole : pos, 1, fixed, g0,
               rem, 0);
        if ((pos > whole ? pos : whole) < stop) {
            const ulong p = pos > whole ? pos : whole, pg = lanes ? p * VEC / Cg : 0;
            gn_run(x, addend, dy, extra, stat_a, stat_b, weight, bias, out, out2, R, Cg,
                   lanes, mode, seg, seg_len, c, r_first, p, stop, 0, fixed, pg,
                   lanes ? p * VEC - pg * Cg : 0, 0);
        }
        u += stop - pos;
        pos = 0;
    }
#else
    /* strided by the grid (GPUs) */
    unit_walk w = walk_start(first, step, ups, C);
    for (ulong k = 0, u = first; k < chunk && u < units; k++, u += step, walk_advance(&w)) {
        const ulong c0 = w.pos * VEC, g0 = lanes ? quotient(c0, Cg) : 0;
        const ulong r_first = lanes ? quotient(w.seg, HW) * G : quotient(w.seg, Cg);
        const long left = (long)(seg_len - c0);
        unit_values s;
        gn_stats_at(stat_a, stat_b, R, mode, r_first, c0, g0, c0 - g0 * Cg, Cg, lanes, left, &s);
        gn_unit(x, addend, dy, extra, stat_a != NULL, weight, bias, out, out2, lanes, mode,
                w.seg * seg_len + c0, left, w.c, c0, &s, 0);
    }
#endif
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

/* The forward's apply over one segment (a row, or a plane) whose first group is r: whole
 * vectors, then the partial one; `fixed` where the segment is all in group r. */
ALWAYS_INLINE void gn_segment(__global const DATA_T *x, __global const DATA_T *addend,
                              __global const float *mean, __global const float *rstd,
                              __global const float *weight, __global const float *bias,
                              __global DATA_T *y, __global DATA_T *h, ulong R, ulong Cg,
                              int lanes, ulong seg, ulong seg_len, ulong c, ulong r, ulong whole,
                              ulong ups, int fixed, int stream)
{
    const ulong g0 = fixed ? 0 : whole * VEC / Cg;
    gn_run(x, addend, NULL, NULL, mean, rstd, weight, bias, y, h, R, Cg, lanes, GN_FORWARD, seg,
           seg_len, c, r, 0, whole, 1, fixed, 0, 0, stream);
    gn_run(x, addend, NULL, NULL, mean, rstd, weight, bias, y, h, R, Cg, lanes, GN_FORWARD, seg,
           seg_len, c, r, whole, ups, 0, fixed, g0, fixed ? 0 : whole * VEC - g0 * Cg, stream);
}

/* The apply of one segment of a group (len values at o: a row of channels with per-lane weights,
 * or with `lanes` = 0 a plane of channel c; mean m, rstd rs) and, in the same loop with `next`,
 * the lane sums of the values `gap` further on pivoted by k (the next group's, returned): the
 * cached group is written while the next one is read from memory, reads and writes at once as
 * in a copy. */
ALWAYS_INLINE FLOATV apply_and_sum_next(__global const DATA_T *x, __global const DATA_T *addend,
                                        __global const float *weight,
                                        __global const float *bias, __global DATA_T *y,
                                        __global DATA_T *h, ulong o, ulong len, int lanes,
                                        ulong c, ulong gap, float m, float rs, const int next,
                                        float k, int stream)
{
    const ulong whole = len / VEC * VEC;
    const unit_values st = {m, rs, 0.0f, 0.0f}; /* gn_unit's forward values (m = 0 for RMS) */
    FLOATV s0 = 0.0f, s1 = 0.0f;
    ulong j = 0;
    for (; j + 2 * VEC <= whole; j += 2 * VEC) {
        gn_unit(x, addend, NULL, NULL, 1, weight, bias, y, h, lanes, GN_FORWARD, o + j, VEC, c, j,
                &st, stream);
        gn_unit(x, addend, NULL, NULL, 1, weight, bias, y, h, lanes, GN_FORWARD, o + j + VEC, VEC,
                c, j + VEC, &st, stream);
        if (next) {
            s0 += pivoted(x, addend, o + gap + j, VEC, k);
            s1 += pivoted(x, addend, o + gap + j + VEC, VEC, k);
        }
    }
    for (; j < len; j += VEC) {
        const long left = (long)(len - j) < VEC ? (long)(len - j) : VEC;
        gn_unit(x, addend, NULL, NULL, 1, weight, bias, y, h, lanes, GN_FORWARD, o + j, left, c, j,
                &st, stream);
        if (next)
            s1 += pivoted(x, addend, o + gap + j, left, k);
    }
    return s0 + s1;
}

/* gn_forward_fused over groups r_first.. (each D contiguous values: a row of channels when
 * HW = 1, else Cg planes of HW): each group's sum rides on the previous group's apply
 * (apply_and_sum_next); its squared deviations come from the cache. The cached statistics:
 * pivot k = the group's first value, two passes. */
ALWAYS_INLINE void fused_groups(__global const DATA_T *x, __global const DATA_T *addend,
                                __global const float *weight, __global const float *bias,
                                __global float *mean_out, __global float *rstd,
                                __global float *out_sets, __global DATA_T *y, __global DATA_T *h,
                                ulong R, ulong C, ulong HW, ulong G, ulong r_first, uint here,
                                float eps, int flags, const int call_sums)
{
    const int rms = flags & CHF_RMS;
    const int lanes = HW == 1; /* vector lanes are channels, with their own weights */
    const ulong Cg = C / G, D = Cg * HW, segs = lanes ? 1 : Cg, seg_len = lanes ? D : HW;
    /* segments (rows, or planes) start on whole vectors */
    const int stream = streams(flags, y, seg_len);
    const float count = (float)D;
    float k = 0.0f, sum = 0.0f;
    if (here) {
        k = LOAD(x, r_first * D) + (addend ? LOAD(addend, r_first * D) : 0.0f);
        sum = call_sums ? cached_sum_call(x, addend, r_first * D, D, k, 0.0f, 1.0f)
                        : cached_sum(x, addend, r_first * D, D, k, 0.0f, 1.0f);
    }
    for (uint t = 0; t < here; t++) {
        const ulong r = r_first + t, o = r * D, c_first = (r % G) * Cg;
        const float mean = sum / count;
        const float inv_p = 1.0f / pow2_floor(count);
        const float m2n = call_sums ? cached_sum_squares_call(x, addend, o, D, k, mean, inv_p)
                                    : cached_sum_squares(x, addend, o, D, k, mean, inv_p);
        finalize_stats(r, R, count, mean + k, m2n, eps, 0.0f, flags, NULL, NULL, NULL,
                       rms ? NULL : mean_out, rstd, out_sets);
        const float m = rms ? 0.0f : mean_out[r], rs = rstd[r];
        const int next = t + 1 < here;
        if (next)
            k = LOAD(x, o + D) + (addend ? LOAD(addend, o + D) : 0.0f);
        FLOATV next_sum = 0.0f;
        for (ulong j = 0; j < segs; j++) {
            const ulong oj = o + j * seg_len, c = c_first + j;
            /* (each its own loop: `next` a constant in each) */
            if (next)
                next_sum += apply_and_sum_next(x, addend, weight, bias, y, h, oj, seg_len, lanes,
                                               c, D, m, rs, 1, k, stream);
            else
                apply_and_sum_next(x, addend, weight, bias, y, h, oj, seg_len, lanes, c, D, m, rs,
                                   0, 0.0f, stream);
        }
        sum = HSUM(next_sum);
    }
}

/* The forward in one launch for work-groups of one (CPUs) where each group is one contiguous row
 * of D values that fits in cache (layer and RMS norm: rows of C = D; channels-first group and
 * instance norm: Cg planes of HW): each work-item takes the statistics of its `tile` groups
 * (fused_groups: the first from memory, each next one's sum during the previous one's apply),
 * finalizes them as bn_channel does (mean, rstd, and out_sets for InstanceNorm's running
 * statistics), and applies them as gn_apply does while the group is still in cache: x [and the
 * addend] are read from memory once. Work-items: ceil(R / tile). Rows (HW = 1, per-lane weights)
 * and planes apart, their constants known to the compiler. gn_forward_fused_residual: with the
 * residual, its own kernel, the sums calls (in-process A/B on PoCL, median of 3 rounds: with the
 * sums inlined, the plain rows and planes took 0.87-0.91x the time, the residual rows 1.07-1.48x,
 * and 1.19-1.56x still as calls in one kernel with inlined plain paths). */
#define GN_FORWARD_FUSED(name, addend_, h_, call_sums)                                             \
    __kernel void name(__global const DATA_T *x, __global const DATA_T *addend,                   \
                       __global const float *weight, __global const float *bias,                  \
                       __global float *mean_out, __global float *rstd, __global float *out_sets,  \
                       __global DATA_T *y, __global DATA_T *h, ulong R, ulong C, ulong HW,        \
                       ulong G, uint tile, float eps, int flags)                                  \
    {                                                                                              \
        FUSED_GROUPS_BODY(addend_, h_, call_sums)                                                  \
    }
#if WG_SIZE == 1 /* (work-groups of many never launch them: no bodies for them) */
#define FUSED_GROUPS_BODY(addend_, h_, call_sums)                                                  \
    const ulong r_first = get_global_id(0) * tile;                                                 \
    const uint here = tile_count(r_first, R, tile);                                                \
    if (HW == 1)                                                                                   \
        fused_groups(x, addend_, weight, bias, mean_out, rstd, out_sets, y, h_, R, C, 1, G,        \
                     r_first, here, eps, flags, call_sums);                                        \
    else                                                                                           \
        fused_groups(x, addend_, weight, bias, mean_out, rstd, out_sets, y, h_, R, C, HW, G,       \
                     r_first, here, eps, flags, call_sums);
#else
#define FUSED_GROUPS_BODY(addend_, h_, call_sums)
#endif
GN_FORWARD_FUSED(gn_forward_fused, NULL, NULL, 0)
GN_FORWARD_FUSED(gn_forward_fused_residual, addend, h, 1)
#undef FUSED_GROUPS_BODY

/* The values from position p of a row of D that vector u of a register kernel's run holds: 0
 * past the build's `units`, past the row, or for a run with no row (not live). */
ALWAYS_INLINE long row_unit_left(uint u, uint units, int live, ulong p, ulong D)
{
    return u < units && live && p < D ? (long)(D - p) : 0;
}

/* x [+ addend] at position p of the row at o (`left` values from p) */
ALWAYS_INLINE FLOATV row_values(__global const DATA_T *x, __global const DATA_T *addend, ulong o,
                                ulong p, long left)
{
    FLOATV v = load_lanes(x, o + p, left);
    if (addend)
        v += load_lanes(addend, o + p, left);
    return v;
}

/* y at position p of a row (`left` values from it) from v = x [+ addend] there: gn_unit's
 * arithmetic, (v - center) * rs * weight + bias (the one-launch row kernels). */
ALWAYS_INLINE FLOATV row_output(FLOATV v, float center, float rs, __global const float *weight,
                                __global const float *bias, ulong p, long left)
{
    const FLOATV wt = weight ? load_lanes(weight, p, left) : (FLOATV)1.0f;
    FLOATV out = (v - center) * rs * wt;
    if (bias)
        out += load_lanes(bias, p, left);
    return out;
}

/* Layer and RMS norm forward in one launch for work-groups of many (GPUs), where a row of D
 * values fits in the registers of `width` work-items (a power of two <= WG_SIZE; WG_SIZE / width
 * rows per work-group), `units` vectors each (REGISTER_KERNELS' builds): vector u of member m is
 * the row's u * width + m,
 * so that neighbouring work-items read neighbouring vectors. The statistics are the cached ones
 * (pivot k = the row's first value; the mean, then the squared deviations from it) with tree sums
 * over the run in place of running ones; the apply is gn_unit's arithmetic on the registers, y
 * [and h] written after the run's last barrier (either may be x): x [and the addend] are read
 * once, y [and h] written once, where the general path reads x twice over three launches.
 * Work-groups: ceil(R / (WG_SIZE / width)). */
ALWAYS_INLINE void forward_rows(__global const DATA_T *x, __global const DATA_T *addend,
                                __global const float *weight, __global const float *bias,
                                __global float *mean_out, __global float *rstd,
                                __global DATA_T *y, __global DATA_T *h, ulong R, ulong D,
                                uint width, float eps, int flags, __local float *l_sum,
                                const uint units)
{
#if WG_SIZE > 1 /* (work-groups of one never launch the register kernels: not compiled for them) */
    const uint lid = get_local_id(0), member = lid & (width - 1);
    const ulong r = get_group_id(0) * (WG_SIZE / width) + lid / width;
    const int live = r < R, rms = flags & CHF_RMS;
    const ulong o = live ? r * D : 0;
    const float k = live ? LOAD(x, o) + (addend ? LOAD(addend, o) : 0.0f) : 0.0f;
    FLOATV v[ROW_UNITS], acc = 0.0f;
#pragma unroll
    for (uint u = 0; u < ROW_UNITS; u++) {
        const ulong p = ((ulong)u * width + member) * VEC;
        const long left = row_unit_left(u, units, live, p, D);
        v[u] = 0.0f;
        if (left > 0) {
            v[u] = row_values(x, addend, o, p, left);
            acc += lane_select(v[u] - k, left);
        }
    }
    const float count = (float)D;
    const float mean_k = tree_sum(HSUM(acc), l_sum, lid, 1, width) / count;
    /* m2n = the sum of (d / P) * d (cached_sum_squares' scaling: no overflow at 1e18) */
    const float inv_p = 1.0f / pow2_floor(count);
    acc = 0.0f;
#pragma unroll
    for (uint u = 0; u < ROW_UNITS; u++) {
        const ulong p = ((ulong)u * width + member) * VEC;
        const long left = row_unit_left(u, units, live, p, D);
        if (left > 0) {
            const FLOATV d = lane_select((v[u] - k) - mean_k, left);
            acc += d * inv_p * d;
        }
    }
    const float m2n = tree_sum(HSUM(acc), l_sum, lid, 1, width);
    /* every member finalizes alike; the run's first writes the row's statistics */
    const int writer = live && member == 0;
    const float mean = mean_k + k;
    const float rs = finalize_stats(r, R, count, mean, m2n, eps, 0.0f, flags, NULL, NULL, NULL,
                                    writer && !rms ? mean_out : NULL, writer ? rstd : NULL, NULL);
    const float center = rms ? 0.0f : mean;
    /* every pivot read of x before the first write of y or h (either may be x) */
    barrier(CLK_GLOBAL_MEM_FENCE);
#pragma unroll
    for (uint u = 0; u < ROW_UNITS; u++) {
        const ulong p = ((ulong)u * width + member) * VEC;
        const long left = row_unit_left(u, units, live, p, D);
        if (left > 0) {
            if (addend)
                store_lanes(h, o + p, left, v[u]);
            store_lanes(y, o + p, left, row_output(v[u], center, rs, weight, bias, p, left));
        }
    }
#endif
}

#define GN_FORWARD_ROWS(name, units)                                                               \
    __kernel __attribute__((reqd_work_group_size(WG_SIZE, 1, 1))) void name(                     \
        __global const DATA_T *x, __global const DATA_T *addend, __global const float *weight,   \
        __global const float *bias, __global float *mean_out, __global float *rstd,              \
        __global DATA_T *y, __global DATA_T *h, ulong R, ulong D, float eps, int flags,          \
        uint width)                                                                              \
    {                                                                                            \
        __local float l_sum[WG_SIZE];                                                            \
        if (REGISTER_BUILT(units))                                                               \
            forward_rows(x, addend, weight, bias, mean_out, rstd, y, h, R, D, width, eps, flags, \
                         l_sum, units);                                                          \
    }
REGISTER_KERNELS(GN_FORWARD_ROWS, gn_forward_rows)

/* Layer and RMS norm forward in one launch for work-groups of many (GPUs), for rows past the
 * register kernels: a work-group per row, work-item i taking its vectors i, i + WG_SIZE, ... in
 * three runs: the statistics' two (the mean, then the squared deviations from it: forward_rows'
 * arithmetic, with tree sums over the work-group) and the apply. The second and third read the
 * row again, from the cache where the rows of the resident work-groups fit it (the host takes
 * this kernel for rows up to the cached_kib parameter): x read from memory once, y written
 * once, in one launch where the general path takes three and reads x twice. No residual: addend
 * and h (gn_forward_rows' arguments, which the host passes alike) are not read; with the residual
 * this kernel took 1.07-1.14x the general path's time on an H200, so the host sends those rows
 * there. Each position is read and written by one work-item, and the writes follow a barrier
 * after every read of the pivot, so y may be x. Work-groups: R. */
__kernel __attribute__((reqd_work_group_size(WG_SIZE, 1, 1))) void
gn_forward_rows_cached(__global const DATA_T *x, __global const DATA_T *addend,
                       __global const float *weight, __global const float *bias,
                       __global float *mean_out, __global float *rstd, __global DATA_T *y,
                       __global DATA_T *h, ulong R, ulong D, float eps, int flags)
{
#if WG_SIZE > 1 /* (work-groups of one never launch it: not compiled for them) */
    __local float l_sum[WG_SIZE];
    const uint lid = get_local_id(0);
    const ulong r = get_group_id(0), o = r * D, first = (ulong)lid * VEC, step = WG_SIZE * VEC;
    const int rms = flags & CHF_RMS;
    const float k = LOAD(x, o);
    FLOATV acc = 0.0f;
#pragma unroll 4
    for (ulong p = first; p < D; p += step)
        acc += lane_select(load_lanes(x, o + p, (long)(D - p)) - k, (long)(D - p));
    const float count = (float)D;
    const float mean_k = tree_sum(HSUM(acc), l_sum, lid, 1, WG_SIZE) / count;
    /* m2n = the sum of (d / P) * d (cached_sum_squares' scaling: no overflow at 1e18) */
    const float inv_p = 1.0f / pow2_floor(count);
    acc = 0.0f;
#pragma unroll 4
    for (ulong p = first; p < D; p += step) {
        const long left = (long)(D - p);
        const FLOATV d = lane_select((load_lanes(x, o + p, left) - k) - mean_k, left);
        acc += d * inv_p * d;
    }
    const float m2n = tree_sum(HSUM(acc), l_sum, lid, 1, WG_SIZE);
    const float mean = mean_k + k;
    const float rs = finalize_stats(r, R, count, mean, m2n, eps, 0.0f, flags, NULL, NULL, NULL,
                                    lid == 0 && !rms ? mean_out : NULL, lid == 0 ? rstd : NULL,
                                    NULL);
    const float center = rms ? 0.0f : mean;
    /* every pivot read of x before the first write of y (which may be x) */
    barrier(CLK_GLOBAL_MEM_FENCE);
#pragma unroll 4
    for (ulong p = first; p < D; p += step) {
        const long left = (long)(D - p);
        store_lanes(y, o + p, left,
                    row_output(load_lanes(x, o + p, left), center, rs, weight, bias, p, left));
    }
#endif
}

/* The one-launch row kernels' dx: one vector's dy (g) and x - mean (xc) at position p of a row
 * into the sums of w * dy and w * dy * (x - mean), then dx = a * w * dy + b + e * (x - mean)
 * [+ dh_in] (gn_unit's arithmetic) stored at o + p. */
ALWAYS_INLINE void row_grad_sums(FLOATV g, FLOATV xc, __global const float *weight, ulong p,
                                 long left, FLOATV *s1, FLOATV *s2)
{
    const FLOATV wg = weight ? load_lanes(weight, p, left) * g : g;
    *s1 += wg;
    *s2 += wg * xc;
}

ALWAYS_INLINE void row_dx(__global DATA_T *dx, __global const DATA_T *dh_in,
                          __global const float *weight, ulong o, ulong p, long left, FLOATV g,
                          FLOATV xc, float a, float b, float e)
{
    const FLOATV wt = weight ? load_lanes(weight, p, left) : (FLOATV)1.0f;
    FLOATV d = a * wt * g + b + e * xc;
    if (dh_in)
        d += load_lanes(dh_in, o + p, left);
    store_lanes(dx, o + p, left, d);
}

/* Layer and RMS norm dx in one launch for work-groups of many (GPUs), where a row of D values
 * fits in the registers of `width` work-items (`units` vectors each, laid out as in
 * gn_forward_rows): a run holds its row's x - mean and dy, sums w * dy and w * dy * (x - mean) by a
 * tree over the run, forms the coefficients (grad_coefficients, as bn_channel's CH_GRAD gives
 * gn_apply), then writes dx = a * w * dy + b + e * (x - mean) [+ dh_in], gn_unit's arithmetic
 * (dx may be x or dy: every read of the row is before the tree's barriers). x and dy are read
 * once and dx written once, where the general path's row sums and apply make 5 passes over three
 * launches. Work-groups: ceil(R / (WG_SIZE / width)). */
ALWAYS_INLINE void backward_rows(__global const DATA_T *x, __global const DATA_T *dy,
                                 __global const DATA_T *dh_in, __global const float *mean,
                                 __global const float *rstd, __global const float *weight,
                                 ulong R, ulong D, uint width, int flags, __global DATA_T *dx,
                                 __local float2 *l_pair, const uint units)
{
#if WG_SIZE > 1 /* (work-groups of one never launch the register kernels: not compiled for them) */
    const uint lid = get_local_id(0), member = lid & (width - 1);
    const ulong r = get_group_id(0) * (WG_SIZE / width) + lid / width;
    const int live = r < R;
    const ulong o = live ? r * D : 0;
    const float mu = live && mean ? mean[r] : 0.0f, rs = live ? rstd[r] : 0.0f;
    FLOATV xc[ROW_UNITS], g[ROW_UNITS], s1 = 0.0f, s2 = 0.0f;
#pragma unroll
    for (uint u = 0; u < ROW_UNITS; u++) {
        const ulong p = ((ulong)u * width + member) * VEC;
        const long left = row_unit_left(u, units, live, p, D);
        xc[u] = g[u] = 0.0f;
        if (left > 0) {
            xc[u] = lane_select(load_lanes(x, o + p, left) - mu, left);
            g[u] = load_lanes(dy, o + p, left);
            row_grad_sums(g[u], xc[u], weight, p, left, &s1, &s2);
        }
    }
    const float2 sums = tree_sum_pair((float2)(HSUM(s1), HSUM(s2)), l_pair, lid, 1, width);
    float a, b, e;
    grad_coefficients(r, (float)D, sums.x, sums.y, 1.0f, rs, flags, NULL, NULL, &a, &b, &e);
#pragma unroll
    for (uint u = 0; u < ROW_UNITS; u++) {
        const ulong p = ((ulong)u * width + member) * VEC;
        const long left = row_unit_left(u, units, live, p, D);
        if (left > 0)
            row_dx(dx, dh_in, weight, o, p, left, g[u], xc[u], a, b, e);
    }
#endif
}

#define GN_BACKWARD_ROWS(name, units)                                                              \
    __kernel __attribute__((reqd_work_group_size(WG_SIZE, 1, 1))) void name(                     \
        __global const DATA_T *x, __global const DATA_T *dy, __global const DATA_T *dh_in,       \
        __global const float *mean, __global const float *rstd, __global const float *weight,    \
        ulong R, ulong D, int flags, __global DATA_T *dx, uint width)                            \
    {                                                                                            \
        __local float2 l_pair[WG_SIZE];                                                          \
        if (REGISTER_BUILT(units))                                                               \
            backward_rows(x, dy, dh_in, mean, rstd, weight, R, D, width, flags, dx, l_pair,      \
                          units);                                                                \
    }
REGISTER_KERNELS(GN_BACKWARD_ROWS, gn_backward_rows)

/* Layer and RMS norm dx in one launch for work-groups of many (GPUs) where the register kernels
 * do not serve: a work-group per row, work-item i taking its vectors i, i + WG_SIZE, ... twice:
 * the sums of w * dy and w * dy * (x - mean) (a tree of pairs over the work-group), then, from
 * the coefficients, dx = a * w * dy + b + e * (x - mean) [+ dh_in] (backward_rows' arithmetic),
 * reading x and dy again, from the cache where the rows of the resident work-groups fit it (the
 * host takes it for rows up to cached_kib). The writes follow a barrier after every read
 * of other positions, so dx may be x or dy. Work-groups: R. */
__kernel __attribute__((reqd_work_group_size(WG_SIZE, 1, 1))) void
gn_backward_rows_cached(__global const DATA_T *x, __global const DATA_T *dy,
                        __global const DATA_T *dh_in, __global const float *mean,
                        __global const float *rstd, __global const float *weight, ulong R,
                        ulong D, int flags, __global DATA_T *dx)
{
#if WG_SIZE > 1 /* (work-groups of one never launch it: not compiled for them) */
    __local float2 l_pair[WG_SIZE];
    const uint lid = get_local_id(0);
    const ulong r = get_group_id(0), o = r * D, first = (ulong)lid * VEC, step = WG_SIZE * VEC;
    const float mu = mean ? mean[r] : 0.0f, rs = rstd[r];
    FLOATV s1 = 0.0f, s2 = 0.0f;
#pragma unroll 4
    for (ulong p = first; p < D; p += step) {
        const long left = (long)(D - p);
        row_grad_sums(load_lanes(dy, o + p, left),
                      lane_select(load_lanes(x, o + p, left) - mu, left), weight, p, left, &s1,
                      &s2);
    }
    const float2 sums = tree_sum_pair((float2)(HSUM(s1), HSUM(s2)), l_pair, lid, 1, WG_SIZE);
    float a, b, e;
    grad_coefficients(r, (float)D, sums.x, sums.y, 1.0f, rs, flags, NULL, NULL, &a, &b, &e);
    barrier(CLK_GLOBAL_MEM_FENCE);
#pragma unroll 4
    for (ulong p = first; p < D; p += step) {
        const long left = (long)(D - p);
        row_dx(dx, dh_in, weight, o, p, left, load_lanes(dy, o + p, left),
               lane_select(load_lanes(x, o + p, left) - mu, left), a, b, e);
    }
#endif
}

/* One vector of channel_row_sums at element o, channels c0.. (`left` of them): f(x [+ addend] -
 * pivot) with f(v) = v, or (v - center)^2 with `square`. */
ALWAYS_INLINE FLOATV channel_term(__global const DATA_T *x, __global const DATA_T *addend,
                                  ulong o, long left, FLOATV pivot, FLOATV center, int square)
{
    FLOATV v = load_lanes(x, o, left);
    if (addend)
        v += load_lanes(addend, o, left);
    v -= pivot;
    return square ? (v - center) * (v - center) : v;
}

/* Channels c0.. (`left`) of a block of channel_row_sums: nr (<= 4) rows, from element o and
 * `apart` elements apart, their terms added to acc, each row's into its own variable. */
ALWAYS_INLINE void channel_sums_at(__global const DATA_T *x, __global const DATA_T *addend,
                                   ulong o, uint nr, ulong apart, ulong c0, long left,
                                   __global const float *pivot, __global const float *center,
                                   int square, __global float *acc)
{
    const FLOATV k = load_lanes(pivot, c0, left);
    const FLOATV m = square ? load_lanes(center, c0, left) : (FLOATV)0.0f;
    FLOATV a0 = channel_term(x, addend, o, left, k, m, square), a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
    if (nr > 1)
        a1 = channel_term(x, addend, o + apart, left, k, m, square);
    if (nr > 2)
        a2 = channel_term(x, addend, o + 2 * apart, left, k, m, square);
    if (nr > 3)
        a3 = channel_term(x, addend, o + 3 * apart, left, k, m, square);
    store_lanes(acc, c0, left, load_lanes(acc, c0, left) + ((a0 + a1) + (a2 + a3)));
}

/* Per-channel sums over `rows` rows of C channels (channels-last) from base, into acc: block k
 * takes row k of each of 4 equal runs of the rows (as bn_reduce_rows: 4 streams in address
 * order), across the whole row; the sums stay in L1. */
ALWAYS_INLINE void channel_row_sums(__global const DATA_T *x, __global const DATA_T *addend,
                                    ulong base, ulong rows, ulong C,
                                    __global const float *pivot, __global const float *center,
                                    int square, __global float *acc)
{
    const ulong whole = C / VEC * VEC, step = (rows + 3) / 4;
    for (ulong c0 = 0; c0 < C; c0 += VEC)
        store_lanes(acc, c0, (long)(C - c0), (FLOATV)0.0f);
    for (ulong r = 0; r < step; r++) {
        const uint nr = (uint)((rows - r + step - 1) / step);
        const ulong o = base + r * C;
        if (nr == 4)
            for (ulong c0 = 0; c0 < whole; c0 += VEC)
                channel_sums_at(x, addend, o + c0, 4, step * C, c0, VEC, pivot, center, square,
                                acc);
        else
            for (ulong c0 = 0; c0 < whole; c0 += VEC)
                channel_sums_at(x, addend, o + c0, nr, step * C, c0, VEC, pivot, center, square,
                                acc);
        if (whole < C)
            channel_sums_at(x, addend, o + whole, nr, step * C, whole, (long)(C - whole), pivot,
                            center, square, acc);
    }
}

/* Channels-last group and instance norm forward of sample n (gn_forward_sample). */
ALWAYS_INLINE void sample_forward(__global const DATA_T *x, __global const DATA_T *addend,
                                  __global const float *weight, __global const float *bias,
                                  __global float *mean_out, __global float *rstd,
                                  __global float *out_sets, __global DATA_T *y,
                                  __global DATA_T *h, ulong n, ulong N, ulong C, ulong HW,
                                  ulong G, float eps, __global float *scratch)
{
    const ulong Cg = C / G, R = N * G, base = n * HW * C;
    const float count = (float)(HW * Cg);
    __global float *pivot = scratch + n * 3 * C, *acc = pivot + C, *center = acc + C;
    for (ulong c = 0; c < C; c++) {
        const ulong o = base + c / Cg * Cg;
        pivot[c] = LOAD(x, o) + (addend ? LOAD(addend, o) : 0.0f);
    }
    channel_row_sums(x, addend, base, HW, C, pivot, NULL, 0, acc);
    for (ulong g = 0; g < G; g++) {
        float sum = 0.0f;
        for (ulong c = g * Cg; c < (g + 1) * Cg; c++)
            sum += acc[c];
        for (ulong c = g * Cg; c < (g + 1) * Cg; c++)
            center[c] = sum / count;
    }
    channel_row_sums(x, addend, base, HW, C, pivot, center, 1, acc);
    for (ulong g = 0; g < G; g++) {
        float m2 = 0.0f;
        for (ulong c = g * Cg; c < (g + 1) * Cg; c++)
            m2 += acc[c];
        finalize_stats(n * G + g, R, count, pivot[g * Cg] + center[g * Cg],
                       m2 / pow2_floor(count), eps, 0.0f, 0, NULL, NULL, NULL, mean_out, rstd,
                       out_sets);
    }
    /* gn_apply's rows */
    const ulong ups = (C + VEC - 1) / VEC, whole = C / VEC;
    for (ulong p = 0; p < HW; p++) {
        const ulong seg = n * HW + p;
        if (Cg % VEC == 0)
            gn_forward_row(x, addend, mean_out, rstd, weight, bias, y, h, seg * C, n * G, G, Cg);
        else
            gn_segment(x, addend, mean_out, rstd, weight, bias, y, h, R, Cg, 1, seg, C, 0, n * G,
                       whole, ups, G == 1, 0);
    }
}

/* Channels-last group and instance norm forward in one launch for work-groups of one (CPUs), a
 * sample per work-item where a sample fits in its share of the cache: per-channel sums of the
 * sample's rows, the group means from them, then the squared deviations from those (the sample
 * again, from the cache), and the apply (again from the cache): x is read from memory once, y
 * written once (2 passes instead of 3). The pivot of a group is its first value, as in the
 * cached statistics. scratch: 3 x C floats per work-item (pivot | sums | center per channel).
 * Work-items: N. */
__kernel void gn_forward_sample(__global const DATA_T *x, __global const DATA_T *addend,
                                __global const float *weight, __global const float *bias,
                                __global float *mean_out, __global float *rstd,
                                __global float *out_sets, __global DATA_T *y, __global DATA_T *h,
                                ulong N, ulong C, ulong HW, ulong G, float eps,
                                __global float *scratch)
{
#if WG_SIZE == 1 /* (work-groups of many never launch it: not compiled for them) */
    const ulong n = get_global_id(0);
    if (n >= N)
        return;
    /* (without a residual, with its NULLs known to the compiler) */
    if (addend)
        sample_forward(x, addend, weight, bias, mean_out, rstd, out_sets, y, h, n, N, C, HW, G,
                       eps, scratch);
    else
        sample_forward(x, NULL, weight, bias, mean_out, rstd, out_sets, y, NULL, n, N, C, HW, G,
                       eps, scratch);
#endif
}

/* Pass 1 of gn_backward_fused for one unit at element o of `left` values: sum w * dy and
 * sum w * dy * (x - mu) lane by lane; along a row (lanes: channel c0 + i on lane i) with `set`,
 * also the channels' sum dy and sum dy * xhat (xhat = (x - mu) * rs). */
ALWAYS_INLINE void bwd_sum_unit(__global const DATA_T *x, __global const DATA_T *dy,
                                __global const float *weight, __global float *set, ulong C,
                                int lanes, ulong c0, ulong o, long left, float mu, float rs,
                                FLOATV *s1, FLOATV *s2)
{
    const FLOATV g = load_lanes(dy, o, left);
    const FLOATV gx = g * lane_select(load_lanes(x, o, left) - mu, left);
    const FLOATV w = lanes && weight ? load_lanes(weight, c0, left) : (FLOATV)1.0f;
    *s1 += w * g;
    *s2 += w * gx;
    if (lanes && set) { /* (the counts: at the end) */
        store_lanes(set + C, c0, left, load_lanes(set + C, c0, left) + g);
        store_lanes(set + 2 * C, c0, left, load_lanes(set + 2 * C, c0, left) + gx * rs);
    }
}

/* A plane's sums (lane sums s1 of dy, s2 of dy * (x - mean)) into its group's, weighted by
 * channel c's weight, and into channel c's set (count, sum dy, sum dy * xhat). */
ALWAYS_INLINE void plane_sums_add(__global const float *weight, __global float *set, ulong C,
                                  ulong HW, ulong c, float rs, FLOATV s1, FLOATV s2, float *sum1,
                                  float *sum2)
{
    const float w = weight ? weight[c] : 1.0f, sg = HSUM(s1), sgx = HSUM(s2);
    *sum1 += w * sg;
    *sum2 += w * sgx;
    if (set) {
        set[c] += (float)HW;
        set[C + c] += sg;
        set[2 * C + c] += sgx * rs;
    }
}

/* One row's step of bwd_sum_rows: its vector of dy and x at column p, into the row's sums and
 * the columns' sums c1, c2. */
#define BWD_ROW_STEP(k, s1, s2)                                                                    \
    {                                                                                              \
        const FLOATV g = LOADV(dy + (r + k) * C + p, 0);                                           \
        const FLOATV gx = g * (LOADV(x + (r + k) * C + p, 0) - mu[k]);                             \
        s1 += w * g;                                                                               \
        s2 += w * gx;                                                                              \
        c1 += g;                                                                                   \
        c2 += gx * rs[k];                                                                          \
    }

/* The sums' pass of n (2 or 4) rows of C channels from row r, with the per-channel sums of a set
 * (as bwd_sum_unit's): each vector of the set and of the weight is loaded and stored once for the
 * n rows, which add to it in row order, as they do one row at a time. Out: each row's sum of
 * w * dy and of w * dy * (x - mu). */
ALWAYS_INLINE void bwd_sum_rows(__global const DATA_T *x, __global const DATA_T *dy,
                                __global const float *mean, __global const float *rstd,
                                __global const float *weight, __global float *set, ulong C,
                                ulong r, uint n, float *sum1, float *sum2)
{
    float mu[4], rs[4];
    for (uint k = 0; k < 4; k++) {
        mu[k] = mean && k < n ? mean[r + k] : 0.0f;
        rs[k] = k < n ? rstd[r + k] : 0.0f;
    }
    const ulong whole = C / VEC * VEC;
    FLOATV a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f, b0 = 0.0f, b1 = 0.0f, b2 = 0.0f, b3 = 0.0f;
    for (ulong p = 0; p < whole; p += VEC) {
        const FLOATV w = weight ? LOADV(weight + p, 0) : (FLOATV)1.0f;
        FLOATV c1 = LOADV(set + C + p, 0), c2 = LOADV(set + 2 * C + p, 0);
        BWD_ROW_STEP(0, a0, b0)
        BWD_ROW_STEP(1, a1, b1)
        if (n > 2) {
            BWD_ROW_STEP(2, a2, b2)
            BWD_ROW_STEP(3, a3, b3)
        }
        STOREV(set + C + p, 0, c1);
        STOREV(set + 2 * C + p, 0, c2);
    }
    FLOATV s1[4] = {a0, a1, a2, a3}, s2[4] = {b0, b1, b2, b3};
    for (uint k = 0; k < n; k++) {
        if (whole < C) /* the row's partial vector */
            bwd_sum_unit(x, dy, weight, set, C, 1, whole, (r + k) * C + whole, (long)(C - whole),
                         mu[k], rs[k], &s1[k], &s2[k]);
        sum1[k] = HSUM(s1[k]);
        sum2[k] = HSUM(s2[k]);
    }
}

/* dx [+ dh_in] over one segment at o (gn_unit's backward, coefficients s) and, with `next` (a
 * constant at each call), the lane sums of dy and dy * (x - mu_n) `gap` further on (the next
 * group's plane) into n1, n2: read from memory while dx is written. */
ALWAYS_INLINE void dx_and_next_sums(__global const DATA_T *x, __global const DATA_T *dy,
                                    __global const DATA_T *dh_in, __global const float *weight,
                                    __global DATA_T *dx, int lanes, ulong o, ulong len, ulong c,
                                    ulong c_first, const unit_values *s, int stream,
                                    const int next, ulong gap, float mu_n, float rs_n,
                                    FLOATV *n1, FLOATV *n2)
{
    const ulong whole = len / VEC * VEC;
    for (ulong p = 0; p < whole; p += VEC) {
        gn_unit(x, NULL, dy, dh_in, 1, weight, NULL, dx, NULL, lanes, GN_BACKWARD, o + p, VEC, c,
                c_first + p, s, stream);
        if (next)
            bwd_sum_unit(x, dy, NULL, NULL, 0, 0, 0, o + gap + p, VEC, mu_n, rs_n, n1, n2);
    }
    if (whole < len) {
        const long left = (long)(len - whole);
        gn_unit(x, NULL, dy, dh_in, 1, weight, NULL, dx, NULL, lanes, GN_BACKWARD, o + whole,
                left, c, c_first + whole, s, stream);
        if (next)
            bwd_sum_unit(x, dy, NULL, NULL, 0, 0, 0, o + gap + whole, left, mu_n, rs_n, n1, n2);
    }
}

/* gn_backward_fused's work-item over groups r_first.. (`here` of them): rows of channels
 * (lanes = 1, HW = 1), or groups of Cg planes (lanes = 0), each a build of its own. */
ALWAYS_INLINE void backward_groups(__global const DATA_T *x, __global const DATA_T *dy,
                                   __global const DATA_T *dh_in, __global const float *mean,
                                   __global const float *rstd, __global const float *weight,
                                   ulong C, ulong HW, ulong G, ulong item, ulong r_first,
                                   uint here, uint rows_at_once, int flags, __global DATA_T *dx,
                                   __global float *col_sets, const int lanes)
{
    const ulong Cg = C / G, D = Cg * HW;
    __global float *set = col_sets ? col_sets + item * 3 * C : NULL;
    for (ulong c0 = 0; set && c0 < C; c0 += VEC)
        for (uint q = 0; q < 3; q++)
            store_lanes(set + q * C, c0, (long)(C - c0), (FLOATV)0.0f);
    /* segments: the row, or the group's planes; whole vectors, then a segment's partial one */
    const ulong segs = lanes ? 1 : Cg, seg_len = lanes ? D : HW, whole = seg_len / VEC * VEC;
    const int stream = streams(flags, dx, seg_len);
    /* rows_at_once rounded down to the groups bwd_sum_rows takes (2 or 4), else 1 */
    const uint at_once = !lanes || !set ? 1 : rows_at_once >= 4 ? 4 : rows_at_once >= 2 ? 2 : 1;
    float group_sum1[4], group_sum2[4]; /* the sums of the rows of a group */
    float next1 = 0.0f, next2 = 0.0f;     /* planes: the group's sums, from the previous dx */
    for (uint t = 0; t < here; t++) {
        const ulong r = r_first + t, c_first = (r % G) * Cg;
        const float mu = mean ? mean[r] : 0.0f, rs = rstd[r];
        const uint k = t % at_once; /* the row's place in its group; the last rows: none */
        const bool grouped = at_once > 1 && t - k + at_once <= here;
        const bool ridden = !lanes && t > 0; /* its sums rode on the group before's dx pass */
        if (grouped && !k)
            bwd_sum_rows(x, dy, mean, rstd, weight, set, C, r, at_once, group_sum1, group_sum2);
        /* sum w * dy, sum w * dy * (x - mu) */
        float sum1 = grouped ? group_sum1[k] : next1, sum2 = grouped ? group_sum2[k] : next2;
        for (ulong j = 0; j < segs && !grouped && !ridden; j++) {
            const ulong o = r * D + j * seg_len;
            FLOATV s1 = 0.0f, s2 = 0.0f;
            for (ulong p = 0; p < whole; p += VEC)
                bwd_sum_unit(x, dy, weight, set, C, lanes, c_first + p, o + p, VEC, mu, rs, &s1,
                             &s2);
            if (whole < seg_len)
                bwd_sum_unit(x, dy, weight, set, C, lanes, c_first + whole, o + whole,
                             (long)(seg_len - whole), mu, rs, &s1, &s2);
            if (lanes) {
                sum1 = HSUM(s1);
                sum2 = HSUM(s2);
            } else
                plane_sums_add(weight, set, C, HW, c_first + j, rs, s1, s2, &sum1, &sum2);
        }
        unit_values s;
        float a, b, e;
        grad_coefficients(r, (float)D, sum1, sum2, 1.0f, rs, flags, NULL, NULL, &a, &b, &e);
        s.v0 = a;
        s.v1 = b;
        s.v2 = e;
        s.v3 = mu;
        /* planes: the next group's sums in the same loop, read from memory while dx is written */
        const bool next = !lanes && t + 1 < here;
        const float mu_n = next && mean ? mean[r + 1] : 0.0f, rs_n = next ? rstd[r + 1] : 0.0f;
        const ulong c_next = ((r + 1) % G) * Cg;
        next1 = next2 = 0.0f;
        for (ulong j = 0; j < segs; j++) {
            const ulong o = r * D + j * seg_len, c = c_first + j;
            FLOATV n1 = 0.0f, n2 = 0.0f;
            /* (each its own loop: the rows' loop as lean as without the sums) */
            if (next)
                dx_and_next_sums(x, dy, dh_in, weight, dx, lanes, o, seg_len, c, c_first, &s,
                                 stream, 1, D, mu_n, rs_n, &n1, &n2);
            else
                dx_and_next_sums(x, dy, dh_in, weight, dx, lanes, o, seg_len, c, c_first, &s,
                                 stream, 0, D, mu_n, rs_n, &n1, &n2);
            if (next)
                plane_sums_add(weight, set, C, HW, c_next + j, rs_n, n1, n2, &next1, &next2);
        }
    }
    /* a row (one group: LayerNorm, RMSNorm) counts once in every channel */
    for (ulong c0 = 0; lanes && set && c0 < C; c0 += VEC)
        store_lanes(set, c0, (long)(C - c0), (FLOATV)(float)here);
}

/* The backward in one launch for work-groups of one (CPUs), where gn_forward_fused serves the
 * forward (a group is one contiguous row of D values that fits in cache): each work-item takes
 * its `tile` groups: the group's sums (x and dy from memory), its coefficients (bn_channel's
 * CH_GRAD), then dx [+ dh_in] (x and dy from cache): 3 passes instead of 5. With col_sets, each
 * work-item also writes its own set of per-channel sums, count | sum dy | sum dy * xhat (3C floats
 * at item * 3C), which bn_channel merges into dweight and dbias; rows of channels then take
 * their sums `rows_at_once` (1, 2 or 4) rows at a time, so that each vector of the set is loaded
 * and stored once per group of rows. Work-items: ceil(R / tile). */
__kernel void gn_backward_fused(__global const DATA_T *x, __global const DATA_T *dy,
                                __global const DATA_T *dh_in, __global const float *mean,
                                __global const float *rstd, __global const float *weight,
                                ulong R, ulong C, ulong HW, ulong G, uint tile,
                                uint rows_at_once, int flags, __global DATA_T *dx,
                                __global float *col_sets)
{
#if WG_SIZE == 1 /* (work-groups of many never launch it: not compiled for them) */
    const ulong item = get_global_id(0), r_first = item * tile;
    const uint here = tile_count(r_first, R, tile);
    /* a row of channels, else Cg planes of one channel each */
    if (HW == 1)
        backward_groups(x, dy, dh_in, mean, rstd, weight, C, 1, G, item, r_first, here,
                        rows_at_once, flags, dx, col_sets, 1);
    else
        backward_groups(x, dy, dh_in, mean, rstd, weight, C, HW, G, item, r_first, here,
                        rows_at_once, flags, dx, col_sets, 0);
#endif
}

#include "bn_reference.h"

#include <math.h>
#include <stdlib.h>

size_t ref_spatial(const clnorm_shape *s)
{
    size_t p = 1;
    for (unsigned i = 0; i < s->spatial_rank; i++)
        p *= s->spatial[i];
    return p;
}

size_t ref_rows(const clnorm_shape *s)
{
    return s->n * ref_spatial(s);
}

size_t ref_total(const clnorm_shape *s)
{
    return ref_rows(s) * s->c;
}

size_t ref_index(const clnorm_shape *s, size_t n, size_t c, size_t p)
{
    size_t sp = ref_spatial(s);
    return s->layout == CLNORM_CHANNELS_FIRST ? (n * s->c + c) * sp + p : (n * sp + p) * s->c + c;
}

size_t ref_channel(const clnorm_shape *s, size_t i)
{
    return s->layout == CLNORM_CHANNELS_FIRST ? (i / ref_spatial(s)) % s->c : i % s->c;
}

void ref_stats(const clnorm_shape *s, const float *x, double *mean, double *var,
               double *mean_abs)
{
    size_t rows = ref_rows(s), sp = ref_spatial(s);
    for (size_t c = 0; c < s->c; c++) {
        double sum = 0, abs_sum = 0, m2 = 0;
        for (size_t n = 0; n < s->n; n++)
            for (size_t p = 0; p < sp; p++) {
                double v = x[ref_index(s, n, c, p)];
                sum += v;
                abs_sum += fabs(v);
            }
        double m = sum / rows;
        for (size_t n = 0; n < s->n; n++)
            for (size_t p = 0; p < sp; p++) {
                double d = x[ref_index(s, n, c, p)] - m;
                m2 += d * d;
            }
        mean[c] = m;
        var[c] = m2 / rows;
        if (mean_abs)
            mean_abs[c] = abs_sum / rows;
    }
}

void ref_forward(const clnorm_shape *s, const float *x, const float *residual, const float *gamma,
                 const float *beta, const double *mean, const double *var, double eps, bool relu,
                 double *y)
{
    size_t total = ref_total(s);
    for (size_t i = 0; i < total; i++) {
        size_t c = ref_channel(s, i);
        double g = gamma ? gamma[c] : 1.0, b = beta ? beta[c] : 0.0;
        double v = g * (x[i] - mean[c]) / sqrt(var[c] + eps) + b;
        if (residual)
            v += residual[i];
        if (relu && v < 0)
            v = 0;
        y[i] = v;
    }
}

void ref_backward(const clnorm_shape *s, const float *x, const float *dy, const float *mask,
                  const float *gamma, const double *mean, const double *invstd, bool frozen,
                  double *dx, double *dgamma, double *dbeta)
{
    size_t total = ref_total(s), rows = ref_rows(s);
    double *sum_dy = calloc(s->c, sizeof(double)), *sum_dyxhat = calloc(s->c, sizeof(double));
    for (size_t i = 0; i < total; i++) {
        size_t c = ref_channel(s, i);
        double g = mask && !(mask[i] > 0) ? 0.0 : dy[i];
        double xhat = (x[i] - mean[c]) * invstd[c];
        sum_dy[c] += g;
        sum_dyxhat[c] += g * xhat;
    }
    for (size_t i = 0; i < total; i++) {
        size_t c = ref_channel(s, i);
        double g = mask && !(mask[i] > 0) ? 0.0 : dy[i];
        double a = (gamma ? gamma[c] : 1.0) * invstd[c];
        double xhat = (x[i] - mean[c]) * invstd[c];
        dx[i] = frozen ? a * g : a * (g - sum_dy[c] / rows - xhat * sum_dyxhat[c] / rows);
    }
    for (size_t c = 0; c < s->c; c++) {
        if (dgamma)
            dgamma[c] = sum_dyxhat[c];
        if (dbeta)
            dbeta[c] = sum_dy[c];
    }
    free(sum_dy);
    free(sum_dyxhat);
}

double rng_uniform(rng *r)
{
    r->state ^= r->state << 13;
    r->state ^= r->state >> 7;
    r->state ^= r->state << 17;
    return (double)(r->state >> 11) / 9007199254740992.0;
}

double rng_normal(rng *r)
{
    double u = rng_uniform(r), v = rng_uniform(r);
    return sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v);
}

double worst_ratio(const float *got, const double *want, const double *tol, size_t count,
                   size_t *worst)
{
    double w = 0;
    *worst = 0;
    for (size_t i = 0; i < count; i++) {
        double diff = fabs((double)got[i] - want[i]);
        double r = (double)got[i] == want[i] ? 0.0
                   : isnan(want[i]) ? (isnan(got[i]) ? 0 : INFINITY)
                   : isnan(got[i]) ? INFINITY
                                   : diff / tol[i];
        if (!(r <= w)) {
            w = r;
            *worst = i;
        }
    }
    return w;
}

/* Float64 host reference for batch normalization, and the tolerances the tests allow. */
#ifndef CLNORM_TEST_BN_REFERENCE_H
#define CLNORM_TEST_BN_REFERENCE_H

#include <stdbool.h>
#include <stddef.h>

#include "clnorm.h"

size_t ref_spatial(const clnorm_shape *s);
size_t ref_rows(const clnorm_shape *s); /* values per channel */
size_t ref_total(const clnorm_shape *s);
/* Offset of element (n, c, spatial position p) in the shape's layout. */
size_t ref_index(const clnorm_shape *s, size_t n, size_t c, size_t p);
/* Channel of the element at offset i. */
size_t ref_channel(const clnorm_shape *s, size_t i);

/* Per-channel mean, biased variance, and mean of |x| and of (x - mean)^2 magnitudes. */
void ref_stats(const clnorm_shape *s, const float *x, double *mean, double *var,
               double *mean_abs);

/* y = act(gamma * (x - mean) * invstd + beta [+ residual]) with invstd = 1/sqrt(var + eps). */
void ref_forward(const clnorm_shape *s, const float *x, const float *residual, const float *gamma,
                 const float *beta, const double *mean, const double *var, double eps, bool relu,
                 double *y);

/* Gradients given the statistics the forward used (mean, invstd): training, or frozen
 * (dx = dy * gamma * invstd). mask (the forward output) gates dy by mask > 0 when not NULL. */
void ref_backward(const clnorm_shape *s, const float *x, const float *dy, const float *mask,
                  const float *gamma, const double *mean, const double *invstd, bool frozen,
                  double *dx, double *dgamma, double *dbeta);

/* Deterministic pseudo-random numbers (xorshift), uniform in [0, 1) and normal. */
typedef struct rng {
    unsigned long long state;
} rng;
double rng_uniform(rng *r);
double rng_normal(rng *r);

/* Largest |a - b| relative to the tolerance tol[i]: <= 1 passes. Reports the worst index. */
double worst_ratio(const float *got, const double *want, const double *tol, size_t count,
                   size_t *worst);

#endif

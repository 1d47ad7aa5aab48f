/* Batch normalization: included by clnorm.h. */
#ifndef CLNORM_BATCHNORM_H
#define CLNORM_BATCHNORM_H
#endif

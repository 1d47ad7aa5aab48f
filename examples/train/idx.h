/* Fashion-MNIST (IDX format, gzip-compressed) loading for clnorm-train. */
#ifndef CLNORM_TRAIN_IDX_H
#define CLNORM_TRAIN_IDX_H

#include <stddef.h>
#include <stdint.h>

#define IDX_DEFAULT_DIR "/usr/share/datasets/fashion-mnist"
#define IDX_PACKAGE "dataset-fashion-mnist"
#define IDX_CLASSES 10

typedef struct idx_set {
    size_t count;     /* examples */
    size_t rows, cols; /* image size (28 x 28 for Fashion-MNIST) */
    uint8_t *images;  /* count * rows * cols pixels, row-major */
    uint8_t *labels;  /* count labels in 0..9 */
} idx_set;

/* Loads DIR/PREFIX-images-idx3-ubyte.gz and DIR/PREFIX-labels-idx1-ubyte.gz (prefix "train" or
 * "t10k"). Checks the gzip stream, the magic numbers, that the counts agree and that the files hold
 * exactly the announced data, and that every label is a class 0..9. Returns 0 on success; on
 * failure returns -1, leaves *set empty and writes a message naming the file (and, when files are
 * missing, the package that installs them) to err. */
int idx_load(const char *dir, const char *prefix, idx_set *set, char *err, size_t err_size);

void idx_free(idx_set *set);

#endif

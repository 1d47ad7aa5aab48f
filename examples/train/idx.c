/* IDX files: a big-endian header (magic 0x000008RR, RR = number of dimensions, then one u32 per
 * dimension) followed by the data as unsigned bytes; gzip-compressed, read with zlib. */
#include "idx.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define IDX_MAGIC_UBYTE_RANK1 0x00000801u
#define IDX_MAGIC_UBYTE_RANK3 0x00000803u
#define IDX_MAX_BYTES (512u << 20) /* refuse to inflate more than this (corrupt or foreign file) */

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void missing_hint(char *err, size_t err_size, const char *path, const char *what)
{
    snprintf(err, err_size,
             "cannot read %s: %s.\n"
             "Fashion-MNIST comes with the Debian package %s (apt-get install %s, or "
             "'bash tools/run.sh main' installs it); --data DIR points at another folder holding "
             "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz "
             "and t10k-labels-idx1-ubyte.gz.",
             path, what, IDX_PACKAGE, IDX_PACKAGE);
}

static void corrupt(char *err, size_t err_size, const char *path, const char *what)
{
    snprintf(err, err_size,
             "%s is not a valid Fashion-MNIST IDX file: %s.\n"
             "Reinstall the package %s (apt-get install --reinstall %s) or point --data at a "
             "folder with intact files.",
             path, what, IDX_PACKAGE, IDX_PACKAGE);
}

/* Inflates a whole gzip (or plain) file into *data. */
static int read_gz(const char *path, uint8_t **data, size_t *size, char *err, size_t err_size)
{
    *data = NULL;
    *size = 0;
    FILE *probe = fopen(path, "rb");
    if (!probe) {
        missing_hint(err, err_size, path, strerror(errno));
        return -1;
    }
    fclose(probe);
    gzFile gz = gzopen(path, "rb");
    if (!gz) {
        missing_hint(err, err_size, path, "zlib could not open it");
        return -1;
    }
    size_t capacity = 1u << 20, used = 0;
    uint8_t *buf = malloc(capacity);
    if (!buf) {
        gzclose(gz);
        snprintf(err, err_size, "no memory to read %s", path);
        return -1;
    }
    for (;;) {
        if (used == capacity) {
            if (capacity >= IDX_MAX_BYTES) {
                free(buf);
                gzclose(gz);
                corrupt(err, err_size, path, "it inflates to more than 512 MiB");
                return -1;
            }
            uint8_t *grown = realloc(buf, capacity * 2);
            if (!grown) {
                free(buf);
                gzclose(gz);
                snprintf(err, err_size, "no memory to read %s", path);
                return -1;
            }
            buf = grown;
            capacity *= 2;
        }
        size_t want = capacity - used;
        if (want > (1u << 30))
            want = 1u << 30;
        int got = gzread(gz, buf + used, (unsigned)want);
        if (got < 0) {
            int code = 0;
            const char *msg = gzerror(gz, &code);
            char what[256];
            snprintf(what, sizeof what, "the gzip stream is corrupt (zlib: %s)",
                     msg ? msg : "error");
            free(buf);
            gzclose(gz);
            corrupt(err, err_size, path, what);
            return -1;
        }
        if (got == 0)
            break;
        used += (size_t)got;
    }
    int code = Z_OK;
    const char *msg = gzerror(gz, &code);
    if (code != Z_OK && code != Z_STREAM_END) {
        char what[256];
        snprintf(what, sizeof what, "the gzip stream is truncated or corrupt (zlib: %s)",
                 msg ? msg : "error");
        free(buf);
        gzclose(gz);
        corrupt(err, err_size, path, what);
        return -1;
    }
    if (gzclose(gz) != Z_OK) {
        free(buf);
        corrupt(err, err_size, path, "the gzip stream is truncated or corrupt");
        return -1;
    }
    *data = buf;
    *size = used;
    return 0;
}

void idx_free(idx_set *set)
{
    if (!set)
        return;
    free(set->images);
    free(set->labels);
    memset(set, 0, sizeof *set);
}

int idx_load(const char *dir, const char *prefix, idx_set *set, char *err, size_t err_size)
{
    memset(set, 0, sizeof *set);
    char images_path[4096], labels_path[4096];
    snprintf(images_path, sizeof images_path, "%s/%s-images-idx3-ubyte.gz", dir, prefix);
    snprintf(labels_path, sizeof labels_path, "%s/%s-labels-idx1-ubyte.gz", dir, prefix);

    uint8_t *img = NULL, *lab = NULL;
    size_t img_size = 0, lab_size = 0;
    if (read_gz(images_path, &img, &img_size, err, err_size) != 0)
        return -1;
    if (read_gz(labels_path, &lab, &lab_size, err, err_size) != 0) {
        free(img);
        return -1;
    }
    char what[4096 + 256];
    if (img_size < 16 || be32(img) != IDX_MAGIC_UBYTE_RANK3) {
        if (img_size < 16)
            snprintf(what, sizeof what, "%zu bytes, shorter than the 16-byte header", img_size);
        else
            snprintf(what, sizeof what,
                     "expected the magic number 0x%08x (unsigned bytes, 3 dimensions), found "
                     "0x%08x",
                     IDX_MAGIC_UBYTE_RANK3, be32(img));
        corrupt(err, err_size, images_path, what);
        goto fail;
    }
    if (lab_size < 8 || be32(lab) != IDX_MAGIC_UBYTE_RANK1) {
        if (lab_size < 8)
            snprintf(what, sizeof what, "%zu bytes, shorter than the 8-byte header", lab_size);
        else
            snprintf(what, sizeof what,
                     "expected the magic number 0x%08x (unsigned bytes, 1 dimension), found "
                     "0x%08x",
                     IDX_MAGIC_UBYTE_RANK1, be32(lab));
        corrupt(err, err_size, labels_path, what);
        goto fail;
    }
    size_t count = be32(img + 4), rows = be32(img + 8), cols = be32(img + 12);
    size_t label_count = be32(lab + 4);
    if (count == 0 || rows != 28 || cols != 28) {
        snprintf(what, sizeof what,
                 "the header announces %zu images of %zu x %zu pixels (expected 28 x 28)", count,
                 rows, cols);
        corrupt(err, err_size, images_path, what);
        goto fail;
    }
    if (img_size != 16 + count * rows * cols) {
        snprintf(what, sizeof what,
                 "the header announces %zu images of %zu x %zu pixels (%zu bytes) but the file "
                 "holds %zu bytes of pixels",
                 count, rows, cols, count * rows * cols, img_size - 16);
        corrupt(err, err_size, images_path, what);
        goto fail;
    }
    if (lab_size != 8 + label_count) {
        snprintf(what, sizeof what,
                 "the header announces %zu labels but the file holds %zu bytes of labels",
                 label_count, lab_size - 8);
        corrupt(err, err_size, labels_path, what);
        goto fail;
    }
    if (label_count != count) {
        snprintf(what, sizeof what, "it holds %zu labels but %s holds %zu images", label_count,
                 images_path, count);
        corrupt(err, err_size, labels_path, what);
        goto fail;
    }
    for (size_t i = 0; i < count; i++) {
        if (lab[8 + i] >= IDX_CLASSES) {
            snprintf(what, sizeof what, "label %zu is %u, not a class 0..9", i, lab[8 + i]);
            corrupt(err, err_size, labels_path, what);
            goto fail;
        }
    }
    set->count = count;
    set->rows = rows;
    set->cols = cols;
    set->images = malloc(count * rows * cols);
    set->labels = malloc(count);
    if (!set->images || !set->labels) {
        idx_free(set);
        snprintf(err, err_size, "no memory for %zu images", count);
        goto fail;
    }
    memcpy(set->images, img + 16, count * rows * cols);
    memcpy(set->labels, lab + 8, count);
    free(img);
    free(lab);
    return 0;
fail:
    free(img);
    free(lab);
    return -1;
}

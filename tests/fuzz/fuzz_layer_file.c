/* libFuzzer harness for the layer parameter-file loaders: clnorm_batchnorm_load and
 * clnorm_featurenorm_load (LayerNorm, RMSNorm, GroupNorm, InstanceNorm).
 *
 * Each input is written to a temporary file and loaded into the layer its magic names (into every
 * layer when the magic names none). It is loaded twice: as it is, and with its last 8 bytes
 * replaced by the right FNV-1a hash of the bytes before them, so that the checks after the hash
 * (eps, momentum, finite values, running_var >= 0) are reached too. A load must return a status;
 * a failed load must leave the layer unchanged (one parameter buffer and the layer's info are
 * compared before and after), a successful one must leave the layer's sizes as they were.
 *
 * Build (tools/run.sh does): the library with clang -fsanitize=fuzzer-no-link,address, then
 *   clang -fsanitize=fuzzer,address tests/fuzz/fuzz_layer_file.c -lclnorm -lOpenCL
 * Run: fuzz_layer_file -max_total_time=60 WORK_DIR tests/fuzz/corpus
 * CLNORM_FUZZ_WRITE_SEEDS=DIR: writes the seed corpus (files saved by the library, and corrupt
 * variants of them) to DIR and exits.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clnorm.h"

enum { L_BN, L_LN, L_RMS, L_GN, L_IN, LAYERS };
static const char *const magics[LAYERS] = {"CLNORMBN", "CLNORMLN", "CLNORMRM", "CLNORMGN",
                                           "CLNORMIN"};
static const size_t sizes[LAYERS] = {4, 8, 8, 4, 4}; /* parameter-buffer length of each layer */

static clnorm_context *ctx;
static clnorm_batchnorm *bn;
static clnorm_featurenorm *fn[LAYERS]; /* [L_LN..L_IN] */
static char path[512];
static unsigned long long loads, accepted;

static void die(const char *what, clnorm_status st)
{
    fprintf(stderr, "fuzz_layer_file: %s -> %s: %s\n", what, clnorm_status_name(st),
            ctx ? clnorm_last_error(ctx) : "");
    abort();
}

/* The buffer compared before and after a load: running_var for batch norm (the layer also
 * has gamma), weight for the others (InstanceNorm: running_var too). */
static cl_mem watched(int layer)
{
    if (layer == L_BN) {
        clnorm_batchnorm_buffers b;
        clnorm_batchnorm_get_buffers(bn, &b);
        return b.running_var;
    }
    clnorm_featurenorm_buffers b;
    clnorm_featurenorm_get_buffers(fn[layer], &b);
    return layer == L_IN ? b.running_var : b.weight;
}

static void read_watched(int layer, float *out)
{
    cl_int err = clEnqueueReadBuffer(clnorm_context_queue(ctx), watched(layer), CL_TRUE, 0,
                                     sizes[layer] * sizeof(float), out, 0, NULL, NULL);
    if (err != CL_SUCCESS) {
        fprintf(stderr, "fuzz_layer_file: clEnqueueReadBuffer: %s\n", clnorm_cl_error_name(err));
        abort();
    }
}

static void create_layers(void)
{
    char message[4096];
    clnorm_settings settings;
    clnorm_default_settings(&settings);
    clnorm_status st = clnorm_context_create(&ctx, &settings, message, sizeof message);
    if (st != CLNORM_OK) {
        fprintf(stderr, "fuzz_layer_file: context: %s\n", message);
        abort();
    }
    clnorm_batchnorm_options bo;
    clnorm_batchnorm_default_options(&bo, sizes[L_BN]);
    if ((st = clnorm_batchnorm_create(ctx, &bo, &bn)) != CLNORM_OK)
        die("batchnorm_create", st);
    clnorm_layernorm_options lo;
    clnorm_layernorm_default_options(&lo, sizes[L_LN]);
    if ((st = clnorm_featurenorm_create_layernorm(ctx, &lo, &fn[L_LN])) != CLNORM_OK)
        die("create_layernorm", st);
    clnorm_rmsnorm_options ro;
    clnorm_rmsnorm_default_options(&ro, sizes[L_RMS]);
    if ((st = clnorm_featurenorm_create_rmsnorm(ctx, &ro, &fn[L_RMS])) != CLNORM_OK)
        die("create_rmsnorm", st);
    clnorm_groupnorm_options go;
    clnorm_groupnorm_default_options(&go, 2, sizes[L_GN]);
    if ((st = clnorm_featurenorm_create_groupnorm(ctx, &go, &fn[L_GN])) != CLNORM_OK)
        die("create_groupnorm", st);
    clnorm_instancenorm_options io;
    clnorm_instancenorm_default_options(&io, sizes[L_IN]);
    io.affine = 1;
    io.track_running_stats = 1;
    if ((st = clnorm_featurenorm_create_instancenorm(ctx, &io, &fn[L_IN])) != CLNORM_OK)
        die("create_instancenorm", st);
}

static void write_file(const char *p, const uint8_t *data, size_t size)
{
    FILE *f = fopen(p, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f)) {
        perror(p);
        abort();
    }
}

static uint64_t fnv1a(const uint8_t *data, size_t size)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < size; i++) {
        h ^= data[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static void load_into(int layer)
{
    float before[8], after[8];
    clnorm_featurenorm_info info_before = {0}, info_after = {0};
    read_watched(layer, before);
    if (layer != L_BN)
        clnorm_featurenorm_get_info(fn[layer], &info_before);
    clnorm_status st = layer == L_BN ? clnorm_batchnorm_load(bn, path)
                                     : clnorm_featurenorm_load(fn[layer], path);
    loads++;
    if (st == CLNORM_OK)
        accepted++;
    else if (st != CLNORM_BAD_FILE && st != CLNORM_IO_ERROR)
        die("load: unexpected status", st);
    if (clnorm_last_error(ctx)[0] == '\0' && st != CLNORM_OK)
        die("load failed without a message", st);
    read_watched(layer, after);
    if (layer != L_BN)
        clnorm_featurenorm_get_info(fn[layer], &info_after);
    if (st != CLNORM_OK) {
        if (memcmp(before, after, sizes[layer] * sizeof(float)))
            die("a rejected file changed the layer's parameters", st);
        if (layer != L_BN && memcmp(&info_before, &info_after, sizeof info_before))
            die("a rejected file changed the layer's settings", st);
    } else {
        for (size_t i = 0; i < sizes[layer]; i++)
            if (!isfinite(after[i]) || (layer != L_GN && layer != L_LN && layer != L_RMS &&
                                        after[i] < 0))
                die("an accepted file left a non-finite or negative value", st);
        if (layer != L_BN &&
            (info_after.size != info_before.size || info_after.groups != info_before.groups ||
             info_after.kind != info_before.kind || !isfinite(info_after.eps) ||
             info_after.eps < 0))
            die("an accepted file changed the layer's sizes or set a bad eps", st);
    }
}

static void load_all(const uint8_t *data, size_t size)
{
    write_file(path, data, size);
    int matched = 0;
    for (int l = 0; l < LAYERS; l++)
        if (size >= 8 && !memcmp(data, magics[l], 8)) {
            load_into(l);
            matched = 1;
        }
    if (!matched)
        for (int l = 0; l < LAYERS; l++)
            load_into(l);
}

static void write_seeds(const char *dir)
{
    static uint8_t buf[1 << 16];
    char p[1024];
    for (int l = 0; l < LAYERS; l++) {
        snprintf(p, sizeof p, "%s/valid-%.2s", dir, magics[l] + 6);
        clnorm_status st = l == L_BN ? clnorm_batchnorm_save(bn, p)
                                     : clnorm_featurenorm_save(fn[l], p);
        if (st != CLNORM_OK)
            die("save", st);
        FILE *f = fopen(p, "rb");
        size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
        if (f)
            fclose(f);
        /* truncated in the middle of the values */
        snprintf(p, sizeof p, "%s/truncated-%.2s", dir, magics[l] + 6);
        write_file(p, buf, n / 2);
        /* one flipped bit in the hash */
        buf[n - 1] ^= 1;
        snprintf(p, sizeof p, "%s/bad-hash-%.2s", dir, magics[l] + 6);
        write_file(p, buf, n);
        buf[n - 1] ^= 1;
        /* a NaN as the last value, with the hash made right again */
        const float nan = NAN;
        memcpy(buf + n - 12, &nan, 4);
        uint64_t h = fnv1a(buf, n - 8);
        for (int i = 0; i < 8; i++)
            buf[n - 8 + i] = (uint8_t)(h >> (8 * i));
        snprintf(p, sizeof p, "%s/nan-%.2s", dir, magics[l] + 6);
        write_file(p, buf, n);
    }
    snprintf(p, sizeof p, "%s/empty", dir);
    write_file(p, buf, 0);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    create_layers();
    const char *tmp = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/clnorm-fuzz-%ld.bin", tmp && *tmp ? tmp : "/tmp",
             (long)getpid());
    const char *seeds = getenv("CLNORM_FUZZ_WRITE_SEEDS");
    if (seeds && *seeds) {
        write_seeds(seeds);
        fprintf(stderr, "fuzz_layer_file: seeds written to %s\n", seeds);
        exit(0);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16)
        return 0;
    load_all(data, size);
    if (size >= 16) {
        uint8_t *fixed = malloc(size);
        memcpy(fixed, data, size);
        uint64_t h = fnv1a(fixed, size - 8);
        for (int i = 0; i < 8; i++)
            fixed[size - 8 + i] = (uint8_t)(h >> (8 * i));
        load_all(fixed, size);
        free(fixed);
    }
    unlink(path);
    return 0;
}

/* libFuzzer prints its own statistics; this adds the loads. */
__attribute__((destructor)) static void report(void)
{
    if (loads)
        fprintf(stderr, "fuzz_layer_file: %llu loads, %llu accepted\n", loads, accepted);
}

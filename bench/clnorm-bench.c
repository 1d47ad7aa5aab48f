/*
 * clnorm-bench: times clnorm's operations against the device's own copy bandwidth.
 *
 * A benchmark, not a test: it checks statuses, not values (the test suite does that).
 *
 * For every (op, layout, shape) row:
 *  - warm-up runs, then the median of --runs (default 25, at least 20 for a full run) device
 *    times, each the span from the START of the op's first kernel to the END of its last
 *    (clnorm_last_op_time on a profiling context);
 *  - buffer rotation: when one set of the op's tensors is smaller than the rotation threshold
 *    (the larger of 256 MiB and 4x the device's reported global-memory cache), the runs cycle over
 *    k = ceil(threshold / set bytes) buffer sets (at most 32), so that no run finds its inputs in a
 *    cache the previous run warmed;
 *  - GB/s at the compulsory bytes (forward: read x, write y, read the residual when fused;
 *    backward: read x and dy, write dx, read y with a fused ReLU, write dresidual with a fused add),
 *    that as a fraction of the copy bandwidth measured in the same run (float4 copy kernel compiled
 *    here, read + written bytes), and the tensor-sized passes the implementation makes.
 * Before the rows: first-call latency (context creation to the first batch-norm result, read back
 * on the host) with an empty program cache folder (cold) and again with that folder (warm); on by
 * default, --no-latency skips it.
 *
 * Families: batch norm (training and inference forward, backward; plain, ReLU, add+ReLU; both
 * layouts), layer and RMS norm (forward, forward with the fused residual add, backward; rows x
 * cols), group norm (G = 32) and instance norm (forward and backward, both layouts). Each is rows
 * of `ops` plus its shapes in build_shapes(); the rest of the program is family-agnostic.
 */
#include <clnorm.h>

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef CLNORM_BENCH_SOURCE_DIR
#define CLNORM_BENCH_SOURCE_DIR ""
#endif

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define MIB ((size_t)1 << 20)
enum { MAX_SETS = 32, MAX_RUNS = 10000, MAX_SHAPES = 64 };

/* ---- small utilities -------------------------------------------------------------------------- */

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct summary {
    double median, min, max, p10, p90;
} summary;

/* Sorts v in place. */
static summary summarize(double *v, size_t n)
{
    summary s = {0, 0, 0, 0, 0};
    if (n == 0)
        return s;
    qsort(v, n, sizeof *v, cmp_double);
    s.median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
    s.min = v[0];
    s.max = v[n - 1];
    s.p10 = v[(n - 1) / 10];
    s.p90 = v[(n - 1) - (n - 1) / 10];
    return s;
}

static size_t ceil_div(size_t a, size_t b)
{
    return (a + b - 1) / b;
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("clnorm-bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

/* Removes a folder tree made by this program (the cold-cache folder). */
static void remove_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (d) {
            struct dirent *e;
            while ((e = readdir(d)) != NULL) {
                if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                    continue;
                char child[4096];
                int len = snprintf(child, sizeof child, "%s/%s", path, e->d_name);
                if (len > 0 && (size_t)len < sizeof child)
                    remove_tree(child);
            }
            closedir(d);
        }
        rmdir(path);
    } else {
        unlink(path);
    }
}

/* CPU time on this machine outside this process (other users of the CPUs disturb a CPU device's
 * timings and those of the host threads feeding a GPU): /proc/stat's busy time minus this
 * process's own (all threads, PoCL's workers included). Returns 0 where /proc is missing. */
typedef struct cpu_sample {
    unsigned long long busy, total, own;
} cpu_sample;

static int cpu_sample_take(cpu_sample *s)
{
    unsigned long long v[8] = {0};
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return 0;
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n < 4)
        return 0;
    s->total = 0;
    for (int i = 0; i < 8; i++)
        s->total += v[i];
    s->busy = s->total - v[3] - v[4]; /* minus idle and iowait */
    f = fopen("/proc/self/stat", "r");
    if (!f)
        return 0;
    /* fields 14 and 15 (utime, stime) come after the command name in parentheses */
    char line[1024];
    int ok = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    const char *p = ok ? strrchr(line, ')') : NULL;
    unsigned long long utime = 0, stime = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime,
                     &stime) != 2)
        return 0;
    s->own = utime + stime;
    return 1;
}

/* The share of all CPUs' time between a and b that went to other processes (-1: unknown). */
static double foreign_share(const cpu_sample *a, const cpu_sample *b)
{
    if (b->total <= a->total)
        return -1;
    double busy = (double)(b->busy - a->busy), own = (double)(b->own - a->own);
    double foreign = busy - own;
    return (foreign < 0 ? 0 : foreign) / (double)(b->total - a->total);
}

/* Waits (at most max_s seconds) until other processes use less than `share` of the CPUs over one
 * second. Returns the last share seen. */
static double wait_quiet(double share, int max_s)
{
    double last = -1;
    for (int i = 0; i < max_s; i++) {
        cpu_sample a, b;
        if (!cpu_sample_take(&a))
            return -1;
        struct timespec one = {1, 0};
        nanosleep(&one, NULL);
        if (!cpu_sample_take(&b))
            return -1;
        last = foreign_share(&a, &b);
        if (last < share)
            break;
    }
    return last;
}

/* ---- JSON output -------------------------------------------------------------------------------- */

static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void json_number(FILE *f, double v)
{
    if (isfinite(v))
        fprintf(f, "%.6g", v);
    else
        fputs("null", f);
}

/* ---- the benchmark state ---------------------------------------------------------------------- */

/* Tensor-sized buffers of one rotation set. */
typedef struct tensor_set {
    cl_mem x, y, residual, dy, dx, dresidual;
} tensor_set;

/* A shape row. kind "batchnorm", "groupnorm", "instancenorm": dims are (N, C, H, W), groups the
 * group count (instance norm: C); kind "rows" (layer and RMS norm): dims are (rows, cols). */
typedef struct shape_case {
    const char *kind;
    const char *tag; /* which set it belongs to: "resnet50", "small-batch", ... */
    size_t dims[4];
    unsigned ndims;
    size_t groups;
} shape_case;

typedef struct bench bench;
typedef struct op_spec op_spec;

struct op_spec {
    const char *family;  /* "batchnorm", "layernorm", "rmsnorm", "groupnorm", "instancenorm" */
    const char *shapes;  /* the shape_case.kind it runs on */
    const char *op;      /* "forward_training", ... */
    const char *variant; /* "plain", "relu", "add_relu", "stage" */
    int has_layouts;     /* run once per layout (channels-first, channels-last) */
    unsigned reads, writes; /* compulsory tensor-sized reads and writes */
    unsigned passes;        /* tensor-sized reads + writes the implementation makes */
    unsigned tensors;       /* distinct tensor buffers touched (sizes the rotation) */
    int quick;              /* part of --quick */
    clnorm_activation activation;
    int residual;
    /* Called once per (shape, layout) before the timed runs, over the sets in use (e.g. a forward
     * that produces the saved statistics and y a backward needs). May be NULL. */
    clnorm_status (*prepare)(bench *b, const op_spec *op, unsigned sets);
    clnorm_status (*run)(bench *b, const op_spec *op, const tensor_set *t);
};

typedef struct row {
    char family[32], op[32], variant[16], layout[8], shape[64], tag[24];
    size_t dims[4], groups;
    unsigned ndims;
    size_t tensor_bytes;
    unsigned sets, runs, warmup, passes, reads, writes;
    summary dev, wall, ab; /* ab: the --ab override's times, interleaved with dev's */
    summary gap;           /* per run: dev less the kernels' own durations (launch gaps) */
    unsigned kernels;      /* kernels the operation launched (clnorm_last_op_kernels) */
    const char *kernel_names[CLNORM_MAX_OP_KERNELS];
    double kernel_ms[CLNORM_MAX_OP_KERNELS]; /* each one's median duration */
    double compulsory_bytes, gbps, frac_copy, frac_copy_at_passes;
    double foreign; /* share of the CPUs other processes used during the timed runs (-1: unknown) */
    unsigned attempts;
    char error[256];
} row;

struct bench {
    /* options */
    const char *device, *json_path, *ops_filter, *shapes_filter, *commit, *shape_set;
    int quick, runs, warmup, latency, list, retries, copy_mib, max_wait, show_kernels;
    const char *ab;
    int ab_count;
    char ab_name[5][32];
    long ab_value[5], ab_base[5];
    double max_foreign;
    /* device */
    clnorm_context *ctx;
    cl_context cl_ctx;
    cl_device_id cl_dev;
    cl_command_queue queue;
    clnorm_device_info info;
    cl_ulong cache_bytes;
    int is_gpu;
    size_t rotate_threshold;
    /* copy bandwidth */
    double copy_gbps, copy_gbps_item, copy_gbps_chunk, copy_foreign;
    size_t copy_bytes;
    /* latency */
    double cold_ms, cold_context_ms, cold_first_op_ms;
    double warm_ms, warm_min_ms, warm_context_ms, warm_first_op_ms;
    unsigned long cold_builds, cold_disk_hits, warm_builds, warm_disk_hits;
    char latency_error[256];
    /* current shape: `shape` for batch, group and instance norm, rows x cols for layer and RMS
     * norm, groups for group norm */
    clnorm_shape shape;
    size_t norm_rows, norm_cols, groups;
    size_t tensor_bytes;
    tensor_set sets[MAX_SETS];
    unsigned pool_sets;
    cl_mem gamma, beta, running_mean, running_var, save_mean, save_invstd, dgamma, dbeta, stats;
    clnorm_bn_config config;
    /* results */
    row *rows;
    size_t num_rows, cap_rows;
    double load_start[3], load_end[3], start_ms;
    char date[40];
};

/* ---- batch-norm operations ---------------------------------------------------------------------- */

static clnorm_bn_buffers bn_forward_buffers(const bench *b, const op_spec *op, const tensor_set *t)
{
    clnorm_bn_buffers buf = {0};
    buf.x = t->x;
    buf.y = t->y;
    buf.residual = op->residual ? t->residual : NULL;
    buf.gamma = b->gamma;
    buf.beta = b->beta;
    buf.running_mean = b->running_mean;
    buf.running_var = b->running_var;
    buf.save_mean = b->save_mean;
    buf.save_invstd = b->save_invstd;
    return buf;
}

static clnorm_status bn_run_forward_training(bench *b, const op_spec *op, const tensor_set *t)
{
    clnorm_bn_buffers buf = bn_forward_buffers(b, op, t);
    clnorm_bn_config cfg = b->config;
    cfg.activation = op->activation;
    return clnorm_bn_forward_training(b->ctx, &b->shape, &cfg, &buf, 0, NULL, NULL);
}

static clnorm_status bn_run_forward_inference(bench *b, const op_spec *op, const tensor_set *t)
{
    clnorm_bn_buffers buf = bn_forward_buffers(b, op, t);
    buf.save_mean = buf.save_invstd = NULL;
    clnorm_bn_config cfg = b->config;
    cfg.activation = op->activation;
    return clnorm_bn_forward_inference(b->ctx, &b->shape, &cfg, &buf, 0, NULL, NULL);
}

static clnorm_status bn_run_backward(bench *b, const op_spec *op, const tensor_set *t)
{
    clnorm_bn_grad_buffers g = {0};
    g.x = t->x;
    g.dy = t->dy;
    g.y = op->activation == CLNORM_ACTIVATION_RELU ? t->y : NULL;
    g.gamma = b->gamma;
    g.mean = b->save_mean;
    g.invstd = b->save_invstd;
    g.dx = t->dx;
    g.dgamma = b->dgamma;
    g.dbeta = b->dbeta;
    g.dresidual = op->residual ? t->dresidual : NULL;
    clnorm_bn_config cfg = b->config;
    cfg.activation = op->activation;
    return clnorm_bn_backward(b->ctx, &b->shape, &cfg, &g, 0, NULL, NULL);
}

static clnorm_status bn_run_partial_stats(bench *b, const op_spec *op, const tensor_set *t)
{
    (void)op;
    return clnorm_bn_partial_stats(b->ctx, &b->shape, t->x, b->stats, 0, NULL, NULL);
}

static clnorm_status bn_run_apply(bench *b, const op_spec *op, const tensor_set *t)
{
    clnorm_bn_buffers buf = bn_forward_buffers(b, op, t);
    buf.running_mean = buf.running_var = NULL;
    clnorm_bn_config cfg = b->config;
    cfg.activation = op->activation;
    return clnorm_bn_apply(b->ctx, &b->shape, &cfg, &buf, 0, NULL, NULL);
}

/* A training forward with the op's activation and residual over every set in use: y (the ReLU
 * mask of the backward) and the saved statistics. */
static clnorm_status bn_prepare_forward(bench *b, const op_spec *op, unsigned sets)
{
    for (unsigned i = 0; i < sets; i++) {
        clnorm_status st = bn_run_forward_training(b, op, &b->sets[i]);
        if (st != CLNORM_OK)
            return st;
    }
    return clnorm_finish(b->ctx);
}

/* ---- layer, RMS, group and instance norm -------------------------------------------------------- */

/* PyTorch's defaults for layer, group and instance norm; RMS norm uses 1e-6 here, as the PyTorch
 * peer (bench/torch_peer.py) and ../shared/gpu/torch_reference.py do. */
#define FN_EPS 1e-5
#define FN_RMS_EPS 1e-6

static int is_rms(const op_spec *op)
{
    return !strcmp(op->family, "rmsnorm");
}

/* weight and bias per channel (b->gamma, b->beta), mean and rstd per row or group (b->save_mean,
 * b->save_invstd: sized for both), the fused residual's h in the set's dresidual buffer. */
static clnorm_status fn_run_forward(bench *b, const op_spec *op, const tensor_set *t)
{
    const int rms = is_rms(op);
    clnorm_norm_buffers buf = {0};
    buf.x = t->x;
    buf.y = t->y;
    if (op->residual) {
        buf.residual = t->residual;
        buf.h = t->dresidual;
    }
    buf.weight = b->gamma;
    buf.bias = rms ? NULL : b->beta;
    buf.mean = rms ? NULL : b->save_mean;
    buf.rstd = b->save_invstd;
    if (!strcmp(op->family, "layernorm"))
        return clnorm_layernorm_forward(b->ctx, b->norm_rows, b->norm_cols, FN_EPS, &buf, 0, NULL,
                                        NULL);
    if (rms)
        return clnorm_rmsnorm_forward(b->ctx, b->norm_rows, b->norm_cols, FN_RMS_EPS, &buf, 0,
                                      NULL, NULL);
    if (!strcmp(op->family, "groupnorm"))
        return clnorm_groupnorm_forward(b->ctx, &b->shape, b->groups, FN_EPS, &buf, 0, NULL,
                                        NULL);
    /* F.instance_norm's default: statistics of the input, no running statistics */
    return clnorm_instancenorm_forward(b->ctx, &b->shape, FN_EPS, 0.1, 1, &buf, NULL, NULL, 0,
                                       NULL, NULL);
}

/* dx, dweight and dbias (RMS norm: dx and dweight), as autograd computes for x, weight, bias. */
static clnorm_status fn_run_backward(bench *b, const op_spec *op, const tensor_set *t)
{
    const int rms = is_rms(op);
    clnorm_norm_grad_buffers g = {0};
    g.x = t->x;
    g.dy = t->dy;
    g.weight = b->gamma;
    g.mean = rms ? NULL : b->save_mean;
    g.rstd = b->save_invstd;
    g.dx = t->dx;
    g.dweight = b->dgamma;
    g.dbias = rms ? NULL : b->dbeta;
    if (!strcmp(op->family, "layernorm"))
        return clnorm_layernorm_backward(b->ctx, b->norm_rows, b->norm_cols, &g, 0, NULL, NULL);
    if (rms)
        return clnorm_rmsnorm_backward(b->ctx, b->norm_rows, b->norm_cols, &g, 0, NULL, NULL);
    if (!strcmp(op->family, "groupnorm"))
        return clnorm_groupnorm_backward(b->ctx, &b->shape, b->groups, &g, 0, NULL, NULL);
    return clnorm_instancenorm_backward(b->ctx, &b->shape, &g, 0, NULL, NULL);
}

/* The plain forward over every set in use: the mean and rstd the backward reads. */
static clnorm_status fn_prepare_forward(bench *b, const op_spec *op, unsigned sets)
{
    op_spec plain = *op;
    plain.residual = 0;
    for (unsigned i = 0; i < sets; i++) {
        clnorm_status st = fn_run_forward(b, &plain, &b->sets[i]);
        if (st != CLNORM_OK)
            return st;
    }
    return clnorm_finish(b->ctx);
}

/* The passes column follows host/groupnorm.c, where all four families are one engine (the
 * numbers below are for GPUs without a shorter path; implementation_passes() gives the others):
 *  forward  = stage 1 statistics (reads x [and the residual]: bn_reduce_cf for layer and RMS norm
 *             and channels-first groups, per (sample, channel) partials for channels-last
 *             groups), a per-row kernel, then gn_apply (reads x [and the residual], writes y
 *             [and h]): 3, fused residual 6;
 *  backward = layer and RMS norm: the parameter gradients' stage 1 (reads x and dy: column
 *             sums), the per-row sums' stage 1 (reads x and dy again; on CPUs it rides on the
 *             column sums' pass: 5 in all), a per-row kernel, then gn_apply (reads x and dy,
 *             writes dx): 7; group and instance norm: one stage 1 per (sample, channel) for the
 *             group and the parameter sums (reads x and dy), then gn_apply: 5.
 * Compulsory: forward reads x, writes y (+ reads the residual, writes h); backward reads x and
 * dy, writes dx. Tensors: x, y (+ residual, h); x, dy, dx. */
#define FN_OP(family_, shapes_, op_, variant_, reads_, writes_, passes_, tensors_, quick_, res_,   \
              prep_, run_)                                                                          \
    {family_, shapes_, op_, variant_, 0, reads_, writes_, passes_, tensors_, quick_, NOACT, res_,  \
     prep_, run_}
#define LAYOUT_OP(family_, op_, reads_, writes_, passes_, tensors_, prep_, run_)                    \
    {family_, family_, op_, "plain", 1, reads_, writes_, passes_, tensors_, 1, NOACT, 0, prep_, run_}

/* The passes column follows host/batchnorm.c: training forward = stage 1 (reads x [, dy, y]),
 * a per-channel kernel, then one elementwise kernel (reads x [, residual], writes y);
 * inference = per-channel kernel + elementwise; backward = stage 1 reading x, dy [, y] plus an
 * elementwise kernel reading dy, x [, y], writing dx [, dresidual]. On CPUs, channels-first
 * training forward and backward take one launch per cache-sized tile of channels, which reads
 * each input once: see implementation_passes(). Update these numbers when the implementation
 * changes. */
#define BN_OP(op_, variant_, reads_, writes_, passes_, tensors_, quick_, act_, res_, prep_, run_)   \
    {"batchnorm", "batchnorm", op_, variant_, 1, reads_, writes_, passes_, tensors_, quick_, act_,  \
     res_, prep_, run_}
#define RELU CLNORM_ACTIVATION_RELU
#define NOACT CLNORM_ACTIVATION_NONE

static const op_spec ops[] = {
    BN_OP("forward_training", "plain", 1, 1, 3, 2, 1, NOACT, 0, NULL, bn_run_forward_training),
    BN_OP("forward_training", "relu", 1, 1, 3, 2, 0, RELU, 0, NULL, bn_run_forward_training),
    BN_OP("forward_training", "add_relu", 2, 1, 4, 3, 0, RELU, 1, NULL, bn_run_forward_training),
    BN_OP("forward_inference", "plain", 1, 1, 2, 2, 1, NOACT, 0, NULL, bn_run_forward_inference),
    BN_OP("forward_inference", "relu", 1, 1, 2, 2, 0, RELU, 0, NULL, bn_run_forward_inference),
    BN_OP("forward_inference", "add_relu", 2, 1, 3, 3, 0, RELU, 1, NULL, bn_run_forward_inference),
    BN_OP("backward", "plain", 2, 1, 5, 3, 1, NOACT, 0, bn_prepare_forward, bn_run_backward),
    BN_OP("backward", "relu", 3, 1, 7, 4, 0, RELU, 0, bn_prepare_forward, bn_run_backward),
    BN_OP("backward", "add_relu", 3, 2, 8, 5, 0, RELU, 1, bn_prepare_forward, bn_run_backward),
    /* the training forward's stages on their own, to see which one dominates */
    BN_OP("partial_stats", "stage", 1, 0, 1, 1, 0, NOACT, 0, NULL, bn_run_partial_stats),
    BN_OP("apply", "stage", 1, 1, 2, 2, 0, NOACT, 0, bn_prepare_forward, bn_run_apply),
    FN_OP("layernorm", "rows", "forward", "plain", 1, 1, 3, 2, 1, 0, NULL, fn_run_forward),
    FN_OP("layernorm", "rows", "forward", "residual", 2, 2, 6, 4, 1, 1, NULL, fn_run_forward),
    FN_OP("layernorm", "rows", "backward", "plain", 2, 1, 7, 3, 1, 0, fn_prepare_forward,
          fn_run_backward),
    FN_OP("rmsnorm", "rows", "forward", "plain", 1, 1, 3, 2, 1, 0, NULL, fn_run_forward),
    FN_OP("rmsnorm", "rows", "forward", "residual", 2, 2, 6, 4, 1, 1, NULL, fn_run_forward),
    FN_OP("rmsnorm", "rows", "backward", "plain", 2, 1, 7, 3, 1, 0, fn_prepare_forward,
          fn_run_backward),
    LAYOUT_OP("groupnorm", "forward", 1, 1, 3, 2, NULL, fn_run_forward),
    LAYOUT_OP("groupnorm", "backward", 2, 1, 5, 3, fn_prepare_forward, fn_run_backward),
    LAYOUT_OP("instancenorm", "forward", 1, 1, 3, 2, NULL, fn_run_forward),
    LAYOUT_OP("instancenorm", "backward", 2, 1, 5, 3, fn_prepare_forward, fn_run_backward),
};

/* ---- shapes ------------------------------------------------------------------------------------- */

static const size_t resnet50_chw[5][3] = {
    {64, 112, 112}, {256, 56, 56}, {512, 28, 28}, {1024, 14, 14}, {2048, 7, 7}};

/* Layer and RMS norm (rows x cols), issue 5's sets. */
static const size_t rows_gpu[3][2] = {{16384, 4096}, {65536, 1024}, {4096, 8192}};
static const size_t rows_cpu[3][2] = {{1024, 4096}, {4096, 1024}, {256, 16384}};
/* Group norm (and instance norm on the same tensor): (N, C, H, W) = (32, 256, 56, 56), G = 32 */
static const size_t groups_nchw[4] = {32, 256, 56, 56};
enum { GROUPS = 32 };

/* N = 64 on a GPU; on a CPU the smallest power-of-two N that makes a tensor of at least 16 MB
 * (<= 64 MB). */
static size_t batch_for(int gpu, size_t gpu_batch, size_t per_sample)
{
    if (gpu)
        return gpu_batch;
    size_t batch = 1;
    while (batch * per_sample < 16000000 && batch * 2 * per_sample <= 64000000)
        batch *= 2;
    return batch;
}

static size_t build_shapes(int gpu, int quick, shape_case *out)
{
    size_t n = 0;
    for (size_t i = 0; i < ARRAY_LEN(resnet50_chw); i++) {
        const size_t *chw = resnet50_chw[i];
        if (quick && i != 0 && i != 4)
            continue;
        size_t batch = batch_for(gpu, 64, chw[0] * chw[1] * chw[2] * sizeof(float));
        out[n++] = (shape_case){"batchnorm", gpu ? "resnet50" : "resnet50-scaled",
                                {batch, chw[0], chw[1], chw[2]}, 4, chw[0]};
    }
    if (!quick) {
        for (size_t i = 0; i < ARRAY_LEN(resnet50_chw); i++) {
            const size_t *chw = resnet50_chw[i];
            int duplicate = 0;
            for (size_t j = 0; j < n; j++)
                duplicate |= out[j].dims[0] == 8 && out[j].dims[1] == chw[0] &&
                             out[j].dims[2] == chw[1];
            if (!duplicate && 8 * chw[0] * chw[1] * chw[2] * sizeof(float) <= 64000000)
                out[n++] = (shape_case){"batchnorm", "small-batch", {8, chw[0], chw[1], chw[2]}, 4,
                                        chw[0]};
        }
    }
    if (gpu)
        out[n++] = (shape_case){"batchnorm", "small-plane", {32, 2048, 7, 7}, 4, 2048};
    for (size_t i = 0; i < 3 && !(quick && i > 0); i++) {
        const size_t *rc = gpu ? rows_gpu[i] : rows_cpu[i];
        out[n++] = (shape_case){"rows", gpu ? "transformer" : "transformer-cpu",
                                {rc[0], rc[1], 1, 1}, 2, 1};
    }
    const size_t *g = groups_nchw;
    size_t batch = batch_for(gpu, g[0], g[1] * g[2] * g[3] * sizeof(float));
    out[n++] = (shape_case){"groupnorm", gpu ? "groupnorm" : "groupnorm-scaled",
                            {batch, g[1], g[2], g[3]}, 4, GROUPS};
    out[n++] = (shape_case){"instancenorm", gpu ? "groupnorm" : "groupnorm-scaled",
                            {batch, g[1], g[2], g[3]}, 4, g[1]};
    return n;
}

/* "N8 C64 H112 W112"; group norm adds " G32"; layer and RMS norm: "rows1024 cols4096" (the names
 * ../shared/gpu/torch_reference.py uses). */
static void describe_shape(const shape_case *s, char *buf, size_t size)
{
    if (s->ndims == 2)
        snprintf(buf, size, "rows%zu cols%zu", s->dims[0], s->dims[1]);
    else if (!strcmp(s->kind, "groupnorm"))
        snprintf(buf, size, "N%zu C%zu H%zu W%zu G%zu", s->dims[0], s->dims[1], s->dims[2],
                 s->dims[3], s->groups);
    else
        snprintf(buf, size, "N%zu C%zu H%zu W%zu", s->dims[0], s->dims[1], s->dims[2], s->dims[3]);
}

static size_t shape_elements(const shape_case *s)
{
    size_t count = 1;
    for (unsigned i = 0; i < s->ndims; i++)
        count *= s->dims[i];
    return count;
}

/* Per-channel values (gamma, beta, weight, bias: C or cols) and per-row/group statistics (mean
 * and rstd: C for batch norm, rows, N * groups) of a shape. */
static size_t shape_channels(const shape_case *s)
{
    return s->dims[1];
}

static size_t shape_stat_rows(const shape_case *s)
{
    if (!strcmp(s->kind, "batchnorm"))
        return s->dims[1];
    if (s->ndims == 2)
        return s->dims[0];
    return s->dims[0] * s->groups;
}

/* Does op run on shape s, and in how many layouts (batch, group and instance norm: both)? */
static int op_runs_on(const op_spec *op, const shape_case *s)
{
    return !strcmp(op->shapes, s->kind);
}

static const char *layout_name(const op_spec *op, int layout)
{
    return !op->has_layouts ? "-" : layout ? "NHWC" : "NCHW";
}

/* The work-group size the library builds with (the parameter, within the device's limit, a power
 * of two). */
static size_t effective_work_group(const bench *b)
{
    long wg = 1;
    clnorm_get_param(b->ctx, "work_group_size", &wg);
    size_t limit = (size_t)wg < b->info.max_work_group_size ? (size_t)wg
                                                            : b->info.max_work_group_size;
    /* a power of two, as host/program.c builds it (a kernel's own lower limit is not seen) */
    size_t pow2 = 1;
    while (pow2 * 2 <= limit)
        pow2 *= 2;
    return pow2;
}

/* The tensor passes the implementation makes for this row: op->passes, except where the
 * library takes a shorter path on work-groups of one (CPUs). Mirrors bn_fused_tile in
 * host/batchnorm.c (channels-first, a channel of every input within the larger of 256 KiB and a
 * quarter of a compute unit's share of the cache, at least 4 channels per compute unit; the
 * channels-last backward of a fused add + ReLU) and host/groupnorm.c (group_forward and
 * group_backward: one launch where a group is a row that fits in cache, or in channels-last
 * forward a sample per work-item; else the row sums of layer and RMS norm's backward ride on the
 * column sums' pass). */
static unsigned implementation_passes(const bench *b, const op_spec *op, const shape_case *sc,
                                      int layout)
{
    const size_t wg = effective_work_group(b);
    if (wg != 1) {
        /* bn_register_width (host/batchnorm.c): layer and RMS norm forward, and channels-first
         * batch norm training forward, in one launch where a row (a channel's N planes) fits in
         * a work-group's registers, register_units vectors each (0: never); rows_tile_lanes:
         * channels-last training forward where its N x H x W rows fit, a row per work-item */
        long vec = 1, per_item = 0;
        clnorm_get_param(b->ctx, "vector_width", &vec);
        clnorm_get_param(b->ctx, "register_units", &per_item);
        const size_t units = (size_t)per_item;
        const size_t values = !strcmp(op->shapes, "rows") && !strcmp(op->op, "forward")
                                  ? sc->dims[1]
                              : !strcmp(op->family, "batchnorm") && layout == 0 &&
                                      !strcmp(op->op, "forward_training")
                                  ? sc->dims[0] * sc->dims[2] * sc->dims[3]
                                  : 0;
        if (values && (values + (size_t)vec - 1) / (size_t)vec <= wg * units)
            return op->reads + op->writes;
        /* gn_forward_rows_cached: layer and RMS norm forward without the residual past the
         * register kernels, rows of at most cached_kib KiB read from memory once (the cache's
         * re-reads not counted) */
        long cached_kib = 0;
        clnorm_get_param(b->ctx, "cached_kib", &cached_kib);
        if (!strcmp(op->shapes, "rows") && !strcmp(op->op, "forward") && !op->residual &&
            sc->dims[1] * sizeof(float) <= (size_t)cached_kib * 1024)
            return op->reads + op->writes;
        /* layer and RMS norm backward with register_backward: dx in one launch from the
         * registers (x, dy read, dx written) after the column sums' pass: no row sums' pass */
        long backward = 0;
        clnorm_get_param(b->ctx, "register_backward", &backward);
        if (backward && !strcmp(op->shapes, "rows") && !strcmp(op->op, "backward") &&
            (sc->dims[1] + (size_t)vec - 1) / (size_t)vec <= wg * units)
            return op->passes - 2;
        /* ... or else from gn_backward_rows_cached, rows within cached_kib */
        if (!strcmp(op->shapes, "rows") && !strcmp(op->op, "backward") &&
            sc->dims[1] * sizeof(float) <= (size_t)cached_kib * 1024)
            return op->passes - 2;
        if (!strcmp(op->family, "batchnorm") && layout == 1 &&
            !strcmp(op->op, "forward_training") &&
            sc->dims[0] * sc->dims[2] * sc->dims[3] <= wg * units)
            return op->reads + op->writes;
        return op->passes;
    }
    /* bn_cache_share and the one-launch kernels' limit (host/batchnorm.c) */
    const size_t units = b->info.compute_units ? b->info.compute_units : 1;
    const size_t share = (b->cache_bytes ? (size_t)b->cache_bytes : units << 20) / (4 * units);
    const size_t limit = share > 256 * 1024 ? share : 256 * 1024;
    if (!strcmp(op->family, "batchnorm") && layout == 0 &&
        (!strcmp(op->op, "forward_training") || !strcmp(op->op, "backward"))) {
        const size_t inputs = !strcmp(op->op, "forward_training") ? 1 : op->reads;
        const size_t channel_bytes = sc->dims[0] * sc->dims[2] * sc->dims[3] * sizeof(float);
        if (channel_bytes * inputs <= limit && sc->dims[1] >= 4 * (size_t)b->info.compute_units)
            return op->reads + op->writes;
    }
    /* host/groupnorm.c group_forward and group_backward: one launch where a group is one
     * contiguous row (layer and RMS norm; channels-first group and instance norm) of at most
     * 256 KiB per input (x [and the residual] forward, x and dy backward) */
    const int rows = !strcmp(op->shapes, "rows");
    if (strcmp(op->family, "batchnorm") && (rows || layout == 0)) {
        const size_t groups = rows ? sc->dims[0] : sc->dims[0] * sc->groups;
        const size_t group_bytes =
            (rows ? sc->dims[1] : sc->dims[1] / sc->groups * sc->dims[2] * sc->dims[3]) *
            sizeof(float) * op->reads;
        if (group_bytes <= limit && groups >= 4 * (size_t)b->info.compute_units)
            return op->reads + op->writes;
    }
    /* group_forward's sample_fused: channels-last group and instance norm forward a sample per
     * work-item, with two samples per compute unit and a sample within the cache share */
    const size_t sample_bytes = sc->dims[1] * sc->dims[2] * sc->dims[3] * sizeof(float) * op->reads;
    if (!rows && layout == 1 && strcmp(op->family, "batchnorm") && !strcmp(op->op, "forward") &&
        sc->dims[0] >= 2 * units && sample_bytes <= share)
        return op->reads + op->writes;
    if (rows && !strcmp(op->op, "backward"))
        return op->passes - 2; /* the row sums ride on the column sums' pass */
    /* host/batchnorm.c backward: with a fused add + ReLU in channels-last, the sums' pass writes
     * the residual's gradient and the dx pass reads it instead of dy and the mask */
    if (!strcmp(op->family, "batchnorm") && layout == 1 && !strcmp(op->op, "backward") &&
        op->residual)
        return op->passes - 1;
    return op->passes;
}

/* ---- filters ------------------------------------------------------------------------------------ */

/* True when the comma-separated filter is empty or one of its items is a substring of text. */
static int filter_matches(const char *filter, const char *text)
{
    if (!filter || !*filter)
        return 1;
    char copy[512];
    snprintf(copy, sizeof copy, "%s", filter);
    for (char *save = NULL, *item = strtok_r(copy, ",", &save); item;
         item = strtok_r(NULL, ",", &save))
        if (strstr(text, item))
            return 1;
    return 0;
}

static void op_label(const op_spec *op, const char *layout, char *buf, size_t size)
{
    snprintf(buf, size, "%s %s %s %s", op->family, op->op, op->variant, layout);
}

/* Does op run on shape s in this layout (0: channels-first, 1: channels-last; ops without
 * layouts run once, as layout 0) under the --ops and --quick selection? Writes its label. */
static int selected(const bench *b, const op_spec *op, const shape_case *s, int layout,
                    char *label, size_t size)
{
    op_label(op, layout_name(op, layout), label, size);
    return op_runs_on(op, s) && (op->has_layouts || layout == 0) &&
           filter_matches(b->ops_filter, label) && (!b->quick || op->quick);
}

/* ---- OpenCL helpers ------------------------------------------------------------------------------ */

static cl_mem create_buffer(bench *b, size_t bytes, cl_int *err)
{
    return clCreateBuffer(b->cl_ctx, CL_MEM_READ_WRITE, bytes, NULL, err);
}

static void release_mem(cl_mem *m)
{
    if (*m)
        clReleaseMemObject(*m);
    *m = NULL;
}

/* Deterministic values in [lo, hi). */
static void fill_host(float *v, size_t n, unsigned seed, float lo, float hi)
{
    uint64_t s = 0x9E3779B97F4A7C15ull * (seed + 1);
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        v[i] = lo + (hi - lo) * (float)((s >> 40) * (1.0 / 16777216.0));
    }
}

/* ---- copy bandwidth ----------------------------------------------------------------------------- */

static const char copy_source[] =
    "__kernel void copy4(__global const float4 *src, __global float4 *dst, ulong n)\n"
    "{\n"
    "    size_t i = get_global_id(0);\n"
    "    if (i < n)\n"
    "        dst[i] = src[i];\n"
    "}\n"
    "__kernel void copy4_chunk(__global const float4 *src, __global float4 *dst, ulong n,\n"
    "                          ulong chunk)\n"
    "{\n"
    "    ulong begin = get_global_id(0) * chunk, end = min(begin + chunk, n);\n"
    "    for (ulong i = begin; i < end; i++)\n"
    "        dst[i] = src[i];\n"
    "}\n";

static double event_ms(cl_event e)
{
    cl_ulong start = 0, end = 0;
    clGetEventProfilingInfo(e, CL_PROFILING_COMMAND_START, sizeof start, &start, NULL);
    clGetEventProfilingInfo(e, CL_PROFILING_COMMAND_END, sizeof end, &end, NULL);
    return (double)(end - start) * 1e-6;
}

/* Median GB/s (bytes read + written) of one copy kernel configuration. */
static double time_copy(bench *b, cl_kernel k, size_t global, const size_t *local)
{
    double ms[MAX_RUNS];
    int runs = b->runs < MAX_RUNS ? b->runs : MAX_RUNS;
    for (int i = 0; i < b->warmup + runs; i++) {
        cl_event e = NULL;
        cl_int err = clEnqueueNDRangeKernel(b->queue, k, 1, NULL, &global, local, 0, NULL, &e);
        if (err != CL_SUCCESS)
            die("copy kernel: %s", clnorm_cl_error_name(err));
        clWaitForEvents(1, &e);
        if (i >= b->warmup)
            ms[i - b->warmup] = event_ms(e);
        clReleaseEvent(e);
    }
    summary s = summarize(ms, (size_t)runs);
    return 2.0 * (double)b->copy_bytes / (s.median * 1e6);
}

static void measure_copy(bench *b)
{
    size_t bytes = 64 * MIB;
    if (4 * (size_t)b->cache_bytes > bytes)
        bytes = 4 * (size_t)b->cache_bytes;
    if (bytes > 256 * MIB)
        bytes = 256 * MIB;
    if (b->copy_mib)
        bytes = (size_t)b->copy_mib * MIB;
    while (bytes > b->info.max_alloc_bytes)
        bytes /= 2;
    b->copy_bytes = bytes;
    cl_int err;
    cl_mem src = create_buffer(b, bytes, &err);
    cl_mem dst = err == CL_SUCCESS ? create_buffer(b, bytes, &err) : NULL;
    if (err != CL_SUCCESS)
        die("copy buffers of %zu bytes: %s", bytes, clnorm_cl_error_name(err));
    const float one = 1.0f;
    clEnqueueFillBuffer(b->queue, src, &one, sizeof one, 0, bytes, 0, NULL, NULL);
    clEnqueueFillBuffer(b->queue, dst, &one, sizeof one, 0, bytes, 0, NULL, NULL);
    clFinish(b->queue);

    const char *src_text = copy_source;
    cl_program prog = clCreateProgramWithSource(b->cl_ctx, 1, &src_text, NULL, &err);
    if (err != CL_SUCCESS || clBuildProgram(prog, 1, &b->cl_dev, "", NULL, NULL) != CL_SUCCESS)
        die("building the copy kernel failed");
    cl_kernel k_item = clCreateKernel(prog, "copy4", &err);
    cl_kernel k_chunk = clCreateKernel(prog, "copy4_chunk", &err);
    if (err != CL_SUCCESS)
        die("copy kernels: %s", clnorm_cl_error_name(err));
    cl_ulong n4 = bytes / 16;
    /* one float4 per work-item: what a GPU wants */
    clSetKernelArg(k_item, 0, sizeof src, &src);
    clSetKernelArg(k_item, 1, sizeof dst, &dst);
    clSetKernelArg(k_item, 2, sizeof n4, &n4);
    size_t local = 256;
    int use_local = b->info.max_work_group_size >= local && n4 % local == 0;
    size_t items = (size_t)b->info.compute_units * 4;
    cl_ulong chunk = ceil_div((size_t)n4, items);
    clSetKernelArg(k_chunk, 0, sizeof src, &src);
    clSetKernelArg(k_chunk, 1, sizeof dst, &dst);
    clSetKernelArg(k_chunk, 2, sizeof n4, &n4);
    clSetKernelArg(k_chunk, 3, sizeof chunk, &chunk);
    for (int attempt = 0; attempt <= b->retries; attempt++) {
        cpu_sample c0, c1;
        int sampled = cpu_sample_take(&c0);
        b->copy_gbps_item = time_copy(b, k_item, (size_t)n4, use_local ? &local : NULL);
        b->copy_gbps = b->copy_gbps_item;
        b->copy_gbps_chunk = 0;
        if (!b->is_gpu) {
            /* CPU: a few long contiguous runs per core; the best of both counts */
            size_t single = 1;
            b->copy_gbps_chunk = time_copy(b, k_chunk, items, &single);
            if (b->copy_gbps_chunk > b->copy_gbps)
                b->copy_gbps = b->copy_gbps_chunk;
        }
        b->copy_foreign = sampled && cpu_sample_take(&c1) ? foreign_share(&c0, &c1) : -1;
        if (b->copy_foreign < b->max_foreign)
            break;
        if (attempt < b->retries) {
            fprintf(stderr, "clnorm-bench: other processes used %.0f%% of the CPUs during the "
                            "copy measurement; retrying\n",
                    100 * b->copy_foreign);
            wait_quiet(b->max_foreign, b->max_wait);
        }
    }
    clReleaseKernel(k_item);
    clReleaseKernel(k_chunk);
    clReleaseProgram(prog);
    clReleaseMemObject(src);
    clReleaseMemObject(dst);
}

/* ---- first-call latency ------------------------------------------------------------------------- */

/* Context creation -> first batch-norm training forward -> y read back on the host. */
static int first_call(bench *b, const char *cache_dir, double *total, double *context_ms,
                      double *op_ms, clnorm_cache_stats *stats)
{
    const clnorm_shape shape = {.n = 2, .c = 64, .spatial_rank = 2, .spatial = {28, 28},
                                .layout = CLNORM_CHANNELS_FIRST};
    const size_t count = 2 * 64 * 28 * 28;
    static float host[2 * 64 * 28 * 28];
    fill_host(host, count, 7, -1.0f, 1.0f);
    clnorm_settings settings;
    clnorm_default_settings(&settings);
    settings.device = b->device;
    settings.cache_dir = cache_dir;
    char message[4096];
    clnorm_context *ctx = NULL;
    cl_mem x = NULL, y = NULL;
    int ok = 0;

    double t0 = now_ms();
    if (clnorm_context_create(&ctx, &settings, message, sizeof message) != CLNORM_OK) {
        snprintf(b->latency_error, sizeof b->latency_error, "context: %.200s", message);
        return 0;
    }
    double t1 = now_ms();
    cl_int err;
    x = clCreateBuffer(clnorm_context_cl_context(ctx), CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR,
                       count * sizeof(float), host, &err);
    if (err == CL_SUCCESS)
        y = clCreateBuffer(clnorm_context_cl_context(ctx), CL_MEM_READ_WRITE,
                           count * sizeof(float), NULL, &err);
    if (err != CL_SUCCESS) {
        snprintf(b->latency_error, sizeof b->latency_error, "buffers: %s",
                 clnorm_cl_error_name(err));
        goto done;
    }
    clnorm_bn_config cfg;
    clnorm_bn_default_config(&cfg);
    clnorm_bn_buffers buf = {0};
    buf.x = x;
    buf.y = y;
    if (clnorm_bn_forward_training(ctx, &shape, &cfg, &buf, 0, NULL, NULL) != CLNORM_OK) {
        snprintf(b->latency_error, sizeof b->latency_error, "forward: %.200s",
                 clnorm_last_error(ctx));
        goto done;
    }
    err = clEnqueueReadBuffer(clnorm_context_queue(ctx), y, CL_TRUE, 0, count * sizeof(float),
                              host, 0, NULL, NULL);
    if (err != CL_SUCCESS) {
        snprintf(b->latency_error, sizeof b->latency_error, "read: %s", clnorm_cl_error_name(err));
        goto done;
    }
    double t2 = now_ms();
    *total = t2 - t0;
    *context_ms = t1 - t0;
    *op_ms = t2 - t1;
    clnorm_get_cache_stats(ctx, stats);
    ok = 1;
done:
    if (x)
        clReleaseMemObject(x);
    if (y)
        clReleaseMemObject(y);
    clnorm_context_release(ctx);
    return ok;
}

static void measure_latency(bench *b)
{
    const char *tmp = getenv("TMPDIR");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/clnorm-bench-cache-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        snprintf(b->latency_error, sizeof b->latency_error, "mkdtemp: %s", strerror(errno));
        return;
    }
    clnorm_cache_stats st;
    memset(&st, 0, sizeof st);
    if (first_call(b, dir, &b->cold_ms, &b->cold_context_ms, &b->cold_first_op_ms, &st)) {
        b->cold_builds = st.builds;
        b->cold_disk_hits = st.disk_hits;
        enum { WARM = 5 };
        double total[WARM], context[WARM], op[WARM];
        int n = 0;
        for (int i = 0; i < WARM; i++) {
            memset(&st, 0, sizeof st);
            if (!first_call(b, dir, &total[n], &context[n], &op[n], &st))
                break;
            b->warm_builds += st.builds;
            b->warm_disk_hits += st.disk_hits;
            n++;
        }
        if (n > 0) {
            b->warm_ms = summarize(total, (size_t)n).median;
            b->warm_min_ms = total[0];
            b->warm_context_ms = summarize(context, (size_t)n).median;
            b->warm_first_op_ms = summarize(op, (size_t)n).median;
        }
    }
    remove_tree(dir);
}

/* ---- per-shape buffers ------------------------------------------------------------------------ */

static void release_shape(bench *b)
{
    for (unsigned i = 0; i < MAX_SETS; i++) {
        tensor_set *t = &b->sets[i];
        release_mem(&t->x);
        release_mem(&t->y);
        release_mem(&t->residual);
        release_mem(&t->dy);
        release_mem(&t->dx);
        release_mem(&t->dresidual);
    }
    cl_mem *per_channel[] = {&b->gamma,     &b->beta,        &b->running_mean,
                             &b->running_var, &b->save_mean, &b->save_invstd,
                             &b->dgamma,    &b->dbeta,       &b->stats};
    for (size_t i = 0; i < ARRAY_LEN(per_channel); i++)
        release_mem(per_channel[i]);
    b->pool_sets = 0;
}

/* Allocates and fills the rotation sets and the per-channel and per-row buffers for a shape.
 * Returns 0 with a message on failure. */
static int setup_shape(bench *b, const shape_case *s, char *err_msg, size_t err_size)
{
    const size_t count = shape_elements(s);
    b->tensor_bytes = count * sizeof(float);
    b->shape = (clnorm_shape){.n = s->dims[0], .c = s->dims[1], .spatial_rank = 2,
                              .spatial = {s->dims[2], s->dims[3]}};
    b->norm_rows = s->dims[0];
    b->norm_cols = s->dims[1];
    b->groups = s->groups;
    if (b->tensor_bytes > b->info.max_alloc_bytes) {
        snprintf(err_msg, err_size, "tensor of %zu bytes exceeds the device's largest buffer",
                 b->tensor_bytes);
        return 0;
    }
    /* at least two tensors per op: enough sets for the two-tensor ops, and at most half of the
     * device's memory for all six tensors of every set */
    size_t sets = ceil_div(b->rotate_threshold, 2 * b->tensor_bytes);
    if (sets > MAX_SETS)
        sets = MAX_SETS;
    while (sets > 1 && 6 * sets * b->tensor_bytes > b->info.global_mem_bytes / 2)
        sets--;
    float *host = malloc(b->tensor_bytes);
    if (!host) {
        snprintf(err_msg, err_size, "out of host memory");
        return 0;
    }
    cl_int err = CL_SUCCESS;
    for (size_t i = 0; i < sets && err == CL_SUCCESS; i++) {
        tensor_set *t = &b->sets[i];
        cl_mem *all[] = {&t->x, &t->y, &t->residual, &t->dy, &t->dx, &t->dresidual};
        for (size_t j = 0; j < ARRAY_LEN(all) && err == CL_SUCCESS; j++)
            *all[j] = create_buffer(b, b->tensor_bytes, &err);
    }
    if (err != CL_SUCCESS) {
        snprintf(err_msg, err_size, "allocating %zu sets of 6 x %zu bytes: %s", sets,
                 b->tensor_bytes, clnorm_cl_error_name(err));
        free(host);
        release_shape(b);
        return 0;
    }
    b->pool_sets = (unsigned)sets;
    /* x around 0.5 (about a third negative), dy and residual in [-1, 1) */
    fill_host(host, count, 1, -1.0f, 2.0f);
    for (size_t i = 0; i < sets; i++)
        clEnqueueWriteBuffer(b->queue, b->sets[i].x, CL_TRUE, 0, b->tensor_bytes, host, 0, NULL,
                             NULL);
    fill_host(host, count, 2, -1.0f, 1.0f);
    for (size_t i = 0; i < sets; i++) {
        clEnqueueWriteBuffer(b->queue, b->sets[i].dy, CL_TRUE, 0, b->tensor_bytes, host, 0, NULL,
                             NULL);
        clEnqueueWriteBuffer(b->queue, b->sets[i].residual, CL_TRUE, 0, b->tensor_bytes, host, 0,
                             NULL, NULL);
        const float zero = 0.0f;
        clEnqueueFillBuffer(b->queue, b->sets[i].y, &zero, sizeof zero, 0, b->tensor_bytes, 0,
                            NULL, NULL);
        clEnqueueFillBuffer(b->queue, b->sets[i].dx, &zero, sizeof zero, 0, b->tensor_bytes, 0,
                            NULL, NULL);
        clEnqueueFillBuffer(b->queue, b->sets[i].dresidual, &zero, sizeof zero, 0,
                            b->tensor_bytes, 0, NULL, NULL);
    }
    free(host);

    const size_t c = shape_channels(s);
    /* save_mean and save_invstd also serve as the per-row / per-group mean and rstd */
    const size_t stat_rows = shape_stat_rows(s) > c ? shape_stat_rows(s) : c;
    float *ch = malloc(3 * stat_rows * sizeof(float));
    if (!ch) {
        snprintf(err_msg, err_size, "out of host memory");
        release_shape(b);
        return 0;
    }
    struct {
        cl_mem *m;
        size_t floats;
        float lo, hi;
    } per_channel[] = {{&b->gamma, c, 0.5f, 1.5f},       {&b->beta, c, -0.5f, 0.5f},
                       {&b->running_mean, c, 0.0f, 1.0f}, {&b->running_var, c, 0.5f, 1.5f},
                       {&b->save_mean, stat_rows, 0.0f, 1.0f},
                       {&b->save_invstd, stat_rows, 0.5f, 1.5f},
                       {&b->dgamma, c, 0.0f, 0.0f},       {&b->dbeta, c, 0.0f, 0.0f},
                       {&b->stats, 3 * c, 1.0f, 1.0f}};
    for (size_t i = 0; i < ARRAY_LEN(per_channel) && err == CL_SUCCESS; i++) {
        fill_host(ch, per_channel[i].floats, 10 + (unsigned)i, per_channel[i].lo,
                  per_channel[i].hi);
        *per_channel[i].m =
            clCreateBuffer(b->cl_ctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR,
                           per_channel[i].floats * sizeof(float), ch, &err);
    }
    free(ch);
    clFinish(b->queue);
    if (err != CL_SUCCESS) {
        snprintf(err_msg, err_size, "per-channel buffers: %s", clnorm_cl_error_name(err));
        release_shape(b);
        return 0;
    }
    return 1;
}

/* ---- timing ------------------------------------------------------------------------------------- */

static row *new_row(bench *b)
{
    if (b->num_rows == b->cap_rows) {
        b->cap_rows = b->cap_rows ? 2 * b->cap_rows : 64;
        b->rows = realloc(b->rows, b->cap_rows * sizeof *b->rows);
        if (!b->rows)
            die("out of host memory");
    }
    row *r = &b->rows[b->num_rows++];
    memset(r, 0, sizeof *r);
    return r;
}

/* Times one row: warm-up, then b->runs runs, rotating over the buffer sets. Returns the status. */
/* Sets the --ab override (which = 1) or the context's own values (which = 0). */
static clnorm_status apply_ab(bench *b, int which)
{
    for (int i = 0; i < b->ab_count; i++) {
        clnorm_status st = clnorm_set_param(b->ctx, b->ab_name[i],
                                            which ? b->ab_value[i] : b->ab_base[i]);
        if (st != CLNORM_OK)
            return st;
    }
    return CLNORM_OK;
}

/* Times one row: warm-up, then b->runs runs, rotating over the buffer sets. With --ab, every
 * run is a pair (built-in parameters, then the override) on consecutive sets; the override's
 * times go to dev_ab. */
static clnorm_status time_runs(bench *b, const op_spec *op, size_t k, double *dev, double *wall,
                               double *dev_ab, double *gap, double (*kernel_ms)[CLNORM_MAX_OP_KERNELS],
                               row *r)
{
    clnorm_status st = CLNORM_OK;
    const int configs = b->ab_count ? 2 : 1;
    size_t next = 0;
    for (int i = 0; st == CLNORM_OK && i < b->warmup + b->runs; i++) {
        for (int cfg = 0; st == CLNORM_OK && cfg < configs; cfg++) {
            const tensor_set *t = &b->sets[next++ % k];
            if (configs > 1)
                st = apply_ab(b, cfg);
            double w0 = now_ms(), ms = 0;
            if (st == CLNORM_OK)
                st = op->run(b, op, t);
            if (st == CLNORM_OK)
                st = clnorm_last_op_time(b->ctx, &ms);
            double w1 = now_ms();
            /* the kernels' own durations: what is left of the span is the gaps between them */
            clnorm_kernel_time kt[CLNORM_MAX_OP_KERNELS];
            size_t n = 0;
            if (st == CLNORM_OK && cfg == 0)
                st = clnorm_last_op_kernels(b->ctx, kt, CLNORM_MAX_OP_KERNELS, &n);
            const int timed = i >= b->warmup && cfg == 0;
            double busy = 0;
            for (size_t j = 0; j < n; j++) {
                const double d = kt[j].end_ms - kt[j].start_ms;
                busy += d;
                if (timed) {
                    r->kernel_names[j] = kt[j].name;
                    kernel_ms[i - b->warmup][j] = d;
                }
            }
            if (timed) {
                dev[i - b->warmup] = ms;
                wall[i - b->warmup] = w1 - w0;
                gap[i - b->warmup] = ms - busy;
                r->kernels = (unsigned)n;
            } else if (i >= b->warmup) {
                dev_ab[i - b->warmup] = ms;
            }
        }
    }
    if (configs > 1 && st == CLNORM_OK)
        st = apply_ab(b, 0);
    return st;
}

static void time_row(bench *b, const op_spec *op, row *r)
{
    const double set_bytes = (double)op->tensors * (double)b->tensor_bytes;
    size_t k = (size_t)ceil((double)b->rotate_threshold / set_bytes);
    if (k < 1)
        k = 1;
    if (k > b->pool_sets)
        k = b->pool_sets;
    r->sets = (unsigned)k;
    r->runs = (unsigned)b->runs;
    r->warmup = (unsigned)b->warmup;
    clnorm_status st = CLNORM_OK;
    if (op->prepare)
        st = op->prepare(b, op, (unsigned)k);
    static double dev[MAX_RUNS], wall[MAX_RUNS], dev_ab[MAX_RUNS], gap[MAX_RUNS];
    static double kernel_ms[MAX_RUNS][CLNORM_MAX_OP_KERNELS], one_kernel[MAX_RUNS];
    /* other processes on the CPUs: retry the row after they calm down */
    r->foreign = -1;
    for (int attempt = 0; st == CLNORM_OK && attempt <= b->retries; attempt++) {
        cpu_sample c0, c1;
        int sampled = cpu_sample_take(&c0);
        st = time_runs(b, op, k, dev, wall, dev_ab, gap, kernel_ms, r);
        r->attempts = (unsigned)attempt + 1;
        r->foreign = sampled && cpu_sample_take(&c1) ? foreign_share(&c0, &c1) : -1;
        if (st != CLNORM_OK || r->foreign < b->max_foreign)
            break;
        if (attempt < b->retries) {
            fprintf(stderr, "clnorm-bench: other processes used %.0f%% of the CPUs during %s %s "
                            "%s; retrying\n",
                    100 * r->foreign, r->op, r->variant, r->layout);
            wait_quiet(b->max_foreign, b->max_wait);
        }
    }
    if (st != CLNORM_OK) {
        snprintf(r->error, sizeof r->error, "%s: %.200s", clnorm_status_name(st),
                 clnorm_last_error(b->ctx));
        clnorm_finish(b->ctx);
        return;
    }
    r->dev = summarize(dev, (size_t)b->runs);
    r->wall = summarize(wall, (size_t)b->runs);
    r->gap = summarize(gap, (size_t)b->runs);
    for (unsigned j = 0; j < r->kernels; j++) {
        for (int i = 0; i < b->runs; i++)
            one_kernel[i] = kernel_ms[i][j];
        r->kernel_ms[j] = summarize(one_kernel, (size_t)b->runs).median;
    }
    if (b->ab_count)
        r->ab = summarize(dev_ab, (size_t)b->runs);
    r->compulsory_bytes = (double)(op->reads + op->writes) * (double)b->tensor_bytes;
    r->gbps = r->compulsory_bytes / (r->dev.median * 1e6);
    r->frac_copy = r->gbps / b->copy_gbps;
    r->frac_copy_at_passes =
        (double)r->passes * (double)b->tensor_bytes / (r->dev.median * 1e6) / b->copy_gbps;
}

static void print_header(void)
{
    printf("%-44s %-22s %7s %9s %8s %6s %6s %7s %4s %4s %7s\n", "op", "shape", "MB", "ms", "GB/s",
           "%copy", "passes", "%copy@p", "sets", "kern", "gap ms");
}

static void print_row(const bench *b, const row *r)
{
    char label[96];
    snprintf(label, sizeof label, "%s %s %s %s", r->family, r->op, r->variant, r->layout);
    if (r->error[0]) {
        printf("%-44s %-22s %7.1f  ERROR %s\n", label, r->shape, (double)r->tensor_bytes / 1e6,
               r->error);
        return;
    }
    char passes[16];
    snprintf(passes, sizeof passes, "%u/%u", r->passes, r->reads + r->writes);
    char ab[64] = "";
    if (b->ab_count)
        snprintf(ab, sizeof ab, "  override %.3f ms = %.2fx", r->ab.median,
                 r->ab.median / r->dev.median);
    printf("%-44s %-22s %7.1f %9.3f %8.1f %5.0f%% %6s %6.0f%% %4u %4u %7.3f%s%s\n", label,
           r->shape, (double)r->tensor_bytes / 1e6, r->dev.median, r->gbps, 100.0 * r->frac_copy,
           passes, 100.0 * r->frac_copy_at_passes, r->sets, r->kernels, r->gap.median, ab,
           r->foreign >= b->max_foreign ? "  (other processes were busy)" : "");
    for (unsigned j = 0; b->show_kernels && j < r->kernels; j++)
        printf("    %-40s %9.3f ms\n", r->kernel_names[j], r->kernel_ms[j]);
    fflush(stdout);
}

/* ---- run metadata ------------------------------------------------------------------------------- */

static void read_loadavg(double out[3])
{
    out[0] = out[1] = out[2] = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf %lf %lf", &out[0], &out[1], &out[2]) != 3)
            out[0] = out[1] = out[2] = -1;
        fclose(f);
    }
}

static void git_commit(const bench *b, char *out, size_t size)
{
    const char *env = getenv("CLNORM_BENCH_COMMIT");
    snprintf(out, size, "unknown");
    if (b->commit && *b->commit) {
        snprintf(out, size, "%s", b->commit);
        return;
    }
    if (env && *env) {
        snprintf(out, size, "%s", env);
        return;
    }
    if (!CLNORM_BENCH_SOURCE_DIR[0] || strchr(CLNORM_BENCH_SOURCE_DIR, '\''))
        return;
    char cmd[4200];
    snprintf(cmd, sizeof cmd,
             "git -C '%s' describe --always --dirty --abbrev=12 --exclude='*' 2>/dev/null",
             CLNORM_BENCH_SOURCE_DIR);
    FILE *p = popen(cmd, "r");
    if (!p)
        return;
    char line[128];
    if (fgets(line, sizeof line, p)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0])
            snprintf(out, size, "%s", line);
    }
    pclose(p);
}


static void write_json(bench *b)
{
    FILE *f = fopen(b->json_path, "w");
    if (!f)
        die("cannot write %s: %s", b->json_path, strerror(errno));
    char commit[128];
    git_commit(b, commit, sizeof commit);
    const clnorm_device_info *d = &b->info;
    fprintf(f, "{\n  \"schema\": \"clnorm-bench/1\",\n  \"tool\": \"clnorm\",\n");
    fprintf(f, "  \"version\": ");
    json_string(f, CLNORM_VERSION_STRING);
    fprintf(f, ",\n  \"commit\": ");
    json_string(f, commit);
    fprintf(f, ",\n  \"date\": ");
    json_string(f, b->date);
    fprintf(f, ",\n  \"device\": {\"name\": ");
    json_string(f, d->name);
    fprintf(f, ", \"vendor\": ");
    json_string(f, d->vendor);
    fprintf(f, ", \"driver\": ");
    json_string(f, d->driver_version);
    fprintf(f, ", \"platform\": ");
    json_string(f, d->platform_name);
    fprintf(f, ", \"platform_version\": ");
    json_string(f, d->platform_version);
    fprintf(f, ", \"type\": \"%s\", \"compute_units\": %u, \"global_mem_bytes\": %llu, "
               "\"cache_bytes\": %llu},\n",
            b->is_gpu ? "GPU" : "CPU", d->compute_units, (unsigned long long)d->global_mem_bytes,
            (unsigned long long)b->cache_bytes);
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    fprintf(f, "  \"host_cpus\": %ld,\n  \"params\": {", online);
    for (size_t i = 0, n = 0; clnorm_param_name(i); i++) {
        long v = -1;
        if (clnorm_get_param(b->ctx, clnorm_param_name(i), &v) == CLNORM_OK)
            fprintf(f, "%s\"%s\": %ld", n++ ? ", " : "", clnorm_param_name(i), v);
    }
    fprintf(f, "},\n  \"env\": {\"CLNORM_PARAMS\": ");
    json_string(f, getenv("CLNORM_PARAMS") ? getenv("CLNORM_PARAMS") : "");
    fprintf(f, ", \"POCL_CACHE_DIR\": ");
    json_string(f, getenv("POCL_CACHE_DIR") ? getenv("POCL_CACHE_DIR") : "");
    fprintf(f, "},\n  \"loadavg_start\": [%.2f, %.2f, %.2f], \"loadavg_end\": [%.2f, %.2f, %.2f],\n",
            b->load_start[0], b->load_start[1], b->load_start[2], b->load_end[0], b->load_end[1],
            b->load_end[2]);
    fprintf(f, "  \"method\": {\"runs\": %d, \"warmup\": %d, \"statistic\": \"median\", "
               "\"timer\": \"OpenCL profiling: START of the first kernel to END of the last\", "
               "\"rotate_threshold_bytes\": %zu, \"quick\": %s, \"max_foreign_cpu_share\": %.3f, "
               "\"retries\": %d},\n",
            b->runs, b->warmup, b->rotate_threshold, b->quick ? "true" : "false", b->max_foreign,
            b->retries);
    fprintf(f, "  \"copy\": {\"GBps\": ");
    json_number(f, b->copy_gbps);
    fprintf(f, ", \"GBps_item_per_float4\": ");
    json_number(f, b->copy_gbps_item);
    fprintf(f, ", \"GBps_chunk_per_item\": ");
    json_number(f, b->copy_gbps_chunk);
    fprintf(f, ", \"buffer_bytes\": %zu, \"foreign_cpu_share\": %.3f},\n", b->copy_bytes,
            b->copy_foreign);
    fprintf(f, "  \"latency\": ");
    if (!b->latency)
        fprintf(f, "null,\n");
    else {
        fprintf(f, "{\"cold_ms\": ");
        json_number(f, b->cold_ms);
        fprintf(f, ", \"cold_context_ms\": ");
        json_number(f, b->cold_context_ms);
        fprintf(f, ", \"cold_first_op_ms\": ");
        json_number(f, b->cold_first_op_ms);
        fprintf(f, ", \"cold_builds\": %lu, \"cold_disk_hits\": %lu, \"warm_ms\": ",
                b->cold_builds, b->cold_disk_hits);
        json_number(f, b->warm_ms);
        fprintf(f, ", \"warm_context_ms\": ");
        json_number(f, b->warm_context_ms);
        fprintf(f, ", \"warm_first_op_ms\": ");
        json_number(f, b->warm_first_op_ms);
        fprintf(f, ", \"warm_builds\": %lu, \"warm_disk_hits\": %lu, \"error\": ",
                b->warm_builds, b->warm_disk_hits);
        json_string(f, b->latency_error);
        fprintf(f, ", \"shape\": \"batchnorm forward_training N2 C64 H28 W28 NCHW\"},\n");
    }
    fprintf(f, "  \"rows\": [");
    for (size_t i = 0; i < b->num_rows; i++) {
        const row *r = &b->rows[i];
        fprintf(f, "%s\n    {\"family\": \"%s\", \"op\": \"%s\", \"variant\": \"%s\", "
                   "\"layout\": \"%s\", \"shape\": \"%s\", \"tag\": \"%s\", "
                   "\"dims\": [",
                i ? "," : "", r->family, r->op, r->variant, r->layout, r->shape, r->tag);
        for (unsigned k = 0; k < r->ndims; k++)
            fprintf(f, "%s%zu", k ? ", " : "", r->dims[k]);
        fprintf(f, "]");
        if (strcmp(r->family, "batchnorm") && r->ndims == 4)
            fprintf(f, ", \"groups\": %zu", r->groups);
        fprintf(f, ", \"tensor_bytes\": %zu, \"sets\": %u, "
                   "\"runs\": %u, \"reads\": %u, \"writes\": %u, \"passes\": %u, "
                   "\"attempts\": %u, \"foreign_cpu_share\": %.3f",
                r->tensor_bytes, r->sets, r->runs, r->reads, r->writes, r->passes, r->attempts,
                r->foreign);
        if (r->error[0]) {
            fprintf(f, ", \"error\": ");
            json_string(f, r->error);
        } else {
            const struct {
                const char *name;
                double v;
            } nums[] = {{"ms", r->dev.median},       {"ms_min", r->dev.min},
                        {"ms_max", r->dev.max},      {"ms_p10", r->dev.p10},
                        {"ms_p90", r->dev.p90},      {"wall_ms", r->wall.median},
                        {"compulsory_bytes", r->compulsory_bytes}, {"GBps", r->gbps},
                        {"frac_copy", r->frac_copy}, {"frac_copy_at_passes", r->frac_copy_at_passes},
                        {"kernels", (double)r->kernels}, {"gap_ms", r->gap.median}};
            for (size_t j = 0; j < ARRAY_LEN(nums); j++) {
                fprintf(f, ", \"%s\": ", nums[j].name);
                json_number(f, nums[j].v);
            }
            fprintf(f, ", \"kernel_ms\": [");
            for (unsigned j = 0; j < r->kernels; j++) {
                fprintf(f, "%s[", j ? ", " : "");
                json_string(f, r->kernel_names[j]);
                fprintf(f, ", ");
                json_number(f, r->kernel_ms[j]);
                fprintf(f, "]");
            }
            fprintf(f, "]");
            if (b->ab_count) {
                fprintf(f, ", \"ab_params\": ");
                json_string(f, b->ab);
                fprintf(f, ", \"ab_ms\": ");
                json_number(f, r->ab.median);
                fprintf(f, ", \"ab_ratio\": ");
                json_number(f, r->ab.median / r->dev.median);
            }
        }
        fputc('}', f);
    }
    fprintf(f, "\n  ]\n}\n");
    if (fclose(f) != 0)
        die("writing %s failed", b->json_path);
}

/* ---- main --------------------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fputs("usage: clnorm-bench [options]\n"
          "  --device SEL      OpenCL device (\"P:D\", gpu, cpu, or part of a name); default as the\n"
          "                    library (CLNORM_DEVICE, else the first GPU, else the CPU)\n"
          "  --ops FILTER      comma-separated substrings of \"family op variant layout\", e.g.\n"
          "                    \"forward_training plain,backward\", \"NHWC\" or \"layernorm,rmsnorm\"\n"
          "                    (families: batchnorm layernorm rmsnorm groupnorm instancenorm;\n"
          "                    layer and RMS norm have layout \"-\")\n"
          "  --shapes FILTER   comma-separated substrings of the shape, e.g. \"C64 ,C2048\",\n"
          "                    \"rows1024 \" or \"G32\"\n"
          "  --shape-set gpu|cpu  shape set (default: from the device type)\n"
          "  --quick           a fast subset for smoke runs: 2 batch-norm shapes with the plain\n"
          "                    ops, the first layer/RMS shape, the group/instance-norm tensor\n"
          "  --runs N          timed runs per row (default 25; at least 20 for a real run)\n"
          "  --warmup N        untimed runs before them (default 3)\n"
          "  --json PATH       write every row and the run's metadata as JSON\n"
          "  --commit STR      commit to record (default: git describe of the source tree,\n"
          "                    or CLNORM_BENCH_COMMIT)\n"
          "  --no-latency      skip the first-call latency measurement\n"
          "  --kernels         under each row, its kernels' median durations\n"
          "  --max-foreign F   retry a row when other processes used more than this share of\n"
          "                    the CPUs during it (default 0.05; 1 disables)\n"
          "  --retries N       retries per row (default 5)\n"
          "  --max-wait S      before a retry, wait at most S seconds for the other processes\n"
          "                    to calm down (default 120)\n"
          "  --ab PARAMS       A/B: every run alternates the built-in device parameters with\n"
          "                    PARAMS (\"name=value,...\", as CLNORM_PARAMS) in this process,\n"
          "                    and reports the override's median time and its ratio\n"
          "  --copy-mib N      size of each copy buffer (default: 4x the device's cache,\n"
          "                    64 to 256 MiB)\n"
          "  --list            print the rows that would run, and exit\n",
          f);
}

static int parse_int(const char *s, const char *name)
{
    char *end = NULL;
    long v = strtol(s ? s : "", &end, 10);
    if (!s || end == s || *end || v < 0 || v > MAX_RUNS)
        die("%s needs an integer in [0, %d]", name, MAX_RUNS);
    return (int)v;
}

int main(int argc, char **argv)
{
    bench *b = calloc(1, sizeof *b);
    if (!b)
        die("out of host memory");
    b->runs = 25;
    b->warmup = 3;
    b->latency = 1;
    b->retries = 5;
    b->max_wait = 120;
    b->max_foreign = 0.05;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
#define TAKE() (next ? (i++, next) : (die("%s needs a value", a), (const char *)NULL))
        if (!strcmp(a, "--device"))
            b->device = TAKE();
        else if (!strcmp(a, "--json"))
            b->json_path = TAKE();
        else if (!strcmp(a, "--ops"))
            b->ops_filter = TAKE();
        else if (!strcmp(a, "--shapes"))
            b->shapes_filter = TAKE();
        else if (!strcmp(a, "--shape-set"))
            b->shape_set = TAKE();
        else if (!strcmp(a, "--commit"))
            b->commit = TAKE();
        else if (!strcmp(a, "--runs"))
            b->runs = parse_int(TAKE(), "--runs");
        else if (!strcmp(a, "--warmup"))
            b->warmup = parse_int(TAKE(), "--warmup");
        else if (!strcmp(a, "--ab"))
            b->ab = TAKE();
        else if (!strcmp(a, "--copy-mib"))
            b->copy_mib = parse_int(TAKE(), "--copy-mib");
        else if (!strcmp(a, "--retries"))
            b->retries = parse_int(TAKE(), "--retries");
        else if (!strcmp(a, "--max-wait"))
            b->max_wait = parse_int(TAKE(), "--max-wait");
        else if (!strcmp(a, "--max-foreign"))
            b->max_foreign = atof(TAKE());
        else if (!strcmp(a, "--quick"))
            b->quick = 1;
        else if (!strcmp(a, "--kernels"))
            b->show_kernels = 1;
        else if (!strcmp(a, "--no-latency"))
            b->latency = 0;
        else if (!strcmp(a, "--list"))
            b->list = 1;
        else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            die("unknown option %s", a);
        }
#undef TAKE
    }
    if (b->runs < 1)
        die("--runs must be at least 1");
    if (b->shape_set && strcmp(b->shape_set, "gpu") && strcmp(b->shape_set, "cpu"))
        die("--shape-set is gpu or cpu");
    if (b->runs < 20 && !b->quick)
        fprintf(stderr, "clnorm-bench: note: %d runs per row; the reported protocol is >= 20\n",
                b->runs);

    time_t t = time(NULL);
    strftime(b->date, sizeof b->date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
    read_loadavg(b->load_start);
    b->start_ms = now_ms();

    /* first-call latency before anything else touches the device, so the cold number includes
     * what a fresh process pays */
    if (b->latency && !b->list) {
        wait_quiet(b->max_foreign, b->max_wait < 60 ? b->max_wait : 60);
        measure_latency(b);
    }

    clnorm_settings settings;
    clnorm_default_settings(&settings);
    settings.device = b->device;
    settings.enable_profiling = 1;
    char message[4096];
    if (clnorm_context_create(&b->ctx, &settings, message, sizeof message) != CLNORM_OK)
        die("%s", message);
    b->cl_ctx = clnorm_context_cl_context(b->ctx);
    b->cl_dev = clnorm_context_device(b->ctx);
    b->queue = clnorm_context_queue(b->ctx);
    if (clnorm_context_device_info(b->ctx, &b->info) != CLNORM_OK)
        die("%s", clnorm_last_error(b->ctx));
    clGetDeviceInfo(b->cl_dev, CL_DEVICE_GLOBAL_MEM_CACHE_SIZE, sizeof b->cache_bytes,
                    &b->cache_bytes, NULL);
    b->is_gpu = (b->info.type & CL_DEVICE_TYPE_CPU) == 0;
    int gpu_shapes = b->shape_set ? !strcmp(b->shape_set, "gpu") : b->is_gpu;
    b->rotate_threshold = 256 * MIB;
    if (4 * (size_t)b->cache_bytes > b->rotate_threshold)
        b->rotate_threshold = 4 * (size_t)b->cache_bytes;
    clnorm_bn_default_config(&b->config);
    if (b->ab && *b->ab) {
        char copy[256];
        snprintf(copy, sizeof copy, "%s", b->ab);
        for (char *save = NULL, *item = strtok_r(copy, ",", &save); item;
             item = strtok_r(NULL, ",", &save)) {
            char *eq = strchr(item, '=');
            if (!eq || b->ab_count == 5)
                die("--ab takes up to five name=value items");
            *eq = '\0';
            int i = b->ab_count++;
            snprintf(b->ab_name[i], sizeof b->ab_name[i], "%s", item);
            b->ab_value[i] = atol(eq + 1);
            if (clnorm_get_param(b->ctx, item, &b->ab_base[i]) != CLNORM_OK ||
                clnorm_set_param(b->ctx, item, b->ab_value[i]) != CLNORM_OK ||
                clnorm_set_param(b->ctx, item, b->ab_base[i]) != CLNORM_OK)
                die("--ab: %s", clnorm_last_error(b->ctx));
        }
    }

    shape_case shapes[MAX_SHAPES];
    size_t num_shapes = build_shapes(gpu_shapes, b->quick, shapes);

    if (b->list) {
        for (size_t s = 0; s < num_shapes; s++) {
            char desc[64];
            describe_shape(&shapes[s], desc, sizeof desc);
            if (!filter_matches(b->shapes_filter, desc))
                continue;
            for (int layout = 0; layout < 2; layout++)
                for (size_t o = 0; o < ARRAY_LEN(ops); o++) {
                    char label[96];
                    if (selected(b, &ops[o], &shapes[s], layout, label, sizeof label))
                        printf("%s %s (%s)\n", label, desc, shapes[s].tag);
                }
        }
        clnorm_context_release(b->ctx);
        free(b);
        return 0;
    }

    printf("device: %s | %s | driver %s | %u compute units | cache %llu KiB\n", b->info.name,
           b->info.platform_name, b->info.driver_version, b->info.compute_units,
           (unsigned long long)(b->cache_bytes / 1024));
    if (b->latency) {
        if (b->latency_error[0])
            printf("first-call latency: failed: %s\n", b->latency_error);
        else
            printf("first-call latency, context creation -> first batch-norm result read back "
                   "(training forward N2 C64 H28 W28):\n"
                   "  cold (empty cache folder) %9.1f ms  (context %.1f + first op %.1f; %lu "
                   "program builds)\n"
                   "  warm (cache filled)       %9.1f ms  (context %.1f + first op %.1f; median of "
                   "5, %lu disk loads)\n",
                   b->cold_ms, b->cold_context_ms, b->cold_first_op_ms, b->cold_builds, b->warm_ms,
                   b->warm_context_ms, b->warm_first_op_ms, b->warm_disk_hits);
    }
    if (clnorm_warm_up(b->ctx) != CLNORM_OK)
        die("warm-up: %s", clnorm_last_error(b->ctx));
    measure_copy(b);
    printf("copy bandwidth (float4 copy, %zu MiB, read + write): %.1f GB/s", b->copy_bytes / MIB,
           b->copy_gbps);
    if (b->copy_gbps_chunk > 0)
        printf(" (one float4 per work-item %.1f, contiguous chunk per work-item %.1f)",
               b->copy_gbps_item, b->copy_gbps_chunk);
    if (b->copy_foreign >= b->max_foreign)
        printf(" (other processes used %.0f%% of the CPUs: not a clean measurement)",
               100 * b->copy_foreign);
    printf("\nmedian of %d runs after %d warm-up runs; buffers rotate below %zu MiB per set; "
           "passes = implementation/compulsory tensor passes; %%copy@p counts the "
           "implementation's passes; kern = kernels launched, gap ms = the op's time less its "
           "kernels' own (the launches' gaps)\n\n",
           b->runs, b->warmup, b->rotate_threshold / MIB);
    print_header();

    for (size_t s = 0; s < num_shapes; s++) {
        const shape_case *sc = &shapes[s];
        char desc[64];
        describe_shape(sc, desc, sizeof desc);
        if (!filter_matches(b->shapes_filter, desc))
            continue;
        /* anything to run on this shape? */
        int any = 0;
        for (size_t o = 0; o < ARRAY_LEN(ops); o++)
            for (int layout = 0; layout < 2; layout++) {
                char label[96];
                any |= selected(b, &ops[o], sc, layout, label, sizeof label);
            }
        if (!any)
            continue;
        char err_msg[256];
        int ready = setup_shape(b, sc, err_msg, sizeof err_msg);
        for (int layout = 0; layout < 2; layout++) {
            b->shape.layout = layout ? CLNORM_CHANNELS_LAST : CLNORM_CHANNELS_FIRST;
            for (size_t o = 0; o < ARRAY_LEN(ops); o++) {
                const op_spec *op = &ops[o];
                char label[96];
                if (!selected(b, op, sc, layout, label, sizeof label))
                    continue;
                row *r = new_row(b);
                snprintf(r->family, sizeof r->family, "%s", op->family);
                snprintf(r->op, sizeof r->op, "%s", op->op);
                snprintf(r->variant, sizeof r->variant, "%s", op->variant);
                snprintf(r->layout, sizeof r->layout, "%s", layout_name(op, layout));
                snprintf(r->shape, sizeof r->shape, "%s", desc);
                snprintf(r->tag, sizeof r->tag, "%s", sc->tag);
                memcpy(r->dims, sc->dims, sizeof r->dims);
                r->ndims = sc->ndims;
                r->groups = sc->groups;
                r->tensor_bytes = shape_elements(sc) * sizeof(float);
                r->passes = implementation_passes(b, op, sc, layout);
                r->reads = op->reads;
                r->writes = op->writes;
                if (!ready)
                    snprintf(r->error, sizeof r->error, "%s", err_msg);
                else
                    time_row(b, op, r);
                print_row(b, r);
            }
        }
        release_shape(b);
    }
    read_loadavg(b->load_end);
    printf("\n%zu rows in %.0f s\n", b->num_rows, (now_ms() - b->start_ms) / 1e3);
    if (b->json_path) {
        write_json(b);
        printf("\nwrote %s\n", b->json_path);
    }
    int failed = 0;
    size_t busy = 0;
    for (size_t i = 0; i < b->num_rows; i++) {
        failed |= b->rows[i].error[0] != 0;
        busy += b->rows[i].foreign >= b->max_foreign;
    }
    if (busy || b->copy_foreign >= b->max_foreign)
        printf("warning: other processes were busy during %zu rows%s despite retries; rerun on a "
               "quiet machine\n",
               busy, b->copy_foreign >= b->max_foreign ? " and the copy measurement" : "");
    clnorm_context_release(b->ctx);
    free(b->rows);
    free(b);
    return failed ? 2 : 0;
}

/* clnorm-train: trains a multilayer perceptron on Fashion-MNIST with CLBlast and clnorm, and
 * checks the claims made for batch normalization against measured numbers.
 *
 *   clnorm-train            the default comparison (a few minutes on a 2-core CPU with PoCL)
 *   clnorm-train --sweep    normalization x batch size x learning rate
 *   clnorm-train --help     every option
 */
#include <clblast_c.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <clnorm.h>

#include "idx.h"
#include "kernels.h"
#include "mlp.h"
#include "train.h"

#define MAX_LIST 8
#define EVAL_BATCH 1000         /* test-set evaluation chunks (evaluation mode) */
#define SMALL_INFERENCE_BATCH 8 /* the "forgot eval mode" check: small batches in training mode */
#define EXPORT_BATCH 256        /* inference timing, folded vs unfolded */
#define EXPORT_PASSES 5         /* passes over the test set for each, alternating */
#define TARGET_HIGH_LR_ACC 0.85 /* the targets, reported as met or not */
#define TARGET_GAP 0.10

typedef enum run_kind { RUN_DEFAULT, RUN_SWEEP, RUN_CUSTOM } run_kind;

typedef struct options {
    const char *data_dir, *out_dir, *device;
    run_kind kind;
    norm_kind norms[NORM_KIND_COUNT];
    size_t num_norms;
    double lrs[MAX_LIST];
    size_t num_lrs;
    size_t batches[MAX_LIST];
    size_t num_batches;
    size_t epochs, hidden, depth, groups, train_limit, test_limit;
    uint64_t seed;
    double momentum, weight_decay;
    int cosine, export_check, quiet;
} options;

typedef struct epoch_row {
    double train_loss, train_acc, test_loss, test_acc, seconds;
} epoch_row;

typedef struct run_result {
    norm_kind norm;
    size_t batch;
    double lr;
    int available, failed;
    size_t epochs_done;
    epoch_row rows[256];
    int diverged;
    size_t bad_epoch;
    long bad_step;
    double seconds;
    /* evaluation mode vs training mode on small batches */
    int have_mode_check;
    double acc_eval, acc_train_large, acc_train_small;
    /* inference export */
    int have_export;
    double max_delta, ms_unfolded, ms_folded;
    size_t agree, compared;
} run_result;

/* ---- output: stdout and summary.txt ------------------------------------------------------------ */

static FILE *summary_file;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
    if (summary_file) {
        va_start(ap, fmt);
        vfprintf(summary_file, fmt, ap);
        va_end(ap);
    }
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: clnorm-train [options]\n"
            "Trains an MLP (784 -> hidden x depth -> 10) on Fashion-MNIST on an OpenCL device:\n"
            "linear layers with CLBlast, normalization with clnorm, SGD with momentum.\n"
            "\n"
            "Without --sweep, --norm or --lr: the default comparison, the same network with and\n"
            "without batch norm at a moderate (0.1) and a high (1.0) learning rate, then a summary\n"
            "of which of batch norm's claimed benefits held, the evaluation-mode check and the\n"
            "inference export (batch norm folded into the linear layers).\n"
            "\n"
            "  --data DIR        Fashion-MNIST folder (default " IDX_DEFAULT_DIR ",\n"
            "                    from the Debian package " IDX_PACKAGE ")\n"
            "  --out DIR         CSV files, summary and plots (default ./clnorm-train-out)\n"
            "  --device SEL      OpenCL device: P:D, gpu, cpu, or part of a name (default:\n"
            "                    CLNORM_DEVICE, else the first GPU, else the CPU)\n"
            "  --sweep           normalization x batch {4,16,128} x lr {0.01,0.1,1.0}, 1 epoch each\n"
            "                    unless --epochs (--norm, --batch and --lr narrow the grid)\n"
            "  --norm LIST       none, batch, layer, group, rms (comma-separated)\n"
            "  --groups G        group norm's groups per hidden layer (default 32 for the\n"
            "                    default width: the largest divisor of the width up to 32 that\n"
            "                    leaves at least 8 features per group; must divide the width)\n"
            "  --lr LIST         learning rates (comma-separated)\n"
            "  --batch LIST      batch sizes (comma-separated, default 128)\n"
            "  --epochs N        epochs per training (default 3; sweep 1)\n"
            "  --hidden N        hidden width (default 256)\n"
            "  --depth N         hidden layers (default 3)\n"
            "  --momentum M      SGD momentum (default 0.9)\n"
            "  --weight-decay W  L2 weight decay on the weights (default 0)\n"
            "  --cosine          cosine learning-rate schedule to 0 over the training\n"
            "  --seed N          initialization and shuffling seed (default 1)\n"
            "  --train-limit N   use the first N training examples (default all 60000)\n"
            "  --test-limit N    use the first N test examples (default all 10000)\n"
            "  --no-export       skip the evaluation-mode check and the inference export\n"
            "  --quiet           no progress lines\n"
            "  --help            this text\n"
            "\n"
            "Same command, same device: same numbers. Plots: python3 examples/train/plot.py OUTDIR\n");
}

static int parse_size(const char *s, size_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || !end || *end || s[0] == '-' || s[0] == '\0')
        return -1;
    *out = (size_t)v;
    return 0;
}

static int parse_double(const char *s, double *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || !end || *end || s[0] == '\0' || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

/* Splits a comma-separated list into a copy; calls item() on each. */
static int parse_list(const char *s, int (*item)(const char *, void *, size_t), void *array,
                      size_t *count, size_t max)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%s", s);
    *count = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        if (*count == max || item(tok, array, *count) != 0)
            return -1;
        (*count)++;
    }
    return *count > 0 ? 0 : -1;
}

static int item_lr(const char *s, void *a, size_t i)
{
    double v;
    if (parse_double(s, &v) != 0 || !(v > 0))
        return -1;
    ((double *)a)[i] = v;
    return 0;
}

static int item_batch(const char *s, void *a, size_t i)
{
    size_t v;
    if (parse_size(s, &v) != 0 || v < 2 || v > 65536)
        return -1;
    ((size_t *)a)[i] = v;
    return 0;
}

static int item_norm(const char *s, void *a, size_t i)
{
    return norm_from_name(s, &((norm_kind *)a)[i]);
}

/* 0: run; 1: --help printed; 2: bad usage (message printed). */
static int parse_options(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->data_dir = IDX_DEFAULT_DIR;
    o->out_dir = "clnorm-train-out";
    o->hidden = 256;
    o->depth = 3;
    o->seed = 1;
    o->momentum = 0.9;
    o->export_check = 1;
    int sweep = 0, have_epochs = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED_VALUE()                                                                               \
    do {                                                                                           \
        if (!v) {                                                                                  \
            fprintf(stderr, "clnorm-train: %s needs a value (see --help)\n", a);                   \
            return 2;                                                                              \
        }                                                                                          \
        i++;                                                                                       \
    } while (0)
#define BAD_VALUE()                                                                                \
    do {                                                                                           \
        fprintf(stderr, "clnorm-train: bad value for %s: '%s' (see --help)\n", a, v);              \
        return 2;                                                                                  \
    } while (0)
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 1;
        } else if (!strcmp(a, "--sweep")) {
            sweep = 1;
        } else if (!strcmp(a, "--cosine")) {
            o->cosine = 1;
        } else if (!strcmp(a, "--no-export")) {
            o->export_check = 0;
        } else if (!strcmp(a, "--quiet")) {
            o->quiet = 1;
        } else if (!strcmp(a, "--data")) {
            NEED_VALUE();
            o->data_dir = v;
        } else if (!strcmp(a, "--out")) {
            NEED_VALUE();
            o->out_dir = v;
        } else if (!strcmp(a, "--device")) {
            NEED_VALUE();
            o->device = v;
        } else if (!strcmp(a, "--norm")) {
            NEED_VALUE();
            if (parse_list(v, item_norm, o->norms, &o->num_norms, NORM_KIND_COUNT) != 0) {
                fprintf(stderr,
                        "clnorm-train: bad value for --norm: '%s' (none, batch, layer, group, "
                        "rms, comma-separated)\n",
                        v);
                return 2;
            }
        } else if (!strcmp(a, "--lr")) {
            NEED_VALUE();
            if (parse_list(v, item_lr, o->lrs, &o->num_lrs, MAX_LIST) != 0)
                BAD_VALUE();
        } else if (!strcmp(a, "--batch")) {
            NEED_VALUE();
            if (parse_list(v, item_batch, o->batches, &o->num_batches, MAX_LIST) != 0)
                BAD_VALUE();
        } else if (!strcmp(a, "--epochs")) {
            NEED_VALUE();
            if (parse_size(v, &o->epochs) != 0 || o->epochs == 0 || o->epochs > 256)
                BAD_VALUE();
            have_epochs = 1;
        } else if (!strcmp(a, "--hidden")) {
            NEED_VALUE();
            if (parse_size(v, &o->hidden) != 0 || o->hidden < 2 || o->hidden > 16384)
                BAD_VALUE();
        } else if (!strcmp(a, "--groups")) {
            NEED_VALUE();
            if (parse_size(v, &o->groups) != 0 || o->groups == 0 || o->groups > 16384)
                BAD_VALUE();
        } else if (!strcmp(a, "--depth")) {
            NEED_VALUE();
            if (parse_size(v, &o->depth) != 0 || o->depth > 64)
                BAD_VALUE();
        } else if (!strcmp(a, "--seed")) {
            NEED_VALUE();
            size_t s;
            if (parse_size(v, &s) != 0)
                BAD_VALUE();
            o->seed = (uint64_t)s;
        } else if (!strcmp(a, "--momentum")) {
            NEED_VALUE();
            if (parse_double(v, &o->momentum) != 0 || o->momentum < 0 || o->momentum >= 1)
                BAD_VALUE();
        } else if (!strcmp(a, "--weight-decay")) {
            NEED_VALUE();
            if (parse_double(v, &o->weight_decay) != 0 || o->weight_decay < 0)
                BAD_VALUE();
        } else if (!strcmp(a, "--train-limit")) {
            NEED_VALUE();
            if (parse_size(v, &o->train_limit) != 0 || o->train_limit == 1)
                BAD_VALUE();
        } else if (!strcmp(a, "--test-limit")) {
            NEED_VALUE();
            if (parse_size(v, &o->test_limit) != 0 || o->test_limit == 1)
                BAD_VALUE();
        } else {
            fprintf(stderr, "clnorm-train: unknown option '%s' (see --help)\n", a);
            return 2;
        }
#undef NEED_VALUE
#undef BAD_VALUE
    }
    if (sweep) {
        o->kind = RUN_SWEEP;
        if (!o->num_norms)
            for (int k = 0; k < NORM_KIND_COUNT; k++)
                o->norms[o->num_norms++] = (norm_kind)k;
        if (!o->num_batches) {
            const size_t b[] = {4, 16, 128};
            memcpy(o->batches, b, sizeof b);
            o->num_batches = 3;
        }
        if (!o->num_lrs) {
            const double l[] = {0.01, 0.1, 1.0};
            memcpy(o->lrs, l, sizeof l);
            o->num_lrs = 3;
        }
        if (!have_epochs)
            o->epochs = 1;
    } else if (o->num_norms || o->num_lrs) {
        o->kind = RUN_CUSTOM;
        if (!o->num_norms) {
            o->norms[0] = NORM_BATCH;
            o->num_norms = 1;
        }
        if (!o->num_lrs) {
            o->lrs[0] = 0.1;
            o->num_lrs = 1;
        }
        for (size_t i = 0; i < o->num_norms; i++)
            if (!norm_available(o->norms[i])) {
                fprintf(stderr,
                        "clnorm-train: normalization '%s' is not available in this build\n",
                        norm_name(o->norms[i]));
                return 2;
            }
    } else {
        o->kind = RUN_DEFAULT;
        o->norms[0] = NORM_NONE;
        o->norms[1] = NORM_BATCH;
        o->num_norms = 2;
        o->lrs[0] = 0.1; /* moderate */
        o->lrs[1] = 1.0; /* high */
        o->num_lrs = 2;
    }
    if (!o->num_batches) {
        o->batches[0] = 128;
        o->num_batches = 1;
    }
    if (!o->epochs)
        o->epochs = 3;
    int uses_groups = 0;
    for (size_t i = 0; i < o->num_norms; i++)
        uses_groups |= o->norms[i] == NORM_GROUP;
    if (!o->groups)
        o->groups = default_groups(o->hidden);
    else if (uses_groups && o->hidden % o->groups != 0) {
        fprintf(stderr,
                "clnorm-train: --groups %zu does not divide the hidden width %zu (group norm "
                "splits each hidden layer's features into equal groups)\n",
                o->groups, o->hidden);
        return 2;
    }
    return 0;
}

/* ---- one training ------------------------------------------------------------------------------ */

typedef struct outputs {
    FILE *epochs, *steps, *runs;
} outputs;

static int mkdir_p(const char *path)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

static FILE *open_out(const char *dir, const char *name, const char *header)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "clnorm-train: cannot write %s: %s\n", path, strerror(errno));
        return NULL;
    }
    if (header)
        fprintf(f, "%s\n", header);
    return f;
}

static void print_epoch_header(void)
{
    say("  epoch  train loss  train acc  test loss  test acc  seconds\n");
}

/* %*.4f, but "nan" / "inf" for values that are not finite (no "-nan") */
static const char *fmt_loss(char *buf, size_t size, double v)
{
    if (isnan(v))
        snprintf(buf, size, "nan");
    else if (isinf(v))
        snprintf(buf, size, "%sinf", v < 0 ? "-" : "");
    else
        snprintf(buf, size, "%.4f", v);
    return buf;
}

static void print_epoch(size_t epoch, const epoch_row *r)
{
    char a[32], b[32];
    say("  %5zu  %10s  %8.2f%%  %9s  %7.2f%%  %7.1f\n", epoch,
        fmt_loss(a, sizeof a, r->train_loss), 100 * r->train_acc,
        fmt_loss(b, sizeof b, r->test_loss), 100 * r->test_acc, r->seconds);
}

static void format_lr(char *buf, size_t size, double lr)
{
    snprintf(buf, size, "%g", lr);
}

/* The evaluation-mode check and the inference export on a trained batch-norm network. */
static int mode_and_export_checks(train_env *env, mlp *net, run_result *r, int export_check)
{
    double loss;
    /* the seed's "common bug": the model left in training mode, fed small inference batches.
     * Training-mode forwards update the running statistics, so they are set aside and restored. */
    if (env_evaluate(env, net, EVAL_BATCH, CLNORM_EVALUATION, &loss, &r->acc_eval) != 0 ||
        mlp_stats_backup(net) != 0 || mlp_set_mode(net, CLNORM_TRAINING) != 0 ||
        env_evaluate(env, net, EVAL_BATCH, CLNORM_TRAINING, &loss, &r->acc_train_large) != 0 ||
        env_evaluate(env, net, SMALL_INFERENCE_BATCH, CLNORM_TRAINING, &loss,
                     &r->acc_train_small) != 0 ||
        mlp_stats_restore(net) != 0 || mlp_set_mode(net, CLNORM_EVALUATION) != 0)
        return -1;
    r->have_mode_check = 1;
    say("  evaluation mode (running statistics), batches of %d:    test accuracy %6.2f%%\n",
        EVAL_BATCH, 100 * r->acc_eval);
    say("  left in training mode (batch statistics), batches of %d: test accuracy %6.2f%%\n",
        EVAL_BATCH, 100 * r->acc_train_large);
    say("  left in training mode (batch statistics), batches of %d:    test accuracy %6.2f%%\n",
        SMALL_INFERENCE_BATCH, 100 * r->acc_train_small);
    if (!export_check)
        return 0;

    /* inference export: fold every batch norm into the linear layer before it */
    mlp *folded = NULL;
    if (mlp_fold(net, &folded) != 0) {
        snprintf(env->err, sizeof env->err, "%s", mlp_error(net));
        return -1;
    }
    const size_t count = env->test.count, classes = mlp_get_shape(net)->classes;
    float *a = malloc(count * classes * sizeof(float));
    float *b = malloc(count * classes * sizeof(float));
    int rc = -1;
    if (!a || !b) {
        snprintf(env->err, sizeof env->err, "no host memory for the logits");
        goto done;
    }
    if (env_test_logits(env, net, EVAL_BATCH, a) != 0 ||
        env_test_logits(env, folded, EVAL_BATCH, b) != 0)
        goto done;
    r->max_delta = 0.0;
    r->agree = 0;
    r->compared = count;
    for (size_t i = 0; i < count; i++) {
        size_t pa = 0, pb = 0;
        for (size_t k = 0; k < classes; k++) {
            double d = fabs((double)a[i * classes + k] - (double)b[i * classes + k]);
            if (!(d <= r->max_delta))
                r->max_delta = d; /* NaN shows as NaN */
            if (a[i * classes + k] > a[i * classes + pa])
                pa = k;
            if (b[i * classes + k] > b[i * classes + pb])
                pb = k;
        }
        r->agree += pa == pb;
    }
    /* alternating passes, best of each: both see the same machine load */
    r->ms_unfolded = r->ms_folded = INFINITY;
    for (int pass = 0; pass < EXPORT_PASSES; pass++) {
        double unfolded, folded_ms;
        if (env_time_inference(env, net, EXPORT_BATCH, 1, &unfolded) != 0 ||
            env_time_inference(env, folded, EXPORT_BATCH, 1, &folded_ms) != 0)
            goto done;
        r->ms_unfolded = fmin(r->ms_unfolded, unfolded);
        r->ms_folded = fmin(r->ms_folded, folded_ms);
    }
    r->have_export = 1;
    say("  inference export (clnorm_batchnorm_fold_linear): max |delta logit| = %.3g over %zu "
        "test examples,\n  same prediction for %zu of %zu; time per batch of %d: %.2f ms with "
        "batch norm layers, %.2f ms folded (best of %d alternating passes)\n",
        r->max_delta, count, r->agree, count, EXPORT_BATCH, r->ms_unfolded, r->ms_folded,
        EXPORT_PASSES);
    rc = 0;
done:
    free(a);
    free(b);
    mlp_release(folded);
    return rc;
}

static int run_training(train_env *env, const options *o, const mlp_shape *base, run_result *r,
                        int run_index, int run_total, outputs *out, int extras)
{
    char lr_text[32];
    format_lr(lr_text, sizeof lr_text, r->lr);
    mlp_shape shape = *base;
    shape.norm = r->norm;
    mlp *net = NULL;
    size_t max_rows = EVAL_BATCH + 1;
    if (r->batch + 1 > max_rows)
        max_rows = r->batch + 1;
    if (mlp_create(env->ctx, env->k, &shape, max_rows, o->seed, &net, env->err,
                   sizeof env->err) != 0)
        return -1;
    say("\nrun %d/%d: norm=%s lr=%s batch=%zu (%zu parameters)\n", run_index, run_total,
        norm_name(r->norm), lr_text, r->batch, mlp_parameter_count(net));
    print_epoch_header();
    sgd_settings sgd = {.batch = r->batch,
                        .lr = r->lr,
                        .momentum = o->momentum,
                        .weight_decay = o->weight_decay,
                        .cosine = o->cosine,
                        .total_steps = o->epochs * (env->train.count / r->batch)};
    uint64_t rng = o->seed ^ 0x5eed5eed5eed5eedull;
    size_t step = 0;
    float *step_losses = malloc((env->train.count / r->batch + 1) * sizeof(float));
    int rc = -1;
    if (!step_losses) {
        snprintf(env->err, sizeof env->err, "no host memory for the step losses");
        goto done;
    }
    for (size_t e = 0; e < o->epochs; e++) {
        char label[128];
        snprintf(label, sizeof label, "norm=%s lr=%s batch=%zu epoch %zu/%zu", norm_name(r->norm),
                 lr_text, r->batch, e + 1, o->epochs);
        epoch_stats st;
        size_t first_step = step;
        if (mlp_set_mode(net, CLNORM_TRAINING) != 0) {
            snprintf(env->err, sizeof env->err, "%s", mlp_error(net));
            goto done;
        }
        if (env_train_epoch(env, net, &sgd, &rng, &step, label, &st, step_losses) != 0)
            goto done;
        epoch_row *row = &r->rows[e];
        row->train_loss = st.train_loss;
        row->train_acc = st.train_acc;
        row->seconds = st.seconds;
        if (mlp_set_mode(net, CLNORM_EVALUATION) != 0) {
            snprintf(env->err, sizeof env->err, "%s", mlp_error(net));
            goto done;
        }
        double t0 = now_seconds();
        if (env_evaluate(env, net, EVAL_BATCH, CLNORM_EVALUATION, &row->test_loss,
                         &row->test_acc) != 0)
            goto done;
        row->seconds += now_seconds() - t0;
        r->seconds += row->seconds;
        r->epochs_done = e + 1;
        print_epoch(e + 1, row);
        if (out->epochs)
            fprintf(out->epochs, "%d,%s,%zu,%s,%zu,%.6g,%.6g,%.6g,%.6g,%.3f\n", run_index,
                    norm_name(r->norm), r->batch, lr_text, e + 1, row->train_loss,
                    row->train_acc, row->test_loss, row->test_acc, row->seconds);
        if (out->steps)
            for (size_t s = 0; s < st.steps; s++)
                fprintf(out->steps, "%d,%s,%zu,%s,%zu,%zu,%.6g\n", run_index, norm_name(r->norm),
                        r->batch, lr_text, e + 1, first_step + s + 1, step_losses[s]);
        if (st.first_bad_step >= 0 || !isfinite(row->test_loss)) {
            r->diverged = 1;
            r->bad_epoch = e + 1;
            r->bad_step = st.first_bad_step;
            if (st.first_bad_step >= 0)
                say("  diverged: the training loss became non-finite at step %ld of epoch %zu; "
                    "training stopped there (the epoch's row covers its first %zu steps)\n",
                    st.first_bad_step + 1, e + 1, st.steps);
            else
                say("  diverged: the test loss is not finite after epoch %zu; training stopped\n",
                    e + 1);
            break;
        }
    }
    if (extras && !r->diverged && r->norm == NORM_BATCH &&
        mode_and_export_checks(env, net, r, o->export_check) != 0)
        goto done;
    rc = 0;
done:
    free(step_losses);
    mlp_release(net);
    return rc;
}

/* ---- reports ------------------------------------------------------------------------------------ */

static const epoch_row *last_row(const run_result *r)
{
    return r->epochs_done ? &r->rows[r->epochs_done - 1] : NULL;
}

static double final_acc(const run_result *r)
{
    const epoch_row *row = last_row(r);
    return row ? row->test_acc : 0.0;
}

static void describe(char *buf, size_t size, const run_result *r)
{
    const epoch_row *row = last_row(r);
    if (r->diverged)
        snprintf(buf, size, "diverged (epoch %zu), test accuracy %.2f%%", r->bad_epoch,
                 100 * final_acc(r));
    else if (row)
        snprintf(buf, size, "test accuracy %.2f%%, train loss %.4f", 100 * row->test_acc,
                 row->train_loss);
    else
        snprintf(buf, size, "no result");
}

static const run_result *find(const run_result *results, size_t n, norm_kind norm, double lr)
{
    for (size_t i = 0; i < n; i++)
        if (results[i].norm == norm && results[i].lr == lr && results[i].epochs_done)
            return &results[i];
    return NULL;
}

static void default_summary(const options *o, const run_result *res, size_t n)
{
    const double moderate = o->lrs[0], high = o->lrs[1];
    const run_result *nm = find(res, n, NORM_NONE, moderate), *bm = find(res, n, NORM_BATCH, moderate);
    const run_result *nh = find(res, n, NORM_NONE, high), *bh = find(res, n, NORM_BATCH, high);
    char a[256], b[256];
    say("\n==== Summary: the seed's claims, from the numbers above (%zu epochs, batch %zu)\n",
        o->epochs, o->batches[0]);
    say("\n%-10s %-10s %s\n", "norm", "lr", "result");
    for (size_t i = 0; i < n; i++) {
        char lr[32];
        format_lr(lr, sizeof lr, res[i].lr);
        describe(a, sizeof a, &res[i]);
        say("%-10s %-10s %s\n", norm_name(res[i].norm), lr, a);
    }
    say("\n");
    /* 1. trains faster: lower training loss after the first epoch at the moderate rate */
    if (nm && bm) {
        double ln = nm->rows[0].train_loss, lb = bm->rows[0].train_loss;
        say("1. \"Trains faster\" (lr %g, mean training loss over epoch 1): %.4f with batch norm, "
            "%.4f without -> %s.\n",
            moderate, lb, ln,
            lb < ln ? "HELD" : "NOT HELD (batch norm was not ahead after one epoch)");
    }
    /* 2. tolerates higher learning rates */
    if (nh && bh) {
        describe(a, sizeof a, bh);
        describe(b, sizeof b, nh);
        double gap = final_acc(bh) - final_acc(nh);
        int bn_ok = !bh->diverged && final_acc(bh) >= TARGET_HIGH_LR_ACC;
        int none_bad = nh->diverged || gap >= TARGET_GAP;
        say("2. \"Tolerates higher learning rates\" (lr %g): with batch norm %s; without %s "
            "(%+.2f points) -> %s.\n",
            high, a, b, 100 * gap,
            bn_ok && none_bad ? "HELD"
            : bn_ok           ? "NOT HELD (the plain network coped with this rate too)"
            : bh->diverged    ? "NOT HELD (batch norm diverged as well)"
                              : "NOT HELD (batch norm did not reach the target at this rate)");
        say("   targets: batch norm >= %.0f%% at lr %g: %s; without it diverged or >= %.0f points "
            "lower: %s.\n",
            100 * TARGET_HIGH_LR_ACC, high, bn_ok ? "met" : "NOT met", 100 * TARGET_GAP,
            none_bad ? "met" : "NOT met");
    }
    /* 3. better final accuracy: best over the learning rates */
    const run_result *best_b = NULL, *best_n = NULL;
    for (size_t i = 0; i < n; i++) {
        const run_result *r = &res[i];
        if (!r->epochs_done)
            continue;
        const run_result **best = r->norm == NORM_BATCH ? &best_b : &best_n;
        if (!*best || final_acc(r) > final_acc(*best))
            *best = r;
    }
    if (best_b && best_n) {
        double gap = final_acc(best_b) - final_acc(best_n);
        say("3. \"Reaches better accuracy\" (best final test accuracy over the learning rates): "
            "%.2f%% with batch norm (lr %g), %.2f%% without (lr %g) -> %s.\n",
            100 * final_acc(best_b), best_b->lr, 100 * final_acc(best_n), best_n->lr,
            gap > 0 ? "HELD" : "NOT HELD");
        if (gap > 0 && gap < 0.005)
            say("   (a gap under half a point: within what another seed could change)\n");
    }
    /* 4. the common bug */
    const run_result *checked = bh && bh->have_mode_check ? bh : bm && bm->have_mode_check ? bm : NULL;
    if (checked) {
        double drop = checked->acc_eval - checked->acc_train_small;
        say("4. \"Forgetting evaluation mode degrades predictions\" (batch-norm model, lr %g): "
            "%.2f%% in evaluation mode, %.2f%% left in training mode with inference batches of "
            "%d (%.2f%% with batches of %d) -> %s.\n",
            checked->lr, 100 * checked->acc_eval, 100 * checked->acc_train_small,
            SMALL_INFERENCE_BATCH, 100 * checked->acc_train_large, EVAL_BATCH,
            drop > 0 ? "HELD" : "NOT HELD");
    } else {
        say("4. \"Forgetting evaluation mode degrades predictions\": not checked (no batch-norm "
            "model finished%s).\n",
            o->export_check ? "" : ", or --no-export");
    }
    say("5. \"Batch norm degrades with very small batches where layer/group norm do not\": not "
        "measured by the default run; --sweep trains none, batch, layer, group and RMS norm at "
        "batches of 4, 16 and 128 and states it.\n");
    if (bh && bh->have_export) {
        const double change = (bh->ms_folded - bh->ms_unfolded) / bh->ms_unfolded;
        say("6. Inference export: folding batch norm into the linear layers changed the logits by "
            "at most %.3g (%zu of %zu predictions identical) -> %s. Time per batch of %d: %.2f ms "
            "folded vs %.2f ms unfolded (%+.1f%%) -> %s.\n",
            bh->max_delta, bh->agree, bh->compared,
            bh->agree == bh->compared && bh->max_delta < 1e-3 ? "same predictions"
                                                              : "NOT the same predictions",
            EXPORT_BATCH, bh->ms_folded, bh->ms_unfolded, 100 * change,
            change < -0.05  ? "folded is faster"
            : change > 0.05 ? "folded is NOT faster"
                            : "no clear difference (the GEMMs dominate; the folded layers still "
                              "run a bias+ReLU kernel where the unfolded ones run batch norm's)");
    }
}

/* The best final test accuracy of a norm at a batch size over the learning rates (a diverged run
 * counts with its accuracy, normally chance). NULL when no run of it finished an epoch. */
static const run_result *best_over_lrs(const run_result *res, size_t n, norm_kind norm,
                                       size_t batch)
{
    const run_result *best = NULL;
    for (size_t i = 0; i < n; i++) {
        const run_result *r = &res[i];
        if (r->norm != norm || r->batch != batch || !r->available || !r->epochs_done)
            continue;
        if (!best || final_acc(r) > final_acc(best))
            best = r;
    }
    return best;
}

#define CLAIM_MARGIN 0.005 /* half a point: less is within what another seed could change */

static void sweep_summary(const options *o, const run_result *res, size_t n)
{
    int all_available = 1;
    for (size_t i = 0; i < n; i++)
        all_available &= res[i].available;
    say("\n==== Sweep: final test accuracy (evaluation mode) after %zu epoch%s; "
        "div = diverged%s\n\n",
        o->epochs, o->epochs == 1 ? "" : "s", all_available ? "" : ", n/a = not in this build");
    say("%-7s %6s", "norm", "batch");
    for (size_t l = 0; l < o->num_lrs; l++) {
        char lr[32];
        format_lr(lr, sizeof lr, o->lrs[l]);
        char head[40];
        snprintf(head, sizeof head, "lr=%s", lr);
        say(" %10s", head);
    }
    say("\n");
    for (size_t ni = 0; ni < o->num_norms; ni++)
        for (size_t bi = 0; bi < o->num_batches; bi++) {
            say("%-7s %6zu", norm_name(o->norms[ni]), o->batches[bi]);
            for (size_t l = 0; l < o->num_lrs; l++) {
                const run_result *r = NULL;
                for (size_t i = 0; i < n; i++)
                    if (res[i].norm == o->norms[ni] && res[i].batch == o->batches[bi] &&
                        res[i].lr == o->lrs[l])
                        r = &res[i];
                char cell[32];
                if (!r || !r->available)
                    snprintf(cell, sizeof cell, "n/a");
                else if (r->failed || !r->epochs_done)
                    snprintf(cell, sizeof cell, "error");
                else if (r->diverged)
                    snprintf(cell, sizeof cell, "div");
                else
                    snprintf(cell, sizeof cell, "%.2f%%", 100 * final_acc(r));
                say(" %10s", cell);
            }
            say("\n");
        }

    /* the seed's small-batch claim: each norm's best accuracy over the learning rates at the
     * smallest and the largest batch */
    size_t small = o->batches[0], large = o->batches[0];
    for (size_t bi = 0; bi < o->num_batches; bi++) {
        if (o->batches[bi] < small)
            small = o->batches[bi];
        if (o->batches[bi] > large)
            large = o->batches[bi];
    }
    say("\n5. \"Batch norm degrades with very small batches where layer/group norm do not\"\n");
    if (small == large) {
        say("   not measured: the sweep has one batch size (--batch with a small and a large "
            "one)\n");
        return;
    }
    say("   best test accuracy over the learning rates, batch %zu vs batch %zu:\n", small, large);
    double drop[NORM_KIND_COUNT], at_small[NORM_KIND_COUNT];
    int have[NORM_KIND_COUNT] = {0};
    for (size_t ni = 0; ni < o->num_norms; ni++) {
        const norm_kind k = o->norms[ni];
        const run_result *rs = best_over_lrs(res, n, k, small);
        const run_result *rl = best_over_lrs(res, n, k, large);
        if (!rs || !rl)
            continue;
        have[k] = 1;
        at_small[k] = final_acc(rs);
        drop[k] = final_acc(rl) - final_acc(rs);
        say("   %-6s batch %3zu: %6.2f%% (lr %g)   batch %3zu: %6.2f%% (lr %g)   %+.2f points at "
            "batch %zu\n",
            norm_name(k), small, 100 * final_acc(rs), rs->lr, large, 100 * final_acc(rl), rl->lr,
            -100 * drop[k], small);
    }
    if (!have[NORM_BATCH] || (!have[NORM_LAYER] && !have[NORM_GROUP])) {
        say("   -> not measured: needs batch norm and layer or group norm at both batch sizes\n");
        return;
    }
    const norm_kind others[2] = {NORM_LAYER, NORM_GROUP};
    const int bn_degrades = drop[NORM_BATCH] >= CLAIM_MARGIN;
    int worse_than_all = 1, others_steady = 1;
    for (int j = 0; j < 2; j++) {
        const norm_kind k = others[j];
        if (!have[k])
            continue;
        /* batch norm lost more from the small batch, and ended behind at it */
        if (!(drop[NORM_BATCH] - drop[k] >= CLAIM_MARGIN &&
              at_small[k] - at_small[NORM_BATCH] >= CLAIM_MARGIN))
            worse_than_all = 0;
        if (drop[k] >= CLAIM_MARGIN)
            others_steady = 0;
    }
    say("   batch norm %s at batch %zu (%+.2f points vs batch %zu; layer norm ",
        bn_degrades ? "degraded" : "did not degrade", small, -100 * drop[NORM_BATCH], large);
    if (have[NORM_LAYER])
        say("%+.2f", -100 * drop[NORM_LAYER]);
    else
        say("not run");
    say(", group norm ");
    if (have[NORM_GROUP])
        say("%+.2f", -100 * drop[NORM_GROUP]);
    else
        say("not run");
    if (have[NORM_NONE])
        say(", no norm %+.2f: the small-batch effect without any normalization",
            -100 * drop[NORM_NONE]);
    say(")\n   -> %s\n",
        bn_degrades && worse_than_all && others_steady
            ? "HELD: batch norm lost accuracy at the smallest batch and layer/group norm did not."
        : bn_degrades && worse_than_all
            ? "PARTLY HELD: batch norm lost more at the smallest batch than layer/group norm and "
              "ended behind them there, but layer/group norm lost accuracy too (by at least half "
              "a point)."
        : bn_degrades
            ? "NOT HELD: batch norm lost accuracy at the smallest batch, but not clearly more than "
              "layer/group norm (or it was not behind them there)."
            : "NOT HELD: batch norm did not lose accuracy at the smallest batch.");
    say("   (every cell trains the same number of epochs: a small batch takes more, noisier "
        "steps; differences under %.1f points are within what another seed could change)\n",
        100 * CLAIM_MARGIN);
}

/* ---- main -------------------------------------------------------------------------------------- */

/* A throwaway network runs one training step and one evaluation per batch size, so that the
 * one-time kernel builds (clnorm's programs, CLBlast's GEMM kernels for each size class) are not
 * counted in the first training's seconds. */
static int warm_up(train_env *env, const options *o, const mlp_shape *base)
{
    mlp_shape shape = *base;
    shape.norm = NORM_BATCH;
    for (size_t bi = 0; bi < o->num_batches; bi++) {
        const size_t batch = o->batches[bi];
        if (batch > env->train.count)
            continue;
        mlp *net = NULL;
        size_t rows = (batch > EVAL_BATCH ? batch : EVAL_BATCH) + 1;
        if (mlp_create(env->ctx, env->k, &shape, rows, 0, &net, env->err, sizeof env->err) != 0)
            return -1;
        int rc = -1;
        if (mlp_forward(net, env->x, batch, CLNORM_TRAINING) == 0 &&
            mlp_loss(net, env->labels, batch, 1, env->slot_loss, env->slot_correct, 0) == 0 &&
            mlp_backward(net, env->x, batch) == 0 && mlp_sgd_step(net, 0.0f, 0.0f, 0.0f) == 0 &&
            mlp_set_mode(net, CLNORM_EVALUATION) == 0) {
            size_t n = env->test.count < EVAL_BATCH ? env->test.count : EVAL_BATCH;
            if (mlp_forward(net, env->x, n, CLNORM_EVALUATION) == 0 &&
                clFinish(env->queue) == CL_SUCCESS)
                rc = 0;
        }
        if (rc != 0)
            snprintf(env->err, sizeof env->err, "%s", mlp_error(net));
        mlp_release(net);
        if (rc != 0)
            return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    options o;
    int parsed = parse_options(argc, argv, &o);
    if (parsed == 1)
        return 0;
    if (parsed != 0)
        return 2;

    char err[8192];
    idx_set train_set, test_set;
    memset(&train_set, 0, sizeof train_set);
    memset(&test_set, 0, sizeof test_set);
    if (idx_load(o.data_dir, "train", &train_set, err, sizeof err) != 0 ||
        idx_load(o.data_dir, "t10k", &test_set, err, sizeof err) != 0) {
        fprintf(stderr, "clnorm-train: %s\n", err);
        idx_free(&train_set);
        return 1;
    }
    size_t n_train = o.train_limit && o.train_limit < train_set.count ? o.train_limit
                                                                      : train_set.count;
    size_t n_test = o.test_limit && o.test_limit < test_set.count ? o.test_limit : test_set.count;
    for (size_t bi = 0; bi < o.num_batches; bi++)
        if (o.batches[bi] > n_train) {
            fprintf(stderr, "clnorm-train: batch %zu is larger than the %zu training examples\n",
                    o.batches[bi], n_train);
            idx_free(&train_set);
            idx_free(&test_set);
            return 2;
        }

    int status = 1;
    clnorm_context *ctx = NULL;
    train_kernels kernels;
    memset(&kernels, 0, sizeof kernels);
    train_env env;
    memset(&env, 0, sizeof env);
    outputs out = {0};
    run_result *results = NULL;
    size_t num_results = 0;

    clnorm_settings settings;
    clnorm_default_settings(&settings);
    settings.device = o.device;
    clnorm_status cs = clnorm_context_create(&ctx, &settings, err, sizeof err);
    if (cs != CLNORM_OK) {
        fprintf(stderr, "clnorm-train: no OpenCL device: %s\n", err);
        goto cleanup;
    }
    clnorm_device_info info;
    if (clnorm_context_device_info(ctx, &info) != CLNORM_OK) {
        fprintf(stderr, "clnorm-train: %s\n", clnorm_last_error(ctx));
        goto cleanup;
    }
    if (mkdir_p(o.out_dir) != 0) {
        fprintf(stderr, "clnorm-train: cannot create the output folder %s: %s\n", o.out_dir,
                strerror(errno));
        goto cleanup;
    }
    {
        char path[4096];
        snprintf(path, sizeof path, "%s/summary.txt", o.out_dir);
        summary_file = fopen(path, "w");
        if (!summary_file) {
            fprintf(stderr, "clnorm-train: cannot write %s: %s\n", path, strerror(errno));
            goto cleanup;
        }
    }
    out.epochs = open_out(o.out_dir, "epochs.csv",
                          "run,norm,batch,lr,epoch,train_loss,train_acc,test_loss,test_acc,seconds");
    out.steps = open_out(o.out_dir, "steps.csv", "run,norm,batch,lr,epoch,step,loss");
    out.runs = open_out(o.out_dir, "runs.csv",
                        "run,norm,batch,lr,epochs,final_train_loss,final_test_loss,final_test_acc,"
                        "diverged,seconds,available");
    if (!out.epochs || !out.steps || !out.runs)
        goto cleanup;

    const char *mode_name = o.kind == RUN_DEFAULT ? "default comparison"
                            : o.kind == RUN_SWEEP ? "sweep"
                                                  : "custom run";
    say("clnorm-train (clnorm %s): %s\n", CLNORM_VERSION_STRING, mode_name);
    say("device: [%u:%u] %s (%s)\n", info.platform_index, info.device_index, info.name,
        info.platform_name);
    say("data: Fashion-MNIST from %s: %zu training examples%s, %zu test examples%s\n", o.data_dir,
        n_train, n_train < train_set.count ? " (a subset: --train-limit)" : "", n_test,
        n_test < test_set.count ? " (a subset: --test-limit)" : "");
    say("network: 784 -> %zu x %zu -> 10, Linear (CLBlast SGEMM) -> norm -> ReLU; softmax "
        "cross-entropy; SGD momentum %g%s%s; seed %llu\n",
        o.hidden, o.depth, o.momentum, o.weight_decay > 0 ? ", weight decay" : "",
        o.cosine ? ", cosine schedule" : "", (unsigned long long)o.seed);
    for (size_t ni = 0; ni < o.num_norms; ni++)
        if (o.norms[ni] == NORM_GROUP)
            say("group norm: %zu groups of %zu features per hidden layer (--groups)\n", o.groups,
                o.hidden / o.groups);

    double t_start = now_seconds();
    if (kernels_build(clnorm_context_cl_context(ctx), clnorm_context_device(ctx), &kernels, err,
                      sizeof err) != 0) {
        fprintf(stderr, "clnorm-train: %s\n", err);
        goto cleanup;
    }
    size_t max_batch = 0;
    for (size_t bi = 0; bi < o.num_batches; bi++)
        if (o.batches[bi] > max_batch)
            max_batch = o.batches[bi];
    size_t max_rows = (max_batch > EVAL_BATCH ? max_batch : EVAL_BATCH) + 1;
    if (env_create(&env, ctx, &kernels, &train_set, o.train_limit, &test_set, o.test_limit,
                   max_rows) != 0) {
        fprintf(stderr, "clnorm-train: %s\n", env.err);
        goto cleanup;
    }
    env.progress = !o.quiet;
    idx_free(&train_set);
    idx_free(&test_set);

    mlp_shape base = {.input = env.train.dim,
                      .hidden = o.hidden,
                      .depth = o.depth,
                      .classes = IDX_CLASSES,
                      .norm = NORM_NONE,
                      .groups = o.groups};
    cs = clnorm_warm_up(ctx);
    if (cs != CLNORM_OK) {
        fprintf(stderr, "clnorm-train: clnorm_warm_up: %s\n", clnorm_last_error(ctx));
        goto cleanup;
    }
    if (warm_up(&env, &o, &base) != 0) {
        fprintf(stderr, "clnorm-train: warm-up: %s\n", env.err);
        goto cleanup;
    }
    say("start-up (program builds, data upload, warm-up): %.1f s\n", now_seconds() - t_start);

    const size_t total = o.num_norms * o.num_batches * o.num_lrs;
    results = calloc(total, sizeof *results);
    if (!results) {
        fprintf(stderr, "clnorm-train: no host memory\n");
        goto cleanup;
    }
    int runnable = 0;
    for (size_t ni = 0; ni < o.num_norms; ni++)
        runnable += norm_available(o.norms[ni]) ? (int)(o.num_batches * o.num_lrs) : 0;
    if (o.kind == RUN_DEFAULT)
        say("default run: norm none|batch x lr %g (moderate) | %g (high), batch %zu, %zu epochs "
            "each (--sweep for the full grid, --help for the options)\n",
            o.lrs[0], o.lrs[1], o.batches[0], o.epochs);
    int run_index = 0;
    int failed = 0;
    for (size_t ni = 0; ni < o.num_norms; ni++) {
        if (!norm_available(o.norms[ni]))
            say("\nnorm=%s: not available in this build: skipped\n",
                norm_name(o.norms[ni]));
        for (size_t bi = 0; bi < o.num_batches; bi++)
            for (size_t li = 0; li < o.num_lrs; li++) {
                run_result *r = &results[num_results++];
                r->norm = o.norms[ni];
                r->batch = o.batches[bi];
                r->lr = o.lrs[li];
                r->available = norm_available(r->norm);
                if (!r->available)
                    continue;
                run_index++;
                /* the mode check and export: the batch-norm run at the highest rate of the
                 * default comparison; every batch-norm run of a custom one */
                int extras = (o.kind == RUN_DEFAULT && li == o.num_lrs - 1) || o.kind == RUN_CUSTOM;
                if (run_training(&env, &o, &base, r, run_index, runnable, &out, extras) != 0) {
                    fprintf(stderr, "clnorm-train: run %d failed: %s\n", run_index, env.err);
                    r->failed = 1;
                    failed = 1;
                    goto cleanup;
                }
                char lr[32];
                format_lr(lr, sizeof lr, r->lr);
                const epoch_row *row = last_row(r);
                fprintf(out.runs, "%d,%s,%zu,%s,%zu,%.6g,%.6g,%.6g,%d,%.3f,1\n", run_index,
                        norm_name(r->norm), r->batch, lr, r->epochs_done,
                        row ? row->train_loss : NAN, row ? row->test_loss : NAN,
                        row ? row->test_acc : NAN, r->diverged, r->seconds);
                fflush(out.runs);
                fflush(out.epochs);
                fflush(out.steps);
            }
    }
    for (size_t i = 0; i < num_results; i++)
        if (!results[i].available) {
            char lr[32];
            format_lr(lr, sizeof lr, results[i].lr);
            fprintf(out.runs, ",%s,%zu,%s,0,,,,,,0\n", norm_name(results[i].norm),
                    results[i].batch, lr);
        }

    if (o.kind == RUN_DEFAULT)
        default_summary(&o, results, num_results);
    else if (o.kind == RUN_SWEEP)
        sweep_summary(&o, results, num_results);
    say("\ntotal time %.1f s; CSV files and summary.txt in %s/ (plots: python3 "
        "examples/train/plot.py %s)\n",
        now_seconds() - t_start, o.out_dir, o.out_dir);
    status = failed ? 1 : 0;

cleanup:
    free(results);
    if (out.epochs)
        fclose(out.epochs);
    if (out.steps)
        fclose(out.steps);
    if (out.runs)
        fclose(out.runs);
    if (summary_file)
        fclose(summary_file);
    summary_file = NULL;
    env_release(&env);
    kernels_release(&kernels);
    idx_free(&train_set);
    idx_free(&test_set);
    CLBlastClearCache();
    clnorm_context_release(ctx);
    return status;
}

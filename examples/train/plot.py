#!/usr/bin/env python3
"""Plots of a clnorm-train run: python3 plot.py OUTDIR

Reads OUTDIR/steps.csv, epochs.csv and runs.csv (written by clnorm-train) and writes
  OUTDIR/loss_curves.png     training loss per step (smoothed) and test accuracy per epoch
  OUTDIR/accuracy_vs_lr.png  final test accuracy against the learning rate (one panel per batch
                             size when there are several, as in --sweep)
Needs matplotlib (Debian: python3-matplotlib). Exits non-zero with a message when it cannot plot.
"""
import csv
import math
import os
import sys


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def num(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def run_label(row):
    return f"{row['norm']} lr={row['lr']} b={row['batch']}"


# one line style per normalization (the loss curves) and one color (the accuracy panels)
NORM_STYLE = {"none": "--", "batch": "-", "layer": "-.", "group": ":", "rms": (0, (5, 1, 1, 1, 1, 1))}
NORM_COLOR = {"none": "tab:gray", "batch": "tab:blue", "layer": "tab:orange", "group": "tab:green",
              "rms": "tab:purple"}
NORM_ORDER = ["none", "batch", "layer", "group", "rms"]


def norm_key(name):
    return NORM_ORDER.index(name) if name in NORM_ORDER else len(NORM_ORDER)


def smooth(values, window):
    out, acc, queue = [], 0.0, []
    for v in values:
        queue.append(v)
        acc += v
        if len(queue) > window:
            acc -= queue.pop(0)
        out.append(acc / len(queue))
    return out


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    out = sys.argv[1]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot.py: matplotlib is missing (Debian: apt-get install python3-matplotlib)",
              file=sys.stderr)
        return 1
    try:
        steps = read(os.path.join(out, "steps.csv"))
        epochs = read(os.path.join(out, "epochs.csv"))
        runs = read(os.path.join(out, "runs.csv"))
    except OSError as e:
        print(f"plot.py: {e} (run clnorm-train --out {out} first)", file=sys.stderr)
        return 1

    # ---- loss curves and test accuracy per epoch
    by_run = {}
    for r in steps:
        by_run.setdefault(r["run"], {"label": run_label(r), "norm": r["norm"], "x": [], "y": []})
        by_run[r["run"]]["y"].append(num(r["loss"]))
    steps_per_epoch = {}
    for r in steps:
        steps_per_epoch[(r["run"], r["epoch"])] = steps_per_epoch.get((r["run"], r["epoch"]), 0) + 1
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(13, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (run, d) in enumerate(sorted(by_run.items(), key=lambda kv: int(kv[0]))):
        per_epoch = steps_per_epoch.get((run, "1"), len(d["y"])) or 1
        x = [(k + 1) / per_epoch for k in range(len(d["y"]))]
        finite = [v if math.isfinite(v) else math.nan for v in d["y"]]
        window = max(1, per_epoch // 20)
        y = smooth([v for v in finite if math.isfinite(v)], window)
        xs = [xv for xv, v in zip(x, finite) if math.isfinite(v)]
        style = NORM_STYLE.get(d["norm"], "-")
        color = colors[i % len(colors)]
        if y:
            ax_loss.plot(xs, y, linestyle=style, color=color, label=d["label"], linewidth=1.2)
        if len(xs) < len(x):  # the loss went non-finite: mark where
            bad = next(xv for xv, v in zip(x, finite) if not math.isfinite(v))
            ax_loss.axvline(bad, color=color, linestyle=":", linewidth=1)
            ax_loss.annotate("diverged", (bad, 0.05), xycoords=("data", "axes fraction"),
                             color=color, rotation=90, fontsize=8)
        ep = [e for e in epochs if e["run"] == run]
        ax_acc.plot([int(e["epoch"]) for e in ep], [100 * num(e["test_acc"]) for e in ep],
                    linestyle=style, marker="o", color=color, label=d["label"])
    # a diverging run's loss explodes before it turns NaN: keep the scale of the others
    firsts = [v for d in by_run.values() for v in d["y"][:1] if math.isfinite(v)]
    lows = [v for d in by_run.values() for v in d["y"] if math.isfinite(v)]
    if firsts and lows:
        ax_loss.set_ylim(max(min(lows) * 0.8, 1e-3), max(firsts) * 2.0)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss (mean of each step, smoothed)")
    ax_loss.set_title("training loss")
    ax_loss.grid(True, which="both", alpha=0.3)
    legend_size = 8 if len(by_run) <= 12 else 5
    ax_loss.legend(fontsize=legend_size, ncol=1 if len(by_run) <= 12 else 2)
    ax_acc.xaxis.get_major_locator().set_params(integer=True)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("test accuracy, evaluation mode (%)")
    ax_acc.set_title("test accuracy")
    ax_acc.grid(True, alpha=0.3)
    ax_acc.legend(fontsize=legend_size, ncol=1 if len(by_run) <= 12 else 2)
    styles = {"none": "dashed", "batch": "solid", "layer": "dash-dot", "group": "dotted",
              "rms": "dash-dots"}
    present = sorted({d["norm"] for d in by_run.values()}, key=norm_key)
    fig.suptitle("clnorm-train on Fashion-MNIST: "
                 + ", ".join(f"{styles.get(n, 'solid')} = {n if n != 'none' else 'no'} norm"
                             for n in present))
    fig.tight_layout()
    fig.savefig(os.path.join(out, "loss_curves.png"), dpi=110)
    plt.close(fig)

    # ---- final test accuracy against the learning rate: one panel per batch size, one color per
    # normalization
    series = {}
    for r in runs:
        if r.get("available") != "1":
            continue
        key = (r["norm"], int(r["batch"]))
        series.setdefault(key, []).append((num(r["lr"]), 100 * num(r["final_test_acc"]),
                                           r["diverged"] == "1"))
    batches = sorted({k[1] for k in series})
    panels = max(1, len(batches))
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels + 1.4, 4.8), sharey=True,
                             squeeze=False)
    axes = axes[0]
    for key, pts in sorted(series.items(), key=lambda kv: (norm_key(kv[0][0]), kv[0][1])):
        ax = axes[batches.index(key[1])]
        pts.sort()
        color = NORM_COLOR.get(key[0], "black")
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "-", marker="o", color=color,
                label=f"{key[0]} norm" if key[0] != "none" else "no norm")
        for lr, acc, diverged in pts:
            if diverged:
                ax.plot([lr], [acc], "x", color="red", markersize=12)
    for ax, b in zip(axes, batches):
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (SGD with momentum)")
        ax.set_title(f"batch {b}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("final test accuracy (%)")
    axes[-1].legend(fontsize=8)
    fig.suptitle("final test accuracy vs learning rate per batch size (red x: diverged)",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "accuracy_vs_lr.png"), dpi=110)
    plt.close(fig)
    print(f"plots: {os.path.join(out, 'loss_curves.png')}, {os.path.join(out, 'accuracy_vs_lr.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

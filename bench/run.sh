#!/usr/bin/env bash
# clnorm-bench and its PyTorch peer in one run (same machine, one after the other), then the
# ratio table, the targets of issue 5 and the chart:
#   bash bench/run.sh [clnorm-bench options]      e.g. --quick, --device cpu, --ops backward
# Every family runs: batch norm (training and inference forward, backward, fused ReLU and
# add+ReLU, both layouts), layer and RMS norm (forward, fused residual add, backward), group and
# instance norm (forward, backward, both layouts), plus the first-call latency (cold and warm) and
# the copy bandwidth, shape by shape with the peer (see "Paired" below). --quick: 2 batch-norm shapes with the plain ops, the first layer/RMS shape
# and the group/instance-norm tensor (3 min 45 s on the 2-core PoCL machine while others loaded
# it; the full run 32 min).
# Writes bench/results/<device>-<date>[-quick].json (both tools' rows), .png (fraction of copy
# bandwidth per op, PyTorch beside clnorm) and .txt (the printed tables).
# Environment: BUILD_DIR (default build-bench; configured -Dbench=true --buildtype=release
# -Dwerror=true if new; only clnorm-bench is built), CLNORM_BENCH (a prebuilt clnorm-bench:
# nothing is built, e.g. on the GPU machine), PYTHON (default /usr/bin/python3 when it has torch,
# Debian's python3-torch, else python3), PEER_DEVICE (cpu or cuda; default cuda when the OpenCL
# device is a GPU and PyTorch sees CUDA, else cpu), RESULTS (default bench/results),
# TORCH_REFERENCE (on a GPU: ../shared/gpu/torch_reference.py or .gpu/torch_reference.py, run
# too and kept in the combined JSON; "off" skips it).
# PoCL's own kernel cache is pointed at an empty folder (POCL_CACHE_DIR) for the run, so that the
# "cold" first-call latency includes the driver's compile, as on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build-bench}
results=${RESULTS:-bench/results}
python=${PYTHON:-}
if [ -z "$python" ]; then
    python=python3
    /usr/bin/python3 -c 'import torch' 2>/dev/null && python=/usr/bin/python3
fi

quick=""
case " $* " in *" --quick "*) quick=-quick ;; esac

bench=${CLNORM_BENCH:-}
if [ -z "$bench" ]; then
    [ -f "$build/build.ninja" ] ||
        meson setup "$build" -Dbench=true -Dwerror=true --buildtype=release >/dev/null
    ninja -C "$build" bench/clnorm-bench >/dev/null
    bench=$build/bench/clnorm-bench
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export POCL_CACHE_DIR=${POCL_CACHE_DIR:-$tmp/pocl-cache}
mkdir -p "$POCL_CACHE_DIR" "$results"
start=$(date +%s)

# a quick run retries a row once at most, after waiting at most 10 s, when other processes load
# the CPUs (the full run: 5 retries, each after waiting up to 120 s for a quiet machine)
retries=()
[ -n "$quick" ] && retries=(--retries 1 --max-wait 10)

# Paired (default): shape by shape, clnorm-bench's rows and then the same rows through PyTorch,
# so that both see this shared machine in the same state (a whole run of one tool, then one of the
# other, lets the load move between a row and its peer; single rows moved 2x between runs).
# ROUNDS (default 2): the parts again in reverse order, PyTorch first in each part; every row
# then keeps, for each tool, the lower of its rounds' medians (plot.py). Each part measures its
# own copy bandwidth, and the very first the latency. PAIRED=0: one clnorm-bench run, then one
# PyTorch run (and ROUNDS such pairs).
paired=${PAIRED:-1}
rounds=${ROUNDS:-2}
parts=("")
if [ "$paired" != 0 ]; then
    mapfile -t parts < <("$bench" --list "$@" |
        grep -oE '(N[0-9]+ C[0-9]+ H[0-9]+ W[0-9]+|rows[0-9]+ cols[0-9]+)' | awk '!seen[$0]++')
    [ ${#parts[@]} -gt 0 ] || { echo "clnorm-bench --list selected no rows" >&2; exit 1; }
fi

status=0
inputs=()
peer=${PEER_DEVICE:-}
first=1

run_clnorm() { # part index, round, clnorm-bench's options
    local i=$1 r=$2 part=()
    shift 2
    [ -n "${parts[$i]}" ] && part=(--shapes "${parts[$i]}")
    [ "$first" = 1 ] || part+=(--no-latency)
    "$bench" --json "$tmp/clnorm-$r-$i.json" "${retries[@]}" "$@" "${part[@]}" |
        tee -a "$tmp/clnorm.txt" || status=$?
    [ -f "$tmp/clnorm-$r-$i.json" ] || { echo "clnorm-bench failed (status $status)" >&2; exit 1; }
    inputs+=("$tmp/clnorm-$r-$i.json")
    if [ "$first" = 1 ]; then
        first=0
        read -r type slug < <("$python" - "$tmp/clnorm-$r-$i.json" <<'PY'
import json, re, sys
d = json.load(open(sys.argv[1]))
print(d['device']['type'], re.sub(r'[^a-z0-9]+', '-', d['device']['name'].lower()).strip('-'))
PY
        )
        if [ -z "$peer" ]; then
            peer=cpu
            if [ "$type" = GPU ] &&
                "$python" -c 'import torch,sys; sys.exit(not torch.cuda.is_available())'; then
                peer=cuda
            fi
        fi
        if [ "$type" = GPU ] && [ "$peer" = cpu ]; then
            echo "warning: the OpenCL device is a GPU but the PyTorch peer runs on the CPU" >&2
        fi
    fi
}

run_peer() { # part index, round: the rows of round 1's clnorm-bench JSON of the part, on a CPU
    # device with as many threads as the device has compute units
    local i=$1 r=$2
    "$python" bench/torch_peer.py --from "$tmp/clnorm-1-$i.json" --device "$peer" "${retries[@]}" \
        --json "$tmp/torch-$r-$i.json" | tee -a "$tmp/torch.txt" || status=$?
    [ -f "$tmp/torch-$r-$i.json" ] && inputs+=("$tmp/torch-$r-$i.json")
}

for r in $(seq "$rounds"); do
    order=("${!parts[@]}")
    [ $((r % 2)) = 0 ] && order=($(printf '%s\n' "${!parts[@]}" | sort -rn))
    for i in "${order[@]}"; do
        echo "== round $r/$rounds, part $((i + 1))/${#parts[@]}: ${parts[$i]:-all rows}" |
            tee -a "$tmp/clnorm.txt"
        if [ $((r % 2)) = 1 ]; then
            run_clnorm "$i" "$r" "$@"
            run_peer "$i" "$r"
        else
            run_peer "$i" "$r"
            run_clnorm "$i" "$r" "$@"
        fi
    done
done

# on a GPU, also ../shared/gpu/torch_reference.py (PyTorch/cuDNN with its own shapes)
reference=${TORCH_REFERENCE:-}
if [ -z "$reference" ] && [ "$type" = GPU ] && [ "$peer" = cuda ]; then
    for f in .gpu/torch_reference.py ../shared/gpu/torch_reference.py; do
        [ -f "$f" ] && { reference=$f; break; }
    done
fi
if [ -n "$reference" ] && [ "$reference" != off ]; then
    echo
    echo "== $reference"
    if OUT=$tmp "$python" "$reference" ${quick:+--quick} >"$tmp/reference.txt" 2>&1; then
        inputs+=("$tmp/torch_reference.json")
    else
        echo "warning: $reference failed; see below" >&2
    fi
    cat "$tmp/reference.txt"
fi

out=$results/$slug-$(date -u +%Y-%m-%d)$quick
echo
"$python" bench/plot.py "${inputs[@]}" --combine "$out.json" --png "$out.png" --pivot |
    tee "$tmp/compare.txt"
cat "$tmp/clnorm.txt" "$tmp/torch.txt" "$tmp/compare.txt" >"$out.txt"
echo "results: $out.json $out.png $out.txt ($(($(date +%s) - start)) s)"
exit "$status"

#!/usr/bin/env bash
# clnorm-bench and its PyTorch peer in one run (same machine, one after the other), then the
# ratio table, the targets of issue 5 and the chart:
#   bash bench/run.sh [clnorm-bench options]      e.g. --quick, --device cpu, --ops backward
# Writes bench/results/<device>-<date>.json (both tools' rows), .png (fraction of copy bandwidth
# per op, PyTorch beside clnorm) and .txt (the printed tables).
# Environment: BUILD_DIR (default build-bench; configured --buildtype=release -Dwerror=true if
# new), CLNORM_BENCH (a prebuilt clnorm-bench: nothing is built), PYTHON (default
# /usr/bin/python3, Debian's python3-torch), PEER_DEVICE (cpu or cuda; default cuda when the
# OpenCL device is a GPU and PyTorch sees CUDA, else cpu), RESULTS (default bench/results).
# PoCL's own kernel cache is pointed at an empty folder (POCL_CACHE_DIR) for the run, so that the
# "cold" first-call latency includes the driver's compile, as on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build-bench}
python=${PYTHON:-/usr/bin/python3}
results=${RESULTS:-bench/results}

bench=${CLNORM_BENCH:-}
if [ -z "$bench" ]; then
    [ -f "$build/build.ninja" ] || meson setup "$build" -Dwerror=true --buildtype=release >/dev/null
    ninja -C "$build" >/dev/null
    bench=$build/bench/clnorm-bench
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export POCL_CACHE_DIR=${POCL_CACHE_DIR:-$tmp/pocl-cache}
mkdir -p "$POCL_CACHE_DIR" "$results"

status=0
"$bench" --json "$tmp/clnorm.json" "$@" | tee "$tmp/clnorm.txt" || status=$?
[ -f "$tmp/clnorm.json" ] || { echo "clnorm-bench failed (status $status)" >&2; exit 1; }

read -r type slug < <("$python" - "$tmp/clnorm.json" <<'PY'
import json, re, sys
d = json.load(open(sys.argv[1]))
print(d['device']['type'], re.sub(r'[^a-z0-9]+', '-', d['device']['name'].lower()).strip('-'))
PY
)
peer=${PEER_DEVICE:-}
if [ -z "$peer" ]; then
    peer=cpu
    if [ "$type" = GPU ] && "$python" -c 'import torch,sys; sys.exit(not torch.cuda.is_available())'; then
        peer=cuda
    fi
fi
[ "$type" = GPU ] && [ "$peer" = cpu ] &&
    echo "warning: the OpenCL device is a GPU but the PyTorch peer runs on the CPU" >&2

echo
"$python" bench/torch_peer.py --from "$tmp/clnorm.json" --device "$peer" --threads "$(nproc)" \
    --json "$tmp/torch.json" | tee "$tmp/torch.txt" || status=$?

quick=""
case " $* " in *" --quick "*) quick=-quick ;; esac
out=$results/$slug-$(date -u +%Y-%m-%d)$quick
echo
"$python" bench/plot.py "$tmp/clnorm.json" "$tmp/torch.json" --combine "$out.json" --png "$out.png" |
    tee "$tmp/compare.txt"
cat "$tmp/clnorm.txt" "$tmp/torch.txt" "$tmp/compare.txt" >"$out.txt"
echo "results: $out.json $out.png $out.txt"
exit "$status"

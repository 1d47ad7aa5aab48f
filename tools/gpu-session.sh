#!/usr/bin/env bash
# One prepared run for a lent NVIDIA GPU machine (the `device` tool, ../shared/gpu/README.md):
# device time is short (15 minutes a session, the machine's start included), so everything that
# needs the GPU runs in one command that fits one call, and its results come back in $OUT.
#
#   here:  bash tools/gpu-session.sh prepare
#          builds build-gpu/ (release: the library, the tests, clnorm-bench, clnorm-info; no
#          examples, ~4 MB) and packs .gpu/ (the runtime libraries that machine lacks)
#   there: the device tool's `run` with carry ["build-gpu", ".gpu"], timeout_s 600:
#          bash tools/gpu-session.sh run
#
# run: the OpenCL devices, `clnorm-info --check` on the GPU, every test program on the GPU (each
# under a time cap), then bench/run.sh on the GPU (one clnorm-bench run, then PyTorch with CUDA
# events, then ../shared/gpu/torch_reference.py: the GPU machine is not shared, so the rows need
# no pairing). Files in $OUT (default ./gpu-out): summary.txt (also printed last), tests.log,
# info.txt and the bench's .json/.png/.txt.
# Environment: GPU_SESSION_DEVICE (the CLNORM_DEVICE selector, default gpu), BENCH_ARGS (extra
# clnorm-bench options, e.g. --quick), TEST_CAP_S (seconds per test program, default 120),
# BENCH_CAP_S (default 330).
# Rehearse the whole flow here on PoCL (no .gpu/ needed):
#   GPU_SESSION_DEVICE=cpu BENCH_ARGS=--quick OUT=/tmp/gs bash tools/gpu-session.sh run
set -uo pipefail
cd "$(dirname "$0")/.."
build=build-gpu

prepare() {
    set -e
    if [ -f "$build/build.ninja" ]; then
        meson configure "$build" --buildtype=release -Dexamples=false -Dtests=true -Dbench=true \
            >/dev/null
    else
        meson setup "$build" --buildtype=release -Dexamples=false -Dtests=true -Dbench=true \
            >/dev/null
    fi
    ninja -C "$build" >/dev/null
    bash ../shared/gpu/pack.sh "$build"
    echo "gpu-session: carry [\"$build\", \".gpu\"] and run: bash tools/gpu-session.sh run"
}

run_on_device() {
    local out=${OUT:-$PWD/gpu-out} dev=${GPU_SESSION_DEVICE:-gpu}
    local cap=${TEST_CAP_S:-120} bench_cap=${BENCH_CAP_S:-330}
    mkdir -p "$out"
    local summary=$out/summary.txt cache
    cache=$(mktemp -d)
    : >"$summary"
    export CLNORM_DEVICE=$dev CLNORM_CACHE_DIR=$cache
    {
        echo "== every OpenCL device"
        "$build/clnorm-info" 2>&1
        echo "== clnorm-info --check $dev"
        "$build/clnorm-info" --check "$dev" 2>&1
        echo "check rc=$?"
    } >"$out/info.txt"
    grep -m1 "^device " "$out/info.txt" >>"$summary"
    grep -m1 -E "^(self-check|check rc=)" "$out/info.txt" >>"$summary"
    grep -m1 "^first call" "$out/info.txt" >>"$summary"

    : >"$out/tests.log"
    for t in foundation batchnorm batchnorm_api batchnorm_layer featurenorm featurenorm_layer \
        reliability params bad_input; do
        echo "=== test_$t" >>"$out/tests.log"
        timeout "$cap" "$build/tests/test_$t" --jobs=4 >>"$out/tests.log" 2>&1
        local rc=$?
        printf 'test_%-18s rc=%-3s %s\n' "$t" "$rc" \
            "$(grep "Synthesis" "$out/tests.log" | tail -1 | sed 's/.*Synthesis: //')" >>"$summary"
    done

    # the bench: clnorm-bench, then the PyTorch peer (CUDA) and torch_reference.py
    local log=$out/bench-output.txt
    # shellcheck disable=SC2086
    PAIRED=0 ROUNDS=1 CLNORM_BENCH=$build/bench/clnorm-bench RESULTS=$out \
        timeout "$bench_cap" bash bench/run.sh --device "$dev" ${BENCH_ARGS:-} >"$log" 2>&1
    echo "bench rc=$? ($(grep -c '' "$log") lines of output)" >>"$summary"
    grep -E "^copy bandwidth" "$log" | head -2 >>"$summary"
    sed -n '/^targets (issue 5)/,$p' "$log" >>"$summary"
    rm -rf "$cache"
    echo "== summary"
    cat "$summary"
}

case "${1:-}" in
prepare) prepare ;;
run)
    # on the GPU machine: NVIDIA's driver registered and the carried libraries on the path first
    if [ -f .gpu/on-device.sh ] && [ -z "${GPU_SESSION_INNER:-}" ]; then
        GPU_SESSION_INNER=1 exec bash .gpu/on-device.sh bash "$0" run
    fi
    run_on_device
    ;;
*)
    echo "usage: bash tools/gpu-session.sh prepare|run" >&2
    exit 2
    ;;
esac

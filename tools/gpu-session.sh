#!/usr/bin/env bash
# One prepared run for a lent NVIDIA GPU machine (the `device` tool, ../shared/gpu/README.md):
# device time is short (15 minutes a session, the machine's start included), so everything that
# needs the GPU runs in one command that fits one call, and its results come back in $OUT.
#
#   here:  bash tools/gpu-session.sh prepare
#          builds build-gpu/ (release: the library, the tests, clnorm-bench, clnorm-info; no
#          examples, ~4 MB) and packs .gpu/ (the runtime libraries that machine lacks); with
#          BASELINE_REV=<commit>, also that commit's kernels/ into build-gpu/baseline-kernels/,
#          for a sweep set "kernels=build-gpu/baseline-kernels" (bench/sweep_params.py: those
#          kernel sources against the build's own)
#   there: the device tool's `run` with carry ["build-gpu", ".gpu"], timeout_s 600:
#          bash tools/gpu-session.sh run
#
# run, all within DEADLINE_S (default 500 s): the OpenCL devices and `clnorm-info --check` on the
# GPU; every test program on the GPU (each test under a 30 s timeout, so that a hang names
# itself); bench/run.sh on the GPU (one clnorm-bench run, then PyTorch with CUDA events, then
# ../shared/gpu/torch_reference.py: the GPU machine is not shared, so the rows need no pairing);
# then clnorm-tune with the time left. Files in $OUT (default
# ./gpu-out, 8 at most come back): summary.txt (also printed last), info.txt, bench-output.txt,
# the bench's .json/.png/.txt, tests.log, tune.txt (ending with the parameter file the search
# wrote, if it finished).
# Environment: GPU_SESSION_DEVICE (the CLNORM_DEVICE selector, default gpu), BENCH_ARGS (extra
# clnorm-bench options, e.g. --quick), BENCH_OPS (its --ops filter), BENCH_CAP_S (default 270),
# TEST_CAP_S (seconds per test program, default 60), TESTS_CAP_S (all of them, default 150),
# SWEEP_SETS (parameter sets for bench/sweep_params.py, ";"-separated; SWEEP_SHAPES, SWEEP_OPS:
# its filters; output in sweep.txt), TUNE_ARGS (e.g. --quick), NO_TUNE, NO_BENCH, TESTS (the test
# programs to run, without their test_ prefix; default all).
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
    # the commit the bench records: the GPU machine's copy of the tree may carry a stale .git
    git describe --always --dirty --abbrev=12 --exclude='*' >"$build/commit.txt"
    if [ -n "${BASELINE_REV:-}" ]; then
        rm -rf "$build/baseline-kernels" && mkdir -p "$build/baseline-kernels"
        for f in $(git ls-tree --name-only "$BASELINE_REV" kernels/ | grep '\.cl$'); do
            git show "$BASELINE_REV:$f" >"$build/baseline-kernels/$(basename "$f")"
        done
    fi
    bash ../shared/gpu/pack.sh "$build"
    echo "gpu-session: carry [\"$build\", \".gpu\"] and run: bash tools/gpu-session.sh run"
}

# seconds left before the session's deadline, at most $1 (a step's own cap), at least 1
left() {
    local rest=$((deadline - $(date +%s)))
    [ "$rest" -gt "$1" ] && rest=$1
    [ "$rest" -lt 1 ] && rest=1
    echo "$rest"
}

run_on_device() {
    local out=${OUT:-$PWD/gpu-out} dev=${GPU_SESSION_DEVICE:-gpu}
    local cap=${TEST_CAP_S:-60} tests_cap=${TESTS_CAP_S:-150} bench_cap=${BENCH_CAP_S:-270}
    deadline=$(($(date +%s) + ${DEADLINE_S:-500}))
    mkdir -p "$out"
    local summary=$out/summary.txt cache
    cache=$(mktemp -d)
    : >"$summary"
    export CLNORM_DEVICE=$dev CLNORM_CACHE_DIR=$cache
    [ -f "$build/commit.txt" ] && export CLNORM_BENCH_COMMIT="$(cat "$build/commit.txt")"
    {
        echo "== every OpenCL device"
        timeout 30 "$build/clnorm-info" 2>&1
        echo "== clnorm-info --check $dev"
        timeout 60 "$build/clnorm-info" --check "$dev" 2>&1
        echo "check rc=$?"
    } >"$out/info.txt"
    grep -m1 "^device " "$out/info.txt" >>"$summary"
    grep -m1 -E "^(self-check|check rc=)" "$out/info.txt" >>"$summary"
    grep -m1 "^first call" "$out/info.txt" >>"$summary"

    # every test program on the device, each under its cap, all of them under tests_cap
    local tests_end=$(($(date +%s) + tests_cap))
    : >"$out/tests.log"
    for t in ${TESTS:-foundation batchnorm batchnorm_api batchnorm_layer featurenorm \
        featurenorm_layer reliability params bad_input}; do
        local rest=$((tests_end - $(date +%s)))
        [ "$rest" -gt "$cap" ] && rest=$cap
        if [ "$rest" -lt 5 ]; then
            echo "test_$t: not run (the tests' time is up)" >>"$summary"
            continue
        fi
        echo "=== test_$t" >>"$out/tests.log"
        timeout "$(left "$rest")" "$build/tests/test_$t" --jobs=8 --timeout 30 --verbose \
            >>"$out/tests.log" 2>&1
        local rc=$?
        printf 'test_%-18s rc=%-3s %s\n' "$t" "$rc" "$(sed -n "/^=== test_$t\$/,\$p" \
            "$out/tests.log" | grep "Synthesis" | sed 's/.*Synthesis: //')" >>"$summary"
    done

    # the bench: clnorm-bench, then the PyTorch peer (CUDA) and torch_reference.py
    if [ -z "${NO_BENCH:-}" ]; then
        local log=$out/bench-output.txt
        # shellcheck disable=SC2086
        PAIRED=0 ROUNDS=1 CLNORM_BENCH=$build/bench/clnorm-bench RESULTS=$out \
            timeout "$(left "$bench_cap")" bash bench/run.sh --device "$dev" ${BENCH_ARGS:-} \
            ${BENCH_OPS:+--ops "$BENCH_OPS"} >"$log" 2>&1
        echo "bench rc=$? ($(grep -c '' "$log") lines of output)" >>"$summary"
        grep -E "^copy bandwidth" "$log" | head -2 >>"$summary"
        sed -n '/^targets (issue 5)/,$p' "$log" >>"$summary"
    fi

    # parameter overrides against the table, each A/B in one process (bench/sweep_params.py),
    # with the time that is left: SWEEP_SETS="name=v[,name=v];..."
    if [ -n "${SWEEP_SETS:-}" ] && [ "$(left 9999)" -gt 30 ]; then
        local sets=()
        IFS=';' read -ra sets <<<"$SWEEP_SETS"
        timeout "$(left 9999)" python3 -u bench/sweep_params.py --bench "$build/bench/clnorm-bench" \
            ${SWEEP_SHAPES:+--shapes "$SWEEP_SHAPES"} ${SWEEP_OPS:+--ops "$SWEEP_OPS"} \
            "${sets[@]/#/--set=}" -- --device "$dev" >"$out/sweep.txt" 2>&1
        echo "sweep rc=$? (sweep.txt)" >>"$summary"
    fi

    # the tuner with the time that is left (line-buffered: a search cut short still shows its
    # candidates); its parameter file goes to $OUT, not into the device's cache
    if [ -z "${NO_TUNE:-}" ] && [ "$(left 9999)" -gt 30 ]; then
        # shellcheck disable=SC2086
        timeout "$(left 9999)" stdbuf -oL "$build/clnorm-tune" --device "$dev" \
            --out "$out/tuned-params.txt" ${TUNE_ARGS:-} >"$out/tune.txt" 2>&1
        echo "tune rc=$? (tune.txt: $(grep -c '' "$out/tune.txt") lines)" >>"$summary"
        grep -E "^(best:|result:|final)" "$out/tune.txt" >>"$summary"
        if [ -f "$out/tuned-params.txt" ]; then # into tune.txt: 8 files come back at most
            { echo "== tuned-params.txt"; cat "$out/tuned-params.txt"; } >>"$out/tune.txt"
            rm "$out/tuned-params.txt"
        fi
    fi
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

#!/usr/bin/env bash
# clnorm's set-up and run script: the README's two commands.
#   bash tools/run.sh main   install what is missing, build, run the main job on the default device
#   bash tools/run.sh test   install what is missing, build, run every test (see "test" below)
# Idempotent; works as root, or as a user with sudo.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

packages=(build-essential meson ninja-build pkg-config python3 ocl-icd-opencl-dev opencl-headers
          pocl-opencl-icd clinfo oclgrind libclblast-dev libcriterion-dev zlib1g-dev
          dataset-fashion-mnist python3-matplotlib clang libclang-rt-14-dev clang-15 libclc-15)

install_packages() {
    local missing=()
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "== installing: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# build DIR [meson options...]: configure once, then compile.
build() {
    local dir=$1
    shift
    if [ -f "$dir/build.ninja" ]; then
        meson configure "$dir" "$@" >/dev/null
    else
        meson setup "$dir" "$@" >/dev/null
    fi
    ninja -C "$dir" >/dev/null
}

run_main() {
    build build -Dwerror=true
    echo "== OpenCL devices"
    ./build/clnorm-info
    echo "== self-check on the default device (cold or warm program cache)"
    ./build/clnorm-info --check
    echo "== clnorm-train: the same MLP with and without batch norm on Fashion-MNIST"
    local out=build/clnorm-train-out
    ./build/examples/clnorm-train --out "$out"
    echo "== plots of that run"
    # Debian's python3 has python3-matplotlib (a python3 earlier on PATH may not)
    local py=python3
    [ -x /usr/bin/python3 ] && py=/usr/bin/python3
    "$py" examples/train/plot.py "$out" ||
        echo "(no plots: plot.py failed; the numbers are in $out/*.csv and $out/summary.txt)"
}

# Runs a step, remembers whether it failed, goes on with the next.
failures=()
step() {
    local name=$1
    shift
    echo
    echo "=================== $name"
    if "$@"; then echo "=== $name: passed"; else echo "=== $name: FAILED"; failures+=("$name"); fi
}

# sanitizer_findings LOG: fails when a sanitizer reported anything in a meson test log. Criterion
# does not fail a test whose process LeakSanitizer reports at exit (the report is printed, the
# test passes), so the log is searched.
sanitizer_findings() {
    if grep -nE "ERROR: (LeakSanitizer|AddressSanitizer)|runtime error:" "$1"; then
        echo "sanitizer reports in $1 (above)"
        return 1
    fi
}

sanitizer_env=(ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
    LSAN_OPTIONS=suppressions=$root/tests/lsan.supp:print_suppressions=0
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1)

sanitized_tests() {
    build build-asan -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false &&
        env "${sanitizer_env[@]}" meson test -C build-asan --print-errorlogs &&
        sanitizer_findings build-asan/meson-logs/testlog.txt
}

fault_injection() {
    # Allocation and OpenCL failures injected one call at a time (tests/test_fault_injection.c)
    # into a library built with -Dfault_injection=true, under AddressSanitizer + UBSan. Only the
    # fault test and what running it needs are built.
    local dir=build-fault
    local options=(-Dwerror=true -Dfault_injection=true -Dbench=false -Dexamples=false
        -Db_sanitize=address,undefined -Db_lundef=false)
    if [ -f "$dir/build.ninja" ]; then
        meson configure "$dir" "${options[@]}" >/dev/null
    else
        meson setup "$dir" "${options[@]}" >/dev/null
    fi
    ninja -C "$dir" tests/test_fault_injection tests/clnorm-info-test >/dev/null &&
        env "${sanitizer_env[@]}" meson test -C "$dir" --no-rebuild --print-errorlogs \
            fault_injection &&
        grep -h "^fault_injection:" "$dir/meson-logs/testlog.txt" &&
        sanitizer_findings "$dir/meson-logs/testlog.txt"
}

oclgrind_clean() {
    # The kernel tests on small shapes under the Oclgrind simulator, with GPU-shaped parameters
    # (work-groups of 16: the two-stage reductions, the grid-strided elementwise passes) and with
    # CPU-shaped ones (work-groups of one: whole-row and one-launch kernels), and the self-check:
    # every kernel of the library runs; any finding fails the step. Unoptimized builds:
    # Oclgrind 21.10's uninitialized-value checker stops at LLVM's `freeze` instruction, which the
    # optimizer emits for division/remainder pairs.
    local log=build/oclgrind.log params
    : >"$log"
    # (the third set: the GPU-shaped one with the parameters no table row uses yet, so that the
    # next GPU sweep can time them: flat channels-first reductions, channels-last blocks of 4 rows)
    for params in "work_group_size=16,vector_width=4,items_per_thread=2,block_vectors=2,item_tile=1,channel_tile=4,plane_tile=1,gather_units=2,register_short_units=4,register_backward=1,cached_kib=64" \
        "work_group_size=1,vector_width=8,block_vectors=4,item_tile=8,partials_per_channel=3,elementwise_streams=1" \
        "work_group_size=16,vector_width=4,items_per_thread=2,block_vectors=2,item_tile=1,channel_tile=4,plane_tile=1,gather_units=2,register_short_units=4,register_backward=1,cached_kib=64,flat_planes=1,row_block=4"; do
        for program in test_batchnorm test_featurenorm; do
            echo "--- $program under Oclgrind, CLNORM_PARAMS=\"$params\""
            CLNORM_DEVICE=oclgrind CLNORM_TEST_SMALL=1 CLNORM_CACHE_DIR=off CLNORM_PARAMS=$params \
                oclgrind --build-options -cl-opt-disable --data-races --uninitialized --check-api \
                "./build/tests/$program" --jobs=2 >>"$log" 2>&1 || {
                cat "$log"
                return 1
            }
            tail -n 1 "$log"
        done
        # past the small shapes: the CPUs' backward that sums 4 rows at a time (41 rows of 1500)
        echo "--- test_featurenorm, layernorm N41 C1500, under Oclgrind, CLNORM_PARAMS=\"$params\""
        CLNORM_DEVICE=oclgrind CLNORM_TEST_ONLY="layernorm N41 C1500" CLNORM_CACHE_DIR=off \
            CLNORM_PARAMS=$params \
            oclgrind --build-options -cl-opt-disable --data-races --uninitialized --check-api \
            ./build/tests/test_featurenorm --filter 'featurenorm/matches_float64' >>"$log" 2>&1 || {
            cat "$log"
            return 1
        }
        tail -n 1 "$log"
        # valid calls on sub-buffers inside canary parents (tests/test_bad_input.c)
        echo "--- test_bad_input (sub-buffers) under Oclgrind, CLNORM_PARAMS=\"$params\""
        CLNORM_DEVICE=oclgrind CLNORM_CACHE_DIR=off CLNORM_PARAMS=$params \
            oclgrind --build-options -cl-opt-disable --data-races --uninitialized --check-api \
            ./build/tests/test_bad_input --filter 'subbuffers/*' --jobs=2 >>"$log" 2>&1 || {
            cat "$log"
            return 1
        }
        tail -n 1 "$log"
    done
    # the channels-last training forward in one launch from the cache (rows_cached_kib, which no
    # table row uses yet), for rows past the registers of 2 vectors a work-item; and the in-place
    # forward (y = x: the barrier after the pivots' reads) with it and with the register kernels
    local gpu="work_group_size=16,vector_width=4,items_per_thread=2,block_vectors=2,item_tile=1,channel_tile=4,plane_tile=1,gather_units=2,register_short_units=4,register_backward=1,cached_kib=64"
    for run in "$gpu,register_units=2,rows_cached_kib=65536 test_batchnorm */*" \
        "$gpu,register_units=2,rows_cached_kib=65536 test_batchnorm_api bn_in_place/*" \
        "$gpu test_batchnorm_api bn_in_place/*"; do
        read -r params program filter <<<"$run"
        echo "--- $program --filter '$filter' under Oclgrind, CLNORM_PARAMS=\"$params\""
        CLNORM_DEVICE=oclgrind CLNORM_TEST_SMALL=1 CLNORM_CACHE_DIR=off CLNORM_PARAMS=$params \
            oclgrind --build-options -cl-opt-disable --data-races --uninitialized --check-api \
            "./build/tests/$program" --filter "$filter" --jobs=2 >>"$log" 2>&1 || {
            cat "$log"
            return 1
        }
        tail -n 1 "$log"
    done
    echo "--- clnorm-info --check (the self-check kernel) under Oclgrind"
    CLNORM_DEVICE=oclgrind CLNORM_CACHE_DIR=off \
        oclgrind --build-options -cl-opt-disable --data-races --uninitialized --check-api \
        ./build/clnorm-info --check >>"$log" 2>&1 || {
        cat "$log"
        return 1
    }
    if grep -E "Invalid (read|write)|data race|Uninitiali[sz]ed|runtime error|divergence|FATAL" "$log"; then
        return 1
    fi
}

install_check() {
    # meson install + pkg-config, and use as a meson subproject.
    local prefix=$root/build-install/prefix
    build build-install -Dtests=false --prefix="$prefix" --libdir=lib
    meson install -C build-install >/dev/null
    local pc=$prefix/lib/pkgconfig
    cc -std=c11 examples/minimal.c -o build-install/minimal \
        $(PKG_CONFIG_PATH=$pc pkg-config --cflags --libs clnorm)
    LD_LIBRARY_PATH=$prefix/lib ./build-install/minimal
    local consumer=build-install/consumer
    rm -rf "$consumer" && mkdir -p "$consumer/subprojects"
    cp tests/consumer/meson.build examples/minimal.c "$consumer/"
    ln -s "$root" "$consumer/subprojects/clnorm"
    meson setup "$consumer/build" "$consumer" >/dev/null
    ninja -C "$consumer/build" >/dev/null
    "$consumer/build/minimal"
}

build_fuzz_library() {
    CC=clang build build-fuzz -Dtests=false -Dbench=false -Dexamples=false \
        -Db_sanitize=address -Db_lundef=false -Dc_args=-fsanitize=fuzzer-no-link
}

fuzz_layer_files() {
    # libFuzzer on the layer parameter-file loaders for a minute (tests/fuzz/); the library
    # itself is instrumented for coverage. New inputs go to build-fuzz/corpus, not to the repo.
    build_fuzz_library || return 1
    clang -std=c11 -g -O1 -fsanitize=fuzzer,address -Iinclude -Ibuild-fuzz/include \
        tests/fuzz/fuzz_layer_file.c -o build-fuzz/fuzz_layer_file \
        -Lbuild-fuzz -lclnorm -Wl,-rpath,"$root/build-fuzz" -lOpenCL -lm || return 1
    mkdir -p build-fuzz/corpus
    CLNORM_CACHE_DIR=$root/build-fuzz/program-cache ASAN_OPTIONS=detect_leaks=1 \
        LSAN_OPTIONS=suppressions=$root/tests/lsan.supp:print_suppressions=0 \
        ./build-fuzz/fuzz_layer_file -max_total_time=60 -print_final_stats=1 \
        -dict=tests/fuzz/layer_file.dict build-fuzz/corpus tests/fuzz/corpus 2>&1 |
        grep -E "^(stat::|fuzz_layer_file:|Done|==[0-9]+==|SUMMARY)|ERROR|crash-|leak-"
    return "${PIPESTATUS[0]}"
}

fuzz_arguments() {
    # libFuzzer on argument and descriptor validation for a minute (tests/fuzz/fuzz_arguments.c:
    # shapes, layouts, enums, eps, momentum, groups, buffers too small, NULL or of another
    # context, wait lists), on the same instrumented library. New inputs go to
    # build-fuzz/arguments-corpus; the seeds are tests/fuzz/arguments-corpus.
    build_fuzz_library || return 1
    clang -std=c11 -g -O1 -fsanitize=fuzzer,address -Iinclude -Ibuild-fuzz/include \
        tests/fuzz/fuzz_arguments.c -o build-fuzz/fuzz_arguments \
        -Lbuild-fuzz -lclnorm -Wl,-rpath,"$root/build-fuzz" -lOpenCL -lm || return 1
    mkdir -p build-fuzz/arguments-corpus
    CLNORM_CACHE_DIR=$root/build-fuzz/program-cache ASAN_OPTIONS=detect_leaks=1 \
        LSAN_OPTIONS=suppressions=$root/tests/lsan.supp:print_suppressions=0 \
        ./build-fuzz/fuzz_arguments -max_total_time=60 -print_final_stats=1 \
        build-fuzz/arguments-corpus tests/fuzz/arguments-corpus 2>&1 |
        grep -E "^(stat::|fuzz_arguments:|Done|==[0-9]+==|SUMMARY)|ERROR|crash-|leak-"
    return "${PIPESTATUS[0]}"
}

tsan_concurrency() {
    # The concurrency tests of tests/test_reliability.c under ThreadSanitizer (gcc), built
    # without Criterion, whose runner cannot start under TSan (see docs/reliability.md).
    build build-tsan -Dtests=false -Dbench=false -Dexamples=false -Db_sanitize=thread \
        -Db_lundef=false || return 1
    cc -std=c11 -D_POSIX_C_SOURCE=200809L -DRELIABILITY_STANDALONE -g -O1 -fsanitize=thread \
        -Iinclude -Ibuild-tsan/include tests/test_reliability.c -o build-tsan/reliability-tsan \
        -Lbuild-tsan -lclnorm -Wl,-rpath,"$root/build-tsan" -lOpenCL -lpthread -lm || return 1
    CLNORM_CACHE_DIR=$root/build-tsan/program-cache TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
        ./build-tsan/reliability-tsan
}

run_tests() {
    build build -Dwerror=true
    step "test suite on every OpenCL device" meson test -C build --print-errorlogs
    # the tuner's short search on the default device, printing a result and writing nothing
    step "clnorm-tune --quick --dry-run" bash -c 'CLNORM_CACHE_DIR=build/tests/program-cache \
        ./build/clnorm-tune --quick --dry-run >build/tune-smoke.log 2>&1; rc=$?; tail -n 4 \
        build/tune-smoke.log; [ $rc -eq 0 ] && grep -q "^result: geo-mean" build/tune-smoke.log'
    # PoCL stands in for a GPU: GPU-shaped parameters under a strict work-group limit, then
    # work-groups of one with many partials per channel (the stage-2 tree merge).
    step "GPU-shaped parameters, POCL_MAX_WORK_GROUP_SIZE=64" \
        env POCL_MAX_WORK_GROUP_SIZE=64 \
        CLNORM_PARAMS=work_group_size=64,vector_width=4,items_per_thread=4,channel_tile=16 \
        meson test -C build --print-errorlogs
    # the same without the one-launch register kernels (small rows and channels then take the
    # general GPU path: statistics, per-channel merge, apply), with 5 units per work-item in the
    # strided elementwise passes, gathered 3 at a time (a last group of 2)
    step "GPU-shaped parameters, register_units=0, gather_units=3: the kernel tests" \
        env POCL_MAX_WORK_GROUP_SIZE=64 CLNORM_CACHE_DIR=build/tests/program-cache \
        CLNORM_PARAMS=work_group_size=64,vector_width=4,items_per_thread=5,channel_tile=16,register_units=0,gather_units=3 \
        bash -c './build/tests/test_batchnorm --jobs=2 && ./build/tests/test_featurenorm --jobs=2'
    # the register kernels at the NVIDIA row's 8 vectors per work-item (the step above has the
    # 16 of PoCL's row), with a short build of 4 and the one-launch layer/RMS norm dx: layer and
    # RMS norm rows past 64 x 8 vectors take the cached one-launch kernels where a row is within
    # 64 KiB, else the general path; the strided passes gathering all 4 of a work-item's units;
    # channels-first statistics blocks of 4 vectors (channels-last keeps its 2 rows)
    step "GPU-shaped parameters, register_units=8 (short 4, backward, cached rows), gather_units=4, block_vectors=4: the kernel tests" \
        env POCL_MAX_WORK_GROUP_SIZE=64 CLNORM_CACHE_DIR=build/tests/program-cache \
        CLNORM_PARAMS=work_group_size=64,vector_width=4,items_per_thread=4,channel_tile=16,register_units=8,gather_units=4,register_short_units=4,register_backward=1,cached_kib=64,block_vectors=4 \
        bash -c './build/tests/test_batchnorm --jobs=2 && ./build/tests/test_featurenorm --jobs=2'
    # the same with what the next GPU sweep times against the table: channels-first reductions
    # over a channel's planes as one run (flat_planes), channels-last blocks of 4 rows (row_block);
    # then with scalar loads (blocks of 4 values that must not split the exact data's pairs), and
    # with blocks of 7 float2 (a count whose reciprocal rounds: the exact data's mean must not);
    # then, on its own, the channels-last training forward in one launch from the cache
    # (rows_cached_kib), also in place
    step "GPU-shaped parameters as above, flat_planes=1, row_block=4; scalars, row_block=8; blocks of 7 float2; rows_cached_kib=65536: the kernel tests" \
        env POCL_MAX_WORK_GROUP_SIZE=64 CLNORM_CACHE_DIR=build/tests/program-cache bash -c '
        for p in work_group_size=64,vector_width=4,items_per_thread=4,channel_tile=16,register_units=8,gather_units=4,register_short_units=4,register_backward=1,cached_kib=64,block_vectors=4,flat_planes=1,row_block=4 \
            work_group_size=64,vector_width=1,block_vectors=3,items_per_thread=4,channel_tile=16,register_units=8,flat_planes=1,row_block=8 \
            work_group_size=64,vector_width=2,block_vectors=7,register_units=0,flat_planes=1; do
            CLNORM_PARAMS=$p ./build/tests/test_batchnorm --jobs=2 &&
                CLNORM_PARAMS=$p ./build/tests/test_featurenorm --jobs=2 || exit 1
        done
        # (rows_cached_kib takes only channels of at least one vector per compute unit: PoCL
        # reports a unit per thread, so the thread count is pinned for the test shapes)
        p=work_group_size=64,vector_width=4,items_per_thread=4,channel_tile=16,register_units=8,gather_units=4,register_short_units=4,register_backward=1,cached_kib=64,block_vectors=4,rows_cached_kib=65536
        POCL_MAX_PTHREAD_COUNT=2 CLNORM_PARAMS=$p ./build/tests/test_batchnorm --jobs=2 &&
            POCL_MAX_PTHREAD_COUNT=2 CLNORM_PARAMS=$p ./build/tests/test_batchnorm_api \
                --filter "bn_in_place/*"'
    # (each elementwise_streams value in one of the next two steps, whatever the table's row)
    step "POCL_MAX_WORK_GROUP_SIZE=1, 7 partials per channel, elementwise_streams=2" \
        env POCL_MAX_WORK_GROUP_SIZE=1 \
        CLNORM_PARAMS=vector_width=2,partials_per_channel=7,elementwise_streams=2 \
        meson test -C build --print-errorlogs
    # scalar loads with an odd block_vectors: statistics blocks of an even value count still
    # (stats_block_vectors), so the exact-statistics test holds
    step "vector_width=1, block_vectors=3, elementwise_streams=1: the kernel tests" \
        env CLNORM_PARAMS=vector_width=1,block_vectors=3,elementwise_streams=1 \
        CLNORM_CACHE_DIR=build/tests/program-cache \
        bash -c './build/tests/test_batchnorm --jobs=2 && ./build/tests/test_featurenorm --jobs=2'
    # the kernels through LLVM's AMD GPU back end and clang's PTX (tools/kernel-resources.py):
    # no kernel that GPUs launch keeps data in scratch or on the stack beyond its budget
    # (also with the gathered strided passes and blocks of 4 vectors, which the table does not
    # use yet)
    step "static GPU resources (amdgcn, nvptx64)" bash -c 'python3 tools/kernel-resources.py \
        --check && python3 tools/kernel-resources.py --check --params gather_units=4 && \
        python3 tools/kernel-resources.py --check --params block_vectors=4 && \
        python3 tools/kernel-resources.py --check --params flat_planes=1,row_block=8'
    step "AddressSanitizer + UBSan" sanitized_tests
    step "fault injection (allocation and OpenCL failures), under ASan + UBSan" fault_injection
    step "Oclgrind (races, out-of-bounds, uninitialised reads)" oclgrind_clean
    step "install, pkg-config and meson subproject" install_check
    step "libFuzzer: layer parameter files (60 s)" fuzz_layer_files
    step "libFuzzer: arguments and descriptors (60 s)" fuzz_arguments
    step "ThreadSanitizer: concurrency tests" tsan_concurrency
    echo
    if [ ${#failures[@]} -gt 0 ]; then
        echo "FAILED steps: ${failures[*]}"
        return 1
    fi
    echo "all test steps passed"
}

case "${1:-}" in
main) install_packages && run_main ;;
test) install_packages && run_tests ;;
*) echo "usage: bash tools/run.sh main|test" >&2; exit 2 ;;
esac

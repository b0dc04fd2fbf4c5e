#!/usr/bin/env bash
# The firmware's one CI entry point. From a clean clone:
#   1. release host build  -> build/host/fleet-device (+ ctest)
#   2. ASan/UBSan build    -> build/asan, ctest under the sanitizers
#   3. RISC-V portability  -> every core/*.c compiled for rv32imc/ilp32 with picolibc
#   4. optional fuzzing    -> FLEET_FUZZ_SECONDS=N ./build.sh runs the libFuzzer target N s
# Debian packages: see README.md ("Host build"). Exits non-zero on any failure.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
jobs="$(nproc 2>/dev/null || echo 2)"

step() { printf '\n== %s\n' "$*"; }
need() {
    command -v "$1" >/dev/null 2>&1 || { echo "build.sh: missing $1 (apt-get install $2)" >&2; exit 1; }
}
need cmake cmake
need pkg-config pkgconf
need riscv64-unknown-elf-gcc "gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf"

step "host release build"
cmake -S . -B build/host -DFLEET_HOST_BUILD=ON -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/host -j "$jobs"
ctest --test-dir build/host --output-on-failure

step "host ASan/UBSan build + ctest"
cmake -S . -B build/asan -DFLEET_HOST_BUILD=ON -DFLEET_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build/asan -j "$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build/asan --output-on-failure

step "RISC-V (rv32imc, picolibc) compile check of core/"
# Only cJSON's header is needed to compile; copy it alone so no host header leaks in.
cjson_header=""
for dir in $(pkg-config --cflags-only-I libcjson | sed 's/-I//g') /usr/include/cjson; do
    if [ -f "$dir/cJSON.h" ]; then cjson_header="$dir/cJSON.h"; break; fi
done
[ -n "$cjson_header" ] || { echo "build.sh: cJSON.h not found (apt-get install libcjson-dev)" >&2; exit 1; }
mkdir -p build/riscv/include
cp "$cjson_header" build/riscv/include/cJSON.h
count=0
for src in core/*.c; do
    riscv64-unknown-elf-gcc --specs=picolibc.specs -march=rv32imc -mabi=ilp32 \
        -std=c11 -Wall -Wextra -Werror -Os \
        -Icore/include -Icore -Ibuild/riscv/include \
        -c "$src" -o "build/riscv/$(basename "${src%.c}").o"
    count=$((count + 1))
done
echo "compiled $count core sources for rv32imc"

if [ "${FLEET_FUZZ_SECONDS:-0}" -gt 0 ]; then
    step "libFuzzer: document parser and message handling (${FLEET_FUZZ_SECONDS} s)"
    need clang clang
    CC=clang cmake -S . -B build/fuzz -DFLEET_HOST_BUILD=ON -DFLEET_FUZZ=ON \
        -DCMAKE_BUILD_TYPE=Debug >/dev/null
    cmake --build build/fuzz -j "$jobs" --target fuzz_document
    mkdir -p build/fuzz/corpus
    build/fuzz/tests/fuzz_document -max_total_time="$FLEET_FUZZ_SECONDS" -max_len=4096 \
        build/fuzz/corpus tests/fuzz_seeds
fi

step "ok: build/host/fleet-device"

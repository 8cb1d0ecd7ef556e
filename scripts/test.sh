#!/usr/bin/env bash
# The whole test suite: setup, a Release build + CTest (unit, integration, lint),
# a RelWithDebInfo build + the unit tests, then a clang ASan+UBSan build of the
# unit tests and fuzz harnesses + CTest. Warnings are errors here (HEXZ_WERROR),
# never for people who build a release.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
jobs=$(nproc)

# The tests read the test user's FUSE mounts as root (-o allow_root), which
# needs user_allow_other: a test machine opts in.
"$src/scripts/setup.sh" --user-allow-other

# Integration tests run the unprivileged paths as this real, unprivileged user.
if [[ $(id -u) -eq 0 ]] && ! id hexz-test >/dev/null 2>&1; then
  useradd --system --create-home --shell /bin/bash hexz-test
fi
if [[ $(id -u) -eq 0 ]] && ! id hexz-test2 >/dev/null 2>&1; then
  useradd --system --create-home --shell /bin/bash hexz-test2
fi

echo "=== Release build and tests ==="
cmake -S "$src" -B "$src/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DHEXZ_WERROR=ON \
  -DHEXZ_BUILD_BENCH=ON >/dev/null
cmake --build "$src/build" --parallel "$jobs"
(cd "$src/build" && ctest --output-on-failure --parallel "$jobs" --timeout 900)

echo "=== RelWithDebInfo build and unit tests ==="
cmake -S "$src" -B "$src/build-relwithdebinfo" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DHEXZ_WERROR=ON -DHEXZ_BUILD_BENCH=ON >/dev/null
cmake --build "$src/build-relwithdebinfo" --parallel "$jobs"
(cd "$src/build-relwithdebinfo" && ctest --output-on-failure --parallel "$jobs" -L unit)

echo "=== sanitizer build (ASan+UBSan, clang) and fuzzers ==="
cmake -S "$src" -B "$src/build-asan" -G Ninja -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 \
  -DHEXZ_WERROR=ON -DHEXZ_SANITIZE=ON -DHEXZ_FUZZ=ON -DHEXZ_FUZZ_SECONDS="${HEXZ_FUZZ_SECONDS:-30}" >/dev/null
cmake --build "$src/build-asan" --parallel "$jobs"
(cd "$src/build-asan" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --output-on-failure --parallel "$jobs" -L 'unit|fuzz')
echo "=== all tests passed ==="

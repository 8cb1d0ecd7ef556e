#!/usr/bin/env bash
# Configures and builds hexz in build/ (RelWithDebInfo). Extra arguments go to CMake.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
"$src/scripts/setup.sh"
cmake -S "$src" -B "$src/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
cmake --build "$src/build" --parallel "$(nproc)"

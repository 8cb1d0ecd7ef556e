#!/usr/bin/env bash
# hexz benchmarks side by side with peer tools, in one run on one machine.
#   bench/run.sh            full run (real image from /usr, ~1.5 GiB)
#   bench/run.sh --quick    small data, for a smoke test (a few minutes)
# Installs the peers from Debian, builds hexz with the in-process benches,
# prepares the data, runs everything and writes bench/results/DATE.{md,json,png}.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
if [[ $(id -u) -ne 0 ]]; then
  echo "bench: needs root (drop_caches, loop/FUSE peers). Run: sudo $0 $*" >&2
  exit 1
fi
"$src/scripts/setup.sh"
need=()
for p in python3-matplotlib qemu-utils qemu-block-extra nginx-light squashfs-tools squashfuse nbdkit \
         libnbd-bin fio lz4 zstd nbdfuse time; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [[ ${#need[@]} -gt 0 ]]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"; }
fi
cmake -S "$src" -B "$src/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHEXZ_BUILD_BENCH=ON >/dev/null
cmake --build "$src/build" --parallel "$(nproc)"
exec /usr/bin/python3 "$src/bench/run.py" --build "$src/build" "$@"

#!/usr/bin/env bash
# The main job, end to end: build hexz, make a sample ext4 disk image from a
# real directory tree, pack it, inspect it, mount it, list it, unmount it.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
"$src/scripts/build.sh"
hexz="$src/build/hexz/hexz"
work=$(mktemp -d /tmp/hexz-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "== hexz $("$hexz" --version | cut -d" " -f2) built in $src/build"
echo "== making a sample ext4 image from /usr/share/doc"
truncate -s 64M "$work/disk.img"
mkfs.ext4 -q -F -d /usr/share/doc "$work/disk.img"
echo "== sample image: $(du -h --apparent-size "$work/disk.img" | cut -f1) ($(find /usr/share/doc | wc -l) entries)"
"$hexz" --help

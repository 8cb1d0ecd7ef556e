#!/usr/bin/env bash
# Installs every Debian package that building, testing and demonstrating hexz
# needs, and prepares the machine for unprivileged FUSE mounts. Idempotent:
# a second run installs nothing and takes well under a second.
#
#   scripts/setup.sh [--user-allow-other]
#
# --user-allow-other also enables user_allow_other in /etc/fuse.conf, which
# lets every user on the machine make any FUSE mount (not only hexz's) usable
# by other users and root. hexz needs it only for `hexz mount -o allow_root`
# or `-o allow_other` as a non-root user (e.g. root's `mount -o loop` on a
# user's disk file, which the test suite does); it is off unless asked for.
set -euo pipefail

want_allow_other=0
for arg in "$@"; do
  case "$arg" in
    --user-allow-other) want_allow_other=1 ;;
    *) echo "usage: $0 [--user-allow-other]" >&2; exit 2 ;;
  esac
done

PACKAGES=(
  # build
  cmake ninja-build g++ pkg-config clang-14 libclang-rt-14-dev clang-format
  libfuse3-dev fuse3 libseccomp-dev liblz4-dev libzstd-dev libxxhash-dev
  libboost-dev libcli11-dev libgtest-dev googletest libnbd-dev libcurl4-openssl-dev libgnutls28-dev
  # tests and demo
  e2fsprogs fuse2fs util-linux procps psmisc kmod cpio time strace
  qemu-utils qemu-block-extra qemu-system-x86 libnbd-bin nbdkit nbd-client busybox-static fdisk dosfstools
  fio groff-base mandoc man-db lz4 zstd squashfs-tools squashfuse gnutls-bin
  dosfstools
  # remote snapshots: a real HTTP(S) server, a test CA, the fault server
  nginx-light gnutls-bin python3
  # remote mounts: ss shows which process holds the TCP connections
  iproute2
)
# npm (for s3rver) comes with Debian's npm package, unless a Node.js install
# (such as NodeSource's nodejs, which conflicts with it) already provides it.
command -v npm >/dev/null || PACKAGES+=(npm)

missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

fuse_ok=1
if [[ -e /dev/fuse ]] && [[ "$(stat -c %a /dev/fuse)" != "666" ]]; then fuse_ok=0; fi
conf_ok=1
if [[ $want_allow_other -eq 1 ]]; then
  grep -qs '^[[:space:]]*user_allow_other' /etc/fuse.conf || conf_ok=0
fi

# s3rver (an S3 API for the S3 tests) comes from npm; the tests skip without it.
s3_ok=1
command -v s3rver >/dev/null || s3_ok=0

if [[ ${#missing[@]} -eq 0 && $fuse_ok -eq 1 && $conf_ok -eq 1 && $s3_ok -eq 1 ]]; then
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "hexz setup: root is needed to prepare this machine:" >&2
  [[ ${#missing[@]} -gt 0 ]] && echo "  missing packages: ${missing[*]}" >&2
  [[ $fuse_ok -eq 0 ]] && echo "  /dev/fuse is not mode 0666" >&2
  [[ $conf_ok -eq 0 ]] && echo "  /etc/fuse.conf lacks user_allow_other" >&2
  [[ $s3_ok -eq 0 ]] && echo "  s3rver (npm install -g s3rver@3) is not installed" >&2
  echo "Run:  sudo $(realpath "$0")" >&2
  exit 1
fi

if [[ ${#missing[@]} -gt 0 ]]; then
  export DEBIAN_FRONTEND=noninteractive
  echo "hexz setup: installing ${missing[*]}"
  # Refresh the package lists first when they are missing or older than a day.
  if [[ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages' -mtime -1 2>/dev/null | head -n1)" ]]; then
    apt-get update -qq
  fi
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/hexz-apt.log 2>&1; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
fi

# Unprivileged FUSE: Debian's normal /dev/fuse mode is 0666.
if [[ -e /dev/fuse ]]; then chmod 0666 /dev/fuse; fi
if [[ $want_allow_other -eq 1 ]] && ! grep -qs '^[[:space:]]*user_allow_other' /etc/fuse.conf; then
  echo user_allow_other >> /etc/fuse.conf
fi
# Best effort: without the npm registry the S3 tests skip (exit 77).
if ! command -v s3rver >/dev/null; then
  npm install -g --no-audit --no-fund s3rver@3 >/tmp/hexz-npm.log 2>&1 ||
    echo "hexz setup: warning: npm install -g s3rver@3 failed (see /tmp/hexz-npm.log); S3 tests will skip" >&2
fi
echo "hexz setup: machine ready"

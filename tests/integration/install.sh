#!/usr/bin/env bash
# `cmake --install` into a DESTDIR: programs, man pages where `man -M` finds
# them, bash completion, docs; the installed front-end finds the installed
# worker, and (as root) the helper is setuid root, group hexz, mode 4750 (the
# install creates the group when it is missing).
source "$(dirname "$0")/../lib/common.sh"
require_cmd cmake man
root="$T/root"
prefix=/opt/hexz-test
DESTDIR="$root" cmake --install "$HEXZ_BUILD_DIR" --prefix "$prefix" >"$T/install.log" 2>&1 ||
  fail "cmake --install failed: $(tail -n 5 "$T/install.log")"
p="$root$prefix"
for f in bin/hexz libexec/hexz/hexz-fused libexec/hexz/hexz-nbd-helper; do
  [[ -x "$p/$f" ]] || fail "$f not installed"
done
pass "programs installed under $prefix"
for page in hexz.1 hexz-mount.1 hexz-pack.1 hexz.5 hexz-fused.8 hexz-nbd-helper.8; do
  sec=${page##*.}
  [[ -f "$p/share/man/man$sec/$page" ]] || fail "man page $page not in man$sec"
done
for name in hexz-mount hexz-fused hexz-nbd-helper; do
  found=$(man -M "$p/share/man" -w "$name" 2>/dev/null) || fail "man -M does not find $name"
  [[ "$found" == "$p/share/man/"* ]] || fail "man -M found $name at $found"
done
[[ "$(man -M "$p/share/man" -w 5 hexz)" == *man5/hexz.5* ]] || fail "man 5 hexz not found"
pass "man -M finds the pages in sections 1, 5 and 8"
[[ -f "$p/share/bash-completion/completions/hexz" ]] || fail "bash completion not installed"
[[ -f "$p/share/doc/hexz/FORMAT.md" ]] || fail "FORMAT.md not installed"
pass "completion and docs installed"
if [[ $(id -u) -eq 0 ]]; then
  group=$(sed -n 's/^HEXZ_NBD_GROUP:STRING=//p' "$HEXZ_BUILD_DIR/CMakeCache.txt")
  [[ -n $group ]] || fail "HEXZ_NBD_GROUP is not in the CMake cache"
  getent group "$group" >/dev/null || fail "the install did not create the group $group"
  [[ "$(stat -c '%U %G %a' "$p/libexec/hexz/hexz-nbd-helper")" == "root $group 4750" ]] ||
    fail "helper is not root:$group 4750 after a root install: $(stat -c '%U %G %a' "$p/libexec/hexz/hexz-nbd-helper")"
  grep -q "usermod -aG $group USER" "$T/install.log" || fail "the install does not say how to grant --nbd"
  pass "helper installed setuid root, group $group, mode 4750"
fi
# The installed front-end must find the installed worker on its own.
unset HEXZ_FUSED
truncate -s 1M "$T/img" && "$p/bin/hexz" pack --disk "$T/img" --output "$T/s.st" --quiet ||
  fail "installed hexz cannot pack"
out=$("$p/bin/hexz" mount "$T/s.st" "$T/no-such-dir" 2>&1) && fail "mount on a missing dir worked"
grep -q "hexz-fused" <<<"$out" && fail "installed hexz did not find its worker: $out"
if [[ -c /dev/fuse ]] && command -v fusermount3 >/dev/null; then
  mkdir -p "$T/mnt"
  "$p/bin/hexz" mount --daemon --log-file "$T/mount.log" "$T/s.st" "$T/mnt" || fail "installed hexz mount failed"
  on_exit "'$p/bin/hexz' unmount '$T/mnt'"
  cmp "$T/img" "$T/mnt/disk" || fail "installed mount serves wrong bytes"
  "$p/bin/hexz" unmount "$T/mnt" || fail "installed hexz unmount failed"
  pass "the installed hexz mounts with the installed worker"
fi

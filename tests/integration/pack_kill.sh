#!/usr/bin/env bash
# A `hexz pack` killed with SIGKILL leaves no temporary output
# (.NAME.tmp-XXXXXX): its watchdog removes the file it had open, and only
# that file (another file of the same name pattern stays); no snapshot
# appears under the output's name.
source "$(dirname "$0")/../lib/common.sh"
cd "$T"
mkdir out

# A slow pack: 48 MiB of barely compressible data at zstd -19.
head -c 48M /dev/urandom | base64 -w 0 | head -c 48M >disk.img
echo "not ours" >out/.new.st.tmp-Zzzzzz   # a foreign file of the same pattern

"$HEXZ" pack --disk disk.img -o out/new.st --compression zstd --level 19 --threads 1 -q &
pid=$!
on_exit "kill -9 $pid"
wait_for bash -c 'ls -A out | grep -v Zzzzzz | grep -q "^\.new\.st\.tmp-"' ||
  fail "the pack did not create its temporary file"
kill -9 "$pid"
wait "$pid" 2>/dev/null
wait_for bash -c '! ls -A out | grep -v Zzzzzz | grep -q "^\.new\.st\.tmp-"' ||
  fail "SIGKILL left the temporary output: $(ls -A out)"
[[ -e out/.new.st.tmp-Zzzzzz ]] || fail "a file the pack did not create was removed"
[[ ! -e out/new.st ]] || fail "a killed pack left out/new.st"
pass "pack killed with SIGKILL: its temporary output is removed, nothing else"

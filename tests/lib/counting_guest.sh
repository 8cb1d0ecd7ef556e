# The counting guest of the VM capture tests (vm_counting, vm_served, vm_continue) and of
# the bench's vm rows: the QEMU test kernel (tests/lib/qemu.sh) with a
# busybox initramfs whose /init mounts the ext4 root disk (/dev/vda, no
# journal, so what the guest synced is on the disk as written) and counts
# once a second: it writes the count into /count on that disk, syncs, and
# only then prints "tick N" on the serial console. Sourced after
# tests/lib/common.sh and tests/lib/qemu.sh.
#
#   counting_guest_build DIR     initramfs DIR.cpio.gz and root disk DIR.raw
#                                (16 MiB ext4, /count = 0); sets COUNT_ARGS,
#                                the QEMU arguments (128 MiB, TCG, one CPU,
#                                console on the serial port on stdout, the
#                                disk as -drive id=d0). With COUNT_CHURN_AT=N
#                                and COUNT_CHURN_MIB=M set, the root disk is
#                                M + 32 MiB and, in its tick N (before it
#                                prints it), the guest writes M MiB of
#                                /dev/urandom into /junk and drops its page
#                                cache (freed pages are zeroed: init_on_free)
#   start_counting_guest NAME    runs the built guest with QMP at $T/NAME.qmp
#                                and its serial in NAME.serial (in the current
#                                directory); its pid goes into $guest_pid
#   resume_at SNAP QMP TICK      vm resume SNAP (QMP at QMP, needs
#                                tests/lib/qmp.sh) and fail unless its first
#                                tick is TICK; the guest runs on ($resume_pid)
#   wait_tick LOG N [SECONDS]    until LOG shows "tick N" (default 300 s)
#   ticks LOG                    the tick numbers in LOG, one a line
#   last_tick LOG                the last tick number in LOG
#   disk_count IMAGE             /count on an ext4 image (debugfs)
#   boot_lines LOG               the kernel's boot lines in LOG
#   consecutive LOG FIRST        fail unless LOG's ticks are FIRST, FIRST+1, ...
#   stop_at_next_tick QMP LOG    pause the guest (QMP stop) right after its next
#                                tick, in the second it sleeps; that tick goes
#                                into $stopped_at (needs tests/lib/qmp.sh)
#   stop_and_commit QMP LOG PID BASE OVERLAY OUT
#                                stop_at_next_tick, quit the guest `vm resume`
#                                (PID) runs, commit OVERLAY over BASE into OUT
#                                and fail unless OUT's /count is $stopped_at

counting_guest_build() {
  local dir=$1
  qemu_require
  require_cmd mkfs.ext4 debugfs
  qemu_fetch_kernel >/dev/null
  qemu_initramfs_new "$dir"
  qemu_add_modules "$dir" virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev \
    virtio_pci virtio_blk
  cat >"$dir/hexz/test.sh" <<'GUEST'
mkdir -p /mnt/root
for _ in $(seq 100); do [ -b /dev/vda ] && break; sleep 0.1; done
mount -t ext4 /dev/vda /mnt/root || { echo "counting guest: cannot mount /dev/vda"; exit 1; }
n=$(cat /mnt/root/count)
churn_at=$(cat /mnt/root/churn_at 2>/dev/null)
while :; do
  n=$((n + 1))
  if [ "$n" = "$churn_at" ]; then
    dd if=/dev/urandom of=/mnt/root/junk bs=1M count="$(cat /mnt/root/churn_mib)" 2>/dev/null
    sync
    echo 3 >/proc/sys/vm/drop_caches
  fi
  echo "$n" >/mnt/root/count
  sync
  echo "tick $n"
  sleep 1
done
GUEST
  qemu_pack_initramfs "$dir" "$dir.cpio.gz"
  mkdir -p "$dir.root"
  echo 0 >"$dir.root/count"
  local size=16 append="console=ttyS0 panic=-1"
  if [[ -n ${COUNT_CHURN_AT:-} ]]; then
    echo "$COUNT_CHURN_AT" >"$dir.root/churn_at"
    echo "$COUNT_CHURN_MIB" >"$dir.root/churn_mib"
    size=$((COUNT_CHURN_MIB + 32))
    append+=" init_on_free=1"
  fi
  mkfs.ext4 -q -F -O ^has_journal -d "$dir.root" "$dir.raw" "${size}M" >/dev/null || fail "mkfs.ext4 $dir.raw"
  COUNT_ARGS=(-machine pc -accel tcg -m 128 -smp 1 -nodefaults -no-user-config -display none
              -serial stdio -kernel "$QEMU_KERNEL" -initrd "$dir.cpio.gz"
              -append "$append"
              -drive "file=$dir.raw,format=raw,if=none,id=d0" -device virtio-blk-pci,drive=d0)
}

wait_tick() {
  local log=$1 n=$2 secs=${3:-300} i
  for ((i = 0; i < secs * 20; i++)); do
    grep -aq "^tick $n\b" "$log" 2>/dev/null && return 0
    sleep 0.05
  done
  fail "$log never showed tick $n within $secs s: $(tail -n 5 "$log" 2>/dev/null | tr -d '\r')"
}
ticks() { tr -d '\r' <"$1" | sed -n 's/^tick \([0-9][0-9]*\)$/\1/p'; }
last_tick() { ticks "$1" | tail -n 1; }
disk_count() { debugfs -R 'cat /count' "$1" 2>/dev/null | tr -d '\r\n'; }
boot_lines() { tr -d '\r' <"$1" | grep -aE 'Linux version|Command line:|HEXZ-GUEST-START|Freeing unused kernel'; }

# consecutive LOG FIRST: LOG's ticks are FIRST, FIRST+1, ... without a gap.
consecutive() {
  local got want
  got=$(ticks "$1" | paste -sd' ')
  want=$(seq "$2" "$(last_tick "$1")" | paste -sd' ')
  [[ $got == "$want" ]] || fail "$1: the ticks are '$got', not '$want'"
}
# start_counting_guest NAME: the guest, QMP at $T/NAME.qmp, serial in
# NAME.serial; its pid in $guest_pid (killed at exit).
start_counting_guest() {
  qemu-system-x86_64 "${COUNT_ARGS[@]}" -qmp "unix:$T/$1.qmp,server=on,wait=off" \
    </dev/null >"$1.serial" 2>&1 &
  guest_pid=$!
  on_exit "kill -9 $guest_pid"
}

# resume_at SNAP QMP TICK: SNAP resumed, its first tick TICK.
resume_at() {
  resume_vm "$1" "$2"
  wait_tick "$2.out" $(($3 + 1)) 120
  [[ $(ticks "$2.out" | head -n1) == "$3" ]] || fail "$1 resumed at $(ticks "$2.out" | head -n1), not $3"
}

# stop_at_next_tick QMP LOG: pauses the guest right after its next tick
# (in the second it sleeps); that tick goes into $stopped_at.
stop_at_next_tick() {
  wait_tick "$2" $(($(last_tick "$2") + 1)) 60
  qmp "$1" stop >/dev/null || fail "QMP stop on $1"
  stopped_at=$(last_tick "$2")
}

# stop_and_commit QMP LOG PID BASE OVERLAY OUT: the resumed guest stopped
# right after its next tick and quit; its overlay, committed, holds that tick.
stop_and_commit() {
  local sock=$1 log=$2 pid=$3 base=$4 overlay=$5 out=$6
  stop_at_next_tick "$sock" "$log"
  qmp "$sock" quit >/dev/null 2>&1 || true
  wait "$pid" || fail "vm resume of $base exited with $?: $(tail -n 5 "$log")"
  local said
  said=$("$HEXZ" commit --base "$base" --overlay "$overlay" -o "$out" 2>&1) || fail "commit of $overlay: $said"
  "$HEXZ" cat "$out" >"$out.raw"
  [[ $(disk_count "$out.raw") == "$stopped_at" ]] ||
    fail "$overlay committed holds $(disk_count "$out.raw"), not the last tick $stopped_at"
}

# QMP from the shell, for the tests that drive a QEMU guest (vm_snapshot_qcow2,
# vm_resume, vm_counting). Needs python3; resume_vm needs tests/lib/common.sh.

# qmp SOCKET COMMAND [ARGUMENTS-JSON]: prints the "return" value as JSON.
qmp() {
  python3 - "$@" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rw")
json.loads(f.readline())
def run(cmd, args=None):
    f.write(json.dumps({"execute": cmd, **({"arguments": args} if args else {})}) + "\n"); f.flush()
    while True:
        m = json.loads(f.readline())
        if "event" in m: continue
        if "error" in m: sys.exit("QMP error: " + m["error"]["desc"])
        return m["return"]
run("qmp_capabilities")
print(json.dumps(run(sys.argv[2], json.loads(sys.argv[3]) if len(sys.argv) > 3 else None)))
PY
}

# status SOCKET: the guest's run state (running, paused, ...).
status() { qmp "$1" query-status | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])'; }
# hmp SOCKET COMMAND-LINE: a human monitor command; prints its output as JSON.
hmp() { qmp "$1" human-monitor-command "{\"command-line\": \"$2\"}"; }

# resume_vm SNAPSHOT QMP [ARGS...]: hexz vm resume in the background (pid in
# $resume_pid; its output, with a guest console on stdio, in QMP.out), until
# the guest runs (at most 120 s).
resume_vm() {
  local snap=$1 sock=$2; shift 2
  "$HEXZ" vm resume "$snap" --qmp "$sock" "$@" </dev/null >"$sock.out" 2>&1 &
  resume_pid=$!
  on_exit "kill $resume_pid"
  for _ in $(seq 1200); do grep -aq "^hexz: resumed" "$sock.out" && break
    kill -0 "$resume_pid" 2>/dev/null || break; sleep 0.1; done
  grep -aq "^hexz: resumed $snap (QEMU pid [0-9]*, QMP at $sock); disk writes go to" "$sock.out" \
    || fail "vm resume $snap: $(tr -d '\r' <"$sock.out" | tail -n 20)"
}

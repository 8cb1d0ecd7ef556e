# QMP from the shell, for the tests that drive a QEMU guest (vm_snapshot_qcow2,
# vm_resume). Needs python3.

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

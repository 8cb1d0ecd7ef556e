#!/usr/bin/env bash
# The front-end's basic contract: --version, --help, usage errors exit 2, and it
# refuses to run setuid.
source "$(dirname "$0")/../lib/common.sh"

"$HEXZ" --version | grep -qE '^hexz [0-9]+\.[0-9]+\.[0-9]+$' || fail "--version output"
pass "--version"
"$HEXZ" --help | grep -q 'Subcommands:' || fail "--help lists subcommands"
pass "--help"
rc=0; "$HEXZ" --no-such-flag >/dev/null 2>&1 || rc=$?
[[ $rc -eq 2 ]] || fail "unknown flag should exit 2, got $rc"
pass "unknown flag exits 2"
rc=0; "$HEXZ" >/dev/null 2>&1 || rc=$?
[[ $rc -eq 2 ]] || fail "no subcommand should exit 2, got $rc"
pass "no subcommand exits 2"

if [[ $(id -u) -eq 0 ]]; then
  require_test_user
  cp "$HEXZ" "$T/bin/hexz-suid" && chmod 4755 "$T/bin/hexz-suid"
  out=$(as_user "$T/bin/hexz-suid" --version 2>&1) && fail "setuid hexz ran: $out"
  grep -q "refusing to run setuid" <<<"$out" || fail "setuid refusal message: $out"
  pass "refuses to run setuid"
fi

#!/usr/bin/env bash
# The bash completion offers subcommands, nested subcommands, flags and values.
source "$(dirname "$0")/../lib/common.sh"
source "$HEXZ_SOURCE_DIR/contrib/hexz.bash-completion"
complete_words() {  # complete_words WORD...: completions of the last word
  COMP_WORDS=("$HEXZ" "$@"); COMP_CWORD=$#; COMPREPLY=()
  _hexz
  printf '%s\n' "${COMPREPLY[@]}"
}
complete_words "" | grep -qx mount || fail "subcommand mount not offered"
complete_words "" | grep -qx pack || fail "subcommand pack not offered"
complete_words "pa" | grep -qx pack || fail "prefix pa does not complete to pack"
pass "subcommands"
complete_words mount --c | grep -qx -- --cache-size || fail "mount --cache-size not offered"
complete_words pack --com | grep -qx -- --compression || fail "pack --compression not offered"
pass "flags from --help"
complete_words pack --compression "" | grep -qx zstd || fail "codec values not offered"
complete_words mount --cache-size "" | grep -qx 1G || fail "cache sizes not offered"
pass "flag values"
complete_words vm "" | grep -qx commit || fail "vm commit not offered"
complete_words cache "" | grep -qx stats || fail "cache stats not offered"
pass "nested subcommands"
complete_words mount -o "" | grep -qx allow_root || fail "mount -o does not offer allow_root"
complete_words pack -o "" | grep -qx allow_root && fail "pack -o (--output) offers mount options"
pass "mount -o offers allow_root and allow_other; pack -o still completes files"

#!/usr/bin/env bash
# The man pages render without warnings, have the sections administrators
# expect, and document every subcommand and flag that `hexz --help` lists.
source "$(dirname "$0")/../lib/common.sh"
require_cmd groff
man_dir="$HEXZ_SOURCE_DIR/man"
shopt -s nullglob
pages=("$man_dir"/*.[1-8])
[[ ${#pages[@]} -gt 0 ]] || fail "no man pages in $man_dir"

for p in "${pages[@]}"; do
  warn=$(groff -man -ww -z "$p" 2>&1) || fail "groff failed on $p: $warn"
  [[ -z "$warn" ]] || fail "groff warnings in $(basename "$p"): $warn"
  if command -v mandoc >/dev/null; then
    lint=$(mandoc -T lint -W warning "$p" 2>&1 | grep -v 'STYLE:' || true)
    [[ -z "$lint" ]] || fail "mandoc lint in $(basename "$p"): $lint"
  fi
  for s in NAME SYNOPSIS DESCRIPTION OPTIONS "EXIT STATUS" FILES ENVIRONMENT EXAMPLES "SEE ALSO"; do
    grep -q "^\.SH \"\?$s\"\?\$" "$p" || fail "$(basename "$p") lacks section $s"
  done
done
pass "${#pages[@]} pages render without warnings and have all sections"

# Text of a page with roff escapes for '-' undone, for flag lookups.
page_text() { sed -e 's/\\-/-/g' -e 's/\\f[BIRP]//g' "$1"; }

# Subcommands listed by `hexz --help` (indented names under "Subcommands:").
subs=$("$HEXZ" --help | awk '/^Subcommands:/{on=1;next} on && /^  [a-z]/{print $1}')
[[ -n "$subs" ]] || fail "could not read subcommands from hexz --help"
overview="$man_dir/hexz.1"
[[ -f "$overview" ]] || fail "man/hexz.1 is missing"
# Long flags in the "Options:" section of a help text, and nested subcommands.
flags_of() {
  "$HEXZ" "$@" --help | awk '/^Options:/{on=1;next} /^[A-Z][a-z]*:/{on=0} on' |
    grep -oE -- '--[a-z][a-z0-9-]*' | grep -vx -- '--help' | sort -u || true
}
nested_of() {
  "$HEXZ" "$@" --help | awk '/^Subcommands:/{on=1;next} /^[A-Z][a-z]*:/{on=0} on && /^  [a-z]/{print $1}'
}
checked=0
for sub in $subs; do
  page_text "$overview" | grep -qw -- "$sub" || fail "subcommand '$sub' not in hexz.1"
  if [[ "$sub" == vm ]]; then
    # vm mount|unmount|commit are synonyms, documented with their subcommands;
    # vm snapshot and vm resume have their own page, hexz-vm.1.
    for n in $(nested_of vm); do
      page_text "$overview" | grep -q -- "vm $n" || fail "'hexz vm $n' not in hexz.1"
      [[ $n == snapshot || $n == resume ]] || continue
      for f in $(flags_of vm "$n"); do
        page_text "$man_dir/hexz-vm.1" | grep -q -- "$f" || fail "flag $f of 'hexz vm $n' is not documented in hexz-vm.1"
        checked=$((checked + 1))
      done
    done
    continue
  fi
  page="$man_dir/hexz-$sub.1"
  [[ -f "$page" ]] || fail "subcommand '$sub' has no page man/hexz-$sub.1"
  for f in $(flags_of "$sub"); do
    page_text "$page" | grep -q -- "$f" || fail "flag $f of 'hexz $sub' is not documented in $(basename "$page")"
    checked=$((checked + 1))
  done
  for n in $(nested_of "$sub"); do
    page_text "$page" | grep -qw -- "$n" || fail "'hexz $sub $n' is not documented in $(basename "$page")"
    for f in $(flags_of "$sub" "$n"); do
      page_text "$page" | grep -q -- "$f" || fail "flag $f of 'hexz $sub $n' is not documented in $(basename "$page")"
      checked=$((checked + 1))
    done
  done
done
pass "every subcommand and its $checked flags are documented"

#!/usr/bin/env bash
# Every C/C++ source of ours follows .clang-format.
set -u
src=${HEXZ_SOURCE_DIR:?}
command -v clang-format >/dev/null || { echo "SKIP: clang-format not installed"; exit 77; }
cd "$src"
bad=0
while IFS= read -r f; do
  if ! clang-format --dry-run -Werror "$f" >/dev/null 2>&1; then
    echo "not formatted: $f (run: clang-format -i $f)"
    bad=1
  fi
done < <(git ls-files '*.cc' '*.h' '*.c' 2>/dev/null || find common hexz hexz-fused hexz-nbd-helper tests bench -name '*.cc' -o -name '*.h' -o -name '*.c')
[[ $bad -eq 0 ]] && echo "all sources formatted"
exit $bad

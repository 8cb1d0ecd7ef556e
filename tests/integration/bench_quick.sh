#!/usr/bin/env bash
# Smoke test of the benchmark harness (bench/run.py --quick): every section
# runs against its peers on small data and the report has figures and ratios,
# including the FUSE ceiling, zstd at equal levels, both commit kinds and the
# peak RSS rows.
# Speed is not asserted (benchmarks measure, tests check); see bench/README.md.
source "$(dirname "$0")/../lib/common.sh"
require_root
require_cmd qemu-img mksquashfs squashfuse_ll nbdkit nbdcopy nbdfuse fio lz4 zstd qemu-nbd
[[ -x /usr/sbin/nginx ]] || skip "nginx is not installed (nginx-light)"
[[ -x /usr/bin/python3 ]] || skip "/usr/bin/python3 is missing"
for b in read_bench cache_bench; do
  [[ -x "$HEXZ_BUILD_DIR/bench/$b" ]] || skip "bench/$b not built (configure with -DHEXZ_BUILD_BENCH=ON)"
done
/usr/bin/python3 "$HEXZ_SOURCE_DIR/bench/run.py" --build "$HEXZ_BUILD_DIR" --quick \
  --work "$T/work" --out "$T/out" >"$T/bench.log" 2>&1 || fail "bench/run.py failed: $(tail -n 20 "$T/bench.log")"
json=$(ls "$T"/out/*-quick.json) || fail "no JSON report"
md=$(ls "$T"/out/*-quick.md) || fail "no markdown report"
/usr/bin/python3 - "$json" <<'PY' || fail "report check failed"
import json, sys
rows = json.load(open(sys.argv[1]))["results"]
failed = [r for r in rows if r["value"] is None]
assert not failed, "sections failed: %s" % [(r["section"], r["name"], r["note"]) for r in failed]
sections = {r["section"] for r in rows}
need = {"pack", "seq-read", "rand-4k", "nbd", "in-process", "commit", "rss", "remote"}
assert need <= sections, "missing sections: %s" % (need - sections)
names = {(r["section"], r["name"], r["peer"]) for r in rows}
for want in [("seq-read", "hexz (default settings)", "hexz --compression none (FUSE ceiling)"),
             ("pack", "hexz pack zstd (level 3)", "mksquashfs zstd (level 3, 64 KiB)"),
             ("commit", "hexz commit standalone (1% modified)", "hexz pack (full)"),
             ("commit", "hexz commit --thin (1% modified)", "hexz pack (full)"),
             ("rss", "hexz-fused without a cache, 4 parallel readers", "goal < 64 MiB")]:
    assert want in names, "no row %s" % (want,)
rss = [r for r in rows if r["section"] == "rss"]
assert len(rss) >= 4 and all(r["unit"] == "MiB" and r["value"] > 0 for r in rss), rss
ratios = [r for r in rows if r["ratio"] is not None]
assert len(ratios) >= 10, "only %d ratios" % len(ratios)
steal = json.load(open(sys.argv[1]))["machine"]["sections"]
assert steal and all(len(s) == 3 and 0.0 <= s[2] <= 1.0 for s in steal), steal
print("%d rows, %d ratios, sections %s" % (len(rows), len(ratios), sorted(sections)))
PY
grep -q 'pack [0-9]*s (steal [0-9]*%)' "$md" || fail "the report lacks the sections' steal"
grep -q '^| pack | hexz pack lz4 |' "$md" || fail "markdown table lacks the pack row"
pass "bench --quick ran every section and wrote md/json reports"

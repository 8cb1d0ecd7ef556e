// hexz cache list|stats|drop: the user's shared block caches (see
// common/cache/shm_cache.h). Reads segments without joining them, so it never
// disturbs running workers.
#include <time.h>

#include <cstdio>
#include <string>
#include <vector>

#include "common/base/size.h"
#include "common/cache/shm_cache.h"
#include "hexz/commands.h"

namespace hexz::cli {

namespace {

using cache::SegmentInfo;
using cache::ShmCache;

// "NAME", "/NAME" or empty (the default segment) -> NAME without the slash.
std::string SegmentArg(const std::string& arg, const std::string& prefix) {
  if (arg.empty()) return ShmCache::SegmentName(prefix);
  return arg[0] == '/' ? arg.substr(1) : arg;
}

std::string Percent(uint64_t part, uint64_t whole) {
  if (whole == 0) return "-";
  char buf[16];
  std::snprintf(buf, sizeof buf, "%.1f%%", 100.0 * static_cast<double>(part) / whole);
  return buf;
}

std::string State(const SegmentInfo& s) {
  if (!s.valid) return "invalid (" + s.problem + ")";
  uint32_t live = s.live_participants();
  if (live == 0) return "stale (" + std::to_string(s.participants.size()) + " dead)";
  return "in use by " + std::to_string(live);
}

std::string Utc(uint64_t unix_seconds) {
  time_t t = static_cast<time_t>(unix_seconds);
  struct tm tm;
  gmtime_r(&t, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

unsigned long long U(uint64_t v) { return static_cast<unsigned long long>(v); }

int List(const std::string& prefix) {
  auto names = ShmCache::ListSegments(prefix);
  if (!names.ok()) return Fail(names.status());
  if (names->empty()) {
    std::printf("no shared caches (%s-*) for uid %u\n", ShmCache::NamePrefix(prefix).c_str(),
                static_cast<unsigned>(getuid()));
    return 0;
  }
  std::printf("%-28s %10s %10s %8s %10s %10s %10s  %s\n", "NAME", "SIZE", "USED", "BLOCKS", "HITS",
              "MISSES", "EVICTIONS", "STATE");
  int rc = 0;
  for (const std::string& name : *names) {
    auto info = ShmCache::Inspect(name);
    if (!info.ok()) {  // removed meanwhile, or unreadable
      std::fprintf(stderr, "hexz: %s\n", info.status().ToString().c_str());
      rc = 1;
      continue;
    }
    const cache::CacheStats& st = info->stats;
    std::printf("%-28s %10s %10s %8llu %10llu %10llu %10llu  %s\n", info->name.c_str(),
                base::FormatSize(info->size).c_str(), base::FormatSize(st.used_bytes).c_str(),
                U(st.entries), U(st.hits), U(st.misses), U(st.evictions), State(*info).c_str());
  }
  return rc;
}

int Stats(const std::string& arg, const std::string& prefix) {
  std::string name = SegmentArg(arg, prefix);
  auto r = ShmCache::Inspect(name);
  if (!r.ok()) {
    if (r.status().code() == base::Code::kNotFound) {
      std::fprintf(stderr,
                   "hexz: no shared cache /%s (it exists only while a worker started with "
                   "--cache-size runs)\n",
                   name.c_str());
      return 1;
    }
    return Fail(r.status());
  }
  const SegmentInfo& s = *r;
  std::printf("segment        %s (uid %u, mode %04o)\n", s.name.c_str(),
              static_cast<unsigned>(s.uid), static_cast<unsigned>(s.mode));
  std::printf("state          %s\n", State(s).c_str());
  if (!s.valid) return 1;
  std::printf("size           %s (first requested %s)\n", base::FormatSize(s.size).c_str(),
              base::FormatSize(s.requested_size).c_str());
  std::printf("layout         version %u, %u shard%s, capacity %s, blocks up to %s\n", s.version,
              s.shard_count, s.shard_count == 1 ? "" : "s", base::FormatSize(s.capacity).c_str(),
              base::FormatSize(s.max_block_size).c_str());
  std::printf("created        %s by pid %d\n", Utc(s.created_unix).c_str(),
              static_cast<int>(s.creator_pid));
  std::string procs;
  for (const cache::ParticipantInfo& p : s.participants) {
    procs += (procs.empty() ? "" : ", ") + std::to_string(p.pid) + (p.alive ? "" : " (dead)");
  }
  std::printf("processes      %u live%s%s (%llu attaches in all)\n", s.live_participants(),
              procs.empty() ? "" : ": ", procs.c_str(), U(s.attaches));
  const cache::CacheStats& st = s.stats;
  std::printf("used           %s in %llu block%s\n", base::FormatSize(st.used_bytes).c_str(),
              U(st.entries), st.entries == 1 ? "" : "s");
  std::printf("hits           %llu (%s of lookups)\n", U(st.hits),
              Percent(st.hits, st.hits + st.misses).c_str());
  std::printf("misses         %llu\n", U(st.misses));
  std::printf("insertions     %llu\n", U(st.insertions));
  std::printf("evictions      %llu\n", U(st.evictions));
  std::printf("declined       %llu (blocks not cached: too large, or lock unavailable)\n",
              U(st.declined));
  std::printf("invalid        %llu (entries that failed validation when read; served as misses)\n",
              U(st.invalid));
  std::printf("recoveries     %llu (shards emptied after a process died holding their lock)\n",
              U(st.recoveries));
  std::printf("lock timeouts  %llu (gave up waiting; %llu waits took over 20 ms)\n",
              U(st.lock_timeouts), U(st.slow_lock_waits));
  return 0;
}

int Drop(const std::string& arg, const std::string& prefix, bool force) {
  std::string name = SegmentArg(arg, prefix);
  cache::DropInfo info;
  base::Status s = ShmCache::Drop(name, force, &info);
  if (s.code() == base::Code::kNotFound) {
    std::fprintf(stderr, "hexz: no shared cache /%s to remove\n", name.c_str());
    return 1;
  }
  if (!s.ok()) return Fail(s);
  if (info.live_participants > 0) {
    std::printf("removed /%s (still mapped by %u live process%s until they exit)\n", name.c_str(),
                info.live_participants, info.live_participants == 1 ? "" : "es");
  } else {
    std::printf("removed /%s\n", name.c_str());
  }
  return 0;
}

}  // namespace

void AddCacheCommand(CLI::App& parent, int* rc) {
  CLI::App* cmd = parent.add_subcommand(
      "cache", "Show or remove your shared block caches (created by --cache-size)");
  cmd->require_subcommand(1);
  // Registered once; the values live as long as the program.
  static std::string prefix_storage, name_storage;
  static bool force_storage = false;
  std::string* prefix = &prefix_storage;
  std::string* name = &name_storage;
  bool* force = &force_storage;
  const char* prefix_help =
      "Segment name prefix (default $HEXZ_CACHE_NAME_PREFIX or hexz-cache); names end in -UID";

  CLI::App* list = cmd->add_subcommand("list", "List your cache segments with size and counters");
  list->add_option("--prefix", *prefix, prefix_help);
  list->callback([rc, prefix] { *rc = List(*prefix); });

  CLI::App* stats =
      cmd->add_subcommand("stats", "Show one segment in detail (default: /hexz-cache-UID)");
  stats->add_option("name", *name, "Segment name, as shown by 'hexz cache list'");
  stats->add_option("--prefix", *prefix, prefix_help);
  stats->callback([rc, name, prefix] { *rc = Stats(*name, *prefix); });

  CLI::App* drop = cmd->add_subcommand(
      "drop", "Remove a segment that no live process uses (default: /hexz-cache-UID)");
  drop->add_option("name", *name, "Segment name, as shown by 'hexz cache list'");
  drop->add_option("--prefix", *prefix, prefix_help);
  drop->add_flag("--force", *force,
                 "Remove it even while processes use it (they keep their mapping until they exit)");
  drop->callback([rc, name, prefix, force] { *rc = Drop(*name, *prefix, *force); });
}

}  // namespace hexz::cli

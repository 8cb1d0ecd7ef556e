#include "hexz/cli_checks.h"

#include <sys/stat.h>

#include <cstdint>
#include <cstdio>

#include "common/base/log.h"
#include "common/cache/worker_cache.h"
#include "common/format/writer.h"
#include "common/io/source.h"
#include "common/remote/http_source.h"

namespace hexz::cli {

using base::Result;
using base::Status;

CLI::Validator StatusValidator(std::string option, std::string description,
                               std::function<Status(const std::string&)> check) {
  return CLI::Validator(
      [option = std::move(option), check = std::move(check)](std::string& text) -> std::string {
        Status st = check(text);
        if (st.ok()) return std::string();
        std::string msg = st.message();
        size_t colon = msg.find(": ");
        if (msg.compare(0, option.size(), option) == 0 && colon != std::string::npos) {
          msg.erase(0, colon + 2);
        }
        return msg;
      },
      std::move(description));
}

CLI::Validator CacheSizeValidator() {
  return StatusValidator("--cache-size", "SIZE", [](const std::string& text) {
    // Block size 0: only the size itself is checked here; the snapshot's
    // block size is checked once it is open.
    return cache::ParseCacheSize(text, 0).status();
  });
}

Result<int> CheckLevel(const std::string& compression, std::optional<int> level) {
  HEXZ_ASSIGN_OR_RETURN(format::Codec codec, format::ParseCodec(compression));
  if (!level) return 0;
  if (codec == format::Codec::kRaw) {
    return Status::InvalidArgument("--level " + std::to_string(*level) +
                                   ": --compression none takes no level");
  }
  int max = format::MaxLevel(codec);
  if (*level < 1 || *level > max) {
    return Status::InvalidArgument("--level " + std::to_string(*level) + " is outside 1.." +
                                   std::to_string(max) + " for " + compression +
                                   " (leave --level out for the default, " +
                                   std::to_string(format::DefaultLevel(codec)) + ")");
  }
  return *level;
}

void AddCompressionFlags(CLI::App* cmd, CompressionFlags* flags,
                         const std::string& compression_help) {
  cmd->add_option("--compression", flags->compression, compression_help)
      ->check(CLI::IsMember({"lz4", "zstd", "none"}));
  cmd->add_option("--level", flags->level, "Compression level (lz4: 1..12, zstd: 1..19)");
  cmd->add_option("--threads", flags->threads, "Compressor threads (default: all CPUs)");
}

Status BuildWriterOptions(const CompressionFlags& flags, const std::atomic<bool>* cancel,
                          format::WriterOptions* options) {
  HEXZ_ASSIGN_OR_RETURN(options->codec, format::ParseCodec(flags.compression));
  HEXZ_ASSIGN_OR_RETURN(options->level, CheckLevel(flags.compression, flags.level));
  options->threads = flags.threads;
  options->cancel = cancel;
  return format::ValidateWriterOptions(*options);
}

Status CheckId(const char* option, std::optional<uint32_t> id) {
  if (id && *id == UINT32_MAX) {
    return Status::InvalidArgument(std::string(option) +
                                   " 4294967295 is (uid_t)-1, which means \"no id\"; choose a "
                                   "real id");
  }
  return Status::Ok();
}

namespace {

bool StartsWithName(const std::string& message, const std::string& name) {
  return message.size() > name.size() && message.compare(0, name.size(), name) == 0 &&
         (message[name.size()] == ':' || message[name.size()] == ' ');
}

}  // namespace

Status NameChain(const std::vector<std::string>& chain, const Status& status) {
  for (size_t i = chain.size(); i-- > 1;) {
    if (!StartsWithName(status.message(), chain[i])) continue;
    std::string prefix;
    for (size_t j = 0; j < i; ++j) prefix += chain[j] + " -> ";
    return Status(status.code(), prefix + status.message(), status.sys_errno());
  }
  return status;
}

Result<std::shared_ptr<format::Snapshot>> OpenSnapshotChain(const std::string& path,
                                                            const format::OpenOptions& options) {
  if (options.opener == nullptr && remote::IsUrl(path)) {
    return Status::Unsupported(remote::RedactUrl(path) +
                               ": this command reads local snapshot files only");
  }
  auto snap = format::Snapshot::Open(path, options);
  if (snap.ok()) return snap;
  // A server that did not answer within --remote-timeout would not answer
  // the walk below either: each file would wait that long again.
  if (snap.status().code() == base::Code::kUnavailable) return snap.status();
  // Walk the chain file by file, as Open does, to learn which files lead to
  // the one that failed.
  const io::SourceOpener& opener = options.opener ? *options.opener : io::LocalOpener();
  std::vector<std::string> chain;
  format::OpenOptions one = options;
  one.skip_parents = true;
  std::string current = path;
  for (uint32_t depth = 0; depth <= one.max_chain_depth + 1; ++depth) {
    chain.push_back(remote::IsUrl(current) ? remote::RedactUrl(current) : current);
    auto file = format::Snapshot::Open(current, one);
    if (!file.ok() || (*file)->parent_path().empty()) break;
    auto parent = opener.ResolveParent(current, (*file)->parent_path());
    if (!parent.ok()) break;
    current = *parent;
  }
  return NameChain(chain, snap.status());
}

bool SameFile(const struct stat& a, const struct stat& b) {
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

Status CheckOutputNotInChain(const std::string& output, const format::Snapshot& snapshot,
                             const std::string& itself, const std::string& whose) {
  struct stat out;
  if (stat(output.c_str(), &out) != 0) return Status::Ok();
  // A remote chain holds no local file (a remote snapshot's parents are
  // remote too), so no output can be one of them.
  if (remote::IsUrl(snapshot.path())) return Status::Ok();
  HEXZ_ASSIGN_OR_RETURN(auto fds, snapshot.DupChainFds());
  std::vector<std::string> names = snapshot.ChainNames();
  for (size_t i = 0; i < fds.size(); ++i) {
    struct stat st;
    if (fstat(fds[i].get(), &st) == 0 && SameFile(st, out)) {
      return Status::InvalidArgument(
          output + ": is " + (i == 0 ? itself : "a parent of " + whose + " (" + names[i] + ")") +
          "; choose another --output");
    }
  }
  return Status::Ok();
}

int UsageError(const Status& status) {
  std::fprintf(stderr, "hexz: %s\n", status.ToString().c_str());
  return 2;
}

std::string ShownLocation(const std::string& path) {
  return remote::IsUrl(path) ? remote::RedactUrl(path) : path;
}

Result<std::shared_ptr<format::Snapshot>> OpenSnapshotAsUser(const std::string& path,
                                                             const format::OpenOptions& options) {
  auto snapshot = OpenSnapshotChain(path, options);
  const std::string shown = ShownLocation(path);
  if (snapshot.ok() || snapshot.status().message().find(shown) != std::string::npos) {
    return snapshot;
  }
  return snapshot.status().WithContext(shown);
}

void AddWorkerOptions(CLI::App* cmd, WorkerOptions* options, const std::string& daemon_help) {
  cmd->add_flag("-d,--daemon", options->daemon, daemon_help);
  cmd->add_option("--log-file", options->log_file, "Daemon log file (with --daemon)");
  cmd->add_flag("-v,--verbose", options->verbose, "Worker logs debug messages");
  cmd->add_option("--cache-size", options->cache_size,
                  "Share a cache of decompressed blocks of this size with your other hexz workers "
                  "(e.g. 256M, 1G, 4G)")
      ->check(CacheSizeValidator());
}

Status CheckWorkerOptions(const WorkerOptions& options) {
  if (!options.log_file.empty() && !options.daemon) {
    return Status::InvalidArgument(
        "--log-file goes with --daemon (in the foreground the worker logs to stderr)");
  }
  return Status::Ok();
}

Status ApplyWorkerOptions(const WorkerOptions& options, const format::Snapshot& snapshot,
                          ipc::WorkerConfig* config) {
  if (!options.cache_size.empty()) {
    HEXZ_ASSIGN_OR_RETURN(config->cache_size,
                          cache::ParseCacheSize(options.cache_size, snapshot.block_size()));
  }
  config->daemon = options.daemon;
  config->log_level =
      static_cast<uint32_t>(options.verbose ? base::LogLevel::kDebug : base::LogLevel::kInfo);
  return Status::Ok();
}

}  // namespace hexz::cli

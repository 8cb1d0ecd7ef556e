// Checks and helpers that several hexz subcommands share: option values that
// are usage errors (exit 2), and opening a snapshot chain with errors that
// name the whole chain.
//
// Validators run while CLI11 parses, so a bad value stops the command before
// anything is opened or started. Thread safety: front-end main thread only.
#pragma once

#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/base/status.h"
#include "common/format/snapshot.h"
#include "common/format/writer.h"
#include "common/ipc/worker_protocol.h"

namespace hexz::cli {

// A CLI11 validator from a check returning Status. CLI11 prefixes the
// message with the option's name, so a leading "OPTION ...: " is dropped.
CLI::Validator StatusValidator(std::string option, std::string description,
                               std::function<base::Status(const std::string&)> check);

// --cache-size: a size base::ParseSize accepts, within the shared cache's
// limits (an empty value is refused too).
CLI::Validator CacheSizeValidator();

// --level for the codec named `compression` ("lz4", "zstd", "none"): unset
// means the codec's default (returned as 0); a set level must lie in
// 1..MaxLevel(codec), and "none" takes no level. Errors are usage errors.
base::Result<int> CheckLevel(const std::string& compression, std::optional<int> level);

// The compression flags that `hexz pack`, `hexz commit` and `hexz vm
// snapshot` share.
struct CompressionFlags {
  std::string compression = "lz4";  // --compression
  std::optional<int> level;         // --level
  unsigned threads = 0;             // --threads
};

// Registers --compression (described by `compression_help`), --level and
// --threads on `cmd`, stored into `flags` (which must outlive the parse).
void AddCompressionFlags(CLI::App* cmd, CompressionFlags* flags,
                         const std::string& compression_help);

// Fills the codec, level, threads and `cancel` of *options from the flags
// and checks the whole of *options (the caller sets the block size first):
// an error is a usage error (exit 2).
base::Status BuildWriterOptions(const CompressionFlags& flags, const std::atomic<bool>* cancel,
                                format::WriterOptions* options);

// --uid/--gid: (uid_t)-1 means "no id" to the kernel and cannot own files.
base::Status CheckId(const char* option, std::optional<uint32_t> id);

// format::Snapshot::Open, but an error in a parent names the chain that led
// to it: "child.st -> base.st: <what is wrong with base.st>". Without an
// opener in `options` (hexz/remote_cli.h), a URL is refused as such.
base::Result<std::shared_ptr<format::Snapshot>> OpenSnapshotChain(
    const std::string& path, const format::OpenOptions& options = {});

// What messages show for a snapshot given as `path`: the path, or a URL
// without credentials, query or fragment (remote::RedactUrl).
std::string ShownLocation(const std::string& path);

// OpenSnapshotChain for a command that names `path` itself: an error that
// does not mention the file gets it as context ("PATH: ...").
base::Result<std::shared_ptr<format::Snapshot>> OpenSnapshotAsUser(
    const std::string& path, const format::OpenOptions& options = {});

// Prefixes `status` with the files of `chain` (top first) that lead to the
// file the message starts with, when that file is a parent.
base::Status NameChain(const std::vector<std::string>& chain, const base::Status& status);

// Same device and inode: the same file, also through links.
bool SameFile(const struct stat& a, const struct stat& b);

// Refuses an output path that names a file of `snapshot`'s chain (same
// device and inode, so also through links): writing it would destroy what is
// being read. `itself` describes chain[0] ("the snapshot itself"), `whose`
// the owner of the parents ("the snapshot": "a parent of the snapshot (P)").
base::Status CheckOutputNotInChain(const std::string& output, const format::Snapshot& snapshot,
                                   const std::string& itself, const std::string& whose);

// The flags that `hexz mount` and `hexz serve` share about their worker.
struct WorkerOptions {
  std::string cache_size;  // --cache-size
  bool daemon = false;     // -d, --daemon
  std::string log_file;    // --log-file
  bool verbose = false;    // -v, --verbose
};

// Registers --cache-size, -d/--daemon (described by `daemon_help`),
// --log-file and -v/--verbose on `cmd`, stored into `options` (which must
// outlive the parse).
void AddWorkerOptions(CLI::App* cmd, WorkerOptions* options, const std::string& daemon_help);

// --log-file without --daemon: a usage error.
base::Status CheckWorkerOptions(const WorkerOptions& options);

// Puts the options into the worker's `config`: the shared cache size (checked
// against `snapshot`'s block size; an error is a usage error), daemon mode
// and the log level.
base::Status ApplyWorkerOptions(const WorkerOptions& options, const format::Snapshot& snapshot,
                                ipc::WorkerConfig* config);

// Prints "hexz: <message>" to stderr and returns 2 (a usage error).
int UsageError(const base::Status& status);

}  // namespace hexz::cli

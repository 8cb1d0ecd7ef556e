// The flags of every command that reads a snapshot which may be a URL
// (http://, https:// or s3://), and the opener they configure for Snapshot::Open.
//
// Usage: make one with std::make_shared, Add() it to the subcommand, and in
// the callback pass OpenOptions() to OpenSnapshotChain. The opener lives as
// long as the RemoteFlags. Thread safety: front-end main thread only (the
// opener itself is thread-safe).
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "common/format/snapshot.h"
#include "common/remote/http_source.h"

namespace hexz::cli {

class RemoteFlags {
 public:
  // Registers --ca-file, --remote-timeout and --s3-endpoint on `cmd`.
  void Add(CLI::App* cmd);
  // Registers --disk-cache (mount and serve: the commands with a fetcher).
  void AddDiskCache(CLI::App* cmd);
  // Open options whose opener reads URLs with these flags (and paths).
  format::OpenOptions OpenOptions();
  // The flags as given (for the fetcher, hexz/fetcher.h).
  const remote::Options& options() const { return options_; }

 private:
  remote::Options options_;
  std::unique_ptr<remote::Opener> opener_;
};

}  // namespace hexz::cli

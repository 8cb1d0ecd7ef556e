// The fetcher: the process that reads a remote snapshot chain (http://,
// https://, s3://) for a sandboxed worker, which can reach no network itself.
//
// `hexz mount URL` and `hexz serve URL` open and validate the chain as the
// user first; then AttachChain forks the fetcher (running as the user, named
// "hexz-fetch", in its own session, holding nothing of the front-end but its
// log). The fetcher opens every file of the chain (HttpSource: pinned
// version, checked ranges, bounded retries), reports their sizes, locks down
// with its own seccomp filter (sandbox::Policy::network: no exec, no fork, no
// open for writing) and then answers byte-range requests on a few channels
// (common/ipc/fetch_protocol.h), one thread each, until the worker closes
// them. It parses HTTP, never snapshot bytes; the worker checks every block.
// With options.disk_cache, the front-end opens the cache file as the user
// and the fetcher reads through it (common/remote/disk_cache.h), writing
// only through that one descriptor.
// When the fetcher dies, the worker's reads of the chain fail with EIO and
// say so in its log; the mount stays up and unmounts normally.
//
// Thread safety: front-end main thread only, before the worker starts (no
// other thread may run while it forks).
#pragma once

#include <string>

#include "common/base/status.h"
#include "common/format/snapshot.h"
#include "common/ipc/worker_protocol.h"
#include "common/remote/http_source.h"

namespace hexz::cli {

// How many channels (and fetcher threads, and so parallel requests) a
// remote chain gets.
inline constexpr int kFetcherChannels = 4;

// Puts the chain of `snapshot` (opened from `location`) into `config`: the
// descriptors of a local chain, or, for a remote one, the channels to a new
// fetcher (its stderr is `log_fd`, or ours when -1; `daemon_log` adds
// timestamps) with the files' sizes. The fetcher's failure to open or lock
// down is returned as its exact message.
base::Status AttachChain(const std::string& location, const format::Snapshot& snapshot,
                         const remote::Options& options, int log_fd, bool daemon_log,
                         ipc::WorkerConfig* config);

}  // namespace hexz::cli

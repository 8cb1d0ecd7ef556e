// NBD server: serves io::Volume exports to NBD clients (qemu, nbdcopy, the
// kernel through nbd-client), following the NBD project's doc/proto.md.
//
// Supported: fixed newstyle handshake (NBD_FLAG_NO_ZEROES both ways), options
// EXPORT_NAME, INFO, GO, LIST, ABORT, STRUCTURED_REPLY, LIST_META_CONTEXT and
// SET_META_CONTEXT (base:allocation); commands READ, WRITE, FLUSH, TRIM, CACHE,
// WRITE_ZEROES (NO_HOLE, FAST_ZERO), BLOCK_STATUS (REQ_ONE), DISC, and FUA
// everywhere; DF reads once structured replies are on. Unknown options get
// NBD_REP_ERR_UNSUP. TLS through NBD_OPT_STARTTLS when ServerOptions::tls is
// set (common/nbd/tls.h): with TlsMode::kRequire every option but STARTTLS and
// ABORT gets NBD_REP_ERR_TLS_REQD before TLS, and the haggling restarts from a
// clean slate inside TLS; the handshake deadline covers the TLS handshake too.
// The TLS access file limits which exports each client may list and use
// (others get NBD_REP_ERR_POLICY).
//
// Embedding: the server opens no files and starts no processes; it only reads
// and writes the sockets it is given and calls its Volumes, from threads it
// owns. Each connection has a reader (the calling thread of ServeConnection)
// and a small pool of workers that execute requests and send replies in any
// order under one per-connection writer lock; a READ spanning several blocks
// is read piecewise in parallel through an io::PieceFanout the server owns. Memory for payloads in
// flight is capped per connection and across the server.
//
// Ownership: the Server shares ownership of each export's Volume. All
// connections to one export share its Volume object, so a FLUSH on any of them
// flushes everything: that is what makes NBD_FLAG_CAN_MULTI_CONN true.
//
// Thread safety: ServeConnection may run concurrently on many threads;
// Shutdown() may be called from any thread (not from a signal handler).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "common/base/fd.h"
#include "common/base/status.h"
#include "common/io/fanout.h"
#include "common/io/volume.h"
#include "common/nbd/tls.h"

namespace hexz::nbd {

struct Export {
  std::string name;  // "disk", "memory"
  std::shared_ptr<io::Volume> volume;
  std::string description;
  // The Volume's WriteZeroes is cheaper than writing zeroes (e.g. it records
  // zero extents). When false, FAST_ZERO requests fail at once with ENOTSUP,
  // which proto.md allows.
  bool fast_zero = false;
  // Reads are split into pieces of this many bytes (a power of two) and
  // read in parallel; 0 means volume->BlockSize(). As fuse::File::io_size:
  // an overlay disk should use its snapshot's block size, so that one piece
  // decompresses one snapshot block.
  uint32_t io_size = 0;
};

struct ServerOptions {
  // The export a client gets when it asks for "" (the default export).
  std::string default_export = "disk";
  // Workers per connection (requests served concurrently, replies out of order).
  unsigned threads_per_connection = 4;
  // Pieces of one READ read at once (the worker plus read_threads-1 helper
  // threads the server shares among all connections), so that a large read
  // decompresses its blocks in parallel. 1 reads on the worker alone.
  uint32_t read_threads = 4;
  // Largest READ/WRITE/CACHE/WRITE_ZEROES length (advertised as the maximum
  // block size). At least 32 MiB; at most kMaxPayload.
  uint32_t max_request = 32u << 20;
  // Payload bytes (write data being held, read buffers being filled) allowed
  // in flight per connection and across the server. Each must be >= max_request.
  // A connection that holds nothing of the server budget may always start one
  // request, so clients that never read their replies cannot stall the others;
  // the worst case is therefore server_inflight_bytes plus one max_request per
  // connection.
  uint64_t connection_inflight_bytes = 64u << 20;
  uint64_t server_inflight_bytes = 256u << 20;
  // The whole handshake (option haggling) must finish within this time.
  uint32_t handshake_timeout_ms = 30 * 1000;
  // A started message (request payload, reply) must complete within this
  // time; a client that does not read its replies is dropped after it.
  uint32_t io_timeout_ms = 60 * 1000;
  // ServeListener refuses connections beyond this many at once.
  unsigned max_connections = 64;
  // Advertise NBD_FLAG_CAN_MULTI_CONN (true: every connection to an export
  // shares one Volume, so flushes are visible to all of them).
  bool multi_conn = true;
  // Structured reads (without DF) send zero extents as NBD_REPLY_TYPE_OFFSET_HOLE
  // chunks instead of reading them.
  bool sparse_reads = true;
  // Flush writable volumes when a client disconnects.
  bool flush_on_disconnect = true;
  // TLS credentials, mode and access rules; null: no TLS (STARTTLS unsupported).
  std::shared_ptr<const TlsServer> tls;
};

class Server {
 public:
  Server(std::vector<Export> exports, ServerOptions options = {});
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Serves one client on `conn` (a connected stream socket) until it
  // disconnects, the handshake fails, or Shutdown(). Blocking. Returns OK for
  // a clean end (NBD_CMD_DISC, NBD_OPT_ABORT) and an error naming the problem
  // otherwise. Never throws.
  base::Status ServeConnection(base::UniqueFd conn);

  // Accepts clients on `listen_fd` (a listening socket, not owned), each on
  // its own thread, until `stop_fd` becomes readable (e.g. the read end of a
  // pipe written from a signal handler) or Shutdown(). Then it disconnects
  // every client and waits for their threads. Returns the accept error, if any.
  base::Status ServeListener(int listen_fd, int stop_fd);

  // Ends every connection (in-flight requests finish first) and makes
  // ServeListener return. Irreversible.
  void Shutdown();

  // Number of connections being served right now.
  size_t ActiveConnections() const;

 private:
  class Connection;
  friend class Connection;

  // Counting semaphore over bytes. Acquire waits until n bytes fit (or
  // nothing is held, so one oversized request can pass), or until
  // *holder_share (the caller's own bytes, when given) is 0.
  class Budget {
   public:
    explicit Budget(uint64_t cap) : cap_(cap) {}
    void Acquire(uint64_t n, const std::atomic<uint64_t>* holder_share = nullptr);
    void Release(uint64_t n);

   private:
    std::mutex mu_;
    std::condition_variable cv_;
    uint64_t cap_;
    uint64_t used_ = 0;  // guarded by mu_
  };

  const Export* Find(const std::string& name) const;
  bool Register(int fd);
  void Unregister(int fd);

  std::vector<Export> exports_;
  ServerOptions options_;
  Budget budget_;
  io::PieceFanout fanout_;  // splits READs; shared by every connection
  std::atomic<bool> shutting_down_{false};
  mutable std::mutex conns_mu_;
  std::set<int> conns_;                    // guarded by conns_mu_: fds being served
  base::UniqueFd wake_read_, wake_write_;  // wakes ServeListener on Shutdown
};

}  // namespace hexz::nbd

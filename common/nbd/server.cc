#include "common/nbd/server.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <list>
#include <new>
#include <thread>

#include "common/base/checked_math.h"
#include "common/base/endian.h"
#include "common/base/log.h"
#include "common/nbd/protocol.h"
#include "common/nbd/wire.h"

namespace hexz::nbd {

using base::Status;

namespace {

constexpr uint32_t kAllocationContextId = 1;  // our id for base:allocation
constexpr std::string_view kBaseAllocation = "base:allocation";
constexpr unsigned kMaxOptions = 1024;          // options per handshake
constexpr uint64_t kMaxOptionDrain = 1u << 20;  // longer options: disconnect
constexpr uint64_t kMaxWriteDrain = 64u << 20;  // longer bad WRITE payloads: disconnect
constexpr size_t kMaxQueued = 256;              // requests queued per connection
constexpr size_t kMaxDescriptors = 16384;       // per BLOCK_STATUS reply
constexpr size_t kRequestSize = 28;
constexpr uint64_t kMaxDataChunk = 4u << 20;  // data per OFFSET_DATA chunk (without DF)

const char* CommandName(uint16_t type) {
  switch (type) {
    case kCmdRead:
      return "READ";
    case kCmdWrite:
      return "WRITE";
    case kCmdDisc:
      return "DISC";
    case kCmdFlush:
      return "FLUSH";
    case kCmdTrim:
      return "TRIM";
    case kCmdCache:
      return "CACHE";
    case kCmdWriteZeroes:
      return "WRITE_ZEROES";
    case kCmdBlockStatus:
      return "BLOCK_STATUS";
    default:
      return "unknown";
  }
}

// The size reads of `e` are split into for the fan-out: a power of two.
uint32_t PieceSize(const Export& e) {
  uint32_t b = e.io_size != 0 ? e.io_size : e.volume->BlockSize();
  return b != 0 && (b & (b - 1)) == 0 ? b : 65536;
}

uint32_t PreferredBlockSize(const io::Volume& v, uint32_t max_request) {
  uint32_t b = v.BlockSize();
  if (b == 0 || (b & (b - 1)) != 0) b = 4096;
  b = std::max<uint32_t>(b, 512);
  while (b > max_request) b /= 2;
  return b;
}

struct Request {
  uint64_t handle = 0;
  uint16_t type = 0;
  uint16_t flags = 0;
  uint64_t offset = 0;
  uint32_t length = 0;
  std::unique_ptr<uint8_t[]> payload;  // WRITE data
  uint64_t charged = 0;                // bytes held from the budgets
};

enum class HandshakeEnd { kTransmission, kAbort };

}  // namespace

// ---------------------------------------------------------------------------
// Budget

void Server::Budget::Acquire(uint64_t n, const std::atomic<uint64_t>* holder_share) {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] {
    return used_ == 0 || used_ + n <= cap_ || (holder_share != nullptr && *holder_share == 0);
  });
  used_ += n;
}

void Server::Budget::Release(uint64_t n) {
  {
    std::lock_guard lock(mu_);
    used_ -= n;
  }
  cv_.notify_all();
}

// ---------------------------------------------------------------------------
// One client connection: handshake on the calling thread, then a reader loop
// on the calling thread feeding a pool of workers.

class Server::Connection {
 public:
  Connection(Server* server, int fd)
      : server_(server),
        opt_(server->options_),
        fd_(fd),
        conn_budget_(std::max<uint64_t>(opt_.connection_inflight_bytes, opt_.max_request)) {}

  Status Run() {
    HEXZ_RETURN_IF_ERROR(SetNonBlocking(fd_));
    HandshakeEnd end = HandshakeEnd::kAbort;
    Status s = Handshake(&end);
    if (s.ok() && end == HandshakeEnd::kTransmission) s = Transmission();
    if (tls_ && !broken_) tls_->Close(DeadlineIn(1000));
    return s;
  }

 private:
  // --- handshake ---------------------------------------------------------

  Status Handshake(HandshakeEnd* end) {
    auto deadline = DeadlineIn(opt_.handshake_timeout_ms);
    Builder hello;
    hello.U64(kNbdMagic).U64(kIHaveOpt).U16(kFlagFixedNewstyle | kFlagNoZeroes);
    HEXZ_RETURN_IF_ERROR(io_->Write(hello.data(), deadline));
    uint8_t cf[4];
    HEXZ_RETURN_IF_ERROR(io_->Read(cf, sizeof cf, deadline));
    uint32_t client_flags = base::GetBe32(cf);
    if (client_flags & ~(kClientFlagFixedNewstyle | kClientFlagNoZeroes)) {
      return Status::InvalidArgument("nbd: client sent unknown handshake flags " +
                                     std::to_string(client_flags));
    }
    fixed_ = client_flags & kClientFlagFixedNewstyle;
    no_zeroes_ = client_flags & kClientFlagNoZeroes;

    for (unsigned n = 0;; ++n) {
      if (n >= kMaxOptions) return Status::InvalidArgument("nbd: too many options");
      if (server_->shutting_down_) return Status::Cancelled("nbd: server shutting down");
      uint8_t h[16];
      HEXZ_RETURN_IF_ERROR(io_->Read(h, sizeof h, deadline));
      if (base::GetBe64(h) != kIHaveOpt) return Status::InvalidArgument("nbd: bad option magic");
      uint32_t opt = base::GetBe32(h + 8);
      uint32_t len = base::GetBe32(h + 12);
      if (!fixed_ && opt != kOptExportName) {
        // Without fixed newstyle no error reply is possible.
        return Status::InvalidArgument("nbd: option " + std::to_string(opt) +
                                       " without fixed newstyle");
      }
      if (len > kMaxOptionLength) {
        if (opt == kOptExportName || len > kMaxOptionDrain) {
          return Status::InvalidArgument("nbd: option " + std::to_string(opt) + " length " +
                                         std::to_string(len) + " too large");
        }
        HEXZ_RETURN_IF_ERROR(io_->Discard(len, deadline));
        HEXZ_RETURN_IF_ERROR(ReplyError(opt, kRepErrTooBig, "option data too large", deadline));
        continue;
      }
      std::string data(len, '\0');
      HEXZ_RETURN_IF_ERROR(io_->Read(data.data(), len, deadline));
      HEXZ_ASSIGN_OR_RETURN(bool done, HandleOption(opt, data, deadline, end));
      if (done) return Status::Ok();
    }
  }

  // One option of the handshake; true when the handshake is over.
  base::Result<bool> HandleOption(uint32_t opt, const std::string& data, Clock::time_point deadline,
                                  HandshakeEnd* end) {
    const uint32_t len = static_cast<uint32_t>(data.size());
    if (opt == kOptAbort) {
      (void)Reply(opt, kRepAck, "", deadline);  // the client may already be gone
      *end = HandshakeEnd::kAbort;
      return true;
    }
    if (opt == kOptStartTls) {
      HEXZ_RETURN_IF_ERROR(StartTls(data, deadline));
      return false;
    }
    if (TlsRequired()) {
      if (opt == kOptExportName) {
        return Status::PermissionDenied(
            "nbd: client asked for an export before STARTTLS (TLS is required)");
      }
      HEXZ_RETURN_IF_ERROR(ReplyError(
          opt, kRepErrTlsReqd, "TLS is required: negotiate NBD_OPT_STARTTLS first", deadline));
      return false;
    }
    switch (opt) {
      case kOptExportName: {
        const Export* e = server_->Find(data);
        if (e == nullptr) return Status::NotFound("nbd: no export named '" + data + "'");
        if (!Allowed(*e)) {
          return Status::PermissionDenied("nbd: " + peer_.Describe() + " may not use export '" +
                                          e->name + "'");
        }
        SelectExport(e);
        Builder b;
        b.U64(e->volume->Size()).U16(TransmissionFlags());
        if (!no_zeroes_) b.Bytes(std::string(124, '\0'));
        HEXZ_RETURN_IF_ERROR(io_->Write(b.data(), deadline));
        *end = HandshakeEnd::kTransmission;
        return true;
      }
      case kOptList:
        if (len != 0) {
          HEXZ_RETURN_IF_ERROR(ReplyError(opt, kRepErrInvalid, "LIST takes no data", deadline));
          break;
        }
        for (const Export& e : server_->exports_) {
          if (!Allowed(e)) continue;
          Builder b;
          b.U32(static_cast<uint32_t>(e.name.size())).Bytes(e.name).Bytes(e.description);
          HEXZ_RETURN_IF_ERROR(Reply(opt, kRepServer, b.data(), deadline));
        }
        HEXZ_RETURN_IF_ERROR(Reply(opt, kRepAck, "", deadline));
        break;
      case kOptInfo:
      case kOptGo: {
        bool go = false;
        HEXZ_RETURN_IF_ERROR(HandleInfoGo(opt, data, deadline, &go));
        if (go) {
          *end = HandshakeEnd::kTransmission;
          return true;
        }
        break;
      }
      case kOptStructuredReply:
        if (len != 0) {
          HEXZ_RETURN_IF_ERROR(
              ReplyError(opt, kRepErrInvalid, "STRUCTURED_REPLY takes no data", deadline));
          break;
        }
        structured_ = true;
        HEXZ_RETURN_IF_ERROR(Reply(opt, kRepAck, "", deadline));
        break;
      case kOptListMetaContext:
      case kOptSetMetaContext:
        HEXZ_RETURN_IF_ERROR(HandleMetaContext(opt, data, deadline));
        break;
      default:  // EXTENDED_HEADERS and anything unknown
        HEXZ_RETURN_IF_ERROR(ReplyError(opt, kRepErrUnsup, "option not supported", deadline));
        break;
    }
    return false;
  }

  bool TlsRequired() const {
    return !tls_ && opt_.tls != nullptr && opt_.tls->mode() == TlsMode::kRequire;
  }

  // May this client use export e (the TLS access file)?
  bool Allowed(const Export& e) const {
    const TlsAccess* access = opt_.tls != nullptr ? opt_.tls->access() : nullptr;
    return access == nullptr || access->Allows(peer_, e.name);
  }

  // NBD_OPT_STARTTLS: the ACK, then the TLS handshake on the same socket;
  // the option haggling goes on inside TLS, from a clean slate.
  Status StartTls(const std::string& data, Clock::time_point deadline) {
    if (opt_.tls == nullptr) {
      return ReplyError(kOptStartTls, kRepErrUnsup, "TLS is not enabled on this server", deadline);
    }
    if (tls_) return ReplyError(kOptStartTls, kRepErrInvalid, "TLS is already active", deadline);
    if (!data.empty()) {
      return ReplyError(kOptStartTls, kRepErrInvalid, "STARTTLS takes no data", deadline);
    }
    HEXZ_RETURN_IF_ERROR(Reply(kOptStartTls, kRepAck, "", deadline));
    HEXZ_ASSIGN_OR_RETURN(tls_, opt_.tls->Accept(fd_, deadline));
    io_ = tls_.get();
    peer_ = tls_->peer();
    HEXZ_LOG_DEBUG("nbd: TLS client: %s", peer_.Describe().c_str());
    // Nothing negotiated before TLS survives it (proto.md).
    structured_ = false;
    meta_allocation_ = false;
    meta_export_.clear();
    export_ = nullptr;
    return Status::Ok();
  }

  Status Reply(uint32_t opt, uint32_t type, std::string_view payload, Clock::time_point deadline) {
    Builder b;
    b.U64(kOptReplyMagic).U32(opt).U32(type).U32(static_cast<uint32_t>(payload.size()));
    b.Bytes(payload);
    return io_->Write(b.data(), deadline);
  }
  Status ReplyError(uint32_t opt, uint32_t type, std::string_view msg, Clock::time_point deadline) {
    return Reply(opt, type, msg, deadline);
  }

  Status RefuseExport(uint32_t opt, const Export& e, Clock::time_point deadline) {
    HEXZ_LOG_INFO("nbd: %s may not use export '%s'", peer_.Describe().c_str(), e.name.c_str());
    return ReplyError(opt, kRepErrPolicy, "access to export '" + e.name + "' denied", deadline);
  }

  // Parses "u32 name length, name, rest" and returns the name.
  static bool TakeName(const std::string& data, size_t* pos, std::string* name) {
    if (data.size() - *pos < 4) return false;
    uint32_t n = base::GetBe32(reinterpret_cast<const uint8_t*>(data.data()) + *pos);
    *pos += 4;
    if (n > data.size() - *pos || n > kMaxStringLength) return false;
    *name = data.substr(*pos, n);
    *pos += n;
    return true;
  }

  Status HandleInfoGo(uint32_t opt, const std::string& data, Clock::time_point deadline, bool* go) {
    size_t pos = 0;
    std::string name;
    if (!TakeName(data, &pos, &name) || data.size() - pos < 2) {
      return ReplyError(opt, kRepErrInvalid, "malformed INFO/GO request", deadline);
    }
    const auto* p = reinterpret_cast<const uint8_t*>(data.data());
    uint16_t nreq = base::GetBe16(p + pos);
    pos += 2;
    if (data.size() - pos != size_t{nreq} * 2) {
      return ReplyError(opt, kRepErrInvalid, "INFO/GO request count does not match its length",
                        deadline);
    }
    bool want_name = false, want_description = false;
    for (uint16_t i = 0; i < nreq; ++i) {
      uint16_t info = base::GetBe16(p + pos + 2 * i);
      if (info == kInfoName) want_name = true;
      if (info == kInfoDescription) want_description = true;
      // NBD_INFO_BLOCK_SIZE is always sent; unknown requests are ignored.
    }
    const Export* e = server_->Find(name);
    if (e == nullptr) {
      return ReplyError(opt, kRepErrUnknown, "no export named '" + name + "'", deadline);
    }
    if (!Allowed(*e)) return RefuseExport(opt, *e, deadline);
    const Export* previous = export_;
    export_ = e;  // the flags below depend on it
    Builder info;
    info.U16(kInfoExport).U64(e->volume->Size()).U16(TransmissionFlags());
    Status s = Reply(opt, kRepInfo, info.data(), deadline);
    if (s.ok() && want_name) {
      Builder b;
      b.U16(kInfoName).Bytes(e->name);
      s = Reply(opt, kRepInfo, b.data(), deadline);
    }
    if (s.ok() && want_description) {
      Builder b;
      b.U16(kInfoDescription).Bytes(e->description);
      s = Reply(opt, kRepInfo, b.data(), deadline);
    }
    if (s.ok()) {
      Builder b;
      b.U16(kInfoBlockSize)
          .U32(1)
          .U32(PreferredBlockSize(*e->volume, opt_.max_request))
          .U32(opt_.max_request);
      s = Reply(opt, kRepInfo, b.data(), deadline);
    }
    if (s.ok()) s = Reply(opt, kRepAck, "", deadline);
    HEXZ_RETURN_IF_ERROR(s);
    if (opt == kOptGo) {
      SelectExport(e);
      *go = true;
    } else {
      export_ = previous;
    }
    return Status::Ok();
  }

  Status HandleMetaContext(uint32_t opt, const std::string& data, Clock::time_point deadline) {
    const bool set = opt == kOptSetMetaContext;
    if (set) {
      meta_allocation_ = false;  // SET replaces the selection, even when it fails
      meta_export_.clear();
    }
    if (set && !structured_) {
      return ReplyError(opt, kRepErrInvalid, "negotiate STRUCTURED_REPLY first", deadline);
    }
    size_t pos = 0;
    std::string name;
    if (!TakeName(data, &pos, &name) || data.size() - pos < 4) {
      return ReplyError(opt, kRepErrInvalid, "malformed meta context request", deadline);
    }
    const auto* p = reinterpret_cast<const uint8_t*>(data.data());
    uint32_t nq = base::GetBe32(p + pos);
    pos += 4;
    std::vector<std::string> queries;
    for (uint32_t i = 0; i < nq; ++i) {
      std::string q;
      if (!TakeName(data, &pos, &q)) {
        return ReplyError(opt, kRepErrInvalid, "malformed meta context query", deadline);
      }
      queries.push_back(std::move(q));
    }
    if (pos != data.size()) {
      return ReplyError(opt, kRepErrInvalid, "trailing bytes in meta context request", deadline);
    }
    const Export* e = server_->Find(name);
    if (e == nullptr) {
      return ReplyError(opt, kRepErrUnknown, "no export named '" + name + "'", deadline);
    }
    if (!Allowed(*e)) return RefuseExport(opt, *e, deadline);
    bool allocation = false;
    if (!set && queries.empty()) allocation = true;
    for (const std::string& q : queries) {
      if (q == kBaseAllocation) allocation = true;
      if (!set && q == "base:") allocation = true;  // wildcard, LIST only
    }
    if (allocation) {
      Builder b;
      b.U32(set ? kAllocationContextId : 0).Bytes(kBaseAllocation);
      HEXZ_RETURN_IF_ERROR(Reply(opt, kRepMetaContext, b.data(), deadline));
      if (set) {
        meta_allocation_ = true;
        meta_export_ = e->name;
      }
    }
    return Reply(opt, kRepAck, "", deadline);
  }

  // Enters transmission with export e: contexts chosen for another export lapse.
  void SelectExport(const Export* e) {
    export_ = e;
    if (meta_allocation_ && meta_export_ != e->name) meta_allocation_ = false;
    writable_ = e->volume->Writable();
    size_ = e->volume->Size();
  }

  uint16_t TransmissionFlags() const {
    uint16_t f = kTransHasFlags | kTransSendFlush | kTransSendFua | kTransSendCache;
    if (opt_.multi_conn) f |= kTransCanMultiConn;
    if (structured_) f |= kTransSendDf;
    if (export_->volume->Writable()) {
      f |= kTransSendTrim | kTransSendWriteZeroes | kTransSendFastZero;
    } else {
      f |= kTransReadOnly;
    }
    return f;
  }

  // --- transmission --------------------------------------------------------

  Status Transmission() {
    unsigned n = std::max(1u, opt_.threads_per_connection);
    std::vector<std::thread> workers;
    workers.reserve(n);
    for (unsigned i = 0; i < n; ++i) workers.emplace_back([this] { WorkerLoop(); });
    Status result = ReadRequests();
    {
      std::lock_guard lock(q_mu_);
      closing_ = true;
    }
    q_cv_.notify_all();
    for (auto& t : workers) t.join();
    if (writable_ && opt_.flush_on_disconnect) {
      Status s = export_->volume->Flush();
      if (!s.ok() && result.ok()) result = s.WithContext("nbd: flush at disconnect");
    }
    return result;
  }

  // Reads requests until DISC, EOF, a protocol error or a broken socket.
  Status ReadRequests() {
    for (;;) {
      uint8_t h[kRequestSize];
      Status s = io_->Read(h, sizeof h, kNoDeadline);  // idle clients may wait
      if (!s.ok()) {
        if (broken_) {
          return Status::IoError("nbd: a reply could not be sent; client dropped", EPIPE);
        }
        if (server_->shutting_down_) return Status::Ok();
        return s.WithContext("nbd: reading request");
      }
      if (base::GetBe32(h) != kRequestMagic)
        return Status::InvalidArgument("nbd: bad request magic");
      Request r;
      r.flags = base::GetBe16(h + 4);
      r.type = base::GetBe16(h + 6);
      r.handle = base::GetBe64(h + 8);
      r.offset = base::GetBe64(h + 16);
      r.length = base::GetBe32(h + 24);
      if (r.type == kCmdDisc) return Status::Ok();

      std::string why;
      uint32_t err = Validate(r, &why);
      if (r.type == kCmdWrite) {
        if (err != 0) {
          // The payload follows the header whatever we think of it.
          if (r.length > kMaxWriteDrain) {
            return Status::InvalidArgument("nbd: WRITE of " + std::to_string(r.length) +
                                           " bytes refused: " + why);
          }
          s = io_->Discard(r.length, DeadlineIn(opt_.io_timeout_ms));
          if (!s.ok()) return s.WithContext("nbd: draining refused WRITE payload");
          HEXZ_RETURN_IF_ERROR(SendError(r.handle, err, why));
          continue;
        }
        Charge(&r, r.length);
        r.payload.reset(new (std::nothrow) uint8_t[r.length]);
        if (!r.payload) {
          Uncharge(&r);
          HEXZ_RETURN_IF_ERROR(io_->Discard(r.length, DeadlineIn(opt_.io_timeout_ms)));
          HEXZ_RETURN_IF_ERROR(SendError(r.handle, kEnomem, "out of memory"));
          continue;
        }
        s = io_->Read(r.payload.get(), r.length, DeadlineIn(opt_.io_timeout_ms));
        if (!s.ok()) {
          Uncharge(&r);
          return s.WithContext("nbd: reading WRITE payload");
        }
      } else if (err != 0) {
        HEXZ_RETURN_IF_ERROR(SendError(r.handle, err, why));
        continue;
      } else if (r.type == kCmdRead) {
        Charge(&r, r.length);
      }
      std::unique_lock lock(q_mu_);
      space_cv_.wait(lock, [&] { return queue_.size() < kMaxQueued; });
      queue_.push_back(std::move(r));
      lock.unlock();
      q_cv_.notify_one();
    }
  }

  // Only the reader charges. A connection that holds nothing of the server
  // budget always gets one request through: clients whose replies are stuck
  // in their sockets can exhaust the server budget, and must not stall others.
  void Charge(Request* r, uint64_t n) {
    conn_budget_.Acquire(n);
    server_->budget_.Acquire(n, &server_share_);
    server_share_ += n;
    r->charged = n;
  }
  // Any worker. The share drops before the budget wakes its waiters.
  void Uncharge(Request* r) {
    if (r->charged == 0) return;
    server_share_ -= r->charged;
    server_->budget_.Release(r->charged);
    conn_budget_.Release(r->charged);
    r->charged = 0;
  }

  // Returns 0, or the NBD error for a request that must not run (with why).
  uint32_t Validate(const Request& r, std::string* why) const {
    uint16_t allowed = kCmdFlagFua;
    switch (r.type) {
      case kCmdRead:
        if (structured_) allowed |= kCmdFlagDf;
        break;
      case kCmdWrite:
      case kCmdFlush:
      case kCmdTrim:
      case kCmdCache:
        break;
      case kCmdWriteZeroes:
        allowed |= kCmdFlagNoHole | kCmdFlagFastZero;
        break;
      case kCmdBlockStatus:
        allowed |= kCmdFlagReqOne;
        break;
      default:
        *why = "unknown command " + std::to_string(r.type);
        return kEinval;
    }
    const std::string cmd = CommandName(r.type);
    if (r.flags & ~allowed) {
      *why = cmd + ": flags " + std::to_string(r.flags) + " not allowed";
      return kEinval;
    }
    const bool writes = r.type == kCmdWrite || r.type == kCmdTrim || r.type == kCmdWriteZeroes;
    if (writes && !writable_) {
      *why = cmd + ": export '" + export_->name + "' is read-only";
      return kEperm;
    }
    if (r.type == kCmdFlush) return 0;  // offset and length carry nothing
    if (r.type == kCmdBlockStatus && !(structured_ && meta_allocation_)) {
      *why = "BLOCK_STATUS without a negotiated meta context";
      return kEinval;
    }
    if (r.length == 0) {
      *why = cmd + ": zero length";
      return kEinval;
    }
    if (!base::RangeWithin<uint64_t>(r.offset, r.length, size_)) {
      *why = cmd + ": range " + std::to_string(r.offset) + "+" + std::to_string(r.length) +
             " is outside the export (size " + std::to_string(size_) + ")";
      return (r.type == kCmdWrite || r.type == kCmdWriteZeroes) ? kEnospc : kEinval;
    }
    const bool limited = r.type == kCmdRead || r.type == kCmdWrite || r.type == kCmdCache ||
                         (r.type == kCmdWriteZeroes && !(r.flags & kCmdFlagFastZero));
    if (limited && r.length > opt_.max_request) {
      *why = cmd + ": length " + std::to_string(r.length) + " exceeds the maximum " +
             std::to_string(opt_.max_request);
      return kEinval;
    }
    return 0;
  }

  void WorkerLoop() {
    for (;;) {
      Request r;
      {
        std::unique_lock lock(q_mu_);
        q_cv_.wait(lock, [&] { return !queue_.empty() || closing_; });
        if (queue_.empty()) return;
        r = std::move(queue_.front());
        queue_.pop_front();
      }
      space_cv_.notify_one();
      if (!broken_) {
        try {
          Execute(r);
        } catch (...) {  // nothing may escape a thread
          (void)SendError(r.handle, kEio, "internal error");
        }
      }
      r.payload.reset();
      Uncharge(&r);
    }
  }

  void Execute(Request& r) {
    io::Volume& v = *export_->volume;
    const bool fua = r.flags & kCmdFlagFua;
    Status s;
    switch (r.type) {
      case kCmdRead:
        return ExecuteRead(r);
      case kCmdBlockStatus:
        return ExecuteBlockStatus(r);
      case kCmdWrite:
        s = v.Write(r.offset, r.payload.get(), r.length, fua);
        break;
      case kCmdFlush:
        s = v.Flush();
        break;
      case kCmdTrim:
        s = v.Trim(r.offset, r.length);
        if (s.ok() && fua) s = v.Flush();
        break;
      case kCmdWriteZeroes:
        if ((r.flags & kCmdFlagFastZero) && !export_->fast_zero) {
          (void)SendError(r.handle, kEnotsup, "zeroing is not faster than writing");
          return;
        }
        s = v.WriteZeroes(r.offset, r.length, fua);
        break;
      case kCmdCache:  // a hint; the volume's own cache decides
        break;
    }
    if (!s.ok()) {
      (void)SendError(r.handle, NbdErrno(s, r.flags), s.message());
    } else {
      (void)SendSimple(r.handle, 0, nullptr, 0);
    }
  }

  void ExecuteRead(Request& r) {
    if (structured_ && !(r.flags & kCmdFlagDf)) return ExecuteSparseRead(r);
    std::unique_ptr<uint8_t[]> buf(new (std::nothrow) uint8_t[r.length]);
    if (!buf) {
      (void)SendError(r.handle, kEnomem, "out of memory");
      return;
    }
    Status s = ReadPieces(r.offset, buf.get(), r.length);
    if (!s.ok()) {
      (void)SendError(r.handle, NbdErrno(s, r.flags), s.message());
      return;
    }
    if (!structured_) {
      (void)SendSimple(r.handle, 0, buf.get(), r.length);
      return;
    }
    // One data chunk: the data is complete before the header leaves, so the
    // chunk may carry NBD_REPLY_FLAG_DONE.
    Builder payload_head;
    payload_head.U64(r.offset);
    (void)SendChunk(r.handle, kReplyFlagDone, kReplyTypeOffsetData, payload_head.data(), buf.get(),
                    r.length);
  }

  // Reads [offset, offset+len) of the export into buf, the pieces of a
  // range that spans several blocks in parallel.
  Status ReadPieces(uint64_t offset, uint8_t* buf, uint64_t len) {
    io::Volume* v = export_->volume.get();
    return server_->fanout_.ForEachPiece(
        offset, len, PieceSize(*export_),
        [&](uint64_t off, uint64_t n, uint64_t pos) { return v->Read(off, buf + pos, n); });
  }

  // A structured read without DF: zero extents go out as OFFSET_HOLE chunks
  // (and are not read at all), data as OFFSET_DATA chunks of bounded size,
  // then a final NONE chunk. Chunks never overlap.
  void ExecuteSparseRead(Request& r) {
    struct Range {
      uint64_t offset, length;
      bool zero;
    };
    const uint64_t end = r.offset + r.length;  // validated: no overflow
    std::vector<Range> ranges;
    uint64_t cur = r.offset;
    std::vector<io::Extent> extents;
    if (opt_.sparse_reads && export_->volume->Extents(r.offset, r.length, &extents).ok()) {
      for (const io::Extent& e : extents) {
        if (e.length == 0) continue;
        uint64_t e_end = base::CheckedAdd(e.offset, e.length).value_or(UINT64_MAX);
        if (e.offset > cur) break;
        if (e_end <= cur) continue;
        uint64_t take = std::min(e_end, end) - cur;
        bool zero = e.zero || e.hole;
        if (!ranges.empty() && ranges.back().zero == zero) {
          ranges.back().length += take;
        } else {
          ranges.push_back({cur, take, zero});
        }
        cur += take;
        if (cur >= end) break;
      }
    }
    if (cur < end) ranges.push_back({cur, end - cur, false});

    std::unique_ptr<uint8_t[]> buf;
    for (const Range& g : ranges) {
      if (g.zero) {
        Builder hole;
        hole.U64(g.offset).U32(static_cast<uint32_t>(g.length));  // <= max_request
        if (!SendChunk(r.handle, 0, kReplyTypeOffsetHole, hole.data(), nullptr, 0).ok()) return;
        continue;
      }
      if (!buf) {
        buf.reset(new (std::nothrow) uint8_t[r.length]);
        if (!buf) {
          (void)SendError(r.handle, kEnomem, "out of memory");
          return;
        }
      }
      uint8_t* p = buf.get() + (g.offset - r.offset);
      Status s = ReadPieces(g.offset, p, g.length);
      if (!s.ok()) {
        (void)SendError(r.handle, NbdErrno(s, r.flags), s.message());
        return;
      }
      for (uint64_t done = 0; done < g.length;) {
        uint64_t n = std::min<uint64_t>(g.length - done, kMaxDataChunk);
        Builder head;
        head.U64(g.offset + done);
        if (!SendChunk(r.handle, 0, kReplyTypeOffsetData, head.data(), p + done, n).ok()) return;
        done += n;
      }
    }
    (void)SendChunk(r.handle, kReplyFlagDone, kReplyTypeNone, "", nullptr, 0);
  }

  void ExecuteBlockStatus(Request& r) {
    std::vector<io::Extent> extents;
    Status s = export_->volume->Extents(r.offset, r.length, &extents);
    if (!s.ok()) {
      (void)SendError(r.handle, NbdErrno(s, r.flags), s.message());
      return;
    }
    const uint64_t end = r.offset + r.length;  // validated: no overflow
    const bool one = r.flags & kCmdFlagReqOne;
    std::vector<std::pair<uint32_t, uint32_t>> desc;  // length, flags
    uint64_t cur = r.offset;
    for (const io::Extent& e : extents) {
      if (e.length == 0) continue;
      uint64_t e_end = base::CheckedAdd(e.offset, e.length).value_or(UINT64_MAX);
      if (e.offset > cur) break;  // a gap: report what is contiguous
      if (e_end <= cur) continue;
      uint64_t take = std::min(e_end, end) - cur;
      uint32_t flags = (e.hole ? (kStateHole | kStateZero) : 0) | (e.zero ? kStateZero : 0);
      if (!desc.empty() && desc.back().second == flags) {
        desc.back().first += static_cast<uint32_t>(take);  // sum <= r.length
      } else {
        if (one && !desc.empty()) break;
        if (desc.size() >= kMaxDescriptors) break;
        desc.emplace_back(static_cast<uint32_t>(take), flags);
      }
      cur += take;
      if (cur >= end) break;
    }
    if (desc.empty()) desc.emplace_back(r.length, 0);  // "allocated, contents unknown"
    Builder b;
    b.U32(kAllocationContextId);
    for (auto [len, flags] : desc) b.U32(len).U32(flags);
    (void)SendChunk(r.handle, kReplyFlagDone, kReplyTypeBlockStatus, b.data(), nullptr, 0);
  }

  // --- replies (any worker, under write_mu_) --------------------------------

  Status Send(std::string_view head, const uint8_t* data, size_t len) {
    std::lock_guard lock(write_mu_);
    if (broken_) return Status::IoError("nbd: connection broken", EPIPE);
    auto deadline = DeadlineIn(opt_.io_timeout_ms);
    Status s = io_->WriteMessage(head, data, len, deadline);
    if (!s.ok()) {
      broken_ = true;
      ::shutdown(fd_, SHUT_RDWR);  // stops the reader too
    }
    return s;
  }

  Status SendSimple(uint64_t handle, uint32_t error, const uint8_t* data, size_t len) {
    Builder b;
    b.U32(kSimpleReplyMagic).U32(error).U64(handle);
    return Send(b.data(), data, len);
  }

  // A structured chunk whose payload is `head` followed by data[0..len).
  Status SendChunk(uint64_t handle, uint16_t flags, uint16_t type, std::string_view head,
                   const uint8_t* data, size_t len) {
    Builder b;
    b.U32(kStructuredReplyMagic).U16(flags).U16(type).U64(handle);
    b.U32(static_cast<uint32_t>(head.size() + len)).Bytes(head);
    return Send(b.data(), data, len);
  }

  Status SendError(uint64_t handle, uint32_t error, std::string_view msg) {
    if (!structured_) return SendSimple(handle, error, nullptr, 0);
    if (msg.size() > kMaxStringLength) msg = msg.substr(0, kMaxStringLength);
    Builder p;
    p.U32(error).U16(static_cast<uint16_t>(msg.size())).Bytes(msg);
    return SendChunk(handle, kReplyFlagDone, kReplyTypeError, p.data(), nullptr, 0);
  }

  Server* server_;
  const ServerOptions& opt_;
  const int fd_;
  PlainStream plain_{fd_};
  Stream* io_ = &plain_;  // plain_ or, after STARTTLS, tls_
  std::unique_ptr<TlsStream> tls_;
  TlsPeer peer_;  // who the client is (nobody before TLS)

  // Negotiated state: written by the handshake, read-only afterwards.
  bool fixed_ = false;
  bool no_zeroes_ = false;
  bool structured_ = false;
  bool meta_allocation_ = false;
  std::string meta_export_;
  const Export* export_ = nullptr;
  bool writable_ = false;
  uint64_t size_ = 0;

  Budget conn_budget_;
  std::atomic<uint64_t> server_share_{0};  // bytes this connection holds of the server budget
  std::mutex q_mu_;
  std::condition_variable q_cv_, space_cv_;
  std::deque<Request> queue_;  // guarded by q_mu_
  bool closing_ = false;       // guarded by q_mu_
  std::mutex write_mu_;        // one message on the wire at a time
  std::atomic<bool> broken_{false};
};

// ---------------------------------------------------------------------------
// Server

Server::Server(std::vector<Export> exports, ServerOptions options)
    : exports_(std::move(exports)),
      options_(std::move(options)),
      budget_(std::max<uint64_t>(options_.server_inflight_bytes, options_.max_request)),
      fanout_(options_.read_threads) {
  options_.max_request = std::clamp<uint32_t>(options_.max_request, 1u << 20, kMaxPayload);
  int p[2];
  if (::pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0) {
    wake_read_.reset(p[0]);
    wake_write_.reset(p[1]);
  }
}

Server::~Server() { Shutdown(); }

const Export* Server::Find(const std::string& name) const {
  const std::string& want = name.empty() ? options_.default_export : name;
  for (const Export& e : exports_) {
    if (e.name == want && e.volume) return &e;
  }
  return nullptr;
}

bool Server::Register(int fd) {
  std::lock_guard lock(conns_mu_);
  if (shutting_down_) return false;
  conns_.insert(fd);
  return true;
}

void Server::Unregister(int fd) {
  std::lock_guard lock(conns_mu_);
  conns_.erase(fd);
}

size_t Server::ActiveConnections() const {
  std::lock_guard lock(conns_mu_);
  return conns_.size();
}

void Server::Shutdown() {
  std::lock_guard lock(conns_mu_);
  if (!shutting_down_.exchange(true) && wake_write_) {
    char c = 1;
    (void)!::write(wake_write_.get(), &c, 1);
  }
  // Readers see end-of-stream; replies for requests in flight still go out.
  for (int fd : conns_) ::shutdown(fd, SHUT_RD);
}

Status Server::ServeConnection(base::UniqueFd conn) {
  if (!conn) return Status::InvalidArgument("nbd: no connection");
  if (!Register(conn.get())) return Status::Cancelled("nbd: server shutting down");
  Status s;
  try {
    Connection c(this, conn.get());
    s = c.Run();
  } catch (const std::exception& e) {
    s = Status::Internal(std::string("nbd: ") + e.what());
  }
  Unregister(conn.get());
  if (!s.ok() && shutting_down_) s = Status::Ok();
  return s;
}

Status Server::ServeListener(int listen_fd, int stop_fd) {
  struct Worker {
    std::thread thread;
    std::atomic<bool> done{false};
  };
  std::list<Worker> workers;
  auto reap = [&] {
    for (auto it = workers.begin(); it != workers.end();) {
      if (it->done) {
        it->thread.join();
        it = workers.erase(it);
      } else {
        ++it;
      }
    }
  };
  Status result;
  while (!shutting_down_) {
    struct pollfd p[3] = {
        {listen_fd, POLLIN, 0}, {stop_fd, POLLIN, 0}, {wake_read_.get(), POLLIN, 0}};
    int n = ::poll(p, 3, 1000);
    reap();
    if (n < 0) {
      if (errno == EINTR) continue;
      result = Status::FromErrno(errno, "nbd: poll on listener");
      break;
    }
    if (n == 0) continue;
    if ((p[1].revents | p[2].revents) != 0) break;
    if (p[0].revents & (POLLERR | POLLNVAL)) {
      result = Status::IoError("nbd: listening socket failed");
      break;
    }
    if (!(p[0].revents & POLLIN)) continue;
    int c = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED ||
          errno == EPROTO) {
        continue;
      }
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        HEXZ_LOG_WARN("nbd: accept: %s", std::strerror(errno));
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        continue;
      }
      result = Status::FromErrno(errno, "nbd: accept");
      break;
    }
    base::UniqueFd conn(c);
    if (workers.size() >= options_.max_connections) {
      HEXZ_LOG_WARN("nbd: refusing a client: %u connections already", options_.max_connections);
      continue;
    }
    Worker& w = workers.emplace_back();
    w.thread = std::thread([this, &w, fd = std::move(conn)]() mutable {
      Status s = ServeConnection(std::move(fd));
      if (s.ok() || s.sys_errno() == EPIPE) {  // a client that hung up is no news
        HEXZ_LOG_DEBUG("nbd: client gone: %s", s.ToString().c_str());
      } else {
        HEXZ_LOG_INFO("nbd: client dropped: %s", s.ToString().c_str());
      }
      w.done = true;
    });
  }
  Shutdown();
  for (Worker& w : workers) w.thread.join();
  return result;
}

}  // namespace hexz::nbd

// Status and Result<T>: the error vocabulary of hexz.
//
// A Status is a code, the errno it came from (0 when none), and a short
// message that names the thing and the problem ("disk.st: block 12 checksum
// mismatch at offset 786432"). Errors are turned into errno only at the
// FUSE/NBD edge (ToErrno) and into an exit code only in main().
//
// Thread safety: values; copy freely, share nothing.
#pragma once

#include <cerrno>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace hexz::base {

enum class Code : unsigned char {
  kOk = 0,
  kInvalidArgument,   // bad flag, bad value, malformed request
  kNotFound,          // missing file or entry
  kCorruption,        // checksum mismatch, malformed structure, truncated file
  kUnsupported,       // newer format version, unknown feature
  kIoError,           // a system call failed (errno says which way)
  kReadOnly,          // write to something read-only
  kNoSpace,           // ENOSPC, or a limit on size
  kBusy,              // locked, mounted, in use
  kPermissionDenied,  // EACCES/EPERM
  kOutOfRange,        // offset or length outside a stream
  kAlreadyExists,     // EEXIST
  kUnavailable,       // a needed facility is missing (/dev/fuse, nbd module)
  kCancelled,         // interrupted by the user
  kInternal,          // a bug
};

const char* CodeName(Code code);

// The errno that stands for `code` at a kernel or protocol edge (EINVAL for
// kInvalidArgument, EIO for kCorruption, ...); 0 for kOk.
int CodeErrno(Code code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(Code code, std::string message, int sys_errno = 0)
      : code_(code), errno_(sys_errno), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  // One factory per code. Each sets the errno its code stands for
  // (CodeErrno), or the one given when a caller knows better (EPIPE for a
  // peer that hung up), so that sys_errno() is never 0 for an error.
  static Status InvalidArgument(std::string m) {
    return Make(Code::kInvalidArgument, std::move(m));
  }
  static Status NotFound(std::string m) { return Make(Code::kNotFound, std::move(m)); }
  static Status Corruption(std::string m) { return Make(Code::kCorruption, std::move(m)); }
  static Status Unsupported(std::string m) { return Make(Code::kUnsupported, std::move(m)); }
  static Status IoError(std::string m, int err = EIO) {
    return {Code::kIoError, std::move(m), err};
  }
  static Status ReadOnly(std::string m) { return Make(Code::kReadOnly, std::move(m)); }
  static Status NoSpace(std::string m) { return Make(Code::kNoSpace, std::move(m)); }
  static Status Busy(std::string m) { return Make(Code::kBusy, std::move(m)); }
  static Status PermissionDenied(std::string m, int err = EACCES) {
    return {Code::kPermissionDenied, std::move(m), err};
  }
  static Status OutOfRange(std::string m) { return Make(Code::kOutOfRange, std::move(m)); }
  static Status AlreadyExists(std::string m) { return Make(Code::kAlreadyExists, std::move(m)); }
  static Status Unavailable(std::string m, int err = ENODEV) {
    return {Code::kUnavailable, std::move(m), err};
  }
  static Status Cancelled(std::string m) { return Make(Code::kCancelled, std::move(m)); }
  static Status Internal(std::string m) { return Make(Code::kInternal, std::move(m)); }

  // "context: strerror(err)", with the code chosen from err.
  static Status FromErrno(int err, std::string_view context);

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  int sys_errno() const { return errno_; }
  const std::string& message() const { return message_; }

  // The errno to hand to a kernel or protocol edge (never 0 for an error).
  int ToErrno() const;

  // Returns a copy whose message is "prefix: message" (same code and errno).
  Status WithContext(std::string_view prefix) const;

  // "OK", or the message alone (messages already name what failed).
  std::string ToString() const { return ok() ? "OK" : message_; }

 private:
  static Status Make(Code code, std::string m) { return {code, std::move(m), CodeErrno(code)}; }

  Code code_ = Code::kOk;
  int errno_ = 0;
  std::string message_;
};

// A value or the Status that explains why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {  // NOLINT: implicit by design
    if (std::get<Status>(v_).ok()) v_ = Status::Internal("Result constructed from OK status");
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOkStatus;
    return ok() ? kOkStatus : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace hexz::base

#define HEXZ_CONCAT_INNER_(a, b) a##b
#define HEXZ_CONCAT_(a, b) HEXZ_CONCAT_INNER_(a, b)

// Returns from the current function when `expr` yields a non-OK Status.
#define HEXZ_RETURN_IF_ERROR(expr)               \
  do {                                           \
    ::hexz::base::Status hexz_status_ = (expr);  \
    if (!hexz_status_.ok()) return hexz_status_; \
  } while (0)

// `lhs = value of expr`, or returns its Status. lhs may declare a variable.
#define HEXZ_ASSIGN_OR_RETURN(lhs, expr) \
  HEXZ_ASSIGN_OR_RETURN_IMPL_(HEXZ_CONCAT_(hexz_result_, __LINE__), lhs, expr)
#define HEXZ_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(tmp).value()

#include "common/base/status.h"

#include <cstring>

namespace hexz::base {

const char* CodeName(Code code) {
  switch (code) {
    case Code::kOk:
      return "ok";
    case Code::kInvalidArgument:
      return "invalid argument";
    case Code::kNotFound:
      return "not found";
    case Code::kCorruption:
      return "corruption";
    case Code::kUnsupported:
      return "unsupported";
    case Code::kIoError:
      return "I/O error";
    case Code::kReadOnly:
      return "read-only";
    case Code::kNoSpace:
      return "no space";
    case Code::kBusy:
      return "busy";
    case Code::kPermissionDenied:
      return "permission denied";
    case Code::kOutOfRange:
      return "out of range";
    case Code::kAlreadyExists:
      return "already exists";
    case Code::kUnavailable:
      return "unavailable";
    case Code::kCancelled:
      return "cancelled";
    case Code::kInternal:
      return "internal error";
  }
  return "unknown";
}

Status Status::FromErrno(int err, std::string_view context) {
  Code code = Code::kIoError;
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      code = Code::kNotFound;
      break;
    case EACCES:
    case EPERM:
      code = Code::kPermissionDenied;
      break;
    case EROFS:
      code = Code::kReadOnly;
      break;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
      code = Code::kNoSpace;
      break;
    case EBUSY:
    case EWOULDBLOCK:
      code = Code::kBusy;
      break;
    case EEXIST:
      code = Code::kAlreadyExists;
      break;
    case EINVAL:
      code = Code::kInvalidArgument;
      break;
    case EINTR:
      code = Code::kCancelled;
      break;
    case ENODEV:
    case ENXIO:
    case ENOSYS:
      code = Code::kUnavailable;
      break;
    default:
      break;
  }
  std::string msg(context);
  msg += ": ";
  char buf[128];
  // GNU strerror_r returns a pointer that may or may not be buf.
  msg += strerror_r(err, buf, sizeof buf);
  return Status(code, std::move(msg), err);
}

int CodeErrno(Code code) {
  switch (code) {
    case Code::kOk:
      return 0;
    case Code::kInvalidArgument:
    case Code::kOutOfRange:
      return EINVAL;
    case Code::kNotFound:
      return ENOENT;
    case Code::kUnsupported:
      return EOPNOTSUPP;
    case Code::kReadOnly:
      return EROFS;
    case Code::kNoSpace:
      return ENOSPC;
    case Code::kBusy:
      return EBUSY;
    case Code::kPermissionDenied:
      return EACCES;
    case Code::kAlreadyExists:
      return EEXIST;
    case Code::kUnavailable:
      return ENODEV;
    case Code::kCancelled:
      return EINTR;
    case Code::kCorruption:
    case Code::kIoError:
    case Code::kInternal:
      return EIO;
  }
  return EIO;
}

int Status::ToErrno() const {
  if (ok()) return 0;
  return errno_ != 0 ? errno_ : CodeErrno(code_);
}

Status Status::WithContext(std::string_view prefix) const {
  if (ok()) return *this;
  std::string msg(prefix);
  msg += ": ";
  msg += message_;
  return Status(code_, std::move(msg), errno_);
}

}  // namespace hexz::base

#include "hexz/vm_session.h"

#include <fcntl.h>
#include <libnbd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/base/fd.h"
#include "common/base/json.h"
#include "hexz/nbd_api.h"

namespace hexz::cli {
namespace {

using base::JsonValue;
using base::Result;
using base::Status;
using base::UniqueFd;

constexpr char kUriPrefix[] = "nbd+unix:///disk?socket=";
constexpr char kDiskFile[] = "disk.json";
constexpr size_t kMaxDiskFile = 64 * 1024;

// The private directory of a vm resume: ours, 0700, a real directory.
bool PrivateDir(const std::string& dir) {
  struct stat st;
  return ::lstat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == ::geteuid() &&
         (st.st_mode & 0777) == 0700;
}

Result<std::string> ReadSmallFile(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return Status::FromErrno(errno, "cannot open " + path);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return Status::FromErrno(errno, path);
  if (!S_ISREG(st.st_mode) || st.st_uid != ::geteuid() ||
      static_cast<size_t>(st.st_size) > kMaxDiskFile)
    return Status::PermissionDenied(path + ": not a small regular file of ours; not trusted");
  std::string text(static_cast<size_t>(st.st_size), '\0');
  if (::pread(fd.get(), text.data(), text.size(), 0) != static_cast<ssize_t>(text.size()))
    return Status::FromErrno(errno, "reading " + path);
  return text;
}

}  // namespace

std::vector<std::string> SplitDriveOptions(const std::string& s) {
  std::vector<std::string> out(1);
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == ',' && i + 1 < s.size() && s[i + 1] == ',') {
      out.back() += ",,";
      ++i;
    } else if (s[i] == ',') {
      out.emplace_back();
    } else {
      out.back() += s[i];
    }
  }
  return out;
}

std::string DriveNbdUri(const std::string& socket) {
  std::string uri = kUriPrefix;
  for (char c : socket) uri += c == ',' ? std::string(",,") : std::string(1, c);
  return uri;
}

Status WriteServedDisk(const std::string& dir, const ServedDisk& disk) {
  const std::string path = dir + "/" + kDiskFile;
  const std::string text = JsonValue::Object({{"snapshot", JsonValue::String(disk.snapshot)},
                                              {"overlay", JsonValue::String(disk.overlay)}})
                               .Serialize() +
                           "\n";
  // Written beside it and renamed over it: a reader sees the old or the new.
  const std::string tmp = path + ".new";
  ::unlink(tmp.c_str());
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return Status::FromErrno(errno, "cannot create " + tmp);
  if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return Status::FromErrno(err, "writing " + tmp);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return Status::FromErrno(err, "cannot rename " + tmp + " to " + path);
  }
  return Status::Ok();
}

Result<std::optional<ServedDisk>> FindServedDisk(const std::vector<std::string>& args,
                                                 const std::string& drive_id) {
  if (drive_id.empty()) return std::optional<ServedDisk>();
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] != "-drive") continue;
    std::vector<std::string> opts = SplitDriveOptions(args[i + 1]);
    bool match = false;
    std::string file;
    for (const std::string& o : opts) {
      match = match || o == "id=" + drive_id;
      if (o.starts_with("file=")) file = o.substr(5);
    }
    if (!match) continue;
    if (!file.starts_with(kUriPrefix)) return std::optional<ServedDisk>();
    std::string socket;
    for (size_t j = sizeof kUriPrefix - 1; j < file.size(); ++j) {
      socket += file[j];
      if (file[j] == ',' && j + 1 < file.size() && file[j + 1] == ',') ++j;
    }
    const std::string dir = socket.substr(0, socket.rfind('/'));
    if (socket.find('/') == std::string::npos || !PrivateDir(dir))
      return std::optional<ServedDisk>();
    struct stat st;
    if (::lstat((dir + "/" + kDiskFile).c_str(), &st) != 0) return std::optional<ServedDisk>();
    HEXZ_ASSIGN_OR_RETURN(std::string text, ReadSmallFile(dir + "/" + kDiskFile));
    HEXZ_ASSIGN_OR_RETURN(JsonValue v, base::ParseJson(text));
    const JsonValue* snap = v.Find("snapshot");
    const JsonValue* ov = v.Find("overlay");
    if (snap == nullptr || ov == nullptr || !snap->is_string() || !ov->is_string() ||
        snap->AsString().empty() || ov->AsString().empty())
      return Status::InvalidArgument(dir + "/" + kDiskFile + ": lacks the snapshot or overlay");
    return std::optional<ServedDisk>(ServedDisk{snap->AsString(), ov->AsString(), socket});
  }
  return std::optional<ServedDisk>();
}

Status FlushServedDisk(const std::string& socket) {
  HEXZ_ASSIGN_OR_RETURN(const NbdApi* nbd, LoadNbd());
  nbd_handle* h = nbd->create();
  if (h == nullptr) return Status::Internal(std::string("nbd_create: ") + nbd->get_error());
  Status st;
  if (nbd->set_export_name(h, "disk") == -1 || nbd->connect_unix(h, socket.c_str()) == -1 ||
      nbd->flush(h, 0) == -1) {
    const char* e = nbd->get_error();
    st = Status::IoError("flushing the guest's disk server at " + socket + ": " +
                         (e ? e : "unknown error"));
  } else {
    nbd->shutdown(h, 0);
  }
  nbd->close(h);
  return st;
}

}  // namespace hexz::cli

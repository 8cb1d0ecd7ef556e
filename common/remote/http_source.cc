// HTTP range reads through libcurl: one attempt (Attempt), the checks of its
// answer (CheckPartial), and the retry loop with its time bound (Read).
#include "common/remote/http_source.h"

#include <curl/curl.h>
#include <strings.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "common/remote/curl_api.h"

namespace hexz::remote {
namespace {

using Clock = std::chrono::steady_clock;

// libcurl, loaded by OpenHttp and OpenS3 (which return its error) before
// anything here runs.
const CurlApi& Curl() { return **LoadCurl(); }

// A parsed URL handle (curl_url), freed on scope exit.
struct UrlHandle {
  CURLU* u = Curl().url();
  ~UrlHandle() { Curl().url_cleanup(u); }
  std::string Get(CURLUPart part) const {
    char* out = nullptr;
    if (Curl().url_get(u, part, &out, 0) != CURLUE_OK) return "";
    std::string s = out;
    Curl().free(out);
    return s;
  }
};

bool StartsWith(const std::string& s, const char* prefix) {
  return s.compare(0, std::strlen(prefix), prefix) == 0;
}

// What one request brought back.
struct Answer {
  CURLcode curl = CURLE_OK;
  char curl_error[CURL_ERROR_SIZE] = {};
  long status = 0;
  std::string content_range, content_length, etag, last_modified, location;
  uint8_t* buf = nullptr;  // body of a 206 goes here, at most cap bytes
  size_t cap = 0;
  size_t got = 0;
  bool overflow = false;
};

size_t OnHeader(char* data, size_t size, size_t n, void* user) {
  auto* a = static_cast<Answer*>(user);
  std::string line(data, size * n);
  while (!line.empty() && (line.back() == '\r' || line.back() == '\n')) line.pop_back();
  if (StartsWith(line, "HTTP/")) {  // a new response (after a 100, say): start over
    a->status = 0;
    a->content_range.clear();
    a->content_length.clear();
    a->etag.clear();
    a->last_modified.clear();
    a->location.clear();
    a->got = 0;
    a->overflow = false;
    size_t sp = line.find(' ');
    if (sp != std::string::npos) a->status = std::strtol(line.c_str() + sp + 1, nullptr, 10);
    return size * n;
  }
  size_t colon = line.find(':');
  if (colon == std::string::npos) return size * n;
  std::string name = line.substr(0, colon);
  std::string value = line.substr(colon + 1);
  value.erase(0, value.find_first_not_of(" \t"));
  if (strcasecmp(name.c_str(), "Content-Range") == 0) a->content_range = value;
  if (strcasecmp(name.c_str(), "Content-Length") == 0) a->content_length = value;
  if (strcasecmp(name.c_str(), "ETag") == 0) a->etag = value;
  if (strcasecmp(name.c_str(), "Last-Modified") == 0) a->last_modified = value;
  if (strcasecmp(name.c_str(), "Location") == 0) a->location = value;
  return size * n;
}

size_t OnBody(char* data, size_t size, size_t n, void* user) {
  auto* a = static_cast<Answer*>(user);
  size_t len = size * n;
  if (a->status != 206) return len;  // an error page: not data
  if (len > a->cap - a->got) {
    a->overflow = true;
    return 0;  // aborts the transfer (CURLE_WRITE_ERROR)
  }
  std::memcpy(a->buf + a->got, data, len);
  a->got += len;
  return len;
}

// "bytes FIRST-LAST/TOTAL" (or "bytes */TOTAL"); false when malformed.
bool ParseContentRange(const std::string& v, uint64_t* first, uint64_t* last, uint64_t* total) {
  unsigned long long f = 0, l = 0, t = 0;
  char tail = 0;
  if (std::sscanf(v.c_str(), "bytes %llu-%llu/%llu%c", &f, &l, &t, &tail) == 3 && f <= l) {
    *first = f, *last = l, *total = t;
    return true;
  }
  if (std::sscanf(v.c_str(), "bytes */%llu%c", &t, &tail) == 1) {
    *first = 1, *last = 0, *total = t;  // an empty range
    return true;
  }
  return false;
}

bool Transient(const Answer& a) {
  switch (a.curl) {
    case CURLE_OK:
      return a.status >= 500 || a.status == 408 || a.status == 429;
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
      return true;
    default:
      return false;
  }
}

// A message for an answer that is not a usable 206.
Status AnswerError(const std::string& name, const Answer& a) {
  if (a.curl != CURLE_OK) {
    std::string why = a.curl_error[0] ? a.curl_error : Curl().easy_strerror(a.curl);
    if (a.curl == CURLE_PEER_FAILED_VERIFICATION || a.curl == CURLE_SSL_CACERT_BADFILE)
      why += " (use --ca-file to name the certificate authority)";
    return Status::IoError(name + ": " + why);
  }
  std::string code = "HTTP " + std::to_string(a.status);
  if (a.status == 404 || a.status == 410)
    return Status::NotFound(name + ": not found (" + code + ")");
  if (a.status == 401 || a.status == 403)
    return Status::PermissionDenied(name + ": access denied (" + code + ")");
  if (a.status == 412)
    return Status::IoError(name + ": the object changed since it was opened (" + code +
                               "); open it again to read the new version",
                           ESTALE);
  if (a.status >= 300 && a.status < 400) {
    return Status::IoError(name + ": the server redirects (" + code + ") to " +
                           RedactUrl(a.location) +
                           "; hexz follows no redirects: give the final URL");
  }
  // An empty object has no range to give (nginx answers 200, others 416).
  if (a.status == 200 && a.content_length == "0")
    return Status::InvalidArgument(name + ": not a hexz snapshot (empty object)");
  if (a.status == 200) {
    return Status::Unsupported(name + ": the server ignores range requests (HTTP 200 for a range)");
  }
  return Status::IoError(name + ": unexpected answer (" + code + ")");
}

class HttpSource final : public io::Source {
 public:
  // `creds` (may be null: unsigned) signs every request with SigV4.
  HttpSource(std::string url, std::string name, const Options& options, const S3Credentials* creds)
      : url_(std::move(url)), name_(std::move(name)), options_(options) {
    if (creds != nullptr && !creds->access_key.empty()) creds_ = *creds;
  }
  ~HttpSource() override {
    for (CURL* h : idle_) Curl().easy_cleanup(h);
  }

  // The first request: learns the size and pins the version.
  Status Pin();

  const std::string& name() const override { return name_; }
  uint64_t size() const override { return size_; }
  std::string identity() const override { return "url:" + url_; }
  Status ReadAt(void* buf, size_t len, uint64_t offset) const override;

 private:
  // Requests [offset, offset + len) until it succeeds, fails for good, or the
  // time bound runs out. With `pinned` (Pin only), the request is not
  // conditional and the successful answer is stored there.
  // *gave_up (when given) tells whether the time bound ended the retries.
  Status Read(uint8_t* buf, size_t len, uint64_t offset, Answer* pinned,
              bool* gave_up = nullptr) const;
  // One request with a handle from the pool.
  void Attempt(uint64_t offset, size_t len, bool pinning, Clock::time_point deadline,
               Answer* a) const;
  void Configure(CURL* h, Clock::time_point deadline) const;
  // Checks a 206 answer against the request and the pinned version.
  Status CheckPartial(const Answer& a, uint64_t offset, size_t len, bool pinning) const;
  CURL* TakeHandle() const;
  void ReturnHandle(CURL* h) const;

  const std::string url_;   // as given: may carry a signed query; never printed
  const std::string name_;  // RedactUrl(url_), or the s3:// URL
  const Options options_;
  std::optional<S3Credentials> creds_;  // S3 signing, when credentials were found
  uint64_t size_ = 0;                   // set by Pin
  std::string etag_;                    // set by Pin; empty if the server sends none
  std::string last_modified_;           // set by Pin
  mutable std::mutex mu_;
  mutable std::vector<CURL*> idle_;  // guarded by mu_: handles with their connections

  // Readahead: a read that starts where the previous one ended, or where
  // the newest window ends, or a little past it (parallel readers of one
  // stream arrive slightly out of order), is fetched as a window that
  // starts at that end and holds ra_ bytes (doubling from kMinWindow to
  // kMaxWindow) or up to the read's end. A read that falls in a window still
  // being fetched waits for it instead of asking again. So a sequential
  // stream (the stored blocks of a snapshot tile its data area), even read
  // by several threads at once, costs one request per window and fetches
  // each byte once. A read elsewhere fetches exactly its range and resets
  // the window.
  struct Window {
    uint64_t offset = 0;
    uint64_t length = 0;
    std::shared_ptr<const std::vector<uint8_t>> bytes;  // null while in flight
    bool failed = false;
  };
  static constexpr uint64_t kMinWindow = 256 << 10;
  static constexpr uint64_t kMaxWindow = 4 << 20;
  static constexpr size_t kWindows = 4;
  // The window that holds `offset` (fetched or in flight), or null.
  std::shared_ptr<Window> FindWindow(uint64_t offset) const;
  // For a read at offset of len bytes that no window holds: a new window to
  // fetch (registered, in flight), or null to read exactly the range.
  std::shared_ptr<Window> PlanFetch(uint64_t offset, size_t len) const;
  // Fetches `w` and publishes the outcome to its waiters.
  Status FetchWindow(const std::shared_ptr<Window>& w) const;
  mutable std::mutex ra_mu_;
  mutable std::condition_variable ra_cv_;                 // a window was fetched or failed
  mutable std::vector<std::shared_ptr<Window>> windows_;  // guarded by ra_mu_, oldest first
  mutable uint64_t next_seq_ = 0;  // guarded by ra_mu_: where the last read ended
  mutable uint64_t ra_ = 0;        // guarded by ra_mu_: the current window size
};

Status HttpSource::ReadAt(void* buf, size_t len, uint64_t offset) const {
  auto* out = static_cast<uint8_t*>(buf);
  while (len > 0) {
    std::shared_ptr<Window> w;
    {
      std::unique_lock<std::mutex> lock(ra_mu_);
      w = FindWindow(offset);
      if (w != nullptr) {
        ra_cv_.wait(lock, [&w] { return w->bytes != nullptr || w->failed; });
        if (w->failed) w = nullptr;  // fetch it ourselves (and see the error)
      }
      if (w != nullptr) {
        // Copy the part the window holds; the rest comes round again.
        size_t n = std::min<uint64_t>(len, w->offset + w->length - offset);
        std::memcpy(out, w->bytes->data() + (offset - w->offset), n);
        next_seq_ = offset + n;
        out += n;
        offset += n;
        len -= n;
        continue;
      }
      w = PlanFetch(offset, len);
    }
    if (w == nullptr) return Read(out, len, offset, nullptr);
    HEXZ_RETURN_IF_ERROR(FetchWindow(w));
  }
  return Status::Ok();
}

Status HttpSource::FetchWindow(const std::shared_ptr<Window>& w) const {
  auto bytes = std::make_shared<std::vector<uint8_t>>(w->length);
  Status st = Read(bytes->data(), w->length, w->offset, nullptr);
  std::lock_guard<std::mutex> lock(ra_mu_);
  if (st.ok()) {
    w->bytes = std::move(bytes);
  } else {
    w->failed = true;
    windows_.erase(std::remove(windows_.begin(), windows_.end(), w), windows_.end());
  }
  ra_cv_.notify_all();
  return st;
}

std::shared_ptr<HttpSource::Window> HttpSource::FindWindow(uint64_t offset) const {
  for (const auto& w : windows_) {
    if (offset >= w->offset && offset - w->offset < w->length) return w;
  }
  return nullptr;
}

std::shared_ptr<HttpSource::Window> HttpSource::PlanFetch(uint64_t offset, size_t len) const {
  // Where the stream continues: the end of the newest window.
  uint64_t end = windows_.empty() ? next_seq_ : windows_.back()->offset + windows_.back()->length;
  uint64_t start = offset;
  bool sequential = offset == next_seq_;
  if (!sequential && offset >= end && offset - end <= std::max(ra_, kMinWindow)) {
    sequential = true;
    start = end;  // fetch the gap too: the other readers of the stream want it
  }
  next_seq_ = offset + len;
  if (!sequential) {
    ra_ = 0;
    return nullptr;
  }
  ra_ = ra_ == 0 ? kMinWindow : std::min(ra_ * 2, kMaxWindow);
  uint64_t want = std::max<uint64_t>(offset + len - start, std::min(ra_, size_ - start));
  if (start == offset && want == len) return nullptr;
  auto w = std::make_shared<Window>();
  w->offset = start;
  w->length = want;
  if (windows_.size() == kWindows) windows_.erase(windows_.begin());
  windows_.push_back(w);
  return w;
}

CURL* HttpSource::TakeHandle() const {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!idle_.empty()) {
      CURL* h = idle_.back();
      idle_.pop_back();
      return h;
    }
  }
  return Curl().easy_init();
}

void HttpSource::ReturnHandle(CURL* h) const {
  std::lock_guard<std::mutex> lock(mu_);
  idle_.push_back(h);
}

void HttpSource::Configure(CURL* h, Clock::time_point deadline) const {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  long left_ms = std::max<long>(1, static_cast<long>(left.count()));
  Curl().easy_setopt(h, CURLOPT_URL, url_.c_str());
  Curl().easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  Curl().easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
  Curl().easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  Curl().easy_setopt(h, CURLOPT_NETRC, static_cast<long>(CURL_NETRC_OPTIONAL));
  Curl().easy_setopt(h, CURLOPT_USERAGENT, "hexz/" HEXZ_VERSION);
  Curl().easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
  Curl().easy_setopt(h, CURLOPT_TIMEOUT_MS, left_ms);
  Curl().easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, std::min<long>(left_ms, 10000));
  if (creds_) {
    std::string sigv4 = "aws:amz:" + creds_->region + ":s3";
    Curl().easy_setopt(h, CURLOPT_AWS_SIGV4, sigv4.c_str());  // copied by libcurl
    Curl().easy_setopt(h, CURLOPT_USERNAME, creds_->access_key.c_str());
    Curl().easy_setopt(h, CURLOPT_PASSWORD, creds_->secret_key.c_str());
  }
  const char* env_ca = std::getenv("CURL_CA_BUNDLE");
  if (!options_.ca_file.empty()) {
    Curl().easy_setopt(h, CURLOPT_CAINFO, options_.ca_file.c_str());
  } else if (env_ca != nullptr && *env_ca != '\0') {
    Curl().easy_setopt(h, CURLOPT_CAINFO, env_ca);
  }
}

void HttpSource::Attempt(uint64_t offset, size_t len, bool pinning, Clock::time_point deadline,
                         Answer* a) const {
  CURL* h = TakeHandle();
  if (h == nullptr) {
    a->curl = CURLE_OUT_OF_MEMORY;
    return;
  }
  Curl().easy_reset(h);  // keeps the connection cache: keep-alive across reads
  Configure(h, deadline);
  std::string range = std::to_string(offset) + "-" + std::to_string(offset + len - 1);
  Curl().easy_setopt(h, CURLOPT_RANGE, range.c_str());
  curl_slist* headers = nullptr;
  if (!pinning && !etag_.empty() && !StartsWith(etag_, "W/")) {
    headers = Curl().slist_append(headers, ("If-Match: " + etag_).c_str());
  } else if (!pinning && !last_modified_.empty()) {
    headers = Curl().slist_append(headers, ("If-Unmodified-Since: " + last_modified_).c_str());
  }
  if (creds_) {
    // A GET has no body: the SHA-256 of the empty string (S3 wants the
    // header; libcurl signs it with the others).
    headers =
        Curl().slist_append(headers,
                            "x-amz-content-sha256: "
                            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  }
  if (creds_ && !creds_->session_token.empty()) {
    headers =
        Curl().slist_append(headers, ("x-amz-security-token: " + creds_->session_token).c_str());
  }
  Curl().easy_setopt(h, CURLOPT_HTTPHEADER, headers);
  Curl().easy_setopt(h, CURLOPT_HEADERFUNCTION, OnHeader);
  Curl().easy_setopt(h, CURLOPT_HEADERDATA, a);
  Curl().easy_setopt(h, CURLOPT_WRITEFUNCTION, OnBody);
  Curl().easy_setopt(h, CURLOPT_WRITEDATA, a);
  Curl().easy_setopt(h, CURLOPT_ERRORBUFFER, a->curl_error);
  a->curl = Curl().easy_perform(h);
  Curl().easy_setopt(h, CURLOPT_ERRORBUFFER, nullptr);
  Curl().easy_setopt(h, CURLOPT_HTTPHEADER, nullptr);
  Curl().slist_free_all(headers);
  ReturnHandle(h);
}

Status HttpSource::CheckPartial(const Answer& a, uint64_t offset, size_t len, bool pinning) const {
  uint64_t first = 0, last = 0, total = 0;
  if (!ParseContentRange(a.content_range, &first, &last, &total)) {
    return Status::Corruption(name_ + ": the server sent a malformed Content-Range (\"" +
                              a.content_range + "\")");
  }
  std::string asked = std::to_string(offset) + "-" + std::to_string(offset + len - 1);
  // The pinning request may ask beyond the end of a small object.
  uint64_t want_last = offset + len - 1;
  if (pinning && total > offset) want_last = std::min<uint64_t>(want_last, total - 1);
  if (first != offset || last != want_last) {
    return Status::Corruption(name_ + ": the server sent bytes " + std::to_string(first) + "-" +
                              std::to_string(last) + " when asked for " + asked);
  }
  if (!pinning) {
    bool etag_changed = !etag_.empty() && !a.etag.empty() && a.etag != etag_;
    if (total != size_ || etag_changed) {
      return Status::IoError(
          name_ + ": the object changed since it was opened (" +
              (etag_changed ? "ETag " + etag_ + ", now " + a.etag
                            : "size " + std::to_string(size_) + ", now " + std::to_string(total)) +
              "); open it again to read the new version",
          ESTALE);
    }
  }
  if (a.got != last - first + 1) {
    return Status::Corruption(name_ + ": the server sent " + std::to_string(a.got) +
                              " bytes for the range " + asked + " (a truncated answer)");
  }
  return Status::Ok();
}

Status HttpSource::Read(uint8_t* buf, size_t len, uint64_t offset, Answer* pinned,
                        bool* gave_up) const {
  const bool pinning = pinned != nullptr;
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::seconds(options_.timeout_seconds);
  auto backoff = std::chrono::milliseconds(100);
  for (int attempt = 1;; ++attempt) {
    Answer a;
    a.buf = buf;
    a.cap = len;
    Attempt(offset, len, pinning, deadline, &a);
    Status st;
    if (a.curl == CURLE_OK && a.status == 206) {
      st = CheckPartial(a, offset, len, pinning);
      if (st.ok() && pinning) *pinned = a;
      if (st.ok()) return st;
      // A short body behind a correct Content-Range is a cut connection.
      if (a.got == len || a.overflow) return st;
    } else if (a.curl == CURLE_WRITE_ERROR && a.overflow) {
      return Status::Corruption(name_ + ": the server sent more than the " + std::to_string(len) +
                                " bytes asked for at " + std::to_string(offset));
    } else {
      st = AnswerError(name_, a);
      if (!Transient(a)) return st;
    }
    if (Clock::now() + backoff >= deadline) {
      auto secs = std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - start);
      if (gave_up != nullptr) *gave_up = true;
      return Status::IoError(st.message() + " (gave up after " + std::to_string(attempt) +
                             " attempts in " + std::to_string(secs.count()) + " s)");
    }
    std::this_thread::sleep_for(backoff);
    backoff = std::min<std::chrono::milliseconds>(backoff * 2, std::chrono::seconds(2));
  }
}

Status HttpSource::Pin() {
  // 64 bytes, not 1: some S3-compatible stores answer "bytes=0-0" with the
  // whole object.
  uint8_t first[64];
  Answer pinned;
  bool gave_up = false;
  Status st = Read(first, sizeof(first), 0, &pinned, &gave_up);
  if (!st.ok()) {
    if (st.message().find("(HTTP 416)") != std::string::npos)
      return Status::InvalidArgument(name_ + ": not a hexz snapshot (empty object)");
    // Unavailable: the callers do not try a server that did not answer
    // within the time bound again (cli_checks.cc).
    if (gave_up) return Status::Unavailable(st.message());
    return st;
  }
  uint64_t f = 0, l = 0;
  ParseContentRange(pinned.content_range, &f, &l, &size_);  // checked by Read
  etag_ = pinned.etag;
  last_modified_ = pinned.last_modified;
  if (etag_.empty() && last_modified_.empty()) {
    return Status::Unsupported(name_ +
                               ": the server sends neither ETag nor Last-Modified, so a change "
                               "of the object could not be detected");
  }
  return Status::Ok();
}

}  // namespace

namespace {

// Every byte outside RFC 3986's unreserved set and '/' percent-encoded.
std::string EncodePath(const std::string& path) {
  std::string out;
  for (unsigned char c : path) {
    if (std::isalnum(c) || std::strchr("-._~/", c) != nullptr) {
      out.push_back(static_cast<char>(c));
    } else {
      char hex[4];
      std::snprintf(hex, sizeof(hex), "%%%02X", c);
      out += hex;
    }
  }
  return out;
}

std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r");
  size_t e = s.find_last_not_of(" \t\r");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? "" : v;
}

// The keys of [profile] in an AWS shared credentials file (INI).
Status ReadCredentialsFile(const std::string& path, const std::string& profile,
                           S3Credentials* out) {
  std::ifstream in(path);
  if (!in.is_open()) {
    if (errno == ENOENT) return Status::Ok();
    return Status::FromErrno(errno, path);
  }
  bool in_profile = false;
  for (std::string line; std::getline(in, line);) {
    line = Trim(line);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line.front() == '[' && line.back() == ']') {
      in_profile = Trim(line.substr(1, line.size() - 2)) == profile;
      continue;
    }
    size_t eq = line.find('=');
    if (!in_profile || eq == std::string::npos) continue;
    std::string k = Trim(line.substr(0, eq)), v = Trim(line.substr(eq + 1));
    if (k == "aws_access_key_id") out->access_key = v;
    if (k == "aws_secret_access_key") out->secret_key = v;
    if (k == "aws_session_token") out->session_token = v;
  }
  return Status::Ok();
}

}  // namespace

Result<S3Credentials> FindS3Credentials() {
  S3Credentials c;
  c.region = Env("AWS_REGION");
  if (c.region.empty()) c.region = Env("AWS_DEFAULT_REGION");
  if (c.region.empty()) c.region = "us-east-1";
  c.access_key = Env("AWS_ACCESS_KEY_ID");
  if (!c.access_key.empty()) {
    c.secret_key = Env("AWS_SECRET_ACCESS_KEY");
    c.session_token = Env("AWS_SESSION_TOKEN");
  } else {
    std::string file = Env("AWS_SHARED_CREDENTIALS_FILE");
    if (file.empty() && !Env("HOME").empty()) file = Env("HOME") + "/.aws/credentials";
    std::string profile = Env("AWS_PROFILE");
    if (profile.empty()) profile = "default";
    if (!file.empty()) HEXZ_RETURN_IF_ERROR(ReadCredentialsFile(file, profile, &c));
  }
  if (!c.access_key.empty() && c.secret_key.empty())
    return Status::InvalidArgument("AWS credentials: an access key id without a secret access key");
  return c;
}

bool IsUrl(const std::string& location) {
  return StartsWith(location, "http://") || StartsWith(location, "https://") ||
         StartsWith(location, "s3://");
}

std::string RedactUrl(const std::string& url) {
  if (!LoadCurl().ok()) return "(a URL)";  // what libcurl could not parse is not shown
  UrlHandle h;
  if (Curl().url_set(h.u, CURLUPART_URL, url.c_str(), CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK)
    return "(an invalid URL)";
  Curl().url_set(h.u, CURLUPART_USER, nullptr, 0);
  Curl().url_set(h.u, CURLUPART_PASSWORD, nullptr, 0);
  Curl().url_set(h.u, CURLUPART_OPTIONS, nullptr, 0);
  Curl().url_set(h.u, CURLUPART_QUERY, nullptr, 0);
  Curl().url_set(h.u, CURLUPART_FRAGMENT, nullptr, 0);
  return h.Get(CURLUPART_URL);
}

Result<std::unique_ptr<io::Source>> OpenHttp(const std::string& url, const Options& options) {
  HEXZ_RETURN_IF_ERROR(LoadCurl().status());
  UrlHandle h;
  if (Curl().url_set(h.u, CURLUPART_URL, url.c_str(), 0) != CURLUE_OK || !IsUrl(url) ||
      StartsWith(url, "s3://"))
    return Status::InvalidArgument(RedactUrl(url) + ": not a valid http or https URL");
  if (!h.Get(CURLUPART_USER).empty() || !h.Get(CURLUPART_PASSWORD).empty()) {
    return Status::InvalidArgument(
        RedactUrl(url) +
        ": credentials in a URL are visible to every local user (/proc/PID/cmdline); put them "
        "in ~/.netrc instead");
  }
  auto source = std::make_unique<HttpSource>(url, RedactUrl(url), options, nullptr);
  HEXZ_RETURN_IF_ERROR(source->Pin());
  return std::unique_ptr<io::Source>(std::move(source));
}

Result<std::unique_ptr<io::Source>> OpenS3(const std::string& url, const Options& options,
                                           const S3Credentials& creds) {
  HEXZ_RETURN_IF_ERROR(LoadCurl().status());
  // s3://BUCKET/KEY: a DNS-style bucket name and a non-empty key.
  std::string rest = StartsWith(url, "s3://") ? url.substr(5) : "";
  size_t slash = rest.find('/');
  std::string bucket = rest.substr(0, slash);
  std::string key = slash == std::string::npos ? "" : rest.substr(slash + 1);
  bool bucket_ok =
      bucket.size() >= 3 && bucket.size() <= 63 &&
      bucket.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789.-") == std::string::npos;
  if (!bucket_ok || key.empty() || key.find_first_of("?#") != std::string::npos) {
    return Status::InvalidArgument(RedactUrl(url) +
                                   ": not an S3 URL of the form s3://BUCKET/KEY (a bucket name of "
                                   "3 to 63 lower-case letters, digits, '.' and '-')");
  }
  std::string http;
  if (!options.s3_endpoint.empty()) {
    std::string ep = options.s3_endpoint;
    while (!ep.empty() && ep.back() == '/') ep.pop_back();
    if (!StartsWith(ep, "http://") && !StartsWith(ep, "https://"))
      return Status::InvalidArgument("--s3-endpoint " + RedactUrl(ep) + ": not an http(s) URL");
    http = ep + "/" + bucket + "/" + EncodePath(key);
  } else {
    http = "https://" + bucket + ".s3." + creds.region + ".amazonaws.com/" + EncodePath(key);
  }
  auto source = std::make_unique<HttpSource>(http, "s3://" + bucket + "/" + key, options, &creds);
  HEXZ_RETURN_IF_ERROR(source->Pin());
  return std::unique_ptr<io::Source>(std::move(source));
}

Result<std::unique_ptr<io::Source>> Opener::Open(const std::string& location) const {
  if (StartsWith(location, "s3://")) {
    HEXZ_ASSIGN_OR_RETURN(S3Credentials creds, FindS3Credentials());
    return OpenS3(location, options_, creds);
  }
  if (IsUrl(location)) return OpenHttp(location, options_);
  return io::SourceOpener::Open(location);
}

Result<std::string> Opener::ResolveParent(const std::string& child,
                                          const std::string& parent_path) const {
  if (!IsUrl(child)) return io::SourceOpener::ResolveParent(child, parent_path);
  if (parent_path.empty() || parent_path.front() == '/') {
    return Status::InvalidArgument(RedactUrl(child) + ": parent path " + parent_path +
                                   " is absolute; a remote snapshot's parent must be named "
                                   "relative to it");
  }
  // The path as a relative reference, so '?', '#' or '%' in a file name
  // stay part of the path.
  std::string ref = EncodePath(parent_path);
  HEXZ_RETURN_IF_ERROR(LoadCurl().status());
  UrlHandle h;
  if (Curl().url_set(h.u, CURLUPART_URL, child.c_str(), CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
      Curl().url_set(h.u, CURLUPART_URL, ref.c_str(), CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK) {
    return Status::InvalidArgument(RedactUrl(child) + ": cannot resolve parent path " +
                                   parent_path + " against it");
  }
  return h.Get(CURLUPART_URL);
}

}  // namespace hexz::remote

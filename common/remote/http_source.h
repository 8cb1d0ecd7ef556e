// Snapshots read straight from HTTP(S) and S3: an io::Source over one remote
// object, read with HTTP range requests through libcurl, and an
// io::SourceOpener that takes URLs as well as paths.
//
// The rules (SECURITY.md "Remote snapshots", hexz(1) "Remote snapshots"):
// - The object's ETag (or, without one, its Last-Modified and size) is pinned
//   when it is opened. Every read asks for exactly its range, conditional on
//   that version (If-Match / If-Unmodified-Since), and every answer is
//   checked: status 206, Content-Range exactly the range asked for and the
//   pinned size, the ETag if the server sends one, and exactly len bytes. An
//   object that changed fails the read (ESTALE) and never mixes versions.
// - 5xx, 408, 429, connection failures, resets and timeouts are retried with
//   doubling backoff within Options::timeout_seconds per read; then the read
//   fails with EIO. Nothing waits longer than that, and a later read tries
//   the server again, so a mount works again once the server is back.
// - No redirect is followed: a 3xx answer is an error that names where the
//   server points. Only http and https are spoken.
// - Credentials never come from the URL (a URL with user:password@ is
//   refused: argv is visible to every local user); libcurl reads ~/.netrc.
//   Messages name the URL without userinfo, query or fragment (RedactUrl),
//   since a query string may carry a signature.
// - s3://BUCKET/KEY is read from Options::s3_endpoint (path style:
//   ENDPOINT/BUCKET/KEY) or else https://BUCKET.s3.REGION.amazonaws.com/KEY,
//   with requests signed by libcurl's SigV4 (CURLOPT_AWS_SIGV4) when
//   credentials are found (S3Credentials); unsigned otherwise.
//
// - Reads that follow each other (offset == where the previous one ended,
//   or at most a window past the end of the newest window: parallel readers
//   of one stream arrive out of order) are fetched ahead in windows of 256
//   KiB doubling to 4 MiB that continue the stream, and the last four
//   windows are kept; a read that falls in a window still in flight waits
//   for it. So a sequential pass over a snapshot (its stored blocks tile the
//   data area), even by several threads, is a few large requests that fetch
//   each byte once. Other reads fetch exactly their range.
//
// Ownership: an HttpSource owns a small pool of libcurl easy handles, so
// connections stay open (keep-alive) between reads, and up to 16 MiB of
// readahead windows. Thread safety: ReadAt may
// be called from many threads at once; each call takes a handle of its own.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/base/status.h"
#include "common/io/source.h"

namespace hexz::remote {

using base::Result;
using base::Status;

struct Options {
  // PEM file of the certificate authorities to trust for https; empty means
  // the CURL_CA_BUNDLE environment variable if set, else the system's.
  std::string ca_file;
  // The bound of one read, retries included (and of opening).
  uint32_t timeout_seconds = 30;
  // Where s3:// URLs are read (http://host:port of an S3-compatible store);
  // empty means AWS.
  std::string s3_endpoint;
  // `--disk-cache DIR[:SIZE]` of mount and serve (common/remote/disk_cache.h),
  // used by the fetcher (hexz/fetcher.h); empty means none.
  std::string disk_cache;
};

// AWS credentials and region for signing S3 requests.
struct S3Credentials {
  std::string access_key, secret_key, session_token;
  std::string region;  // AWS_REGION, AWS_DEFAULT_REGION, else "us-east-1"
};

// From AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, else
// the profile AWS_PROFILE (default "default") of the shared credentials file
// (AWS_SHARED_CREDENTIALS_FILE, default ~/.aws/credentials). No access key
// means unsigned requests. A credentials file that exists but cannot be read
// is an error.
Result<S3Credentials> FindS3Credentials();

// True when `location` is a URL hexz reads remotely (http://, https://,
// s3://).
bool IsUrl(const std::string& location);

// `url` without userinfo, query and fragment: what messages may show.
std::string RedactUrl(const std::string& url);

// Opens the object at `url` for range reads (one request, which pins its
// version and learns its size).
Result<std::unique_ptr<io::Source>> OpenHttp(const std::string& url, const Options& options);

// Opens s3://BUCKET/KEY (see above) for range reads, signed with `creds`.
Result<std::unique_ptr<io::Source>> OpenS3(const std::string& url, const Options& options,
                                           const S3Credentials& creds);

// An opener for Snapshot::Open that reads URLs with OpenHttp and paths as
// local files. A parent of a remote snapshot resolves relative to the
// child's URL (RFC 3986; the child's query is not carried over) and must be
// a relative path. Thread-safe; keeps a copy of the options.
class Opener final : public io::SourceOpener {
 public:
  explicit Opener(Options options) : options_(std::move(options)) {}
  Result<std::unique_ptr<io::Source>> Open(const std::string& location) const override;
  Result<std::string> ResolveParent(const std::string& child,
                                    const std::string& parent_path) const override;

 private:
  Options options_;
};

}  // namespace hexz::remote

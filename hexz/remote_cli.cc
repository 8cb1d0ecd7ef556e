#include "hexz/remote_cli.h"

namespace hexz::cli {

void RemoteFlags::Add(CLI::App* cmd) {
  cmd->add_option("--ca-file", options_.ca_file,
                  "For an https:// snapshot, trust the certificate authorities in this PEM file "
                  "(default: $CURL_CA_BUNDLE, else the system's)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--remote-timeout", options_.timeout_seconds,
                  "For a URL, give up on a read after this many seconds of retries (default 30)")
      ->check(CLI::Range(1, 3600));
  cmd->add_option("--s3-endpoint", options_.s3_endpoint,
                  "Read s3:// URLs from this S3-compatible store (http(s)://host:port) instead of "
                  "AWS");
}

void RemoteFlags::AddDiskCache(CLI::App* cmd) {
  cmd->add_option("--disk-cache", options_.disk_cache,
                  "For a URL, keep the blocks fetched in DIR/blocks.cache, at most SIZE bytes "
                  "(default: the existing file's size, else 1G), for later mounts of the user "
                  "(DIR[:SIZE])");
}

format::OpenOptions RemoteFlags::OpenOptions() {
  if (opener_ == nullptr) opener_ = std::make_unique<remote::Opener>(options_);
  format::OpenOptions o;
  o.opener = opener_.get();
  return o;
}

}  // namespace hexz::cli

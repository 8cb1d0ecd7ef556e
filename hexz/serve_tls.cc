#include "hexz/serve_tls.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <memory>

#include "common/base/fd.h"
#include "common/nbd/tls.h"

namespace hexz::cli {

namespace {

using base::Result;
using base::Status;

// A small regular file, read whole as the user.
Result<std::string> ReadSmallFile(const std::string& path, const char* what) {
  base::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!fd) return Status::FromErrno(errno, std::string(what) + " " + path);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return Status::FromErrno(errno, path);
  if (!S_ISREG(st.st_mode)) {
    return Status::InvalidArgument(std::string(what) + " " + path + " is not a regular file");
  }
  if (st.st_size > static_cast<off_t>(nbd::kMaxTlsInput)) {
    return Status::InvalidArgument(std::string(what) + " " + path + " is larger than " +
                                   std::to_string(nbd::kMaxTlsInput / 1024) + " KiB");
  }
  std::string data(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < data.size()) {
    ssize_t n = ::read(fd.get(), data.data() + got, data.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(errno, std::string("reading ") + path);
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  data.resize(got);
  return data;
}

nbd::TlsMode Mode(const ServeTlsArgs& a) {
  if (a.mode == "on") return nbd::TlsMode::kOn;
  if (a.mode == "require") return nbd::TlsMode::kRequire;
  if (a.mode.empty() && (!a.certificates.empty() || !a.psk.empty())) {
    return nbd::TlsMode::kRequire;
  }
  return nbd::TlsMode::kOff;
}

// The files named by the flags, read into a TlsConfig.
Result<nbd::TlsConfig> ReadTlsInputs(const ServeTlsArgs& a) {
  nbd::TlsConfig c;
  c.mode = Mode(a);
  c.verify_peer = a.verify_peer;
  if (!a.certificates.empty()) {
    std::string dir = a.certificates;
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    c.cert_name = dir + "/server-cert.pem";
    c.key_name = dir + "/server-key.pem";
    c.ca_name = dir + "/ca-cert.pem";
    HEXZ_ASSIGN_OR_RETURN(c.cert_pem, ReadSmallFile(c.cert_name, "TLS certificate"));
    HEXZ_ASSIGN_OR_RETURN(c.key_pem, ReadSmallFile(c.key_name, "TLS key"));
    // The CA is needed only to check client certificates.
    struct stat st;
    if (a.verify_peer || ::stat(c.ca_name.c_str(), &st) == 0) {
      HEXZ_ASSIGN_OR_RETURN(c.ca_pem, ReadSmallFile(c.ca_name, "TLS CA certificate"));
    }
  }
  if (!a.psk.empty()) {
    c.psk_name = a.psk;
    HEXZ_ASSIGN_OR_RETURN(c.psk_text, ReadSmallFile(a.psk, "TLS PSK file"));
  }
  if (!a.authz.empty()) {
    c.access_name = a.authz;
    HEXZ_ASSIGN_OR_RETURN(c.access_text, ReadSmallFile(a.authz, "TLS access file"));
  }
  return c;
}

bool IsLoopback(const struct sockaddr* sa) {
  if (sa->sa_family == AF_INET) {
    uint32_t a = ntohl(reinterpret_cast<const sockaddr_in*>(sa)->sin_addr.s_addr);
    return (a >> 24) == 127;
  }
  if (sa->sa_family == AF_INET6) {
    const in6_addr& a = reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr;
    if (IN6_IS_ADDR_LOOPBACK(&a)) return true;
    return IN6_IS_ADDR_V4MAPPED(&a) && a.s6_addr[12] == 127;
  }
  return false;
}

}  // namespace

void AddServeTlsOptions(CLI::App* cmd, ServeTlsArgs* args) {
  cmd->add_option("--tls", args->mode,
                  "off, on (offer STARTTLS) or require (nothing without TLS); default: "
                  "require with --tls-certificates or --tls-psk, else off")
      ->check(CLI::IsMember({"off", "on", "require"}));
  cmd->add_option("--tls-certificates", args->certificates,
                  "Directory with server-cert.pem, server-key.pem and ca-cert.pem (X.509)");
  cmd->add_option("--tls-psk", args->psk, "Pre-shared keys file, psktool's IDENTITY:HEX-KEY");
  cmd->add_flag("--tls-verify-peer", args->verify_peer,
                "Require a client certificate signed by ca-cert.pem");
  cmd->add_option("--tls-authz", args->authz,
                  "Access file: which certificate DN or PSK identity may use which exports");
}

bool TlsEnabled(const ServeTlsArgs& args) { return Mode(args) != nbd::TlsMode::kOff; }

Status CheckServeTls(const ServeTlsArgs& a) {
  const bool creds = !a.certificates.empty() || !a.psk.empty();
  if (!a.certificates.empty() && !a.psk.empty()) {
    return Status::InvalidArgument("--tls-certificates and --tls-psk exclude each other");
  }
  if (a.mode == "off" && (creds || a.verify_peer || !a.authz.empty())) {
    return Status::InvalidArgument("--tls=off does not go with the other --tls-* options");
  }
  if (TlsEnabled(a) && !creds) {
    return Status::InvalidArgument("--tls=" + a.mode +
                                   " needs --tls-certificates DIR or --tls-psk FILE");
  }
  if (!TlsEnabled(a) && (a.verify_peer || !a.authz.empty())) {
    return Status::InvalidArgument("--tls-verify-peer and --tls-authz need TLS");
  }
  if (a.verify_peer && a.certificates.empty()) {
    return Status::InvalidArgument("--tls-verify-peer needs --tls-certificates");
  }
  return Status::Ok();
}

Status FillServeTls(const ServeTlsArgs& a, ipc::WorkerConfig* config) {
  if (!TlsEnabled(a)) return Status::Ok();
  HEXZ_ASSIGN_OR_RETURN(nbd::TlsConfig c, ReadTlsInputs(a));
  // The worker builds the same credentials; a mistake is reported here, by name.
  HEXZ_RETURN_IF_ERROR(nbd::TlsServer::Create(c).status());
  config->tls_mode = static_cast<uint32_t>(c.mode);
  config->tls_verify_peer = c.verify_peer;
  config->tls_cert = std::move(c.cert_pem);
  config->tls_key = std::move(c.key_pem);
  config->tls_ca = std::move(c.ca_pem);
  config->tls_psk = std::move(c.psk_text);
  config->tls_access = std::move(c.access_text);
  return Status::Ok();
}

Status CheckListenExposure(const std::string& spec, const std::string& host,
                           const ServeTlsArgs& args) {
  if (TlsEnabled(args) || args.mode == "off") return Status::Ok();
  struct addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  struct addrinfo* res = nullptr;
  if (::getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0) return Status::Ok();  // BindTcp says
  std::unique_ptr<struct addrinfo, decltype(&::freeaddrinfo)> guard(res, ::freeaddrinfo);
  for (struct addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    if (!IsLoopback(ai->ai_addr)) {
      return Status::PermissionDenied(
          "--listen " + spec +
          " reaches other machines, and NBD without TLS sends every byte in clear text to "
          "anyone who can connect; add --tls-certificates DIR or --tls-psk FILE, or --tls=off "
          "to export without TLS anyway");
    }
  }
  return Status::Ok();
}

}  // namespace hexz::cli

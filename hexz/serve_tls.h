// `hexz serve`'s TLS flags (--tls, --tls-certificates, --tls-psk,
// --tls-verify-peer, --tls-authz): the files are read here, as the user, and
// checked by building the same GnuTLS credentials the worker will build; their
// bytes then travel in the worker's config (the worker opens no path).
//
// Also the rule that a TCP listener reachable from other machines needs TLS,
// or an explicit --tls=off.
//
// Thread safety: front-end main thread only; plain values.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "common/base/status.h"
#include "common/ipc/worker_protocol.h"

namespace hexz::cli {

struct ServeTlsArgs {
  std::string mode;          // "off", "on", "require"; empty: not given
  std::string certificates;  // directory with ca-cert.pem, server-cert.pem, server-key.pem
  std::string psk;           // psktool key file
  std::string authz;         // access file
  bool verify_peer = false;
};

void AddServeTlsOptions(CLI::App* cmd, ServeTlsArgs* args);

// True when TLS will be on (--tls on|require, or credentials without --tls).
bool TlsEnabled(const ServeTlsArgs& args);

// Checks the combination of flags (a usage error), then reads and checks
// the files and fills config's tls_* fields.
base::Status CheckServeTls(const ServeTlsArgs& args);
base::Status FillServeTls(const ServeTlsArgs& args, ipc::WorkerConfig* config);

// Refuses to listen on `spec` (--listen) when it reaches beyond this machine
// (any address that is not loopback) without TLS, unless --tls=off was given.
base::Status CheckListenExposure(const std::string& spec, const std::string& host,
                                 const ServeTlsArgs& args);

}  // namespace hexz::cli

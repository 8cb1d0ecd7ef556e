// The libnbd functions the front-end calls (VM disk containers through
// qemu-nbd, NBD URIs, the flush of a served guest disk), resolved from
// libnbd.so.0 when first needed (base::SharedLibrary): commands that never
// speak NBD as a client do not load libnbd and the libraries it pulls in.
#pragma once

#include <libnbd.h>

#include "common/base/status.h"

namespace hexz::cli {

struct NbdApi {
  decltype(&::nbd_create) create = nullptr;
  decltype(&::nbd_close) close = nullptr;
  decltype(&::nbd_shutdown) shutdown = nullptr;
  decltype(&::nbd_get_error) get_error = nullptr;
  decltype(&::nbd_add_meta_context) add_meta_context = nullptr;
  decltype(&::nbd_can_meta_context) can_meta_context = nullptr;
  decltype(&::nbd_set_export_name) set_export_name = nullptr;
  decltype(&::nbd_connect_uri) connect_uri = nullptr;
  decltype(&::nbd_connect_unix) connect_unix = nullptr;
  decltype(&::nbd_connect_systemd_socket_activation) connect_systemd_socket_activation = nullptr;
  decltype(&::nbd_get_size) get_size = nullptr;
  decltype(&::nbd_block_status) block_status = nullptr;
  decltype(&::nbd_pread) pread = nullptr;
  decltype(&::nbd_flush) flush = nullptr;
};

// Loads libnbd once per process; later calls return the same table, or the
// same error.
base::Result<const NbdApi*> LoadNbd();

}  // namespace hexz::cli

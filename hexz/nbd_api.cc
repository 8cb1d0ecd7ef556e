#include "hexz/nbd_api.h"

#include <mutex>

#include "common/base/shared_library.h"

namespace hexz::cli {
namespace {

base::Status Load(NbdApi* n) {
  HEXZ_ASSIGN_OR_RETURN(base::SharedLibrary lib, base::SharedLibrary::Open("libnbd.so.0"));
  HEXZ_RETURN_IF_ERROR(lib.Resolve("nbd_create", &n->create));
  HEXZ_RETURN_IF_ERROR(lib.Resolve("nbd_close", &n->close));
  HEXZ_RETURN_IF_ERROR(lib.Resolve("nbd_shutdown", &n->shutdown));
  HEXZ_RETURN_IF_ERROR(lib.Resolve("nbd_get_error", &n->get_error));
  HEXZ_RETURN_IF_ERROR(lib.Resolve("nbd_add_meta_context", &n->add_meta_context));
  HEXZ_RETURN_IF_ERROR(lib.Resolve("nbd_can_meta_context", &n->can_meta_context));
  HEXZ_RETURN_IF_ERROR(lib.Resolve("nbd_set_export_name", &n->set_export_name));
  HEXZ_RETURN_IF_ERROR(lib.Resolve("nbd_connect_uri", &n->connect_uri));
  HEXZ_RETURN_IF_ERROR(lib.Resolve("nbd_connect_unix", &n->connect_unix));
  HEXZ_RETURN_IF_ERROR(
      lib.Resolve("nbd_connect_systemd_socket_activation", &n->connect_systemd_socket_activation));
  HEXZ_RETURN_IF_ERROR(lib.Resolve("nbd_get_size", &n->get_size));
  HEXZ_RETURN_IF_ERROR(lib.Resolve("nbd_block_status", &n->block_status));
  HEXZ_RETURN_IF_ERROR(lib.Resolve("nbd_pread", &n->pread));
  HEXZ_RETURN_IF_ERROR(lib.Resolve("nbd_flush", &n->flush));
  return base::Status::Ok();
}

}  // namespace

base::Result<const NbdApi*> LoadNbd() {
  static NbdApi api;
  static base::Status status;
  static std::once_flag once;
  std::call_once(once, [] {
    status = Load(&api);
    if (!status.ok())
      status = base::Status::Unavailable(
          "reading a VM disk container or an NBD export needs "
          "libnbd: " +
          status.message());
  });
  if (!status.ok()) return status;
  return &api;
}

}  // namespace hexz::cli

// The worker's NBD mode (WorkerMode::kNbdServe), for `hexz serve` and
// `hexz mount --nbd`. The front-end passes either a listening socket (serve:
// unix or TCP, created and bound by the front-end as the user) or one end of
// an already-connected socketpair (mount --nbd) as the kNbdListen descriptor;
// the worker tells them apart with SO_ACCEPTCONN.
//
// Sequence: open the snapshot (and, with read_write, the overlay) from the
// descriptors, build the exports (disk, and memory when present), lock down,
// report ready, serve until SIGTERM/SIGINT, the front-end's channel closing
// (foreground only) or, on a socketpair, the client disconnecting; then flush
// the overlay and exit.
//
// Thread safety: called once from main.
#pragma once

#include "common/base/status.h"
#include "common/ipc/worker_protocol.h"

namespace hexz::fused {

// Does not return on success (exits 0 after a clean shutdown); returns the
// error that stopped start-up (the caller reports it over `sock`).
base::Status ServeNbd(ipc::WorkerConfig config, int sock);

}  // namespace hexz::fused

// The worker's two modes, chosen by WorkerConfig::mode in main.cc. Each opens
// its volumes (volumes.h), sets up what it serves, locks down (common/sandbox),
// reports ready over `sock`, serves, makes the overlay durable and exits.
//
// FUSE mode (fuse_mode.cc, `hexz mount`): checks /dev/fuse, mounts on the
// configured mountpoint (through fusermount3 when not root), reports ready
// once the kernel's INIT is answered, serves until the mount goes away.
//
// NBD mode (nbd_mode.cc, `hexz serve` and `hexz mount --nbd`): the front-end
// passes either a listening socket (serve: unix or TCP, created and bound by
// the front-end as the user) or one end of an already-connected socketpair
// (mount --nbd) as the kNbdListen descriptor; the worker tells them apart with
// SO_ACCEPTCONN. It serves the exports (disk, and memory when present) until
// a signal, the front-end's channel closing (foreground only) or, on a
// socketpair, the client disconnecting.
//
// A read-write worker flushes its overlay before it exits: after the unmount
// or disconnect, on SIGTERM/SIGINT/SIGHUP, and when the foreground front-end
// goes away (lifeline.h).
//
// Thread safety: each is called once from main.
#pragma once

#include "common/base/status.h"
#include "common/ipc/worker_protocol.h"

namespace hexz::fused {

// Neither returns on success (each exits 0 after a clean shutdown); each
// returns the error that stopped start-up (the caller reports it over `sock`).
base::Status ServeFuse(ipc::WorkerConfig config, int sock);
base::Status ServeNbd(ipc::WorkerConfig config, int sock);

}  // namespace hexz::fused

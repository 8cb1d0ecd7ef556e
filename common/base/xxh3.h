// The XXH3 hash functions of libxxhash, for every file of hexz that hashes.
//
// On x86-64, libxxhash (Debian 12: 0.8.1) exports runtime-dispatched forms of
// XXH3 (XXH3_64bits_dispatch, ...) that use AVX2 or AVX-512 where the CPU has
// them, while the plain names run the SSE2 code the library was built with.
// xxh_x86dispatch.h maps the plain names onto the dispatched ones: the hash
// values are the same, only faster (about 3x for XXH3-64 on an AVX-512 CPU),
// which matters where a checksum sits on every read (snapshot blocks, cache
// hits).
//
// Thread safety: the functions are pure; an XXH3_state_t is one thread's.
#pragma once

#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t on the stack
#include <xxhash.h>
#if defined(__x86_64__)
#include <xxh_x86dispatch.h>
#endif

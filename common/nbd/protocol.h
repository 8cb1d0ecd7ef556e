// NBD wire constants, as specified by the NBD project's doc/proto.md.
//
// Only constants live here: the server (common/nbd/server.h) and the client
// negotiation used by `hexz mount --nbd` (common/nbd/client.h) share them.
// All integers on the wire are big-endian.
#pragma once

#include <cstdint>

namespace hexz::nbd {

// Handshake.
inline constexpr uint64_t kNbdMagic = 0x4e42444d41474943ULL;  // "NBDMAGIC"
inline constexpr uint64_t kIHaveOpt = 0x49484156454F5054ULL;  // "IHAVEOPT"
inline constexpr uint64_t kOptReplyMagic = 0x0003e889045565a9ULL;

// Handshake flags (server -> client, 16 bits).
inline constexpr uint16_t kFlagFixedNewstyle = 1u << 0;
inline constexpr uint16_t kFlagNoZeroes = 1u << 1;
// Client flags (client -> server, 32 bits).
inline constexpr uint32_t kClientFlagFixedNewstyle = 1u << 0;
inline constexpr uint32_t kClientFlagNoZeroes = 1u << 1;

// Transmission flags (16 bits).
inline constexpr uint16_t kTransHasFlags = 1u << 0;
inline constexpr uint16_t kTransReadOnly = 1u << 1;
inline constexpr uint16_t kTransSendFlush = 1u << 2;
inline constexpr uint16_t kTransSendFua = 1u << 3;
inline constexpr uint16_t kTransRotational = 1u << 4;
inline constexpr uint16_t kTransSendTrim = 1u << 5;
inline constexpr uint16_t kTransSendWriteZeroes = 1u << 6;
inline constexpr uint16_t kTransSendDf = 1u << 7;
inline constexpr uint16_t kTransCanMultiConn = 1u << 8;
inline constexpr uint16_t kTransSendResize = 1u << 9;
inline constexpr uint16_t kTransSendCache = 1u << 10;
inline constexpr uint16_t kTransSendFastZero = 1u << 11;

// Options.
inline constexpr uint32_t kOptExportName = 1;
inline constexpr uint32_t kOptAbort = 2;
inline constexpr uint32_t kOptList = 3;
inline constexpr uint32_t kOptStartTls = 5;
inline constexpr uint32_t kOptInfo = 6;
inline constexpr uint32_t kOptGo = 7;
inline constexpr uint32_t kOptStructuredReply = 8;
inline constexpr uint32_t kOptListMetaContext = 9;
inline constexpr uint32_t kOptSetMetaContext = 10;
inline constexpr uint32_t kOptExtendedHeaders = 11;

// Option replies.
inline constexpr uint32_t kRepAck = 1;
inline constexpr uint32_t kRepServer = 2;
inline constexpr uint32_t kRepInfo = 3;
inline constexpr uint32_t kRepMetaContext = 4;
inline constexpr uint32_t kRepFlagError = 1u << 31;
inline constexpr uint32_t kRepErrUnsup = kRepFlagError | 1;
inline constexpr uint32_t kRepErrPolicy = kRepFlagError | 2;
inline constexpr uint32_t kRepErrInvalid = kRepFlagError | 3;
inline constexpr uint32_t kRepErrPlatform = kRepFlagError | 4;
inline constexpr uint32_t kRepErrTlsReqd = kRepFlagError | 5;
inline constexpr uint32_t kRepErrUnknown = kRepFlagError | 6;
inline constexpr uint32_t kRepErrShutdown = kRepFlagError | 7;
inline constexpr uint32_t kRepErrBlockSizeReqd = kRepFlagError | 8;
inline constexpr uint32_t kRepErrTooBig = kRepFlagError | 9;

// NBD_INFO types (in NBD_REP_INFO).
inline constexpr uint16_t kInfoExport = 0;
inline constexpr uint16_t kInfoName = 1;
inline constexpr uint16_t kInfoDescription = 2;
inline constexpr uint16_t kInfoBlockSize = 3;

// Transmission.
inline constexpr uint32_t kRequestMagic = 0x25609513;
inline constexpr uint32_t kSimpleReplyMagic = 0x67446698;
inline constexpr uint32_t kStructuredReplyMagic = 0x668e33ef;

inline constexpr uint16_t kCmdRead = 0;
inline constexpr uint16_t kCmdWrite = 1;
inline constexpr uint16_t kCmdDisc = 2;
inline constexpr uint16_t kCmdFlush = 3;
inline constexpr uint16_t kCmdTrim = 4;
inline constexpr uint16_t kCmdCache = 5;
inline constexpr uint16_t kCmdWriteZeroes = 6;
inline constexpr uint16_t kCmdBlockStatus = 7;

inline constexpr uint16_t kCmdFlagFua = 1u << 0;
inline constexpr uint16_t kCmdFlagNoHole = 1u << 1;
inline constexpr uint16_t kCmdFlagDf = 1u << 2;
inline constexpr uint16_t kCmdFlagReqOne = 1u << 3;
inline constexpr uint16_t kCmdFlagFastZero = 1u << 4;

inline constexpr uint16_t kReplyFlagDone = 1u << 0;
inline constexpr uint16_t kReplyTypeNone = 0;
inline constexpr uint16_t kReplyTypeOffsetData = 1;
inline constexpr uint16_t kReplyTypeOffsetHole = 2;
inline constexpr uint16_t kReplyTypeBlockStatus = 5;
inline constexpr uint16_t kReplyTypeError = (1u << 15) | 1;
inline constexpr uint16_t kReplyTypeErrorOffset = (1u << 15) | 2;

// "base:allocation" block status flags.
inline constexpr uint32_t kStateHole = 1u << 0;
inline constexpr uint32_t kStateZero = 1u << 1;

// Error values on the wire (not the host's errno numbers).
inline constexpr uint32_t kEperm = 1;
inline constexpr uint32_t kEio = 5;
inline constexpr uint32_t kEnomem = 12;
inline constexpr uint32_t kEinval = 22;
inline constexpr uint32_t kEnospc = 28;
inline constexpr uint32_t kEoverflow = 75;
inline constexpr uint32_t kEnotsup = 95;
inline constexpr uint32_t kEshutdown = 108;

// Limits hexz enforces.
inline constexpr uint32_t kMaxOptionLength = 64 * 1024;    // option payload
inline constexpr uint32_t kMaxPayload = 32 * 1024 * 1024;  // READ/WRITE length
inline constexpr uint32_t kMaxStringLength = 4096;         // export names, contexts

}  // namespace hexz::nbd

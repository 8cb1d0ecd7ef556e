// NbdErrno: the NBD error a Status becomes, derived from its errno alone.
#include "common/nbd/wire.h"

#include <gtest/gtest.h>

#include <cerrno>

#include "common/nbd/protocol.h"

namespace hexz::nbd {
namespace {

using base::Status;

TEST(NbdErrnoTest, FollowsTheErrnoOfEveryCode) {
  EXPECT_EQ(NbdErrno(Status::Ok(), 0), 0u);
  EXPECT_EQ(NbdErrno(Status::ReadOnly("x"), 0), kEperm);
  EXPECT_EQ(NbdErrno(Status::PermissionDenied("x"), 0), kEperm);
  EXPECT_EQ(NbdErrno(Status::PermissionDenied("x", EPERM), 0), kEperm);
  EXPECT_EQ(NbdErrno(Status::NoSpace("x"), 0), kEnospc);
  EXPECT_EQ(NbdErrno(Status::InvalidArgument("x"), 0), kEinval);
  EXPECT_EQ(NbdErrno(Status::OutOfRange("x"), 0), kEinval);
  EXPECT_EQ(NbdErrno(Status::Unsupported("x"), 0), kEinval);
  EXPECT_EQ(NbdErrno(Status::Corruption("block 3 checksum mismatch"), 0), kEio);
  EXPECT_EQ(NbdErrno(Status::IoError("x"), 0), kEio);
  EXPECT_EQ(NbdErrno(Status::NotFound("x"), 0), kEio);
  EXPECT_EQ(NbdErrno(Status::Busy("x"), 0), kEio);
  EXPECT_EQ(NbdErrno(Status::Internal("x"), 0), kEio);
}

TEST(NbdErrnoTest, TheErrnoDecidesNotTheCode) {
  // An I/O error that is really a full disk or a lack of memory says so.
  EXPECT_EQ(NbdErrno(Status::FromErrno(ENOSPC, "pwrite"), 0), kEnospc);
  EXPECT_EQ(NbdErrno(Status::FromErrno(EDQUOT, "pwrite"), 0), kEnospc);
  EXPECT_EQ(NbdErrno(Status::FromErrno(EFBIG, "pwrite"), 0), kEnospc);
  EXPECT_EQ(NbdErrno(Status::IoError("x", ENOMEM), 0), kEnomem);
  EXPECT_EQ(NbdErrno(Status::FromErrno(EROFS, "x"), 0), kEperm);
  EXPECT_EQ(NbdErrno(Status::IoError("x", ESHUTDOWN), 0), kEshutdown);
  EXPECT_EQ(NbdErrno(Status::IoError("x", EPIPE), 0), kEio);
}

TEST(NbdErrnoTest, FlagsUnlockTheirOwnErrors) {
  // ENOTSUP only answers a FAST_ZERO request; EOVERFLOW only a DF read.
  EXPECT_EQ(NbdErrno(Status::Unsupported("x"), kCmdFlagFastZero), kEnotsup);
  EXPECT_EQ(NbdErrno(Status::IoError("x", EOVERFLOW), kCmdFlagDf), kEoverflow);
  EXPECT_EQ(NbdErrno(Status::IoError("x", EOVERFLOW), 0), kEinval);
}

}  // namespace
}  // namespace hexz::nbd

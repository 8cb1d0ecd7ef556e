#include "common/base/status.h"

#include <gtest/gtest.h>

#include <memory>
#include <set>
#include <utility>
#include <vector>

namespace hexz::base {
namespace {

TEST(StatusTest, DefaultIsOk) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.code(), Code::kOk);
  EXPECT_EQ(s.ToErrno(), 0);
  EXPECT_EQ(s.ToString(), "OK");
}

TEST(StatusTest, FromErrnoPicksCodeAndKeepsErrno) {
  Status s = Status::FromErrno(ENOENT, "/no/such/file");
  EXPECT_EQ(s.code(), Code::kNotFound);
  EXPECT_EQ(s.sys_errno(), ENOENT);
  EXPECT_EQ(s.ToErrno(), ENOENT);
  EXPECT_EQ(s.message(), "/no/such/file: No such file or directory");

  EXPECT_EQ(Status::FromErrno(ENOSPC, "x").code(), Code::kNoSpace);
  EXPECT_EQ(Status::FromErrno(EACCES, "x").code(), Code::kPermissionDenied);
  EXPECT_EQ(Status::FromErrno(EIO, "x").code(), Code::kIoError);
}

TEST(StatusTest, ToErrnoNeverZeroForErrors) {
  for (int c = 1; c <= static_cast<int>(Code::kInternal); ++c) {
    Status s(static_cast<Code>(c), "m");
    EXPECT_NE(s.ToErrno(), 0) << CodeName(static_cast<Code>(c));
  }
  EXPECT_EQ(Status::Corruption("bad").ToErrno(), EIO);
  EXPECT_EQ(Status::ReadOnly("ro").ToErrno(), EROFS);
}

TEST(StatusTest, EveryCodeHasAFactoryWithItsErrno) {
  const std::vector<std::pair<Status, int>> made = {
      {Status::InvalidArgument("m"), EINVAL},
      {Status::NotFound("m"), ENOENT},
      {Status::Corruption("m"), EIO},
      {Status::Unsupported("m"), EOPNOTSUPP},
      {Status::IoError("m"), EIO},
      {Status::ReadOnly("m"), EROFS},
      {Status::NoSpace("m"), ENOSPC},
      {Status::Busy("m"), EBUSY},
      {Status::PermissionDenied("m"), EACCES},
      {Status::OutOfRange("m"), EINVAL},
      {Status::AlreadyExists("m"), EEXIST},
      {Status::Unavailable("m"), ENODEV},
      {Status::Cancelled("m"), EINTR},
      {Status::Internal("m"), EIO},
  };
  std::set<Code> codes;
  for (const auto& [s, err] : made) {
    SCOPED_TRACE(CodeName(s.code()));
    EXPECT_EQ(s.sys_errno(), err);
    EXPECT_EQ(s.ToErrno(), err);
    EXPECT_EQ(CodeErrno(s.code()), err);
    EXPECT_EQ(s.message(), "m");
    codes.insert(s.code());
  }
  EXPECT_EQ(codes.size(), static_cast<size_t>(Code::kInternal));  // every code but kOk
  // A caller that knows the errno better passes it.
  EXPECT_EQ(Status::IoError("peer closed", EPIPE).ToErrno(), EPIPE);
  EXPECT_EQ(Status::PermissionDenied("m", EPERM).sys_errno(), EPERM);
  EXPECT_EQ(Status::Unavailable("m", ENOSYS).code(), Code::kUnavailable);
  EXPECT_EQ(Status::Unavailable("m", ENOSYS).sys_errno(), ENOSYS);
}

TEST(StatusTest, WithContextPrefixes) {
  Status s = Status::Corruption("block 3 checksum mismatch").WithContext("a.st");
  EXPECT_EQ(s.message(), "a.st: block 3 checksum mismatch");
  EXPECT_EQ(s.code(), Code::kCorruption);
  EXPECT_EQ(s.sys_errno(), EIO);
  EXPECT_TRUE(Status::Ok().WithContext("x").ok());
}

Result<int> Half(int v) {
  if (v % 2 != 0) return Status::InvalidArgument("odd");
  return v / 2;
}

Result<int> Quarter(int v) {
  HEXZ_ASSIGN_OR_RETURN(int h, Half(v));
  HEXZ_ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

Status CheckEven(int v) {
  HEXZ_RETURN_IF_ERROR(Half(v).status());
  return Status::Ok();
}

TEST(ResultTest, ValueAndError) {
  Result<int> ok = Half(8);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, 4);
  Result<int> bad = Half(3);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), "odd");
}

TEST(ResultTest, MacrosPropagate) {
  EXPECT_EQ(*Quarter(8), 2);
  EXPECT_FALSE(Quarter(6).ok());
  EXPECT_TRUE(CheckEven(2).ok());
  EXPECT_EQ(CheckEven(1).code(), Code::kInvalidArgument);
}

TEST(ResultTest, OkStatusIsNotAValue) {
  Result<int> r = Status::Ok();
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInternal);
}

TEST(ResultTest, MoveOnlyValue) {
  Result<std::unique_ptr<int>> r = std::make_unique<int>(7);
  ASSERT_TRUE(r.ok());
  std::unique_ptr<int> p = std::move(r).value();
  EXPECT_EQ(*p, 7);
}

}  // namespace
}  // namespace hexz::base

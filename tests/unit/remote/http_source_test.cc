// The URL rules of remote snapshots that need no server: what messages may
// show, where a parent resolves, and which URLs are refused before any
// request. Requests themselves are tested against nginx
// (tests/integration/remote_http.sh).
#include "common/remote/http_source.h"

#include <gtest/gtest.h>

namespace hexz::remote {
namespace {

TEST(RedactUrl, DropsUserinfoQueryAndFragment) {
  EXPECT_EQ(RedactUrl("https://u:secret@host:8443/a/b.st?X-Amz-Signature=abc#frag"),
            "https://host:8443/a/b.st");
  EXPECT_EQ(RedactUrl("http://host/b.st"), "http://host/b.st");
  EXPECT_EQ(RedactUrl("not a url at all"), "(an invalid URL)");
}

TEST(IsUrl, HttpAndHttpsOnly) {
  EXPECT_TRUE(IsUrl("http://h/x.st"));
  EXPECT_TRUE(IsUrl("https://h/x.st"));
  EXPECT_FALSE(IsUrl("ftp://h/x.st"));
  EXPECT_FALSE(IsUrl("dir/http://x.st"));
  EXPECT_FALSE(IsUrl("x.st"));
}

TEST(Opener, ParentResolvesRelativeToTheChildUrl) {
  Opener o{Options{}};
  auto r = o.ResolveParent("https://h/img/sub/top.st?sig=1", "../mid.st");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, "https://h/img/mid.st");
  r = o.ResolveParent("http://h:81/a/top.st", "base.st");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, "http://h:81/a/base.st");
  // URL syntax in a file name stays part of the path.
  r = o.ResolveParent("http://h/a/top.st", "b?c#d 1.st");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, "http://h/a/b%3Fc%23d%201.st");
}

TEST(Opener, S3ParentResolvesInsideTheBucket) {
  Opener o{Options{}};
  auto r = o.ResolveParent("s3://bucket/vm/sub/top.st", "../mid.st");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, "s3://bucket/vm/mid.st");
}

TEST(IsUrl, S3) { EXPECT_TRUE(IsUrl("s3://bucket/key")); }

TEST(Opener, AbsoluteParentOfRemoteChildIsRefused) {
  Opener o{Options{}};
  auto r = o.ResolveParent("http://h/a/top.st?token=x", "/etc/base.st");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("is absolute"), std::string::npos);
  EXPECT_EQ(r.status().message().find("token"), std::string::npos);
}

TEST(Opener, LocalPathsStayLocal) {
  Opener o{Options{}};
  auto r = o.ResolveParent("dir/child.st", "base.st");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, "dir/base.st");
}

TEST(OpenHttp, CredentialsInTheUrlAreRefusedUnsent) {
  // Port 9 (discard) on loopback: if a request were made it would fail with a
  // connection error instead of this message.
  auto r = OpenHttp("http://user:hunter2@127.0.0.1:9/x.st", Options{});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("credentials in a URL"), std::string::npos);
  EXPECT_EQ(r.status().message().find("hunter2"), std::string::npos);
}

}  // namespace
}  // namespace hexz::remote

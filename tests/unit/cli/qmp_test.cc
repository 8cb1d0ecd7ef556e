// QmpClient against a real QEMU (`-machine none`: no guest, starts at once)
// and against sockets that are not QEMU: commands, QMP errors, getfd with a
// descriptor, and the errors for a missing socket and a silent peer.
#include "hexz/qmp.h"

#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>

namespace hexz::cli {
namespace {

using base::JsonValue;

// A socket path in a private temp directory, removed with it.
struct TempSocket {
  explicit TempSocket(const char* name) {
    char d[] = "/tmp/hexz-qmp-test.XXXXXX";
    EXPECT_NE(mkdtemp(d), nullptr);
    dir = d;
    path = dir + "/" + name;
  }
  ~TempSocket() { std::filesystem::remove_all(dir); }
  std::string dir, path;
};

class QemuProcess {
 public:
  explicit QemuProcess(const std::string& socket) {
    pid_ = fork();
    if (pid_ == 0) {
      const std::string qmp = "unix:" + socket + ",server=on,wait=off";
      execlp("qemu-system-x86_64", "qemu-system-x86_64", "-machine", "none", "-nodefaults",
             "-display", "none", "-qmp", qmp.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    for (int i = 0; i < 200 && access(socket.c_str(), F_OK) != 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  ~QemuProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }

 private:
  pid_t pid_ = -1;
};

bool HaveQemu() { return system("command -v qemu-system-x86_64 >/dev/null 2>&1") == 0; }

TEST(QmpTest, TalksToARealQemu) {
  if (!HaveQemu()) GTEST_SKIP() << "qemu-system-x86_64 is not installed";
  TempSocket ts("qmp.sock");
  const std::string& sock = ts.path;
  QemuProcess qemu(sock);
  auto c = QmpClient::Connect(sock);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ((*c)->qemu_version().find_first_not_of("0123456789."), std::string::npos)
      << (*c)->qemu_version();
  EXPECT_NE((*c)->qemu_version().find('.'), std::string::npos);

  auto status = (*c)->Execute("query-status");
  ASSERT_TRUE(status.ok()) << status.status().ToString();
  ASSERT_NE(status->Find("status"), nullptr);
  EXPECT_TRUE(status->Find("status")->is_string());

  auto bad = (*c)->Execute("no-such-command");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find(sock + ": QEMU refused no-such-command: CommandNotFound"),
            std::string::npos)
      << bad.status().ToString();

  int p[2];
  ASSERT_EQ(pipe(p), 0);
  ASSERT_TRUE((*c)->SendFd("hexz-test", p[1]).ok());
  close(p[1]);
  JsonValue name = JsonValue::Object({{"fdname", JsonValue::String("hexz-test")}});
  EXPECT_TRUE((*c)->Execute("closefd", name).ok());
  auto again = (*c)->Execute("closefd", name);
  EXPECT_FALSE(again.ok());  // QEMU no longer holds it
  // QEMU's copy is closed: the pipe's read end sees EOF.
  char b;
  EXPECT_EQ(read(p[0], &b, 1), 0);
  close(p[0]);
}

TEST(QmpTest, MissingSocketIsAClearError) {
  TempSocket ts("none.sock");
  const std::string& sock = ts.path;
  auto c = QmpClient::Connect(sock);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find(sock + ": cannot connect to the QMP socket"),
            std::string::npos)
      << c.status().ToString();
  EXPECT_NE(c.status().message().find("is QEMU running with -qmp unix:"), std::string::npos);
}

// A listening unix socket at `path` (the caller closes it).
int Listen(const std::string& path) {
  int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
  EXPECT_EQ(bind(l, reinterpret_cast<struct sockaddr*>(&addr), sizeof(addr)), 0);
  EXPECT_EQ(listen(l, 4), 0);
  return l;
}

TEST(QmpTest, SilentOrForeignPeerIsAnErrorNotAHang) {
  TempSocket ts1("silent.sock");
  const std::string& silent = ts1.path;
  int l = Listen(silent);
  auto c = QmpClient::Connect(silent, 300);  // never accepted, never answered
  close(l);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("did not answer on the QMP socket"), std::string::npos)
      << c.status().ToString();

  TempSocket ts2("foreign.sock");
  const std::string& foreign = ts2.path;
  l = Listen(foreign);
  std::thread peer([l] {
    int a = accept(l, nullptr, nullptr);
    const char hello[] = "{\"hello\": \"not qmp\"}\n";
    (void)!send(a, hello, sizeof(hello) - 1, MSG_NOSIGNAL);
    close(a);
  });
  auto d = QmpClient::Connect(foreign, 5000);
  peer.join();
  close(l);
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("not a QMP socket"), std::string::npos)
      << d.status().ToString();
}

}  // namespace
}  // namespace hexz::cli

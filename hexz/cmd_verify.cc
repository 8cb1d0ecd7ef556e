// hexz verify: checks every checksum and structure of a snapshot and its
// parent chain.
#include <cstdio>
#include <string>

#include "common/format/snapshot.h"
#include "hexz/cli_checks.h"
#include "hexz/commands.h"
#include "hexz/remote_cli.h"

namespace hexz::cli {

void AddVerifyCommand(CLI::App& parent, int* rc) {
  auto path = std::make_shared<std::string>();
  auto quiet = std::make_shared<bool>(false);
  CLI::App* cmd =
      parent.add_subcommand("verify", "Check every checksum of a snapshot and its parents");
  auto remote = std::make_shared<RemoteFlags>();
  cmd->add_option("SNAP", *path, "Snapshot file or URL")->required();
  cmd->add_flag("-q,--quiet", *quiet, "Print nothing when the snapshot is sound");
  remote->Add(cmd);
  cmd->callback([rc, path, quiet, remote] {
    auto snap = OpenSnapshotChain(*path, remote->OpenOptions());
    if (!snap.ok()) {
      *rc = Fail(snap.status());
      return;
    }
    base::Status st = (*snap)->Verify();
    if (!st.ok()) {
      *rc = Fail(NameChain((*snap)->ChainNames(), st));
      return;
    }
    if (!*quiet) {
      size_t depth = (*snap)->ChainNames().size();
      std::printf("%s: ok%s\n", (*snap)->path().c_str(),
                  depth > 1 ? (" (with " + std::to_string(depth - 1) + " parent" +
                               (depth > 2 ? "s" : "") + ")")
                                  .c_str()
                            : "");
    }
    *rc = 0;
  });
}

}  // namespace hexz::cli

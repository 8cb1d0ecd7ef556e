// hexz: the unprivileged front-end. Parses the command line and dispatches to
// one subcommand; never runs setuid.
#include <unistd.h>

#include <cstdio>

#include "common/base/log.h"
#include "hexz/commands.h"
#include "hexz/fuse_mount_args.h"

namespace hexz::cli {

int Fail(const base::Status& status) {
  std::fprintf(stderr, "hexz: %s\n", status.ToString().c_str());
  return 1;
}

}  // namespace hexz::cli

int main(int argc, char** argv) {
  using namespace hexz::cli;
  if (getuid() != geteuid() || getgid() != getegid()) {
    std::fprintf(stderr,
                 "hexz: refusing to run setuid or setgid; only hexz-nbd-helper is installed "
                 "with privileges\n");
    return 1;
  }
  hexz::base::SetLogProgram("hexz");

  CLI::App app{"hexz: compressed, seekable VM snapshots, mounted through FUSE or NBD", "hexz"};
  app.set_version_flag("--version", "hexz " HEXZ_VERSION);
  app.require_subcommand(1);
  app.fallthrough(false);

  int rc = 0;
  AddPackCommand(app, &rc);
  AddInfoCommand(app, &rc);
  AddVerifyCommand(app, &rc);
  AddCatCommand(app, &rc);
  AddMountCommand(app, &rc);
  AddUnmountCommand(app, &rc);
  AddCommitCommand(app, &rc);
  AddServeCommand(app, &rc);
  AddCacheCommand(app, &rc);
  AddOverlayCommand(app, &rc);

  CLI::App* vm = app.add_subcommand(
      "vm", "Running VMs (vm snapshot, vm resume), and synonyms: vm mount|unmount|commit");
  vm->require_subcommand(1);
  AddMountCommand(*vm, &rc);
  AddUnmountCommand(*vm, &rc);
  AddCommitCommand(*vm, &rc);
  AddVmSnapshotCommand(*vm, &rc);
  AddVmResumeCommand(*vm, &rc);

  // `mount -t fuse.hexz` / fstab: mount.fuse3 runs "hexz SNAP MNT -o OPTS".
  std::vector<std::string> args(argv, argv + argc);
  std::vector<std::string> names;
  for (const CLI::App* sub : app.get_subcommands({})) names.push_back(sub->get_name());
  if (auto translated = TranslateMountFuseArgs(args, names)) {
    if (!translated->ok()) {
      std::fprintf(stderr, "hexz: %s\n", translated->status().message().c_str());
      return 2;
    }
    args = translated->value();
  }
  std::vector<char*> new_argv;
  for (std::string& a : args) new_argv.push_back(a.data());

  try {
    app.parse(static_cast<int>(new_argv.size()), new_argv.data());
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "hexz: %s\nRun 'hexz --help' (or 'hexz SUBCOMMAND --help') for usage.\n",
                 e.what());
    return 2;
  }
  return rc;
}

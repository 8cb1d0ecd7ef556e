// hexz unmount
#include "hexz/commands.h"

namespace hexz::cli {

void AddUnmountCommand(CLI::App& parent, int* rc) {
  CLI::App* cmd = parent.add_subcommand("unmount", "(not available yet)");
  cmd->allow_extras();
  cmd->callback([rc] { *rc = NotAvailableYet("unmount"); });
}

}  // namespace hexz::cli

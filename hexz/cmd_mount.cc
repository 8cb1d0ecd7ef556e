// hexz mount
#include "hexz/commands.h"

namespace hexz::cli {

void AddMountCommand(CLI::App& parent, int* rc) {
  CLI::App* cmd = parent.add_subcommand("mount", "(not available yet)");
  cmd->allow_extras();
  cmd->callback([rc] { *rc = NotAvailableYet("mount"); });
}

}  // namespace hexz::cli

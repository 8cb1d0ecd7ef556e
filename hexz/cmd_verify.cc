// hexz verify
#include "hexz/commands.h"

namespace hexz::cli {

void AddVerifyCommand(CLI::App& parent, int* rc) {
  CLI::App* cmd = parent.add_subcommand("verify", "(not available yet)");
  cmd->allow_extras();
  cmd->callback([rc] { *rc = NotAvailableYet("verify"); });
}

}  // namespace hexz::cli

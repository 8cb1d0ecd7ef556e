// hexz serve
#include "hexz/commands.h"

namespace hexz::cli {

void AddServeCommand(CLI::App& parent, int* rc) {
  CLI::App* cmd = parent.add_subcommand("serve", "(not available yet)");
  cmd->allow_extras();
  cmd->callback([rc] { *rc = NotAvailableYet("serve"); });
}

}  // namespace hexz::cli

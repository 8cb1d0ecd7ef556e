// hexz pack
#include "hexz/commands.h"

namespace hexz::cli {

void AddPackCommand(CLI::App& parent, int* rc) {
  CLI::App* cmd = parent.add_subcommand("pack", "(not available yet)");
  cmd->allow_extras();
  cmd->callback([rc] { *rc = NotAvailableYet("pack"); });
}

}  // namespace hexz::cli

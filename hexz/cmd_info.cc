// hexz info
#include "hexz/commands.h"

namespace hexz::cli {

void AddInfoCommand(CLI::App& parent, int* rc) {
  CLI::App* cmd = parent.add_subcommand("info", "(not available yet)");
  cmd->allow_extras();
  cmd->callback([rc] { *rc = NotAvailableYet("info"); });
}

}  // namespace hexz::cli

// hexz cat
#include "hexz/commands.h"

namespace hexz::cli {

void AddCatCommand(CLI::App& parent, int* rc) {
  CLI::App* cmd = parent.add_subcommand("cat", "(not available yet)");
  cmd->allow_extras();
  cmd->callback([rc] { *rc = NotAvailableYet("cat"); });
}

}  // namespace hexz::cli

// hexz commit
#include "hexz/commands.h"

namespace hexz::cli {

void AddCommitCommand(CLI::App& parent, int* rc) {
  CLI::App* cmd = parent.add_subcommand("commit", "(not available yet)");
  cmd->allow_extras();
  cmd->callback([rc] { *rc = NotAvailableYet("commit"); });
}

}  // namespace hexz::cli

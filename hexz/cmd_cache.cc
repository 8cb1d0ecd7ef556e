// hexz cache
#include "hexz/commands.h"

namespace hexz::cli {

void AddCacheCommand(CLI::App& parent, int* rc) {
  CLI::App* cmd = parent.add_subcommand("cache", "(not available yet)");
  cmd->allow_extras();
  cmd->callback([rc] { *rc = NotAvailableYet("cache"); });
}

}  // namespace hexz::cli

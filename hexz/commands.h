// The hexz front-end's subcommands.
//
// Each Add*Command registers one subcommand (its flags and its callback) on
// `parent`, which is the top-level app or the `vm` group (for the synonyms
// `hexz vm mount|unmount|commit`). A callback stores its exit status in *rc:
// 0 success, 1 failure (a message was printed), 2 bad usage.
#pragma once

#include <CLI/CLI.hpp>

#include "common/base/status.h"

namespace hexz::cli {

void AddPackCommand(CLI::App& parent, int* rc);
void AddInfoCommand(CLI::App& parent, int* rc);
void AddVerifyCommand(CLI::App& parent, int* rc);
void AddCatCommand(CLI::App& parent, int* rc);
void AddMountCommand(CLI::App& parent, int* rc);
void AddUnmountCommand(CLI::App& parent, int* rc);
void AddCommitCommand(CLI::App& parent, int* rc);
void AddServeCommand(CLI::App& parent, int* rc);
void AddCacheCommand(CLI::App& parent, int* rc);
void AddOverlayCommand(CLI::App& parent, int* rc);
// `hexz vm snapshot` (registered on the `vm` group only).
void AddVmSnapshotCommand(CLI::App& parent, int* rc);
void AddVmResumeCommand(CLI::App& parent, int* rc);

// Prints "hexz: <message>" to stderr and returns 1.
int Fail(const base::Status& status);

}  // namespace hexz::cli

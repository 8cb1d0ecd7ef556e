// hexz-fused: the sandboxed worker. It is started by `hexz mount`/`hexz serve`
// with its descriptors and settings on a socketpair; it is not meant to be run
// by hand.
#include <cstdio>

int main() {
  std::fprintf(stderr, "hexz-fused: not available yet; it is started by 'hexz mount'\n");
  return 1;
}

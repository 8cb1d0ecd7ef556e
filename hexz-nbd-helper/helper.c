/* hexz-nbd-helper: the setuid-root helper for `hexz mount --nbd`. */
#include <stdio.h>

int main(void) {
  fputs("hexz-nbd-helper: not available yet\n", stderr);
  return 1;
}

#ifndef CFUZZERDRIVER_H
#define CFUZZERDRIVER_H
#include <stddef.h>
#include <stdint.h>
/* libFuzzer's driver entry (compiler-rt, linked by -sanitize=fuzzer). The executable's own main
   calls it, because SwiftPM gives every executable target a main of its own. */
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*UserCb)(const uint8_t *Data, size_t Size));
#endif

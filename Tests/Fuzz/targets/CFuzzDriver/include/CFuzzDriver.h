// libFuzzer's driver entry (compiler-rt FuzzerInterface.h). The fuzz targets
// call it from the `main` SwiftPM gives every executable, so libFuzzer's own
// `main` is not needed.
#pragma once
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerRunDriver(int *argc, char ***argv,
                        int (*UserCb)(const uint8_t *Data, size_t Size));

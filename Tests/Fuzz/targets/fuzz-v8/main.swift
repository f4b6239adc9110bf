// Runs libFuzzer on this target's `fuzz` (LLVMFuzzerTestOneInput); every
// target has this same file. libFuzzer flags and corpus dirs as arguments.
import CFuzzDriver
import Glibc

var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv, { data, size in fuzz(data, size) }))

import CFuzzerDriver
import Glibc

// libFuzzer's main is not used (SwiftPM defines main for executables); run its driver instead.
var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
let status = LLVMFuzzerRunDriver(&argc, &argv) { data, size in
    guard let data else { return 0 }
    return fuzz(data, size)
}
exit(status)

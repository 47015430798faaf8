#if canImport(Glibc)
import Glibc
#endif

/// Text for a person on file descriptor 2, unbuffered (glibc's `stderr` is a global C variable,
/// which strict concurrency rejects, and an exiting process must not lose the message).
public enum StandardError {
    public static func write(_ text: String) {
        var text = text
        text.withUTF8 { bytes in
            var offset = 0
            while offset < bytes.count {
                let (n, code) = Syscall.run("write(2)") { Glibc.write(2, bytes.baseAddress! + offset, bytes.count - offset) }
                guard code == 0, n > 0 else { return }  // a closed or full stderr: nothing else to tell
                offset += n
            }
        }
    }
}

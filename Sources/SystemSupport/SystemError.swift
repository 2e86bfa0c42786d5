#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A failed system call (or a check made at the system boundary, such as a size limit), with the
/// path and the operation it was for. Every module turns it into its own error at its boundary
/// (`SafeTensorsError.io(file:operation:message:)` carries the same three parts), so the sentence
/// a user reads is the same wherever the call was made: `PATH: OPERATION failed: MESSAGE`.
package struct SystemError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The file or folder the call was about (a label such as `<standard error>` for a stream).
    package var path: String
    /// What was being done, in words: `open`, `write`, `move into place`.
    package var operation: String
    /// The `errno` value; 0 when the failure was not reported by the C library.
    package var code: Int32
    /// The C library's text for `code` (`strerror`), followed by any hint, or the reason itself
    /// when `code` is 0.
    package var message: String

    /// The failure `code` (an errno value) of `operation` on `path`; `hint` is appended to the
    /// C library's text (" (not enough disk space)").
    package init(path: String, operation: String, code: Int32, hint: String = "") {
        self.path = path
        self.operation = operation
        self.code = code
        self.message = SystemError.text(of: code) + hint
    }

    /// A failure found by a check rather than reported by a system call.
    package init(path: String, operation: String, message: String, code: Int32 = 0) {
        self.path = path
        self.operation = operation
        self.code = code
        self.message = message
    }

    /// The failure of the last system call (`errno`, read now).
    package static func last(path: String, operation: String) -> SystemError {
        SystemError(path: path, operation: operation, code: errno)
    }

    /// `PATH: OPERATION failed: MESSAGE`.
    package var description: String { "\(path): \(operation) failed: \(message)" }

    /// The C library's message for an errno value (`strerror`).
    package static func text(of code: Int32) -> String { String(cString: strerror(code)) }

    /// Whether the failure means the disk (or the user's quota) is full.
    package var isDiskFull: Bool { code == ENOSPC || code == EDQUOT || code == EFBIG }

    /// Whether the file was refused for being larger than the caller's limit
    /// (`FileSystem.readFile(_:limit:)`).
    package var exceedsLimit: Bool { code == SystemError.limitCode && operation == "read" }

    /// Whether the call failed because the path exists already (`EEXIST`).
    package var alreadyExists: Bool { code == EEXIST }

    /// The code recorded for a file refused by a size limit.
    static let limitCode = EFBIG
}

/// Retries `call` while it fails with EINTR; returns its last result.
/// Used for every call that may be interrupted by a signal handler.
@inline(__always)
func retryingInterrupts<T: SignedInteger>(_ call: () -> T) -> T {
    while true {
        let result = call()
        if result >= 0 || errno != EINTR { return result }
    }
}

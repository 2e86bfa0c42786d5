#if canImport(Glibc)
import Glibc
#endif
import CFuzzShims

/// An anonymous in-memory file (`memfd_create`) that readers taking a path can open as
/// `/proc/self/fd/N`: a regular file that can be mapped, with no file-system cost per input.
///
/// One instance lives for the whole fuzzing process; `replace` rewrites it for every input. Readers
/// must release their mappings before the next `replace` (every target drops its reader objects
/// before returning from `LLVMFuzzerTestOneInput`).
public final class MemoryFile: @unchecked Sendable {
    // @unchecked: libFuzzer calls the entry point from one thread.

    /// The descriptor returned by `memfd_create`.
    public let descriptor: Int32
    /// A path that opens this file (a new descriptor for the same in-memory inode).
    public let path: String

    /// Creates an empty in-memory file; `name` shows up in `/proc/self/fd` listings only.
    public init(name: String) {
        let fd = flowguard_fuzz_memfd_create(name)
        precondition(fd >= 0, "memfd_create failed: \(String(cString: strerror(errno)))")
        descriptor = fd
        path = "/proc/self/fd/\(fd)"
    }

    /// Makes the file hold exactly `bytes`.
    public func replace(with bytes: UnsafeRawBufferPointer) {
        // Truncating to 0 first drops every old page, so a shorter input leaves no stale tail.
        precondition(ftruncate(descriptor, 0) == 0, "ftruncate failed")
        var done = 0
        while done < bytes.count {
            let n = pwrite(descriptor, bytes.baseAddress! + done, bytes.count - done, off_t(done))
            if n < 0 && errno == EINTR { continue }
            precondition(n > 0, "pwrite to the memfd failed: \(String(cString: strerror(errno)))")
            done += n
        }
    }

    deinit { close(descriptor) }
}

/// The input libFuzzer passes, as a buffer (an empty input may come with a null pointer).
public func fuzzInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> UnsafeRawBufferPointer {
    guard let data, size > 0 else { return UnsafeRawBufferPointer(start: nil, count: 0) }
    return UnsafeRawBufferPointer(start: data, count: size)
}

/// Stops the process with a message libFuzzer reports as a crash (a broken invariant, not a
/// memory error: those are AddressSanitizer's).
public func invariantViolated(_ message: String) -> Never {
    fatalError("fuzz invariant violated: " + message)
}

/// Runs libFuzzer with the process's arguments on `testOneInput` and exits with its status.
/// Each target's `@main` calls this (see `CFuzzShims.h` for why main is ours, not libFuzzer's).
public func runFuzzer(_ testOneInput: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Never {
    var argc = CommandLine.argc
    var argv = CommandLine.unsafeArgv
    let status = withUnsafeMutablePointer(to: &argv) { argvPointer in
        argvPointer.withMemoryRebound(to: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?.self, capacity: 1) {
            LLVMFuzzerRunDriver(&argc, $0, testOneInput)
        }
    }
    exit(status)
}

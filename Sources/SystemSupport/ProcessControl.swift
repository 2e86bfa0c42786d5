#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// This process and others: ids, signals, exit, sleeping, standard error.
package enum ProcessControl {
    /// This process's id.
    package static var currentID: Int32 { getpid() }

    /// Whether a process with id `pid` exists (`kill(pid, 0)` fails with ESRCH only when none
    /// does; a process of another user still counts).
    package static func exists(_ pid: Int32) -> Bool {
        systemKill(pid, 0) == 0 || errno != ESRCH
    }

    /// Kills `pid`'s process group (SIGKILL to −pid), or the process alone when it leads no
    /// group; `stillRunning` tells whether the process alone is worth signalling then.
    package static func killGroup(_ pid: Int32, stillRunning: () -> Bool) {
        if systemKill(-pid, SIGKILL) != 0, stillRunning() { _ = systemKill(pid, SIGKILL) }
    }

    /// Lets writes beyond the file-size limit (`ulimit -f`) fail with EFBIG, naming the file,
    /// instead of killing the process with SIGXFSZ.
    package static func ignoreFileSizeLimitSignal() {
        signal(SIGXFSZ, SIG_IGN)
    }

    /// Ends the process with `status` (C `exit`: buffered C streams are flushed).
    package static func exit(_ status: Int32) -> Never { systemExit(status) }

    /// Sleeps for `seconds` (at microsecond resolution).
    package static func sleep(seconds: Double) {
        _ = usleep(useconds_t(max(0, min(seconds * 1e6, 4e9))))
    }
}

/// Standard error, written with `write(2)` on descriptor 2 directly: no shared C stream state is
/// touched, so threads and signal-time code may use it.
package enum StandardError {
    /// Writes `text` (nothing added). Errors are ignored: there is nowhere left to report them.
    package static func write(_ text: String) {
        var bytes = Array(text.utf8)
        bytes.withUnsafeMutableBytes { write(UnsafeRawBufferPointer($0)) }
    }

    /// Writes raw bytes, ignoring errors.
    package static func write(_ bytes: UnsafeRawBufferPointer) {
        try? FileDescriptor.standardError.write(bytes)
    }
}

/// Seconds on a clock that never jumps (`CLOCK_MONOTONIC`): for timing and deadlines.
package func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// `value` formatted by the C library's `printf` conversion `format`, which must take exactly
/// one `double` (`"%.4g"`). Results longer than 63 bytes are cut.
package func formatC(_ value: Double, _ format: String) -> String {
    withUnsafeTemporaryAllocation(of: CChar.self, capacity: 64) { buffer in
        // Invariant: vsnprintf writes at most 64 bytes, NUL included, into the 64-byte buffer.
        _ = withVaList([value]) { vsnprintf(buffer.baseAddress!, 64, format, $0) }
        return String(cString: buffer.baseAddress!)
    }
}

/// log₂ of `x` (the C library's `log2`).
package func binaryLogarithm(_ x: Double) -> Double { log2(x) }

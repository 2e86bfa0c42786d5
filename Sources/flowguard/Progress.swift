#if canImport(Glibc)
import Glibc
#endif

/// A progress line on standard error for work that takes longer than a second: nothing is
/// shown for quick jobs; afterwards the line is redrawn at most ten times a second.
final class Progress {
    private let label: String
    private let total: Int
    private let start = Progress.now()
    private var lastDraw = 0.0
    private var drawn = false

    init(label: String, total: Int) {
        self.label = label
        self.total = max(total, 1)
    }

    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    func update(_ done: Int) {
        let t = Progress.now()
        guard t - start >= 1, t - lastDraw >= 0.1 else { return }
        lastDraw = t
        drawn = true
        let fraction = Double(done) / Double(total)
        let width = 30
        let filled = min(width, Int(fraction * Double(width)))
        let rate = Double(done) / (t - start) / 1e6
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        printErrorRaw("\r\(label) [\(bar)] \(Int(fraction * 100))% \(Int(rate)) MB/s ")
    }

    func finish() {
        if drawn { printErrorRaw("\n") }
    }
}

/// Writes text to standard error without a newline.
func printErrorRaw(_ text: String) {
    var bytes = Array(text.utf8)
    bytes.withUnsafeMutableBytes { raw in _ = Glibc.write(2, raw.baseAddress!, raw.count) }
}

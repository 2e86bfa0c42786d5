import SystemSupport

/// A progress line on standard error for work that takes longer than a second: nothing is
/// shown for quick jobs; afterwards the line is redrawn at most ten times a second.
final class Progress {
    private let label: String
    private let total: Int
    private let start = monotonicSeconds()
    private var lastDraw = 0.0
    private var drawn = false

    init(label: String, total: Int) {
        self.label = label
        self.total = max(total, 1)
    }

    func update(_ done: Int) {
        let t = monotonicSeconds()
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
    StandardError.write(text)
}

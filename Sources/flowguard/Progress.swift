import Foundation
import SystemSupport

// Progress on standard error, for work that takes longer than a second. On a terminal the line
// is redrawn in place (`\r`, at most ten times a second); into a file, a pipe or a CI log it is
// written as plain lines, at most one every `StatusLine.logInterval` seconds plus a final one,
// and never contains a `\r`.

/// One line of status that changes as work goes on: redrawn in place on a terminal, otherwise
/// written as plain lines now and then. Nothing appears during the first second.
final class StatusLine {
    /// Seconds between two plain lines when standard error is not a terminal.
    static let logInterval = 5.0
    /// Seconds between two redraws on a terminal.
    static let redrawInterval = 0.1
    /// Seconds of work before anything is shown, unless the environment variable
    /// `FLOWGUARD_PROGRESS_AFTER` gives another number (0: show progress for all work).
    static var quietStart: Double {
        ProcessInfo.processInfo.environment["FLOWGUARD_PROGRESS_AFTER"].flatMap(Double.init).map { max(0, $0) } ?? 1
    }

    private let start: Double
    private let showAfter: Double
    private let animated: Bool
    private var lastShown = -Double.infinity
    private var shownText: String?
    private var latest: String?
    private var drawnWidth = 0

    /// A status line starting now; `animated` defaults to whether standard error is a terminal.
    init(animated: Bool = StatusLine.standardErrorIsTerminal, start: Double = StatusLine.now()) {
        self.animated = animated
        self.start = start
        showAfter = StatusLine.quietStart
    }

    /// Seconds on the monotonic clock.
    static func now() -> Double { monotonicSeconds() }

    /// Whether standard error is a terminal (the only case in which lines are redrawn).
    static var standardErrorIsTerminal: Bool { FileDescriptor.standardError.isTerminal }

    /// Seconds since the line was created.
    var elapsed: Double { StatusLine.now() - start }

    /// Offers the current status; it is shown if the work has run over a second and the last
    /// showing is old enough.
    func update(_ text: String) {
        latest = text
        let t = StatusLine.now()
        guard t - start >= showAfter,
              t - lastShown >= (animated ? StatusLine.redrawInterval : StatusLine.logInterval) else { return }
        show(text, at: t)
    }

    /// Ends the line: the latest status is shown if it was not yet (and anything was shown, or the
    /// work took over a second), then a terminal line is ended with a newline.
    func finish(_ final: String? = nil) {
        if let final { latest = final }
        let t = StatusLine.now()
        if let latest, latest != shownText, shownText != nil || t - start >= showAfter {
            show(latest, at: t)
        }
        if animated && shownText != nil { writeStandardError("\n") }
        shownText = nil
        latest = nil
    }

    private func show(_ text: String, at t: Double) {
        lastShown = t
        shownText = text
        if animated {
            // Pad with spaces over what a longer earlier line left on screen.
            let width = text.count
            writeStandardError("\r" + text + String(repeating: " ", count: max(0, drawnWidth - width)))
            drawnWidth = width
        } else {
            writeStandardError(text + "\n")
        }
    }
}

/// A byte-count progress line: `label [####......] 42% 120 MB/s`, or in a log
/// `label: 42% (5.0 GB of 12 GB, 120 MB/s)`.
final class Progress {
    private let label: String
    private let total: Int
    private let line: StatusLine
    private var done = 0

    init(label: String, total: Int, animated: Bool = StatusLine.standardErrorIsTerminal) {
        self.label = label
        self.total = max(total, 1)
        line = StatusLine(animated: animated)
    }

    /// Seconds on the monotonic clock.
    static func now() -> Double { StatusLine.now() }

    /// Reports `done` units (bytes) of the total.
    func update(_ done: Int) {
        self.done = done
        line.update(text(done: done))
    }

    /// Ends the progress: a last line says the work is complete (when anything was shown).
    func finish() {
        line.finish(text(done: total))
    }

    private func text(done: Int) -> String {
        let fraction = min(1, Double(done) / Double(total))
        let seconds = max(line.elapsed, 1e-9)
        let rate = Int(Double(done) / seconds / 1e6)
        if line.isAnimated {
            let width = 30
            let filled = min(width, Int(fraction * Double(width)))
            let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
            return "\(label) [\(bar)] \(Int(fraction * 100))% \(rate) MB/s"
        }
        return "\(label): \(Int(fraction * 100))% (\(formatBytes(done)) of \(formatBytes(total)), \(rate) MB/s)"
    }
}

extension StatusLine {
    /// Whether the line is redrawn in place.
    var isAnimated: Bool { animated }
}

/// Lines that name the stage a command is in (`loading …`, `running …`, `writing …`), shown only
/// once the command has been at work for a second: quick work prints nothing, slow work shows
/// the stage it is in (the one under way at the one-second mark, then each new one).
final class StageLog: @unchecked Sendable {
    // `current`, `visible` and `finished` are shared with the one-second timer: under `lock`.
    private let lock = NSLock()
    private var current: String?
    private var visible = false
    private var finished: Bool
    private var timer: DispatchWorkItem?

    /// Starts timing now; with `enabled` false (`--quiet`) nothing is ever printed.
    init(enabled: Bool) {
        finished = !enabled
        guard enabled else { return }
        let after = StatusLine.quietStart
        if after == 0 {
            visible = true
            return
        }
        let item = DispatchWorkItem { [weak self] in self?.becomeVisible() }
        timer = item
        DispatchQueue.global().asyncAfter(deadline: .now() + after, execute: item)
    }

    /// Enters a stage: printed now if the command has run a second, else remembered.
    func stage(_ line: String) {
        lock.withLock {
            current = line
            if visible && !finished { writeStandardError(line + "\n") }
        }
    }

    /// Ends: no stage line appears after this.
    func finish() {
        lock.withLock { finished = true }
        timer?.cancel()
    }

    private func becomeVisible() {
        lock.withLock {
            guard !finished else { return }
            visible = true
            if let current { writeStandardError(current + "\n") }
        }
    }
}

/// Writes text to standard error as it is (no newline added).
func writeStandardError(_ text: String) {
    StandardError.write(text)
}

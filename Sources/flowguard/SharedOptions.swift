import ArgumentParser

/// `--json`: one JSON object on standard output instead of text. Declared once here and included
/// with `@OptionGroup` by every command that can describe its result for scripts.
struct JSONOutput: ParsableArguments {
    @Flag(help: "Print one JSON object on standard output instead of text.")
    var json = false
}

/// `--quiet`: what a command writes to standard error besides its errors and warnings (progress
/// lines and notes), switched off.
struct LogOptions: ParsableArguments {
    @Flag(help: "Print no progress lines or notes on standard error (warnings and errors still appear).")
    var quiet = false

    /// A progress line for work over a second, or nil with `--quiet`.
    func progress(_ label: String, total: Int) -> Progress? {
        quiet ? nil : Progress(label: label, total: total)
    }

    /// Writes `line` (a progress or informational line) to standard error unless `--quiet`.
    func note(_ line: String) {
        if !quiet { printError(line) }
    }
}

/// `--threads`: how many threads a command computes on.
struct ThreadOptions: ParsableArguments {
    /// The largest thread count accepted.
    static let maximum = 1024

    @Option(help: "Worker threads, 1 to 1024 (default: all processors in lora pack and unpack, 1 in run and train).")
    var threads: Int?

    func validate() throws {
        if let threads, !(1...Self.maximum).contains(threads) {
            throw ValidationError("--threads must be between 1 and \(Self.maximum).")
        }
    }

    /// The thread count given, or `fallback`.
    func count(default fallback: @autoclosure () -> Int) -> Int {
        threads ?? fallback()
    }
}

import ArgumentParser
import Foundation

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

    /// A status line (redrawn on a terminal, plain lines now and then in a log), or nil with `--quiet`.
    func statusLine() -> StatusLine? {
        quiet ? nil : StatusLine()
    }

    /// Stage lines (`loading …`) shown once the work has taken a second; silent with `--quiet`.
    func stages() -> StageLog {
        StageLog(enabled: !quiet)
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

    @Option(help: "Worker threads, 1 to 1024 (default: all processors in convert to GGUF, lora merge, pack and unpack; 1 in run and train).")
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

/// `--force`: what a command does when its output exists. Without it an existing output is a
/// usage error (exit 2, before any work); with it the whole output — file or folder — is
/// replaced atomically when the new one is complete.
struct OutputOptions: ParsableArguments {
    @Flag(help: "Replace the output if it exists (the whole file or folder, atomically, once the new one is complete).")
    var force = false

    /// What a command writes at its output path.
    enum Kind {
        case file, folder
    }

    /// Throws the usage error for an output at `path` that may not be written: one that exists
    /// without `--force`, or a folder where a file is written (or the reverse).
    func check(_ path: String, writes kind: Kind) throws {
        var trimmed = path
        while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed.removeLast() }
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: trimmed, isDirectory: &isFolder) else { return }
        switch (kind, isFolder.boolValue) {
        case (.file, true):
            throw ValidationError("The output '\(path)' is a folder; this command writes a file there: give a file name.")
        case (.folder, false):
            throw ValidationError("The output '\(path)' is a file; this command writes a folder there: give a folder name.")
        default:
            break
        }
        if !force {
            throw ValidationError("The output '\(path)' exists; pass --force to replace it (the whole \(kind == .folder ? "folder" : "file")).")
        }
    }
}

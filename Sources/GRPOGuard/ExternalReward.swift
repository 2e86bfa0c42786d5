import Foundation
import JSON
import SafeTensors
import SystemSupport
import TensorRuntime

// The external reward protocol (docs/rewards.md): FlowGuard starts the scorer once and keeps it
// running; for each batch it writes one JSON request line to the scorer's stdin and reads one JSON
// reply line from its stdout.
//
//   request: {"id": 7, "prompts": ["a cat", ...], "prompt_ids": [0, ...], "shape": [B, ...],
//             "latents_f32_base64": "<B·N little-endian float32 values, base64>"}
//        or  {..., "latents_path": "/tmp/…/batch-7.safetensors"}  (tensor "latents", F32, [B, ...])
//   reply:   {"id": 7, "rewards": [r_0, ..., r_{B-1}]}   or   {"id": 7, "error": "message"}

/// How the latents of a request reach the scorer.
public enum LatentTransport: Sendable, Equatable {
    /// Inline in the request as base64 of little-endian float32 bytes (`latents_f32_base64`).
    case base64
    /// In a temporary safetensors file (`latents_path`, tensor `latents`), deleted after the reply.
    case file
    /// Inline up to `maxInlineBytes` bytes of float32 data, in a file above that.
    case auto(maxInlineBytes: Int)

    /// The default: inline up to 8 MiB of latents.
    public static let standard = LatentTransport.auto(maxInlineBytes: 8 << 20)

    /// Parses `base64`, `file` or `auto`.
    public init?(_ text: String) {
        switch text {
        case "base64": self = .base64
        case "file": self = .file
        case "auto": self = .standard
        default: return nil
        }
    }
}

/// What happens to what the scorer writes on its stderr. Either way its last few kilobytes are
/// kept and quoted in error messages.
public enum ScorerStderr: Sendable, Equatable {
    /// Copied to FlowGuard's own stderr as it arrives (the default: scorers log progress there).
    case passThrough
    /// Only kept for error messages.
    case capture
}

/// How to run an external reward: the command, its arguments and how failures are handled.
public struct ExternalRewardConfig: Sendable, Equatable {
    /// The program: a path, or a name looked up on PATH (`python3`).
    public var command: String
    /// Its arguments (`["tools/rewards/example_reward.py", "--mode", "mean"]`).
    public var arguments: [String]
    /// Seconds to wait for each reply (the first includes the scorer's start-up) before the
    /// scorer is killed and the batch fails.
    public var timeout: Double
    /// What a failure leads to: an error at once, or restarts and resends.
    public var onFailure: RewardFailurePolicy
    /// How latents are sent.
    public var transport: LatentTransport
    /// Whether the scorer's stderr is shown as it arrives or only kept for error messages.
    public var stderr: ScorerStderr
    /// Variables added to (or replacing those of) FlowGuard's environment for the scorer.
    public var environment: [String: String]
    /// The scorer's working directory; FlowGuard's own when nil.
    public var workingDirectory: String?
    /// Folder for the latents files of the file transport; the system temporary folder when nil.
    public var temporaryDirectory: String?

    /// A configuration with the defaults: 300 s timeout, fail on the first error, inline latents up
    /// to 8 MiB, stderr passed through.
    public init(command: String, arguments: [String] = [], timeout: Double = 300, onFailure: RewardFailurePolicy = .fail,
                transport: LatentTransport = .standard, stderr: ScorerStderr = .passThrough,
                environment: [String: String] = [:], workingDirectory: String? = nil, temporaryDirectory: String? = nil) {
        self.command = command
        self.arguments = arguments
        self.timeout = timeout
        self.onFailure = onFailure
        self.transport = transport
        self.stderr = stderr
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.temporaryDirectory = temporaryDirectory
    }

    /// The command line as a shell would show it, for messages.
    public var commandLine: String { ([command] + arguments).map(shellQuoted).joined(separator: " ") }
}

/// A reward computed by a long-running child process speaking JSON lines (docs/rewards.md), so
/// reward models written in Python plug in unchanged. The process is started by `init` and reused
/// for every batch; a failure is always an error naming the command (see `RewardFailurePolicy`
/// for restarts). A class: it owns the process, which `close()` (or releasing it) ends.
public final class ExternalReward: Reward, @unchecked Sendable {
    // @unchecked: all mutable state (the process, the next id, the temporary folder) is accessed
    // only while holding `lock`.

    /// The configuration it runs.
    public let config: ExternalRewardConfig
    private let lock = Lock()
    private var process: ScorerProcess?
    private var nextBatchID = 0
    private var fileDirectory: String?

    /// Starts the scorer. Throws `RewardError.launchFailed` when the command cannot be run.
    public init(config: ExternalRewardConfig) throws(RewardError) {
        guard config.timeout > 0, config.timeout.isFinite else {
            throw .invalidSpec(spec: config.commandLine, reason: "the reply timeout must be a positive number of seconds, not \(config.timeout)")
        }
        if case let .retry(n) = config.onFailure, n < 0 {
            throw .invalidSpec(spec: config.commandLine, reason: "retry count must not be negative")
        }
        self.config = config
        process = try ScorerProcess.launch(config)
    }

    deinit { shutDown() }

    /// The scorer's command line.
    public var name: String { config.commandLine }

    /// The process id of the running scorer, nil when none is running (after a failure under the
    /// `fail` policy, or after `close()`).
    public var processIdentifier: Int32? {
        lock.lock()
        defer { lock.unlock() }
        return process?.pid
    }

    /// Sends the batch to the scorer and returns its rewards. Under `retry(n)` a failed attempt
    /// kills the scorer, starts a new one and resends the same request (same id). After a failure
    /// under `fail` the next call starts a fresh scorer.
    public func score(latents: Tensor, prompts: [String], promptIDs: [Int]) throws(RewardError) -> [Float] {
        let b = try checkBatch(latents: latents, prompts: prompts, promptIDs: promptIDs)
        lock.lock()
        defer { lock.unlock() }
        let id = nextBatchID
        nextBatchID += 1
        let request = try makeRequest(id: id, latents: latents, prompts: prompts, promptIDs: promptIDs)
        defer { if let path = request.file { FileSystem.removeFile(path) } }
        let attempts = config.onFailure.attempts
        var last: RewardError? = nil
        for _ in 0..<attempts {
            do throws(RewardError) {
                if process == nil { process = try ScorerProcess.launch(config) }
                return try exchange(request.line, id: id, count: b)
            } catch {
                guard error.isScorerFailure else { throw error }
                process?.kill()
                process = nil
                last = error
            }
        }
        guard let last else { fatalError("ExternalReward: no attempt was made") }
        if attempts == 1 { throw last }
        throw .retriesExhausted(command: name, batch: id, attempts: attempts, last: last)
    }

    /// Ends the scorer: closes its stdin (a well-behaved scorer exits on end of input), waits up
    /// to two seconds, then kills it; removes the temporary folder. Idempotent.
    public func close() {
        lock.lock()
        defer { lock.unlock() }
        shutDown()
    }

    private func shutDown() {
        process?.finish(grace: 2)
        process = nil
        if let dir = fileDirectory { FileSystem.removeTree(dir) }
        fileDirectory = nil
    }

    // MARK: Requests and replies

    /// The request line (with its newline) and, for the file transport, the latents file.
    private func makeRequest(id: Int, latents: Tensor, prompts: [String], promptIDs: [Int]) throws(RewardError) -> (line: [UInt8], file: String?) {
        var text = "{\"id\":\(id),\"prompts\":["
        for (i, p) in prompts.enumerated() {
            if i > 0 { text += "," }
            JSONValue.writeString(p, to: &text)
        }
        text += "],\"prompt_ids\":[" + promptIDs.map(String.init).joined(separator: ",") + "]"
        text += ",\"shape\":[" + latents.shape.map(String.init).joined(separator: ",") + "]"
        let bytes = littleEndianFloat32Bytes(latents.scalars)
        let inline: Bool
        switch config.transport {
        case .base64: inline = true
        case .file: inline = false
        case let .auto(limit): inline = bytes.count <= limit
        }
        var file: String? = nil
        if inline {
            text += ",\"latents_f32_base64\":\"" + Data(bytes).base64EncodedString() + "\"}"
        } else {
            let path = try temporaryFolder(batch: id) + "/batch-\(id).safetensors"
            do {
                try SafeTensorsWriter.write(to: path, tensors: [(spec: TensorSpec(name: "latents", dtype: .f32, shape: latents.shape), bytes: bytes)],
                                            metadata: ["format": "pt"])
            } catch {
                throw .io(command: name, batch: id, operation: "writing the latents file \(path)", message: "\(error)")
            }
            file = path
            text += ",\"latents_path\":"
            JSONValue.writeString(path, to: &text)
            text += "}"
        }
        text += "\n"
        return (Array(text.utf8), file)
    }

    /// The folder holding latents files, created on first use.
    private func temporaryFolder(batch: Int) throws(RewardError) -> String {
        if let fileDirectory { return fileDirectory }
        let base = config.temporaryDirectory ?? NSTemporaryDirectory()
        let path: String
        do { path = try FileSystem.makeTemporaryFolder(in: base, prefix: "flowguard-reward.") } catch {
            throw .io(command: name, batch: batch, operation: "creating a temporary folder in \(base)", message: error.message)
        }
        fileDirectory = path
        return path
    }

    /// Sends one request and reads and checks its reply.
    private func exchange(_ line: [UInt8], id: Int, count: Int) throws(RewardError) -> [Float] {
        guard let process else { fatalError("ExternalReward: exchange without a process") }
        let deadline = monotonicSeconds() + config.timeout
        do {
            try process.send(line, deadline: deadline)
            let reply = try process.readLine(deadline: deadline)
            return try parseReply(reply, id: id, count: count)
        } catch let failure as ScorerFailure {
            throw rewardError(failure, process: process, batch: id)
        } catch let error as RewardError {
            throw error
        } catch {
            throw .io(command: name, batch: id, operation: "talking to the scorer", message: "\(error)")
        }
    }

    /// Turns a low-level failure into the error the user reads, with the scorer's exit status.
    private func rewardError(_ failure: ScorerFailure, process: ScorerProcess, batch: Int) -> RewardError {
        switch failure {
        case .timeout:
            process.kill()
            return .timedOut(command: name, batch: batch, seconds: config.timeout, stderr: process.stderrTail())
        case .endOfOutput, .peerClosed:
            if let status = process.waitForExit(seconds: 1) {
                return .exited(command: name, batch: batch, status: status.code, signal: status.signaled, stderr: process.stderrTail())
            }
            if case .peerClosed = failure {
                return .io(command: name, batch: batch, operation: "sending the request", message: "the scorer closed its standard input")
            }
            return .closedOutput(command: name, batch: batch, stderr: process.stderrTail())
        case let .lineTooLong(bytes):
            return .badReply(command: name, batch: batch, reason: "no end of line after \(bytes) bytes", line: "")
        case let .system(operation, message):
            return .io(command: name, batch: batch, operation: operation, message: message)
        }
    }

    /// Checks a reply line against the request: JSON object, same id, B finite numbers.
    private func parseReply(_ line: [UInt8], id: Int, count: Int) throws(RewardError) -> [Float] {
        let text = String(decoding: line, as: UTF8.self)
        func bad(_ reason: String) -> RewardError { .badReply(command: name, batch: id, reason: reason, line: text) }
        let value: JSONValue
        do { value = try JSONValue.parse(line) } catch {
            if text.contains("NaN") || text.contains("Infinity") {
                throw bad("it holds NaN or Infinity, which are not JSON numbers (rewards must be finite)")
            }
            throw bad("not JSON (\(error.description))")
        }
        guard case .object = value else { throw bad("not a JSON object") }
        guard let replyID = value["id"] else { throw bad("no \"id\" member") }
        guard replyID.nonNegativeInt == id else {
            throw bad("its id \(replyID.compactText) does not match the request's id \(id)")
        }
        if let message = value["error"], message != .null {
            throw .scorerReported(command: name, batch: id, message: message.stringValue ?? message.compactText)
        }
        guard let items = value["rewards"]?.arrayValue else { throw bad("no \"rewards\" array") }
        guard items.count == count else {
            throw bad("\(items.count) rewards for a batch of \(count) samples")
        }
        var rewards: [Float] = []
        rewards.reserveCapacity(count)
        for (i, item) in items.enumerated() {
            guard let v = item.doubleValue else { throw bad("reward \(i) is not a number (\(item.compactText))") }
            guard v.isFinite else { throw bad("reward \(i) is not finite (\(v))") }
            let f = Float(v)
            guard f.isFinite else { throw bad("reward \(i) (\(v)) does not fit in a float32") }
            rewards.append(f)
        }
        return rewards
    }
}

// MARK: - The child process

/// Why talking to the scorer process failed, before it is explained as a `RewardError`.
enum ScorerFailure: Error {
    /// The deadline passed.
    case timeout
    /// The scorer's stdout reached end of file.
    case endOfOutput
    /// The scorer's stdin is closed (it exited or closed it).
    case peerClosed
    /// A reply grew beyond the line limit without a newline.
    case lineTooLong(Int)
    /// A system call failed.
    case system(operation: String, message: String)

    /// The failure of a stream operation.
    init(_ failure: StreamFailure) {
        switch failure {
        case .timeout: self = .timeout
        case .peerClosed: self = .peerClosed
        case let .system(error): self = .system(operation: error.operation, message: error.message)
        }
    }
}

/// One running scorer: the process, our ends of its stdin/stdout/stderr (Unix socket pairs, so a
/// write to a dead scorer fails with EPIPE instead of raising SIGPIPE, and `shutdown` wakes a
/// blocked reader), the reply line buffer and a thread collecting its stderr.
final class ScorerProcess: @unchecked Sendable {
    // @unchecked: used by one thread at a time (under ExternalReward's lock); the stderr thread
    // touches only `tail`, which has its own lock.

    /// Replies longer than this without a newline are garbage.
    static let maximumLineBytes = 16 << 20

    let process: Process
    let pid: Int32
    private let input: FileDescriptor
    private let output: FileDescriptor
    private let errors: FileDescriptor
    private var buffer: [UInt8] = []
    private let tail: StderrTail
    private var finished = false

    private init(process: Process, input: FileDescriptor, output: FileDescriptor, errors: FileDescriptor, tail: StderrTail) {
        self.process = process
        self.pid = process.processIdentifier
        self.input = input
        self.output = output
        self.errors = errors
        self.tail = tail
    }

    deinit { kill() }

    /// Starts `config`'s command with fresh socket pairs for its standard streams.
    static func launch(_ config: ExternalRewardConfig) throws(RewardError) -> ScorerProcess {
        let commandLine = config.commandLine
        var environment = ProcessInfo.processInfo.environment
        for (k, v) in config.environment { environment[k] = v }
        guard let executable = resolveExecutable(config.command, path: environment["PATH"]) else {
            throw .launchFailed(command: commandLine, reason: config.command.contains("/")
                                ? "\(config.command) is not an executable file" : "\(config.command) was not found on PATH")
        }
        var ends: [(ours: FileDescriptor, theirs: FileDescriptor)] = []
        func closeAll() { for e in ends { e.ours.close(); e.theirs.close() } }
        for stream in ["standard input", "standard output", "standard error"] {
            do { ends.append(try FileDescriptor.makeSocketPair(label: "the scorer's \(stream)")) } catch {
                closeAll()
                throw .launchFailed(command: commandLine, reason: "socketpair failed: \(error.message)")
            }
        }
        // Our end of stdin is non-blocking so a scorer that stops reading cannot stall a write
        // past the deadline.
        ends[0].ours.setNonBlocking()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = config.arguments
        process.environment = environment
        if let dir = config.workingDirectory { process.currentDirectoryURL = URL(fileURLWithPath: dir) }
        process.standardInput = FileHandle(fileDescriptor: ends[0].theirs.rawValue, closeOnDealloc: false)
        process.standardOutput = FileHandle(fileDescriptor: ends[1].theirs.rawValue, closeOnDealloc: false)
        process.standardError = FileHandle(fileDescriptor: ends[2].theirs.rawValue, closeOnDealloc: false)
        do {
            try process.run()
        } catch {
            closeAll()
            throw .launchFailed(command: commandLine, reason: (error as NSError).localizedDescription)
        }
        for e in ends { e.theirs.close() }
        let tail = StderrTail(passThrough: config.stderr == .passThrough)
        tail.startReading(ends[2].ours)
        return ScorerProcess(process: process, input: ends[0].ours, output: ends[1].ours, errors: ends[2].ours, tail: tail)
    }

    /// Writes all of `bytes` to the scorer's stdin before `deadline`.
    func send(_ bytes: [UInt8], deadline: Double) throws(ScorerFailure) {
        let result = bytes.withUnsafeBytes { raw in
            Result { () throws(StreamFailure) in try input.send(raw, deadline: deadline, operation: "writing the request") }
        }
        do { try result.get() } catch { throw ScorerFailure(error) }
    }

    /// The next line of the scorer's stdout (without its newline), read before `deadline`.
    func readLine(deadline: Double) throws(ScorerFailure) -> [UInt8] {
        var scanned = 0
        while true {
            if let newline = buffer[scanned...].firstIndex(of: 0x0A) {
                var line = Array(buffer[..<newline])
                buffer.removeSubrange(...newline)
                if line.last == 0x0D { line.removeLast() }
                return line
            }
            scanned = buffer.count
            guard buffer.count <= Self.maximumLineBytes else { throw .lineTooLong(buffer.count) }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let received = chunk.withUnsafeMutableBytes { raw in
                Result { () throws(StreamFailure) in try output.receive(into: raw, deadline: deadline, operation: "reading the reply") }
            }
            let n: Int
            do { n = try received.get() } catch { throw ScorerFailure(error) }
            if n == 0 { throw .endOfOutput }
            buffer.append(contentsOf: chunk[..<n])
        }
    }

    /// The exit status once the process has ended, waiting up to `seconds`; nil if still running.
    func waitForExit(seconds: Double) -> (code: Int32, signaled: Bool)? {
        let deadline = monotonicSeconds() + seconds
        while process.isRunning {
            if monotonicSeconds() > deadline { return nil }
            ProcessControl.sleep(seconds: 0.005)
        }
        process.waitUntilExit()
        return (process.terminationStatus, process.terminationReason == .uncaughtSignal)
    }

    /// What the scorer last wrote on stderr (after giving the reader a moment to catch up).
    func stderrTail() -> String {
        tail.waitForEnd(seconds: process.isRunning ? 0.05 : 0.5)
        return tail.text
    }

    /// Kills the scorer at once (SIGKILL) with any children it started, and releases its streams.
    /// Foundation's Process starts the scorer as the leader of its own process group (Linux:
    /// POSIX_SPAWN_SETPGROUP), so signalling the group −pid reaches the children too; where the
    /// group does not exist, the scorer alone is signalled.
    func kill() {
        guard !finished else { return }
        finished = true
        ProcessControl.killGroup(pid, stillRunning: { process.isRunning })
        release()
    }

    /// Closes the scorer's stdin, gives it `grace` seconds to exit, then kills it.
    func finish(grace: Double) {
        guard !finished else { return }
        finished = true
        input.shutdown(onlyWriting: true)
        if waitForExit(seconds: grace) == nil, process.isRunning { ProcessControl.killGroup(pid, stillRunning: { process.isRunning }) }
        release()
    }

    /// Reaps the process and closes our ends; `shutdown` first wakes the stderr thread.
    private func release() {
        errors.shutdown(onlyWriting: false)
        process.waitUntilExit()
        tail.waitForEnd(seconds: 1)
        input.close()
        output.close()
        errors.close()
    }
}

/// The last few kilobytes of a scorer's stderr, filled by a reader thread.
final class StderrTail: @unchecked Sendable {
    // @unchecked: `data` and `ended` are only touched while holding `lock`.
    private static let keep = 4096
    private let lock = NSCondition()
    private var data: [UInt8] = []
    private var ended = false
    private let passThrough: Bool

    init(passThrough: Bool) { self.passThrough = passThrough }

    /// Starts a thread reading `fd` to its end.
    func startReading(_ stream: FileDescriptor) {
        let thread = Thread { [self] in
            var chunk = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = chunk.withUnsafeMutableBytes { (try? stream.readSome(into: $0)) ?? 0 }
                if n <= 0 { break }
                if passThrough { chunk.withUnsafeBytes { StandardError.write(UnsafeRawBufferPointer(rebasing: $0[..<n])) } }
                lock.lock()
                data.append(contentsOf: chunk[..<n])
                if data.count > 2 * Self.keep { data.removeFirst(data.count - Self.keep) }
                lock.unlock()
            }
            lock.lock()
            ended = true
            lock.broadcast()
            lock.unlock()
        }
        thread.name = "flowguard-reward-stderr"
        thread.start()
    }

    /// Waits up to `seconds` for the stream to end.
    func waitForEnd(seconds: Double) {
        let limit = Date(timeIntervalSinceNow: seconds)
        lock.lock()
        while !ended, lock.wait(until: limit) {}
        lock.unlock()
    }

    /// The kept text, starting at a line boundary when it was cut.
    var text: String {
        lock.lock()
        var bytes = Array(data.suffix(Self.keep))
        let cut = data.count > Self.keep
        lock.unlock()
        if cut, let nl = bytes.firstIndex(of: 0x0A) { bytes.removeSubrange(...nl) }
        return String(decoding: bytes, as: UTF8.self)
    }
}

// MARK: - Small system helpers

/// The full path of `command`: itself when it contains a slash, else the first match on `path`.
private func resolveExecutable(_ command: String, path: String?) -> String? {
    if command.contains("/") { return FileSystem.isExecutableFile(command) ? command : nil }
    for dir in (path ?? "/usr/bin:/bin").split(separator: ":") {
        let candidate = "\(dir)/\(command)"
        if FileSystem.isExecutableFile(candidate) { return candidate }
    }
    return nil
}

/// The float32 values as little-endian bytes (the wire format of requests and of files we write).
func littleEndianFloat32Bytes(_ values: [Float]) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: values.count * 4)
    out.withUnsafeMutableBytes { raw in
        for (i, v) in values.enumerated() { raw.storeBytes(of: v.bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self) }
    }
    return out
}

/// `word` as a POSIX shell would need it quoted (unchanged when it is plain).
private func shellQuoted(_ word: String) -> String {
    let plain = !word.isEmpty && word.unicodeScalars.allSatisfy {
        CharacterSet.alphanumerics.contains($0) || "-_./=:,+@%".unicodeScalars.contains($0)
    }
    return plain ? word : "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'"
}

import Foundation
import SafeTensors
import TensorRuntime

/// A folder under the system temporary directory, removed when the value is released.
public final class TemporaryDirectory: @unchecked Sendable {
    /// The folder's path.
    public let path: String

    /// Creates a fresh, empty folder.
    public init(prefix: String = "flowguard-test") {
        let tmp = NSTemporaryDirectory()
        let template = (tmp.hasSuffix("/") ? tmp : tmp + "/") + "\(prefix).XXXXXX"
        var bytes = Array(template.utf8CString)
        let made = bytes.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil, "mkdtemp failed")
        path = String(cString: bytes)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// A path inside the folder.
    public func file(_ name: String) -> String { path + "/" + name }

    /// The names of the files in the folder, hidden ones included, sorted.
    public func listing() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted()
    }
}

/// Paths inside the repository, found from this source file's location.
public enum Repository {
    /// The repository's root folder.
    public static var root: String {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }

    /// A path relative to the repository root.
    public static func path(_ relative: String) -> String { root + "/" + relative }
}

/// The result of running a child process.
public struct ProcessResult: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String
}

/// Runs a program to completion and captures its output.
public func runProcess(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) throws -> ProcessResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if let environment { process.environment = environment }
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = FileHandle.nullDevice
    try process.run()
    // Read both pipes concurrently with the child so a full pipe cannot deadlock it.
    nonisolated(unsafe) var errData = Data()
    let group = DispatchGroup()
    group.enter()
    DispatchQueue.global().async {
        errData = err.fileHandleForReading.readDataToEndOfFile()
        group.leave()
    }
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    process.waitUntilExit()
    return ProcessResult(status: process.terminationStatus,
                         stdout: String(decoding: outData, as: UTF8.self),
                         stderr: String(decoding: errData, as: UTF8.self))
}

/// Finds an executable on PATH.
public func which(_ name: String) -> String? {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
        let candidate = "\(dir)/\(name)"
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    return nil
}

/// Builds raw safetensors bytes by hand: the 8-byte length (or `declaredLength` when a test
/// needs a lie), the header text, then `data`.
public func rawSafeTensors(header: String, data: [UInt8] = [], declaredLength: UInt64? = nil) -> [UInt8] {
    let body = Array(header.utf8)
    var out: [UInt8] = []
    withUnsafeBytes(of: (declaredLength ?? UInt64(body.count)).littleEndian) { out.append(contentsOf: $0) }
    out.append(contentsOf: body)
    out.append(contentsOf: data)
    return out
}

/// Writes bytes to a path.
/// Writes `bytes` to `path` (then extends the file to `sparseSize` bytes when given) and opens it
/// as safetensors: the error it is rejected with, or nil when it opens.
public func openingError(_ bytes: [UInt8], at path: String, sparseSize: Int? = nil) throws -> SafeTensorsError? {
    try writeBytes(bytes, to: path)
    if let sparseSize, truncate(path, off_t(sparseSize)) != 0 { throw PeerUnavailable(reason: "cannot extend \(path)") }
    do {
        _ = try SafeTensorsFile(path: path)
        return nil
    } catch {
        return error
    }
}

public func writeBytes(_ bytes: [UInt8], to path: String) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

/// Reads a file's bytes.
public func readBytes(_ path: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
}

/// A deterministic pseudo-random generator (SplitMix64) for tests and fuzzing: seeded, so a
/// failure can be replayed.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var base: SplitMix64
    /// Creates a generator from a seed.
    public init(seed: UInt64) { base = SplitMix64(state: seed) }
    public mutating func next() -> UInt64 { base.next() }
}

/// The reference safetensors implementation (Python, pip `safetensors`) driven through
/// `tools/interop/safetensors_peer.py`.
public enum ReferencePeer {
    /// The Python interpreter to use: `$FLOWGUARD_PYTHON`, else `python3` on PATH.
    public static var python: String? {
        if let p = ProcessInfo.processInfo.environment["FLOWGUARD_PYTHON"] { return p }
        return which("python3")
    }

    /// Runs the peer script with arguments.
    public static func run(_ arguments: [String]) throws -> ProcessResult {
        guard let python else { throw PeerUnavailable(reason: "python3 not found on PATH") }
        return try runProcess(python, [Repository.path("tools/interop/safetensors_peer.py")] + arguments)
    }

    /// Parsed output of `dump FILE`.
    public static func dump(_ path: String) throws -> [String: Any] {
        let result = try run(["dump", path])
        guard result.status == 0 else {
            throw PeerUnavailable(reason: "reference reader failed (\(result.status)): \(result.stderr)")
        }
        return try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any] ?? [:]
    }
}

/// The reference peer could not run or failed.
public struct PeerUnavailable: Error, CustomStringConvertible {
    public var reason: String
    public init(reason: String) { self.reason = reason }
    public var description: String {
        "reference safetensors peer unavailable: \(reason) (the README's test command installs python3 and `pip install safetensors numpy`)"
    }
}

extension Array where Element == UInt8 {
    /// Lower-case hex text of the bytes.
    public var hex: String { map { String(format: "%02x", $0) }.joined() }
}

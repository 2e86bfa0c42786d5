import Checkpoints
import DeltaArchive
import Foundation
import JSON
import SafeTensors
import SystemSupport

/// Non-finite values found in one factor of an adapter that was read.
public struct NonFiniteReport: Sendable, Hashable {
    /// The tensor key in the file.
    public var key: String
    /// Where the tensor's data starts in the file.
    public var byteOffset: Int
    /// Number of NaN values.
    public var nanCount: Int
    /// Number of ±Inf values.
    public var infCount: Int
}

/// An adapter as read from disk, with what the reader noticed about it.
public struct LoRAReadResult: Sendable {
    /// The adapter.
    public var adapter: LoRAAdapter
    /// Factors holding NaN or ±Inf values (empty for a sound file).
    public var nonFinite: [NonFiniteReport]
    /// The file that held the tensors.
    public var tensorFile: String
}

/// Reads LoRA adapters in every supported dialect, detecting the dialect from the keys.
public enum LoRAReader {
    /// Reads the adapter at `path` (a `.safetensors` file in any dialect, or a PEFT folder).
    /// `architecture`, when given, resolves kohya's underscored names exactly; otherwise a generic
    /// module list of the family detected from the names is used.
    public static func read(path: String, architecture: Architecture? = nil) throws -> LoRAAdapter {
        try load(path: path, architecture: architecture).adapter
    }

    /// Reads the adapter at `path` and reports non-finite values; with `rejectNonFinite` the first
    /// factor holding NaN/Inf throws `LoRAError.nonFinite`.
    public static func load(path: String, architecture: Architecture? = nil,
                            rejectNonFinite: Bool = false) throws -> LoRAReadResult {
        guard let status = FileSystem.status(of: path) else {
            throw LoRAError.notAnAdapter(path: path, reason: "no such file or folder")
        }
        let source: FactorSource
        var peftConfig: JSONValue?
        var configFile = ""
        if status.kind == .folder {
            configFile = path + "/adapter_config.json"
            let model = path + "/adapter_model.safetensors"
            guard FileSystem.exists(model) else {
                throw LoRAError.notAnAdapter(path: path, reason: "a folder must be a PEFT adapter holding adapter_model.safetensors and adapter_config.json")
            }
            guard FileSystem.exists(configFile) else {
                throw LoRAError.badConfig(file: configFile, field: "(file)", reason: "adapter_config.json is missing")
            }
            // Bounded: a hostile folder may hold a huge config, or a link to /dev/zero.
            let data: [UInt8]
            do { data = try readWholeFile(configFile, limit: 16 << 20) } catch {
                throw LoRAError.badConfig(file: configFile, field: "(file)", reason: "cannot be read: \(error.description)")
            }
            do { peftConfig = try JSONValue.parse(data) } catch {
                throw LoRAError.badConfig(file: configFile, field: "(file)", reason: "not JSON (\(error))")
            }
            source = try FactorSource(path: model)
        } else {
            source = try FactorSource(path: path)
        }
        guard let dialect = LoRADialects.claiming(source.keys, isFolder: peftConfig != nil) else {
            throw LoRAError.unknownDialect(file: source.path, format: nil, keys: Array(source.keys.prefix(5)), count: source.keys.count)
        }
        var adapter = try dialect.read(source, context: DialectContext(architecture: architecture, peftConfig: peftConfig, configFile: configFile))
        adapter.sourceFile = source.path
        for key in source.keys { adapter.keyOffsets[key] = source.offset(key) }
        if adapter.family == nil { adapter.family = architecture?.family }
        if rejectNonFinite, let bad = source.nonFinite.first {
            throw LoRAError.nonFinite(file: source.path, key: bad.key, byteOffset: bad.byteOffset,
                                      nanCount: bad.nanCount, infCount: bad.infCount)
        }
        return LoRAReadResult(adapter: adapter, nonFinite: source.nonFinite, tensorFile: source.path)
    }

    /// The dialect of the adapter at `path`.
    public static func detectFormat(path: String) throws -> LoRAFormat {
        if FileSystem.isFolder(path) { return .peft }
        let source = try FactorSource(path: path)
        return try detectFormat(keys: source.keys, file: path, isFolder: false)
    }

    /// The dialect of a list of tensor keys; throws `LoRAError.unknownDialect` naming up to five keys.
    static func detectFormat(keys: [String], file: String, isFolder: Bool) throws -> LoRAFormat {
        guard let dialect = LoRADialects.claiming(keys, isFolder: isFolder) else {
            throw LoRAError.unknownDialect(file: file, format: nil, keys: Array(keys.prefix(5)), count: keys.count)
        }
        return dialect.format
    }
}

/// The tensors of one adapter file — a safetensors file, or a delta archive (`.fgdelta`, decoded
/// tensor by tensor, its XOR chain resolved as `DeltaArchiveReader.openingChain(path:)` does) — read as
/// floats, with the non-finite values counted. Byte offsets are those of the (packed) safetensors file.
final class FactorSource {
    let path: String
    let header: SafeTensorsHeader
    private let file: SafeTensorsFile?
    private let archive: DeltaArchiveReader?
    var nonFinite: [NonFiniteReport] = []
    var keys: [String] { header.tensors.map(\.name) }
    var metadata: [String: String] {
        var out: [String: String] = [:]
        for (k, v) in header.metadata ?? [] { out[k] = v }
        return out
    }

    init(path: String) throws {
        self.path = path
        if DeltaArchiveReader.hasMagic(path: path) {
            let reader = try DeltaArchiveReader.openingChain(path: path)
            archive = reader
            file = nil
            header = reader.sourceHeader
        } else {
            let opened = try SafeTensorsFile(path: path)
            file = opened
            archive = nil
            header = opened.header
        }
    }

    /// The tensor `key`'s entry.
    func info(_ key: String) throws -> TensorInfo {
        guard let info = header.info(key) else { throw SafeTensorsError.tensorNotFound(file: path, tensor: key) }
        return info
    }

    /// Where the tensor's data starts in the (packed) safetensors file.
    func fileOffset(of info: TensorInfo) -> Int { header.dataStart + info.dataRange.lowerBound }

    /// The tensor's values widened to Float.
    func floats(of info: TensorInfo) throws -> [Float] {
        if let file {
            let values = try file.floats(of: info)
            // Read once: the mapped pages go back to the kernel, so an adapter is resident once
            // (as Float32), not twice.
            let start = fileOffset(of: info)
            file.advise(.dontNeed, fileRange: start..<(start + info.byteCount))
            return values
        }
        let bytes = try archive!.readTensor(info.name, threads: 1)
        let count = info.elementCount
        return bytes.withUnsafeBytes { raw in
            [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
                FloatCodec.decode(info.dtype, from: raw, into: buffer)
                initialized = count
            }
        }
    }

    /// Where tensor `key`'s data starts in the (packed) safetensors file.
    func offset(_ key: String) -> Int? {
        header.info(key).map(fileOffset(of:))
    }

    /// The tensor `key` as a matrix of floats (counting NaN/Inf).
    func matrix(_ key: String) throws -> Matrix {
        let info = try info(key)
        guard FloatCodec.canDecode(info.dtype), info.dtype.isFloatingPoint else {
            throw LoRAError.badTensor(file: path, key: key, byteOffset: fileOffset(of: info),
                                      reason: "dtype \(info.dtype.rawValue) is not a floating-point type")
        }
        let values = try floats(of: info)
        var nan = 0, inf = 0
        for v in values where !v.isFinite { if v.isNaN { nan += 1 } else { inf += 1 } }
        if nan + inf > 0 {
            nonFinite.append(NonFiniteReport(key: key, byteOffset: fileOffset(of: info), nanCount: nan, infCount: inf))
        }
        return Matrix(shape: info.shape, values: values)
    }

    /// A 0-d (or one-element) alpha tensor's value.
    func scalar(_ key: String) throws -> Float {
        let m = try matrix(key)
        guard m.values.count == 1 else {
            let info = try info(key)
            throw LoRAError.badTensor(file: path, key: key, byteOffset: fileOffset(of: info),
                                      reason: "alpha must be a scalar, found shape \(m.shape)")
        }
        return m.values[0]
    }
}

/// Guesses the family from module names in either layout (the families' module-name markers,
/// see `ModelFamily.guess(fromModuleNames:in:)`); nil when no marker appears.
func familyFromModuleNames(_ names: [String], families: [ModelFamily] = ModelFamily.builtIn) -> ModelFamily? {
    ModelFamily.guess(fromModuleNames: names, in: families)
}

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
        let format = try detectFormat(keys: source.keys, file: source.path, isFolder: peftConfig != nil)
        var adapter: LoRAAdapter
        switch format {
        case .peft, .diffusers:
            adapter = try PEFTDialect.read(source, format: format, config: peftConfig, configFile: configFile)
        case .kohya, .comfy:
            adapter = try OriginalDialect.read(source, format: format, architecture: architecture)
        case .xlabs:
            adapter = try XLabsDialect.read(source)
        }
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
        if isFolder { return .peft }
        if keys.contains(where: { $0.hasPrefix(PEFTDialect.peftPrefix) }) { return .peft }
        if keys.contains(where: { $0.hasPrefix("lora_unet_") }) { return .kohya }
        if keys.contains(where: { $0.hasPrefix(KeyPrefix.comfy.rawValue) && ($0.contains(".lora_down.") || $0.contains(".lora_up.")) }) { return .comfy }
        if keys.contains(where: { XLabsDialect.parse($0) != nil }) { return .xlabs }
        if keys.contains(where: { $0.hasSuffix(".lora_A.weight") || $0.hasSuffix(".lora_B.weight") }) { return .diffusers }
        throw LoRAError.unknownDialect(file: file, format: nil, keys: Array(keys.prefix(5)), count: keys.count)
    }
}

/// The role of a tensor in an adapter.
enum FactorRole: Hashable {
    case down, up, alpha, upBias
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
        if let file { return try file.floats(of: info) }
        let bytes = try archive!.readTensor(info.name, threads: 1)
        let count = info.elementCount
        return bytes.withUnsafeBytes { raw in
            [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
                FloatCodec.decode(info.dtype, from: raw, into: buffer)
                initialized = count
            }
        }
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

/// Collects the tensors of each module by role and assembles `LoRAModule`s, checking partners and ranks.
struct ModuleAssembler {
    /// module name → role → key
    var parts: [String: [FactorRole: String]] = [:]
    var order: [String] = []

    mutating func add(module: String, role: FactorRole, key: String) {
        if parts[module] == nil { order.append(module) }
        parts[module, default: [:]][role] = key
    }

    /// Builds the modules; `alphaFor` supplies α for modules without an alpha tensor.
    func assemble(_ source: FactorSource, downName: String, upName: String,
                  alphaFor: (String) -> Float? = { _ in nil }, zeroAlphaIsRank: Bool = true) throws -> [LoRAModule] {
        var modules: [LoRAModule] = []
        for name in order {
            let p = parts[name]!
            guard let downKey = p[.down] else {
                let present = p[.up] ?? p[.alpha] ?? p[.upBias]!
                throw LoRAError.missingPartner(file: source.path, key: present, missing: partnerKey(present, have: upName, want: downName))
            }
            guard let upKey = p[.up] else {
                throw LoRAError.missingPartner(file: source.path, key: downKey, missing: partnerKey(downKey, have: downName, want: upName))
            }
            let down = try source.matrix(downKey)
            let up = try source.matrix(upKey)
            let okDown = down.shape.count == 2 || (down.shape.count == 4)
            let okUp = up.shape.count == 2 || (up.shape.count == 4 && up.shape[2] == 1 && up.shape[3] == 1)
            guard okDown, okUp, up.shape[1] == down.shape[0], down.shape[0] > 0 else {
                throw LoRAError.rankMismatch(file: source.path, downKey: downKey, downShape: down.shape, upKey: upKey, upShape: up.shape)
            }
            var alpha = alphaFor(name)
            if let alphaKey = p[.alpha] {
                let a = try source.scalar(alphaKey)
                alpha = (a == 0 && zeroAlphaIsRank) ? nil : a
            }
            var bias: Matrix?
            if let biasKey = p[.upBias] {
                let b = try source.matrix(biasKey)
                guard b.values.count == up.shape[0] else {
                    throw LoRAError.rankMismatch(file: source.path, downKey: upKey, downShape: up.shape, upKey: biasKey, upShape: b.shape)
                }
                bias = Matrix(shape: [b.values.count], values: b.values)
            }
            modules.append(LoRAModule(name: name, down: down, up: up, alpha: alpha, upBias: bias))
        }
        return modules
    }

    private func partnerKey(_ key: String, have: String, want: String) -> String {
        if let r = key.range(of: have, options: .backwards) { return key.replacingCharacters(in: r, with: want) }
        return key + " (" + want + ")"
    }
}

/// Guesses the family from module names in either layout (the families' module-name markers,
/// see `ModelFamily.guess(fromModuleNames:in:)`); nil when no marker appears.
func familyFromModuleNames(_ names: [String], families: [ModelFamily] = ModelFamily.builtIn) -> ModelFamily? {
    ModelFamily.guess(fromModuleNames: names, in: families)
}

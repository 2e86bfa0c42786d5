import DeltaArchive
import Foundation
import JSON
import SystemSupport
import Transformers

extension TrainingConfig {
    /// An adapter applied to the frozen base before training (`base_adapters`, `--base-lora`):
    /// a LoRA, LoKr, LoHa, DoRA … file in any dialect, a delta archive, or a PEFT folder, at
    /// `scale` times its own α/r. The trained LoRA is a delta on top of the base so modified.
    public struct BaseAdapter: Sendable, Equatable {
        /// The adapter file or PEFT folder.
        public var path: String
        /// Multiplier of the adapter's own scale (finite; may be negative).
        public var scale: Double
        /// `xxh64:` and 16 hex digits of the adapter's bytes (`BaseAdapter.contentHash(of:)`). A
        /// run fills it in and records it (config.json, the checkpoints' fingerprint); when a
        /// config gives it, the adapter on disk must match.
        public var contentHash: String?

        /// Creates an entry.
        public init(path: String, scale: Double = 1, contentHash: String? = nil) {
            self.path = path
            self.scale = scale
            self.contentHash = contentHash
        }

        /// The entry as a config value: `{"path", "scale"}` and `content_hash` when known.
        var json: JSONValue {
            .object([("path", .string(path)), ("scale", .double(scale))] + (contentHash.map { [("content_hash", JSONValue.string($0))] } ?? []))
        }

        /// Reads `PATH[:SCALE]` (the `--base-lora` syntax): the text after the last `:` is the
        /// scale when it reads as a number, else the whole text is the path. Returns the reason
        /// when the scale is not finite or the path is empty.
        public static func parse(_ text: String) -> Result<BaseAdapter, BaseAdapterSyntaxError> {
            var path = text, scale = 1.0
            if let colon = text.lastIndex(of: ":") {
                let suffix = String(text[text.index(after: colon)...]).trimmingCharacters(in: .whitespaces)
                if suffix.isEmpty {
                    return .failure(BaseAdapterSyntaxError(message: "nothing follows the last ':' (write PATH or PATH:SCALE)"))
                }
                if let number = Double(suffix) {
                    guard number.isFinite else {
                        return .failure(BaseAdapterSyntaxError(message: "the scale after the last ':' must be a finite number, found \"\(suffix)\""))
                    }
                    path = String(text[..<colon])
                    scale = number
                }
            }
            guard !path.isEmpty else { return .failure(BaseAdapterSyntaxError(message: "the path is empty (write PATH or PATH:SCALE)")) }
            return .success(BaseAdapter(path: path, scale: scale))
        }

        /// Why a path does not name an adapter on disk (nil when it names a file or folder). A
        /// `PATH:WORD` whose PATH exists is said to have a scale that is not a number.
        func missingReason() -> String? {
            guard !FileSystem.exists(path) else { return nil }
            if let colon = path.lastIndex(of: ":"), FileSystem.exists(String(path[..<colon])) {
                return "\"\(path[path.index(after: colon)...])\" after the last ':' is not a number (the scale of \"\(path[..<colon])\")"
            }
            return "no file or folder \"\(path)\""
        }

        /// The content hash of the adapter at `path`: `xxh64:` and the 16 hex digits of XXH64
        /// (seed 0) of the file's bytes; for a PEFT folder, XXH64 of the two files' XXH64 values
        /// (8 bytes each, little-endian), `adapter_config.json` then `adapter_model.safetensors`.
        public static func contentHash(of path: String) throws(TrainingError) -> String {
            guard FileSystem.isFolder(path) else { return "xxh64:" + XXH64.hex(try fileHash(path)) }
            var stream: [UInt8] = []
            for name in ["adapter_config.json", "adapter_model.safetensors"] {
                let hash = try fileHash(path + "/" + name)
                withUnsafeBytes(of: hash.littleEndian) { stream.append(contentsOf: $0) }
            }
            return "xxh64:" + XXH64.hex(XXH64.hash(stream))
        }

        /// XXH64 of a whole file's bytes, read through a read-only mapping.
        static func fileHash(_ path: String) throws(TrainingError) -> UInt64 {
            do {
                let file = try FileDescriptor.openForReading(path)
                defer { file.close() }
                let size = try file.status().size
                guard size > 0 else { return XXH64.hash([]) }
                let region = try MappedRegion(mapping: file, count: size)
                return XXH64.hash(region.bytes)
            } catch {
                throw .baseAdapter("\(path): cannot be read (\(error))")
            }
        }
    }

    /// Throws, naming `base_adapters` and the entry, when an entry names no file or folder.
    public func checkBaseAdapterPaths(source: String) throws(TrainingError) {
        for (i, adapter) in baseAdapters.enumerated() {
            if let reason = adapter.missingReason() {
                throw .badConfigValue(source: source, key: "base_adapters", reason: "entry \(i + 1): \(reason)")
            }
        }
    }
}

/// Why a `PATH[:SCALE]` text is not an adapter entry.
public struct BaseAdapterSyntaxError: Error, Sendable, Equatable {
    /// The sentence shown to the user.
    public var message: String
}

extension ConfigValue {
    /// `base_adapters`: an array of entries, each `{"path": …, "scale": …}` (scale optional,
    /// default 1; `content_hash` optional) or a `"PATH[:SCALE]"` string; `null` is no entry.
    func baseAdapters() throws(TrainingError) -> [TrainingConfig.BaseAdapter] {
        if value == .null { return [] }
        guard let items = value.arrayValue else {
            throw bad("must be a list of adapters, each {\"path\": …, \"scale\": …}, found \(value.compactText)")
        }
        var adapters: [TrainingConfig.BaseAdapter] = []
        for (i, item) in items.enumerated() {
            let entry = "entry \(i + 1)"
            if let text = item.stringValue {
                switch TrainingConfig.BaseAdapter.parse(text) {
                case .success(let adapter): adapters.append(adapter)
                case .failure(let error): throw bad("\(entry) (\"\(text)\"): \(error.message)")
                }
                continue
            }
            guard let members = item.objectMembers else {
                throw bad("\(entry) must be {\"path\": …, \"scale\": …} or \"PATH[:SCALE]\", found \(item.compactText)")
            }
            var adapter = TrainingConfig.BaseAdapter(path: "")
            var seen = Set<String>()
            for (key, member) in members {
                guard seen.insert(key).inserted else { throw bad("\(entry): \"\(key)\" is given twice") }
                switch key {
                case "path":
                    guard let s = member.stringValue, !s.isEmpty else { throw bad("\(entry): \"path\" must be a non-empty string, found \(member.compactText)") }
                    adapter.path = s
                case "scale":
                    guard let d = member.doubleValue, d.isFinite else { throw bad("\(entry): \"scale\" must be a finite number, found \(member.compactText)") }
                    adapter.scale = d
                case "content_hash":
                    guard let s = member.stringValue, s.hasPrefix("xxh64:"), s.count == 22,
                          s.dropFirst(6).allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else {
                        throw bad("\(entry): \"content_hash\" must be \"xxh64:\" and 16 lower-case hex digits, found \(member.compactText)")
                    }
                    adapter.contentHash = s
                default:
                    throw bad("\(entry): \"\(key)\" is not an entry key (an entry holds \"path\", \"scale\" and optionally \"content_hash\")")
                }
            }
            guard !adapter.path.isEmpty else { throw bad("\(entry): \"path\" is required") }
            adapters.append(adapter)
        }
        return adapters
    }
}

extension TrainingRun {
    /// The base the run trains on: `config.model` with `config.baseAdapters` applied exactly as
    /// `flowguard run --lora` applies adapters (`AdaptedBase`). Returns the config with every
    /// adapter's content hash filled in (one a config gives must match the file).
    static func loadBase(_ config: TrainingConfig, log: (String) -> Void) throws(TrainingError)
        -> (config: TrainingConfig, base: AdaptedBase) {
        let weights: TransformerWeights
        do { weights = try TransformerWeights(path: config.model, configPath: config.modelConfig) } catch {
            throw .model(path: config.model, reason: error.description)
        }
        var config = config
        let folder = FileManager.default.currentDirectoryPath
        for (i, adapter) in config.baseAdapters.enumerated() {
            // Recorded as absolute paths: a resume from another folder names the same files.
            if !adapter.path.hasPrefix("/") {
                config.baseAdapters[i].path = ((folder + "/" + adapter.path) as NSString).standardizingPath
            }
            let hash = try TrainingConfig.BaseAdapter.contentHash(of: adapter.path)
            if let expected = adapter.contentHash, expected != hash {
                throw .baseAdapter("\(adapter.path): its content hash is \(hash), but the config expects \(expected) (the file changed)")
            }
            config.baseAdapters[i].contentHash = hash
            log("applying base adapter \(config.baseAdapters[i].path) at scale \(String(format: "%g", adapter.scale)) (\(hash))")
        }
        let references = config.baseAdapters.map { AdapterReference(path: $0.path, scale: Float($0.scale)) }
        let base: AdaptedBase
        do { base = try AdaptedBase(weights, adapters: references) } catch {
            throw .baseAdapter(error.description)
        }
        for name in base.replacedTensors {
            let before = try? weights.shape(of: name), after = try? base.weights.shape(of: name)
            if before != after {
                throw .baseAdapter("an adapter widens \"\(name)\" (\(before ?? []) → \(after ?? [])), changing the model's inputs "
                                   + "(a Control LoRA); the trainer keeps the base's inputs, so it cannot train on such a base")
            }
        }
        return (config, base)
    }
}

import DeltaArchive
import Foundation
import JSON
import SafeTensors
import SystemSupport
import TensorRuntime

/// A training checkpoint on disk: `RUN/checkpoints/step-NNNNNN/` holding
///
/// - `adapter.fgdelta`: the exported adapter (EMA unless `ema: false`) in diffusers form, packed
///   as a delta archive — an XOR delta of the previous checkpoint's archive (recorded as
///   `reference` in `checkpoint.json`), self-contained every `keyframeInterval`-th checkpoint;
/// - `state.safetensors`: the raw factors (`param.N`), AdamW moments (`adam.m.N`, `adam.v.N`),
///   EMA averages (`ema.N`), and in `__metadata__["flowguard.training_state"]` the counters, AdamW
///   step counts, the noise generator's state, the module names and the config fingerprint
///   (identical bytes for identical training state);
/// - `checkpoint.json`: step, optimizer steps, the diagnostics file's length, files, reference.
///
/// A checkpoint is written into `.tmp-step-NNNNNN` beside it (an `AtomicFolder`), every file
/// fsynced, then renamed into place and the parent fsynced, so a directory named `step-*` is
/// always complete.
public enum TrainingCheckpoint {
    /// Checkpoints between self-contained archives.
    public static let keyframeInterval = 8
    /// The metadata key of the state JSON.
    static let stateKey = "flowguard.training_state"

    /// The folder name of step `n`.
    public static func folderName(step n: Int) -> String { String(format: "step-%06d", n) }

    /// What `checkpoint.json` and the state metadata say.
    public struct Info: Sendable, Equatable {
        /// Training steps completed.
        public var step: Int
        /// Bytes of `diagnostics.jsonl` at that step.
        public var diagnosticsBytes: Int
        /// The archive's XOR reference, relative to the checkpoints folder, if any.
        public var reference: String?
        /// The checkpoint folder.
        public var path: String
    }

    /// The complete checkpoints in `folder` (`RUN/checkpoints`), oldest first.
    public static func list(in folder: String) -> [Info] {
        let names = (try? FileSystem.listFolder(folder)) ?? []
        return names.filter { $0.hasPrefix("step-") }.sorted().compactMap { try? info(at: folder + "/" + $0) }
    }

    /// Removes temporary folders a killed run left behind.
    public static func removeStale(in folder: String) {
        let names = (try? FileSystem.listFolder(folder)) ?? []
        for name in names where name.hasPrefix(".tmp-") || name.hasPrefix(".old-") {
            FileSystem.removeTree(folder + "/" + name)
        }
    }

    /// Removes every checkpoint in `folder` (`RUN/checkpoints`) but the newest `keep` and the
    /// older ones their XOR chains need (each archive's reference, transitively), so every kept
    /// checkpoint still decodes. A checkpoint is renamed aside (`.old-…`) before it is deleted,
    /// so a kill leaves it whole or gone. Returns the steps removed. `keep` 0 keeps all.
    @discardableResult
    public static func prune(in folder: String, keep: Int) -> [Int] {
        guard keep > 0 else { return [] }
        let all = list(in: folder)
        guard all.count > keep else { return [] }
        var needed = Set<String>()
        var pending = all.suffix(keep).map { ($0.path as NSString).lastPathComponent }
        let byName = Dictionary(uniqueKeysWithValues: all.map { (($0.path as NSString).lastPathComponent, $0) })
        while let name = pending.popLast() {
            guard needed.insert(name).inserted, let reference = byName[name]?.reference else { continue }
            pending.append((reference as NSString).deletingLastPathComponent)
        }
        var removed: [Int] = []
        for checkpoint in all where !needed.contains((checkpoint.path as NSString).lastPathComponent) {
            let aside = folder + "/.old-" + (checkpoint.path as NSString).lastPathComponent
            FileSystem.removeTree(aside)
            guard (try? FileSystem.rename(checkpoint.path, to: aside)) != nil else { continue }
            FileSystem.removeTree(aside)
            removed.append(checkpoint.step)
        }
        if !removed.isEmpty { FileSystem.sync(folder) }
        return removed
    }

    /// Reads `checkpoint.json` of a checkpoint folder.
    public static func info(at path: String) throws(TrainingError) -> Info {
        let file = path + "/checkpoint.json"
        guard let data = try? readWholeFile(file, limit: 1 << 20),
              let json = try? JSONValue.parse(data),
              let step = json["step"]?.nonNegativeInt, let bytes = json["diagnostics_bytes"]?.nonNegativeInt else {
            throw .badCheckpoint(path: path, reason: "checkpoint.json is missing or unreadable")
        }
        return Info(step: step, diagnosticsBytes: bytes, reference: json["reference"]?.stringValue, path: path)
    }

    /// Opens a checkpoint's archive with its chain of references.
    public static func openArchive(_ info: Info, depth: Int = 0) throws(TrainingError) -> DeltaArchiveReader {
        let path = info.path + "/adapter.fgdelta"
        var reference: DeltaReference?
        if let ref = info.reference {
            guard depth < 64 else { throw .badCheckpoint(path: info.path, reason: "its reference chain is too long") }
            let folder = (info.path as NSString).deletingLastPathComponent
            let refFolder = folder + "/" + (ref as NSString).deletingLastPathComponent
            reference = .archive(try openArchive(try Self.info(at: refFolder), depth: depth + 1))
        }
        do { return try DeltaArchiveReader(path: path, reference: reference) } catch {
            throw .badCheckpoint(path: info.path, reason: "adapter.fgdelta: \(error.description)")
        }
    }

    /// Checks a checkpoint folder is complete and sound: checkpoint.json, a readable state whose
    /// step agrees, and an archive that verifies (with its references).
    public static func validate(at path: String) throws(TrainingError) {
        let i = try info(at: path)
        let (state, _) = try readState(at: path)
        guard state.step == i.step else { throw .badCheckpoint(path: path, reason: "state.safetensors is for step \(state.step), checkpoint.json says \(i.step)") }
        let reader = try openArchive(i)
        do { try reader.verify(threads: 1) } catch { throw .badCheckpoint(path: path, reason: "adapter.fgdelta: \(error.description)") }
    }

    /// Writes the checkpoint of `state` atomically into `folder` (`RUN/checkpoints`).
    /// `adapterFile` is a diffusers-form safetensors of the exported adapter (it is packed, not moved).
    static func write(state: TrainerState, diagnosticsBytes: Int, fingerprint: String, modules: [String],
                      adapterFile: String, useXOR: Bool, threads: Int, in folder: String) throws(TrainingError) -> String {
        let name = folderName(step: state.step)
        let final = folder + "/" + name
        let staging: AtomicFolder
        do { staging = try AtomicFolder(destination: final, placement: .replace(staging: ".tmp-" + name, aside: ".old-" + name)) } catch {
            throw .io(path: folder + "/.tmp-" + name, reason: "cannot create the checkpoint folder: \(error.message)")
        }
        let temp = staging.stagingPath
        // The reference: the newest earlier checkpoint, unless this one is a keyframe.
        let earlier = list(in: folder).filter { $0.step < state.step }
        var referencePath: String?
        if useXOR, let previous = earlier.last {
            var chain = 0
            var cursor: Info? = previous
            while let c = cursor, let r = c.reference {
                chain += 1
                cursor = try? info(at: folder + "/" + (r as NSString).deletingLastPathComponent)
            }
            if chain + 1 < keyframeInterval { referencePath = (previous.path as NSString).lastPathComponent + "/adapter.fgdelta" }
        }
        var options = PackOptions(threads: max(1, threads))
        if let referencePath {
            options.reference = .archive(try openArchive(try info(at: folder + "/" + (referencePath as NSString).deletingLastPathComponent)))
        }
        do { try DeltaArchive.pack(input: adapterFile, output: temp + "/adapter.fgdelta", options: options) } catch {
            throw .io(path: temp + "/adapter.fgdelta", reason: error.description)
        }
        try writeState(state, fingerprint: fingerprint, modules: modules, to: temp + "/state.safetensors")
        let json = JSONValue.object([
            ("step", .int(Int64(state.step))), ("optimizer_steps", .int(Int64(state.optimizerSteps))),
            ("diagnostics_bytes", .int(Int64(diagnosticsBytes))), ("adapter", .string("adapter.fgdelta")),
            ("state", .string("state.safetensors")), ("reference", referencePath.map { .string($0) } ?? .null),
        ])
        try writeFileAtomically(Array((json.compactText + "\n").utf8), to: temp + "/checkpoint.json")
        do { try staging.commit() } catch { throw .io(path: final, reason: "cannot \(error.operation): \(error.message)") }
        return final
    }

    /// Writes the state file.
    static func writeState(_ s: TrainerState, fingerprint: String, modules: [String], to path: String) throws(TrainingError) {
        var tensors: [(spec: TensorSpec, bytes: [UInt8])] = []
        func add(_ name: String, _ shape: [Int], _ values: [Float]) {
            tensors.append((TensorSpec(name: name, dtype: .f32, shape: shape), values.withUnsafeBytes { [UInt8]($0) }))
        }
        for (i, p) in s.parameters.enumerated() {
            let tag = String(format: "%05d", i)
            add("param." + tag, p.shape, p.scalars)
            add("ema." + tag, s.averages[i].shape, s.averages[i].scalars)
            add("adam.m." + tag, [s.optimizer.firstMoments[i].count], s.optimizer.firstMoments[i])
            add("adam.v." + tag, [s.optimizer.secondMoments[i].count], s.optimizer.secondMoments[i])
        }
        let meta = JSONValue.object([
            ("step", .int(Int64(s.step))), ("optimizer_steps", .int(Int64(s.optimizerSteps))),
            ("adam_steps", .array(s.optimizer.steps.map { .int(Int64($0)) })),
            ("noise", .array(s.noise.map { .string(String($0)) })),
            ("modules", .array(modules.map { .string($0) })),
            ("config", .string(fingerprint)),
        ])
        do { try SafeTensorsWriter.write(to: path, tensors: tensors, metadata: [stateKey: meta.compactText]) } catch {
            throw .io(path: path, reason: "\(error)")
        }
    }

    /// Reads a checkpoint's state: the trainer state and the config fingerprint.
    public static func readState(at folder: String) throws(TrainingError) -> (TrainerState, fingerprint: String) {
        let path = folder + "/state.safetensors"
        func bad(_ r: String) -> TrainingError { .badCheckpoint(path: folder, reason: "state.safetensors: " + r) }
        let file: SafeTensorsFile
        do { file = try SafeTensorsFile(path: path) } catch { throw bad(error.description) }
        guard let text = file.header.metadataValue(stateKey), let meta = try? JSONValue.parse(Array(text.utf8)),
              let step = meta["step"]?.nonNegativeInt, let optimizerSteps = meta["optimizer_steps"]?.nonNegativeInt,
              let adamSteps = meta["adam_steps"]?.arrayValue?.compactMap(\.nonNegativeInt),
              let noise = meta["noise"]?.arrayValue?.compactMap({ $0.stringValue.flatMap { UInt64($0) } }),
              let fingerprint = meta["config"]?.stringValue else {
            throw bad("the training-state metadata is missing or malformed")
        }
        var params: [Tensor] = [], averages: [Tensor] = [], m: [[Float]] = [], v: [[Float]] = []
        do {
            for i in 0..<adamSteps.count {
                let tag = String(format: "%05d", i)
                let p = try file.info("param." + tag), e = try file.info("ema." + tag)
                params.append(Tensor(shape: p.shape, scalars: try file.floats(of: p)))
                averages.append(Tensor(shape: e.shape, scalars: try file.floats(of: e)))
                m.append(try file.floats(of: "adam.m." + tag))
                v.append(try file.floats(of: "adam.v." + tag))
            }
        } catch { throw bad("\(error)") }
        let state = TrainerState(step: step, optimizerSteps: optimizerSteps, parameters: params,
                                 optimizer: AdamWState(steps: adamSteps, firstMoments: m, secondMoments: v),
                                 averages: averages, noise: noise)
        return (state, fingerprint)
    }
}

/// Replaces `path` with `bytes` atomically (temporary file, fsync, rename, fsync of the folder):
/// a kill leaves the old file or the new one, never a partial one.
func writeFileAtomically(_ bytes: [UInt8], to path: String) throws(TrainingError) {
    do {
        let file = try AtomicFile(destination: path)
        try file.write(bytes)
        try file.commit()
    } catch {
        throw .io(path: path, reason: "cannot write: \(error)")
    }
}

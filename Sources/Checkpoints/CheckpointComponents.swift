import SafeTensors

/// One component of an all-in-one checkpoint (ComfyUI / Comfy-Org repacks, SAI's
/// `sd3_medium_incl_clips*`): the tensors under one key prefix.
public struct CheckpointComponent: Sendable, Hashable {
    /// What it is: `transformer`, `text encoder CLIP-L`, `VAE`, …
    public var name: String
    /// The key prefix its tensors share (`text_encoders.clip_l.`); empty for keys under no known prefix.
    public var prefix: String
    /// Its tensors, in the file's order.
    public var tensors: [TensorInfo]

    /// Number of values.
    public var parameterCount: Int { tensors.reduce(0) { $0 + $1.elementCount } }
    /// Parameters per dtype, largest first.
    public var parametersByDType: [(dtype: DType, parameters: Int)] {
        var totals: [DType: Int] = [:]
        for info in tensors { totals[info.dtype, default: 0] += info.elementCount }
        return totals.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key.rawValue < $1.key.rawValue }.map { ($0.key, $0.value) }
    }
}

/// How all-in-one files are split into components by key prefix.
public enum AllInOne {
    /// The transformer's prefix in an all-in-one file.
    public static let transformerPrefix = "model.diffusion_model."

    /// Known component prefixes and names, transformer first (diffusers' `single_file_utils` and
    /// ComfyUI's `model_detection` recognise the same ones).
    public static let prefixes: [(prefix: String, name: String)] = [
        (transformerPrefix, "transformer"),
        ("text_encoders.clip_l.", "text encoder CLIP-L"),
        ("text_encoders.clip_g.", "text encoder CLIP-G"),
        ("text_encoders.t5xxl.", "text encoder T5-XXL"),
        ("cond_stage_model.", "text encoder (cond_stage_model)"),
        ("conditioner.", "text encoders (conditioner)"),
        ("first_stage_model.", "VAE"),
        ("vae.", "VAE"),
    ]

    /// The components of `infos` when they are an all-in-one file (a transformer under
    /// `model.diffusion_model.` and at least one other known component); nil for a
    /// transformer-only file. Keys under no known prefix form an `other` component.
    public static func components(_ infos: [TensorInfo]) -> [CheckpointComponent]? {
        var byPrefix: [String: [TensorInfo]] = [:]
        for info in infos {
            let prefix = prefixes.first { info.name.hasPrefix($0.prefix) }?.prefix ?? ""
            byPrefix[prefix, default: []].append(info)
        }
        guard byPrefix[transformerPrefix] != nil, byPrefix.keys.contains(where: { $0 != transformerPrefix && !$0.isEmpty }) else {
            return nil
        }
        var out: [CheckpointComponent] = []
        for (prefix, name) in prefixes {
            if let tensors = byPrefix[prefix] { out.append(CheckpointComponent(name: name, prefix: prefix, tensors: tensors)) }
        }
        if let rest = byPrefix[""] { out.append(CheckpointComponent(name: "other", prefix: "", tensors: rest)) }
        return out
    }

    /// The one-line account of what a command that reads only the transformer left out.
    public static func leftOutNote(_ path: String, _ components: [CheckpointComponent]) -> String {
        let others = components.filter { $0.prefix != transformerPrefix }
        let list = others.map { "\($0.name) (\($0.prefix.isEmpty ? "other keys" : $0.prefix + "*"), \($0.tensors.count) tensors)" }
        return "\(path) is an all-in-one checkpoint: reading its transformer (\(transformerPrefix)*); left out "
            + list.joined(separator: ", ")
    }
}

extension TensorCollection {
    /// The transformer of the checkpoint at `path` (see `checkpoint(_:)`): for an all-in-one file
    /// only its `model.diffusion_model.` tensors, with a note naming what was left out.
    public static func transformerCheckpoint(_ path: String) throws(SafeTensorsError) -> TensorCollection {
        try checkpoint(path).transformerOnly()
    }

    /// This collection, or for an all-in-one file the view of its transformer tensors.
    public func transformerOnly() -> TensorCollection {
        guard let components = AllInOne.components(infos) else { return self }
        return subset(note: AllInOne.leftOutNote(path, components)) { $0.info.name.hasPrefix(AllInOne.transformerPrefix) }
    }
}

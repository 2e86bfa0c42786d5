import Checkpoints
import Foundation
import JSON
import SafeTensors
import SystemSupport
import TensorRuntime

/// The prompts a run trains on, as text-encoder outputs computed elsewhere
/// (`tools/prompts/encode_prompts.py`, diffusers' `encode_prompt`) and stored in a safetensors
/// file (format in tools/prompts/README.md):
///
/// | entry | shape / value |
/// |---|---|
/// | `prompt_embeds` | [P, T, joint_dim] — the transformer's `encoder_hidden_states` per prompt |
/// | `pooled_prompt_embeds` | [P, pooled_dim] — its `pooled_projections` |
/// | `negative_prompt_embeds` (optional, for CFG) | [N, T, joint_dim], N = 1 (shared) or P |
/// | `negative_pooled_prompt_embeds` (with the above) | [N, pooled_dim] |
/// | `__metadata__["flowguard.prompts"]` | JSON array of the P prompt strings |
/// | `__metadata__["flowguard.model_family"]` | `"sd3"` or `"flux"` |
/// | `__metadata__["flowguard.negative_prompts"]` (optional) | JSON array of N strings |
///
/// Tensors may be F32, F16 or BF16; they are read as float32. Every value must be finite.
public struct PromptSet: Sendable {
    /// Metadata key of the JSON array of prompt strings.
    public static let promptsKey = "flowguard.prompts"
    /// Metadata key of the model family (`sd3`, `flux`) the prompts were encoded for.
    public static let familyKey = "flowguard.model_family"
    /// Metadata key of the JSON array of negative prompt strings (optional).
    public static let negativePromptsKey = "flowguard.negative_prompts"
    /// Metadata key of a free-text note on how the file was made (optional).
    public static let encoderKey = "flowguard.encoder"
    /// The tensor names, in file order.
    public static let tensorNames = ["prompt_embeds", "pooled_prompt_embeds", "negative_prompt_embeds", "negative_pooled_prompt_embeds"]

    /// Where the set was read from ("(memory)" when built in memory).
    public let path: String
    /// The family the prompts were encoded for.
    public let family: ModelFamily
    /// The P prompt strings.
    public let prompts: [String]
    /// [P, T, joint_dim].
    public let promptEmbeds: Tensor
    /// [P, pooled_dim].
    public let pooledPromptEmbeds: Tensor
    /// The N negative prompt strings, when recorded.
    public let negativePrompts: [String]?
    /// [N, T, joint_dim] with N = 1 or P, when present.
    public let negativePromptEmbeds: Tensor?
    /// [N, pooled_dim], present exactly when `negativePromptEmbeds` is.
    public let negativePooledPromptEmbeds: Tensor?
    /// The provenance note (`flowguard.encoder`), if any.
    public let encoder: String?

    /// P: the number of prompts.
    public var count: Int { prompts.count }
    /// T: tokens per prompt.
    public var tokenCount: Int { promptEmbeds.shape[1] }
    /// The width of the token embeddings (the transformer's `joint_attention_dim`).
    public var jointDim: Int { promptEmbeds.shape[2] }
    /// The width of the pooled embedding (the transformer's `pooled_projection_dim`).
    public var pooledDim: Int { pooledPromptEmbeds.shape[1] }
    /// Whether negative embeddings (for classifier-free guidance) are present.
    public var hasNegatives: Bool { negativePromptEmbeds != nil }

    /// Reads and validates a prompt-set file: tensors present with consistent shapes, values
    /// finite, one string per prompt, a known family. Errors name the file, the tensor or metadata
    /// key and the byte offset.
    public init(path: String) throws(PromptSetError) {
        let file: SafeTensorsFile
        do { file = try SafeTensorsFile(path: path) } catch { throw .file(error) }
        let header = file.header
        let metadataOffset = header.keyOffsets["__metadata__"]

        func metadataString(_ key: String, required: Bool) throws(PromptSetError) -> String? {
            guard let value = header.metadataValue(key) else {
                if required {
                    throw .metadata(file: path, key: key, reason: header.metadata == nil ? "the file has no __metadata__" : "missing", offset: metadataOffset)
                }
                return nil
            }
            return value
        }
        func stringArray(_ key: String, required: Bool) throws(PromptSetError) -> [String]? {
            guard let text = try metadataString(key, required: required) else { return nil }
            let value: JSONValue
            do { value = try JSONValue.parse(Array(text.utf8)) } catch {
                throw .metadata(file: path, key: key, reason: "not valid JSON: \(error.description) of the value", offset: metadataOffset)
            }
            guard let items = value.arrayValue else {
                throw .metadata(file: path, key: key, reason: "must be a JSON array of strings", offset: metadataOffset)
            }
            var strings: [String] = []
            for (i, item) in items.enumerated() {
                guard let s = item.stringValue else {
                    throw .metadata(file: path, key: key, reason: "element \(i) is not a string (\(item.compactText))", offset: metadataOffset)
                }
                strings.append(s)
            }
            return strings
        }

        guard let familyName = try metadataString(Self.familyKey, required: true) else { fatalError("unreachable") }
        guard let family = ModelFamily.named(familyName) else {
            let known = ModelFamily.builtIn.map(\.id).joined(separator: " or ")
            throw .metadata(file: path, key: Self.familyKey, reason: "'\(escapeForDisplay(familyName))' is not a model family (\(known))", offset: metadataOffset)
        }
        guard let prompts = try stringArray(Self.promptsKey, required: true) else { fatalError("unreachable") }
        let negativePrompts = try stringArray(Self.negativePromptsKey, required: false)

        func load(_ name: String, required: Bool) throws(PromptSetError) -> Tensor? {
            guard let info = header.info(name) else {
                if required { throw .missingTensor(file: path, tensor: name) }
                return nil
            }
            guard [.f32, .f16, .bf16].contains(info.dtype) else {
                throw .dtype(file: path, tensor: name, dtype: info.dtype.rawValue, offset: header.keyOffsets[name])
            }
            let values: [Float]
            do { values = try file.floats(of: info) } catch { throw .file(error) }
            if let bad = values.firstIndex(where: { !$0.isFinite }) {
                throw .nonFinite(file: path, tensor: name, index: unravel(bad, info.shape), value: values[bad],
                                 offset: file.fileOffset(of: info) + bad * info.dtype.bits / 8)
            }
            return Tensor(shape: info.shape, scalars: values)
        }
        let embeds = try load("prompt_embeds", required: true)!
        let pooled = try load("pooled_prompt_embeds", required: true)!
        let negative = try load("negative_prompt_embeds", required: false)
        let negativePooled = try load("negative_pooled_prompt_embeds", required: false)
        try self.init(path: path, family: family, prompts: prompts, promptEmbeds: embeds, pooledPromptEmbeds: pooled,
                      negativePrompts: negativePrompts, negativePromptEmbeds: negative, negativePooledPromptEmbeds: negativePooled,
                      encoder: header.metadataValue(Self.encoderKey), keyOffsets: header.keyOffsets)
    }

    /// A prompt set built in memory (for tools and tests), validated like a file.
    public init(family: ModelFamily, prompts: [String], promptEmbeds: Tensor, pooledPromptEmbeds: Tensor,
                negativePrompts: [String]? = nil, negativePromptEmbeds: Tensor? = nil, negativePooledPromptEmbeds: Tensor? = nil,
                encoder: String? = nil) throws(PromptSetError) {
        for (name, tensor) in zip(Self.tensorNames, [promptEmbeds, pooledPromptEmbeds, negativePromptEmbeds, negativePooledPromptEmbeds]) {
            if let t = tensor, let bad = t.scalars.firstIndex(where: { !$0.isFinite }) {
                throw .nonFinite(file: "(memory)", tensor: name, index: unravel(bad, t.shape), value: t.scalars[bad], offset: nil)
            }
        }
        try self.init(path: "(memory)", family: family, prompts: prompts, promptEmbeds: promptEmbeds, pooledPromptEmbeds: pooledPromptEmbeds,
                      negativePrompts: negativePrompts, negativePromptEmbeds: negativePromptEmbeds,
                      negativePooledPromptEmbeds: negativePooledPromptEmbeds, encoder: encoder, keyOffsets: [:])
    }

    /// Checks the shapes against each other and the strings against the count.
    private init(path: String, family: ModelFamily, prompts: [String], promptEmbeds: Tensor, pooledPromptEmbeds: Tensor,
                 negativePrompts: [String]?, negativePromptEmbeds: Tensor?, negativePooledPromptEmbeds: Tensor?,
                 encoder: String?, keyOffsets: [String: Int]) throws(PromptSetError) {
        func shapeError(_ tensor: String, _ shape: [Int], _ reason: String) -> PromptSetError {
            .shape(file: path, tensor: tensor, shape: shape, reason: reason, offset: keyOffsets[tensor])
        }
        let e = promptEmbeds.shape, p = pooledPromptEmbeds.shape
        guard e.count == 3, e.allSatisfy({ $0 > 0 }) else {
            throw shapeError("prompt_embeds", e, "must be [P, T, joint_dim] with every size positive")
        }
        guard p.count == 2, p.allSatisfy({ $0 > 0 }) else {
            throw shapeError("pooled_prompt_embeds", p, "must be [P, pooled_dim] with every size positive")
        }
        guard p[0] == e[0] else {
            throw shapeError("pooled_prompt_embeds", p, "holds \(p[0]) prompts but prompt_embeds holds \(e[0])")
        }
        let metadataOffset = keyOffsets["__metadata__"]
        guard prompts.count == e[0] else {
            throw .metadata(file: path, key: Self.promptsKey,
                            reason: "lists \(prompts.count) prompts but prompt_embeds holds \(e[0])", offset: metadataOffset)
        }
        switch (negativePromptEmbeds, negativePooledPromptEmbeds) {
        case (nil, nil):
            if negativePrompts != nil {
                throw .metadata(file: path, key: Self.negativePromptsKey, reason: "negative prompts are listed but negative_prompt_embeds is missing",
                                offset: metadataOffset)
            }
        case let (n?, np?):
            let ns = n.shape, nps = np.shape
            guard ns.count == 3, ns[0] == 1 || ns[0] == e[0], ns[1] == e[1], ns[2] == e[2] else {
                throw shapeError("negative_prompt_embeds", ns,
                                 "must be [N, \(e[1]), \(e[2])] with N = 1 or \(e[0]), like prompt_embeds \(e)")
            }
            guard nps.count == 2, nps[0] == ns[0], nps[1] == p[1] else {
                throw shapeError("negative_pooled_prompt_embeds", nps, "must be [\(ns[0]), \(p[1])] to match negative_prompt_embeds and pooled_prompt_embeds")
            }
            if let negativePrompts, negativePrompts.count != ns[0] {
                throw .metadata(file: path, key: Self.negativePromptsKey,
                                reason: "lists \(negativePrompts.count) prompts but negative_prompt_embeds holds \(ns[0])", offset: metadataOffset)
            }
        case (nil, _?):
            throw .missingTensor(file: path, tensor: "negative_prompt_embeds")
        case (_?, nil):
            throw .missingTensor(file: path, tensor: "negative_pooled_prompt_embeds")
        }
        self.path = path
        self.family = family
        self.prompts = prompts
        self.promptEmbeds = promptEmbeds
        self.pooledPromptEmbeds = pooledPromptEmbeds
        self.negativePrompts = negativePrompts
        self.negativePromptEmbeds = negativePromptEmbeds
        self.negativePooledPromptEmbeds = negativePooledPromptEmbeds
        self.encoder = encoder
    }

    /// Checks that a model of `architecture` can take these embeddings: same family, and
    /// `joint_attention_dim` and `pooled_projection_dim` equal to the embedding widths.
    public func check(against architecture: Architecture) throws(PromptSetError) {
        let (joint, pooled) = (architecture.config.jointAttentionDim, architecture.config.pooledProjectionDim)
        var problems: [String] = []
        if family != architecture.family {
            problems.append("they were encoded for \(family.displayName) but the model is \(architecture.family.displayName)")
        }
        if jointDim != joint { problems.append("token embeddings are \(jointDim) wide but the model's joint_attention_dim is \(joint)") }
        if pooledDim != pooled { problems.append("pooled embeddings are \(pooledDim) wide but the model's pooled_projection_dim is \(pooled)") }
        if !problems.isEmpty {
            throw .modelMismatch(file: path, model: architecture.name, reason: problems.joined(separator: "; "))
        }
    }

    /// The embeddings of prompts `indices` stacked as one batch, ready for the transformer's
    /// `encoder_hidden_states` [B, T, joint_dim] and `pooled_projections` [B, pooled_dim].
    public func batch(_ indices: [Int]) -> (promptEmbeds: Tensor, pooledPromptEmbeds: Tensor) {
        (gather(promptEmbeds, indices), gather(pooledPromptEmbeds, indices))
    }

    /// The negative embeddings for prompts `indices` (the shared row when N = 1), or nil when
    /// the set has none.
    public func negativeBatch(_ indices: [Int]) -> (promptEmbeds: Tensor, pooledPromptEmbeds: Tensor)? {
        guard let n = negativePromptEmbeds, let np = negativePooledPromptEmbeds else { return nil }
        let rows = n.shape[0] == 1 ? indices.map { _ in 0 } : indices
        return (gather(n, rows), gather(np, rows))
    }

    /// Writes the set as a float32 safetensors file in the documented format (atomically).
    public func write(to path: String) throws(PromptSetError) {
        var metadata = [Self.familyKey: family.rawValue, Self.promptsKey: jsonArray(prompts), "format": "pt"]
        if let negativePrompts { metadata[Self.negativePromptsKey] = jsonArray(negativePrompts) }
        if let encoder { metadata[Self.encoderKey] = encoder }
        var tensors: [(spec: TensorSpec, bytes: [UInt8])] = []
        for (name, tensor) in zip(Self.tensorNames, [promptEmbeds, pooledPromptEmbeds, negativePromptEmbeds, negativePooledPromptEmbeds]) {
            guard let tensor else { continue }
            tensors.append((TensorSpec(name: name, dtype: .f32, shape: tensor.shape), littleEndianFloat32Bytes(tensor.scalars)))
        }
        do { try SafeTensorsWriter.write(to: path, tensors: tensors, metadata: metadata) } catch let error as SafeTensorsError {
            throw .file(error)
        } catch {
            throw .file(.io(file: path, operation: "write", message: "\(error)"))
        }
    }
}

/// Everything that can make a prompt set unusable. The description is the sentence a user reads:
/// file, tensor or metadata key, and byte offset where known.
public enum PromptSetError: Error, Sendable, CustomStringConvertible {
    /// The file is not a readable, valid safetensors file.
    case file(SafeTensorsError)
    /// A required tensor is absent.
    case missingTensor(file: String, tensor: String)
    /// A tensor's shape is wrong or disagrees with another's (offset: its header entry).
    case shape(file: String, tensor: String, shape: [Int], reason: String, offset: Int?)
    /// A tensor's dtype is not F32, F16 or BF16.
    case dtype(file: String, tensor: String, dtype: String, offset: Int?)
    /// A tensor holds NaN or an infinity (offset: the value's first byte).
    case nonFinite(file: String, tensor: String, index: [Int], value: Float, offset: Int?)
    /// A metadata entry is missing or malformed (offset: the `__metadata__` header entry).
    case metadata(file: String, key: String, reason: String, offset: Int?)
    /// The prompts were encoded for another model.
    case modelMismatch(file: String, model: String, reason: String)

    public var description: String {
        switch self {
        case let .file(error):
            return error.description
        case let .missingTensor(file, tensor):
            return "\(errorLocation(file, tensor, nil)): missing: a prompt set needs prompt_embeds and pooled_prompt_embeds (and both negative tensors or neither)"
        case let .shape(file, tensor, shape, reason, offset):
            return "\(errorLocation(file, tensor, offset)): shape \(shape) \(reason)"
        case let .dtype(file, tensor, dtype, offset):
            return "\(errorLocation(file, tensor, offset)): dtype \(dtype) is not a float type (F32, F16 or BF16)"
        case let .nonFinite(file, tensor, index, value, offset):
            return "\(errorLocation(file, tensor, offset)): non-finite value \(value) at index \(index)"
        case let .metadata(file, key, reason, offset):
            var s = file + ": metadata '\(escapeForDisplay(key))'"
            if let offset { s += " (byte \(offset))" }
            return s + ": " + reason
        case let .modelMismatch(file, model, reason):
            return "\(file): prompt embeddings do not fit the model \(model): \(reason)"
        }
    }
}

/// Rows `indices` of `t` (along dimension 0), stacked.
private func gather(_ t: Tensor, _ indices: [Int]) -> Tensor {
    let row = t.shape.dropFirst().reduce(1, *)
    var values: [Float] = []
    values.reserveCapacity(row * indices.count)
    for i in indices {
        precondition(i >= 0 && i < t.shape[0], "PromptSet: prompt index \(i) outside 0..<\(t.shape[0])")
        values.append(contentsOf: t.scalars[(i * row)..<((i + 1) * row)])
    }
    return Tensor(shape: [indices.count] + t.shape.dropFirst(), scalars: values)
}

/// The multi-index of flat position `flat` in a row-major `shape`.
private func unravel(_ flat: Int, _ shape: [Int]) -> [Int] {
    var rest = flat
    var index = [Int](repeating: 0, count: shape.count)
    for d in shape.indices.reversed() where shape[d] > 0 {
        index[d] = rest % shape[d]
        rest /= shape[d]
    }
    return index
}

/// A compact JSON array of strings.
private func jsonArray(_ strings: [String]) -> String {
    JSONValue.array(strings.map { .string($0) }).compactText
}

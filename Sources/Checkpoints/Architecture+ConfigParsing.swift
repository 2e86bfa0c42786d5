import JSON
import SafeTensors

extension Architecture {
    /// The architecture described by a diffusers transformer `config.json`
    /// (`SD3Transformer2DModel` or `FluxTransformer2DModel`), for when the weights are not at hand.
    ///
    /// The family comes from `_class_name` (or, without it, from `num_single_layers`). Throws
    /// `CheckpointError.invalidConfig` naming the field that is missing or malformed.
    public init(diffusersConfig json: JSONValue) throws {
        func int(_ key: String, default value: Int? = nil) throws -> Int {
            switch json[key] {
            case nil, .null?:
                if let value { return value }
                throw CheckpointError.invalidConfig("config.json has no \"\(key)\"")
            case let v?:
                guard let n = v.nonNegativeInt else { throw CheckpointError.invalidConfig("config.json \"\(key)\" must be a non-negative integer, not \(v.compactText)") }
                return n
            }
        }
        func ints(_ key: String) throws -> [Int]? {
            guard let v = json[key], v != .null else { return nil }
            guard let items = v.arrayValue?.map(\.nonNegativeInt), items.allSatisfy({ $0 != nil }) else {
                throw CheckpointError.invalidConfig("config.json \"\(key)\" must be a list of non-negative integers")
            }
            return items.map { $0! }
        }
        guard json.objectMembers != nil else { throw CheckpointError.invalidConfig("config.json is not a JSON object") }
        let className = json["_class_name"]?.stringValue
        let isFlux = className.map { $0.hasPrefix("Flux") } ?? (json["num_single_layers"] != nil)
        if !isFlux, let className, !className.hasPrefix("SD3") {
            throw CheckpointError.invalidConfig("config.json \"_class_name\" \(className) is neither SD3Transformer2DModel nor FluxTransformer2DModel")
        }
        let headDim = try int("attention_head_dim")
        let heads = try int("num_attention_heads")
        if isFlux {
            let inChannels = try int("in_channels", default: 64)
            try self.init(config: .flux(FluxConfig(
                hiddenSize: heads * headDim, numLayers: try int("num_layers"), numSingleLayers: try int("num_single_layers"),
                attentionHeadDim: headDim, guidanceEmbeds: json["guidance_embeds"] == .bool(true), inChannels: inChannels,
                outChannels: try int("out_channels", default: inChannels), jointAttentionDim: try int("joint_attention_dim", default: 4096),
                pooledProjectionDim: try int("pooled_projection_dim", default: 768), axesDimsRope: try ints("axes_dims_rope"))))
        } else {
            let qk = json["qk_norm"]
            try self.init(config: .sd3(SD3Config(
                hiddenSize: heads * headDim, numLayers: try int("num_layers"), attentionHeadDim: headDim,
                dualAttentionLayers: try ints("dual_attention_layers") ?? [], qkNorm: qk != nil && qk != .null,
                patchSize: try int("patch_size", default: 2), inChannels: try int("in_channels", default: 16),
                outChannels: try int("out_channels", default: 16), jointAttentionDim: try int("joint_attention_dim", default: 4096),
                pooledProjectionDim: try int("pooled_projection_dim", default: 2048), posEmbedMaxSize: try int("pos_embed_max_size", default: 96),
                sampleSize: try int("sample_size", default: 128))))
        }
    }
}

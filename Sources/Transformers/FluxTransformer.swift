import Checkpoints
import TensorRuntime

/// diffusers' `FluxTransformer2DModel` (FLUX.1 dev/schnell/Fill/Depth and FLUX-style sizes) on the
/// CPU runtime. Inputs (diffusers' names and scaling): `hidden_states` `[B, N, C]` packed latent
/// tokens, `encoder_hidden_states` `[B, T, 4096]`, `pooled_projections` `[B, 768]`, `timestep`
/// `[B]` (sigmas in 0…1; multiplied by 1000 inside), `img_ids` `[N, 3]`, `txt_ids` `[T, 3]`, and
/// `guidance` `[B]` (raw guidance scale, also × 1000) when the model has a guidance embedder.
public final class FluxTransformer: DiffusionTransformer, Sendable {
    /// The architecture of the weights the model was built from.
    public let architecture: Architecture
    /// diffusers' forward argument names this model takes.
    public var inputNames: [String] {
        ["hidden_states", "encoder_hidden_states", "pooled_projections", "timestep", "img_ids", "txt_ids"]
            + (config.guidanceEmbeds ? ["guidance"] : [])
    }
    /// The configuration the model was built for.
    public let config: FluxConfig
    /// RoPE channels per position axis.
    public let axesDims: [Int]
    /// The double-stream blocks, in order.
    public let doubleBlocks: [FluxDoubleBlock]
    /// The single-stream blocks, in order.
    public let singleBlocks: [FluxSingleBlock]

    let xEmbedder: Linear
    let contextEmbedder: Linear
    let timeText: TimeTextEmbedding
    let normOut: Modulation
    let projOut: Linear

    /// The FLUX configuration of `weights`, or an error for another family or unknown RoPE axes.
    static func fluxConfig(_ weights: TransformerWeights) throws(TransformerError) -> FluxConfig {
        guard let config = weights.architecture.config.typed(FluxConfig.self) else {
            throw .badCheckpoint(path: weights.path, reason: "\(weights.architecture.family.displayName) weights cannot build a FLUX transformer")
        }
        return config
    }

    /// Builds the model from FLUX-family weights, fetching every weight once.
    public init(weights: TransformerWeights) throws(TransformerError) {
        let config = try Self.fluxConfig(weights)
        guard let axes = config.axesDimsRope, axes.reduce(0, +) == config.attentionHeadDim, axes.allSatisfy({ $0 > 0 && $0 % 2 == 0 }) else {
            throw .badCheckpoint(path: weights.path,
                                 reason: "the RoPE axes (axes_dims_rope) are unknown for head size \(config.attentionHeadDim); pass a diffusers config.json")
        }
        let dim = config.hiddenSize
        self.config = config
        axesDims = axes
        architecture = weights.architecture
        xEmbedder = try Linear(weights, "x_embedder", inputs: config.inChannels, outputs: dim)
        contextEmbedder = try Linear(weights, "context_embedder", inputs: config.jointAttentionDim, outputs: dim)
        timeText = try TimeTextEmbedding(weights, dim: dim, pooled: config.pooledProjectionDim, guidance: config.guidanceEmbeds)
        var doubles: [FluxDoubleBlock] = []
        for i in 0..<config.numLayers { doubles.append(try FluxDoubleBlock(weights: weights, index: i)) }
        var singles: [FluxSingleBlock] = []
        for i in 0..<config.numSingleLayers { singles.append(try FluxSingleBlock(weights: weights, index: i)) }
        doubleBlocks = doubles
        singleBlocks = singles
        normOut = try Modulation(weights, "norm_out.linear", dim: dim, chunks: 2)
        projOut = try Linear(weights, "proj_out", inputs: dim, outputs: config.outChannels)
    }

    /// Checks names, shapes against the config and each other, and finiteness (see the protocol).
    public func validate(_ inputs: [String: Tensor], source: String) throws(TransformerError) {
        let c = InputChecker(inputs: inputs, source: source)
        let x = try c.require("hidden_states")
        try c.rank(x, "hidden_states", 3, "[batch, tokens, \(config.inChannels)]")
        let (b, n) = (x.shape[0], x.shape[1])
        try c.check(b > 0 && n > 0, "hidden_states", "has shape \(x.shape): no samples or no tokens")
        try c.check(x.shape[2] == config.inChannels, "hidden_states",
                    "has \(x.shape[2]) channels (shape \(x.shape)), the model takes \(config.inChannels)")
        let e = try c.require("encoder_hidden_states")
        try c.rank(e, "encoder_hidden_states", 3, "[\(b), tokens, \(config.jointAttentionDim)]")
        try c.check(e.shape[0] == b, "encoder_hidden_states", "has batch \(e.shape[0]), hidden_states has \(b)")
        try c.check(e.shape[2] == config.jointAttentionDim, "encoder_hidden_states",
                    "has width \(e.shape[2]) (shape \(e.shape)), the model takes \(config.jointAttentionDim)")
        let t = e.shape[1]
        let pooled = try c.require("pooled_projections")
        try c.check(pooled.shape == [b, config.pooledProjectionDim], "pooled_projections",
                    "has shape \(pooled.shape), expected [\(b), \(config.pooledProjectionDim)]")
        _ = try c.perSample("timestep", batch: b)
        let axes = axesDims.count
        for (name, tokens, other) in [("img_ids", n, "hidden_states"), ("txt_ids", t, "encoder_hidden_states")] {
            let ids = try c.require(name)
            let rows = ids.rank == 3 ? ids.shape[1] : (ids.rank == 2 ? ids.shape[0] : -1)
            try c.check((ids.rank == 2 || ids.rank == 3) && ids.shape.last == axes, name,
                        "has shape \(ids.shape), expected [\(tokens), \(axes)]")
            try c.check(rows == tokens, name, "has \(rows) positions, \(other) has \(tokens) tokens")
        }
        if config.guidanceEmbeds {
            _ = try c.perSample("guidance", batch: b)
        } else if inputs["guidance"] != nil {
            throw .badInput(path: source, name: "guidance", reason: "given, but the model has no guidance embedder (a schnell-like model)")
        }
        try c.finite(inputNames)
    }

    /// The first sample's rows of an ids input (`[tokens, axes]`, or the deprecated
    /// `[batch, tokens, axes]`, of which diffusers uses sample 0).
    private func idValues(_ ids: Tensor) -> [Float] {
        guard ids.rank == 3 else { return ids.scalars }
        return Array(ids.scalars[0..<(ids.shape[1] * ids.shape[2])])
    }

    /// The forward pass on validated inputs; returns diffusers' `.sample`.
    public func forward(_ inputs: [String: Variable], adapters: LoRAParameters?, in graph: Graph) -> Variable {
        guard let x = inputs["hidden_states"], let e = inputs["encoder_hidden_states"],
              let pooled = inputs["pooled_projections"], let t = inputs["timestep"],
              let imgIDs = inputs["img_ids"], let txtIDs = inputs["txt_ids"],
              !config.guidanceEmbeds || inputs["guidance"] != nil else {
            preconditionFailure("FluxTransformer.forward: missing input (call validate first); have \(inputs.keys.sorted())")
        }
        let batch = x.shape[0]
        let textTokens = e.shape[1], imageTokens = x.shape[1]
        var hidden = xEmbedder(x, adapters, graph)
        // timestep.to(dtype) * 1000 (and guidance) in Float32, as diffusers does.
        let timesteps = perSampleValues(t.value, batch: batch).map { $0 * 1000 }
        let guidance = config.guidanceEmbeds ? perSampleValues(inputs["guidance"]!.value, batch: batch).map { $0 * 1000 } : nil
        let conditioning = timeText(timesteps: timesteps, guidance: guidance, pooled: pooled, adapters, graph)
        var context = contextEmbedder(e, adapters, graph)
        let rope = Embeddings.ropeTables(ids: idValues(txtIDs.value) + idValues(imgIDs.value),
                                         tokens: textTokens + imageTokens, axesDims: axesDims)
        for block in doubleBlocks {
            (hidden, context) = block.forward(hidden: hidden, context: context, conditioning: conditioning, rope: rope,
                                              adapters: adapters, in: graph)
        }
        if !singleBlocks.isEmpty {
            // diffusers concatenates and splits around every single block; doing it once is exact.
            var tokens = graph.concat([context, hidden], axis: 1)
            for block in singleBlocks {
                tokens = block.forward(tokens, conditioning: conditioning, rope: rope, adapters: adapters, in: graph)
            }
            hidden = graph.split(tokens, axis: 1, sizes: [textTokens, imageTokens])[1]
        }
        // AdaLayerNormContinuous: chunks are scale, shift.
        let m = normOut(conditioning, adapters, graph)
        return projOut(graph.modulate(graph.layerNorm(hidden, epsilon: 1e-6), shift: m[1], scale: m[0]), adapters, graph)
    }
}

extension FluxTransformer {
    /// `[(l/2)², in_channels]`: 2×2 latent patches packed into tokens; `l` must be even.
    public func sampleShape(latentSize l: Int) throws(TransformerError) -> [Int] {
        guard l % 2 == 0 else {
            throw .badInput(path: "config", name: "latent_size", reason: "\(l) must be even for FLUX (2×2 latent patches become tokens)")
        }
        return [(l / 2) * (l / 2), config.inChannels]
    }

    /// The packed latents as `hidden_states`, the embeddings, `timestep` σ, `img_ids` (0, row,
    /// column) of the square token grid, zero `txt_ids`, and `guidance` when the model has a
    /// guidance embedder.
    public func forwardInputs(latents: Tensor, sigmas: [Double], promptEmbeds: Tensor, pooledPromptEmbeds: Tensor,
                              guidance: Double) -> [String: Tensor] {
        let tokens = latents.shape[1]
        var side = 0
        while (side + 1) * (side + 1) <= tokens { side += 1 }
        var ids = [Float](repeating: 0, count: side * side * 3)
        for r in 0..<side { for q in 0..<side { ids[(r * side + q) * 3 + 1] = Float(r); ids[(r * side + q) * 3 + 2] = Float(q) } }
        var inputs: [String: Tensor] = [
            "hidden_states": latents, "encoder_hidden_states": promptEmbeds, "pooled_projections": pooledPromptEmbeds,
            "timestep": Tensor(shape: [sigmas.count], scalars: sigmas.map { Float($0) }),
            "img_ids": Tensor(shape: [side * side, 3], scalars: ids),
            "txt_ids": Tensor(repeating: 0, shape: [promptEmbeds.shape[1], 3]),
        ]
        if config.guidanceEmbeds {
            inputs["guidance"] = Tensor(shape: [sigmas.count], scalars: [Float](repeating: Float(guidance), count: sigmas.count))
        }
        return inputs
    }
}

import Checkpoints
import TensorRuntime

/// The embedder shared by both families: sinusoid(timestep) → `timestep_embedder` MLP, plus (FLUX
/// with guidance) sinusoid(guidance) → `guidance_embedder` MLP, plus pooled text →
/// `text_embedder` MLP; all MLPs are linear → SiLU → linear (`CombinedTimestepTextProjEmbeddings`,
/// `CombinedTimestepGuidanceTextProjEmbeddings`).
struct TimeTextEmbedding: Sendable {
    let timestep1: Linear, timestep2: Linear
    let guidance: (Linear, Linear)?
    let text1: Linear, text2: Linear

    init(_ weights: TransformerWeights, dim: Int, pooled: Int, guidance: Bool) throws(TransformerError) {
        let p = "time_text_embed."
        timestep1 = try Linear(weights, p + "timestep_embedder.linear_1", inputs: 256, outputs: dim)
        timestep2 = try Linear(weights, p + "timestep_embedder.linear_2", inputs: dim, outputs: dim)
        self.guidance = guidance
            ? (try Linear(weights, p + "guidance_embedder.linear_1", inputs: 256, outputs: dim),
               try Linear(weights, p + "guidance_embedder.linear_2", inputs: dim, outputs: dim))
            : nil
        text1 = try Linear(weights, p + "text_embedder.linear_1", inputs: pooled, outputs: dim)
        text2 = try Linear(weights, p + "text_embedder.linear_2", inputs: dim, outputs: dim)
    }

    /// The conditioning `[B, D]` for timesteps (and guidance values) already scaled as the model uses them.
    func callAsFunction(timesteps: [Float], guidance guidanceValues: [Float]?, pooled: Variable,
                        _ adapters: LoRAParameters?, _ graph: Graph) -> Variable {
        func mlp(_ x: Variable, _ a: Linear, _ b: Linear) -> Variable { b(graph.silu(a(x, adapters, graph)), adapters, graph) }
        var emb = mlp(graph.constant(Embeddings.timestepSinusoid(timesteps)), timestep1, timestep2)
        if let guidance, let guidanceValues {
            emb = graph.add(emb, mlp(graph.constant(Embeddings.timestepSinusoid(guidanceValues)), guidance.0, guidance.1))
        }
        return graph.add(emb, mlp(pooled, text1, text2))
    }
}

/// diffusers' `SD3Transformer2DModel` (SD3, SD3.5 Medium/Large and any SD3-style sizes) on the
/// CPU runtime: patch embedding with the centre-cropped sincos position table, timestep + pooled
/// text conditioning, joint blocks (MMDiT-X dual attention where configured), continuous adaLN
/// output norm and unpatchify. Inputs: `hidden_states` `[B, C, H, W]`, `encoder_hidden_states`
/// `[B, T, 4096]`, `pooled_projections` `[B, 2048]`, `timestep` `[B]` (0…1000, used as given).
public final class SD3Transformer: DiffusionTransformer, Sendable {
    /// The architecture of the weights the model was built from.
    public let architecture: Architecture
    /// diffusers' forward argument names this model takes.
    public var inputNames: [String] { ["hidden_states", "encoder_hidden_states", "pooled_projections", "timestep"] }
    /// The configuration the model was built for.
    public let config: SD3Config
    /// The joint blocks, in order.
    public let blocks: [SD3JointBlock]

    let weights: TransformerWeights
    let patchEmbed: Linear
    let positionTableSide: Int
    let timeText: TimeTextEmbedding
    let contextEmbedder: Linear
    let normOut: Modulation
    let projOut: Linear

    static let positionTable = "pos_embed.pos_embed"

    /// Builds the model from SD3-family weights, fetching every weight once.
    public init(weights: TransformerWeights) throws(TransformerError) {
        guard let config = weights.architecture.config.typed(SD3Config.self) else {
            throw .badCheckpoint(path: weights.path, reason: "\(weights.architecture.family.displayName) weights cannot build an SD3 transformer")
        }
        _ = try Self.heads(config, path: weights.path)
        let dim = config.hiddenSize
        let p = config.patchSize
        self.weights = weights
        self.config = config
        architecture = weights.architecture
        patchEmbed = try Linear(weights, "pos_embed.proj", inputs: config.inChannels * p * p, outputs: dim)
        let tableShape = try weights.shape(of: Self.positionTable)
        let rows = tableShape.count >= 2 ? tableShape.dropLast().reduce(1, *) : 0
        var side = 0
        while (side + 1) * (side + 1) <= rows { side += 1 }
        guard tableShape.last == dim, side * side == rows, rows > 0 else {
            throw .weightShape(path: weights.path, name: Self.positionTable,
                               expected: [1, config.posEmbedMaxSize * config.posEmbedMaxSize, dim], found: tableShape)
        }
        positionTableSide = side
        timeText = try TimeTextEmbedding(weights, dim: dim, pooled: config.pooledProjectionDim, guidance: false)
        contextEmbedder = try Linear(weights, "context_embedder", inputs: config.jointAttentionDim, outputs: dim)
        var blocks: [SD3JointBlock] = []
        for i in 0..<config.numLayers { blocks.append(try SD3JointBlock(weights: weights, index: i)) }
        self.blocks = blocks
        normOut = try Modulation(weights, "norm_out.linear", dim: dim, chunks: 2)
        projOut = try Linear(weights, "proj_out", inputs: dim, outputs: p * p * config.outChannels)
    }

    /// The head count, or an error when the checkpoint does not determine the head size.
    static func heads(_ config: SD3Config, path: String) throws(TransformerError) -> Int {
        guard let heads = config.numAttentionHeads, heads > 0 else {
            throw .badCheckpoint(path: path, reason: "the attention head size is unknown for width \(config.hiddenSize); pass a diffusers config.json")
        }
        return heads
    }

    /// Checks names, shapes against the config and each other, and finiteness (see the protocol).
    public func validate(_ inputs: [String: Tensor], source: String) throws(TransformerError) {
        let c = InputChecker(inputs: inputs, source: source)
        let p = config.patchSize
        let x = try c.require("hidden_states")
        try c.rank(x, "hidden_states", 4, "[batch, \(config.inChannels), height, width]")
        let (b, h, w) = (x.shape[0], x.shape[2], x.shape[3])
        try c.check(b > 0, "hidden_states", "has an empty batch")
        try c.check(x.shape[1] == config.inChannels, "hidden_states",
                    "has \(x.shape[1]) channels (shape \(x.shape)), the model takes \(config.inChannels)")
        try c.check(h > 0 && w > 0 && h % p == 0 && w % p == 0, "hidden_states",
                    "spatial size \(h)×\(w) is not a positive multiple of the patch size \(p)")
        try c.check(h / p <= positionTableSide && w / p <= positionTableSide, "hidden_states",
                    "spatial size \(h)×\(w) is \(h / p)×\(w / p) patches, more than the position table's \(positionTableSide)×\(positionTableSide)")
        let e = try c.require("encoder_hidden_states")
        try c.rank(e, "encoder_hidden_states", 3, "[\(b), tokens, \(config.jointAttentionDim)]")
        try c.check(e.shape[0] == b, "encoder_hidden_states", "has batch \(e.shape[0]), hidden_states has \(b)")
        try c.check(e.shape[1] > 0, "encoder_hidden_states", "has no tokens")
        try c.check(e.shape[2] == config.jointAttentionDim, "encoder_hidden_states",
                    "has width \(e.shape[2]) (shape \(e.shape)), the model takes \(config.jointAttentionDim)")
        let pooled = try c.require("pooled_projections")
        try c.check(pooled.shape == [b, config.pooledProjectionDim], "pooled_projections",
                    "has shape \(pooled.shape), expected [\(b), \(config.pooledProjectionDim)]")
        _ = try c.perSample("timestep", batch: b)
        try c.finite(inputNames)
    }

    /// The forward pass on validated inputs; returns diffusers' `.sample`.
    public func forward(_ inputs: [String: Variable], adapters: LoRAParameters?, in graph: Graph) -> Variable {
        guard let x = inputs["hidden_states"], let e = inputs["encoder_hidden_states"],
              let pooled = inputs["pooled_projections"], let t = inputs["timestep"] else {
            preconditionFailure("SD3Transformer.forward: missing input (call validate first); have \(inputs.keys.sorted())")
        }
        let p = config.patchSize
        let batch = x.shape[0]
        let h = x.shape[2] / p, w = x.shape[3] / p
        // Patch embedding: Conv2d(kernel = stride = p) as patchify + linear, plus the position crop.
        var hidden = patchEmbed(graph.patchify(x, patch: p), adapters, graph)
        hidden = graph.add(hidden, graph.constant(positions(height: h, width: w)))
        let conditioning = timeText(timesteps: perSampleValues(t.value, batch: batch), guidance: nil,
                                    pooled: pooled, adapters, graph)
        var context: Variable? = contextEmbedder(e, adapters, graph)
        for block in blocks {
            guard let c = context else { break }
            (hidden, context) = block.forward(hidden: hidden, context: c, conditioning: conditioning, adapters: adapters, in: graph)
        }
        // AdaLayerNormContinuous: chunks are scale, shift.
        let m = normOut(conditioning, adapters, graph)
        let out = projOut(graph.modulate(graph.layerNorm(hidden, epsilon: 1e-6), shift: m[1], scale: m[0]), adapters, graph)
        return graph.unpatchify(out, height: h, width: w, patch: p, channels: config.outChannels)
    }

    /// The centre crop `[h·w, D]` of the stored position table for an `h × w` patch grid, read
    /// row by row without widening the whole table.
    func positions(height h: Int, width w: Int) -> Tensor {
        var values: [Float] = []
        values.reserveCapacity(h * w * config.hiddenSize)
        for range in Embeddings.cropRanges(side: positionTableSide, height: h, width: w) {
            do {
                values += try weights.rows(of: Self.positionTable, range).scalars
            } catch {
                preconditionFailure("SD3Transformer: reading the position table failed: \(error)")
            }
        }
        return Tensor(shape: [h * w, config.hiddenSize], scalars: values)
    }
}

extension SD3Transformer {
    /// `[in_channels, l, l]`; `l` must be a multiple of the patch size and fit the position table.
    public func sampleShape(latentSize l: Int) throws(TransformerError) -> [Int] {
        let c = config
        guard l % c.patchSize == 0, l / c.patchSize <= c.posEmbedMaxSize else {
            throw .badInput(path: "config", name: "latent_size",
                            reason: "\(l) must be a multiple of the patch size \(c.patchSize) and at most \(c.posEmbedMaxSize * c.patchSize) for this model")
        }
        return [c.inChannels, l, l]
    }

    /// The latents as `hidden_states`, the embeddings, and `timestep` 1000·σ (the scale SD3's
    /// timestep embedding was trained with).
    public func forwardInputs(latents: Tensor, sigmas: [Double], promptEmbeds: Tensor, pooledPromptEmbeds: Tensor,
                              guidance: Double) -> [String: Tensor] {
        ["hidden_states": latents, "encoder_hidden_states": promptEmbeds, "pooled_projections": pooledPromptEmbeds,
         "timestep": Tensor(shape: [sigmas.count], scalars: sigmas.map { Float(1000 * $0) })]
    }
}

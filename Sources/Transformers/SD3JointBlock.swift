import Checkpoints
import TensorRuntime

/// One joint (MMDiT / MMDiT-X) block of an SD3 transformer, as diffusers' `JointTransformerBlock`:
/// adaLN-zero modulation of both streams, joint attention over [image, text] tokens, in dual-attention
/// blocks a second image-only attention `attn2` (its residual added before `norm2`), and GELU-tanh
/// MLPs. The last block of a model is context-pre-only: its text stream is only read (continuous
/// adaLN, no `to_add_out`, no text MLP) and it returns no context; its text queries are not
/// computed, since diffusers discards what they produce.
public final class SD3JointBlock: Sendable {
    /// The block's position in the model.
    public let index: Int
    /// Whether this block has the second image self-attention (`attn2`).
    public let usesDualAttention: Bool
    /// Whether the text stream ends here (the model's last block).
    public let contextPreOnly: Bool

    let dim: Int
    let norm1: Modulation
    let norm1Context: Modulation
    let attn: AttentionLayer
    let attn2: AttentionLayer?
    let ff: FeedForward
    let ffContext: FeedForward?

    static let epsilon: Float = 1e-6

    /// Fetches block `index` of the SD3 model in `weights` (diffusers names
    /// `transformer_blocks.<index>.…`).
    public init(weights: TransformerWeights, index: Int) throws(TransformerError) {
        guard let config = weights.architecture.config.typed(SD3Config.self) else {
            throw .badCheckpoint(path: weights.path, reason: "an SD3 joint block needs an SD3 checkpoint, not \(weights.architecture.family.displayName)")
        }
        guard (0..<config.numLayers).contains(index) else {
            throw .badCheckpoint(path: weights.path, reason: "joint block \(index) does not exist (the model has \(config.numLayers))")
        }
        let heads = try SD3Transformer.heads(config, path: weights.path)
        let dim = config.hiddenSize
        let prefix = "transformer_blocks.\(index)"
        self.index = index
        self.dim = dim
        usesDualAttention = config.dualAttentionLayers.contains(index)
        contextPreOnly = index == config.numLayers - 1
        norm1 = try Modulation(weights, prefix + ".norm1.linear", dim: dim, chunks: usesDualAttention ? 9 : 6)
        norm1Context = try Modulation(weights, prefix + ".norm1_context.linear", dim: dim, chunks: contextPreOnly ? 2 : 6)
        attn = try AttentionLayer(weights, prefix + ".attn", dim: dim, heads: heads, headDim: dim / heads,
                                  qkNorm: config.qkNorm, joint: true, output: true, contextOutput: !contextPreOnly)
        attn2 = usesDualAttention
            ? try AttentionLayer(weights, prefix + ".attn2", dim: dim, heads: heads, headDim: dim / heads,
                                 qkNorm: config.qkNorm, joint: false, output: true, contextOutput: false)
            : nil
        ff = try FeedForward(weights, prefix + ".ff", dim: dim)
        ffContext = contextPreOnly ? nil : try FeedForward(weights, prefix + ".ff_context", dim: dim)
    }

    /// Runs the block: `hidden` image tokens `[B, N, D]`, `context` text tokens `[B, T, D]`,
    /// `conditioning` the timestep + pooled-text embedding `[B, D]` (before SiLU). Returns the new
    /// image tokens and the new text tokens (nil for the context-pre-only last block).
    public func forward(hidden: Variable, context: Variable, conditioning: Variable, adapters: LoRAParameters?,
                        in graph: Graph) -> (hidden: Variable, context: Variable?) {
        let eps = Self.epsilon
        // AdaLayerNormZero / SD35AdaLayerNormZeroX chunks: shift, scale, gate (msa); shift, scale,
        // gate (mlp); [shift, scale, gate (msa2)].
        let m = norm1(conditioning, adapters, graph)
        let normed = graph.layerNorm(hidden, epsilon: eps)
        let attnInput = graph.modulate(normed, shift: m[0], scale: m[1])

        let contextNormed = graph.layerNorm(context, epsilon: eps)
        let c = norm1Context(conditioning, adapters, graph)
        // AdaLayerNormContinuous chunks are scale then shift; AdaLayerNormZero shift then scale.
        let contextInput = contextPreOnly
            ? graph.modulate(contextNormed, shift: c[1], scale: c[0])
            : graph.modulate(contextNormed, shift: c[0], scale: c[1])

        let (attnOut, contextAttnOut) = attn(attnInput, context: contextInput, contextFirst: false, rope: nil,
                                             contextQueries: !contextPreOnly, adapters, graph)
        var x = graph.gatedAdd(hidden, gate: m[2], attnOut)
        if let attn2 {
            let input2 = graph.modulate(normed, shift: m[6], scale: m[7])
            let out2 = attn2(input2, context: nil, contextFirst: false, rope: nil, adapters, graph).main
            x = graph.gatedAdd(x, gate: m[8], out2)
        }
        let mlpInput = graph.modulate(graph.layerNorm(x, epsilon: eps), shift: m[3], scale: m[4])
        x = graph.gatedAdd(x, gate: m[5], ff(mlpInput, adapters, graph))

        guard let ffContext, let contextAttnOut else { return (x, nil) }
        var y = graph.gatedAdd(context, gate: c[2], contextAttnOut)
        let contextMLPInput = graph.modulate(graph.layerNorm(y, epsilon: eps), shift: c[3], scale: c[4])
        y = graph.gatedAdd(y, gate: c[5], ffContext(contextMLPInput, adapters, graph))
        return (x, y)
    }
}

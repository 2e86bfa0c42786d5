import Checkpoints
import TensorRuntime

/// A FLUX double-stream block (diffusers' `FluxTransformerBlock`): adaLN-zero modulation of the
/// image and text streams, joint attention over [text, image] tokens with RMS q/k norms and RoPE,
/// GELU-tanh MLPs on both streams.
public final class FluxDoubleBlock: Sendable {
    /// The block's position among the double blocks.
    public let index: Int
    let norm1: Modulation
    let norm1Context: Modulation
    let attn: AttentionLayer
    let ff: FeedForward
    let ffContext: FeedForward

    /// Fetches `transformer_blocks.<index>` of the FLUX model in `weights`.
    public init(weights: TransformerWeights, index: Int) throws(TransformerError) {
        let config = try FluxTransformer.fluxConfig(weights)
        let dim = config.hiddenSize
        let prefix = "transformer_blocks.\(index)"
        self.index = index
        norm1 = try Modulation(weights, prefix + ".norm1.linear", dim: dim, chunks: 6)
        norm1Context = try Modulation(weights, prefix + ".norm1_context.linear", dim: dim, chunks: 6)
        attn = try AttentionLayer(weights, prefix + ".attn", dim: dim, heads: config.numAttentionHeads,
                                  headDim: config.attentionHeadDim, qkNorm: true, joint: true, output: true, contextOutput: true)
        ff = try FeedForward(weights, prefix + ".ff", dim: dim)
        ffContext = try FeedForward(weights, prefix + ".ff_context", dim: dim)
    }

    /// Runs the block on image tokens `[B, N, D]` and text tokens `[B, T, D]` with conditioning
    /// `[B, D]` (before SiLU) and the RoPE tables of the [text, image] token sequence.
    public func forward(hidden: Variable, context: Variable, conditioning: Variable, rope: (cos: Tensor, sin: Tensor),
                        adapters: LoRAParameters?, in graph: Graph) -> (hidden: Variable, context: Variable) {
        let eps: Float = 1e-6
        let m = norm1(conditioning, adapters, graph)
        let c = norm1Context(conditioning, adapters, graph)
        let x0 = graph.modulate(graph.layerNorm(hidden, epsilon: eps), shift: m[0], scale: m[1])
        let c0 = graph.modulate(graph.layerNorm(context, epsilon: eps), shift: c[0], scale: c[1])
        let (attnOut, contextAttnOut) = attn(x0, context: c0, contextFirst: true, rope: rope, adapters, graph)

        var x = graph.gatedAdd(hidden, gate: m[2], attnOut)
        let x1 = graph.modulate(graph.layerNorm(x, epsilon: eps), shift: m[3], scale: m[4])
        x = graph.gatedAdd(x, gate: m[5], ff(x1, adapters, graph))

        var y = graph.gatedAdd(context, gate: c[2], contextAttnOut!)
        let y1 = graph.modulate(graph.layerNorm(y, epsilon: eps), shift: c[3], scale: c[4])
        y = graph.gatedAdd(y, gate: c[5], ffContext(y1, adapters, graph))
        return (x, y)
    }
}

/// A FLUX single-stream block (diffusers' `FluxSingleTransformerBlock`) on the concatenated
/// [text, image] tokens: one adaLN modulation (shift, scale, gate), attention (no output
/// projection) and a GELU-tanh MLP in parallel, their outputs concatenated on the feature axis
/// into `proj_out`, gated residual.
public final class FluxSingleBlock: Sendable {
    /// The block's position among the single blocks.
    public let index: Int
    let norm: Modulation
    let attn: AttentionLayer
    let projMLP: Linear
    let projOut: Linear

    /// Fetches `single_transformer_blocks.<index>` of the FLUX model in `weights`.
    public init(weights: TransformerWeights, index: Int) throws(TransformerError) {
        let config = try FluxTransformer.fluxConfig(weights)
        let dim = config.hiddenSize
        let prefix = "single_transformer_blocks.\(index)"
        self.index = index
        norm = try Modulation(weights, prefix + ".norm.linear", dim: dim, chunks: 3)
        attn = try AttentionLayer(weights, prefix + ".attn", dim: dim, heads: config.numAttentionHeads,
                                  headDim: config.attentionHeadDim, qkNorm: true, joint: false, output: false, contextOutput: false)
        projMLP = try Linear(weights, prefix + ".proj_mlp", inputs: dim)
        projOut = try Linear(weights, prefix + ".proj_out", inputs: dim + projMLP.outputs, outputs: dim)
    }

    /// Runs the block on the joint sequence `[B, T+N, D]` (text first).
    public func forward(_ tokens: Variable, conditioning: Variable, rope: (cos: Tensor, sin: Tensor),
                        adapters: LoRAParameters?, in graph: Graph) -> Variable {
        let m = norm(conditioning, adapters, graph)
        let normed = graph.modulate(graph.layerNorm(tokens, epsilon: 1e-6), shift: m[0], scale: m[1])
        let mlp = graph.gelu(projMLP(normed, adapters, graph))
        let attnOut = attn(normed, context: nil, contextFirst: true, rope: rope, adapters, graph).main
        let joined = graph.concat([attnOut, mlp], axis: 2)
        return graph.gatedAdd(tokens, gate: m[2], projOut(joined, adapters, graph))
    }
}

import Checkpoints
import TensorRuntime

/// Either transformer family behind one interface: what a command, a benchmark or a trainer needs
/// to run a model without knowing which one it is.
public protocol DiffusionTransformer: AnyObject {
    /// The architecture (family and sizes) of the loaded weights.
    var architecture: Architecture { get }
    /// Names of the forward inputs (diffusers' argument names) this model takes.
    var inputNames: [String] { get }
    /// Checks that every input is present, that shapes agree with the config and with each other,
    /// and that values are finite. Errors are `TransformerError.badInput` naming `source` (the
    /// input file) and the input. Tensors with other names are ignored.
    func validate(_ inputs: [String: Tensor], source: String) throws(TransformerError)
    /// The forward pass on validated inputs keyed by diffusers' argument names (variables, so that
    /// input gradients are possible). Returns diffusers' `.sample`.
    func forward(_ inputs: [String: Variable], adapters: LoRAParameters?, in graph: Graph) -> Variable
    /// The shape of one sample's latents (without the batch dimension) for a square latent image
    /// `latentSize` latent pixels wide. Throws `TransformerError.badInput` named `latent_size`
    /// (path `config`) when the model cannot take that size.
    func sampleShape(latentSize: Int) throws(TransformerError) -> [Int]
    /// The forward inputs, keyed by diffusers' argument names, for latents `[B] + sampleShape` at
    /// noise levels `sigmas` (one per sample, σ ∈ [0, 1]), token embeddings `promptEmbeds`
    /// `[B, T, joint_attention_dim]`, pooled embeddings `pooledPromptEmbeds` `[B, pooled]`, and
    /// distilled-guidance scale `guidance` (read only by models with a guidance embedder). Each
    /// model builds what it needs: its timestep scale, position ids, guidance.
    func forwardInputs(latents: Tensor, sigmas: [Double], promptEmbeds: Tensor, pooledPromptEmbeds: Tensor,
                       guidance: Double) -> [String: Tensor]
}

extension DiffusionTransformer {
    /// One forward pass without gradients on plain tensors (validated first): the output sample.
    public func sample(_ inputs: [String: Tensor], adapters: LoRAParameters? = nil, threads: Int = 1,
                       source: String = "(memory)") throws(TransformerError) -> Tensor {
        try validate(inputs, source: source)
        let graph = Graph(threads: threads, recordsGradients: false)
        var variables: [String: Variable] = [:]
        for name in inputNames { if let t = inputs[name] { variables[name] = graph.constant(t) } }
        return forward(variables, adapters: adapters, in: graph).value
    }
}

/// The runtime's half of a model family (the checkpoint side is `ModelFamily`): how to build the
/// model from weights. A struct holding one closure rather than a protocol: building is the only
/// thing the runtime needs per family, and everything else (input building, validation) the
/// model answers itself.
public struct TransformerFamily: Sendable {
    /// The family whose weights `build` takes.
    public let family: ModelFamily
    /// Builds the model from weights of `family`, fetching every weight once.
    public let build: @Sendable (TransformerWeights) throws(TransformerError) -> any DiffusionTransformer

    /// A runtime for `family`.
    public init(family: ModelFamily,
                build: @escaping @Sendable (TransformerWeights) throws(TransformerError) -> any DiffusionTransformer) {
        self.family = family
        self.build = build
    }

    /// SD3 (`SD3Transformer`).
    public static let sd3 = TransformerFamily(family: .sd3) { weights throws(TransformerError) in try SD3Transformer(weights: weights) }
    /// FLUX (`FluxTransformer`).
    public static let flux = TransformerFamily(family: .flux) { weights throws(TransformerError) in try FluxTransformer(weights: weights) }
    /// The runtimes FlowGuard ships: SD3 and FLUX.
    public static let builtIn: [TransformerFamily] = [.sd3, .flux]
}

/// Builds the model matching a checkpoint's architecture.
public enum TransformerModel {
    /// The transformer for `weights`, built by the runtime of its family among `families`, with
    /// every weight fetched once (half-precision matrices stay in their stored precision). Throws
    /// `.badCheckpoint` when no runtime of `families` takes the family.
    public static func load(_ weights: TransformerWeights,
                            families: [TransformerFamily] = TransformerFamily.builtIn) throws(TransformerError) -> any DiffusionTransformer {
        let family = weights.architecture.family
        guard let runtime = families.first(where: { $0.family == family }) else {
            throw .badCheckpoint(path: weights.path, reason: "FlowGuard cannot run \(family.transformerPhrase)")
        }
        return try runtime.build(weights)
    }
}

/// The SD3 or FLUX transformer for `weights` (same as `TransformerModel.load(_:)`).
public func loadTransformer(_ weights: TransformerWeights) throws(TransformerError) -> any DiffusionTransformer {
    try TransformerModel.load(weights)
}

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

/// Builds the model matching a checkpoint's architecture.
public enum TransformerModel {
    /// The SD3 or FLUX transformer for `weights`, with every weight fetched once (half-precision
    /// matrices stay in their stored precision).
    public static func load(_ weights: TransformerWeights) throws(TransformerError) -> any DiffusionTransformer {
        switch weights.architecture.config {
        case .sd3: return try SD3Transformer(weights: weights)
        case .flux: return try FluxTransformer(weights: weights)
        }
    }
}

/// The SD3 or FLUX transformer for `weights` (same as `TransformerModel.load(_:)`).
public func loadTransformer(_ weights: TransformerWeights) throws(TransformerError) -> any DiffusionTransformer {
    try TransformerModel.load(weights)
}

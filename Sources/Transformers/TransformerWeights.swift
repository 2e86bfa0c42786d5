import Checkpoints
import SafeTensors
import TensorRuntime

/// The frozen weights of a transformer, addressed by their diffusers names (without any
/// `transformer.` prefix), whatever layout and dtype they are stored in. A class: it owns the
/// mapped checkpoint files that half-precision weights point into.
public final class TransformerWeights: @unchecked Sendable {
    // @unchecked: every stored property is immutable after init; mapped files are read-only.

    /// The architecture (family and config) the weights belong to.
    public let architecture: Architecture
    /// The layout the checkpoint was stored in.
    public let sourceLayout: KeyLayout
    /// Where the weights were read from ("(memory)" for `init(tensors:architecture:)`).
    public let path: String
    /// Sentences about configuration values that were assumed (an SD3 head size of 64 when the
    /// checkpoint has no q/k norm weights and no `config.json` was given) or that neither the
    /// weights nor a configuration determine (FLUX RoPE axes for heads other than 128); empty
    /// when everything came from the weights or a configuration file. Reading weights never
    /// needs these values; a model that does refuses to run without them.
    public let notes: [String]
    /// The `config.json` whose values were used, if any.
    public let configPath: String?

    /// diffusers name → where its values are.
    let table: [String: StoredWeight]
    /// Every diffusers name, in layout-table order (sorted for in-memory weights).
    public let names: [String]

    /// Opens a checkpoint: a `.safetensors` file, a sharded index, or a folder (diffusers model
    /// folder with `config.json`, or shards). Original (SAI/BFL/ComfyUI) or diffusers layout;
    /// any stored float dtype. `config` (a diffusers `config.json` path) overrides what the
    /// weights determine; without it a folder's `config.json` is used when present.
    public init(path: String, configPath: String? = nil) throws(TransformerError) {
        let opened = try OpenedCheckpoint(path: path, configPath: configPath)
        self.path = path
        architecture = opened.architecture
        sourceLayout = opened.layout
        notes = opened.notes
        self.configPath = opened.configPath
        table = opened.table
        names = opened.names
    }

    /// Weights held in memory by diffusers name (tests and benchmarks).
    public init(tensors: [String: Tensor], architecture: Architecture) throws(TransformerError) {
        path = "(memory)"
        self.architecture = architecture
        sourceLayout = .diffusers
        notes = []
        configPath = nil
        var table: [String: StoredWeight] = [:]
        for (name, tensor) in tensors {
            table[name] = StoredWeight(shape: tensor.shape, storage: .memory(WeightStorage(copying: tensor.scalars)))
        }
        self.table = table
        names = tensors.keys.sorted()
    }

    /// These weights with some tensors replaced by in-memory values (adapters merged exactly at
    /// load: LoKr, LoHa, full deltas, DoRA). Shapes may differ from the stored ones (a widened
    /// input projection).
    public init(replacing base: TransformerWeights, with overrides: [String: Tensor]) {
        path = base.path
        architecture = base.architecture
        sourceLayout = base.sourceLayout
        notes = base.notes
        configPath = base.configPath
        var table = base.table
        for (name, tensor) in overrides {
            table[name] = StoredWeight(shape: tensor.shape, storage: .memory(WeightStorage(copying: tensor.scalars)))
        }
        self.table = table
        names = base.names
    }

    /// Whether a diffusers-named tensor exists.
    public func contains(_ name: String) -> Bool { table[name] != nil }

    /// The shape of a diffusers-named tensor.
    public func shape(of name: String) throws(TransformerError) -> [Int] { try stored(name).shape }

    /// The stored element type of a diffusers-named tensor (`F32` for in-memory weights).
    public func dtype(of name: String) throws(TransformerError) -> DType { try stored(name).dtype }

    /// A 2-d weight (`[out, in]`), kept in its stored form when that is f32, bf16, f16, GGUF
    /// blocks (Q8_0, Q4_0…Q5_1, Q2_K…Q6_K) or ComfyUI scaled fp8: the runtime decodes blocks and
    /// scaled fp8 panel by panel where a product uses them, with the decoder eager reading uses.
    ///
    /// A single contiguous stored range (a whole tensor, or a run of rows of a fused one) is
    /// returned without copying, pointing into the mapped file; a weight assembled from several
    /// ranges (swapped modulation halves) is one owned copy in its stored form. Unscaled 8-bit
    /// and smaller floats become an owned bfloat16 copy (exact); `F64` an owned float32 copy.
    /// Tensors of rank above 2 (convolution kernels) are seen as `[shape[0], rest]`.
    public func matrix(_ name: String) throws(TransformerError) -> WeightMatrix {
        try stored(name).matrix(name: name, checkpoint: path)
    }

    /// Any tensor widened to Float32 (biases, norm weights, position tables, conv kernels).
    public func tensor(_ name: String) throws(TransformerError) -> Tensor {
        let weight = try stored(name)
        return Tensor(shape: weight.shape, scalars: try weight.floats(elements: 0..<weight.elementCount))
    }

    /// Rows `range` of a tensor viewed as a matrix [product of all but the last dim, last dim], widened to Float32 (shape [range.count, last]).
    public func rows(of name: String, _ range: Range<Int>) throws(TransformerError) -> Tensor {
        let weight = try stored(name)
        let columns = weight.shape.last ?? 1
        let rowCount = columns == 0 ? 0 : weight.elementCount / columns
        guard range.lowerBound >= 0, range.upperBound <= rowCount else {
            let at = weight.location
            throw .badWeight(file: at.file, tensor: at.tensor, offset: at.offset,
                             reason: "rows \(range.lowerBound)..<\(range.upperBound) asked of \"\(name)\", "
                                 + "which holds \(rowCount) rows of \(columns) (shape \(weight.shape))")
        }
        let values = try weight.floats(elements: (range.lowerBound * columns)..<(range.upperBound * columns))
        return Tensor(shape: [range.count, columns], scalars: values)
    }

    /// The stored weight called `name`, or `missingWeight`.
    func stored(_ name: String) throws(TransformerError) -> StoredWeight {
        guard let weight = table[name] else { throw .missingWeight(path: path, name: name) }
        return weight
    }
}

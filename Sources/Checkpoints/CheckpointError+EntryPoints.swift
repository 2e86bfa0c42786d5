import SafeTensors

// The module's public entry points that read or write files, typed to throw `CheckpointError`:
// a file error from the SafeTensors layer arrives as `CheckpointError.file`, with its own sentence.

extension Converter {
    /// The output description of each planned tensor, in plan order.
    public func outputSpecs() throws(CheckpointError) -> [TensorSpec] {
        try CheckpointError.wrapping { try plannedSpecs() }
    }

    /// Writes the converted checkpoint to `path`: a single `.safetensors` file, or (see
    /// `writesFolder`) a folder holding `diffusion_pytorch_model.safetensors` or its shards and
    /// index, plus `config.json` when the output is in the diffusers layout. `shardSize` limits
    /// each shard's size in bytes. `progress(bytesDone, bytesTotal)` reports tensor data written.
    /// Refuses to overwrite the input; on any failure nothing new is left at `path`.
    @discardableResult
    public func write(to path: String, shardSize: Int? = nil,
                      progress: ((Int, Int) -> Void)? = nil) throws(CheckpointError) -> ConversionResult {
        try CheckpointError.wrapping { try writeFiles(to: path, shardSize: shardSize, progress: progress) }
    }
}

extension CheckpointDiff {
    /// Compares `a` with `b`. Throws `CheckpointError` when `mapLayouts` is asked for and either
    /// side is not a recognisable transformer, or `.file` when a tensor cannot be read.
    /// `progress(bytesDone, bytesTotal)` counts A's bytes.
    public static func compare(_ a: TensorCollection, _ b: TensorCollection, options: Options = Options(),
                               progress: ((Int, Int) -> Void)? = nil) throws(CheckpointError) -> CheckpointDiff {
        try CheckpointError.wrapping { try compareFiles(a, b, options: options, progress: progress) }
    }
}

extension SyntheticWriter {
    /// Writes a synthetic checkpoint of `architecture` in `layout` and `dtype` (a floating-point
    /// kind, else `CheckpointError.notFloatingPoint`) to `path`: a `.safetensors` file for the
    /// original layout; for the diffusers layout a folder (created if missing) holding
    /// `diffusion_pytorch_model.safetensors` (or shards and their index) and `config.json`. Each
    /// file appears atomically. `progress(bytesDone, bytesTotal)` is called after each tensor.
    public static func write(architecture: Architecture, layout: KeyLayout, dtype: DType, to path: String,
                             options: SyntheticOptions = SyntheticOptions(),
                             progress: ((Int, Int) -> Void)? = nil) throws(CheckpointError) -> SyntheticResult {
        guard FloatCodec.canEncode(dtype) else { throw .notFloatingPoint(file: path, dtype: dtype, writing: "random values") }
        return try CheckpointError.wrapping {
            try writeFiles(architecture: architecture, layout: layout, dtype: dtype, to: path, options: options, progress: progress)
        }
    }
}

import SafeTensors
import SystemSupport

/// How a synthetic checkpoint's values are drawn.
public struct SyntheticOptions: Sendable, Hashable {
    /// The shape of the value distribution.
    public enum Distribution: String, Sendable, Hashable, CaseIterable {
        /// Approximately N(0, scale²): the sum of four uniforms (Irwin–Hall), rescaled to unit
        /// variance; bounded at ±3.46·scale, which is what keeps it cheap.
        case normal
        /// Uniform on [−√3·scale, √3·scale] (standard deviation `scale`).
        case uniform
    }

    /// Seed of the generator: the same seed gives the same values.
    public var seed: UInt64
    /// Standard deviation of the values.
    public var scale: Float
    /// The distribution.
    public var distribution: Distribution
    /// Key prefix of an original-layout output; nil: `model.diffusion_model.` for SD3, none for FLUX.
    public var prefix: KeyPrefix?
    /// Largest shard of a diffusers-layout output (diffusers' default, 10 GB).
    public var maxShardBytes: Int
    /// `__metadata__` written into every file.
    public var metadata: [String: String]?

    /// Creates options; defaults: seed 0, scale 0.02, normal, 10 GB shards, `{"format": "pt"}`.
    public init(seed: UInt64 = 0, scale: Float = 0.02, distribution: Distribution = .normal, prefix: KeyPrefix? = nil,
                maxShardBytes: Int = 10_000_000_000, metadata: [String: String]? = ["format": "pt"]) {
        self.seed = seed
        self.scale = scale
        self.distribution = distribution
        self.prefix = prefix
        self.maxShardBytes = maxShardBytes
        self.metadata = metadata
    }
}

/// What `SyntheticWriter.write` produced.
public struct SyntheticResult: Sendable, Hashable {
    /// The architecture's name ("SD3.5 Medium", "FLUX.1-dev", "SD3-style", ...).
    public var architecture: String
    /// The key layout written.
    public var layout: KeyLayout
    /// The dtype of every tensor.
    public var dtype: DType
    /// Number of tensors written.
    public var tensorCount: Int
    /// Number of values written.
    public var parameterCount: Int
    /// Bytes of tensor data written (headers excluded).
    public var dataBytes: Int
    /// Every file written: the `.safetensors` file(s), then the index and `config.json` if any.
    public var paths: [String]
    /// Values clamped to the dtype's range (F8_E4M3 saturates at ±448).
    public var report: ConversionReport
}

/// Writes full-size checkpoints of random values with the exact names and shapes of a real model
/// (see `Architecture.syntheticSpecs`), for benchmarks and tests that need a 24 GB FLUX file
/// without downloading one. Memory stays bounded (one ≤ 16 MB value buffer and the writer's
/// buffer) and the values are generated about as fast as a disk takes them.
///
/// Values are defined on the original layout: element i of original tensor T is a pure function of
/// (seed, T's unprefixed name, i). The diffusers layout is written through the conversion plan
/// from that original checkpoint, so the two layouts of one seed hold the same numbers and
/// `CheckpointDiff` with `mapLayouts` finds them identical.
public enum SyntheticWriter {
    /// Largest number of values generated at once (16 MB of Float).
    public static let bufferElements = 4 << 20

    /// The plan that produces `layout`'s tensors from the canonical (unprefixed original) tensors.
    public static func plan(_ architecture: Architecture, layout: KeyLayout, prefix: KeyPrefix? = nil) -> ConversionPlan {
        let canonical = DetectedCheckpoint(architecture: architecture, layout: .original, prefix: .none)
        return ConversionPlan(source: canonical, to: layout,
                              prefix: layout == .original ? (prefix ?? .defaultOriginal(for: architecture.family)) : nil)
    }

    /// The specs written for `layout` (names and shapes equal `syntheticSpecs(layout:dtype:prefix:)`).
    public static func specs(_ architecture: Architecture, layout: KeyLayout, dtype: DType, prefix: KeyPrefix? = nil) -> [TensorSpec] {
        plan(architecture, layout: layout, prefix: prefix).outputs.map { TensorSpec(name: $0.name, dtype: dtype, shape: $0.shape) }
    }

    /// Writes a synthetic checkpoint of `architecture` in `layout` and `dtype` (a floating-point
    /// kind) to `path`: a `.safetensors` file for the original layout; for the diffusers layout a
    /// folder holding `diffusion_pytorch_model.safetensors` (or shards and their index) and
    /// `config.json`, staged beside `path` and put in place whole (replacing a folder there).
    /// `progress(bytesDone, bytesTotal)` is called after each tensor.
    static func writeFiles(architecture: Architecture, layout: KeyLayout, dtype: DType, to path: String,
                             options: SyntheticOptions = SyntheticOptions(),
                             progress: ((Int, Int) -> Void)? = nil) throws -> SyntheticResult {
        guard FloatCodec.canEncode(dtype) else {
            throw SafeTensorsError.conversion(file: path, tensor: "*", reason: "cannot write random values as \(dtype.rawValue): not a floating-point dtype")
        }
        let plan = plan(architecture, layout: layout, prefix: options.prefix)
        let specs = plan.outputs.map { TensorSpec(name: $0.name, dtype: dtype, shape: $0.shape) }
        let planned = Dictionary(uniqueKeysWithValues: plan.outputs.map { ($0.name, $0) })
        let sourceShapes = Dictionary(uniqueKeysWithValues: architecture.expectedTensors(layout: .original, prefix: KeyPrefix.none)
            .map { ($0.name, $0.shape) })
        let largest = specs.map { $0.elementCount ?? 0 }.max() ?? 0
        let generator = ValueGenerator(seed: options.seed, scale: options.scale, distribution: options.distribution)
        var report = ConversionReport()
        let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(8, min(bufferElements, largest)))
        defer { buffer.deallocate() }

        let produce: (TensorSink) throws -> Void = { sink in
            guard let tensor = planned[sink.info.name] else { return }
            let count = sink.info.elementCount
            var position = 0
            while position < count {
                let n = min(buffer.count, count - position)
                let part = UnsafeMutableBufferPointer(rebasing: buffer[0..<n])
                fill(tensor, elements: position..<(position + n), sourceShapes: sourceShapes, generator: generator, into: part)
                report.merge(try sink.write(floats: UnsafeBufferPointer(part)))
                position += n
            }
        }

        var paths: [String]
        switch layout {
        case .original:
            try SafeTensorsWriter.write(to: path, specs: specs, metadata: options.metadata, progress: progress, produce: produce)
            paths = [path]
        case .diffusers:
            let folder: AtomicFolder
            do { folder = try AtomicFolder(destination: path, placement: .replace()) } catch { throw SafeTensorsError.system(error) }
            var names = try ShardedWriter.write(folder: folder.stagingPath, baseName: "diffusion_pytorch_model", specs: specs,
                                                metadata: options.metadata, maxShardBytes: options.maxShardBytes,
                                                progress: progress, produce: produce).map(FileSystem.lastComponent(of:))
            do {
                let config = try AtomicFile(destination: folder.stagingPath + "/config.json")
                try config.write(Array(architecture.diffusersConfigJSON().utf8))
                try config.commit()
                names.append("config.json")
                paths = try folder.commit(order: names)
            } catch { throw SafeTensorsError.system(error) }
        }
        return SyntheticResult(architecture: architecture.name, layout: layout, dtype: dtype, tensorCount: specs.count,
                               parameterCount: specs.reduce(0) { $0 + ($1.elementCount ?? 0) },
                               dataBytes: specs.reduce(0) { $0 + ($1.byteCount ?? 0) }, paths: paths, report: report)
    }

    /// The value of element `index` of canonical (unprefixed original-layout) tensor `tensor`.
    public static func value(tensor: String, index: Int, options: SyntheticOptions = SyntheticOptions()) -> Float {
        let generator = ValueGenerator(seed: options.seed, scale: options.scale, distribution: options.distribution)
        return generator.value(key: generator.key(for: tensor), index: index)
    }

    /// Fills `output` with elements `range` of a planned tensor, walking its source row slices.
    static func fill(_ tensor: PlannedTensor, elements range: Range<Int>, sourceShapes: [String: [Int]],
                     generator: ValueGenerator, into output: UnsafeMutableBufferPointer<Float>) {
        var pieceStart = 0
        var written = 0
        for piece in tensor.pieces {
            let rowElements = (sourceShapes[piece.source] ?? []).dropFirst().reduce(1, *)
            let pieceRange = pieceStart..<(pieceStart + piece.rows.count * rowElements)
            pieceStart = pieceRange.upperBound
            let lo = max(range.lowerBound, pieceRange.lowerBound), hi = min(range.upperBound, pieceRange.upperBound)
            guard lo < hi else { continue }
            let key = generator.key(for: piece.source)
            let first = piece.rows.lowerBound * rowElements + (lo - pieceRange.lowerBound)
            for i in 0..<(hi - lo) { output[written + i] = generator.value(key: key, index: first + i) }
            written += hi - lo
        }
    }
}

/// A counter-based generator: every value is a hash of (seed, tensor, index), so any run of any
/// tensor can be produced independently and in any order (SplitMix64's finaliser as the hash).
struct ValueGenerator: Sendable {
    let seed: UInt64
    let scale: Float
    let distribution: SyntheticOptions.Distribution

    /// SplitMix64's output function: a bijective mix of 64 bits.
    @inline(__always)
    static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// The per-tensor key: the seed mixed with the FNV-1a hash of the name.
    func key(for tensor: String) -> UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in tensor.utf8 { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        return ValueGenerator.mix(seed ^ ValueGenerator.mix(hash))
    }

    @inline(__always)
    func value(key: UInt64, index: Int) -> Float {
        let bits = ValueGenerator.mix(key &+ UInt64(truncatingIfNeeded: index) &* 0x9E37_79B9_7F4A_7C15)
        switch distribution {
        case .normal:
            // Four 16-bit uniforms (k + ½)/65536: their sum has mean 2 and variance 1/3.
            let s = (bits & 0xFFFF) + ((bits >> 16) & 0xFFFF) + ((bits >> 32) & 0xFFFF) + (bits >> 48)
            return (Float(s) - 131_070) * (1.7320508 / 65536) * scale
        case .uniform:
            // 24 bits → (k + ½)/2^24 in (0, 1), centred and widened to unit variance.
            let u = (Float(bits >> 40) + 0.5) * (1.0 / 16_777_216)
            return (u * 2 - 1) * 1.7320508 * scale
        }
    }
}

import SafeTensors

/// A ComfyUI scaled-fp8 weight read as its true values: float(fp8) · scale, per value.
public struct ScaledEncoding: BlockEncoding {
    /// The stored element type (F8_E4M3 or F8_E5M2).
    public let stored: DType
    /// The tensor's `scale_weight` / `weight_scale`.
    public let scale: Float

    /// The stored type and the scale shown: `F8_E4M3×0.0123`.
    public var name: String { "\(stored.rawValue)×scale" }
    /// Bits of the stored type.
    public var bitsPerWeight: Double { Double(stored.bits) }
    /// Always decodable.
    public var isDecodable: Bool { true }
    /// One byte per value for the 8-bit kinds.
    public func rowByteCount(rowLength: Int) -> Int { stored.byteCount(elements: rowLength) ?? rowLength }

    /// float(fp8) · scale, in Float32 (one rounding, as torch's `w.float() * scale`).
    public func decode(_ raw: UnsafeRawBufferPointer, into output: UnsafeMutableBufferPointer<Float>) {
        FloatCodec.decode(stored, from: raw, into: output)
        for i in output.indices { output[i] *= scale }
    }
}

/// ComfyUI's scaled-fp8 checkpoints (`comfy/model_detection.py`, `comfy/ops.py`,
/// `comfy/quant_ops.py`): a `scaled_fp8` marker tensor, fp8 weights with a per-layer F32
/// `<module>.scale_weight` (newer files: `<module>.weight_scale`), and `<module>.scale_input` /
/// `input_scale` activation scales used only at inference. Read as the dequantized weights.
public enum ScaledFP8 {
    /// Key endings of the scales and markers that are not weights.
    static let weightScaleSuffixes = [".scale_weight", ".weight_scale"]
    static let droppedSuffixes = [".scale_input", ".input_scale", ".comfy_quant"]

    /// Whether `infos` are a scaled-fp8 checkpoint.
    public static func isScaled(_ infos: [TensorInfo]) -> Bool {
        infos.contains { $0.name == "scaled_fp8" || $0.name.hasSuffix(".scaled_fp8") || $0.name.hasSuffix(".scale_weight") || $0.name.hasSuffix(".weight_scale") }
    }

    /// The collection with every scaled weight read as float(fp8)·scale (dtype F32; a weight
    /// without a scale has scale 1 and keeps its own dtype), and the marker, weight scales and
    /// activation scales left out, with a note saying so. Unchanged when not scaled fp8.
    public static func dequantized(_ collection: TensorCollection) throws(SafeTensorsError) -> TensorCollection {
        let infos = collection.infos
        guard isScaled(infos) else { return collection }
        var scales: [String: Float] = [:]
        var dropped = 0
        for entry in collection.entries {
            let name = entry.info.name
            guard let suffix = weightScaleSuffixes.first(where: { name.hasSuffix($0) }) else { continue }
            let values = try entry.floats()
            guard values.count == 1, let scale = values.first, scale.isFinite else {
                throw .conversion(file: entry.file.path, tensor: name, reason: "a scaled-fp8 weight scale must be one finite number (found \(values.count) values)")
            }
            scales[String(name.dropLast(suffix.count)) + ".weight"] = scale
        }
        var entries: [TensorEntry] = []
        var scaled = 0
        for entry in collection.entries {
            let name = entry.info.name
            if name == "scaled_fp8" || name.hasSuffix(".scaled_fp8")
                || (weightScaleSuffixes + droppedSuffixes).contains(where: { name.hasSuffix($0) }) {
                dropped += 1
                continue
            }
            if let scale = scales[name] {
                guard entry.isPlain, entry.info.dtype.isFloatingPoint, entry.info.dtype.bits == 8 else {
                    throw .conversion(file: entry.file.path, tensor: name, reason: "has a weight scale but is stored as \(entry.storageName), not fp8")
                }
                var info = entry.info
                info.dtype = .f32
                entries.append(TensorEntry(info: info, file: entry.file, encoding: ScaledEncoding(stored: entry.info.dtype, scale: scale)))
                scaled += 1
            } else {
                entries.append(entry)
            }
        }
        let markers = infos.filter { $0.name == "scaled_fp8" || $0.name.hasSuffix(".scaled_fp8") }.count
        return collection.replacing(entries: entries, note: "\(collection.path) is a scaled-fp8 checkpoint: \(scaled) weights read as float(fp8)·scale; "
                                    + "\(markers > 0 ? "the marker and " : "")\(dropped - markers) scale tensors left out")
    }
}

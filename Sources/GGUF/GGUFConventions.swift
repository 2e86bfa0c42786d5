/// How the GGUF files people share are laid out: city96's (ComfyUI-GGUF `tools/convert.py` plus
/// its patched `llama-quantize`) and stable-diffusion.cpp's.
public enum GGUFConventions {
    /// Tensors with at most this many values stay F32 in city96's files.
    public static let city96SmallTensorLimit = 1024

    /// The prefix stable-diffusion.cpp keeps on transformer tensor names (city96 strips it).
    public static let diffusionModelPrefix = "model.diffusion_model."

    /// The type a tensor of `shape` (row-major) gets when a file of type `requested` is written
    /// the city96 way: 0- and 1-D tensors and tensors of at most 1024 values stay F32; every other
    /// tensor gets a float `requested` type (F32, F16, BF16) as is; a block type goes to 2-D
    /// tensors whose rows are a whole number of its blocks, and the rest get `fallback` (F16,
    /// as city96's converter falls back).
    public static func city96Type(shape: [Int], requested: GGUFType, fallback: GGUFType = .f16) -> GGUFType {
        let elements = shape.reduce(1) { $0.multipliedReportingOverflow(by: $1).overflow ? Int.max : $0 * $1 }
        if shape.count <= 1 || elements <= city96SmallTensorLimit { return .f32 }
        if !requested.isBlockQuantized { return requested }
        if shape.count == 2, let row = shape.last, row % requested.blockSize == 0 { return requested }
        return fallback
    }

    /// llama.cpp's `general.file_type` (`LlamaFileType`) for a file mostly of `type`, for the
    /// types FlowGuard writes.
    public static func llamaFileType(_ type: GGUFType) -> UInt32? {
        switch type {
        case .f32: return 0
        case .f16: return 1
        case .q4_0: return 2
        case .q4_1: return 3
        case .q8_0: return 7
        case .q5_0: return 8
        case .q5_1: return 9
        case .bf16: return 32
        default: return nil
        }
    }

    /// The metadata city96's converter writes, in its order: `general.architecture` (when given;
    /// stable-diffusion.cpp files have none), `general.quantization_version` = 2 and
    /// `general.file_type`.
    public static func city96Metadata(architecture: String?, requested: GGUFType) -> [GGUFMetadataEntry] {
        var entries: [GGUFMetadataEntry] = []
        if let architecture { entries.append(GGUFMetadataEntry(key: "general.architecture", value: .string(architecture))) }
        entries.append(GGUFMetadataEntry(key: "general.quantization_version", value: .uint32(2)))
        if let fileType = llamaFileType(requested) {
            entries.append(GGUFMetadataEntry(key: "general.file_type", value: .uint32(fileType)))
        }
        return entries
    }
}

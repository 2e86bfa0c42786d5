import GGUF
import SafeTensors

extension TensorCollection {
    /// Every checkpoint container FlowGuard reads besides safetensors.
    public static var containerReaders: [any ContainerReader] { [GGUFContainerReader()] }

    /// Opens a checkpoint in any container FlowGuard reads: a `.safetensors` file, a shard index,
    /// a model or pipeline folder, or a GGUF file (city96's or stable-diffusion.cpp's). Tensors
    /// keep their row-major shapes; GGUF block types are read through `TensorEntry.decodeRows`.
    /// A ComfyUI scaled-fp8 file is read as its dequantized weights (see `ScaledFP8`).
    public static func checkpoint(_ path: String) throws(SafeTensorsError) -> TensorCollection {
        try ScaledFP8.dequantized(TensorCollection(path: path, containers: containerReaders))
    }
}

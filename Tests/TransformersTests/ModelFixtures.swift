import Foundation
import SafeTensors
import TensorRuntime
import TestSupport
import Transformers

/// The two tiny reference models under `fixtures/` and their diffusers-computed tensors.
enum ModelFixture: String, CaseIterable {
    case sd35 = "sd35_tiny"
    case flux = "flux_tiny"

    /// A path inside the fixture's folder.
    func path(_ relative: String) -> String { Repository.path("fixtures/\(rawValue)/\(relative)") }

    var diffusersFolder: String { path("diffusers") }
    var configPath: String { path("diffusers/config.json") }
    var loraFile: String { path("lora/pytorch_lora_weights.safetensors") }

    /// Every checkpoint form of the model: (label, path, config override).
    var checkpoints: [(label: String, path: String, config: String?)] {
        var list: [(String, String, String?)] = [
            ("diffusers folder", diffusersFolder, nil),
            ("diffusers shards", path("diffusers_sharded"), nil),
            ("original", path("original.safetensors"), self == .flux ? configPath : nil),
        ]
        if self == .flux { list.append(("original comfy", path("original_comfy.safetensors"), configPath)) }
        return list
    }

    /// Tensors of `io.safetensors`.
    func io() throws -> [String: Tensor] { try Self.readTensors(path("io.safetensors")) }
    /// Tensors of `lora/io_lora.safetensors`.
    func ioLoRA() throws -> [String: Tensor] { try Self.readTensors(path("lora/io_lora.safetensors")) }

    /// Every tensor of a safetensors file, widened to Float32.
    static func readTensors(_ path: String) throws -> [String: Tensor] {
        let file = try SafeTensorsFile(path: path)
        var out: [String: Tensor] = [:]
        for info in file.tensors { out[info.name] = Tensor(shape: info.shape, scalars: try file.floats(of: info)) }
        return out
    }

    /// ‖a − b‖ / ‖b‖ in Float64 (∞ when the shapes differ).
    static func relativeL2(_ a: Tensor, _ b: Tensor) -> Double {
        guard a.shape == b.shape else { return .infinity }
        var diff = 0.0, norm = 0.0
        for (x, y) in zip(a.scalars, b.scalars) {
            diff += Double(x - y) * Double(x - y)
            norm += Double(y) * Double(y)
        }
        return norm == 0 ? diff.squareRoot() : (diff / norm).squareRoot()
    }

    /// The forward inputs a model takes, picked from a fixture's tensors.
    static func inputs(_ model: any DiffusionTransformer, from tensors: [String: Tensor]) -> [String: Tensor] {
        var inputs: [String: Tensor] = [:]
        for name in model.inputNames { inputs[name] = tensors[name] }
        return inputs
    }
}

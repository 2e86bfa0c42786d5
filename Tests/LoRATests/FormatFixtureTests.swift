import Checkpoints
import Foundation
import LoRA
import SafeTensors
import TestSupport

/// The two fixture models and their adapters, shared by the format tests.
enum LoRAFixture: String, CaseIterable, CustomStringConvertible {
    case sd35 = "sd35_tiny"
    case flux = "flux_tiny"

    var description: String { rawValue }
    var diffusersFile: String { Repository.path("fixtures/\(rawValue)/lora/pytorch_lora_weights.safetensors") }
    var peftFolder: String { Repository.path("fixtures/\(rawValue)/lora/peft") }
    var originalCheckpoint: String { Repository.path("fixtures/\(rawValue)/original.safetensors") }
    var configFile: String { Repository.path("fixtures/\(rawValue)/diffusers/config.json") }

    func architecture() throws -> Architecture {
        try Architecture.detect(SafeTensorsFile(path: originalCheckpoint).tensors).architecture
    }
}

/// Largest |a−b| over the union of base weights, relative to the largest |a|.
func maxRelativeDifference(_ a: [String: Matrix], _ b: [String: Matrix]) -> Float {
    var worst: Float = 0
    var scale: Float = 0
    for (_, m) in a { scale = max(scale, m.values.map(abs).max() ?? 0) }
    for key in Set(a.keys).union(b.keys) {
        guard let x = a[key], let y = b[key], x.shape == y.shape else { return .infinity }
        for (u, v) in zip(x.values, y.values) { worst = max(worst, abs(u - v)) }
    }
    return worst / max(scale, 1e-30)
}

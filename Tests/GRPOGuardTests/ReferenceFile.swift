import Foundation
import SafeTensors
import TensorRuntime
import TestSupport

/// The reference cases written by `tools/reference/make_grpo_reference.py`.
struct ReferenceFile {
    let file: SafeTensorsFile
    let names: Set<String>

    init() throws {
        file = try SafeTensorsFile(path: Repository.path("fixtures/grpo_reference/reference.safetensors"))
        names = Set(file.tensors.map(\.name))
    }

    func has(_ name: String) -> Bool { names.contains(name) }

    /// The values of an F64 tensor exactly (F32 tensors are widened).
    func doubles(_ name: String) throws -> [Double] {
        let info = try file.info(name)
        if info.dtype == .f64 {
            let bytes = try file.bytes(of: name)
            return (0..<info.elementCount).map { i in
                var bits: UInt64 = 0
                for j in 0..<8 { bits |= UInt64(bytes[i * 8 + j]) << (8 * UInt64(j)) }
                return Double(bitPattern: bits)
            }
        }
        return try file.floats(of: name).map(Double.init)
    }

    /// A float32 tensor with its shape.
    func tensor(_ name: String) throws -> Tensor {
        let info = try file.info(name)
        return Tensor(shape: info.shape, scalars: try file.floats(of: name))
    }

    func shape(_ name: String) throws -> [Int] { try file.info(name).shape }
}

/// Whether `a` matches `b` to `tolerance`, relative to max(1, |b|).
func close(_ a: Double, _ b: Double, _ tolerance: Double = 1e-6) -> Bool {
    abs(a - b) <= tolerance * max(1, abs(b))
}

/// The largest relative (to max(1, |b|)) difference between two arrays.
func maxError(_ a: [Double], _ b: [Double]) -> Double {
    precondition(a.count == b.count, "maxError: \(a.count) vs \(b.count) values")
    return zip(a, b).map { abs($0 - $1) / max(1, abs($1)) }.max() ?? 0
}

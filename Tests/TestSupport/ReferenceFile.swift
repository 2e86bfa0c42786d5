import Foundation
import SafeTensors
import TensorRuntime
import TestSupport

/// The FlowMatching/GRPO-Guard reference cases written by `tools/reference/make_grpo_reference.py`.
public struct ReferenceFile {
    public let file: SafeTensorsFile
    public let names: Set<String>

    /// Opens `fixtures/grpo_reference/reference.safetensors`.
    public init() throws {
        file = try SafeTensorsFile(path: Repository.path("fixtures/grpo_reference/reference.safetensors"))
        names = Set(file.tensors.map(\.name))
    }

    /// Whether the file holds `name`.
    public func has(_ name: String) -> Bool { names.contains(name) }

    /// The values of an F64 tensor exactly (F32 tensors are widened).
    public func doubles(_ name: String) throws -> [Double] {
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
    public func tensor(_ name: String) throws -> Tensor {
        let info = try file.info(name)
        return Tensor(shape: info.shape, scalars: try file.floats(of: name))
    }

    /// The shape of `name`.
    public func shape(_ name: String) throws -> [Int] { try file.info(name).shape }
}

/// Whether `a` matches `b` to `tolerance`, relative to max(1, |b|).
public func isClose(_ a: Double, _ b: Double, _ tolerance: Double = 1e-6) -> Bool {
    abs(a - b) <= tolerance * max(1, abs(b))
}

/// The largest relative (to max(1, |b|)) difference between two arrays.
public func maxError(_ a: [Double], _ b: [Double]) -> Double {
    precondition(a.count == b.count, "maxError: \(a.count) vs \(b.count) values")
    return zip(a, b).map { abs($0 - $1) / max(1, abs($1)) }.max() ?? 0
}

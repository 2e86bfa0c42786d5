import Foundation
import TensorRuntime

/// A deterministic, counter-based generator of standard-normal numbers: the k-th draw depends
/// only on the seed and k, so its whole state is two integers (`state`) and a run resumes exactly
/// from them. Draw k uses two SplitMix64 outputs of the seeded stream as uniforms and the
/// Box–Muller transform (cosine branch). Not cryptographic.
public struct GaussianGenerator: Sendable, Equatable {
    /// The seed the stream was created with.
    public let seed: UInt64
    /// The number of normal values drawn so far.
    public private(set) var counter: UInt64

    /// A generator at the start (or at draw `counter`) of the stream for `seed`.
    public init(seed: UInt64, counter: UInt64 = 0) {
        self.seed = seed
        self.counter = counter
    }

    /// The generator's complete state, `[seed, counter]`, for checkpoints.
    public var state: [UInt64] { [seed, counter] }

    /// A generator restored from `state` (as returned by `state`); nil if it is malformed.
    public init?(state: [UInt64]) {
        guard state.count == 2 else { return nil }
        self.init(seed: state[0], counter: state[1])
    }

    /// The next standard-normal value.
    public mutating func next() -> Double {
        let value = Self.normal(seed: seed, index: counter)
        counter &+= 1
        return value
    }

    /// A tensor of `shape` filled with the next draws in row-major order (rounded to `Float`).
    public mutating func tensor(shape: [Int]) -> Tensor {
        let count = shape.reduce(1, *)
        var values = [Float](repeating: 0, count: count)
        for i in 0..<count { values[i] = Float(next()) }
        return Tensor(shape: shape, scalars: values)
    }

    /// The normal value at position `index` of the stream for `seed`.
    static func normal(seed: UInt64, index: UInt64) -> Double {
        let base = mix(seed ^ 0x6A09_E667_F3BC_C909)
        let a = mix(base &+ (2 &* index &+ 1) &* 0x9E37_79B9_7F4A_7C15)
        let b = mix(base &+ (2 &* index &+ 2) &* 0x9E37_79B9_7F4A_7C15)
        // u1 in (0, 1] so the logarithm is finite; u2 in [0, 1).
        let u1 = (Double(a >> 11) + 1) * 0x1p-53
        let u2 = Double(b >> 11) * 0x1p-53
        return (-2 * Foundation.log(u1)).squareRoot() * Foundation.cos(2 * Double.pi * u2)
    }

    /// The SplitMix64 output function (a bijective 64-bit mixer).
    static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

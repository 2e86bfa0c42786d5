/// Internal helpers to build tensors without a zero fill and to reach their storage.
extension Tensor {
    /// A tensor of `shape` whose values are all written by `fill` (the memory starts
    /// uninitialised; `fill` must write every one of the `count` values).
    static func uninitialized(_ shape: [Int], _ fill: (UnsafeMutablePointer<Float>) -> Void) -> Tensor {
        let count = shape.reduce(1, *)
        let scalars = [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            if count > 0 { fill(buffer.baseAddress!) }
            initialized = count
        }
        return Tensor(shape: shape, scalars: scalars)
    }

    /// Calls `body` with the address of the values (a valid, never dereferenced address when
    /// the tensor is empty).
    @inline(__always) func withPointer<R>(_ body: (UnsafePointer<Float>) throws -> R) rethrows -> R {
        try scalars.withUnsafeBufferPointer { try body($0.baseAddress ?? Tensor.emptyAddress) }
    }

    /// Calls `body` with the mutable address of the values.
    @inline(__always) mutating func withMutablePointer<R>(_ body: (UnsafeMutablePointer<Float>) throws -> R) rethrows -> R {
        try scalars.withUnsafeMutableBufferPointer { try body($0.baseAddress ?? UnsafeMutablePointer(mutating: Tensor.emptyAddress)) }
    }

    /// Stands in for the storage of an empty tensor; never read or written.
    static var emptyAddress: UnsafePointer<Float> { UnsafePointer(bitPattern: 64)! }
}

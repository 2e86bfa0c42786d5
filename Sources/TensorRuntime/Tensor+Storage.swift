import SystemSupport

/// Internal helpers to build tensors without a zero fill and to reach their storage.
extension Tensor {
    /// A tensor of `shape` whose values are all written by `fill` (the memory starts
    /// uninitialised; `fill` must write every one of the `count` values).
    static func uninitialized(_ shape: [Int], _ fill: (UnsafeMutablePointer<Float>) -> Void) -> Tensor {
        let count = shape.reduce(1, *)
        let scalars = [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            if count > 0 {
                adviseHugePages(buffer.baseAddress!, count: count)
                fill(buffer.baseAddress!)
            }
            initialized = count
        }
        return Tensor(shape: shape, scalars: scalars)
    }

    /// Values from which a fresh buffer is worth backing with transparent huge pages (2 MB).
    static let hugePageThreshold = 1 << 19

    /// Asks the kernel to back the 2 MB-aligned interior of a fresh, not yet touched buffer of
    /// `count` values with transparent huge pages, for buffers of at least `hugePageThreshold`
    /// values. Memory an activation gets fresh from the kernel (a new mapping, or heap growth)
    /// is otherwise faulted in 4 KB pages, one fault per 1024 values, which costs more than the
    /// elementwise work done on them; with huge pages it is one fault per 512 K values.
    /// Advice only: where the kernel declines, nothing changes.
    static func adviseHugePages(_ p: UnsafeMutablePointer<Float>, count: Int) {
        guard count >= hugePageThreshold else { return }
        MemoryAdvice.useHugePages(UnsafeMutableRawPointer(p), byteCount: count * MemoryLayout<Float>.stride)
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

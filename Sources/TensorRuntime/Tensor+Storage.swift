#if canImport(Glibc)
import Glibc
#endif

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
    /// `count` values with transparent huge pages. Memory an activation gets fresh from the
    /// kernel (a new mapping, or heap growth) is otherwise faulted in 4 KB pages, one fault per
    /// 1024 values, which costs more than the elementwise work done on them; with huge pages it
    /// is one fault per 512 K values.
    /// Advice only: where the kernel declines, nothing changes.
    static func adviseHugePages(_ p: UnsafeMutablePointer<Float>, count: Int) {
        #if os(Linux)
        guard count >= hugePageThreshold else { return }
        let huge = 1 << 21
        let start = (Int(bitPattern: p) + huge - 1) & ~(huge - 1)
        let end = (Int(bitPattern: p + count)) & ~(huge - 1)
        // Invariant: [start, end) lies inside the buffer, so the advice touches only its pages.
        if end > start, let address = UnsafeMutableRawPointer(bitPattern: start) {
            _ = madvise(address, end - start, MADV_HUGEPAGE)
        }
        #endif
    }

    /// Keeps freed activation buffers in the process heap for reuse instead of returning them to
    /// the kernel: buffers below 32 MB (glibc's largest allowed threshold) are carved from the
    /// heap rather than mapped, and the heap is never trimmed. A graph allocates and frees
    /// buffers of the same few sizes over and over; without this each one is a fresh mapping
    /// whose pages the kernel must fault in and zero again (a block benchmark's system time
    /// fell from 3.0 s to 1.7 s with these settings).
    /// Process-wide, like OpenBLAS's thread count; idempotent; the heap stays at its peak size.
    static func retainFreedBuffers() {
        #if os(Linux)
        // glibc's mallopt (<malloc.h>, which the Glibc module does not export), looked up by
        // name; its parameter numbers are M_TRIM_THRESHOLD = -1 and M_MMAP_THRESHOLD = -3.
        typealias Mallopt = @convention(c) (Int32, Int32) -> Int32
        guard let symbol = dlsym(nil, "mallopt") else { return }
        let mallopt = unsafeBitCast(symbol, to: Mallopt.self)
        _ = mallopt(-3, 32 << 20)
        _ = mallopt(-1, Int32.max)
        #endif
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

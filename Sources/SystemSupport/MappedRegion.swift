#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The first `count` bytes of an open file mapped read-only (`MAP_SHARED`) and registered with
/// `MappingGuard`, so that a truncation of the file by another process while we read it is a
/// clean error naming the file rather than a crash. Unregistered and unmapped when released:
/// views handed out by `bytes` are valid while the region is alive.
package final class MappedRegion: @unchecked Sendable {
    // @unchecked: the mapping is immutable (PROT_READ) after init and unmapped only in deinit.

    /// The mapped file's path.
    package let path: String
    /// The number of bytes mapped (the whole file when it was mapped).
    package let count: Int
    private let base: UnsafeRawPointer
    private let guardToken: Int

    /// Maps the first `count` (> 0) bytes of `file`. The descriptor may be closed afterwards.
    package init(mapping file: FileDescriptor, count: Int) throws(SystemError) {
        precondition(count > 0, "a mapping needs at least one byte")
        guard let mapped = mmap(nil, count, PROT_READ, MAP_SHARED, file.rawValue, 0), mapped != MAP_FAILED else {
            throw .last(path: file.path, operation: "mmap")
        }
        path = file.path
        self.count = count
        base = UnsafeRawPointer(mapped)
        guardToken = MappingGuard.registerMapping(start: base, length: count, path: file.path)
    }

    deinit {
        MappingGuard.unregisterMapping(guardToken)
        munmap(UnsafeMutableRawPointer(mutating: base), count)
    }

    /// All the mapped bytes. Invariant: `base` maps `count` readable bytes for the lifetime of
    /// self, so the view is valid while the caller holds the region.
    package var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    /// Tells the kernel how bytes `range` will be read (advisory: failures are ignored). The
    /// range is widened down to a page boundary and clipped to the mapping.
    package func advise(_ advice: MappingAdvice, range: Range<Int>) {
        guard !range.isEmpty else { return }
        let page = SystemInfo.pageSize
        let start = max(0, range.lowerBound) / page * page
        let end = min(count, range.upperBound)
        guard end > start else { return }
        // Invariant: [start, end) lies inside the mapping, so the advice concerns only its pages.
        let pointer = UnsafeMutableRawPointer(mutating: base + start)
        switch advice {
        case .sequential: _ = madvise(pointer, end - start, MADV_SEQUENTIAL)
        case .willNeed: _ = madvise(pointer, end - start, MADV_WILLNEED)
        case .populate:
            // MADV_POPULATE_READ (22, Linux 5.14+) faults the range in one call; older kernels
            // reject it and the read simply faults page by page.
            if madvise(pointer, end - start, 22) != 0 { _ = madvise(pointer, end - start, MADV_WILLNEED) }
        case .dontNeed: _ = madvise(pointer, end - start, MADV_DONTNEED)
        }
    }
}

/// How a mapped range is about to be used; see `MappedRegion.advise`.
package enum MappingAdvice: Sendable {
    /// Read front to back: read ahead aggressively.
    case sequential
    /// Start reading this range in the background now.
    case willNeed
    /// Fault the whole range into the mapping now, in one call.
    case populate
    /// The range is no longer needed; its pages may be dropped from this mapping.
    case dontNeed
}

/// Memory advice for buffers this process allocated itself.
package enum MemoryAdvice {
    /// Asks the kernel to back the 2 MB-aligned interior of the fresh, not yet touched buffer of
    /// `byteCount` bytes at `start` with transparent huge pages (Linux). Advice only: where the
    /// kernel declines, nothing changes.
    package static func useHugePages(_ start: UnsafeMutableRawPointer, byteCount: Int) {
        #if os(Linux)
        let huge = 1 << 21
        let first = (Int(bitPattern: start) + huge - 1) & ~(huge - 1)
        let end = (Int(bitPattern: start) + byteCount) & ~(huge - 1)
        // Invariant: [first, end) lies inside the buffer, so the advice touches only its pages.
        if end > first, let address = UnsafeMutableRawPointer(bitPattern: first) {
            _ = madvise(address, end - first, MADV_HUGEPAGE)
        }
        #endif
    }

    /// Keeps freed buffers below 32 MB (glibc's largest allowed threshold) in the process heap
    /// for reuse instead of returning them to the kernel, and never trims the heap (glibc's
    /// `mallopt`: M_MMAP_THRESHOLD = -3, M_TRIM_THRESHOLD = -1). A graph allocates and frees
    /// buffers of the same few sizes over and over; without this each one is a fresh mapping whose
    /// pages the kernel must fault in and zero again (a block benchmark's system time fell from
    /// 3.0 s to 1.7 s with these settings). Process-wide, like OpenBLAS's thread count;
    /// idempotent; the heap stays at its peak size.
    package static func retainFreedBuffers() {
        #if os(Linux)
        guard let mallopt = DynamicSymbols.mallopt else { return }
        _ = mallopt(-3, 32 << 20)
        _ = mallopt(-1, Int32.max)
        #endif
    }
}

/// Whether `count` bytes at `a` and at `b` are equal (`memcmp`). Both ranges must be readable.
package func bytesEqual(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer, count: Int) -> Bool {
    count == 0 || memcmp(a, b, count) == 0
}

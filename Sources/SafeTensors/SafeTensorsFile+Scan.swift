import Dispatch
import SystemSupport

extension SafeTensorsFile {
    /// Reads every byte of the data buffer front to back and returns a cheap 64-bit checksum
    /// (wrapping sum of little-endian 64-bit words, tail bytes added singly). It proves every
    /// page can be read — a mapping over a file truncated behind our back or an I/O error shows
    /// up here — and is the "full read" the benchmarks time. `progress(done, total)` is called
    /// between chunks.
    public func scanData(chunkBytes: Int = 64 << 20, progress: ((Int, Int) -> Void)? = nil) -> UInt64 {
        let range = header.dataStart..<fileSize
        let chunks = stride(from: range.lowerBound, to: range.upperBound, by: chunkBytes).map {
            $0..<min(range.upperBound, $0 + chunkBytes)
        }
        advise(.sequential, fileRange: range)
        // A second thread reads a few chunks ahead with large pread calls (as dd does), so the
        // disk streams at full speed while this thread sums pages that are already cached.
        // Consumed chunks are dropped from the mapping: a file larger than memory then costs
        // page-cache reclaim only, not the unmapping of our own pages.
        let prefetcher = ChunkPrefetcher(path: path, chunks: chunks, window: 3)
        var sum: UInt64 = 0
        for (i, chunk) in chunks.enumerated() {
            prefetcher?.waitFor(i)
            advise(.populate, fileRange: chunk)
            sum &+= withBytes(fileRange: chunk) { Self.wordSum($0) }
            advise(.dontNeed, fileRange: chunk)
            prefetcher?.consumed(i)
            progress?(chunk.upperBound - range.lowerBound, range.count)
        }
        prefetcher?.finish()
        return sum
    }

    /// Wrapping sum of the buffer as little-endian UInt64 words plus its tail bytes.
    static func wordSum(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        guard let base = bytes.baseAddress else { return 0 }
        let words = bytes.count / 8
        var lanes = SIMD8<UInt64>(repeating: 0)
        var i = 0
        while i + 8 <= words {
            lanes &+= SIMD8<UInt64>(
                base.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self), base.loadUnaligned(fromByteOffset: 8 * i + 8, as: UInt64.self),
                base.loadUnaligned(fromByteOffset: 8 * i + 16, as: UInt64.self), base.loadUnaligned(fromByteOffset: 8 * i + 24, as: UInt64.self),
                base.loadUnaligned(fromByteOffset: 8 * i + 32, as: UInt64.self), base.loadUnaligned(fromByteOffset: 8 * i + 40, as: UInt64.self),
                base.loadUnaligned(fromByteOffset: 8 * i + 48, as: UInt64.self), base.loadUnaligned(fromByteOffset: 8 * i + 56, as: UInt64.self))
            i += 8
        }
        var sum = lanes.wrappedSum()
        while i < words { sum &+= UInt64(littleEndian: base.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self)); i += 1 }
        for j in (words * 8)..<bytes.count { sum &+= UInt64(bytes[j]) }
        return sum
    }
}

/// Reads chunks of a file into the page cache ahead of a consumer, at most `window` chunks
/// ahead, on a background thread.
final class ChunkPrefetcher: @unchecked Sendable {
    // @unchecked: `file` and `chunks` are immutable; coordination is through the semaphores.
    private let file: FileDescriptor
    private let chunks: [Range<Int>]
    private let ready: [DispatchSemaphore]
    private let slots: DispatchSemaphore
    private let done = DispatchSemaphore(value: 0)
    private let stopFlag = UnsafeMutablePointer<Int32>.allocate(capacity: 1)

    init?(path: String, chunks: [Range<Int>], window: Int) {
        guard !chunks.isEmpty, let file = try? FileDescriptor.openForReading(path) else { return nil }
        self.file = file
        self.chunks = chunks
        ready = chunks.map { _ in DispatchSemaphore(value: 0) }
        slots = DispatchSemaphore(value: window)
        stopFlag.initialize(to: 0)
        let thread = DispatchQueue(label: "flowguard.prefetch")
        thread.async { self.run() }
    }

    private func run() {
        let bufferSize = 16 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: bufferSize, alignment: 4096)
        defer { buffer.deallocate(); done.signal() }
        for (i, chunk) in chunks.enumerated() {
            slots.wait()
            // Pages already in the page cache need no reading: a cached file costs only the
            // residency check, an uncached one is streamed in with large reads.
            if stopFlag.pointee == 0 && !file.isResident(chunk) {
                var position = chunk.lowerBound
                while position < chunk.upperBound, stopFlag.pointee == 0 {
                    let step = UnsafeMutableRawBufferPointer(start: buffer, count: min(bufferSize, chunk.upperBound - position))
                    // Errors surface in the consumer's own read.
                    guard let n = try? file.read(into: step, at: position), n > 0 else { break }
                    position += n
                }
            }
            ready[i].signal()
        }
    }

    func waitFor(_ index: Int) { ready[index].wait() }
    func consumed(_ index: Int) { slots.signal() }

    func finish() {
        stopFlag.pointee = 1
        for _ in 0..<chunks.count { slots.signal() }
        done.wait()
        file.close()
        stopFlag.deallocate()
    }
}

extension SafeTensorsFile {
    /// Reads every byte of the data buffer front to back and returns a cheap 64-bit checksum
    /// (wrapping sum of little-endian 64-bit words, tail bytes added singly). It proves every
    /// page can be read — a mapping over a file truncated behind our back or an I/O error shows
    /// up here — and is the "full read" the benchmarks time. `progress(done, total)` is called
    /// between chunks.
    public func scanData(chunkBytes: Int = 64 << 20, progress: ((Int, Int) -> Void)? = nil) -> UInt64 {
        let range = header.dataStart..<fileSize
        var sum: UInt64 = 0
        var position = range.lowerBound
        advise(.sequential, fileRange: range)
        while position < range.upperBound {
            let end = min(range.upperBound, position + chunkBytes)
            // Fault the next chunk in one call while this one is summed.
            if end < range.upperBound { advise(.willNeed, fileRange: end..<min(range.upperBound, end + chunkBytes)) }
            advise(.populate, fileRange: position..<end)
            sum &+= withBytes(fileRange: position..<end) { Self.wordSum($0) }
            position = end
            progress?(position - range.lowerBound, range.count)
        }
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

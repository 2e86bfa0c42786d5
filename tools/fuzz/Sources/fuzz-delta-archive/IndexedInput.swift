import DeltaArchive

/// The second input encoding of the delta-archive target, which lets the fuzzer edit the index
/// directly: `index JSON text, a 0x00 byte, the frames` (the bytes an archive holds from offset
/// 16 up to its index frame). The index is compressed, and both it and the trailer carry
/// checksums, so byte mutations of a real archive almost never reach the index's validation;
/// here the harness builds a well-formed envelope around whatever JSON the fuzzer wrote.
enum IndexedInput {
    /// The archive for `input`, or nil when the input is not in this encoding (no 0x00 byte, or
    /// it starts with the archive magic: such inputs are archives and are used as they are).
    static func archive(from input: UnsafeRawBufferPointer) -> [UInt8]? {
        if input.count >= 8, input.prefix(8).elementsEqual(DeltaArchiveFormat.magic) { return nil }
        guard let split = input.firstIndex(of: 0) else { return nil }
        let json = UnsafeRawBufferPointer(rebasing: input[..<split])
        let frames = UnsafeRawBufferPointer(rebasing: input[(split + 1)...])
        var out: [UInt8] = []
        out.reserveCapacity(input.count + 64)
        out += DeltaArchiveFormat.magic
        appendLE(&out, DeltaArchiveFormat.version)
        appendLE(&out, UInt32(0))
        out += frames
        let indexOffset = out.count
        out += rawFrame(json)
        appendLE(&out, UInt64(indexOffset))
        appendLE(&out, UInt64(out.count - indexOffset))
        appendLE(&out, XXH64.hash(json))
        out += DeltaArchiveFormat.tailMagic
        return out
    }

    /// One zstd frame (RFC 8878) holding `content` in raw blocks: single segment, 8-byte content
    /// size, content checksum (low 32 bits of XXH64), no dictionary.
    static func rawFrame(_ content: UnsafeRawBufferPointer) -> [UInt8] {
        var out: [UInt8] = [0x28, 0xB5, 0x2F, 0xFD, 0xE4]
        appendLE(&out, UInt64(content.count))
        let blockMaximum = 128 << 10
        var start = 0
        repeat {
            let end = min(content.count, start + blockMaximum)
            let last: UInt32 = end == content.count ? 1 : 0
            let header = last | UInt32(end - start) << 3 // Block_Type 0 (raw)
            out += [UInt8(header & 0xFF), UInt8(header >> 8 & 0xFF), UInt8(header >> 16 & 0xFF)]
            out += content[start..<end]
            start = end
        } while start < content.count
        appendLE(&out, UInt32(truncatingIfNeeded: XXH64.hash(content)))
        return out
    }

    private static func appendLE<T: FixedWidthInteger>(_ out: inout [UInt8], _ value: T) {
        withUnsafeBytes(of: value.littleEndian) { out += $0 }
    }
}

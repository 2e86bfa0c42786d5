import JSON
import SafeTensors

/// The fixed parts of the `.fgdelta` layout (see `docs/delta-archive.md`).
public enum DeltaArchiveFormat {
    /// The first 8 bytes of every archive.
    public static let magic: [UInt8] = Array("FGDELTA\u{0}".utf8)
    /// The last 8 bytes of every archive.
    public static let tailMagic: [UInt8] = Array("FGDTAIL\u{0}".utf8)
    /// The format version written and read.
    public static let version: UInt32 = 1
    /// Bytes before the first frame: magic, u32 version, u32 flags.
    public static let preambleSize = 16
    /// Bytes of the trailer: u64 index offset, u64 index length, u64 XXH64 of the index, tail magic.
    public static let trailerSize = 32
    /// The raw bytes per chunk written by default.
    public static let defaultChunkSize = 4 << 20
    /// The chunk sizes a reader accepts.
    public static let chunkSizes: ClosedRange<Int> = 4096...(64 << 20)
    /// The largest index a reader accepts.
    public static let maximumIndexLength = 256 << 20
    /// The largest source header (8 + the safetensors header limit).
    public static let maximumSourceHeader = 8 + 100_000_000
}

/// How a chunk's raw bytes were transformed before zstd.
public enum DeltaCodec: String, Sendable, Hashable {
    /// One zstd frame (with content size and content checksum) per chunk.
    case zstd
}

/// One independently decodable piece of a tensor: a zstd frame in the archive.
public struct DeltaChunk: Sendable, Hashable {
    /// Absolute byte offset of the frame in the archive.
    public var offset: Int
    /// Length of the frame in bytes.
    public var length: Int
    /// Raw bytes the frame decodes to.
    public var rawLength: Int
    /// XXH64 of the chunk's original tensor bytes (before XOR and byte planes).
    public var hash: UInt64
    /// XXH64 of the reference's bytes for the same range, when the tensor is an XOR delta.
    public var referenceHash: UInt64?

    /// Creates a chunk description.
    public init(offset: Int, length: Int, rawLength: Int, hash: UInt64, referenceHash: UInt64? = nil) {
        self.offset = offset
        self.length = length
        self.rawLength = rawLength
        self.hash = hash
        self.referenceHash = referenceHash
    }
}

/// One tensor of a delta archive: its description in the original file and its frames.
public struct DeltaEntry: Sendable, Hashable {
    /// The tensor's key.
    public var name: String
    /// Element type.
    public var dtype: DType
    /// Row-major shape.
    public var shape: [Int]
    /// Byte range in the original file's data buffer.
    public var dataRange: Range<Int>
    /// The codec of every chunk.
    public var codec: DeltaCodec
    /// Number of byte planes (the element width in bytes), or 0 when the bytes are not regrouped.
    public var bytePlanes: Int
    /// Whether the stored bytes are XOR-ed with the same-named tensor of a reference.
    public var xorReference: Bool
    /// The frames, in order.
    public var chunks: [DeltaChunk]

    /// Raw bytes of the tensor.
    public var byteCount: Int { dataRange.count }
    /// Compressed bytes of the tensor.
    public var compressedCount: Int { chunks.reduce(0) { $0 + $1.length } }
    /// The description as a safetensors `TensorInfo`.
    public var info: TensorInfo { TensorInfo(name: name, dtype: dtype, shape: shape, dataRange: dataRange) }
}

/// The archive index: everything but the frames.
public struct DeltaIndex: Sendable {
    /// Raw bytes per chunk (the last chunk of a tensor may be shorter).
    public var chunkSize: Int
    /// The base model's fingerprint (`BaseFingerprint`), if recorded.
    public var baseFingerprint: String?
    /// The adapter configuration, a JSON text, if recorded.
    public var config: String?
    /// The source file's `__metadata__`, in document order (nil when absent or null).
    public var metadata: [(key: String, value: String)]?
    /// The frame holding the original file's first 8 + N bytes (length field and header, verbatim).
    public var sourceHeader: DeltaChunk
    /// The tensors in the original file's data order.
    public var entries: [DeltaEntry]

    /// The index as compact JSON, members in the documented order.
    public func json() -> JSONValue {
        func chunk(_ c: DeltaChunk) -> JSONValue {
            var members: [(key: String, value: JSONValue)] = [
                ("offset", .int(Int64(c.offset))), ("length", .int(Int64(c.length))),
                ("raw_length", .int(Int64(c.rawLength))), ("xxh64", .string(XXH64.hex(c.hash))),
            ]
            if let r = c.referenceHash { members.append(("ref_xxh64", .string(XXH64.hex(r)))) }
            return .object(members)
        }
        let tensors: [JSONValue] = entries.map { e in
            .object([
                ("name", .string(e.name)), ("dtype", .string(e.dtype.rawValue)),
                ("shape", .array(e.shape.map { .int(Int64($0)) })),
                ("data_offsets", .array([.int(Int64(e.dataRange.lowerBound)), .int(Int64(e.dataRange.upperBound))])),
                ("codec", .string(e.codec.rawValue)), ("byte_planes", .int(Int64(e.bytePlanes))),
                ("xor_reference", .bool(e.xorReference)),
                ("chunks", .array(e.chunks.map(chunk))),
            ])
        }
        return .object([
            ("format", .string("fgdelta")), ("version", .int(Int64(DeltaArchiveFormat.version))),
            ("chunk_size", .int(Int64(chunkSize))),
            ("base_fingerprint", baseFingerprint.map { .string($0) } ?? .null),
            ("config", config.map { .string($0) } ?? .null),
            ("metadata", metadata.map { m in .object(m.map { ($0.key, .string($0.value)) }) } ?? .null),
            ("source_header", chunk(sourceHeader)),
            ("tensors", .array(tensors)),
        ])
    }
}

/// The byte transforms applied to a chunk before compression, and undone after.
enum ChunkTransform {
    /// Byte-plane grouping: for elements of `width` bytes, plane p holds byte (width − 1 − p) of
    /// every element (most significant byte first). `source.count` must be a multiple of `width`.
    static func splitPlanes(_ source: UnsafeRawBufferPointer, width: Int, into destination: UnsafeMutableRawBufferPointer) {
        let n = source.count / width
        precondition(n * width == source.count && destination.count == source.count, "byte planes need whole elements")
        guard n > 0, let src = source.baseAddress?.assumingMemoryBound(to: UInt8.self),
              let dst = destination.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return }
        // Invariant: i < n and p < width, so i·width + b < source.count and p·n + i < destination.count.
        let raw = UnsafeRawPointer(src), out = UnsafeMutableRawPointer(dst)
        if width == 2 {
            // Element i's high byte to plane 0, low byte to plane 1; 16 elements per step as
            // vector shifts and narrowing (little-endian loads).
            let high = out, low = out + n
            var i = 0
            while i + 16 <= n {
                let v = raw.loadUnaligned(fromByteOffset: 2 * i, as: SIMD16<UInt16>.self)
                low.storeBytes(of: SIMD16<UInt8>(truncatingIfNeeded: v), toByteOffset: i, as: SIMD16<UInt8>.self)
                high.storeBytes(of: SIMD16<UInt8>(truncatingIfNeeded: v &>> 8), toByteOffset: i, as: SIMD16<UInt8>.self)
                i += 16
            }
            while i < n { dst[n + i] = src[2 * i]; dst[i] = src[2 * i + 1]; i += 1 }
            return
        }
        if width == 4 {
            let p0 = out, p1 = out + n, p2 = out + 2 * n, p3 = out + 3 * n
            var i = 0
            while i + 16 <= n {
                let v = raw.loadUnaligned(fromByteOffset: 4 * i, as: SIMD16<UInt32>.self)
                p3.storeBytes(of: SIMD16<UInt8>(truncatingIfNeeded: v), toByteOffset: i, as: SIMD16<UInt8>.self)
                p2.storeBytes(of: SIMD16<UInt8>(truncatingIfNeeded: v &>> 8), toByteOffset: i, as: SIMD16<UInt8>.self)
                p1.storeBytes(of: SIMD16<UInt8>(truncatingIfNeeded: v &>> 16), toByteOffset: i, as: SIMD16<UInt8>.self)
                p0.storeBytes(of: SIMD16<UInt8>(truncatingIfNeeded: v &>> 24), toByteOffset: i, as: SIMD16<UInt8>.self)
                i += 16
            }
            while i < n {
                dst[3 * n + i] = src[4 * i]; dst[2 * n + i] = src[4 * i + 1]; dst[n + i] = src[4 * i + 2]; dst[i] = src[4 * i + 3]
                i += 1
            }
            return
        }
        for p in 0..<width {
            let b = width - 1 - p
            let plane = dst + p * n
            for i in 0..<n { plane[i] = src[i * width + b] }
        }
    }

    /// Undoes `splitPlanes`.
    static func joinPlanes(_ source: UnsafeRawBufferPointer, width: Int, into destination: UnsafeMutableRawBufferPointer) {
        let n = source.count / width
        precondition(n * width == source.count && destination.count == source.count, "byte planes need whole elements")
        guard n > 0, let src = source.baseAddress?.assumingMemoryBound(to: UInt8.self),
              let dst = destination.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return }
        let raw = UnsafeRawPointer(src), out = UnsafeMutableRawPointer(dst)
        if width == 2 {
            // Widen both planes' bytes and recombine 16 elements per step.
            var i = 0
            // Invariant: loads read bytes i..<i+16 of each plane, stores bytes 2i..<2i+32, all in range.
            while i + 16 <= n {
                let high = widen16(raw.loadUnaligned(fromByteOffset: i, as: SIMD16<UInt8>.self))
                let low = widen16(raw.loadUnaligned(fromByteOffset: n + i, as: SIMD16<UInt8>.self))
                out.storeBytes(of: (high &<< 8) | low, toByteOffset: 2 * i, as: SIMD16<UInt16>.self)
                i += 16
            }
            while i < n { dst[2 * i] = src[n + i]; dst[2 * i + 1] = src[i]; i += 1 }
            return
        }
        if width == 4 {
            var i = 0
            while i + 16 <= n {
                let b3 = widen32(raw.loadUnaligned(fromByteOffset: i, as: SIMD16<UInt8>.self))
                let b2 = widen32(raw.loadUnaligned(fromByteOffset: n + i, as: SIMD16<UInt8>.self))
                let b1 = widen32(raw.loadUnaligned(fromByteOffset: 2 * n + i, as: SIMD16<UInt8>.self))
                let b0 = widen32(raw.loadUnaligned(fromByteOffset: 3 * n + i, as: SIMD16<UInt8>.self))
                out.storeBytes(of: (b3 &<< 24) | (b2 &<< 16) | (b1 &<< 8) | b0, toByteOffset: 4 * i, as: SIMD16<UInt32>.self)
                i += 16
            }
            while i < n {
                dst[4 * i] = src[3 * n + i]; dst[4 * i + 1] = src[2 * n + i]; dst[4 * i + 2] = src[n + i]; dst[4 * i + 3] = src[i]
                i += 1
            }
            return
        }
        for p in 0..<width {
            let b = width - 1 - p
            let plane = src + p * n
            for i in 0..<n { dst[i * width + b] = plane[i] }
        }
    }

    /// Zero-extends 16 bytes to 16-bit lanes. Spelled lane by lane: the generic
    /// `init(truncatingIfNeeded:)` is not inlined into a vector instruction, this is.
    @inline(__always) static func widen16(_ v: SIMD16<UInt8>) -> SIMD16<UInt16> {
        SIMD16<UInt16>(UInt16(v[0]), UInt16(v[1]), UInt16(v[2]), UInt16(v[3]), UInt16(v[4]), UInt16(v[5]), UInt16(v[6]), UInt16(v[7]),
                       UInt16(v[8]), UInt16(v[9]), UInt16(v[10]), UInt16(v[11]), UInt16(v[12]), UInt16(v[13]), UInt16(v[14]), UInt16(v[15]))
    }

    /// Zero-extends 16 bytes to 32-bit lanes (see `widen16`).
    @inline(__always) static func widen32(_ v: SIMD16<UInt8>) -> SIMD16<UInt32> {
        SIMD16<UInt32>(UInt32(v[0]), UInt32(v[1]), UInt32(v[2]), UInt32(v[3]), UInt32(v[4]), UInt32(v[5]), UInt32(v[6]), UInt32(v[7]),
                       UInt32(v[8]), UInt32(v[9]), UInt32(v[10]), UInt32(v[11]), UInt32(v[12]), UInt32(v[13]), UInt32(v[14]), UInt32(v[15]))
    }

    /// Whether more than 1/64 of the 8-byte words of `bytes` equal the word before them: the
    /// repetition zstd's matches exploit and literals-only Huffman coding cannot (runs of zeros,
    /// constant or duplicated tensors). Byte planes of trained floats essentially never repeat.
    static func hasRepeats(_ bytes: UnsafeRawBufferPointer) -> Bool {
        let words = bytes.count / 8
        guard words >= 2, let base = bytes.baseAddress else { return false }
        // Word w (1 ≤ w < words) is compared with word w − 1; eight comparisons per step.
        var lanes = SIMD8<UInt64>(repeating: 0)
        var w = 1
        // Invariant: the loads cover words w − 1 ... w + 7, all below `words`.
        while w + 8 <= words {
            let v = base.loadUnaligned(fromByteOffset: 8 * w, as: SIMD8<UInt64>.self)
            let p = base.loadUnaligned(fromByteOffset: 8 * w - 8, as: SIMD8<UInt64>.self)
            lanes &+= SIMD8<UInt64>(repeating: 0).replacing(with: 1, where: v .== p)
            w += 8
        }
        var repeats = Int(lanes.wrappedSum())
        while w < words {
            repeats += base.loadUnaligned(fromByteOffset: 8 * w, as: UInt64.self) == base.loadUnaligned(fromByteOffset: 8 * w - 8, as: UInt64.self) ? 1 : 0
            w += 1
        }
        return repeats * 64 > words
    }

    /// `buffer[i] ^= other[i]` for every byte; the two have the same length.
    static func xor(_ buffer: UnsafeMutableRawBufferPointer, with other: UnsafeRawBufferPointer) {
        precondition(buffer.count == other.count, "XOR of unequal lengths")
        let n = buffer.count
        guard n > 0, let dst = buffer.baseAddress, let src = other.baseAddress else { return }
        var i = 0
        // Invariant: every access is below n.
        while i + 8 <= n {
            let v = dst.loadUnaligned(fromByteOffset: i, as: UInt64.self) ^ src.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            dst.storeBytes(of: v, toByteOffset: i, as: UInt64.self)
            i += 8
        }
        while i < n {
            dst.storeBytes(of: dst.load(fromByteOffset: i, as: UInt8.self) ^ src.load(fromByteOffset: i, as: UInt8.self), toByteOffset: i, as: UInt8.self)
            i += 1
        }
    }

    /// The byte-plane width for a dtype when grouping applies to it (16-, 32- and 64-bit kinds).
    static func planeWidth(_ dtype: DType) -> Int? {
        switch dtype.bits {
        case 16, 32, 64: return dtype.bits / 8
        default: return nil
        }
    }
}

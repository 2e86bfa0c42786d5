import CZstd
import SystemSupport

/// A failure reported by the zstd library, or a frame that does not have the shape the caller
/// required. The description names zstd's own error (`ZSTD_getErrorName`).
public struct ZstdError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What was being done: "compress", "decompress", "inspect a frame".
    public var operation: String
    /// zstd's error name, or our reason for rejecting the frame.
    public var reason: String

    /// Creates an error.
    public init(operation: String, reason: String) {
        self.operation = operation
        self.reason = reason
    }

    public var description: String { "zstd \(operation) failed: \(reason)" }
}

/// The typed wrapper around libzstd: single-shot compression and decompression of whole frames.
/// This is the only file in FlowGuard that imports `CZstd`; every zstd return code becomes a
/// thrown `ZstdError` here.
public enum Zstd {
    /// The library version, e.g. "1.5.5".
    public static var version: String { String(cString: ZSTD_versionString()) }

    /// The compression levels the library accepts (negative levels are the fast modes).
    public static var levels: ClosedRange<Int> { Int(ZSTD_minCLevel())...Int(ZSTD_maxCLevel()) }

    /// The most bytes compressing `count` bytes can produce.
    public static func compressBound(_ count: Int) -> Int { ZSTD_compressBound(count) }

    /// Compresses `source` into one zstd frame at `level`. The frame header always records the
    /// content size; `checksum` adds zstd's 4-byte content checksum (low 32 bits of XXH64).
    /// Uses a context of its own; a worker compressing many frames should keep a `ZstdCompressor`.
    public static func compress(_ source: UnsafeRawBufferPointer, level: Int, checksum: Bool) throws(ZstdError) -> [UInt8] {
        let compressor = try ZstdCompressor()
        return try frame(bound: source.count) { (buffer) throws(ZstdError) in
            try compressor.compress(source, level: level, checksum: checksum, into: buffer)
        }
    }

    /// Runs one compression call into a buffer of zstd's worst-case size for `bound` input bytes
    /// and returns the frame it wrote.
    private static func frame(bound: Int, _ compress: (UnsafeMutableRawBufferPointer) throws(ZstdError) -> Int) throws(ZstdError) -> [UInt8] {
        let capacity = ZSTD_compressBound(bound)
        try check(capacity, "compress")
        var failure: ZstdError? = nil
        let out = [UInt8](unsafeUninitializedCapacity: max(capacity, 1)) { buffer, initialized in
            do throws(ZstdError) {
                initialized = try compress(UnsafeMutableRawBufferPointer(start: buffer.baseAddress, count: capacity))
            } catch {
                failure = error
                initialized = 0
            }
        }
        if let failure { throw failure }
        return out
    }

    /// Compresses `source` into one standard zstd frame that holds only literals: no match search
    /// at all, every 128 KiB block's bytes Huffman-coded (zstd's own order-0 entropy stage, one
    /// table per block, stored raw or RLE when that is smaller). For byte planes of trained floats
    /// matches gain almost nothing, so this reaches the order-0 bound several times faster than any
    /// compression level. Any zstd decoder reads the frame. Content size always recorded;
    /// `checksum` as in `compress`. Deterministic: the same bytes always give the same frame.
    /// Uses a context of its own; a worker compressing many frames should keep a `ZstdCompressor`.
    public static func compressLiterals(_ source: UnsafeRawBufferPointer, checksum: Bool,
                                        segmentLength: Int? = nil) throws(ZstdError) -> [UInt8] {
        let compressor = try ZstdCompressor()
        return try frame(bound: source.count) { (buffer) throws(ZstdError) in
            try compressor.compressLiterals(source, checksum: checksum, segmentLength: segmentLength, into: buffer)
        }
    }

    /// zstd's largest block (ZSTD_BLOCKSIZE_MAX, 128 KiB).
    static let maxBlockSize = 1 << 17

    /// The content size recorded in the header of the frame at the start of `frame`; nil when the
    /// frame does not record it. Throws when the bytes are not a zstd frame header.
    public static func frameContentSize(_ frame: UnsafeRawBufferPointer) throws(ZstdError) -> UInt64? {
        let size = ZSTD_getFrameContentSize(frame.baseAddress, frame.count)
        if size == UInt64.max { return nil }             // ZSTD_CONTENTSIZE_UNKNOWN
        if size == UInt64.max - 1 {                      // ZSTD_CONTENTSIZE_ERROR
            throw ZstdError(operation: "inspect a frame", reason: "not a zstd frame header")
        }
        return size
    }

    /// The length of the complete frame at the start of `frame` (header, blocks, checksum).
    public static func frameCompressedSize(_ frame: UnsafeRawBufferPointer) throws(ZstdError) -> Int {
        let size = ZSTD_findFrameCompressedSize(frame.baseAddress, frame.count)
        try check(size, "inspect a frame")
        return size
    }

    /// Whether the frame header at the start of `frame` announces a content checksum
    /// (bit 2 of the frame header descriptor, RFC 8878 §3.1.1.1.1).
    public static func frameHasChecksum(_ frame: UnsafeRawBufferPointer) -> Bool {
        // Magic number 0xFD2FB528 (4 bytes) then the frame header descriptor byte.
        guard frame.count >= 5, frame.loadUnaligned(as: UInt32.self).littleEndian == 0xFD2F_B528 else { return false }
        return frame[4] & 0x04 != 0
    }

    /// Decompresses exactly one frame `frame` into `destination`, which must be exactly the
    /// frame's content size. zstd verifies the frame checksum when present. Throws unless the
    /// whole of `frame` is one frame that decompresses to exactly `destination.count` bytes.
    public static func decompress(_ frame: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer) throws(ZstdError) {
        try ZstdDecompressor().decompress(frame, into: destination)
    }

    /// Turns a zstd size_t result into a thrown error when it encodes one.
    static func check(_ code: Int, _ operation: String) throws(ZstdError) {
        if ZSTD_isError(code) != 0 { throw ZstdError(operation: operation, reason: String(cString: ZSTD_getErrorName(code))) }
    }
}

/// A zstd compression context owned by one worker and reused for every frame it makes, so the
/// context and its workspace are allocated once instead of per frame. Not thread-safe: one per
/// thread (or per work slot).
public final class ZstdCompressor {
    private let context: OpaquePointer
    /// Block descriptions for `compressLiterals`, kept to avoid an allocation per frame.
    private var blocks: [ZSTD_Sequence] = []

    /// Creates a context; throws when zstd cannot allocate one.
    public init() throws(ZstdError) {
        guard let context = ZSTD_createCCtx() else { throw ZstdError(operation: "compress", reason: "out of memory creating a context") }
        self.context = context
    }

    deinit { ZSTD_freeCCtx(context) }

    /// Clears the previous frame's parameters and sets the ones every frame of ours has.
    private func start(level: Int, checksum: Bool) throws(ZstdError) {
        try Zstd.check(ZSTD_CCtx_reset(context, ZSTD_reset_session_and_parameters), "compress")
        try Zstd.check(ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, Int32(level)), "compress")
        try Zstd.check(ZSTD_CCtx_setParameter(context, ZSTD_c_checksumFlag, checksum ? 1 : 0), "compress")
        try Zstd.check(ZSTD_CCtx_setParameter(context, ZSTD_c_contentSizeFlag, 1), "compress")
    }

    /// Compresses `source` into one zstd frame at `level` written at the start of `destination`
    /// (which should hold `Zstd.compressBound(source.count)` bytes); returns the frame's length.
    /// Content size always recorded; `checksum` adds zstd's content checksum.
    public func compress(_ source: UnsafeRawBufferPointer, level: Int, checksum: Bool,
                         into destination: UnsafeMutableRawBufferPointer) throws(ZstdError) -> Int {
        try start(level: level, checksum: checksum)
        // An empty source has no base address; zstd accepts a null source of length 0.
        let written = ZSTD_compress2(context, destination.baseAddress, destination.count, source.baseAddress, source.count)
        try Zstd.check(written, "compress")
        return written
    }

    /// `Zstd.compressLiterals` into `destination` (see there); returns the frame's length.
    /// Blocks never straddle a multiple of `segmentLength` (each byte plane gets its own blocks).
    public func compressLiterals(_ source: UnsafeRawBufferPointer, checksum: Bool, segmentLength: Int? = nil,
                                 into destination: UnsafeMutableRawBufferPointer) throws(ZstdError) -> Int {
        try start(level: 1, checksum: checksum)
        // ZSTD_c_literalCompressionMode (= ZSTD_c_experimentalParam5, a macro Swift does not
        // import) = ZSTD_ps_enable: always try Huffman on the literals.
        try Zstd.check(ZSTD_CCtx_setParameter(context, ZSTD_c_experimentalParam5, Int32(ZSTD_ps_enable.rawValue)), "compress")
        // ZSTD_c_blockDelimiters (= ZSTD_c_experimentalParam11) = explicit: we say where every
        // block ends, so no block straddles two byte planes and each block's Huffman table
        // describes one plane's bytes only (a table over mixed planes loses most of the gain).
        try Zstd.check(ZSTD_CCtx_setParameter(context, ZSTD_c_experimentalParam11, Int32(ZSTD_sf_explicitBlockDelimiters.rawValue)), "compress")
        blocks.removeAll(keepingCapacity: true)
        let segment = max(1, segmentLength ?? source.count)
        var position = 0
        while position < source.count {
            let segmentEnd = min(source.count, position + segment)
            while position < segmentEnd {
                let length = min(Zstd.maxBlockSize, segmentEnd - position)
                blocks.append(ZSTD_Sequence(offset: 0, litLength: UInt32(length), matchLength: 0, rep: 0))
                position += length
            }
        }
        let written = blocks.withUnsafeBufferPointer { seqs in
            ZSTD_compressSequences(context, destination.baseAddress, destination.count, seqs.baseAddress, seqs.count,
                                   source.baseAddress, source.count)
        }
        try Zstd.check(written, "compress")
        return written
    }
}

extension ZstdCompressor {
    /// Compresses `source`, made of `planes` byte planes of equal length one after the other, into
    /// one standard zstd frame at the start of `destination` (which should hold
    /// `Zstd.planesBound(source.count)` bytes); returns the frame's length, or nil when the frame
    /// would exceed `Zstd.compressBound(source.count)` (then use `compressLiterals`).
    ///
    /// Every plane gets its own blocks. A plane whose sampled order-0 entropy is at least
    /// `Zstd.rawPlaneEntropy` bits per byte (mantissa bytes of floats: Huffman coding gains almost
    /// nothing there) is stored as zstd raw blocks, copied without any entropy work; every other
    /// plane is coded as in `compressLiterals` (Huffman per 128 KiB block, raw or RLE when
    /// smaller). The frame records its content size and carries zstd's content checksum; any
    /// zstd decoder reads it. Deterministic: the same bytes always give the same frame.
    public func compressPlanes(_ source: UnsafeRawBufferPointer, planes: Int,
                               into destination: UnsafeMutableRawBufferPointer) throws(ZstdError) -> Int? {
        let total = source.count
        let n = total / max(planes, 1)
        precondition(planes >= 1 && n * planes == total, "byte planes need whole elements")
        guard total > 0, let src = source.baseAddress, let out = destination.baseAddress else {
            return try compressLiterals(source, checksum: true, into: destination)
        }
        let capacity = destination.count
        func tooSmall() -> ZstdError { ZstdError(operation: "compress", reason: "destination buffer is too small") }
        // Frame header (RFC 8878 §3.1.1): magic, descriptor (single segment, checksum flag, content
        // size field of 1, 2 or 4 bytes), content size. No window descriptor, no dictionary.
        var header: [UInt8] = [0x28, 0xB5, 0x2F, 0xFD]
        if total < 256 {
            header += [0x24, UInt8(total)]
        } else if total < 65536 + 256 {
            let v = total - 256
            header += [0x64, UInt8(v & 0xFF), UInt8(v >> 8)]
        } else {
            precondition(total <= Int(UInt32.max), "chunk too large for a 4-byte content size")
            header += [0xA4, UInt8(total & 0xFF), UInt8((total >> 8) & 0xFF), UInt8((total >> 16) & 0xFF), UInt8(total >> 24)]
        }
        guard capacity >= header.count + 4 else { throw tooSmall() }
        header.withUnsafeBytes { out.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        var position = header.count
        var lastBlock = -1   // offset of the most recent block header
        for p in 0..<planes {
            let plane = UnsafeRawBufferPointer(start: src + p * n, count: n)
            if Zstd.looksIncompressible(plane) {
                // Raw blocks: 3-byte header (last flag, type 0, size) then the bytes.
                var offset = 0
                while offset < n {
                    let length = min(Zstd.maxBlockSize, n - offset)
                    guard position + 3 + length + 4 <= capacity else { throw tooSmall() }
                    let word = UInt32(length) << 3
                    out.storeBytes(of: UInt8(word & 0xFF), toByteOffset: position, as: UInt8.self)
                    out.storeBytes(of: UInt8((word >> 8) & 0xFF), toByteOffset: position + 1, as: UInt8.self)
                    out.storeBytes(of: UInt8(word >> 16), toByteOffset: position + 2, as: UInt8.self)
                    lastBlock = position
                    (out + position + 3).copyMemory(from: plane.baseAddress! + offset, byteCount: length)
                    position += 3 + length
                    offset += length
                }
            } else {
                // A literals-only frame of this plane alone, without checksum; its blocks are moved
                // over its own frame header. Block entropy state does not cross planes: the plane's
                // first block is coded as the first of a frame, so it carries its own Huffman table.
                let room = UnsafeMutableRawBufferPointer(start: out + position, count: capacity - position)
                let written = try compressLiterals(plane, checksum: false, into: room)
                let h = Zstd.frameHeaderLength(UnsafeRawBufferPointer(room))
                guard h > 0, h < written else { throw ZstdError(operation: "compress", reason: "unexpected frame header from zstd") }
                (out + position).copyMemory(from: out + position + h, byteCount: written - h)
                let end = position + written - h
                var cursor = position
                while cursor < end {
                    guard cursor + 3 <= end else { throw ZstdError(operation: "compress", reason: "unexpected block layout from zstd") }
                    let word = UInt32(out.load(fromByteOffset: cursor, as: UInt8.self))
                        | UInt32(out.load(fromByteOffset: cursor + 1, as: UInt8.self)) << 8
                        | UInt32(out.load(fromByteOffset: cursor + 2, as: UInt8.self)) << 16
                    out.storeBytes(of: UInt8(word & 0xFE), toByteOffset: cursor, as: UInt8.self)   // clear "last block"
                    lastBlock = cursor
                    let type = (word >> 1) & 3
                    cursor += 3 + (type == 1 ? 1 : Int(word >> 3))
                }
                guard cursor == end else { throw ZstdError(operation: "compress", reason: "unexpected block layout from zstd") }
                position = end
            }
        }
        guard lastBlock >= 0, position + 4 <= capacity else { throw tooSmall() }
        out.storeBytes(of: out.load(fromByteOffset: lastBlock, as: UInt8.self) | 1, toByteOffset: lastBlock, as: UInt8.self)
        let checksum = UInt32(truncatingIfNeeded: XXH64.hash(source))
        out.storeBytes(of: checksum.littleEndian, toByteOffset: position, as: UInt32.self)
        position += 4
        return position <= Zstd.compressBound(total) ? position : nil
    }
}

extension Zstd {
    /// Sampled order-0 entropy (bits per byte) at or above which `compressPlanes` stores a plane
    /// raw: Huffman coding could save at most 8 − 7.9 = 0.1 bit per byte there, and in practice
    /// its tables eat most of that.
    public static let rawPlaneEntropy = 7.9

    /// Bytes `looksIncompressible` samples at most.
    static let entropySample = 2048

    /// c · log2(c) for every count a sample can hold (0 ... `entropySample`), computed once.
    private static let countLog2Count: [Double] = (0...entropySample).map { $0 == 0 ? 0 : Double($0) * binaryLogarithm(Double($0)) }

    /// Whether the order-0 entropy of `bytes`, estimated from at most `entropySample` bytes
    /// taken at an even stride (plug-in estimate with the Miller–Madow correction for its
    /// downward bias), is at least `rawPlaneEntropy`. Inputs under 4 KiB are never called
    /// incompressible (zstd decides per block there).
    static func looksIncompressible(_ bytes: UnsafeRawBufferPointer) -> Bool {
        let n = bytes.count
        guard n >= 4096, let base = bytes.baseAddress else { return false }
        let step = (n + entropySample - 1) / entropySample
        var counts = [UInt32](repeating: 0, count: 256)
        var sampled = 0
        counts.withUnsafeMutableBufferPointer { c in
            var i = 0
            // Invariant: i < n for every load; at most entropySample loads.
            while i < n {
                c[Int(base.load(fromByteOffset: i, as: UInt8.self))] &+= 1
                i += step
                sampled += 1
            }
        }
        var sumCLogC = 0.0
        var used = 0
        countLog2Count.withUnsafeBufferPointer { table in
            for c in counts where c > 0 {
                used += 1
                sumCLogC += table[Int(c)]
            }
        }
        let s = Double(sampled)
        let entropy = binaryLogarithm(s) - sumCLogC / s + Double(used - 1) / (2 * s * 0.6931471805599453)
        return entropy >= rawPlaneEntropy
    }

    /// The most bytes `ZstdCompressor.compressPlanes` may need as working room for `count` bytes.
    public static func planesBound(_ count: Int) -> Int { compressBound(count) + 4096 }

    /// The length of the frame header at the start of `frame` (magic, descriptor, window
    /// descriptor, dictionary id, content size), or 0 when it is not a zstd frame header.
    static func frameHeaderLength(_ frame: UnsafeRawBufferPointer) -> Int {
        guard frame.count >= 5, frame.loadUnaligned(as: UInt32.self).littleEndian == 0xFD2F_B528 else { return 0 }
        let descriptor = frame[4]
        let single = descriptor & 0x20 != 0
        let fcs = [single ? 1 : 0, 2, 4, 8][Int(descriptor >> 6)]
        let dictionary = [0, 1, 2, 4][Int(descriptor & 3)]
        let length = 5 + (single ? 0 : 1) + dictionary + fcs
        return length <= frame.count ? length : 0
    }
}

/// A zstd decompression context owned by one worker and reused for every frame it decodes.
/// Not thread-safe: one per thread (or per work slot).
public final class ZstdDecompressor {
    private let context: OpaquePointer

    /// Whether zstd checks each frame's content checksum.
    public let verifiesChecksum: Bool

    /// Creates a context; throws when zstd cannot allocate one. `verifyChecksum` false makes
    /// zstd skip its content checksum (`ZSTD_d_forceIgnoreChecksum`): only for callers that hash
    /// the restored bytes themselves, as the delta archive's `unpack` does.
    public init(verifyChecksum: Bool = true) throws(ZstdError) {
        guard let context = ZSTD_createDCtx() else { throw ZstdError(operation: "decompress", reason: "out of memory creating a context") }
        self.context = context
        verifiesChecksum = verifyChecksum
        if !verifyChecksum {
            // ZSTD_d_forceIgnoreChecksum is ZSTD_d_experimentalParam3 (a macro Swift does not import).
            let code = ZSTD_DCtx_setParameter(context, ZSTD_d_experimentalParam3, Int32(ZSTD_d_ignoreChecksum.rawValue))
            if ZSTD_isError(code) != 0 {
                ZSTD_freeDCtx(context)
                throw ZstdError(operation: "decompress", reason: String(cString: ZSTD_getErrorName(code)))
            }
        }
    }

    deinit { ZSTD_freeDCtx(context) }

    /// Decompresses exactly one frame `frame` into `destination`, which must be exactly the
    /// frame's content size. zstd verifies the frame checksum when present (unless the context
    /// was made not to). Throws unless the whole of `frame` is one frame that decompresses to
    /// exactly `destination.count` bytes.
    public func decompress(_ frame: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer) throws(ZstdError) {
        let written = ZSTD_decompressDCtx(context, destination.baseAddress, destination.count, frame.baseAddress, frame.count)
        try Zstd.check(written, "decompress")
        guard written == destination.count else {
            throw ZstdError(operation: "decompress", reason: "frame holds \(written) bytes, expected \(destination.count)")
        }
    }
}

import CZstd

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
    public static func compress(_ source: UnsafeRawBufferPointer, level: Int, checksum: Bool) throws(ZstdError) -> [UInt8] {
        guard let context = ZSTD_createCCtx() else { throw ZstdError(operation: "compress", reason: "out of memory creating a context") }
        defer { ZSTD_freeCCtx(context) }
        try check(ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, Int32(level)), "compress")
        try check(ZSTD_CCtx_setParameter(context, ZSTD_c_checksumFlag, checksum ? 1 : 0), "compress")
        try check(ZSTD_CCtx_setParameter(context, ZSTD_c_contentSizeFlag, 1), "compress")
        // An empty source has no base address; zstd accepts a null source of length 0.
        return try frame(bound: source.count) { buffer, capacity in
            ZSTD_compress2(context, buffer, capacity, source.baseAddress, source.count)
        }
    }

    /// Runs one compression call into a buffer of zstd's worst-case size for `bound` input bytes
    /// and returns the frame it wrote; a zstd error code becomes a thrown `ZstdError`.
    private static func frame(bound: Int, _ compress: (UnsafeMutableRawPointer?, Int) -> Int) throws(ZstdError) -> [UInt8] {
        let capacity = ZSTD_compressBound(bound)
        try check(capacity, "compress")
        var failure: ZstdError? = nil
        let out = [UInt8](unsafeUninitializedCapacity: max(capacity, 1)) { buffer, initialized in
            let written = compress(buffer.baseAddress, capacity)
            if ZSTD_isError(written) != 0 {
                failure = ZstdError(operation: "compress", reason: String(cString: ZSTD_getErrorName(written)))
                initialized = 0
            } else {
                initialized = written
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
    public static func compressLiterals(_ source: UnsafeRawBufferPointer, checksum: Bool,
                                        segmentLength: Int? = nil) throws(ZstdError) -> [UInt8] {
        guard let context = ZSTD_createCCtx() else { throw ZstdError(operation: "compress", reason: "out of memory creating a context") }
        defer { ZSTD_freeCCtx(context) }
        try check(ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, 1), "compress")
        try check(ZSTD_CCtx_setParameter(context, ZSTD_c_checksumFlag, checksum ? 1 : 0), "compress")
        try check(ZSTD_CCtx_setParameter(context, ZSTD_c_contentSizeFlag, 1), "compress")
        // ZSTD_c_literalCompressionMode (= ZSTD_c_experimentalParam5, a macro Swift does not
        // import) = ZSTD_ps_enable: always try Huffman on the literals.
        try check(ZSTD_CCtx_setParameter(context, ZSTD_c_experimentalParam5, Int32(ZSTD_ps_enable.rawValue)), "compress")
        // ZSTD_c_blockDelimiters (= ZSTD_c_experimentalParam11) = explicit: we say where every
        // block ends, so no block straddles two byte planes and each block's Huffman table
        // describes one plane's bytes only (a table over mixed planes loses most of the gain).
        try check(ZSTD_CCtx_setParameter(context, ZSTD_c_experimentalParam11, Int32(ZSTD_sf_explicitBlockDelimiters.rawValue)), "compress")
        var blocks: [ZSTD_Sequence] = []
        let segment = max(1, segmentLength ?? source.count)
        var position = 0
        while position < source.count {
            let segmentEnd = min(source.count, position + segment)
            while position < segmentEnd {
                let length = min(maxBlockSize, segmentEnd - position)
                blocks.append(ZSTD_Sequence(offset: 0, litLength: UInt32(length), matchLength: 0, rep: 0))
                position += length
            }
        }
        return try frame(bound: source.count) { buffer, capacity in
            blocks.withUnsafeBufferPointer { seqs in
                ZSTD_compressSequences(context, buffer, capacity, seqs.baseAddress, seqs.count, source.baseAddress, source.count)
            }
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
        guard let context = ZSTD_createDCtx() else { throw ZstdError(operation: "decompress", reason: "out of memory creating a context") }
        defer { ZSTD_freeDCtx(context) }
        let written = ZSTD_decompressDCtx(context, destination.baseAddress, destination.count, frame.baseAddress, frame.count)
        try check(written, "decompress")
        guard written == destination.count else {
            throw ZstdError(operation: "decompress", reason: "frame holds \(written) bytes, expected \(destination.count)")
        }
    }

    /// Turns a zstd size_t result into a thrown error when it encodes one.
    private static func check(_ code: Int, _ operation: String) throws(ZstdError) {
        if ZSTD_isError(code) != 0 { throw ZstdError(operation: operation, reason: String(cString: ZSTD_getErrorName(code))) }
    }
}

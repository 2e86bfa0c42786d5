import SafeTensors

/// XXH64 (seed 0 unless given), the 64-bit hash the delta archive records for every chunk of raw
/// tensor bytes. It is the same function zstd uses for its frame checksum (zstd keeps the low 32
/// bits), so archive checksums can be cross-checked with standard tools (`xxhsum -H64`).
public enum XXH64 {
    private static let p1: UInt64 = 0x9E37_79B1_85EB_CA87
    private static let p2: UInt64 = 0xC2B2_AE3D_27D4_EB4F
    private static let p3: UInt64 = 0x1656_67B1_9E37_79F9
    private static let p4: UInt64 = 0x85EB_CA77_C2B2_AE63
    private static let p5: UInt64 = 0x27D4_EB2F_1656_67C5

    @inline(__always) private static func rotl(_ x: UInt64, _ r: UInt64) -> UInt64 { (x << r) | (x >> (64 - r)) }

    @inline(__always) private static func round(_ acc: UInt64, _ input: UInt64) -> UInt64 {
        rotl(acc &+ input &* p2, 31) &* p1
    }

    @inline(__always) private static func merge(_ acc: UInt64, _ value: UInt64) -> UInt64 {
        (acc ^ round(0, value)) &* p1 &+ p4
    }

    /// The hash of `bytes`.
    public static func hash(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0) -> UInt64 {
        let n = bytes.count
        var i = 0
        var h: UInt64
        if n >= 32 {
            var v1 = seed &+ p1 &+ p2, v2 = seed &+ p2, v3 = seed, v4 = seed &- p1
            // Invariant: every load below reads inside `bytes` (i + 32 <= n).
            while i + 32 <= n {
                v1 = round(v1, bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self).littleEndian)
                v2 = round(v2, bytes.loadUnaligned(fromByteOffset: i + 8, as: UInt64.self).littleEndian)
                v3 = round(v3, bytes.loadUnaligned(fromByteOffset: i + 16, as: UInt64.self).littleEndian)
                v4 = round(v4, bytes.loadUnaligned(fromByteOffset: i + 24, as: UInt64.self).littleEndian)
                i += 32
            }
            h = rotl(v1, 1) &+ rotl(v2, 7) &+ rotl(v3, 12) &+ rotl(v4, 18)
            h = merge(h, v1); h = merge(h, v2); h = merge(h, v3); h = merge(h, v4)
        } else {
            h = seed &+ p5
        }
        h = h &+ UInt64(n)
        while i + 8 <= n {
            h ^= round(0, bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self).littleEndian)
            h = rotl(h, 27) &* p1 &+ p4
            i += 8
        }
        if i + 4 <= n {
            h ^= UInt64(bytes.loadUnaligned(fromByteOffset: i, as: UInt32.self).littleEndian) &* p1
            h = rotl(h, 23) &* p2 &+ p3
            i += 4
        }
        while i < n {
            h ^= UInt64(bytes[i]) &* p5
            h = rotl(h, 11) &* p1
            i += 1
        }
        h ^= h >> 33; h = h &* p2
        h ^= h >> 29; h = h &* p3
        h ^= h >> 32
        return h
    }

    /// The hash of a byte array.
    public static func hash(_ bytes: [UInt8], seed: UInt64 = 0) -> UInt64 {
        bytes.withUnsafeBytes { hash($0, seed: seed) }
    }

    /// The hash as 16 lower-case hex digits, the spelling the archive index uses.
    public static func hex(_ value: UInt64) -> String {
        let s = String(value, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }
}

/// A cheap identity for a base checkpoint, recorded in a delta archive so an adapter can be
/// matched to the model it was trained on without hashing gigabytes. See
/// `docs/delta-archive.md` ("Base fingerprint") for the exact byte stream it hashes.
public enum BaseFingerprint {
    /// Bytes sampled from each end of every tensor.
    public static let sampleBytes = 64

    /// The fingerprint of the checkpoint at `path` (a file, shard index or model folder):
    /// `"fgfp1:"` followed by 16 hex digits.
    public static func compute(path: String) throws(SafeTensorsError) -> String {
        let collection = try TensorCollection(path: path)
        return compute(collection)
    }

    /// The fingerprint of an opened checkpoint.
    public static func compute(_ collection: TensorCollection) -> String {
        var stream = Array("FGFP1\u{0}".utf8)
        let entries = collection.entries.sorted { Array($0.info.name.utf8).lexicographicallyPrecedes(Array($1.info.name.utf8)) }
        func u32(_ v: Int) { withUnsafeBytes(of: UInt32(v).littleEndian) { stream.append(contentsOf: $0) } }
        func u64(_ v: Int) { withUnsafeBytes(of: UInt64(v).littleEndian) { stream.append(contentsOf: $0) } }
        for entry in entries {
            let info = entry.info
            let name = Array(info.name.utf8)
            u32(name.count); stream.append(contentsOf: name)
            let dtype = Array(info.dtype.rawValue.utf8)
            u32(dtype.count); stream.append(contentsOf: dtype)
            u32(info.shape.count); for d in info.shape { u64(d) }
            u64(info.byteCount)
            entry.file.withBytes(of: info) { raw in
                if raw.count <= 2 * sampleBytes {
                    stream.append(contentsOf: raw)
                } else {
                    stream.append(contentsOf: raw[0..<sampleBytes])
                    stream.append(contentsOf: raw[(raw.count - sampleBytes)...])
                }
            }
        }
        return "fgfp1:" + XXH64.hex(XXH64.hash(stream))
    }
}

/// Decoding of GGUF tensor bytes to `Float`, bit for bit as gguf-py's `gguf.quants.dequantize`
/// computes it (numpy float32 arithmetic, one rounding per operation, no fused multiply-add).
extension GGUFType {
    /// Decodes `output.count` values (a whole number of blocks) stored as this type in `raw`,
    /// which must hold at least `byteCount(elements: output.count)` bytes. The type must be
    /// decodable (`isDecodable`); both are the caller's promises, checked by preconditions.
    public func dequantize(_ raw: UnsafeRawBufferPointer, into output: UnsafeMutableBufferPointer<Float>) {
        precondition(isDecodable, "dequantize: \(name) is not decodable")
        let count = output.count
        precondition(count % blockSize == 0, "dequantize: \(count) values is not a whole number of \(name) blocks")
        let blocks = count / blockSize
        precondition(raw.count >= blocks * typeSize, "dequantize: source holds \(raw.count) bytes, \(blocks) \(name) blocks need \(blocks * typeSize)")
        guard count > 0, let src = raw.baseAddress, let dst = output.baseAddress else { return }
        switch self {
        case .f32, .f16, .bf16, .f64, .i8, .i16, .i32, .i64:
            Plain.decode(self, src, dst, count)
        default:
            let decodeBlock = Blocks.decoder(for: self)
            for b in 0..<blocks {
                decodeBlock(src + b * typeSize, dst + b * blockSize)
            }
        }
    }
}

/// The plain number types: one value per "block".
private enum Plain {
    /// Widens `count` little-endian values at `src` to Float at `dst`; the caller checked that
    /// `src` holds `count × typeSize` bytes and `dst` has room for `count` values.
    static func decode(_ type: GGUFType, _ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ count: Int) {
        switch type {
        case .f32:
            for i in 0..<count { dst[i] = Float(bitPattern: UInt32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) }
        case .f16:
            for i in 0..<count { dst[i] = Half.toFloat(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
        case .bf16:
            for i in 0..<count { dst[i] = Float(bitPattern: UInt32(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) << 16) }
        case .f64:
            for i in 0..<count { dst[i] = Float(Double(bitPattern: UInt64(littleEndian: src.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self)))) }
        case .i8:
            for i in 0..<count { dst[i] = Float(src.load(fromByteOffset: i, as: Int8.self)) }
        case .i16:
            for i in 0..<count { dst[i] = Float(Int16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self))) }
        case .i32:
            for i in 0..<count { dst[i] = Float(Int32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self))) }
        case .i64:
            for i in 0..<count { dst[i] = Float(Int64(littleEndian: src.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self))) }
        default:
            preconditionFailure("not a plain number type: \(type.name)")
        }
    }
}

/// One decoder per block-quantized type. Each reads exactly one block (`typeSize` bytes) at `b`
/// and writes exactly `blockSize` values at `y`; `dequantize` checked both sizes for every block.
/// The layouts are ggml's `block_*` structs (ggml-common.h); the arithmetic is gguf-py's.
private enum Blocks {
    typealias Decoder = (UnsafeRawPointer, UnsafeMutablePointer<Float>) -> Void

    static func decoder(for type: GGUFType) -> Decoder {
        switch type {
        case .q4_0: return q4_0
        case .q4_1: return q4_1
        case .q5_0: return q5_0
        case .q5_1: return q5_1
        case .q8_0: return q8_0
        case .q2_K: return q2_K
        case .q3_K: return q3_K
        case .q4_K: return q4_K
        case .q5_K: return q5_K
        case .q6_K: return q6_K
        default: preconditionFailure("no block decoder for \(type.name)")
        }
    }

    /// The fp16 at byte `offset` of a block, widened.
    @inline(__always)
    static func half(_ b: UnsafeRawPointer, _ offset: Int) -> Float {
        Half.toFloat(UInt16(littleEndian: b.loadUnaligned(fromByteOffset: offset, as: UInt16.self)))
    }

    /// Byte `offset` of a block.
    @inline(__always)
    static func byte(_ b: UnsafeRawPointer, _ offset: Int) -> UInt8 { b.load(fromByteOffset: offset, as: UInt8.self) }

    /// Q4_0 (18 bytes): fp16 d, 16 bytes of nibbles (low nibbles are values 0–15, high 16–31);
    /// x = d·(q − 8).
    static func q4_0(_ b: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(b, 0)
        for j in 0..<16 {
            let q = byte(b, 2 + j)
            y[j] = d * Float(Int(q & 0x0F) - 8)
            y[j + 16] = d * Float(Int(q >> 4) - 8)
        }
    }

    /// Q4_1 (20 bytes): fp16 d, fp16 m, 16 bytes of nibbles; x = d·q + m.
    static func q4_1(_ b: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(b, 0), m = half(b, 2)
        for j in 0..<16 {
            let q = byte(b, 4 + j)
            y[j] = d * Float(q & 0x0F) + m
            y[j + 16] = d * Float(q >> 4) + m
        }
    }

    /// Q5_0 (22 bytes): fp16 d, u32 of fifth bits (bit i for value i), 16 bytes of nibbles;
    /// x = d·(q − 16).
    static func q5_0(_ b: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(b, 0)
        let qh = UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 2, as: UInt32.self))
        for j in 0..<16 {
            let q = byte(b, 6 + j)
            let lo = Int(q & 0x0F) | Int((qh >> UInt32(j)) & 1) << 4
            let hi = Int(q >> 4) | Int((qh >> UInt32(j + 16)) & 1) << 4
            y[j] = d * Float(lo - 16)
            y[j + 16] = d * Float(hi - 16)
        }
    }

    /// Q5_1 (24 bytes): fp16 d, fp16 m, u32 of fifth bits, 16 bytes of nibbles; x = d·q + m.
    static func q5_1(_ b: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(b, 0), m = half(b, 2)
        let qh = UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        for j in 0..<16 {
            let q = byte(b, 8 + j)
            let lo = Int(q & 0x0F) | Int((qh >> UInt32(j)) & 1) << 4
            let hi = Int(q >> 4) | Int((qh >> UInt32(j + 16)) & 1) << 4
            y[j] = d * Float(lo) + m
            y[j + 16] = d * Float(hi) + m
        }
    }

    /// Q8_0 (34 bytes): fp16 d, 32 int8; x = q·d.
    static func q8_0(_ b: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(b, 0)
        for j in 0..<32 { y[j] = Float(b.load(fromByteOffset: 2 + j, as: Int8.self)) * d }
    }

    /// Q2_K (84 bytes): 16 scale bytes (low nibble scale, high nibble min), 64 bytes of 2-bit
    /// values, fp16 d, fp16 dmin. Value i = 128g + 32j + k is bits 2j of byte 32g + k;
    /// x = (d·scale)·q − (dmin·min) with the scale of sub-block i/16.
    static func q2_K(_ b: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(b, 80), dmin = half(b, 82)
        for sub in 0..<16 {
            let sc = byte(b, sub)
            let dl = d * Float(sc & 0x0F), ml = dmin * Float(sc >> 4)
            for l in 0..<16 {
                let i = sub * 16 + l
                let g = i / 128, j = (i % 128) / 32, k = i % 32
                let q = (byte(b, 16 + 32 * g + k) >> UInt8(2 * j)) & 3
                y[i] = dl * Float(q) - ml
            }
        }
    }

    /// Q3_K (110 bytes): 32 bytes of high-bit mask, 64 bytes of 2-bit values, 12 bytes of 6-bit
    /// scales, fp16 d. Value i = 128g + 32j + k: low bits 2j of byte 32g + k of the values,
    /// high bit i/32 of mask byte i%32 (a set bit means no −4 offset); x = (d·(scale − 32))·q.
    static func q3_K(_ b: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(b, 108)
        for sub in 0..<16 {
            let low = sub < 8 ? byte(b, 96 + sub) & 0x0F : byte(b, 96 + sub - 8) >> 4
            let high = (byte(b, 96 + 8 + sub % 4) >> UInt8(2 * (sub / 4))) & 3
            let dl = d * Float(Int(low | high << 4) - 32)
            for l in 0..<16 {
                let i = sub * 16 + l
                let g = i / 128, j = (i % 128) / 32, k = i % 32
                let ql = Int((byte(b, 32 + 32 * g + k) >> UInt8(2 * j)) & 3)
                let qh = Int(((byte(b, i % 32) >> UInt8(i / 32)) & 1) ^ 1)
                y[i] = dl * Float(ql - (qh << 2))
            }
        }
    }

    /// The 6-bit scale and min of sub-block `j` (0–7) packed in the 12 bytes at `s`, as ggml's
    /// `get_scale_min_k4` unpacks them (Q4_K and Q5_K).
    @inline(__always)
    static func scaleMin(_ b: UnsafeRawPointer, _ s: Int, _ j: Int) -> (scale: UInt8, min: UInt8) {
        if j < 4 { return (byte(b, s + j) & 63, byte(b, s + j + 4) & 63) }
        let scale = (byte(b, s + j + 4) & 0x0F) | ((byte(b, s + j - 4) >> 2) & 0x30)
        let min = (byte(b, s + j + 4) >> 4) | ((byte(b, s + j) >> 2) & 0x30)
        return (scale, min)
    }

    /// Q4_K (144 bytes): fp16 d, fp16 dmin, 12 bytes of scales/mins, 128 bytes of nibbles.
    /// Value i = 64g + 32h + k is nibble h of byte 32g + k; x = (d·scale)·q − (dmin·min) with
    /// sub-block i/32.
    static func q4_K(_ b: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(b, 0), dmin = half(b, 2)
        for sub in 0..<8 {
            let (sc, mn) = scaleMin(b, 4, sub)
            let dl = d * Float(sc), ml = dmin * Float(mn)
            let g = sub / 2, shift = UInt8(4 * (sub % 2))
            for k in 0..<32 {
                let q = (byte(b, 16 + 32 * g + k) >> shift) & 0x0F
                y[sub * 32 + k] = dl * Float(q) - ml
            }
        }
    }

    /// Q5_K (176 bytes): fp16 d, fp16 dmin, 12 bytes of scales/mins, 32 bytes of fifth bits
    /// (bit i/32 of byte i%32), 128 bytes of nibbles laid out as Q4_K's.
    static func q5_K(_ b: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(b, 0), dmin = half(b, 2)
        for sub in 0..<8 {
            let (sc, mn) = scaleMin(b, 4, sub)
            let dl = d * Float(sc), ml = dmin * Float(mn)
            let g = sub / 2, shift = UInt8(4 * (sub % 2))
            for k in 0..<32 {
                let low = (byte(b, 48 + 32 * g + k) >> shift) & 0x0F
                let high = (byte(b, 16 + k) >> UInt8(sub)) & 1
                y[sub * 32 + k] = dl * Float(low | high << 4) - ml
            }
        }
    }

    /// Q6_K (210 bytes): 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 int8 scales,
    /// fp16 d. Value i = 128g + r: low nibble (r/64) of byte 64g + r%64, high bits 2·(r/32) of
    /// byte 32g + r%32; x = (d·scale)·(q − 32) with sub-block i/16.
    static func q6_K(_ b: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(b, 208)
        for sub in 0..<16 {
            let dl = d * Float(b.load(fromByteOffset: 192 + sub, as: Int8.self))
            for l in 0..<16 {
                let i = sub * 16 + l
                let g = i / 128, r = i % 128
                let low = (byte(b, 64 * g + r % 64) >> UInt8(4 * (r / 64))) & 0x0F
                let high = (byte(b, 128 + 32 * g + r % 32) >> UInt8(2 * (r / 32))) & 3
                y[i] = dl * Float(Int(low | high << 4) - 32)
            }
        }
    }
}

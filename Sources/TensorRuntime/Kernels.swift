import SystemSupport

/// A value handed to the worker threads of one kernel call. Used for pointers (and closures
/// holding pointers) whose memory the workers read, or write in disjoint regions — the invariant
/// every caller of `parallelForChunks` keeps.
struct Unchecked<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// The SIMD width used by the vector kernels.
typealias Vec = SIMD16<Float>

/// Numeric kernels on raw Float32 buffers. Each works on pointers handed in by a `Graph`
/// operation, which guarantees the counts; rows are split over threads with `parallelForChunks`.
enum Kernels {
    /// Rows per chunk so one chunk holds at least ~32K values.
    @inline(__always) static func grain(rowLength: Int) -> Int { max(1, 32_768 / max(1, rowLength)) }

    // MARK: vector loads and stores

    @inline(__always) static func load(_ p: UnsafePointer<Float>) -> Vec {
        UnsafeRawPointer(p).loadUnaligned(as: Vec.self)
    }

    @inline(__always) static func store(_ v: Vec, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: Vec.self)
    }

    // MARK: exp and sigmoid

    /// e^x for every lane, accurate to about 2 ulp for x in [-87, 88]; larger inputs saturate at
    /// e^88.37, smaller ones at about 1e-38. Cody–Waite reduction x = n·ln2 + r (|r| ≤ ln2/2),
    /// a degree-7 Taylor polynomial for e^r (truncation error < 6e-9), and 2^n built from bits.
    @inline(__always) static func exp(_ x: Vec) -> Vec {
        var x = x
        x.replace(with: Vec(repeating: 88.37626), where: x .> Vec(repeating: 88.37626))
        x.replace(with: Vec(repeating: -87.33654), where: .!(x .>= Vec(repeating: -87.33654)))
        // Round x·log2(e) to the nearest integer with the 1.5·2²³ trick (no rounding instruction needed).
        let magic = Vec(repeating: 12_582_912)
        let shifted = fma(x, Vec(repeating: 1.442695041), magic)
        let n = shifted - magic
        let r = fma(n, Vec(repeating: -1.428606765330187e-06), fma(n, Vec(repeating: -0.693145751953125), x))
        var p = Vec(repeating: 1.0 / 5040)
        p = fma(p, r, Vec(repeating: 1.0 / 720))
        p = fma(p, r, Vec(repeating: 1.0 / 120))
        p = fma(p, r, Vec(repeating: 1.0 / 24))
        p = fma(p, r, Vec(repeating: 1.0 / 6))
        p = fma(p, r, Vec(repeating: 0.5))
        p = fma(p, r, Vec(repeating: 1))
        p = fma(p, r, Vec(repeating: 1))
        // The low bits of `shifted` hold n (offset by 0x4B400000); move n + 127 into the exponent.
        let bits = unsafeBitCast(shifted, to: SIMD16<Int32>.self) &- Int32(0x4B40_0000) &+ 127
        return p * unsafeBitCast(bits &<< 23, to: Vec.self)
    }

    /// 0, 1, …, 15: lane numbers, for building lane masks.
    static let laneIndices = SIMD16<Int32>(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)

    /// Σ of the lanes, by halving (the generic `sum()` goes lane by lane through memory).
    @inline(__always) static func horizontalSum(_ v: Vec) -> Float {
        let a = v.lowHalf + v.highHalf
        let b = a.lowHalf + a.highHalf
        let c = b.lowHalf + b.highHalf
        return c[0] + c[1]
    }

    /// The largest lane, by halving (the generic `max()` goes lane by lane through memory).
    @inline(__always) static func horizontalMax(_ v: Vec) -> Float {
        var a = v.lowHalf
        a.replace(with: v.highHalf, where: v.highHalf .> a)
        var b = a.lowHalf
        b.replace(with: a.highHalf, where: a.highHalf .> b)
        var c = b.lowHalf
        c.replace(with: b.highHalf, where: b.highHalf .> c)
        return c[1] > c[0] ? c[1] : c[0]
    }

    /// The lane-wise larger of a and b (a compare and a blend; the generic `pointwiseMax` is
    /// compiled lane by lane).
    @inline(__always) static func maximum(_ a: Vec, _ b: Vec) -> Vec {
        var r = a
        r.replace(with: b, where: b .> a)
        return r
    }

    /// a·b + c for every lane, fused (one rounding; an FMA instruction on the host CPU).
    @inline(__always) static func fma(_ a: Vec, _ b: Vec, _ c: Vec) -> Vec {
        c.addingProduct(a, b)
    }

    /// 1 / (1 + e^-x) for every lane.
    @inline(__always) static func sigmoid(_ x: Vec) -> Vec {
        Vec(repeating: 1) / (Vec(repeating: 1) + exp(-x))
    }

    /// Applies a lane function to `count` values (the tail padded with zeros).
    @inline(__always) static func map(_ count: Int, _ body: (Int, Int) -> Void) {
        var i = 0
        while i + Vec.scalarCount <= count { body(i, Vec.scalarCount); i += Vec.scalarCount }
        if i < count { body(i, count - i) }
    }

    /// Loads `n` ≤ 16 values (the rest zero).
    @inline(__always) static func load(_ p: UnsafePointer<Float>, _ n: Int) -> Vec {
        if n == Vec.scalarCount { return load(p) }
        var v = Vec(repeating: 0)
        for i in 0..<n { v[i] = p[i] }
        return v
    }

    /// Stores the first `n` ≤ 16 lanes.
    @inline(__always) static func store(_ v: Vec, _ p: UnsafeMutablePointer<Float>, _ n: Int) {
        if n == Vec.scalarCount { store(v, p); return }
        for i in 0..<n { p[i] = v[i] }
    }

    // MARK: elementwise

    /// target[i] += source[i].
    static func addInPlace(_ target: UnsafeMutablePointer<Float>, _ source: UnsafePointer<Float>, count: Int, threads: Int) {
        let t = Unchecked(target), s = Unchecked(source)
        parallelForChunks(count, threads: threads, grain: 65_536) { range in
            let t = t.value, s = s.value
            for i in range { t[i] += s[i] }
        }
    }

    /// The constant √(2/π) of the tanh approximation of GELU.
    static let geluC: Float = 0.7978845608028654
    /// The cubic coefficient of the tanh approximation of GELU.
    static let geluA: Float = 0.044715

    /// GELU (tanh form) written as x·σ(2u), u = √(2/π)(x + 0.044715x³), since
    /// 0.5(1 + tanh u) = σ(2u): one exp per value and full relative accuracy for negative x.
    static func gelu(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int, threads: Int) {
        let xs = Unchecked(x), ys = Unchecked(y)
        parallelForChunks(count, threads: threads, grain: 16_384) { range in
            let x = xs.value + range.lowerBound, y = ys.value + range.lowerBound
            map(range.count) { i, n in
                let v = load(x + i, n)
                let u2 = Vec(repeating: 2 * geluC) * (v + Vec(repeating: geluA) * v * v * v)
                store(v * sigmoid(u2), y + i, n)
            }
        }
    }

    /// dx = g · d/dx[x·σ(2u)] = g · (s + 2x·s(1−s)·u′), s = σ(2u), u′ = √(2/π)(1 + 3·0.044715x²).
    static func geluBackward(_ x: UnsafePointer<Float>, _ g: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>, count: Int, threads: Int) {
        let xs = Unchecked(x), gs = Unchecked(g), ds = Unchecked(dx)
        parallelForChunks(count, threads: threads, grain: 16_384) { range in
            let x = xs.value + range.lowerBound, g = gs.value + range.lowerBound, dx = ds.value + range.lowerBound
            map(range.count) { i, n in
                let v = load(x + i, n)
                let v2 = v * v
                let s = sigmoid(Vec(repeating: 2 * geluC) * (v + Vec(repeating: geluA) * v2 * v))
                let du = Vec(repeating: geluC) * (Vec(repeating: 1) + Vec(repeating: 3 * geluA) * v2)
                let d = s + Vec(repeating: 2) * v * s * (Vec(repeating: 1) - s) * du
                store(load(g + i, n) * d, dx + i, n)
            }
        }
    }

    /// y = x·σ(x).
    static func silu(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int, threads: Int) {
        let xs = Unchecked(x), ys = Unchecked(y)
        parallelForChunks(count, threads: threads, grain: 16_384) { range in
            let x = xs.value + range.lowerBound, y = ys.value + range.lowerBound
            map(range.count) { i, n in
                let v = load(x + i, n)
                store(v * sigmoid(v), y + i, n)
            }
        }
    }

    /// dx = g · σ(x)(1 + x(1 − σ(x))).
    static func siluBackward(_ x: UnsafePointer<Float>, _ g: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>, count: Int, threads: Int) {
        let xs = Unchecked(x), gs = Unchecked(g), ds = Unchecked(dx)
        parallelForChunks(count, threads: threads, grain: 16_384) { range in
            let x = xs.value + range.lowerBound, g = gs.value + range.lowerBound, dx = ds.value + range.lowerBound
            map(range.count) { i, n in
                let v = load(x + i, n)
                let s = sigmoid(v)
                store(load(g + i, n) * s * (Vec(repeating: 1) + v * (Vec(repeating: 1) - s)), dx + i, n)
            }
        }
    }

    // MARK: row reductions

    /// Σ p[i] for one row, vectorised.
    @inline(__always) static func rowSum(_ p: UnsafePointer<Float>, _ count: Int) -> Float {
        var acc = Vec(repeating: 0)
        map(count) { i, n in acc += load(p + i, n) }
        return horizontalSum(acc)
    }

    /// Σ a[i]·b[i] for one row, vectorised.
    @inline(__always) static func rowDot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ count: Int) -> Float {
        var acc = Vec(repeating: 0)
        map(count) { i, n in acc += load(a + i, n) * load(b + i, n) }
        return horizontalSum(acc)
    }

    // MARK: weight widening

    /// Converts `count` stored elements at `source` (any alignment) to Float32 at `target`; for
    /// Q8_0 and encoded rows `count` is a whole number of rows.
    static func widen(_ element: WeightMatrix.Element, _ source: UnsafeRawPointer, _ target: UnsafeMutablePointer<Float>, count: Int) {
        switch element {
        case .float32:
            UnsafeMutableRawPointer(target).copyMemory(from: source, byteCount: count * 4)
        case .bfloat16:
            // bf16 is the top half of a float32.
            for i in 0..<count {
                let h = source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)
                target[i] = Float(bitPattern: UInt32(h) &<< 16)
            }
        case .float16:
            for i in 0..<count {
                target[i] = halfToFloat(source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
            }
        case .q8_0:
            // `count` covers whole rows of whole blocks: d (fp16) then 32 int8; value = d·q, one
            // float32 product, as gguf-py's dequantize computes it.
            let values = WeightMatrix.Element.q8BlockValues, bytes = WeightMatrix.Element.q8BlockBytes
            for block in 0..<(count / values) {
                let at = source + block * bytes
                let d = halfToFloat(at.loadUnaligned(as: UInt16.self))
                let out = target + block * values
                for j in 0..<values { out[j] = d * Float(Int8(bitPattern: at.load(fromByteOffset: 2 + j, as: UInt8.self))) }
            }
        case .encoded(let encoding):
            // `count` covers whole rows: the encoding's own decoder, as eager reading uses it.
            encoding.decode(source, count: count, into: target)
        }
    }

    /// IEEE binary16 → Float32 by bit manipulation: the 15 magnitude bits are placed under a
    /// float32 exponent and rescaled by 2¹¹², which is exact for normals and subnormals alike;
    /// infinities and NaNs (exponent all ones) keep an all-ones exponent.
    @inline(__always) static func halfToFloat(_ h: UInt16) -> Float {
        let magnitude = UInt32(h & 0x7FFF) &<< 13
        let sign = UInt32(h & 0x8000) &<< 16
        let scaled = Float(bitPattern: magnitude) * 0x1p112
        let bits = magnitude >= (0x7C00 &<< 13) ? (magnitude | 0x7F80_0000) : scaled.bitPattern
        return Float(bitPattern: bits | sign)
    }
}

import TensorRuntime

/// Half-precision test weights placed at a deliberately unaligned address.
struct TestWeights {
    /// The weight as the runtime sees it.
    var matrix: WeightMatrix
    /// The exact Float32 values of the stored elements (the reference).
    var widened: Tensor

    /// Memory for a weight, freed with the last reference (the `owner` of the matrix).
    final class Storage {
        let pointer: UnsafeMutableRawPointer
        init(bytes: Int) { pointer = .allocate(byteCount: bytes + 16, alignment: 64) }
        deinit { pointer.deallocate() }
    }

    /// `tensor` [rows, columns] stored as `element`, starting `offset` bytes past a 64-byte boundary.
    /// `tensor` as ggml Q8_0 blocks (d = amax/127 as fp16, q = round(x/d)), as gguf-py quantizes;
    /// `widened` holds d·q.
    static func q8Matrix(_ tensor: Tensor, rows: Int, columns: Int, offset: Int) -> TestWeights {
        precondition(columns % 32 == 0, "Q8_0 rows must be whole blocks")
        let blocks = tensor.count / 32
        let storage = Storage(bytes: blocks * 34)
        let base = storage.pointer + offset
        var widened = [Float]()
        for b in 0..<blocks {
            let values = tensor.scalars[(32 * b)..<(32 * b + 32)]
            let d = Float16((values.map { abs($0) }.max() ?? 0) / 127)
            base.storeBytes(of: d.bitPattern, toByteOffset: 34 * b, as: UInt16.self)
            for (j, x) in values.enumerated() {
                let q = Float(d) == 0 ? Int8(0) : Int8((x / Float(d)).rounded())
                base.storeBytes(of: UInt8(bitPattern: q), toByteOffset: 34 * b + 2 + j, as: UInt8.self)
                widened.append(Float(d) * Float(q))
            }
        }
        let matrix = WeightMatrix(rows: rows, columns: columns, element: .q8_0, bytes: UnsafeRawPointer(base), owner: storage)
        return TestWeights(matrix: matrix, widened: Tensor(shape: tensor.shape, scalars: widened))
    }

    /// ggml's Q4_0 blocks decoded as a `WeightEncoding` would supply them (the GGUF module's
    /// decoder is not a dependency of these tests): per 32 values an fp16 d and 16 bytes of
    /// nibbles (low nibbles values 0–15, high 16–31), x = d·(q − 8).
    struct Q4_0: WeightEncoding {
        var name: String { "Q4_0" }
        func byteCount(values count: Int) -> Int { count / 32 * 18 }
        func decode(_ source: UnsafeRawPointer, count: Int, into target: UnsafeMutablePointer<Float>) {
            for block in 0..<(count / 32) {
                let at = source + 18 * block, out = target + 32 * block
                let d = Float(Float16(bitPattern: at.loadUnaligned(as: UInt16.self)))
                for j in 0..<16 {
                    let q = at.load(fromByteOffset: 2 + j, as: UInt8.self)
                    out[j] = d * Float(Int(q & 0x0F) - 8)
                    out[j + 16] = d * Float(Int(q >> 4) - 8)
                }
            }
        }
    }

    /// `tensor` as Q4_0 blocks (d = max/−8 as fp16, q = round(x/d) + 8 clamped to 0…15, as
    /// gguf-py quantizes) behind the `.encoded` element; `widened` holds the decoded values.
    static func q4Matrix(_ tensor: Tensor, rows: Int, columns: Int, offset: Int) -> TestWeights {
        precondition(columns % 32 == 0, "Q4_0 rows must be whole blocks")
        let blocks = tensor.count / 32
        let storage = Storage(bytes: blocks * 18)
        let base = storage.pointer + offset
        for b in 0..<blocks {
            let values = Array(tensor.scalars[(32 * b)..<(32 * b + 32)])
            let extreme = values.max { abs($0) < abs($1) } ?? 0
            let d = Float16(extreme / -8)
            base.storeBytes(of: d.bitPattern, toByteOffset: 18 * b, as: UInt16.self)
            func q(_ x: Float) -> UInt8 { Float(d) == 0 ? 8 : UInt8(min(15, max(0, (x / Float(d)).rounded() + 8))) }
            for j in 0..<16 {
                base.storeBytes(of: q(values[j]) | q(values[j + 16]) << 4, toByteOffset: 18 * b + 2 + j, as: UInt8.self)
            }
        }
        let encoding = Q4_0()
        let matrix = WeightMatrix(rows: rows, columns: columns, element: .encoded(encoding), bytes: UnsafeRawPointer(base), owner: storage)
        let widened = [Float](unsafeUninitializedCapacity: tensor.count) { buffer, initialized in
            encoding.decode(UnsafeRawPointer(base), count: tensor.count, into: buffer.baseAddress!)
            initialized = tensor.count
        }
        return TestWeights(matrix: matrix, widened: Tensor(shape: tensor.shape, scalars: widened))
    }

    static func matrix(_ tensor: Tensor, element: WeightMatrix.Element, offset: Int) -> TestWeights {
        let rows = tensor.shape[0], columns = tensor.count / rows
        if element == .q8_0 { return q8Matrix(tensor, rows: rows, columns: columns, offset: offset) }
        let storage = Storage(bytes: tensor.count * element.byteWidth)
        let base = storage.pointer + offset
        var widened = [Float]()
        for (i, x) in tensor.scalars.enumerated() {
            switch element {
            case .float32:
                base.storeBytes(of: x.bitPattern, toByteOffset: 4 * i, as: UInt32.self)
                widened.append(x)
            case .bfloat16:
                let bits = x.bitPattern
                let rounded = UInt16(truncatingIfNeeded: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)
                base.storeBytes(of: rounded, toByteOffset: 2 * i, as: UInt16.self)
                widened.append(Float(bitPattern: UInt32(rounded) << 16))
            case .float16:
                let half = Float16(x)
                base.storeBytes(of: half.bitPattern, toByteOffset: 2 * i, as: UInt16.self)
                widened.append(Float(half))
            case .q8_0:
                preconditionFailure("handled by q8Matrix")
            case .encoded:
                preconditionFailure("encoded weights are made by q4Matrix")
            }
        }
        let matrix = WeightMatrix(rows: rows, columns: columns, element: element, bytes: UnsafeRawPointer(base), owner: storage)
        return TestWeights(matrix: matrix, widened: Tensor(shape: tensor.shape, scalars: widened))
    }
}

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
            }
        }
        let matrix = WeightMatrix(rows: rows, columns: columns, element: element, bytes: UnsafeRawPointer(base), owner: storage)
        return TestWeights(matrix: matrix, widened: Tensor(shape: tensor.shape, scalars: widened))
    }
}

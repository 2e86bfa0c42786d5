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
    static func matrix(_ tensor: Tensor, element: WeightMatrix.Element, offset: Int) -> TestWeights {
        let rows = tensor.shape[0], columns = tensor.count / rows
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
            }
        }
        let matrix = WeightMatrix(rows: rows, columns: columns, element: element, bytes: UnsafeRawPointer(base), owner: storage)
        return TestWeights(matrix: matrix, widened: Tensor(shape: tensor.shape, scalars: widened))
    }
}

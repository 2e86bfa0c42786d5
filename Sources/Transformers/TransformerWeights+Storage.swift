import SafeTensors
import TensorRuntime

/// A run of rows (along dim 0) of one stored tensor: a contiguous byte range of a mapped file.
struct MappedPiece: @unchecked Sendable {
    // @unchecked: SafeTensorsFile is immutable after init.
    /// The mapped file holding the tensor.
    let file: SafeTensorsFile
    /// The stored tensor.
    let info: TensorInfo
    /// Rows taken, along dim 0 (elements for a 1-d tensor).
    let rows: Range<Int>

    /// Elements per dim-0 row of the stored tensor.
    var rowElements: Int { info.shape.dropFirst().reduce(1, *) }
    /// Elements this piece contributes.
    var elementCount: Int { rows.count * rowElements }
    /// Index (within the stored tensor) of the piece's first element.
    var firstElement: Int { rows.lowerBound * rowElements }
    /// Absolute file offset of the stored tensor's first data byte.
    var tensorStart: Int { file.fileOffset(of: info) }

    /// How the stored tensor's bytes decode when they are blocks (GGUF quant types) or scaled
    /// (ComfyUI scaled fp8); nil for plain `info.dtype` values.
    let encoding: (any BlockEncoding)?

    /// The rows `rows` of the collection's tensor `entry`.
    init(entry: TensorEntry, rows: Range<Int>) {
        file = entry.file
        info = entry.info
        encoding = entry.encoding
        self.rows = rows
    }

    /// Whether the piece is ggml Q8_0 blocks (GGUF), which the runtime multiplies from the
    /// mapping with its own kernel (`WeightMatrix.Element.q8_0`).
    var isQ8_0: Bool { encoding?.name == "Q8_0" && encodedRowBytes != nil }

    /// Bytes of one dim-0 row when the piece is encoded rows of whole bytes (GGUF blocks or
    /// scaled fp8 of 2 or more dimensions: blocks run along the innermost dimension), else nil.
    var encodedRowBytes: Int? {
        guard encoding != nil, info.shape.count >= 2 else { return nil }
        return TensorEntry(info: info, file: file, encoding: encoding).rowByteCount
    }

    /// Absolute file byte range of the piece, for dtypes of whole bytes and encoded rows.
    var byteRange: Range<Int> {
        if let rowBytes = encodedRowBytes {
            return (tensorStart + rows.lowerBound * rowBytes)..<(tensorStart + rows.upperBound * rowBytes)
        }
        let width = info.dtype.bits / 8
        let start = tensorStart + firstElement * width
        return start..<(start + elementCount * width)
    }
}

/// A checkpoint tensor's block encoding (GGUF blocks other than Q8_0, ComfyUI scaled fp8) as the
/// runtime decodes it per use: rows go through the same `BlockEncoding.decode` that
/// `TensorEntry.decodeRows` (eager reading) uses, so a product sees exactly the values eager
/// reading gives.
struct BlockRows: WeightEncoding {
    /// The stored tensor's encoding.
    let encoding: any BlockEncoding
    /// Values per innermost row of the stored tensor (a whole number of blocks).
    let innerLength: Int

    /// The encoding's name (`Q4_K`, `F8_E4M3×scale`).
    var name: String { encoding.name }

    /// Bytes of `count` values: whole innermost rows of the encoding's blocks.
    func byteCount(values count: Int) -> Int {
        innerLength > 0 ? encoding.rowByteCount(rowLength: innerLength) * (count / innerLength) : 0
    }

    /// Decodes whole rows with the encoding's own decoder.
    /// Invariant: `count` is a whole number of matrix rows, each a whole number of innermost rows
    /// (so of blocks), and `source` holds `byteCount(values: count)` bytes (WeightMatrix's contract).
    func decode(_ source: UnsafeRawPointer, count: Int, into target: UnsafeMutablePointer<Float>) {
        encoding.decode(UnsafeRawBufferPointer(start: source, count: byteCount(values: count)),
                        into: UnsafeMutableBufferPointer(start: target, count: count))
    }
}

/// Where the values of one diffusers-named tensor are.
enum WeightSource: @unchecked Sendable {
    // @unchecked: both payloads are immutable after creation.
    /// Row runs of mapped tensors, concatenated along dim 0 in order.
    case mapped([MappedPiece])
    /// Float32 values held in memory.
    case memory(WeightStorage)
}

/// One diffusers-named tensor: its shape and where its values are.
struct StoredWeight: Sendable {
    /// The diffusers shape.
    let shape: [Int]
    /// The values.
    let storage: WeightSource

    init(shape: [Int], storage: WeightSource) {
        self.shape = shape
        self.storage = storage
    }

    /// Number of values.
    var elementCount: Int { shape.reduce(1, *) }

    /// The stored dtype: that of the pieces when they agree (they always do for tensors a
    /// layout conversion splits), `F32` otherwise and for in-memory weights.
    var dtype: DType {
        guard case .mapped(let pieces) = storage, let first = pieces.first?.info.dtype else { return .f32 }
        if pieces.contains(where: { $0.encoding != nil }) { return .f32 }
        return pieces.allSatisfy { $0.info.dtype == first } ? first : .f32
    }

    /// File, stored key and data offset of the first piece, for error messages.
    var location: (file: String, tensor: String, offset: Int?) {
        switch storage {
        case .mapped(let pieces):
            guard let p = pieces.first else { return ("(memory)", "?", nil) }
            if let rowBytes = p.encodedRowBytes { return (p.file.path, p.info.name, p.tensorStart + p.rows.lowerBound * rowBytes) }
            let width = p.info.dtype.bits
            return (p.file.path, p.info.name, p.tensorStart + p.firstElement * width / 8)
        case .memory: return ("(memory)", "?", nil)
        }
    }

    /// Values `range` (row-major element indices) widened to Float32.
    func floats(elements range: Range<Int>) throws(TransformerError) -> [Float] {
        switch storage {
        case .memory(let storage):
            return storage.floats(range)
        case .mapped(let pieces):
            return [Float](unsafeUninitializedCapacity: range.count) { buffer, initialized in
                Self.decode(pieces, elements: range) { chunk, offset in
                    // Invariant: `decode` hands out chunks inside 0..<range.count.
                    _ = UnsafeMutableBufferPointer(rebasing: buffer[offset..<(offset + chunk.count)]).initialize(from: chunk)
                }
                initialized = range.count
            }
        }
    }

    /// The weight as a matrix `[shape[0], rest]`; see `TransformerWeights.matrix(_:)`.
    func matrix(name: String, checkpoint: String) throws(TransformerError) -> WeightMatrix {
        guard shape.count >= 2 else {
            let at = location
            throw .badWeight(file: at.file, tensor: at.tensor, offset: at.offset,
                             reason: "\"\(name)\" has shape \(shape); a weight matrix needs at least 2 dimensions")
        }
        let rows = shape[0], columns = shape.dropFirst().reduce(1, *)
        switch storage {
        case .memory(let storage):
            return WeightMatrix(rows: rows, columns: columns, element: .float32, bytes: storage.pointer, owner: storage)
        case .mapped(let pieces):
            let stored = dtype
            if let element = Self.encodedElement(pieces, columns: columns) {
                // Blocks (GGUF) and scaled fp8 stay in their stored bytes: decoded panel by panel
                // where the product needs them.
                if let (file, range) = Self.contiguousBlocks(pieces), !range.isEmpty {
                    return WeightMatrix(rows: rows, columns: columns, element: element, bytes: file.mappedAddress(of: range), owner: file)
                }
                let copy = WeightStorage(byteCount: rows * element.rowByteCount(columns))
                var offset = 0
                for piece in pieces {
                    copy.copyBytes(from: piece.file, fileRange: piece.byteRange, toOffset: offset)
                    offset += piece.byteRange.count
                }
                return WeightMatrix(rows: rows, columns: columns, element: element, bytes: copy.pointer, owner: copy)
            }
            let blocks = pieces.contains { $0.encoding != nil }
            if !blocks, let element = WeightMatrix.Element(stored) {
                if let (file, range) = Self.contiguousRange(pieces), !range.isEmpty {
                    return WeightMatrix(rows: rows, columns: columns, element: element,
                                        bytes: file.mappedAddress(of: range), owner: file)
                }
                let copy = WeightStorage(byteCount: rows * columns * element.byteWidth)
                var offset = 0
                for piece in pieces {
                    let range = piece.byteRange
                    copy.copyBytes(from: piece.file, fileRange: range, toOffset: offset)
                    offset += range.count
                }
                return WeightMatrix(rows: rows, columns: columns, element: element, bytes: copy.pointer, owner: copy)
            }
            // 8-bit and smaller floats fit bfloat16 exactly; anything wider becomes float32.
            // Encoded rows that cannot stay encoded (pieces of different tensors) decode to
            // float32 when the matrix is built.
            let narrow = !blocks && stored.isFloatingPoint && stored.bits <= 8
            let element: WeightMatrix.Element = narrow ? .bfloat16 : .float32
            let copy = WeightStorage(byteCount: rows * columns * element.byteWidth)
            Self.decode(pieces, elements: 0..<elementCount) { chunk, offset in
                if narrow { copy.storeBFloat16(chunk, at: offset) } else { copy.storeFloat32(chunk, at: offset) }
            }
            return WeightMatrix(rows: rows, columns: columns, element: element, bytes: copy.pointer, owner: copy)
        }
    }

    /// The element encoded pieces keep as a matrix of `columns` columns: `.q8_0` when every piece
    /// is Q8_0 rows of whole blocks, `.encoded` when the pieces are rows of one encoded tensor
    /// (one encoding, one scale); nil for plain values and for encoded pieces of several tensors.
    static func encodedElement(_ pieces: [MappedPiece], columns: Int) -> WeightMatrix.Element? {
        guard let first = pieces.first, let encoding = first.encoding,
              pieces.allSatisfy({ $0.encodedRowBytes != nil }) else { return nil }
        if pieces.allSatisfy(\.isQ8_0), columns % WeightMatrix.Element.q8BlockValues == 0 { return .q8_0 }
        guard pieces.allSatisfy({ $0.file === first.file && $0.info.name == first.info.name }) else { return nil }
        return .encoded(BlockRows(encoding: encoding, innerLength: first.info.shape.last ?? 1))
    }

    /// The one file range encoded pieces cover when they are consecutive rows of one file.
    static func contiguousBlocks(_ pieces: [MappedPiece]) -> (SafeTensorsFile, Range<Int>)? {
        guard let first = pieces.first else { return nil }
        var range = first.byteRange
        for piece in pieces.dropFirst() {
            let next = piece.byteRange
            guard piece.file === first.file, next.lowerBound == range.upperBound else { return nil }
            range = range.lowerBound..<next.upperBound
        }
        return (first.file, range)
    }

    /// The one file range the pieces cover when they are consecutive bytes of one file.
    static func contiguousRange(_ pieces: [MappedPiece]) -> (SafeTensorsFile, Range<Int>)? {
        guard let first = pieces.first, first.info.dtype.bits % 8 == 0,
              !pieces.contains(where: { $0.encoding != nil }) else { return nil }
        var range = first.byteRange
        for piece in pieces.dropFirst() {
            let next = piece.byteRange
            guard piece.file === first.file, piece.info.dtype == first.info.dtype,
                  next.lowerBound == range.upperBound else { return nil }
            range = range.lowerBound..<next.upperBound
        }
        return (first.file, range)
    }

    /// Widens elements `range` of the concatenated pieces to Float32, chunk by chunk: `body`
    /// receives each chunk and its offset from `range.lowerBound`. Memory beyond one chunk is
    /// never allocated, so a large tensor is converted without a full-size scratch copy.
    ///
    /// Invariant: every file range read lies inside its stored tensor's data (element indices stay
    /// below the piece's end, sub-byte ranges are rounded out to whole bytes of the same tensor),
    /// and a chunk never exceeds the scratch buffer (`head < align ≤ 8`, `n ≤ chunk`).
    static func decode(_ pieces: [MappedPiece], elements range: Range<Int>,
                       _ body: (UnsafeBufferPointer<Float>, Int) -> Void) {
        let chunk = 1 << 14
        var pieceStart = 0
        withUnsafeTemporaryAllocation(of: Float.self, capacity: chunk + 8) { scratch in
            for piece in pieces {
                let pieceEnd = pieceStart + piece.elementCount
                defer { pieceStart = pieceEnd }
                let lo = max(range.lowerBound, pieceStart), hi = min(range.upperBound, pieceEnd)
                guard lo < hi else { continue }
                if piece.encoding != nil {
                    decodeBlocks(piece, elements: (lo - pieceStart)..<(hi - pieceStart), outputOffset: lo - range.lowerBound, body)
                    continue
                }
                let dtype = piece.info.dtype
                // Sub-byte kinds decode from a byte boundary: every `align` elements start one.
                let align = dtype.bits >= 8 ? 1 : 8 / gcd(dtype.bits, 8)
                var element = piece.firstElement + (lo - pieceStart)       // index in the stored tensor
                let end = piece.firstElement + (hi - pieceStart)
                var out = lo - range.lowerBound
                while element < end {
                    let head = element % align
                    let start = element - head
                    let n = min(chunk, end - element)
                    let bitStart = start * dtype.bits
                    let bitEnd = (element + n) * dtype.bits
                    let fileRange = (piece.tensorStart + bitStart / 8)..<(piece.tensorStart + (bitEnd + 7) / 8)
                    let part = UnsafeMutableBufferPointer(rebasing: scratch[0..<(head + n)])
                    piece.file.withBytes(fileRange: fileRange) { raw in FloatCodec.decode(dtype, from: raw, into: part) }
                    body(UnsafeBufferPointer(rebasing: part[head...]), out)
                    element += n
                    out += n
                }
            }
        }
    }
}

extension StoredWeight {
    /// Widens elements `range` (relative to the piece) of a block-encoded piece, one dim-0 row
    /// (or, for a 1-d tensor, the whole tensor) at a time; `body` as for `decode`.
    /// The encoding was checked decodable when the checkpoint was opened.
    static func decodeBlocks(_ piece: MappedPiece, elements range: Range<Int>, outputOffset: Int,
                             _ body: (UnsafeBufferPointer<Float>, Int) -> Void) {
        let entry = TensorEntry(info: piece.info, file: piece.file, encoding: piece.encoding)
        guard entry.rowByteCount != nil else {
            guard let all = try? entry.floats() else { preconditionFailure("undecodable blocks in \(piece.info.name)") }
            let first = piece.firstElement
            all[(first + range.lowerBound)..<(first + range.upperBound)].withUnsafeBufferPointer { body($0, outputOffset) }
            return
        }
        let rowElements = piece.rowElements
        var row = [Float](repeating: 0, count: rowElements)
        var element = piece.firstElement + range.lowerBound
        let end = piece.firstElement + range.upperBound
        var out = outputOffset
        while element < end {
            let index = element / rowElements, within = element % rowElements
            let n = min(rowElements - within, end - element)
            row.withUnsafeMutableBufferPointer { buffer in
                guard (try? entry.decodeRows(index..<(index + 1), into: buffer)) != nil else {
                    preconditionFailure("undecodable blocks in \(piece.info.name)")
                }
                body(UnsafeBufferPointer(rebasing: buffer[within..<(within + n)]), out)
            }
            element += n
            out += n
        }
    }
}

/// Greatest common divisor of two positive integers.
private func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }

extension WeightMatrix.Element {
    /// The element type a stored dtype is kept in without conversion, if any.
    init?(_ dtype: DType) {
        switch dtype {
        case .f32: self = .float32
        case .bf16: self = .bfloat16
        case .f16: self = .float16
        default: return nil
        }
    }
}

extension SafeTensorsFile {
    /// The address of byte `range.lowerBound` of the mapping, for a `WeightMatrix` that keeps
    /// this file alive as its owner.
    ///
    /// Invariant: the mapping covers the whole file, is read-only and stays in place until the
    /// file object is deinitialised; `withBytes` checks the range lies inside the file. The
    /// pointer escapes the closure, so it is valid only while the caller keeps `self` alive.
    func mappedAddress(of range: Range<Int>) -> UnsafeRawPointer {
        withBytes(fileRange: range) { raw in raw.baseAddress! }
    }
}

/// 64-byte-aligned heap memory owned by weights: owned copies of assembled or converted
/// matrices, and the Float32 values of in-memory weights. Freed with the last reference.
final class WeightStorage: @unchecked Sendable {
    // @unchecked: written only while being filled, before it is shared.
    /// Start of the memory.
    let pointer: UnsafeRawPointer
    /// Size in bytes.
    let byteCount: Int

    /// Uninitialised memory of `byteCount` bytes (at least one byte is allocated).
    init(byteCount: Int) {
        self.byteCount = byteCount
        pointer = UnsafeRawPointer(UnsafeMutableRawPointer.allocate(byteCount: max(1, byteCount), alignment: 64))
    }

    /// A copy of `values` as Float32.
    convenience init(copying values: [Float]) {
        self.init(byteCount: values.count * 4)
        values.withUnsafeBufferPointer { storeFloat32($0, at: 0) }
    }

    deinit { UnsafeMutableRawPointer(mutating: pointer).deallocate() }

    /// Copies bytes `range` of a mapped file to byte `offset`.
    /// Invariant: `offset + range.count <= byteCount` (checked); the memory is ours to write.
    func copyBytes(from file: SafeTensorsFile, fileRange range: Range<Int>, toOffset offset: Int) {
        precondition(offset >= 0 && offset + range.count <= byteCount, "WeightStorage: copy past the end")
        file.withBytes(fileRange: range) { raw in
            if let source = raw.baseAddress, raw.count > 0 {
                (UnsafeMutableRawPointer(mutating: pointer) + offset).copyMemory(from: source, byteCount: raw.count)
            }
        }
    }

    /// Stores `values` as Float32 starting at element `index`.
    /// Invariant: `(index + values.count) * 4 <= byteCount` (checked).
    func storeFloat32(_ values: UnsafeBufferPointer<Float>, at index: Int) {
        precondition(index >= 0 && (index + values.count) * 4 <= byteCount, "WeightStorage: store past the end")
        guard let source = values.baseAddress, !values.isEmpty else { return }
        (UnsafeMutableRawPointer(mutating: pointer) + index * 4).copyMemory(from: source, byteCount: values.count * 4)
    }

    /// Stores `values` rounded to bfloat16 (exact for values of 8 or fewer bits) at element `index`.
    /// Invariant: `(index + values.count) * 2 <= byteCount` (checked).
    func storeBFloat16(_ values: UnsafeBufferPointer<Float>, at index: Int) {
        precondition(index >= 0 && (index + values.count) * 2 <= byteCount, "WeightStorage: store past the end")
        let out = UnsafeMutableRawBufferPointer(start: UnsafeMutableRawPointer(mutating: pointer) + index * 2, count: values.count * 2)
        FloatCodec.encode(.bf16, from: values, into: out)
    }

    /// Float32 elements `range`.
    /// Invariant: the storage holds Float32 values and `range.upperBound * 4 <= byteCount` (checked).
    func floats(_ range: Range<Int>) -> [Float] {
        precondition(range.lowerBound >= 0 && range.upperBound * 4 <= byteCount, "WeightStorage: read past the end")
        let raw = UnsafeRawBufferPointer(start: pointer + range.lowerBound * 4, count: range.count * 4)
        return [Float](unsafeUninitializedCapacity: range.count) { buffer, initialized in
            FloatCodec.decode(.f32, from: raw, into: buffer)
            initialized = range.count
        }
    }
}

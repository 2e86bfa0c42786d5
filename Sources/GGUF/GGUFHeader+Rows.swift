/// Access to tensor rows in the file the header was parsed from.
extension GGUFHeader {
    /// The bytes of rows `rows` of `tensor`, inside `bytes` (the buffer `parse` validated; the
    /// tensor's byte range lies inside it). `rows` must lie within `0..<tensor.rowCount`.
    public func rowBytes(_ tensor: GGUFTensorInfo, rows: Range<Int>, in bytes: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        precondition(bytes.count == fileSize, "rowBytes: not the buffer this header was parsed from")
        precondition(rows.lowerBound >= 0 && rows.upperBound <= tensor.rowCount, "rowBytes: rows \(rows) outside 0..<\(tensor.rowCount)")
        let begin = tensor.byteRange.lowerBound + rows.lowerBound * tensor.rowByteCount
        return UnsafeRawBufferPointer(rebasing: bytes[begin..<(begin + rows.count * tensor.rowByteCount)])
    }

    /// Decodes rows `rows` of `tensor` to Float into `output` (`rows.count × rowLength` values).
    /// Throws `unsupportedType` for types FlowGuard does not decode.
    public func decodeRows(_ tensor: GGUFTensorInfo, rows: Range<Int>, from bytes: UnsafeRawBufferPointer,
                           into output: UnsafeMutableBufferPointer<Float>) throws(GGUFError) {
        guard tensor.type.isDecodable else { throw .unsupportedType(file: file, tensor: tensor.name, type: tensor.type, operation: "decoded") }
        precondition(output.count == rows.count * tensor.rowLength, "decodeRows: output holds \(output.count) values, rows need \(rows.count * tensor.rowLength)")
        tensor.type.dequantize(rowBytes(tensor, rows: rows, in: bytes), into: output)
    }
}

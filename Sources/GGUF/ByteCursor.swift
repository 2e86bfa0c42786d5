/// A bounds-checked reader of little-endian fields over a file's bytes. Every read checks that the
/// field lies inside the buffer before touching memory and throws `GGUFError.truncated` (naming
/// the field, the tensor if any, and the byte offset) when it does not. Header fields must also
/// lie within `GGUFHeader.maximumHeaderBytes` of the start, so a large file cannot make the
/// parser copy gigabytes of tensor data as "metadata".
struct ByteCursor {
    /// The whole file.
    let bytes: UnsafeRawBufferPointer
    /// The file's display name, for errors.
    let file: String
    /// Where header fields must end: the file's end or the header limit, whichever comes first.
    let limit: Int
    /// The next byte to read.
    private(set) var position: Int = 0

    init(_ bytes: UnsafeRawBufferPointer, file: String) {
        self.bytes = bytes
        self.file = file
        self.limit = min(bytes.count, GGUFHeader.maximumHeaderBytes)
    }

    /// Bytes from `position` to the limit: what header fields may still use.
    var remaining: Int { limit - position }

    /// Throws unless `count` bytes are left; `what` and `tensor` name the field for the error.
    func require(_ count: Int, _ what: String, tensor: String?) throws(GGUFError) {
        guard count <= bytes.count - position else {
            throw .truncated(file: file, tensor: tensor, what: what, offset: position, needed: count, fileSize: bytes.count)
        }
        guard count <= remaining else { throw .headerTooLarge(file: file, tensor: tensor, what: what, offset: position) }
    }

    /// Whether `declared` items of at least `unit` bytes each fit in the header's remaining
    /// bytes: nil when they do, otherwise the error to throw (`headerTooLarge` when they would
    /// fit in the file but not under the header limit, `bomb` when not even in the file).
    /// Computed by division, so no declared value can overflow.
    func refusal(_ declared: UInt64, unit: Int, at offset: Int, what: String, tensor: String?,
                 bomb: (_ available: Int) -> GGUFError) -> GGUFError? {
        if declared <= UInt64(remaining / unit) { return nil }
        let inFile = bytes.count - position
        if declared <= UInt64(inFile / unit) { return .headerTooLarge(file: file, tensor: tensor, what: what, offset: offset) }
        return bomb(inFile)
    }

    /// Reads a fixed-size integer at `position` after checking it lies inside the buffer
    /// (`loadUnaligned` needs `MemoryLayout<T>.size` bytes at `position`: `require` checked them).
    mutating func read<T: FixedWidthInteger>(_: T.Type, _ what: String, tensor: String? = nil) throws(GGUFError) -> T {
        let size = MemoryLayout<T>.size
        try require(size, what, tensor: tensor)
        let value = T(littleEndian: bytes.loadUnaligned(fromByteOffset: position, as: T.self))
        position += size
        return value
    }

    /// The `count` bytes at `position`, after checking they lie inside the buffer; advances past them.
    mutating func slice(_ count: Int, _ what: String, tensor: String? = nil) throws(GGUFError) -> UnsafeRawBufferPointer {
        try require(count, what, tensor: tensor)
        let part = UnsafeRawBufferPointer(rebasing: bytes[position..<(position + count)])
        position += count
        return part
    }

    /// Reads a GGUF string (u64 length, then that many UTF-8 bytes). The length is checked
    /// against the bytes left before anything is allocated.
    mutating func string(_ what: String, tensor: String? = nil) throws(GGUFError) -> String {
        let start = position
        let length = try read(UInt64.self, "the length of \(what)", tensor: tensor)
        if let error = refusal(length, unit: 1, at: start, what: what, tensor: tensor, bomb: { available in
            .stringTooLong(file: file, tensor: tensor, what: what, declared: length, available: available, offset: start)
        }) { throw error }
        let textStart = position
        let raw = try slice(Int(length), what, tensor: tensor)
        guard let text = String(validating: raw, as: UTF8.self) else {
            throw .notUTF8(file: file, tensor: tensor, what: what, offset: textStart)
        }
        return text
    }
}

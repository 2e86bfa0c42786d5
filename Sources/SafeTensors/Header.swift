import JSON
import SystemSupport

/// A validated safetensors header: the tensors in data order, the optional `__metadata__`, and
/// where the data buffer starts.
public struct SafeTensorsHeader: Sendable {
    /// Tensors sorted by their data offsets (the order of the bytes in the file).
    public private(set) var tensors: [TensorInfo]
    /// The `__metadata__` map in document order; nil when absent or `null`.
    public private(set) var metadata: [(key: String, value: String)]?
    /// N: the length of the JSON header in bytes (including padding).
    public let headerLength: Int
    /// Size of the data buffer in bytes.
    public let dataSize: Int
    /// Byte offset of each tensor's key inside the file, for error messages.
    public let keyOffsets: [String: Int]
    private let index: [String: Int]

    /// Byte offset in the file where the data buffer begins (8 + N).
    public var dataStart: Int { 8 + headerLength }

    /// The tensor called `name`, if present.
    public func info(_ name: String) -> TensorInfo? { index[name].map { tensors[$0] } }

    /// The metadata value for `key`, if present.
    public func metadataValue(_ key: String) -> String? { metadata?.first(where: { $0.key == key })?.value }

    /// Parses and validates a header exactly as the reference reader does (plus rejecting
    /// duplicate keys). `bytes` is the start of the file — at least the first 8 + N bytes —
    /// and `fileSize` the file's full size; `file` is used in error messages only.
    public static func parse(_ bytes: UnsafeRawBufferPointer, fileSize: Int, file: String) throws(SafeTensorsError) -> SafeTensorsHeader {
        let (n, json, members) = try parseJSONObject(bytes, fileSize: fileSize, file: file)
        let keyOffsets = try scanKeyOffsets(json, memberCount: members.count, file: file)
        var raws: [RawEntry] = []
        raws.reserveCapacity(members.count)
        var metadata: [(key: String, value: String)]? = nil
        for (key, value) in members {
            let offset = keyOffsets[key] ?? 8
            if key == "__metadata__" {
                metadata = try readMetadata(value, offset: offset, file: file)
                continue
            }
            raws.append(try readEntry(key, value, offset: offset, file: file))
        }

        // Validate in the reference order: sorted by (begin, end), contiguous from 0.
        raws.sort { ($0.begin, $0.end) < ($1.begin, $1.end) }
        let end = try checkContiguousSizes(raws, file: file)
        let dataSize = fileSize - 8 - n
        guard end == UInt64(dataSize) else {
            throw .incompleteBuffer(file: file, expectedSize: Int(clamping: end), actualSize: dataSize)
        }
        let (tensors, index) = try tensorInfos(raws, file: file)
        return SafeTensorsHeader(tensors: tensors, metadata: metadata, headerLength: n, dataSize: dataSize,
                                 keyOffsets: keyOffsets, index: index)
    }

    /// One tensor entry as written, before the checks that need all of them.
    private struct RawEntry {
        var name: String
        var dtype: DType
        var shape: [UInt64]
        var begin: UInt64
        var end: UInt64
        var keyOffset: Int
    }

    /// The length field and the JSON text: N within the limit and the file, valid UTF-8, a bounded
    /// number of values, strict JSON without raw control characters in strings, an object.
    /// Returns N, the text and the object's members.
    private static func parseJSONObject(_ bytes: UnsafeRawBufferPointer, fileSize: Int, file: String) throws(SafeTensorsError)
        -> (length: Int, json: UnsafeRawBufferPointer, members: [(key: String, value: JSONValue)]) {
        guard fileSize >= 8, bytes.count >= 8 else { throw .headerTooSmall(file: file, size: fileSize) }
        let declared = bytes.loadUnaligned(as: UInt64.self).littleEndian
        guard declared <= 100_000_000 else { throw .headerTooLarge(file: file, declared: declared) }
        let n = Int(declared)
        guard 8 + n <= fileSize, 8 + n <= bytes.count else {
            throw .invalidHeaderLength(file: file, declared: declared, fileSize: fileSize)
        }
        let json = UnsafeRawBufferPointer(rebasing: bytes[8..<(8 + n)])
        if let bad = firstInvalidUTF8(json) { throw .headerNotUTF8(file: file, offset: 8 + bad) }
        // Ours: a bound on the number of JSON values, so that parsing cannot take gigabytes.
        if let offset = JSONValue.offsetExceedingValueCount(json, limit: JSONValue.maximumValues) {
            throw .invalidHeader(file: file, tensor: nil, reason: "more than \(JSONValue.maximumValues) JSON values and keys (about 360,000 tensors); refused before parsing, to bound memory", offset: 8 + offset)
        }
        let root: JSONValue
        do { root = try JSONValue.parse(json, maximumValues: .max) } catch {
            throw .headerNotJSON(file: file, reason: error.reason, offset: 8 + error.offset)
        }
        // json-c accepts raw control characters inside strings; JSON (and the reference) does not.
        if let bad = firstRawControlCharacterInString(json) {
            throw .headerNotJSON(file: file, reason: "control character (U+\(String(json[bad], radix: 16, uppercase: true))) inside a string", offset: 8 + bad)
        }
        guard case let .object(members) = root else {
            throw .invalidHeader(file: file, tensor: nil, reason: "the header must be a JSON object", offset: 8)
        }
        return (n, json, members)
    }

    /// The file offset of every top-level key, refusing repeated keys and keys with NUL.
    /// json-c keeps the last of repeated keys and cuts keys at NUL; our own scan of the
    /// top-level keys sees every key as written, with its position.
    private static func scanKeyOffsets(_ json: UnsafeRawBufferPointer, memberCount: Int, file: String) throws(SafeTensorsError) -> [String: Int] {
        let keys: [(key: String, offset: Int)]
        do { keys = try scanTopLevelKeys(json) } catch {
            throw .invalidHeader(file: file, tensor: nil, reason: error.reason, offset: 8 + error.offset)
        }
        var keyOffsets: [String: Int] = [:]
        keyOffsets.reserveCapacity(keys.count)
        for (key, offset) in keys {
            if keyOffsets[key] != nil { throw .duplicateTensor(file: file, tensor: key, offset: 8 + offset) }
            if key.utf8.contains(0) {
                throw .invalidHeader(file: file, tensor: key, reason: "tensor names may not contain NUL", offset: 8 + offset)
            }
            keyOffsets[key] = 8 + offset
        }
        guard keys.count == memberCount else {
            throw .invalidHeader(file: file, tensor: nil, reason: "header keys could not be read consistently", offset: 8)
        }
        return keyOffsets
    }

    /// `__metadata__`: null, or an object of strings (kept in document order).
    private static func readMetadata(_ value: JSONValue, offset: Int, file: String) throws(SafeTensorsError) -> [(key: String, value: String)]? {
        switch value {
        case .null: return nil
        case let .object(entries):
            var pairs: [(key: String, value: String)] = []
            for (mk, mv) in entries {
                guard case let .string(s) = mv else {
                    throw .invalidHeader(file: file, tensor: nil, reason: "__metadata__ value for '\(escapeForDisplay(mk))' is not a string", offset: offset)
                }
                pairs.append((mk, s))
            }
            return pairs
        default:
            throw .invalidHeader(file: file, tensor: nil, reason: "__metadata__ must be an object of strings", offset: offset)
        }
    }

    /// One tensor entry: an object with a known `dtype`, a `shape` of non-negative integers and
    /// two non-negative `data_offsets`.
    private static func readEntry(_ key: String, _ value: JSONValue, offset: Int, file: String) throws(SafeTensorsError) -> RawEntry {
        func fail(_ reason: String) -> SafeTensorsError {
            .invalidHeader(file: file, tensor: key, reason: reason, offset: offset)
        }
        guard case .object = value else { throw fail("entry is not an object") }
        guard let dtypeValue = value["dtype"] else { throw fail("missing field 'dtype'") }
        guard case let .string(dtypeName) = dtypeValue else { throw fail("'dtype' is not a string") }
        guard let dtype = DType(rawValue: dtypeName) else { throw fail("unknown dtype '\(escapeForDisplay(dtypeName))'") }
        guard let shapeValue = value["shape"] else { throw fail("missing field 'shape'") }
        guard case let .array(dims) = shapeValue else { throw fail("'shape' is not an array") }
        var shape: [UInt64] = []
        shape.reserveCapacity(dims.count)
        for d in dims {
            guard let u = unsignedInteger(d) else { throw fail("shape entries must be non-negative integers") }
            shape.append(u)
        }
        guard let offsetsValue = value["data_offsets"] else { throw fail("missing field 'data_offsets'") }
        guard case let .array(pair) = offsetsValue, pair.count == 2 else { throw fail("'data_offsets' must be an array of two integers") }
        guard let begin = unsignedInteger(pair[0]), let end = unsignedInteger(pair[1]) else {
            throw fail("data_offsets must be non-negative integers")
        }
        return RawEntry(name: key, dtype: dtype, shape: shape, begin: begin, end: end, keyOffset: offset)
    }

    /// The reference's checks on entries sorted by data offsets: each begins where the previous
    /// ended, and covers exactly dtype × shape bytes (without overflow, in whole bytes).
    /// Returns where the last one ends.
    private static func checkContiguousSizes(_ raws: [RawEntry], file: String) throws(SafeTensorsError) -> UInt64 {
        var start: UInt64 = 0
        for raw in raws {
            if raw.begin != start || raw.end < raw.begin {
                throw .invalidOffset(file: file, tensor: raw.name, begin: Int(clamping: raw.begin), expected: Int(clamping: start), offset: raw.keyOffset)
            }
            start = raw.end
            var elements: UInt64 = 1
            for d in raw.shape {
                let (p, o) = elements.multipliedReportingOverflow(by: d)
                if o { throw .validationOverflow(file: file, tensor: raw.name, offset: raw.keyOffset) }
                elements = p
            }
            let (nbits, o) = elements.multipliedReportingOverflow(by: UInt64(raw.dtype.bits))
            if o { throw .validationOverflow(file: file, tensor: raw.name, offset: raw.keyOffset) }
            if nbits % 8 != 0 { throw .misalignedSlice(file: file, tensor: raw.name, offset: raw.keyOffset) }
            if raw.end - raw.begin != nbits / 8 {
                throw .tensorInvalidInfo(file: file, tensor: raw.name, expectedBytes: Int(clamping: nbits / 8),
                                         actualBytes: Int(clamping: raw.end - raw.begin), offset: raw.keyOffset)
            }
        }
        return start
    }

    /// The checked entries as `TensorInfo`s in data order, and the name → position index.
    /// Every range now lies inside the file, so offsets fit in Int. Dimensions can still be
    /// huge on zero-sized tensors; we refuse those rather than carry unsigned shapes around.
    private static func tensorInfos(_ raws: [RawEntry], file: String) throws(SafeTensorsError) -> (tensors: [TensorInfo], index: [String: Int]) {
        var tensors: [TensorInfo] = []
        tensors.reserveCapacity(raws.count)
        var index: [String: Int] = [:]
        index.reserveCapacity(raws.count)
        for raw in raws {
            guard raw.shape.allSatisfy({ $0 <= UInt64(Int.max) }) else {
                throw .invalidHeader(file: file, tensor: raw.name, reason: "a dimension exceeds 2^63-1", offset: raw.keyOffset)
            }
            // A zero-sized tensor passes 9–13 whatever its other dimensions are; refuse those whose
            // non-zero dimensions multiply past Int.max, so no product of dimensions in any order
            // overflows Int for our users (Matrix, elementCount, row sizes).
            var nonZeroProduct: UInt64 = 1
            for d in raw.shape where d != 0 {
                let (p, o) = nonZeroProduct.multipliedReportingOverflow(by: d)
                guard !o, p <= UInt64(Int.max) else {
                    throw .invalidHeader(file: file, tensor: raw.name, reason: "the non-zero dimensions multiply past 2^63-1", offset: raw.keyOffset)
                }
                nonZeroProduct = p
            }
            index[raw.name] = tensors.count
            tensors.append(TensorInfo(name: raw.name, dtype: raw.dtype, shape: raw.shape.map { Int($0) },
                                      dataRange: Int(raw.begin)..<Int(raw.end)))
        }
        return (tensors, index)
    }

    private static func unsignedInteger(_ value: JSONValue) -> UInt64? {
        switch value {
        case let .int(v): return v >= 0 ? UInt64(v) : nil
        case let .uint(v): return v
        default: return nil
        }
    }
}

/// Offset of the first byte that breaks UTF-8 validity, or nil if the bytes are valid UTF-8.
func firstInvalidUTF8(_ bytes: UnsafeRawBufferPointer) -> Int? {
    // Fast path: pure ASCII is by far the common case for headers.
    var i = 0
    let n = bytes.count
    while i < n {
        let b = bytes[i]
        if b < 0x80 { i += 1; continue }
        let length: Int
        var minimum: UInt32
        var scalar: UInt32
        switch b {
        case 0xC2...0xDF: length = 2; scalar = UInt32(b & 0x1F); minimum = 0x80
        case 0xE0...0xEF: length = 3; scalar = UInt32(b & 0x0F); minimum = 0x800
        case 0xF0...0xF4: length = 4; scalar = UInt32(b & 0x07); minimum = 0x10000
        default: return i
        }
        guard i + length <= n else { return i }
        for k in 1..<length {
            let c = bytes[i + k]
            guard c & 0xC0 == 0x80 else { return i }
            scalar = scalar << 6 | UInt32(c & 0x3F)
        }
        if scalar < minimum || scalar > 0x10FFFF || (0xD800...0xDFFF).contains(scalar) { return i }
        i += length
    }
    return nil
}

/// Offset of the first raw byte below 0x20 inside a JSON string literal, if any. The text is
/// valid JSON apart from that, so quotes and backslashes delimit strings reliably.
func firstRawControlCharacterInString(_ text: UnsafeRawBufferPointer) -> Int? {
    var inString = false
    var escaped = false
    for i in 0..<text.count {
        let c = text[i]
        if inString {
            if escaped { escaped = false; continue }
            if c == 0x5C { escaped = true } else if c == 0x22 { inString = false } else if c < 0x20 { return i }
        } else if c == 0x22 {
            inString = true
        }
    }
    return nil
}

/// A problem found while scanning header keys.
struct KeyScanError: Error {
    var reason: String
    var offset: Int
}

/// Lists the keys of the top-level JSON object in document order with the byte offset of each
/// key's opening quote, decoding escapes exactly. The text has already been accepted by json-c;
/// this scan only needs to see what json-c hides (repeated keys and keys with NUL).
func scanTopLevelKeys(_ text: UnsafeRawBufferPointer) throws(KeyScanError) -> [(key: String, offset: Int)] {
    var scanner = KeyScanner(text: text)
    return try scanner.topLevelKeys()
}

/// A cursor over JSON text for `scanTopLevelKeys`: reads strings exactly, skips values.
private struct KeyScanner {
    let text: UnsafeRawBufferPointer
    /// The next byte to read.
    var i = 0
    var n: Int { text.count }

    init(text: UnsafeRawBufferPointer) { self.text = text }

    func fail(_ r: String) -> KeyScanError { KeyScanError(reason: r, offset: i) }

    mutating func skipSpace() { while i < n, text[i] == 0x20 || text[i] == 0x09 || text[i] == 0x0A || text[i] == 0x0D { i += 1 } }

    /// The keys of the object starting at the cursor (after optional whitespace).
    mutating func topLevelKeys() throws(KeyScanError) -> [(key: String, offset: Int)] {
        skipSpace()
        guard i < n, text[i] == 0x7B else { throw fail("the header must be a JSON object") }
        i += 1
        var keys: [(key: String, offset: Int)] = []
        skipSpace()
        if i < n, text[i] == 0x7D { return keys }
        while true {
            skipSpace()
            guard i < n, text[i] == 0x22 else { throw fail("expected a key") }
            let at = i
            let key = try readString()
            keys.append((key, at))
            skipSpace()
            guard i < n, text[i] == 0x3A else { throw fail("expected ':'") }
            i += 1
            skipSpace()
            try skipValue()
            skipSpace()
            guard i < n else { throw fail("unterminated object") }
            if text[i] == 0x2C { i += 1; continue }
            if text[i] == 0x7D { break }
            throw fail("expected ',' or '}'")
        }
        return keys
    }

    /// Four hex digits of a `\u` escape.
    mutating func hex4() throws(KeyScanError) -> UInt32 {
        guard i + 4 <= n else { throw fail("truncated \\u escape") }
        var v: UInt32 = 0
        for k in 0..<4 {
            let c = text[i + k]
            let d: UInt32
            switch c {
            case 0x30...0x39: d = UInt32(c - 0x30)
            case 0x41...0x46: d = UInt32(c - 0x41 + 10)
            case 0x61...0x66: d = UInt32(c - 0x61 + 10)
            default: throw fail("bad \\u escape")
            }
            v = v << 4 | d
        }
        i += 4
        return v
    }

    /// The string whose opening quote is at the cursor, escapes decoded.
    mutating func readString() throws(KeyScanError) -> String {
        // i is at the opening quote.
        i += 1
        var bytes: [UInt8] = []
        while true {
            guard i < n else { throw fail("unterminated string") }
            let c = text[i]
            if c == 0x22 { i += 1; break }
            if c != 0x5C { bytes.append(c); i += 1; continue }
            i += 1
            guard i < n else { throw fail("unterminated escape") }
            let e = text[i]
            i += 1
            switch e {
            case 0x22: bytes.append(0x22)
            case 0x5C: bytes.append(0x5C)
            case 0x2F: bytes.append(0x2F)
            case 0x62: bytes.append(0x08)
            case 0x66: bytes.append(0x0C)
            case 0x6E: bytes.append(0x0A)
            case 0x72: bytes.append(0x0D)
            case 0x74: bytes.append(0x09)
            case 0x75: bytes.append(contentsOf: try unicodeEscape())
            default: throw fail("bad escape")
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The UTF-8 bytes of a `\u` escape whose `\u` was just read (a surrogate pair takes two).
    mutating func unicodeEscape() throws(KeyScanError) -> [UInt8] {
        var scalar = try hex4()
        if (0xD800...0xDBFF).contains(scalar) {
            guard i + 6 <= n, text[i] == 0x5C, text[i + 1] == 0x75 else { throw fail("lone surrogate in \\u escape") }
            i += 2
            let low = try hex4()
            guard (0xDC00...0xDFFF).contains(low) else { throw fail("lone surrogate in \\u escape") }
            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
        } else if (0xDC00...0xDFFF).contains(scalar) {
            throw fail("lone surrogate in \\u escape")
        }
        guard let u = Unicode.Scalar(scalar) else { throw fail("bad \\u escape") }
        return Array(String(Character(u)).utf8)
    }

    /// Skips one value (the cursor stops at the `,` or `}` after it).
    mutating func skipValue() throws(KeyScanError) {
        var depth = 0
        while i < n {
            let c = text[i]
            switch c {
            case 0x22: _ = try readString(); if depth == 0 { return }; continue
            case 0x7B, 0x5B: depth += 1
            case 0x7D, 0x5D:
                if depth == 0 { return }
                depth -= 1
                if depth == 0 { i += 1; return }
            case 0x2C: if depth == 0 { return }
            default: break
            }
            i += 1
        }
    }
}

extension SafeTensorsHeader {
    /// The header of a file another container's reader read: its tensors (byte ranges relative to
    /// the layout's data start) and metadata, in the shape every reader of `SafeTensorsFile` uses.
    init(foreign layout: ContainerLayout, fileSize: Int) {
        var index: [String: Int] = [:]
        for (i, info) in layout.tensors.enumerated() { index[info.name] = i }
        self.init(tensors: layout.tensors, metadata: layout.metadata, headerLength: layout.dataStart - 8,
                  dataSize: fileSize - layout.dataStart, keyOffsets: [:], index: index)
    }
}

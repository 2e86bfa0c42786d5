import JSON
import SafeTensors

extension DeltaArchiveReader {
    /// Checks, in order, everything that can be checked without decompressing a tensor: magic and
    /// version, trailer, index bounds and checksum, every index field, the exact contiguity of the
    /// frames, sizes against dtype × shape and the limits, then decodes the source header and
    /// checks it describes exactly the indexed tensors. See `docs/delta-archive.md`, "Validation".
    static func validate(_ file: UnsafeRawBufferPointer, file path: String, limits: DeltaReadLimits)
        throws(DeltaArchiveError) -> (index: DeltaIndex, headerBytes: [UInt8], header: SafeTensorsHeader) {
        try checkPreamble(file, file: path)
        let (indexJSON, start) = try readIndexText(file, file: path)
        let root: JSONValue
        do { root = try JSONValue.parse(indexJSON) } catch {
            throw .corruptIndex(file: path, tensor: nil, reason: "not JSON: \(error.reason) (at byte \(error.offset) of the decompressed index)", offset: start)
        }
        var parser = IndexParser(file: path, offset: start)
        let index = try parser.index(root, limits: limits)
        try checkFramesContiguous(index, indexStart: start, file: path)
        let (headerBytes, header) = try decodeSourceHeader(file, index: index, indexStart: start, file: path)
        return (index, headerBytes, header)
    }

    /// The first 16 bytes: the magic, the version this reader knows and flags 0.
    private static func checkPreamble(_ file: UnsafeRawBufferPointer, file path: String) throws(DeltaArchiveError) {
        guard Array(file[0..<8]) == DeltaArchiveFormat.magic else { throw .badMagic(file: path, offset: 0) }
        let version = file.loadUnaligned(fromByteOffset: 8, as: UInt32.self).littleEndian
        guard version == DeltaArchiveFormat.version else { throw .unsupportedVersion(file: path, version: version, offset: 8) }
        let flags = file.loadUnaligned(fromByteOffset: 12, as: UInt32.self).littleEndian
        guard flags == 0 else { throw .unsupportedVersion(file: path, version: flags, offset: 12) }
    }

    /// The trailer and the index frame it points at: bounds checked without overflow, sizes
    /// against the limits before anything is allocated, decompressed and checked against the
    /// trailer's XXH64. Returns the index JSON text and the index frame's offset.
    private static func readIndexText(_ file: UnsafeRawBufferPointer, file path: String) throws(DeltaArchiveError) -> (json: [UInt8], start: Int) {
        let size = file.count
        let pre = DeltaArchiveFormat.preambleSize, tail = DeltaArchiveFormat.trailerSize
        let trailer = size - tail
        guard Array(file[(trailer + 24)..<size]) == DeltaArchiveFormat.tailMagic else {
            throw .truncated(file: path, reason: "the trailer magic FGDTAIL is missing (file cut short or damaged)", offset: trailer + 24)
        }
        let indexOffset = file.loadUnaligned(fromByteOffset: trailer, as: UInt64.self).littleEndian
        let indexLength = file.loadUnaligned(fromByteOffset: trailer + 8, as: UInt64.self).littleEndian
        let indexHash = file.loadUnaligned(fromByteOffset: trailer + 16, as: UInt64.self).littleEndian
        guard indexLength <= UInt64(DeltaArchiveFormat.maximumIndexLength) else {
            throw .tooLarge(file: path, tensor: nil, declared: indexLength, limit: UInt64(DeltaArchiveFormat.maximumIndexLength), offset: trailer + 8)
        }
        // Compared without adding: a hostile offset near 2^64 must not overflow.
        guard indexOffset >= UInt64(pre), indexOffset <= UInt64(trailer), UInt64(trailer) - indexOffset == indexLength else {
            throw .corruptIndex(file: path, tensor: nil, reason: "trailer places the index at \(indexOffset)..<\(indexOffset &+ indexLength) but it must end at the trailer (byte \(trailer))", offset: trailer)
        }
        let start = Int(indexOffset)
        let indexFrame = UnsafeRawBufferPointer(rebasing: file[start..<trailer])
        func indexFail(_ reason: String) -> DeltaArchiveError { .corruptIndex(file: path, tensor: nil, reason: reason, offset: start) }
        let indexRaw: UInt64?
        do { indexRaw = try Zstd.frameContentSize(indexFrame) } catch { throw indexFail(error.reason) }
        guard let indexRaw else { throw indexFail("index frame does not record its size") }
        guard indexRaw <= UInt64(DeltaArchiveFormat.maximumIndexLength) else {
            throw .tooLarge(file: path, tensor: nil, declared: indexRaw, limit: UInt64(DeltaArchiveFormat.maximumIndexLength), offset: start)
        }
        let indexFrameLength: Int
        do { indexFrameLength = try Zstd.frameCompressedSize(indexFrame) } catch { throw indexFail(error.reason) }
        guard indexFrameLength == indexFrame.count, indexFrame[4] & 0x18 == 0 else { throw indexFail("the index frame does not fill the index region exactly") }
        var indexJSON = [UInt8](repeating: 0, count: Int(indexRaw))
        let inflated = indexJSON.withUnsafeMutableBytes { b in Result { () throws(ZstdError) in try Zstd.decompress(indexFrame, into: b) } }
        if case let .failure(error) = inflated { throw indexFail(error.reason) }
        guard XXH64.hash(indexJSON) == indexHash else {
            throw .corruptIndex(file: path, tensor: nil, reason: "XXH64 of the index does not match the trailer", offset: start)
        }
        return (indexJSON, start)
    }

    /// The frames are contiguous: source header at the preamble's end, chunks in index order,
    /// the index right after the last chunk.
    private static func checkFramesContiguous(_ index: DeltaIndex, indexStart start: Int, file path: String) throws(DeltaArchiveError) {
        var cursor = DeltaArchiveFormat.preambleSize
        func place(_ c: DeltaChunk, _ tensor: String?) throws(DeltaArchiveError) {
            guard c.offset == cursor else {
                throw .corruptIndex(file: path, tensor: tensor, reason: "frame at byte \(c.offset) but the previous one ends at \(cursor) (frames must be contiguous)", offset: start)
            }
            guard c.length > 0, c.length <= start - cursor else {
                throw .corruptIndex(file: path, tensor: tensor, reason: "frame of \(c.length) bytes at \(c.offset) runs past the index at \(start)", offset: start)
            }
            cursor += c.length
        }
        try place(index.sourceHeader, nil)
        for entry in index.entries { for chunk in entry.chunks { try place(chunk, entry.name) } }
        guard cursor == start else {
            throw .corruptIndex(file: path, tensor: nil, reason: "\(start - cursor) unaccounted bytes between the last frame (ends at \(cursor)) and the index", offset: cursor)
        }
    }

    /// The source header: decoded, parsed as safetensors, and compared with the index (same
    /// tensors in the same order, same metadata).
    private static func decodeSourceHeader(_ file: UnsafeRawBufferPointer, index: DeltaIndex, indexStart start: Int, file path: String)
        throws(DeltaArchiveError) -> (bytes: [UInt8], header: SafeTensorsHeader) {
        let sh = index.sourceHeader
        var headerBytes = [UInt8](repeating: 0, count: sh.rawLength)
        let frame = UnsafeRawBufferPointer(rebasing: file[sh.offset..<(sh.offset + sh.length)])
        func headerFail(_ reason: String) -> DeltaArchiveError { .corruptFrame(file: path, tensor: "(source header)", reason: reason, offset: sh.offset) }
        let declared: UInt64?
        do { declared = try Zstd.frameContentSize(frame) } catch { throw headerFail(error.reason) }
        guard let declared, declared == UInt64(sh.rawLength) else {
            throw headerFail("frame content size does not match the index (refused before decompressing)")
        }
        let frameLength: Int
        do { frameLength = try Zstd.frameCompressedSize(frame) } catch { throw headerFail(error.reason) }
        guard frameLength == sh.length else { throw headerFail("frame length does not match the index") }
        let decoded = headerBytes.withUnsafeMutableBytes { b in
            Result { () throws(ZstdError) in try Zstd.decompress(frame, into: b) }
        }
        if case let .failure(error) = decoded { throw headerFail(error.reason) }
        guard XXH64.hash(headerBytes) == sh.hash else { throw headerFail("XXH64 of the source header does not match the index") }
        let dataSize = index.entries.last?.dataRange.upperBound ?? 0
        let header: SafeTensorsHeader
        do throws(SafeTensorsError) {
            header = try headerBytes.withUnsafeBytes { raw in
                Result { () throws(SafeTensorsError) in
                    try SafeTensorsHeader.parse(raw, fileSize: headerBytes.count + dataSize, file: path + " (source header)")
                }
            }.get()
        } catch { throw .corruptIndex(file: path, tensor: nil, reason: "stored source header is invalid: \(error.description)", offset: sh.offset) }
        guard header.dataStart == headerBytes.count else {
            throw .corruptIndex(file: path, tensor: nil, reason: "stored source header is \(headerBytes.count) bytes but declares \(header.dataStart)", offset: sh.offset)
        }
        guard header.tensors.count == index.entries.count else {
            throw .corruptIndex(file: path, tensor: nil, reason: "source header lists \(header.tensors.count) tensors, the index \(index.entries.count)", offset: start)
        }
        for (info, entry) in zip(header.tensors, index.entries) where info != entry.info {
            throw .corruptIndex(file: path, tensor: entry.name, reason: "index entry disagrees with the source header (\(info.name) \(info.dtype.rawValue) \(info.shape) \(info.dataRange))", offset: start)
        }
        let m1 = header.metadata.map { $0.map { [$0.key, $0.value] } }, m2 = index.metadata.map { $0.map { [$0.key, $0.value] } }
        guard m1 == m2 else { throw .corruptIndex(file: path, tensor: nil, reason: "metadata differs from the source header's __metadata__", offset: start) }
        return (headerBytes, header)
    }
}

/// Reads the index JSON into a `DeltaIndex`, rejecting anything missing, mistyped or impossible.
struct IndexParser {
    let file: String
    let offset: Int
    var tensor: String? = nil

    init(file: String, offset: Int) {
        self.file = file
        self.offset = offset
    }

    func fail(_ reason: String) -> DeltaArchiveError { .corruptIndex(file: file, tensor: tensor, reason: reason, offset: offset) }

    func member(_ object: JSONValue, _ key: String) throws(DeltaArchiveError) -> JSONValue {
        guard let value = object[key] else { throw fail("missing \"\(key)\"") }
        return value
    }
    func int(_ object: JSONValue, _ key: String) throws(DeltaArchiveError) -> Int {
        guard let v = try member(object, key).nonNegativeInt else { throw fail("\"\(key)\" must be a non-negative integer") }
        return v
    }
    func string(_ object: JSONValue, _ key: String) throws(DeltaArchiveError) -> String {
        guard let v = try member(object, key).stringValue else { throw fail("\"\(key)\" must be a string") }
        return v
    }
    func optionalString(_ object: JSONValue, _ key: String) throws(DeltaArchiveError) -> String? {
        let v = try member(object, key)
        if v == .null { return nil }
        guard let s = v.stringValue else { throw fail("\"\(key)\" must be a string or null") }
        return s
    }
    func hash(_ text: String, _ key: String) throws(DeltaArchiveError) -> UInt64 {
        guard text.utf8.count == 16, text.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }),
              let v = UInt64(text, radix: 16) else { throw fail("\"\(key)\" must be 16 lower-case hex digits") }
        return v
    }
    func chunk(_ v: JSONValue, xor: Bool) throws(DeltaArchiveError) -> DeltaChunk {
        guard v.objectMembers != nil else { throw fail("a chunk must be an object") }
        var c = DeltaChunk(offset: try int(v, "offset"), length: try int(v, "length"), rawLength: try int(v, "raw_length"),
                           hash: try hash(try string(v, "xxh64"), "xxh64"))
        if xor { c.referenceHash = try hash(try string(v, "ref_xxh64"), "ref_xxh64") }
        else if v["ref_xxh64"] != nil { throw fail("\"ref_xxh64\" on a chunk that is not an XOR delta") }
        return c
    }

    /// The whole index: format, version, chunk size, the recorded strings, metadata, the source
    /// header's frame and every tensor (in data order, contiguous, within `limits`).
    mutating func index(_ root: JSONValue, limits: DeltaReadLimits) throws(DeltaArchiveError) -> DeltaIndex {
        guard root.objectMembers != nil else { throw fail("not a JSON object") }
        guard try string(root, "format") == "fgdelta" else { throw fail("\"format\" must be \"fgdelta\"") }
        guard try int(root, "version") == Int(DeltaArchiveFormat.version) else { throw fail("\"version\" disagrees with the preamble") }
        let chunkSize = try int(root, "chunk_size")
        guard DeltaArchiveFormat.chunkSizes.contains(chunkSize), chunkSize % 8 == 0 else {
            throw fail("chunk_size \(chunkSize) outside \(DeltaArchiveFormat.chunkSizes) or not a multiple of 8")
        }
        let fingerprint = try optionalString(root, "base_fingerprint")
        let config = try optionalString(root, "config")
        let metadata = try self.metadata(try member(root, "metadata"))
        let source = try chunk(try member(root, "source_header"), xor: false)
        guard source.rawLength >= 8, source.rawLength <= DeltaArchiveFormat.maximumSourceHeader else {
            throw .tooLarge(file: file, tensor: nil, declared: UInt64(source.rawLength), limit: UInt64(DeltaArchiveFormat.maximumSourceHeader), offset: offset)
        }
        guard let list = try member(root, "tensors").arrayValue else { throw fail("\"tensors\" must be an array") }
        var entries: [DeltaEntry] = []
        entries.reserveCapacity(list.count)
        var tally = EntryTally()
        for item in list {
            entries.append(try entry(item, chunkSize: chunkSize, limits: limits, tally: &tally))
        }
        tensor = nil
        return DeltaIndex(chunkSize: chunkSize, baseFingerprint: fingerprint, config: config, metadata: metadata,
                          sourceHeader: source, entries: entries)
    }

    /// `"metadata"`: null, or an object of strings in document order.
    func metadata(_ m: JSONValue) throws(DeltaArchiveError) -> [(key: String, value: String)]? {
        guard m != .null else { return nil }
        guard let members = m.objectMembers else { throw fail("\"metadata\" must be an object or null") }
        var metadata: [(key: String, value: String)] = []
        for (k, v) in members {
            guard let s = v.stringValue else { throw fail("metadata value for \"\(k)\" must be a string") }
            metadata.append((k, s))
        }
        return metadata
    }

    /// What the tensors read so far add up to: their names, where the last one ends, their raw bytes.
    struct EntryTally {
        var seen = Set<String>()
        var dataEnd = 0
        var total: UInt64 = 0
    }

    /// One tensor: a new name, a known dtype, a shape, data offsets that continue the previous
    /// tensor's and cover dtype × shape bytes (the running total within `limits`), a codec, byte
    /// planes, the XOR flag and exactly the chunks its size needs. Sets `tensor` to its name.
    mutating func entry(_ item: JSONValue, chunkSize: Int, limits: DeltaReadLimits, tally: inout EntryTally) throws(DeltaArchiveError) -> DeltaEntry {
        tensor = nil
        guard item.objectMembers != nil else { throw fail("a tensor must be an object") }
        let name = try string(item, "name")
        tensor = name
        guard tally.seen.insert(name).inserted else { throw fail("duplicate tensor name") }
        guard let dtype = DType(rawValue: try string(item, "dtype")) else { throw fail("unknown dtype") }
        guard let dims = try member(item, "shape").arrayValue else { throw fail("\"shape\" must be an array") }
        var shape: [Int] = []
        for d in dims {
            guard let v = d.nonNegativeInt else { throw fail("shape entries must be non-negative integers") }
            shape.append(v)
        }
        guard let offsets = try member(item, "data_offsets").arrayValue, offsets.count == 2,
              let begin = offsets[0].nonNegativeInt, let end = offsets[1].nonNegativeInt, end >= begin else {
            throw fail("\"data_offsets\" must be two non-negative integers [begin, end] with end ≥ begin")
        }
        guard let bytes = TensorSpec(name: name, dtype: dtype, shape: shape).byteCount else {
            throw fail("dtype × shape overflows or is not a whole number of bytes")
        }
        tally.total += UInt64(bytes)
        guard tally.total <= limits.maximumTotalRawBytes else {
            throw .tooLarge(file: file, tensor: name, declared: tally.total, limit: limits.maximumTotalRawBytes, offset: offset)
        }
        guard end - begin == bytes else { throw fail("data_offsets cover \(end - begin) bytes but dtype × shape is \(bytes)") }
        guard begin == tally.dataEnd else { throw fail("data_offsets begin at \(begin) but the previous tensor ends at \(tally.dataEnd)") }
        tally.dataEnd = end
        guard let codec = DeltaCodec(rawValue: try string(item, "codec")) else { throw fail("unknown codec") }
        let planes = try int(item, "byte_planes")
        guard planes == 0 || planes == ChunkTransform.planeWidth(dtype) else {
            throw fail("byte_planes \(planes) is neither 0 nor the element width of \(dtype.rawValue)")
        }
        guard case let .bool(xor) = try member(item, "xor_reference") else { throw fail("\"xor_reference\" must be true or false") }
        let chunks = try self.chunks(try member(item, "chunks"), of: name, bytes: bytes, chunkSize: chunkSize, xor: xor)
        return DeltaEntry(name: name, dtype: dtype, shape: shape, dataRange: begin..<end, codec: codec,
                          bytePlanes: planes, xorReference: xor, chunks: chunks)
    }

    /// A tensor's `"chunks"`: as many as `bytes` needs in chunks of `chunkSize`, each of the raw
    /// length its position implies and at most zstd's bound compressed.
    func chunks(_ value: JSONValue, of name: String, bytes: Int, chunkSize: Int, xor: Bool) throws(DeltaArchiveError) -> [DeltaChunk] {
        guard let chunkList = value.arrayValue else { throw fail("\"chunks\" must be an array") }
        let expectedChunks = (bytes + chunkSize - 1) / chunkSize
        guard chunkList.count == expectedChunks else {
            throw fail("\(chunkList.count) chunks for \(bytes) bytes; chunks of \(chunkSize) need \(expectedChunks)")
        }
        var chunks: [DeltaChunk] = []
        for (i, c) in chunkList.enumerated() {
            let parsed = try chunk(c, xor: xor)
            let expected = min(chunkSize, bytes - i * chunkSize)
            guard parsed.rawLength == expected else {
                throw .tooLarge(file: file, tensor: name, declared: UInt64(parsed.rawLength), limit: UInt64(expected), offset: offset)
            }
            guard parsed.length <= Zstd.compressBound(parsed.rawLength) else {
                throw fail("chunk \(i) is \(parsed.length) compressed bytes, more than zstd's bound for \(parsed.rawLength)")
            }
            chunks.append(parsed)
        }
        return chunks
    }
}

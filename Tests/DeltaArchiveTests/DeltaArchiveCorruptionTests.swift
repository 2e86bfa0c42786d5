import Foundation
import Testing
import DeltaArchive
import SafeTensors
import TestSupport

/// Damaged, truncated and hostile archives: each gives a clear error and no output.
@Suite struct DeltaArchiveCorruptionTests {
    let dir = TemporaryDirectory()

    func packed() throws -> (path: String, bytes: [UInt8], reader: DeltaArchiveReader) {
        let input = Repository.path("fixtures/sd35_tiny/original.safetensors")
        let path = dir.file("a.fgdelta")
        try DeltaArchive.pack(input: input, output: path, options: PackOptions(chunkSize: 4096))
        return (path, try readBytes(path), try DeltaArchiveReader(path: path))
    }

    /// Unpacking `bytes` fails with a message naming the file, and leaves no output.
    func expectRejected(_ bytes: [UInt8], _ label: String, contains: String? = nil) throws {
        let bad = dir.file("bad.fgdelta"), out = dir.file("out.safetensors")
        try writeBytes(bytes, to: bad)
        do {
            try DeltaArchive.unpack(input: bad, output: out, threads: 2)
            Issue.record("\(label): accepted")
        } catch {
            #expect(String(describing: error).hasPrefix(bad), "\(label): \(error)")
            #expect(String(describing: error).contains("(byte "), "\(label): \(error)")
            if let contains { #expect(String(describing: error).contains(contains), "\(label): \(error)") }
        }
        #expect(!FileManager.default.fileExists(atPath: out), "\(label)")
        #expect(dir.listing().filter { $0.hasPrefix(".out") }.isEmpty, "\(label): temporary file left")
    }

    @Test func aFlippedByteInEachRegionIsReported() throws {
        let (_, bytes, reader) = try packed()
        let frame = reader.entries.first { $0.chunks.count > 1 }!.chunks[1]
        let indexOffset = Int(bytes.suffix(32).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self).littleEndian })
        let regions: [(String, Int, String?)] = [
            ("magic", 2, "magic"), ("version", 8, "version"),
            ("source header frame", reader.index.sourceHeader.offset + reader.index.sourceHeader.length / 2, "source header"),
            ("tensor frame", frame.offset + frame.length / 2, nil),
            ("frame header", frame.offset + 4, nil),
            ("index", indexOffset + 40, "index"), ("trailer", bytes.count - 20, nil),
        ]
        for (label, offset, text) in regions {
            var damaged = bytes
            damaged[offset] ^= 0x10
            try expectRejected(damaged, label, contains: text)
        }
    }

    @Test func truncationAtManyOffsetsIsReported() throws {
        let (_, bytes, _) = try packed()
        var cuts = Set([0, 1, 7, 8, 15, 16, 17, 40, bytes.count - 1, bytes.count - 31, bytes.count - 33])
        var rng = SeededGenerator(seed: 5)
        for _ in 0..<30 { cuts.insert(Int.random(in: 0..<bytes.count, using: &rng)) }
        for cut in cuts.sorted() {
            let bad = dir.file("cut.fgdelta")
            try writeBytes(Array(bytes[0..<cut]), to: bad)
            #expect(throws: DeltaArchiveError.self, "cut at \(cut)") { try DeltaArchiveReader(path: bad) }
        }
    }

    /// Rewrites the index through `edit` and re-seals it (correct trailer hash), so only the
    /// semantic checks stand between the edit and an allocation.
    func resealed(_ bytes: [UInt8], _ edit: (String) -> String) -> [UInt8] {
        let trailer = bytes.count - 32
        let offset = Int(bytes[trailer...].withUnsafeBytes { $0.loadUnaligned(as: UInt64.self).littleEndian })
        let frame = Array(bytes[offset..<trailer])
        var json = [UInt8](repeating: 0, count: Int(try! frame.withUnsafeBytes { try Zstd.frameContentSize($0) }!))
        try! frame.withUnsafeBytes { f in try json.withUnsafeMutableBytes { try Zstd.decompress(f, into: $0) } }
        let index = Array(edit(String(decoding: json, as: UTF8.self)).utf8)
        let compressed = try! index.withUnsafeBytes { try Zstd.compress($0, level: 3, checksum: true) }
        var out = Array(bytes[0..<offset]) + compressed
        for v in [UInt64(offset), UInt64(compressed.count), XXH64.hash(index)] { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        return out + Array("FGDTAIL\u{0}".utf8)
    }

    @Test func declaredHugeRawSizesAreRejectedBeforeAllocating() throws {
        let (_, bytes, reader) = try packed()
        let entry = reader.entries.first { $0.chunks.count == 1 }!
        let raw = entry.chunks[0].rawLength
        let huge = 1 << 40
        // A chunk declaring 2^40 raw bytes.
        try expectRejected(resealed(bytes) { $0.replacingOccurrences(of: "\"raw_length\":\(raw),", with: "\"raw_length\":\(huge),") },
                           "chunk raw_length 2^40", contains: "exceeds the limit")
        // A tensor whose shape declares 2^40 bytes.
        let shape = entry.shape.map(String.init).joined(separator: ",")
        let bomb = resealed(bytes) { $0.replacingOccurrences(of: "\"name\":\"\(entry.name)\",\"dtype\":\"\(entry.dtype.rawValue)\",\"shape\":[\(shape)]",
                                                             with: "\"name\":\"\(entry.name)\",\"dtype\":\"U8\",\"shape\":[\(huge)]") }
        #expect(bomb != bytes)
        try expectRejected(bomb, "tensor shape 2^40")
        // A total above the reader's limit.
        try writeBytes(bytes, to: dir.file("ok.fgdelta"))
        #expect(throws: DeltaArchiveError.self) { try DeltaArchiveReader(path: dir.file("ok.fgdelta"), limits: DeltaReadLimits(maximumTotalRawBytes: 100)) }
    }

    @Test func aFrameWhoseContentSizeDisagreesIsRefused() throws {
        // Swap two frames' index records' hashes: sizes agree, checksums do not.
        let (_, bytes, reader) = try packed()
        let e = reader.entries.first { $0.chunks.count > 1 }!
        let h = XXH64.hex(e.chunks[0].hash)
        try expectRejected(resealed(bytes) { $0.replacingOccurrences(of: "\"xxh64\":\"\(h)\"", with: "\"xxh64\":\"0000000000000000\"") },
                           "wrong chunk hash", contains: "XXH64")
    }
}

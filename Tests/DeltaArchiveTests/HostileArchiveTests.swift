import Foundation
import Testing
import DeltaArchive
import SafeTensors
import TestSupport

/// Delta archives built to exhaust memory or the stack: declared sizes far beyond the limits
/// (decompression bombs), deeply nested JSON. Each is refused before anything of the declared
/// size is allocated, with an error naming the archive and a byte offset, and no output. (Damage
/// and the basic size bombs are in `DeltaArchiveCorruptionTests`; hostile adapter configs in
/// LoRATests' `HostileAdapterConfigTests`.)
@Suite struct HostileArchiveTests {
    let dir = TemporaryDirectory()

    func packed() throws -> [UInt8] {
        let input = Repository.path("fixtures/sd35_tiny/lora/pytorch_lora_weights.safetensors")
        let path = dir.file("a.fgdelta")
        try DeltaArchive.pack(input: input, output: path, options: PackOptions(chunkSize: 4096))
        return try readBytes(path)
    }

    /// Unpacking `bytes` fails with an error naming the archive, and leaves no output.
    func openError(_ bytes: [UInt8]) throws -> DeltaArchiveError? {
        let bad = dir.file("bad.fgdelta"), out = dir.file("out.safetensors")
        try writeBytes(bytes, to: bad)
        var caught: DeltaArchiveError? = nil
        do {
            try DeltaArchive.unpack(input: bad, output: out, threads: 2)
            Issue.record("accepted")
        } catch {
            caught = error
        }
        let text = caught.map(String.init(describing:)) ?? "not a DeltaArchiveError"
        #expect(text.hasPrefix(bad + " (byte ") || text.hasPrefix(bad + ": tensor "), "\(text)")
        #expect(!FileManager.default.fileExists(atPath: out))
        #expect(!dir.listing().contains { $0.hasPrefix(".out") })
        return caught
    }

    static func u64(_ v: UInt64) -> [UInt8] { withUnsafeBytes(of: v.littleEndian, Array.init) }

    /// A zstd frame header declaring `contentSize` (8-byte field, not single-segment), followed
    /// by one last raw block of `payload` zero bytes.
    static func frame(declaring contentSize: UInt64, payload: Int = 0) -> [UInt8] {
        let blockHeader = UInt32(payload) << 3 | 1   // last block, raw, `payload` bytes
        return [0x28, 0xB5, 0x2F, 0xFD, 0xC0, 0x00] + u64(contentSize)
            + [UInt8(blockHeader & 0xFF), UInt8(blockHeader >> 8 & 0xFF), UInt8(blockHeader >> 16 & 0xFF)]
            + [UInt8](repeating: 0, count: payload)
    }

    /// `bytes` with its index frame replaced by `frame` and the trailer rewritten to match.
    static func replacingIndex(_ bytes: [UInt8], with frame: [UInt8], hash: UInt64 = 0) -> [UInt8] {
        let trailer = bytes.count - 32
        let offset = Int(bytes[trailer...].withUnsafeBytes { $0.loadUnaligned(as: UInt64.self).littleEndian })
        return Array(bytes[0..<offset]) + frame + u64(UInt64(offset)) + u64(UInt64(frame.count)) + u64(hash) + Array("FGDTAIL\u{0}".utf8)
    }

    @Test func indexFrameDeclaringATerabyteIsRefusedBeforeDecompressing() throws {
        let bytes = try packed()
        let offset = Int(bytes[(bytes.count - 32)...].withUnsafeBytes { $0.loadUnaligned(as: UInt64.self).littleEndian })
        let error = try openError(Self.replacingIndex(bytes, with: Self.frame(declaring: 1 << 40)))
        #expect(error == .tooLarge(file: dir.file("bad.fgdelta"), tensor: nil, declared: 1 << 40, limit: 256 << 20, offset: offset))
    }

    @Test func trailerDeclaringAHugeIndexIsRefused() throws {
        var bytes = try packed()
        let trailer = bytes.count - 32
        bytes.replaceSubrange((trailer + 8)..<(trailer + 16), with: Self.u64(UInt64.max))
        let error = try openError(bytes)
        #expect(error == .tooLarge(file: dir.file("bad.fgdelta"), tensor: nil, declared: .max, limit: 256 << 20, offset: trailer + 8))
    }

    @Test func chunkFrameDeclaringMoreThanItsRawLengthIsRefusedBeforeDecompressing() throws {
        // The index is intact; one chunk's frame is swapped for one of the same length whose
        // header claims 2^40 bytes of content.
        let bytes = try packed()
        let reader = try DeltaArchiveReader(path: dir.file("a.fgdelta"))
        let entry = reader.entries.first { !$0.chunks.isEmpty }!
        let chunk = entry.chunks[0]
        let bomb = Self.frame(declaring: 1 << 40, payload: chunk.length - 17)
        #expect(bomb.count == chunk.length)
        var damaged = bytes
        damaged.replaceSubrange(chunk.offset..<(chunk.offset + chunk.length), with: bomb)
        let error = try openError(damaged)
        #expect(error == .corruptFrame(file: dir.file("bad.fgdelta"), tensor: entry.name,
                                       reason: "frame declares 1099511627776 raw bytes but the index says \(chunk.rawLength) (refused before decompressing)",
                                       offset: chunk.offset))
    }

    /// Rewrites the index JSON through `edit` and re-seals it (correct frame and trailer hash).
    func resealed(_ bytes: [UInt8], _ edit: (String) -> String) throws -> [UInt8] {
        let trailer = bytes.count - 32
        let offset = Int(bytes[trailer...].withUnsafeBytes { $0.loadUnaligned(as: UInt64.self).littleEndian })
        let frame = Array(bytes[offset..<trailer])
        var json = [UInt8](repeating: 0, count: Int(try frame.withUnsafeBytes { try Zstd.frameContentSize($0) }!))
        try frame.withUnsafeBytes { f in try json.withUnsafeMutableBytes { try Zstd.decompress(f, into: $0) } }
        let index = Array(edit(String(decoding: json, as: UTF8.self)).utf8)
        let compressed = try index.withUnsafeBytes { try Zstd.compress($0, level: 3, checksum: true) }
        return Self.replacingIndex(bytes, with: compressed, hash: XXH64.hash(index))
    }

    @Test func sourceHeaderDeclaringMoreThanTheLimitIsRefused() throws {
        let bytes = try packed()
        let reader = try DeltaArchiveReader(path: dir.file("a.fgdelta"))
        let raw = reader.index.sourceHeader.rawLength
        let bomb = try resealed(bytes) { $0.replacingOccurrences(of: "\"raw_length\":\(raw),", with: "\"raw_length\":\(1 << 40),") }
        guard case let .tooLarge(_, nil, declared, limit, _) = try openError(bomb) else { Issue.record("wrong error"); return }
        #expect(declared == 1 << 40 && limit == 100_000_008)
    }

    @Test func deeplyNestedIndexIsRefusedWithoutRecursion() throws {
        let bytes = try packed()
        let deep = String(repeating: "[", count: 200_000) + String(repeating: "]", count: 200_000)
        let bomb = try resealed(bytes) { $0.replacingOccurrences(of: "\"base_fingerprint\":null", with: "\"base_fingerprint\":" + deep) }
        guard case let .corruptIndex(_, nil, reason, _) = try openError(bomb) else { Issue.record("wrong error"); return }
        #expect(reason.contains("nesting too deep"), "\(reason)")
    }

    @Test func indexWithMillionsOfValuesIsRefusedBeforeParsing() throws {
        // 8 MB of `0,` compresses to a few hundred bytes; parsed, a 256 MiB index of them would
        // take about 15 GB. Counted first and refused.
        let bytes = try packed()
        let many = "[" + String(repeating: "0,", count: 4_100_000) + "0]"
        let bomb = try resealed(bytes) { $0.replacingOccurrences(of: "\"base_fingerprint\":null", with: "\"base_fingerprint\":" + many) }
        #expect(bomb.count < bytes.count + 4096)
        guard case let .corruptIndex(_, nil, reason, _) = try openError(bomb) else { Issue.record("wrong error"); return }
        #expect(reason.contains("more than 4000000 values (refused before parsing, to bound memory)"), "\(reason)")
    }
}

import Foundation
import Testing
import DeltaArchive
import SafeTensors
import TestSupport

/// Frames assembled plane by plane (`ZstdCompressor.compressPlanes`): near-incompressible byte
/// planes stored as zstd raw blocks, the others Huffman-coded; reused contexts.
@Suite struct DeltaArchivePlaneFrameTests {
    let dir = TemporaryDirectory()

    /// Float32 values ~ N(0, sigma²), little-endian bytes.
    static func gaussianF32(_ count: Int, sigma: Double, seed: UInt64) -> [UInt8] {
        var rng = SeededGenerator(seed: seed)
        var out: [UInt8] = []
        out.reserveCapacity(4 * count)
        for _ in 0..<count {
            let u1 = Double.random(in: Double.ulpOfOne..<1, using: &rng), u2 = Double.random(in: 0..<1, using: &rng)
            let x = Float(sigma * (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
            withUnsafeBytes(of: x.bitPattern.littleEndian) { out.append(contentsOf: $0) }
        }
        return out
    }

    /// The same values rounded down to bf16 (the high halves).
    static func gaussianBF16(_ count: Int, seed: UInt64) -> [UInt8] {
        let f = gaussianF32(count, sigma: 0.02, seed: seed)
        return stride(from: 0, to: f.count, by: 4).flatMap { [f[$0 + 2], f[$0 + 3]] }
    }

    /// `bytes` (elements of `width` bytes) grouped into planes, most significant byte first.
    static func planes(_ bytes: [UInt8], width: Int) -> [UInt8] {
        let n = bytes.count / width
        return (0..<width).flatMap { p in (0..<n).map { bytes[$0 * width + width - 1 - p] } }
    }

    /// The block types (0 raw, 1 RLE, 2 compressed) and sizes of a single-segment frame without
    /// dictionary, as written by `compressPlanes`.
    static func blocks(_ frame: [UInt8]) -> [(type: Int, size: Int)] {
        let fcs = [1, 2, 4, 8][Int(frame[4] >> 6)]
        var at = 5 + fcs
        var out: [(Int, Int)] = []
        while true {
            let word = Int(frame[at]) | Int(frame[at + 1]) << 8 | Int(frame[at + 2]) << 16
            let type = (word >> 1) & 3, size = word >> 3
            out.append((type, size))
            at += 3 + (type == 1 ? 1 : size)
            if word & 1 == 1 { break }
        }
        return out
    }

    func assembled(_ planar: [UInt8], planes: Int, _ compressor: ZstdCompressor) throws -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: Zstd.planesBound(planar.count))
        let length = try planar.withUnsafeBytes { src in try out.withUnsafeMutableBytes { try compressor.compressPlanes(src, planes: planes, into: $0) } }
        return length.map { Array(out[0..<$0]) }
    }

    @Test func planeFramesAreStandardZstdRoundTripExactlyAndStoreMantissasRaw() throws {
        let compressor = try ZstdCompressor()
        var rng = SeededGenerator(seed: 31)
        let cases: [(String, [UInt8], Int)] = [
            ("bf16", Self.planes(Self.gaussianBF16(200_000, seed: 32), width: 2), 2),
            ("f32", Self.planes(Self.gaussianF32(70_000, sigma: 0.01, seed: 33), width: 4), 4),
            ("random", (0..<300_000).map { _ in UInt8.random(in: 0...255, using: &rng) }, 2),
            ("zeros", [UInt8](repeating: 0, count: 262_144), 2),
            ("small", (0..<254).map { UInt8($0 % 5) }, 2),
            ("fcs 2 bytes", Self.planes(Self.gaussianBF16(32_895, seed: 34), width: 2), 2),   // 65790 bytes
            ("fcs 4 bytes", Self.planes(Self.gaussianBF16(32_896, seed: 35), width: 2), 2),   // 65792 bytes
            ("one", [9, 9], 2),
        ]
        for (label, planar, width) in cases {
            let frame = try #require(try assembled(planar, planes: width, compressor), "\(label)")
            #expect(try assembled(planar, planes: width, compressor) == frame, "\(label): deterministic with a reused context")
            try frame.withUnsafeBytes { f in
                #expect(try Zstd.frameContentSize(f) == UInt64(planar.count), "\(label)")
                #expect(try Zstd.frameCompressedSize(f) == f.count, "\(label)")
                #expect(Zstd.frameHasChecksum(f), "\(label)")
                #expect(f[4] & 0x18 == 0, "\(label)")
                var back = [UInt8](repeating: 0xAA, count: planar.count)
                try back.withUnsafeMutableBytes { try Zstd.decompress(f, into: $0) }
                #expect(back == planar, "\(label): round trip")
            }
            #expect(frame.count <= Zstd.compressBound(planar.count), "\(label)")
            let blocks = Self.blocks(frame)
            #expect(blocks.reduce(0) { $0 + ($1.type == 1 ? 0 : $1.size) } <= planar.count, "\(label)")
            switch label {
            case "bf16", "f32":
                // Exponent plane Huffman-coded, the mantissa planes stored raw, never mixed in a block.
                let n = planar.count / width
                #expect(blocks.first?.type == 2, "\(label): exponent plane compressed")
                let raw = blocks.filter { $0.type == 0 }.reduce(0) { $0 + $1.size }
                #expect(raw == (width - 1) * n, "\(label): \(raw) raw bytes, planes 1..<\(width) hold \((width - 1) * n)")
                // sigma 0.01–0.02 floats: the exponent byte carries under 3 bits of information.
                #expect(Double(frame.count) < 3.0 / 8 * Double(n) + Double((width - 1) * n) + 1000, "\(label): size")
            case "random":
                #expect(blocks.allSatisfy { $0.type == 0 }, "random bytes stored raw")
            case "zeros":
                #expect(frame.count < 200, "zeros: RLE blocks")
            default: break
            }
        }
    }

    @Test func packedRawPlanesRoundTripAndMatchTheEarlierWritersSizeAndBytes() throws {
        let tensors: [(spec: TensorSpec, bytes: [UInt8])] = [
            (TensorSpec(name: "m.lora_A.weight", dtype: .bf16, shape: [32, 1536]), Self.gaussianBF16(32 * 1536, seed: 41)),
            (TensorSpec(name: "m.lora_B.weight", dtype: .f32, shape: [1536, 32]), Self.gaussianF32(1536 * 32, sigma: 0.01, seed: 42)),
            (TensorSpec(name: "m.odd", dtype: .bf16, shape: [12_345]), Self.gaussianBF16(12_345, seed: 43)),
        ]
        let path = dir.file("planes.safetensors")
        try SafeTensorsWriter.write(to: path, tensors: tensors, metadata: ["format": "pt"])
        var sizes: [Int] = []
        for rawPlanes in [true, false] {
            for threads in [1, 3] {
                var options = PackOptions(threads: threads, chunkSize: 65536)
                options.rawPlanes = rawPlanes
                let archive = dir.file("p-\(rawPlanes)-\(threads).fgdelta"), restored = dir.file("p.safetensors")
                let report = try DeltaArchive.pack(input: path, output: archive, options: options)
                sizes.append(report.outputBytes)
                let unpacked = try DeltaArchive.unpack(input: archive, output: restored, threads: threads)
                #expect(unpacked.outputBytes == report.inputBytes)
                #expect(try readBytes(restored) == readBytes(path), "raw planes \(rawPlanes), \(threads) threads")
                let reader = try DeltaArchiveReader(path: archive)
                try reader.verify(threads: 2)
                for t in tensors { #expect(try reader.readTensor(t.spec.name, threads: 2) == t.bytes) }
            }
        }
        #expect(sizes[0] == sizes[1] && sizes[2] == sizes[3], "threads do not change the archive")
        // Raw planes cost at most a few bytes per block against zstd's own per-block choice.
        #expect(Double(sizes[0]) <= 1.002 * Double(sizes[2]), "raw planes \(sizes[0]) vs per-block choice \(sizes[2])")
    }

    @Test func aDamagedRawPlaneIsReportedClearly() throws {
        let tensors: [(spec: TensorSpec, bytes: [UInt8])] = [
            (TensorSpec(name: "block.mantissa_test", dtype: .bf16, shape: [64, 1024]), Self.gaussianBF16(64 * 1024, seed: 51)),
        ]
        let path = dir.file("w.safetensors")
        try SafeTensorsWriter.write(to: path, tensors: tensors, metadata: nil)
        let archive = dir.file("w.fgdelta")
        try DeltaArchive.pack(input: path, output: archive, options: PackOptions(threads: 1))
        let bytes = try readBytes(archive)
        let chunk = try DeltaArchiveReader(path: archive).entries[0].chunks[0]
        let frame = Array(bytes[chunk.offset..<(chunk.offset + chunk.length)])
        let blocks = Self.blocks(frame)
        let rawIndex = try #require(blocks.firstIndex { $0.type == 0 }, "the mantissa plane is stored raw")
        // Offset of that raw block's header inside the frame.
        var at = 5 + [1, 2, 4, 8][Int(frame[4] >> 6)]
        for b in blocks[..<rawIndex] { at += 3 + (b.type == 1 ? 1 : b.size) }
        let out = dir.file("out.safetensors")
        for (label, offset, flip) in [("raw block content", at + 3 + 1000, UInt8(0x01)), ("raw block header", at + 1, UInt8(0x40))] {
            var damaged = bytes
            damaged[chunk.offset + offset] ^= flip
            let bad = dir.file("bad.fgdelta")
            try writeBytes(damaged, to: bad)
            do {
                try DeltaArchive.unpack(input: bad, output: out, threads: 2)
                Issue.record("\(label): accepted")
            } catch {
                let text = String(describing: error)
                #expect(text.hasPrefix(bad) && text.contains("block.mantissa_test"), "\(label): \(text)")
                print("\(label): \(text)")
                #expect(text.contains("(byte \(chunk.offset))"), "\(label): \(text)")
            }
            #expect(!FileManager.default.fileExists(atPath: out), "\(label): no output")
        }
    }

    @Test func unpackHashesOnceAndVerifyChecksBothHashes() throws {
        // A damaged zstd content checksum (the frame's last 4 bytes) changes no restored byte:
        // unpack, which relies on XXH64 of the restored bytes alone, restores the file exactly;
        // verify, which also lets zstd check its checksum, reports the frame.
        let tensors: [(spec: TensorSpec, bytes: [UInt8])] = [
            (TensorSpec(name: "w", dtype: .bf16, shape: [64, 1024]), Self.gaussianBF16(64 * 1024, seed: 71)),
        ]
        let path = dir.file("c.safetensors")
        try SafeTensorsWriter.write(to: path, tensors: tensors, metadata: nil)
        let archive = dir.file("c.fgdelta")
        try DeltaArchive.pack(input: path, output: archive, options: PackOptions(threads: 1))
        var bytes = try readBytes(archive)
        let chunk = try DeltaArchiveReader(path: archive).entries[0].chunks[0]
        bytes[chunk.offset + chunk.length - 2] ^= 0x20
        let bad = dir.file("c-bad.fgdelta"), out = dir.file("c.safetensors.out")
        try writeBytes(bytes, to: bad)
        try DeltaArchive.unpack(input: bad, output: out, threads: 1)
        #expect(try readBytes(out) == readBytes(path))
        #expect(throws: DeltaArchiveError.self) { try DeltaArchiveReader(path: bad).verify(threads: 1) }
    }

    @Test func reusedContextsGiveTheSameFramesAsFreshOnes() throws {
        let compressor = try ZstdCompressor(), decompressor = try ZstdDecompressor()
        let inputs = [Self.gaussianBF16(50_000, seed: 61), [UInt8](repeating: 3, count: 10_000), Array("hello, zstd".utf8), []]
        for (i, bytes) in inputs.enumerated() {
            for level in [1, 3, 9] {
                var out = [UInt8](repeating: 0, count: Zstd.compressBound(bytes.count))
                let n = try bytes.withUnsafeBytes { src in try out.withUnsafeMutableBytes { try compressor.compress(src, level: level, checksum: true, into: $0) } }
                #expect(Array(out[0..<n]) == (try bytes.withUnsafeBytes { try Zstd.compress($0, level: level, checksum: true) }), "input \(i) level \(level)")
                var back = [UInt8](repeating: 0, count: bytes.count)
                try out[0..<n].withUnsafeBytes { f in try back.withUnsafeMutableBytes { try decompressor.decompress(f, into: $0) } }
                #expect(back == bytes)
            }
            var out = [UInt8](repeating: 0, count: Zstd.compressBound(bytes.count))
            let n = try bytes.withUnsafeBytes { src in try out.withUnsafeMutableBytes { try compressor.compressLiterals(src, checksum: true, into: $0) } }
            #expect(Array(out[0..<n]) == (try bytes.withUnsafeBytes { try Zstd.compressLiterals($0, checksum: true) }), "input \(i) literals")
        }
    }
}

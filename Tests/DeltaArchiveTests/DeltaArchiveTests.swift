import Foundation
import Testing
import DeltaArchive
import SafeTensors
import TestSupport

/// Round trips, random access, byte planes, XOR deltas and determinism of the delta archive.
@Suite struct DeltaArchiveTests {
    let dir = TemporaryDirectory()

    static let fixtures = [
        "fixtures/sd35_tiny/original.safetensors",
        "fixtures/sd35_tiny/lora/io_lora.safetensors",
        "fixtures/sd35_tiny/lora/pytorch_lora_weights.safetensors",
        "fixtures/flux_tiny/lora/io_lora.safetensors",
        "fixtures/flux_tiny/lora/pytorch_lora_weights.safetensors",
    ]

    /// A file holding random tensors of every dtype, a scalar and zero-sized tensors.
    func randomFile(_ name: String, seed: UInt64, scale: Int = 1) throws -> String {
        var rng = SeededGenerator(seed: seed)
        var tensors: [(spec: TensorSpec, bytes: [UInt8])] = []
        for (i, dtype) in DType.allCases.enumerated() {
            let elements = dtype.bits < 8 ? 8 * (3 + i) * scale : (5 + i * 7) * scale
            let spec = TensorSpec(name: "t\(i).\(dtype.rawValue)", dtype: dtype, shape: [elements])
            tensors.append((spec, (0..<spec.byteCount!).map { _ in UInt8.random(in: 0...255, using: &rng) }))
            tensors.append((TensorSpec(name: "empty.\(dtype.rawValue)", dtype: dtype, shape: [0, 3]), []))
        }
        tensors.append((TensorSpec(name: "scalar", dtype: .f32, shape: []), [0, 0, 128, 63]))
        let path = dir.file(name)
        try SafeTensorsWriter.write(to: path, tensors: tensors, metadata: ["format": "pt", "note": "random \(seed)"])
        return path
    }

    func roundTrip(_ input: String, options: PackOptions = PackOptions(), reference: DeltaReference? = nil) throws {
        let archive = dir.file("a.fgdelta"), restored = dir.file("r.safetensors")
        try DeltaArchive.pack(input: input, output: archive, options: options)
        try DeltaArchive.unpack(input: archive, output: restored, threads: 3, reference: reference ?? options.reference)
        #expect(try readBytes(restored) == readBytes(input), "round trip of \(input)")
        // The reference implementation reads what unpack wrote.
        let dump = try ReferencePeer.dump(restored)
        #expect(NSDictionary(dictionary: dump).isEqual(to: try ReferencePeer.dump(input)), "python safetensors read \(restored)")
        let reader = try DeltaArchiveReader(path: archive, reference: reference ?? options.reference)
        try reader.verify()
    }

    @Test func fixturesRoundTripByteIdentical() throws {
        for fixture in Self.fixtures {
            try roundTrip(Repository.path(fixture))
            try roundTrip(Repository.path(fixture), options: PackOptions(level: 1, bytePlanes: false, threads: 1))
        }
    }

    @Test func randomTensorsOfEveryDTypeRoundTrip() throws {
        let path = try randomFile("random.safetensors", seed: 7)
        try roundTrip(path)
        // Small chunks: tensors span many frames.
        try roundTrip(path, options: PackOptions(threads: 4, chunkSize: 4096))
        let big = try randomFile("big.safetensors", seed: 8, scale: 300)
        try roundTrip(big, options: PackOptions(threads: 4, chunkSize: 4096))
    }

    @Test func readsOneTensorByRandomAccess() throws {
        let path = try randomFile("random.safetensors", seed: 9, scale: 300)
        let archive = dir.file("a.fgdelta")
        try DeltaArchive.pack(input: path, output: archive, options: PackOptions(chunkSize: 4096))
        let reader = try DeltaArchiveReader(path: archive)
        let source = try SafeTensorsFile(path: path)
        for name in ["t17.F32", "t14.BF16", "empty.F16", "scalar", "t1.F4"] {
            #expect(try reader.readTensor(name) == source.bytes(of: name))
        }
        #expect(throws: DeltaArchiveError.tensorNotFound(file: archive, tensor: "nope")) { try reader.readTensor("nope") }
        #expect(reader.entry("t17.F32")?.bytePlanes == 4)
        #expect(reader.entry("t11.I16")?.bytePlanes == 0)
    }

    @Test func bytePlanesBeatPlainZstdOnFloatWeights() throws {
        let fixture = Repository.path("fixtures/sd35_tiny/original.safetensors")
        let planes = try DeltaArchive.pack(input: fixture, output: dir.file("p.fgdelta"), options: PackOptions(bytePlanes: true, literalsOnly: false))
        let literals = try DeltaArchive.pack(input: fixture, output: dir.file("l.fgdelta"), options: PackOptions(bytePlanes: true))
        let plain = try DeltaArchive.pack(input: fixture, output: dir.file("n.fgdelta"), options: PackOptions(bytePlanes: false))
        print("sd35_tiny original: \(planes.inputBytes) raw, \(planes.outputBytes) with byte planes, \(plain.outputBytes) without")
        #expect(planes.outputBytes < plain.outputBytes)
        // This tiny random-init checkpoint is near-incompressible: literals-only stays within 1%.
        #expect(Double(literals.outputBytes) < 1.01 * Double(plain.outputBytes))
    }

    /// Gaussian-like bf16 weights (N(0, 0.02)), the bytes of `count` elements, little-endian.
    func gaussianBF16(_ count: Int, seed: UInt64) -> [UInt8] {
        var rng = SeededGenerator(seed: seed)
        var out: [UInt8] = []
        out.reserveCapacity(2 * count)
        for _ in 0..<count {
            let u1 = Double.random(in: Double.ulpOfOne..<1, using: &rng), u2 = Double.random(in: 0..<1, using: &rng)
            let x = Float(0.02 * (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
            let bits = UInt16(truncatingIfNeeded: x.bitPattern >> 16)
            out.append(UInt8(bits & 0xFF)); out.append(UInt8(bits >> 8))
        }
        return out
    }

    @Test func literalsOnlyFramesAreStandardZstdAndRoundTripExactly() throws {
        // Every byte distribution zstd codes differently: Huffman, raw (incompressible), RLE
        // (one value), a mix, a short and an empty input.
        var rng = SeededGenerator(seed: 21)
        let inputs: [[UInt8]] = [
            gaussianBF16(300_000, seed: 22), (0..<200_000).map { _ in UInt8.random(in: 0...255, using: &rng) },
            [UInt8](repeating: 0, count: 400_000), (0..<150_000).map { UInt8($0 % 7) }, [1, 2, 3], [],
        ]
        for bytes in inputs {
            let frame = try bytes.withUnsafeBytes { try Zstd.compressLiterals($0, checksum: true) }
            let again = try bytes.withUnsafeBytes { try Zstd.compressLiterals($0, checksum: true) }
            #expect(frame == again, "deterministic")
            try frame.withUnsafeBytes { f in
                #expect(try Zstd.frameContentSize(f) == UInt64(bytes.count))
                #expect(try Zstd.frameCompressedSize(f) == f.count)
                #expect(Zstd.frameHasChecksum(f))
                #expect(f[4] & 0x18 == 0)
                var back = [UInt8](repeating: 0xAA, count: bytes.count)
                try back.withUnsafeMutableBytes { try Zstd.decompress(f, into: $0) }
                #expect(back == bytes)
            }
            #expect(frame.count <= Zstd.compressBound(bytes.count))
        }
    }

    @Test func literalsOnlyPlanesMatchLevelThreeSizeAndRoundTrip() throws {
        let tensors: [(spec: TensorSpec, bytes: [UInt8])] = [
            (TensorSpec(name: "a.lora_A.weight", dtype: .bf16, shape: [32, 3000]), gaussianBF16(96_000, seed: 23)),
            (TensorSpec(name: "a.lora_B.weight", dtype: .bf16, shape: [3000, 32]), [UInt8](repeating: 0, count: 192_000)),
            (TensorSpec(name: "steps", dtype: .i64, shape: [4]), [UInt8](repeating: 7, count: 32)),
        ]
        let path = dir.file("gauss.safetensors")
        try SafeTensorsWriter.write(to: path, tensors: tensors, metadata: ["format": "pt"])
        let literals = try DeltaArchive.pack(input: path, output: dir.file("lit.fgdelta"), options: PackOptions(threads: 1, chunkSize: 65536))
        let matched = try DeltaArchive.pack(input: path, output: dir.file("lvl.fgdelta"),
                                            options: PackOptions(literalsOnly: false, threads: 1, chunkSize: 65536))
        #expect(Double(literals.outputBytes) <= 1.05 * Double(matched.outputBytes), "literals-only \(literals.outputBytes) vs level 3 \(matched.outputBytes)")
        // The all-zero tensor codes to RLE blocks: a few bytes per frame.
        #expect(literals.tensors.first { $0.name == "a.lora_B.weight" }!.compressedBytes < 400)
        try roundTrip(path, options: PackOptions(threads: 1, chunkSize: 65536))
        try roundTrip(path, options: PackOptions(threads: 3, chunkSize: 4096))
        try roundTrip(path, options: PackOptions(literalsOnly: false, threads: 2))
        try DeltaArchive.pack(input: path, output: dir.file("lit4.fgdelta"), options: PackOptions(threads: 4, chunkSize: 65536))
        #expect(try readBytes(dir.file("lit.fgdelta")) == readBytes(dir.file("lit4.fgdelta")))
    }

    @Test func xorDeltaChunksKeepTheSmallerFrame() throws {
        // A sparse update: matches beat literals-only on the long zero runs of the XOR.
        let first = gaussianBF16(200_000, seed: 24)
        var second = first
        for i in stride(from: 0, to: second.count, by: 997) { second[i] ^= 0x01 }
        let spec = TensorSpec(name: "w", dtype: .bf16, shape: [200_000])
        try SafeTensorsWriter.write(to: dir.file("s1.safetensors"), tensors: [(spec, first)], metadata: nil)
        try SafeTensorsWriter.write(to: dir.file("s2.safetensors"), tensors: [(spec, second)], metadata: nil)
        let reference = try DeltaReference.open(path: dir.file("s1.safetensors"))
        let delta = try DeltaArchive.pack(input: dir.file("s2.safetensors"), output: dir.file("s.fgdelta"),
                                          options: PackOptions(threads: 2, reference: reference, chunkSize: 65536))
        let alone = try DeltaArchive.pack(input: dir.file("s2.safetensors"), output: dir.file("s-alone.fgdelta"), options: PackOptions(threads: 2))
        #expect(delta.tensors[0].compressedBytes * 20 < alone.tensors[0].compressedBytes,
                "delta \(delta.tensors[0].compressedBytes) vs alone \(alone.tensors[0].compressedBytes)")
        try roundTrip(dir.file("s2.safetensors"), options: PackOptions(threads: 2, reference: reference, chunkSize: 65536))
    }

    @Test func multithreadedAndSingleThreadedArchivesAreIdentical() throws {
        let path = try randomFile("random.safetensors", seed: 10, scale: 200)
        try DeltaArchive.pack(input: path, output: dir.file("1.fgdelta"), options: PackOptions(threads: 1, chunkSize: 4096))
        try DeltaArchive.pack(input: path, output: dir.file("8.fgdelta"), options: PackOptions(threads: 8, chunkSize: 4096))
        #expect(try readBytes(dir.file("1.fgdelta")) == readBytes(dir.file("8.fgdelta")))
    }

    /// A "next checkpoint": the same tensors with a few bytes changed.
    func nextCheckpoint(of path: String, name: String) throws -> String {
        let file = try SafeTensorsFile(path: path)
        var tensors: [(spec: TensorSpec, bytes: [UInt8])] = []
        for (i, info) in file.tensors.enumerated() {
            var bytes = try file.bytes(of: info.name)
            if !bytes.isEmpty && i % 2 == 0 { bytes[bytes.count / 2] ^= 0x5A }
            tensors.append((TensorSpec(name: info.name, dtype: info.dtype, shape: info.shape), bytes))
        }
        tensors.append((TensorSpec(name: "new.tensor", dtype: .f32, shape: [4]), [UInt8](repeating: 1, count: 16)))
        let out = dir.file(name)
        try SafeTensorsWriter.write(to: out, tensors: tensors, metadata: ["step": "2"])
        return out
    }

    @Test func xorDeltasAgainstAReferenceRoundTrip() throws {
        let first = try randomFile("step1.safetensors", seed: 11, scale: 100)
        let second = try nextCheckpoint(of: first, name: "step2.safetensors")
        let reference = try DeltaReference.open(path: first)
        let withRef = try DeltaArchive.pack(input: second, output: dir.file("d.fgdelta"), options: PackOptions(reference: reference, chunkSize: 4096))
        let without = try DeltaArchive.pack(input: second, output: dir.file("f.fgdelta"), options: PackOptions(chunkSize: 4096))
        #expect(withRef.outputBytes < without.outputBytes / 4, "XOR delta \(withRef.outputBytes) vs full \(without.outputBytes)")
        #expect(withRef.tensors.first { $0.name == "new.tensor" }?.xorReference == false)
        try DeltaArchive.unpack(input: dir.file("d.fgdelta"), output: dir.file("r.safetensors"), reference: reference)
        #expect(try readBytes(dir.file("r.safetensors")) == readBytes(second))

        // An archive as the reference.
        try DeltaArchive.pack(input: first, output: dir.file("step1.fgdelta"), options: PackOptions(chunkSize: 4096))
        let archiveRef = try DeltaReference.open(path: dir.file("step1.fgdelta"))
        try DeltaArchive.pack(input: second, output: dir.file("d2.fgdelta"), options: PackOptions(reference: archiveRef, chunkSize: 4096))
        #expect(try readBytes(dir.file("d2.fgdelta")) == readBytes(dir.file("d.fgdelta")))
        try DeltaArchive.unpack(input: dir.file("d2.fgdelta"), output: dir.file("r2.safetensors"), reference: archiveRef)
        #expect(try readBytes(dir.file("r2.safetensors")) == readBytes(second))

        // Without the reference, or with the wrong one: an error and no output.
        #expect(throws: DeltaArchiveError.self) { try DeltaArchive.unpack(input: dir.file("d.fgdelta"), output: dir.file("x.safetensors")) }
        let wrong = try DeltaReference.open(path: second)
        do {
            try DeltaArchive.unpack(input: dir.file("d.fgdelta"), output: dir.file("x.safetensors"), reference: wrong)
            Issue.record("wrong reference accepted")
        } catch {
            #expect(String(describing: error).contains("wrong reference"))
        }
        #expect(!FileManager.default.fileExists(atPath: dir.file("x.safetensors")))
    }

    @Test func xxh64MatchesKnownVectorsAndZstdsFrameChecksum() throws {
        #expect(XXH64.hash([UInt8]()) == 0xEF46_DB37_51D8_E999)
        #expect(XXH64.hash(Array("a".utf8)) == 0xD24E_C4F1_A98C_6E5B)
        #expect(XXH64.hash(Array("abc".utf8)) == 0x44BC_2CF5_AD77_0999)
        // zstd's frame checksum is the low 32 bits of XXH64 of the content: check lengths 0...100.
        var rng = SeededGenerator(seed: 3)
        for n in [0, 1, 3, 4, 7, 8, 31, 32, 33, 63, 64, 100, 1000] {
            let bytes = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let frame = try bytes.withUnsafeBytes { try Zstd.compress($0, level: 1, checksum: true) }
            let stored = frame.suffix(4).withUnsafeBytes { $0.loadUnaligned(as: UInt32.self).littleEndian }
            #expect(UInt32(truncatingIfNeeded: XXH64.hash(bytes)) == stored, "length \(n)")
        }
    }

    @Test func baseFingerprintIsStableAndRecorded() throws {
        let fixture = Repository.path("fixtures/sd35_tiny/original.safetensors")
        let fp = try BaseFingerprint.compute(path: fixture)
        #expect(fp.hasPrefix("fgfp1:") && fp.count == 22)
        #expect(try BaseFingerprint.compute(path: fixture) == fp)
        #expect(try BaseFingerprint.compute(path: Repository.path("fixtures/sd35_tiny/lora/io_lora.safetensors")) != fp)
        let adapter = Repository.path("fixtures/sd35_tiny/lora/pytorch_lora_weights.safetensors")
        try DeltaArchive.pack(input: adapter, output: dir.file("a.fgdelta"), options: PackOptions(baseFingerprint: fp, config: "{\"r\":4}"))
        let reader = try DeltaArchiveReader(path: dir.file("a.fgdelta"))
        #expect(reader.index.baseFingerprint == fp)
        #expect(reader.index.config == "{\"r\":4}")
    }
}

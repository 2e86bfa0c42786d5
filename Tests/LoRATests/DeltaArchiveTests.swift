import Foundation
import Testing
import LoRA
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
        let planes = try DeltaArchive.pack(input: fixture, output: dir.file("p.fgdelta"), options: PackOptions(bytePlanes: true))
        let plain = try DeltaArchive.pack(input: fixture, output: dir.file("n.fgdelta"), options: PackOptions(bytePlanes: false))
        print("sd35_tiny original: \(planes.inputBytes) raw, \(planes.outputBytes) with byte planes, \(plain.outputBytes) without")
        #expect(planes.outputBytes < plain.outputBytes)
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

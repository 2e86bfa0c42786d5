import Foundation
import Testing
import SafeTensors
import TestSupport

/// Interop with the reference implementation (pip `safetensors`) in both directions, and
/// differential fuzzing: mutated files must be accepted or rejected exactly as the reference does.
@Suite struct InteropTests {
    let dir = TemporaryDirectory()

    /// One tensor of every dtype, with random bytes.
    static func everyDType(seed: UInt64) -> [(spec: TensorSpec, bytes: [UInt8])] {
        var rng = SeededGenerator(seed: seed)
        return DType.allCases.enumerated().map { i, dtype in
            let shape = dtype.bits < 8 ? [3, 4] : (i % 3 == 0 ? [] : [2, i % 4 + 1])
            let spec = TensorSpec(name: "layer.\(i).\(dtype.rawValue.lowercased())", dtype: dtype, shape: shape)
            return (spec, (0..<spec.byteCount!).map { _ in UInt8.random(in: 0...255, using: &rng) })
        }
    }

    func expectPeerSees(_ path: String, _ tensors: [(spec: TensorSpec, bytes: [UInt8])], metadata: [String: String]?) throws {
        let dump = try ReferencePeer.dump(path)
        let seen = dump["tensors"] as? [[String: Any]] ?? []
        #expect(seen.count == tensors.count)
        for (spec, bytes) in tensors {
            guard let t = seen.first(where: { $0["name"] as? String == spec.name }) else {
                Issue.record("reference reader does not see \(spec.name)"); continue
            }
            #expect(t["dtype"] as? String == spec.dtype.rawValue)
            #expect((t["shape"] as? [Int]) == spec.shape)
            #expect(t["hex"] as? String == bytes.hex)
        }
        #expect((dump["metadata"] as? [String: String]) == metadata)
    }

    @Test func referenceReadsEverythingWeWrite() throws {
        let cases: [([(spec: TensorSpec, bytes: [UInt8])], [String: String]?)] = [
            (Self.everyDType(seed: 1), nil),
            (Self.everyDType(seed: 2), ["format": "pt"]),
            (Self.everyDType(seed: 3), ["a": "1", "b": "ünï\n\"q\"", "c": ""]),
            ([], nil),
            ([], ["only": "metadata"]),
        ]
        for (n, (tensors, metadata)) in cases.enumerated() {
            let path = dir.file("ours\(n).safetensors")
            try SafeTensorsWriter.write(to: path, tensors: tensors, metadata: metadata)
            try expectPeerSees(path, tensors, metadata: metadata)
        }
    }

    @Test func weReadWhatTheReferenceWritesAndBytesAreEqual() throws {
        for seed in 10..<14 as Range<UInt64> {
            // The reference writer cannot write F6 (no framework dtype); every other kind.
            let tensors = Self.everyDType(seed: seed).filter { $0.spec.dtype != .f6e2m3 && $0.spec.dtype != .f6e3m2 }
            let metadata: [String: String]? = seed % 2 == 0 ? nil : ["format": "pt"]
            let spec: [String: Any] = [
                "metadata": metadata as Any,
                "tensors": tensors.map { ["name": $0.spec.name, "dtype": $0.spec.dtype.rawValue, "shape": $0.spec.shape, "hex": $0.bytes.hex] },
            ]
            let specPath = dir.file("spec.json")
            try JSONSerialization.data(withJSONObject: spec).write(to: URL(fileURLWithPath: specPath))
            let theirs = dir.file("theirs\(seed).safetensors")
            let result = try ReferencePeer.run(["write", specPath, theirs])
            try #require(result.status == 0, "reference writer failed: \(result.stderr)")
            let file = try SafeTensorsFile(path: theirs)
            for (spec, bytes) in tensors {
                let info = try file.info(spec.name)
                #expect(info.dtype == spec.dtype && info.shape == spec.shape)
                #expect(try file.bytes(of: spec.name) == bytes)
            }
            let ours = try SafeTensorsWriter.serialize(tensors: tensors, metadata: metadata)
            #expect(try readBytes(theirs) == ours, "our bytes differ from the reference writer's")
        }
    }

    @Test func differentialFuzzAgainstReference() throws {
        // Start from valid files, mutate header bytes and lengths at random, and compare
        // verdicts with the reference reader. We additionally reject duplicate keys, names
        // with NUL and >2^63 dimensions; such cases are excluded from the comparison.
        // FLOWGUARD_FUZZ_SEED / FLOWGUARD_FUZZ_COUNT run other or longer campaigns by hand.
        let environment = ProcessInfo.processInfo.environment
        var rng = SeededGenerator(seed: environment["FLOWGUARD_FUZZ_SEED"].flatMap(UInt64.init) ?? 2024)
        let count = environment["FLOWGUARD_FUZZ_COUNT"].flatMap(Int.init) ?? 1500
        var paths: [String] = []
        var ours: [String?] = []
        let seeds = [Self.everyDType(seed: 5), Array(Self.everyDType(seed: 6).prefix(3)), []]
        let alphabet = Array(#"{}[]",:0123456789-. eE"\abFIU_"#.utf8)
        for i in 0..<count {
            let base = try SafeTensorsWriter.serialize(tensors: seeds[i % seeds.count], metadata: i % 2 == 0 ? ["k": "v"] : nil)
            var bytes = base
            let headerEnd = 8 + Int(bytes[0]) + Int(bytes[1]) << 8
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                let headerEnd = min(headerEnd, bytes.count)
                guard headerEnd > 8 else { break }
                switch Int.random(in: 0..<6, using: &rng) {
                case 0: bytes[Int.random(in: 8..<headerEnd, using: &rng)] = alphabet.randomElement(using: &rng)!
                case 1: bytes[Int.random(in: 0..<8, using: &rng)] ^= UInt8(1 << Int.random(in: 0..<8, using: &rng))
                case 2: bytes.removeLast(Int.random(in: 0...min(8, bytes.count - 8), using: &rng))
                case 3: bytes.append(contentsOf: (0..<Int.random(in: 1...8, using: &rng)).map { _ in 0 })
                case 4: bytes.insert(alphabet.randomElement(using: &rng)!, at: Int.random(in: 8..<headerEnd, using: &rng))
                default: bytes[Int.random(in: 8..<headerEnd, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                }
            }
            let path = dir.file("fuzz\(i).safetensors")
            try writeBytes(bytes, to: path)
            paths.append(path)
            do {
                _ = try SafeTensorsFile(path: path)
                ours.append(nil)
            } catch {
                if case .duplicateTensor = error { ours.append("extension") }
                else { ours.append(error.description) }
            }
        }
        let result = try ReferencePeer.run(["verdicts"] + paths)
        try #require(result.status == 0, "reference peer failed: \(result.stderr)")
        let verdicts = result.stdout.split(separator: "\n").map(String.init)
        try #require(verdicts.count == paths.count)
        var rejected = 0
        for (i, verdict) in verdicts.enumerated() where ours[i] != "extension" {
            let theyAccept = verdict == "ok"
            #expect(theyAccept == (ours[i] == nil), "file \(i): reference says '\(verdict)', we say '\(ours[i] ?? "ok")'")
            if !theyAccept { rejected += 1 }
        }
        #expect(rejected > 100, "mutations should produce many invalid files")
    }
}

@testable import Checkpoints
import SafeTensors
import Testing
import TestSupport

/// Checkpoint comparison: statuses, exact difference measures, dtype-crossing values, layout mapping.
@Suite struct CheckpointDiffTests {
    let dir = TemporaryDirectory()

    /// Writes float tensors (name → (dtype, shape, values)) to a file and opens it.
    func file(_ name: String, _ tensors: [(String, DType, [Int], [Float])]) throws -> TensorCollection {
        let path = dir.file(name)
        let byName = Dictionary(uniqueKeysWithValues: tensors.map { ($0.0, $0.3) })
        try SafeTensorsWriter.write(to: path, specs: tensors.map { TensorSpec(name: $0.0, dtype: $0.1, shape: $0.2) }) { sink in
            try sink.write(floats: byName[sink.info.name]!)
        }
        return try TensorCollection(path: path)
    }

    func values(_ count: Int, seed: UInt64) -> [Float] {
        var rng = SeededGenerator(seed: seed)
        return (0..<count).map { _ in Float.random(in: -2...2, using: &rng) }
    }

    @Test func identicalFiles() throws {
        let v = values(70_000, seed: 1)
        let a = try file("a.safetensors", [("w", .f32, [700, 100], v), ("b", .bf16, [7], Array(v.prefix(7)))])
        let b = try file("b.safetensors", [("w", .f32, [700, 100], v), ("b", .bf16, [7], Array(v.prefix(7)))])
        let diff = try CheckpointDiff.compare(a, b)
        #expect(!diff.differs && diff.identicalCount == 2)
        #expect(diff.tensors.allSatisfy { $0.status == .identical && $0.maxAbsDifference == 0 })
    }

    @Test func oneChangedValuePastTheFirstChunk() throws {
        let v = values(150_000, seed: 2)
        var changed = v
        changed[131_073] += 0.25
        let a = try file("a.safetensors", [("w", .f32, [150_000], v)])
        let b = try file("b.safetensors", [("w", .f32, [150_000], changed)])
        let diff = try CheckpointDiff.compare(a, b)
        let t = diff.tensors[0]
        #expect(t.status == .differ && diff.differs && diff.differCount == 1)
        let expected = abs(Double(changed[131_073]) - Double(v[131_073]))
        #expect(t.maxAbsDifference == expected)
        #expect(t.maxRelativeDifference == expected / max(abs(Double(v[131_073])), abs(Double(changed[131_073]))))
        #expect(abs(t.rmsDifference - (expected * expected / 150_000).squareRoot()) < 1e-15)
        // Within a tolerance the same tensors count as equal.
        let loose = try CheckpointDiff.compare(a, b, options: .init(tolerance: 0.3))
        #expect(loose.tensors[0].status == .equal && !loose.differs)
    }

    @Test func missingExtraShapeAndNaN() throws {
        let a = try file("a.safetensors", [("only_a", .f32, [2], [1, 2]), ("s", .f32, [2, 3], values(6, seed: 3)),
                                           ("n", .f32, [3], [1, .nan, .nan])])
        let b = try file("b.safetensors", [("only_b", .f32, [1], [1]), ("s", .f32, [3, 2], values(6, seed: 3)),
                                           ("n", .f32, [3], [1, .nan, 4])])
        let diff = try CheckpointDiff.compare(a, b)
        let byName = Dictionary(uniqueKeysWithValues: diff.tensors.map { ($0.name, $0) })
        #expect(byName["only_a"]?.status == .onlyInA && byName["only_b"]?.status == .onlyInB)
        #expect(byName["s"]?.status == .shape && byName["s"]?.shapeA == [2, 3] && byName["s"]?.shapeB == [3, 2])
        #expect(byName["n"]?.status == .differ && byName["n"]?.nanMismatches == 1)
        #expect(diff.onlyInACount == 1 && diff.onlyInBCount == 1 && diff.differCount == 2)
        #expect(diff.tensors.last?.name == "only_b")
    }

    @Test func bf16AgainstF32OfTheSameValues() throws {
        let v = values(100_000, seed: 4)
        let a = try file("a.safetensors", [("w", .f32, [100_000], v)])
        let b = try file("b.safetensors", [("w", .bf16, [100_000], v)])
        let exact = try CheckpointDiff.compare(a, b)
        let t = exact.tensors[0]
        #expect(t.dtypeChanged && t.dtypeA == .f32 && t.dtypeB == .bf16)
        #expect(t.status == .differ)
        #expect(t.maxRelativeDifference <= 1.0 / 256 && t.maxRelativeDifference > 0)   // bf16 keeps 8 significant bits
        #expect(t.maxAbsDifference <= 2.0 / 256)
        #expect(try CheckpointDiff.compare(a, b, options: .init(tolerance: 0.01)).tensors[0].status == .equal)
        // Values exactly representable in BF16: equal at tolerance 0 although the bytes differ.
        let rounded = try TensorCollection(path: dir.file("b.safetensors")).files[0].floats(of: "w")
        let c = try file("c.safetensors", [("w", .f32, [100_000], rounded)])
        let same = try CheckpointDiff.compare(c, b)
        #expect(same.tensors[0].status == .equal && !same.differs && same.equalCount == 1)
    }

    @Test func originalAgainstDiffusersFixtureWithMappedLayouts() throws {
        let original = try TensorCollection(path: Repository.path("fixtures/sd35_tiny/original.safetensors"))
        let diffusers = try TensorCollection(path: Repository.path("fixtures/sd35_tiny/diffusers"))
        let diff = try CheckpointDiff.compare(original, diffusers, options: .init(mapLayouts: true))
        #expect(!diff.differs)
        #expect(diff.identicalCount == original.entries.count)
        #expect(diff.mapping?.layoutA == .original && diff.mapping?.layoutB == .diffusers)
        // And the other way round: A in the diffusers layout, B fused.
        let back = try CheckpointDiff.compare(diffusers, original, options: .init(mapLayouts: true))
        #expect(!back.differs && back.identicalCount == diffusers.entries.count)
        // Without mapping, nothing lines up.
        let plain = try CheckpointDiff.compare(original, diffusers)
        #expect(plain.differs && plain.identicalCount < original.entries.count)
        // FLUX too, across the sharded/unsharded and layout boundaries.
        let flux = try CheckpointDiff.compare(TensorCollection(path: Repository.path("fixtures/flux_tiny/original.safetensors")),
                                              TensorCollection(path: Repository.path("fixtures/flux_tiny/diffusers")),
                                              options: .init(mapLayouts: true))
        #expect(!flux.differs)
    }

    @Test func mapLayoutsNeedsATransformer() throws {
        let a = try file("a.safetensors", [("w", .f32, [1], [1])])
        #expect(throws: CheckpointError.self) { try CheckpointDiff.compare(a, a, options: .init(mapLayouts: true)) }
    }

    @Test func syntheticCheckpointsRoundTripDetectionAndLayouts() throws {
        for architecture in [Tiny.sd3, Tiny.flux] {
            let original = dir.file("synth-\(architecture.family.rawValue).safetensors")
            let folder = dir.file("synth-\(architecture.family.rawValue)")
            let options = SyntheticOptions(seed: 9, scale: 0.5)
            let r1 = try SyntheticWriter.write(architecture: architecture, layout: .original, dtype: .bf16, to: original, options: options)
            let r2 = try SyntheticWriter.write(architecture: architecture, layout: .diffusers, dtype: .bf16, to: folder, options: options)
            #expect(r2.paths.map { $0.split(separator: "/").last! } == ["diffusion_pytorch_model.safetensors", "config.json"])
            for (path, layout, result) in [(original, KeyLayout.original, r1), (folder, .diffusers, r2)] {
                let collection = try TensorCollection(path: path)
                let detected = try Architecture.detect(collection.infos)
                #expect(detected.architecture.name == architecture.name && detected.layout == layout)
                #expect(detected.architecture.config.hiddenSize == architecture.config.hiddenSize)
                let expected = architecture.syntheticSpecs(layout: layout, dtype: .bf16)
                #expect(collection.entries.count == expected.count && result.tensorCount == expected.count)
                let shapes = Dictionary(uniqueKeysWithValues: collection.infos.map { ($0.name, $0.shape) })
                #expect(expected.allSatisfy { shapes[$0.name] == $0.shape })
                #expect(collection.infos.allSatisfy { $0.dtype == .bf16 })
            }
            // Same seed, two layouts, same numbers.
            let diff = try CheckpointDiff.compare(TensorCollection(path: original), TensorCollection(path: folder),
                                                  options: .init(mapLayouts: true))
            #expect(!diff.differs && diff.identicalCount == r1.tensorCount)
            // The values look like N(0, 0.5²).
            let stats = try TensorCollection(path: original).statistics().tensors.compactMap(\.statistics)
            var all = TensorStatistics()
            for s in stats { all.merge(s) }
            #expect(abs(all.mean!) < 0.02 && abs(all.std! - 0.5) < 0.02 && all.nanCount == 0)
        }
    }

    @Test func syntheticSpecsOfPublishedModels() {
        for variant in [KnownVariant.sd35Medium, .flux1Dev] {
            for layout in KeyLayout.allCases {
                let ours = SyntheticWriter.specs(Architecture(variant), layout: layout, dtype: .bf16)
                let reference = syntheticSpecs(variant: variant, layout: layout, dtype: .bf16)
                #expect(Set(ours) == Set(reference))
            }
        }
    }

    @Test func generatorIsDeterministicAndSeeded() {
        let a = SyntheticWriter.value(tensor: "x.weight", index: 5, options: SyntheticOptions(seed: 1))
        #expect(a == SyntheticWriter.value(tensor: "x.weight", index: 5, options: SyntheticOptions(seed: 1)))
        #expect(a != SyntheticWriter.value(tensor: "x.weight", index: 5, options: SyntheticOptions(seed: 2)))
        let uniform = SyntheticOptions(scale: 1, distribution: .uniform)
        let u = (0..<10_000).map { SyntheticWriter.value(tensor: "u", index: $0, options: uniform) }
        #expect(u.allSatisfy { abs($0) <= 1.7320509 })
        let s = TensorStatistics(values: u)
        #expect(abs(s.std! - 1) < 0.03)
    }
}

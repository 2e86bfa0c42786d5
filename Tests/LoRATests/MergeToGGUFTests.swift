import Testing
import Foundation
import Checkpoints
import GGUF
import LoRA
import SafeTensors
import TestSupport

/// A merge written as GGUF adds the delta to the decoded base rows on their way to the quantizer.
/// The oracle is the two-step path it replaces: merge into a Float32 `.safetensors` file, then
/// convert that file to GGUF. Both must give the same bytes, for every adapter dialect, base
/// layout, container and thread count.
@Suite struct MergeToGGUFTests {
    let dir = TemporaryDirectory()

    /// The two-step reference: merge to Float32 safetensors, convert to GGUF `type`.
    func twoStep(_ base: TensorCollection, _ adapter: LoRAAdapter, scale: Float, unmerge: Bool = false, type: GGUFType) throws -> Data? {
        let staged = dir.path + "/staged.safetensors", out = dir.path + "/two-step.gguf"
        try? FileManager.default.removeItem(atPath: staged)
        try? FileManager.default.removeItem(atPath: out)
        try LoRAMerge.merge(base: base, adapter: adapter, scale: scale, output: staged, dtype: .f32, unmerge: unmerge)
        try Converter(source: try TensorCollection.checkpoint(staged).transformerOnly(), to: .original, prefix: KeyPrefix.none).writeGGUF(to: out, type: type)
        return FileManager.default.contents(atPath: out)
    }

    /// The direct merge's bytes, on `threads` workers.
    func direct(_ base: TensorCollection, _ adapter: LoRAAdapter, scale: Float, unmerge: Bool = false, type: GGUFType,
                threads: Int) throws -> (MergeReport, Data?) {
        let out = dir.path + "/direct.gguf"
        try? FileManager.default.removeItem(atPath: out)
        let (report, written) = try LoRAMerge.mergeToGGUF(base: base, adapter: adapter, scale: scale, unmerge: unmerge, output: out,
                                                          type: type, threads: threads)
        #expect(written.outputPath == out && report.outputFiles == [out])
        return (report, FileManager.default.contents(atPath: out))
    }

    /// Every adapter of fixtures/lora_dialects (PEFT, kohya, ComfyUI, OneTrainer, XLabs, LoKr,
    /// LoHa, DoRA, BFL Control, …) on its base, Q8_0 on one and three threads.
    @Test func everyDialectEqualsMergeThenConvert() throws {
        #expect(RowBlockMergeTests.fixtures.count >= 18)
        for (adapterPath, basePath) in RowBlockMergeTests.fixtures {
            let (base, adapter) = try RowBlockMergeTests.load(adapter: adapterPath, base: basePath)
            let expected = try twoStep(base, adapter, scale: 0.7, type: .q8_0)
            for threads in [1, 3] {
                let (report, bytes) = try direct(base, adapter, scale: 0.7, type: .q8_0, threads: threads)
                #expect(!report.touchedTensors.isEmpty)
                #expect(bytes != nil && bytes == expected, "\(adapterPath) on \(threads) threads")
            }
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).allSatisfy { !$0.hasPrefix(".flowguard-merge") })
    }

    /// Diffusers-layout bases (q/k/v fused into qkv on the way), an original one, a GGUF one and
    /// an all-in-one file; several output types; an unmerge.
    @Test func basesTypesAndUnmerge() throws {
        let q8 = dir.path + "/base-q8.gguf"
        try Converter(source: try TensorCollection(path: MergeFixtures.sd35Original), to: .original, prefix: KeyPrefix.none)
            .writeGGUF(to: q8, type: .q8_0)
        let cases: [(base: String, type: GGUFType, unmerge: Bool)] = [
            (MergeFixtures.sd35Diffusers, .q4_0, false),
            (MergeFixtures.sd35Original, .f16, false),
            (q8, .q8_0, false),
            (q8, .q5_1, true),
            (Repository.path("fixtures/sd35_tiny/allinone.safetensors"), .bf16, false),
        ]
        let adapter = MergeFixtures.sd35Adapter()
        for (path, type, unmerge) in cases {
            let base = try TensorCollection.checkpoint(path)
            let expected = try twoStep(base, adapter, scale: 0.8, unmerge: unmerge, type: type)
            let (report, bytes) = try direct(base, adapter, scale: 0.8, unmerge: unmerge, type: type, threads: 2)
            #expect(bytes != nil && bytes == expected, "\(path) as \(type.name)\(unmerge ? ", unmerged" : "")")
            #expect(report.unmerged == unmerge && report.touchedTensors.count >= 8)
            // The delta is there: the file differs from the base converted alone.
            let plain = dir.path + "/plain.gguf"
            try? FileManager.default.removeItem(atPath: plain)
            try Converter(source: base.transformerOnly(), to: .original, prefix: KeyPrefix.none).writeGGUF(to: plain, type: type)
            #expect(FileManager.default.contents(atPath: plain) != bytes)
        }
    }

    /// A failing merge leaves nothing at the output: a NaN in a factor is refused before writing.
    @Test func refusedMergeLeavesNothing() throws {
        var adapter = MergeFixtures.sd35Adapter()
        adapter.modules[0].down.values[3] = .nan
        let out = dir.path + "/refused.gguf"
        #expect(throws: (any Error).self) {
            try LoRAMerge.mergeToGGUF(base: try TensorCollection(path: MergeFixtures.sd35Original), adapter: adapter, output: out, type: .q8_0)
        }
        #expect(!FileManager.default.fileExists(atPath: out))
    }
}

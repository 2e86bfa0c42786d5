import Foundation
import Testing
import SafeTensors
import TestSupport

/// End-to-end runs of `flowguard lora merge` and `flowguard lora extract` on the fixtures.
@Suite struct LoRAMergeCLITests {
    let dir = TemporaryDirectory()
    let original = Repository.path("fixtures/sd35_tiny/original.safetensors")
    let diffusers = Repository.path("fixtures/sd35_tiny/diffusers")
    let lora = Repository.path("fixtures/sd35_tiny/lora/pytorch_lora_weights.safetensors")

    func flowguard(_ arguments: String...) throws -> ProcessResult {
        try runProcess(CLITests.binary, arguments)
    }

    func floats(_ path: String) throws -> [String: [Float]] {
        let collection = try TensorCollection(path: path)
        var out: [String: [Float]] = [:]
        for e in collection.entries { out[e.info.name] = try e.file.floats(of: e.info) }
        return out
    }

    @Test func mergeThenUnmergePrintsSummariesAndRestores() throws {
        let merged = dir.file("merged.safetensors"), restored = dir.file("restored.safetensors")
        let result = try flowguard("lora", "merge", original, lora, merged, "--scale", "0.5")
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.isEmpty)
        #expect(result.stdout == "merged \(lora) (diffusers, 31 modules, diffusers names) into \(original) (SD3-style, original) at scale 0.5: 15 of 95 tensors changed, written to \(merged)\n")
        let undo = try flowguard("lora", "merge", merged, lora, restored, "--scale", "0.5", "--unmerge")
        #expect(undo.status == 0, "\(undo.stderr)")
        #expect(undo.stdout == "unmerged \(lora) (diffusers, 31 modules, diffusers names) from \(merged) (SD3-style, original) at scale 0.5: 15 of 95 tensors changed, written to \(restored)\n")
        let a = try floats(restored), b = try floats(original)
        for (name, values) in b {
            #expect(zip(a[name]!, values).allSatisfy { abs($0 - $1) <= 1e-6 * max(1, abs($1)) }, "\(name)")
        }
    }

    @Test func mergeJSONWithDType() throws {
        let out = dir.file("bf16.safetensors")
        let result = try flowguard("lora", "merge", diffusers, Repository.path("fixtures/sd35_tiny/lora/peft"), out, "--dtype", "bf16", "--json")
        #expect(result.status == 0, "\(result.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        #expect(json["adapter_format"] as? String == "peft")
        #expect(json["layout"] as? String == "diffusers")
        #expect(json["tensor_count"] as? Int == 127)
        #expect((json["changed_tensors"] as? [String])?.count == 31)
        #expect(try TensorCollection(path: out).infos.allSatisfy { $0.dtype == .bf16 })
    }

    @Test func mergeRejectsAnAdapterForAnotherModel() throws {
        let out = dir.file("never.safetensors")
        let result = try flowguard("lora", "merge", original, Repository.path("fixtures/flux_tiny/lora/pytorch_lora_weights.safetensors"), out)
        #expect(result.status == 1)
        #expect(result.stdout.isEmpty)
        #expect(result.stderr.hasPrefix("error: Module \"single_transformer_blocks."))
        #expect(result.stderr.contains("does not fit the base model SD3-style"))
        #expect(dir.listing().isEmpty)
    }

    @Test func usageErrorsExitWith2() throws {
        let missing = try flowguard("lora", "merge", original, lora)
        #expect(missing.status == 2)
        let dtype = try flowguard("lora", "merge", original, lora, dir.file("x.safetensors"), "--dtype", "int8")
        #expect(dtype.status == 2 && dtype.stderr.hasPrefix("Error: The value 'int8' is invalid for '--dtype <dtype>'."))
        #expect(dtype.stderr.contains("- f8_e4m3") && dtype.stderr.contains("- q8_0"), "\(dtype.stderr)")
        let block = try flowguard("lora", "merge", original, lora, dir.file("x.safetensors"), "--dtype", "q4_0")
        #expect(block.status == 2 && block.stderr.contains("--dtype q4_0 is a GGUF block type: it is written only to a .gguf output."))
        let fp8 = try flowguard("lora", "merge", original, lora, dir.file("x.gguf"), "--dtype", "f8_e4m3")
        #expect(fp8.status == 2 && fp8.stderr.contains("--dtype f8_e4m3 cannot be written to GGUF; choose one of f32, f16, bf16, q8_0"), "\(fp8.stderr)")
        let rank = try flowguard("lora", "extract", original, original, dir.file("x.safetensors"), "--rank", "0")
        #expect(rank.status == 2 && rank.stderr.contains("--rank must be at least 1, not 0."))
        let to = try flowguard("lora", "extract", original, original, dir.file("x.safetensors"), "--rank", "2", "--to", "xlabs")
        #expect(to.status == 2 && to.stderr.hasPrefix("Error: The value 'xlabs' is invalid for '--to <format>'. Please provide one of 'peft', 'diffusers', 'kohya' or 'comfy'.\n"))
        #expect(dir.listing().isEmpty)
    }

    @Test func helpHasExamples() throws {
        for command in ["merge", "extract"] {
            let result = try flowguard("lora", command, "--help")
            #expect(result.status == 0)
            #expect(result.stdout.contains("Examples:\n  flowguard lora \(command) "))
        }
    }

    /// merge at scale 1 then extract at the adapter's rank, written as kohya and merged back:
    /// the round trip reproduces the merged checkpoint.
    @Test func extractRoundTrip() throws {
        let merged = dir.file("merged.safetensors"), extracted = dir.file("extracted.safetensors"), again = dir.file("again.safetensors")
        #expect(try flowguard("lora", "merge", original, lora, merged).status == 0)
        let result = try flowguard("lora", "extract", original, merged, extracted, "--rank", "12", "--to", "kohya")
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.first == "extracted 15 modules at rank 12 from \(merged) − \(original) (SD3-style, original) to \(extracted) (kohya)")
        #expect(lines[1] == "  module                                  rank  shape        energy    rel. error")
        #expect(lines[2] == "  joint_blocks.0.context_block.attn.proj  12    [32, 32]     1.000000  0.000000")
        #expect(lines[3].hasPrefix("  joint_blocks.0.context_block.attn.qkv   12    [96, 32]     1.000000  0.000"))
        #expect(result.stdout.hasSuffix("  energy captured overall: 1.000000; 23 unchanged linear weights skipped\n"))
        #expect(try flowguard("lora", "merge", original, extracted, again).status == 0)
        let a = try floats(again), b = try floats(merged)
        for (name, values) in b {
            #expect(zip(a[name]!, values).allSatisfy { abs($0 - $1) <= 1e-5 * max(1, abs($1)) }, "\(name)")
        }
        let json = try flowguard("lora", "extract", original, merged, dir.file("peft"), "--rank", "1", "--to", "peft", "--json")
        #expect(json.status == 0, "\(json.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as! [String: Any]
        #expect(object["naming"] as? String == "diffusers")
        #expect((object["captured_energy"] as! Double) < 1)
        #expect(FileManager.default.fileExists(atPath: dir.file("peft/adapter_config.json")))
    }

    @Test func extractFromIdenticalCheckpointsFails() throws {
        let result = try flowguard("lora", "extract", original, original, dir.file("x.safetensors"), "--rank", "2")
        #expect(result.status == 1)
        #expect(result.stderr == "error: \(original) and \(original) have no differing linear weights: nothing to extract.\n")
        #expect(dir.listing().isEmpty)
    }
}

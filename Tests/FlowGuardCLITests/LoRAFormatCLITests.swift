import Foundation
import SafeTensors
import Testing
import TestSupport

/// End-to-end runs of `flowguard lora inspect` and `flowguard lora convert`.
@Suite struct LoRAFormatCLITests {
    let dir = TemporaryDirectory()

    func flowguard(_ arguments: String...) throws -> ProcessResult {
        try runProcess(CLITests.binary, arguments)
    }

    func smallKohya() throws -> String {
        let path = dir.file("k.safetensors")
        func f(_ n: Int, _ v: Float) -> [UInt8] { [Float](repeating: v, count: n).withUnsafeBytes { Array($0) } }
        var down = [Float](repeating: 0.5, count: 16)
        down[1] = .nan
        try SafeTensorsWriter.write(to: path, tensors: [
            (TensorSpec(name: "lora_unet_double_blocks_0_img_attn_proj.lora_down.weight", dtype: .f32, shape: [2, 8]), down.withUnsafeBytes { Array($0) }),
            (TensorSpec(name: "lora_unet_double_blocks_0_img_attn_proj.lora_up.weight", dtype: .f32, shape: [8, 2]), f(16, 0.25)),
            (TensorSpec(name: "lora_unet_double_blocks_0_img_attn_proj.alpha", dtype: .f32, shape: []), f(1, 1)),
        ], metadata: ["ss_network_dim": "2"])
        return path
    }

    @Test func inspectPrintsTheWholeReport() throws {
        let path = try smallKohya()
        let result = try flowguard("lora", "inspect", path)
        #expect(result.status == 0)
        #expect(result.stdout == """
        \(path)
          format: kohya, family: FLUX, layout: original
          1 module, 32 parameters, rank 2
          NaN/Inf: 1 NaN, 0 Inf in 1 tensors
            lora_unet_double_blocks_0_img_attn_proj.lora_down.weight (byte 372): 1 NaN, 0 Inf
          modules:
            module                         rank  alpha  scale  in  out
            -----------------------------  ----  -----  -----  --  ---
            double_blocks.0.img_attn.proj     2      1    0.5   8    8
          metadata (1 entry):
            ss_network_dim = 2

        """)
    }

    @Test func inspectJSONOnTheFixture() throws {
        let result = try flowguard("lora", "inspect", "--json", Repository.path("fixtures/flux_tiny/lora/peft"))
        #expect(result.status == 0)
        let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any] ?? [:]
        #expect(object["format"] as? String == "peft")
        #expect(object["family"] as? String == "flux")
        #expect(object["layout"] as? String == "diffusers")
        #expect(object["module_count"] as? Int == 31)
        #expect(object["nan_count"] as? Int == 0)
    }

    @Test func convertWithBaseConfigAndInference() throws {
        let input = Repository.path("fixtures/sd35_tiny/lora/pytorch_lora_weights.safetensors")
        let kohya = dir.file("sd3_kohya.safetensors")
        let r1 = try flowguard("lora", "convert", input, kohya, "--to", "kohya", "--base", Repository.path("fixtures/sd35_tiny/original.safetensors"))
        #expect(r1.status == 0)
        #expect(r1.stdout == "converted \(input) (diffusers, diffusers layout, 31 modules) to \(kohya) (kohya, original layout, 15 modules) for SD3-style\n")
        let peft = dir.file("sd3_peft")
        let r2 = try flowguard("lora", "convert", kohya, peft, "--to", "peft", "--config", Repository.path("fixtures/sd35_tiny/diffusers/config.json"), "--json")
        #expect(r2.status == 0)
        let object = try JSONSerialization.jsonObject(with: Data(r2.stdout.utf8)) as? [String: Any] ?? [:]
        #expect(object["target_module_count"] as? Int == 31)
        #expect(object["architecture_inferred"] as? Bool == false)
        #expect(FileManager.default.fileExists(atPath: peft + "/adapter_config.json"))
        let comfy = dir.file("c.safetensors")
        let r3 = try flowguard("lora", "convert", peft, comfy, "--to", "comfy")
        #expect(r3.status == 0)
        #expect(r3.stderr.contains("note: architecture inferred from the adapter: width 32"))
    }

    @Test func badInputAndUsageExitCodes() throws {
        let r1 = try flowguard("lora", "convert", Repository.path("fixtures/sd35_tiny/original.safetensors"), dir.file("o.safetensors"), "--to", "kohya")
        #expect(r1.status == 1)
        #expect(r1.stderr.contains("not a LoRA adapter in any known dialect"))
        let r2 = try flowguard("lora", "convert", "a", "b", "--to", "xlabs")
        #expect(r2.status == 2)
        let r3 = try flowguard("lora", "convert", Repository.path("fixtures/sd35_tiny/lora/peft"), dir.file("x.safetensors"), "--to", "kohya",
                               "--base", Repository.path("fixtures/flux_tiny/original.safetensors"))
        #expect(r3.status == 1)
        #expect(r3.stderr.contains("does not fit the base model FLUX-style"))
        #expect(dir.listing().isEmpty)
    }

    @Test func helpHasExamples() throws {
        for sub in ["inspect", "convert"] {
            let r = try flowguard("lora", sub, "--help")
            #expect(r.status == 0)
            #expect(r.stdout.contains("Examples:"))
        }
    }
}

/// kohya exports say what they hold: `ss_network_dim`/`ss_network_alpha` only when every module
/// agrees, fused block-diagonal q/k/v named in the metadata; `--dtype` for adapters and fp8 names.
@Suite struct AdapterExportCLITests {
    let dir = TemporaryDirectory(prefix: "flowguard-adapter-export")
    let model = Repository.path("fixtures/sd35_tiny/original.safetensors")
    let adapter = Repository.path("fixtures/sd35_tiny/lora/pytorch_lora_weights.safetensors")

    func flowguard(_ arguments: [String]) throws -> ProcessResult {
        try runProcess(CLITests.binary, arguments)
    }

    @Test func fusedKohyaExportNamesItsBlockDiagonalModulesAndNoCommonRank() throws {
        let out = dir.file("kohya.safetensors")
        let result = try flowguard(["lora", "convert", adapter, out, "--to", "kohya", "--base", model, "--dtype", "bf16"])
        #expect(result.status == 0, "\(result.stderr)")
        let file = try SafeTensorsFile(path: out)
        // Factors in bf16, α in float32 (the scale stays exact).
        for info in file.tensors {
            #expect(info.dtype == (info.name.hasSuffix(".alpha") ? .f32 : .bf16), "\(info.name)")
        }
        // Rank-4 projections beside rank-12 fused q/k/v: no single network dim or alpha.
        #expect(file.header.metadataValue("ss_network_dim") == nil && file.header.metadataValue("ss_network_alpha") == nil)
        let fused = try #require(file.header.metadataValue("flowguard.fused_block_diagonal"))
        let modules = try JSONSerialization.jsonObject(with: Data(fused.utf8)) as! [String: [String: Any]]
        let qkv = try #require(modules["joint_blocks.0.x_block.attn.qkv"])
        #expect(qkv["ranks"] as? [Int] == [4, 4, 4])
        #expect(Set(qkv["parts"] as? [String] ?? []) == ["transformer_blocks.0.attn.to_q", "transformer_blocks.0.attn.to_k", "transformer_blocks.0.attn.to_v"])
        #expect(try file.info("lora_unet_joint_blocks_0_x_block_attn_qkv.lora_up.weight").shape == [96, 12])
        // It still applies: the same output as the adapter it came from, within bf16 rounding.
        let io = Repository.path("fixtures/sd35_tiny/io.safetensors")
        let a = dir.file("a.safetensors"), b = dir.file("b.safetensors")
        #expect(try flowguard(["run", "--model", model, "--inputs", io, "--output", a, "--lora", out]).status == 0)
        #expect(try flowguard(["run", "--model", model, "--inputs", io, "--output", b, "--lora", adapter]).status == 0)
        let x = try SafeTensorsFile(path: a).floats(of: "output"), y = try SafeTensorsFile(path: b).floats(of: "output")
        let scale = y.map(abs).max() ?? 1
        #expect(zip(x, y).allSatisfy { abs($0 - $1) <= 1e-2 * scale })
    }

    @Test func uniformRankKohyaExportStatesItsDimAndAlpha() throws {
        let merged = dir.file("merged.safetensors")
        #expect(try flowguard(["lora", "merge", model, adapter, merged]).status == 0)
        let out = dir.file("extracted.safetensors")
        let result = try flowguard(["lora", "extract", model, merged, out, "--rank", "2", "--to", "kohya", "--dtype", "fp16"])
        #expect(result.status == 0, "\(result.stderr)")
        let file = try SafeTensorsFile(path: out)
        #expect(file.header.metadataValue("ss_network_dim") == "2" && file.header.metadataValue("ss_network_alpha") == "2.0")
        #expect(file.header.metadataValue("flowguard.fused_block_diagonal") == nil)
        #expect(file.tensors.filter { !$0.name.hasSuffix(".alpha") }.allSatisfy { $0.dtype == .f16 })
    }

    @Test func checkpointDTypesTakeComfyUINamesAndE5M2() throws {
        for (name, dtype) in [("fp8_e5m2", DType.f8e5m2), ("fp8_e4m3fn", .f8e4m3), ("f8_e5m2", .f8e5m2)] {
            let out = dir.file("\(name).safetensors")
            let result = try flowguard(["convert", model, out, "--layout", "original", "--dtype", name, "--quiet"])
            #expect(result.status == 0, "\(name): \(result.stderr)")
            #expect(try SafeTensorsFile(path: out).tensors.allSatisfy { $0.dtype == dtype }, "\(name)")
        }
        let bad = try flowguard(["lora", "convert", adapter, dir.file("x.safetensors"), "--to", "kohya", "--dtype", "fp8_e5m2"])
        #expect(bad.status == 2 && bad.stderr.hasPrefix("Error: The value 'fp8_e5m2' is invalid for '--dtype <dtype>'. Please provide one of 'bf16', 'fp16' or 'fp32'."), "\(bad.stderr)")
    }
}

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
          format: kohya, family: FLUX, layout: original, components: transformer
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
        #expect(object["target_modules"] as? Int == 31)
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

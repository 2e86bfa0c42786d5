import Foundation
import Testing
import SafeTensors
import TestSupport

/// End-to-end runs of `flowguard run` on the fixture transformers, against diffusers' outputs.
@Suite struct RunCLITests {
    let dir = TemporaryDirectory()

    func flowguard(_ arguments: [String]) throws -> ProcessResult {
        try runProcess(CLITests.binary, arguments)
    }

    /// Every tensor of a file, widened.
    func tensors(_ path: String) throws -> [String: (shape: [Int], values: [Float])] {
        let file = try SafeTensorsFile(path: path)
        var out: [String: (shape: [Int], values: [Float])] = [:]
        for info in file.header.tensors { out[info.name] = (info.shape, try file.floats(of: info)) }
        return out
    }

    /// Writes float32 tensors to a new file.
    func write(_ tensors: [String: (shape: [Int], values: [Float])], to path: String) throws {
        let entries = tensors.keys.sorted().map { name in
            let t = tensors[name]!
            let bytes = t.values.withUnsafeBytes { [UInt8]($0) }
            return (spec: TensorSpec(name: name, dtype: .f32, shape: t.shape), bytes: bytes)
        }
        try SafeTensorsWriter.write(to: path, tensors: entries)
    }

    func relativeL2(_ a: [Float], _ b: [Float]) -> Double {
        var num = 0.0, den = 0.0
        for (x, y) in zip(a, b) { num += Double(x - y) * Double(x - y); den += Double(y) * Double(y) }
        return (num / max(den, 1e-30)).squareRoot()
    }

    @Test(arguments: [
        ("sd35_tiny", "original.safetensors"), ("sd35_tiny", "diffusers"),
        ("flux_tiny", "original.safetensors"), ("flux_tiny", "diffusers_sharded"),
    ])
    func outputMatchesDiffusers(model: String, weights: String) throws {
        let io = Repository.path("fixtures/\(model)/io.safetensors")
        let out = dir.file("out.safetensors")
        // The tiny FLUX's head size (16) leaves its RoPE axes open in the original layout: --config says.
        let config = model == "flux_tiny" && weights.hasSuffix(".safetensors")
            ? ["--config", Repository.path("fixtures/flux_tiny/diffusers/config.json")] : []
        let result = try flowguard(["run", "--model", Repository.path("fixtures/\(model)/\(weights)"),
                                    "--inputs", io, "--output", out, "--threads", "2"] + config)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("output [") && result.stdout.contains("written to \(out)"))
        let expected = try tensors(io)["output"]!, got = try tensors(out)["output"]!
        #expect(got.shape == expected.shape)
        let error = relativeL2(got.values, expected.values)
        #expect(error <= 1e-4, "relative L2 error \(error)")
    }

    @Test(arguments: ["sd35_tiny", "flux_tiny"])
    func loraOutputMatchesDiffusersAndJSONDescribesTheRun(model: String) throws {
        let io = Repository.path("fixtures/\(model)/lora/io_lora.safetensors")
        let lora = Repository.path("fixtures/\(model)/lora/pytorch_lora_weights.safetensors")
        let out = dir.file("out.safetensors")
        let config = model == "flux_tiny" ? ["--config", Repository.path("fixtures/flux_tiny/diffusers/config.json")] : []
        let result = try flowguard(["run", "--model", Repository.path("fixtures/\(model)/original.safetensors"),
                                    "--inputs", io, "--output", out, "--lora", lora, "--json"] + config)
        #expect(result.status == 0, "\(result.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        #expect(json["layout"] as? String == "original")
        #expect(json["family"] as? String == (model == "sd35_tiny" ? "sd3" : "flux"))
        let adapters = json["adapters"] as! [[String: Any]]
        #expect(adapters.count == 1 && adapters[0]["path"] as? String == lora && (adapters[0]["module_count"] as? Int ?? 0) > 0)
        let expected = try tensors(io)["output"]!, got = try tensors(out)["output"]!
        let error = relativeL2(got.values, expected.values)
        #expect(error <= 1e-4, "relative L2 error \(error)")
        // The same adapter at scale 0 is the base model.
        let base = dir.file("base.safetensors")
        let zero = try flowguard(["run", "--model", Repository.path("fixtures/\(model)/diffusers"), "--inputs", io,
                                  "--output", base, "--lora", lora, "--lora-scale", "0"])
        #expect(zero.status == 0, "\(zero.stderr)")
        let plain = try tensors(Repository.path("fixtures/\(model)/io.safetensors"))["output"]!
        #expect(relativeL2(try tensors(base)["output"]!.values, plain.values) <= 1e-4)
    }

    @Test func missingInputIsNamedAndNothingIsWritten() throws {
        var inputs = try tensors(Repository.path("fixtures/sd35_tiny/io.safetensors"))
        inputs["pooled_projections"] = nil
        let file = dir.file("inputs.safetensors")
        try write(inputs, to: file)
        let out = dir.file("out.safetensors")
        let result = try flowguard(["run", "--model", Repository.path("fixtures/sd35_tiny/diffusers"),
                                    "--inputs", file, "--output", out])
        #expect(result.status == 1)
        #expect(result.stderr.contains(file) && result.stderr.contains("pooled_projections"), "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out))
    }

    @Test func wrongInputShapeIsNamed() throws {
        var inputs = try tensors(Repository.path("fixtures/flux_tiny/io.safetensors"))
        let ids = inputs["txt_ids"]!
        inputs["txt_ids"] = (shape: [ids.shape[0] - 1, 3], values: Array(ids.values.dropLast(3)))
        let file = dir.file("inputs.safetensors")
        try write(inputs, to: file)
        let out = dir.file("out.safetensors")
        let result = try flowguard(["run", "--model", Repository.path("fixtures/flux_tiny/diffusers"),
                                    "--inputs", file, "--output", out])
        #expect(result.status == 1)
        #expect(result.stderr.contains(file) && result.stderr.contains("txt_ids"), "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out))

        var sd3 = try tensors(Repository.path("fixtures/sd35_tiny/io.safetensors"))
        let h = sd3["hidden_states"]!
        sd3["hidden_states"] = (shape: [h.shape[0], h.shape[1] / 2, h.shape[2], h.shape[3]], values: Array(h.values.prefix(h.values.count / 2)))
        try write(sd3, to: file)
        let bad = try flowguard(["run", "--model", Repository.path("fixtures/sd35_tiny/diffusers"), "--inputs", file, "--output", out])
        #expect(bad.status == 1)
        #expect(bad.stderr.contains("hidden_states"), "\(bad.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out))
    }

    @Test func adapterForAnotherModelIsRejected() throws {
        let out = dir.file("out.safetensors")
        let flux = Repository.path("fixtures/flux_tiny/lora/pytorch_lora_weights.safetensors")
        let result = try flowguard(["run", "--model", Repository.path("fixtures/sd35_tiny/original.safetensors"),
                                    "--inputs", Repository.path("fixtures/sd35_tiny/io.safetensors"), "--output", out,
                                    "--lora", flux])
        #expect(result.status == 1)
        #expect(result.stderr.contains(flux), "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out))
    }

    @Test func usageErrorsExitWith2() throws {
        let io = Repository.path("fixtures/sd35_tiny/io.safetensors")
        let scales = try flowguard(["run", "--model", io, "--inputs", io, "--output", dir.file("x"), "--lora-scale", "2"])
        #expect(scales.status == 2 && scales.stderr.contains("--lora-scale was given 1 times but --lora only 0 times."))
        let threads = try flowguard(["run", "--model", io, "--inputs", io, "--output", dir.file("x"), "--threads", "0"])
        #expect(threads.status == 2 && threads.stderr.contains("--threads must be between 1 and 1024."))
        #expect(dir.listing().isEmpty)
    }
}

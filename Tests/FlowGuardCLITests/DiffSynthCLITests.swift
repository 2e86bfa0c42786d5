import Foundation
import Testing
import SafeTensors
import TestSupport

/// End-to-end runs of `flowguard diff`, `flowguard synth` and `flowguard inspect --stats`.
@Suite struct DiffSynthCLITests {
    let dir = TemporaryDirectory()

    func flowguard(_ arguments: String...) throws -> ProcessResult {
        try runProcess(CLITests.binary, arguments)
    }

    func floatFile(_ name: String, _ values: [Float], dtype: DType = .f32) throws -> String {
        let path = dir.file(name)
        try SafeTensorsWriter.write(to: path, specs: [TensorSpec(name: "w", dtype: dtype, shape: [values.count])]) { try $0.write(floats: values) }
        return path
    }

    @Test func diffExitStatusesAndSummary() throws {
        let a = try floatFile("a.safetensors", [1, 2, 3, 4])
        let same = try floatFile("same.safetensors", [1, 2, 3, 4])
        let other = try floatFile("other.safetensors", [1, 2, 3.5, 4])

        let ok = try flowguard("diff", a, same)
        #expect(ok.status == 0 && ok.stderr.isEmpty)
        #expect(ok.stdout == "A: \(a)\nB: \(same)\n1 identical (bytes), 0 equal within tolerance, 0 differ, 0 only in A, 0 only in B\n")

        let differ = try flowguard("diff", a, other)
        #expect(differ.status == 1)
        #expect(differ.stdout == """
        A: \(a)
        B: \(other)
        tensors that are not byte-identical (tolerance 0):
          name  status  dtype  shape  max abs  max rel   rms
          ----  ------  -----  -----  -------  -------  ----
          w     differ  F32    [4]        0.5   0.1429  0.25
        0 identical (bytes), 0 equal within tolerance, 1 differ, 0 only in A, 0 only in B

        """)
        #expect(try flowguard("diff", "--tolerance", "0.5", a, other).status == 0)

        let json = try flowguard("diff", "--json", a, other)
        #expect(json.status == 1)
        let object = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as! [String: Any]
        #expect(object["differ"] as? Bool == true)
        #expect((object["summary"] as? [String: Int])?["differ_count"] == 1)
        let tensor = (object["tensors"] as! [[String: Any]])[0]
        #expect(tensor["status"] as? String == "differ" && tensor["max_abs_diff"] as? Double == 0.5)
    }

    @Test func diffBadInputAndUsage() throws {
        let a = try floatFile("a.safetensors", [1])
        let missing = try flowguard("diff", a, dir.file("nope.safetensors"))
        #expect(missing.status == 1 && missing.stdout.isEmpty)
        #expect(missing.stderr == "error: \(dir.file("nope.safetensors")): open failed: No such file or directory\n")
        let unmapped = try flowguard("diff", "--map-layouts", a, a)
        #expect(unmapped.status == 1 && unmapped.stdout.isEmpty && unmapped.stderr.hasPrefix("error: "))
        #expect(try flowguard("diff", a).status == 2)
        #expect(try flowguard("diff", "--tolerance", "-1", a, a).status == 2)
        let help = try flowguard("diff", "--help")
        #expect(help.status == 0 && help.stdout.contains("like cmp(1) and diff(1)") && help.stdout.contains("Examples:"))
    }

    @Test func diffAcrossLayoutsOfTheFixture() throws {
        let original = Repository.path("fixtures/sd35_tiny/original.safetensors")
        let diffusers = Repository.path("fixtures/sd35_tiny/diffusers")
        let mapped = try flowguard("diff", "--map-layouts", original, diffusers)
        #expect(mapped.status == 0)
        #expect(mapped.stdout.hasSuffix("95 identical (bytes), 0 equal within tolerance, 0 differ, 0 only in A, 0 only in B\n"))
        #expect(mapped.stdout.contains("mapped: B's diffusers layout converted to A's original layout"))
        let plain = try flowguard("diff", original, diffusers)
        #expect(plain.status == 1)
        #expect(plain.stdout.hasSuffix("0 identical (bytes), 0 equal within tolerance, 0 differ, 95 only in A, 127 only in B\n"))
    }

    @Test func synthLikeTheFixtureInBothLayouts() throws {
        let fixture = Repository.path("fixtures/sd35_tiny/original.safetensors")
        let file = dir.file("random.safetensors")
        let folder = dir.file("random-diffusers")
        let one = try flowguard("synth", "--like", fixture, "--layout", "original", "--dtype", "bf16", "--seed", "3", file)
        #expect(one.status == 0)
        #expect(one.stdout.hasPrefix("wrote SD3-style (original layout, BF16): 95 tensors, 141,056 parameters, 275.5 KiB (282,112 bytes) in "))
        let two = try flowguard("synth", "--like", fixture, "--layout", "diffusers", "--dtype", "bf16", "--seed", "3", "--json", folder)
        #expect(two.status == 0)
        let object = try JSONSerialization.jsonObject(with: Data(two.stdout.utf8)) as! [String: Any]
        #expect(object["tensor_count"] as? Int == 127 && object["architecture"] as? String == "SD3-style")
        #expect(dir.listing().contains("random-diffusers"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder).sorted() == ["config.json", "diffusion_pytorch_model.safetensors"])
        #expect(try flowguard("verify", folder).status == 0)
        // Same seed: the two layouts hold the same numbers; another seed differs.
        #expect(try flowguard("diff", "--map-layouts", file, folder).status == 0)
        let reseeded = dir.file("reseeded.safetensors")
        #expect(try flowguard("synth", "--like", fixture, "--layout", "original", "--dtype", "bf16", "--seed", "4", reseeded).status == 0)
        #expect(try flowguard("diff", file, reseeded).status == 1)
        // Detection on the output names the fixture's architecture.
        let inspect = try flowguard("inspect", file)
        #expect(inspect.stdout.contains("architecture: SD3-style (3 blocks, hidden 32, 4 heads × 8, attn2 on blocks 0–1"))
    }

    @Test func synthUsageErrors() throws {
        #expect(try flowguard("synth", "--layout", "original", "--dtype", "bf16", dir.file("x")).status == 2)
        #expect(try flowguard("synth", "--variant", "sd9", "--layout", "original", "--dtype", "bf16", dir.file("x")).status == 2)
        #expect(try flowguard("synth", "--variant", "flux-dev", "--layout", "sideways", "--dtype", "bf16", dir.file("x")).status == 2)
        #expect(try flowguard("synth", "--variant", "flux-dev", "--layout", "original", "--dtype", "i8", dir.file("x")).status == 2)
        #expect(dir.listing().isEmpty)
    }

    @Test func inspectStats() throws {
        let path = try floatFile("s.safetensors", [1, -2, .nan, .infinity, 0, 3])
        let text = try flowguard("inspect", "--stats", path)
        #expect(text.status == 0)
        #expect(text.stdout.hasSuffix("""
          tensors:
            #  name  dtype  shape  params  file bytes  min  max  mean    std  NaN  Inf
            -  ----  -----  -----  ------  ----------  ---  ---  ----  -----  ---  ---
            1  w     F32    [6]         6  [64, 88)     -2    3   0.5  1.803    1    1
          statistics: 1 NaN, 1 +Inf, 0 -Inf in 1 tensors

        """))
        let json = try flowguard("inspect", "--stats", "--json", path)
        let object = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as! [String: Any]
        let file = (object["files"] as! [[String: Any]])[0]
        let stats = (file["tensors"] as! [[String: Any]])[0]["stats"] as! [String: Any]
        #expect(stats["min"] as? Double == -2 && stats["max"] as? Double == 3 && stats["mean"] as? Double == 0.5)
        #expect(stats["nan_count"] as? Int == 1 && stats["pos_inf_count"] as? Int == 1 && stats["zero_count"] as? Int == 1)
        #expect((file["statistics"] as? [String: Int])?["nan_count"] == 1)
        // Without --stats nothing is read and the output is unchanged.
        #expect(try flowguard("inspect", path).stdout.contains("min") == false)
    }
}

/// `diff` across layouts and families: a plain diff of one model's two layouts suggests
/// `--map-layouts`; `--map-layouts` across families is an error.
@Suite struct DiffLayoutsCLITests {
    let sd3 = Repository.path("fixtures/sd35_tiny/original.safetensors")
    let sd3Diffusers = Repository.path("fixtures/sd35_tiny/diffusers")
    let flux = Repository.path("fixtures/flux_tiny/diffusers")

    @Test func plainDiffOfTwoLayoutsSuggestsMapLayouts() throws {
        let result = try runProcess(CLITests.binary, ["diff", sd3, sd3Diffusers])
        #expect(result.status == 1)
        #expect(result.stdout.hasSuffix("0 identical (bytes), 0 equal within tolerance, 0 differ, 95 only in A, 127 only in B\n"))
        #expect(result.stderr == "note: A is SD3-style in the original layout (prefix 'model.diffusion_model.') and B in the "
                + "diffusers layout: their names differ by layout; compare them with --map-layouts\n")
        let mapped = try runProcess(CLITests.binary, ["diff", sd3, sd3Diffusers, "--map-layouts"])
        #expect(mapped.status == 0 && mapped.stderr.isEmpty, "\(mapped.stdout)\(mapped.stderr)")
        let json = try runProcess(CLITests.binary, ["diff", sd3, sd3Diffusers, "--json"])
        let object = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as! [String: Any]
        #expect((object["hint"] as? String)?.hasSuffix("compare them with --map-layouts") == true)
    }

    @Test func mapLayoutsAcrossFamiliesIsAnError() throws {
        let result = try runProcess(CLITests.binary, ["diff", sd3, flux, "--map-layouts"])
        #expect(result.status == 1 && result.stdout.isEmpty)
        #expect(result.stderr == "error: A is SD3-style (original layout) and B is FLUX-style (diffusers layout): "
                + "--map-layouts compares the two layouts of one model, not models of different families.\n")
    }
}

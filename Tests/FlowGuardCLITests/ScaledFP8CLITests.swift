import Foundation
import Testing
import SafeTensors
import TestSupport

/// ComfyUI scaled-fp8 checkpoints read as float(fp8)·scale (oracle: torch's values in
/// `fixtures/sd35_tiny/scaled_fp8.expected.safetensors`, tools/fixtures/make_scaled_fp8_fixture.py).
@Suite struct ScaledFP8CLITests {
    let dir = TemporaryDirectory()
    let scaled = Repository.path("fixtures/sd35_tiny/scaled_fp8.safetensors")

    func flowguard(_ arguments: String...) throws -> ProcessResult {
        try runProcess(CLITests.binary, arguments)
    }

    @Test(arguments: ["fp32", "bf16"])
    func convertDropsTheScalesAndEqualsTorch(dtype: String) throws {
        let out = dir.file("out-\(dtype).safetensors")
        let result = try flowguard("convert", scaled, out, "--layout", "original", "--dtype", dtype)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("scaled-fp8 checkpoint: 38 weights read as float(fp8)·scale; the marker and 76 scale tensors left out"))
        let file = try SafeTensorsFile(path: out)
        let expected = try SafeTensorsFile(path: Repository.path("fixtures/sd35_tiny/scaled_fp8.expected.safetensors"))
        #expect(file.tensors.allSatisfy { !$0.name.hasSuffix("scale_weight") && !$0.name.hasSuffix("weight_scale") && !$0.name.hasSuffix("scale_input") && !$0.name.hasSuffix("scaled_fp8") })
        #expect(Set(file.tensors.map(\.name)) == Set(expected.tensors.map(\.name)))
        for info in expected.tensors {
            let want = try expected.floats(of: info)
            let got = try file.floats(of: try file.info(info.name))
            if dtype == "fp32" {
                for (a, b) in zip(got, want) { #expect(abs(a - b) <= 1e-7 * max(abs(b), 1e-30), "\(info.name)") }
                #expect(got == want, "\(info.name)")
            } else {
                // bf16: one rounding of the same values.
                for (a, b) in zip(got, want) { #expect(abs(a - b) <= abs(b) / 128, "\(info.name)") }
            }
        }
    }

    @Test func runOnScaledFP8EqualsRunOnTheDequantizedWeights() throws {
        let inputs = Repository.path("fixtures/sd35_tiny/io.safetensors")
        let a = dir.file("a.safetensors"), b = dir.file("b.safetensors")
        #expect(try flowguard("run", "--model", scaled, "--inputs", inputs, "--output", a, "--quiet").status == 0)
        #expect(try flowguard("run", "--model", Repository.path("fixtures/sd35_tiny/scaled_fp8.expected.safetensors"), "--inputs", inputs, "--output", b, "--quiet").status == 0)
        #expect(try SafeTensorsFile(path: a).floats(of: "output") == SafeTensorsFile(path: b).floats(of: "output"))
    }
}

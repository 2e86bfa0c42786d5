import Foundation
import Testing
import TestSupport

/// `flowguard train --base-lora PATH[:SCALE]`: adapters applied to the frozen base. Bad values
/// are usage errors naming the flag before any work; a run says what it trained on.
@Suite struct BaseLoRACLITests {
    let dir = TemporaryDirectory(prefix: "flowguard-base-lora")
    static let lokr = Repository.path("fixtures/lora_dialects/sd3_lycoris_lokr.safetensors")

    func train(_ output: String, _ extra: [String]) throws -> ProcessResult {
        try runProcess(CLITests.binary, ["train", "--config", Repository.path("fixtures/train/sd35_tiny_demo.json"), "--output", output,
                                         "--steps", "1", "--group-size", "2", "--batch-size", "2", "--sampling-steps", "3",
                                         "--eval-steps", "2", "--eval-prompts", "1"] + extra)
    }

    @Test func helpNamesTheFlag() throws {
        let help = try runProcess(CLITests.binary, ["train", "--help"]).stdout
        #expect(help.contains("--base-lora <PATH[:SCALE]>"))
        #expect(help.contains("--base-lora style_lokr.safetensors:0.8"))
    }

    @Test func badValuesAreUsageErrorsNamingTheFlag() throws {
        let cases: [(String, String)] = [
            (dir.file("absent.safetensors"), "Error: --base-lora: entry 1: no file or folder \"\(dir.file("absent.safetensors"))\""),
            (Self.lokr + ":heavy", "Error: --base-lora: entry 1: \"heavy\" after the last ':' is not a number (the scale of \"\(Self.lokr)\")"),
            (Self.lokr + ":nan", "Error: --base-lora: entry 1 (\"\(Self.lokr):nan\"): the scale after the last ':' must be a finite number, found \"nan\""),
            (Self.lokr + ":", "Error: --base-lora: entry 1 (\"\(Self.lokr):\"): nothing follows the last ':' (write PATH or PATH:SCALE)"),
        ]
        for (value, expected) in cases {
            let result = try train(dir.file("run"), ["--base-lora", Self.lokr, "--base-lora", value])
            #expect(result.status == 2 && result.stdout.isEmpty, "\(value): \(result.stderr)")
            // The second flag is the bad one, but the error names its entry in the list.
            let first = result.stderr.split(separator: "\n").first.map(String.init) ?? ""
            #expect(first == expected.replacingOccurrences(of: "entry 1", with: "entry 2"), "\(first)")
        }
        #expect(dir.listing().isEmpty)
    }

    @Test func aBadConfigEntryIsBadInputNamingTheKey() throws {
        let config = dir.file("bad.json")
        try #"{"model": "m", "prompts": "p", "reward": "builtin:mean", "output": "o", "base_adapters": [{"path": "x", "scale": "high"}]}"#
            .write(toFile: config, atomically: true, encoding: .utf8)
        let result = try runProcess(CLITests.binary, ["train", "--config", config])
        #expect(result.status == 1)
        #expect(result.stderr == "error: config \(config): key \"base_adapters\": entry 1: \"scale\" must be a finite number, found \"high\"\n")
    }

    @Test func aRunReportsItsBaseAdapters() throws {
        let result = try train(dir.file("run"), ["--base-lora", Self.lokr + ":0.8", "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        let adapters = try #require(json["base_adapters"] as? [[String: Any]])
        #expect(adapters.count == 1 && adapters[0]["path"] as? String == Self.lokr && adapters[0]["scale"] as? Double == 0.8)
        #expect((adapters[0]["content_hash"] as? String)?.hasPrefix("xxh64:") == true)
        #expect(result.stderr.contains("applying base adapter \(Self.lokr) at scale 0.8 (xxh64:"))
        let summary = try train(dir.file("again"), ["--base-lora", Self.lokr])
        #expect(summary.status == 0, "\(summary.stderr)")
        #expect(summary.stdout.contains("  base adapter: \(Self.lokr) at scale 1 (xxh64:"))
        #expect(summary.stdout.contains("the trained LoRA is a delta on top of the base with these adapters; its exports do not contain them"))
    }
}

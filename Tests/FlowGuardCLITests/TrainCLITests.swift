import Foundation
import Testing
import SafeTensors
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// `flowguard train` end to end: help, a run with --json, bad input, and kill -9 at random
/// moments followed by --resume giving the uninterrupted run's bits.
@Suite struct TrainCLITests {
    let dir = TemporaryDirectory(prefix: "flowguard-train-cli")

    func flowguard(_ arguments: [String]) throws -> ProcessResult {
        try runProcess(CLITests.binary, arguments)
    }

    /// Flags making the demo config tiny and putting the run in `output`.
    func tiny(_ output: String, steps: Int = 3) -> [String] {
        ["train", "--config", Repository.path("fixtures/train/sd35_tiny_demo.json"), "--output", output,
         "--steps", "\(steps)", "--group-size", "2", "--batch-size", "2", "--sampling-steps", "3", "--eval-steps", "3",
         "--checkpoint-every", "1", "--updates-per-rollout", "2", "--eval-prompts", "1", "--ema", "true", "--ema-interval", "1"]
    }

    @Test func helpShowsAnExample() throws {
        let result = try flowguard(["train", "--help"])
        #expect(result.status == 0)
        #expect(result.stdout.contains("flowguard train --config fixtures/train/sd35_tiny_demo.json"))
        #expect(result.stdout.contains("--group-size") && result.stdout.contains("--resume"))
        #expect(!result.stdout.contains("--stop-after"))
    }

    @Test func trainsAndDescribesTheRunAsJSON() throws {
        let out = dir.file("run")
        // Progress for all work (a tiny run can finish within the first second, when nothing shows).
        var environment = ProcessInfo.processInfo.environment
        environment["FLOWGUARD_PROGRESS_AFTER"] = "0"
        let result = try runProcess(CLITests.binary, tiny(out, steps: 2) + ["--json"], environment: environment)
        #expect(result.status == 0, "\(result.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        #expect(json["step_count"] as? Int == 2 && json["optimizer_step_count"] as? Int == 4)
        let exports = json["exports"] as! [String: String]
        #expect(Set(exports.keys) == ["diffusers", "peft", "kohya", "archive"])
        for path in exports.values { #expect(FileManager.default.fileExists(atPath: path), "\(path)") }
        #expect(result.stderr.contains("step 2/2") && result.stderr.contains("s/step") && result.stderr.contains("ETA"))
        // Standard error is a pipe here: plain lines, never a carriage return.
        #expect(!result.stderr.contains("\r"))
        // What it exports loads as an adapter of the model.
        let inspect = try flowguard(["lora", "inspect", exports["peft"]!])
        #expect(inspect.status == 0 && inspect.stdout.contains("31 modules"), "\(inspect.stdout)\(inspect.stderr)")
    }

    @Test func badInputExitsOneWithAClearMessage() throws {
        let config = dir.file("bad.json")
        try #"{"model": "m", "prompts": "p", "reward": "builtin:mean", "output": "o", "lr": 1}"#.write(toFile: config, atomically: true, encoding: .utf8)
        let bad = try flowguard(["train", "--config", config])
        #expect(bad.status == 1)
        #expect(bad.stderr == "error: config \(config): key \"lr\": is not a config key\n")
        let missing = try flowguard(tiny(dir.file("x")) + ["--model", dir.file("absent")])
        #expect(missing.status == 1 && missing.stderr.hasPrefix("error: model \(dir.file("absent")):"), "\(missing.stderr)")
        let flag = try flowguard(tiny(dir.file("y")) + ["--noise-level", "loud"])
        // A bad flag value is a usage error naming the flag, found before any work starts.
        #expect(flag.status == 2 && flag.stderr.hasPrefix("Error: --noise-level: must be a number, found \"loud\"\n"), "\(flag.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir.file("y")))
    }

    /// Every `step-*` folder is complete: its three files, a readable checkpoint.json and state.
    func checkCheckpointsComplete(_ run: String) throws {
        let folder = run + "/checkpoints"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        for name in names where name.hasPrefix("step-") {
            let path = folder + "/" + name
            let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path + "/checkpoint.json"))) as! [String: Any]
            #expect(json["step"] as? Int == Int(name.dropFirst(5)), "\(path)")
            let state = try SafeTensorsFile(path: path + "/state.safetensors")
            #expect(state.header.metadataValue("flowguard.training_state") != nil)
            let archive = try readBytes(path + "/adapter.fgdelta")
            #expect(archive.starts(with: Array("FGDELTA\u{0}".utf8)) && archive.count > 64, "\(path)")
        }
    }

    @Test func killNineAtRandomMomentsThenResumeGivesTheSameBits() throws {
        let reference = dir.file("reference")
        let steps = 5
        let full = try flowguard(tiny(reference, steps: steps))
        #expect(full.status == 0, "\(full.stderr)")

        let run = dir.file("killed")
        var random = SeededGenerator(seed: 42)
        var kills = 0
        for attempt in 0..<4 {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: CLITests.binary)
            process.arguments = tiny(run, steps: steps) + (attempt == 0 ? [] : ["--resume"])
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            let delay = 0.15 + Double(random.next() % 1000) / 1000 * 1.2
            usleep(UInt32(delay * 1e6))
            if process.isRunning {
                kill(process.processIdentifier, SIGKILL)
                kills += 1
            }
            process.waitUntilExit()
            try checkCheckpointsComplete(run)
        }
        let last = try flowguard(tiny(run, steps: steps) + ["--resume"])
        #expect(last.status == 0, "\(last.stderr)")
        #expect(kills >= 2, "only \(kills) of the runs were killed before finishing")
        try checkCheckpointsComplete(run)
        for file in ["pytorch_lora_weights.safetensors", "adapter_kohya.safetensors", "adapter.fgdelta", "peft/adapter_model.safetensors"] {
            #expect(try readBytes(reference + "/final/" + file) == readBytes(run + "/final/" + file), "\(file)")
        }
        for step in 1...steps {
            for file in ["state.safetensors", "adapter.fgdelta"] {
                let name = String(format: "/checkpoints/step-%06d/", step) + file
                #expect(try readBytes(reference + name) == readBytes(run + name), "\(name)")
            }
        }
        let names = try FileManager.default.contentsOfDirectory(atPath: run + "/checkpoints")
        #expect(!names.contains { $0.hasPrefix(".tmp-") })
    }
}


/// `--lora-targets` names modules: one that matches nothing is a usage error naming it.
@Suite struct LoRATargetsCLITests {
    @Test func aTargetThatMatchesNothingIsNamed() throws {
        let dir = TemporaryDirectory(prefix: "flowguard-targets")
        let config = Repository.path("fixtures/train/sd35_tiny_demo.json")
        let result = try runProcess(CLITests.binary, ["train", "--config", config, "--output", dir.file("run"), "--lora-targets", "to_q,foo"])
        #expect(result.status == 2 && result.stdout.isEmpty)
        let first = result.stderr.split(separator: "\n").first.map(String.init)
        #expect(first == "Error: --lora-targets: \"foo\" matches no attention module of \(Repository.path("fixtures/sd35_tiny/diffusers")) "
                + "(its attention modules: add_k_proj, add_q_proj, add_v_proj, to_add_out, to_k, to_out.0, to_q, to_v)", "\(result.stderr)")
        #expect(dir.listing().isEmpty)
    }
}

/// Where prompts come from is said where a new user looks: `train --help` and the README.
@Suite struct PromptEncoderPointerTests {
    @Test func trainHelpAndReadmeNameTheEncoder() throws {
        let help = try runProcess(CLITests.binary, ["train", "--help"]).stdout
        #expect(help.split(whereSeparator: \.isWhitespace).joined(separator: " ").contains("python3 tools/prompts/encode_prompts.py --model-dir PIPELINE"))
        let readme = try String(contentsOfFile: Repository.path("README.md"), encoding: .utf8)
        #expect(readme.contains("tools/prompts/encode_prompts.py --model-dir"))
        #expect(FileManager.default.fileExists(atPath: Repository.path("tools/prompts/encode_prompts.py")))
    }
}

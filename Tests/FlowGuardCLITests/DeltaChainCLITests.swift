import Foundation
import Testing
import SafeTensors
import TestSupport

/// A training run's checkpoints are XOR deltas of their predecessors: every command reads one
/// by its path alone (the run folder records the chain), and `--keep-checkpoints` keeps the chains
/// the kept checkpoints need.
@Suite struct DeltaChainCLITests {
    let dir = TemporaryDirectory(prefix: "flowguard-chain-cli")
    let model = Repository.path("fixtures/sd35_tiny/original.safetensors")
    let io = Repository.path("fixtures/sd35_tiny/io.safetensors")

    func flowguard(_ arguments: [String]) throws -> ProcessResult {
        try runProcess(CLITests.binary, arguments)
    }

    /// Trains `steps` tiny steps with a checkpoint after each one into `run`.
    func train(_ run: String, steps: Int, extra: [String] = []) throws {
        let result = try flowguard(["train", "--config", Repository.path("fixtures/train/sd35_tiny_demo.json"), "--output", run,
                                    "--steps", "\(steps)", "--group-size", "2", "--batch-size", "2", "--sampling-steps", "3",
                                    "--eval-steps", "3", "--checkpoint-every", "1", "--eval-prompts", "0", "--quiet"] + extra)
        #expect(result.status == 0, "\(result.stderr)")
    }

    func checkpoint(_ run: String, _ step: Int) -> String {
        run + String(format: "/checkpoints/step-%06d", step)
    }

    @Test func theThirdCheckpointOfAChainReadsByItself() throws {
        let run = dir.file("run")
        try train(run, steps: 3)
        // Step 3 is an XOR delta of step 2, itself a delta of step 1.
        let description = try String(contentsOfFile: checkpoint(run, 3) + "/checkpoint.json", encoding: .utf8)
        #expect(description.contains(#""reference":"step-000002/adapter.fgdelta""#), "\(description)")
        let archive = checkpoint(run, 3) + "/adapter.fgdelta"
        let final = run + "/final/pytorch_lora_weights.safetensors"

        // unpack without --reference: the exact adapter the run exported at step 3.
        let out = dir.file("step3.safetensors")
        let unpack = try flowguard(["lora", "unpack", archive, out])
        #expect(unpack.status == 0, "\(unpack.stderr)")
        #expect(unpack.stdout == "unpacked \(archive) → \(out): 62 tensors, \(try readBytes(final).count) bytes\n")
        #expect(try readBytes(out) == readBytes(final))
        // The checkpoint folder names its archive.
        let fromFolder = dir.file("folder.safetensors")
        #expect(try flowguard(["lora", "unpack", checkpoint(run, 3), fromFolder]).status == 0)
        #expect(try readBytes(fromFolder) == readBytes(final))

        // lora inspect reads the archive: the same description as of the file it holds.
        let inspectArchive = try flowguard(["lora", "inspect", archive])
        let inspectFile = try flowguard(["lora", "inspect", final])
        #expect(inspectArchive.status == 0, "\(inspectArchive.stderr)")
        #expect(inspectArchive.stdout.replacingOccurrences(of: archive, with: "ADAPTER")
                == inspectFile.stdout.replacingOccurrences(of: final, with: "ADAPTER"))

        // run --lora takes the archive: the same output as with the safetensors file.
        let a = dir.file("a.safetensors"), b = dir.file("b.safetensors")
        #expect(try flowguard(["run", "--model", model, "--inputs", io, "--output", a, "--lora", archive]).status == 0)
        #expect(try flowguard(["run", "--model", model, "--inputs", io, "--output", b, "--lora", final]).status == 0)
        #expect(try readBytes(a) == readBytes(b))

        // Moved out of its run folder, the archive says what it needs.
        let alone = dir.file("alone.fgdelta")
        try FileManager.default.copyItem(atPath: archive, toPath: alone)
        let lost = try flowguard(["lora", "unpack", alone, dir.file("lost.safetensors")])
        #expect(lost.status == 1 && lost.stderr.contains("give the reference (--reference)"), "\(lost.stderr)")
    }

    @Test func keepCheckpointsKeepsTheChainsItNeeds() throws {
        let run = dir.file("run")
        // Ten checkpoints: 1…8 one chain from keyframe 1, 9 a keyframe, 10 a delta of 9.
        try train(run, steps: 10, extra: ["--keep-checkpoints", "1"])
        let names = try FileManager.default.contentsOfDirectory(atPath: run + "/checkpoints").sorted()
        #expect(names == ["step-000009", "step-000010"])
        let out = dir.file("step10.safetensors")
        #expect(try flowguard(["lora", "unpack", checkpoint(run, 10), out]).status == 0)
        #expect(try readBytes(out) == readBytes(run + "/final/pytorch_lora_weights.safetensors"))

        // Keeping three of a chain keeps the whole chain back to its keyframe.
        let chained = dir.file("chained")
        try train(chained, steps: 5, extra: ["--keep-checkpoints", "3"])
        let kept = try FileManager.default.contentsOfDirectory(atPath: chained + "/checkpoints").sorted()
        #expect(kept == (1...5).map { String(format: "step-%06d", $0) })
        // Resuming with another retention is allowed (it does not change the training).
        let resumed = try flowguard(["train", "--config", Repository.path("fixtures/train/sd35_tiny_demo.json"), "--output", chained,
                                     "--steps", "6", "--group-size", "2", "--batch-size", "2", "--sampling-steps", "3",
                                     "--eval-steps", "3", "--checkpoint-every", "1", "--eval-prompts", "0", "--quiet",
                                     "--resume", "--keep-checkpoints", "1"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        let after = try FileManager.default.contentsOfDirectory(atPath: chained + "/checkpoints").sorted()
        #expect(after == (1...6).map { String(format: "step-%06d", $0) }, "step 6 is a delta of 5, back to keyframe 1")
    }
}

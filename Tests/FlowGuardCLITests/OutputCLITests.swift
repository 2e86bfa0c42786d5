import Foundation
import Testing
import SafeTensors
import TestSupport

/// What every command does with its outputs and its standard error: progress as plain lines off a
/// terminal (never a `\r`), `--quiet`, `--version`, and an existing output refused unless
/// `--force`, which replaces it whole.
@Suite struct OutputCLITests {
    let dir = TemporaryDirectory(prefix: "flowguard-output-cli")
    let model = Repository.path("fixtures/sd35_tiny/original.safetensors")
    let diffusers = Repository.path("fixtures/sd35_tiny/diffusers")
    let adapter = Repository.path("fixtures/sd35_tiny/lora/pytorch_lora_weights.safetensors")
    let io = Repository.path("fixtures/sd35_tiny/io.safetensors")

    func flowguard(_ arguments: [String], environment: [String: String]? = nil) throws -> ProcessResult {
        try runProcess(CLITests.binary, arguments, environment: environment)
    }

    /// The environment with progress shown for all work (not only work over a second).
    var progressAlways: [String: String] {
        var env = ProcessInfo.processInfo.environment
        env["FLOWGUARD_PROGRESS_AFTER"] = "0"
        return env
    }

    @Test func versionIsPrintedAndDocumented() throws {
        let result = try flowguard(["--version"])
        #expect(result.status == 0 && result.stderr.isEmpty)
        let line = result.stdout.trimmingCharacters(in: .newlines)
        #expect(result.stdout == line + "\n")
        #expect(line.wholeMatch(of: /flowguard \d+\.\d+\.\d+/) != nil, "\(line)")
        // docs/cli.md says what it prints.
        let docs = try String(contentsOfFile: Repository.path("docs/cli.md"), encoding: .utf8)
        #expect(docs.contains("`\(line)`"))
    }

    @Test func progressOffATerminalIsPlainLinesWithoutCarriageReturns() throws {
        let out = dir.file("converted.safetensors")
        let result = try flowguard(["convert", model, out, "--layout", "diffusers"], environment: progressAlways)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(!result.stderr.contains("\r"))
        let lines = result.stderr.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        // At most one line every five seconds (this work takes milliseconds: the first and the last).
        #expect(lines.count <= 3 && lines.last == "", "\(lines)")
        for line in lines.dropLast() {
            #expect(line.wholeMatch(of: /converting .+: \d+% \(.+ of .+, \d+ MB\/s\)/) != nil, "\(line)")
        }
        #expect(lines.dropLast().last?.contains(": 100% (") == true, "\(lines)")

        // --quiet silences it, and the output is the same.
        let quietOut = dir.file("quiet.safetensors")
        let quiet = try flowguard(["convert", model, quietOut, "--layout", "diffusers", "--quiet"], environment: progressAlways)
        #expect(quiet.status == 0 && quiet.stderr.isEmpty, "\(quiet.stderr)")
        #expect(try readBytes(out) == readBytes(quietOut))
    }

    @Test func trainingProgressOffATerminalIsPlainLines() throws {
        let run = dir.file("run")
        let train = ["train", "--config", Repository.path("fixtures/train/sd35_tiny_demo.json"), "--output", run,
                     "--steps", "3", "--group-size", "2", "--batch-size", "2", "--sampling-steps", "3", "--eval-steps", "3",
                     "--checkpoint-every", "0", "--eval-prompts", "0"]
        let result = try flowguard(train, environment: progressAlways)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(!result.stderr.contains("\r"))
        let lines = result.stderr.split(separator: "\n").map(String.init)
        // The first step's line, then at most one every five seconds, and the last one.
        #expect((2...3).contains(lines.count), "\(lines)")
        #expect(lines.first?.hasPrefix("step 1/3  reward ") == true && lines.last?.hasPrefix("step 3/3  reward ") == true, "\(lines)")
        let quiet = try flowguard(train + ["--force", "--quiet"], environment: progressAlways)
        #expect(quiet.status == 0 && quiet.stderr.isEmpty, "\(quiet.stderr)")
    }

    /// Every command that writes, with an output that exists: a usage error naming it, nothing changed.
    @Test func anExistingOutputIsRefusedWithoutForce() throws {
        let file = dir.file("existing.safetensors")
        try Data("keep".utf8).write(to: URL(fileURLWithPath: file))
        let folder = dir.file("existing")
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: false)
        try Data("keep".utf8).write(to: URL(fileURLWithPath: folder + "/keep.txt"))
        let archive = dir.file("adapter.fgdelta")
        #expect(try flowguard(["lora", "pack", adapter, archive]).status == 0)
        let runFolder = dir.file("run")
        try FileManager.default.createDirectory(atPath: runFolder, withIntermediateDirectories: false)
        try Data("{}".utf8).write(to: URL(fileURLWithPath: runFolder + "/config.json"))
        let report = dir.file("report.html")
        try Data("keep".utf8).write(to: URL(fileURLWithPath: report))
        let before = dir.listing()

        let fileMessage = "Error: The output '\(file)' exists; pass --force to replace it (the whole file).\n"
        let folderMessage = "Error: The output '\(folder)' exists; pass --force to replace it (the whole folder).\n"
        let cases: [([String], String)] = [
            (["convert", model, file, "--layout", "original"], fileMessage),
            (["convert", model, folder, "--layout", "diffusers"], folderMessage),
            (["synth", "--like", model, "--layout", "original", "--dtype", "bf16", file], fileMessage),
            (["synth", "--like", model, "--layout", "diffusers", "--dtype", "bf16", folder], folderMessage),
            (["lora", "convert", adapter, file, "--to", "kohya"], fileMessage),
            (["lora", "convert", adapter, folder, "--to", "peft"], folderMessage),
            (["lora", "merge", model, adapter, file], fileMessage),
            (["lora", "merge", diffusers, adapter, folder], folderMessage),
            (["lora", "extract", model, model, file, "--rank", "2"], fileMessage),
            (["lora", "pack", adapter, file], fileMessage),
            (["lora", "unpack", archive, file], fileMessage),
            (["run", "--model", model, "--inputs", io, "--output", file], fileMessage),
            (["report", runFolder, "--output", report],
             "Error: The output '\(report)' exists; pass --force to replace it (the whole file).\n"),
            (["train", "--config", Repository.path("fixtures/train/sd35_tiny_demo.json"), "--output", runFolder],
             "Error: The run folder '\(runFolder)' is not empty; pass --resume to continue its run, or --force to replace it with a new run.\n"),
        ]
        for (arguments, message) in cases {
            let result = try flowguard(arguments)
            #expect(result.status == 2, "\(arguments): \(result.stderr)")
            #expect(result.stdout.isEmpty)
            #expect(result.stderr.hasPrefix(message), "\(arguments): \(result.stderr)")
        }
        #expect(dir.listing() == before)
        #expect(try readBytes(file) == Array("keep".utf8))
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder) == ["keep.txt"])

        // A folder where a file is written (or the reverse) is refused even with --force.
        let wrongKind = try flowguard(["lora", "pack", adapter, folder, "--force"])
        #expect(wrongKind.status == 2 && wrongKind.stderr.hasPrefix(
            "Error: The output '\(folder)' is a folder; this command writes a file there: give a file name.\n"), "\(wrongKind.stderr)")
        // --to peft writes a folder: a .safetensors name is refused, with the folder name to use.
        let peft = try flowguard(["lora", "convert", adapter, dir.file("x.safetensors"), "--to", "peft"])
        #expect(peft.status == 2 && peft.stderr.hasPrefix(
            "Error: --to peft writes a folder (adapter_config.json + adapter_model.safetensors), not a .safetensors file: "
            + "give a folder name such as '\(dir.file("x"))'.\n"), "\(peft.stderr)")
        #expect(dir.listing() == before)
    }

    @Test func forceReplacesAFolderWholeWithNoStaleFileLeft() throws {
        // A sharded diffusers folder with a stray file from some other tool.
        let out = dir.file("transformer")
        let sharded = try flowguard(["convert", model, out, "--layout", "diffusers", "--shard-size", "20000"])
        #expect(sharded.status == 0, "\(sharded.stderr)")
        let shards = try FileManager.default.contentsOfDirectory(atPath: out).filter { $0.hasPrefix("diffusion_pytorch_model-") }
        #expect(shards.count > 1)
        try Data("old".utf8).write(to: URL(fileURLWithPath: out + "/adapter_model.bin"))

        let again = try flowguard(["convert", model, out, "--layout", "diffusers", "--force", "--json"])
        #expect(again.status == 0, "\(again.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: out).sorted() == ["config.json", "diffusion_pytorch_model.safetensors"])
        #expect(dir.listing() == ["transformer"], "a staging or old folder was left: \(dir.listing())")
        // The same bytes as a conversion into a fresh folder.
        let fresh = dir.file("fresh")
        #expect(try flowguard(["convert", model, fresh, "--layout", "diffusers"]).status == 0)
        for name in ["config.json", "diffusion_pytorch_model.safetensors"] {
            #expect(try readBytes(out + "/" + name) == readBytes(fresh + "/" + name), "\(name)")
        }

        // A PEFT folder: the old adapter_model.bin does not survive beside the new adapter.
        let peft = dir.file("peft")
        try FileManager.default.createDirectory(atPath: peft, withIntermediateDirectories: false)
        try Data("old".utf8).write(to: URL(fileURLWithPath: peft + "/adapter_model.bin"))
        let converted = try flowguard(["lora", "convert", adapter, peft, "--to", "peft", "--force", "--quiet"])
        #expect(converted.status == 0, "\(converted.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: peft).sorted() == ["adapter_config.json", "adapter_model.safetensors"])

        // A file: replaced by the new bytes.
        let file = dir.file("merged.safetensors")
        try Data("old".utf8).write(to: URL(fileURLWithPath: file))
        #expect(try flowguard(["lora", "merge", model, adapter, file, "--force"]).status == 0)
        #expect(try SafeTensorsFile(path: file).tensors.count > 0)
        #expect(!dir.listing().contains { $0.hasPrefix(".") }, "\(dir.listing())")
    }

    @Test func mergeOntoADiffusersFolderWritesADiffusersFolder() throws {
        let out = dir.file("merged")
        let result = try flowguard(["lora", "merge", diffusers, adapter, out, "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: out).sorted() == ["config.json", "diffusion_pytorch_model.safetensors"])
        #expect(try readBytes(out + "/config.json") == readBytes(diffusers + "/config.json"))
        // The weights are those of the single-file merge.
        let single = dir.file("merged.safetensors")
        #expect(try flowguard(["lora", "merge", diffusers, adapter, single]).status == 0)
        #expect(try readBytes(single) == readBytes(out + "/diffusion_pytorch_model.safetensors"))
        let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        #expect(json["files"] as? [String] == [out + "/diffusion_pytorch_model.safetensors", out + "/config.json"])
        // What it wrote runs as a model folder.
        let run = try flowguard(["run", "--model", out, "--inputs", io, "--output", dir.file("o.safetensors")])
        #expect(run.status == 0, "\(run.stderr)")
    }

    @Test func runChecksItsOutputBeforeComputing() throws {
        let missing = dir.file("no-such-folder") + "/out.safetensors"
        let result = try flowguard(["run", "--model", model, "--inputs", io, "--output", missing])
        #expect(result.status == 1)
        #expect(result.stderr.hasPrefix("error: \(missing): "), "\(result.stderr)")
        #expect(result.stderr.contains("No such file or directory"), "\(result.stderr)")
        #expect(dir.listing().isEmpty)
    }

    /// With --json an error is the one JSON object on standard output, `{"error": message}`, with
    /// the exit status of the error (1 bad input, 2 usage); standard error still says it.
    @Test func jsonCarriesErrors() throws {
        let missing = dir.file("absent.safetensors")
        let bad = try flowguard(["convert", missing, dir.file("out.safetensors"), "--layout", "original", "--json"])
        #expect(bad.status == 1)
        let object = try JSONSerialization.jsonObject(with: Data(bad.stdout.utf8)) as? [String: String]
        let message = try #require(object?["error"], "\(bad.stdout)")
        #expect(object?.count == 1 && message.hasPrefix(missing + ": "), "\(bad.stdout)")
        #expect(bad.stderr == "error: \(message)\n")
        let usage = try flowguard(["lora", "pack", adapter, dir.file("a.fgdelta"), "--level", "99", "--json"])
        #expect(usage.status == 2)
        #expect(usage.stdout == #"{"error":"--level must be in -131072...22"}"# + "\n", "\(usage.stdout)")
        #expect(usage.stderr.hasPrefix("Error: --level must be in -131072...22\n"))
        #expect(dir.listing().isEmpty)
    }
}

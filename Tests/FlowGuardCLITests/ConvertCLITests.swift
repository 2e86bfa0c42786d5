import Foundation
import Testing
import SafeTensors
import TestSupport

@Suite
struct ConvertCLITests {
    let dir = TemporaryDirectory()

    func flowguard(_ arguments: String...) throws -> ProcessResult {
        try runProcess(CLITests.binary, arguments)
    }

    /// Tensor name → bytes of a checkpoint (file, index or folder).
    func tensors(_ path: String) throws -> [String: [UInt8]] {
        let collection = try TensorCollection(path: path)
        var out: [String: [UInt8]] = [:]
        for e in collection.entries { out[e.info.name] = e.file.withBytes(of: e.info) { Array($0) } }
        return out
    }

    @Test func convertsToADiffusersFolder() throws {
        let input = Repository.path("fixtures/sd35_tiny/original.safetensors")
        let out = dir.file("transformer")
        let result = try flowguard("convert", input, out, "--layout", "diffusers", "--quiet")
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.isEmpty)
        #expect(result.stdout.hasPrefix("converted \(input) (SD3-style, original) to \(out) (diffusers): 127 tensors (127 F32), 564224 bytes of data, 2 files, "))
        #expect(result.stdout.hasSuffix(" s\n"))
        #expect(try tensors(out) == tensors(Repository.path("fixtures/sd35_tiny/diffusers")))
        #expect(try FileManager.default.contentsOfDirectory(atPath: out).sorted() == ["config.json", "diffusion_pytorch_model.safetensors"])
    }

    @Test func jsonSummaryWithDtypeAndShards() throws {
        let input = Repository.path("fixtures/flux_tiny/diffusers")
        let out = dir.file("flux-orig")
        let result = try flowguard("convert", input, out, "--layout", "original", "--dtype", "bf16",
                                   "--shard-size", "100KB", "--prefix", "comfy", "--json")
        #expect(result.status == 0, "\(result.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        #expect(json["source_layout"] as? String == "diffusers")
        #expect(json["target_layout"] as? String == "original")
        #expect(json["tensor_count"] as? Int == 92)
        #expect(json["tensors_by_dtype"] as? [String: Int] == ["BF16": 92])
        #expect(json["saturated_count"] as? Int == 0)
        let files = json["files"] as! [String]
        #expect(files.count > 2 && files.last == out + "/diffusion_pytorch_model.safetensors.index.json")
        let written = try TensorCollection(path: out)
        #expect(written.entries.allSatisfy { $0.info.dtype == .bf16 && $0.info.name.hasPrefix("diffusion_model.") })
        #expect(json["data_bytes"] as? Int == written.dataBytes)
    }

    @Test func usageErrorsExitWithTwo() throws {
        let input = Repository.path("fixtures/flux_tiny/original.safetensors")
        for arguments in [["convert", input, dir.file("o.safetensors")],
                          ["convert", input, dir.file("o.safetensors"), "--layout", "sideways"],
                          ["convert", input, dir.file("o.safetensors"), "--layout", "diffusers", "--dtype", "int8"],
                          ["convert", input, dir.file("o.safetensors"), "--layout", "diffusers", "--shard-size", "5XB"],
                          ["convert", input, dir.file("o.safetensors"), "--layout", "original", "--prefix", "kohya"]] {
            let result = try runProcess(CLITests.binary, arguments)
            #expect(result.status == 2, "\(arguments)")
            #expect(result.stdout.isEmpty)
        }
        let help = try flowguard("convert", "--help")
        #expect(help.status == 0 && help.stdout.contains("Examples:"))
        #expect(dir.listing().isEmpty)
    }

    @Test func badInputsExitWithOneAndLeaveNothing() throws {
        let input = dir.file("model.safetensors")
        try FileManager.default.copyItem(atPath: Repository.path("fixtures/flux_tiny/original.safetensors"), toPath: input)
        // Input == output: an existing output (exit 2 without --force), and never the input.
        var result = try flowguard("convert", input, input, "--layout", "original", "--dtype", "bf16")
        #expect(result.status == 2 && result.stderr.hasPrefix("Error: The output '\(input)' exists; pass --force to replace it (the whole file).\n"))
        result = try flowguard("convert", input, input, "--layout", "original", "--dtype", "bf16", "--force")
        #expect(result.status == 1)
        #expect(result.stderr.contains("it is the input file"))
        // A folder that cannot exist (under a regular file).
        result = try flowguard("convert", input, input + "/out.safetensors", "--layout", "diffusers")
        #expect(result.status == 1)
        #expect(result.stderr.hasPrefix("error: \(input)/out.safetensors: "))
        // Not a transformer.
        let random = dir.file("random.safetensors")
        try SafeTensorsWriter.write(to: random, tensors: [(TensorSpec(name: "random.weight", dtype: .f32, shape: [1]), [0, 0, 0, 0])])
        result = try flowguard("convert", random, dir.file("out"), "--layout", "diffusers")
        #expect(result.status == 1)
        #expect(result.stderr.contains("random.weight"))
        #expect(dir.listing() == ["model.safetensors", "random.safetensors"])
    }
}

/// `convert` into a filesystem too small for the output: exit 1, a message naming the output
/// and the shortfall, nothing left behind. Needs root to mount a tmpfs (CI runs as root).
@Suite struct ConvertDiskFullTests {
    @Test func convertIntoFullFilesystem() throws {
        let dir = TemporaryDirectory()
        let mountPoint = dir.file("small-fs")
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        guard let mount = which("mount"), let umount = which("umount"),
              try runProcess(mount, ["-t", "tmpfs", "-o", "size=64k", "tmpfs", mountPoint]).status == 0 else {
            withKnownIssue("mounting a tmpfs needs root; the disk-full path is not exercised here") { throw PeerUnavailable(reason: "no tmpfs") }
            return
        }
        defer { _ = try? runProcess(umount, [mountPoint]) }
        for output in [mountPoint + "/out.safetensors", mountPoint + "/out-folder"] {
            let result = try runProcess(CLITests.binary, ["convert", Repository.path("fixtures/sd35_tiny/original.safetensors"),
                                                          output, "--layout", "diffusers"])
            #expect(result.status == 1)
            #expect(result.stderr.contains("not enough disk space"), "\(result.stderr)")
            #expect(result.stderr.contains(mountPoint), "the message names the output")
            #expect(try FileManager.default.contentsOfDirectory(atPath: mountPoint).isEmpty, "nothing left behind")
        }
    }
}

/// The derived `config.json` holds no invented value without saying so: what no weight holds comes
/// from `--config` (or a model folder's own `config.json`), else the note names it.
@Suite struct DerivedConfigCLITests {
    let dir = TemporaryDirectory(prefix: "flowguard-derived-config")

    func flowguard(_ arguments: [String]) throws -> ProcessResult {
        try runProcess(CLITests.binary, arguments)
    }

    func configValue(_ folder: String, _ key: String) throws -> Any? {
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: folder + "/config.json"))) as? [String: Any]
        return json?[key]
    }

    @Test func sampleSizeComesFromAConfigOrIsNoted() throws {
        let original = Repository.path("fixtures/sd35_tiny/original.safetensors")
        let folder = Repository.path("fixtures/sd35_tiny/diffusers")
        // Without a configuration: diffusers' default, and a note saying it is one.
        let bare = dir.file("bare")
        let noted = try flowguard(["convert", original, bare, "--layout", "diffusers"])
        #expect(noted.status == 0)
        #expect(noted.stderr == "note: sample_size is not stored in the weights: diffusers' default 128 is written; "
                + "pass --config with the model's config.json to carry its own value\n")
        #expect(try configValue(bare, "sample_size") as? Int == 128)
        // --config carries the model's own value (16), with nothing to note.
        let given = dir.file("given")
        let withConfig = try flowguard(["convert", original, given, "--layout", "diffusers", "--config", folder + "/config.json"])
        #expect(withConfig.status == 0 && withConfig.stderr.isEmpty, "\(withConfig.stderr)")
        #expect(try configValue(given, "sample_size") as? Int == 16)
        // A model folder's own config.json is used without being named.
        let fromFolder = dir.file("from-folder")
        #expect(try flowguard(["convert", folder, fromFolder, "--layout", "diffusers"]).stderr.isEmpty)
        #expect(try configValue(fromFolder, "sample_size") as? Int == 16)
        // inspect says the same.
        let inspect = try flowguard(["inspect", original, "--json", "--config", folder + "/config.json"])
        let file = (try JSONSerialization.jsonObject(with: Data(inspect.stdout.utf8)) as! [String: Any])["files"] as! [[String: Any]]
        let architecture = file[0]["architecture"] as! [String: Any]
        #expect((architecture["diffusers_config"] as? [String: Any])?["sample_size"] as? Int == 16)
        #expect(architecture["config_file"] as? String == folder + "/config.json")
        #expect((architecture["notes"] as? [String])?.isEmpty == true)
        // A configuration the weights do not match is bad input.
        let flux = Repository.path("fixtures/flux_tiny/diffusers/config.json")
        let mismatch = try flowguard(["convert", original, dir.file("mismatch"), "--layout", "diffusers", "--config", flux])
        #expect(mismatch.status == 1 && mismatch.stderr.contains("do not match \(flux)"), "\(mismatch.stderr)")
    }

    @Test func fluxRopeAxesComeFromAConfigOrAreNamedAsUnknown() throws {
        let original = Repository.path("fixtures/flux_tiny/original.safetensors")
        let config = Repository.path("fixtures/flux_tiny/diffusers/config.json")
        let plain = try flowguard(["inspect", original])
        #expect(plain.stdout.contains("\"axes_dims_rope\": null"))
        #expect(plain.stdout.contains("    note: axes_dims_rope cannot be derived from the weights (head size 16, not 128) and is written as null; "
                                      + "pass --config with the model's config.json\n"))
        let given = try flowguard(["inspect", original, "--config", config])
        #expect(given.status == 0)
        #expect(!given.stdout.contains("note:") && !given.stdout.contains("\"axes_dims_rope\": null"), "\(given.stdout)")
        let out = dir.file("flux")
        #expect(try flowguard(["convert", original, out, "--layout", "diffusers", "--config", config]).status == 0)
        #expect(try configValue(out, "axes_dims_rope") as? [Int] == (try configValue(Repository.path("fixtures/flux_tiny/diffusers"), "axes_dims_rope") as? [Int]))
    }
}

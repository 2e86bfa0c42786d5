import Foundation
import Testing
import SafeTensors
import TestSupport

/// What every command shares: a bad option value is a usage error (exit 2, the message on standard
/// error, nothing written) found before any work starts; negative numbers are values; `--quiet`
/// silences progress and notes; the help reads whole at 80 columns.
@Suite struct UsageCLITests {
    let dir = TemporaryDirectory(prefix: "flowguard-usage-cli")
    let model = Repository.path("fixtures/sd35_tiny/original.safetensors")
    let adapter = Repository.path("fixtures/sd35_tiny/lora/pytorch_lora_weights.safetensors")
    let trainConfig = Repository.path("fixtures/train/sd35_tiny_demo.json")

    /// Help is laid out for this width whatever the terminal running the tests says.
    static let environment: [String: String] = {
        var env = ProcessInfo.processInfo.environment
        env["COLUMNS"] = "80"
        return env
    }()

    func flowguard(_ arguments: [String]) throws -> ProcessResult {
        try runProcess(CLITests.binary, arguments, environment: Self.environment)
    }

    /// Every command and a bad value for it, with the first line of the usage error it must give.
    var badValues: [(arguments: [String], message: String)] {
        let out = dir.file("out.safetensors")
        let invalidDType = "The value 'i8' is invalid for '--dtype <dtype>'. Please provide one of 'bf16', 'fp16', 'fp32', 'f8_e4m3' or 'f8_e5m2'."
        return [
            (["inspect", "--group=3", model], "The option '--group' does not take any value, but '3' was specified."),
            (["verify", "--read-data=yes", model], "The option '--read-data' does not take any value, but 'yes' was specified."),
            (["convert", model, out, "--layout", "sideways"],
             "The value 'sideways' is invalid for '--layout <layout>'. Please provide one of 'original' and 'diffusers'."),
            (["convert", model, out, "--layout", "original", "--dtype", "i8"],
             "The value 'i8' is invalid for '--dtype <dtype>'. Please provide one of the following:"),
            (["convert", model, out, "--layout", "original", "--shard-size", "5XB"],
             "The value '5XB' is invalid for '--shard-size <size>': expected a positive size such as 5GB, 500MB, 1.5G, 2GiB or 1048576"),
            (["convert", model, out, "--layout", "diffusers", "--prefix", "comfy"], "--prefix applies only to --layout original."),
            (["convert", model, out, "--layout", "original", "--prefix", "kohya"],
             "The value 'kohya' is invalid for '--prefix <prefix>'. Please provide one of 'sai', 'comfy' or 'none'."),
            (["diff", "--tolerance", "-1", model, model], "--tolerance must be a finite number >= 0, not -1.0."),
            (["diff", "--tolerance", "tight", model, model], "The value 'tight' is invalid for '--tolerance <tolerance>'"),
            (["synth", "--variant", "flux-dev", "--layout", "original", "--dtype", "i8", out], invalidDType),
            (["synth", "--variant", "flux-dev", "--layout", "original", "--dtype", "bf16", "--scale", "-1", out],
             "--scale must be a finite number >= 0, not -1.0."),
            (["synth", "--variant", "flux-dev", "--layout", "original", "--dtype", "bf16", "--distribution", "cauchy", out],
             "The value 'cauchy' is invalid for '--distribution <distribution>'. Please provide one of 'normal' and 'uniform'."),
            (["run", "--model", model, "--inputs", model, "--output", out, "--threads", "0"], "--threads must be between 1 and 1024."),
            (["run", "--model", model, "--inputs", model, "--output", out, "--lora-scale", "x"],
             "The value 'x' is invalid for '--lora-scale <lora-scale>'"),
            (["train", "--config", trainConfig, "--objective", "foo"],
             "The value 'foo' is invalid for '--objective <objective>'. Please provide one of 'grpo-guard' and 'flow-grpo'."),
            (["train", "--config", trainConfig, "--learning-rate", "abc"], "--learning-rate: must be a number, found \"abc\""),
            (["train", "--config", trainConfig, "--group-size", "0"], "--group-size: must be at least 2, found 0"),
            (["train", "--config", trainConfig, "--bias-mode", "per_sample"],
             "The value 'per_sample' is invalid for '--bias-mode <bias-mode>'. Please provide one of 'batch' and 'per-sample'."),
            (["train", "--config", trainConfig, "--ema", "maybe"], "--ema: must be true or false, found \"maybe\""),
            (["train", "--config", trainConfig, "--reward", "builtin:nope"],
             "--reward: reward 'builtin:nope': no built-in reward called 'nope' (known: mean, target, contrast)"),
            (["train", "--config", trainConfig, "--threads", "0"], "--threads must be between 1 and 1024."),
            (["train", "--model", model], "--prompts is required without --config"),
            (["report", dir.path, "--output"], "Missing value for '--output <output>'"),
            (["lora", "inspect", adapter, "--json=1"], "The option '--json' does not take any value, but '1' was specified."),
            (["lora", "convert", adapter, out, "--to", "xlabs"],
             "The value 'xlabs' is invalid for '--to <format>'. Please provide one of 'peft', 'diffusers', 'kohya' or 'comfy'."),
            (["lora", "merge", model, adapter, out, "--scale", "nan"], "--scale must be a finite number."),
            (["lora", "merge", model, adapter, out, "--dtype", "i8"],
             "The value 'i8' is invalid for '--dtype <dtype>'. Please provide one of the following:"),
            (["lora", "extract", model, model, out, "--rank", "0"], "--rank must be at least 1, not 0."),
            (["lora", "pack", adapter, out, "--level", "fast"], "The value 'fast' is invalid for '--level <level>'"),
            (["lora", "pack", adapter, out, "--threads", "0"], "--threads must be between 1 and 1024."),
            (["lora", "unpack", adapter, out, "--threads", "2000"], "--threads must be between 1 and 1024."),
        ]
    }

    @Test func aBadValueIsAUsageErrorInEveryCommand() throws {
        var commands = Set<String>()
        for (arguments, message) in badValues {
            let result = try flowguard(arguments)
            #expect(result.status == 2, "\(arguments): \(result.stderr)")
            #expect(result.stdout.isEmpty, "\(arguments)")
            let first = result.stderr.split(separator: "\n", omittingEmptySubsequences: false).first.map(String.init)
            #expect(first == "Error: " + message, "\(arguments)")
            #expect(result.stderr.contains("Usage: flowguard "), "\(arguments)")
            commands.insert(arguments[0] == "lora" ? "lora " + arguments[1] : arguments[0])
        }
        #expect(commands == Set(Self.commands), "a command without a bad-value case")
        #expect(dir.listing().isEmpty, "a usage error wrote \(dir.listing())")
    }

    /// Every command that takes options.
    static let commands = ["inspect", "verify", "convert", "diff", "synth", "run", "train", "report",
                           "lora inspect", "lora convert", "lora merge", "lora extract", "lora pack", "lora unpack"]

    @Test func negativeNumbersAreValues() throws {
        // --scale -1 adds −ΔW: exactly what --unmerge at scale 1 writes.
        let negative = dir.file("negative.safetensors"), unmerged = dir.file("unmerged.safetensors")
        let merge = try flowguard(["lora", "merge", model, adapter, negative, "--scale", "-1", "--json"])
        #expect(merge.status == 0, "\(merge.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(merge.stdout.utf8)) as! [String: Any]
        #expect(json["scale"] as? Double == -1)
        #expect(try flowguard(["lora", "merge", model, adapter, unmerged, "--unmerge"]).status == 0)
        #expect(try readBytes(negative) == readBytes(unmerged))
        #expect(try readBytes(negative) != readBytes(model))

        // run --lora-scale takes a negative multiplier, and says so.
        let io = Repository.path("fixtures/sd35_tiny/lora/io_lora.safetensors")
        let run = try flowguard(["run", "--model", model, "--inputs", io, "--output", dir.file("run.safetensors"),
                                 "--lora", adapter, "--lora-scale", "-0.5", "--json"])
        #expect(run.status == 0, "\(run.stderr)")
        let runJSON = try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as! [String: Any]
        #expect((runJSON["adapters"] as? [[String: Any]])?.first?["scale"] as? Double == -0.5)

        // A negative zstd level (a fast mode) packs, and the archive unpacks to the same bytes.
        let archive = dir.file("fast.fgdelta"), restored = dir.file("restored.safetensors")
        let pack = try flowguard(["lora", "pack", adapter, archive, "--level", "-5"])
        #expect(pack.status == 0, "\(pack.stderr)")
        #expect(try flowguard(["lora", "unpack", archive, restored]).status == 0)
        #expect(try readBytes(restored) == readBytes(adapter))

        // diff reads -1 as the tolerance (and refuses it), not as a missing value.
        let diff = try flowguard(["diff", model, model, "--tolerance", "-1"])
        #expect(diff.status == 2 && diff.stderr.hasPrefix("Error: --tolerance must be a finite number >= 0, not -1.0.\n"))
        let within = try flowguard(["diff", model, negative, "--tolerance", "1e9"])
        #expect(within.status == 0, "\(within.stdout)\(within.stderr)")
    }

    @Test func quietSilencesProgressAndNotes() throws {
        // run's stage lines appear only for work over a second (FLOWGUARD_PROGRESS_AFTER=0: for all
        // work); a millisecond run prints none, and --quiet none in any case.
        let io = Repository.path("fixtures/sd35_tiny/lora/io_lora.safetensors")
        let run = ["run", "--model", model, "--inputs", io, "--output"]
        let quick = try flowguard(run + [dir.file("q.safetensors")])
        #expect(quick.status == 0 && quick.stderr.isEmpty, "\(quick.stderr)")
        var always = Self.environment
        always["FLOWGUARD_PROGRESS_AFTER"] = "0"
        let loud = try runProcess(CLITests.binary, run + [dir.file("a.safetensors")], environment: always)
        #expect(loud.status == 0, "\(loud.stderr)")
        #expect(loud.stderr == "loading \(model)\nrunning the forward pass on 1 thread\nwriting \(dir.file("a.safetensors"))\n")
        let quiet = try runProcess(CLITests.binary, run + [dir.file("b.safetensors"), "--quiet"], environment: always)
        #expect(quiet.status == 0 && quiet.stderr.isEmpty, "\(quiet.stderr)")
        #expect(try readBytes(dir.file("a.safetensors")) == readBytes(dir.file("b.safetensors")))

        // Without --base, lora convert notes that it inferred the architecture; --quiet drops the note only.
        let noted = try flowguard(["lora", "convert", adapter, dir.file("k1.safetensors"), "--to", "kohya"])
        #expect(noted.status == 0 && noted.stderr.contains("note: give --base or --config"), "\(noted.stderr)")
        let silent = try flowguard(["lora", "convert", adapter, dir.file("k2.safetensors"), "--to", "kohya", "--quiet"])
        #expect(silent.status == 0 && silent.stderr.isEmpty, "\(silent.stderr)")
        #expect(try readBytes(dir.file("k1.safetensors")) == readBytes(dir.file("k2.safetensors")))

        // Errors still appear.
        let failing = try flowguard(["lora", "convert", model, dir.file("k3.safetensors"), "--to", "kohya", "--quiet"])
        #expect(failing.status == 1 && failing.stderr.contains("not a LoRA adapter in any known dialect"), "\(failing.stderr)")
    }

    @Test func rootHelpIsWhole() throws {
        let result = try flowguard(["--help"])
        #expect(result.status == 0)
        #expect(result.stdout == """
        OVERVIEW: Checkpoint, LoRA and training tools for diffusion transformers
        (SD3.5, FLUX), on the CPU.

        Checkpoints: inspect and verify safetensors files, shard indexes and model
        folders; convert between the original and diffusers layouts, dtypes and shards;
        diff two checkpoints; synth a full-size checkpoint of random values. Adapters:
        lora inspect, convert, merge, extract, pack and unpack. Models: run the
        transformer forward once; train a LoRA adapter with GRPO-Guard; report a
        training run as an HTML page.

        Exit status: 0 success, 1 bad input (the message names file, tensor and byte
        offset), 2 usage error (a missing or unknown option, a bad option value).

        USAGE: flowguard <subcommand>

        OPTIONS:
          --version               Show the version.
          -h, --help              Show help information.

        SUBCOMMANDS:
          inspect                 Show the tensors, dtypes, parameter counts and
                                  metadata of safetensors files.
          verify                  Check that files are valid safetensors and that shard
                                  indexes match their shards.
          convert                 Convert an SD3.5 or FLUX transformer checkpoint
                                  between the original and diffusers layouts.
          diff                    Compare two checkpoints tensor by tensor: missing,
                                  shape, dtype and value differences.
          synth                   Write a synthetic checkpoint: a real model's tensor
                                  names and shapes, random values.
          lora                    Inspect, convert, merge, extract and archive LoRA
                                  adapters (PEFT, diffusers, kohya, ComfyUI, XLabs).
          run                     Run the transformer forward once (SD3.5-style MMDiT
                                  or FLUX) on the CPU.
          train                   Fine-tune a LoRA adapter of an SD3.5/FLUX transformer
                                  with GRPO-Guard on the CPU.
          report                  Render a training run's diagnostics as a
                                  self-contained HTML page.

          See 'flowguard help <subcommand>' for detailed help.

        """)
    }

    @Test func loraMergeHelpIsWhole() throws {
        let result = try flowguard(["lora", "merge", "--help"])
        #expect(result.status == 0)
        #expect(result.stdout == """
        OVERVIEW: Merge a LoRA adapter into a base checkpoint: W' = W + scale·ΔW.

        BASE is a transformer checkpoint in either layout (a .safetensors file, a shard
        index or a diffusers model folder). ADAPTER is a .safetensors file in any
        dialect (PEFT/diffusers, kohya, ComfyUI, OneTrainer, LyCORIS LoKr/LoHa, DoRA,
        XLabs, BFL Control, fal Kontext) or a PEFT folder; its modules may be named in
        either layout: a diffusers-named to_k lands in the rows of a fused qkv, a fused
        qkv adapter splits into to_q/to_k/to_v, and modulation halves are swapped where
        the layouts differ.

        OUT is a single .safetensors file in the base's layout; when BASE is a model
        folder and OUT does not end in .safetensors, OUT is a diffusers folder
        (diffusion_pytorch_model.safetensors and the base's config.json); OUT ending in
        .gguf is a GGUF file holding the merged transformer (city96 names; the base's
        GGUF type, or --dtype: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0 or q5_1, by
        city96's rule), the delta added to each block of base rows on its way to the
        quantizer. Tensors without a delta are copied unchanged; merged tensors are
        computed in float32 and written back in their own dtype, or in --dtype (which
        then applies to every floating-point tensor of the transformer; the other
        components of an all-in-one file are copied byte for byte). Streamed: blocks of
        a base tensor's rows are merged on --threads threads (default: all processors),
        a few blocks in memory at a time. The output appears only when complete.

        --unmerge subtracts the delta instead (undoing an earlier merge with the same
        scale).

        Examples:
          flowguard lora merge sd3.5_medium.safetensors my_lora.safetensors \\
              merged.safetensors
          flowguard lora merge transformer/ pytorch_lora_weights.safetensors \\
              merged.safetensors --scale 0.8 --dtype bf16
          flowguard lora merge merged.safetensors my_lora.safetensors \\
              restored.safetensors --unmerge

        USAGE: flowguard lora merge <base> <adapter> <output> [--scale <scale>] [--dtype <dtype>] [--unmerge] [--threads <threads>] [--force] [--json] [--quiet]

        ARGUMENTS:
          <base>                  Base checkpoint: a .safetensors file, a shard index
                                  or a model folder.
          <adapter>               Adapter: a .safetensors file in any dialect or a PEFT
                                  folder.
          <output>                Output .safetensors file (or folder, for a folder
                                  base), or .gguf file.

        OPTIONS:
          --scale <scale>         Multiplier of the adapter's delta (on top of its own
                                  α/r); may be negative. (default: 1.0)
          --dtype <dtype>         Dtype of floating-point tensors in the output
                                  (default: each keeps its own); a GGUF type for a
                                  .gguf output. (values: bf16, fp16, fp32, f8_e4m3,
                                  f8_e5m2, q8_0, q4_0, q4_1, q5_0, q5_1)
          --unmerge               Subtract the delta instead of adding it.
          --threads <threads>     Worker threads, 1 to 1024 (default: all processors in
                                  convert to GGUF, lora merge, pack and unpack; 1 in
                                  run and train).
          --force                 Replace the output if it exists (the whole file or
                                  folder, atomically, once the new one is complete).
          --json                  Print one JSON object on standard output instead of
                                  text.
          --quiet                 Print no progress lines or notes on standard error
                                  (warnings and errors still appear).
          --version               Show the version.
          -h, --help              Show help information.


        """)
    }

    @Test func loraSubcommandsInReadingOrder() throws {
        let help = try flowguard(["lora", "--help"]).stdout
        let section = help.components(separatedBy: "SUBCOMMANDS:\n").last ?? ""
        let names = section.split(separator: "\n").compactMap { line -> String? in
            line.hasPrefix("  ") && !line.hasPrefix("   ") && !line.hasPrefix("  See ") ? line.split(separator: " ").first.map(String.init) : nil
        }
        #expect(names == ["inspect", "convert", "merge", "extract", "pack", "unpack"])
    }

    /// Every command's help at 80 columns: examples are whole commands (a long one continued with
    /// a trailing backslash, never broken by the wrapper), no option states its default twice.
    @Test(arguments: ["inspect", "verify", "convert", "diff", "synth", "run", "train", "report",
                      "lora inspect", "lora convert", "lora merge", "lora extract", "lora pack", "lora unpack"])
    func helpReadsWhole(command: String) throws {
        let result = try flowguard(command.split(separator: " ").map(String.init) + ["--help"])
        #expect(result.status == 0)
        let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        for line in lines where !line.hasPrefix("USAGE: ") {
            #expect(line.count <= 80, "\(command): \(line)")
        }
        let start = try #require(lines.firstIndex(of: "Examples:"), "\(command) has no examples")
        var continued = false
        for line in lines[(start + 1)...] {
            if line.isEmpty { break }
            #expect(continued ? line.hasPrefix("      ") : line.hasPrefix("  flowguard \(command) "), "\(command): \(line)")
            continued = line.hasSuffix(" \\")
        }
        #expect(!continued, "\(command): the last example ends in a continuation")
        // Option entries start at two spaces and a dash; their continuation lines are indented further.
        var entries: [String] = []
        for line in lines.drop(while: { $0 != "OPTIONS:" }).dropFirst() {
            if line.hasPrefix("  -") { entries.append(line) } else if !entries.isEmpty { entries[entries.count - 1] += line }
        }
        #expect(!entries.isEmpty)
        for entry in entries {
            #expect(entry.components(separatedBy: "default").count <= 2, "\(command): \(entry)")
        }
    }

    @Test func trainHelpListsEveryConfigKeyAsAnOption() throws {
        let help = try flowguard(["train", "--help"]).stdout
        let keys = ["model", "model_config", "prompts", "reward", "reward_timeout", "reward_on_failure", "output", "seed", "steps",
                    "prompts_per_step", "group_size", "batch_size", "updates_per_rollout", "sampling_steps", "eval_steps", "eval_prompts",
                    "shift", "noise_level", "timestep_fraction", "cfg_scale", "guidance", "latent_size", "objective", "clip_range",
                    "bias_mode", "reweighting", "kl_beta", "advantage_scale", "advantage_clip", "lora_rank", "lora_alpha", "lora_targets",
                    "learning_rate", "adam_beta1", "adam_beta2", "adam_epsilon", "weight_decay", "max_grad_norm", "ema_decay",
                    "ema_interval", "ema", "checkpoint_every", "checkpoint_xor", "keep_checkpoints", "export_dtype", "threads"]
        for key in keys {
            let flag = "--" + key.replacingOccurrences(of: "_", with: "-")
            #expect(help.contains("\n  \(flag) <"), "\(flag)")
        }
        let words = help.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        #expect(words.contains("--objective <objective> The policy objective (default: grpo-guard). (values: grpo-guard, flow-grpo)"))
    }
}

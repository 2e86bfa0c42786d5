import ArgumentParser
import JSON
import SafeTensors
import SystemSupport

/// The `flowguard` command: a thin tree of subcommands, each a call into the libraries.
@main
struct FlowGuard: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flowguard",
        abstract: "Checkpoint, LoRA and training tools for diffusion transformers (SD3.5, FLUX), on the CPU.",
        discussion: """
        Checkpoints: inspect and verify safetensors files, shard indexes and model folders; convert between the original and diffusers layouts, dtypes and shards; diff two checkpoints; synth a full-size checkpoint of random values. Adapters: lora inspect, convert, merge, extract, pack and unpack. Models: run the transformer forward once; train a LoRA adapter with GRPO-Guard; report a training run as an HTML page.

        Exit status: 0 success, 1 bad input (the message names file, tensor and byte offset), 2 usage error (a missing or unknown option, a bad option value).
        """,
        version: FlowGuardVersion.text,
        subcommands: [Inspect.self, Verify.self, Convert.self, Diff.self, Synth.self, LoRACommand.self, Run.self, Train.self, Report.self]
    )

    /// Runs the command, mapping argument errors to exit status 2 and input errors to 1. With
    /// `--json`, an error is also printed as `{"error": message}` on standard output (the one
    /// JSON object of the run), with the same exit status.
    static func main() {
        // A file-size limit (ulimit -f) must surface as a write error naming the file, not kill us.
        ProcessControl.ignoreFileSizeLimitSignal()
        // A checkpoint truncated by another process while mapped: a clean error, not a crash.
        MappingGuard.installSignalHandler()
        let json = CommandLine.arguments.dropFirst().prefix { $0 != "--" }.contains("--json")
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let exit as ExitCode {
            ProcessControl.exit(exit.rawValue)
        } catch let failure as CommandFailure {
            fail(failure.message, json: json)
        } catch let error as SafeTensorsError {
            fail("error: \(error.description)", json: json)
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                print(fullMessage(for: error))
                ProcessControl.exit(0)
            }
            if code == .validationFailure {
                if json { printJSONError(message(for: error)) }
                printError(fullMessage(for: error))
                ProcessControl.exit(2)
            }
            fail("error: \(error)", json: json)
        }
    }

    /// Reports an input error (`line` is what standard error shows, "error: …") and exits 1.
    static func fail(_ line: String, json: Bool) -> Never {
        if !line.isEmpty {
            if json { printJSONError(line.hasPrefix("error: ") ? String(line.dropFirst(7)) : line) }
            printError(line)
        }
        ProcessControl.exit(1)
    }

    /// `{"error": message}` on standard output.
    static func printJSONError(_ message: String) {
        print(JSONValue.object([("error", .string(message))]).compactText)
    }
}

/// A failure whose details were already reported (or are in `message`): exit status 1.
struct CommandFailure: Error {
    var message: String = ""
}

/// Writes a line to standard error.
func printError(_ text: String) {
    StandardError.write(text + "\n")
}

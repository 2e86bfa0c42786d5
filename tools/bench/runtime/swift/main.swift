// runtime-bench: the Swift side of tools/bench/runtime (driven by run.py; outside CI).
//
//   runtime-bench linear [--threads N] [--warmup N] [--reps N]
//   runtime-bench block  --dir DIR [--threads N] [--warmup N] [--reps N]
//   runtime-bench full   --checkpoint PATH --io FILE [--threads N] [--warmup N] [--reps N]
//
// Each prints one JSON object on stdout (progress on stderr); on failure {"job", "error"} and exit 1.
import Foundation

func option(_ args: [String], _ name: String) -> String? {
    guard let i = args.firstIndex(of: name), i + 1 < args.count else { return nil }
    return args[i + 1]
}

func intOption(_ args: [String], _ name: String, _ fallback: Int) throws -> Int {
    guard let text = option(args, name) else { return fallback }
    guard let value = Int(text), value >= 0 else { throw BenchError("\(name) needs a non-negative integer, not '\(text)'") }
    return value
}

func required(_ args: [String], _ name: String) throws -> String {
    guard let value = option(args, name) else { throw BenchError("missing \(name)") }
    return value
}

func emit(_ object: [String: Any]) {
    let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
    FileHandle.standardOutput.write(data)
    FileHandle.standardOutput.write(Data("\n".utf8))
}

let arguments = Array(CommandLine.arguments.dropFirst())
let job = arguments.first ?? ""
do {
    let threads = try intOption(arguments, "--threads", 2)
    let warmup = try intOption(arguments, "--warmup", 1)
    let reps = try intOption(arguments, "--reps", 3)
    let env = ProcessInfo.processInfo.environment
    var result: [String: Any]
    switch job {
    case "linear":
        result = linearBench(threads: threads, warmup: warmup, reps: reps)
    case "block":
        result = try blockBench(dir: try required(arguments, "--dir"), threads: threads, warmup: warmup, reps: reps)
    case "full":
        result = try fullBench(checkpoint: try required(arguments, "--checkpoint"), io: try required(arguments, "--io"),
                               threads: threads, warmup: warmup, reps: reps)
    default:
        throw BenchError("usage: runtime-bench linear|block|full [options] (see tools/bench/runtime/README.md)")
    }
    result["openblas_coretype"] = env["OPENBLAS_CORETYPE"] ?? NSNull()
    result["openblas_l2_size"] = env["OPENBLAS_L2_SIZE"] ?? NSNull()
    emit(result)
} catch {
    emit(["job": job, "error": "\(error)"])
    exit(1)
}

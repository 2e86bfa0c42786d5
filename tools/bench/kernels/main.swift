// kernel-bench: times TensorRuntime's kernels against raw OpenBLAS sgemm on the same shapes
// (outside CI; timings on a shared machine are indicative — best of several runs).
//
//   kernel-bench [linear|kernels|block|all] [--threads N] [--repeats N] [--weights f32|bf16] [--json]
//
// linear:  Graph.linear (x·Wᵀ + bias) vs BLAS.gemm on SD3.5-Medium shapes.
// kernels: softmax / GELU / LayerNorm / RMSNorm rows vs a memory copy of the same bytes.
// block:   one SD3.5-Medium joint block (dual attention) forward, and forward+backward with
//          rank-32 LoRA gradients on the attention projections, vs the in-process sgemm rate.
import Foundation
import BLAS
import TensorRuntime

struct Options {
    var suite = "all"
    var threads = 2
    var repeats = 5
    var element = WeightMatrix.Element.float32
    var json = false

    init(_ arguments: [String]) {
        var i = 0
        while i < arguments.count {
            let a = arguments[i]
            func value() -> String {
                i += 1
                guard i < arguments.count else { fail("\(a) needs a value") }
                return arguments[i]
            }
            switch a {
            case "--threads": threads = Int(value()) ?? { fail("--threads needs an integer") }()
            case "--repeats": repeats = Int(value()) ?? { fail("--repeats needs an integer") }()
            case "--weights":
                switch value() {
                case "f32": element = .float32
                case "bf16": element = .bfloat16
                case "f16": element = .float16
                case let other: fail("--weights: unknown element type '\(other)' (f32, bf16, f16)")
                }
            case "--json": json = true
            case "linear", "kernels", "block", "all": suite = a
            case "-h", "--help":
                print("usage: kernel-bench [linear|kernels|block|all] [--threads N] [--repeats N] [--weights f32|bf16|f16] [--json]")
                exit(0)
            default: fail("unknown argument '\(a)'")
            }
            i += 1
        }
    }
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("kernel-bench: \(message)\n".utf8))
    exit(2)
}

let options = Options(Array(CommandLine.arguments.dropFirst()))
var results: [Measurement] = []
var extra: [String: Any] = [:]
let environment = ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] ?? "(unset)"
progress("threads \(options.threads), repeats \(options.repeats), weights \(options.element), OPENBLAS_CORETYPE=\(environment)")

@MainActor func report(_ m: Measurement) {
    results.append(m)
    if !options.json { print(m.line) }
}

if options.suite == "linear" || options.suite == "all" {
    for m in linearBench(options) { report(m) }
}
if options.suite == "kernels" || options.suite == "all" {
    for m in kernelBench(options) { report(m) }
}
if options.suite == "block" || options.suite == "all" {
    let (measurements, summary) = blockBench(options)
    for m in measurements { report(m) }
    extra["block"] = summary
    if !options.json { for (key, value) in summary.sorted(by: { $0.key < $1.key }) { print("  \(key): \(value)") } }
}
if options.json {
    let object: [String: Any] = ["threads": options.threads, "repeats": options.repeats,
                                 "weights": "\(options.element)", "openblas_coretype": environment,
                                 "measurements": results.map(\.json)].merging(extra) { a, _ in a }
    let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted])
    print(String(decoding: data, as: UTF8.self))
}

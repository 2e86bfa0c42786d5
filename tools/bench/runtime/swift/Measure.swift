import Foundation
import SafeTensors
import TensorRuntime

/// Seconds on a monotonic clock.
func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// Peak resident set size of this process so far, in bytes (Linux reports KiB).
func peakRSSBytes() -> Int {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Int(usage.ru_maxrss) * 1024
}

/// Writes a progress line on stderr.
func log(_ message: String) {
    FileHandle.standardError.write(Data("[runtime-bench] \(message)\n".utf8))
}

/// Times `body`: `warmup` untimed runs, then `reps` timed runs; median, min and every run.
func timings(_ label: String, warmup: Int, reps: Int, _ body: () -> Void) -> [String: Any] {
    for i in 0..<warmup {
        let t = now()
        body()
        log("\(label) warm-up \(i + 1)/\(warmup): \(format(now() - t)) s")
    }
    var runs: [Double] = []
    for i in 0..<max(1, reps) {
        let t = now()
        body()
        runs.append(now() - t)
        log("\(label) run \(i + 1)/\(max(1, reps)): \(format(runs.last!)) s")
    }
    return ["median_s": median(runs), "min_s": runs.min()!, "runs_s": runs]
}

func median(_ values: [Double]) -> Double {
    let s = values.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

func format(_ x: Double) -> String { String(format: "%.3f", x) }

/// ‖a − b‖ / ‖b‖ (b is the reference).
func relativeL2(_ a: [Float], _ b: [Float]) -> Double {
    precondition(a.count == b.count, "relativeL2: \(a.count) vs \(b.count) values")
    var num = 0.0, den = 0.0
    for i in 0..<a.count {
        let d = Double(a[i]) - Double(b[i])
        num += d * d
        den += Double(b[i]) * Double(b[i])
    }
    return den > 0 ? (num / den).squareRoot() : num.squareRoot()
}

/// Deterministic pseudo-random values in [-1, 1) (SplitMix64), for shapes whose values do not matter.
func randomValues(_ count: Int, seed: UInt64) -> [Float] {
    var random = SplitMix64(state: seed &+ 0x9E37_79B9_7F4A_7C15)
    return random.values(count, amplitude: 1)
}

/// A tensor of a safetensors file, widened to Float32, with its shape.
func readTensor(_ file: SafeTensorsFile, _ name: String) throws -> Tensor {
    let info = try file.info(name)
    return Tensor(shape: info.shape, scalars: try file.floats(of: info))
}

/// What a subcommand failed with, reported as JSON by `main`.
struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

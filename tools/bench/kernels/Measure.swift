import Foundation
import TensorRuntime

/// Seconds on a monotonic clock.
func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) * 1e-9 }

/// The best wall time of `repeats` runs of `body` (after `warmup` untimed runs).
func best(repeats: Int, warmup: Int = 1, _ body: () -> Void) -> Double {
    for _ in 0..<warmup { body() }
    var fastest = Double.infinity
    for _ in 0..<max(1, repeats) {
        let start = now()
        body()
        fastest = min(fastest, now() - start)
    }
    return fastest
}

/// Progress for long work, on stderr.
func progress(_ message: String) {
    FileHandle.standardError.write(Data("kernel-bench: \(message)\n".utf8))
}

/// Deterministic pseudo-random values for benchmark weights.
typealias Random = SplitMix64

/// One measured thing: our time, the anchor's time and what they mean.
struct Measurement {
    var name: String
    var seconds: Double
    var anchorName: String
    var anchorSeconds: Double
    var gflop: Double?

    /// anchor time / our time (1 = as fast as the anchor).
    var ratio: Double { anchorSeconds / seconds }

    var line: String {
        var text = String(format: "%-44@ %9.2f ms   %-26@ %9.2f ms   ratio %.3f", name as NSString, seconds * 1e3,
                          anchorName as NSString, anchorSeconds * 1e3, ratio)
        if let gflop { text += String(format: "   %.1f GFLOP/s", gflop / seconds) }
        return text
    }

    var json: [String: Any] {
        var object: [String: Any] = ["name": name, "ms": seconds * 1e3, "anchor": anchorName,
                                     "anchor_ms": anchorSeconds * 1e3, "ratio": ratio]
        if let gflop { object["gflop"] = gflop; object["gflops"] = gflop / seconds }
        return object
    }
}

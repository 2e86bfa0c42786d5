import Foundation
import GRPOGuard

/// How the report turns records into curves: on-policy and off-policy updates apart, values per
/// training step, centred moving averages, and training windows for the ratio distributions.
extension RunReport {
    /// Which updates a curve takes.
    enum Policy {
        /// The first update of each rollout: the policy that sampled is the one being trained, so
        /// r = r̂ = 1 exactly and nothing is clipped.
        case on
        /// Every later update of a rollout (the policy has moved since it sampled).
        case off

        /// Whether `record` belongs here.
        func holds(_ record: UpdateRecord) -> Bool { self == .on ? record.update == 0 : record.update > 0 }
    }

    /// Whether some update is off-policy (the run takes more than one update per rollout).
    var hasOffPolicyUpdates: Bool { records.contains { Policy.off.holds($0) } }

    /// Per training step, the mean of `value` over that step's updates of `policy` (steps without
    /// such an update are left out; non-finite values are ignored, a step with none gives NaN).
    func perStep(_ policy: Policy, _ value: (UpdateRecord) -> Double) -> [(x: Double, y: Double)] {
        var sums: [Int: (sum: Double, count: Int, seen: Bool)] = [:]
        for r in records where policy.holds(r) {
            let v = value(r)
            var entry = sums[r.step] ?? (0, 0, false)
            entry.seen = true
            if v.isFinite { entry.sum += v; entry.count += 1 }
            sums[r.step] = entry
        }
        return sums.keys.sorted().map { step in
            let e = sums[step]!
            return (Double(step), e.count > 0 ? e.sum / Double(e.count) : .nan)
        }
    }

    /// The centred moving average of `values` over `window` neighbours (odd; shrunk at the ends to
    /// what exists), ignoring non-finite values; NaN where the window holds none.
    static func movingAverage(_ values: [Double], window: Int) -> [Double] {
        let half = Swift.max(0, window / 2)
        guard half > 0 else { return values }
        return values.indices.map { i in
            let lo = Swift.max(0, i - half), hi = Swift.min(values.count - 1, i + half)
            var sum = 0.0, count = 0
            for v in values[lo...hi] where v.isFinite { sum += v; count += 1 }
            return count > 0 ? sum / Double(count) : .nan
        }
    }

    /// The smoothing window for a curve of `count` points: about a twentieth of it, odd, 1…25.
    static func smoothingWindow(points count: Int) -> Int {
        let w = Swift.min(25, Swift.max(1, count / 20))
        return w % 2 == 0 ? w + 1 : w
    }

    /// The trained timesteps seen in the records: index and σ, ordered by index.
    var timestepColumns: [(index: Int, sigma: Double)] {
        var seen: [Int: Double] = [:]
        for r in records { for t in r.timesteps where seen[t.index] == nil { seen[t.index] = t.sigma } }
        return seen.keys.sorted().map { ($0, seen[$0]!) }
    }

    /// A training window of off-policy records for the ratio distributions.
    struct Window {
        /// "early", "middle" or "late" (or "all" when there are too few steps to split).
        var name: String
        /// First and last training step.
        var steps: ClosedRange<Int>
        /// The off-policy records of those steps.
        var records: [UpdateRecord]
    }

    /// The off-policy records with quantiles split into up to three windows of consecutive
    /// training steps (early, middle, late) with as equal step counts as possible.
    var ratioWindows: [Window] {
        let usable = records.filter { r in Policy.off.holds(r) && r.timesteps.contains { $0.ratioQuantiles != nil } }
        let steps = Array(Set(usable.map(\.step))).sorted()
        guard !steps.isEmpty else { return [] }
        let count = Swift.min(3, steps.count)
        let names = count == 3 ? ["early", "middle", "late"] : count == 2 ? ["early", "late"] : ["all"]
        return (0..<count).map { k in
            let slice = steps[(k * steps.count / count)..<((k + 1) * steps.count / count)]
            let range = slice.first!...slice.last!
            return Window(name: names[k], steps: range, records: usable.filter { range.contains($0.step) })
        }
    }

    /// The glyph of one timestep over a window: each quantile level is the median over the
    /// window's updates of that update's quantile (a typical update's distribution); the mean is
    /// the mean of the updates' means (every update has the same number of samples).
    static func windowGlyph(_ records: [UpdateRecord], index: Int, normalized: Bool) -> ReportSVG.QuantilePanels.Glyph? {
        let steps = records.compactMap { r in r.timesteps.first { $0.index == index } }
        let quantiles = steps.compactMap { normalized ? $0.normalizedRatioQuantiles : $0.ratioQuantiles }
        guard !quantiles.isEmpty else { return nil }
        let levels = (0..<SampleQuantiles.levels.count).map { level -> Double in
            let values = quantiles.map { $0.values[level] }.filter(\.isFinite).sorted()
            return values.isEmpty ? .nan : SampleQuantiles.quantile(sorted: values, level: 0.5)
        }
        let means = steps.map { normalized ? $0.diagnostics.normalizedRatioMean : $0.diagnostics.ratioMean }.filter(\.isFinite)
        return ReportSVG.QuantilePanels.Glyph(quantiles: levels, mean: means.isEmpty ? nil : means.reduce(0, +) / Double(means.count))
    }

    /// Per timestep (rows) and training step (columns), the mean of a per-timestep value over the
    /// step's off-policy updates: a heatmap's rows, columns and values.
    func offPolicyGrid(_ value: (TimestepRecord) -> Double) -> (rows: [String], columns: [Double], values: [[Double]]) {
        let columns = timestepColumns
        let steps = Array(Set(records.filter { Policy.off.holds($0) }.map(\.step))).sorted()
        var byStep: [Int: [UpdateRecord]] = [:]
        for r in records where Policy.off.holds(r) { byStep[r.step, default: []].append(r) }
        let values = columns.map { column in
            steps.map { step -> Double in
                let finite = byStep[step]!.compactMap { r in r.timesteps.first { $0.index == column.index }.map(value) }.filter(\.isFinite)
                return finite.isEmpty ? .nan : finite.reduce(0, +) / Double(finite.count)
            }
        }
        return (columns.map { Self.timestepLabel($0.index, $0.sigma) }, steps.map(Double.init), values)
    }

    /// A timestep's row label: "j=3 σ=0.712".
    static func timestepLabel(_ index: Int, _ sigma: Double) -> String { "j=\(index) σ=\(String(format: "%.3f", sigma))" }
}

import Foundation

/// What one trained step's ratios looked like (design §6, flow_grpo's logged `clipfrac_gt_one`,
/// `clipfrac_lt_one`, `approx_kl`): mean and standard deviation (population) of the raw ratio r
/// and the normalized ratio r̂, the fractions of samples whose clipped ratio lies above 1+ε and
/// below 1−ε, the same fractions split by advantage sign (the side where PPO's clip removes the
/// gradient: above for A > 0, below for A < 0), and approx KL = ½·mean((log p_θ − log p_old)²).
public struct StepDiagnostics: Sendable, Equatable {
    /// Mean of r = exp(log p_θ − log p_old) over samples.
    public var ratioMean: Double
    /// Standard deviation of r over samples.
    public var ratioStd: Double
    /// Mean of r̂ (RatioNorm) over samples.
    public var normalizedRatioMean: Double
    /// Standard deviation of r̂ over samples.
    public var normalizedRatioStd: Double
    /// Fraction of samples with (clipped ratio) − 1 > ε.
    public var clipFractionAbove: Double
    /// Fraction of samples with 1 − (clipped ratio) > ε.
    public var clipFractionBelow: Double
    /// Among samples with advantage A > 0, the fraction with (clipped ratio) − 1 > ε: those whose
    /// gradient the clip removes (PPO's min takes the clipped branch exactly there for A > 0).
    /// 0 when no sample has A > 0.
    public var clipFractionPositive: Double
    /// Among samples with advantage A < 0, the fraction with 1 − (clipped ratio) > ε: those whose
    /// gradient the clip removes for A < 0. 0 when no sample has A < 0.
    public var clipFractionNegative: Double
    /// ½·mean((log p_θ − log p_old)²).
    public var approximateKL: Double

    /// Statistics from per-sample raw and normalized log-ratios; the clip fractions are taken on
    /// `clippedRatios` (r for Flow-GRPO, r̂ for GRPO-Guard) with clip range `clipRange`, the
    /// signed ones split by `advantages` (one per sample, as in `clippedRatios`; A = 0 counts in
    /// neither).
    public init(logRatios: [Double], normalizedLogRatios: [Double], clippedRatios: [Double], advantages: [Double], clipRange: Double) {
        precondition(advantages.count == clippedRatios.count,
                     "StepDiagnostics: \(clippedRatios.count) clipped ratios but \(advantages.count) advantages")
        let r = logRatios.map { Foundation.exp($0) }
        let rHat = normalizedLogRatios.map { Foundation.exp($0) }
        (ratioMean, ratioStd) = Self.meanAndStd(r)
        (normalizedRatioMean, normalizedRatioStd) = Self.meanAndStd(rHat)
        let n = Double(max(clippedRatios.count, 1))
        clipFractionAbove = Double(clippedRatios.filter { $0 - 1 > clipRange }.count) / n
        clipFractionBelow = Double(clippedRatios.filter { 1 - $0 > clipRange }.count) / n
        clipFractionPositive = Self.fraction(of: zip(clippedRatios, advantages).filter { $0.1 > 0 }.map(\.0)) { $0 - 1 > clipRange }
        clipFractionNegative = Self.fraction(of: zip(clippedRatios, advantages).filter { $0.1 < 0 }.map(\.0)) { 1 - $0 > clipRange }
        approximateKL = 0.5 * logRatios.reduce(0) { $0 + $1 * $1 } / Double(max(logRatios.count, 1))
    }

    /// A value from its fields.
    public init(ratioMean: Double, ratioStd: Double, normalizedRatioMean: Double, normalizedRatioStd: Double,
                clipFractionAbove: Double, clipFractionBelow: Double, clipFractionPositive: Double, clipFractionNegative: Double,
                approximateKL: Double) {
        self.ratioMean = ratioMean
        self.ratioStd = ratioStd
        self.normalizedRatioMean = normalizedRatioMean
        self.normalizedRatioStd = normalizedRatioStd
        self.clipFractionAbove = clipFractionAbove
        self.clipFractionBelow = clipFractionBelow
        self.clipFractionPositive = clipFractionPositive
        self.clipFractionNegative = clipFractionNegative
        self.approximateKL = approximateKL
    }

    /// The field-wise mean of several steps' diagnostics (how flow_grpo logs one optimizer step);
    /// nil for none. The signed clip fractions are averaged like the others (a step without
    /// samples of that sign contributes its 0).
    public static func average(_ steps: [StepDiagnostics]) -> StepDiagnostics? {
        guard !steps.isEmpty else { return nil }
        func avg(_ key: KeyPath<StepDiagnostics, Double>) -> Double {
            steps.reduce(0) { $0 + $1[keyPath: key] } / Double(steps.count)
        }
        return StepDiagnostics(ratioMean: avg(\.ratioMean), ratioStd: avg(\.ratioStd),
                               normalizedRatioMean: avg(\.normalizedRatioMean), normalizedRatioStd: avg(\.normalizedRatioStd),
                               clipFractionAbove: avg(\.clipFractionAbove), clipFractionBelow: avg(\.clipFractionBelow),
                               clipFractionPositive: avg(\.clipFractionPositive), clipFractionNegative: avg(\.clipFractionNegative),
                               approximateKL: avg(\.approximateKL))
    }

    /// The fraction of `values` satisfying `test` (0 for no values).
    static func fraction(of values: [Double], where test: (Double) -> Bool) -> Double {
        values.isEmpty ? 0 : Double(values.filter(test).count) / Double(values.count)
    }

    /// Mean and population standard deviation (0, 0 for no values).
    static func meanAndStd(_ values: [Double]) -> (Double, Double) {
        guard !values.isEmpty else { return (0, 0) }
        let mean = values.reduce(0, +) / Double(values.count)
        let variance = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(values.count)
        return (mean, variance.squareRoot())
    }
}

/// The 5, 25, 50, 75 and 95 % quantiles of one per-sample quantity (the importance ratio r or r̂
/// of one trained timestep in one optimizer step), as the report draws them: a whisker from 5 to
/// 95 %, a box from 25 to 75 %, the median. Quantiles interpolate linearly between order
/// statistics (numpy's default, Hyndman–Fan type 7): for sorted x₀ … xₙ₋₁ and level p,
/// h = (n − 1)·p, q = x⌊h⌋ + (h − ⌊h⌋)·(x⌊h⌋₊₁ − x⌊h⌋).
public struct SampleQuantiles: Sendable, Equatable {
    /// The levels, in the order of `values`.
    public static let levels: [Double] = [0.05, 0.25, 0.5, 0.75, 0.95]
    /// One value per level of `levels`, non-decreasing.
    public var values: [Double]

    /// A value from already computed quantiles (one per level; the report reading the log back).
    public init(values: [Double]) {
        precondition(values.count == Self.levels.count, "SampleQuantiles: \(values.count) values for \(Self.levels.count) levels")
        self.values = values
    }

    /// The quantiles of `samples`; nil when there are none. Non-finite samples are kept (NaN
    /// sorts last here, so a NaN sample shows up in the upper quantiles rather than vanishing).
    public init?(of samples: [Double]) {
        guard !samples.isEmpty else { return nil }
        let sorted = samples.sorted { $0 < $1 || (!$0.isNaN && $1.isNaN) }
        values = Self.levels.map { Self.quantile(sorted: sorted, level: $0) }
    }

    /// The type-7 quantile at `level` (0…1) of non-empty, ascending `sorted`.
    public static func quantile(sorted: [Double], level: Double) -> Double {
        precondition(!sorted.isEmpty, "SampleQuantiles.quantile: no values")
        let h = Double(sorted.count - 1) * Swift.min(1, Swift.max(0, level))
        let k = Int(h.rounded(.down))
        guard k + 1 < sorted.count else { return sorted[sorted.count - 1] }
        let f = h - Double(k)
        return f == 0 ? sorted[k] : sorted[k] + f * (sorted[k + 1] - sorted[k])
    }

    /// The 5 % quantile (whisker end).
    public var low: Double { values[0] }
    /// The 25 % quantile (box end).
    public var lowerQuartile: Double { values[1] }
    /// The median.
    public var median: Double { values[2] }
    /// The 75 % quantile (box end).
    public var upperQuartile: Double { values[3] }
    /// The 95 % quantile (whisker end).
    public var high: Double { values[4] }
}

import Foundation

/// What one trained step's ratios looked like (design §6, flow_grpo's logged `clipfrac_gt_one`,
/// `clipfrac_lt_one`, `approx_kl`): mean and standard deviation (population) of the raw ratio r
/// and the normalized ratio r̂, the fractions of samples whose clipped ratio lies above 1+ε and
/// below 1−ε, and approx KL = ½·mean((log p_θ − log p_old)²).
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
    /// ½·mean((log p_θ − log p_old)²).
    public var approximateKL: Double

    /// Statistics from per-sample raw and normalized log-ratios; the clip fractions are taken on
    /// `clippedRatios` (r for Flow-GRPO, r̂ for GRPO-Guard) with clip range `clipRange`.
    public init(logRatios: [Double], normalizedLogRatios: [Double], clippedRatios: [Double], clipRange: Double) {
        let r = logRatios.map { Foundation.exp($0) }
        let rHat = normalizedLogRatios.map { Foundation.exp($0) }
        (ratioMean, ratioStd) = Self.meanAndStd(r)
        (normalizedRatioMean, normalizedRatioStd) = Self.meanAndStd(rHat)
        let n = Double(max(clippedRatios.count, 1))
        clipFractionAbove = Double(clippedRatios.filter { $0 - 1 > clipRange }.count) / n
        clipFractionBelow = Double(clippedRatios.filter { 1 - $0 > clipRange }.count) / n
        approximateKL = 0.5 * logRatios.reduce(0) { $0 + $1 * $1 } / Double(max(logRatios.count, 1))
    }

    /// A value from its fields.
    public init(ratioMean: Double, ratioStd: Double, normalizedRatioMean: Double, normalizedRatioStd: Double,
                clipFractionAbove: Double, clipFractionBelow: Double, approximateKL: Double) {
        self.ratioMean = ratioMean
        self.ratioStd = ratioStd
        self.normalizedRatioMean = normalizedRatioMean
        self.normalizedRatioStd = normalizedRatioStd
        self.clipFractionAbove = clipFractionAbove
        self.clipFractionBelow = clipFractionBelow
        self.approximateKL = approximateKL
    }

    /// The field-wise mean of several steps' diagnostics (how flow_grpo logs one optimizer step);
    /// nil for none.
    public static func average(_ steps: [StepDiagnostics]) -> StepDiagnostics? {
        guard !steps.isEmpty else { return nil }
        func avg(_ key: KeyPath<StepDiagnostics, Double>) -> Double {
            steps.reduce(0) { $0 + $1[keyPath: key] } / Double(steps.count)
        }
        return StepDiagnostics(ratioMean: avg(\.ratioMean), ratioStd: avg(\.ratioStd),
                               normalizedRatioMean: avg(\.normalizedRatioMean), normalizedRatioStd: avg(\.normalizedRatioStd),
                               clipFractionAbove: avg(\.clipFractionAbove), clipFractionBelow: avg(\.clipFractionBelow),
                               approximateKL: avg(\.approximateKL))
    }

    /// Mean and population standard deviation (0, 0 for no values).
    static func meanAndStd(_ values: [Double]) -> (Double, Double) {
        guard !values.isEmpty else { return (0, 0) }
        let mean = values.reduce(0, +) / Double(values.count)
        let variance = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(values.count)
        return (mean, variance.squareRoot())
    }
}

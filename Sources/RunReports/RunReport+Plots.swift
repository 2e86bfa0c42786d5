import Foundation
import GRPOGuard

/// The report's figures, section by section: reward, the importance-ratio distributions (the
/// paper's picture), the ratios over training, clipping and KL, gradients and loss.
extension RunReport {
    /// The objective the run trained with (GRPO-Guard when the config does not say).
    var objective: ObjectiveKind { configText("objective").flatMap(ObjectiveKind.init(rawValue:)) ?? .grpoGuard }

    /// The clip range in force: the config's, else the objective's default (`TrainingConfig`'s rule).
    var clipRangeInForce: Double {
        if let text = configText("clip_range"), let value = Double(text) { return value }
        var config = TrainingConfig()
        config.objective = objective
        return config.effectiveClipRange
    }

    /// The smoothing window of curves against the training step.
    var window: Int { Self.smoothingWindow(points: rollouts.count) }

    /// The subtitle saying how curves against the training step were drawn.
    var smoothingNote: String {
        window > 1 ? "lines: moving average over \(window) training steps (centred); faint: each step"
            : "one point per training step (too few steps to smooth)"
    }

    /// A faint line through `points` and its moving average on top, named `name`.
    func smoothed(_ name: String, color: String, dashed: Bool = false, _ points: [(x: Double, y: Double)]) -> [ReportSVG.Series] {
        let average = Self.movingAverage(points.map(\.y), window: window)
        var out: [ReportSVG.Series] = []
        if window > 1 { out.append(ReportSVG.Series(name: name + " (each step)", color: color, points: points, opacity: 0.18, lineWidth: 0.8, inLegend: false)) }
        out.append(ReportSVG.Series(name: name, color: color, points: zip(points, average).map { ($0.0.x, $0.1) }, dashed: dashed))
        return out
    }

    /// Curves of `value` per training step, off-policy updates solid and on-policy ones dashed
    /// (only the kinds the run has; a run of on-policy updates alone draws one solid line).
    func policyCurves(_ name: String, color: String, includeOnPolicy: Bool = true, _ value: (UpdateRecord) -> Double) -> [ReportSVG.Series] {
        guard hasOffPolicyUpdates else { return smoothed(name, color: color, perStep(.on, value)) }
        var out = smoothed(name + ", off-policy", color: color, perStep(.off, value))
        if includeOnPolicy { out += smoothed(name + ", on-policy", color: color, dashed: true, perStep(.on, value)) }
        return out
    }

    /// The diagnostics sections.
    func plots() -> String {
        rewardSection() + ratioDistributionSection() + ratioOverTrainingSection() + clipSection() + gradientSection()
    }

    // MARK: reward

    /// Rollout reward with its spread, and the end-of-run evaluation.
    func rewardSection() -> String {
        let e = ReportSVG.escape
        let steps = rollouts
        var html = "<section id=\"reward\">\n<h2>Reward</h2>\n"
        html += "<p class=\"note\">The rollout reward is the mean reward of each training step's SDE samples; the band is ± one standard "
            + "deviation of those samples' rewards (the spread within the rollout), smoothed like the line.</p>\n"
        var references: [(y: Double, label: String)] = []
        if let ev = evaluation {
            html += "<table class=\"evaluation\">\n<tr><th>noise-free evaluation</th><th>reward</th></tr>\n"
            html += "<tr><td>base model (no adapter)</td><td class=\"num\">\(format(ev.base))</td></tr>\n"
            html += "<tr><td>with the trained adapter</td><td class=\"num\">\(format(ev.adapted))</td></tr>\n"
            html += "<tr><td>change</td><td class=\"num\">\(format(ev.adapted - ev.base, "%+.6g"))</td></tr>\n</table>\n"
            html += "<p class=\"note\">From <code>\(e(run))/evaluation.json</code>: "
                + (ev.prompts.map { "the first \($0) prompt\($0 == 1 ? "" : "s"), one sample each, " } ?? "")
                + (ev.steps.map { "\($0) Euler steps without noise, " } ?? "")
                + "the same starting noise with and without the adapter.</p>\n"
            references = [(ev.base, "evaluation, base: \(format(ev.base, "%.4g"))"), (ev.adapted, "evaluation, adapted: \(format(ev.adapted, "%.4g"))")]
        } else {
            html += "<p class=\"note\">No <code>evaluation.json</code> in the run folder: the noise-free evaluation runs when training "
                + "finishes (and is skipped with <code>--eval-prompts 0</code>; runs before this version printed it only).</p>\n"
        }
        let means = steps.map { (x: Double($0.step), y: $0.rewardMean) }
        let lower = Self.movingAverage(steps.map { $0.rewardMean - $0.rewardStd }, window: window)
        let upper = Self.movingAverage(steps.map { $0.rewardMean + $0.rewardStd }, window: window)
        html += ReportSVG.render(ReportSVG.LinePlot(
            title: "Rollout reward per training step", xLabel: "training step", yLabel: "reward",
            series: smoothed("rollout reward, mean", color: "#1f5fa8", means),
            bands: [ReportSVG.Band(name: "± std within the rollout", color: "#1f5fa8",
                                   points: zip(steps, zip(lower, upper)).map { (Double($0.0.step), $0.1.0, $0.1.1) })],
            referenceLines: references, subtitle: smoothingNote, integerX: true))
        return html + "</section>\n"
    }

    // MARK: ratio distributions

    /// The distribution of r and r̂ per timestep in early, middle and late windows of training.
    func ratioDistributionSection() -> String {
        var html = "<section id=\"ratio-distribution\">\n<h2>Importance-ratio distribution per timestep</h2>\n"
        html += "<p class=\"note\">Each glyph is the distribution over the samples of one update of the raw ratio "
            + "r = exp(log p<sub>θ</sub> − log p<sub>old</sub>) (top) and GRPO-Guard's normalized ratio r̂ (bottom) at one trained "
            + "timestep, σ from 1 (noise) on the left to low noise on the right. Box: 25–75 %, bar: median, whiskers: 5–95 %, "
            + "diamond: mean; each quantile is the median over the window's updates. <strong>Off-policy updates only</strong>: the "
            + "first update of each rollout is on-policy, where r = r̂ = 1 exactly, and is left out. The paper's observation: "
            + "r sits below 1 (log r carries −‖Δμ‖²/2s²) with a spread growing toward low noise, so the upper clip never fires; "
            + "r̂ is centred on 1 with a comparable spread at every timestep.</p>\n"
        guard hasOffPolicyUpdates else {
            return html + "<p class=\"warn\">Every update of this run is on-policy (one update per rollout), where r = r̂ = 1 exactly: "
                + "there is no ratio distribution to show. Train with <code>--updates-per-rollout 2</code> or more to see it.</p>\n</section>\n"
        }
        let windows = ratioWindows
        guard !windows.isEmpty else {
            return html + "<p class=\"warn\">This run predates the per-sample ratio quantiles: its <code>diagnostics.jsonl</code> has no "
                + "<code>ratio_quantiles</code>/<code>normalized_ratio_quantiles</code>. Train it again with this flowguard to see the "
                + "distributions; the mean and spread over training are shown below.</p>\n</section>\n"
        }
        if recordsWithoutQuantiles > 0 {
            html += "<p class=\"warn\">\(recordsWithoutQuantiles) of \(records.count) record(s) have no ratio quantiles (written by an "
                + "older trainer) and are left out here.</p>\n"
        }
        let columns = timestepColumns
        let categories = columns.map { String(format: "%.2f", $0.sigma) }
        let epsilon = clipRangeInForce, eps = String(format: "%g", epsilon)
        func panels(normalized: Bool) -> [ReportSVG.QuantilePanels.Panel] {
            windows.map { w in
                ReportSVG.QuantilePanels.Panel(
                    title: "\(w.name): step\(w.steps.count > 1 ? "s \(w.steps.lowerBound)–\(w.steps.upperBound)" : " \(w.steps.lowerBound)")",
                    glyphs: columns.map { Self.windowGlyph(w.records, index: $0.index, normalized: normalized) })
            }
        }
        let clipsRaw = objective == .flowGRPO
        let xLabel = "σ of the trained timestep (1 = noise → 0 = data)"
        html += "<div class=\"grid\">\n"
        html += ReportSVG.render(ReportSVG.QuantilePanels(
            title: "raw ratio r per timestep (off-policy updates)", yLabel: "r", xLabel: xLabel, categories: categories,
            panels: panels(normalized: false), color: "#b2182b",
            referenceLines: [(1, "r = 1")] + (clipsRaw ? [(1 - epsilon, "1 ± ε (ε = \(eps), the clip range)"), (1 + epsilon, "")] : [])))
        html += ReportSVG.render(ReportSVG.QuantilePanels(
            title: "normalized ratio r̂ per timestep (off-policy updates)", yLabel: "r̂", xLabel: xLabel, categories: categories,
            panels: panels(normalized: true), color: "#2166ac",
            referenceLines: [(1, "r̂ = 1")] + (clipsRaw ? [] : [(1 - epsilon, "1 ± ε (ε = \(eps), the clip range)"), (1 + epsilon, "")])))
        html += "</div>\n"
        return html + "</section>\n"
    }

    // MARK: ratios over training

    /// Mean and spread of r and r̂ per timestep against the training step (heatmaps).
    func ratioOverTrainingSection() -> String {
        var html = "<section id=\"ratio-training\">\n<h2>Importance ratios over training</h2>\n"
        guard hasOffPolicyUpdates else {
            return html + "<p class=\"note\">Every update is on-policy (r = r̂ = 1 exactly): nothing to show.</p>\n</section>\n"
        }
        html += "<p class=\"note\">Per timestep (rows, σ from noise at the top) and training step (columns), over the step's off-policy "
            + "updates. Means on a diverging scale around 1 (blue: below 1, red: above); standard deviations over the samples on a "
            + "sequential scale. Colour ranges end at the 2nd and 98th percentiles so one outlier does not wash out the rest.</p>\n"
        html += "<div class=\"grid\">\n"
        let heat: [(String, String, ReportSVG.Heatmap.Scale, (TimestepRecord) -> Double)] = [
            ("mean of r per timestep", "mean r (white: 1)", .diverging(center: 1), { $0.diagnostics.ratioMean }),
            ("mean of r̂ per timestep", "mean r̂ (white: 1)", .diverging(center: 1), { $0.diagnostics.normalizedRatioMean }),
            ("std of r per timestep", "std of r over the samples", .sequential(lower: 0, upper: nil), { $0.diagnostics.ratioStd }),
            ("std of r̂ per timestep", "std of r̂ over the samples", .sequential(lower: 0, upper: nil), { $0.diagnostics.normalizedRatioStd }),
        ]
        for (title, unit, scale, value) in heat {
            html += stepHeatmap(title, offPolicyGrid(value), scale: scale, colorLabel: unit)
        }
        return html + "</div>\n</section>\n"
    }

    // MARK: clipping

    /// Clip fractions (overall, by advantage sign, per timestep) and approximate KL.
    func clipSection() -> String {
        let clipped = objective == .grpoGuard ? "r̂" : "r"
        var html = "<section id=\"clipping\">\n<h2>Clipping and KL</h2>\n"
        html += "<p class=\"note\">Fractions of samples whose clipped ratio (\(clipped), ε = \(String(format: "%g", clipRangeInForce)) in force) "
            + "lies above 1 + ε and below 1 − ε. By advantage sign: among the samples with A &gt; 0, the fraction above 1 + ε, and among "
            + "those with A &lt; 0, the fraction below 1 − ε — the samples whose gradient the clip removes (a minibatch without samples "
            + "of that sign counts 0). Under vanilla Flow-GRPO the ratio's mean sits below 1, so the positive-advantage fraction stays "
            + "near 0 while the negative one does not; RatioNorm re-centres r̂ on 1, so under GRPO-Guard both can clip. "
            + (hasOffPolicyUpdates ? "Solid: off-policy updates; dashed: the on-policy first update of each rollout (r = 1, never clipped). " : "")
            + "approx KL = ½·mean((log p<sub>θ</sub> − log p<sub>old</sub>)²).</p>\n"
        if recordsWithoutSignedClipFractions > 0 {
            html += "<p class=\"warn\">\(recordsWithoutSignedClipFractions) of \(records.count) record(s) were written without "
                + "<code>clip_fraction_positive</code>/<code>clip_fraction_negative</code> (an older trainer); "
                + "the clip fractions by advantage sign show 0 there.</p>\n"
        }
        html += "<div class=\"grid\">\n"
        html += ReportSVG.render(ReportSVG.LinePlot(
            title: "clip fractions (mean over timesteps)", xLabel: "training step", yLabel: "fraction of samples",
            series: policyCurves("above 1 + ε", color: "#b2182b") { $0.mean(\.clipFractionAbove) }
                + policyCurves("below 1 − ε", color: "#2166ac") { $0.mean(\.clipFractionBelow) },
            subtitle: smoothingNote, integerX: true))
        html += ReportSVG.render(ReportSVG.LinePlot(
            title: "clip fractions by advantage sign", xLabel: "training step", yLabel: "fraction of samples of that sign",
            series: policyCurves("A > 0, above 1 + ε", color: "#b2182b") { $0.mean(\.clipFractionPositive) }
                + policyCurves("A < 0, below 1 − ε", color: "#2166ac") { $0.mean(\.clipFractionNegative) },
            subtitle: smoothingNote, integerX: true))
        let perTimestep: [(title: String, unit: String, value: KeyPath<StepDiagnostics, Double>)] = [
            ("clip fraction above 1 + ε per timestep", "fraction of samples above 1 + ε", \.clipFractionAbove),
            ("clip fraction below 1 − ε per timestep", "fraction of samples below 1 − ε", \.clipFractionBelow),
            ("clip fraction of A > 0 samples above 1 + ε per timestep", "fraction of the A > 0 samples", \.clipFractionPositive),
            ("clip fraction of A < 0 samples below 1 − ε per timestep", "fraction of the A < 0 samples", \.clipFractionNegative),
        ]
        for plot in perTimestep {
            let grid = hasOffPolicyUpdates ? offPolicyGrid { $0.diagnostics[keyPath: plot.value] } : allUpdatesGrid { $0.diagnostics[keyPath: plot.value] }
            html += stepHeatmap(plot.title + (hasOffPolicyUpdates ? " (off-policy)" : ""), grid,
                                scale: .sequential(lower: 0, upper: 1), colorLabel: plot.unit)
        }
        html += ReportSVG.render(ReportSVG.LinePlot(
            title: "approx KL (mean over timesteps)", xLabel: "training step", yLabel: "approx KL",
            series: policyCurves("approx KL", color: "#333333", includeOnPolicy: false) { $0.mean(\.approximateKL) },
            subtitle: smoothingNote + (hasOffPolicyUpdates ? "; on-policy (KL 0) not drawn" : ""),
            logY: true, integerX: true))
        return html + "</div>\n</section>\n"
    }

    // MARK: gradients and loss

    /// Gradient norms and losses, overall and per timestep.
    func gradientSection() -> String {
        var html = "<section id=\"gradients\">\n<h2>Gradients and loss</h2>\n<div class=\"grid\">\n"
        html += ReportSVG.render(ReportSVG.LinePlot(
            title: "global gradient norm (before clipping)", xLabel: "training step", yLabel: "‖g‖",
            series: policyCurves("‖g‖", color: "#000000") { $0.gradientNorm }, subtitle: smoothingNote, integerX: true))
        html += stepHeatmap("gradient norm per timestep (all updates)", allUpdatesGrid(\.gradientNorm),
                            scale: .sequential(lower: 0, upper: nil), colorLabel: "‖g‖ of the timestep's loss")
        html += ReportSVG.render(ReportSVG.LinePlot(
            title: "loss (mean over timesteps)", xLabel: "training step", yLabel: "loss",
            series: policyCurves("loss", color: "#6a3d9a") { $0.loss }, subtitle: smoothingNote, integerX: true))
        html += stepHeatmap("loss per timestep (reweighted, all updates)", allUpdatesGrid(\.loss),
                            scale: .diverging(center: 0), colorLabel: "loss (white: 0)")
        return html + "</div>\n</section>\n"
    }

    /// A heatmap of a grid against the training step, averaging consecutive steps so at most
    /// `heatmapColumns` columns remain (the x label says how many steps a column holds).
    func stepHeatmap(_ title: String, _ grid: (rows: [String], columns: [Double], values: [[Double]]),
                     scale: ReportSVG.Heatmap.Scale, colorLabel: String) -> String {
        let per = (grid.columns.count + Self.heatmapColumns - 1) / Self.heatmapColumns
        let xLabel = per > 1 ? "training step (a column: the mean of \(per) steps)" : "training step"
        return ReportSVG.render(ReportSVG.Heatmap(title: title, xLabel: xLabel, yLabel: "timestep", rows: grid.rows, columns: grid.columns,
                                                  values: grid.values, scale: scale, colorLabel: colorLabel, columnLimit: Self.heatmapColumns))
    }

    /// The most columns a heatmap against the training step draws (more are averaged in groups).
    static let heatmapColumns = 60

    /// As `offPolicyGrid`, over every update of each step.
    func allUpdatesGrid(_ value: (TimestepRecord) -> Double) -> (rows: [String], columns: [Double], values: [[Double]]) {
        var copy = self
        copy.records = records.map { r in var r = r; r.update = 1; return r }
        return copy.offPolicyGrid(value)
    }
}

import Foundation
import GRPOGuard
import RunReports

/// Writes the study's report: a markdown file (e.g. docs/study.md) and its SVG figures in a folder
/// beside it named after it (docs/study/*.svg), linked relatively. Everything in it is computed from
/// the work folder (statistics: ReportStatistics.swift); the only hand-written part is
/// tools/study/findings.md, included verbatim when present.
enum StudyReport {
    /// The hand-written interpretation, relative to the repository root (the working directory).
    static let interpretationPath = "tools/study/findings.md"

    /// Reads the runs in `folder` and writes the report to `output`; `totalSeconds` is the measured
    /// runtime of `flowguard-study all` (nil when re-rendered from existing runs).
    static func write(settings: StudySettings, folder: StudyFolder, output: String, totalSeconds: Double?) throws {
        let data = try StudyData.load(settings: settings, folder: folder)
        for warning in data.warnings { progress("report: " + warning) }
        var figures = try FigureFolder(report: output)
        let band = BandKind(data.methods)
        let levels = ProxyLevel.levels(data.methods)
        var lines: [String] = []
        lines += header(settings: settings, data: data, totalSeconds: totalSeconds, figures: &figures)
        lines += trainingCurves(data, band: band, figures: &figures)
        lines += goldVersusProxy(data, figures: &figures)
        lines += ratioPerTimestep(data, band: band, figures: &figures)
        lines += clippedRatioOverTraining(data, band: band, figures: &figures)
        lines += clipFractions(data, figures: &figures)
        lines += endOfTraining(data)
        lines += equalProxyTables(data, levels: levels)
        lines += Findings(data: data, levels: levels).section
        lines += interpretation()
        try writeAtomically(lines.joined(separator: "\n") + "\n", to: output)
        progress("report: \(output) (\(figures.count) figures in \(figures.directory))")
    }

    // MARK: colours and plot helpers

    /// One fixed colour per method, the same in every figure.
    static func color(_ method: Method) -> String {
        switch method.name {
        case "flow-grpo": return "#d62728"
        case "flow-grpo-kl": return "#ff7f0e"
        case "grpo-guard": return "#1f77b4"
        case "ratio-norm": return "#2ca02c"
        case "reweight": return "#9467bd"
        case "flow-grpo-slow": return "#8c564b"
        case "grpo-guard-wide": return "#17becf"
        default: return "#7f7f7f"
        }
    }

    /// A plot of one seed curve per method: the mean as a line over its band (none for one seed).
    /// The band is explained once, in the subtitle (each method's band has its line's colour).
    static func seedPlot(_ title: String, xLabel: String, yLabel: String, curves: [(MethodRuns, SeedCurve)], band: BandKind?,
                         referenceLines: [(y: Double, label: String)] = [], integerX: Bool = true) -> ReportSVG.LinePlot {
        var series: [ReportSVG.Series] = [], bands: [ReportSVG.Band] = []
        for (m, curve) in curves {
            series.append(ReportSVG.Series(name: m.method.label, color: color(m.method), points: curve.map { ($0.x, $0.summary.mean) }))
            guard let band else { continue }
            let edges = curve.compactMap { p in band.edges(p.summary).map { (x: p.x, lower: $0.lower, upper: $0.upper) } }
            if edges.count >= 2 { bands.append(ReportSVG.Band(name: m.method.label + " band", color: color(m.method), points: edges, inLegend: false)) }
        }
        let subtitle = band.map { "lines: mean over seeds; shaded: \($0.text), in the line's colour" } ?? "lines: mean over seeds"
        return ReportSVG.LinePlot(title: title, xLabel: xLabel, yLabel: yLabel, series: series, bands: bands, referenceLines: referenceLines,
                                  subtitle: bands.isEmpty ? "lines: mean over seeds" : subtitle, integerX: integerX)
    }

    /// The horizontal "data" line of a metric with a known value on true data, drawn only when it
    /// lies within half the curves' span of them (otherwise it would flatten the curves).
    static func dataLine(_ metric: GoldMetric, near values: [Double]) -> [(y: Double, label: String)] {
        let finite = values.filter(\.isFinite)
        guard let value = metric.dataValue, let lo = finite.min(), let hi = finite.max() else { return [] }
        let slack = max(0.5 * (hi - lo), 1e-9 * max(1, abs(hi)))
        return value >= lo - slack && value <= hi + slack ? [(value, "data")] : []
    }

    // MARK: 1. header

    /// The title, what the study is, the command, runtimes, settings, methods and data checks.
    static func header(settings: StudySettings, data: StudyData, totalSeconds: Double?, figures: inout FigureFolder) -> [String] {
        let seeds = settings.seeds.sorted().map(String.init).joined(separator: ", ")
        var out = [
            "# Over-optimization study: Flow-GRPO vs GRPO-Guard",
            "",
            "A small SD3-style transformer is pretrained on a toy latent world whose data distribution is known in closed form, "
                + "then fine-tuned with LoRA by \(data.methods.count) methods under the same budget against a proxy reward that can also be raised "
                + "by leaving the data manifold (the \"hack\" direction). Gold metrics computed from the true density, which the optimizer never sees, "
                + "show whether proxy gains are real. Seeds: \(seeds).",
            "",
            "Reproduce: `bash tools/study/run.sh` (settings: `tools/study/study.json`; this report: `flowguard-study summarize`).",
            "",
        ]
        if let totalSeconds {
            out.append("- Total runtime: \(sig3(totalSeconds / 60)) min (pretraining, all runs and this report).")
        } else {
            out.append("- Total runtime: not measured; this report was re-rendered from existing runs (`flowguard-study summarize`).")
        }
        if let p = data.pretrain {
            let last = p.curve.last.map { ", final loss \(sig3($0.loss)) at step \($0.step)" } ?? ""
            out.append("- Pretraining: \(sig3(p.seconds)) s on \(p.threads) thread(s)\(last).")
        } else {
            out.append("- Pretraining: time unknown (no pretrain.json).")
        }
        out += ["", "## Settings", "", "```json", settingsJSON(settings), "```", ""]
        out += methodTable(data, settings: settings)
        out += dataChecks(data)
        if let p = data.pretrain, p.curve.count >= 2 {
            let plot = ReportSVG.LinePlot(title: "Pretraining loss", xLabel: "pretraining step", yLabel: "flow-matching loss",
                                          series: [ReportSVG.Series(name: "base model", color: "#333333", points: p.curve.map { (Double($0.step), $0.loss) })])
            out += [figures.link("pretrain-loss", plot), ""]
        }
        return out
    }

    /// The settings as a JSON object, one compact line per section (keys sorted).
    static func settingsJSON(_ s: StudySettings) -> String {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        func compact<T: Encodable>(_ value: T) -> String {
            (try? encoder.encode(value)).map { String(decoding: $0, as: UTF8.self) } ?? "null"
        }
        let parts = [("world", compact(s.world)), ("model", compact(s.model)), ("pretrain", compact(s.pretrain)),
                     ("runs", compact(s.runs)), ("seeds", compact(s.seeds)), ("methods", compact(s.methods))]
        return "{\n" + parts.map { "  \"\($0.0)\": \($0.1)" }.joined(separator: ",\n") + "\n}"
    }

    /// One row per method: objective, clipped ratio, ε, reweighting, KL and the seeds used.
    static func methodTable(_ data: StudyData, settings: StudySettings) -> [String] {
        var out = ["| method | objective | clipped ratio | ε | reweighting | KL β | learning rate | seeds used |", "|---|---|---|---|---|---|---|---|"]
        for m in data.methods {
            var used = m.runs.map { String($0.seed) }.joined(separator: ", ")
            if !m.missing.isEmpty { used += " (missing: " + m.missing.map { "seed \($0.seed), \($0.reason)" }.joined(separator: "; ") + ")" }
            let objective = m.runs.first?.objective.rawValue ?? m.method.objective
            out.append("| \(m.method.label) | \(objective) | \(m.clippedSymbol) | \(sig3(m.clipRange)) | \(m.method.reweighting ? "1/dt" : "no") | "
                       + "\(m.method.kl ? sig3(settings.runs.klBeta) : "0") | \(sig3(settings.runs.learningRate * m.method.learningRateScale)) | \(used) |")
        }
        return out + [""]
    }

    /// The consistency checks of `StudyData.consistencyWarnings`, or a line saying all passed.
    static func dataChecks(_ data: StudyData) -> [String] {
        guard !data.warnings.isEmpty else {
            return ["Data checks: every run has the same base evaluation at step 0, r = 1 exactly on every on-policy update, "
                    + "the full number of steps and finite values.", ""]
        }
        return ["Data checks found:", ""] + data.warnings.map { "- " + $0 } + [""]
    }

    // MARK: 2. training curves

    /// Proxy, rollout reward and every gold metric over training steps, seed mean and band.
    static func trainingCurves(_ data: StudyData, band: BandKind, figures: inout FigureFolder) -> [String] {
        var out = ["## Training curves", "",
                   "Lines: mean over seeds; shaded: \(band.text). Evaluations use the same noise for every run (noise-free sampling); "
                       + "the rollout reward is the mean proxy reward of each step's training rollouts (SDE sampling). "
                       + "On true data excess NLL is 0 and off-manifold, diversity and class accuracy are 1 (a grey line when near the curves).", ""]
        let proxy = data.methods.map { m in (m, seedCurve(m.runs.map { $0.goldCurve(.proxy) })) }
        out.append(figures.link("proxy", seedPlot("Proxy reward (evaluation)", xLabel: "training step", yLabel: GoldMetric.proxy.label,
                                                   curves: proxy, band: band)))
        let rollout = data.methods.map { m in (m, seedCurve(m.runs.map(\.rolloutReward))) }
        out.append(figures.link("rollout-reward", seedPlot("Proxy reward of the training rollouts", xLabel: "training step",
                                                           yLabel: "mean rollout reward", curves: rollout, band: band)))
        for metric in GoldMetric.gold {
            let curves = data.methods.map { m in (m, seedCurve(m.runs.map { $0.goldCurve(metric) })) }
            let direction = metric.higherIsBetter ? "higher is better" : "lower is better"
            out.append(figures.link("gold-\(metric.key)", seedPlot("Gold: \(metric.label) (\(direction))", xLabel: "training step",
                                                                  yLabel: metric.label, curves: curves, band: band,
                                                                  referenceLines: dataLine(metric, near: curves.flatMap { $0.1.map(\.summary.mean) }))))
        }
        return out + [""]
    }

    // MARK: 3. gold vs proxy

    /// Gold metric against proxy reward along each method's evaluations (the "equal proxy" view).
    static func goldVersusProxy(_ data: StudyData, figures: inout FigureFolder) -> [String] {
        var out = ["## Gold vs proxy", "",
                   "Each curve follows one method's evaluations in step order (seed means): at equal proxy reward, the lower curve "
                       + "(higher for quality and diversity) paid less in gold.", ""]
        for metric in GoldMetric.equalProxy {
            let series = data.methods.map { m -> ReportSVG.Series in
                let proxy = seedCurve(m.runs.map { $0.goldCurve(.proxy) }), gold = seedCurve(m.runs.map { $0.goldCurve(metric) })
                let goldByStep = Dictionary(gold.map { ($0.x, $0.summary.mean) }, uniquingKeysWith: { a, _ in a })
                let points = proxy.compactMap { p in goldByStep[p.x].map { (x: p.summary.mean, y: $0) } }
                return ReportSVG.Series(name: m.method.label, color: color(m.method), points: points)
            }
            let plot = ReportSVG.LinePlot(title: "\(metric.label) vs proxy reward", xLabel: GoldMetric.proxy.label, yLabel: metric.label,
                                          series: series, referenceLines: dataLine(metric, near: series.flatMap { $0.points.map(\.y) }),
                                          subtitle: "each line: one method's evaluations in step order, mean over seeds")
            out.append(figures.link("proxy-vs-\(metric.key)", plot))
        }
        return out + [""]
    }

    // MARK: 4. ratio statistics

    /// Mean and std of r and r̂ per trained timestep over the off-policy updates.
    static func ratioPerTimestep(_ data: StudyData, band: BandKind, figures: inout FigureFolder) -> [String] {
        let clipsR = data.methods.filter { !$0.clipsNormalized }.map(\.method.label).joined(separator: ", ")
        let clipsRHat = data.methods.filter(\.clipsNormalized).map(\.method.label).joined(separator: ", ")
        var out = ["## Ratio statistics per timestep", "",
                   "Averaged over the off-policy updates (`update ≥ 1`: the first update of each rollout is on-policy, where r = 1 exactly) "
                       + "of all steps, then over seeds; shaded: \(band.text). The std is the spread over a minibatch's samples. "
                       + "Clipped ratio: r for \(clipsR.isEmpty ? "no method" : clipsR); r̂ for \(clipsRHat.isEmpty ? "no method" : clipsRHat).", ""]
        let kinds: [(name: String, title: String, value: (StepDiagnostics) -> Double, isMean: Bool)] = [
            ("ratio-mean-r", "Ratio mean per timestep: raw r", { $0.ratioMean }, true),
            ("ratio-mean-rhat", "Ratio mean per timestep: normalized r̂", { $0.normalizedRatioMean }, true),
            ("ratio-std-r", "Ratio spread (std) per timestep: raw r", { $0.ratioStd }, false),
            ("ratio-std-rhat", "Ratio spread (std) per timestep: normalized r̂", { $0.normalizedRatioStd }, false),
        ]
        for kind in kinds {
            let curves = data.methods.map { m in (m, m.perTimestep(kind.value).map { (x: Double($0.index), summary: $0.summary) }) }
            let plot = seedPlot(kind.title, xLabel: "timestep j (σ_j in the table below)", yLabel: kind.isMean ? "mean" : "std",
                                curves: curves, band: band, referenceLines: kind.isMean ? [(1, "1")] : [])
            out.append(figures.link(kind.name, plot))
        }
        out += ["", sigmaTable(data)]
        return out + [""]
    }

    /// One row of σ_j per trained timestep j (from the first run that logged it).
    static func sigmaTable(_ data: StudyData) -> String {
        let sigmas = data.methods.first.map { $0.perTimestep { $0.ratioMean }.map { ($0.index, $0.sigma) } } ?? []
        guard !sigmas.isEmpty else { return "(no off-policy updates logged)" }
        return "| j | " + sigmas.map { String($0.0) }.joined(separator: " | ") + " |\n|---|" + sigmas.map { _ in "---|" }.joined()
            + "\n| σ_j | " + sigmas.map { sig3($0.1) }.joined(separator: " | ") + " |"
    }

    /// The clipped ratio's mean and std per training step, in units of ε.
    static func clippedRatioOverTraining(_ data: StudyData, band: BandKind, figures: inout FigureFolder) -> [String] {
        var out = ["### Clipped ratio over training", "",
                   "The clipped ratio (r or r̂, per method) averaged over each step's off-policy updates and all timesteps, in units of "
                       + "the method's clip range ε (1 − ε and 1 + ε are at ∓1): a mean or spread beyond 1 means the clip acts.", ""]
        let mean = data.methods.map { m in
            (m, seedCurve(m.runs.map { r in r.perStep(m.clippedMean).map { (x: $0.x, y: ($0.y - 1) / r.clipRange) } }))
        }
        let std = data.methods.map { m in
            (m, seedCurve(m.runs.map { r in r.perStep(m.clippedStd).map { (x: $0.x, y: $0.y / r.clipRange) } }))
        }
        out.append(figures.link("clipped-ratio-mean-steps", seedPlot("Clipped ratio mean over training: (mean − 1)/ε", xLabel: "training step",
                                                                     yLabel: "(mean − 1)/ε", curves: mean, band: band,
                                                                     referenceLines: [(-1, "1−ε"), (0, "1"), (1, "1+ε")])))
        out.append(figures.link("clipped-ratio-std-steps", seedPlot("Clipped ratio spread over training: std/ε", xLabel: "training step",
                                                                    yLabel: "std/ε", curves: std, band: band, referenceLines: [(1, "ε")])))
        return out + [""]
    }

    // MARK: 5. clip fractions

    /// Signed clip fractions per timestep and over training.
    static func clipFractions(_ data: StudyData, figures: inout FigureFolder) -> [String] {
        var out = ["## Clip fractions", "",
                   "Solid: share of positive-advantage samples whose clipped ratio is above 1 + ε; dashed: share of negative-advantage "
                       + "samples below 1 − ε (the samples whose gradient the clip removes). Off-policy updates, seed means.", ""]
        func series(_ curve: (MethodRuns, (StepDiagnostics) -> Double) -> [(x: Double, y: Double)]) -> [ReportSVG.Series] {
            data.methods.flatMap { m in [
                ReportSVG.Series(name: m.method.label, color: color(m.method), points: curve(m, { $0.clipFractionPositive })),
                ReportSVG.Series(name: m.method.label + " A<0", color: color(m.method), points: curve(m, { $0.clipFractionNegative }), dashed: true,
                                 inLegend: false),
            ] }
        }
        let perTimestep = series { m, value in m.perTimestep(value).map { (Double($0.index), $0.summary.mean) } }
        let perStep = series { m, value in seedCurve(m.runs.map { $0.perStep(value) }).map { ($0.x, $0.summary.mean) } }
        let key = "solid: A > 0 samples above 1 + ε; dashed: A < 0 samples below 1 − ε; off-policy updates, mean over seeds"
        out.append(figures.link("clip-fraction-timestep", ReportSVG.LinePlot(
            title: "Clip fractions per timestep", xLabel: "timestep j (σ_j in the table above)", yLabel: "fraction clipped",
            series: perTimestep, subtitle: key, integerX: true)))
        out.append(figures.link("clip-fraction-steps", ReportSVG.LinePlot(
            title: "Clip fractions over training (mean over timesteps)", xLabel: "training step", yLabel: "fraction clipped",
            series: perStep, subtitle: key, integerX: true)))
        return out + [""]
    }

    // MARK: 6. tables

    /// The columns of the end-of-training table.
    static let tableMetrics: [GoldMetric] = [.proxy] + GoldMetric.gold

    /// A markdown table header: `leading` columns, then one per metric with its better direction.
    static func tableHeader(_ leading: [String], metrics: [GoldMetric] = tableMetrics) -> [String] {
        let names = metrics.map { "\($0.label) \($0.higherIsBetter ? "↑" : "↓")" }
        let columns = leading + names
        return ["| " + columns.joined(separator: " | ") + " |", "|" + columns.map { _ in "---|" }.joined()]
    }

    /// Proxy and gold metrics at each run's last evaluation, mean ± std over seeds.
    static func endOfTraining(_ data: StudyData) -> [String] {
        var out = ["## End of training", "",
                   "At each run's last evaluation: mean ± std over seeds (n = seeds). The base model is the step-0 evaluation.", ""]
        out += tableHeader(["method", "n", "step"])
        if let base = data.methods.first?.runs.first?.evaluations.first {
            out.append("| base model | – | \(base.step) | " + tableMetrics.map { sig3(base[$0]) }.joined(separator: " | ") + " |")
        }
        for m in data.methods {
            let steps = Set(m.runs.map(\.lastStep)).sorted().map(String.init).joined(separator: "/")
            let cells = tableMetrics.map { metric in m.summary { $0.evaluations.last?[metric] ?? .nan }?.text ?? "n/a" }
            out.append("| \(m.method.label) | \(m.runs.count) | \(steps) | " + cells.joined(separator: " | ") + " |")
        }
        return out + [""]
    }

    /// Gold metrics interpolated at the first crossing of each common proxy level.
    static func equalProxyTables(_ data: StudyData, levels: [ProxyLevel]) -> [String] {
        var out = ["## Gold at equal proxy", ""]
        guard !levels.isEmpty else {
            return out + ["Not computed: some method's final proxy reward is not above the base model's, so no common level exists.", ""]
        }
        out += ["Proxy levels at 25/50/75/100 % of the way from the base model's proxy to the smallest final (seed-mean) proxy over "
                + "methods. Each run's gold metrics are interpolated linearly along its evaluation curve at the first crossing of the level; "
                + "mean ± std over the seeds that reach it (n).", ""]
        for level in levels {
            out += ["**\(sig3(100 * level.fraction)) %: proxy = \(sig3(level.proxy))**", ""]
            out += tableHeader(["method", "n", "step"], metrics: GoldMetric.gold)
            for m in data.methods {
                let crossings = m.runs.compactMap { $0.firstCrossing(level.proxy) }
                let step = SeedSummary(crossings.map(\.step))?.mean
                let cells = GoldMetric.gold.map { metric in SeedSummary(crossings.map { $0.values[metric] ?? .nan })?.text ?? "not reached" }
                out.append("| \(m.method.label) | \(crossings.count)/\(m.runs.count) | \(step.map(sig3) ?? "–") | " + cells.joined(separator: " | ") + " |")
            }
            out.append("")
        }
        return out
    }

    // MARK: 7. interpretation

    /// tools/study/findings.md verbatim under "Interpretation" (nothing when it is absent).
    static func interpretation() -> [String] {
        guard let text = try? String(contentsOfFile: interpretationPath, encoding: .utf8) else {
            progress("report: \(interpretationPath) not found; no Interpretation section")
            return []
        }
        return ["## Interpretation", "", text.trimmingCharacters(in: .newlines), ""]
    }
}

/// The folder of the report's SVG figures: beside the report and named after it without its
/// extension (docs/study.md → docs/study/), linked relatively from the report.
struct FigureFolder {
    /// Where the SVG files go.
    let directory: String
    /// The folder's name as the report links it.
    let relative: String
    /// Figures written so far.
    private(set) var count = 0

    /// Creates the folder for the report at `report`.
    init(report: String) throws {
        let url = URL(fileURLWithPath: report)
        var folder = url.deletingPathExtension()
        if folder.path == url.path { folder = url.deletingLastPathComponent().appendingPathComponent(url.lastPathComponent + "-figures") }
        directory = folder.path
        relative = folder.lastPathComponent
        do { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) } catch {
            throw StudyReportError.write(path: directory, reason: error.localizedDescription)
        }
    }

    /// Writes `plot` as `name.svg` and returns the markdown image linking it. A failed write
    /// becomes a line in the report and a message, so one bad figure does not lose the rest.
    mutating func link(_ name: String, _ plot: ReportSVG.LinePlot) -> String {
        let path = directory + "/" + name + ".svg"
        do { try writeAtomically(ReportSVG.render(plot), to: path) } catch {
            progress("report: \(error)")
            return "(figure \(name).svg could not be written: \(error))"
        }
        count += 1
        return "![\(plot.title)](\(relative)/\(name).svg)"
    }
}

/// Writes `text` to a temporary file beside `path` and renames it over `path`.
func writeAtomically(_ text: String, to path: String) throws {
    let temporary = path + ".tmp-\(ProcessInfo.processInfo.processIdentifier)"
    do {
        try Data(text.utf8).write(to: URL(fileURLWithPath: temporary))
    } catch {
        throw StudyReportError.write(path: path, reason: error.localizedDescription)
    }
    guard rename(temporary, path) == 0 else {
        let reason = String(cString: strerror(errno))
        try? FileManager.default.removeItem(atPath: temporary)
        throw StudyReportError.write(path: path, reason: reason)
    }
}

/// The "Findings" section: plain sentences whose every number and verdict is computed from the runs.
struct Findings {
    let data: StudyData
    let levels: [ProxyLevel]

    /// The section's lines.
    var section: [String] {
        var out = ["## Findings", "", "### Ratios under Flow-GRPO clipping (r)", ""]
        let raw = data.methods.filter { !$0.clipsNormalized }
        out += raw.isEmpty ? ["No method clips the raw ratio r."] : raw.map { "- " + rawRatio($0) }
        out += ["", "### Ratios under GRPO-Guard clipping (r̂)", ""]
        let normalized = data.methods.filter(\.clipsNormalized)
        out += normalized.isEmpty ? ["No method clips r̂."] : normalized.map { "- " + normalizedRatio($0) }
        out += ["", "### GRPO-Guard vs Flow-GRPO at equal proxy", ""]
        out += equalProxy
        return out + [""]
    }

    /// The runs of the method named `name`, if selected.
    func method(_ name: String) -> MethodRuns? { data.methods.first { $0.method.name == name } }

    /// The std of r at the highest- and lowest-noise trained timesteps (largest and smallest σ).
    static func noiseEnds(_ curve: [(index: Int, sigma: Double, summary: SeedSummary)])
        -> (high: (index: Int, sigma: Double, summary: SeedSummary), low: (index: Int, sigma: Double, summary: SeedSummary))? {
        guard let high = curve.max(by: { $0.sigma < $1.sigma }), let low = curve.min(by: { $0.sigma < $1.sigma }), high.index != low.index else { return nil }
        return (high, low)
    }

    /// "N off-policy updates over S seeds".
    func updatesText(_ m: MethodRuns) -> String {
        let updates = m.runs.reduce(0) { $0 + $1.offPolicy.count }
        return "\(updates) off-policy updates over \(m.runs.count) seed\(m.runs.count == 1 ? "" : "s")"
    }

    /// Mean r (below 1 or not), its spread at the two noise ends, and the signed clip fractions.
    func rawRatio(_ m: MethodRuns) -> String {
        var text = "**\(m.method.label)** (\(updatesText(m)), ε = \(sig3(m.clipRange))): "
        guard let mean = m.summary({ $0.overall { $0.ratioMean } }) else { return text + "no off-policy updates logged." }
        let cells = m.runs.flatMap { $0.offPolicy.flatMap { $0.timesteps.map(\.diagnostics.ratioMean) } }.filter(\.isFinite)
        let belowCells = Double(cells.filter { $0 < 1 }.count) / Double(max(1, cells.count))
        let belowSeeds = m.runs.filter { $0.overall { $0.ratioMean } < 1 }.count
        text += "mean r = \(ratioText(mean.mean)) — \(mean.mean < 1 ? "below 1" : "not below 1") "
            + "(below 1 in \(belowSeeds) of \(m.runs.count) seeds and in \(percentText(belowCells)) of the update × timestep means). "
        if let ends = Findings.noiseEnds(m.perTimestep { $0.ratioStd }) {
            let factor = ends.low.summary.mean / ends.high.summary.mean
            text += "The std of r is \(sig3(ends.high.summary.mean)) at the highest-noise trained timestep (j = \(ends.high.index), σ = \(sig3(ends.high.sigma))) "
                + "and \(sig3(ends.low.summary.mean)) at the lowest-noise one (j = \(ends.low.index), σ = \(sig3(ends.low.sigma))), "
                + "\(sig3(factor))× — it \(factor > 1 ? "grows" : "does not grow") toward low noise. "
        }
        text += clipText(m)
        return text
    }

    /// The signed clip fractions of a method, as a sentence.
    func clipText(_ m: MethodRuns) -> String {
        let positive = m.summary { $0.overall { $0.clipFractionPositive } }?.mean ?? .nan
        let negative = m.summary { $0.overall { $0.clipFractionNegative } }?.mean ?? .nan
        return "Clipped: \(percentText(positive)) of positive-advantage samples above 1 + ε, "
            + "\(percentText(negative)) of negative-advantage samples below 1 − ε."
    }

    /// Mean r̂ and the spread of its std across timesteps (max/min), next to Flow-GRPO's r.
    func normalizedRatio(_ m: MethodRuns) -> String {
        var text = "**\(m.method.label)** (\(updatesText(m)), ε = \(sig3(m.clipRange))): "
        guard let mean = m.summary({ $0.overall { $0.normalizedRatioMean } }) else { return text + "no off-policy updates logged." }
        text += "mean r̂ = \(ratioText(mean.mean)). "
        let stds = m.perTimestep { $0.normalizedRatioStd }.map(\.summary.mean).filter { $0.isFinite && $0 > 0 }
        if let lo = stds.min(), let hi = stds.max() {
            text += "The std of r̂ ranges from \(sig3(lo)) to \(sig3(hi)) across timesteps (max/min = \(sig3(hi / lo))"
            let flow = method("flow-grpo").flatMap { f -> Double? in
                let r = f.perTimestep { $0.ratioStd }.map(\.summary.mean).filter { $0.isFinite && $0 > 0 }
                guard let a = r.min(), let b = r.max() else { return nil }
                return b / a
            }
            text += flow.map { "; for Flow-GRPO's r it is \(sig3($0))). " } ?? "). "
        }
        return text + clipText(m)
    }

    /// How GRPO-Guard's gold metrics compare with Flow-GRPO's at a level.
    enum Verdict {
        case better, worse, noClearDifference
        case undetermined(String)
    }

    /// GRPO-Guard (`g`) against Flow-GRPO (`f`): a verdict only when both intervals exist and are disjoint.
    static func compare(_ g: SeedSummary?, _ f: SeedSummary?, higherIsBetter: Bool) -> Verdict {
        guard let g, let f else { return .undetermined("not reached by both") }
        guard let a = g.interval, let b = f.interval else { return .undetermined("one seed, no spread") }
        if a.lower <= b.upper && b.lower <= a.upper { return .noClearDifference }
        return (g.mean > f.mean) == higherIsBetter ? .better : .worse
    }

    /// One sentence per metric at the highest level, with a count over all levels.
    var equalProxy: [String] {
        guard let guardRuns = method("grpo-guard"), let flow = method("flow-grpo") else {
            return ["Not computed: it needs both the grpo-guard and the flow-grpo runs."]
        }
        guard let top = levels.last else { return ["Not computed: no proxy level was reached by every method (see above)."] }
        var out = ["Compared at the highest common level (proxy = \(sig3(top.proxy))) and counted over all \(levels.count) levels. "
                   + "Values: mean ± std over the seeds that reach the level (n); the intervals compared are mean ± std for n ≥ 3, min–max for n = 2 "
                   + "and none for n = 1; \"no clear difference\" when they overlap.", ""]
        var atTop: [String] = []
        for metric in GoldMetric.equalProxy {
            func at(_ m: MethodRuns, _ level: ProxyLevel) -> SeedSummary? {
                SeedSummary(m.runs.compactMap { $0.firstCrossing(level.proxy)?.values[metric] })
            }
            let verdicts = levels.map { Findings.compare(at(guardRuns, $0), at(flow, $0), higherIsBetter: metric.higherIsBetter) }
            let g = at(guardRuns, top), f = at(flow, top)
            let verdict = verdicts.last ?? .undetermined("no level")
            atTop.append(Findings.label(verdict))
            var line = "- \(metric.label) (\(metric.higherIsBetter ? "higher" : "lower") is better): GRPO-Guard \(g?.text ?? "not reached")"
                + " (n = \(g?.count ?? 0)), Flow-GRPO \(f?.text ?? "not reached") (n = \(f?.count ?? 0)) → \(Findings.sentence(verdict))"
            if case let .undetermined(reason) = verdict {
                line += " (\(reason)"
                if let g, let f { line += (g.mean > f.mean) == metric.higherIsBetter ? "; GRPO-Guard's mean is better" : "; GRPO-Guard's mean is not better" }
                line += ")"
            }
            let counts = Findings.labels.compactMap { key -> String? in
                let n = verdicts.filter { Findings.label($0) == key }.count
                return n > 0 ? "\(key) at \(n)" : nil
            }
            out.append(line + ". Over the levels: " + counts.joined(separator: ", ") + ".")
        }
        let summary = Findings.labels.compactMap { key -> String? in
            let n = atTop.filter { $0 == key }.count
            return n > 0 ? "\(key): \(n)" : nil
        }
        out += ["", "Summary at the highest level, over \(atTop.count) gold metrics — " + summary.joined(separator: "; ") + "."]
        return out
    }

    /// The verdict labels in the order they are counted.
    static let labels = ["GRPO-Guard better", "no clear difference", "GRPO-Guard worse", "no conclusion"]

    /// The verdict as written after the arrow.
    static func sentence(_ v: Verdict) -> String {
        switch v {
        case .better: return "GRPO-Guard better (intervals disjoint)"
        case .worse: return "GRPO-Guard worse (intervals disjoint)"
        case .noClearDifference: return "no clear difference"
        case .undetermined: return "no conclusion"
        }
    }

    /// The verdict's counting label (one of `labels`).
    static func label(_ v: Verdict) -> String {
        switch v {
        case .better: return "GRPO-Guard better"
        case .worse: return "GRPO-Guard worse"
        case .noClearDifference: return "no clear difference"
        case .undetermined: return "no conclusion"
        }
    }
}

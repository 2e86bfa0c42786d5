import Foundation
import GRPOGuard
import SafeTensors

extension RunReport {
    /// The report as one self-contained HTML page: inline CSS and inline SVG, no scripts, no
    /// external resources. Every text taken from the run is escaped.
    public func html() -> String {
        let e = ReportSVG.escape
        var page = """
        <!DOCTYPE html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <title>FlowGuard run report: \(e(run))</title>
        <style>
        body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1400px; padding: 0 16px; color: #222; }
        h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ddd; }
        .sub { color: #666; margin-top: 0; } .note { color: #555; max-width: 1000px; }
        table { border-collapse: collapse; font-size: 13px; } td, th { padding: 2px 10px 2px 0; text-align: left; vertical-align: top; }
        th { color: #555; font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
        code, .mono { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12px; }
        .config { columns: 3 320px; } .config div { break-inside: avoid; font-size: 12px; }
        .config .k { color: #555; } .grid { display: flex; flex-wrap: wrap; gap: 18px; }
        .empty-run { padding: 24px; background: #f6f6f6; border: 1px dashed #bbb; font-size: 16px; }
        .warn { color: #8a4b00; }
        svg { background: #fff; max-width: 100%; height: auto; }
        </style>
        </head>
        <body>
        <h1>FlowGuard run report</h1>
        <p class="sub mono">\(e(run))</p>

        """
        page += overview()
        if records.isEmpty {
            page += "<h2>Diagnostics</h2>\n<p class=\"empty-run\">Nothing to show yet: <code>\(e(diagnosticsPath))</code> "
                + (FileManager.default.fileExists(atPath: diagnosticsPath) ? "holds no records" : "does not exist")
                + ". The plots appear after the first optimizer step.</p>\n"
        } else {
            page += plots()
        }
        page += checkpointsSection()
        page += promptsSection()
        page += configSection()
        page += "</body>\n</html>\n"
        return page
    }

    /// A number for tables.
    private func format(_ x: Double, _ spec: String = "%.6g") -> String { x.isFinite ? String(format: spec, x) : "—" }

    /// The summary table at the top.
    private func overview() -> String {
        let e = ReportSVG.escape
        var rows: [(String, String)] = []
        let steps = rollouts
        let planned = configText("steps")
        rows.append(("training steps", "\(steps.count)" + (planned.map { " of \($0)" } ?? "")))
        rows.append(("optimizer steps", "\(records.map(\.optimizerStep).max() ?? 0)"))
        if let o = configText("objective") {
            let clip = configText("clip_range").flatMap { $0 == "null" ? nil : $0 }
            rows.append(("objective", o + (clip.map { ", ε = \($0)" } ?? "")))
        }
        if let g = configText("group_size"), let p = configText("prompts_per_step"), let t = configText("sampling_steps") {
            rows.append(("rollout", "\(p) prompt(s) × G = \(g) samples × T = \(t) steps"))
        }
        if let first = steps.first, let last = steps.last {
            rows.append(("reward mean (first → last)", "\(format(first.rewardMean)) → \(format(last.rewardMean)) ± \(format(last.rewardStd))"))
            let best = steps.filter { $0.rewardMean.isFinite }.max { $0.rewardMean < $1.rewardMean }
            if let best { rows.append(("best reward mean", "\(format(best.rewardMean)) at step \(best.step)")) }
            let seconds = steps.map(\.seconds).filter(\.isFinite)
            if !seconds.isEmpty {
                rows.append(("time", String(format: "%.1f s in all, %.2f s per step (mean)", seconds.reduce(0, +), seconds.reduce(0, +) / Double(seconds.count))))
            }
        }
        rows.append(("checkpoints", checkpoints.isEmpty ? "none" : "\(checkpoints.count), newest step \(checkpoints.last!.step)"))
        rows.append(("exports", exports.isEmpty ? "none yet (written when the run finishes)" : exports.map(\.kind).joined(separator: ", ")))
        var html = "<h2>Overview</h2>\n<table>\n"
        for (k, v) in rows { html += "<tr><th>\(e(k))</th><td>\(e(v))</td></tr>\n" }
        html += "</table>\n"
        if skippedIncompleteLine {
            html += "<p class=\"warn\">The diagnostics file ends in an incomplete line (the run may be writing it); it was left out.</p>\n"
        }
        return html
    }

    /// The checkpoints and exports tables.
    private func checkpointsSection() -> String {
        let e = ReportSVG.escape
        var html = "<h2>Checkpoints</h2>\n"
        if checkpoints.isEmpty {
            html += "<p>None yet.</p>\n"
        } else {
            html += "<table>\n<tr><th>step</th><th>folder</th><th>adapter archive</th><th>diagnostics bytes</th></tr>\n"
            for c in checkpoints {
                let archive = RunReport.size(of: c.path + "/adapter.fgdelta")
                html += "<tr><td class=\"num\">\(c.step)</td><td class=\"mono\">\(e(c.path))</td>"
                html += "<td class=\"mono\">\(archive) B" + (c.reference.map { ", XOR delta of " + e($0) } ?? ", self-contained") + "</td>"
                html += "<td class=\"num\">\(c.diagnosticsBytes)</td></tr>\n"
            }
            html += "</table>\n"
        }
        html += "<h2>Exports</h2>\n"
        if exports.isEmpty {
            html += "<p>None yet: <code>\(e(run))/final/</code> is written when the run finishes.</p>\n"
        } else {
            html += "<table>\n<tr><th>form</th><th>path</th><th>bytes</th></tr>\n"
            for x in exports {
                html += "<tr><td>\(e(x.kind))</td><td class=\"mono\">\(e(x.path))</td><td class=\"num\">\(x.bytes)</td></tr>\n"
            }
            html += "</table>\n"
        }
        return html
    }

    /// The prompts the run trains on (the first 100).
    private func promptsSection() -> String {
        let e = ReportSVG.escape
        guard let prompts else { return "" }
        var html = "<h2>Prompts</h2>\n<p>\(prompts.count) prompt\(prompts.count == 1 ? "" : "s")"
            + (prompts.count > 100 ? ", the first 100:" : ":") + "</p>\n<ol class=\"prompts\">\n"
        for p in prompts.prefix(100) { html += "<li>\(e(p))</li>\n" }
        return html + "</ol>\n"
    }

    /// The config as key = value pairs.
    private func configSection() -> String {
        let e = ReportSVG.escape
        guard let config else { return "<h2>Config</h2>\n<p>No <code>config.json</code> in the run folder.</p>\n" }
        var html = "<h2>Config</h2>\n<p class=\"sub mono\">\(e(run))/config.json</p>\n<div class=\"config\">\n"
        for (key, value) in config {
            let text = value.stringValue ?? value.compactText
            html += "<div><span class=\"k\">\(e(key))</span> = <span class=\"mono\">\(e(text))</span></div>\n"
        }
        return html + "</div>\n"
    }

    /// The trained timesteps seen in the records: index and σ, ordered by index.
    private var timestepColumns: [(index: Int, sigma: Double)] {
        var seen: [Int: Double] = [:]
        for r in records { for t in r.timesteps where seen[t.index] == nil { seen[t.index] = t.sigma } }
        return seen.keys.sorted().map { ($0, seen[$0]!) }
    }

    /// One series per timestep of a per-timestep value against the optimizer step.
    private func perTimestep(_ value: (TimestepRecord) -> Double) -> [ReportSVG.Series] {
        let columns = timestepColumns
        return columns.enumerated().map { k, column in
            let points = records.map { r -> (x: Double, y: Double) in
                let t = r.timesteps.first { $0.index == column.index }
                return (Double(r.optimizerStep), t.map(value) ?? .nan)
            }
            return ReportSVG.Series(name: "j=\(column.index) σ=\(String(format: "%.3f", column.sigma))",
                                    color: ReportSVG.rampColor(k, of: columns.count), points: points)
        }
    }

    /// A heatmap of a per-timestep value (rows: timesteps; columns: optimizer steps).
    private func heatmap(_ title: String, _ value: (TimestepRecord) -> Double) -> ReportSVG.Heatmap {
        let columns = timestepColumns
        let values = columns.map { column in
            records.map { r in r.timesteps.first { $0.index == column.index }.map(value) ?? .nan }
        }
        return ReportSVG.Heatmap(title: title, xLabel: "optimizer step",
                                 rows: columns.map { "j=\($0.index) σ=\(String(format: "%.3f", $0.sigma))" },
                                 columns: records.map { Double($0.optimizerStep) }, values: values, center: 1)
    }

    /// The diagnostics plots.
    private func plots() -> String {
        rewardPlots() + ratioPlots() + clippingPlots() + gradientPlots()
    }

    /// A line through one value of every record, against the optimizer step.
    private func overall(_ name: String, _ color: String, dashed: Bool = false, _ value: (UpdateRecord) -> Double) -> ReportSVG.Series {
        let x = records.map { Double($0.optimizerStep) }
        return ReportSVG.Series(name: name, color: color, points: zip(x, records.map(value)).map { ($0, $1) }, dashed: dashed)
    }

    /// The reward of each training step, mean ± std.
    private func rewardPlots() -> String {
        var html = "<h2>Reward</h2>\n"
        let steps = rollouts
        html += ReportSVG.render(ReportSVG.LinePlot(
            title: "Reward mean ± std per training step", xLabel: "training step", yLabel: "reward",
            series: [ReportSVG.Series(name: "mean", color: "#1f5fa8", points: steps.map { (Double($0.step), $0.rewardMean) })],
            bands: [ReportSVG.Band(name: "± std", color: "#1f5fa8", points: steps.map { (Double($0.step), $0.rewardMean - $0.rewardStd, $0.rewardMean + $0.rewardStd) })]))
        return html
    }

    /// The raw and normalized ratios per timestep, and their shift from 1 as heatmaps.
    private func ratioPlots() -> String {
        var html = "<h2>Importance ratios per timestep</h2>\n"
        html += "<p class=\"note\">Raw ratio r = exp(log p<sub>θ</sub> − log p<sub>old</sub>) and GRPO-Guard's normalized ratio r̂ (RatioNorm), one line per trained timestep j (σ from 1 = noise towards 0). "
            + "Under vanilla Flow-GRPO the mean of r sits below 1 (log r carries −‖Δμ‖²/2s²) and its spread grows as σ → 0; RatioNorm re-centres r̂ on 1 with a comparable spread at every step. "
            + "The heatmaps show the shift from 1 directly: blue cells lie below 1, red above.</p>\n"
        let reference: [(y: Double, label: String)] = [(1, "1")]
        html += "<div class=\"grid\">\n"
        html += ReportSVG.render(ReportSVG.LinePlot(title: "mean of r (raw ratio)", xLabel: "optimizer step", yLabel: "mean r",
                                                    series: perTimestep { $0.diagnostics.ratioMean }, referenceLines: reference))
        html += ReportSVG.render(ReportSVG.LinePlot(title: "std of r (raw ratio)", xLabel: "optimizer step", yLabel: "std r",
                                                    series: perTimestep { $0.diagnostics.ratioStd }))
        html += ReportSVG.render(ReportSVG.LinePlot(title: "mean of r̂ (normalized ratio)", xLabel: "optimizer step", yLabel: "mean r̂",
                                                    series: perTimestep { $0.diagnostics.normalizedRatioMean }, referenceLines: reference))
        html += ReportSVG.render(ReportSVG.LinePlot(title: "std of r̂ (normalized ratio)", xLabel: "optimizer step", yLabel: "std r̂",
                                                    series: perTimestep { $0.diagnostics.normalizedRatioStd }))
        html += ReportSVG.render(heatmap("mean r − 1 per timestep (blue: below 1)") { $0.diagnostics.ratioMean })
        html += ReportSVG.render(heatmap("mean r̂ − 1 per timestep (blue: below 1)") { $0.diagnostics.normalizedRatioMean })
        html += "</div>\n"
        return html
    }

    /// Clip fractions (overall, by advantage sign, per timestep) and approx KL.
    private func clippingPlots() -> String {
        let epsilon = configText("clip_range").flatMap(Double.init)
            ?? (configText("objective") == ObjectiveKind.flowGRPO.rawValue ? 1e-4 : configText("objective") == nil ? nil : 2e-6)
        let guardObjective = configText("objective").map { $0 == ObjectiveKind.grpoGuard.rawValue } ?? true
        let clipped = guardObjective ? "r̂" : "r"
        var html = "<h2>Clipping and KL</h2>\n"
        html += "<p class=\"note\">Fractions of samples whose clipped ratio (\(clipped)) lies above 1 + ε and below 1 − ε"
            + (epsilon.map { " (ε = \(String(format: "%g", $0)))" } ?? "") + ", averaged over the trained timesteps. "
            + "By advantage sign: among the samples with A &gt; 0, the fraction above 1 + ε, and among those with A &lt; 0, "
            + "the fraction below 1 − ε — the samples whose gradient the clip removes (a timestep's minibatch without "
            + "samples of that sign counts 0). Under vanilla Flow-GRPO the ratio's mean sits below 1, so the positive-advantage "
            + "fraction stays near 0 while the negative one does not; RatioNorm re-centres r̂ on 1, so under GRPO-Guard both can clip. "
            + "approx KL = ½·mean((log p<sub>θ</sub> − log p<sub>old</sub>)²).</p>\n"
        if recordsWithoutSignedClipFractions > 0 {
            html += "<p class=\"warn\">\(recordsWithoutSignedClipFractions) of \(records.count) record(s) were written without "
                + "<code>clip_fraction_positive</code>/<code>clip_fraction_negative</code> (an older trainer); "
                + "the clip fractions by advantage sign show 0 there.</p>\n"
        }
        html += "<div class=\"grid\">\n"
        html += ReportSVG.render(ReportSVG.LinePlot(
            title: "clip fractions", xLabel: "optimizer step", yLabel: "fraction of samples",
            series: [overall("above 1 + ε", "#b2182b") { $0.mean(\.clipFractionAbove) },
                     overall("below 1 − ε", "#2166ac") { $0.mean(\.clipFractionBelow) }]))
        html += ReportSVG.render(ReportSVG.LinePlot(
            title: "clip fractions by advantage sign", xLabel: "optimizer step", yLabel: "fraction of samples of that sign",
            series: [overall("A > 0, above 1 + ε", "#b2182b") { $0.mean(\.clipFractionPositive) },
                     overall("A < 0, below 1 − ε", "#2166ac") { $0.mean(\.clipFractionNegative) }]))
        let perTimestepClipPlots: [(title: String, yLabel: String, value: KeyPath<StepDiagnostics, Double>)] = [
            ("clip fraction above 1 + ε per timestep", "fraction", \.clipFractionAbove),
            ("clip fraction below 1 − ε per timestep", "fraction", \.clipFractionBelow),
            ("clip fraction of A > 0 samples above 1 + ε per timestep", "fraction of A > 0", \.clipFractionPositive),
            ("clip fraction of A < 0 samples below 1 − ε per timestep", "fraction of A < 0", \.clipFractionNegative),
        ]
        for plot in perTimestepClipPlots {
            html += ReportSVG.render(ReportSVG.LinePlot(title: plot.title, xLabel: "optimizer step", yLabel: plot.yLabel,
                                                        series: perTimestep { $0.diagnostics[keyPath: plot.value] }))
        }
        html += ReportSVG.render(ReportSVG.LinePlot(
            title: "approx KL", xLabel: "optimizer step", yLabel: "approx KL",
            series: [overall("mean over timesteps", "#333333") { $0.mean(\.approximateKL) }]))
        html += "</div>\n"
        return html
    }

    /// Gradient norms and losses.
    private func gradientPlots() -> String {
        var html = "<h2>Gradients and loss</h2>\n<div class=\"grid\">\n"
        html += ReportSVG.render(ReportSVG.LinePlot(
            title: "gradient norm per timestep (before clipping)", xLabel: "optimizer step", yLabel: "‖g‖",
            series: perTimestep(\.gradientNorm) + [overall("global (all timesteps)", "#000000", dashed: true) { $0.gradientNorm }]))
        html += ReportSVG.render(ReportSVG.LinePlot(
            title: "loss", xLabel: "optimizer step", yLabel: "loss",
            series: [overall("loss (mean over timesteps)", "#6a3d9a") { $0.loss }]))
        html += ReportSVG.render(ReportSVG.LinePlot(
            title: "loss per timestep (reweighted)", xLabel: "optimizer step", yLabel: "loss",
            series: perTimestep(\.loss)))
        html += "</div>\n"
        return html
    }
}

import Foundation
import GRPOGuard
import JSON
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
        .config { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); gap: 2px 24px; font-size: 12px; }
        .config div { overflow-wrap: anywhere; min-width: 0; } .config .k { color: #555; } .config .d { color: #777; }
        .grid { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
        table.evaluation { margin: 8px 0; }
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
    func format(_ x: Double, _ spec: String = "%.6g") -> String { x.isFinite ? String(format: spec, x) : "—" }

    /// The summary table at the top.
    private func overview() -> String {
        let e = ReportSVG.escape
        var rows: [(String, String)] = []
        let steps = rollouts
        let planned = configText("steps")
        rows.append(("training steps", "\(steps.count)" + (planned.map { " of \($0)" } ?? "")))
        rows.append(("optimizer steps", "\(records.map(\.optimizerStep).max() ?? 0)"))
        if let o = configText("objective") {
            rows.append(("objective", o + ", ε = \(String(format: "%g", clipRangeInForce)) on \(objective == .grpoGuard ? "r̂" : "r")"))
        }
        if let u = configText("updates_per_rollout") {
            rows.append(("updates per rollout", u + (u == "1" ? " (all on-policy)" : " (the first on-policy, the rest off-policy)")))
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
        if let ev = evaluation {
            rows.append(("noise-free evaluation", "base \(format(ev.base)) → adapted \(format(ev.adapted)) (\(format(ev.adapted - ev.base, "%+.4g")))"))
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
        if let adapters = baseAdapters, !adapters.isEmpty {
            html += "<p>Trained on top of base adapters (" + adapters.map { "<code>\(e($0))</code>" }.joined(separator: ", ")
                + "): the trained LoRA is a delta on top of the base with them applied, and the exports do not contain them.</p>\n"
        }
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

    /// The config as key = value pairs, each value the one in force: a `null` or `0` that means
    /// "the default" shows the default it resolved to.
    private func configSection() -> String {
        let e = ReportSVG.escape
        guard let config else { return "<h2>Config</h2>\n<p>No <code>config.json</code> in the run folder.</p>\n" }
        var html = "<h2>Config</h2>\n<p class=\"sub\">In force for this run (<code>\(e(run))/config.json</code>; "
            + "grey: where a default was resolved).</p>\n<div class=\"config\">\n"
        for (key, value) in config {
            let (text, note) = effectiveValue(key: key, value: value)
            html += "<div><span class=\"k\">\(e(key))</span> = <span class=\"mono\">\(e(text))</span>"
                + (note.map { " <span class=\"d\">(\(e($0)))</span>" } ?? "") + "</div>\n"
        }
        return html + "</div>\n"
    }

    /// `base_adapters` of the config, each as "PATH at SCALE (HASH)" (nil without the key).
    var baseAdapters: [String]? {
        guard let items = config?.last(where: { $0.key == "base_adapters" })?.value.arrayValue else { return nil }
        return items.map { item in
            let path = item["path"]?.stringValue ?? item.compactText
            let scale = item["scale"]?.doubleValue.map { String(format: "%g", $0) } ?? "1"
            return "\(path) at \(scale)" + (item["content_hash"]?.stringValue.map { " (\($0))" } ?? "")
        }
    }

    /// A config value as it acted, and a note when a default stood in for it.
    func effectiveValue(key: String, value: JSONValue) -> (text: String, note: String?) {
        let text = value.stringValue ?? value.compactText
        switch key {
        case "clip_range" where value == .null:
            return (String(format: "%g", clipRangeInForce), "default for \(objective.rawValue)")
        case "learning_rate" where value == .null:
            if let lr = records.first?.learningRate, lr.isFinite { return (String(format: "%g", lr), "default for the model family") }
            return ("1e-4 (SD3) or 2e-4 (FLUX)", "default for the model family")
        case "batch_size" where value.nonNegativeInt == 0:
            if let p = configText("prompts_per_step").flatMap(Int.init), let g = configText("group_size").flatMap(Int.init) {
                return ("\(p * g)", "0: the whole rollout at once")
            }
            return ("whole rollout", nil)
        case "model_config" where value == .null:
            return ("none", nil)
        case "timestep_fraction":
            guard let f = value.doubleValue, let t = configText("sampling_steps").flatMap(Int.init) else { return (text, nil) }
            return (text, "trains \(min(t, max(1, Int(Double(t) * f)))) of \(t) steps")
        case "lora_targets":
            return ((value.arrayValue ?? []).compactMap(\.stringValue).joined(separator: ", "), nil)
        case "base_adapters":
            guard let adapters = baseAdapters, !adapters.isEmpty else { return ("none", nil) }
            return (adapters.joined(separator: "; "), "applied to the frozen base; the trained LoRA is a delta on top")
        default:
            return (text, nil)
        }
    }
}

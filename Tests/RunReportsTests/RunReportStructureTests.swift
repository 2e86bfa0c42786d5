import Foundation
import GRPOGuard
import Testing
@testable import RunReports

/// The page's structure on a synthetic run with two updates per rollout: every section with its
/// figures, the ratio distributions (raw and normalized, one panel per training window), the
/// evaluation when `evaluation.json` exists, effective config values, and no non-finite text.
@Suite struct RunReportStructureTests {
    let base = RunReportTests()

    /// `steps` training steps of two updates each (the second off-policy), with quantiles.
    func twoUpdateRun(steps: Int = 9, quantiles: Bool = true, name: String = "run") throws -> String {
        try base.makeRun((1...steps).flatMap { s in
            [RunReportTests.line(step: s, signed: ("0", "0.5"), quantiles: quantiles),
             RunReportTests.line(step: s, update: 1, signed: ("0.25", "0.5"), quantiles: quantiles)]
        }, name: name)
    }

    /// The text of `<section id="id">…</section>`.
    static func section(_ id: String, in html: String) -> String? {
        guard let start = html.range(of: "<section id=\"\(id)\">") else { return nil }
        let rest = html[start.upperBound...]
        guard let end = rest.range(of: "</section>") else { return nil }
        return String(rest[..<end.lowerBound])
    }

    static func count(_ needle: String, in text: String) -> Int { text.components(separatedBy: needle).count - 1 }

    @Test func everySectionHasItsFigures() throws {
        let run = try twoUpdateRun()
        try #"{"base":0.25,"adapted":0.5,"prompts":4,"steps":40,"seed":2}"#.write(toFile: run + "/evaluation.json", atomically: true, encoding: .utf8)
        let (report, output) = try RunReport.write(run: run)
        #expect(report.evaluation == RunReport.Evaluation(base: 0.25, adapted: 0.5, prompts: 4, steps: 40))
        let html = try String(contentsOfFile: output, encoding: .utf8)
        let expected: [(id: String, svgs: Int)] = [("reward", 1), ("ratio-distribution", 2), ("ratio-training", 4), ("clipping", 7), ("gradients", 4)]
        for (id, svgs) in expected {
            let text = try #require(Self.section(id, in: html), "section \(id) is missing")
            #expect(Self.count("<svg", in: text) == svgs, "section \(id)")
            #expect(Self.count("<svg", in: text) == Self.count("</svg>", in: text), "section \(id)")
        }
        #expect(Self.count("<svg", in: html) == 18)
        #expect(!RunReportTests.hasNonFiniteText(html))

        // The ratio distributions: raw and normalized figures, three windows each (9 steps →
        // 3 steps per window), a glyph per timestep and window.
        let ratio = try #require(Self.section("ratio-distribution", in: html))
        #expect(ratio.contains("<title>raw ratio r per timestep (off-policy updates)</title>"))
        #expect(ratio.contains("<title>normalized ratio r̂ per timestep (off-policy updates)</title>"))
        #expect(Self.count("<g class=\"panel\">", in: ratio) == 6)
        #expect(ratio.contains(">early: steps 1–3</text>") && ratio.contains(">middle: steps 4–6</text>") && ratio.contains(">late: steps 7–9</text>"))
        #expect(Self.count("<g class=\"glyph\"", in: ratio) == 2 * 3 * 3)
        #expect(Self.count("<path class=\"mean\"", in: ratio) == 2 * 3 * 3)
        #expect(ratio.contains("Off-policy updates only"))
        #expect(ratio.contains("r = r̂ = 1 exactly"))

        // The evaluation, in the overview, the reward section (table and reference lines).
        let reward = try #require(Self.section("reward", in: html))
        #expect(reward.contains("<td>with the trained adapter</td><td class=\"num\">0.5</td>"))
        #expect(reward.contains(">evaluation, base: 0.25</text>") && reward.contains(">evaluation, adapted: 0.5</text>"))
        #expect(html.contains("base 0.25 → adapted 0.5 (+0.25)"))
        // Curves against steps separate the policies (solid off-, dashed on-policy).
        let clipping = try #require(Self.section("clipping", in: html))
        #expect(clipping.contains("data-series=\"A &gt; 0, above 1 + ε, off-policy\""))
        #expect(clipping.contains("data-series=\"A &gt; 0, above 1 + ε, on-policy\""))
        // Config: the values in force.
        #expect(html.contains("<span class=\"k\">clip_range</span> = <span class=\"mono\">2e-06</span> <span class=\"d\">(default for grpo-guard)</span>"))
        #expect(!html.contains("<span class=\"mono\">null</span>"))
    }

    @Test func noEvaluationFileSaysSo() throws {
        let html = try RunReport.load(run: try twoUpdateRun()).html()
        #expect(html.contains("No <code>evaluation.json</code> in the run folder"))
        #expect(!html.contains("noise-free evaluation</th>"))
    }

    @Test func aRunThatPredatesTheQuantilesSaysSo() throws {
        let html = try RunReport.load(run: try twoUpdateRun(quantiles: false)).html()
        let ratio = try #require(Self.section("ratio-distribution", in: html))
        #expect(ratio.contains("This run predates the per-sample ratio quantiles"))
        #expect(!ratio.contains("<svg"))
        // The other views are still drawn.
        #expect(Self.count("<svg", in: try #require(Self.section("ratio-training", in: html))) == 4)
    }

    @Test func fewStepsMakeFewerWindows() throws {
        let two = try RunReport.load(run: try twoUpdateRun(steps: 2, name: "two"))
        #expect(two.ratioWindows.map(\.name) == ["early", "late"])
        #expect(two.ratioWindows.map(\.steps) == [1...1, 2...2])
        let ten = try RunReport.load(run: try twoUpdateRun(steps: 10, name: "ten"))
        #expect(ten.ratioWindows.map(\.steps) == [1...3, 4...6, 7...10])
        #expect(ten.ratioWindows.allSatisfy { $0.records.allSatisfy { $0.update == 1 } })
    }

    /// A window's glyph is the median over its updates of each quantile level, and the mean of means.
    @Test func windowGlyphIsTheMedianOfEachLevel() {
        func record(_ q: [Double], mean: Double) -> UpdateRecord {
            let d = StepDiagnostics(ratioMean: mean, ratioStd: 0, normalizedRatioMean: 1, normalizedRatioStd: 0, clipFractionAbove: 0,
                                    clipFractionBelow: 0, clipFractionPositive: 0, clipFractionNegative: 0, approximateKL: 0)
            return UpdateRecord(step: 1, update: 1, optimizerStep: 1, rewardMean: 0, rewardStd: 0, loss: 0, learningRate: 0, gradientNorm: 0,
                                timesteps: [TimestepRecord(index: 2, sigma: 0.5, diagnostics: d, gradientNorm: 0, loss: 0,
                                                           ratioQuantiles: SampleQuantiles(values: q))],
                                seconds: 0)
        }
        let records = [record([1, 2, 3, 4, 5], mean: 3), record([0, 1, 2, 3, 100], mean: 20), record([2, 3, 4, 5, 6], mean: 4)]
        let glyph = RunReport.windowGlyph(records, index: 2, normalized: false)
        #expect(glyph?.quantiles == [1, 2, 3, 4, 6])
        #expect(glyph?.mean == 9)
        #expect(RunReport.windowGlyph(records, index: 2, normalized: true) == nil)
        #expect(RunReport.windowGlyph(records, index: 0, normalized: false) == nil)
    }

    @Test func movingAverageIsCentredAndSkipsGaps() {
        #expect(RunReport.movingAverage([1, 2, 3, 4, 5], window: 3) == [1.5, 2, 3, 4, 4.5])
        #expect(RunReport.movingAverage([1, 2, 3, 4, 5], window: 1) == [1, 2, 3, 4, 5])
        #expect(RunReport.movingAverage([1, 2, 3, 4, 5, 6, 7], window: 5) == [2, 2.5, 3, 4, 5, 5.5, 6])
        let gaps = RunReport.movingAverage([1, .nan, 3, .nan, .nan, .nan, 10], window: 3)
        #expect(gaps[0] == 1 && gaps[1] == 2 && gaps[2] == 3 && gaps[3] == 3 && gaps[4].isNaN && gaps[5] == 10 && gaps[6] == 10)
        // Against a direct sum for a longer series.
        let values = (0..<40).map { Double(($0 * 37) % 11) }
        let smooth = RunReport.movingAverage(values, window: 7)
        for i in values.indices {
            let window = values[max(0, i - 3)...min(values.count - 1, i + 3)]
            #expect(abs(smooth[i] - window.reduce(0, +) / Double(window.count)) < 1e-12)
        }
        #expect(RunReport.smoothingWindow(points: 240) == 13)
        #expect(RunReport.smoothingWindow(points: 10) == 1)
        #expect(RunReport.smoothingWindow(points: 10_000) == 25)
    }

    @Test func heatmapColourScaleIsRobust() {
        // 99 values near 1 and one outlier: the range ends at the 2nd/98th percentile, not at it.
        var values = (0..<99).map { 1 + 1e-4 * Double($0 - 49) / 49 }
        values.append(5)
        let map = ReportSVG.Heatmap(title: "t", xLabel: "training step", rows: ["a"], columns: (1...100).map(Double.init),
                                    values: [values], scale: .diverging(center: 1), colorLabel: "mean r")
        let range = ReportSVG.colorRange(map)
        #expect(range.clipped && range.upper < 1.001 && abs((range.upper - 1) + (range.lower - 1)) < 1e-15)
        let svg = ReportSVG.render(map)
        #expect(svg.contains("colours saturate beyond the 2nd/98th percentile"))
        // Whole-number x ticks only.
        #expect(svg.contains(">20</text>") && svg.contains(">100</text>") && !svg.contains(".5</text>"))
        #expect(svg.contains(">mean r (colours saturate"))
    }

    @Test func logAxisTicksArePowersOfTen() {
        let svg = ReportSVG.render(ReportSVG.LinePlot(title: "kl", xLabel: "training step", yLabel: "approx KL",
                                                      series: [.init(name: "kl", color: "#000", points: [(1, 1e-9), (2, 0), (3, 1e-6), (4, 2e-5)])],
                                                      logY: true, integerX: true))
        #expect(svg.contains(">1e-9</text>") && svg.contains(">1e-5</text>") && svg.contains("approx KL (log scale)"))
        // The 0 is a gap: one point, then a line.
        #expect(svg.components(separatedBy: "<circle class=\"point\"").count - 1 == 1)
        #expect(svg.components(separatedBy: "<polyline ").count - 1 == 1)
        #expect(svg.contains(">1</text>") && svg.contains(">4</text>") && !svg.contains(">1.5</text>") && !svg.contains(">2.5</text>"))
    }
}

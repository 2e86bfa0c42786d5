import Testing
import RunReports   // not @testable: `ReportSVG` must be usable from outside (tools/study draws with it)

/// `ReportSVG` through the public API only (this file imports `RunReports` without `@testable`).
@Suite struct ReportSVGPublicAPITests {
    @Test func drawsALinePlotWithTwoSeriesAndABand() {
        let steps = (1...5).map(Double.init)
        let plot = ReportSVG.LinePlot(
            title: "reward over seeds", xLabel: "step", yLabel: "reward",
            series: [ReportSVG.Series(name: "Flow-GRPO", color: "#b2182b", points: steps.map { ($0, 0.1 * $0) }),
                     ReportSVG.Series(name: "GRPO-Guard", color: "#2166ac", points: [(1, 0.2), (3, 0.5), (5, 0.9)], dashed: true)],
            bands: [ReportSVG.Band(name: "± std", color: "#b2182b", points: steps.map { ($0, 0.1 * $0 - 0.05, 0.1 * $0 + 0.05) })],
            referenceLines: [(y: 0.5, label: "target")])
        let svg = ReportSVG.render(plot)
        #expect(svg.hasPrefix("<svg class=\"plot\"") && svg.hasSuffix("</svg>\n"))
        #expect(svg.components(separatedBy: "<polyline ").count - 1 == 2)
        #expect(svg.components(separatedBy: "<polygon class=\"band\"").count - 1 == 1)
        #expect(svg.contains("data-series=\"GRPO-Guard\"") && svg.contains("stroke-dasharray=\"5 3\""))
        #expect(svg.contains(">target</text>"))
        let map = ReportSVG.render(ReportSVG.Heatmap(title: "h", xLabel: "x", rows: ["a"], columns: [1, 2], values: [[0.5, 1.5]], center: 1))
        #expect(map.components(separatedBy: "<rect class=\"cell\"").count - 1 == 2)
    }
}

import Foundation

extension ReportSVG {
    /// Distributions drawn as box glyphs on a shared y axis, in side-by-side panels (small
    /// multiples, e.g. one per training window): per category (e.g. per timestep) a whisker from
    /// the 5 % to the 95 % quantile, a box from 25 % to 75 %, a line at the median and an
    /// optional mean marker.
    public struct QuantilePanels: Sendable {
        /// One distribution's glyph.
        public struct Glyph: Sendable, Equatable {
            /// 5, 25, 50, 75 and 95 % quantiles.
            public var quantiles: [Double]
            /// The mean (a diamond), if known.
            public var mean: Double?

            /// A glyph from five quantiles (ascending levels 5/25/50/75/95 %) and an optional mean.
            public init(quantiles: [Double], mean: Double? = nil) {
                precondition(quantiles.count == 5, "QuantilePanels.Glyph: \(quantiles.count) quantiles, need 5")
                self.quantiles = quantiles
                self.mean = mean
            }
        }

        /// One panel: its heading and a glyph (or nothing) per category.
        public struct Panel: Sendable {
            /// The panel's heading (e.g. "early: steps 1–80").
            public var title: String
            /// One entry per category of the figure; nil draws nothing there.
            public var glyphs: [Glyph?]

            /// A panel titled `title` with `glyphs`, one per category.
            public init(title: String, glyphs: [Glyph?]) {
                self.title = title
                self.glyphs = glyphs
            }
        }

        /// The heading (also the SVG's `<title>`).
        public var title: String
        /// The y axis's label.
        public var yLabel: String
        /// The x axis's label (under every panel).
        public var xLabel: String
        /// The category tick labels, left to right (shared by every panel).
        public var categories: [String]
        /// The panels, left to right.
        public var panels: [Panel]
        /// A CSS colour for the glyphs.
        public var color: String
        /// Horizontal lines across every panel (a solid one for the first, e.g. r = 1; dashed for
        /// the rest, e.g. 1 ± ε).
        public var referenceLines: [(y: Double, label: String)]

        /// A figure of `panels` over `categories`, drawn in `color`, with optional `referenceLines`.
        public init(title: String, yLabel: String, xLabel: String, categories: [String], panels: [Panel], color: String,
                    referenceLines: [(y: Double, label: String)] = []) {
            self.title = title
            self.yLabel = yLabel
            self.xLabel = xLabel
            self.categories = categories
            self.panels = panels
            self.color = color
            self.referenceLines = referenceLines
        }
    }

    /// The SVG of quantile panels: per glyph one `<g class="glyph">` holding a whisker line, a
    /// `<rect class="box">`, a median line and a mean `<path class="mean">`; one y axis on the
    /// left shared by all panels, a key below them.
    public static func render(_ figure: QuantilePanels) -> String {
        let glyphs = figure.panels.flatMap { $0.glyphs.compactMap { $0 } }
        var ys = glyphs.flatMap { $0.quantiles + ($0.mean.map { [$0] } ?? []) }.filter(\.isFinite)
        let hasData = !ys.isEmpty
        if hasData { ys += figure.referenceLines.map(\.y).filter(\.isFinite) }
        let yt = ticks(lower: ys.min() ?? 0, upper: ys.max() ?? 1, count: 6)
        let yLabels = labels(yt.ticks, step: yt.step)
        let longest = yLabels.map(\.count).max() ?? 1
        let left = 40 + Double(longest) * 6.2, right = 12.0, top = 50.0, gap = 14.0
        let panelCount = Swift.max(figure.panels.count, 1)
        let panelWidth = Swift.max(170, Swift.min(330, 32 * Double(Swift.max(figure.categories.count, 1)) + 20))
        let totalWidth = left + Double(panelCount) * panelWidth + Double(panelCount - 1) * gap + right
        let plotHeight = 260.0, axisBottom = top + plotHeight
        let height = axisBottom + 78
        func py(_ y: Double) -> Double { axisBottom - (y - yt.lower) / (yt.upper - yt.lower) * plotHeight }
        let slot = panelWidth / Double(Swift.max(figure.categories.count, 1))
        let boxWidth = Swift.max(4, Swift.min(18, slot * 0.6))

        var svg = "<svg class=\"quantiles\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 \(c(totalWidth)) \(c(height))\" width=\"\(Int(totalWidth.rounded(.up)))\" height=\"\(Int(height))\" role=\"img\" aria-label=\"\(escape(figure.title))\" font-family=\"sans-serif\" font-size=\"11\">\n"
        svg += "<title>\(escape(figure.title))</title>\n"
        svg += "<text class=\"title\" x=\"\(c(left))\" y=\"18\" font-size=\"13\" font-weight=\"600\">\(escape(figure.title))</text>\n"
        svg += "<text class=\"axis-label\" fill=\"#555\" transform=\"translate(12 \(c(top + plotHeight / 2))) rotate(-90)\" text-anchor=\"middle\">\(escape(figure.yLabel))</text>\n"
        for (t, label) in zip(yt.ticks, yLabels) where hasData {
            svg += "<text class=\"tick\" x=\"\(c(left - 5))\" y=\"\(c(py(t) + 4))\" text-anchor=\"end\">\(escape(label))</text>\n"
        }
        let labelEvery = Swift.max(1, Int((30 / slot).rounded(.up)))
        for (p, panel) in figure.panels.enumerated() {
            let x0 = left + Double(p) * (panelWidth + gap)
            svg += "<g class=\"panel\">\n"
            svg += "<text class=\"panel-title\" x=\"\(c(x0 + panelWidth / 2))\" y=\"\(c(top - 8))\" text-anchor=\"middle\" font-weight=\"600\">\(escape(panel.title))</text>\n"
            svg += "<rect class=\"frame\" x=\"\(c(x0))\" y=\"\(c(top))\" width=\"\(c(panelWidth))\" height=\"\(c(plotHeight))\" fill=\"none\" stroke=\"#999\"/>\n"
            if !hasData {
                svg += "<text class=\"empty\" fill=\"#999\" font-size=\"14\" x=\"\(c(x0 + panelWidth / 2))\" y=\"\(c(top + plotHeight / 2))\" text-anchor=\"middle\">no finite values</text>\n</g>\n"
                continue
            }
            for t in yt.ticks {
                svg += "<line class=\"grid\" stroke=\"#eee\" x1=\"\(c(x0))\" y1=\"\(c(py(t)))\" x2=\"\(c(x0 + panelWidth))\" y2=\"\(c(py(t)))\"/>\n"
            }
            for (k, r) in figure.referenceLines.enumerated() where r.y.isFinite {
                let y = py(r.y)
                let style = k == 0 ? "stroke=\"#555\" stroke-width=\"1\"" : "stroke=\"#888\" stroke-dasharray=\"4 3\""
                svg += "<line class=\"reference\" \(style) x1=\"\(c(x0))\" y1=\"\(c(y))\" x2=\"\(c(x0 + panelWidth))\" y2=\"\(c(y))\"/>\n"
            }
            for (i, category) in figure.categories.enumerated() {
                let cx = x0 + (Double(i) + 0.5) * slot
                if i % labelEvery == 0 {
                    svg += "<text class=\"tick\" x=\"\(c(cx))\" y=\"\(c(axisBottom + 15))\" text-anchor=\"middle\">\(escape(category))</text>\n"
                }
                guard i < panel.glyphs.count, let g = panel.glyphs[i], g.quantiles.allSatisfy(\.isFinite) else { continue }
                let q = g.quantiles.map(py)
                svg += "<g class=\"glyph\" data-category=\"\(escape(category))\">"
                svg += "<title>\(escape(category)): 5 % \(String(format: "%.9g", g.quantiles[0])), 25 % \(String(format: "%.9g", g.quantiles[1])), "
                    + "median \(String(format: "%.9g", g.quantiles[2])), 75 % \(String(format: "%.9g", g.quantiles[3])), 95 % \(String(format: "%.9g", g.quantiles[4]))"
                    + (g.mean.map { ", mean \(String(format: "%.9g", $0))" } ?? "") + "</title>"
                svg += "<line class=\"whisker\" stroke=\"\(escape(figure.color))\" stroke-width=\"1.2\" x1=\"\(c(cx))\" y1=\"\(c(q[4]))\" x2=\"\(c(cx))\" y2=\"\(c(q[0]))\"/>"
                for end in [q[0], q[4]] {
                    svg += "<line class=\"whisker-end\" stroke=\"\(escape(figure.color))\" stroke-width=\"1.2\" x1=\"\(c(cx - boxWidth / 4))\" y1=\"\(c(end))\" x2=\"\(c(cx + boxWidth / 4))\" y2=\"\(c(end))\"/>"
                }
                svg += "<rect class=\"box\" fill=\"\(escape(figure.color))\" fill-opacity=\"0.3\" stroke=\"\(escape(figure.color))\" x=\"\(c(cx - boxWidth / 2))\" y=\"\(c(q[3]))\" width=\"\(c(boxWidth))\" height=\"\(c(Swift.max(0.8, q[1] - q[3])))\"/>"
                svg += "<line class=\"median\" stroke=\"#111\" stroke-width=\"1.8\" x1=\"\(c(cx - boxWidth / 2))\" y1=\"\(c(q[2]))\" x2=\"\(c(cx + boxWidth / 2))\" y2=\"\(c(q[2]))\"/>"
                if let mean = g.mean, mean.isFinite {
                    let my = py(mean), d = 3.5
                    svg += "<path class=\"mean\" fill=\"#fff\" stroke=\"#111\" d=\"M\(c(cx)) \(c(my - d))L\(c(cx + d)) \(c(my))L\(c(cx)) \(c(my + d))L\(c(cx - d)) \(c(my))Z\"/>"
                }
                svg += "</g>\n"
            }
            svg += "</g>\n"
        }
        let middle = left + (totalWidth - left - right) / 2
        svg += "<text class=\"axis-label\" fill=\"#555\" x=\"\(c(middle))\" y=\"\(c(axisBottom + 32))\" text-anchor=\"middle\">\(escape(figure.xLabel))</text>\n"
        // The key, below the panels.
        let ky = axisBottom + 56, kx = left
        svg += "<g class=\"key\">"
        svg += "<line stroke=\"\(escape(figure.color))\" x1=\"\(c(kx + 6))\" y1=\"\(c(ky - 10))\" x2=\"\(c(kx + 6))\" y2=\"\(c(ky + 8))\"/>"
        svg += "<rect fill=\"\(escape(figure.color))\" fill-opacity=\"0.3\" stroke=\"\(escape(figure.color))\" x=\"\(c(kx))\" y=\"\(c(ky - 5))\" width=\"12\" height=\"9\"/>"
        svg += "<line stroke=\"#111\" stroke-width=\"1.8\" x1=\"\(c(kx))\" y1=\"\(c(ky - 1))\" x2=\"\(c(kx + 12))\" y2=\"\(c(ky - 1))\"/>"
        svg += "<text class=\"legend\" x=\"\(c(kx + 18))\" y=\"\(c(ky + 3))\">box: 25–75 %, bar: median, whiskers: 5–95 % of the samples</text>"
        var dx = kx + 380
        svg += "<path fill=\"#fff\" stroke=\"#111\" d=\"M\(c(dx + 4)) \(c(ky - 5))L\(c(dx + 8)) \(c(ky - 1))L\(c(dx + 4)) \(c(ky + 3))L\(c(dx)) \(c(ky - 1))Z\"/>"
        svg += "<text class=\"legend\" x=\"\(c(dx + 14))\" y=\"\(c(ky + 3))\">mean</text>"
        // The reference lines are named here rather than on the panels, where lines a few pixels
        // apart (1 and 1 ± a tiny ε) would stack their labels.
        let references = figure.referenceLines.filter(\.y.isFinite)
        if let first = references.first {
            dx += 60
            svg += "<line stroke=\"#555\" x1=\"\(c(dx))\" y1=\"\(c(ky - 1))\" x2=\"\(c(dx + 18))\" y2=\"\(c(ky - 1))\"/>"
            svg += "<text class=\"legend\" x=\"\(c(dx + 23))\" y=\"\(c(ky + 3))\">\(escape(first.label))</text>"
            dx += 30 + legendWidth(first.label)
        }
        if references.count > 1 {
            let text = references.dropFirst().map(\.label).filter { !$0.isEmpty }.joined(separator: ", ")
            svg += "<line stroke=\"#888\" stroke-dasharray=\"4 3\" x1=\"\(c(dx))\" y1=\"\(c(ky - 1))\" x2=\"\(c(dx + 18))\" y2=\"\(c(ky - 1))\"/>"
            svg += "<text class=\"legend\" x=\"\(c(dx + 23))\" y=\"\(c(ky + 3))\">\(escape(text))</text>"
        }
        svg += "</g>\n</svg>\n"
        return svg
    }
}

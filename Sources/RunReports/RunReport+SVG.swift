import Foundation
import GRPOGuard

/// A small SVG writer for the run report (and other tools drawing figures): line plots (axes,
/// ticks at nice numbers, a legend, optional shaded bands and horizontal reference lines;
/// non-finite values break a line into segments) and heatmaps with a diverging colour scale.
/// Every text it writes is escaped; each `render` returns one standalone `<svg>` element.
public enum ReportSVG {
    /// One line of a plot, with its own x values; a non-finite y (or x) ends the current segment.
    public struct Series: Sendable {
        /// The legend text.
        public var name: String
        /// A CSS colour.
        public var color: String
        /// The points in data coordinates, drawn in the given order.
        public var points: [(x: Double, y: Double)]
        /// Drawn dashed.
        public var dashed: Bool

        /// A line named `name` in `color` through `points` (solid unless `dashed`).
        public init(name: String, color: String, points: [(x: Double, y: Double)], dashed: Bool = false) {
            self.name = name
            self.color = color
            self.points = points
            self.dashed = dashed
        }
    }

    /// A shaded region between a lower and an upper curve sharing x values (mean ± std); a
    /// non-finite value ends the current piece, and a piece needs two points to be drawn.
    public struct Band: Sendable {
        /// The legend text.
        public var name: String
        /// A CSS colour (drawn translucent).
        public var color: String
        /// x, lower and upper values.
        public var points: [(x: Double, lower: Double, upper: Double)]

        /// A band named `name` in `color` over `points`.
        public init(name: String, color: String, points: [(x: Double, lower: Double, upper: Double)]) {
            self.name = name
            self.color = color
            self.points = points
        }
    }

    /// A line plot: the axes span all finite series, band and reference-line values.
    public struct LinePlot: Sendable {
        /// The heading (also the SVG's `<title>`).
        public var title: String
        /// The x axis's label.
        public var xLabel: String
        /// The y axis's label.
        public var yLabel: String
        /// The lines, drawn in order over the bands.
        public var series: [Series]
        /// Shaded regions, drawn first.
        public var bands: [Band]
        /// Horizontal lines drawn in grey (e.g. r = 1, 1 ± ε).
        public var referenceLines: [(y: Double, label: String)]

        /// A plot of `series` over `bands`, with optional horizontal `referenceLines`.
        public init(title: String, xLabel: String, yLabel: String, series: [Series], bands: [Band] = [],
                    referenceLines: [(y: Double, label: String)] = []) {
            self.title = title
            self.xLabel = xLabel
            self.yLabel = yLabel
            self.series = series
            self.bands = bands
            self.referenceLines = referenceLines
        }
    }

    /// A grid of values coloured by their distance from `center`: blue below, red above.
    public struct Heatmap: Sendable {
        /// The heading (also the SVG's `<title>`).
        public var title: String
        /// The x axis's label.
        public var xLabel: String
        /// Row labels, top to bottom.
        public var rows: [String]
        /// The x value of each column.
        public var columns: [Double]
        /// values[row][column].
        public var values: [[Double]]
        /// The neutral value (white).
        public var center: Double

        /// A heatmap of `values` (one array per row, one value per column) around `center`.
        public init(title: String, xLabel: String, rows: [String], columns: [Double], values: [[Double]], center: Double) {
            self.title = title
            self.xLabel = xLabel
            self.rows = rows
            self.columns = columns
            self.values = values
            self.center = center
        }
    }

    /// Width of every figure (SVG user units).
    static let width = 660.0
    /// Height of a line plot's data area.
    static let plotHeight = 240.0

    // MARK: text

    /// `s` with `& < > " '` replaced by entities (safe in text and in quoted attributes).
    static func escape(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for c in s.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default:
                // Control characters are not allowed in XML 1.0 text.
                if c.value < 0x20 && c != "\n" && c != "\t" { out += "\u{FFFD}" } else { out.unicodeScalars.append(c) }
            }
        }
        return out
    }

    /// A coordinate with two decimals.
    static func c(_ v: Double) -> String { String(format: "%.2f", v) }

    // MARK: ticks

    /// Heckbert's "nice number": 1, 2, 5 or 10 times a power of ten near `x`.
    static func niceNumber(_ x: Double, round: Bool) -> Double {
        let exponent = Foundation.floor(Foundation.log10(x))
        let power = Foundation.pow(10, exponent)
        let f = x / power
        let nice: Double
        if round {
            nice = f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10
        } else {
            nice = f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10
        }
        return nice * power
    }

    /// Axis bounds and ticks at nice numbers covering `lower…upper` with about `count` ticks.
    static func ticks(lower: Double, upper: Double, count: Int = 5) -> (lower: Double, upper: Double, step: Double, ticks: [Double]) {
        var lo = lower, hi = upper
        if !(hi > lo) {
            let pad = lo == 0 ? 1 : Swift.abs(lo) * 0.05
            lo -= pad
            hi += pad
        }
        let range = niceNumber(hi - lo, round: false)
        let step = niceNumber(range / Double(max(count - 1, 1)), round: true)
        let first = Foundation.floor(lo / step), last = Foundation.ceil(hi / step)
        let n = Int(last - first)
        guard step > 0, step.isFinite, n >= 0, n <= 1000 else { return (lo, hi, hi - lo, [lo, hi]) }
        let values = (0...n).map { (first + Double($0)) * step }
        return (first * step, last * step, step, values)
    }

    /// Tick labels with as many decimals as the step needs (scientific for very small or large values).
    static func labels(_ ticks: [Double], step: Double) -> [String] {
        let largest = ticks.map { Swift.abs($0) }.max() ?? 0
        if largest >= 1e6 || (largest < 1e-3 && largest > 0) {
            return ticks.map { $0 == 0 || Swift.abs($0) < step * 1e-6 ? "0" : String(format: "%.3g", $0) }
        }
        var decimals = max(0, -Int(Foundation.floor(Foundation.log10(step))))
        let scaled = step * Foundation.pow(10, Double(decimals))
        if Swift.abs(scaled - scaled.rounded()) > 1e-6 { decimals += 1 }
        if decimals > 12 { return ticks.map { String(format: "%.12g", $0) } }
        return ticks.map { t in
            let s = String(format: "%.\(decimals)f", Swift.abs(t) < step * 1e-6 ? 0 : t)
            return s == "-0" ? "0" : s
        }
    }

    // MARK: line plots

    /// Splits points at non-finite coordinates into runs of finite points.
    static func segments(_ points: [(x: Double, y: Double)]) -> [[(x: Double, y: Double)]] {
        var out: [[(x: Double, y: Double)]] = [], current: [(x: Double, y: Double)] = []
        for p in points {
            if p.x.isFinite && p.y.isFinite {
                current.append(p)
            } else if !current.isEmpty {
                out.append(current)
                current = []
            }
        }
        if !current.isEmpty { out.append(current) }
        return out
    }

    /// At most about `limit` points of a segment: beyond that, consecutive points are grouped into
    /// `limit / 2` buckets and each keeps its lowest and highest point (in x order), so spikes survive.
    static func decimated(_ points: [(x: Double, y: Double)], limit: Int = 1500) -> [(x: Double, y: Double)] {
        guard points.count > limit else { return points }
        let buckets = limit / 2
        var out: [(x: Double, y: Double)] = []
        out.reserveCapacity(limit)
        for b in 0..<buckets {
            let lo = b * points.count / buckets, hi = (b + 1) * points.count / buckets
            guard hi > lo else { continue }
            let slice = points[lo..<hi]
            let low = slice.indices.min { points[$0].y < points[$1].y }!
            let high = slice.indices.max { points[$0].y < points[$1].y }!
            for k in Set([low, high]).sorted() { out.append(points[k]) }
        }
        return out
    }

    /// The SVG of a line plot: one `<polyline class="line">` per finite segment of each series
    /// (a lone point is a `<circle class="point">`), bands as `<polygon class="band">`.
    public static func render(_ plot: LinePlot) -> String {
        let legendEntries = plot.bands.map { ($0.name, $0.color, "band") } + plot.series.map { ($0.name, $0.color, $0.dashed ? "dashed" : "line") }
        let f = PlotFrame(plot, legendEntries: legendEntries.count)
        let (left, top, plotWidth, axisBottom) = (f.left, f.top, f.plotWidth, f.axisBottom)
        var svg = "<svg class=\"plot\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 \(c(width)) \(c(f.height))\" width=\"\(Int(width))\" height=\"\(Int(f.height))\" role=\"img\" aria-label=\"\(escape(plot.title))\" font-family=\"sans-serif\" font-size=\"11\">\n"
        svg += "<title>\(escape(plot.title))</title>\n"
        svg += "<text class=\"title\" x=\"\(c(left))\" y=\"18\" font-size=\"13\" font-weight=\"600\">\(escape(plot.title))</text>\n"
        svg += "<rect class=\"frame\" x=\"\(c(left))\" y=\"\(c(top))\" width=\"\(c(plotWidth))\" height=\"\(c(plotHeight))\" fill=\"none\" stroke=\"#999\"/>\n"
        if !f.hasData {
            svg += "<text class=\"empty\" fill=\"#999\" font-size=\"14\" x=\"\(c(left + plotWidth / 2))\" y=\"\(c(top + plotHeight / 2))\" text-anchor=\"middle\">no finite values</text>\n"
        } else {
            svg += axes(plot, f)
            for band in plot.bands { svg += bandPolygons(band, f) }
            for s in plot.series { svg += seriesLines(s, f) }
        }
        svg += "<text class=\"axis-label\" fill=\"#555\" x=\"\(c(left + plotWidth / 2))\" y=\"\(c(axisBottom + 33))\" text-anchor=\"middle\">\(escape(plot.xLabel))</text>\n"
        svg += "<text class=\"axis-label\" fill=\"#555\" transform=\"translate(12 \(c(top + plotHeight / 2))) rotate(-90)\" text-anchor=\"middle\">\(escape(plot.yLabel))</text>\n"
        svg += legend(legendEntries, f)
        svg += "</svg>\n"
        return svg
    }

    /// Where a line plot's data lands: the axes' ticks and labels (x spans exactly the data,
    /// y widened to nice bounds), the plot area's position and size, and the figure's height
    /// (the legend's rows below the axis).
    struct PlotFrame {
        var hasData: Bool
        var xt: (lower: Double, upper: Double, step: Double, ticks: [Double])
        var yt: (lower: Double, upper: Double, step: Double, ticks: [Double])
        var xLabels: [String], yLabels: [String]
        var left: Double, top: Double, plotWidth: Double, axisBottom: Double, height: Double
        /// Legend entries per row.
        var perRow: Int

        init(_ plot: LinePlot, legendEntries: Int) {
            var xs: [Double] = [], ys: [Double] = []
            for s in plot.series { for p in s.points where p.x.isFinite && p.y.isFinite { xs.append(p.x); ys.append(p.y) } }
            for b in plot.bands {
                for p in b.points where p.x.isFinite && p.lower.isFinite && p.upper.isFinite { xs.append(p.x); ys.append(p.lower); ys.append(p.upper) }
            }
            hasData = !xs.isEmpty
            for r in plot.referenceLines where r.y.isFinite && hasData { ys.append(r.y) }
            // x spans exactly the data (ticks inside it); y is widened to nice bounds.
            xt = ticks(lower: xs.min() ?? 0, upper: xs.max() ?? 1, count: 6)
            if let lo = xs.min(), let hi = xs.max(), hi > lo {
                let slack = xt.step * 1e-9
                xt = (lo, hi, xt.step, xt.ticks.filter { $0 >= lo - slack && $0 <= hi + slack })
            }
            yt = ticks(lower: ys.min() ?? 0, upper: ys.max() ?? 1, count: 5)
            yLabels = labels(yt.ticks, step: yt.step)
            xLabels = labels(xt.ticks, step: xt.step)
            let longest = yLabels.map(\.count).max() ?? 1
            left = 46 + Double(longest) * 6.2
            top = 30.0
            let right = 16.0
            plotWidth = width - left - right
            perRow = max(1, Int((width - 20) / 150))
            let legendRows = (legendEntries + perRow - 1) / perRow
            axisBottom = top + plotHeight
            height = axisBottom + 44 + Double(legendRows) * 18 + 6
        }

        /// The x pixel of a data x.
        func px(_ x: Double) -> Double { left + (x - xt.lower) / (xt.upper - xt.lower) * plotWidth }
        /// The y pixel of a data y.
        func py(_ y: Double) -> Double { axisBottom - (y - yt.lower) / (yt.upper - yt.lower) * plotHeight }
    }

    /// Grid lines and labels of the y ticks, tick marks and labels of the x ticks, reference lines.
    static func axes(_ plot: LinePlot, _ f: PlotFrame) -> String {
        let (left, plotWidth, axisBottom) = (f.left, f.plotWidth, f.axisBottom)
        var svg = ""
        for (t, label) in zip(f.yt.ticks, f.yLabels) {
            let y = f.py(t)
            svg += "<line class=\"grid\" stroke=\"#eee\" x1=\"\(c(left))\" y1=\"\(c(y))\" x2=\"\(c(left + plotWidth))\" y2=\"\(c(y))\"/>"
            svg += "<text class=\"tick\" x=\"\(c(left - 5))\" y=\"\(c(y + 4))\" text-anchor=\"end\">\(escape(label))</text>\n"
        }
        for (t, label) in zip(f.xt.ticks, f.xLabels) {
            let x = f.px(t)
            svg += "<line class=\"tickmark\" stroke=\"#999\" x1=\"\(c(x))\" y1=\"\(c(axisBottom))\" x2=\"\(c(x))\" y2=\"\(c(axisBottom + 5))\"/>"
            svg += "<text class=\"tick\" x=\"\(c(x))\" y=\"\(c(axisBottom + 17))\" text-anchor=\"middle\">\(escape(label))</text>\n"
        }
        for r in plot.referenceLines where r.y.isFinite {
            let y = f.py(r.y)
            svg += "<line class=\"reference\" stroke=\"#888\" stroke-dasharray=\"4 3\" x1=\"\(c(left))\" y1=\"\(c(y))\" x2=\"\(c(left + plotWidth))\" y2=\"\(c(y))\"/>"
            svg += "<text class=\"reference-label\" fill=\"#777\" font-size=\"10\" x=\"\(c(left + plotWidth - 4))\" y=\"\(c(y - 3))\" text-anchor=\"end\">\(escape(r.label))</text>\n"
        }
        return svg
    }

    /// One polygon per run of finite points of a band (runs of one point are not drawn).
    static func bandPolygons(_ band: Band, _ f: PlotFrame) -> String {
        var svg = ""
        var run: [(x: Double, lower: Double, upper: Double)] = []
        func flush() {
            defer { run = [] }
            guard run.count >= 2 else { return }
            let upper = run.map { "\(c(f.px($0.x))),\(c(f.py($0.upper)))" }
            let lower = run.reversed().map { "\(c(f.px($0.x))),\(c(f.py($0.lower)))" }
            svg += "<polygon class=\"band\" fill-opacity=\"0.25\" fill=\"\(escape(band.color))\" points=\"\((upper + lower).joined(separator: " "))\"/>\n"
        }
        for p in band.points {
            if p.x.isFinite && p.lower.isFinite && p.upper.isFinite { run.append(p) } else { flush() }
        }
        flush()
        return svg
    }

    /// One polyline per finite segment of a series (decimated), a dot for a segment of one point.
    static func seriesLines(_ s: Series, _ f: PlotFrame) -> String {
        var svg = ""
        for segment in segments(s.points).map({ decimated($0) }) {
            if segment.count == 1 {
                svg += "<circle class=\"point\" data-series=\"\(escape(s.name))\" cx=\"\(c(f.px(segment[0].x)))\" cy=\"\(c(f.py(segment[0].y)))\" r=\"2.5\" fill=\"\(escape(s.color))\"/>\n"
            } else {
                let points = segment.map { "\(c(f.px($0.x))),\(c(f.py($0.y)))" }.joined(separator: " ")
                svg += "<polyline class=\"line\(s.dashed ? " dashed" : "")\" fill=\"none\" stroke-width=\"1.6\"\(s.dashed ? " stroke-dasharray=\"5 3\"" : "") data-series=\"\(escape(s.name))\" stroke=\"\(escape(s.color))\" points=\"\(points)\"/>\n"
            }
        }
        return svg
    }

    /// The legend below the x axis: (name, colour, "band" | "dashed" | "line") per entry, `perRow` a row.
    static func legend(_ entries: [(String, String, String)], _ f: PlotFrame) -> String {
        var svg = ""
        for (i, entry) in entries.enumerated() {
            let x = 10 + Double(i % f.perRow) * 150, y = f.axisBottom + 52 + Double(i / f.perRow) * 18
            switch entry.2 {
            case "band":
                svg += "<rect class=\"band\" fill-opacity=\"0.25\" x=\"\(c(x))\" y=\"\(c(y - 9))\" width=\"18\" height=\"10\" fill=\"\(escape(entry.1))\"/>"
            default:
                svg += "<line class=\"legend-line\(entry.2 == "dashed" ? " dashed" : "")\" stroke-width=\"2\"\(entry.2 == "dashed" ? " stroke-dasharray=\"5 3\"" : "") x1=\"\(c(x))\" y1=\"\(c(y - 4))\" x2=\"\(c(x + 18))\" y2=\"\(c(y - 4))\" stroke=\"\(escape(entry.1))\"/>"
            }
            svg += "<text class=\"legend\" x=\"\(c(x + 23))\" y=\"\(c(y))\">\(escape(entry.0))</text>\n"
        }
        return svg
    }

    // MARK: heatmaps

    /// The diverging colour of `t` in −1…1: blue (−1) through white (0) to red (+1).
    static func divergingColor(_ t: Double) -> String {
        let u = Swift.min(1, Swift.max(-1, t))
        let end: (Double, Double, Double) = u < 0 ? (33, 102, 172) : (178, 24, 43)
        let a = Swift.abs(u)
        func mix(_ e: Double) -> Int { Int((255 + (e - 255) * a).rounded()) }
        return String(format: "#%02x%02x%02x", mix(end.0), mix(end.1), mix(end.2))
    }

    /// Averages consecutive columns so at most `limit` remain (finite values only).
    static func binned(_ map: Heatmap, limit: Int) -> Heatmap {
        guard map.columns.count > limit else { return map }
        let per = (map.columns.count + limit - 1) / limit
        var out = map
        let groups = stride(from: 0, to: map.columns.count, by: per).map { $0..<Swift.min($0 + per, map.columns.count) }
        out.columns = groups.map { g in g.reduce(0) { $0 + map.columns[$1] } / Double(g.count) }
        out.values = map.values.map { row in
            groups.map { g in
                let finite = g.map { row[$0] }.filter(\.isFinite)
                return finite.isEmpty ? .nan : finite.reduce(0, +) / Double(finite.count)
            }
        }
        return out
    }

    /// The SVG of a heatmap: one `<rect class="cell">` per (row, column), NaN cells grey, and a
    /// colour bar labelled center − m, center, center + m (m = the largest |value − center|).
    public static func render(_ input: Heatmap) -> String {
        let map = binned(input, limit: 300)
        let finite = map.values.flatMap { $0 }.filter(\.isFinite)
        let spread = finite.map { Swift.abs($0 - map.center) }.max() ?? 0
        let m = spread > 0 ? spread : 1
        let longest = map.rows.map(\.count).max() ?? 1
        let left = 14 + Double(longest) * 6.2, right = 16.0, top = 30.0
        let plotWidth = width - left - right
        let rowHeight = Swift.max(10, Swift.min(24, 220 / Double(Swift.max(map.rows.count, 1))))
        let gridHeight = rowHeight * Double(map.rows.count)
        let bottom = top + gridHeight
        let height = bottom + 80
        let n = Swift.max(map.columns.count, 1)
        let cellWidth = plotWidth / Double(n)
        var svg = "<svg class=\"heatmap\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 \(c(width)) \(c(height))\" width=\"\(Int(width))\" height=\"\(Int(height))\" role=\"img\" aria-label=\"\(escape(map.title))\" font-family=\"sans-serif\" font-size=\"11\">\n"
        svg += "<title>\(escape(map.title))</title>\n"
        svg += "<text class=\"title\" x=\"\(c(left))\" y=\"18\" font-size=\"13\" font-weight=\"600\">\(escape(map.title))</text>\n"
        let withTitles = map.rows.count * map.columns.count <= 3000
        for (r, label) in map.rows.enumerated() {
            let y = top + Double(r) * rowHeight
            svg += "<text class=\"tick\" x=\"\(c(left - 5))\" y=\"\(c(y + rowHeight / 2 + 4))\" text-anchor=\"end\">\(escape(label))</text>\n"
            for (k, x) in map.columns.enumerated() {
                let v = r < map.values.count && k < map.values[r].count ? map.values[r][k] : .nan
                let fill = v.isFinite ? divergingColor((v - map.center) / m) : "#d0d0d0"
                svg += "<rect class=\"cell\" x=\"\(c(left + Double(k) * cellWidth))\" y=\"\(c(y))\" width=\"\(c(cellWidth + 0.3))\" height=\"\(c(rowHeight))\" fill=\"\(fill)\">"
                if withTitles { svg += "<title>\(escape(label)), step \(escape(String(format: "%g", x))): \(escape(String(format: "%.9g", v)))</title>" }
                svg += "</rect>"
            }
            svg += "\n"
        }
        svg += "<rect class=\"frame\" x=\"\(c(left))\" y=\"\(c(top))\" width=\"\(c(plotWidth))\" height=\"\(c(gridHeight))\" fill=\"none\" stroke=\"#999\"/>\n"
        if let first = map.columns.first, let last = map.columns.last {
            svg += "<text class=\"tick\" x=\"\(c(left))\" y=\"\(c(bottom + 14))\">\(escape(String(format: "%g", first)))</text>"
            svg += "<text class=\"tick\" x=\"\(c(left + plotWidth))\" y=\"\(c(bottom + 14))\" text-anchor=\"end\">\(escape(String(format: "%g", last)))</text>\n"
        }
        svg += "<text class=\"axis-label\" fill=\"#555\" x=\"\(c(left + plotWidth / 2))\" y=\"\(c(bottom + 16))\" text-anchor=\"middle\">\(escape(map.xLabel))</text>\n"
        // Colour bar.
        let barX = left, barY = bottom + 32, barWidth = Swift.min(300, plotWidth)
        let stops = 20
        for i in 0..<stops {
            let t = -1 + 2 * (Double(i) + 0.5) / Double(stops)
            svg += "<rect class=\"scale\" x=\"\(c(barX + Double(i) * barWidth / Double(stops)))\" y=\"\(c(barY))\" width=\"\(c(barWidth / Double(stops) + 0.3))\" height=\"10\" fill=\"\(divergingColor(t))\"/>"
        }
        let labelValues = [map.center - m, map.center, map.center + m]
        let texts = spread > 0 ? labelValues.map { String(format: "%.6g", $0) } : ["", String(format: "%g", map.center), ""]
        for (i, text) in texts.enumerated() where !text.isEmpty {
            let anchor = ["start", "middle", "end"][i]
            svg += "<text class=\"tick\" x=\"\(c(barX + Double(i) * barWidth / 2))\" y=\"\(c(barY + 24))\" text-anchor=\"\(anchor)\">\(escape(text))</text>"
        }
        svg += "<rect class=\"scale-missing\" x=\"\(c(barX + barWidth + 20))\" y=\"\(c(barY))\" width=\"10\" height=\"10\" fill=\"#d0d0d0\"/>"
        svg += "<text class=\"tick\" x=\"\(c(barX + barWidth + 34))\" y=\"\(c(barY + 9))\">not finite</text>\n"
        svg += "</svg>\n"
        return svg
    }

    /// A colour for series `i` of `n` along a viridis-like ramp (dark purple → yellow-green).
    static func rampColor(_ i: Int, of n: Int) -> String {
        let anchors: [(Double, Double, Double)] = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (200, 210, 30)]
        let t = n <= 1 ? 0 : Double(i) / Double(n - 1)
        let pos = t * Double(anchors.count - 1)
        let k = Swift.min(Int(pos), anchors.count - 2)
        let f = pos - Double(k)
        let a = anchors[k], b = anchors[k + 1]
        func mix(_ x: Double, _ y: Double) -> Int { Int((x + (y - x) * f).rounded()) }
        return String(format: "#%02x%02x%02x", mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
    }
}

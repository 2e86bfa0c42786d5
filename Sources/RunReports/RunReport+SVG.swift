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
        /// Stroke opacity (1 opaque; a faint line of raw values under a smoothed one uses ~0.25).
        public var opacity: Double
        /// Stroke width in SVG units.
        public var lineWidth: Double
        /// Whether the series has a legend entry (a faint raw line beside its smoothed one has none).
        public var inLegend: Bool

        /// A line named `name` in `color` through `points` (solid unless `dashed`; opaque, 1.6
        /// wide and in the legend unless told otherwise).
        public init(name: String, color: String, points: [(x: Double, y: Double)], dashed: Bool = false,
                    opacity: Double = 1, lineWidth: Double = 1.6, inLegend: Bool = true) {
            self.name = name
            self.color = color
            self.points = points
            self.dashed = dashed
            self.opacity = opacity
            self.lineWidth = lineWidth
            self.inLegend = inLegend
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
        /// Whether the band has its own legend entry (bands of the same colour as their line, all
        /// of one kind, are better explained once in the plot's subtitle).
        public var inLegend: Bool

        /// A band named `name` in `color` over `points` (with a legend entry unless told otherwise).
        public init(name: String, color: String, points: [(x: Double, lower: Double, upper: Double)], inLegend: Bool = true) {
            self.name = name
            self.color = color
            self.points = points
            self.inLegend = inLegend
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
        /// A grey line under the title (how the curves were made: smoothing window, what a band is).
        public var subtitle: String?
        /// A logarithmic y axis (ticks at powers of ten); values ≤ 0 become gaps.
        public var logY: Bool
        /// x ticks at whole numbers only (steps, indices).
        public var integerX: Bool

        /// A plot of `series` over `bands`, with optional horizontal `referenceLines`, a
        /// `subtitle`, a logarithmic y axis and whole-number x ticks.
        public init(title: String, xLabel: String, yLabel: String, series: [Series], bands: [Band] = [],
                    referenceLines: [(y: Double, label: String)] = [], subtitle: String? = nil, logY: Bool = false,
                    integerX: Bool = false) {
            self.title = title
            self.xLabel = xLabel
            self.yLabel = yLabel
            self.series = series
            self.bands = bands
            self.referenceLines = referenceLines
            self.subtitle = subtitle
            self.logY = logY
            self.integerX = integerX
        }
    }

    /// A grid of values (rows: e.g. timesteps; columns: e.g. training steps) coloured on a
    /// diverging scale around a meaningful centre (blue below, red above) or a sequential one
    /// (white to dark blue). The colour range is robust: unless fixed, it ends at the 2nd and 98th
    /// percentiles of the finite values, and cells beyond take the end colour.
    public struct Heatmap: Sendable {
        /// How values map to colours.
        public enum Scale: Sendable, Equatable {
            /// Blue below `center`, white at it, red above; symmetric around it.
            case diverging(center: Double)
            /// White at `lower`, dark blue at `upper`; a nil end takes the 2nd/98th percentile.
            case sequential(lower: Double?, upper: Double?)
        }

        /// The heading (also the SVG's `<title>`).
        public var title: String
        /// The x axis's label.
        public var xLabel: String
        /// The y axis's label (what the rows are).
        public var yLabel: String
        /// Row labels, top to bottom.
        public var rows: [String]
        /// The x value of each column, ascending.
        public var columns: [Double]
        /// values[row][column].
        public var values: [[Double]]
        /// The colour scale.
        public var scale: Scale
        /// What the colours measure, with its unit (written beside the colour bar).
        public var colorLabel: String
        /// x ticks at whole numbers only (steps).
        public var integerX: Bool
        /// At most this many columns are drawn: beyond it, consecutive columns are averaged.
        public var columnLimit: Int

        /// A heatmap of `values` (one array per row, one value per column) on `scale`.
        public init(title: String, xLabel: String, yLabel: String = "", rows: [String], columns: [Double], values: [[Double]],
                    scale: Scale, colorLabel: String, integerX: Bool = true, columnLimit: Int = 300) {
            self.title = title
            self.xLabel = xLabel
            self.yLabel = yLabel
            self.rows = rows
            self.columns = columns
            self.values = values
            self.scale = scale
            self.colorLabel = colorLabel
            self.integerX = integerX
            self.columnLimit = columnLimit
        }

        /// A diverging heatmap around `center`, colour bar labelled "value".
        public init(title: String, xLabel: String, rows: [String], columns: [Double], values: [[Double]], center: Double) {
            self.init(title: title, xLabel: xLabel, rows: rows, columns: columns, values: values,
                      scale: .diverging(center: center), colorLabel: "value", integerX: false)
        }
    }

    /// Width of every figure (SVG user units).
    static let width = 600.0
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
        let step = niceNumber((hi - lo) / Double(max(count - 1, 1)), round: true)
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

    /// Whole-number ticks covering `lower…upper` (a step of at least 1, at nice numbers).
    static func integerTicks(lower: Double, upper: Double, count: Int = 6) -> (lower: Double, upper: Double, step: Double, ticks: [Double]) {
        let t = ticks(lower: lower, upper: upper, count: count)
        guard t.step < 1 else { return t }
        let lo = Foundation.floor(lower), hi = Foundation.ceil(Swift.max(upper, lower))
        let values = stride(from: lo, through: hi, by: 1).map { $0 }
        return (lo, Swift.max(hi, lo + 1), 1, values.isEmpty ? [lo] : values)
    }

    /// Ticks at powers of ten for a log axis over `lower…upper` (both log₁₀ values): bounds at
    /// whole exponents, at most about `count` ticks (every k-th decade).
    static func logTicks(lower: Double, upper: Double, count: Int = 6) -> (lower: Double, upper: Double, step: Double, ticks: [Double]) {
        var lo = Foundation.floor(lower), hi = Foundation.ceil(upper)
        if hi <= lo { lo -= 0.5; hi += 0.5; lo = Foundation.floor(lo); hi = Foundation.ceil(hi) }
        let decades = Int(hi - lo)
        let every = Swift.max(1, (decades + count - 1) / count)
        let values = stride(from: lo, through: hi, by: Double(every)).map { $0 }
        return (lo, hi, Double(every), values)
    }

    /// A power-of-ten label: "1", "10", "0.1", else "1e-6".
    static func logLabel(_ exponent: Double) -> String {
        let e = Int(exponent.rounded())
        switch e {
        case 0: return "1"
        case 1...3: return "1" + String(repeating: "0", count: e)
        case -3...(-1): return "0." + String(repeating: "0", count: -e - 1) + "1"
        default: return "1e\(e)"
        }
    }

    /// The width of a legend entry holding `text` (SVG units, 11 px sans-serif).
    static func legendWidth(_ text: String) -> Double { 30 + Double(text.count) * 6.3 }

    /// The SVG of a line plot: one `<polyline class="line">` per finite segment of each series
    /// (a lone point is a `<circle class="point">`), bands as `<polygon class="band">`. The legend
    /// sits below the axes, so it never covers data.
    public static func render(_ plot: LinePlot) -> String {
        let legendEntries = plot.bands.filter(\.inLegend).map { ($0.name, $0.color, "band") }
            + plot.series.filter(\.inLegend).map { ($0.name, $0.color, $0.dashed ? "dashed" : "line") }
        let f = PlotFrame(plot, legendTexts: legendEntries.map(\.0))
        let (left, top, plotWidth, axisBottom) = (f.left, f.top, f.plotWidth, f.axisBottom)
        var svg = "<svg class=\"plot\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 \(c(width)) \(c(f.height))\" width=\"\(Int(width))\" height=\"\(Int(f.height))\" role=\"img\" aria-label=\"\(escape(plot.title))\" font-family=\"sans-serif\" font-size=\"11\">\n"
        svg += "<title>\(escape(plot.title))</title>\n"
        svg += "<text class=\"title\" x=\"\(c(left))\" y=\"18\" font-size=\"13\" font-weight=\"600\">\(escape(plot.title))</text>\n"
        if let subtitle = plot.subtitle {
            svg += "<text class=\"subtitle\" fill=\"#666\" x=\"\(c(left))\" y=\"34\">\(escape(subtitle))</text>\n"
        }
        svg += "<rect class=\"frame\" x=\"\(c(left))\" y=\"\(c(top))\" width=\"\(c(plotWidth))\" height=\"\(c(plotHeight))\" fill=\"none\" stroke=\"#999\"/>\n"
        if !f.hasData {
            svg += "<text class=\"empty\" fill=\"#999\" font-size=\"14\" x=\"\(c(left + plotWidth / 2))\" y=\"\(c(top + plotHeight / 2))\" text-anchor=\"middle\">no finite values</text>\n"
        } else {
            svg += axes(plot, f)
            for band in plot.bands { svg += bandPolygons(band, f) }
            for s in plot.series { svg += seriesLines(s, f) }
        }
        svg += "<text class=\"axis-label\" fill=\"#555\" x=\"\(c(left + plotWidth / 2))\" y=\"\(c(axisBottom + 33))\" text-anchor=\"middle\">\(escape(plot.xLabel))</text>\n"
        svg += "<text class=\"axis-label\" fill=\"#555\" transform=\"translate(12 \(c(top + plotHeight / 2))) rotate(-90)\" text-anchor=\"middle\">\(escape(plot.yLabel + (plot.logY ? " (log scale)" : "")))</text>\n"
        svg += legend(legendEntries, f)
        svg += "</svg>\n"
        return svg
    }

    /// Where a line plot's data lands: the axes' ticks and labels (x spans exactly the data,
    /// whole numbers when asked; y widened to nice bounds, or to decades on a log axis), the plot
    /// area's position and size, and the figure's height (the legend's rows below the axis).
    struct PlotFrame {
        var hasData: Bool
        var logY: Bool
        var xt: (lower: Double, upper: Double, step: Double, ticks: [Double])
        var yt: (lower: Double, upper: Double, step: Double, ticks: [Double])
        var xLabels: [String], yLabels: [String]
        var left: Double, top: Double, plotWidth: Double, axisBottom: Double, height: Double
        /// Legend entries per row, and the width of one.
        var perRow: Int, entryWidth: Double

        init(_ plot: LinePlot, legendTexts: [String]) {
            logY = plot.logY
            let logY = plot.logY
            func ty(_ y: Double) -> Double { logY ? (y > 0 ? Foundation.log10(y) : .nan) : y }
            var xs: [Double] = [], ys: [Double] = []
            for s in plot.series {
                for p in s.points where p.x.isFinite && ty(p.y).isFinite { xs.append(p.x); ys.append(ty(p.y)) }
            }
            for b in plot.bands {
                for p in b.points where p.x.isFinite && ty(p.lower).isFinite && ty(p.upper).isFinite {
                    xs.append(p.x); ys.append(ty(p.lower)); ys.append(ty(p.upper))
                }
            }
            hasData = !xs.isEmpty
            for r in plot.referenceLines where ty(r.y).isFinite && hasData { ys.append(ty(r.y)) }
            let xLow = xs.min() ?? 0, xHigh = xs.max() ?? 1
            xt = plot.integerX ? integerTicks(lower: xLow, upper: xHigh, count: 8) : ticks(lower: xLow, upper: xHigh, count: 7)
            if hasData, xHigh > xLow {
                let slack = xt.step * 1e-9
                xt = (xLow, xHigh, xt.step, xt.ticks.filter { $0 >= xLow - slack && $0 <= xHigh + slack })
            }
            yt = logY ? logTicks(lower: ys.min() ?? 0, upper: ys.max() ?? 1) : ticks(lower: ys.min() ?? 0, upper: ys.max() ?? 1, count: 5)
            yLabels = logY ? yt.ticks.map(logLabel) : labels(yt.ticks, step: yt.step)
            xLabels = labels(xt.ticks, step: xt.step)
            let longest = yLabels.map(\.count).max() ?? 1
            left = 46 + Double(longest) * 6.2
            top = plot.subtitle == nil ? 30 : 44
            plotWidth = width - left - 16
            entryWidth = Swift.max(150, legendTexts.map(legendWidth).max() ?? 0)
            perRow = Swift.max(1, Int((width - 20) / entryWidth))
            let legendRows = (legendTexts.count + perRow - 1) / perRow
            axisBottom = top + plotHeight
            height = axisBottom + 44 + Double(legendRows) * 18 + 6
        }

        /// A data y in axis units (log₁₀ y on a log axis; NaN for y ≤ 0 there).
        func ty(_ y: Double) -> Double { logY ? (y > 0 ? Foundation.log10(y) : .nan) : y }
        /// The x pixel of a data x.
        func px(_ x: Double) -> Double { left + (x - xt.lower) / (xt.upper - xt.lower) * plotWidth }
        /// The y pixel of a value in axis units (`ty`).
        func py(_ y: Double) -> Double { axisBottom - (y - yt.lower) / (yt.upper - yt.lower) * plotHeight }
    }

    /// Grid lines and labels of the y ticks, tick marks and labels of the x ticks, reference lines
    /// (a label that would touch one already at the right end goes to the left end).
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
        var rightLabels: [Double] = []
        for r in plot.referenceLines where f.ty(r.y).isFinite {
            let y = f.py(f.ty(r.y))
            svg += "<line class=\"reference\" stroke=\"#888\" stroke-dasharray=\"4 3\" x1=\"\(c(left))\" y1=\"\(c(y))\" x2=\"\(c(left + plotWidth))\" y2=\"\(c(y))\"/>"
            let crowded = rightLabels.contains { Swift.abs($0 - y) < 11 }
            if !crowded { rightLabels.append(y) }
            let (lx, anchor) = crowded ? (left + 4, "start") : (left + plotWidth - 4, "end")
            svg += "<text class=\"reference-label\" fill=\"#666\" font-size=\"10\" x=\"\(c(lx))\" y=\"\(c(y - 3))\" text-anchor=\"\(anchor)\">\(escape(r.label))</text>\n"
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
            svg += "<polygon class=\"band\" fill-opacity=\"0.22\" fill=\"\(escape(band.color))\" points=\"\((upper + lower).joined(separator: " "))\"/>\n"
        }
        for p in band.points {
            let lower = f.ty(p.lower), upper = f.ty(p.upper)
            if p.x.isFinite && lower.isFinite && upper.isFinite { run.append((p.x, lower, upper)) } else { flush() }
        }
        flush()
        return svg
    }

    /// One polyline per finite segment of a series (decimated), a dot for a segment of one point.
    static func seriesLines(_ s: Series, _ f: PlotFrame) -> String {
        var svg = ""
        let opacity = s.opacity < 1 ? " stroke-opacity=\"\(c(s.opacity))\"" : ""
        for segment in segments(s.points.map { ($0.x, f.ty($0.y)) }).map({ decimated($0) }) {
            if segment.count == 1 {
                svg += "<circle class=\"point\" data-series=\"\(escape(s.name))\" cx=\"\(c(f.px(segment[0].x)))\" cy=\"\(c(f.py(segment[0].y)))\" r=\"2.5\" fill=\"\(escape(s.color))\"\(s.opacity < 1 ? " fill-opacity=\"\(c(s.opacity))\"" : "")/>\n"
            } else {
                let points = segment.map { "\(c(f.px($0.x))),\(c(f.py($0.y)))" }.joined(separator: " ")
                svg += "<polyline class=\"line\(s.dashed ? " dashed" : "")\" fill=\"none\" stroke-width=\"\(c(s.lineWidth))\"\(opacity)\(s.dashed ? " stroke-dasharray=\"5 3\"" : "") data-series=\"\(escape(s.name))\" stroke=\"\(escape(s.color))\" points=\"\(points)\"/>\n"
            }
        }
        return svg
    }

    /// The legend rows below the x axis: a swatch (band, line or dashed line) and the name.
    static func legend(_ entries: [(String, String, String)], _ f: PlotFrame) -> String {
        var svg = ""
        for (i, entry) in entries.enumerated() {
            let x = 10 + Double(i % f.perRow) * f.entryWidth, y = f.axisBottom + 52 + Double(i / f.perRow) * 18
            switch entry.2 {
            case "band":
                svg += "<rect class=\"band\" fill-opacity=\"0.22\" x=\"\(c(x))\" y=\"\(c(y - 9))\" width=\"18\" height=\"10\" fill=\"\(escape(entry.1))\"/>"
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

    /// The sequential colour of `t` in 0…1: near-white (0) through mid blue to dark blue (1).
    static func sequentialColor(_ t: Double) -> String {
        let u = Swift.min(1, Swift.max(0, t))
        let stops: [(Double, Double, Double)] = [(247, 251, 255), (107, 174, 214), (8, 48, 107)]
        let pos = u * 2, k = Swift.min(Int(pos), 1), f = pos - Double(k)
        let a = stops[k], b = stops[k + 1]
        func mix(_ x: Double, _ y: Double) -> Int { Int((x + (y - x) * f).rounded()) }
        return String(format: "#%02x%02x%02x", mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
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

    /// The colour range of a heatmap: the value at the bar's left end, at its right end, and
    /// whether any finite value lies outside (drawn in the end colour).
    static func colorRange(_ map: Heatmap) -> (lower: Double, upper: Double, clipped: Bool) {
        let finite = map.values.flatMap { $0 }.filter(\.isFinite).sorted()
        guard let first = finite.first, let last = finite.last else {
            if case let .diverging(center) = map.scale { return (center - 1, center + 1, false) }
            return (0, 1, false)
        }
        let p2 = SampleQuantiles.quantile(sorted: finite, level: 0.02), p98 = SampleQuantiles.quantile(sorted: finite, level: 0.98)
        switch map.scale {
        case let .diverging(center):
            var m = Swift.max(Swift.abs(p2 - center), Swift.abs(p98 - center))
            if !(m > 0) { m = Swift.max(Swift.abs(first - center), Swift.abs(last - center)) }
            if !(m > 0) { m = center == 0 ? 1 : Swift.abs(center) * 1e-6 }
            return (center - m, center + m, first < center - m || last > center + m)
        case let .sequential(lower, upper):
            var lo = lower ?? p2, hi = upper ?? p98
            if !(hi > lo) { (lo, hi) = (Swift.min(lo, first), Swift.max(hi, last)) }
            if !(hi > lo) { hi = lo + (lo == 0 ? 1 : Swift.abs(lo) * 1e-6) }
            return (lo, hi, first < lo || last > hi)
        }
    }

    /// The SVG of a heatmap: one `<rect class="cell">` per (row, column), non-finite cells grey,
    /// whole-number x ticks at the columns they name, and a colour bar with ticks in the units of
    /// the values, saying when the colours saturate.
    public static func render(_ input: Heatmap) -> String {
        let map = binned(input, limit: input.columnLimit)
        let range = colorRange(map)
        func color(_ v: Double) -> String { cellColor(v, map.scale, range) }
        let longest = map.rows.map(\.count).max() ?? 1
        let left = 30 + Double(longest) * 6.2, right = 16.0, top = 30.0
        let plotWidth = width - left - right
        let rowHeight = Swift.max(10, Swift.min(24, 220 / Double(Swift.max(map.rows.count, 1))))
        let gridHeight = rowHeight * Double(map.rows.count)
        let bottom = top + gridHeight
        let height = bottom + 100
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
                svg += "<rect class=\"cell\" x=\"\(c(left + Double(k) * cellWidth))\" y=\"\(c(y))\" width=\"\(c(cellWidth + 0.3))\" height=\"\(c(rowHeight))\" fill=\"\(color(v))\">"
                if withTitles { svg += "<title>\(escape(label)), \(escape(map.xLabel)) \(escape(String(format: "%g", x))): \(escape(v.isFinite ? String(format: "%.6g", v) : "not finite"))</title>" }
                svg += "</rect>"
            }
            svg += "\n"
        }
        svg += "<rect class=\"frame\" x=\"\(c(left))\" y=\"\(c(top))\" width=\"\(c(plotWidth))\" height=\"\(c(gridHeight))\" fill=\"none\" stroke=\"#999\"/>\n"
        if !map.yLabel.isEmpty {
            svg += "<text class=\"axis-label\" fill=\"#555\" transform=\"translate(12 \(c(top + gridHeight / 2))) rotate(-90)\" text-anchor=\"middle\">\(escape(map.yLabel))</text>\n"
        }
        svg += heatmapXTicks(map, left: left, cellWidth: cellWidth, bottom: bottom)
        svg += "<text class=\"axis-label\" fill=\"#555\" x=\"\(c(left + plotWidth / 2))\" y=\"\(c(bottom + 30))\" text-anchor=\"middle\">\(escape(map.xLabel))</text>\n"
        svg += colorBar(map, range: range, left: left, top: bottom + 58, plotWidth: plotWidth)
        svg += "</svg>\n"
        return svg
    }

    /// The colour of a heatmap cell: grey when not finite, else on `scale` over `range`.
    static func cellColor(_ v: Double, _ scale: Heatmap.Scale, _ range: (lower: Double, upper: Double, clipped: Bool)) -> String {
        guard v.isFinite else { return "#d0d0d0" }
        switch scale {
        case let .diverging(center): return divergingColor((v - center) / (range.upper - center))
        case .sequential: return sequentialColor((v - range.lower) / (range.upper - range.lower))
        }
    }

    /// A heatmap's x ticks, at the cell centre of the column holding the value (interpolated
    /// between columns; whole numbers when the map asks).
    static func heatmapXTicks(_ map: Heatmap, left: Double, cellWidth: Double, bottom: Double) -> String {
        var svg = ""
        if let first = map.columns.first, let last = map.columns.last {
            func position(_ t: Double) -> Double? {
                if map.columns.count == 1 { return t == first ? left + cellWidth / 2 : nil }
                guard t >= first, t <= last else { return nil }
                let k = Swift.min(map.columns.lastIndex { $0 <= t } ?? 0, map.columns.count - 2)
                let span = map.columns[k + 1] - map.columns[k]
                let f = span > 0 ? (t - map.columns[k]) / span : 0
                return left + (Double(k) + 0.5 + f) * cellWidth
            }
            let xt = map.integerX ? integerTicks(lower: first, upper: last, count: 8) : ticks(lower: first, upper: last, count: 7)
            for (t, label) in zip(xt.ticks, labels(xt.ticks, step: xt.step)) {
                guard let x = position(t) else { continue }
                svg += "<line class=\"tickmark\" stroke=\"#999\" x1=\"\(c(x))\" y1=\"\(c(bottom))\" x2=\"\(c(x))\" y2=\"\(c(bottom + 5))\"/>"
                svg += "<text class=\"tick\" x=\"\(c(x))\" y=\"\(c(bottom + 16))\" text-anchor=\"middle\">\(escape(label))</text>\n"
            }
        }
        return svg
    }

    /// The colour bar under a heatmap at `top`: 40 stops over the colour range, ticks in the
    /// values' units (the centre of a diverging scale always among them), the caption saying what
    /// the colours measure and whether they saturate, and the swatch for missing values.
    static func colorBar(_ map: Heatmap, range: (lower: Double, upper: Double, clipped: Bool), left: Double, top barY: Double,
                         plotWidth: Double) -> String {
        func color(_ v: Double) -> String { cellColor(v, map.scale, range) }
        var svg = ""
        let barX = left, barWidth = Swift.min(320, plotWidth - 150)
        let stops = 40
        for i in 0..<stops {
            let v = range.lower + (range.upper - range.lower) * (Double(i) + 0.5) / Double(stops)
            svg += "<rect class=\"scale\" x=\"\(c(barX + Double(i) * barWidth / Double(stops)))\" y=\"\(c(barY))\" width=\"\(c(barWidth / Double(stops) + 0.3))\" height=\"10\" fill=\"\(color(v))\"/>"
        }
        svg += "\n"
        var barTicks = ticks(lower: range.lower, upper: range.upper, count: 5)
        let slack = barTicks.step * 1e-9
        barTicks.ticks = barTicks.ticks.filter { $0 >= range.lower - slack && $0 <= range.upper + slack }
        if case let .diverging(center) = map.scale, !barTicks.ticks.contains(where: { Swift.abs($0 - center) <= slack }) {
            barTicks.ticks = (barTicks.ticks + [center]).sorted()
        }
        for (t, label) in zip(barTicks.ticks, labels(barTicks.ticks, step: barTicks.step)) {
            let x = barX + (t - range.lower) / (range.upper - range.lower) * barWidth
            svg += "<line class=\"tickmark\" stroke=\"#666\" x1=\"\(c(x))\" y1=\"\(c(barY + 10))\" x2=\"\(c(x))\" y2=\"\(c(barY + 13))\"/>"
            svg += "<text class=\"tick\" x=\"\(c(x))\" y=\"\(c(barY + 24))\" text-anchor=\"middle\">\(escape(label))</text>"
        }
        let caption = map.colorLabel + (range.clipped ? " (colours saturate beyond the 2nd/98th percentile)" : "")
        svg += "\n<text class=\"scale-label\" fill=\"#555\" x=\"\(c(barX))\" y=\"\(c(barY - 5))\">\(escape(caption))</text>"
        svg += "<rect class=\"scale-missing\" x=\"\(c(barX + barWidth + 20))\" y=\"\(c(barY))\" width=\"10\" height=\"10\" fill=\"#d0d0d0\"/>"
        svg += "<text class=\"tick\" x=\"\(c(barX + barWidth + 34))\" y=\"\(c(barY + 9))\">no value</text>\n"
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

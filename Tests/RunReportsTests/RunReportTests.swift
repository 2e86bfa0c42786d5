import Foundation
import SafeTensors
import TestSupport
import Testing
import TensorRuntime
import GRPOGuard
@testable import RunReports

/// `RunReport`: a synthetic run folder → the HTML page (one SVG per plot, the right polylines and
/// points, escaped text, NaN as gaps), and clear errors for malformed diagnostics lines.
@Suite struct RunReportTests {
    let dir = TemporaryDirectory(prefix: "flowguard-report")

    /// One diagnostics line with `timesteps` trained steps; `ratio` replaces timestep 0's ratio mean;
    /// `signed` adds `clip_fraction_positive`/`_negative` to every timestep (without it the line
    /// is as written before those fields existed); `update` is the update within the rollout (0:
    /// on-policy); `quantiles` adds per-timestep ratio quantiles (raw r below 1 with a spread
    /// growing with j, r̂ centred on 1).
    static func line(step: Int, update: Int = 0, timesteps: Int = 3, reward: String? = nil, ratio: String? = nil,
                     signed: (String, String)? = nil, quantiles: Bool = false) -> String {
        let ts = (0..<timesteps).map { j in
            let sigma = 1 - Double(j) / Double(timesteps + 1)
            let r = j == 0 && ratio != nil ? ratio! : String(1 - 1e-6 * Double(j + 1) * Double(step))
            let spread = 1e-6 * Double(j + 1)
            let q = quantiles
                ? #""ratio_quantiles":[\#([-2.0, -1, 0, 1, 2].map { String(1 - spread + $0 * spread) }.joined(separator: ","))],"#
                    + #""normalized_ratio_quantiles":[\#([-2.0, -1, 0, 1, 2].map { String(1 + $0 * 1e-6) }.joined(separator: ","))],"#
                : ""
            return #"{"index":\#(j),"sigma":\#(sigma),"ratio_mean":\#(r),"ratio_std":\#(1e-6 * Double(j + 1)),"#
                + #""normalized_ratio_mean":\#(1 + 1e-7 * Double(j)),"normalized_ratio_std":1e-6,"clip_fraction_above":0.25,"#
                + #""clip_fraction_below":0.5,"# + q
                + (signed.map { #""clip_fraction_positive":\#($0.0),"clip_fraction_negative":\#($0.1),"# } ?? "")
                + #""approx_kl":\#(1e-9 * Double(step)),"grad_norm":\#(0.1 * Double(j + 1)),"loss":-0.01}"#
        }.joined(separator: ",")
        return #"{"step":\#(step),"update":\#(update),"optimizer_step":\#(step + update),"reward_mean":\#(reward ?? String(0.1 * Double(step))),"#
            + #""reward_std":0.05,"loss":-0.01,"lr":0.0001,"grad_norm":0.5,"ratio_mean":1.0,"normalized_ratio_mean":1.0,"#
            + #""clip_fraction_above":0.25,"clip_fraction_below":0.5,"approx_kl":0.0,"timesteps":[\#(ts)],"seconds":1.5}"#
    }

    /// A run folder with `lines` as its diagnostics and a config holding markup characters.
    func makeRun(_ lines: [String], name: String = "run") throws -> String {
        let run = dir.file(name)
        try FileManager.default.createDirectory(atPath: run + "/checkpoints", withIntermediateDirectories: true)
        try lines.map { $0 + "\n" }.joined().write(toFile: run + "/diagnostics.jsonl", atomically: true, encoding: .utf8)
        let prompts = try PromptSet(family: .sd3, prompts: ["a <red> & \"blue\" cube", "plain"],
                                promptEmbeds: Tensor(shape: [2, 1, 2], scalars: [1, 2, 3, 4]),
                                pooledPromptEmbeds: Tensor(shape: [2, 1], scalars: [1, 2]), negativePrompts: nil,
                                negativePromptEmbeds: nil, negativePooledPromptEmbeds: nil, encoder: nil)
        try prompts.write(to: run + "/prompts.safetensors")
        let config = #"{"model":"m.safetensors","prompts":"\#(run)/prompts.safetensors","reward":"python3 score.py --tag <b>&\"x\"</b>","objective":"grpo-guard","#
            + #""group_size":8,"prompts_per_step":1,"sampling_steps":10,"steps":20,"clip_range":null}"#
        try config.write(toFile: run + "/config.json", atomically: true, encoding: .utf8)
        return run
    }

    static func count(_ needle: String, in text: String) -> Int { text.components(separatedBy: needle).count - 1 }

    /// The `points` attributes of the polylines of the plot whose title is `title`.
    static func polylines(in html: String, plot title: String) -> [[String]] {
        guard let start = html.range(of: "<title>\(title)</title>") else { return [] }
        let svg = html[start.upperBound...].prefix { _ in true }
        let end = svg.range(of: "</svg>")!.lowerBound
        let body = String(svg[..<end])
        return body.components(separatedBy: "<polyline ").dropFirst().map { piece in
            let p = piece.range(of: "points=\"")!.upperBound
            let q = piece[p...].firstIndex(of: "\"")!
            return piece[p..<q].split(separator: " ").map(String.init)
        }
    }

    /// The fill colours of the cells of the heatmap whose title is `title`.
    static func cellColors(in html: String, plot title: String) -> [String] {
        guard let start = html.range(of: "<title>\(title)</title>") else { return [] }
        let rest = html[start.upperBound...]
        let body = rest[..<rest.range(of: "</svg>")!.lowerBound]
        return body.components(separatedBy: "<rect class=\"cell\"").dropFirst().map { piece in
            let p = piece.range(of: "fill=\"")!.upperBound
            return String(piece[p..<piece[p...].firstIndex(of: "\"")!])
        }
    }

    @Test func rendersOneSVGPerPlotWithAPointPerStep() throws {
        let run = try makeRun((1...5).map { Self.line(step: $0) })
        let (report, output) = try RunReport.write(run: run)
        #expect(output == run + "/report.html")
        let html = try String(contentsOfFile: output, encoding: .utf8)
        #expect(html.hasPrefix("<!DOCTYPE html>") && html.hasSuffix("</html>\n"))
        #expect(report.records.count == 5)
        // One update per rollout (all on-policy): no ratio views; 6 line plots (reward, two of
        // clip fractions, KL, gradient norm, loss) and 6 heatmaps (4 clip fractions, gradient
        // norm, loss per timestep).
        #expect(Self.count("<svg class=\"plot\"", in: html) == 6)
        #expect(Self.count("<svg class=\"heatmap\"", in: html) == 6)
        #expect(Self.count("<svg", in: html) == 12)
        #expect(html.contains("Every update of this run is on-policy"))
        // Self-contained: no scripts, no external references.
        #expect(!html.contains("<script") && !html.contains("href=") && !html.contains("src="))
        // Reward: the line of 5 points (too few steps to smooth), plus its band.
        let reward = Self.polylines(in: html, plot: "Rollout reward per training step")
        #expect(reward.count == 1 && reward[0].count == 5)
        #expect(Self.count("<polygon class=\"band\"", in: html) == 1)
        // Heatmaps: 3 timesteps × 5 steps per map.
        #expect(Self.count("<rect class=\"cell\"", in: html) == 6 * 15)
        #expect(html.contains("j=2 σ=0.500"))
        // The header: checkpoints, exports and config.
        #expect(html.contains("Checkpoints") && html.contains("None yet"))
        #expect(html.contains("1 prompt(s) × G = 8 samples × T = 10 steps"))
    }

    /// A record with signed clip fractions goes through the log's JSON line and back unchanged.
    @Test func signedClipFractionsRoundTripThroughTheLog() throws {
        func diagnostics(_ p: Double, _ n: Double) -> StepDiagnostics {
            StepDiagnostics(ratioMean: 0.99, ratioStd: 0.01, normalizedRatioMean: 1.0001, normalizedRatioStd: 1e-6,
                            clipFractionAbove: 0.125, clipFractionBelow: 0.625, clipFractionPositive: p, clipFractionNegative: n,
                            approximateKL: 1e-5)
        }
        let record = UpdateRecord(step: 2, update: 1, optimizerStep: 4, rewardMean: 0.5, rewardStd: 0.25, loss: -0.01,
                                  learningRate: 1e-4, gradientNorm: 0.75,
                                  timesteps: [TimestepRecord(index: 0, sigma: 1, diagnostics: diagnostics(0.25, 0.875), gradientNorm: 0.5, loss: -0.02),
                                              TimestepRecord(index: 3, sigma: 0.5, diagnostics: diagnostics(1.0 / 3, 0), gradientNorm: 0.25, loss: 0)],
                                  seconds: 2.5)
        let json = record.json
        #expect(json["clip_fraction_positive"]?.doubleValue == (0.25 + 1.0 / 3) / 2)
        #expect(json["clip_fraction_negative"]?.doubleValue == 0.875 / 2)
        #expect(json["timesteps"]?.arrayValue?[1]["clip_fraction_positive"]?.doubleValue == 1.0 / 3)
        #expect(json["timesteps"]?.arrayValue?[0]["clip_fraction_negative"]?.doubleValue == 0.875)
        let run = try makeRun([json.compactText])
        let report = try RunReport.load(run: run)
        #expect(report.records == [record])
        #expect(report.recordsWithoutSignedClipFractions == 0)
        #expect(!report.html().contains("written without"))
    }

    /// Lines written before the signed fractions existed still load: the fields read as 0, the
    /// records are counted, and the page says so. A present but malformed value is still an error.
    @Test func linesWithoutSignedClipFractionsReadAsZero() throws {
        let partial = Self.line(step: 3, signed: ("0.5", "0.25")).replacingOccurrences(of: #""clip_fraction_negative":0.25,"#, with: "")
        let run = try makeRun([Self.line(step: 1), Self.line(step: 2, signed: ("0.5", "0.25")), partial])
        let report = try RunReport.load(run: run)
        #expect(report.records.count == 3)
        #expect(report.records[0].timesteps.allSatisfy { $0.diagnostics.clipFractionPositive == 0 && $0.diagnostics.clipFractionNegative == 0 })
        #expect(report.records[1].timesteps.allSatisfy { $0.diagnostics.clipFractionPositive == 0.5 && $0.diagnostics.clipFractionNegative == 0.25 })
        #expect(report.records[2].timesteps.allSatisfy { $0.diagnostics.clipFractionPositive == 0.5 && $0.diagnostics.clipFractionNegative == 0 })
        #expect(report.records[0].timesteps.allSatisfy { $0.diagnostics.clipFractionAbove == 0.25 })
        #expect(report.recordsWithoutSignedClipFractions == 2)
        #expect(report.html().contains("2 of 3 record(s) were written without"))
        // null reads as NaN like every other number.
        let nullRun = try makeRun([Self.line(step: 1, signed: ("null", "0"))], name: "null")
        #expect(try RunReport.load(run: nullRun).records[0].timesteps[0].diagnostics.clipFractionPositive.isNaN)
        for (k, bad) in [Self.line(step: 2, signed: (#""high""#, "0")), Self.line(step: 2, signed: ("0", "[1]"))].enumerated() {
            let badRun = try makeRun([Self.line(step: 1), bad], name: "bad-signed\(k)")
            do {
                _ = try RunReport.load(run: badRun)
                Issue.record("case \(k) was accepted")
            } catch {
                #expect(error.description.hasPrefix("\(badRun)/diagnostics.jsonl, line 2: timesteps[0]: \"clip_fraction_"), "\(error.description)")
                #expect(error.description.contains("must be a number"), "\(error.description)")
            }
        }
    }

    /// The page draws the clip fractions by advantage sign: overall (two lines) and per timestep.
    @Test func rendersTheClipFractionsByAdvantageSign() throws {
        let run = try makeRun((1...4).map { Self.line(step: $0, signed: ("0", $0 % 2 == 0 ? "0.75" : "0.5")) })
        let html = try RunReport.load(run: run).html()
        let overall = Self.polylines(in: html, plot: "clip fractions by advantage sign")
        #expect(overall.count == 2 && overall.allSatisfy { $0.count == 4 })
        #expect(html.contains("data-series=\"A &gt; 0, above 1 + ε\"") && html.contains("data-series=\"A &lt; 0, below 1 − ε\""))
        // The positive line is flat (all 0), the negative one alternates.
        #expect(Set(overall[0].map { $0.split(separator: ",")[1] }).count == 1)
        #expect(Set(overall[1].map { $0.split(separator: ",")[1] }).count == 2)
        // Per timestep: heatmaps of 3 timesteps × 4 steps; the positive one is one colour (all 0),
        // the negative one two (0.5 and 0.75).
        let positive = Self.cellColors(in: html, plot: "clip fraction of A &gt; 0 samples above 1 + ε per timestep")
        let negative = Self.cellColors(in: html, plot: "clip fraction of A &lt; 0 samples below 1 − ε per timestep")
        #expect(positive.count == 12 && negative.count == 12)
        #expect(Set(positive).count == 1 && Set(negative).count == 2)
        #expect(html.contains("among the samples with A &gt; 0, the fraction above 1 + ε"))
        #expect(!html.contains("written without"))
    }

    @Test func escapesTextFromTheRun() throws {
        let run = try makeRun([Self.line(step: 1)], name: "a<b>&c")
        let (_, output) = try RunReport.write(run: run)
        let html = try String(contentsOfFile: output, encoding: .utf8)
        #expect(html.contains("python3 score.py --tag &lt;b&gt;&amp;&quot;x&quot;&lt;/b&gt;"))
        #expect(html.contains("<li>a &lt;red&gt; &amp; &quot;blue&quot; cube</li>"))
        #expect(!html.contains("<red>"))
        #expect(!html.contains("<b>"))
        #expect(html.contains("a&lt;b&gt;&amp;c"))
        #expect(!html.contains("a<b>&c"))
    }

    @Test func nonFiniteValuesAreGaps() throws {
        // Two updates per rollout. Step 3's reward is NaN (written as Swift prints it); the
        // off-policy update of step 4 has a null timestep-0 ratio, that of step 5 −inf.
        var lines = (1...6).flatMap { [Self.line(step: $0), Self.line(step: $0, update: 1)] }
        lines[4] = Self.line(step: 3, reward: "nan")
        lines[5] = Self.line(step: 3, update: 1, reward: "nan")
        lines[7] = Self.line(step: 4, update: 1, ratio: "null")
        lines[9] = Self.line(step: 5, update: 1, ratio: "-inf")
        let run = try makeRun(lines)
        let (report, output) = try RunReport.write(run: run)
        #expect(report.records[4].rewardMean.isNaN)
        let html = try String(contentsOfFile: output, encoding: .utf8)
        let reward = Self.polylines(in: html, plot: "Rollout reward per training step")
        #expect(reward.map(\.count) == [2, 3])
        // The mean-r heatmap: 3 timesteps × 6 steps, grey exactly where timestep 0 had no finite mean.
        let cells = Self.cellColors(in: html, plot: "mean of r per timestep")
        #expect(cells.count == 18)
        #expect(cells.indices.filter { cells[$0] == "#d0d0d0" } == [3, 4])
        // An all-NaN plot says so instead of crashing.
        let svg = ReportSVG.render(ReportSVG.LinePlot(title: "t", xLabel: "x", yLabel: "y",
                                                      series: [.init(name: "s", color: "#000", points: [(1, .nan), (2, .infinity)])]))
        #expect(svg.contains("no finite values"))
        #expect(!Self.hasNonFiniteText(html))
    }

    /// Whether the page shows a non-finite number anywhere (text or attribute): "nan", "inf",
    /// "infinity" as whole words, any case.
    static func hasNonFiniteText(_ html: String) -> Bool {
        html.range(of: #"(?i)(?<![a-z])(nan|inf|infinity)(?![a-z])"#, options: .regularExpression) != nil
    }

    @Test func malformedLinesNameTheFileAndLine() throws {
        let cases: [(String, String)] = [
            (#"{"step":2,"#, "not valid JSON"),
            ("[1,2]", "not a JSON object"),
            (Self.line(step: 2).replacingOccurrences(of: #""reward_std":0.05,"#, with: ""), "\"reward_std\" is missing"),
            (Self.line(step: 2).replacingOccurrences(of: #""reward_mean":0.2"#, with: #""reward_mean":"high""#), "\"reward_mean\" must be a number, found \"high\""),
            (Self.line(step: 2).replacingOccurrences(of: #""sigma":1.0,"#, with: ""), "timesteps[0]: \"sigma\" is missing"),
        ]
        for (k, (bad, reason)) in cases.enumerated() {
            let run = try makeRun([Self.line(step: 1), "", bad, Self.line(step: 3)], name: "bad\(k)")
            do {
                _ = try RunReport.write(run: run)
                Issue.record("case \(k) was accepted")
            } catch {
                #expect(error.description.hasPrefix("\(run)/diagnostics.jsonl, line 3: "), "\(error.description)")
                #expect(error.description.contains(reason), "\(error.description)")
            }
            #expect(!FileManager.default.fileExists(atPath: run + "/report.html"))
        }
    }

    @Test func anIncompleteLastLineIsLeftOut() throws {
        let run = try makeRun([Self.line(step: 1)])
        let handle = FileHandle(forWritingAtPath: run + "/diagnostics.jsonl")!
        handle.seekToEndOfFile()
        handle.write(Data(#"{"step":2,"upd"#.utf8))
        handle.closeFile()
        let report = try RunReport.load(run: run)
        #expect(report.records.count == 1 && report.skippedIncompleteLine)
        #expect(report.html().contains("incomplete line"))
    }

    @Test func anEmptyRunSaysThereIsNothingYet() throws {
        let run = try makeRun([])
        let (report, output) = try RunReport.write(run: run, output: dir.file("page.html"))
        #expect(output == dir.file("page.html") && report.records.isEmpty)
        let html = try String(contentsOfFile: output, encoding: .utf8)
        #expect(html.contains("Nothing to show yet"))
        #expect(!html.contains("<svg"))
        let summary = report.summary(output: output)
        #expect(summary["steps"] == .int(0) && summary["final_reward_mean"] == .null)
    }

    @Test func notARunFolder() throws {
        #expect(throws: ReportError.self) { try RunReport.load(run: dir.file("absent")) }
        try FileManager.default.createDirectory(atPath: dir.file("plain"), withIntermediateDirectories: true)
        do {
            _ = try RunReport.load(run: dir.file("plain"))
            Issue.record("accepted")
        } catch {
            #expect(error.description == "\(dir.file("plain")): is not a run folder (it holds no diagnostics.jsonl, config.json or checkpoints/)")
        }
    }

    @Test func longSeriesAreDecimatedKeepingSpikes() {
        var points = (0..<10_000).map { (x: Double($0), y: sin(Double($0) / 100)) }
        points[4321].y = 50
        let d = ReportSVG.decimated(points)
        #expect(d.count <= 1500 && d.count >= 750)
        #expect(d.contains { $0.x == 4321 && $0.y == 50 })
        #expect(zip(d, d.dropFirst()).allSatisfy { $0.x < $1.x })
        #expect(ReportSVG.decimated(Array(points.prefix(100))).count == 100)
    }

    @Test func ticksAreNiceNumbers() {
        let t = ReportSVG.ticks(lower: 0.13, upper: 9.7)
        #expect(t.ticks == [0, 2, 4, 6, 8, 10])
        #expect(ReportSVG.labels(t.ticks, step: t.step) == ["0", "2", "4", "6", "8", "10"])
        let r = ReportSVG.ticks(lower: 0.999996, upper: 1.000001)
        #expect(r.lower <= 0.999996 && r.upper >= 1.000001 && r.ticks.count <= 8)
        #expect(ReportSVG.labels(r.ticks, step: r.step).contains("1.000000"))
        let k = ReportSVG.ticks(lower: 0, upper: 3e-9)
        #expect(ReportSVG.labels(k.ticks, step: k.step).first == "0" && ReportSVG.labels(k.ticks, step: k.step).last == "3e-09")
        let flat = ReportSVG.ticks(lower: 2, upper: 2)
        #expect(flat.lower < 2 && flat.upper > 2)
    }
}

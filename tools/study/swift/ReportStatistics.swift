import Foundation
import GRPOGuard
import RunReports

// The study report's inputs and statistics: reading the work folder (pretrain.json, each run's
// config.json, diagnostics.jsonl and gold.jsonl) and the seed, timestep and equal-proxy
// summaries that `StudyReport` draws and tabulates. Nothing here writes files.

/// Why the study report cannot be written; the description is the sentence the user sees.
enum StudyReportError: Error, CustomStringConvertible {
    /// No usable run of a method: each expected folder with the reason it was not used.
    case noRuns(method: String, folders: [(path: String, reason: String)])
    /// A file of a run is unreadable or not what the study writes.
    case unreadable(path: String, reason: String)
    /// A file the trainer wrote is invalid (the message names it).
    case invalid(String)
    /// The report or a figure could not be written.
    case write(path: String, reason: String)

    var description: String {
        switch self {
        case let .noRuns(method, folders):
            let list = folders.map { "\($0.path) (\($0.reason))" }.joined(separator: "; ")
            return "no finished run of method '\(method)': \(list)"
        case let .unreadable(path, reason): return "\(path): \(reason)"
        case let .invalid(message): return message
        case let .write(path, reason): return "cannot write \(path): \(reason)"
        }
    }
}

// MARK: - metrics

/// A value of `gold.jsonl`: the proxy reward or one of the gold metrics the optimizer never sees.
enum GoldMetric: String, CaseIterable {
    case proxy, quality, hack
    case excessNLL = "excess_nll"
    case offManifold = "off_manifold"
    case classAccuracy = "class_accuracy"
    case diversity

    /// The gold metrics (everything but the proxy), in the report's order.
    static let gold: [GoldMetric] = [.quality, .excessNLL, .offManifold, .diversity, .classAccuracy, .hack]
    /// The metrics of the "equal proxy" plots and findings.
    static let equalProxy: [GoldMetric] = [.excessNLL, .offManifold, .quality, .diversity]

    /// The key in gold.jsonl.
    var key: String { rawValue }

    /// A short axis label.
    var label: String {
        switch self {
        case .proxy: return "proxy reward R"
        case .quality: return "quality z_q"
        case .hack: return "hack h·x/√λ"
        case .excessNLL: return "excess NLL per element"
        case .offManifold: return "off-manifold RMS / σ"
        case .classAccuracy: return "class accuracy"
        case .diversity: return "diversity (std of z)"
        }
    }

    /// Whether a larger value is better (the data's value for the two "1 for data" metrics is
    /// the best the base model can approach, so smaller off-manifold and larger diversity win).
    var higherIsBetter: Bool {
        switch self {
        case .proxy, .quality, .classAccuracy, .diversity: return true
        case .hack, .excessNLL, .offManifold: return false
        }
    }

    /// The metric's value on samples of the true data distribution, where it has a fixed one.
    var dataValue: Double? {
        switch self {
        case .excessNLL: return 0
        case .offManifold, .diversity, .classAccuracy: return 1
        case .proxy, .quality, .hack: return nil
        }
    }
}

/// One evaluation of a run: one line of gold.jsonl.
struct Evaluation {
    var step: Int
    var values: [GoldMetric: Double]

    /// The metric's value (NaN when the line lacks it).
    subscript(_ metric: GoldMetric) -> Double { values[metric] ?? .nan }
}

// MARK: - runs

/// The pretraining summary of pretrain.json.
struct PretrainSummary {
    var seconds: Double
    var threads: Int
    var curve: [(step: Int, loss: Double)]
}

/// One finished method × seed run, read from its folder.
struct StudyRunData {
    var seed: UInt64
    var folder: String
    /// The objective and clip range the run's config.json records.
    var objective: ObjectiveKind
    var clipRange: Double
    /// Evaluations sorted by step (step 0 is the base model).
    var evaluations: [Evaluation]
    /// Every optimizer step's record, in file order.
    var records: [UpdateRecord]
    /// diagnostics.jsonl ended in an incomplete line that was skipped.
    var skippedIncompleteLine: Bool

    /// The off-policy updates (`update ≥ 1`): the first update of a rollout has r = 1 exactly.
    var offPolicy: [UpdateRecord] { records.filter { $0.update >= 1 } }

    /// The step of the last evaluation.
    var lastStep: Int { evaluations.last?.step ?? 0 }
}

/// A method with the runs found for it (sorted by seed).
struct MethodRuns {
    var method: Method
    var runs: [StudyRunData]
    /// The seeds the settings ask for that have no usable run, with the reason.
    var missing: [(seed: UInt64, path: String, reason: String)]

    /// Whether the clipped ratio is r̂ (GRPO-Guard objective) rather than the raw r.
    var clipsNormalized: Bool { (runs.first?.objective ?? .flowGRPO) == .grpoGuard }
    /// The clip range ε of the runs.
    var clipRange: Double { runs.first?.clipRange ?? .nan }
    /// The symbol of the clipped ratio.
    var clippedSymbol: String { clipsNormalized ? "r̂" : "r" }
}

/// Everything the report reads from the work folder.
struct StudyData {
    var pretrain: PretrainSummary?
    /// In the settings' method order.
    var methods: [MethodRuns]
    /// Things in the data that look wrong, one sentence each.
    var warnings: [String]

    /// Reads every method × seed run the settings name. A seed whose run is missing or unfinished
    /// is left out (and listed); a method without any usable run is an error naming its folders.
    static func load(settings: StudySettings, folder: StudyFolder) throws -> StudyData {
        var warnings: [String] = []
        var methods: [MethodRuns] = []
        for method in try settings.selectedMethods {
            var group = MethodRuns(method: method, runs: [], missing: [])
            for seed in settings.seeds.sorted() {
                let path = folder.run(method.name, seed)
                if let reason = unfinishedReason(path) {
                    group.missing.append((seed, path, reason))
                    continue
                }
                let run = try loadRun(path: path, seed: seed)
                if run.objective.rawValue != method.objective {
                    warnings.append("\(path): config.json has objective \(run.objective.rawValue), but method \(method.name) uses \(method.objective).")
                }
                if run.skippedIncompleteLine { warnings.append("\(path)/diagnostics.jsonl ends in an incomplete line (skipped).") }
                group.runs.append(run)
            }
            guard !group.runs.isEmpty else {
                throw StudyReportError.noRuns(method: method.name, folders: group.missing.map { ($0.path, $0.reason) })
            }
            for m in group.missing {
                warnings.append("\(method.name) seed \(m.seed) left out: \(m.path) (\(m.reason)); this method uses \(group.runs.count) of \(settings.seeds.count) seeds.")
            }
            methods.append(group)
        }
        let pretrain = FileManager.default.fileExists(atPath: folder.pretrainCurve) ? try loadPretrain(folder.pretrainCurve) : nil
        if pretrain == nil { warnings.append("\(folder.pretrainCurve) is missing: pretraining time unknown.") }
        warnings += consistencyWarnings(methods, settings: settings)
        return StudyData(pretrain: pretrain, methods: methods, warnings: warnings)
    }

    /// Why the run folder cannot be used, or nil when it holds all three files.
    static func unfinishedReason(_ path: String) -> String? {
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isFolder), isFolder.boolValue else { return "no such folder" }
        let absent = ["config.json", "diagnostics.jsonl", "gold.jsonl"].filter { !FileManager.default.fileExists(atPath: path + "/" + $0) }
        return absent.isEmpty ? nil : "unfinished: no \(absent.joined(separator: ", "))"
    }

    /// Reads one finished run folder (config.json, diagnostics.jsonl, gold.jsonl).
    static func loadRun(path: String, seed: UInt64) throws -> StudyRunData {
        let config: TrainingConfig
        do { config = try TrainingConfig.load(path: path + "/config.json") } catch {
            throw StudyReportError.invalid(error.description)
        }
        let diagnosticsPath = path + "/diagnostics.jsonl"
        let bytes = try readBytes(diagnosticsPath)
        let parsed: (records: [UpdateRecord], skippedIncompleteLine: Bool)
        do { parsed = try RunReport.parseDiagnostics(bytes, path: diagnosticsPath) } catch {
            throw StudyReportError.invalid(error.description)
        }
        let evaluations = try loadGold(path + "/gold.jsonl")
        guard !evaluations.isEmpty else { throw StudyReportError.unreadable(path: path + "/gold.jsonl", reason: "holds no evaluation") }
        return StudyRunData(seed: seed, folder: path, objective: config.objective, clipRange: config.effectiveClipRange,
                            evaluations: evaluations, records: parsed.records, skippedIncompleteLine: parsed.skippedIncompleteLine)
    }

    /// The whole file, or an error naming it.
    static func readBytes(_ path: String) throws -> [UInt8] {
        do { return [UInt8](try Data(contentsOf: URL(fileURLWithPath: path))) } catch {
            throw StudyReportError.unreadable(path: path, reason: "cannot be read (\(error.localizedDescription))")
        }
    }

    /// The evaluations of gold.jsonl, sorted by step; a missing metric reads as NaN.
    static func loadGold(_ path: String) throws -> [Evaluation] {
        let text = String(decoding: try readBytes(path), as: UTF8.self)
        var out: [Evaluation] = []
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            guard !line.allSatisfy({ $0 == " " || $0 == "\r" }) else { continue }
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let step = (object["step"] as? NSNumber)?.intValue else {
                throw StudyReportError.unreadable(path: path, reason: "line \(number + 1) is not an evaluation object with a \"step\"")
            }
            var values: [GoldMetric: Double] = [:]
            for metric in GoldMetric.allCases {
                if let v = (object[metric.key] as? NSNumber)?.doubleValue { values[metric] = v }
            }
            out.append(Evaluation(step: step, values: values))
        }
        return out.sorted { $0.step < $1.step }
    }

    /// pretrain.json: seconds, threads and the loss curve.
    static func loadPretrain(_ path: String) throws -> PretrainSummary {
        guard let object = try? JSONSerialization.jsonObject(with: Data(try readBytes(path))) as? [String: Any] else {
            throw StudyReportError.unreadable(path: path, reason: "is not a JSON object")
        }
        let points = (object["curve"] as? [[String: Any]]) ?? []
        let curve = points.compactMap { p -> (step: Int, loss: Double)? in
            guard let s = (p["step"] as? NSNumber)?.intValue, let l = (p["loss"] as? NSNumber)?.doubleValue else { return nil }
            return (s, l)
        }
        return PretrainSummary(seconds: (object["seconds"] as? NSNumber)?.doubleValue ?? .nan,
                               threads: (object["threads"] as? NSNumber)?.intValue ?? 0, curve: curve)
    }

    /// Checks of what should hold by construction: the same base evaluation in every run, r = 1
    /// on every first update of a rollout, the configured number of steps, finite values.
    static func consistencyWarnings(_ methods: [MethodRuns], settings: StudySettings) -> [String] {
        var out: [String] = []
        let runs = methods.flatMap { m in m.runs.map { (m.method.name, $0) } }
        if let first = runs.first?.1.evaluations.first {
            for (name, run) in runs {
                guard let base = run.evaluations.first, base.step == 0 else {
                    out.append("\(name) seed \(run.seed): gold.jsonl has no step-0 (base model) evaluation.")
                    continue
                }
                let differs = GoldMetric.allCases.filter { m in !(abs(base[m] - first[m]) <= 1e-9 * max(1, abs(first[m]))) }
                if !differs.isEmpty {
                    out.append("\(name) seed \(run.seed): the step-0 evaluation differs from the first run's in \(differs.map(\.key).joined(separator: ", ")) (it should be the same base model).")
                }
            }
        }
        for (name, run) in runs {
            let onPolicy = run.records.filter { $0.update == 0 }
            let off = onPolicy.filter { r in r.timesteps.contains { abs($0.diagnostics.ratioMean - 1) > 1e-12 || $0.diagnostics.ratioStd > 1e-12 } }
            if !off.isEmpty { out.append("\(name) seed \(run.seed): \(off.count) first (on-policy) updates have a ratio other than exactly 1.") }
            if run.lastStep < settings.runs.steps {
                out.append("\(name) seed \(run.seed): the last evaluation is at step \(run.lastStep) of \(settings.runs.steps) (a short run).")
            }
            let steps = Set(run.records.map(\.step)).count
            if steps < run.lastStep { out.append("\(name) seed \(run.seed): diagnostics.jsonl covers \(steps) steps, but gold.jsonl reaches step \(run.lastStep).") }
            let nonFinite = run.records.filter { r in !r.rewardMean.isFinite || r.timesteps.contains { !$0.diagnostics.ratioMean.isFinite || !$0.diagnostics.normalizedRatioMean.isFinite } }
            if !nonFinite.isEmpty { out.append("\(name) seed \(run.seed): \(nonFinite.count) updates have non-finite rewards or ratios.") }
            if run.evaluations.contains(where: { e in GoldMetric.allCases.contains { !e[$0].isFinite } }) {
                out.append("\(name) seed \(run.seed): gold.jsonl has missing or non-finite metrics.")
            }
        }
        return out
    }
}

// MARK: - seed statistics

/// The spread of one quantity over seeds: mean, sample standard deviation, min, max.
struct SeedSummary {
    var mean: Double
    /// Sample standard deviation (n − 1); NaN for one seed.
    var std: Double
    var min: Double
    var max: Double
    var count: Int

    /// The summary of the finite `values`, or nil when there is none.
    init?(_ values: [Double]) {
        let v = values.filter(\.isFinite)
        guard !v.isEmpty else { return nil }
        count = v.count
        mean = v.reduce(0, +) / Double(v.count)
        let m = mean
        std = v.count > 1 ? (v.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(v.count - 1)).squareRoot() : .nan
        min = v.reduce(v[0], Swift.min)
        max = v.reduce(v[0], Swift.max)
    }

    /// The interval drawn and compared: mean ± std for three or more seeds, min–max for two,
    /// nil for one seed (no spread).
    var interval: (lower: Double, upper: Double)? {
        switch count {
        case 1: return nil
        case 2: return (min, max)
        default: return (mean - std, mean + std)
        }
    }
}

/// How a seed band is drawn: mean ± std with three seeds or more, else min–max.
enum BandKind {
    case std, minMax

    /// ± std when every method has at least three runs, else min–max.
    init(_ methods: [MethodRuns]) {
        self = methods.allSatisfy { $0.runs.count >= 3 } ? .std : .minMax
    }

    /// How the band is described in captions.
    var text: String { self == .std ? "mean ± std over seeds" : "min–max over seeds (fewer than 3 seeds)" }

    /// The band's edges for `s` (nil for one seed).
    func edges(_ s: SeedSummary) -> (lower: Double, upper: Double)? {
        guard s.count > 1 else { return nil }
        return self == .std ? (s.mean - s.std, s.mean + s.std) : (s.min, s.max)
    }
}

/// A curve over x (a step or a timestep index) summarised over seeds.
typealias SeedCurve = [(x: Double, summary: SeedSummary)]

/// Per-seed curves combined x by x (an x reached by some seeds uses those seeds), sorted by x.
func seedCurve(_ curves: [[(x: Double, y: Double)]]) -> SeedCurve {
    var byX: [Double: [Double]] = [:]
    for curve in curves { for p in curve { byX[p.x, default: []].append(p.y) } }
    return byX.sorted { $0.key < $1.key }.compactMap { x, ys in SeedSummary(ys).map { (x, $0) } }
}

/// The mean of the finite values (NaN when there is none).
func finiteMean(_ values: [Double]) -> Double {
    let v = values.filter(\.isFinite)
    return v.isEmpty ? .nan : v.reduce(0, +) / Double(v.count)
}

// MARK: - ratio statistics

extension StudyRunData {
    /// Per trained timestep j: σ_j and the mean of `value` over the run's off-policy updates.
    func perTimestep(_ value: (StepDiagnostics) -> Double) -> [(index: Int, sigma: Double, value: Double)] {
        var sums: [Int: (sigma: Double, values: [Double])] = [:]
        for record in offPolicy {
            for t in record.timesteps { sums[t.index, default: (t.sigma, [])].values.append(value(t.diagnostics)) }
        }
        return sums.sorted { $0.key < $1.key }.map { (index: $0.key, sigma: $0.value.sigma, value: finiteMean($0.value.values)) }
    }

    /// Per training step: the mean of `value` over the step's off-policy updates and all timesteps.
    func perStep(_ value: (StepDiagnostics) -> Double) -> [(x: Double, y: Double)] {
        var byStep: [Int: [Double]] = [:]
        for record in offPolicy { byStep[record.step, default: []] += record.timesteps.map { value($0.diagnostics) } }
        return byStep.sorted { $0.key < $1.key }.map { (Double($0.key), finiteMean($0.value)) }
    }

    /// The mean of `value` over every off-policy update and timestep.
    func overall(_ value: (StepDiagnostics) -> Double) -> Double {
        finiteMean(offPolicy.flatMap { $0.timesteps.map { value($0.diagnostics) } })
    }

    /// The training rollouts' mean reward per step (one value per step: the rollout's).
    var rolloutReward: [(x: Double, y: Double)] {
        records.filter { $0.update == 0 }.map { (Double($0.step), $0.rewardMean) }
    }

    /// A gold metric over evaluation steps.
    func goldCurve(_ metric: GoldMetric) -> [(x: Double, y: Double)] {
        evaluations.map { (Double($0.step), $0[metric]) }
    }
}

extension MethodRuns {
    /// Per timestep j: σ_j and the seed summary of the per-run off-policy mean of `value`.
    func perTimestep(_ value: (StepDiagnostics) -> Double) -> [(index: Int, sigma: Double, summary: SeedSummary)] {
        let perRun = runs.map { $0.perTimestep(value) }
        var sigma: [Int: Double] = [:]
        for run in perRun { for p in run where sigma[p.index] == nil { sigma[p.index] = p.sigma } }
        return seedCurve(perRun.map { $0.map { (Double($0.index), $0.value) } }).map { p in
            (Int(p.x), sigma[Int(p.x)] ?? .nan, p.summary)
        }
    }

    /// The seed summary of a per-run scalar.
    func summary(_ value: (StudyRunData) -> Double) -> SeedSummary? { SeedSummary(runs.map(value)) }

    /// The clipped ratio's mean (r for Flow-GRPO, r̂ for GRPO-Guard).
    var clippedMean: (StepDiagnostics) -> Double { clipsNormalized ? { $0.normalizedRatioMean } : { $0.ratioMean } }
    /// The clipped ratio's standard deviation over samples.
    var clippedStd: (StepDiagnostics) -> Double { clipsNormalized ? { $0.normalizedRatioStd } : { $0.ratioStd } }
}

// MARK: - equal proxy

/// The gold metrics where a run's evaluation curve first reaches a proxy level.
struct Crossing {
    /// The (interpolated) training step of the crossing.
    var step: Double
    var values: [GoldMetric: Double]
}

extension StudyRunData {
    /// Linear interpolation along the evaluation curve at the first point where the proxy reaches
    /// `level`; nil when it never does.
    func firstCrossing(_ level: Double) -> Crossing? {
        guard let first = evaluations.first else { return nil }
        if first[.proxy] >= level { return Crossing(step: Double(first.step), values: first.values) }
        for (a, b) in zip(evaluations, evaluations.dropFirst()) where a[.proxy] < level && b[.proxy] >= level {
            let t = (level - a[.proxy]) / (b[.proxy] - a[.proxy])
            var values: [GoldMetric: Double] = [:]
            for m in GoldMetric.allCases { values[m] = a[m] + t * (b[m] - a[m]) }
            return Crossing(step: Double(a.step) + t * Double(b.step - a.step), values: values)
        }
        return nil
    }
}

/// A proxy level every method reached on average, as a fraction of the way from the base's proxy
/// to the smallest final (seed-mean) proxy over methods.
struct ProxyLevel {
    var fraction: Double
    var proxy: Double

    /// The levels at `fractions` of the way, or empty when some method ends at or below the base.
    static func levels(_ methods: [MethodRuns], fractions: [Double] = [0.25, 0.5, 0.75, 1.0]) -> [ProxyLevel] {
        let base = finiteMean(methods.flatMap { $0.runs.compactMap { $0.evaluations.first.map { $0[.proxy] } } })
        let finals = methods.compactMap { m in m.summary { $0.evaluations.last?[.proxy] ?? .nan }?.mean }
        guard let lowest = finals.min(), base.isFinite, lowest > base else { return [] }
        return fractions.map { ProxyLevel(fraction: $0, proxy: base + $0 * (lowest - base)) }
    }
}

// MARK: - formatting

/// `x` with three significant digits: plain for 0.001 ≤ |x| < 100000, else scientific ("2.31e-5").
func sig3(_ x: Double) -> String {
    guard x.isFinite else { return x.isNaN ? "n/a" : (x > 0 ? "∞" : "−∞") }
    guard x != 0 else { return "0" }
    let exponent = Int(floor(log10(abs(x))))
    let unit = pow(10, Double(exponent - 2))
    let rounded = (x / unit).rounded() * unit
    let e = Int(floor(log10(abs(rounded))))
    if e < -3 || e >= 5 {
        let mantissa = rounded / pow(10, Double(e))
        return String(format: "%.2fe%d", mantissa, e)
    }
    return String(format: "%.\(max(0, 2 - e))f", rounded)
}

/// A ratio near 1 as "1 − 2.31e-5" (the deviation with three significant digits).
func ratioText(_ r: Double) -> String {
    guard r.isFinite else { return sig3(r) }
    let d = r - 1
    return d == 0 ? "1" : (d < 0 ? "1 − " : "1 + ") + sig3(abs(d))
}

/// A fraction as a percentage with three significant digits ("12.3 %").
func percentText(_ f: Double) -> String { f.isFinite ? sig3(100 * f) + " %" : sig3(f) }

extension SeedSummary {
    /// "mean ± std" (just the mean for one seed).
    var text: String { count > 1 ? "\(sig3(mean)) ± \(sig3(std))" : sig3(mean) }
}

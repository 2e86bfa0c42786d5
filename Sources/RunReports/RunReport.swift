import Foundation
import GRPOGuard
import JSON
import SafeTensors
import SystemSupport

/// Everything that can stop `flowguard report`. The description is the sentence the user reads;
/// it names the file (and line) at fault.
public enum ReportError: Error, Sendable, CustomStringConvertible {
    /// The path is missing or is not a run folder.
    case notARun(path: String, reason: String)
    /// A file of the run cannot be read or is not what the trainer writes.
    case unreadable(path: String, reason: String)
    /// A line of `diagnostics.jsonl` is not a diagnostics record.
    case malformedLine(path: String, line: Int, reason: String)
    /// The report could not be written.
    case write(path: String, reason: String)

    /// The message shown to the user.
    public var description: String {
        switch self {
        case let .notARun(path, reason): return "\(path): \(reason)"
        case let .unreadable(path, reason): return "\(path): \(reason)"
        case let .malformedLine(path, line, reason): return "\(path), line \(line): \(reason)"
        case let .write(path, reason): return "cannot write the report \(path): \(reason)"
        }
    }
}

/// What a run folder holds, read for `flowguard report`: the diagnostics records, the config,
/// the checkpoints and the exports (layout: `TrainingRun`, `TrainingCheckpoint`).
public struct RunReport: Sendable {
    /// An exported file or folder of `RUN/final/`.
    public struct Export: Sendable, Equatable {
        /// `diffusers`, `peft`, `kohya` or `archive`.
        public var kind: String
        /// Its path.
        public var path: String
        /// Bytes on disk (a folder: the sum of its files).
        public var bytes: Int
    }

    /// `RUN/evaluation.json`: the noise-free evaluation's mean reward without and with the adapter.
    public struct Evaluation: Sendable, Equatable {
        /// Mean reward without the adapter (NaN when not finite).
        public var base: Double
        /// Mean reward with the exported adapter.
        public var adapted: Double
        /// Prompts evaluated (one sample each), when recorded.
        public var prompts: Int?
        /// Euler steps of the noise-free sampling, when recorded.
        public var steps: Int?
    }

    /// The run folder.
    public var run: String
    /// `RUN/diagnostics.jsonl`.
    public var diagnosticsPath: String
    /// The records, one per optimizer step, in file order.
    public var records: [UpdateRecord]
    /// True when the file ended in an incomplete line (a run writing right now), which was left out.
    public var skippedIncompleteLine: Bool
    /// How many records lack `clip_fraction_positive` or `clip_fraction_negative` in some timestep
    /// (lines written before those fields existed); the missing values read as 0.
    public var recordsWithoutSignedClipFractions = 0
    /// How many records lack the per-sample ratio quantiles (`ratio_quantiles`,
    /// `normalized_ratio_quantiles`) in some timestep: lines written before those fields existed.
    public var recordsWithoutQuantiles = 0
    /// The end-of-run evaluation (`RUN/evaluation.json`), when the run wrote one.
    public var evaluation: Evaluation?
    /// `RUN/config.json`'s members, when present.
    public var config: [(key: String, value: JSONValue)]?
    /// The complete checkpoints, oldest first.
    public var checkpoints: [TrainingCheckpoint.Info]
    /// The exports present in `RUN/final/`.
    public var exports: [Export]
    /// The prompt strings recorded in the config's prompt file (nil when it cannot be read).
    public var prompts: [String]?

    /// Reads the run folder `run`. Fails when it is not a run folder, when `config.json` is not
    /// a JSON object, or when a diagnostics line is malformed (naming the line).
    public static func load(run: String) throws(ReportError) -> RunReport {
        let fm = FileManager.default
        guard let status = FileSystem.status(of: run) else { throw .notARun(path: run, reason: "no such folder") }
        guard status.kind == .folder else { throw .notARun(path: run, reason: "is a file, not a run folder") }
        let diagnosticsPath = run + "/diagnostics.jsonl", configPath = run + "/config.json", checkpointFolder = run + "/checkpoints"
        guard [diagnosticsPath, configPath, checkpointFolder].contains(where: { fm.fileExists(atPath: $0) }) else {
            throw .notARun(path: run, reason: "is not a run folder (it holds no diagnostics.jsonl, config.json or checkpoints/)")
        }
        var config: [(key: String, value: JSONValue)]?
        if fm.fileExists(atPath: configPath) {
            let bytes = try readAll(configPath)
            let json: JSONValue
            do { json = try JSONValue.parse(bytes) } catch { throw .unreadable(path: configPath, reason: "is not valid JSON: \(error)") }
            guard let members = json.objectMembers else { throw .unreadable(path: configPath, reason: "is not a JSON object") }
            config = members
        }
        var records: [UpdateRecord] = []
        var skipped = false, withoutSigned = 0
        if fm.fileExists(atPath: diagnosticsPath) {
            (records, skipped, withoutSigned) = try parseDiagnosticLines(try readAll(diagnosticsPath), path: diagnosticsPath)
        }
        var evaluation: Evaluation?
        let evaluationPath = run + "/evaluation.json"
        if fm.fileExists(atPath: evaluationPath) {
            let json: JSONValue
            do { json = try JSONValue.parse(try readAll(evaluationPath)) } catch let error as ReportError { throw error } catch {
                throw .unreadable(path: evaluationPath, reason: "is not valid JSON: \(error)")
            }
            func number(_ key: String) throws(ReportError) -> Double {
                guard let value = json[key] else { throw .unreadable(path: evaluationPath, reason: "\"\(key)\" is missing") }
                if value == .null { return .nan }
                guard let d = value.doubleValue else { throw .unreadable(path: evaluationPath, reason: "\"\(key)\" must be a number, found \(value.compactText)") }
                return d
            }
            evaluation = Evaluation(base: try number("base"), adapted: try number("adapted"),
                                    prompts: json["prompts"]?.nonNegativeInt, steps: json["steps"]?.nonNegativeInt)
        }
        let checkpoints = TrainingCheckpoint.list(in: checkpointFolder)
        var exports: [Export] = []
        let final = run + "/final"
        for (kind, name) in [("diffusers", "pytorch_lora_weights.safetensors"), ("peft", "peft"),
                             ("kohya", "adapter_kohya.safetensors"), ("archive", "adapter.fgdelta")] {
            let path = final + "/" + name
            if fm.fileExists(atPath: path) { exports.append(Export(kind: kind, path: path, bytes: size(of: path))) }
        }
        var report = RunReport(run: run, diagnosticsPath: diagnosticsPath, records: records, skippedIncompleteLine: skipped,
                               config: config, checkpoints: checkpoints, exports: exports, prompts: nil)
        report.recordsWithoutSignedClipFractions = withoutSigned
        report.recordsWithoutQuantiles = records.filter { r in
            r.timesteps.contains { $0.ratioQuantiles == nil || $0.normalizedRatioQuantiles == nil }
        }.count
        report.evaluation = evaluation
        if let file = report.configText("prompts") { report.prompts = promptStrings(file) }
        return report
    }

    /// The prompt strings of a prompt file, from its header alone (the embeddings are not read).
    static func promptStrings(_ path: String) -> [String]? {
        guard let file = try? SafeTensorsFile(path: path), let text = file.header.metadataValue(PromptSet.promptsKey),
              let items = (try? JSONValue.parse(Array(text.utf8)))?.arrayValue else { return nil }
        return items.compactMap(\.stringValue)
    }

    /// Reads a whole file.
    static func readAll(_ path: String) throws(ReportError) -> [UInt8] {
        do { return try FileSystem.readFile(path, limit: Int.max) } catch {
            throw .unreadable(path: path, reason: "cannot be read (\(error.message))")
        }
    }

    /// Bytes of a file, or of the files under a folder.
    static func size(of path: String) -> Int {
        // Links below the top are not followed (as `subpathsOfDirectory` does not).
        func bytes(_ path: String, followingLinks: Bool) -> Int {
            guard let status = FileSystem.status(of: path, followingLinks: followingLinks) else { return 0 }
            guard status.kind == .folder else { return status.kind == .regular ? status.size : 0 }
            let names = (try? FileSystem.listFolder(path)) ?? []
            return names.reduce(0) { total, name in total + bytes(path + "/" + name, followingLinks: false) }
        }
        return bytes(path, followingLinks: true)
    }

    // MARK: parsing

    /// Parses the lines of a diagnostics file. Blank lines are skipped; a last line without a
    /// newline that does not parse is left out (the trainer may be writing it); any other bad line
    /// is an error naming it. `nan`/`inf` spellings and `null` read as NaN (drawn as gaps). The
    /// optional `clip_fraction_positive`/`clip_fraction_negative` of a timestep read as 0 when absent.
    public static func parseDiagnostics(_ bytes: [UInt8], path: String) throws(ReportError) -> (records: [UpdateRecord], skippedIncompleteLine: Bool) {
        let parsed = try parseDiagnosticLines(bytes, path: path)
        return (parsed.records, parsed.skippedIncompleteLine)
    }

    /// `parseDiagnostics`, also counting the records that lack a signed clip fraction.
    static func parseDiagnosticLines(_ bytes: [UInt8], path: String) throws(ReportError)
        -> (records: [UpdateRecord], skippedIncompleteLine: Bool, withoutSignedClipFractions: Int) {
        var records: [UpdateRecord] = []
        var withoutSigned = 0
        var start = 0, number = 0
        while start < bytes.count {
            number += 1
            let end = bytes[start...].firstIndex(of: UInt8(ascii: "\n")) ?? bytes.count
            let complete = end < bytes.count
            let line = Array(bytes[start..<end])
            start = end + 1
            if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) { continue }
            do throws(ReportError) {
                let (record, hasSigned) = try parseRecord(line, path: path, line: number)
                records.append(record)
                if !hasSigned { withoutSigned += 1 }
            } catch {
                if !complete { return (records, true, withoutSigned) }
                throw error
            }
        }
        return (records, false, withoutSigned)
    }

    /// Rewrites bare non-finite number spellings (`nan`, `-nan`, `inf`, `-inf`, `NaN`,
    /// `Infinity`, `-Infinity`) outside strings as `null`.
    static func nonFiniteAsNull(_ line: [UInt8]) -> [UInt8] {
        guard line.contains(where: { $0 == UInt8(ascii: "n") || $0 == UInt8(ascii: "N") || $0 == UInt8(ascii: "i") || $0 == UInt8(ascii: "I") }) else { return line }
        var out: [UInt8] = []
        out.reserveCapacity(line.count)
        var i = 0, inString = false
        let words: [[UInt8]] = ["-infinity", "+infinity", "infinity", "-nan", "+nan", "nan", "-inf", "+inf", "inf"].map { Array($0.utf8) }
        func isWordByte(_ b: UInt8) -> Bool { (b >= 0x61 && b <= 0x7A) || (b >= 0x41 && b <= 0x5A) || (b >= 0x30 && b <= 0x39) || b == 0x5F }
        while i < line.count {
            let b = line[i]
            if inString {
                out.append(b)
                if b == UInt8(ascii: "\\"), i + 1 < line.count { out.append(line[i + 1]); i += 2; continue }
                if b == UInt8(ascii: "\"") { inString = false }
                i += 1
                continue
            }
            if b == UInt8(ascii: "\"") { inString = true; out.append(b); i += 1; continue }
            if i == 0 || !isWordByte(line[i - 1]) {
                var matched = false
                for w in words where i + w.count <= line.count {
                    let candidate = line[i..<(i + w.count)].map { $0 >= 0x41 && $0 <= 0x5A ? $0 + 32 : $0 }
                    if candidate.elementsEqual(w), i + w.count == line.count || !isWordByte(line[i + w.count]) {
                        out += Array("null".utf8)
                        i += w.count
                        matched = true
                        break
                    }
                }
                if matched { continue }
            }
            out.append(b)
            i += 1
        }
        return out
    }

    /// One record from one line, and whether every timestep had both signed clip fractions.
    static func parseRecord(_ line: [UInt8], path: String, line lineNumber: Int) throws(ReportError) -> (record: UpdateRecord, hasSignedClipFractions: Bool) {
        func bad(_ reason: String) -> ReportError { .malformedLine(path: path, line: lineNumber, reason: reason) }
        let json: JSONValue
        do { json = try JSONValue.parse(nonFiniteAsNull(line)) } catch { throw bad("not valid JSON (\(error))") }
        guard json.objectMembers != nil else { throw bad("not a JSON object") }
        func number(_ object: JSONValue, _ key: String, context: String = "") throws(ReportError) -> Double {
            guard let value = object[key] else { throw bad("\(context)\"\(key)\" is missing") }
            if value == .null { return .nan }
            guard let d = value.doubleValue else { throw bad("\(context)\"\(key)\" must be a number, found \(value.compactText)") }
            return d
        }
        /// A number that older files lack: nil when absent, otherwise as `number`.
        func optionalNumber(_ object: JSONValue, _ key: String, context: String = "") throws(ReportError) -> Double? {
            object[key] == nil ? nil : try number(object, key, context: context)
        }
        func integer(_ object: JSONValue, _ key: String, context: String = "", required: Bool = true) throws(ReportError) -> Int? {
            guard let value = object[key] else {
                if required { throw bad("\(context)\"\(key)\" is missing") }
                return nil
            }
            guard let i = value.nonNegativeInt else { throw bad("\(context)\"\(key)\" must be a non-negative integer, found \(value.compactText)") }
            return i
        }
        let step = try integer(json, "step")!
        guard let items = json["timesteps"]?.arrayValue else {
            throw bad(json["timesteps"] == nil ? "\"timesteps\" is missing" : "\"timesteps\" must be an array")
        }
        var timesteps: [TimestepRecord] = []
        var hasSigned = true
        for (k, item) in items.enumerated() {
            let context = "timesteps[\(k)]: "
            guard item.objectMembers != nil else { throw bad("timesteps[\(k)] is not an object") }
            var diagnostics = StepDiagnostics(
                ratioMean: try number(item, "ratio_mean", context: context), ratioStd: try number(item, "ratio_std", context: context),
                normalizedRatioMean: try number(item, "normalized_ratio_mean", context: context),
                normalizedRatioStd: try number(item, "normalized_ratio_std", context: context),
                clipFractionAbove: try number(item, "clip_fraction_above", context: context),
                clipFractionBelow: try number(item, "clip_fraction_below", context: context),
                clipFractionPositive: 0, clipFractionNegative: 0,
                approximateKL: try number(item, "approx_kl", context: context))
            let positive = try optionalNumber(item, "clip_fraction_positive", context: context)
            let negative = try optionalNumber(item, "clip_fraction_negative", context: context)
            if positive == nil || negative == nil { hasSigned = false }
            diagnostics.clipFractionPositive = positive ?? 0
            diagnostics.clipFractionNegative = negative ?? 0
            /// Five quantiles, or nil when the line predates them.
            func quantiles(_ key: String) throws(ReportError) -> SampleQuantiles? {
                guard let value = item[key] else { return nil }
                guard let items = value.arrayValue, items.count == SampleQuantiles.levels.count else {
                    throw bad("\(context)\"\(key)\" must be an array of \(SampleQuantiles.levels.count) numbers, found \(value.compactText)")
                }
                var values: [Double] = []
                for v in items {
                    if v == .null { values.append(.nan); continue }
                    guard let d = v.doubleValue else { throw bad("\(context)\"\(key)\" must hold numbers, found \(v.compactText)") }
                    values.append(d)
                }
                return SampleQuantiles(values: values)
            }
            timesteps.append(TimestepRecord(index: try integer(item, "index", context: context)!, sigma: try number(item, "sigma", context: context),
                                            diagnostics: diagnostics, gradientNorm: try number(item, "grad_norm", context: context),
                                            loss: try number(item, "loss", context: context),
                                            ratioQuantiles: try quantiles("ratio_quantiles"),
                                            normalizedRatioQuantiles: try quantiles("normalized_ratio_quantiles")))
        }
        let record = UpdateRecord(step: step, update: try integer(json, "update", required: false) ?? 0,
                            optimizerStep: try integer(json, "optimizer_step", required: false) ?? step,
                            rewardMean: try number(json, "reward_mean"), rewardStd: try number(json, "reward_std"),
                            loss: try number(json, "loss"), learningRate: json["lr"] == nil ? .nan : try number(json, "lr"),
                            gradientNorm: try number(json, "grad_norm"), timesteps: timesteps,
                            seconds: json["seconds"] == nil ? .nan : try number(json, "seconds"))
        return (record, hasSigned)
    }

    // MARK: summary

    /// The last record of each training step (its reward is the rollout's), in step order.
    var rollouts: [UpdateRecord] {
        var byStep: [Int: UpdateRecord] = [:]
        for r in records { byStep[r.step] = r }
        return byStep.keys.sorted().map { byStep[$0]! }
    }

    /// A config value as text, if the config has it.
    func configText(_ key: String) -> String? {
        guard let value = config?.last(where: { $0.key == key })?.value else { return nil }
        if let s = value.stringValue { return s }
        return value.compactText
    }

    /// The `--json` summary: steps, optimizer steps, final reward, paths.
    public func summary(output: String) -> JSONValue {
        let last = rollouts.last
        func number(_ x: Double?) -> JSONValue { x.map { $0.isFinite ? .double($0) : .null } ?? .null }
        return .object([
            ("run", .string(run)),
            ("output", .string(output)),
            ("records", .int(Int64(records.count))),
            ("steps", .int(Int64(rollouts.count))),
            ("optimizer_steps", .int(Int64(records.map(\.optimizerStep).max() ?? 0))),
            ("final_reward_mean", number(last?.rewardMean)),
            ("final_reward_std", number(last?.rewardStd)),
            ("first_reward_mean", number(rollouts.first?.rewardMean)),
            ("incomplete_last_line", .bool(skippedIncompleteLine)),
            ("diagnostics", FileManager.default.fileExists(atPath: diagnosticsPath) ? .string(diagnosticsPath) : .null),
            ("config", config == nil ? .null : .string(run + "/config.json")),
            ("checkpoints", .array(checkpoints.map { .string($0.path) })),
            ("exports", .object(exports.map { ($0.kind, .string($0.path)) })),
        ])
    }

    /// Loads `run`, renders the page and writes it atomically to `output` (default `RUN/report.html`).
    /// Returns the report and the path written.
    public static func write(run: String, output: String? = nil) throws(ReportError) -> (report: RunReport, output: String) {
        let report = try load(run: run)
        let path = output ?? run + "/report.html"
        let html = report.html()
        do {
            let file = try AtomicFile(destination: path)
            try file.write(Array(html.utf8))
            try file.commit()
        } catch {
            throw .write(path: path, reason: SafeTensorsError.system(error).description)
        }
        return (report, path)
    }
}

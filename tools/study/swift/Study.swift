import ArgumentParser
import FlowMatching
import Foundation
import GRPOGuard
import JSON
import SafeTensors
import TensorRuntime
import Transformers

/// Everything the study is told (`tools/study/study.json`); every field has a default.
struct StudySettings: Codable, Equatable {
    var world = WorldSettings()
    var model = ModelSettings()
    var pretrain = PretrainSettings()
    var runs = RunSettings()
    var seeds: [UInt64] = [1, 2, 3, 4]
    var methods: [String] = Method.all.map(\.name)

    /// The defaults overlaid with the file's keys (snake_case, nested objects merged key by key).
    static func load(_ path: String?) throws -> StudySettings {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        var merged = try JSONSerialization.jsonObject(with: encoder.encode(StudySettings())) as! [String: Any]
        if let path {
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            guard let given = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw ValidationError("\(path): the study settings must be a JSON object")
            }
            merged = overlay(merged, given, path: path)
        }
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return try decoder.decode(StudySettings.self, from: JSONSerialization.data(withJSONObject: merged))
    }

    static func overlay(_ base: [String: Any], _ top: [String: Any], path: String) -> [String: Any] {
        var out = base
        for (key, value) in top {
            if let inner = value as? [String: Any], let below = base[key] as? [String: Any] {
                out[key] = overlay(below, inner, path: path)
            } else {
                out[key] = value
            }
        }
        return out
    }

    var selectedMethods: [Method] {
        get throws {
            try methods.map { name in
                guard let m = Method.all.first(where: { $0.name == name }) else {
                    throw ValidationError("unknown method '\(name)' (known: \(Method.all.map(\.name).joined(separator: ", ")))")
                }
                return m
            }
        }
    }
}

func progress(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}

/// Paths inside the study's work folder.
struct StudyFolder {
    let root: String
    var prompts: String { root + "/prompts.safetensors" }
    var initial: String { root + "/base-initial" }
    var base: String { root + "/base" }
    var pretrainCurve: String { root + "/pretrain.json" }
    /// The wall time of the last `all` (pretraining, runs and report).
    var runtime: String { root + "/runtime.json" }
    func run(_ method: String, _ seed: UInt64) -> String { root + "/runs/\(method)-seed\(seed)" }
}

@main
struct Study: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flowguard-study",
        abstract: "The over-optimization study: Flow-GRPO vs GRPO-Guard on a toy world with a known truth (docs/study.md).",
        subcommands: [All.self, Prepare.self, RunOne.self, Summarize.self],
        defaultSubcommand: All.self)
}

struct CommonOptions: ParsableArguments {
    @Option(help: "Study settings (JSON; missing keys take the defaults).")
    var config: String?
    @Option(help: "Work folder (base model, runs).")
    var work: String = ".build/study"
}

/// World, prompts, base model: made once and reused while the settings are unchanged.
struct Prepare: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Write the class prompts and pretrain the base model (skipped when done with the same settings).")
    @OptionGroup var common: CommonOptions
    @Option(help: "Threads for pretraining.")
    var threads: Int = 2

    func run() throws {
        let settings = try StudySettings.load(common.config)
        try Prepare.prepare(settings, folder: StudyFolder(root: common.work), threads: threads)
    }

    static func settingsStamp(_ s: StudySettings) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        struct Stamp: Encodable { var world: WorldSettings; var model: ModelSettings; var pretrain: PretrainSettings }
        return String(decoding: try encoder.encode(Stamp(world: s.world, model: s.model, pretrain: s.pretrain)), as: UTF8.self)
    }

    static func prepare(_ s: StudySettings, folder: StudyFolder, threads: Int) throws {
        let fm = FileManager.default
        let stampPath = folder.base + "/study-stamp.json"
        let stamp = try settingsStamp(s)
        if let existing = try? String(contentsOfFile: stampPath, encoding: .utf8), existing == stamp,
           fm.fileExists(atPath: folder.base + "/diffusion_pytorch_model.safetensors"), fm.fileExists(atPath: folder.prompts) {
            progress("base model: reusing \(folder.base) (same world, model and pretraining settings)")
            return
        }
        try fm.createDirectory(atPath: folder.root, withIntermediateDirectories: true)
        // Class prompts: fixed random "text" embeddings per class.
        var noise = GaussianGenerator(seed: s.model.seed ^ 0x7072_6F6D)
        let k = s.world.classes
        let embeds = noise.tensor(shape: [k, s.model.contextTokens, s.model.jointDim])
        let pooled = noise.tensor(shape: [k, s.model.pooledDim])
        let set = try PromptSet(family: .sd3, prompts: (0..<k).map { "class \($0)" }, promptEmbeds: embeds, pooledPromptEmbeds: pooled,
                                encoder: "flowguard-study class embeddings (random normal)")
        try set.write(to: folder.prompts)
        try BaseModel.writeInitial(s.model, world: s.world, folder: folder.initial)
        let world = ToyWorld(s.world)
        let started = Date()
        let curve = try BaseModel.pretrain(world: world, model: s.model, pretrain: s.pretrain, initial: folder.initial,
                                           prompts: TrainingPrompts(set), output: folder.base, threads: threads, log: progress)
        let seconds = Date().timeIntervalSince(started)
        let json = JSONValue.object([
            ("seconds", .double(seconds)), ("threads", .int(Int64(threads))),
            ("curve", .array(curve.map { .object([("step", .int(Int64($0.step))), ("loss", .double($0.loss))]) })),
        ])
        try Data((json.compactText + "\n").utf8).write(to: URL(fileURLWithPath: folder.pretrainCurve), options: .atomic)
        try Data(stamp.utf8).write(to: URL(fileURLWithPath: stampPath), options: .atomic)
        progress(String(format: "base model: pretrained in %.0f s → %@", seconds, folder.base))
    }
}

/// One method × seed (the `all` command runs these as child processes, two at a time).
struct RunOne: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "run", abstract: "Fine-tune one method with one seed.")
    @OptionGroup var common: CommonOptions
    @Option(help: "Method: \(Method.all.map(\.name).joined(separator: ", ")).")
    var method: String
    @Option(help: "Seed.")
    var seed: UInt64
    @Option(help: "Threads.")
    var threads: Int = 1

    func run() throws {
        let settings = try StudySettings.load(common.config)
        guard let m = Method.all.first(where: { $0.name == method }) else { throw ValidationError("unknown method '\(method)'") }
        let folder = StudyFolder(root: common.work)
        let started = Date()
        try StudyRun.run(method: m, seed: seed, settings: settings.runs, world: ToyWorld(settings.world), base: folder.base,
                         prompts: folder.prompts, folder: folder.run(method, seed), threads: threads, log: progress)
        progress(String(format: "%@ seed %llu done in %.0f s", method, seed, Date().timeIntervalSince(started)))
    }
}

/// Everything: prepare, every run (in parallel processes), the report.
struct All: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Prepare, run every method × seed, and write docs/study.md.")
    @OptionGroup var common: CommonOptions
    @Option(help: "Runs in parallel (each single-threaded).")
    var jobs: Int = 2
    @Option(help: "Where the report goes (markdown; plots beside it in a folder of the same name).")
    var report: String = "docs/study.md"

    func run() throws {
        let settings = try StudySettings.load(common.config)
        let methods = try settings.selectedMethods
        let folder = StudyFolder(root: common.work)
        let started = Date()
        try Prepare.prepare(settings, folder: folder, threads: max(1, jobs))
        var pending: [(Method, UInt64)] = []
        for seed in settings.seeds { for m in methods { pending.append((m, seed)) } }
        let executable = URL(fileURLWithPath: CommandLine.arguments[0]).path
        var running: [Process] = []
        var failures: [String] = []
        while !pending.isEmpty || !running.isEmpty {
            while running.count < max(1, jobs), !pending.isEmpty {
                let (m, seed) = pending.removeFirst()
                try? FileManager.default.removeItem(atPath: folder.run(m.name, seed))
                let p = Process()
                p.executableURL = URL(fileURLWithPath: executable)
                var arguments = ["run", "--method", m.name, "--seed", String(seed), "--work", common.work, "--threads", "1"]
                if let c = common.config { arguments += ["--config", c] }
                p.arguments = arguments
                try p.run()
                running.append(p)
            }
            Thread.sleep(forTimeInterval: 0.2)
            running.removeAll { p in
                guard !p.isRunning else { return false }
                if p.terminationStatus != 0 { failures.append((p.arguments ?? []).joined(separator: " ")) }
                return true
            }
        }
        guard failures.isEmpty else { throw ValidationError("runs failed: \(failures.joined(separator: "; "))") }
        let seconds = Date().timeIntervalSince(started)
        // Kept so that `summarize` can re-render the report of these runs with their runtime.
        let runtime = JSONValue.object([("seconds", .double(seconds)), ("jobs", .int(Int64(jobs)))])
        try Data((runtime.compactText + "\n").utf8).write(to: URL(fileURLWithPath: folder.runtime), options: .atomic)
        try StudyReport.write(settings: settings, folder: folder, output: report, totalSeconds: seconds)
        progress(String(format: "study done in %.1f min → %@", seconds / 60, report))
    }
}

/// The report from finished runs.
struct Summarize: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Write docs/study.md from the finished runs in the work folder.")
    @OptionGroup var common: CommonOptions
    @Option(help: "Where the report goes.")
    var report: String = "docs/study.md"

    func run() throws {
        let settings = try StudySettings.load(common.config)
        let folder = StudyFolder(root: common.work)
        // The runtime `all` measured for these runs, when it is there.
        var seconds: Double?
        if let data = FileManager.default.contents(atPath: folder.runtime),
           let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] {
            seconds = object["seconds"] as? Double
        }
        try StudyReport.write(settings: settings, folder: folder, output: report, totalSeconds: seconds)
    }
}

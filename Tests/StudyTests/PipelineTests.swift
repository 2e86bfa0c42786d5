import Foundation
import Testing
import TestSupport
@testable import flowguard_study

/// The study end to end on a micro configuration (a few pretraining and training steps): the
/// base model is a loadable checkpoint, every run leaves its files, the report's numbers are the
/// runs' numbers, and a missing run is an error naming its folder.
@Suite(.serialized) struct PipelineTests {
    let dir = TemporaryDirectory(prefix: "flowguard-study")

    func microSettings() -> StudySettings {
        var s = StudySettings()
        s.model.heads = 2
        s.model.layers = 2
        s.pretrain.steps = 6
        s.pretrain.batch = 4
        s.pretrain.warmup = 2
        s.runs.steps = 4
        s.runs.groupSize = 2
        s.runs.updatesPerRollout = 2
        s.runs.samplingSteps = 3
        s.runs.evalEvery = 2
        s.runs.evalPerClass = 2
        s.runs.evalSteps = 3
        s.seeds = [1, 2]
        s.methods = ["flow-grpo", "grpo-guard"]
        return s
    }

    func goldLines(_ path: String) throws -> [[String: Double]] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Double]
        }
    }

    @Test func prepareRunAndReport() throws {
        let settings = microSettings()
        let folder = StudyFolder(root: dir.file("work"))
        try Prepare.prepare(settings, folder: folder, threads: 1)
        // A second prepare with the same settings reuses the base model.
        let stamp = try FileManager.default.attributesOfItem(atPath: folder.base + "/diffusion_pytorch_model.safetensors")[.modificationDate] as? Date
        try Prepare.prepare(settings, folder: folder, threads: 1)
        #expect(try FileManager.default.attributesOfItem(atPath: folder.base + "/diffusion_pytorch_model.safetensors")[.modificationDate] as? Date == stamp)

        let world = ToyWorld(settings.world)
        for method in try settings.selectedMethods {
            for seed in settings.seeds {
                try StudyRun.run(method: method, seed: seed, settings: settings.runs, world: world, base: folder.base,
                                 prompts: folder.prompts, folder: folder.run(method.name, seed), threads: 1, log: { _ in })
            }
        }
        let gold = try goldLines(folder.run("flow-grpo", 1) + "/gold.jsonl")
        #expect(gold.map { $0["step"] } == [0, 2, 4])
        // Step 0 is the base model: the same in every run.
        #expect(try goldLines(folder.run("grpo-guard", 2) + "/gold.jsonl")[0] == gold[0])
        let diagnostics = try String(contentsOfFile: folder.run("grpo-guard", 1) + "/diagnostics.jsonl", encoding: .utf8)
        #expect(diagnostics.split(separator: "\n").count == 4 * 2)   // steps × updates per rollout

        let report = dir.file("doc/study.md")
        try StudyReport.write(settings: settings, folder: folder, output: report, totalSeconds: 12.5)
        let text = try String(contentsOfFile: report, encoding: .utf8)
        #expect(text.contains("## End of training") && text.contains("## Gold at equal proxy") && text.contains("## Findings"))
        // The end-of-training proxy of Flow-GRPO is the mean of its two runs' last evaluations.
        let last = try settings.seeds.map { try goldLines(folder.run("flow-grpo", $0) + "/gold.jsonl").last!["proxy"]! }
        let mean = last.reduce(0, +) / Double(last.count)
        let endOfTraining = text.components(separatedBy: "## End of training").last ?? ""
        let row = endOfTraining.split(separator: "\n").first { $0.hasPrefix("| Flow-GRPO | 2 |") }.map(String.init) ?? ""
        #expect(row.contains("| \(sig3(mean)) ±"), "row \(row), mean \(mean)")
        // Every linked figure exists.
        let figures = text.components(separatedBy: "](study/").dropFirst().map { String($0.prefix { $0 != ")" }) }
        #expect(!figures.isEmpty)
        for name in figures { #expect(FileManager.default.fileExists(atPath: dir.file("doc/study/" + name)), "missing \(name)") }

        // A missing run: the method's only run gone → an error naming the folder.
        var one = settings
        one.seeds = [3]
        #expect {
            try StudyReport.write(settings: one, folder: folder, output: dir.file("doc2/study.md"), totalSeconds: nil)
        } throws: { error in
            "\(error)".contains(folder.run("flow-grpo", 3))
        }
    }
}

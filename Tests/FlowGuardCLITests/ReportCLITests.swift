import Foundation
import Testing
import TestSupport

/// `flowguard report` end to end on a small synthetic run folder: the page, --json, --output,
/// and the exit codes of bad input.
@Suite struct ReportCLITests {
    let dir = TemporaryDirectory(prefix: "flowguard-report-cli")

    func flowguard(_ arguments: [String]) throws -> ProcessResult {
        try runProcess(CLITests.binary, arguments)
    }

    /// A run folder with `steps` diagnostics lines (2 timesteps each) and a checkpoint.
    func makeRun(steps: Int) throws -> String {
        let run = dir.file("run")
        try FileManager.default.createDirectory(atPath: run + "/checkpoints/step-000002", withIntermediateDirectories: true)
        try #"{"step":2,"optimizer_steps":2,"diagnostics_bytes":10,"reference":null}"#
            .write(toFile: run + "/checkpoints/step-000002/checkpoint.json", atomically: true, encoding: .utf8)
        var text = ""
        for s in 0..<steps {
            let ts = (0..<2).map { j in
                #"{"index":\#(j),"sigma":\#(1.0 - 0.1 * Double(j)),"ratio_mean":0.99,"ratio_std":0.01,"normalized_ratio_mean":1.0,"#
                    + #""normalized_ratio_std":0.001,"clip_fraction_above":0.0,"clip_fraction_below":0.5,"approx_kl":0.001,"grad_norm":0.2,"loss":0.1}"#
            }.joined(separator: ",")
            text += #"{"step":\#(s + 1),"update":0,"optimizer_step":\#(s + 1),"reward_mean":\#(Double(s) * 0.5),"reward_std":0.1,"#
                + #""loss":0.1,"lr":0.0001,"grad_norm":0.3,"timesteps":[\#(ts)],"seconds":2.0}"# + "\n"
        }
        try text.write(toFile: run + "/diagnostics.jsonl", atomically: true, encoding: .utf8)
        try #"{"objective":"grpo-guard","steps":3}"#.write(toFile: run + "/config.json", atomically: true, encoding: .utf8)
        return run
    }

    @Test func helpShowsUsageAndAnExample() throws {
        let result = try flowguard(["report", "--help"])
        #expect(result.status == 0)
        #expect(result.stdout.contains("USAGE: flowguard report <run> [--output <output>] [--force] [--json]"))
        #expect(result.stdout.contains("  flowguard report runs/a --output /tmp/a.html --json"))
        let top = try flowguard(["--help"])
        #expect(top.stdout.contains("report") && top.stdout.contains("train"))
    }

    @Test func writesThePageAndSummarises() throws {
        let run = try makeRun(steps: 3)
        let result = try flowguard(["report", run])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == "wrote \(run)/report.html: 3 training steps, 3 optimizer-step records, final reward mean 1\n")
        let html = try String(contentsOfFile: run + "/report.html", encoding: .utf8)
        #expect(html.contains("<svg") && html.contains("step-000002"))
        // No temporary file is left beside the page.
        #expect(try FileManager.default.contentsOfDirectory(atPath: run).sorted() == ["checkpoints", "config.json", "diagnostics.jsonl", "report.html"])
    }

    @Test func jsonSummaryAndOutputFlag() throws {
        let run = try makeRun(steps: 2)
        let page = dir.file("elsewhere.html")
        let result = try flowguard(["report", run, "--output", page, "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        #expect(json["steps"] as? Int == 2 && json["optimizer_steps"] as? Int == 2)
        #expect(json["final_reward_mean"] as? Double == 0.5)
        #expect(json["output"] as? String == page && json["run"] as? String == run)
        #expect(json["checkpoints"] as? [String] == [run + "/checkpoints/step-000002"])
        #expect(json["diagnostics"] as? String == run + "/diagnostics.jsonl")
        #expect(FileManager.default.fileExists(atPath: page) && !FileManager.default.fileExists(atPath: run + "/report.html"))
    }

    @Test func badInputExitsOne() throws {
        let run = try makeRun(steps: 2)
        let handle = FileHandle(forWritingAtPath: run + "/diagnostics.jsonl")!
        handle.seekToEndOfFile()
        handle.write(Data("{\"step\": 3, oops}\n".utf8))
        handle.closeFile()
        let bad = try flowguard(["report", run])
        #expect(bad.status == 1)
        #expect(bad.stderr.hasPrefix("error: \(run)/diagnostics.jsonl, line 3: not valid JSON"), "\(bad.stderr)")
        #expect(bad.stdout.isEmpty)
        let missing = try flowguard(["report", dir.file("absent")])
        #expect(missing.status == 1 && missing.stderr == "error: \(dir.file("absent")): no such folder\n")
        let usage = try flowguard(["report"])
        #expect(usage.status == 2)
    }

    @Test func emptyRun() throws {
        let run = dir.file("empty")
        try FileManager.default.createDirectory(atPath: run + "/checkpoints", withIntermediateDirectories: true)
        let result = try flowguard(["report", run])
        #expect(result.status == 0 && result.stdout == "wrote \(run)/report.html: 0 training steps, 0 optimizer-step records\n")
        #expect(try String(contentsOfFile: run + "/report.html", encoding: .utf8).contains("Nothing to show yet"))
    }
}

import ArgumentParser
import Foundation
import GRPOGuard
import RunReports
import SafeTensors

/// `flowguard report`: renders a training run's diagnostics as one self-contained HTML page.
struct Report: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Render a training run's diagnostics as a self-contained HTML page.",
        discussion: """
        RUN is a run folder of `flowguard train`. The page (inline CSS and SVG, no scripts, no external resources) plots the reward mean ± std, the per-timestep mean and std of the raw ratio r and of GRPO-Guard's normalized ratio r̂ (with heatmaps of their shift from 1), the clip fractions above 1+ε and below 1−ε, approx KL, the gradient norm per timestep and the loss, and lists the config, the checkpoints and the exports. It is written atomically to RUN/report.html unless --output says otherwise. A run without diagnostics yet gives a page saying so; a malformed diagnostics line is an error naming the file and line.

        Examples:
          flowguard report runs/a
          flowguard report runs/a --output /tmp/a.html --json
        """
    )

    @Argument(help: ArgumentHelp("The run folder.", valueName: "run"))
    var folder: String

    @Option(help: "Where to write the page (default RUN/report.html).")
    var output: String?

    @OptionGroup var overwrite: OutputOptions

    @OptionGroup var style: JSONOutput

    func validate() throws {
        try overwrite.check(output ?? folder + "/report.html", writes: .file)
    }

    func run() throws {
        let written: (report: RunReport, output: String)
        do {
            written = try RunReport.write(run: folder, output: output)
        } catch {
            throw CommandFailure(message: "error: \(error.description)")
        }
        let summary = written.report.summary(output: written.output)
        if style.json {
            print(summary.compactText)
        } else {
            let steps = summary["steps"]?.doubleValue.map { Int($0) } ?? 0
            var line = "wrote \(written.output): \(steps) training steps, \(written.report.records.count) optimizer-step records"
            if let mean = summary["final_reward_mean"]?.doubleValue {
                line += ", final reward mean \(String(format: "%.6g", mean))"
            }
            print(line)
        }
    }
}

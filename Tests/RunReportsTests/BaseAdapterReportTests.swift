import Foundation
import TestSupport
import Testing
@testable import RunReports

/// A run trained on top of base adapters says so on its report page: in the config and beside
/// the exports, which do not contain them.
@Suite struct BaseAdapterReportTests {
    let dir = TemporaryDirectory(prefix: "flowguard-report-base")

    func run(baseAdapters: String?) throws -> String {
        let run = dir.file(baseAdapters == nil ? "plain" : "adapted")
        try FileManager.default.createDirectory(atPath: run + "/checkpoints", withIntermediateDirectories: true)
        try (RunReportTests.line(step: 1) + "\n").write(toFile: run + "/diagnostics.jsonl", atomically: true, encoding: .utf8)
        let config = #"{"model":"m.safetensors","prompts":"p.safetensors","reward":"builtin:mean","steps":1"#
            + (baseAdapters.map { #","base_adapters":\#($0)"# } ?? "") + "}"
        try config.write(toFile: run + "/config.json", atomically: true, encoding: .utf8)
        let (_, output) = try RunReport.write(run: run)
        return try String(contentsOfFile: output, encoding: .utf8)
    }

    @Test func theReportNamesTheBaseAdapters() throws {
        let html = try run(baseAdapters: #"[{"path":"/l/style<1>.safetensors","scale":0.8,"content_hash":"xxh64:00112233aabbccdd"},{"path":"/l/b","scale":1.0}]"#)
        #expect(html.contains("Trained on top of base adapters (<code>/l/style&lt;1&gt;.safetensors at 0.8 (xxh64:00112233aabbccdd)</code>, "
                              + "<code>/l/b at 1</code>): the trained LoRA is a delta on top of the base with them applied, "
                              + "and the exports do not contain them."))
        #expect(html.contains("/l/style&lt;1&gt;.safetensors at 0.8 (xxh64:00112233aabbccdd); /l/b at 1</span> "
                              + "<span class=\"d\">(applied to the frozen base; the trained LoRA is a delta on top)</span>"))
        let none = try run(baseAdapters: "[]")
        #expect(!none.contains("Trained on top of base adapters"))
        #expect(none.contains("<span class=\"k\">base_adapters</span> = <span class=\"mono\">none</span>"))
        #expect(!(try run(baseAdapters: nil)).contains("base_adapters"))
    }
}

import Foundation
import Testing
import LoRA
import SafeTensors
import TestSupport

/// Adapter folders built to exhaust memory or the stack: a deeply nested or oversized
/// `adapter_config.json` is refused, naming the file, before it is read or parsed whole.
@Suite struct HostileAdapterConfigTests {
    let dir = TemporaryDirectory()

    func peftFolder(config: [UInt8]) throws -> String {
        let folder = dir.file("adapter")
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let source = Repository.path("fixtures/sd35_tiny/lora/peft")
        try writeBytes(try readBytes(source + "/adapter_model.safetensors"), to: folder + "/adapter_model.safetensors")
        try writeBytes(config, to: folder + "/adapter_config.json")
        return folder
    }

    @Test func deeplyNestedAdapterConfigIsRefused() throws {
        let folder = try peftFolder(config: Array((#"{"r":"# + String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000) + "}").utf8))
        do {
            _ = try LoRAReader.read(path: folder)
            Issue.record("accepted")
        } catch {
            #expect(String(describing: error).contains("adapter_config.json"), "\(error)")
            #expect(String(describing: error).contains("nesting too deep"), "\(error)")
        }
    }

    @Test func oversizedOrEndlessAdapterConfigIsRefusedWithoutReadingIt() throws {
        let folder = try peftFolder(config: [])
        let config = folder + "/adapter_config.json"
        #expect(truncate(config, 1 << 30) == 0)   // 1 GiB, sparse
        do { _ = try LoRAReader.read(path: folder); Issue.record("accepted") } catch {
            #expect(String(describing: error).contains("file larger than 16777216 bytes"), "\(error)")
        }
        try FileManager.default.removeItem(atPath: config)
        try FileManager.default.createSymbolicLink(atPath: config, withDestinationPath: "/dev/zero")
        do { _ = try LoRAReader.read(path: folder); Issue.record("accepted") } catch {
            #expect(String(describing: error).contains("not a regular file"), "\(error)")
        }
    }
}

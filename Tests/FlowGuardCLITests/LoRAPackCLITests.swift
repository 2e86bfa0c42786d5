import Foundation
import Testing
import SafeTensors
import TestSupport

/// `flowguard lora pack` / `lora unpack` end to end.
@Suite struct LoRAPackCLITests {
    let dir = TemporaryDirectory()

    func flowguard(_ arguments: String...) throws -> ProcessResult { try runProcess(CLITests.binary, arguments) }

    @Test func packThenUnpackRestoresTheExactFileAndPythonReadsIt() throws {
        let input = Repository.path("fixtures/sd35_tiny/lora/pytorch_lora_weights.safetensors")
        let archive = dir.file("a.fgdelta"), out = dir.file("out.safetensors")
        let packed = try flowguard("lora", "pack", input, archive, "--threads", "2", "--base", Repository.path("fixtures/sd35_tiny/original.safetensors"))
        #expect(packed.status == 0, "\(packed.stderr)")
        #expect(packed.stdout.hasPrefix("packed \(input) → \(archive): "))
        let unpacked = try flowguard("lora", "unpack", archive, out, "--json")
        #expect(unpacked.status == 0, "\(unpacked.stderr)")
        #expect(unpacked.stdout.contains("\"output\":\"\(out)\""))
        #expect(try readBytes(out) == readBytes(input))
        let dump = try ReferencePeer.dump(out)
        #expect(!dump.isEmpty)
    }

    @Test func corruptArchiveExitsOneWithNoOutput() throws {
        let input = Repository.path("fixtures/sd35_tiny/original.safetensors")
        let archive = dir.file("a.fgdelta")
        #expect(try flowguard("lora", "pack", input, archive).status == 0)
        var bytes = try readBytes(archive)
        bytes[bytes.count / 2] ^= 0xFF
        try writeBytes(bytes, to: archive)
        let result = try flowguard("lora", "unpack", archive, dir.file("out.safetensors"))
        #expect(result.status == 1)
        #expect(result.stderr.contains(archive) && result.stderr.contains("(byte "), "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir.file("out.safetensors")))
    }

    @Test func referenceDeltasNeedTheReferenceToUnpack() throws {
        let first = Repository.path("fixtures/sd35_tiny/lora/pytorch_lora_weights.safetensors")
        let second = Repository.path("fixtures/sd35_tiny/lora/io_lora.safetensors")
        let archive = dir.file("d.fgdelta"), out = dir.file("out.safetensors")
        let packed = try flowguard("lora", "pack", first, archive, "--reference", first, "--json")
        #expect(packed.status == 0, "\(packed.stderr)")
        #expect(packed.stdout.contains("\"xor_reference\":true"))
        let missing = try flowguard("lora", "unpack", archive, out)
        #expect(missing.status == 1 && missing.stderr.contains("--reference"), "\(missing.stderr)")
        let wrong = try flowguard("lora", "unpack", archive, out, "--reference", second)
        #expect(wrong.status == 1, "\(wrong.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out))
        #expect(try flowguard("lora", "unpack", archive, out, "--reference", first).status == 0)
        #expect(try readBytes(out) == readBytes(first))
    }

    @Test func usageErrorsExitTwoAndHelpHasExamples() throws {
        #expect(try flowguard("lora", "pack", "a").status == 2)
        #expect(try flowguard("lora", "pack", "a", "b", "--threads", "0").status == 2)
        let help = try flowguard("lora", "pack", "--help")
        #expect(help.status == 0 && help.stdout.contains("Examples:") && help.stdout.contains("--reference"))
        #expect(try flowguard("lora", "unpack", "--help").stdout.contains("Examples:"))
    }
}

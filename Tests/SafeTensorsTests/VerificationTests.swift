import Foundation
import Testing
import SafeTensors
import TestSupport

/// `Verification`: what `flowguard verify` reports, as typed problems and a data checksum.
@Suite struct VerificationTests {
    let dir = TemporaryDirectory()

    func file(_ name: String, values: [Float]) throws -> String {
        let path = dir.file(name)
        try SafeTensorsWriter.write(to: path, tensors: [
            (TensorSpec(name: "w", dtype: .f32, shape: [values.count]), values.withUnsafeBytes { [UInt8]($0) }),
        ])
        return path
    }

    @Test func soundFileHasNoProblemsAndAChecksumOfItsData() throws {
        let a = try file("a.safetensors", values: [1, 2, 3, 4])
        let b = try file("b.safetensors", values: [1, 2, 3, 5])
        #expect(Verification.verify(a).isValid && Verification.verify(a).checksum == nil)
        var reported: [(Int, Int)] = []
        let read = Verification.verify(a, readData: true) { reported.append(($0, $1)) }
        #expect(read.isValid)
        let size = try SafeTensorsFile(path: a).fileSize
        #expect(reported.last.map { $0.1 } == size)
        let checksum = try #require(read.checksum)
        #expect(Verification.verify(a, readData: true).checksum == checksum)
        #expect(Verification.verify(b, readData: true).checksum != checksum)
    }

    @Test func truncatedFileIsOneProblemNamingFileAndOffsetAndIsNotRead() throws {
        let good = try file("good.safetensors", values: [1, 2, 3, 4])
        var bytes = try readBytes(good)
        bytes.removeLast(2)
        let bad = dir.file("bad.safetensors")
        try writeBytes(bytes, to: bad)
        var called = false
        let report = Verification.verify(bad, readData: true) { _, _ in called = true }
        #expect(!report.isValid && report.checksum == nil && !called)
        #expect(report.problems.map(\.description) == [
            "\(bad): data buffer is 14 bytes but the tensors describe 16 (truncated or trailing data) (byte 14)"])
        guard case .unreadable? = report.problems.first else { Issue.record("not an unreadable-file problem"); return }
    }

    @Test func indexDisagreeingWithItsShardIsAShardProblem() throws {
        let shard = try file("model.safetensors", values: [1, 2])
        let index = dir.file("model.safetensors.index.json")
        try #"{"metadata": {"total_size": 8}, "weight_map": {"w": "model.safetensors", "v": "model.safetensors"}}"#
            .write(toFile: index, atomically: true, encoding: .utf8)
        let report = Verification.verify(index)
        #expect(report.problems.map(\.description) == [
            "\(index): tensor 'v': listed in weight_map under 'model.safetensors' but not found in that shard"])
        guard case .shard(let issue)? = report.problems.first else { Issue.record("not a shard problem"); return }
        #expect(issue.tensor == "v" && issue.file == index)
        _ = shard
    }
}

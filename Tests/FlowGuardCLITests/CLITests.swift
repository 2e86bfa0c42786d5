import Foundation
import Testing
import SafeTensors
import TestSupport

/// End-to-end runs of the `flowguard` binary, comparing whole outputs and exit statuses.
@Suite struct CLITests {
    let dir = TemporaryDirectory()

    static var binary: String {
        let folder = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        return folder.appendingPathComponent("flowguard").path
    }

    func flowguard(_ arguments: String...) throws -> ProcessResult {
        try runProcess(Self.binary, arguments)
    }

    func smallFile() throws -> String {
        let path = dir.file("small.safetensors")
        try SafeTensorsWriter.write(to: path, tensors: [
            (TensorSpec(name: "blocks.0.attn.to_q.weight", dtype: .bf16, shape: [2, 2]), [UInt8](repeating: 0, count: 8)),
            (TensorSpec(name: "blocks.1.attn.to_q.weight", dtype: .bf16, shape: [2, 2]), [UInt8](repeating: 0, count: 8)),
            (TensorSpec(name: "norm\u{1B}[31m.weight", dtype: .f32, shape: [3]), [UInt8](repeating: 0, count: 12)),
        ], metadata: ["format": "pt"])
        return path
    }

    @Test func inspectPrintsTheWholeTable() throws {
        let path = try smallFile()
        let result = try flowguard("inspect", path)
        #expect(result.status == 0)
        #expect(result.stdout == """
        \(path)
          3 tensors, 11 parameters, 28 B of data, header 280 bytes
          architecture: not recognised (The tensors are not an SD3 or FLUX transformer in either layout; 3 unmapped keys: "norm\\u{1B}[31m.weight", "blocks.0.attn.to_q.weight", "blocks.1.attn.to_q.weight".)
          parameters by dtype:
            BF16                        8   72.7%
            F32                         3   27.3%
          __metadata__ (1 entry):
            format = pt
          tensors:
            #  name                       dtype  shape   params  file bytes
            -  -------------------------  -----  ------  ------  ----------
            1  norm\\u{1B}[31m.weight      F32    [3]          3  [280, 292)
            2  blocks.0.attn.to_q.weight  BF16   [2, 2]       4  [292, 300)
            3  blocks.1.attn.to_q.weight  BF16   [2, 2]       4  [300, 308)

        """)
    }

    @Test func inspectGroupsLayerNumbers() throws {
        let path = try smallFile()
        let result = try flowguard("inspect", "--group", path)
        #expect(result.status == 0)
        #expect(result.stdout.hasSuffix("""
          2 groups:
            pattern                       count  dtype  shape   params
            ----------------------------  -----  -----  ------  ------
            norm\\u{1B}[31m.weight             1  F32    [3]          3
            blocks.#.attn.to_q.weight ×2      2  BF16   [2, 2]       8

        """))
    }

    @Test func inspectJSON() throws {
        let path = try smallFile()
        let result = try flowguard("inspect", "--json", path)
        #expect(result.status == 0)
        let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        let file = (json["files"] as! [[String: Any]])[0]
        #expect(file["tensor_count"] as? Int == 3)
        #expect(file["parameters_by_dtype"] as? [String: Int] == ["BF16": 8, "F32": 3])
        #expect(file["metadata"] as? [String: String] == ["format": "pt"])
        let tensors = file["tensors"] as! [[String: Any]]
        #expect(tensors.map { $0["name"] as! String } == ["norm\u{1B}[31m.weight", "blocks.0.attn.to_q.weight", "blocks.1.attn.to_q.weight"])
        #expect(tensors[1]["file_offsets"] as? [Int] == [292, 300])
    }

    @Test func verifyValidAndInvalidFiles() throws {
        let good = try smallFile()
        var ok = try flowguard("verify", good)
        #expect(ok.status == 0 && ok.stdout == "ok: \(good)\n" && ok.stderr.isEmpty)

        // Truncate the data by two bytes: the reader names the file and the offset.
        let bad = dir.file("bad.safetensors")
        var bytes = try readBytes(good)
        bytes.removeLast(2)
        try writeBytes(bytes, to: bad)
        let result = try flowguard("verify", good, bad)
        #expect(result.status == 1)
        #expect(result.stdout == "ok: \(good)\n")
        #expect(result.stderr == "invalid: \(bad): data buffer is 26 bytes but the tensors describe 28 (truncated or trailing data) (byte 26)\n")

        // A header entry with an impossible byte range: file, tensor and byte offset named.
        let lying = dir.file("lying.safetensors")
        try writeBytes(rawSafeTensors(header: #"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}}"#, data: [UInt8](repeating: 0, count: 8)), to: lying)
        ok = try flowguard("verify", lying)
        #expect(ok.status == 1)
        #expect(ok.stderr == "invalid: \(lying): tensor 'w' (byte 9): data_offsets cover 8 bytes but dtype and shape need 16\n")
    }

    @Test func verifyShardedFixtureAndABrokenIndex() throws {
        let fixture = Repository.path("fixtures/sd35_tiny/diffusers_sharded")
        #expect(try flowguard("verify", fixture).status == 0)
        // Copy the fixture, then drop a tensor from the index.
        let copy = dir.file("sharded")
        try FileManager.default.copyItem(atPath: fixture, toPath: copy)
        let indexPath = copy + "/diffusion_pytorch_model.safetensors.index.json"
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: indexPath))) as! [String: Any]
        var map = json["weight_map"] as! [String: String]
        let removed = map.keys.sorted()[0]
        let shard = map.removeValue(forKey: removed)!
        json["weight_map"] = map
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: indexPath))
        let result = try flowguard("verify", copy)
        #expect(result.status == 1)
        #expect(result.stderr == "invalid: \(copy)/\(shard): tensor '\(removed)': present in the shard but missing from weight_map\n")
    }

    @Test func usageErrorsExitWithTwo() throws {
        #expect(try flowguard("inspect").status == 2)
        #expect(try flowguard("frobnicate").status == 2)
        let help = try flowguard("inspect", "--help")
        #expect(help.status == 0 && help.stdout.contains("Examples:"))
    }

    @Test func missingFileIsBadInput() throws {
        let result = try flowguard("inspect", dir.file("nope.safetensors"))
        #expect(result.status == 1)
        #expect(result.stderr == "error: \(dir.file("nope.safetensors")): open failed: No such file or directory\n")
    }
}

import Foundation
import Testing
import SafeTensors
import TestSupport

@Suite struct ShardTests {
    let dir = TemporaryDirectory()

    static let specs: [TensorSpec] = (0..<7).map { TensorSpec(name: "blocks.\($0).weight", dtype: .f32, shape: [10, 10]) }

    func writeSharded(maxBytes: Int = 1000) throws -> [String] {
        try ShardedWriter.write(folder: dir.path, baseName: "model", specs: Self.specs, metadata: ["format": "pt"], maxShardBytes: maxBytes) { sink in
            let index = Float(Int(sink.info.name.split(separator: ".")[1])!)
            try sink.write(floats: [Float](repeating: index, count: 100))
        }
    }

    @Test func writesShardsAndIndexAndReadsThemBack() throws {
        let paths = try writeSharded()
        // 400 bytes per tensor, 1000 per shard: 2 per shard → 4 shards.
        #expect(paths.map { $0.split(separator: "/").last! } == [
            "model-00001-of-00004.safetensors", "model-00002-of-00004.safetensors",
            "model-00003-of-00004.safetensors", "model-00004-of-00004.safetensors", "model.safetensors.index.json"])
        for opened in [try TensorCollection(path: paths.last!), try TensorCollection(path: dir.path)] {
            #expect(opened.entries.count == 7)
            #expect(opened.index?.totalSize == 2800)
            for i in 0..<7 {
                let entry = try #require(opened.entry("blocks.\(i).weight"))
                #expect(try entry.file.floats(of: entry.info) == [Float](repeating: Float(i), count: 100))
            }
        }
        let text = try String(contentsOfFile: paths.last!, encoding: .utf8)
        #expect(text.hasPrefix("{\n  \"metadata\": {\n    \"total_size\": 2800\n  },\n  \"weight_map\": {\n    \"blocks.0.weight\": \"model-00001-of-00004.safetensors\""))
        #expect(dir.listing().allSatisfy { !$0.hasPrefix(".") }, "no temporary files left")
    }

    @Test func singleShardHasNoIndex() throws {
        let paths = try writeSharded(maxBytes: 1 << 30)
        #expect(paths == [dir.file("model.safetensors")])
        #expect(try TensorCollection(path: dir.path).entries.count == 7)
    }

    func rewriteIndex(_ transform: (inout [String: Any]) -> Void) throws -> String {
        let path = dir.file("model.safetensors.index.json")
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
        transform(&json)
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: path))
        return path
    }

    func verifyIssues(_ indexPath: String) throws -> [ShardIssue] {
        let index = try ShardIndex.read(path: indexPath)
        let shards = try index.shardNames.map { try SafeTensorsFile(path: dir.file($0)) }
        return ShardVerifier.issues(index: index, indexPath: indexPath, shards: shards)
    }

    @Test func detectsMissingExtraMisplacedAndWrongTotal() throws {
        _ = try writeSharded()
        let valid = dir.file("model.safetensors.index.json")
        #expect(try verifyIssues(valid).isEmpty)
        let original = try readBytes(valid)

        var path = try rewriteIndex { json in
            var map = json["weight_map"] as! [String: String]
            map["ghost.weight"] = "model-00001-of-00004.safetensors"
            json["weight_map"] = map
        }
        #expect(try verifyIssues(path).map(\.description) == ["\(valid): tensor 'ghost.weight': listed in weight_map under 'model-00001-of-00004.safetensors' but not found in that shard"])
        #expect(throws: SafeTensorsError.self) { try TensorCollection(path: valid) }

        try writeBytes(original, to: valid)
        path = try rewriteIndex { json in
            var map = json["weight_map"] as! [String: String]
            map.removeValue(forKey: "blocks.3.weight")
            map["blocks.0.weight"] = "model-00002-of-00004.safetensors"
            json["weight_map"] = map
            json["metadata"] = ["total_size": 12]
        }
        let issues = try verifyIssues(path).map(\.problem)
        #expect(issues.contains("weight_map says 'model-00002-of-00004.safetensors' but the tensor is in 'model-00001-of-00004.safetensors'"))
        #expect(issues.contains("present in the shard but missing from weight_map"))
        #expect(issues.contains("metadata.total_size is 12 but the shards hold 2800 bytes of tensor data"))
    }

    @Test(arguments: ["../model-00001-of-00004.safetensors", "/etc/passwd", "sub/x.safetensors", "..", "a\\b", ""])
    func rejectsShardNamesLeavingTheFolder(name: String) throws {
        _ = try writeSharded()
        let path = try rewriteIndex { json in
            var map = json["weight_map"] as! [String: String]
            map["blocks.0.weight"] = name
            json["weight_map"] = map
        }
        do {
            _ = try ShardIndex.read(path: path)
            Issue.record("accepted shard name \(name)")
        } catch {
            guard case let .shardIndex(file, tensor, reason) = error else { Issue.record("wrong error \(error)"); return }
            #expect(file == path && tensor == "blocks.0.weight" && reason.hasPrefix("shard name"))
        }
    }

    @Test func rejectsMalformedIndexes() throws {
        for (text, reason) in [("[]", "the index must be a JSON object"), ("{\"metadata\":{}}", "missing 'weight_map'"),
                               ("{\"weight_map\":{\"a\":1}}", "shard name is not a string"), ("{\"weight_map\":", "not valid JSON"),
                               ("{\"metadata\":{\"total_size\":-1},\"weight_map\":{}}", "metadata.total_size is not a non-negative integer")] {
            let path = dir.file("x.safetensors.index.json")
            try writeBytes(Array(text.utf8), to: path)
            do {
                _ = try ShardIndex.read(path: path)
                Issue.record("accepted \(text)")
            } catch {
                #expect(error.description.contains(reason), "\(error)")
            }
        }
    }

    @Test func failedWriteLeavesNothingBehind() throws {
        struct Boom: Error {}
        #expect(throws: Boom.self) {
            try SafeTensorsWriter.write(to: dir.file("out.safetensors"), specs: Self.specs) { sink in
                if sink.info.name == "blocks.4.weight" { throw Boom() }
                try sink.write(floats: [Float](repeating: 1, count: 100))
            }
        }
        #expect(throws: SafeTensorsError.self) {
            try SafeTensorsWriter.write(to: dir.file("out.safetensors"), specs: Self.specs) { sink in
                try sink.write(floats: [Float](repeating: 1, count: 99))   // one value short
            }
        }
        #expect(dir.listing().isEmpty)
        #expect(throws: SafeTensorsError.self) {
            try SafeTensorsWriter.write(to: dir.file("no/such/folder/out.safetensors"), specs: Self.specs) { _ in }
        }
    }
}

/// Writing into a filesystem that is too small fails up front with a clear message and leaves
/// nothing behind. Uses a 1 MiB tmpfs, which needs root (as CI runs); elsewhere the test is
/// skipped with the reason recorded.
@Suite struct DiskFullTests {
    @Test func notEnoughDiskSpaceIsReportedAndNothingIsLeft() throws {
        let dir = TemporaryDirectory()
        let mountPoint = dir.file("small-fs")
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        guard let mount = which("mount"), let umount = which("umount"),
              try runProcess(mount, ["-t", "tmpfs", "-o", "size=1M", "tmpfs", mountPoint]).status == 0 else {
            withKnownIssue("mounting a tmpfs needs root; the disk-full path is not exercised here") { throw PeerUnavailable(reason: "no tmpfs") }
            return
        }
        defer { _ = try? runProcess(umount, [mountPoint]) }
        let specs = [TensorSpec(name: "big", dtype: .f32, shape: [1024, 1024])]   // 4 MiB > 1 MiB
        do {
            try SafeTensorsWriter.write(to: mountPoint + "/out.safetensors", specs: specs) { sink in
                try sink.write(floats: [Float](repeating: 1, count: 1024 * 1024))
            }
            Issue.record("a 4 MiB file fitted in a 1 MiB filesystem")
        } catch let error as SafeTensorsError {
            #expect(error.description.contains("not enough disk space"), "\(error)")
            #expect(error.description.hasPrefix(mountPoint + "/out.safetensors"))
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: mountPoint).isEmpty)
    }
}

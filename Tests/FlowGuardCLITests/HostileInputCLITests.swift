import Dispatch
import Foundation
import Testing
import SafeTensors
import SystemSupport
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Hostile inputs end to end: files truncated by another process while mapped, two writers
/// racing for one output, a shard index pointing outside its folder, headers that claim huge
/// sizes. Each ends with exit status 1, one clear sentence, bounded memory and no output or
/// temporary file left.
@Suite struct HostileInputCLITests {
    let dir = TemporaryDirectory()
    let original = Repository.path("fixtures/sd35_tiny/original.safetensors")
    let lora = Repository.path("fixtures/sd35_tiny/lora/pytorch_lora_weights.safetensors")

    func flowguard(_ arguments: String...) throws -> ProcessResult { try runProcess(CLITests.binary, arguments) }

    /// How a command run by `runTruncating` ended.
    struct Outcome {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// Runs `flowguard arguments` with the test hook `FLOWGUARD_TEST_PAUSE_AFTER_MAP` (see
    /// `MappingGuard`): the command stops right after its `mapping`-th file mapping; while it
    /// waits, `victim` is truncated to `keep` bytes; then it goes on. Returns nil (and records an
    /// issue) if the command never reached that mapping.
    func runTruncating(_ victim: String, to keep: Int, afterMapping mapping: Int, _ arguments: [String]) throws -> Outcome? {
        let fifo = dir.file("pause.fifo")
        unlink(fifo)
        #expect(mkfifo(fifo, 0o600) == 0)
        defer { unlink(fifo) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CLITests.binary)
        process.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        environment["FLOWGUARD_TEST_PAUSE_AFTER_MAP"] = "\(mapping):\(fifo)"
        process.environment = environment
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        nonisolated(unsafe) var outData = Data(), errData = Data()
        let group = DispatchGroup()
        DispatchQueue.global().async(group: group) { outData = out.fileHandleForReading.readDataToEndOfFile() }
        DispatchQueue.global().async(group: group) { errData = err.fileHandleForReading.readDataToEndOfFile() }
        // A non-blocking open for writing succeeds once the command has opened the pipe for
        // reading, i.e. once it is paused after the mapping.
        var fd: Int32 = -1
        let deadline = ContinuousClock.now + .seconds(120)
        while fd < 0 && process.isRunning && ContinuousClock.now < deadline {
            fd = open(fifo, O_WRONLY | O_NONBLOCK | O_CLOEXEC)
            if fd < 0 { usleep(2_000) }
        }
        if fd >= 0 {
            #expect(truncate(victim, off_t(keep)) == 0)
            var byte: UInt8 = 1
            _ = write(fd, &byte, 1)
            close(fd)
        } else {
            if process.isRunning { process.terminate() }
        }
        group.wait()
        process.waitUntilExit()
        let result = Outcome(status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                                   stderr: String(decoding: errData, as: UTF8.self))
        guard fd >= 0 else {
            Issue.record("the command never reached mapping \(mapping): \(result.status) \(result.stderr)")
            return nil
        }
        return result
    }

    /// A file holding one F32 tensor of `elements` zeros, written sparsely.
    func sparseFile(_ name: String, elements: Int) throws -> (path: String, dataStart: Int) {
        let path = dir.file(name)
        let header = try SafeTensorsLayout(specs: [TensorSpec(name: "w", dtype: .f32, shape: [elements])], metadata: nil).headerBytes
        try writeBytes(header, to: path)
        #expect(truncate(path, off_t(header.count + 4 * elements)) == 0)
        return (path, header.count)
    }

    func expectChangedWhileReading(_ result: Outcome?, _ file: String, _ label: String) {
        guard let result else { return }
        #expect(result.status == 1, "\(label): \(result.status) \(result.stderr)")
        #expect(result.stderr.hasSuffix(MappingGuard.changedWhileReadingMessage(file)), "\(label): \(result.stderr)")
    }

    // MARK: truncated while mapped

    @Test func verifyReadDataOfAFileTruncatedWhileMapped() throws {
        let (path, dataStart) = try sparseFile("big.safetensors", elements: 8 << 20)
        // Mapping 1 is the header check, mapping 2 the full read.
        let result = try runTruncating(path, to: dataStart + 4096, afterMapping: 2, ["verify", "--read-data", path])
        expectChangedWhileReading(result, path, "verify --read-data")
        #expect(result?.stdout == "")
        #expect(dir.listing() == ["big.safetensors"])
    }

    @Test func inspectStatsOfAFileTruncatedWhileMapped() throws {
        let (path, dataStart) = try sparseFile("big.safetensors", elements: 8 << 20)
        let result = try runTruncating(path, to: dataStart, afterMapping: 1, ["inspect", "--stats", path])
        expectChangedWhileReading(result, path, "inspect --stats")
        #expect(dir.listing() == ["big.safetensors"])
    }

    @Test func convertOfAFileTruncatedWhileMappedLeavesNoOutput() throws {
        let input = dir.file("in.safetensors")
        try writeBytes(try readBytes(original), to: input)
        let dataStart = try SafeTensorsFile(path: input).header.dataStart
        for out in [dir.file("out.safetensors"), dir.file("folder") + "/"] {
            try writeBytes(try readBytes(original), to: input)
            let result = try runTruncating(input, to: dataStart, afterMapping: 1,
                                           ["convert", input, out, "--layout", "diffusers", "--dtype", "bf16"])
            expectChangedWhileReading(result, input, "convert to \(out)")
            #expect(dir.listing() == ["in.safetensors"], "convert to \(out)")
        }
    }

    @Test func loraMergeOfABaseTruncatedWhileMappedLeavesNoOutput() throws {
        let base = dir.file("base.safetensors")
        try writeBytes(try readBytes(original), to: base)
        let dataStart = try SafeTensorsFile(path: base).header.dataStart
        let result = try runTruncating(base, to: dataStart, afterMapping: 1,
                                       ["lora", "merge", base, lora, dir.file("merged.safetensors"), "--dtype", "bf16"])
        expectChangedWhileReading(result, base, "lora merge")
        #expect(dir.listing() == ["base.safetensors"])
    }

    @Test func loraUnpackOfAnArchiveTruncatedWhileMappedLeavesNoOutput() throws {
        let archive = dir.file("a.fgdelta")
        #expect(try flowguard("lora", "pack", original, archive).status == 0)
        let result = try runTruncating(archive, to: 16, afterMapping: 1, ["lora", "unpack", archive, dir.file("out.safetensors")])
        expectChangedWhileReading(result, archive, "lora unpack")
        #expect(dir.listing() == ["a.fgdelta"])
    }

    @Test func runWithModelWeightsTruncatedWhileMappedLeavesNoOutput() throws {
        let model = dir.file("model.safetensors")
        try writeBytes(try readBytes(original), to: model)
        let dataStart = try SafeTensorsFile(path: model).header.dataStart
        let result = try runTruncating(model, to: dataStart, afterMapping: 1,
                                       ["run", "--model", model, "--inputs", Repository.path("fixtures/sd35_tiny/io.safetensors"),
                                        "--output", dir.file("out.safetensors")])
        expectChangedWhileReading(result, model, "run")
        #expect(dir.listing() == ["model.safetensors"])
    }

    // MARK: two writers, one output

    /// Runs every command at once, `rounds` times; after each round OUT must be byte for byte
    /// one of `expected` and the folder must hold no temporary file.
    func race(_ commands: [[String]], out: String, expected: [[UInt8]], rounds: Int = 3) throws {
        for round in 0..<rounds {
            let results = UnsafeMutableBufferPointer<ProcessResult?>.allocate(capacity: commands.count)
            results.initialize(repeating: nil)
            defer { _ = results.deinitialize(); results.deallocate() }
            nonisolated(unsafe) let slots = results
            DispatchQueue.concurrentPerform(iterations: commands.count) { i in
                slots[i] = try? runProcess(CLITests.binary, commands[i])
            }
            for (i, result) in results.enumerated() {
                #expect(result?.status == 0, "round \(round), writer \(i): \(result?.stderr ?? "did not start")")
            }
            let bytes = try readBytes(out)
            #expect(expected.contains(bytes), "round \(round): the output is neither writer's file")
            #expect(!dir.listing().contains { $0.hasPrefix(".") }, "round \(round): \(dir.listing())")
        }
    }

    @Test func concurrentConvertsToOneOutput() throws {
        let out = dir.file("out.safetensors")
        let a = ["convert", original, out, "--layout", "diffusers", "--dtype", "bf16", "--force"]
        let b = ["convert", original, out, "--layout", "diffusers", "--dtype", "fp32", "--force"]
        #expect(try runProcess(CLITests.binary, a).status == 0)
        let expectedA = try readBytes(out)
        #expect(try runProcess(CLITests.binary, b).status == 0)
        let expectedB = try readBytes(out)
        #expect(expectedA != expectedB)
        try race([a, b], out: out, expected: [expectedA, expectedB])
    }

    @Test func concurrentMergesAndPacksToOneOutput() throws {
        let merged = dir.file("merged.safetensors")
        let m1 = ["lora", "merge", original, lora, merged, "--scale", "0.5", "--force"], m2 = ["lora", "merge", original, lora, merged, "--scale", "1", "--force"]
        #expect(try runProcess(CLITests.binary, m1).status == 0)
        let e1 = try readBytes(merged)
        #expect(try runProcess(CLITests.binary, m2).status == 0)
        let e2 = try readBytes(merged)
        try race([m1, m2], out: merged, expected: [e1, e2])

        let archive = dir.file("a.fgdelta")
        let p1 = ["lora", "pack", lora, archive, "--force"], p2 = ["lora", "pack", lora, archive, "--no-byte-planes", "--force"]
        #expect(try runProcess(CLITests.binary, p1).status == 0)
        let a1 = try readBytes(archive)
        #expect(try runProcess(CLITests.binary, p2).status == 0)
        let a2 = try readBytes(archive)
        #expect(a1 != a2)
        try race([p1, p2], out: archive, expected: [a1, a2])
    }

    // MARK: indexes and headers

    @Test func shardIndexPointingOutsideItsFolderIsRefused() throws {
        // A valid shard exists outside the folder: only the name check stands in the way.
        let folder = dir.file("model")
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let outside = dir.file("secret.safetensors")
        try SafeTensorsWriter.write(to: outside, tensors: [(TensorSpec(name: "w", dtype: .u8, shape: [1]), [1])])
        for name in ["../secret.safetensors", outside, "sub/../../secret.safetensors"] {
            let index = folder + "/model.safetensors.index.json"
            try writeBytes(Array(ShardIndex(totalSize: 1, weightMap: [("w", name)]).jsonText.utf8), to: index)
            for command in [["verify", index], ["inspect", index], ["verify", folder]] {
                let result = try runProcess(CLITests.binary, command)
                #expect(result.status == 1, "\(command) \(name)")
                #expect(result.stderr.contains("\(index): tensor 'w': shard index: shard name '\(name)' "), "\(command): \(result.stderr)")
            }
        }
    }

    /// Peak resident memory of `flowguard arguments`, in KiB, by /usr/bin/time.
    func peakMemory(_ arguments: [String]) throws -> (result: ProcessResult, kib: Int)? {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/time") else { return nil }
        let timed = try runProcess("/usr/bin/time", ["-f", "peak %M"] + [CLITests.binary] + arguments)
        let line = timed.stderr.split(separator: "\n").last { $0.hasPrefix("peak ") }
        guard let kib = line.flatMap({ Int($0.dropFirst(5)) }) else { return nil }
        return (timed, kib)
    }

    @Test func hugeDeclaredHeaderIsRefusedWithSmallMemory() throws {
        // A 200 MB (sparse) file whose header claims 150 MB: over the limit, and refused
        // without reading or allocating it.
        let path = dir.file("huge.safetensors")
        try writeBytes(rawSafeTensors(header: "{}", declaredLength: 150_000_000), to: path)
        #expect(truncate(path, 200_000_000) == 0)
        guard let (result, kib) = try peakMemory(["inspect", path]) else { return }
        #expect(result.status == 1)
        #expect(result.stderr.hasPrefix("error: \(path): header length 150000000 exceeds the 100,000,000-byte limit (byte 0)\n"))
        #expect(kib < 100_000, "peak \(kib) KiB")
        // Claiming more than the file holds.
        try writeBytes(rawSafeTensors(header: "{}", declaredLength: 99_000_000), to: path)
        guard let (short, kib2) = try peakMemory(["verify", path]) else { return }
        #expect(short.status == 1)
        #expect(short.stderr.hasPrefix("invalid: \(path): invalid header length: header claims 99000000 bytes but the file holds only 2 after the length field (byte 0)\n"))
        #expect(kib2 < 100_000, "peak \(kib2) KiB")
    }

    @Test func nonFiniteWeightsAreKeptCountedAndReported() throws {
        let path = dir.file("nan.safetensors")
        let values: [Float] = [1, .nan, .infinity, -.infinity, 0]
        try SafeTensorsWriter.write(to: path, tensors: [(TensorSpec(name: "w", dtype: .f32, shape: [5]),
                                                        values.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) })])
        // Valid safetensors: verify accepts it (NaN is data, not damage) and reads it whole.
        let verified = try flowguard("verify", "--read-data", path)
        #expect(verified.status == 0 && verified.stdout.hasPrefix("ok: \(path)"))
        let stats = try flowguard("inspect", "--stats", path)
        #expect(stats.status == 0)
        #expect(stats.stdout.contains("statistics: 1 NaN, 1 +Inf, 1 -Inf in 1 tensors"), "\(stats.stdout)")
    }
}

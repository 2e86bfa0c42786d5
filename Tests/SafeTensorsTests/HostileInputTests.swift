import Foundation
import Testing
import JSON
import SafeTensors
import SystemSupport
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Files made by someone who wants the reader to crash, allocate without bound or leave the
/// folder: each is refused with a typed error naming the file (and tensor and byte offset where
/// there is one), before anything large is allocated. The limits themselves are in
/// `docs/safetensors.md` ("Reading: checks"). Large inputs are sparse files, so the tests are fast.
@Suite struct HostileInputTests {
    let dir = TemporaryDirectory()

    func openError(_ bytes: [UInt8], sparseSize: Int? = nil) throws -> SafeTensorsError {
        if let error = try openingError(bytes, at: dir.file("bad.safetensors"), sparseSize: sparseSize) { return error }
        Issue.record("expected the file to be rejected")
        throw PeerUnavailable(reason: "accepted a bad file")
    }

    var bad: String { dir.file("bad.safetensors") }

    // MARK: header length

    @Test func headerLengthAboveTheLimitIsRefusedBeforeReadingIt() throws {
        // The file really is large enough (sparse), so only the limit stands in the way.
        let error = try openError(rawSafeTensors(header: "{}", declaredLength: 100_000_001), sparseSize: 100_000_100)
        #expect(error == .headerTooLarge(file: bad, declared: 100_000_001))
        #expect(error.description == "\(bad): header length 100000001 exceeds the 100,000,000-byte limit (byte 0)")
        #expect(try openError(rawSafeTensors(header: "", declaredLength: .max)) == .headerTooLarge(file: bad, declared: .max))
        #expect(try openError(rawSafeTensors(header: "", declaredLength: 1 << 63)) == .headerTooLarge(file: bad, declared: 1 << 63))
    }

    @Test func headerLengthLargerThanTheFileIsRefused() throws {
        // 100 MB claimed (exactly the limit) in a 20-byte file.
        let error = try openError(rawSafeTensors(header: "{}", data: Array(repeating: 0x20, count: 10), declaredLength: 100_000_000))
        #expect(error == .invalidHeaderLength(file: bad, declared: 100_000_000, fileSize: 20))
        #expect(error.description == "\(bad): invalid header length: header claims 100000000 bytes but the file holds only 12 after the length field (byte 0)")
        // One byte more than the file holds.
        #expect(try openError(rawSafeTensors(header: "{}  ", declaredLength: 5)) == .invalidHeaderLength(file: bad, declared: 5, fileSize: 12))
    }

    // MARK: many tensors

    /// A header of `count` zero-byte tensors: the densest header there is (about 58 bytes a
    /// tensor, so at most ≈1.7 million fit under the 100 MB limit).
    static func tinyTensorsHeader(_ count: Int) -> String {
        var text = "{"
        text.reserveCapacity(count * 60)
        for i in 0..<count {
            if i > 0 { text += "," }
            text += #""t\#(i)":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}"#
        }
        return text + "}"
    }

    /// 100k zero-size tensors open and are all found. (How long that takes is a benchmark's
    /// business, not a test's: `tools/bench/safetensors_read.py --tensors 100000`.)
    @Test func manyTinyTensorsOpen() throws {
        let count = 100_000
        let path = dir.file("many.safetensors")
        try writeBytes(rawSafeTensors(header: Self.tinyTensorsHeader(count)), to: path)
        let file = try SafeTensorsFile(path: path)
        #expect(file.tensors.count == count)
        #expect(try file.info("t99999").byteCount == 0)
        #expect(try file.info("t0").byteCount == 0)
    }

    // MARK: nesting

    @Test func deeplyNestedHeaderIsRefusedWithoutRecursion() throws {
        for depth in [65, 1_000, 1_000_000] {
            let deep = String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
            let header = #"{"t":{"dtype":"U8","shape":[0],"data_offsets":[0,0],"x":"# + deep + "}}"
            guard case let .headerNotJSON(file, reason, offset) = try openError(rawSafeTensors(header: header)) else {
                Issue.record("depth \(depth): wrong error"); continue
            }
            #expect(file == bad && reason.contains("nesting too deep"), "\(reason)")
            #expect(offset > 8 && offset < 8 + 200, "offset \(offset)")
        }
        // Unbalanced openers only (1 MB of '['): stops at the depth limit, near the start.
        guard case let .headerNotJSON(_, reason, offset) = try openError(rawSafeTensors(header: String(repeating: "[", count: 1_000_000))) else {
            Issue.record("wrong error"); return
        }
        #expect(reason.contains("nesting too deep") && offset < 8 + 200)
        // In __metadata__ too.
        let meta = #"{"__metadata__":{"a":"# + String(repeating: "{\"b\":", count: 100) + "1" + String(repeating: "}", count: 101) + "}"
        guard case .headerNotJSON = try openError(rawSafeTensors(header: meta)) else { Issue.record("metadata: wrong error"); return }
    }

    @Test func headerWithTooManyValuesIsRefusedBeforeParsing() throws {
        // 4,000,001 values in an ignored field, 8 MB: parsed, they would cost about 450 MB
        // (100 MB of them, 5.6 GB). Counted without parsing and refused at the value over the limit.
        let prefix = #"{"t":{"dtype":"U8","shape":[0],"data_offsets":[0,0],"x":["#
        let header = prefix + String(repeating: "0,", count: 4_000_000) + "0]}}"
        let error = try openError(rawSafeTensors(header: header))
        // The count starts at 1 and the prefix holds 14 of '{', '[', ',' and ':': the k-th comma
        // of the array makes 15 + k, so comma k = 3,999,986 is the first over the limit.
        guard case let .invalidHeader(file, nil, reason, offset) = error else { Issue.record("wrong error \(error)"); return }
        #expect(file == bad && reason.hasPrefix("more than 4000000 JSON values and keys"))
        #expect(offset == 8 + prefix.utf8.count + 2 * (3_999_986 - 1) + 1, "\(offset)")
        // The count skips strings (escaped quotes included) and is exact at the boundary.
        let text = Array(#"{"a,b:[{\",": [1, 2], "c": {}}"#.utf8)
        text.withUnsafeBytes { raw in
            #expect(JSONValue.offsetExceedingValueCount(raw, limit: 8) == nil)
            #expect(JSONValue.offsetExceedingValueCount(raw, limit: 7) == text.count - 3)
        }
    }

    @Test func nestingWithinTheLimitIsAccepted() throws {
        // Unknown fields are ignored, however they are nested (within the 64 levels).
        let deep = String(repeating: "[", count: 60) + String(repeating: "]", count: 60)
        let path = dir.file("ok.safetensors")
        try writeBytes(rawSafeTensors(header: #"{"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":"# + deep + "}}", data: [7]), to: path)
        #expect(try SafeTensorsFile(path: path).bytes(of: "t") == [7])
    }

    @Test func deeplyNestedShardIndexIsRefused() throws {
        let path = dir.file("model.safetensors.index.json")
        try writeBytes(Array((#"{"metadata":"# + String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000) + #","weight_map":{}}"#).utf8), to: path)
        do {
            _ = try ShardIndex.read(path: path)
            Issue.record("accepted")
        } catch {
            guard case let .shardIndex(file, _, reason) = error else { Issue.record("wrong error \(error)"); return }
            #expect(file == path && reason.contains("nesting too deep"), "\(reason)")
        }
    }

    @Test func oversizedShardIndexIsRefusedWithoutReadingIt() throws {
        let path = dir.file("model.safetensors.index.json")
        try writeBytes(Array("{".utf8), to: path)
        #expect(truncate(path, 100_000_001) == 0)
        do {
            _ = try ShardIndex.read(path: path)
            Issue.record("accepted")
        } catch {
            #expect(error.description == "\(path): read failed: file larger than 100000000 bytes")
        }
        // Not a regular file (a link to /dev/zero would otherwise be read forever).
        let link = dir.file("zero.safetensors.index.json")
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: "/dev/zero")
        #expect(throws: SafeTensorsError.self) { try ShardIndex.read(path: link) }
    }

    // MARK: shapes

    @Test func shapeProductsThatOverflowAreRefused() throws {
        let cases: [(String, String)] = [
            ("I32", "[4294967296,4294967296]"),             // elements overflow
            ("F64", "[2305843009213693952]"),               // 2^61 elements × 64 bits overflow
            ("U8", "[3,6148914691236517206]"),              // just over 2^64 elements
        ]
        for (dtype, shape) in cases {
            let header = #"{"w":{"dtype":"\#(dtype)","shape":\#(shape),"data_offsets":[0,16]}}"#
            let error = try openError(rawSafeTensors(header: header, data: Array(repeating: 0, count: 16)))
            #expect(error == .validationOverflow(file: bad, tensor: "w", offset: 9), "\(dtype) \(shape)")
            #expect(error.description == "\(bad): tensor 'w' (byte 9): shape × dtype size overflows 64 bits")
        }
        // A zero makes the product 0, so only our own check stops dimensions above 2^63 − 1
        // (Int cannot hold them).
        let zero = try openError(rawSafeTensors(header: #"{"w":{"dtype":"U8","shape":[0,18446744073709551615],"data_offsets":[0,0]}}"#))
        #expect(zero == .invalidHeader(file: bad, tensor: "w", reason: "a dimension exceeds 2^63-1", offset: 9))
        // A negative or fractional dimension is not a size.
        for shape in ["[-1]", "[1.5]"] {
            guard case .invalidHeader(_, "w", _, 9) = try openError(rawSafeTensors(header: #"{"w":{"dtype":"U8","shape":\#(shape),"data_offsets":[0,1]}}"#, data: [0])) else {
                Issue.record("shape \(shape): wrong error"); continue
            }
        }
    }

    // MARK: truncation behind our back

    @Test func mappingsAndTemporaryFilesAreRegisteredForTheSignalHandler() throws {
        // The SIGBUS handler itself is exercised end to end by HostileInputCLITests; here: the
        // registries are filled and emptied by the objects' lifetimes.
        let path = dir.file("w.safetensors")
        try SafeTensorsWriter.write(to: path, tensors: [(TensorSpec(name: "w", dtype: .u8, shape: [4]), [1, 2, 3, 4])])
        #expect(MappingGuard.changedWhileReadingMessage(path)
                == "error: \(path) changed while being read (it was truncated or replaced by another process); nothing was written\n")
        let tokens = (0..<8).map { _ in MappingGuard.registerCleanup(path: "/nonexistent") }
        #expect(tokens.allSatisfy { $0 >= 0 } && Set(tokens).count == 8)
        tokens.forEach(MappingGuard.unregisterCleanup)
        do {
            let file = try SafeTensorsFile(path: path)
            let atomic = try AtomicFile(destination: dir.file("out.safetensors"))
            try atomic.write([1])
            #expect(dir.listing().contains { $0.hasPrefix(".out.safetensors.tmp-") })
            _ = file
        }
        #expect(dir.listing() == ["w.safetensors"])
    }
}

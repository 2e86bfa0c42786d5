import Testing
import GGUF
import TestSupport

/// Reading what gguf-py wrote, and our writer's headers read back by our reader.
@Suite struct HeaderTests {
    /// Every metadata value type, as gguf-py wrote it into the types fixture.
    @Test func readsEveryValueTypeGGUFPyWrote() throws {
        let header = try parse(try Fixture.types.bytes())
        #expect(header.version == 3)
        #expect(header.alignment == 64)
        #expect(header.dataStart % 64 == 0)
        #expect(header.architecture == "flowguard-test")
        let want: [(String, GGUFValue)] = [
            ("general.architecture", .string("flowguard-test")),
            ("general.alignment", .uint32(64)),
            ("test.u8", .uint8(200)), ("test.i8", .int8(-100)), ("test.u16", .uint16(60000)), ("test.i16", .int16(-30000)),
            ("test.u32", .uint32(4_000_000_000)), ("test.i32", .int32(-2_000_000_000)), ("test.f32", .float32(0.1)),
            ("test.bool", .bool(true)), ("test.string", .string("FlowGuard — GGUF ✓")),
            ("test.u64", .uint64(18_000_000_000_000_000_000)), ("test.i64", .int64(-9_000_000_000_000_000_000)),
            ("test.f64", .float64(-2.5e-300)),
            ("test.array.i32", .array(.int32([1, -2, 3]))), ("test.array.f32", .array(.float32([0.5, -1.25]))),
            ("test.array.string", .array(.string(["a", "", "ü"]))), ("test.array.bool", .array(.bool([true, false, true]))),
            ("test.array.u8", .array(.uint8([1, 2, 255]))), ("test.array.u64", .array(.uint64([1, 1 << 63]))),
            ("test.array.nested", .array(.array([.int32([1, 2]), .int32([3]), .array([.float32([4.5])])]))),
        ]
        #expect(header.metadata.map(\.key) == want.map(\.0))
        for (key, value) in want { #expect(header.value(key) == value, "\(key)") }
        #expect(header.metadata.first?.offset == 24)
        let scalar = try #require(header.tensor("shape.scalar"))
        #expect(scalar.shape == [] && scalar.elementCount == 1 && scalar.rowCount == 1)
        #expect(header.tensor("shape.3d")?.shape == [2, 3, 32])
        #expect(header.tensor("kquant.q4_k")?.shape == [2, 256])
        #expect(header.tensor("kquant.q4_k")?.rowByteCount == 144)
        #expect(header.tensor("missing") == nil)
    }

    /// Our writer → our reader: metadata of every type (nested and empty arrays too), every
    /// type's tensor, a scalar, a zero-sized tensor, a custom alignment; the data lands where the
    /// layout says, padding is zeros.
    @Test(arguments: [32, 64, 256])
    func writerRoundTrip(alignment: Int) throws {
        let metadata: [GGUFMetadataEntry] = [
            .init(key: "general.architecture", value: .string("flux")),
            .init(key: "u8", value: .uint8(7)), .init(key: "i8", value: .int8(-7)), .init(key: "u16", value: .uint16(65535)),
            .init(key: "i16", value: .int16(-32768)), .init(key: "u32", value: .uint32(.max)), .init(key: "i32", value: .int32(.min)),
            .init(key: "f32", value: .float32(-0.0)), .init(key: "bool", value: .bool(false)), .init(key: "s", value: .string("")),
            .init(key: "u64", value: .uint64(.max)), .init(key: "i64", value: .int64(.min)), .init(key: "f64", value: .float64(.infinity)),
            .init(key: "empty", value: .array(.float64([]))),
            .init(key: "nested", value: .array(.array([.string(["x", "yz"]), .bool([]), .array([.int16([-1])])]))),
            .init(key: "ключ\n", value: .array(.uint16([1, 2]))),
        ]
        var specs = GGUFType.allCases.map { GGUFTensorSpec(name: "t.\($0.name)", shape: [2, $0.blockSize * 2], type: $0) }
        specs.append(GGUFTensorSpec(name: "scalar", shape: [], type: .f32))
        specs.append(GGUFTensorSpec(name: "empty", shape: [0, 4096], type: .f16))
        specs.append(GGUFTensorSpec(name: "4d", shape: [2, 1, 3, 32], type: .q8_0))
        var generator = SeededGenerator(seed: 18)
        let tensors = specs.map { spec -> (spec: GGUFTensorSpec, bytes: [UInt8]) in
            let count = GGUFLayout.byteCountForTest(spec)
            return (spec, (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) })
        }
        let file = try GGUFLayout.serialize(metadata: metadata, tensors: tensors, alignment: alignment)
        let layout = try GGUFLayout(metadata: metadata, tensors: specs, alignment: alignment)
        #expect(file.count == layout.totalSize)
        #expect(Array(file[..<layout.headerBytes.count]) == layout.headerBytes)
        #expect(file[layout.headerBytes.count..<layout.dataStart].allSatisfy { $0 == 0 })
        #expect(layout.dataStart % alignment == 0 && layout.headerPadding < alignment)

        let header = try parse(file, file: "rt.gguf")
        #expect(header.version == 3)
        #expect(header.alignment == alignment)
        #expect(header.dataStart == layout.dataStart)
        #expect(header.fileSize == file.count)
        let written = alignment == 32 ? metadata : metadata + [.init(key: "general.alignment", value: .uint32(UInt32(alignment)))]
        #expect(header.metadata.map { GGUFMetadataEntry(key: $0.key, value: $0.value) } == written)
        #expect(header.tensors.count == specs.count)
        var end = header.dataStart
        for ((spec, bytes), info) in zip(tensors, header.tensors) {
            #expect(info.name == spec.name && info.shape == spec.shape && info.type == spec.type)
            #expect(info.byteRange.lowerBound % alignment == 0)
            #expect(Array(file[info.byteRange]) == bytes, "\(spec.name)")
            #expect(file[end..<info.byteRange.lowerBound].allSatisfy { $0 == 0 }, "padding before \(spec.name)")
            end = info.byteRange.upperBound
        }
        #expect(file.count % alignment == 0)
        #expect(file[end...].allSatisfy { $0 == 0 })
    }

    /// Version 2 files (same layout with u64 counts) are read.
    @Test func readsVersion2() throws {
        var file = try GGUFLayout.serialize(metadata: [], tensors: [(GGUFTensorSpec(name: "w", shape: [4], type: .f32), [UInt8](repeating: 1, count: 16))])
        file[4] = 2
        let header = try parse(file)
        #expect(header.version == 2)
        #expect(header.tensor("w")?.byteRange == 64..<80)
    }

    /// Tensors may come in any order in the data section, with gaps: only overlaps are refused.
    @Test func readsOutOfOrderTensors() throws {
        var raw = RawGGUF()
        raw.header(tensors: 2, entries: 0)
        raw.tensorInfo("a", dims: [8], type: 0, offset: 64)
        raw.tensorInfo("b", dims: [8], type: 0, offset: 0)
        raw.pad()
        raw.zeros(96)
        let header = try parse(raw.bytes)
        #expect(header.tensor("a")!.byteRange.lowerBound == header.dataStart + 64)
        #expect(header.tensor("b")!.byteRange == header.dataStart..<(header.dataStart + 32))
    }
}

extension GGUFLayout {
    /// Bytes of a spec (via a one-tensor layout), for building test data.
    static func byteCountForTest(_ spec: GGUFTensorSpec) -> Int {
        (try? GGUFLayout(metadata: [], tensors: [spec]))!.tensors[0].byteCount
    }
}

import Testing
import GGUF
import TestSupport

/// Hostile and broken GGUF files: each is refused with a typed error whose sentence names the
/// file, the tensor or key, and the byte offset of the bad field; none crashes or allocates by a
/// declared size first.
@Suite struct HostileInputTests {
    /// A small valid file: one metadata entry, two tensors.
    static func valid() -> [UInt8] {
        var raw = RawGGUF()
        raw.header(tensors: 2, entries: 1)
        raw.u32Entry("general.alignment", 32)                                     // bytes 24–56
        raw.tensorInfo("a", dims: [32, 2], type: GGUFType.q8_0.rawValue, offset: 0)   // 57–97
        raw.tensorInfo("b", dims: [4], type: 0, offset: 96)                        // 98–130
        raw.pad()
        raw.zeros(128)
        return raw.bytes
    }

    func message(_ bytes: [UInt8], file: String = "bad.gguf") -> String {
        parseError(bytes, file: file)?.description ?? "(parsed)"
    }

    @Test func validBaseParses() throws {
        let header = try parse(Self.valid())
        #expect(header.dataStart == 160)
        #expect(header.tensor("a")?.byteRange == 160..<228)
        #expect(header.tensor("b")?.byteRange == 256..<272)
    }

    @Test func badMagic() {
        var bytes = Self.valid()
        bytes.replaceSubrange(0..<4, with: Array("GGML".utf8))
        #expect(message(bytes) == "bad.gguf (byte 0): not a GGUF file: it starts with 'GGML', expected 'GGUF'")
        bytes.replaceSubrange(0..<4, with: [0x89, 0x50, 0x4E, 0x47])
        #expect(message(bytes) == "bad.gguf (byte 0): not a GGUF file: it starts with '\\x89PNG', expected 'GGUF'")
        #expect(message(Array(bytes.prefix(3))) == "bad.gguf (byte 0): truncated: the magic 'GGUF' needs 4 bytes here but the file ends at byte 3")
    }

    @Test func badVersion() {
        for version: UInt32 in [0, 1, 4, 99] {
            var bytes = Self.valid()
            withUnsafeBytes(of: version.littleEndian) { bytes.replaceSubrange(4..<8, with: $0) }
            #expect(message(bytes) == "bad.gguf (byte 4): unsupported GGUF version \(version) (versions 2 and 3 are supported)")
        }
        var swapped = Self.valid()
        swapped.replaceSubrange(4..<8, with: [0, 0, 0, 3])
        #expect(message(swapped).contains("big-endian (byte-swapped) GGUF file, which is not supported"))
        #expect(message(swapped).hasPrefix("bad.gguf (byte 4): "))
    }

    /// Every prefix of a valid file is refused, at or before the cut, naming the field.
    @Test func truncatedAtEveryByte() throws {
        let bytes = Self.valid()
        let header = try parse(bytes)
        for cut in 0..<bytes.count {
            let prefix = Array(bytes.prefix(cut))
            guard let error = parseError(prefix) else {
                // Only cuts inside the padding after the last tensor leave a valid file.
                #expect(cut >= header.tensor("b")!.byteRange.upperBound, "prefix of \(cut) bytes parsed")
                continue
            }
            let text = error.description
            #expect(text.hasPrefix("bad.gguf"), "\(cut): \(text)")
            #expect(text.contains("(byte "), "\(cut): \(text)")
            if case let .truncated(_, _, _, offset, needed, fileSize) = error {
                #expect(offset <= cut && offset + needed > cut && fileSize == cut, "\(cut): \(text)")
            }
        }
        // One sentence per section. Cuts before byte 85 leave too few bytes for the declared
        // counts, which the count check reports first.
        #expect(message(Array(bytes.prefix(6))) == "bad.gguf (byte 4): truncated: the version needs 4 bytes here but the file ends at byte 6")
        #expect(message(Array(bytes.prefix(12))) == "bad.gguf (byte 8): truncated: the tensor count needs 8 bytes here but the file ends at byte 12")
        #expect(message(Array(bytes.prefix(20))) == "bad.gguf (byte 16): truncated: the metadata count needs 8 bytes here but the file ends at byte 20")
        #expect(message(Array(bytes.prefix(60))) == "bad.gguf (byte 8): tensor count 2 is impossible: each takes at least 24 bytes and only 23 bytes follow (the file is truncated or the count is corrupt)")
        #expect(message(Array(bytes.prefix(88))) == "bad.gguf: tensor 'a' (byte 86): truncated: the ggml type needs 4 bytes here but the file ends at byte 88")
        #expect(message(Array(bytes.prefix(95))) == "bad.gguf: tensor 'a' (byte 90): truncated: the data offset needs 8 bytes here but the file ends at byte 95")
        #expect(message(Array(bytes.prefix(105))) == "bad.gguf (byte 98): truncated: the length of the name of tensor 1 needs 8 bytes here but the file ends at byte 105")
        #expect(message(Array(bytes.prefix(106))) == "bad.gguf (byte 98): the name of tensor 1 declares a length of 1 bytes but only 0 bytes follow")
        #expect(message(Array(bytes.prefix(115))) == "bad.gguf: tensor 'b' (byte 111): truncated: dimension 0 needs 8 bytes here but the file ends at byte 115")
        #expect(message(Array(bytes.prefix(150))) == "bad.gguf (byte 131): truncated: the padding before the data section (alignment 32) needs 29 bytes here but the file ends at byte 150")
        #expect(message(Array(bytes.prefix(200))) == "bad.gguf: tensor 'a' (byte 90): data (68 bytes at offset 0 of the data section, which starts at byte 160) lies outside the file of 200 bytes")
        #expect(message(Array(bytes.prefix(260))) == "bad.gguf: tensor 'b' (byte 123): data (16 bytes at offset 96 of the data section, which starts at byte 160) lies outside the file of 260 bytes")
        // The metadata sections, in a file without tensors (so the counts fit).
        var noTensors = bytes
        noTensors.replaceSubrange(8..<16, with: [UInt8](repeating: 0, count: 8))
        #expect(message(Array(noTensors.prefix(30))).hasPrefix("bad.gguf (byte 16): metadata count 1 is impossible"))
        #expect(message(Array(noTensors.prefix(40))) == "bad.gguf (byte 24): the key of metadata entry 0 declares a length of 17 bytes but only 8 bytes follow")
        #expect(message(Array(noTensors.prefix(51))) == "bad.gguf (byte 49): truncated: the value type of metadata key 'general.alignment' needs 4 bytes here but the file ends at byte 51")
        #expect(message(Array(noTensors.prefix(55))) == "bad.gguf (byte 53): truncated: the value of metadata key 'general.alignment' needs 4 bytes here but the file ends at byte 55")
    }

    @Test func countBombsFailBeforeAllocating() {
        var tensors = RawGGUF()
        tensors.header(tensors: 1 << 60, entries: 0)
        tensors.zeros(100)
        #expect(message(tensors.bytes) == "bad.gguf (byte 8): tensor count 1152921504606846976 is impossible: each takes at least 24 bytes and only 100 bytes follow (the file is truncated or the count is corrupt)")
        var entries = RawGGUF()
        entries.header(tensors: 0, entries: .max)
        #expect(message(entries.bytes) == "bad.gguf (byte 16): metadata count 18446744073709551615 is impossible: each takes at least 13 bytes and only 0 bytes follow (the file is truncated or the count is corrupt)")
        // Both counts together must fit.
        var both = RawGGUF()
        both.header(tensors: 2, entries: 2)
        both.zeros(2 * 13 + 24)
        #expect(message(both.bytes).hasPrefix("bad.gguf (byte 8): tensor count 2 is impossible"))
    }

    @Test func stringLengthBombs() {
        var key = RawGGUF()
        key.header(tensors: 0, entries: 1)
        key.int(UInt64(1) << 62)
        key.zeros(40)
        #expect(message(key.bytes) == "bad.gguf (byte 24): the key of metadata entry 0 declares a length of 4611686018427387904 bytes but only 40 bytes follow")
        var value = RawGGUF()
        value.header(tensors: 0, entries: 1)
        value.string("k")
        value.int(UInt32(8))
        value.int(UInt64.max)
        #expect(message(value.bytes) == "bad.gguf (byte 37): the string value of metadata key 'k' declares a length of 18446744073709551615 bytes but only 0 bytes follow")
        var name = RawGGUF()
        name.header(tensors: 1, entries: 0)
        name.int(UInt64(1) << 40)
        name.zeros(30)
        #expect(message(name.bytes) == "bad.gguf (byte 24): the name of tensor 0 declares a length of 1099511627776 bytes but only 30 bytes follow")
    }

    @Test func arrayLengthBombs() {
        var array = RawGGUF()
        array.header(tensors: 0, entries: 1)
        array.string("tokens")
        array.int(UInt32(9))          // array
        array.int(UInt32(8))          // of strings
        array.int(UInt64(1) << 61)
        array.zeros(64)
        #expect(message(array.bytes) == "bad.gguf (byte 46): the array of metadata key 'tokens' (string) declares 2305843009213693952 items of at least 8 bytes each but only 64 bytes follow")
        // Nested: an array of 2^40 arrays fails at the outer count.
        var nested = RawGGUF()
        nested.header(tensors: 0, entries: 1)
        nested.string("n")
        nested.int(UInt32(9))
        nested.int(UInt32(9))
        nested.int(UInt64(1) << 40)
        nested.zeros(1000)
        #expect(message(nested.bytes).contains("declares 1099511627776 items of at least 12 bytes each but only 1000 bytes follow"))
        // Nesting deeper than the limit.
        var deep = RawGGUF()
        deep.header(tensors: 0, entries: 1)
        deep.string("d")
        deep.int(UInt32(9))
        for _ in 0..<40 { deep.int(UInt32(9)); deep.int(UInt64(1)) }
        deep.int(UInt32(0)); deep.int(UInt64(0))
        #expect(message(deep.bytes).hasSuffix("metadata key 'd' nests arrays more than 16 deep"))
    }

    @Test func invalidValueTypes() {
        var bad = RawGGUF()
        bad.header(tensors: 0, entries: 1)
        bad.string("k\u{1B}")
        bad.int(UInt32(13))
        #expect(message(bad.bytes) == "bad.gguf (byte 34): metadata key 'k\\u{1B}' has value type 13, which is not a GGUF value type (0–12)")
        var element = RawGGUF()
        element.header(tensors: 0, entries: 1)
        element.string("k")
        element.int(UInt32(9))
        element.int(UInt32(99))
        element.int(UInt64(0))
        #expect(message(element.bytes) == "bad.gguf (byte 37): metadata key 'k' has value type 99, which is not a GGUF value type (0–12)")
    }

    @Test func duplicatesAndUTF8() {
        var keys = RawGGUF()
        keys.header(tensors: 0, entries: 2)
        keys.u32Entry("a", 1)
        keys.u32Entry("a", 2)
        #expect(message(keys.bytes) == "bad.gguf (byte 41): metadata key 'a' appears twice")
        var names = RawGGUF()
        names.header(tensors: 2, entries: 0)
        names.tensorInfo("w", dims: [4])
        names.tensorInfo("w", dims: [4], offset: 32)
        names.pad()
        names.zeros(64)
        #expect(message(names.bytes) == "bad.gguf: tensor 'w' (byte 57): duplicate tensor name")
        var utf8 = RawGGUF()
        utf8.header(tensors: 1, entries: 0)
        utf8.rawString([0x77, 0xFF, 0xFE])
        utf8.zeros(24)
        #expect(message(utf8.bytes) == "bad.gguf (byte 32): the name of tensor 0 is not valid UTF-8")
    }

    @Test func invalidAlignment() {
        for (value, reason) in [(UInt32(0), "0 is not a nonzero power of two"), (48, "48 is not a nonzero power of two")] {
            var raw = RawGGUF()
            raw.header(tensors: 0, entries: 1)
            raw.u32Entry("general.alignment", value)
            #expect(message(raw.bytes) == "bad.gguf (byte 24): invalid general.alignment: \(reason)")
        }
        var wrongType = RawGGUF()
        wrongType.header(tensors: 0, entries: 1)
        wrongType.string("general.alignment")
        wrongType.int(UInt32(10))
        wrongType.int(UInt64(32))
        #expect(message(wrongType.bytes) == "bad.gguf (byte 24): invalid general.alignment: it is a u64, not a u32")
    }

    @Test func dataOffsets() {
        func file(_ infos: [(String, [UInt64], UInt32, UInt64)], data: Int) -> [UInt8] {
            var raw = RawGGUF()
            raw.header(tensors: UInt64(infos.count), entries: 0)
            for (name, dims, type, offset) in infos { raw.tensorInfo(name, dims: dims, type: type, offset: offset) }
            raw.pad()
            raw.zeros(data)
            return raw.bytes
        }
        #expect(message(file([("w", [8], 0, 64)], data: 64))
                == "bad.gguf: tensor 'w' (byte 49): data (32 bytes at offset 64 of the data section, which starts at byte 64) lies outside the file of 128 bytes")
        #expect(message(file([("w", [8], 0, .max - 31)], data: 64)).contains("lies outside the file"))
        #expect(message(file([("w", [8], 0, 8)], data: 64))
                == "bad.gguf: tensor 'w' (byte 49): data offset 8 is not a multiple of the alignment 32")
        #expect(message(file([("a", [16], 0, 0), ("b", [8], 0, 32)], data: 64))
                == "bad.gguf: tensor 'b' (byte 82): data begins at byte 128, inside tensor 'a' (which ends at byte 160): tensors may not overlap")
        #expect(message(file([("a", [8], 0, 0), ("b", [8], 0, 0)], data: 64)).contains("tensor 'b' (byte 82): data begins at byte 96, inside tensor 'a'"))
        // A zero-sized tensor shares no byte with anything.
        #expect(parseError(file([("a", [8], 0, 0), ("b", [0, 8], 0, 0)], data: 64)) == nil)
    }

    @Test func shapesAndTypes() {
        func one(_ dims: [UInt64], type: UInt32 = 0) -> String {
            var raw = RawGGUF()
            raw.header(tensors: 1, entries: 0)
            raw.tensorInfo("w", dims: dims, type: type)
            raw.pad()
            raw.zeros(64)
            return message(raw.bytes)
        }
        #expect(one([2, 2, 2, 2, 2]) == "bad.gguf: tensor 'w' (byte 33): 5 dimensions, but ggml tensors have at most 4")
        #expect(one([1 << 63]) == "bad.gguf: tensor 'w' (byte 37): dimension 0 (innermost first) is 9223372036854775808, larger than 2^63-1")
        #expect(one([1 << 62, 4]) == "bad.gguf: tensor 'w' (byte 37): dimensions [4611686018427387904, 4] (innermost first) multiply past 2^63-1 elements or bytes")
        #expect(one([1 << 62, 1 << 62, 0]).contains("multiply past 2^63-1"))
        #expect(one([1 << 61]).contains("(byte 37): dimensions [2305843009213693952] (innermost first) multiply past 2^63-1 elements or bytes"))
        // Found by the gguf-header fuzz target: an empty tensor (outer dimension 0) whose one
        // row would take more than 2^63-1 bytes (F32: 4 bytes per value) once crashed `rowByteCount`.
        #expect(one([1 << 62, 0]) == "bad.gguf: tensor 'w' (byte 37): dimensions [4611686018427387904, 0] (innermost first) multiply past 2^63-1 elements or bytes")
        #expect(one([1 << 60, 0]) == "(parsed)")
        #expect(one([8], type: 4) == "bad.gguf: tensor 'w' (byte 45): unknown ggml type 4")
        #expect(one([8], type: 999) == "bad.gguf: tensor 'w' (byte 45): unknown ggml type 999")
        #expect(one([16, 2], type: GGUFType.q8_0.rawValue) == "bad.gguf: tensor 'w' (byte 37): innermost dimension 16 is not a multiple of Q8_0's block size 32")
        #expect(one([128], type: GGUFType.q4_K.rawValue) == "bad.gguf: tensor 'w' (byte 37): innermost dimension 128 is not a multiple of Q4_K's block size 256")
        #expect(one([]) == "(parsed)")
    }

    /// A tensor name with control characters is escaped in every message.
    @Test func namesAreEscaped() {
        var raw = RawGGUF()
        raw.header(tensors: 1, entries: 0)
        raw.tensorInfo("w\n\u{1B}[2J", dims: [8], type: 77)
        #expect(message(raw.bytes).hasPrefix("bad.gguf: tensor 'w\\n\\u{1B}[2J' (byte "))
    }

    /// Random mutations of a valid file never crash: each parses or throws.
    @Test func randomMutationsNeverCrash() throws {
        let base = try Fixture.flux.bytes()
        var generator = SeededGenerator(seed: 1818)
        var refused = 0
        for _ in 0..<3000 {
            var bytes = base
            for _ in 0..<Int.random(in: 1...4, using: &generator) {
                let at = Int.random(in: 0..<min(bytes.count, 1200), using: &generator)
                bytes[at] = UInt8.random(in: 0...255, using: &generator)
            }
            if parseError(bytes) != nil { refused += 1 }
        }
        #expect(refused > 100)
    }
}

/// Counts and lengths that fit in a large file but not under the header limit.
@Suite struct HeaderLimitTests {
    /// `header` followed by zeros up to a size past the header limit.
    static func large(_ header: RawGGUF) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: GGUFHeader.maximumHeaderBytes + (1 << 20))
        bytes.replaceSubrange(0..<header.bytes.count, with: header.bytes)
        return bytes
    }

    @Test func metadataPastTheHeaderLimitIsRefused() {
        let limit = GGUFHeader.maximumHeaderBytes
        var array = RawGGUF()
        array.header(tensors: 0, entries: 1)
        array.string("blob")
        array.int(UInt32(9))
        array.int(UInt32(0))
        array.int(UInt64(limit))
        let arrayError = parseError(Self.large(array))?.description
        #expect(arrayError == "bad.gguf (byte 44): the array of metadata key 'blob' would take the GGUF header (metadata and tensor infos) past FlowGuard's limit of 134217728 bytes")
        var name = RawGGUF()
        name.header(tensors: 1, entries: 0)
        name.int(UInt64(limit))
        let nameError = parseError(Self.large(name))?.description
        #expect(nameError == "bad.gguf (byte 24): the name of tensor 0 would take the GGUF header (metadata and tensor infos) past FlowGuard's limit of 134217728 bytes")
        var count = RawGGUF()
        count.header(tensors: UInt64(limit / 24), entries: 0)
        let countError = parseError(Self.large(count))?.description
        #expect(countError == "bad.gguf (byte 8): the tensor count would take the GGUF header (metadata and tensor infos) past FlowGuard's limit of 134217728 bytes")
    }
}

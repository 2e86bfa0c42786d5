import Testing
import GGUF
import SafeTensors
import TestSupport

/// The quantizers and the layout writer reproduce gguf-py's files byte for byte.
@Suite struct WriterTests {
    /// Each fixture, rebuilt by our writer from its metadata, tensor descriptions and gguf-py's
    /// float inputs (quantized by our quantizers; tensors gguf-py did not quantize — K-quant
    /// random blocks, integers, F64 — are copied), equals the file gguf-py wrote, every byte.
    @Test(arguments: Fixture.allCases)
    func rebuildsTheFileGGUFPyWrote(_ fixture: Fixture) throws {
        let original = try fixture.bytes()
        let header = try parse(original)
        let sources = try? SafeTensorsFile(path: fixture.sourcePath)
        let expected = try SafeTensorsFile(path: fixture.expectedPath)
        var tensors: [(spec: GGUFTensorSpec, bytes: [UInt8])] = []
        var quantizedCount = 0
        for tensor in header.tensors {
            let spec = GGUFTensorSpec(name: tensor.name, shape: tensor.shape, type: tensor.type)
            let stored = Array(original[tensor.byteRange])
            guard tensor.type.isQuantizable else { tensors.append((spec, stored)); continue }
            // The float input: the source gguf-py quantized, or (when the stored bytes are the
            // values exactly) the expected values.
            let values = try sources.flatMap { s in s.tensors.contains { $0.name == tensor.name } ? try s.floats(of: tensor.name) : nil }
                ?? expected.floats(of: tensor.name)
            let ours = quantized(values, as: tensor.type)
            #expect(ours == stored, "\(tensor.name) (\(tensor.type.name)): quantized bytes differ from gguf-py's at byte \(firstDifference(ours, stored))")
            quantizedCount += 1
            tensors.append((spec, ours))
        }
        #expect(quantizedCount > 0)
        let rebuilt = try GGUFLayout.serialize(metadata: header.metadata, tensors: tensors, alignment: header.alignment)
        #expect(rebuilt.count == original.count)
        #expect(rebuilt == original, "first difference at byte \(firstDifference(rebuilt, original))")
    }

    /// Every type FlowGuard quantizes is exercised against gguf-py by the types fixture
    /// (rounding ties, ±0 blocks, fp16-subnormal and overflowing scales, NaN and ±inf).
    @Test func typesFixtureCoversEveryQuantizableType() throws {
        let header = try parse(try Fixture.types.bytes())
        let quantizable = Set(GGUFType.allCases.filter(\.isQuantizable))
        #expect(quantizable == [.f32, .f16, .bf16, .q8_0, .q4_0, .q4_1, .q5_0, .q5_1])
        let edge = Set(header.tensors.filter { $0.name.hasPrefix("quant.") }.map(\.type))
        #expect(edge == quantizable)
        let nonFinite = Set(header.tensors.filter { $0.name.hasPrefix("nonfinite.") }.map(\.type))
        #expect(nonFinite == quantizable.subtracting([.f32]))
    }

    /// Q8_0 against gguf-py's formula written out (d = max|x| / 127, q = np_roundf(x · (1/d)) with
    /// its floors) on blocks full of exact rounding ties at scales from 2^-30 to 2^30, ±0, and
    /// random values: the quantizer's integer rounding agrees everywhere.
    @Test func q8_0RoundsLikeGGUFPyOnTiesAndRandomBlocks() {
        func reference(_ x: ArraySlice<Float>) -> [UInt8] {
            let amax = x.map { abs($0) }.max()!
            let d = amax / 127
            let id: Float = d == 0 ? 0 : 1 / d
            var out = withUnsafeBytes(of: Float16(d).bitPattern.littleEndian) { Array($0) }
            for v in x {
                let n = v * id, a = abs(n), floored = a.rounded(.down)
                let b = floored + (2 * (a - floored)).rounded(.down)
                out.append(UInt8(truncatingIfNeeded: Int32((n > 0 ? 1 : n < 0 ? -1 : 0) * b)))
            }
            return out
        }
        var generator = SeededGenerator(seed: 8)
        var values: [Float] = []
        for exponent in stride(from: -30, through: 30, by: 3) {
            let scale = Float(sign: .plus, exponent: exponent, significand: 1)
            // One value of magnitude 127 sets d = scale exactly; the rest are ties (m + 0.5)·scale.
            values.append(127 * scale)
            for _ in 0..<31 {
                let m = Float(Int.random(in: -127...126, using: &generator))
                values.append((m + 0.5) * scale)
            }
            values += (0..<32).map { _ in Float.random(in: -1...1, using: &generator) * scale }
        }
        values += [Float](repeating: 0, count: 16) + [Float](repeating: -0.0, count: 16)
        values += (0..<32 * 64).map { _ in Float.random(in: -3...3, using: &generator) }
        var ours = [UInt8](repeating: 0, count: GGUFType.q8_0.byteCount(elements: values.count)!)
        values.withUnsafeBufferPointer { input in ours.withUnsafeMutableBytes { _ = GGUFType.q8_0.quantize(input, into: $0) } }
        for block in 0..<(values.count / 32) {
            let expected = reference(values[(block * 32)..<((block + 1) * 32)])
            #expect(Array(ours[(block * 34)..<((block + 1) * 34)]) == expected, "block \(block)")
        }
    }

    /// The quantizer counts NaN and infinite inputs, so a converter can refuse them.
    @Test func countsNonFiniteInputs() {
        var values = [Float](repeating: 0.25, count: 64)
        values[3] = .nan
        values[40] = -.infinity
        for type in [GGUFType.q8_0, .q4_0, .f16] {
            var out = [UInt8](repeating: 0, count: type.byteCount(elements: 64)!)
            let count = values.withUnsafeBufferPointer { input in out.withUnsafeMutableBytes { type.quantize(input, into: $0) } }
            #expect(count == 2, "\(type)")
        }
    }

    /// The city96 rule on the model fixtures: every tensor's type in gguf-py's file is the one
    /// `city96Type` picks, and the metadata is `city96Metadata`'s (none for stable-diffusion.cpp).
    @Test(arguments: [Fixture.flux, .sd3, .sdcpp])
    func city96ConventionsMatchTheFixtures(_ fixture: Fixture) throws {
        let header = try parse(try fixture.bytes())
        let requested = try #require(fixture.requested)
        for tensor in header.tensors {
            #expect(GGUFConventions.city96Type(shape: tensor.shape, requested: requested) == tensor.type, "\(tensor.name) \(tensor.shape)")
        }
        if fixture == .sdcpp {
            #expect(header.metadata.isEmpty)
            #expect(header.architecture == nil)
            #expect(header.tensors.allSatisfy { $0.name.hasPrefix(GGUFConventions.diffusionModelPrefix) })
        } else {
            let arch = fixture == .flux ? "flux" : "sd3"
            #expect(header.architecture == arch)
            #expect(header.metadata.map { GGUFMetadataEntry(key: $0.key, value: $0.value) }
                    == GGUFConventions.city96Metadata(architecture: arch, requested: requested))
            #expect(header.tensors.allSatisfy { !$0.name.hasPrefix(GGUFConventions.diffusionModelPrefix) })
        }
    }

    /// The rule's boundaries: ≤ 1024 values or ≤ 1 dimension stay F32; 2-D rows that are whole
    /// blocks get the type; others fall back; float types apply to every large tensor.
    @Test func city96Rule() {
        let rule = GGUFConventions.city96Type
        #expect(rule([3072], .q8_0, .f16) == .f32)
        #expect(rule([32, 32], .q8_0, .f16) == .f32)
        #expect(rule([33, 32], .q8_0, .f16) == .q8_0)
        #expect(rule([32, 48], .q8_0, .f16) == .f16)
        #expect(rule([64, 256], .q4_K, .f16) == .q4_K)
        #expect(rule([64, 128], .q4_K, .f16) == .f16)
        #expect(rule([32, 16, 2, 2], .q4_0, .f16) == .f16)
        #expect(rule([32, 16, 2, 2], .bf16, .f16) == .bf16)
        #expect(rule([1, 64, 32], .q8_0, .bf16) == .bf16)
        #expect(rule([], .q8_0, .f16) == .f32)
        #expect(rule([40, 40], .f16, .f16) == .f16)
    }

    /// The largest alignment a file can declare (2^31) plans a header of a few dozen bytes and a
    /// padding count, not gigabytes of zeros in memory (the fuzzer's round trip found it slow).
    @Test func hugeAlignmentIsACountNotAnArray() throws {
        let alignment = 1 << 31
        let layout = try GGUFLayout(metadata: [], tensors: [GGUFTensorSpec(name: "w", shape: [2, 32], type: .q8_0)],
                                    alignment: alignment)
        #expect(layout.headerBytes.count < 200)
        #expect(layout.dataStart == alignment)
        #expect(layout.headerPadding == alignment - layout.headerBytes.count)
        #expect(layout.tensors[0].byteRange == alignment..<(alignment + 68))
        #expect(layout.totalSize == 2 * alignment)
        #expect(layout.metadata.map(\.key) == ["general.alignment"])
    }

    /// Planning refuses impossible tensors and metadata with a sentence naming the tensor.
    @Test func layoutRefusesImpossibleSpecs() {
        func error(_ metadata: [GGUFMetadataEntry], _ specs: [GGUFTensorSpec], alignment: Int = 32) -> String? {
            do throws(GGUFError) { _ = try GGUFLayout(metadata: metadata, tensors: specs, alignment: alignment, file: "out.gguf"); return nil } catch {
                return error.description
            }
        }
        #expect(error([], [GGUFTensorSpec(name: "w", shape: [4, 48], type: .q8_0)])
                == "out.gguf: tensor 'w': innermost dimension 48 is not a multiple of Q8_0's block size 32")
        #expect(error([], [GGUFTensorSpec(name: "w", shape: [1, 2, 3, 4, 5], type: .f32)])
                == "out.gguf: tensor 'w': 5 dimensions, but ggml tensors have at most 4")
        #expect(error([], [GGUFTensorSpec(name: "w", shape: [2], type: .f32), GGUFTensorSpec(name: "w", shape: [2], type: .f32)])
                == "out.gguf: tensor 'w': tensor name given twice")
        #expect(error([], [GGUFTensorSpec(name: "w", shape: [Int.max / 2, 4], type: .f32)])?.contains("overflows") == true)
        #expect(error([], [], alignment: 48) == "out.gguf: alignment 48 is not a power of two that fits in 32 bits")
        #expect(error([GGUFMetadataEntry(key: "general.alignment", value: .uint64(64))], [], alignment: 64)
                == "out.gguf: general.alignment must be the u32 64, the alignment being written")
        #expect(error([GGUFMetadataEntry(key: "a", value: .bool(true)), GGUFMetadataEntry(key: "a", value: .bool(false))], [])
                == "out.gguf: metadata key 'a' given twice")
    }
}

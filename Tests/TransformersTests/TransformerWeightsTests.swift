#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Checkpoints
import Foundation
import SafeTensors
import TensorRuntime
import TestSupport
import Transformers
import XCTest

/// The fixture models and their checkpoint files in every layout.
enum WeightFixture: String, CaseIterable {
    case sd35 = "sd35_tiny"
    case flux = "flux_tiny"

    var folder: String { Repository.path("fixtures/\(rawValue)") }
    var original: String { folder + "/original.safetensors" }
    var diffusers: String { folder + "/diffusers" }
    var sharded: String { folder + "/diffusers_sharded" }
    var config: String { diffusers + "/config.json" }
    var loraFile: String { folder + "/lora/pytorch_lora_weights.safetensors" }
    var peftFolder: String { folder + "/lora/peft" }
    /// Original-layout files (FLUX also ships ComfyUI's prefix).
    var originals: [String] {
        self == .flux ? [original, folder + "/original_comfy.safetensors"] : [original]
    }
}

/// A weight matrix's elements widened to Float32.
/// Invariant: `baseAddress` holds `rows × columns` elements of `element` while `owner` lives
/// (WeightMatrix's contract); `withExtendedLifetime` keeps the owner alive during the read.
func widened(_ m: WeightMatrix) -> [Float] {
    withExtendedLifetime(m.owner) {
        let raw = UnsafeRawBufferPointer(start: m.baseAddress, count: m.byteCount)
        let dtype: DType = m.element == .float32 ? .f32 : (m.element == .bfloat16 ? .bf16 : .f16)
        let count = m.rows * m.columns
        return [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            FloatCodec.decode(dtype, from: raw, into: buffer)
            initialized = count
        }
    }
}

/// Whether the matrix points into the mapping of the checkpoint file that owns it.
/// Invariant: only addresses are compared; nothing is dereferenced.
func pointsIntoMapping(_ m: WeightMatrix) -> Bool {
    guard let file = m.owner as? SafeTensorsFile else { return false }
    return file.withBytes(fileRange: 0..<file.fileSize) { raw in
        guard let start = raw.baseAddress else { return false }
        return m.baseAddress >= start && m.baseAddress + m.byteCount <= start + raw.count
    }
}

/// The values `FloatCodec` gives after narrowing `values` to `dtype`.
func roundTripped(_ values: [Float], through dtype: DType) -> [Float] {
    var bytes = [UInt8](repeating: 0, count: dtype.byteCount(elements: values.count)!)
    values.withUnsafeBufferPointer { input in
        bytes.withUnsafeMutableBytes { _ = FloatCodec.encode(dtype, from: input, into: $0) }
    }
    return bytes.withUnsafeBytes { raw in
        [Float](unsafeUninitializedCapacity: values.count) { buffer, initialized in
            FloatCodec.decode(dtype, from: raw, into: buffer)
            initialized = values.count
        }
    }
}

/// Bitwise equality (NaN-safe, distinguishes −0).
func bitwiseEqual(_ a: [Float], _ b: [Float]) -> Bool {
    a.count == b.count && zip(a, b).allSatisfy { $0.bitPattern == $1.bitPattern }
}

/// Writes the fixture's original checkpoint converted to `dtype` (same layout) into `folder`.
func convertedCopy(_ fixture: WeightFixture, dtype: DType, in folder: TemporaryDirectory) throws -> String {
    let out = folder.file("\(fixture.rawValue)_\(dtype.rawValue).safetensors")
    try Converter(source: TensorCollection(path: fixture.original), to: .original, dtype: dtype).write(to: out)
    return out
}

final class TransformerWeightsTests: XCTestCase {
    func testEveryLayoutGivesTheSameWeights() throws {
        for fixture in WeightFixture.allCases {
            let reference = try TransformerWeights(path: fixture.diffusers)
            XCTAssertEqual(reference.sourceLayout, .diffusers)
            XCTAssertEqual(reference.configPath, fixture.config)
            var others = [try TransformerWeights(path: fixture.sharded)]
            for file in fixture.originals {
                let weights = try TransformerWeights(path: file, configPath: fixture.config)
                XCTAssertEqual(weights.sourceLayout, .original)
                others.append(weights)
            }
            let referenceValues = try Dictionary(uniqueKeysWithValues: reference.names.map { ($0, try reference.tensor($0)) })
            for weights in others {
                XCTAssertEqual(weights.architecture, reference.architecture, weights.path)
                XCTAssertEqual(weights.names.sorted(), reference.names.sorted(), weights.path)
                for name in reference.names {
                    let expected = referenceValues[name]!
                    let tensor = try weights.tensor(name)
                    XCTAssertEqual(tensor.shape, expected.shape, "\(weights.path) \(name)")
                    XCTAssertEqual(try weights.shape(of: name), expected.shape)
                    XCTAssertTrue(bitwiseEqual(tensor.scalars, expected.scalars), "\(weights.path) \(name)")
                    if expected.shape.count >= 2 {
                        let matrix = try weights.matrix(name)
                        XCTAssertEqual(matrix.element, .float32)
                        XCTAssertEqual(matrix.rows, expected.shape[0])
                        XCTAssertEqual(matrix.rows * matrix.columns, expected.count)
                        XCTAssertTrue(bitwiseEqual(widened(matrix), expected.scalars), "\(weights.path) \(name)")
                    }
                }
            }
        }
    }

    func testNamesAreDiffusersNames() throws {
        let sd3 = try TransformerWeights(path: WeightFixture.sd35.original)
        for name in ["transformer_blocks.0.attn.to_q.weight", "pos_embed.pos_embed", "pos_embed.proj.weight",
                     "norm_out.linear.weight", "transformer_blocks.0.attn2.to_q.weight"] {
            XCTAssertTrue(sd3.contains(name), name)
        }
        XCTAssertEqual(try sd3.shape(of: "pos_embed.proj.weight"), [32, 16, 2, 2])
        XCTAssertEqual(try sd3.shape(of: "pos_embed.pos_embed"), [1, 256, 32])
        XCTAssertFalse(sd3.names.contains { $0.hasPrefix("transformer.") || $0.hasPrefix("model.") })
        XCTAssertEqual(sd3.names.count, 127)
        let flux = try TransformerWeights(path: WeightFixture.flux.original)
        XCTAssertEqual(flux.names.count, 126)
        XCTAssertTrue(flux.contains("single_transformer_blocks.0.proj_mlp.weight"))
    }

    func testFusedRowSlicesAreZeroCopyAndSwappedHalvesAreOwned() throws {
        let weights = try TransformerWeights(path: WeightFixture.sd35.original)
        for name in ["transformer_blocks.0.attn.to_q.weight", "transformer_blocks.0.attn.to_k.weight",
                     "transformer_blocks.1.attn.add_v_proj.weight"] {
            XCTAssertTrue(pointsIntoMapping(try weights.matrix(name)), name)
        }
        let swapped = try weights.matrix("norm_out.linear.weight")
        XCTAssertFalse(pointsIntoMapping(swapped))
        XCTAssertEqual(swapped.element, .float32)
    }

    func testConfigAndNotes() throws {
        // FLUX with 16-channel heads: RoPE axes come only from config.json.
        let bare = try TransformerWeights(path: WeightFixture.flux.original)
        XCTAssertNil(bare.configPath)
        XCTAssertTrue(bare.notes.contains { $0.contains("axes_dims_rope") }, "\(bare.notes)")
        let configured = try TransformerWeights(path: WeightFixture.flux.original, configPath: WeightFixture.flux.config)
        XCTAssertTrue(configured.notes.isEmpty)
        guard let c = configured.architecture.config.typed(FluxConfig.self) else { return XCTFail("not FLUX") }
        XCTAssertEqual(c.axesDimsRope, [4, 6, 6])
        // A configuration for the other model is refused, naming it.
        XCTAssertThrowsError(try TransformerWeights(path: WeightFixture.flux.original, configPath: WeightFixture.sd35.config)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains(WeightFixture.flux.original) && text.contains(WeightFixture.sd35.config), text)
        }
    }

    func testBFloat16MatricesPointIntoTheMapping() throws {
        let folder = TemporaryDirectory()
        for fixture in WeightFixture.allCases {
            let path = try convertedCopy(fixture, dtype: .bf16, in: folder)
            let weights = try TransformerWeights(path: path, configPath: fixture.config)
            let reference = try TransformerWeights(path: fixture.diffusers)
            var zeroCopy = 0
            for name in weights.names {
                XCTAssertEqual(try weights.dtype(of: name), .bf16)
                let expected = roundTripped(try reference.tensor(name).scalars, through: .bf16)
                XCTAssertTrue(bitwiseEqual(try weights.tensor(name).scalars, expected), name)
                guard try weights.shape(of: name).count >= 2 else { continue }
                let matrix = try weights.matrix(name)
                XCTAssertEqual(matrix.element, .bfloat16, name)
                XCTAssertTrue(bitwiseEqual(widened(matrix), expected), name)
                if pointsIntoMapping(matrix) { zeroCopy += 1 }
                if name == "norm_out.linear.weight" {
                    XCTAssertFalse(pointsIntoMapping(matrix), "swapped halves are one owned copy")
                } else if !name.contains("norm1_context") {
                    XCTAssertTrue(pointsIntoMapping(matrix), "\(name) should be a view of the mapping")
                }
            }
            XCTAssertGreaterThan(zeroCopy, 40)
        }
    }

    func testNarrowAndWideFloatsWidenExactly() throws {
        let folder = TemporaryDirectory()
        let fixture = WeightFixture.sd35
        let reference = try TransformerWeights(path: fixture.diffusers)
        let cases: [(DType, WeightMatrix.Element)] = [(.f8e4m3, .bfloat16), (.f8e5m2, .bfloat16), (.f6e2m3, .bfloat16),
                                                      (.f16, .float16), (.f64, .float32)]
        for (dtype, element) in cases {
            let weights = try TransformerWeights(path: try convertedCopy(fixture, dtype: dtype, in: folder))
            for name in weights.names {
                let expected = roundTripped(try reference.tensor(name).scalars, through: dtype)
                XCTAssertTrue(bitwiseEqual(try weights.tensor(name).scalars, expected), "\(dtype) \(name)")
                guard try weights.shape(of: name).count >= 2 else { continue }
                let matrix = try weights.matrix(name)
                XCTAssertEqual(matrix.element, element, "\(dtype) \(name)")
                XCTAssertTrue(bitwiseEqual(widened(matrix), expected), "\(dtype) \(name)")
            }
        }
    }

    func testRowsEqualSlicesOfTheTensor() throws {
        let folder = TemporaryDirectory()
        let sources = [WeightFixture.sd35.original, WeightFixture.sd35.diffusers,
                       try convertedCopy(.sd35, dtype: .bf16, in: folder), try convertedCopy(.sd35, dtype: .f6e3m2, in: folder)]
        for path in sources {
            let weights = try TransformerWeights(path: path)
            for (name, range) in [("pos_embed.pos_embed", 17..<50), ("pos_embed.pos_embed", 0..<256),
                                  ("norm_out.linear.weight", 20..<45), ("transformer_blocks.2.norm1_context.linear.weight", 31..<33),
                                  ("transformer_blocks.0.attn.to_v.weight", 5..<6), ("pos_embed.proj.weight", 3..<70),
                                  ("transformer_blocks.0.attn.to_q.bias", 0..<1), ("norm_out.linear.weight", 7..<7)] {
                let full = try weights.tensor(name)
                let columns = full.shape.last!
                let rows = try weights.rows(of: name, range)
                XCTAssertEqual(rows.shape, [range.count, columns], name)
                let slice = Array(full.scalars[(range.lowerBound * columns)..<(range.upperBound * columns)])
                XCTAssertTrue(bitwiseEqual(rows.scalars, slice), "\(path) \(name) \(range)")
            }
            XCTAssertThrowsError(try weights.rows(of: "pos_embed.pos_embed", 250..<257)) { error in
                XCTAssertTrue("\(error)".contains("257"), "\(error)")
            }
        }
    }

    func testInMemoryWeights() throws {
        let architecture = try TransformerWeights(path: WeightFixture.sd35.diffusers).architecture
        let w = Tensor(shape: [3, 4], scalars: (0..<12).map { Float($0) * 0.5 })
        let b = Tensor(shape: [3], scalars: [1, 2, 3])
        let weights = try TransformerWeights(tensors: ["a.weight": w, "a.bias": b], architecture: architecture)
        XCTAssertEqual(weights.path, "(memory)")
        XCTAssertEqual(weights.names, ["a.bias", "a.weight"])
        XCTAssertEqual(try weights.tensor("a.weight"), w)
        XCTAssertEqual(try weights.tensor("a.bias"), b)
        let m = try weights.matrix("a.weight")
        XCTAssertEqual([m.rows, m.columns], [3, 4])
        XCTAssertEqual(m.element, .float32)
        XCTAssertEqual(widened(m), w.scalars)
        XCTAssertEqual(try weights.rows(of: "a.weight", 1..<3).scalars, Array(w.scalars[4...]))
        XCTAssertThrowsError(try weights.matrix("a.bias"))
        XCTAssertThrowsError(try weights.tensor("missing"))
    }

    func testErrorsNameFileTensorAndOffset() throws {
        let folder = TemporaryDirectory()
        // Missing file.
        let missing = folder.file("nothing.safetensors")
        XCTAssertThrowsError(try TransformerWeights(path: missing)) { error in
            XCTAssertTrue("\(error)".contains(missing), "\(error)")
        }
        // Not a transformer: an adapter file.
        XCTAssertThrowsError(try TransformerWeights(path: WeightFixture.sd35.loraFile)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains(WeightFixture.sd35.loraFile) && text.contains("not a transformer"), text)
        }
        // Truncated file.
        let truncated = folder.file("truncated.safetensors")
        let bytes = try readBytes(WeightFixture.sd35.original)
        try writeBytes(Array(bytes.dropLast(1000)), to: truncated)
        XCTAssertThrowsError(try TransformerWeights(path: truncated)) { error in
            XCTAssertTrue("\(error)".contains(truncated), "\(error)")
        }
        // Corrupt header.
        let corrupt = folder.file("corrupt.safetensors")
        var damaged = bytes
        damaged[12] = 0xFF
        damaged[13] = 0x00
        try writeBytes(damaged, to: corrupt)
        XCTAssertThrowsError(try TransformerWeights(path: corrupt)) { error in
            XCTAssertTrue("\(error)".contains(corrupt), "\(error)")
        }
        // Missing tensor name.
        let weights = try TransformerWeights(path: WeightFixture.sd35.original)
        XCTAssertThrowsError(try weights.matrix("transformer_blocks.9.attn.to_q.weight")) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("transformer_blocks.9.attn.to_q.weight") && text.contains(WeightFixture.sd35.original), text)
        }
        // A 1-d tensor is not a matrix: file, stored key and byte offset are named.
        XCTAssertThrowsError(try weights.matrix("transformer_blocks.0.attn.to_k.bias")) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains(WeightFixture.sd35.original), text)
            XCTAssertTrue(text.contains("model.diffusion_model.joint_blocks.0.x_block.attn.qkv.bias"), text)
            XCTAssertTrue(text.contains("(byte "), text)
        }
    }

    /// An SD3.5-Medium-sized bf16 checkpoint (4.9 GB, sparse: its data is never written) opens
    /// from its header alone, and its matrices are views of the mapping.
    func testFullSizeCheckpointOpensWithoutReadingData() throws {
        let folder = TemporaryDirectory()
        let path = folder.file("sd35_medium.safetensors")
        let specs = syntheticSpecs(variant: .sd35Medium, layout: .diffusers, dtype: .bf16)
        let layout = try SafeTensorsLayout(specs: specs, metadata: ["format": "pt"])
        try writeBytes(layout.headerBytes, to: path)
        XCTAssertEqual(truncate(path, off_t(layout.totalSize)), 0)
        let start = Date()
        let weights = try TransformerWeights(path: path)
        let seconds = Date().timeIntervalSince(start)
        XCTAssertLessThan(seconds, 1.0)
        XCTAssertEqual(weights.architecture.variant, .sd35Medium)
        XCTAssertEqual(weights.names.count, 909)
        let q = try weights.matrix("transformer_blocks.23.attn.to_q.weight")
        XCTAssertEqual([q.rows, q.columns], [1536, 1536])
        XCTAssertEqual(q.element, .bfloat16)
        XCTAssertTrue(pointsIntoMapping(q))
        let crop = try weights.rows(of: "pos_embed.pos_embed", 1000..<1002)
        XCTAssertEqual(crop.shape, [2, 1536])
    }
}

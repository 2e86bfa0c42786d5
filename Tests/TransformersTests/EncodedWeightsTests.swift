import Checkpoints
import GGUF
import SafeTensors
import TensorRuntime
import TestSupport
@testable import Transformers
import XCTest

/// Models built from GGUF blocks (Q4_0…Q5_1, K-quants) and ComfyUI scaled fp8 keep those weights
/// in their stored bytes, decoded per use, and compute exactly what the same model computes from
/// the eagerly decoded Float32 weights.
final class EncodedWeightsTests: XCTestCase {
    /// The same weights with every tensor decoded to Float32 in memory when the model is built
    /// (`TransformerWeights.tensor`: the decoder eager reading uses).
    func eager(_ weights: TransformerWeights) throws -> TransformerWeights {
        var all: [String: Tensor] = [:]
        for name in weights.names { all[name] = try weights.tensor(name) }
        return TransformerWeights(replacing: weights, with: all)
    }

    /// The fixture converted to a city96-style GGUF of `type` (small and 1-d tensors stay F32).
    func gguf(_ fixture: ModelFixture, _ type: GGUFType, in folder: TemporaryDirectory) throws -> String {
        let path = folder.file("\(fixture.rawValue)-\(type.name).gguf")
        let source = try TensorCollection.transformerCheckpoint(fixture.path("original.safetensors"))
        try Converter(source: source, to: .original).writeGGUF(to: path, type: type)
        return path
    }

    /// The forward output of `weights` on the fixture's inputs.
    func output(_ weights: TransformerWeights, _ fixture: ModelFixture) throws -> [Float] {
        let model = try TransformerModel.load(weights)
        return try model.sample(ModelFixture.inputs(model, from: try fixture.io()), threads: 1).scalars
    }

    /// Checks that every 2-d weight read from encoded tensors (GGUF blocks, scaled fp8) is held
    /// as the stored tensor's encoding names it, in exactly the bytes its blocks take, mostly as a
    /// view of the mapping; returns how many there are. With those weights decoded when the model
    /// is built (Float32, 4 bytes per value) this fails.
    @discardableResult
    func assertStoredForm(_ weights: TransformerWeights, _ label: String) throws -> Int {
        var encoded = 0, mapped = 0
        for name in weights.names where try weights.shape(of: name).count >= 2 {
            guard case .mapped(let pieces) = weights.table[name]!.storage, let encoding = pieces.first?.encoding else { continue }
            let matrix = try weights.matrix(name)
            XCTAssertEqual(matrix.element.name, encoding.name, "\(label) \(name)")
            XCTAssertEqual(Double(matrix.byteCount), Double(matrix.rows * matrix.columns) * encoding.bitsPerWeight / 8,
                           "\(label) \(name): resident bytes")
            encoded += 1
            if pointsIntoMapping(matrix) { mapped += 1 }
        }
        // Fused rows are views of the mapping; only assembled weights (swapped halves) are copies.
        XCTAssertGreaterThan(mapped, encoded * 3 / 4, label)
        return encoded
    }

    func testGGUFBlocksStayBlocksAndRunAsTheirDecodedValues() throws {
        let folder = TemporaryDirectory()
        for fixture in ModelFixture.allCases {
            let config = fixture == .flux ? fixture.configPath : nil
            for type in [GGUFType.q4_0, .q4_1, .q5_0, .q5_1] {
                let path = try gguf(fixture, type, in: folder)
                let weights = try TransformerWeights(path: path, configPath: config)
                let stored = try TensorCollection.transformerCheckpoint(path)
                let label = "\(fixture.rawValue) \(type.name)"
                let count = try assertStoredForm(weights, label)
                XCTAssertGreaterThan(count, 20, label)
                XCTAssertTrue(stored.entries.contains { $0.storageName == type.name }, label)
                XCTAssertTrue(bitwiseEqual(try output(weights, fixture), try output(try eager(weights), fixture)), label)
            }
        }
    }

    /// Valid random K-quant blocks (random bytes, small finite fp16 super-block scales) for
    /// `rows` rows of 256 values, as the GGUF fixtures' generator makes them.
    func randomKBlocks(_ type: GGUFType, rows: Int, _ rng: inout SeededGenerator) -> [UInt8] {
        let scaleOffsets: [GGUFType: [Int]] = [.q2_K: [80, 82], .q3_K: [108], .q4_K: [0, 2], .q5_K: [0, 2], .q6_K: [208]]
        var bytes = (0..<(rows * type.typeSize)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        for block in 0..<rows {
            for offset in scaleOffsets[type]! {
                let scale = Float16(Float.random(in: -0.002...0.002, using: &rng)).bitPattern
                bytes[block * type.typeSize + offset] = UInt8(scale & 0xFF)
                bytes[block * type.typeSize + offset + 1] = UInt8(scale >> 8)
            }
        }
        return bytes
    }

    func testKQuantWeightsStayBlocksAndRunAsTheirDecodedValues() throws {
        let folder = TemporaryDirectory()
        // The only weights of the tiny models whose rows are whole 256-value super-blocks are
        // the timestep (and guidance) embedders' first layers: stored as K-quants, the rest F32.
        let kinds: [ModelFixture: [String: GGUFType]] = [
            .flux: ["time_in.in_layer.weight": .q4_K, "guidance_in.in_layer.weight": .q6_K],
            .sd35: ["model.diffusion_model.t_embedder.mlp.0.weight": .q3_K],
        ]
        var rng = SeededGenerator(seed: 18)
        for fixture in ModelFixture.allCases {
            let source = try SafeTensorsFile(path: fixture.path("original.safetensors"))
            var tensors: [(spec: GGUFTensorSpec, bytes: [UInt8])] = []
            for info in source.tensors {
                if let type = kinds[fixture]![info.name] {
                    XCTAssertEqual(info.shape.last, 256)
                    tensors.append((GGUFTensorSpec(name: info.name, shape: info.shape, type: type),
                                    randomKBlocks(type, rows: info.shape[0], &rng)))
                } else {
                    let values = try source.floats(of: info)
                    tensors.append((GGUFTensorSpec(name: info.name, shape: info.shape, type: .f32),
                                    values.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) }))
                }
            }
            let path = folder.file("\(fixture.rawValue)-kquants.gguf")
            try writeBytes(try GGUFLayout.serialize(metadata: [], tensors: tensors), to: path)
            let weights = try TransformerWeights(path: path, configPath: fixture == .flux ? fixture.configPath : nil)
            // The timestep embedder's first layer (and FLUX's guidance embedder's).
            XCTAssertEqual(try weights.matrix("time_text_embed.timestep_embedder.linear_1.weight").element.name,
                           fixture == .flux ? "Q4_K" : "Q3_K")
            XCTAssertEqual(try assertStoredForm(weights, fixture.rawValue), kinds[fixture]!.count)
            let ours = try output(weights, fixture)
            XCTAssertTrue(ours.allSatisfy(\.isFinite), fixture.rawValue)
            XCTAssertTrue(bitwiseEqual(ours, try output(try eager(weights), fixture)), fixture.rawValue)
        }
    }

    func testScaledFP8StaysFP8AndRunsAsItsDecodedValues() throws {
        let fixture = ModelFixture.sd35
        let weights = try TransformerWeights(path: fixture.path("scaled_fp8.safetensors"))
        let count = try assertStoredForm(weights, "scaled fp8")
        XCTAssertEqual(try weights.matrix("transformer_blocks.0.attn.to_q.weight").element.name, "F8_E4M3×scale")
        XCTAssertGreaterThan(count, 30)
        let ours = try output(weights, fixture)
        XCTAssertTrue(bitwiseEqual(ours, try output(try eager(weights), fixture)))
        // And eager reading is float(fp8)·scale: the expected file holds those values.
        let expected = try TransformerWeights(path: fixture.path("scaled_fp8.expected.safetensors"))
        XCTAssertTrue(bitwiseEqual(ours, try output(expected, fixture)))
    }

    /// LoRA training on a frozen Q4_0 base: the factors' gradients (dX = dY·W through the base,
    /// decoded per use) equal those on the eagerly decoded base.
    func testLoRAGradientsThroughQ4_0BaseEqualThoseOnTheDecodedBase() throws {
        let folder = TemporaryDirectory()
        for fixture in ModelFixture.allCases {
            let weights = try TransformerWeights(path: try gguf(fixture, .q4_0, in: folder),
                                                 configPath: fixture == .flux ? fixture.configPath : nil)
            XCTAssertEqual(try weights.matrix("transformer_blocks.0.attn.to_q.weight").element.name, "Q4_0")
            let io = try fixture.ioLoRA()
            func gradients(_ weights: TransformerWeights) throws -> [Float] {
                let model = try TransformerModel.load(weights)
                let parameters = LoRAParameters(try AdapterSet(path: fixture.loraFile, scale: 1, for: weights), trainable: true)
                let graph = Graph(threads: 1, recordsGradients: true)
                var inputs: [String: Variable] = [:]
                for name in model.inputNames {
                    inputs[name] = name == "hidden_states" ? graph.parameter(io[name]!) : graph.constant(io[name]!)
                }
                let loss = graph.weightedSum(model.forward(inputs, adapters: parameters, in: graph), weights: io["loss_weight"]!)
                graph.backward(from: loss)
                var all = inputs["hidden_states"]!.gradient!.scalars
                for module in parameters.modules.keys.sorted() {
                    for branch in parameters.modules[module]! {
                        // A module the forward pass does not reach has no gradient.
                        all += (branch.down.gradient?.scalars ?? []) + (branch.up.gradient?.scalars ?? [])
                    }
                }
                return all
            }
            let ours = try gradients(weights)
            XCTAssertTrue(ours.contains { $0 != 0 } && ours.allSatisfy(\.isFinite), fixture.rawValue)
            XCTAssertTrue(bitwiseEqual(ours, try gradients(try eager(weights))), fixture.rawValue)
        }
    }
}

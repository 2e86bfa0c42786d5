import Foundation
import LoRA
import TensorRuntime
import TestSupport
import Transformers
import XCTest

/// Forward passes against diffusers' own outputs on the tiny fixtures, for every checkpoint layout,
/// with and without the fixture LoRA (diffusers and kohya forms), on one and two threads.
final class ParityTests: XCTestCase {
    static let tolerance = 1e-4

    func run(_ fixture: ModelFixture, checkpoint: String, config: String?, lora: String? = nil,
             reference: [String: Tensor], threads: Int = 1) throws -> Tensor {
        let weights = try TransformerWeights(path: checkpoint, configPath: config)
        let model = try TransformerModel.load(weights)
        let adapters = try lora.map { path throws -> LoRAParameters in
            LoRAParameters(try AdapterSet(path: path, scale: 1, for: weights), trainable: false)
        }
        return try model.sample(ModelFixture.inputs(model, from: reference), adapters: adapters, threads: threads)
    }

    func checkBase(_ fixture: ModelFixture) throws {
        let io = try fixture.io()
        for checkpoint in fixture.checkpoints {
            let out = try run(fixture, checkpoint: checkpoint.path, config: checkpoint.config, reference: io)
            let error = ModelFixture.relativeL2(out, io["output"]!)
            print("parity \(fixture.rawValue) \(checkpoint.label): relative L2 \(error)")
            XCTAssertLessThanOrEqual(error, Self.tolerance, "\(fixture.rawValue) from \(checkpoint.label): relative L2 error \(error)")
        }
    }

    func testSD3MatchesDiffusersInEveryLayout() throws { try checkBase(.sd35) }
    func testFluxMatchesDiffusersInEveryLayout() throws { try checkBase(.flux) }

    func checkLoRA(_ fixture: ModelFixture) throws {
        let io = try fixture.ioLoRA()
        let expected = io["output"]!
        // diffusers form, on the diffusers folder and on the original layout.
        for checkpoint in fixture.checkpoints where checkpoint.label != "diffusers shards" {
            let out = try run(fixture, checkpoint: checkpoint.path, config: checkpoint.config, lora: fixture.loraFile, reference: io)
            let error = ModelFixture.relativeL2(out, expected)
            print("parity \(fixture.rawValue) \(checkpoint.label) + LoRA (diffusers form): relative L2 \(error)")
            XCTAssertLessThanOrEqual(error, Self.tolerance, "\(fixture.rawValue) \(checkpoint.label) with LoRA: relative L2 error \(error)")
        }
        // kohya form of the same adapter (fused q/k/v modules become rank-12 branches).
        let dir = TemporaryDirectory()
        let weights = try TransformerWeights(path: fixture.diffusersFolder)
        let adapter = try LoRAReader.read(path: fixture.loraFile)
        let kohya = dir.file("kohya.safetensors")
        try LoRAWriter.write(adapter, format: .kohya, to: kohya, architecture: weights.architecture)
        let out = try run(fixture, checkpoint: fixture.diffusersFolder, config: nil, lora: kohya, reference: io)
        let error = ModelFixture.relativeL2(out, expected)
        print("parity \(fixture.rawValue) + LoRA (kohya form): relative L2 \(error)")
        XCTAssertLessThanOrEqual(error, Self.tolerance, "\(fixture.rawValue) with the kohya LoRA: relative L2 error \(error)")
    }

    /// The PEFT folder of the same adapter, and the adapter split into two halves applied together
    /// (two branches per module), give the same output.
    func checkOtherLoRAForms(_ fixture: ModelFixture) throws {
        let io = try fixture.ioLoRA()
        let expected = io["output"]!
        let peft = try run(fixture, checkpoint: fixture.diffusersFolder, config: nil, lora: fixture.path("lora/peft"), reference: io)
        let peftError = ModelFixture.relativeL2(peft, expected)
        print("parity \(fixture.rawValue) + LoRA (PEFT folder): relative L2 \(peftError)")
        XCTAssertLessThanOrEqual(peftError, Self.tolerance, "\(fixture.rawValue) with the PEFT LoRA: relative L2 error \(peftError)")

        let weights = try TransformerWeights(path: fixture.diffusersFolder)
        let half = try AdapterSet(path: fixture.loraFile, scale: 0.5, for: weights)
        let twice = LoRAParameters(half.merging(half), trainable: false)
        XCTAssertTrue(twice.modules.values.allSatisfy { $0.count == 2 })
        let model = try TransformerModel.load(weights)
        let out = try model.sample(ModelFixture.inputs(model, from: io), adapters: twice)
        let error = ModelFixture.relativeL2(out, expected)
        print("parity \(fixture.rawValue) + LoRA as two half-scale branches: relative L2 \(error)")
        XCTAssertLessThanOrEqual(error, Self.tolerance, "\(fixture.rawValue) with two half adapters: relative L2 error \(error)")
    }

    func testSD3OtherLoRAForms() throws { try checkOtherLoRAForms(.sd35) }
    func testFluxOtherLoRAForms() throws { try checkOtherLoRAForms(.flux) }

    func testSD3WithLoRAMatchesDiffusers() throws { try checkLoRA(.sd35) }
    func testFluxWithLoRAMatchesDiffusers() throws { try checkLoRA(.flux) }

    func testThreadCountsAgree() throws {
        for fixture in ModelFixture.allCases {
            let io = try fixture.ioLoRA()
            let one = try run(fixture, checkpoint: fixture.diffusersFolder, config: nil, lora: fixture.loraFile, reference: io, threads: 1)
            let two = try run(fixture, checkpoint: fixture.diffusersFolder, config: nil, lora: fixture.loraFile, reference: io, threads: 2)
            let error = ModelFixture.relativeL2(two, one)
            print("parity \(fixture.rawValue) threads 1 vs 2: relative L2 \(error)")
            XCTAssertLessThanOrEqual(error, 1e-6, "\(fixture.rawValue): 1 and 2 threads differ by relative L2 \(error)")
        }
    }

    func testBlockAloneMatchesModelPieces() throws {
        // A joint block can be built and run on its own (benchmarks do this).
        let weights = try TransformerWeights(path: ModelFixture.sd35.diffusersFolder)
        let last = try SD3JointBlock(weights: weights, index: 2)
        XCTAssertTrue(last.contextPreOnly)
        let first = try SD3JointBlock(weights: weights, index: 0)
        XCTAssertTrue(first.usesDualAttention && !first.contextPreOnly)
        let graph = Graph(threads: 1, recordsGradients: false)
        let hidden = graph.constant(Tensor(repeating: 0.5, shape: [2, 12, 32]))
        let context = graph.constant(Tensor(repeating: -0.25, shape: [2, 7, 32]))
        let conditioning = graph.constant(Tensor(repeating: 0.1, shape: [2, 32]))
        let out = first.forward(hidden: hidden, context: context, conditioning: conditioning, adapters: nil, in: graph)
        XCTAssertEqual(out.hidden.shape, [2, 12, 32])
        XCTAssertEqual(out.context?.shape, [2, 7, 32])
        let end = last.forward(hidden: hidden, context: context, conditioning: conditioning, adapters: nil, in: graph)
        XCTAssertNil(end.context)
        XCTAssertThrowsError(try SD3JointBlock(weights: weights, index: 3))
    }
}

import Foundation
import TensorRuntime
import TestSupport
import Transformers
import XCTest

/// `validate` rejects missing, misshapen and non-finite inputs with `badInput` naming the input.
final class InputValidationTests: XCTestCase {
    static let source = "inputs.safetensors"

    func model(_ fixture: ModelFixture) throws -> (any DiffusionTransformer, [String: Tensor]) {
        let model = try TransformerModel.load(try TransformerWeights(path: fixture.diffusersFolder))
        return (model, ModelFixture.inputs(model, from: try fixture.io()))
    }

    func expectBadInput(_ model: any DiffusionTransformer, _ inputs: [String: Tensor], name: String,
                        _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        do {
            try model.validate(inputs, source: Self.source)
            XCTFail("\(what): accepted", file: file, line: line)
        } catch {
            guard case let .badInput(path, got, reason) = error else {
                return XCTFail("\(what): \(error)", file: file, line: line)
            }
            XCTAssertEqual(path, Self.source, file: file, line: line)
            XCTAssertEqual(got, name, "\(what): \(reason)", file: file, line: line)
            XCTAssertTrue(error.description.contains(name), file: file, line: line)
        }
    }

    func changed(_ inputs: [String: Tensor], _ name: String, shape: [Int]? = nil, fill: Float = 0.5) -> [String: Tensor] {
        var copy = inputs
        let newShape = shape ?? inputs[name]!.shape
        copy[name] = Tensor(repeating: fill, shape: newShape)
        return copy
    }

    func testSD3() throws {
        let (m, inputs) = try model(.sd35)
        XCTAssertEqual(m.inputNames.sorted(), ["encoder_hidden_states", "hidden_states", "pooled_projections", "timestep"])
        XCTAssertNoThrow(try m.validate(inputs, source: Self.source))
        for name in m.inputNames {
            var missing = inputs
            missing[name] = nil
            expectBadInput(m, missing, name: name, "missing \(name)")
        }
        expectBadInput(m, changed(inputs, "hidden_states", shape: [2, 4, 6, 8]), name: "hidden_states", "wrong channel count")
        expectBadInput(m, changed(inputs, "hidden_states", shape: [2, 16, 7, 8]), name: "hidden_states", "odd height for patch 2")
        expectBadInput(m, changed(inputs, "hidden_states", shape: [2, 16, 6]), name: "hidden_states", "rank 3")
        expectBadInput(m, changed(inputs, "hidden_states", shape: [2, 16, 34, 8]), name: "hidden_states", "larger than the position table")
        expectBadInput(m, changed(inputs, "encoder_hidden_states", shape: [3, 7, 24]), name: "encoder_hidden_states", "mismatched batch")
        expectBadInput(m, changed(inputs, "encoder_hidden_states", shape: [2, 7, 25]), name: "encoder_hidden_states", "wrong width")
        expectBadInput(m, changed(inputs, "pooled_projections", shape: [2, 21]), name: "pooled_projections", "wrong pooled width")
        expectBadInput(m, changed(inputs, "timestep", shape: [3]), name: "timestep", "wrong timestep count")
        expectBadInput(m, changed(inputs, "pooled_projections", fill: .nan), name: "pooled_projections", "NaN")
        expectBadInput(m, changed(inputs, "hidden_states", fill: .infinity), name: "hidden_states", "infinity")
        XCTAssertNoThrow(try m.validate(changed(inputs, "timestep", shape: [1]), source: Self.source), "one timestep for the batch")
    }

    func testFlux() throws {
        let (m, inputs) = try model(.flux)
        XCTAssertEqual(m.inputNames.sorted(), ["encoder_hidden_states", "guidance", "hidden_states", "img_ids",
                                               "pooled_projections", "timestep", "txt_ids"])
        XCTAssertNoThrow(try m.validate(inputs, source: Self.source))
        for name in m.inputNames {
            var missing = inputs
            missing[name] = nil
            expectBadInput(m, missing, name: name, "missing \(name)")
        }
        expectBadInput(m, changed(inputs, "hidden_states", shape: [2, 12, 17]), name: "hidden_states", "wrong channel count")
        expectBadInput(m, changed(inputs, "encoder_hidden_states", shape: [1, 5, 24]), name: "encoder_hidden_states", "mismatched batch")
        expectBadInput(m, changed(inputs, "txt_ids", shape: [6, 3]), name: "txt_ids", "txt_ids length ≠ text tokens")
        expectBadInput(m, changed(inputs, "img_ids", shape: [11, 3]), name: "img_ids", "img_ids length ≠ image tokens")
        expectBadInput(m, changed(inputs, "img_ids", shape: [12, 2]), name: "img_ids", "two position axes")
        expectBadInput(m, changed(inputs, "guidance", shape: [2, 1]), name: "guidance", "guidance rank")
        expectBadInput(m, changed(inputs, "timestep", fill: .nan), name: "timestep", "NaN timestep")
        expectBadInput(m, changed(inputs, "encoder_hidden_states", fill: -.infinity), name: "encoder_hidden_states", "−∞")
    }

    func testOriginalFluxWithoutConfigNeedsRoPEAxes() throws {
        // Head size 16 does not determine axes_dims_rope; the loader says so instead of guessing.
        let weights = try TransformerWeights(path: ModelFixture.flux.path("original.safetensors"))
        XCTAssertThrowsError(try TransformerModel.load(weights)) { error in
            XCTAssertTrue("\(error)".contains("axes_dims_rope"), "\(error)")
        }
    }
}

import Foundation
import TensorRuntime
import TestSupport
import Transformers
import XCTest

/// LoRA-factor and input gradients of loss = Σ output·w against PyTorch autograd on the fixtures,
/// and a finite-difference check of a few factor entries through the whole model.
final class LoRAGradientTests: XCTestCase {
    static let tolerance = 1e-4
    static let trainableInputs = ["hidden_states", "encoder_hidden_states", "pooled_projections"]

    struct Setup {
        let model: any DiffusionTransformer
        let parameters: LoRAParameters
        let io: [String: Tensor]
    }

    func setup(_ fixture: ModelFixture) throws -> Setup {
        let weights = try TransformerWeights(path: fixture.diffusersFolder)
        let model = try TransformerModel.load(weights)
        let set = try AdapterSet(path: fixture.loraFile, scale: 1, for: weights)
        let io = try fixture.ioLoRA()
        try model.validate(ModelFixture.inputs(model, from: io), source: fixture.path("lora/io_lora.safetensors"))
        return Setup(model: model, parameters: LoRAParameters(set, trainable: true), io: io)
    }

    /// The loss (Float64 sum of output·w) for the current factor values, without gradients.
    func loss(_ s: Setup) -> Double {
        let graph = Graph(threads: 1, recordsGradients: false)
        var inputs: [String: Variable] = [:]
        for name in s.model.inputNames { inputs[name] = graph.constant(s.io[name]!) }
        let out = s.model.forward(inputs, adapters: s.parameters, in: graph).value
        return zip(out.scalars, s.io["loss_weight"]!.scalars).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
    }

    func checkGradients(_ fixture: ModelFixture) throws {
        let s = try setup(fixture)
        let graph = Graph(threads: 1, recordsGradients: true)
        var inputs: [String: Variable] = [:]
        for name in s.model.inputNames {
            inputs[name] = Self.trainableInputs.contains(name) ? graph.parameter(s.io[name]!) : graph.constant(s.io[name]!)
        }
        let out = s.model.forward(inputs, adapters: s.parameters, in: graph)
        let loss = graph.weightedSum(out, weights: s.io["loss_weight"]!)
        let lossError = abs(Double(loss.value.scalars[0] - s.io["loss"]!.scalars[0])) / abs(Double(s.io["loss"]!.scalars[0]))
        XCTAssertLessThanOrEqual(lossError, Self.tolerance, "\(fixture.rawValue): loss relative error \(lossError)")
        graph.backward(from: loss)

        var worst = (name: "", error: 0.0)
        var compared = 0
        for (module, branches) in s.parameters.modules {
            XCTAssertEqual(branches.count, 1, module)
            guard let branch = branches.first else { continue }
            for (factor, variable) in [("lora_A", branch.down), ("lora_B", branch.up)] {
                let key = "grad.\(module).\(factor).weight"
                guard let reference = s.io[key] else { XCTFail("\(fixture.rawValue): no reference \(key)"); continue }
                let ours = variable.gradient ?? Tensor(repeating: 0, shape: reference.shape)
                let error = ModelFixture.relativeL2(ours, reference)
                compared += 1
                if error > worst.error { worst = (key, error) }
                XCTAssertLessThanOrEqual(error, Self.tolerance, "\(fixture.rawValue) \(key): relative L2 error \(error)")
            }
        }
        XCTAssertEqual(compared, s.io.keys.filter { $0.hasPrefix("grad.") }.count, "\(fixture.rawValue): every reference gradient compared")
        print("gradients \(fixture.rawValue): \(compared) LoRA factors, worst relative L2 \(worst.error) (\(worst.name))")
        for name in Self.trainableInputs {
            let reference = s.io["input_grad.\(name)"]!
            let ours = inputs[name]!.gradient ?? Tensor(repeating: 0, shape: reference.shape)
            let error = ModelFixture.relativeL2(ours, reference)
            print("gradients \(fixture.rawValue): input \(name) relative L2 \(error)")
            XCTAssertLessThanOrEqual(error, Self.tolerance, "\(fixture.rawValue) input_grad.\(name): relative L2 error \(error)")
        }
    }

    func testSD3GradientsMatchAutograd() throws { try checkGradients(.sd35) }
    func testFluxGradientsMatchAutograd() throws { try checkGradients(.flux) }

    /// Central differences on a few entries of A and B of several modules against our own
    /// backward pass.
    func checkFiniteDifferences(_ fixture: ModelFixture, modules: [String]) throws {
        let s = try setup(fixture)
        let graph = Graph(threads: 1, recordsGradients: true)
        var inputs: [String: Variable] = [:]
        for name in s.model.inputNames { inputs[name] = graph.constant(s.io[name]!) }
        graph.backward(from: graph.weightedSum(s.model.forward(inputs, adapters: s.parameters, in: graph),
                                               weights: s.io["loss_weight"]!))
        let epsilon: Float = 1e-2
        for module in modules {
            let branch = try XCTUnwrap(s.parameters.modules[module]?.first, module)
            for (factor, variable) in [("lora_A", branch.down), ("lora_B", branch.up)] {
                let gradient = try XCTUnwrap(variable.gradient, "\(module).\(factor) has no gradient")
                // The entry with the largest gradient: a strong, well-conditioned signal.
                let index = gradient.scalars.indices.max { abs(gradient.scalars[$0]) < abs(gradient.scalars[$1]) }!
                let original = variable.value.scalars[index]
                variable.value.scalars[index] = original + epsilon
                let up = loss(s)
                variable.value.scalars[index] = original - epsilon
                let down = loss(s)
                variable.value.scalars[index] = original
                let numeric = (up - down) / (2 * Double(epsilon))
                let analytic = Double(gradient.scalars[index])
                let error = abs(numeric - analytic) / max(abs(analytic), 1e-3)
                print("finite difference \(fixture.rawValue) \(module).\(factor)[\(index)]: numeric \(numeric), backward \(analytic), relative \(error)")
                XCTAssertLessThanOrEqual(error, 5e-3, "\(fixture.rawValue) \(module).\(factor)[\(index)]: numeric \(numeric) vs \(analytic)")
            }
        }
    }

    func testSD3FiniteDifferences() throws {
        try checkFiniteDifferences(.sd35, modules: ["transformer_blocks.0.attn.to_q", "transformer_blocks.1.attn2.to_v",
                                                    "transformer_blocks.2.attn.add_k_proj"])
    }

    func testFluxFiniteDifferences() throws {
        try checkFiniteDifferences(.flux, modules: ["transformer_blocks.0.attn.to_k", "single_transformer_blocks.1.proj_out",
                                                   "single_transformer_blocks.2.proj_mlp"])
    }
}

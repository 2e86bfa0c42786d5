import FlowMatching
import Foundation
import Testing
@testable import GRPOGuard
import TensorRuntime
import TestSupport
import Transformers

/// Supervised flow matching on the tiny SD3.5-style fixture: the loss is the rectified-flow MSE,
/// its gradients match finite differences, per-sample σ equals one σ per call, and steps learn.
@Suite struct FlowMatchingTrainerTests {
    struct Setup {
        let model: any DiffusionTransformer
        let weights: TransformerWeights
        let prompts: TrainingPrompts
        let trainer: FlowMatchingTrainer
    }

    /// Rank-2 branches on two attention modules with random non-zero factors (so every factor has a
    /// gradient), 8×8 latents.
    func setup(learningRate: Double = 1e-2, seed: UInt64 = 3) throws -> Setup {
        let weights = try TransformerWeights(path: Repository.path("fixtures/sd35_tiny/diffusers"))
        let model = try TransformerModel.load(weights)
        let prompts = try TrainingPrompts.load(path: Repository.path("fixtures/prompts/sd35_tiny_prompts.safetensors"),
                                               architecture: weights.architecture)
        var set = try AdapterInitialization.make(weights, modules: ["transformer_blocks.0.attn.to_q", "transformer_blocks.1.ff.net.2"],
                                                 rank: 2, alpha: 2, seed: seed)
        var random = SplitMix64(state: seed)
        for (name, branches) in set.modules {
            set.modules[name] = branches.map { b in
                AdapterSet.Branch(down: b.down, up: Tensor(shape: b.up.shape, scalars: random.values(b.up.count, amplitude: 0.2)), scale: b.scale)
            }
        }
        let parameters = LoRAParameters(set, trainable: true)
        let trainer = try FlowMatchingTrainer(model: model, prompts: prompts, parameters: parameters, latentSize: 8,
                                              optimizer: AdamWConfiguration(learningRate: learningRate, weightDecay: 0), maxGradNorm: .infinity)
        return Setup(model: model, weights: weights, prompts: prompts, trainer: trainer)
    }

    func batch(_ trainer: FlowMatchingTrainer, count: Int = 3, seed: UInt64 = 9) -> (data: Tensor, noise: Tensor, ids: [Int], sigmas: [Double]) {
        var g = GaussianGenerator(seed: seed)
        let shape = [count] + trainer.sampleShape
        let data = g.tensor(shape: shape), noise = g.tensor(shape: shape)
        let ids = (0..<count).map { $0 % 2 }
        let sigmas = (0..<count).map { 0.15 + 0.7 * Double($0) / Double(max(1, count - 1)) }
        return (data, noise, ids, sigmas)
    }

    /// The loss is mean((v(x_σ) − (ε − x₀))²) with v computed sample by sample at its own σ: this
    /// also checks that per-sample timesteps reach the model (a shared σ would give other values).
    @Test func lossIsTheRectifiedFlowMSEWithPerSampleSigma() throws {
        let s = try setup()
        let (data, noise, ids, sigmas) = batch(s.trainer)
        let loss = try s.trainer.loss(data: data, promptIDs: ids, noise: noise, sigmas: sigmas)
        let per = data.count / data.shape[0]
        var squares = 0.0
        for i in 0..<data.shape[0] {
            let x0 = Array(data.scalars[(i * per)..<((i + 1) * per)]), e = Array(noise.scalars[(i * per)..<((i + 1) * per)])
            let sigma = Float(sigmas[i])
            let noisy = Tensor(shape: [1] + s.trainer.sampleShape, scalars: zip(x0, e).map { (1 - sigma) * $0 + sigma * $1 })
            let graph = Graph(threads: 1, recordsGradients: false)
            let text = s.prompts.embeddings, pooled = s.prompts.pooled
            let tokens = text.shape[1] * text.shape[2]
            let v = s.model.forward([
                "hidden_states": graph.constant(noisy),
                "encoder_hidden_states": graph.constant(Tensor(shape: [1, text.shape[1], text.shape[2]],
                                                               scalars: Array(text.scalars[(ids[i] * tokens)..<((ids[i] + 1) * tokens)]))),
                "pooled_projections": graph.constant(Tensor(shape: [1, pooled.shape[1]],
                                                            scalars: Array(pooled.scalars[(ids[i] * pooled.shape[1])..<((ids[i] + 1) * pooled.shape[1])]))),
                "timestep": graph.constant(Tensor(shape: [1], scalars: [Float(1000 * sigmas[i])])),
            ], adapters: s.trainer.parameters, in: graph).value
            for k in 0..<per { let d = Double(v.scalars[k]) - Double(e[k] - x0[k]); squares += d * d }
        }
        let expected = squares / Double(data.count)
        #expect(abs(loss - expected) <= 1e-5 * expected, "loss \(loss) vs \(expected)")
        // The same batch with one shared σ is a different loss.
        let shared = try s.trainer.loss(data: data, promptIDs: ids, noise: noise, sigmas: [Double](repeating: sigmas[0], count: sigmas.count))
        #expect(abs(shared - loss) > 1e-4 * loss)
    }

    /// ∂loss/∂(factor element) against central differences of the loss, for elements of both
    /// factors of both modules.
    @Test func gradientsMatchFiniteDifferences() throws {
        let s = try setup()
        let (data, noise, ids, sigmas) = batch(s.trainer)
        _ = try s.trainer.lossAndGradients(data: data, promptIDs: ids, noise: noise, sigmas: sigmas, gradients: true)
        let variables = s.trainer.parameters.variables
        let gradients = variables.map { $0.gradient }
        s.trainer.parameters.zeroGradients()
        // Float32 forwards make each difference noisy at the 1e-6 level, so the check is on the
        // whole set of sampled elements (relative L2) plus a loose per-element bound.
        var fds: [Double] = [], analytic: [Double] = []
        for (k, variable) in variables.enumerated() {
            guard let g = gradients[k] else { Issue.record("factor \(k) has no gradient"); continue }
            for e in [0, variable.value.count / 3, variable.value.count / 2, variable.value.count - 1] {
                let original = variable.value.scalars[e]
                let h: Float = 2e-2
                variable.value.scalars[e] = original + h
                let plus = try s.trainer.loss(data: data, promptIDs: ids, noise: noise, sigmas: sigmas)
                variable.value.scalars[e] = original - h
                let minus = try s.trainer.loss(data: data, promptIDs: ids, noise: noise, sigmas: sigmas)
                variable.value.scalars[e] = original
                fds.append((plus - minus) / Double(2 * h))
                analytic.append(Double(g.scalars[e]))
            }
        }
        #expect(fds.count == 4 * variables.count)
        let norm = analytic.reduce(0) { $0 + $1 * $1 }.squareRoot()
        let error = zip(fds, analytic).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }.squareRoot()
        #expect(norm > 0 && error <= 1e-2 * norm, "relative L2 error \(error / norm)")
        let largest = analytic.map(abs).max() ?? 0
        for (fd, g) in zip(fds, analytic) { #expect(abs(fd - g) <= 0.05 * largest, "fd \(fd) vs \(g)") }
    }

    /// Repeated steps on one batch lower its loss; a step with learning rate 0 changes nothing.
    @Test func stepsLowerTheLoss() throws {
        let s = try setup(learningRate: 1e-2)
        let (data, noise, ids, sigmas) = batch(s.trainer)
        let before = try s.trainer.loss(data: data, promptIDs: ids, noise: noise, sigmas: sigmas)
        var last = before
        for _ in 0..<15 { last = try s.trainer.step(data: data, promptIDs: ids, noise: noise, sigmas: sigmas) }
        let after = try s.trainer.loss(data: data, promptIDs: ids, noise: noise, sigmas: sigmas)
        #expect(after < 0.9 * before, "loss \(before) → \(after)")
        #expect(after <= last * 1.05)
        let frozen = try setup(learningRate: 0)
        let values = frozen.trainer.parameters.variables.map(\.value)
        try frozen.trainer.step(data: data, promptIDs: ids, noise: noise, sigmas: sigmas)
        #expect(frozen.trainer.parameters.variables.map(\.value) == values)
    }

    /// Mismatched shapes, σ outside [0, 1] and unknown prompts are errors, not traps.
    @Test func badBatchesAreErrors() throws {
        let s = try setup()
        let (data, noise, ids, sigmas) = batch(s.trainer)
        #expect(throws: TrainingError.self) { try s.trainer.loss(data: data, promptIDs: Array(ids.dropLast()), noise: noise, sigmas: sigmas) }
        #expect(throws: TrainingError.self) { try s.trainer.loss(data: data, promptIDs: ids, noise: noise, sigmas: [1.5] + sigmas.dropFirst()) }
        #expect(throws: TrainingError.self) { try s.trainer.loss(data: data, promptIDs: [99] + ids.dropFirst(), noise: noise, sigmas: sigmas) }
        let wrong = Tensor(shape: [3, 16, 4, 4], scalars: [Float](repeating: 0, count: 3 * 16 * 16))
        #expect(throws: TrainingError.self) { try s.trainer.loss(data: wrong, promptIDs: ids, noise: wrong, sigmas: sigmas) }
    }
}

import Foundation
import TensorRuntime
import Transformers

/// Supervised flow-matching training of LoRA factors on data latents: the rectified-flow loss
/// SD3 was trained with, mean over elements of (v_θ(x_σ, σ, c) − (ε − x₀))² at
/// x_σ = (1 − σ)·x₀ + σ·ε, with one σ per sample. Each `step` is one AdamW step (with global
/// gradient-norm clipping) on one batch. With full-rank branches on every linear this trains a
/// whole model through the LoRA reparametrization W₀ + s·B·A (the runtime's backward gives
/// gradients for LoRA factors only); merge the factors afterwards for a plain checkpoint.
/// A class: the graphs hold on to the parameters' identity.
public final class FlowMatchingTrainer {
    /// The trained factors.
    public let parameters: LoRAParameters
    /// The optimizer; its configuration (the learning rate) may be changed between steps.
    public var optimizer: AdamW
    /// Global gradient-norm clip (∞ for none).
    public let maxGradNorm: Double
    let driver: ModelDriver

    /// A trainer for `model` conditioned on `prompts`, for latents of side `latentSize`.
    public init(model: any DiffusionTransformer, prompts: TrainingPrompts, parameters: LoRAParameters, latentSize: Int,
                optimizer: AdamWConfiguration, maxGradNorm: Double = 1, threads: Int = 1) throws(TrainingError) {
        var config = TrainingConfig()
        config.latentSize = latentSize
        config.threads = threads
        driver = try ModelDriver(model: model, prompts: prompts, config: config)
        self.parameters = parameters
        self.optimizer = AdamW(configuration: optimizer, counts: parameters.variables.map { $0.value.count })
        self.maxGradNorm = maxGradNorm
    }

    /// A sample's latent shape (without the batch dimension).
    public var sampleShape: [Int] { driver.sampleShape }

    /// The loss on one batch without an update: `data` and `noise` are [b, …] latents, `promptIDs`
    /// and `sigmas` have b entries (σ ∈ [0, 1]).
    public func loss(data: Tensor, promptIDs: [Int], noise: Tensor, sigmas: [Double]) throws(TrainingError) -> Double {
        try lossAndGradients(data: data, promptIDs: promptIDs, noise: noise, sigmas: sigmas, gradients: false)
    }

    /// One optimizer step on one batch; returns the batch's loss before the step.
    @discardableResult
    public func step(data: Tensor, promptIDs: [Int], noise: Tensor, sigmas: [Double]) throws(TrainingError) -> Double {
        let loss = try lossAndGradients(data: data, promptIDs: promptIDs, noise: noise, sigmas: sigmas, gradients: true)
        let norm = GradientClipping.clip(parameters.variables, maxNorm: maxGradNorm)
        guard norm.isFinite else { throw .nonFinite(step: 0, what: "the flow-matching gradient norm") }
        optimizer.step(parameters.variables)
        parameters.zeroGradients()
        return loss
    }

    /// The batch's loss; with `gradients` the factors' gradients of it are left in `parameters`
    /// (replacing earlier ones; not clipped, no optimizer step).
    func lossAndGradients(data: Tensor, promptIDs: [Int], noise: Tensor, sigmas: [Double], gradients: Bool) throws(TrainingError) -> Double {
        let b = data.shape.first ?? 0
        guard b > 0, data.shape == [b] + driver.sampleShape, noise.shape == data.shape, promptIDs.count == b, sigmas.count == b else {
            throw .badConfigValue(source: "flow matching", key: "batch",
                                  reason: "data \(data.shape), noise \(noise.shape), \(promptIDs.count) prompt ids and \(sigmas.count) sigmas do not describe one batch of \([b] + driver.sampleShape) latents")
        }
        guard sigmas.allSatisfy({ $0 >= 0 && $0 <= 1 }), promptIDs.allSatisfy({ $0 >= 0 && $0 < driver.prompts.count }) else {
            throw .badConfigValue(source: "flow matching", key: "batch", reason: "sigmas must lie in [0, 1] and prompt ids in 0..<\(driver.prompts.count)")
        }
        let per = data.count / b
        var noisy = [Float](repeating: 0, count: data.count)
        var target = [Float](repeating: 0, count: data.count)
        for i in 0..<b {
            let s = Float(sigmas[i])
            for e in (i * per)..<((i + 1) * per) {
                noisy[e] = (1 - s) * data.scalars[e] + s * noise.scalars[e]
                target[e] = noise.scalars[e] - data.scalars[e]
            }
        }
        let graph = Graph(threads: driver.threads, recordsGradients: gradients)
        let (output, v) = driver.velocity(Tensor(shape: data.shape, scalars: noisy), sigmas: sigmas, promptIDs: promptIDs,
                                          adapters: parameters, graph: graph)
        var loss = 0.0
        var seed = [Float](repeating: 0, count: data.count)
        let scale = 2 / Double(data.count)
        for e in 0..<data.count {
            let d = Double(v.scalars[e]) - Double(target[e])
            loss += d * d
            seed[e] = Float(scale * d)
        }
        loss /= Double(data.count)
        guard loss.isFinite else { throw .nonFinite(step: 0, what: "the flow-matching loss") }
        if gradients {
            parameters.zeroGradients()
            graph.backward(from: output, seed: driver.outputSeed(Tensor(shape: data.shape, scalars: seed)))
        }
        return loss
    }
}

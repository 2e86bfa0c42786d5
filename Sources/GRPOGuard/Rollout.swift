import Checkpoints
import FlowMatching
import Foundation
import TensorRuntime
import Transformers

/// The text conditioning a run samples from: per prompt its token embeddings and pooled
/// embedding, optional negative (unconditional) embeddings for classifier-free guidance, and the
/// prompt strings (handed to the reward).
public struct TrainingPrompts: Sendable {
    /// `[P, T, joint]`.
    public var embeddings: Tensor
    /// `[P, pooled]`.
    public var pooled: Tensor
    /// `[1 or P, T, joint]`, when the file has negatives.
    public var negativeEmbeddings: Tensor?
    /// `[1 or P, pooled]`, when the file has negatives.
    public var negativePooled: Tensor?
    /// One string per prompt ("" when unknown).
    public var texts: [String]
    /// Where the prompts came from (for messages).
    public var source: String

    /// Prompts from tensors; shapes are checked by `check(against:source:)`.
    public init(embeddings: Tensor, pooled: Tensor, negativeEmbeddings: Tensor? = nil, negativePooled: Tensor? = nil,
                texts: [String]? = nil, source: String = "(memory)") {
        self.embeddings = embeddings
        self.pooled = pooled
        self.negativeEmbeddings = negativeEmbeddings
        self.negativePooled = negativePooled
        self.texts = texts ?? [String](repeating: "", count: embeddings.shape.first ?? 0)
        self.source = source
    }

    /// The number of prompts P.
    public var count: Int { embeddings.shape.first ?? 0 }

    /// Throws unless the shapes agree with each other and with the model's text widths, and
    /// negatives exist when guidance needs them.
    public func check(jointWidth: Int, pooledWidth: Int, needsNegatives: Bool) throws(TrainingError) {
        func bad(_ r: String) -> TrainingError { .prompts(path: source, reason: r) }
        guard embeddings.rank == 3, embeddings.shape[0] > 0, embeddings.shape[1] > 0 else {
            throw bad("prompt_embeds has shape \(embeddings.shape), expected [prompts, tokens, \(jointWidth)]")
        }
        guard embeddings.shape[2] == jointWidth else {
            throw bad("prompt_embeds has width \(embeddings.shape[2]) (shape \(embeddings.shape)), the model's text width is \(jointWidth)")
        }
        guard pooled.shape == [count, pooledWidth] else {
            throw bad("pooled_prompt_embeds has shape \(pooled.shape), expected [\(count), \(pooledWidth)] for this model")
        }
        guard texts.count == count else { throw bad("\(texts.count) prompt strings for \(count) prompts") }
        if needsNegatives {
            guard let ne = negativeEmbeddings, let np = negativePooled else {
                throw bad("cfg_scale > 1 needs negative_prompt_embeds and negative_pooled_prompt_embeds, which the file lacks")
            }
            guard ne.rank == 3, ne.shape[0] == 1 || ne.shape[0] == count, ne.shape[1] == embeddings.shape[1], ne.shape[2] == jointWidth else {
                throw bad("negative_prompt_embeds has shape \(ne.shape), expected [1 or \(count), \(embeddings.shape[1]), \(jointWidth)]")
            }
            guard np.rank == 2, np.shape[0] == ne.shape[0], np.shape[1] == pooledWidth else {
                throw bad("negative_pooled_prompt_embeds has shape \(np.shape), expected [\(ne.shape[0]), \(pooledWidth)]")
            }
        }
        for (name, t) in [("prompt_embeds", embeddings), ("pooled_prompt_embeds", pooled)] + (negativeEmbeddings.map { [("negative_prompt_embeds", $0)] } ?? []) {
            if t.scalars.contains(where: { !$0.isFinite }) { throw bad("\(name) holds NaN or infinite values") }
        }
    }

    /// Rows `ids` of `[P, …]` tensor `t` (a single row is repeated).
    static func gather(_ t: Tensor, _ ids: [Int]) -> Tensor {
        let rows = t.shape[0], inner = t.count / max(rows, 1)
        var out = [Float]()
        out.reserveCapacity(ids.count * inner)
        for id in ids {
            let r = rows == 1 ? 0 : id
            out.append(contentsOf: t.scalars[(r * inner)..<((r + 1) * inner)])
        }
        return Tensor(shape: [ids.count] + Array(t.shape.dropFirst()), scalars: out)
    }
}

/// Runs the transformer on latents the way sampling and training need: the model builds its own
/// inputs from latents, σ and prompt embeddings (`DiffusionTransformer.forwardInputs`), with
/// classifier-free guidance v = v_u + s·(v_c − v_u) when s > 1.
struct ModelDriver {
    let model: any DiffusionTransformer
    /// A sample's latent shape (without the batch dimension).
    let sampleShape: [Int]
    let cfgScale: Double
    let guidance: Double
    let prompts: TrainingPrompts
    let threads: Int

    init(model: any DiffusionTransformer, prompts: TrainingPrompts, config: TrainingConfig) throws(TrainingError) {
        self.model = model
        self.prompts = prompts
        cfgScale = config.cfgScale
        guidance = config.guidance
        threads = config.threads
        do {
            sampleShape = try model.sampleShape(latentSize: config.latentSize)
        } catch {
            guard case let .badInput(_, _, reason) = error else {
                throw .badConfigValue(source: "config", key: "latent_size", reason: error.description)
            }
            throw .badConfigValue(source: "config", key: "latent_size", reason: reason)
        }
        let c = model.architecture.config
        try prompts.check(jointWidth: c.jointAttentionDim, pooledWidth: c.pooledProjectionDim, needsNegatives: config.cfgScale > 1)
    }

    var guided: Bool { cfgScale > 1 }

    /// The model's output variable for latents `x` ([b, …]) at σ, and the (guided) velocity.
    func velocity(_ x: Tensor, sigma: Double, promptIDs: [Int], adapters: LoRAParameters?, graph: Graph) -> (output: Variable, velocity: Tensor) {
        velocity(x, sigmas: [Double](repeating: sigma, count: x.shape[0]), promptIDs: promptIDs, adapters: adapters, graph: graph)
    }

    /// The same with one σ per sample (`sigmas.count == x.shape[0]`).
    func velocity(_ x: Tensor, sigmas: [Double], promptIDs: [Int], adapters: LoRAParameters?, graph: Graph) -> (output: Variable, velocity: Tensor) {
        let b = x.shape[0]
        precondition(sigmas.count == b, "one sigma per sample")
        var hidden = x
        var text = TrainingPrompts.gather(prompts.embeddings, promptIDs)
        var pooled = TrainingPrompts.gather(prompts.pooled, promptIDs)
        var n = b
        if guided, let ne = prompts.negativeEmbeddings, let np = prompts.negativePooled {
            hidden = Tensor(shape: [2 * b] + Array(x.shape.dropFirst()), scalars: x.scalars + x.scalars)
            let nt = TrainingPrompts.gather(ne, promptIDs), npool = TrainingPrompts.gather(np, promptIDs)
            text = Tensor(shape: [2 * b] + Array(text.shape.dropFirst()), scalars: nt.scalars + text.scalars)
            pooled = Tensor(shape: [2 * b] + Array(pooled.shape.dropFirst()), scalars: npool.scalars + pooled.scalars)
            n = 2 * b
        }
        // With guidance the batch is [unconditional; conditional]: both halves take the samples' σ.
        let perSample = n == b ? sigmas : sigmas + sigmas
        let tensors = model.forwardInputs(latents: hidden, sigmas: perSample, promptEmbeds: text, pooledPromptEmbeds: pooled,
                                          guidance: guidance)
        var inputs: [String: Variable] = [:]
        for name in model.inputNames { if let t = tensors[name] { inputs[name] = graph.constant(t) } }
        let output = model.forward(inputs, adapters: adapters, in: graph)
        guard guided else { return (output, output.value) }
        let half = output.value.count / 2
        let s = cfgScale
        var v = [Float](repeating: 0, count: half)
        output.value.scalars.withUnsafeBufferPointer { o in
            for i in 0..<half {
                let u = Double(o[i]), c = Double(o[half + i])
                v[i] = Float(u + s * (c - u))
            }
        }
        return (output, Tensor(shape: x.shape, scalars: v))
    }

    /// The backward seed on the model's output for ∂L/∂v = `gradient` (with guidance: (1 − s)·g
    /// on the unconditional half, s·g on the conditional half).
    func outputSeed(_ gradient: Tensor) -> Tensor {
        guard guided else { return gradient }
        let s = cfgScale
        let u = gradient.scalars.map { Float((1 - s) * Double($0)) }
        let c = gradient.scalars.map { Float(s * Double($0)) }
        return Tensor(shape: [2 * gradient.shape[0]] + Array(gradient.shape.dropFirst()), scalars: u + c)
    }
}

/// What one rollout recorded: every step's latents x_i, the sampled x_{i+1}, the step means
/// μ_old and log p_old, plus the final rewards and advantages, for `samples` samples.
public struct RolloutBatch: Sendable {
    /// The prompt index of every sample.
    public var promptIDs: [Int]
    /// x_0 … x_T, each `[B, …]` (`latents[T]` is the finished sample).
    public var latents: [Tensor]
    /// μ_old of steps 0 ..< T.
    public var means: [Tensor]
    /// log p_old of steps 0 ..< T, one value per sample.
    public var logProbabilities: [[Double]]
    /// The reward of every sample.
    public var rewards: [Double]
    /// The advantage of every sample.
    public var advantages: [Double]
}

/// Helpers on batch-first tensors.
enum Batch {
    /// Samples `range` of a batch-first tensor.
    static func slice(_ t: Tensor, _ range: Range<Int>) -> Tensor {
        let inner = t.count / t.shape[0]
        return Tensor(shape: [range.count] + Array(t.shape.dropFirst()),
                      scalars: Array(t.scalars[(range.lowerBound * inner)..<(range.upperBound * inner)]))
    }

    /// Concatenates batch-first tensors along the batch.
    static func join(_ parts: [Tensor]) -> Tensor {
        let b = parts.reduce(0) { $0 + $1.shape[0] }
        return Tensor(shape: [b] + Array(parts[0].shape.dropFirst()), scalars: parts.flatMap(\.scalars))
    }
}

extension TrainingPrompts {
    /// The prompts of a `PromptSet`.
    public init(_ set: PromptSet) {
        self.init(embeddings: set.promptEmbeds, pooled: set.pooledPromptEmbeds, negativeEmbeddings: set.negativePromptEmbeds,
                  negativePooled: set.negativePooledPromptEmbeds, texts: set.prompts, source: set.path)
    }

    /// Reads a prompt-set file and checks it fits a model of `architecture`.
    public static func load(path: String, architecture: Architecture) throws(TrainingError) -> TrainingPrompts {
        do {
            let set = try PromptSet(path: path)
            try set.check(against: architecture)
            return TrainingPrompts(set)
        } catch {
            throw .prompts(path: path, reason: error.description)
        }
    }
}

import Checkpoints
import FlowMatching
import Foundation
import GRPOGuard
import JSON
import LoRA
import SafeTensors
import TensorRuntime
import Transformers

/// The base transformer's shape (an SD3.5-style MMDiT-X: dual attention in the first blocks,
/// RMS q/k norms) and its pretraining (all in `study.json`).
struct ModelSettings: Codable, Equatable {
    var heads = 6
    var headDim = 16
    var layers = 4
    var dualAttentionLayers = [0, 1]
    /// Width of the "text" tokens (class embeddings) and of the pooled vector.
    var jointDim = 32
    var pooledDim = 32
    /// Text tokens per class prompt.
    var contextTokens = 2
    var seed: UInt64 = 7
}

struct PretrainSettings: Codable, Equatable {
    var steps = 4000
    var batch = 64
    var learningRate = 2e-3
    var warmup = 100
    var seed: UInt64 = 11
}

/// Writes and pretrains the study's base model.
enum BaseModel {
    /// The diffusers `config.json` of the base model.
    static func config(_ m: ModelSettings, world: WorldSettings) -> String {
        let hidden = m.heads * m.headDim
        return """
        {
          "_class_name": "SD3Transformer2DModel",
          "_diffusers_version": "0.42.1",
          "attention_head_dim": \(m.headDim),
          "caption_projection_dim": \(hidden),
          "dual_attention_layers": [\(m.dualAttentionLayers.map(String.init).joined(separator: ", "))],
          "in_channels": \(world.channels),
          "joint_attention_dim": \(m.jointDim),
          "num_attention_heads": \(m.heads),
          "num_layers": \(m.layers),
          "out_channels": \(world.channels),
          "patch_size": 2,
          "pooled_projection_dim": \(m.pooledDim),
          "pos_embed_max_size": \(world.side / 2),
          "qk_norm": "rms_norm",
          "sample_size": \(world.side)
        }

        """
    }

    /// diffusers' fixed 2-D sin-cos position table of SD3's patch embedding ([1, n², width] for a
    /// grid of n = pos_embed_max_size, base size sample_size / patch): the first half of each
    /// row embeds the column coordinate, the second the row coordinate, each as [sin, cos] of
    /// position·10000^(−i/(w/4)).
    static func positionTable(width: Int, grid n: Int, baseSize: Int) -> [Float] {
        let quarter = width / 4
        var table = [Float](repeating: 0, count: n * n * width)
        for row in 0..<n { for col in 0..<n {
            let t = row * n + col
            let coordinates = [Double(col), Double(row)].map { $0 / (Double(n) / Double(baseSize)) }
            for (half, position) in coordinates.enumerated() {
                for i in 0..<quarter {
                    let omega = 1 / pow(10000, Double(i) / Double(quarter))
                    table[t * width + half * 2 * quarter + i] = Float(sin(position * omega))
                    table[t * width + half * 2 * quarter + quarter + i] = Float(cos(position * omega))
                }
            }
        } }
        return table
    }

    /// Writes a freshly initialized model into `folder` (config.json +
    /// diffusion_pytorch_model.safetensors, float32): linear and conv weights U(±1/√fan_in) as
    /// torch initializes them, biases 0, norm scales 1, the sin-cos position table.
    static func writeInitial(_ m: ModelSettings, world: WorldSettings, folder: String) throws {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let configText = config(m, world: world)
        try Data(configText.utf8).write(to: URL(fileURLWithPath: folder + "/config.json"), options: .atomic)
        let architecture = try Architecture(diffusersConfig: JSONValue.parse(Array(configText.utf8)))
        let specs = SyntheticWriter.specs(architecture, layout: .diffusers, dtype: .f32)
        var random = SplitMix64(state: m.seed)
        let hidden = m.heads * m.headDim
        try SafeTensorsWriter.write(to: folder + "/diffusion_pytorch_model.safetensors", specs: specs,
                                    metadata: ["format": "pt", "flowguard.study": "initial base model"]) { sink in
            let info = sink.info
            let count = info.shape.reduce(1, *)
            var values = [Float](repeating: 0, count: count)
            if info.name == "pos_embed.pos_embed" {
                values = positionTable(width: hidden, grid: world.side / 2, baseSize: world.side / 2)
            } else if info.name.hasSuffix(".bias") {
                // zeros
            } else if info.shape.count == 1 {
                values = [Float](repeating: 1, count: count)
            } else {
                let fanIn = info.shape.dropFirst().reduce(1, *)
                let bound = 1 / Double(fanIn).squareRoot()
                for i in 0..<count { values[i] = Float((2 * random.uniform() - 1) * bound) }
            }
            _ = try sink.write(floats: values)
        }
    }

    /// The modules pretrained: every 2-D linear weight (the patch-embedding convolution stays a
    /// fixed random projection, which is injective at width ≥ 4·channels).
    static func pretrainedModules(_ weights: TransformerWeights) throws -> [(name: String, rows: Int, columns: Int)] {
        var out: [(String, Int, Int)] = []
        for name in weights.names.sorted() where name.hasSuffix(".weight") {
            let shape = try weights.shape(of: name)
            guard shape.count == 2 else { continue }
            out.append((String(name.dropLast(".weight".count)), shape[0], shape[1]))
        }
        return out
    }

    /// Pretrains the model in `initial` on the world with flow matching (full-rank LoRA on every
    /// linear, scale 1, merged at the end) and writes the merged checkpoint into `output`.
    /// Returns the loss curve (step, mean loss over the last 50 steps).
    static func pretrain(world: ToyWorld, model settings: ModelSettings, pretrain p: PretrainSettings,
                         initial: String, prompts: TrainingPrompts, output: String, threads: Int,
                         log: (String) -> Void) throws -> [(step: Int, loss: Double)] {
        let weights = try TransformerWeights(path: initial)
        let model = try TransformerModel.load(weights)
        let modules = try pretrainedModules(weights)
        var set = AdapterSet()
        for (i, module) in modules.enumerated() {
            let rank = min(module.rows, module.columns)
            let one = try AdapterInitialization.make(weights, modules: [module.name], rank: rank, alpha: Double(rank),
                                                     seed: p.seed &+ UInt64(i))
            set.modules[module.name] = one.modules[module.name]
        }
        let parameters = LoRAParameters(set, trainable: true)
        let adam = AdamWConfiguration(learningRate: p.learningRate, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weightDecay: 0)
        let trainer = try FlowMatchingTrainer(model: model, prompts: prompts, parameters: parameters, latentSize: world.settings.side,
                                              optimizer: adam, maxGradNorm: 1, threads: threads)
        var noise = GaussianGenerator(seed: p.seed)
        var labels = SplitMix64(state: p.seed ^ 0x6C61_6265_6C73)
        var curve: [(Int, Double)] = []
        var window: [Double] = []
        let started = Date()
        for step in 1...p.steps {
            // Linear warm-up, then cosine decay to a tenth.
            let progress = Double(max(0, step - p.warmup)) / Double(max(1, p.steps - p.warmup))
            let lr = step <= p.warmup ? p.learningRate * Double(step) / Double(p.warmup)
                : p.learningRate * (0.1 + 0.9 * 0.5 * (1 + cos(Double.pi * progress)))
            trainer.optimizer.configuration.learningRate = lr
            let ids = (0..<p.batch).map { _ in Int(labels.next() % UInt64(world.settings.classes)) }
            var data: [Float] = []
            data.reserveCapacity(p.batch * world.dimension)
            for c in ids { data += world.sample(label: c, count: 1, noise: &noise) }
            let shape = [p.batch] + trainer.sampleShape
            let eps = noise.tensor(shape: shape)
            let sigmas = (0..<p.batch).map { _ in 1 / (1 + exp(-noise.next())) }   // logit-normal(0, 1), as SD3
            let loss = try trainer.step(data: Tensor(shape: shape, scalars: data), promptIDs: ids, noise: eps, sigmas: sigmas)
            window.append(loss)
            if step % 50 == 0 || step == p.steps {
                let mean = window.reduce(0, +) / Double(window.count)
                window.removeAll()
                curve.append((step, mean))
                let elapsed = Date().timeIntervalSince(started)
                log(String(format: "pretrain %d/%d  loss %.4f  lr %.2e  %.0f s", step, p.steps, mean, lr, elapsed))
            }
        }
        // Merge W₀ + B·A (scale 1: α = r) with the product's own streamed merge.
        let values = parameters.variables.map(\.value)
        let ordered = parameters.orderedBranches.map(\.module)
        let loraModules = ordered.enumerated().map { i, name in
            let down = values[2 * i], up = values[2 * i + 1]
            return LoRAModule(name: name, down: Matrix(shape: down.shape, values: down.scalars),
                              up: Matrix(shape: up.shape, values: up.scalars), alpha: Float(down.shape[0]))
        }
        let adapter = LoRAAdapter(modules: loraModules, layout: .diffusers, format: .diffusers, family: .sd3)
        try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
        try LoRAMerge.merge(base: TensorCollection(path: initial + "/diffusion_pytorch_model.safetensors"), adapter: adapter,
                            output: output + "/diffusion_pytorch_model.safetensors")
        try FileManager.default.removeItemIfPresent(output + "/config.json")
        try FileManager.default.copyItem(atPath: initial + "/config.json", toPath: output + "/config.json")
        return curve
    }
}

extension FileManager {
    func removeItemIfPresent(_ path: String) throws {
        if fileExists(atPath: path) { try removeItem(atPath: path) }
    }
}

import Checkpoints
import LoRA
import TensorRuntime
import Transformers

/// Creates a fresh LoRA adapter for a transformer the way PEFT does (`init_lora_weights=True`):
/// A ~ kaiming-uniform(a = √5), i.e. U(−1/√in, 1/√in), B = 0, so the adapted model starts equal to
/// the base model. Modules are every weight `….<attn*>.<target>.weight` of the model.
public enum AdapterInitialization {
    /// The diffusers module names adapted for `targets` (e.g. `to_out.0`) in every attention
    /// (`attn`, `attn2`, …) of `weights`, sorted.
    public static func targetModules(_ weights: TransformerWeights, targets: [String]) -> [String] {
        var modules: [String] = []
        for name in weights.names where name.hasSuffix(".weight") {
            let module = String(name.dropLast(".weight".count))
            for target in targets where module.hasSuffix("." + target) {
                let head = module.dropLast(target.count + 1)
                let last = head.split(separator: ".").last.map(String.init) ?? ""
                if last.hasPrefix("attn") { modules.append(module); break }
            }
        }
        return modules.sorted()
    }

    /// The target names the attention linears of `weights` answer to (`to_q`, `to_out.0`,
    /// `add_k_proj`, …), sorted.
    public static func availableTargets(_ weights: TransformerWeights) -> [String] {
        var targets = Set<String>()
        for name in weights.names where name.hasSuffix(".weight") && (try? weights.shape(of: name))?.count == 2 {
            let parts = name.dropLast(".weight".count).split(separator: ".").map(String.init)
            guard let i = parts.lastIndex(where: { $0.hasPrefix("attn") }), i + 1 < parts.count else { continue }
            targets.insert(parts[(i + 1)...].joined(separator: "."))
        }
        return targets.sorted()
    }

    /// Throws `TrainingError.unknownTarget` for the first of `targets` that matches no attention
    /// module of `weights`, naming it and the targets there are.
    public static func checkTargets(_ weights: TransformerWeights, targets: [String]) throws(TrainingError) {
        for target in targets where targetModules(weights, targets: [target]).isEmpty {
            throw .unknownTarget(target: target, model: weights.path, known: availableTargets(weights))
        }
    }

    /// A fresh adapter set (scale α/r) for `modules` of `weights`, drawn from `seed`.
    public static func make(_ weights: TransformerWeights, modules: [String], rank: Int, alpha: Double,
                            seed: UInt64) throws(TrainingError) -> AdapterSet {
        var set = AdapterSet()
        var random = SplitMix64(state: seed ^ 0x4C6F_5241_496E_6974)   // "LoRAInit"
        for module in modules {
            let shape: [Int]
            do { shape = try weights.shape(of: module + ".weight") } catch {
                throw .model(path: weights.path, reason: "\(error)")
            }
            let out = shape[0], inFeatures = shape.dropFirst().reduce(1, *)
            let bound = 1 / Double(inFeatures).squareRoot()
            var down = [Float](repeating: 0, count: rank * inFeatures)
            for i in down.indices { down[i] = Float((2 * random.uniform() - 1) * bound) }
            set.modules[module] = [AdapterSet.Branch(down: Tensor(shape: [rank, inFeatures], scalars: down),
                                                     up: Tensor(repeating: 0, shape: [out, rank]),
                                                     scale: Float(alpha / Double(rank)))]
        }
        return set
    }

    /// The trained factors as a diffusers-named `LoRAAdapter` (α stored so that α/r is the scale).
    /// `values` holds down, up per module in `orderedBranches` order (as `LoRAParameters.variables`).
    public static func adapter(modules: [String], values: [Tensor], alpha: Double, family: ModelFamily) -> LoRAAdapter {
        precondition(values.count == 2 * modules.count, "adapter: \(modules.count) modules but \(values.count) factors")
        let loraModules = modules.enumerated().map { i, name in
            let down = values[2 * i], up = values[2 * i + 1]
            return LoRAModule(name: name, down: Matrix(shape: down.shape, values: down.scalars),
                              up: Matrix(shape: up.shape, values: up.scalars), alpha: Float(alpha))
        }
        return LoRAAdapter(modules: loraModules, layout: .diffusers, format: .diffusers, family: family)
    }
}

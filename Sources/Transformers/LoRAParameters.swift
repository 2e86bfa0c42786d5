import TensorRuntime

/// LoRA factors as graph variables, by diffusers module name (e.g.
/// `transformer_blocks.0.attn.to_q`): trainable parameters for fine-tuning, or constants for
/// inference. Several adapters on one module give several branches. A class: the variables keep
/// their identity (and accumulated gradients) across graphs and training steps. A factor the
/// output does not depend on (`add_q_proj` of the last SD3 block, whose text queries are skipped
/// because diffusers discards their outputs) keeps a nil gradient, which means zero.
public final class LoRAParameters {
    /// Branches by diffusers module name; each linear adds the branches under its name.
    public private(set) var modules: [String: [LoRABranch]]

    /// Variables for every branch of `set`. With `trainable` the factors receive gradients.
    /// Factors of convolution modules (`[r, c, p, p]`) are flattened to `[r, c·p·p]`.
    public init(_ set: AdapterSet, trainable: Bool) {
        var modules: [String: [LoRABranch]] = [:]
        for (name, branches) in set.modules {
            modules[name] = branches.map { branch in
                let down = Self.matrix(branch.down)
                let up = Self.matrix(branch.up)
                return LoRABranch(down: trainable ? Variable(parameter: down) : Variable(constant: down),
                                  up: trainable ? Variable(parameter: up) : Variable(constant: up),
                                  scale: branch.scale)
            }
        }
        self.modules = modules
    }

    /// The branches of every set of `parts` together, sharing their variables: a module's
    /// branches are those of the first part, then the second's, and so on (a forward adds them
    /// in that order). Frozen base branches beside trained ones, for example.
    public init(combining parts: [LoRAParameters]) {
        var modules: [String: [LoRABranch]] = [:]
        for part in parts {
            for (name, branches) in part.modules { modules[name, default: []] += branches }
        }
        self.modules = modules
    }

    /// Every (module, branch index, branch), modules in name order: a stable order for optimizers
    /// and checkpoints.
    public var orderedBranches: [(module: String, index: Int, branch: LoRABranch)] {
        modules.keys.sorted().flatMap { name in
            modules[name]!.enumerated().map { (name, $0.offset, $0.element) }
        }
    }

    /// Every factor variable (down then up of each branch, in `orderedBranches` order).
    public var variables: [Variable] {
        orderedBranches.flatMap { [$0.branch.down, $0.branch.up] }
    }

    /// Clears the accumulated gradient of every factor.
    public func zeroGradients() {
        for v in variables { v.gradient = nil }
    }

    /// A tensor seen as `[rows, rest]` (1×1 convolution and conv-kernel factors become matrices).
    static func matrix(_ t: Tensor) -> Tensor {
        guard t.rank != 2 else { return t }
        let rows = t.shape.first ?? 1
        return t.reshaped([rows, rows == 0 ? 0 : t.count / rows])
    }
}

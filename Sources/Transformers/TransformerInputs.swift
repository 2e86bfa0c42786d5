import TensorRuntime

/// Checks forward inputs, reporting the first problem as `TransformerError.badInput` naming the
/// input file and the input.
struct InputChecker {
    let inputs: [String: Tensor]
    let source: String

    /// The input `name`, or an error saying it is missing.
    func require(_ name: String) throws(TransformerError) -> Tensor {
        guard let t = inputs[name] else { throw .badInput(path: source, name: name, reason: "missing") }
        return t
    }

    /// Throws `reason` for `name` unless `condition` holds.
    func check(_ condition: Bool, _ name: String, _ reason: @autoclosure () -> String) throws(TransformerError) {
        if !condition { throw .badInput(path: source, name: name, reason: reason()) }
    }

    /// Requires `name` to have `rank` dimensions (`described` explains them).
    func rank(_ t: Tensor, _ name: String, _ rank: Int, _ described: String) throws(TransformerError) {
        try check(t.rank == rank, name, "has shape \(t.shape), expected \(described)")
    }

    /// Requires every value of every present input in `names` to be finite.
    func finite(_ names: [String]) throws(TransformerError) {
        for name in names {
            guard let t = inputs[name] else { continue }
            if let i = t.scalars.firstIndex(where: { !$0.isFinite }) {
                let bad = t.scalars.reduce(0) { $0 + ($1.isFinite ? 0 : 1) }
                throw .badInput(path: source, name: name,
                                reason: "holds \(bad) non-finite value\(bad == 1 ? "" : "s") (first at flat index \(i): \(t.scalars[i]))")
            }
        }
    }

    /// A per-sample scalar input (`timestep`, `guidance`): shape `[batch]` or `[1]`.
    func perSample(_ name: String, batch: Int) throws(TransformerError) -> Tensor {
        let t = try require(name)
        try check(t.rank == 1 && (t.shape[0] == batch || t.shape[0] == 1), name,
                  "has shape \(t.shape), expected [\(batch)] (one value per sample) or [1]")
        return t
    }
}

/// A per-sample scalar input's values for `batch` samples (a single value is repeated).
func perSampleValues(_ t: Tensor, batch: Int) -> [Float] {
    t.count == batch ? t.scalars : Array(repeating: t.scalars.first ?? 0, count: batch)
}

import BLAS
import SystemSupport

/// A node of a computation: its value and, after `Graph.backward`, its gradient. A class because
/// identity matters: the graph records which variables fed which operation. Dropping the last
/// reference to an intermediate frees its memory when the graph does not record.
public final class Variable {
    /// The computed value (an optimizer may overwrite a parameter's value between graphs).
    public var value: Tensor
    /// Whether gradients flow to (or through) this variable.
    public let requiresGradient: Bool
    /// ∂loss/∂value accumulated by `Graph.backward`, if this variable requires a gradient
    /// (set it to nil to start a new accumulation).
    public var gradient: Tensor?
    /// True for the result of an operation (as opposed to a leaf made by `constant`/`parameter`):
    /// its gradient is released once it has been propagated to the operation's inputs.
    var isIntermediate = false

    /// The value's shape.
    public var shape: [Int] { value.shape }

    init(value: Tensor, requiresGradient: Bool) {
        self.value = value
        self.requiresGradient = requiresGradient
    }

    /// A trainable leaf, usable in any graph (e.g. LoRA factors kept across training steps).
    public convenience init(parameter tensor: Tensor) { self.init(value: tensor, requiresGradient: true) }
    /// A leaf that receives no gradient.
    public convenience init(constant tensor: Tensor) { self.init(value: tensor, requiresGradient: false) }
}

/// One low-rank branch of a LoRA-wrapped linear: y += scale · (x·Aᵀ)·Bᵀ with A `[rank, in]`
/// and B `[out, rank]`. A and B are variables so they can be trained.
public struct LoRABranch {
    /// The down projection A, shape `[rank, in]`.
    public var down: Variable
    /// The up projection B, shape `[out, rank]`.
    public var up: Variable
    /// The multiplier (α/r times any user scale).
    public var scale: Float

    /// A branch computing `scale · (x·downᵀ)·upᵀ`.
    public init(down: Variable, up: Variable, scale: Float) {
        self.down = down
        self.up = up
        self.scale = scale
    }
}

/// Builds and differentiates computations on Float32 tensors. Every operation computes its value
/// immediately (eagerly); when `recordsGradients` is true it also records what its backward pass
/// needs, and `backward(from:)` propagates gradients to every variable that requires one.
/// Work inside an operation is spread over `threads` threads (OpenBLAS included).
/// Not thread-safe: one graph is used from one thread at a time.
///
/// The operations live in `Graph+*.swift`, one file per family; the numeric kernels they share
/// are in `Kernels.swift`.
public final class Graph {
    /// Threads used by each operation.
    public let threads: Int
    /// Whether operations record their backward pass.
    public let recordsGradients: Bool

    /// One recorded operation: the variable it produced and the closure that, given
    /// ∂loss/∂output, accumulates the gradients of the operation's inputs.
    struct TapeEntry {
        let output: Variable
        let backward: (Tensor) -> Void
    }

    /// Recorded operations in execution order (empty when `recordsGradients` is false).
    var tape: [TapeEntry] = []
    /// Reusable scratch memory (weight panels, attention scores), shared with recorded closures.
    let workspace = Workspace()

    /// A graph running each operation on `threads` threads. OpenBLAS's thread count is
    /// process-wide: creating a graph sets it (to `threads`), so the most recently created graph
    /// decides how many threads every OpenBLAS call in the process uses. Creating a graph also
    /// tells the C allocator to keep freed activation buffers for reuse (`MemoryAdvice.retainFreedBuffers`).
    public init(threads: Int = 1, recordsGradients: Bool = true) {
        self.threads = max(1, threads)
        self.recordsGradients = recordsGradients
        BLAS.setThreadCount(self.threads)
        MemoryAdvice.retainFreedBuffers()
    }

    // MARK: leaves

    /// A value that receives no gradient.
    public func constant(_ tensor: Tensor) -> Variable { Variable(constant: tensor) }
    /// A leaf that receives a gradient in `backward` (a trainable parameter or an input whose
    /// gradient is wanted).
    public func parameter(_ tensor: Tensor) -> Variable { Variable(parameter: tensor) }

    // MARK: backward

    /// Propagates gradients from `output`: with `seed == nil` the output must hold one value and
    /// its gradient is 1; otherwise `seed` (same shape) is ∂loss/∂output. Gradients accumulate
    /// into `Variable.gradient` of every variable that requires one. Afterwards the recorded
    /// operations are released. (Results of operations hold their gradient only while it is being
    /// propagated; leaves — `parameter`s — keep theirs.)
    public func backward(from output: Variable, seed: Tensor? = nil) {
        defer { tape.removeAll() }
        let start: Tensor
        if let seed {
            precondition(seed.count == output.value.count,
                         "backward: seed shape \(seed.shape) does not match output shape \(output.shape)")
            start = seed.reshaped(output.shape)
        } else {
            precondition(output.value.count == 1,
                         "backward: output of shape \(output.shape) is not a single value; pass a seed")
            start = Tensor(shape: output.shape, scalars: [1])
        }
        guard output.requiresGradient else { return }
        accumulate(output, start)
        // Walk the tape backwards, releasing each entry (and what it saved) once it has run.
        while let entry = tape.popLast() {
            guard let gradient = entry.output.gradient else { continue }
            if entry.output.isIntermediate { entry.output.gradient = nil }
            entry.backward(gradient)
        }
    }

    // MARK: recording helpers

    /// Whether an operation on `inputs` must record a backward pass.
    func needsRecord(_ inputs: Variable...) -> Bool {
        recordsGradients && inputs.contains { $0.requiresGradient }
    }

    /// Wraps an operation's result; records `backward` when `record` is true.
    func output(_ value: Tensor, record: Bool, backward: @escaping (Tensor) -> Void) -> Variable {
        let result = Variable(value: value, requiresGradient: record)
        result.isIntermediate = true
        if record { tape.append(TapeEntry(output: result, backward: backward)) }
        return result
    }

    /// Adds `gradient` into `variable.gradient` (which takes it as is when empty).
    func accumulate(_ variable: Variable, _ gradient: Tensor) {
        guard variable.requiresGradient else { return }
        precondition(gradient.count == variable.value.count,
                     "backward: gradient of \(gradient.count) values for a variable of shape \(variable.shape)")
        if variable.gradient == nil {
            variable.gradient = gradient.shape == variable.shape ? gradient : gradient.reshaped(variable.shape)
            return
        }
        let threads = self.threads
        gradient.scalars.withUnsafeBufferPointer { source in
            variable.gradient!.scalars.withUnsafeMutableBufferPointer { target in
                Kernels.addInPlace(target.baseAddress!, source.baseAddress!, count: source.count, threads: threads)
            }
        }
    }
}

import TensorRuntime

/// A frozen linear layer addressed by its diffusers module name, with the LoRA branches of that
/// name added when adapters are given.
struct Linear: Sendable {
    /// diffusers module name (weight name without `.weight`): the key of its LoRA branches.
    let name: String
    let weight: WeightMatrix
    let bias: Tensor?

    /// Fetches `name.weight` (and `name.bias` when `bias`), checking the shape `[outputs, inputs]`
    /// when those are given.
    init(_ weights: TransformerWeights, _ name: String, inputs: Int? = nil, outputs: Int? = nil,
         bias: Bool = true) throws(TransformerError) {
        self.name = name
        let matrix = try weights.matrix(name + ".weight")
        if (inputs.map { $0 != matrix.columns } ?? false) || (outputs.map { $0 != matrix.rows } ?? false) {
            throw .weightShape(path: weights.path, name: name + ".weight",
                               expected: [outputs ?? matrix.rows, inputs ?? matrix.columns],
                               found: try weights.shape(of: name + ".weight"))
        }
        weight = matrix
        if bias {
            let b = try weights.tensor(name + ".bias")
            guard b.count == matrix.rows else {
                throw .weightShape(path: weights.path, name: name + ".bias", expected: [matrix.rows], found: b.shape)
            }
            self.bias = b.reshaped([matrix.rows])
        } else {
            self.bias = nil
        }
    }

    var inputs: Int { weight.columns }
    var outputs: Int { weight.rows }

    func callAsFunction(_ x: Variable, _ adapters: LoRAParameters?, _ graph: Graph) -> Variable {
        graph.linear(x, weight: weight, bias: bias, lora: adapters?.modules[name] ?? [])
    }
}

/// A frozen 1-d parameter (norm scale) fetched and checked against its expected length.
func vector(_ weights: TransformerWeights, _ name: String, count: Int) throws(TransformerError) -> Tensor {
    let t = try weights.tensor(name)
    guard t.count == count, t.rank == 1 else {
        throw .weightShape(path: weights.path, name: name, expected: [count], found: t.shape)
    }
    return t
}

/// diffusers' `FeedForward(activation_fn="gelu-approximate")`: `net.0.proj` → GELU(tanh) → `net.2`.
struct FeedForward: Sendable {
    let up: Linear
    let down: Linear

    init(_ weights: TransformerWeights, _ prefix: String, dim: Int) throws(TransformerError) {
        up = try Linear(weights, prefix + ".net.0.proj", inputs: dim)
        down = try Linear(weights, prefix + ".net.2", inputs: up.outputs, outputs: dim)
    }

    func callAsFunction(_ x: Variable, _ adapters: LoRAParameters?, _ graph: Graph) -> Variable {
        down(graph.gelu(up(x, adapters, graph)), adapters, graph)
    }
}

/// An adaLN modulation projection (`AdaLayerNormZero`, `SD35AdaLayerNormZeroX`,
/// `AdaLayerNormZeroSingle`, `AdaLayerNormContinuous`): SiLU(conditioning) → linear → `chunks`
/// pieces of the model width, in diffusers' chunk order.
struct Modulation: Sendable {
    let linear: Linear
    let chunks: Int
    let dim: Int

    init(_ weights: TransformerWeights, _ name: String, dim: Int, chunks: Int) throws(TransformerError) {
        linear = try Linear(weights, name, inputs: dim, outputs: dim * chunks)
        self.chunks = chunks
        self.dim = dim
    }

    /// The chunks `[B, dim]` of `linear(silu(conditioning))`.
    func callAsFunction(_ conditioning: Variable, _ adapters: LoRAParameters?, _ graph: Graph) -> [Variable] {
        let projected = linear(graph.silu(conditioning), adapters, graph)
        return graph.split(projected, axis: 1, sizes: Array(repeating: dim, count: chunks))
    }
}

/// One attention module: q/k/v projections of the main stream, optional q/k RMS norms (per head,
/// eps 1e-6, with weight), optional context ("added") projections and output projections.
struct AttentionLayer: Sendable {
    let heads: Int
    let headDim: Int
    let toQ: Linear, toK: Linear, toV: Linear
    let normQ: Tensor?, normK: Tensor?
    /// Present when the module attends jointly over a second (text) stream.
    let addQ: Linear?, addK: Linear?, addV: Linear?
    let normAddedQ: Tensor?, normAddedK: Tensor?
    /// `to_out.0`; nil for FLUX single blocks (pre-only).
    let toOut: Linear?
    /// `to_add_out`; nil when the context output is not used (pre-only context).
    let toAddOut: Linear?

    static let epsilon: Float = 1e-6

    /// Fetches the module `prefix` (e.g. `transformer_blocks.3.attn`).
    init(_ weights: TransformerWeights, _ prefix: String, dim: Int, heads: Int, headDim: Int, qkNorm: Bool,
         joint: Bool, output: Bool, contextOutput: Bool) throws(TransformerError) {
        self.heads = heads
        self.headDim = headDim
        let inner = heads * headDim
        toQ = try Linear(weights, prefix + ".to_q", inputs: dim, outputs: inner)
        toK = try Linear(weights, prefix + ".to_k", inputs: dim, outputs: inner)
        toV = try Linear(weights, prefix + ".to_v", inputs: dim, outputs: inner)
        normQ = qkNorm ? try vector(weights, prefix + ".norm_q.weight", count: headDim) : nil
        normK = qkNorm ? try vector(weights, prefix + ".norm_k.weight", count: headDim) : nil
        if joint {
            addQ = try Linear(weights, prefix + ".add_q_proj", inputs: dim, outputs: inner)
            addK = try Linear(weights, prefix + ".add_k_proj", inputs: dim, outputs: inner)
            addV = try Linear(weights, prefix + ".add_v_proj", inputs: dim, outputs: inner)
            normAddedQ = qkNorm ? try vector(weights, prefix + ".norm_added_q.weight", count: headDim) : nil
            normAddedK = qkNorm ? try vector(weights, prefix + ".norm_added_k.weight", count: headDim) : nil
            toAddOut = contextOutput ? try Linear(weights, prefix + ".to_add_out", inputs: inner, outputs: dim) : nil
        } else {
            (addQ, addK, addV, normAddedQ, normAddedK, toAddOut) = (nil, nil, nil, nil, nil, nil)
        }
        toOut = output ? try Linear(weights, prefix + ".to_out.0", inputs: inner, outputs: dim) : nil
    }

    /// `[B, N, H·Dh]` → `[B, N, H, Dh]`, RMS-normalised per head when `weight` is given.
    private func heads(_ x: Variable, norm weight: Tensor?, _ graph: Graph) -> Variable {
        let shape = x.shape
        let split = graph.reshape(x, [shape[0], shape[1], heads, headDim])
        guard let weight else { return split }
        return graph.rmsNorm(split, weight: weight, epsilon: Self.epsilon)
    }

    /// Projections of one stream to per-head q, k, v.
    private func project(_ x: Variable, q: Linear, k: Linear, v: Linear, normQ: Tensor?, normK: Tensor?,
                         queries: Bool, _ adapters: LoRAParameters?, _ graph: Graph) -> (q: Variable?, k: Variable, v: Variable) {
        let query = queries ? heads(q(x, adapters, graph), norm: normQ, graph) : nil
        return (query, heads(k(x, adapters, graph), norm: normK, graph), heads(v(x, adapters, graph), norm: nil, graph))
    }

    /// Attention over the main stream `x` `[B, N, D]` and, for joint modules, the context `c`
    /// `[B, T, D]`, tokens concatenated in the order given by `contextFirst` (FLUX: [text, image];
    /// SD3: [image, text]). `rope` (cos, sin `[T+N or N, Dh/2]`, in token order) rotates q and k.
    /// `contextQueries: false` skips the context queries (their outputs would be discarded).
    /// Returns the main-stream output (through `to_out.0` when present) and the context output
    /// (through `to_add_out` when present; nil when context queries were skipped or there is no context).
    func callAsFunction(_ x: Variable, context c: Variable?, contextFirst: Bool, rope: (cos: Tensor, sin: Tensor)?,
                        contextQueries: Bool = true, _ adapters: LoRAParameters?, _ graph: Graph) -> (main: Variable, context: Variable?) {
        let n = x.shape[1]
        let main = project(x, q: toQ, k: toK, v: toV, normQ: normQ, normK: normK, queries: true, adapters, graph)
        var q = main.q!, k = main.k, v = main.v
        var textTokens = 0
        var withContextQueries = false
        if let c, let addQ, let addK, let addV {
            textTokens = c.shape[1]
            withContextQueries = contextQueries
            let ctx = project(c, q: addQ, k: addK, v: addV, normQ: normAddedQ, normK: normAddedK,
                              queries: contextQueries, adapters, graph)
            func join(_ a: Variable, _ b: Variable) -> Variable {
                graph.concat(contextFirst ? [b, a] : [a, b], axis: 1)
            }
            if let cq = ctx.q { q = join(q, cq) }
            k = join(k, ctx.k)
            v = join(v, ctx.v)
        }
        if let rope {
            // Context queries are always kept with RoPE (FLUX): q and k share the table.
            precondition(textTokens == 0 || withContextQueries, "RoPE needs the context queries")
            q = graph.rope(q, heads: heads, cos: rope.cos, sin: rope.sin)
            k = graph.rope(k, heads: heads, cos: rope.cos, sin: rope.sin)
        }
        var out = graph.attention(query: q, key: k, value: v, heads: heads)
        if out.shape.count != 3 { out = graph.reshape(out, [out.shape[0], out.shape[1], heads * headDim]) }
        var contextOut: Variable?
        if withContextQueries {
            let parts = graph.split(out, axis: 1, sizes: contextFirst ? [textTokens, n] : [n, textTokens])
            out = contextFirst ? parts[1] : parts[0]
            contextOut = contextFirst ? parts[0] : parts[1]
            if let toAddOut, let co = contextOut { contextOut = toAddOut(co, adapters, graph) }
        }
        if let toOut { out = toOut(out, adapters, graph) }
        return (out, contextOut)
    }
}

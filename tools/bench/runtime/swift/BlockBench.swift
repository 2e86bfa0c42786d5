import Checkpoints
import SafeTensors
import TensorRuntime
import Transformers

/// Parts (b) and (d): one SD3.5-Medium joint block with dual attention, on the weights, LoRA,
/// inputs and PyTorch outputs that `reference.py block` wrote to `dir`. Checks outputs and LoRA
/// gradients against PyTorch, then times forward (no LoRA, LoRA) and forward+backward (LoRA
/// factors trainable, loss = Σ out·w), and the in-process sgemm rate on the dominant shape.
func blockBench(dir: String, threads: Int, warmup: Int, reps: Int) throws -> [String: Any] {
    log("reading \(dir)")
    let weightFile = try SafeTensorsFile(path: dir + "/weights.safetensors")
    var tensors: [String: Tensor] = [:]
    for info in weightFile.tensors { tensors[info.name] = Tensor(shape: info.shape, scalars: try weightFile.floats(of: info)) }
    let dim = tensors["transformer_blocks.0.attn.to_q.weight"]?.shape[0] ?? 1536
    let headDim = tensors["transformer_blocks.0.attn.norm_q.weight"]?.shape[0] ?? 64
    // Two layers so that block 0 is a full joint block (the last block is context-pre-only);
    // only block 0's weights are present and only block 0 is built.
    let config = SD3Config(hiddenSize: dim, numLayers: 2, attentionHeadDim: headDim, dualAttentionLayers: [0], qkNorm: true)
    let weights = try TransformerWeights(tensors: tensors, architecture: try Architecture(config: .sd3(config)))
    tensors = [:]
    let block = try SD3JointBlock(weights: weights, index: 0)
    guard block.usesDualAttention, !block.contextPreOnly else { throw BenchError("block 0 is not a full dual-attention block") }

    let loraFile = try SafeTensorsFile(path: dir + "/lora.safetensors")
    guard let rank = Float(loraFile.header.metadataValue("rank") ?? ""), let alpha = Float(loraFile.header.metadataValue("alpha") ?? "") else {
        throw BenchError("\(dir)/lora.safetensors has no rank/alpha metadata")
    }
    var adapters = AdapterSet()
    for info in loraFile.tensors where info.name.hasSuffix(".lora_A.weight") {
        let module = String(info.name.dropLast(".lora_A.weight".count))
        adapters.modules[module] = [AdapterSet.Branch(down: try readTensor(loraFile, info.name),
                                                      up: try readTensor(loraFile, module + ".lora_B.weight"),
                                                      scale: alpha / rank)]
    }
    let inputFile = try SafeTensorsFile(path: dir + "/inputs.safetensors")
    let hidden = try readTensor(inputFile, "hidden"), context = try readTensor(inputFile, "context")
    let temb = try readTensor(inputFile, "temb")
    let wHidden = try readTensor(inputFile, "w_hidden"), wContext = try readTensor(inputFile, "w_context")
    let reference = try SafeTensorsFile(path: dir + "/reference.safetensors")

    // Correctness: one forward+backward against PyTorch's outputs and LoRA gradients.
    let trainable = LoRAParameters(adapters, trainable: true)
    let frozen = LoRAParameters(adapters, trainable: false)
    func forwardBackward() -> (hidden: Tensor, context: Tensor, loss: Float) {
        trainable.zeroGradients()
        let graph = Graph(threads: threads, recordsGradients: true)
        let out = block.forward(hidden: graph.constant(hidden), context: graph.constant(context),
                                conditioning: graph.constant(temb), adapters: trainable, in: graph)
        let loss = graph.add(graph.weightedSum(out.hidden, weights: wHidden), graph.weightedSum(out.context!, weights: wContext))
        graph.backward(from: loss)
        return (out.hidden.value, out.context!.value, loss.value.scalars[0])
    }
    log("checking against PyTorch")
    let checked = forwardBackward()
    var check: [String: Any] = [
        "out_hidden_rel_l2": relativeL2(checked.hidden.scalars, try reference.floats(of: "out_hidden")),
        "out_context_rel_l2": relativeL2(checked.context.scalars, try reference.floats(of: "out_context")),
        "loss": Double(checked.loss), "loss_reference": Double(try reference.floats(of: "loss")[0]),
    ]
    var worstGradient = 0.0, gradients = 0
    for (module, _, branch) in trainable.orderedBranches {
        for (suffix, variable) in [("lora_A", branch.down), ("lora_B", branch.up)] {
            guard let g = variable.gradient else { throw BenchError("no gradient for \(module).\(suffix)") }
            worstGradient = max(worstGradient, relativeL2(g.scalars, try reference.floats(of: "grad.\(module).\(suffix).weight")))
            gradients += 1
        }
    }
    check["lora_gradients"] = gradients
    check["lora_grad_worst_rel_l2"] = worstGradient
    log("check: \(check)")

    func forward(_ lora: LoRAParameters?) {
        let graph = Graph(threads: threads, recordsGradients: false)
        _ = block.forward(hidden: graph.constant(hidden), context: graph.constant(context),
                          conditioning: graph.constant(temb), adapters: lora, in: graph)
    }
    let plain = timings("block forward (no LoRA)", warmup: warmup, reps: reps) { forward(nil) }
    let withLoRA = timings("block forward (LoRA)", warmup: warmup, reps: reps) { forward(frozen) }
    let training = timings("block forward+backward (LoRA)", warmup: warmup, reps: reps) { _ = forwardBackward() }
    // The anchor of part (d): the raw sgemm rate on the block's dominant shape, in this process.
    let rate = sgemmRate(m: hidden.shape[1], n: 4 * dim, k: dim, warmup: warmup, reps: reps)
    return ["job": "block", "threads": threads, "lora_modules": adapters.modules.count, "check": check,
            "image_tokens": hidden.shape[1], "text_tokens": context.shape[1], "dim": dim, "head_dim": headDim,
            "forward_plain": plain, "forward": withLoRA, "forward_backward": training, "sgemm": rate,
            "peak_rss_bytes": peakRSSBytes()]
}

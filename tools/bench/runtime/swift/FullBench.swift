import TensorRuntime
import Transformers
import SafeTensors

/// Part (c): the whole SD3.5-Medium transformer from a checkpoint file: load time (open, map,
/// build the model), forward time at the inputs `reference.py full` wrote to `io`, the output
/// compared with diffusers', and the process's peak RSS.
func fullBench(checkpoint: String, io: String, threads: Int, warmup: Int, reps: Int) throws -> [String: Any] {
    let ioFile = try SafeTensorsFile(path: io)
    let start = now()
    let weights = try TransformerWeights(path: checkpoint)
    let model = try TransformerModel.load(weights)
    let loadSeconds = now() - start
    let rssAfterLoad = peakRSSBytes()
    log("loaded \(weights.architecture.name) (\(weights.sourceLayout)) in \(format(loadSeconds)) s")
    var inputs: [String: Tensor] = [:]
    for name in model.inputNames { inputs[name] = try readTensor(ioFile, name) }
    try model.validate(inputs, source: io)
    var output = Tensor(scalar: 0)
    func forward() {
        let graph = Graph(threads: threads, recordsGradients: false)
        var variables: [String: Variable] = [:]
        for (name, t) in inputs { variables[name] = graph.constant(t) }
        output = model.forward(variables, adapters: nil, in: graph).value
    }
    // The first forward touches every mapped weight page: reported on its own.
    let first = timings("full forward (first)", warmup: 0, reps: 1) { forward() }
    let steady = timings("full forward", warmup: max(0, warmup - 1), reps: reps) { forward() }
    let reference = try ioFile.floats(of: "out_sample")
    return ["job": "full", "threads": threads, "architecture": weights.architecture.name,
            "layout": "\(weights.sourceLayout)", "load_s": loadSeconds, "first_forward": first, "forward": steady,
            "output_rel_l2": relativeL2(output.scalars, reference), "output_shape": output.shape,
            "peak_rss_after_load_bytes": rssAfterLoad, "peak_rss_bytes": peakRSSBytes()]
}

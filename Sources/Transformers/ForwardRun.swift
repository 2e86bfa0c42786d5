import Foundation
import SafeTensors
import SystemSupport
import TensorRuntime

/// One forward pass of a transformer from files to a file: what `flowguard run` does. Inputs are
/// named and scaled exactly as diffusers' forward arguments; the output is written as the tensor
/// `output` (float32) of a new safetensors file, atomically.
public struct ForwardRun: Sendable {
    /// An adapter to apply, with the user's multiplier on top of its own α/r.
    public typealias Adapter = AdapterReference

    /// The checkpoint: a file, shard index or folder, either layout, any float dtype.
    public var modelPath: String
    /// A diffusers `config.json` overriding what the weights determine.
    public var configPath: String?
    /// The safetensors file holding the forward inputs (other tensors in it are ignored).
    public var inputsPath: String
    /// Where the output file is written.
    public var outputPath: String
    /// Adapters applied together, each with its own scale.
    public var adapters: [Adapter]
    /// Threads for every operation.
    public var threads: Int

    /// Describes a run.
    public init(modelPath: String, configPath: String? = nil, inputsPath: String, outputPath: String,
                adapters: [Adapter] = [], threads: Int = 1) {
        self.modelPath = modelPath
        self.configPath = configPath
        self.inputsPath = inputsPath
        self.outputPath = outputPath
        self.adapters = adapters
        self.threads = threads
    }
}

/// What a forward run did.
public struct ForwardRunReport: Sendable {
    /// The architecture's name (e.g. "SD3.5 Medium" or "SD3-style").
    public var architecture: String
    /// The family ("sd3" or "flux").
    public var family: String
    /// The layout the weights were stored in.
    public var layout: String
    /// The inputs used, by name, with their shapes.
    public var inputs: [(name: String, shape: [Int])]
    /// Adapters applied: path, scale, number of modules.
    public var adapters: [(path: String, scale: Float, modules: Int)]
    /// Shape of `output`.
    public var outputShape: [Int]
    /// Output values that are NaN or ±Inf (reported, not an error).
    public var nonFiniteOutputs: Int
    /// Seconds spent opening the weights and building the model.
    public var loadSeconds: Double
    /// Seconds spent in the forward pass.
    public var forwardSeconds: Double
    /// The file written.
    public var outputPath: String
}

extension ForwardRun {
    /// Loads the model, the inputs and the adapters, runs the forward pass and writes `output`.
    /// `progress` receives one line per stage. Nothing is written when anything fails; an output
    /// that cannot be written (its folder missing or read-only) is an error before any work.
    /// `note` receives what opening the model decided (a pipeline folder's transformer/, an
    /// all-in-one file's transformer, scaled-fp8 weights), once, before the forward pass.
    public func run(progress: (String) -> Void = { _ in }, note: (String) -> Void = { _ in }) throws -> ForwardRunReport {
        do { try AtomicFile.checkWritable(outputPath) } catch { throw SafeTensorsError.system(error) }
        let clock = ContinuousClock()
        let loadStart = clock.now
        progress("loading \(modelPath)")
        let weights = try TransformerWeights(path: modelPath, configPath: configPath)
        for line in weights.notes where line.hasPrefix(modelPath) { note(line) }
        var model = try TransformerModel.load(weights)
        let inputs = try Self.readInputs(inputsPath, names: model.inputNames)
        do {
            try model.validate(inputs, source: inputsPath)
        } catch {
            guard case .badInput(let path, let name, let reason) = error else { throw error }
            // Point at the tensor's bytes when the input is present.
            let offset = (try? SafeTensorsFile(path: inputsPath)).flatMap { file in
                (try? file.info(name)).map { file.fileOffset(of: $0) }
            }
            throw TransformerError.badInput(path: path, name: name,
                                            reason: reason + (offset.map { " (tensor data at byte \($0))" } ?? ""))
        }
        let adapted = try AdaptedBase(weights, adapters: adapters, progress: progress)
        if !adapted.replacedTensors.isEmpty { model = try TransformerModel.load(adapted.weights) }
        let parameters = adapted.frozenBranches()
        let loadSeconds = Self.seconds(clock.now - loadStart)

        progress("running the forward pass on \(threads) thread\(threads == 1 ? "" : "s")")
        let forwardStart = clock.now
        let graph = Graph(threads: threads, recordsGradients: false)
        var variables: [String: Variable] = [:]
        for (name, tensor) in inputs { variables[name] = graph.constant(tensor) }
        let output = model.forward(variables, adapters: parameters, in: graph).value
        let forwardSeconds = Self.seconds(clock.now - forwardStart)

        progress("writing \(outputPath)")
        try Self.writeOutput(output, to: outputPath, weights: weights)
        let nonFinite = output.scalars.reduce(0) { $0 + ($1.isFinite ? 0 : 1) }
        return ForwardRunReport(
            architecture: weights.architecture.name, family: weights.architecture.family.rawValue,
            layout: weights.sourceLayout.rawValue,
            inputs: inputs.keys.sorted().map { ($0, inputs[$0]!.shape) },
            adapters: adapted.applied, outputShape: output.shape, nonFiniteOutputs: nonFinite,
            loadSeconds: loadSeconds, forwardSeconds: forwardSeconds, outputPath: outputPath)
    }

    /// Reads the tensors named `names` that `path` holds, widened to Float32. Absent names are
    /// left out (the model's validation reports them); other tensors are ignored.
    static func readInputs(_ path: String, names: [String]) throws -> [String: Tensor] {
        let file = try SafeTensorsFile(path: path)
        var inputs: [String: Tensor] = [:]
        for name in names {
            guard let info = try? file.info(name) else { continue }
            guard FloatCodec.canDecode(info.dtype) else {
                throw TransformerError.badInput(path: path, name: name,
                                                reason: "\(info.dtype.rawValue) values cannot be read as numbers (at byte \(file.fileOffset(of: info)))")
            }
            inputs[name] = Tensor(shape: info.shape, scalars: try file.floats(of: info))
        }
        return inputs
    }

    /// Writes `output` as the float32 tensor `output` of a new file, atomically.
    static func writeOutput(_ output: Tensor, to path: String, weights: TransformerWeights) throws {
        let spec = TensorSpec(name: "output", dtype: .f32, shape: output.shape)
        let metadata = ["flowguard.model": weights.path, "flowguard.architecture": weights.architecture.name]
        try SafeTensorsWriter.write(to: path, specs: [spec], metadata: metadata) { sink in
            _ = try output.scalars.withUnsafeBufferPointer { try sink.write(floats: $0) }
        }
    }

    private static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
    }
}

import Checkpoints
import FuzzSupport
import LoRA
import SafeTensors

/// The in-memory file every input is written to (libFuzzer runs inputs one at a time).
private let file = MemoryFile(name: "fuzz-lora.safetensors")

/// Adapter structures already converted (see `fuzzLoRAReader`).
nonisolated(unsafe) private var seenStructures = Set<String>()

/// The architectures of the repository's tiny fixtures (fixtures/sd35_tiny, fixtures/flux_tiny),
/// which the seed adapters were trained for.
private let sd35Tiny = try! Architecture(config: .sd3(SD3Config(
    hiddenSize: 32, numLayers: 3, attentionHeadDim: 8, dualAttentionLayers: [0, 1], qkNorm: true, patchSize: 2,
    inChannels: 16, outChannels: 16, jointAttentionDim: 24, pooledProjectionDim: 20, posEmbedMaxSize: 16, sampleSize: 16)))
private let fluxTiny = try! Architecture(config: .flux(FluxConfig(
    hiddenSize: 32, numLayers: 2, numSingleLayers: 3, attentionHeadDim: 16, guidanceEmbeds: true,
    inChannels: 16, outChannels: 16, jointAttentionDim: 24, pooledProjectionDim: 20, axesDimsRope: [4, 6, 6])))

/// Fuzzes LoRA dialect detection and reading (`LoRAReader.load`: PEFT-prefixed files, diffusers,
/// kohya, ComfyUI, XLabs) on whole `.safetensors` files, then what a reader's caller does next:
/// conversion to the other layout for the fixtures' architectures and for the architecture
/// inferred from the adapter, and ΔW.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzLoRAReader(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    file.replace(with: fuzzInput(data, size))
    // Odd-sized inputs also exercise the NaN/Inf rejection.
    let rejectNonFinite = size % 2 == 1
    let read: LoRAReadResult
    do { read = try LoRAReader.load(path: file.path, architecture: nil, rejectNonFinite: rejectNonFinite) } catch {
        _ = "\(error)"
        return 0
    }
    let adapter = read.adapter
    if rejectNonFinite && !read.nonFinite.isEmpty { fail("rejectNonFinite accepted non-finite factors") }
    for m in adapter.modules {
        guard m.down.values.count == m.down.shape.reduce(1, *), m.up.values.count == m.up.shape.reduce(1, *) else {
            fail("\(m.name): factor values do not match their shapes")
        }
        guard m.rank > 0, m.up.columns == m.rank else { fail("\(m.name): rank \(m.rank) but B has \(m.up.columns) columns") }
    }
    _ = adapter.nonFiniteFactors()

    // Conversion depends on the modules' names and shapes (and the layout and family), never on
    // the values: each structure is converted once per process. This keeps the target fast
    // (building an architecture's tensor list dominates) without losing a code path.
    let structure = "\(adapter.format) \(adapter.layout) \(String(describing: adapter.family)) \(adapter.rsLoRA) "
        + adapter.modules.map { "\($0.name)\($0.down.shape)\($0.up.shape)\($0.upBias?.shape ?? [])\($0.alpha == nil)" }.joined(separator: ";")
    if seenStructures.count > 200_000 { seenStructures.removeAll() }
    guard seenStructures.insert(structure).inserted else { return 0 }

    // kohya names resolve differently when the architecture is known: read again with each.
    if adapter.format == .kohya {
        for architecture in [sd35Tiny, fluxTiny] {
            _ = try? LoRAReader.load(path: file.path, architecture: architecture)
        }
    }
    for architecture in [sd35Tiny, fluxTiny] where adapter.family == nil || adapter.family == architecture.family {
        convert(adapter, architecture)
    }
    if let inferred = try? adapter.inferredArchitecture().architecture, isSmall(inferred) {
        convert(adapter, inferred)
    }
    return 0
}

/// Converts to both layouts and back, and computes ΔW; errors (a module the architecture lacks)
/// are fine, crashes are not.
private func convert(_ adapter: LoRAAdapter, _ architecture: Architecture) {
    for target in [KeyLayout.diffusers, .original] {
        guard let converted = try? adapter.converted(to: target, architecture: architecture) else { continue }
        _ = try? converted.converted(to: adapter.layout, architecture: architecture)
    }
    _ = try? adapter.deltaWeights(architecture: architecture)
}

/// Whether converting for `architecture` stays cheap (an inferred architecture can be as deep as
/// the highest block index a hostile file names).
private func isSmall(_ architecture: Architecture) -> Bool {
    let config = architecture.config
    guard config.hiddenSize <= 512 else { return false }
    if let c = config.typed(SD3Config.self) { return c.numLayers <= 64 }
    if let c = config.typed(FluxConfig.self) { return c.numLayers + c.numSingleLayers <= 64 }
    return false
}

private func fail(_ message: String) -> Never { invariantViolated(message) }

/// The program's entry point: libFuzzer's driver on `fuzzLoRAReader`.
@main enum LoRAReaderFuzzer {
    static func main() { runFuzzer { data, size in fuzzLoRAReader(data, size) } }
}

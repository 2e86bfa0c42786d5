import ArgumentParser
import Checkpoints
import JSON
import SafeTensors

/// `flowguard inspect`: header-only listing of checkpoints, shard sets and adapters.
struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the tensors, dtypes, parameter counts and metadata of safetensors files.",
        discussion: """
        Reads only the header (the file is memory-mapped; no tensor data is touched). FILE may be a .safetensors file, a *.safetensors.index.json shard index, or a folder holding one of them (a diffusers model folder).

        Examples:
          flowguard inspect model.safetensors
          flowguard inspect --group transformer/
          flowguard inspect --json a.safetensors b.safetensors \\
              | jq '.files[0].tensor_count'
        """
    )

    @Argument(help: "Files, shard indexes or model folders to inspect.")
    var files: [String]

    @OptionGroup var style: JSONOutput

    @Flag(help: "Collapse layer numbers: one line per parameter pattern (transformer_blocks.#.attn.to_q.weight ×24).")
    var group = false

    @Flag(help: "Also read every value (streamed): min, max, mean, std and NaN/Inf counts per tensor, and NaN/Inf totals.")
    var stats = false

    @Option(help: "A diffusers config.json for the values the weights do not hold (sample_size, a head size, RoPE axes); default: a model folder's own.")
    var config: String?

    @OptionGroup var log: LogOptions

    func run() throws {
        var reports: [JSONValue] = []
        var failed = false
        for path in files {
            let collection: TensorCollection
            do { collection = try TensorCollection.checkpoint(path) } catch {
                printError("error: \(error.description)")
                failed = true
                continue
            }
            for note in collection.notes { log.note("note: \(note)") }
            if stats {
                let values = StatsReport.compute(collection, quiet: log.quiet)
                if style.json { reports.append(StatsReport.json(collection, values, grouped: group)) }
                else { print(StatsReport.text(collection, values, grouped: group), terminator: "") }
            } else if style.json {
                reports.append(InspectReport.json(collection, grouped: group, config: config))
            } else {
                print(InspectReport.text(collection, grouped: group, config: config), terminator: "")
            }
        }
        if style.json { print(JSONValue.object([("files", .array(reports))]).compactText) }
        if failed { throw CommandFailure() }
    }
}

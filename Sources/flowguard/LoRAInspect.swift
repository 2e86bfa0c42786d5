import ArgumentParser
import JSON
import LoRA
import SafeTensors
import SystemSupport

/// `flowguard lora inspect`: what an adapter holds, in any dialect.
struct LoRAInspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Show an adapter's format, family, layout, modules (rank, α, scale, in, out), NaN/Inf counts and metadata.",
        discussion: """
        ADAPTER is a .safetensors file in any dialect (PEFT, diffusers, kohya, ComfyUI, XLabs) or a PEFT folder holding adapter_config.json and adapter_model.safetensors; the dialect is detected from the keys. Scale is α/r (α/√r with rsLoRA). Factors holding NaN or Inf are listed with their counts; such an adapter still exits 0.

        Examples:
          flowguard lora inspect pytorch_lora_weights.safetensors
          flowguard lora inspect my_adapter/ --json
          flowguard lora inspect kohya_flux_lora.safetensors
        """
    )

    @Argument(help: "Adapter: a .safetensors file or a PEFT folder.")
    var adapter: String

    @OptionGroup var style: JSONOutput

    func run() throws {
        let result = try LoRAReader.load(path: adapter)
        if style.json {
            print(Self.json(result, path: adapter).compactText)
        } else {
            print(Self.text(result, path: adapter), terminator: "")
        }
    }

    static func number(_ v: Float) -> String {
        v == v.rounded() && abs(v) < 1e9 ? String(Int(v)) : "\(v)"
    }

    static func text(_ r: LoRAReadResult, path: String) -> String {
        let a = r.adapter
        var out = "\(path)\n"
        out += "  format: \(a.format.displayName), family: \(a.family?.displayName ?? "unknown"), layout: \(a.layout.rawValue)\(a.rsLoRA ? ", rsLoRA" : "")\n"
        let params = a.modules.reduce(0) { $0 + $1.down.values.count + $1.up.values.count + ($1.upBias?.values.count ?? 0) }
        let ranks = Set(a.modules.map(\.rank)).sorted().map(String.init).joined(separator: ", ")
        out += "  \(a.modules.count) module\(a.modules.count == 1 ? "" : "s"), \(params) parameters, rank \(ranks)\n"
        if r.nonFinite.isEmpty {
            out += "  NaN/Inf: none\n"
        } else {
            let nan = r.nonFinite.reduce(0) { $0 + $1.nanCount }, inf = r.nonFinite.reduce(0) { $0 + $1.infCount }
            out += "  NaN/Inf: \(nan) NaN, \(inf) Inf in \(r.nonFinite.count) tensors\n"
            for n in r.nonFinite { out += "    \(escapeForDisplay(n.key)) (byte \(n.byteOffset)): \(n.nanCount) NaN, \(n.infCount) Inf\n" }
        }
        let rows = a.modules.map { m in
            [escapeForDisplay(m.name), String(m.rank), number(m.alpha ?? Float(m.rank)), number(m.scale(rsLoRA: a.rsLoRA)), String(m.inFeatures), String(m.outFeatures)]
        }
        let header = ["module", "rank", "alpha", "scale", "in", "out"]
        var widths = header.map(\.count)
        for row in rows { for (i, c) in row.enumerated() { widths[i] = max(widths[i], c.count) } }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in
                i == 0 ? c.padding(toLength: widths[i], withPad: " ", startingAt: 0)
                       : String(repeating: " ", count: widths[i] - c.count) + c
            }.joined(separator: "  ")
        }
        out += "  modules:\n    " + line(header) + "\n    " + line(widths.map { String(repeating: "-", count: $0) }) + "\n"
        for row in rows { out += "    " + line(row) + "\n" }
        let meta = a.extraMetadata.sorted { $0.key < $1.key }
        if !meta.isEmpty {
            out += "  metadata (\(meta.count) entr\(meta.count == 1 ? "y" : "ies")):\n"
            for (k, v) in meta {
                let shown = v.count > 120 ? String(v.prefix(117)) + "..." : v
                out += "    \(escapeForDisplay(k)) = \(escapeForDisplay(shown))\n"
            }
        }
        return out
    }

    static func json(_ r: LoRAReadResult, path: String) -> JSONValue {
        let a = r.adapter
        return .object([
            ("path", .string(path)),
            ("format", .string(a.format.rawValue)),
            ("family", a.family.map { .string($0.rawValue) } ?? .null),
            ("layout", .string(a.layout.rawValue)),
            ("rslora", .bool(a.rsLoRA)),
            ("module_count", .int(Int64(a.modules.count))),
            ("parameter_count", .int(Int64(a.modules.reduce(0) { $0 + $1.down.values.count + $1.up.values.count + ($1.upBias?.values.count ?? 0) }))),
            ("modules", .array(a.modules.map { m in
                .object([("name", .string(m.name)), ("rank", .int(Int64(m.rank))),
                         ("alpha", .double(Double(m.alpha ?? Float(m.rank)))), ("scale", .double(Double(m.scale(rsLoRA: a.rsLoRA)))),
                         ("in_features", .int(Int64(m.inFeatures))), ("out_features", .int(Int64(m.outFeatures))),
                         ("bias", .bool(m.upBias != nil))])
            })),
            ("nan_count", .int(Int64(r.nonFinite.reduce(0) { $0 + $1.nanCount }))),
            ("inf_count", .int(Int64(r.nonFinite.reduce(0) { $0 + $1.infCount }))),
            ("non_finite", .array(r.nonFinite.map {
                .object([("key", .string($0.key)), ("byte_offset", .int(Int64($0.byteOffset))),
                         ("nan_count", .int(Int64($0.nanCount))), ("inf_count", .int(Int64($0.infCount)))])
            })),
            ("metadata", .object(a.extraMetadata.sorted { $0.key < $1.key }.map { (key: $0.key, value: JSONValue.string($0.value)) })),
        ])
    }
}

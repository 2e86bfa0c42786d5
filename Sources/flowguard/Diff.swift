import ArgumentParser
import Checkpoints
import JSON
import SafeTensors
import SystemSupport

/// `flowguard diff`: compare two checkpoints tensor by tensor.
struct Diff: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compare two checkpoints tensor by tensor: missing, shape, dtype and value differences.",
        discussion: """
        A and B are .safetensors files, shard indexes or model folders. For every tensor present in both with the same shape, the bytes are compared (identical or not) and, if they are not identical, the values (across dtypes: a BF16 tensor and an F32 tensor holding the same numbers are equal): max |a-b|, max |a-b|/max(|a|,|b|) and the RMS difference. Values are read in bounded chunks through the memory map, so memory stays small for any file size.

        --map-layouts compares checkpoints in different key layouts (an original single file against a diffusers folder): B's tensors are converted to A's layout on the fly (fused q/k/v rows, swapped modulation halves) before comparing. Both must be recognised SD3/FLUX transformers.

        --tolerance T counts values as equal when every |a-b| <= T (default 0: exactly equal; NaNs must sit in the same places).

        Exit status, like cmp(1) and diff(1): 0 when nothing differs beyond the tolerance, 1 when the checkpoints differ. Bad input (a missing or invalid file, an unrecognised layout with --map-layouts) also exits 1, with the message on standard error and nothing on standard output; usage errors exit 2.

        Examples:
          flowguard diff a.safetensors b.safetensors
          flowguard diff --tolerance 0.01 model-fp32.safetensors model-bf16.safetensors
          flowguard diff --map-layouts sd3.5_medium.safetensors transformer/
          flowguard diff --json a.safetensors b.safetensors | jq '.summary'
        """
    )

    @Argument(help: "First checkpoint (file, shard index or folder).")
    var a: String

    @Argument(help: "Second checkpoint (file, shard index or folder).")
    var b: String

    @OptionGroup var style: JSONOutput

    @Flag(help: "Convert B to A's key layout before comparing (original vs diffusers).")
    var mapLayouts = false

    @Option(parsing: .unconditional, help: "Largest |a-b| still counted as equal (0: exact).")
    var tolerance: Double = 0

    @OptionGroup var log: LogOptions

    func validate() throws {
        guard tolerance.isFinite, tolerance >= 0 else {
            throw ValidationError("--tolerance must be a finite number >= 0, not \(tolerance).")
        }
    }

    func run() throws {
        let left = try TensorCollection.transformerCheckpoint(a)
        let right = try TensorCollection.transformerCheckpoint(b)
        for note in left.notes + right.notes { log.note("note: \(note)") }
        let progress = log.progress("comparing", total: left.dataBytes)
        let diff = try CheckpointDiff.compare(left, right, options: .init(mapLayouts: mapLayouts, tolerance: tolerance)) { done, _ in
            progress?.update(done)
        }
        progress?.finish()
        let hint = mapLayouts ? nil : Diff.layoutHint(diff, left, right)
        if style.json {
            var object = Diff.json(diff, a: a, b: b)
            if case .object(var members) = object {
                members.append(("hint", hint.map { .string($0) } ?? .null))
                object = .object(members)
            }
            print(object.compactText)
        } else {
            print(Diff.text(diff, a: a, b: b), terminator: "")
            if let hint { log.note("note: " + hint) }
        }
        if diff.differs { throw ExitCode(1) }
    }

    /// A suggestion for a plain diff whose names do not line up because A and B are the same
    /// model in two layouts (or with two key prefixes): compare with `--map-layouts`.
    static func layoutHint(_ diff: CheckpointDiff, _ left: TensorCollection, _ right: TensorCollection) -> String? {
        guard diff.onlyInACount + diff.onlyInBCount > 0,
              let x = try? Architecture.detect(left.infos), let y = try? Architecture.detect(right.infos),
              x.architecture.family == y.architecture.family, x.layout != y.layout || x.prefix != y.prefix else { return nil }
        func form(_ d: DetectedCheckpoint) -> String {
            d.layout.rawValue + " layout" + (d.prefix == .none ? "" : " (prefix '\(d.prefix.rawValue)')")
        }
        return "A is \(x.architecture.name) in the \(form(x)) and B in the \(form(y)): "
            + "their names differ by layout; compare them with --map-layouts"
    }

    /// "N identical (bytes), M equal within tolerance, K differ, X only in A, Y only in B".
    static func summary(_ diff: CheckpointDiff) -> String {
        "\(diff.identicalCount) identical (bytes), \(diff.equalCount) equal within tolerance, \(diff.differCount) differ, "
            + "\(diff.onlyInACount) only in A, \(diff.onlyInBCount) only in B"
    }

    static func text(_ diff: CheckpointDiff, a: String, b: String) -> String {
        var out = "A: \(a)\nB: \(b)\n"
        if let m = diff.mapping {
            out += "mapped: B's \(m.layoutB.rawValue) layout\(prefixText(m.prefixB)) converted to A's \(m.layoutA.rawValue) layout"
            out += "\(prefixText(m.prefixA)) (\(m.architecture))\n"
        }
        let shown = diff.tensors.filter { $0.status != .identical }
        if !shown.isEmpty {
            var rows: [[String]] = [["name", "status", "dtype", "shape", "max abs", "max rel", "rms"]]
            for t in shown {
                let compared = t.status == .equal || t.status == .differ
                rows.append([escapeForDisplay(t.name), t.status.rawValue,
                             change(t.dtypeA?.rawValue, t.dtypeB?.rawValue),
                             change(t.shapeA.map(formatShape), t.shapeB.map(formatShape)),
                             compared ? StatsReport.number(t.maxAbsDifference) : "-",
                             compared ? StatsReport.number(t.maxRelativeDifference) : "-",
                             compared ? StatsReport.number(t.rmsDifference) : "-"])
            }
            out += "tensors that are not byte-identical (tolerance \(StatsReport.number(diff.options.tolerance))):\n"
            out += table(rows, rightAligned: [4, 5, 6], indent: 2)
        }
        out += summary(diff) + "\n"
        return out
    }

    static func json(_ diff: CheckpointDiff, a: String, b: String) -> JSONValue {
        func real(_ x: Double) -> JSONValue { x.isFinite ? .double(x) : .string(x > 0 ? "inf" : "nan") }
        func shape(_ s: [Int]?) -> JSONValue { s.map { .array($0.map { .int(Int64($0)) }) } ?? .null }
        let mapping: JSONValue = diff.mapping.map { m in
            .object([("architecture", .string(m.architecture)),
                     ("layout_a", .string(m.layoutA.rawValue)), ("prefix_a", .string(m.prefixA.rawValue)),
                     ("layout_b", .string(m.layoutB.rawValue)), ("prefix_b", .string(m.prefixB.rawValue))])
        } ?? .null
        return .object([
            ("a", .string(a)), ("b", .string(b)),
            ("tolerance", .double(diff.options.tolerance)),
            ("mapping", mapping),
            ("differ", .bool(diff.differs)),
            ("summary", .object([
                ("identical_count", .int(Int64(diff.identicalCount))), ("equal_within_tolerance_count", .int(Int64(diff.equalCount))),
                ("differ_count", .int(Int64(diff.differCount))), ("only_in_a_count", .int(Int64(diff.onlyInACount))),
                ("only_in_b_count", .int(Int64(diff.onlyInBCount))),
            ])),
            ("tensors", .array(diff.tensors.map { t in
                .object([
                    ("name", .string(t.name)), ("status", .string(t.status.rawValue)),
                    ("dtype_a", t.dtypeA.map { .string($0.rawValue) } ?? .null),
                    ("dtype_b", t.dtypeB.map { .string($0.rawValue) } ?? .null),
                    ("shape_a", shape(t.shapeA)), ("shape_b", shape(t.shapeB)),
                    ("max_abs_diff", real(t.maxAbsDifference)), ("max_rel_diff", real(t.maxRelativeDifference)),
                    ("rms_diff", real(t.rmsDifference)), ("nan_mismatch_count", .int(Int64(t.nanMismatches))),
                ])
            })),
        ])
    }

    /// "BF16" when both sides agree (or one is absent), "BF16 → F32" when they differ.
    private static func change(_ a: String?, _ b: String?) -> String {
        switch (a, b) {
        case let (x?, y?): return x == y ? x : "\(x) → \(y)"
        case let (x?, nil): return x
        case let (nil, y?): return y
        default: return "-"
        }
    }

    private static func prefixText(_ prefix: KeyPrefix) -> String {
        prefix == .none ? "" : " (prefix '\(prefix.rawValue)')"
    }
}

import Checkpoints
import JSON
import SafeTensors
import SystemSupport

/// Renders what `inspect` shows: tables for people, JSON for scripts.
enum InspectReport {
    static func parametersByDType(_ infos: [TensorInfo]) -> [(DType, Int)] {
        var totals: [DType: Int] = [:]
        for info in infos { totals[info.dtype, default: 0] += info.elementCount }
        return totals.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key.rawValue < $1.key.rawValue }
    }

    /// Parameters per stored type (`BF16`, `Q8_0`), largest first.
    static func parametersByStorage(_ entries: [TensorEntry]) -> [(String, Int)] {
        var totals: [String: Int] = [:]
        for entry in entries { totals[entry.storageName, default: 0] += entry.info.elementCount }
        return totals.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
    }

    /// Whether any file is a container other than safetensors (GGUF).
    static func isForeign(_ collection: TensorCollection) -> Bool { collection.files.contains { $0.format != "safetensors" } }

    /// The container and its metadata, for a GGUF file.
    static func containerText(_ collection: TensorCollection) -> String {
        var out = ""
        for file in collection.files where file.format != "safetensors" {
            let bits = Double(collection.dataBytes * 8) / Double(max(1, collection.infos.reduce(0) { $0 + $1.elementCount }))
            out += "  container: \(file.format), \((bits * 100).rounded() / 100) bits per weight on average\n"
            out += "  metadata (\(file.details.count) \(file.details.count == 1 ? "entry" : "entries")):\n"
            for (key, value) in file.details { out += "    \(key) = \(value)\n" }
        }
        return out
    }

    static func text(_ collection: TensorCollection, grouped: Bool, config: String? = nil) -> String {
        let infos = collection.infos
        let foreign = isForeign(collection)
        var out = "\(collection.path)\n"
        if let index = collection.index, let indexPath = collection.indexPath {
            out += "  sharded: \(collection.files.count) shards via \(indexPath) (total_size \(index.totalSize.map(formatCount) ?? "absent"))\n"
        }
        let headerBytes = collection.files.reduce(0) { $0 + $1.header.dataStart }
        out += "  \(formatCount(infos.count)) tensors, \(formatCount(infos.reduce(0) { $0 + $1.elementCount })) parameters, "
        out += "\(formatBytes(collection.dataBytes)) of data, header \(formatCount(headerBytes)) bytes\n"
        if let components = AllInOne.components(infos) {
            out += "  all-in-one checkpoint, \(components.count) components:\n"
            for c in components {
                let dtypes = c.parametersByDType.map { "\($0.dtype.rawValue) \(formatCount($0.parameters))" }.joined(separator: ", ")
                out += "    \(pad(c.name, 32)) \(pad(c.prefix.isEmpty ? "(other keys)" : c.prefix + "*", 24)) \(padLeft(formatCount(c.tensors.count), 6)) tensors  "
                    + "\(padLeft(formatCount(c.parameterCount), 14)) parameters  (\(dtypes))\n"
            }
            out += architectureText(collection.transformerOnly(), config: config).replacingOccurrences(of: "  architecture:", with: "  transformer architecture:")
        } else {
            out += architectureText(collection, config: config)
        }
        let totalParams = max(1, infos.reduce(0) { $0 + $1.elementCount })
        out += "  parameters by dtype:\n"
        for (dtype, count) in parametersByStorage(collection.entries) {
            let share = Double(count) * 100 / Double(totalParams)
            out += "    \(pad(dtype, 12)) \(padLeft(formatCount(count), 16))  \(padLeft(formatPercent(share), 6))\n"
        }
        if foreign {
            out += containerText(collection)
        } else if let metadata = collection.metadata {
            out += "  __metadata__ (\(metadata.count) \(metadata.count == 1 ? "entry" : "entries")):\n"
            for (key, value) in metadata {
                let shown = value.count > 200 ? String(value.prefix(200)) + "… (\(value.count) chars)" : value
                out += "    \(escapeForDisplay(key)) = \(escapeForDisplay(shown))\n"
            }
        } else {
            out += "  __metadata__: none\n"
        }
        if grouped {
            let groups = TensorGrouping.groups(infos)
            var rows: [[String]] = [["pattern", "count", "dtype", "shape", "params"]]
            for g in groups {
                rows.append([escapeForDisplay(g.pattern) + (g.names.count > 1 ? " ×\(g.names.count)" : ""), String(g.names.count),
                             g.dtypes.map(\.rawValue).joined(separator: ","),
                             g.shapes.count == 1 ? formatShape(g.shapes[0]) : "\(g.shapes.count) shapes",
                             formatCount(g.parameters)])
            }
            out += "  \(groups.count) groups:\n" + table(rows, rightAligned: [1, 4], indent: 4)
        } else {
            var rows: [[String]] = [["#", "name", "dtype", "shape", "params", "file bytes"] + (foreign ? ["bits/weight"] : [])]
            for (i, entry) in collection.entries.enumerated() {
                let start = entry.file.fileOffset(of: entry.info)
                var range = "[\(start), \(start + entry.info.byteCount))"
                if collection.files.count > 1 { range += " " + (entry.file.path.split(separator: "/").last.map(String.init) ?? "") }
                rows.append([String(i + 1), escapeForDisplay(entry.info.name), entry.storageName,
                             formatShape(entry.info.shape), formatCount(entry.info.elementCount), range]
                            + (foreign ? [String((entry.bitsPerWeight * 100).rounded() / 100)] : []))
            }
            out += "  tensors:\n" + table(rows, rightAligned: foreign ? [0, 4, 6] : [0, 4], indent: 4)
        }
        return out
    }

    /// The detected architecture and derived diffusers config (with the values no weight holds
    /// from `config`, or a folder's own config.json), or why none was recognised.
    static func architectureText(_ collection: TensorCollection, config: String?) -> String {
        do { return Architecture.inspectText(try Architecture.describe(collection, configPath: config)) } catch {
            return "  architecture: not recognised (\(String(describing: error)))\n"
        }
    }

    static func architectureJSON(_ collection: TensorCollection, config: String?) -> JSONValue {
        guard let described = try? Architecture.describe(collection, configPath: config) else { return .null }
        return Architecture.inspectJSON(described)
    }

    static func json(_ collection: TensorCollection, grouped: Bool, config: String? = nil) -> JSONValue {
        let infos = collection.infos
        var members: [(key: String, value: JSONValue)] = [
            ("path", .string(collection.path)),
            ("tensor_count", .int(Int64(infos.count))),
            ("parameter_count", .int(Int64(infos.reduce(0) { $0 + $1.elementCount }))),
            ("data_bytes", .int(Int64(collection.dataBytes))),
            ("architecture", architectureJSON(collection.transformerOnly(), config: config)),
            ("parameters_by_dtype", .object(parametersByStorage(collection.entries).map { ($0.0, .int(Int64($0.1))) })),
            ("metadata", collection.metadata.map { .object($0.map { ($0.key, .string($0.value)) }) } ?? .null),
            ("files", .array(collection.files.map { file in
                var fields: [(key: String, value: JSONValue)] = [("path", .string(file.path)), ("header_bytes", .int(Int64(file.header.headerLength))),
                                                                  ("file_bytes", .int(Int64(file.fileSize)))]
                if file.format != "safetensors" {
                    fields.append(("container", .string(file.format)))
                    fields.append(("container_metadata", .object(file.details.map { ($0.key, .string($0.value)) })))
                }
                return .object(fields)
            })),
        ]
        if let components = AllInOne.components(infos) {
            members.append(("components", .array(components.map { c in
                .object([("name", .string(c.name)), ("prefix", .string(c.prefix)), ("tensors", .int(Int64(c.tensors.count))),
                         ("parameters", .int(Int64(c.parameterCount))),
                         ("parameters_by_dtype", .object(c.parametersByDType.map { ($0.dtype.rawValue, .int(Int64($0.parameters))) }))])
            })))
        }
        if grouped {
            members.append(("groups", .array(TensorGrouping.groups(infos).map { g in
                .object([("pattern", .string(g.pattern)), ("tensor_count", .int(Int64(g.names.count))),
                         ("dtypes", .array(g.dtypes.map { .string($0.rawValue) })),
                         ("shapes", .array(g.shapes.map { .array($0.map { .int(Int64($0)) }) })),
                         ("parameter_count", .int(Int64(g.parameters)))])
            })))
        } else {
            members.append(("tensors", .array(collection.entries.map { entry in
                let start = entry.file.fileOffset(of: entry.info)
                let bits: [(key: String, value: JSONValue)] = entry.file.format == "safetensors" ? [] : [("bits_per_weight", .double(entry.bitsPerWeight))]
                return .object([("name", .string(entry.info.name)), ("dtype", .string(entry.storageName))] + bits + [
                                ("shape", .array(entry.info.shape.map { .int(Int64($0)) })),
                                ("parameter_count", .int(Int64(entry.info.elementCount))),
                                ("data_offsets", .array([.int(Int64(entry.info.dataRange.lowerBound)), .int(Int64(entry.info.dataRange.upperBound))])),
                                ("file", .string(entry.file.path)),
                                ("file_offsets", .array([.int(Int64(start)), .int(Int64(start + entry.info.byteCount))]))])
            })))
        }
        return .object(members)
    }
}

/// `1234567` → `1,234,567`.
func formatCount(_ n: Int) -> String {
    let digits = String(n.magnitude)
    var out = ""
    for (i, c) in digits.enumerated() {
        if i > 0 && (digits.count - i) % 3 == 0 { out.append(",") }
        out.append(c)
    }
    return n < 0 ? "-" + out : out
}

/// Bytes in the largest binary unit that keeps the number ≥ 1, with the exact count.
func formatBytes(_ n: Int) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(n)
    var unit = 0
    while value >= 1024 && unit < units.count - 1 { value /= 1024; unit += 1 }
    if unit == 0 { return "\(n) B" }
    let rounded = (value * 100).rounded() / 100
    return "\(rounded) \(units[unit]) (\(formatCount(n)) bytes)"
}

func formatPercent(_ p: Double) -> String {
    let tenths = Int((p * 10).rounded())
    return "\(tenths / 10).\(tenths % 10)%"
}

func formatShape(_ shape: [Int]) -> String { "[" + shape.map(String.init).joined(separator: ", ") + "]" }

func pad(_ s: String, _ width: Int) -> String { s.count >= width ? s : s + String(repeating: " ", count: width - s.count) }
func padLeft(_ s: String, _ width: Int) -> String { s.count >= width ? s : String(repeating: " ", count: width - s.count) + s }

/// A plain-text table: columns padded to their widest cell, a rule under the heading row.
func table(_ rows: [[String]], rightAligned: Set<Int> = [], indent: Int = 0) -> String {
    guard let first = rows.first else { return "" }
    var widths = [Int](repeating: 0, count: first.count)
    for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
    let margin = String(repeating: " ", count: indent)
    var out = ""
    for (r, row) in rows.enumerated() {
        let cells = row.enumerated().map { i, cell in rightAligned.contains(i) ? padLeft(cell, widths[i]) : pad(cell, widths[i]) }
        var line = margin + cells.joined(separator: "  ")
        while line.hasSuffix(" ") { line.removeLast() }
        out += line + "\n"
        if r == 0 { out += margin + widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ") + "\n" }
    }
    return out
}

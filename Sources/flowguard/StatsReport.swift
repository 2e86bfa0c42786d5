import JSON
import SafeTensors
import SystemSupport

/// What `inspect --stats` adds: per-tensor value statistics, read in one streamed pass.
enum StatsReport {
    /// Reads every tensor of `collection` once, with a progress line on standard error unless `quiet`.
    static func compute(_ collection: TensorCollection, quiet: Bool) -> CollectionStatistics {
        let progress = quiet ? nil : Progress(label: "statistics \(collection.path)", total: collection.dataBytes)
        let stats = collection.statistics { done, _ in progress?.update(done) }
        progress?.finish()
        return stats
    }

    /// The `inspect` text with the tensor table widened by min/max/mean/std/NaN/Inf columns (with
    /// `--group`, the groups table stays and the statistics table follows it), then a totals line.
    static func text(_ collection: TensorCollection, _ stats: CollectionStatistics, grouped: Bool) -> String {
        var out = InspectReport.text(collection, grouped: grouped)
        if !grouped, let cut = out.ranges(of: "\n  tensors:\n").last {
            out = String(out[..<cut.lowerBound]) + "\n"
        }
        var rows: [[String]] = [["#", "name", "dtype", "shape", "params", "file bytes", "min", "max", "mean", "std", "NaN", "Inf"]]
        for (i, (entry, item)) in zip(collection.entries, stats.tensors).enumerated() {
            let start = entry.file.fileOffset(of: entry.info)
            var range = "[\(start), \(start + entry.info.byteCount))"
            if collection.files.count > 1 { range += " " + (entry.file.path.split(separator: "/").last.map(String.init) ?? "") }
            var row = [String(i + 1), escapeForDisplay(entry.info.name), entry.storageName,
                       formatShape(entry.info.shape), formatCount(entry.info.elementCount), range]
            if let s = item.statistics {
                row += [s.min.map { number(Double($0)) } ?? "-", s.max.map { number(Double($0)) } ?? "-",
                        s.mean.map(number) ?? "-", s.std.map(number) ?? "-",
                        formatCount(s.nanCount), formatCount(s.infinityCount)]
            } else {
                row += ["-", "-", "-", "-", "-", "-"]
            }
            rows.append(row)
        }
        out += grouped ? "  tensor statistics:\n" : "  tensors:\n"
        out += table(rows, rightAligned: [0, 4, 6, 7, 8, 9, 10, 11], indent: 4)
        for item in stats.tensors { if let note = item.note { out += "    note: \(escapeForDisplay(item.name)): \(note)\n" } }
        out += "  " + summary(stats) + "\n"
        return out
    }

    /// "statistics: 0 NaN, 0 +Inf, 0 -Inf in 909 tensors" (plus the skipped count).
    static func summary(_ stats: CollectionStatistics) -> String {
        var line = "statistics: \(formatCount(stats.nanCount)) NaN, \(formatCount(stats.positiveInfinityCount)) +Inf, "
        line += "\(formatCount(stats.negativeInfinityCount)) -Inf in \(formatCount(stats.tensors.count)) tensors"
        if stats.skippedCount > 0 { line += " (\(stats.skippedCount) skipped: not real numbers)" }
        return line
    }

    /// The `inspect --json` object with a `stats` member on every tensor (a `tensor_statistics`
    /// list with `--group`) and a `statistics` totals member.
    static func json(_ collection: TensorCollection, _ stats: CollectionStatistics, grouped: Bool) -> JSONValue {
        guard case .object(var members) = InspectReport.json(collection, grouped: grouped) else { return .null }
        if let i = members.firstIndex(where: { $0.key == "tensors" }), case .array(let tensors) = members[i].value {
            members[i].value = .array(zip(tensors, stats.tensors).map { tensor, item in
                guard case .object(var fields) = tensor else { return tensor }
                fields.append(("stats", json(item)))
                return .object(fields)
            })
        } else {
            members.append(("tensor_statistics", .array(stats.tensors.map { item in
                .object([("name", .string(item.name)), ("stats", json(item))])
            })))
        }
        members.append(("statistics", .object([
            ("nan_count", .int(Int64(stats.nanCount))), ("pos_inf_count", .int(Int64(stats.positiveInfinityCount))),
            ("neg_inf_count", .int(Int64(stats.negativeInfinityCount))), ("skipped_count", .int(Int64(stats.skippedCount))),
        ])))
        return .object(members)
    }

    /// One tensor's statistics as JSON; null (with a `note`) for a skipped tensor.
    static func json(_ item: NamedTensorStatistics) -> JSONValue {
        guard let s = item.statistics else { return .object([("note", .string(item.note ?? "skipped"))]) }
        func real(_ x: Double?) -> JSONValue { x.map { $0.isFinite ? .double($0) : .null } ?? .null }
        return .object([
            ("count", .int(Int64(s.count))), ("finite_count", .int(Int64(s.finiteCount))),
            ("min", real(s.min.map(Double.init))), ("max", real(s.max.map(Double.init))),
            ("mean", real(s.mean)), ("std", real(s.std)),
            ("nan_count", .int(Int64(s.nanCount))), ("pos_inf_count", .int(Int64(s.positiveInfinityCount))),
            ("neg_inf_count", .int(Int64(s.negativeInfinityCount))), ("zero_count", .int(Int64(s.zeroCount))),
        ])
    }

    /// A number with four significant digits (`%.4g`): `0.01234`, `-1.5e-07`, `448`, `inf`.
    static func number(_ x: Double) -> String {
        formatC(x, "%.4g")
    }
}

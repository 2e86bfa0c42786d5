import SafeTensors
import SystemSupport
/// Everything that can go wrong while recognising a checkpoint, deriving its configuration or
/// planning a conversion. Each case carries the tensor keys involved; `description` is the sentence
/// a user reads.
public enum CheckpointError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The list of tensors was empty.
    case noTensors

    /// The same tensor key appears twice in the input list.
    case duplicateTensor(String)

    /// No layout table of the families tried knows any of the tensor names; `unexpected` holds at
    /// most five of them, `unexpectedCount` is the total.
    case unrecognised(families: [ModelFamily], unexpected: [String], unexpectedCount: Int)

    /// The tensor names match no known architecture. `family`/`layout` name the closest match
    /// when there is one. `unexpected` and `missing` hold at most five keys each (full source keys
    /// for unexpected ones, keys in the source layout for missing ones); the counts are totals.
    case unknownArchitecture(family: ModelFamily?, layout: KeyLayout?,
                             unexpected: [String], unexpectedCount: Int,
                             missing: [String], missingCount: Int)

    /// Keys of both layouts (original and diffusers) appear in one checkpoint; up to five of each.
    case mixedLayouts(original: [String], diffusers: [String])

    /// A tensor's shape contradicts the configuration derived from the other tensors.
    case shapeMismatch(tensor: String, expected: [Int], actual: [Int], architecture: String)

    /// A configuration value cannot be derived from a tensor's shape (for instance the position
    /// table length is not a perfect square, or the width is not a whole number of heads).
    case underivableConfig(tensor: String, reason: String)

    /// A configuration describes no valid model (zero width, a dual-attention block index past the
    /// last block, ...).
    case invalidConfig(String)

    /// A module name that no layout rule of the architecture knows (LoRA module mapping).
    case unknownModule(name: String, layout: KeyLayout, architecture: String)

    /// An output dtype that is not a floating-point kind was asked for; `writing` says what
    /// ("tensors", "random values").
    case notFloatingPoint(file: String, dtype: DType, writing: String)

    /// Reading or writing a file failed; the description is the file error's own sentence.
    case file(SafeTensorsError)

    /// Two checkpoints of different model families were to be compared as one model in two
    /// layouts (`diff --map-layouts`).
    case differentFamilies(a: String, b: String)

    /// The sentence shown to the user.
    public var description: String {
        switch self {
        case .noTensors:
            return "The checkpoint holds no tensors."
        case .duplicateTensor(let name):
            return "Tensor \(quoted(name)) appears more than once."
        case let .unrecognised(families, unexpected, unexpectedCount):
            return "The tensors are not \(ModelFamily.alternatives(families)) transformer in either layout"
                + keyCounts(unexpected: unexpected, unexpectedCount: unexpectedCount, missing: [], missingCount: 0)
        case let .unknownArchitecture(family, layout, unexpected, unexpectedCount, missing, missingCount):
            var subject: String
            if let family {
                subject = "The tensors do not form a known \(family.displayName) transformer"
                if let layout { subject += " (\(layout.rawValue) layout)" }
            } else {
                subject = "The tensors are not \(ModelFamily.alternatives(ModelFamily.builtIn)) transformer in either layout"
            }
            return subject + keyCounts(unexpected: unexpected, unexpectedCount: unexpectedCount,
                                       missing: missing, missingCount: missingCount)
        case let .differentFamilies(a, b):
            return "A is \(a) and B is \(b): --map-layouts compares the two layouts of one model, not models of different families."
        case let .mixedLayouts(original, diffusers):
            return "The checkpoint mixes the original layout (" + list(original, total: original.count)
                + ") with the diffusers layout (" + list(diffusers, total: diffusers.count) + ")."
        case let .shapeMismatch(tensor, expected, actual, architecture):
            return "Tensor \(quoted(tensor)) has shape \(shapeText(actual)) but \(architecture) "
                + "expects \(shapeText(expected))."
        case let .underivableConfig(tensor, reason):
            return "Cannot derive the configuration from tensor \(quoted(tensor)): \(reason)."
        case .invalidConfig(let reason):
            return "Invalid model configuration: \(reason)."
        case let .unknownModule(name, layout, architecture):
            return "\(architecture) has no module \(quoted(name)) in the \(layout.rawValue) layout."
        case let .notFloatingPoint(file, dtype, writing):
            return "\(errorLocation(file, "*", nil)): cannot write \(writing) as \(dtype.rawValue): not a floating-point dtype"
        case .file(let error):
            return error.description
        }
    }
}

/// "; 2 unmapped keys: …; 1 missing key: …." or "." when there are none.
private func keyCounts(unexpected: [String], unexpectedCount: Int, missing: [String], missingCount: Int) -> String {
    var parts: [String] = []
    if unexpectedCount > 0 {
        parts.append("\(unexpectedCount) unmapped \(unexpectedCount == 1 ? "key" : "keys"): " + list(unexpected, total: unexpectedCount))
    }
    if missingCount > 0 {
        parts.append("\(missingCount) missing \(missingCount == 1 ? "key" : "keys"): " + list(missing, total: missingCount))
    }
    return parts.isEmpty ? "." : "; " + parts.joined(separator: "; ") + "."
}

/// A key in double quotes, escaped with the project's one display escaping (control and
/// bidirectional-override characters) so that a hostile name cannot rewrite the terminal.
func quoted(_ key: String) -> String {
    "\"" + escapeForDisplay(key).replacingQuotes() + "\""
}

private extension String {
    func replacingQuotes() -> String {
        var out = ""
        for c in self { if c == "\"" { out += "\\\"" } else { out.append(c) } }
        return out
    }
}

/// At most five quoted keys, followed by "and N more" when the total is larger.
func list(_ keys: [String], total: Int) -> String {
    let shown = keys.prefix(5).map(quoted).joined(separator: ", ")
    let rest = total - min(keys.count, 5)
    return rest > 0 ? shown + " and \(rest) more" : shown
}

/// A shape as the user reads it: `[3072, 64]`.
func shapeText(_ shape: [Int]) -> String {
    "[" + shape.map(String.init).joined(separator: ", ") + "]"
}

extension CheckpointError {
    /// Runs `body` (code built on the `SafeTensors` reader and writer), passing `CheckpointError`s
    /// through and wrapping `SafeTensorsError`s in `.file`, so that every public entry point of
    /// the module throws `CheckpointError`.
    static func wrapping<T>(_ body: () throws -> T) throws(CheckpointError) -> T {
        do {
            return try body()
        } catch let error as CheckpointError {
            throw error
        } catch let error as SafeTensorsError {
            throw .file(error)
        } catch {
            preconditionFailure("Checkpoints code threw \(type(of: error)), neither a CheckpointError nor a SafeTensorsError")
        }
    }
}

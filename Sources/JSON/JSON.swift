import CJSONC

/// A parsed JSON document, the project's one representation of JSON read from disk.
///
/// Objects keep their members in document order. Numbers keep their kind: integers that fit in
/// `Int64`, larger non-negative integers as `UInt64`, everything else as `Double`.
/// This is the only file in FlowGuard that talks to json-c.
public indirect enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case int(Int64)
    case uint(UInt64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([(key: String, value: JSONValue)])

    public static func == (lhs: JSONValue, rhs: JSONValue) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): return true
        case let (.bool(a), .bool(b)): return a == b
        case let (.int(a), .int(b)): return a == b
        case let (.uint(a), .uint(b)): return a == b
        case let (.double(a), .double(b)): return a == b
        case let (.string(a), .string(b)): return a == b
        case let (.array(a), .array(b)): return a == b
        case let (.object(a), .object(b)):
            return a.count == b.count && zip(a, b).allSatisfy { $0.key == $1.key && $0.value == $1.value }
        default: return false
        }
    }

    /// The member named `key` of an object (the last one if the key repeats), else nil.
    public subscript(key: String) -> JSONValue? {
        guard case let .object(members) = self else { return nil }
        return members.last(where: { $0.key == key })?.value
    }

    /// The string payload, if this is a string.
    public var stringValue: String? { if case let .string(s) = self { return s } else { return nil } }

    /// A non-negative integer payload that fits in `Int`, if this is one.
    public var nonNegativeInt: Int? {
        switch self {
        case let .int(v): return v >= 0 ? Int(v) : nil
        case let .uint(v): return v <= UInt64(Int.max) ? Int(v) : nil
        default: return nil
        }
    }

    /// A numeric payload as a Double, if this is a number.
    public var doubleValue: Double? {
        switch self {
        case let .int(v): return Double(v)
        case let .uint(v): return Double(v)
        case let .double(v): return v
        default: return nil
        }
    }

    /// Members of an object, if this is an object.
    public var objectMembers: [(key: String, value: JSONValue)]? {
        if case let .object(m) = self { return m } else { return nil }
    }

    /// Elements of an array, if this is an array.
    public var arrayValue: [JSONValue]? { if case let .array(a) = self { return a } else { return nil } }
}

/// Why a JSON text could not be parsed.
public struct JSONParseError: Error, Sendable, CustomStringConvertible {
    /// json-c's description of the problem.
    public var reason: String
    /// Byte offset in the text where parsing stopped.
    public var offset: Int
    public var description: String { "\(reason) at byte \(offset)" }
}

extension JSONValue {
    /// Maximum nesting accepted; deeper documents are rejected rather than risking the stack.
    public static let maximumDepth: Int32 = 64

    /// Most values (and object keys) accepted in one document by default. Parsed JSON costs
    /// about 100–200 bytes a value (json-c's tree, then ours), so 100 MB of `[0,0,0,…]` would
    /// need 5–6 GB; this bounds a parse to well under 1 GB. Real documents (a checkpoint header
    /// of 100k tensors, an index, a config) hold far fewer.
    public static let maximumValues = 4_000_000

    /// Where the text holds more than `limit` values and keys (counted, without parsing, as
    /// one plus the `{`, `[`, `,` and `:` outside strings), or nil when it holds at most `limit`.
    /// A linear scan that allocates nothing, so a document can be refused before parsing.
    public static func offsetExceedingValueCount(_ bytes: UnsafeRawBufferPointer, limit: Int) -> Int? {
        var count = 1
        var inString = false
        var escaped = false
        for i in 0..<bytes.count {
            let c = bytes[i]
            if inString {
                if escaped { escaped = false } else if c == 0x5C { escaped = true } else if c == 0x22 { inString = false }
                continue
            }
            switch c {
            case 0x22: inString = true
            case 0x7B, 0x5B, 0x2C, 0x3A:
                count += 1
                if count > limit { return i }
            default: break
            }
        }
        return nil
    }

    /// Parses a complete JSON text with json-c in strict mode. Leading and trailing JSON
    /// whitespace is allowed; anything else after the value is an error, and so is a text of
    /// more than `maximumValues` values (refused before parsing, to bound memory).
    public static func parse(_ bytes: UnsafeRawBufferPointer, maximumValues: Int = JSONValue.maximumValues) throws(JSONParseError) -> JSONValue {
        if let offset = offsetExceedingValueCount(bytes, limit: maximumValues) {
            throw JSONParseError(reason: "more than \(maximumValues) values (refused before parsing, to bound memory)", offset: offset)
        }
        guard let tokener = json_tokener_new_ex(maximumDepth) else {
            throw JSONParseError(reason: "out of memory creating the JSON parser", offset: 0)
        }
        defer { json_tokener_free(tokener) }
        json_tokener_set_flags(tokener, JSON_TOKENER_STRICT)
        guard bytes.count <= Int(Int32.max) else {
            throw JSONParseError(reason: "JSON text larger than 2 GiB", offset: 0)
        }
        // An empty buffer has no base address; json-c needs a valid pointer even for length 0.
        let empty: StaticString = ""
        let base = bytes.baseAddress?.assumingMemoryBound(to: CChar.self)
            ?? UnsafeRawPointer(empty.utf8Start).assumingMemoryBound(to: CChar.self)
        let object = json_tokener_parse_ex(tokener, base, Int32(bytes.count))
        let status = json_tokener_get_error(tokener)
        let end = Int(json_tokener_get_parse_end(tokener))
        if status != json_tokener_success {
            defer { if let object { json_object_put(object) } }
            if status == json_tokener_continue {
                throw JSONParseError(reason: "unexpected end of JSON text", offset: bytes.count)
            }
            let reason = String(cString: json_tokener_error_desc(status))
            throw JSONParseError(reason: reason, offset: end)
        }
        defer { if let object { json_object_put(object) } }
        for i in end..<bytes.count {
            switch bytes[i] {
            case 0x20, 0x09, 0x0A, 0x0D: continue
            default: throw JSONParseError(reason: "unexpected data after the JSON value", offset: i)
            }
        }
        return convert(object)
    }

    /// Parses JSON held in a byte array.
    public static func parse(_ bytes: [UInt8]) throws(JSONParseError) -> JSONValue {
        try bytes.withUnsafeBytes { raw in Result { () throws(JSONParseError) in try parse(raw) } }.get()
    }

    /// Converts a json-c object tree into a `JSONValue`. json-c guarantees the tree is at most
    /// `maximumDepth` deep, which bounds this recursion.
    private static func convert(_ object: OpaquePointer?) -> JSONValue {
        guard let object else { return .null }
        switch json_object_get_type(object) {
        case json_type_null:
            return .null
        case json_type_boolean:
            return .bool(json_object_get_boolean(object) != 0)
        case json_type_int:
            let signed = json_object_get_int64(object)
            if signed == Int64.max {
                return .uint(json_object_get_uint64(object))
            }
            return .int(signed)
        case json_type_double:
            return .double(json_object_get_double(object))
        case json_type_string:
            let length = Int(json_object_get_string_len(object))
            guard let pointer = json_object_get_string(object) else { return .string("") }
            let buffer = UnsafeRawBufferPointer(start: pointer, count: length)
            return .string(String(decoding: buffer, as: UTF8.self))
        case json_type_array:
            let count = json_object_array_length(object)
            var items: [JSONValue] = []
            items.reserveCapacity(count)
            for i in 0..<count {
                items.append(convert(json_object_array_get_idx(object, i)))
            }
            return .array(items)
        case json_type_object:
            var members: [(key: String, value: JSONValue)] = []
            members.reserveCapacity(Int(json_object_object_length(object)))
            var iterator = json_object_iter_begin(object)
            var end = json_object_iter_end(object)
            while json_object_iter_equal(&iterator, &end) == 0 {
                let key = String(cString: json_object_iter_peek_name(&iterator))
                let value = convert(json_object_iter_peek_value(&iterator))
                members.append((key, value))
                json_object_iter_next(&iterator)
            }
            return .object(members)
        default:
            return .null
        }
    }
}

extension JSONValue {
    /// Compact JSON text, with the escaping of the reference safetensors writer (serde_json):
    /// `"` and `\` escaped, control characters as `\b \f \n \r \t` or `\u00XX`, everything else
    /// (including non-ASCII) written as UTF-8. Object members keep their order.
    public var compactText: String {
        var out = ""
        write(to: &out)
        return out
    }

    /// Appends the compact text of this value to `out`.
    public func write(to out: inout String) {
        switch self {
        case .null: out += "null"
        case let .bool(b): out += b ? "true" : "false"
        case let .int(v): out += String(v)
        case let .uint(v): out += String(v)
        case let .double(v):
            if v.isFinite, v == v.rounded(), abs(v) < 1e15 { out += String(Int64(v)) + ".0" } else { out += "\(v)" }
        case let .string(s): JSONValue.writeString(s, to: &out)
        case let .array(items):
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += "," }
                item.write(to: &out)
            }
            out += "]"
        case let .object(members):
            out += "{"
            for (i, member) in members.enumerated() {
                if i > 0 { out += "," }
                JSONValue.writeString(member.key, to: &out)
                out += ":"
                member.value.write(to: &out)
            }
            out += "}"
        }
    }

    /// Appends `s` as a JSON string literal with serde_json's escaping.
    public static func writeString(_ s: String, to out: inout String) {
        out += "\""
        if !s.utf8.contains(where: { $0 < 0x20 || $0 == 0x22 || $0 == 0x5C }) {
            out += s
            out += "\""
            return
        }
        var run = ""
        for scalar in s.unicodeScalars {
            switch scalar.value {
            case 0x22: run += "\\\""
            case 0x5C: run += "\\\\"
            case 0x08: run += "\\b"
            case 0x0C: run += "\\f"
            case 0x0A: run += "\\n"
            case 0x0D: run += "\\r"
            case 0x09: run += "\\t"
            case 0..<0x20:
                let hex = String(scalar.value, radix: 16)
                run += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: run.unicodeScalars.append(scalar)
            }
        }
        out += run
        out += "\""
    }
}

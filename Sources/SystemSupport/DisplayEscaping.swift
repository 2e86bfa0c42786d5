/// `text` made safe to show on a terminal: a hostile tensor name, key or message cannot move the
/// cursor, ring the bell, hide text or reorder it. Newline, carriage return and tab become `\n`,
/// `\r`, `\t`; the backslash is doubled; the other C0 controls, DEL, the C1 controls, the line and
/// paragraph separators and the bidirectional controls (U+200E/F, U+202A–202E, U+2066–2069)
/// become `\u{HEX}`. Everything else is kept.
package func escapeForDisplay(_ text: String) -> String {
    var out = ""
    for scalar in text.unicodeScalars {
        switch scalar.value {
        case 0x0A: out += "\\n"
        case 0x0D: out += "\\r"
        case 0x09: out += "\\t"
        case 0x5C: out += "\\\\"
        case 0..<0x20, 0x7F..<0xA0, 0x2028, 0x2029, 0x200E, 0x200F, 0x202A...0x202E, 0x2066...0x2069:
            out += "\\u{" + String(scalar.value, radix: 16, uppercase: true) + "}"
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out
}

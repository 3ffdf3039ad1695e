// GPT-2 / tokenizers `ByteLevel`: every byte maps to one printable character. Printable bytes
// '!'..'~', '¡'..'¬', '®'..'ÿ' map to themselves, the other 68 to U+0100 + n in order
// (space -> 'Ġ', newline -> 'Ċ').

enum ByteLevel {
    static let byteToChar: [Character] = {
        var table = [Character](repeating: " ", count: 256)
        var n: UInt32 = 0
        for b in 0..<256 {
            let printable = (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b)
            if printable {
                table[b] = Character(Unicode.Scalar(UInt32(b))!)
            } else {
                table[b] = Character(Unicode.Scalar(256 + n)!)
                n += 1
            }
        }
        return table
    }()

    static let charToByte: [Unicode.Scalar: UInt8] = {
        var map: [Unicode.Scalar: UInt8] = [:]
        for (b, c) in byteToChar.enumerated() { map[c.unicodeScalars.first!] = UInt8(b) }
        return map
    }()

    /// The byte-level string of `text`'s UTF-8 bytes.
    static func encode(_ text: Substring) -> String {
        var s = String()
        s.reserveCapacity(text.utf8.count)
        for b in text.utf8 { s.append(byteToChar[Int(b)]) }
        return s
    }

    /// The bytes of one token string; a token with a character outside the map (an added
    /// token's raw content) contributes its own UTF-8, as tokenizers' ByteLevel decoder does.
    static func decode(_ token: String) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(token.unicodeScalars.count)
        for u in token.unicodeScalars {
            guard let b = charToByte[u] else { return Array(token.utf8) }
            out.append(b)
        }
        return out
    }
}

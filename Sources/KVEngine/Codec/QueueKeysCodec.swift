// How a queue message's dead-letter keys and backoff schedule are stored
// (shared by every backend, so `copy` moves them unchanged).

/// Encoding of `queue_messages.keys_if_undelivered`: for each key a 4-byte
/// big-endian length followed by the key bytes.
public enum QueueKeysCodec {
    public static func encode(_ keys: [Bytes]) -> Bytes {
        var out = Bytes()
        for k in keys {
            let n = UInt32(k.count)
            out += [UInt8(n >> 24), UInt8((n >> 16) & 0xFF), UInt8((n >> 8) & 0xFF), UInt8(n & 0xFF)]
            out += k
        }
        return out
    }

    public static func decode(_ bytes: Bytes) -> [Bytes]? {
        var keys: [Bytes] = []
        var i = 0
        while i < bytes.count {
            guard i + 4 <= bytes.count else { return nil }
            let n = Int(bytes[i]) << 24 | Int(bytes[i + 1]) << 16 | Int(bytes[i + 2]) << 8 | Int(bytes[i + 3])
            i += 4
            guard i + n <= bytes.count else { return nil }
            keys.append(Array(bytes[i..<(i + n)]))
            i += n
        }
        return keys
    }

    /// `backoff_schedule` column text: a JSON array of milliseconds.
    public static func encodeBackoff(_ schedule: [UInt32]) -> String {
        "[" + schedule.map(String.init).joined(separator: ",") + "]"
    }

    public static func decodeBackoff(_ text: String) -> [UInt32]? {
        let t = text.kvTrimmed()
        guard t.hasPrefix("["), t.hasSuffix("]") else { return nil }
        let inner = t.dropFirst().dropLast().kvTrimmed()
        if inner.isEmpty { return [] }
        var out: [UInt32] = []
        for part in inner.split(separator: ",") {
            guard let v = UInt32(part.kvTrimmed()) else { return nil }
            out.append(v)
        }
        return out
    }
}

private extension StringProtocol {
    func kvTrimmed() -> String {
        let chars: Set<Character> = [" ", "\n", "\t"]
        var s = Substring(self)
        while let f = s.first, chars.contains(f) { s.removeFirst() }
        while let l = s.last, chars.contains(l) { s.removeLast() }
        return String(s)
    }
}

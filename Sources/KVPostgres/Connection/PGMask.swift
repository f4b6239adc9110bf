import Foundation

/// Connection strings in logs and `location`: any password becomes "***".
public enum PGMask {
    public static func mask(_ s: String) -> String {
        var out = s
        // URI form: scheme://user:password@host
        if let scheme = out.range(of: "://"), let at = out[scheme.upperBound...].firstIndex(of: "@") {
            let userinfo = out[scheme.upperBound..<at]
            if let colon = userinfo.firstIndex(of: ":") {
                out.replaceSubrange(out.index(after: colon)..<at, with: "***")
            }
        }
        // password=… as a URI query parameter or a key=value pair (maybe quoted).
        let pattern = #"(password=)('([^'\\]|\\.)*'|[^&\s]*)"#
        if let re = try? NSRegularExpression(pattern: pattern, options: [.caseInsensitive]) {
            out = re.stringByReplacingMatches(
                in: out, range: NSRange(out.startIndex..., in: out), withTemplate: "$1***")
        }
        return out
    }
}

// Cross-site request forgery defences for the console's changes: a
// per-session token the page sends in a header (a cross-site form or image
// cannot set headers, and cannot read the token), a JSON body type (a
// cross-site form cannot send it without a CORS preflight, which we never
// grant), and the browser's Origin / Sec-Fetch-Site must name this site.

import Foundation

enum RequestGuard {
    /// Why a state-changing request looks cross-site; nil when it does not.
    static func crossSiteReason(_ header: (String) -> String?) -> String? {
        if let site = header("sec-fetch-site")?.lowercased(), site != "same-origin" {
            return "cross-site request refused (Sec-Fetch-Site: \(site))"
        }
        if let origin = header("origin") {
            guard let host = header("host") ?? header(":authority"),
                let r = origin.range(of: "://"), origin[r.upperBound...].lowercased() == host.lowercased()
            else {
                return "cross-site request refused (Origin \(origin) is not this server)"
            }
        }
        return nil
    }

    static func isJSON(_ contentType: String?) -> Bool {
        guard let t = contentType?.split(separator: ";").first else { return false }
        return t.trimmingCharacters(in: .whitespaces).lowercased() == "application/json"
    }

    /// Compares without an early exit.
    static func tokensMatch(_ presented: String?, _ expected: String) -> Bool {
        guard let presented else { return false }
        let a = Array(presented.utf8), b = Array(expected.utf8)
        guard a.count == b.count else { return false }
        var diff: UInt8 = 0
        for i in 0..<a.count { diff |= a[i] ^ b[i] }
        return diff == 0
    }

    /// A cookie's value from a Cookie header.
    static func cookie(_ name: String, in header: String?) -> String? {
        guard let header else { return nil }
        for part in header.split(separator: ";") {
            let kv = part.trimmingCharacters(in: .whitespaces)
            if kv.hasPrefix(name + "=") { return String(kv.dropFirst(name.count + 1)) }
        }
        return nil
    }

    /// Headers every console response carries: nothing inline may run, no
    /// other host is contacted, no framing, no type sniffing, no caching.
    static let securityHeaders: [(name: String, value: String)] = [
        (
            "content-security-policy",
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        ),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
        ("cache-control", "no-store")
    ]
}

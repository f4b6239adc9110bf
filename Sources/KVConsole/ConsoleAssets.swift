// The page itself: plain HTML, CSS and JavaScript from Assets/, compiled
// into the binary (SwiftPM embedInCode), so the console needs no build step,
// no other host and no files beside the executable.

enum ConsoleAssets {
    struct File {
        let contentType: String
        let bytes: [UInt8]
    }

    /// The file at a path under the console's base path, or nil.
    static func file(_ path: String) -> File? {
        switch path {
        case "/", "/index.html":
            return File(contentType: "text/html; charset=utf-8", bytes: PackageResources.index_html)
        case "/console.js":
            return File(contentType: "text/javascript; charset=utf-8", bytes: PackageResources.console_js)
        case "/console.css": return File(contentType: "text/css; charset=utf-8", bytes: PackageResources.console_css)
        case "/favicon.svg": return File(contentType: "image/svg+xml", bytes: PackageResources.favicon_svg)
        default: return nil
        }
    }
}

/// The daemon's version, shown by `--version` and the console.
enum BuildInfo {
    static let version = "0.1.0"
}

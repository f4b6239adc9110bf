import ArgumentParser
import Foundation

/// The settings' flags, shared by `serve` and `check-config`: parsed from
/// `SettingKey.all` (`--<key with dashes> VALUE` or `--flag=VALUE`; the last
/// of a repeated flag wins), listed in `--help` from the same table.
struct SettingFlags: ParsableArguments {
    @Argument(parsing: .allUnrecognized, help: .private)
    var arguments: [String] = []

    /// Flag values by setting key (only the flags given).
    func values(table: [any AnySettingSpec] = SettingKey.all) throws -> [String: String] {
        let byFlag = Dictionary(uniqueKeysWithValues: table.filter { $0.sources.contains(.flag) }.map { ($0.flag, $0) })
        var values: [String: String] = [:]
        var rest = arguments[...]
        while let arg = rest.popFirst() {
            guard arg.hasPrefix("--") else { throw ValidationError("Unexpected argument '\(arg)'") }
            let (name, inline) =
                arg.firstIndex(of: "=").map { (String(arg[..<$0]), String(arg[arg.index(after: $0)...])) } ?? (arg, nil)
            guard let spec = byFlag[name] else { throw ValidationError("Unknown option '\(name)'") }
            if let inline {
                values[spec.key] = inline
            } else if let next = rest.first, !next.hasPrefix("-") || next.dropFirst().first?.isNumber == true {
                // A negative number is a value (refused by the setting's own range check).
                values[spec.key] = next
                rest = rest.dropFirst()
            } else {
                throw ValidationError("Missing value for '\(spec.flag) \(spec.placeholder)'")
            }
        }
        return values
    }

    func validate() throws { _ = try values() }

    /// Bad configuration fails fast: one line on stderr, exit code 2.
    func resolve() async throws -> Settings {
        do {
            return try await Settings.resolve(flags: try values())
        } catch {
            FileHandle.standardError.write(Data("kvconnectd: configuration error: \(error)\n".utf8))
            throw ExitCode(2)
        }
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the daemon (default).", usage: "kvconnectd serve [--<setting> <value> ...]",
        discussion: SettingsReference.help())
    @OptionGroup var flags: SettingFlags

    func run() async throws {
        let settings = try await flags.resolve()
        LogBootstrap.bootstrap(format: settings.logFormat, level: settings.logLevel)
        _ = MetricsBackend.bootstrap()  // before the engine records its first commit
        let daemon: Daemon
        do {
            let given = try flags.values()
            daemon = try Daemon(settings: settings) { try await Settings.resolve(flags: given) }
        } catch {
            FileHandle.standardError.write(Data("kvconnectd: cannot start: \(error)\n".utf8))
            throw ExitCode(2)
        }
        await daemon.runUntilSignalled()
    }
}

struct CheckConfig: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Validate the configuration and print the effective settings (secrets masked).",
        usage: "kvconnectd check-config [--<setting> <value> ...]", discussion: SettingsReference.help())
    @OptionGroup var flags: SettingFlags

    func run() async throws {
        let settings = try await flags.resolve()
        for (k, v) in settings.summary { print("\(k) = \(v)") }
    }
}

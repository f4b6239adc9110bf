import ArgumentParser
import Configuration
import Foundation
import HTTPFront
import KVConnect
import KVEngine
import KVSQLite
import XCTest

@testable import kvconnectd

/// The settings table drives flags, environment variables, YAML keys,
/// validation, check-config and the component configurations: these tests
/// walk every entry rather than naming settings one by one.
final class SettingsTableTests: XCTestCase {
    var dir: URL!

    override func setUp() {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("kvconnectd-settings-\(UUID().uuidString)")
        try! FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(at: dir) }

    // MARK: Helpers

    /// A YAML file setting `key` to `text` (quoted only where YAML needs it).
    func yaml(_ pairs: [String: String]) async throws -> any ConfigProvider {
        let path = dir.appendingPathComponent("\(UUID().uuidString).yaml").path
        let body = pairs.map { key, text in
            let plain = !text.isEmpty && !"[{*&!|>'\"%@`".contains(text.first!) && !text.contains(": ")
            return "\(key): \(plain ? text : "\"\(text)\"")"
        }.joined(separator: "\n")
        try (body + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        return try await SettingValues.configFile(path)
    }

    /// Flags as the CLI parses them from argv.
    func flags(_ argv: [String]) throws -> [String: String] { try SettingFlags.parse(argv).values() }

    /// Two valid texts of `spec` whose values differ, the first not the default.
    func samples(_ spec: any AnySettingSpec) throws -> (String, String) {
        let valued = try spec.validSamples.map { ($0, spec.describeAny(try spec.parseAny($0))) }
        let defaultText = spec.describeAny(spec.defaultAny)
        let first = try XCTUnwrap(valued.first { $0.1 != defaultText }, "\(spec.key): no non-default sample")
        let second = try XCTUnwrap(valued.first { $0.1 != first.1 }, "\(spec.key): no second distinct sample")
        return (first.0, second.0)
    }

    func resolved(
        _ spec: any AnySettingSpec, flag: String? = nil, env: String? = nil, file: String? = nil
    ) async throws -> String {
        let argv = flag.map { [spec.flag, $0] } ?? []
        var provider: (any ConfigProvider)? = nil
        if let file { provider = try await yaml([spec.key: file]) }
        let values = try SettingValues.resolve(
            [spec], flags: try flags(argv), environment: env.map { [spec.environmentVariable: $0] } ?? [:],
            file: provider)
        return values.text(of: spec)
    }

    // MARK: Precedence

    func testEverySettingTakesFlagOverEnvironmentOverFileOverDefault() async throws {
        XCTAssertGreaterThanOrEqual(SettingKey.all.count, 36)
        for spec in SettingKey.all {
            let (winner, loser) = try samples(spec)
            let expected = spec.describeAny(try spec.parseAny(winner))
            let defaultText = spec.describeAny(spec.defaultAny)
            let allows = spec.sources
            if allows.contains(.flag) {
                let got = try await resolved(spec, flag: winner, env: loser, file: loser)
                XCTAssertEqual(got, expected, "\(spec.key): the flag wins over environment and file")
            }
            if allows.contains(.environment) {
                let got = try await resolved(spec, env: winner, file: loser)
                XCTAssertEqual(got, expected, "\(spec.key): the environment wins over the file")
            }
            let fromFile = try await resolved(spec, file: winner)
            XCTAssertEqual(
                fromFile, allows.contains(.file) ? expected : defaultText,
                "\(spec.key): the YAML file \(allows.contains(.file) ? "is read" : "is ignored")")
            let none = try await resolved(spec)
            XCTAssertEqual(none, defaultText, "\(spec.key): the default applies")
        }
    }

    func testFlagsAreDerivedFromKeysAndOnlyThoseParse() throws {
        for spec in SettingKey.all {
            XCTAssertEqual(spec.flag, "--" + spec.key.replacingOccurrences(of: "_", with: "-"))
            XCTAssertEqual(spec.environmentVariable, "KVCONNECTD_" + spec.key.uppercased())
            guard spec.sources.contains(.flag) else {
                XCTAssertThrowsError(try flags([spec.flag, "x"]), "\(spec.key) is not a flag")
                continue
            }
            XCTAssertEqual(try flags(["\(spec.flag)=v1", spec.flag, "v2"])[spec.key], "v2", "the last flag wins")
            XCTAssertThrowsError(try flags([spec.flag]), "\(spec.key) without a value")
        }
        XCTAssertEqual(Set(SettingKey.all.map(\.key)).count, SettingKey.all.count, "keys are unique")
        XCTAssertThrowsError(try flags(["--no-such-setting", "1"]))
        XCTAssertThrowsError(try flags(["stray"]))
    }

    /// Every flag the daemon accepted before the table existed still parses.
    func testEarlierFlagsStillParse() throws {
        let earlier = """
            config listen database database-password-file replica-database replica-max-lag-ms databases-file \
            read-only-access-token-file access-token-file signing-key-file token-lifetime-seconds max-body-bytes \
            io-threads max-connections max-connections-per-ip http2-max-concurrent-streams request-timeout-seconds \
            idle-timeout-seconds shutdown-grace-seconds watch-ping-interval-ms synchronous public-url log-level \
            log-format tls-cert-file tls-key-file queue-webhook-url queue-webhook-secret-file queue-webhook-timeout-ms \
            queue-concurrency queue-visibility-timeout-ms queue-long-poll-max-ms console console-listen queue-max-leases
            """.split(separator: " ")
        XCTAssertEqual(earlier.count, 35)
        for name in earlier {
            XCTAssertEqual(try flags(["--\(name)", "v"]).count, 1, "--\(name)")
        }
    }

    // MARK: Validation

    func testInvalidValuesAreRefusedNamingTheKey() async throws {
        var checked = 0
        for spec in SettingKey.all {
            for bad in spec.invalidSamples {
                for source in ["flag", "env", "file"] {
                    do {
                        _ = try await resolved(
                            spec, flag: source == "flag" && spec.sources.contains(.flag) ? bad : nil,
                            env: source == "env" ? bad : nil, file: source == "file" ? bad : nil)
                        XCTFail("\(spec.key) accepted '\(bad)' from \(source)")
                    } catch let error as Settings.Invalid {
                        XCTAssertTrue(error.description.contains(spec.key), "\(error) names \(spec.key)")
                        XCTAssertTrue(error.description.contains("'\(bad)'"), "\(error) quotes the value")
                        checked += 1
                    }
                }
            }
        }
        // Integers, addresses, choices, URLs: most settings can be wrong.
        XCTAssertGreaterThan(checked, 60)
    }

    func testSettingsThatOnlyMakeSenseTogetherAreChecked() async throws {
        let env = ["KVCONNECTD_ACCESS_TOKEN": "a-long-enough-token"]
        let db = dir.appendingPathComponent("kv.sqlite3").path
        func refuses(_ argv: [String], _ needle: String, env extra: [String: String] = [:]) async {
            do {
                _ = try await Settings.resolve(
                    flags: try flags(["--database", db] + argv), environment: env.merging(extra) { $1 })
                XCTFail("\(argv) accepted")
            } catch {
                XCTAssertTrue("\(error)".contains(needle), "\(error) should say \(needle)")
            }
        }
        await refuses(["--tls-cert-file", "/c.pem"], "tls_cert_file and tls_key_file must be set together")
        await refuses(["--queue-webhook-url", "http://h/q"], "queue_webhook_secret_file is not")
        await refuses(["--replica-database", "postgres://u:pw@h/db"], "--replica-database holds a password")
        do {
            _ = try await Settings.resolve(flags: ["database": db], environment: [:])
            XCTFail("no access token accepted")
        } catch {
            XCTAssertTrue("\(error)".contains("no access token"), "\(error)")
        }
        do {
            _ = try await Settings.resolve(flags: ["database": "postgres://u:pw@h/db"], environment: env)
            XCTFail("password on argv accepted")
        } catch {
            XCTAssertTrue("\(error)".contains("KVCONNECTD_DATABASE"), "\(error) names the environment variable")
            XCTAssertFalse("\(error)".contains("pw@"), "\(error) shows the password")
        }
    }

    // MARK: check-config

    func testSecretsAreMasked() async throws {
        let token = "token-0123456789-SECRET"
        let hookSecret = dir.appendingPathComponent("hook")
        try "hook-secret-0123456789-SECRET".write(to: hookSecret, atomically: true, encoding: .utf8)
        let settings = try await Settings.resolve(
            flags: try flags(["--queue-webhook-url", "http://h/q", "--queue-webhook-secret-file", hookSecret.path]),
            environment: [
                "KVCONNECTD_ACCESS_TOKEN": token,
                "KVCONNECTD_DATABASE": "postgres://u:pw-SECRET@h/db",
                "KVCONNECTD_REPLICA_DATABASE": "postgres://u:pw2-SECRET@h2/db"
            ])
        let lines = settings.summary
        let text = lines.map { "\($0.0) = \($0.1)" }.joined(separator: "\n")
        XCTAssertFalse(text.contains("SECRET"), text)
        for spec in SettingKey.all where spec.isSecret {
            let line = try XCTUnwrap(lines.first { $0.0 == spec.key }, "\(spec.key) has a line")
            XCTAssertTrue(line.1.hasPrefix("********"), "\(spec.key) = \(line.1)")
        }
        XCTAssertTrue(SettingKey.all.contains { $0.isSecret }, "the access token is a secret")
        XCTAssertEqual(settings.accessToken, token, "masked in the listing, not in use")
    }

    func testCheckConfigListsSettingsInTableOrder() async throws {
        let settings = try await Settings.resolve(
            flags: try flags(["--database", dir.appendingPathComponent("kv.sqlite3").path]),
            environment: ["DENO_KV_ACCESS_TOKEN": "a-long-enough-token"])
        let keys = settings.summary.map(\.0)
        let tableOrder = SettingKey.all.map(\.key).filter { keys.contains($0) }
        XCTAssertEqual(keys.filter { !$0.hasPrefix("database.") }, tableOrder)
        XCTAssertTrue(keys.contains("database.default"))
        XCTAssertEqual(Set(keys).count, keys.count)
    }

    // MARK: Components

    /// A setting bound to a component field fills it, and takes its default
    /// from it (one home for each default).
    func testBoundSettingsFillTheirComponentFields() async throws {
        var argv: [String] = []
        var expected: [String: String] = [:]
        for spec in SettingKey.all
        where spec.componentText(HTTPServerConfiguration.defaults) != nil
            || spec.componentText(ServiceConfiguration.defaults) != nil
            || spec.componentText(SQLiteStoreOptions.defaults) != nil
            || spec.componentText(QueuePushOptions.defaults) != nil
        {
            let (sample, _) = try samples(spec)
            argv += [spec.flag, sample]
            expected[spec.key] = spec.describeAny(try spec.parseAny(sample))
        }
        XCTAssertGreaterThanOrEqual(expected.count, 18)
        let values = try SettingValues.resolve(SettingKey.all, flags: try flags(argv), environment: [:], file: nil)
        var front = HTTPServerConfiguration.defaults
        var service = ServiceConfiguration.defaults
        var store = SQLiteStoreOptions.defaults
        var push = QueuePushOptions.defaults
        values.configure(&front)
        values.configure(&service)
        values.configure(&store)
        values.configure(&push)
        var seen = 0
        for spec in SettingKey.all {
            let defaults = componentText(
                spec,
                [
                    HTTPServerConfiguration.defaults, ServiceConfiguration.defaults,
                    SQLiteStoreOptions.defaults, QueuePushOptions.defaults
                ])
            let configured = componentText(spec, [front, service, store, push])
            guard let configured, let defaults else { continue }
            XCTAssertEqual(configured, expected[spec.key], "\(spec.key) reaches its component")
            XCTAssertEqual(defaults, spec.describeAny(spec.defaultAny), "\(spec.key)'s default is the component's")
            seen += 1
        }
        XCTAssertEqual(seen, expected.count)
    }

    private func componentText(_ spec: any AnySettingSpec, _ roots: [any Sendable]) -> String? {
        roots.lazy.compactMap { spec.componentText($0) }.first
    }

    // MARK: Documentation

    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// docs/settings.md is the table's `markdown()`; `make settings-doc` rewrites it.
    func testSettingsDocIsGeneratedFromTheTable() throws {
        let url = Self.root.appendingPathComponent("docs/settings.md")
        let generated = SettingsReference.markdown()
        if ProcessInfo.processInfo.environment["KVCONNECTD_WRITE_SETTINGS_DOC"] == "1" {
            try generated.write(to: url, atomically: true, encoding: .utf8)
        }
        let committed = try String(contentsOf: url, encoding: .utf8)
        XCTAssertEqual(committed, generated, "docs/settings.md is out of date: run make settings-doc")
    }

    /// The example config names every YAML key, and the defaults it shows are the table's.
    func testExampleConfigNamesEveryKeyWithTheTablesDefaults() throws {
        let text = try String(contentsOf: Self.root.appendingPathComponent("config/kvconnectd.yaml"), encoding: .utf8)
        let regex = try NSRegularExpression(pattern: "^(?:# )?([a-z][a-z0-9_]*): (.*)$", options: .anchorsMatchLines)
        var shown: [String: String] = [:]
        for m in regex.matches(in: text, range: NSRange(text.startIndex..., in: text)) {
            shown[String(text[Range(m.range(at: 1), in: text)!])] = String(text[Range(m.range(at: 2), in: text)!])
        }
        let byKey = Dictionary(uniqueKeysWithValues: SettingKey.all.map { ($0.key, $0) })
        for spec in SettingKey.all where spec.sources.contains(.file) {
            XCTAssertNotNil(shown[spec.key], "config/kvconnectd.yaml lacks \(spec.key)")
        }
        var compared = 0
        for (key, value) in shown {
            let spec = try XCTUnwrap(byKey[key], "config/kvconnectd.yaml names \(key), which is no setting")
            guard let def = spec.defaultText else { continue }
            XCTAssertEqual(spec.describeAny(try spec.parseAny(value)), def, "\(key) in config/kvconnectd.yaml")
            compared += 1
        }
        XCTAssertGreaterThan(compared, 20)
    }

    // MARK: --help

    func testHelpListsEverySetting() {
        let lines = SettingsReference.help().split(separator: "\n")
        // Words as a reader sees them, whatever the wrapping.
        let help = lines.flatMap { $0.split(separator: " ") }.joined(separator: " ")
        for spec in SettingKey.all {
            XCTAssertTrue(help.contains(spec.environmentVariable), spec.environmentVariable)
            if spec.sources.contains(.flag) { XCTAssertTrue(help.contains(spec.flag + " "), spec.flag) }
            if spec.sources.contains(.file) { XCTAssertTrue(help.contains("YAML \(spec.key)"), spec.key) }
            if let def = spec.defaultText { XCTAssertTrue(help.contains("Default: \(def)."), "\(spec.key) default") }
        }
        XCTAssertTrue(lines.allSatisfy { $0.count <= 80 }, "fits 80 columns")
    }
}

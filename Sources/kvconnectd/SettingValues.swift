import Configuration
import Foundation
import SystemPackage

/// Every setting of a table, resolved by swift-configuration from flags >
/// environment (`KVCONNECTD_*`) > YAML config file > defaults, each parsed
/// and validated by its kind. Read one as `values[SettingKey.listen]`.
struct SettingValues: Sendable {
    private var values: [String: any Sendable]

    subscript<V>(_ spec: SettingSpec<V>) -> V {
        guard let value = values[spec.key] else { preconditionFailure("setting \(spec.key) is not in SettingKey.all") }
        return value as! V
    }

    /// The value's text as check-config and `--help` write it.
    func text(of spec: any AnySettingSpec) -> String { spec.describeAny(values[spec.key]!) }

    /// Sets `root`'s fields from the settings bound to `Root`.
    func configure<Root: ComponentConfiguration>(_ root: inout Root, table: [any AnySettingSpec] = SettingKey.all) {
        var boxed: any Sendable = root
        for spec in table { spec.applyAny(values[spec.key]!, to: &boxed, rootType: ObjectIdentifier(Root.self)) }
        root = boxed as! Root
    }

    /// - Parameters:
    ///   - flags: text by key, only the flags given.
    ///   - file: the YAML config file's provider, if any.
    static func resolve(
        _ table: [any AnySettingSpec], flags: [String: String], environment: [String: String],
        file: (any ConfigProvider)?
    ) throws -> SettingValues {
        let flagProvider = InMemoryProvider(
            name: "flags",
            values: Dictionary(
                uniqueKeysWithValues: flags.map {
                    (AbsoluteConfigKey([$0.key]), ConfigValue(.string($0.value), isSecret: false))
                }
            ))
        let secretVariables = Set(table.filter(\.isSecret).map(\.environmentVariable))
        let envProvider = KeyMappingProvider(
            upstream: EnvironmentVariablesProvider(
                environmentVariables: environment, secretsSpecifier: .specific(secretVariables))
        ) { $0.prepending(["kvconnectd"]) }
        var readers: [Int: ConfigReader] = [:]
        func reader(_ sources: SettingSources) -> ConfigReader {
            if let r = readers[sources.rawValue] { return r }
            var providers: [any ConfigProvider] = []
            if sources.contains(.flag) { providers.append(flagProvider) }
            if sources.contains(.environment) { providers.append(envProvider) }
            if sources.contains(.file), let file { providers.append(file) }
            let r = ConfigReader(providers: providers)
            readers[sources.rawValue] = r
            return r
        }
        var values: [String: any Sendable] = [:]
        for spec in table {
            let text = reader(spec.sources).string(forKey: ConfigKey([spec.key]))
            values[spec.key] = try text.map(spec.parseAny) ?? spec.defaultAny
        }
        return SettingValues(values: values)
    }

    /// The YAML config file's provider; a missing or malformed file is a
    /// configuration error.
    static func configFile(_ path: String) async throws -> any ConfigProvider {
        guard FileManager.default.fileExists(atPath: path) else {
            throw Settings.Invalid(description: "config file not found: \(path)")
        }
        do {
            return try await FileProvider<YAMLSnapshot>(filePath: FilePath(path))
        } catch {
            throw Settings.Invalid(description: "config file \(path) is not valid YAML: \(error)")
        }
    }
}

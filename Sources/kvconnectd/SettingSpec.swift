import Foundation

/// Where a setting may be given. Precedence, highest first: flag, environment, file.
struct SettingSources: OptionSet, Sendable {
    let rawValue: Int
    static let flag = SettingSources(rawValue: 1)
    static let environment = SettingSources(rawValue: 2)
    static let file = SettingSources(rawValue: 4)
    static let all: SettingSources = [.flag, .environment, .file]
}

/// How a setting's text becomes a value: parsing and validation, the text
/// check-config prints, and the placeholder `--help` shows.
struct SettingKind<Value: Sendable>: Sendable {
    let placeholder: String
    /// Throws `Settings.Invalid` naming `key`.
    let parse: @Sendable (_ text: String, _ key: String) throws -> Value
    let describe: @Sendable (Value) -> String
    /// Texts this kind refuses, and texts it accepts with values that differ
    /// from each other (the generic tests walk every setting with them).
    let invalidSamples: [String]
    let validSamples: [String]
}

/// One setting, declared once (in `SettingKey`): its key is the YAML key,
/// the flag is `--` + the key with dashes, the environment variable
/// `KVCONNECTD_` + the key in upper case. The default comes from the
/// component the setting configures when there is one (`binding`), so it has
/// one home.
struct SettingSpec<Value: Sendable>: Sendable {
    let key: String
    let help: String
    let kind: SettingKind<Value>
    let defaultValue: Value
    let sources: SettingSources
    /// Secret values are never printed: check-config shows `********`.
    let isSecret: Bool
    let binding: ComponentBinding<Value>?
    /// check-config lines (none when shown with another setting), given the
    /// whole resolved settings.
    let summary: @Sendable (Value, Settings) -> [(String, String)]

    /// A setting with its own default.
    init(
        _ key: String, _ kind: SettingKind<Value>, default defaultValue: Value, sources: SettingSources = .all,
        secret: Bool = false, summary: SummaryStyle = .value, help: String
    ) {
        self.key = key
        self.kind = kind
        self.defaultValue = defaultValue
        self.sources = sources
        self.isSecret = secret
        self.binding = nil
        // A secret's own text never reaches a line.
        if secret, case .value = summary {
            self.summary = SummaryStyle.custom { _, _ in "" }.render(key, kind)
        } else {
            self.summary = summary.render(key, kind)
        }
        self.help = help
    }

    /// A setting that fills a component's configuration field; its default is
    /// that field's default.
    init(
        _ key: String, _ kind: SettingKind<Value>, sets binding: ComponentBinding<Value>,
        summary: SummaryStyle = .value, help: String
    ) {
        self.key = key
        self.kind = kind
        self.defaultValue = binding.defaultValue()
        self.sources = .all
        self.isSecret = false
        self.binding = binding
        self.summary = summary.render(key, kind)
        self.help = help
    }

    enum SummaryStyle {
        /// `key = describe(value)`.
        case value
        /// Shown as part of another setting's line.
        case withOther
        /// `key = f(value, settings)`; for a secret, `key = ******** f(...)`
        /// (f says where the secret came from, never what it is).
        case custom(@Sendable (Value, Settings) -> String)
        /// Lines of their own keys (one per database).
        case lines(@Sendable (Value, Settings) -> [(String, String)])

        func render(_ key: String, _ kind: SettingKind<Value>) -> @Sendable (Value, Settings) -> [(String, String)] {
            switch self {
            case .value:
                let describe = kind.describe
                return { v, _ in [(key, describe(v))] }
            case .withOther: return { _, _ in [] }
            case .custom(let f): return { v, s in [(key, f(v, s))] }
            case .lines(let f): return f
            }
        }
    }

    var flag: String { "--" + key.replacingOccurrences(of: "_", with: "-") }
    var environmentVariable: String { "KVCONNECTD_" + key.uppercased() }
}

/// The table's entries without their value type, for the walks over all of
/// them (resolution, help, check-config, tests).
protocol AnySettingSpec: Sendable {
    var key: String { get }
    var help: String { get }
    var flag: String { get }
    var environmentVariable: String { get }
    var sources: SettingSources { get }
    var isSecret: Bool { get }
    var placeholder: String { get }
    /// nil when the default is "not set".
    var defaultText: String? { get }
    var invalidSamples: [String] { get }
    var validSamples: [String] { get }
    func parseAny(_ text: String) throws -> any Sendable
    var defaultAny: any Sendable { get }
    func describeAny(_ value: any Sendable) -> String
    func summaryLines(_ settings: Settings) -> [(String, String)]
    func applyAny(_ value: any Sendable, to root: inout any Sendable, rootType: ObjectIdentifier)
    /// The bound field's text in `root`, if this setting fills `root`'s type.
    func componentText(_ root: any Sendable) -> String?
}

extension SettingSpec: AnySettingSpec {
    var placeholder: String { kind.placeholder }
    var defaultText: String? {
        let mirror = Mirror(reflecting: defaultValue)
        return mirror.displayStyle == .optional && mirror.children.isEmpty ? nil : kind.describe(defaultValue)
    }
    var invalidSamples: [String] { kind.invalidSamples }
    var validSamples: [String] { kind.validSamples }
    func parseAny(_ text: String) throws -> any Sendable { try kind.parse(text, key) }
    var defaultAny: any Sendable { defaultValue }
    func describeAny(_ value: any Sendable) -> String { kind.describe(value as! Value) }
    func summaryLines(_ settings: Settings) -> [(String, String)] {
        let lines = summary(settings[self], settings)
        return isSecret ? lines.map { ($0.0, "********" + ($0.1.isEmpty ? "" : " " + $0.1)) } : lines
    }
    func applyAny(_ value: any Sendable, to root: inout any Sendable, rootType: ObjectIdentifier) {
        guard let binding, binding.rootType == rootType else { return }
        binding.apply(value as! Value, &root)
    }
    func componentText(_ root: any Sendable) -> String? {
        guard let binding, binding.rootType == ObjectIdentifier(type(of: root)) else { return nil }
        return kind.describe(binding.read(root))
    }
}

/// A component configuration: its default instance is the home of the
/// defaults of the settings that fill it.
protocol ComponentConfiguration: Sendable {
    static var defaults: Self { get }
}

/// The field (or fields) of a component configuration a setting fills.
struct ComponentBinding<Value: Sendable>: Sendable {
    let rootType: ObjectIdentifier
    let defaultValue: @Sendable () -> Value
    let apply: @Sendable (Value, inout any Sendable) -> Void
    let read: @Sendable (any Sendable) -> Value

    /// Fills `Root`'s field through `get`/`set`; the default is `get(Root.defaults)`.
    static func fields<Root: ComponentConfiguration>(
        of _: Root.Type, get: @escaping @Sendable (Root) -> Value, set: @escaping @Sendable (inout Root, Value) -> Void
    ) -> Self {
        ComponentBinding(
            rootType: ObjectIdentifier(Root.self), defaultValue: { get(Root.defaults) },
            apply: { value, root in
                var typed = root as! Root
                set(&typed, value)
                root = typed
            }, read: { get($0 as! Root) })
    }

    static func field<Root: ComponentConfiguration>(_ keyPath: WritableKeyPath<Root, Value> & Sendable) -> Self {
        fields(of: Root.self, get: { $0[keyPath: keyPath] }, set: { $0[keyPath: keyPath] = $1 })
    }
}

/// `HOST:PORT` (IPv6 hosts in brackets).
struct HostPort: Sendable, Equatable, CustomStringConvertible {
    var host: String
    var port: Int
    var description: String { "\(host):\(port)" }
}

// MARK: - Kinds

extension SettingKind {
    typealias Invalid = Settings.Invalid
}

extension SettingKind where Value: FixedWidthInteger {
    /// An integer in `min...max`.
    static func integer(min: Value, max: Value = .max) -> Self {
        SettingKind(
            placeholder: "<n>",
            parse: { text, key in
                guard let v = Value(text), v >= min, v <= max else {
                    let range = max == .max ? ">= \(min)" : "from \(min) to \(max)"
                    throw Invalid(description: "invalid \(key) '\(text)': expected an integer \(range)")
                }
                return v
            },
            describe: { String($0) }, invalidSamples: ["x", min == .min ? "" : String(min - 1)].filter { !$0.isEmpty },
            validSamples: [String(min), String(min + 1), String(min + 2)])
    }
}

extension SettingKind where Value == HostPort {
    static let hostPort = SettingKind(
        placeholder: "<host:port>",
        parse: { text, key in
            guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
                (0...65535).contains(port)
            else {
                throw Invalid(description: "invalid \(key) address '\(text)': expected HOST:PORT")
            }
            return HostPort(
                host: String(text[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]")), port: port)
        },
        describe: { $0.description }, invalidSamples: ["nonsense", "h:70000"],
        validSamples: ["127.0.0.1:7001", "127.0.0.1:7002", "[::1]:7003"])
}

extension SettingKind where Value == HostPort? {
    /// `HOST:PORT`, or empty for none.
    static let optionalHostPort = SettingKind(
        placeholder: "<host:port>",
        parse: { text, key in text.isEmpty ? nil : try SettingKind<HostPort>.hostPort.parse(text, key) },
        describe: { $0?.description ?? "" }, invalidSamples: ["nonsense"],
        validSamples: ["127.0.0.1:7001", "127.0.0.1:7002"])
}

extension SettingKind where Value == String? {
    /// Free text (a path, a URI): checked where it is used.
    static func text(_ placeholder: String, none: String = "") -> Self {
        SettingKind(
            placeholder: placeholder, parse: { text, _ in text }, describe: { $0 ?? none }, invalidSamples: [],
            validSamples: ["/a", "/b", "/c"])
    }
}

extension SettingKind where Value == String {
    static func text(_ placeholder: String) -> Self {
        SettingKind(
            placeholder: placeholder, parse: { text, _ in text }, describe: { $0 }, invalidSamples: [],
            validSamples: ["/a", "/b", "/c"])
    }
}

extension SettingKind {
    /// One of a few words (case-insensitive). `noun` names the setting in the
    /// error ("log level"); the key is added when the noun is not the key.
    static func choice(_ words: KeyValuePairs<String, Value>, noun: String? = nil, expected: String) -> Self
    where Value: Equatable {
        let table = Array(words)
        return SettingKind(
            placeholder: "<" + table.map(\.key).joined(separator: "|") + ">",
            parse: { text, key in
                if let hit = table.first(where: { $0.key == text.lowercased() }) { return hit.value }
                let what = noun.map { $0.contains(key) ? "\($0) '\(text)'" : "\($0) '\(text)' (\(key))" }
                throw Invalid(description: "invalid \(what ?? "\(key) '\(text)'"): expected \(expected)")
            },
            describe: { value in table.first { $0.value == value }!.key }, invalidSamples: ["bogus"],
            validSamples: table.map(\.key))
    }
}

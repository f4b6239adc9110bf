/// The settings table written for people: `serve --help` / `check-config
/// --help`, and docs/settings.md (kept equal to `markdown()` by a test).
enum SettingsReference {
    /// `--help`'s list of settings, in table order, within 80 columns.
    static func help(table: [any AnySettingSpec] = SettingKey.all) -> String {
        let column = 26
        var lines = [
            "SETTINGS (each a flag, an environment variable and a YAML key; that is the",
            "precedence, then the default):"
        ]
        for spec in table {
            let label =
                "  " + (spec.sources.contains(.flag) ? "\(spec.flag) \(spec.placeholder)" : spec.environmentVariable)
            var body = wrap(description(spec), width: 78 - column) + wrap(origins(spec), width: 78 - column)
            if label.count + 2 <= column {
                lines.append(label.padding(toLength: column, withPad: " ", startingAt: 0) + body.removeFirst())
            } else {
                lines.append(label)
            }
            lines += body.map { String(repeating: " ", count: column) + $0 }
        }
        return lines.joined(separator: "\n")
    }

    /// docs/settings.md.
    static func markdown(table: [any AnySettingSpec] = SettingKey.all) -> String {
        var out = """
            # Settings

            Generated from the settings table (`Sources/kvconnectd/SettingKey.swift`) by
            `make settings-doc`; a unit test fails when this file and the table differ.
            Precedence, highest first: command-line flag, environment variable, YAML
            config file (`--config FILE` or `KVCONNECTD_CONFIG`; example:
            `config/kvconnectd.yaml`), default. `kvconnectd check-config` prints the
            effective values with secrets masked; an invalid value exits with code 2
            and a one-line reason naming the setting.

            | YAML key | flag | environment variable | default | meaning |
            |---|---|---|---|---|

            """
        for spec in table {
            let flag = spec.sources.contains(.flag) ? "`\(spec.flag) \(spec.placeholder)`" : "(none)"
            let key = spec.sources.contains(.file) ? "`\(spec.key)`" : "(not in the file)"
            let def = spec.defaultText.map { "`\($0)`" } ?? ""
            let secret = spec.isSecret ? " Secret: never printed or logged." : ""
            let text = (spec.help + secret).replacingOccurrences(of: "|", with: "\\|")
            let env = "`\(spec.environmentVariable)`"
            out +=
                "| \(key) | \(flag.replacingOccurrences(of: "|", with: "\\|")) | \(env) | \(def) | \(text) |\n"
        }
        return out
    }

    private static func description(_ spec: any AnySettingSpec) -> String {
        spec.help + (spec.defaultText.map { " Default: \($0)." } ?? "")
    }

    private static func origins(_ spec: any AnySettingSpec) -> String {
        var from: [String] = []
        if spec.sources.contains(.flag) { from.append("env \(spec.environmentVariable)") }
        if spec.sources.contains(.file) { from.append("YAML \(spec.key)") }
        if !spec.sources.contains(.flag) { from.append("environment only") }
        if !spec.sources.contains(.file) && spec.sources.contains(.flag) { from.append("not in the YAML file") }
        return from.joined(separator: ", ")
    }

    private static func wrap(_ text: String, width: Int) -> [String] {
        var lines: [String] = []
        var line = ""
        for word in text.split(separator: " ") {
            if !line.isEmpty && line.count + 1 + word.count > width {
                lines.append(line)
                line = ""
            }
            line += (line.isEmpty ? "" : " ") + word
        }
        return lines + [line]
    }
}

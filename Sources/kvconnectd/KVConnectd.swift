import ArgumentParser

@main
struct KVConnectd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kvconnectd",
        abstract:
            "A KV Connect server: Deno.openKv(\"http://host:4512\") against a durable SQLite or PostgreSQL database.",
        discussion: """
            Settings come from, highest precedence first: command-line flags, environment
            variables (KVCONNECTD_<SETTING>, e.g. KVCONNECTD_LISTEN), the YAML config file
            (--config or KVCONNECTD_CONFIG; example in config/kvconnectd.yaml), defaults.
            The access token is read from --access-token-file, KVCONNECTD_ACCESS_TOKEN or
            DENO_KV_ACCESS_TOKEN; it is never taken from argv and never logged.
            """,
        version: BuildInfo.version,
        subcommands: [
            Serve.self, CheckConfig.self, Backup.self, Restore.self, Export.self, Import.self, QueueCommand.self,
            Copy.self, RotateSigningKey.self, Pitr.self
        ],
        defaultSubcommand: Serve.self
    )
}

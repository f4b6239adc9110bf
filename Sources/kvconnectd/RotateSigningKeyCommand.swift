// `kvconnectd rotate-signing-key URI`: a new data-plane token signing key for
// a PostgreSQL database, shared by every daemon serving it.

import ArgumentParser
import Foundation
import KVPostgres

struct RotateSigningKey: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rotate-signing-key",
        abstract: "Add a new signing key for data-plane tokens to a PostgreSQL database (daemons keep serving).",
        discussion: """
            Daemons start signing with the new key within seconds and keep accepting tokens
            signed with the previous key, so no client is logged out. The database keeps the
            newest two keys: rotating again retires the key before, whose tokens then fail.
            So a rotation is refused while the current key is younger than the token lifetime,
            unless --force. The password comes from PGPASSWORD, PGPASSFILE or ~/.pgpass.
            (SQLite databases: replace the signing key file and restart the daemon.)
            """)
    @Argument(help: "postgres:// URI of the database.")
    var database: String
    @Option(help: "The daemons' token_lifetime_seconds (default 3600).")
    var tokenLifetimeSeconds: Int64 = 3600
    @Flag(help: "Rotate even if that retires a key whose tokens may still be in use.")
    var force = false

    func run() throws {
        do {
            guard case .postgres(let uri) = try DatabaseLocation(database) else {
                throw Settings.Invalid(
                    description:
                        "\(database) is not a postgres:// URI (SQLite: replace the signing key file and restart)")
            }
            if uri.hasPassword {
                throw Settings.Invalid(
                    description:
                        "the URI holds a password, which every local user can read in the process list: use PGPASSWORD, PGPASSFILE or ~/.pgpass"
                )
            }
            let store = try PostgresStore(url: uri.text)
            defer { store.close() }
            let keys = try store.signingKeys()
            let nowMs = Int64(Date().timeIntervalSince1970 * 1000)
            // Tokens signed with the key about to be retired were issued until the
            // daemons switched to the current key (within a refresh interval).
            let safeAfterMs = tokenLifetimeSeconds * 1000 + Int64(SharedSigningKeys.refreshSeconds * 1000)
            if keys.count >= 2, let newest = keys.first, nowMs - newest.createdAtMs < safeAfterMs, !force {
                let age = (nowMs - newest.createdAtMs) / 1000
                throw Settings.Invalid(
                    description:
                        "the current key is \(age) s old, younger than the token lifetime (\(tokenLifetimeSeconds) s) plus the daemons' refresh interval: rotating now would retire the previous key while tokens signed with it are in use. Wait, or use --force"
                )
            }
            let after = try store.rotateSigningKey(
                keyId: UUID().uuidString.lowercased(), secret: try SigningKey.random())
            print(
                "rotate-signing-key: \(uri.masked): database \(store.databaseId), new key \(after.first?.keyId ?? "?"), \(after.count) keys kept (daemons pick it up within \(Int(SharedSigningKeys.refreshSeconds)) s)"
            )
        } catch {
            FileHandle.standardError.write(Data("kvconnectd rotate-signing-key: \(error)\n".utf8))
            throw ExitCode(2)
        }
    }
}

// The connection of one of the store's threads (writer, queue dispatcher,
// sweeper): made on first use, made again after it broke, closed when the
// thread ends. The threads' shared skeleton: connect, work, reconnect.

/// @unchecked Sendable: only the owning thread touches it (its owner hands it
/// over once, at start, and closes it only after that thread was joined or
/// on that thread).
final class PGSession: @unchecked Sendable {
    private let connect: () throws -> PGConnection
    /// Runs on every new connection before it is used (e.g. take a lock).
    private let prepare: (PGConnection) throws -> Void
    /// The current connection, nil until the next `connected()` makes one.
    var conn: PGConnection?

    init(
        _ first: PGConnection? = nil, connect: @escaping () throws -> PGConnection,
        prepare: @escaping (PGConnection) throws -> Void = { _ in }
    ) {
        conn = first
        self.connect = connect
        self.prepare = prepare
    }

    /// The live connection, or a new one in place of a broken one.
    func connected() throws -> PGConnection {
        if let c = conn, !c.isBroken { return c }
        conn?.close()
        conn = nil
        let c = try connect()
        do {
            try prepare(c)
        } catch {
            c.close()
            throw error
        }
        conn = c
        return c
    }

    /// After a failed statement: leaves no transaction open, and drops the
    /// connection when it was lost (the next `connected()` makes another).
    func recover(from error: Error) {
        conn?.rollbackQuietly()
        if (error as? PGError)?.kind == .connectionLost { close() }
    }

    func close() {
        conn?.close()
        conn = nil
    }
}

import Synchronization

/// The configured certificate/key paths and the credentials new connections get.
final class TLSContext: Sendable {
    let certFile: String
    let keyFile: String
    private let current: Mutex<TLSCredentials>

    init(certFile: String, keyFile: String) throws {
        self.certFile = certFile
        self.keyFile = keyFile
        current = Mutex(try TLSCredentials(certFile: certFile, keyFile: keyFile))
    }

    var credentials: TLSCredentials { current.withLock { $0 } }

    /// Loads the files again; on failure the old credentials stay.
    func reload() throws {
        let fresh = try TLSCredentials(certFile: certFile, keyFile: keyFile)
        current.withLock { $0 = fresh }
    }
}

import Foundation

/// The secret that signs data-plane tokens. It lives in a file (mode 0600) so
/// tokens stay valid across restarts; a client holding one would otherwise
/// get 401 — fatal for Deno — after every restart.
enum SigningKey {
    static func loadOrCreate(path: String) throws -> [UInt8] {
        if let data = FileManager.default.contents(atPath: path) {
            guard data.count >= 32 else {
                throw Settings.Invalid(
                    description: "signing key file \(path) holds \(data.count) bytes; at least 32 required")
            }
            return [UInt8](data)
        }
        let key = try random()
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else {
            throw Settings.Invalid(
                description: "cannot create signing key file \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        guard write(fd, key, key.count) == key.count, fsync(fd) == 0 else {
            throw Settings.Invalid(description: "cannot write signing key file \(path)")
        }
        return key
    }

    /// 32 random bytes: a new signing key.
    static func random() throws -> [UInt8] {
        var key = [UInt8](repeating: 0, count: 32)
        guard getentropy(&key, key.count) == 0 else {
            throw Settings.Invalid(description: "cannot gather entropy for a signing key")
        }
        return key
    }
}

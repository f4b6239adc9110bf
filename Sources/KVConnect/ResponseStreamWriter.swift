/// A response body produced over time (watch streams). The HTTP front
/// provides the implementation; this layer only writes frames to it.
public protocol ResponseStreamWriter: AnyObject, Sendable {
    /// Queues bytes; false once the client is gone (bytes dropped).
    @discardableResult func write(_ bytes: [UInt8]) -> Bool
    /// Ends the response normally. Idempotent.
    func finish()
    /// Bytes queued and not yet sent: a slow reader shows here.
    var pendingBytes: Int { get }
    var isClosed: Bool { get }
    /// Runs once when the stream ends for any reason.
    func onClose(_ handler: @escaping @Sendable () -> Void)
}

import Foundation
import Synchronization

/// The sd_notify protocol without libsystemd: datagrams to $NOTIFY_SOCKET
/// (a path, or an abstract socket when it starts with '@'). Silent no-op when
/// not started by systemd with Type=notify.
final class SystemdNotifier: Sendable {
    private let socketPath: String?
    /// Pings the watchdog from `ready` until `stopping` (nil without one).
    private let watchdogTimer = Mutex<DispatchSourceTimer?>(nil)

    init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        socketPath = environment["NOTIFY_SOCKET"].flatMap { $0.isEmpty ? nil : $0 }
        if let usecText = environment["WATCHDOG_USEC"], let usec = UInt64(usecText), usec > 0 {
            // WATCHDOG_PID, when set, names the process that must ping.
            if let pid = environment["WATCHDOG_PID"].flatMap(Int32.init), pid != getpid() { return }
            watchdogTimer.withLock { timer in
                let t = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "kvconnectd.watchdog"))
                let interval = DispatchTimeInterval.microseconds(Int(usec / 2))
                t.schedule(deadline: .now() + interval, repeating: interval)
                t.setEventHandler { [weak self] in self?.send("WATCHDOG=1") }
                timer = t
            }
        }
    }

    var isActive: Bool { socketPath != nil }

    func ready(status: String) {
        send("READY=1\nSTATUS=\(status)\nMAINPID=\(getpid())")
        watchdogTimer.withLock { $0?.resume() }
    }

    func stopping() {
        watchdogTimer.withLock { t in
            t?.cancel()
            t = nil
        }
        send("STOPPING=1")
    }

    func reloading() { send("RELOADING=1") }
    func reloaded() { send("READY=1") }

    @discardableResult
    func send(_ message: String) -> Bool {
        guard let path = socketPath else { return false }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(path.utf8)
        if bytes.first == UInt8(ascii: "@") { bytes[0] = 0 }  // abstract namespace
        let capacity = MemoryLayout.size(ofValue: addr.sun_path)
        guard bytes.count < capacity else { return false }
        withUnsafeMutableBytes(of: &addr.sun_path) { buf in
            for (i, b) in bytes.enumerated() { buf[i] = b }
        }
        let len = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (bytes.first == 0 ? 0 : 1))
        let payload = Array(message.utf8)
        let sent = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                sendto(fd, payload, payload.count, Int32(MSG_NOSIGNAL), sa, len)
            }
        }
        return sent == payload.count
    }
}

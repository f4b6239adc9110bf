import Foundation
import Glibc
import Logging
@testable import HTTPFront

/// Echoes the request: first line "METHOD PATH QUERY VERSION X-TEST", then the body.
/// Paths starting with /async answer from another thread after a short delay.
struct EchoHandler: HTTPRequestHandler {
    var asyncDelay: TimeInterval = 0.03

    func handle(_ request: HTTPRequest, respond: @escaping @Sendable (HTTPResponse) -> Void) {
        if request.path.hasPrefix("/blob/"), let n = Int(request.path.dropFirst(6)) {
            // A large body: exercises partial writes / EAGAIN and flow control.
            respond(HTTPResponse(status: 200, body: [UInt8](repeating: UInt8(ascii: "b"), count: n)))
            return
        }
        if request.path == "/block" {
            // Holds the connection's I/O thread (HTTP/1.1: the MHD worker) for a moment.
            usleep(300_000)
        }
        let version = request.version == .http2 ? "h2" : "h1"
        let line =
            "\(request.method) \(request.path) \(request.query ?? "-") \(version) \(request.header("X-Test") ?? "-")\n"
        let response = HTTPResponse(
            status: 200, headers: [("content-type", "text/plain"), ("x-echo", "1")],
            body: Array(line.utf8) + request.body)
        if request.path.hasPrefix("/async") {
            let delay = request.path.hasPrefix("/async-slow") ? 0.4 : asyncDelay
            // A plain thread, like a database writer answering later.
            Thread.detachNewThread {
                usleep(useconds_t(delay * 1_000_000))
                respond(response)
            }
        } else {
            respond(response)
        }
    }
}

func makeServer(_ configure: (inout HTTPServerConfiguration) -> Void = { _ in }) throws -> HTTPServer {
    var config = HTTPServerConfiguration(port: 0)
    configure(&config)
    var logger = Logger(label: "test")
    logger.logLevel = .warning
    let server = HTTPServer(configuration: config, handler: EchoHandler(), logger: logger)
    try server.start()
    return server
}

struct ProcessResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs a command-line client with a hard timeout.
func runTool(_ tool: String, _ args: [String], timeout: TimeInterval = 10) throws -> ProcessResult {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = [tool] + args
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    // Read before waiting so a large output cannot fill the pipe and block.
    let group = DispatchGroup()
    nonisolated(unsafe) var outData = Data(), errData = Data()
    group.enter()
    DispatchQueue.global().async {
        outData = out.fileHandleForReading.readDataToEndOfFile()
        group.leave()
    }
    group.enter()
    DispatchQueue.global().async {
        errData = err.fileHandleForReading.readDataToEndOfFile()
        group.leave()
    }
    let deadline = Date().addingTimeInterval(timeout)
    while p.isRunning && Date() < deadline { usleep(5_000) }
    if p.isRunning { p.terminate() }
    p.waitUntilExit()
    _ = group.wait(timeout: .now() + 2)
    return ProcessResult(
        status: p.terminationStatus,
        stdout: String(decoding: outData, as: UTF8.self),
        stderr: String(decoding: errData, as: UTF8.self))
}

/// curl with `-w '%{http_code}'` appended to the body: returns (status, body).
func curl(_ args: [String], timeout: TimeInterval = 10) throws -> (Int, String) {
    let r = try runTool("curl", ["-s", "-o", "-", "-w", "%{http_code}"] + args, timeout: timeout)
    let out = r.stdout
    guard out.count >= 3, let code = Int(out.suffix(3)) else { return (0, out) }
    return (code, String(out.dropLast(3)))
}

func tempFile(bytes: Int, fill: UInt8 = UInt8(ascii: "a")) throws -> String {
    let path = NSTemporaryDirectory() + "httpfront-\(UUID().uuidString)"
    try Data(repeating: fill, count: bytes).write(to: URL(fileURLWithPath: path))
    return path
}

/// A blocking raw TCP client for protocol-abuse tests.
final class RawClient {
    let fd: Int32

    init?(port: Int) {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = UInt16(port).bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        if rc != 0 {
            Glibc.close(fd)
            return nil
        }
    }

    deinit { Glibc.close(fd) }

    func send(_ bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// Abortive close (RST) instead of FIN.
    func setResetOnClose() {
        var lg = linger(l_onoff: 1, l_linger: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, socklen_t(MemoryLayout<linger>.size))
    }

    /// Reads until EOF or timeout. Returns (closedByPeer, bytes read).
    func readUntilClosed(timeoutMs: Int) -> (Bool, [UInt8]) {
        var received: [UInt8] = []
        let deadline = Date().addingTimeInterval(Double(timeoutMs) / 1000)
        var buf = [UInt8](repeating: 0, count: 4096)
        while Date() < deadline {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let left = Int32(max(1, deadline.timeIntervalSinceNow * 1000))
            if poll(&pfd, 1, left) <= 0 { continue }
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { return (true, received) }  // EOF or reset
            received += buf[0..<n]
        }
        return (false, received)
    }
}

/// Open sockets of this process (pipes of finished child processes are
/// closed lazily by Foundation, so only sockets are counted).
func openFileDescriptorCount() -> Int {
    let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
    return fds.filter { fd in
        ((try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(fd)")) ?? "").hasPrefix("socket:")
    }.count
}

/// Polls `condition` for up to `seconds`.
func eventually(_ seconds: TimeInterval, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        usleep(20_000)
    }
    return condition()
}

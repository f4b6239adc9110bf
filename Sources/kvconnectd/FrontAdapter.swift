import Foundation
import HTTPFront
import KVConnect
import KVConsole

/// The one place the front's request value becomes the protocol layer's:
/// both HTTP versions route through here. Paths under the console's base go
/// to the console; every other request is resolved once to a `Route`
/// (`KVConnectService.routes`), which the adapter and the service read.
struct FrontAdapter: HTTPRequestHandler {
    let service: KVConnectService
    /// The web console under /console/ (nil: not on this listener).
    var console: ConsoleService?
    /// A listener of the console alone (`console_listen`): nothing else answers.
    var consoleOnly = false
    /// Requests handed to the service and not answered yet (graceful shutdown waits for them).
    let inFlight = InFlightCounter()

    func handle(_ request: HTTPRequest, respond: @escaping @Sendable (HTTPResponse) -> Void) {
        if let console, console.owns(request.path) {
            let req = ConsoleRequest(
                method: request.method, path: request.path, query: request.query,
                headers: request.headers, body: request.body, remoteAddress: request.remoteAddress)
            return console.handle(req) { r in respond(Self.httpResponse(r)) }
        }
        if consoleOnly {
            return respond(.text(404, "not found: \(request.path) (this listener serves only the console)"))
        }
        let req = ProtocolRequest(
            method: request.method, path: request.path, query: request.query,
            headers: request.headers, body: request.body)
        let route = service.routes.resolve(method: request.method, path: request.path)
        // Long-polls (queue leases) may wait for minutes: not worth a grace period.
        let counted = route.endpoint?.isLongPoll != true
        if counted { inFlight.enter() }
        let inFlight = self.inFlight
        service.handle(req, route: route) { r in
            if counted { inFlight.leave() }
            respond(Self.httpResponse(r))
        }
    }

    static func httpResponse(_ r: ProtocolResponse) -> HTTPResponse {
        if let start = r.stream {
            return .streaming(status: r.status, headers: r.headers) { stream in start(stream) }
        }
        return HTTPResponse(status: r.status, headers: r.headers, body: r.body)
    }
}

/// The front's stream is what the protocol layer writes watch frames to.
extension HTTPResponseStream: ResponseStreamWriter {}

final class InFlightCounter: @unchecked Sendable {
    private let cond = NSCondition()
    private var count = 0

    func enter() {
        cond.lock()
        count += 1
        cond.unlock()
    }
    func leave() {
        cond.lock()
        count -= 1
        if count == 0 { cond.broadcast() }
        cond.unlock()
    }

    /// Waits until nothing is in flight or the deadline passes; returns what is left.
    func drain(until deadline: Date) -> Int {
        cond.lock()
        defer { cond.unlock() }
        while count > 0 && cond.wait(until: deadline) {}
        return count
    }
}

import Foundation
import HTTPFront
import KVConnect
import KVConsole
import Threading

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

/// Requests being handled; a graceful stop waits for them (a condition: the
/// stopping thread really sleeps until the count reaches zero).
final class InFlightCounter: Sendable {
    private let count = ConditionLock(0)

    func enter() {
        count.withLock { $0 += 1 }
    }
    func leave() {
        let idle = count.withLock { c in
            c -= 1
            return c == 0
        }
        if idle { count.broadcast() }
    }

    /// Waits until nothing is in flight or the deadline passes; returns what is left.
    func drain(until deadline: Date) -> Int {
        let endMs = MonotonicClock.deadlineMs(after: Int64(max(0, deadline.timeIntervalSinceNow) * 1000))
        return count.wait { c in
            let left = endMs - MonotonicClock.nowMs()
            return c == 0 || left <= 0 ? .done(c) : .wait(timeoutMs: left)
        }
    }
}

import HTTPFront
import KVConnect

/// The one place the front's request value becomes the protocol layer's:
/// both HTTP versions route through here.
struct FrontAdapter: HTTPRequestHandler {
    let service: KVConnectService

    func handle(_ request: HTTPRequest, respond: @escaping @Sendable (HTTPResponse) -> Void) {
        let req = ProtocolRequest(method: request.method, path: request.path,
                                  headers: request.headers, body: request.body)
        service.handle(req) { r in
            if let start = r.stream {
                respond(.streaming(status: r.status, headers: r.headers) { stream in start(stream) })
            } else {
                respond(HTTPResponse(status: r.status, headers: r.headers, body: r.body))
            }
        }
    }
}

/// The front's stream is what the protocol layer writes watch frames to.
extension HTTPResponseStream: ResponseStreamWriter {}

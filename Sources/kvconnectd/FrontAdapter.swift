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
            respond(HTTPResponse(status: r.status, headers: r.headers, body: r.body))
        }
    }
}

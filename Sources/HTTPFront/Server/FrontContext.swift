import Logging

/// What both protocol paths need to build requests and answer them.
struct FrontContextCore: Sendable {
    let configuration: HTTPServerConfiguration
    let handler: any HTTPRequestHandler
    let logger: Logger
}

/// Everything a connection of either protocol needs: the configuration, the
/// handler, the HTTP/1.x engine it may hand the socket to, the limiter.
final class FrontContext: Sendable {
    let core: FrontContextCore
    let microHTTPD: MicroHTTPDFront
    let limiter: ConnectionLimiter
    var configuration: HTTPServerConfiguration { core.configuration }
    var handler: any HTTPRequestHandler { core.handler }
    var logger: Logger { core.logger }

    init(core: FrontContextCore) {
        self.core = core
        microHTTPD = MicroHTTPDFront(context: core)
        let c = core.configuration
        let (maxTotal, clamped) = ConnectionBudget.maxConnections(c)
        limiter = ConnectionLimiter(maxTotal: maxTotal, maxPerIP: c.maxConnectionsPerIP)
        if clamped {
            core.logger.notice(
                "max_connections \(c.maxConnections) exceeds the file-descriptor limit; using \(maxTotal)")
        }
    }
}

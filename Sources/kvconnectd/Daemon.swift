import Foundation
import HTTPFront
import KVConnect
import KVEngine
import Logging

/// Wires engine, protocol and front together and owns their lifetime.
final class Daemon: @unchecked Sendable {
    let settings: Settings
    let logger: Logger
    let store: KVStore
    let server: HTTPServer

    init(settings: Settings) throws {
        self.settings = settings
        var logger = Logger(label: "kvconnectd")
        logger.logLevel = settings.logLevel
        self.logger = logger

        let dir = (settings.databasePath as NSString).deletingLastPathComponent
        if !dir.isEmpty {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        }
        var options = KVStoreOptions()
        options.synchronousFull = settings.synchronousFull
        store = try KVStore(path: settings.databasePath, options: options)
        let secret = try SigningKey.loadOrCreate(path: settings.signingKeyFile ?? settings.defaultSigningKeyFile)

        var serviceConfig = ServiceConfiguration()
        serviceConfig.tokenLifetimeSeconds = settings.tokenLifetimeSeconds
        serviceConfig.publicBaseURL = settings.publicURL
        serviceConfig.watchPingIntervalMs = settings.watchPingIntervalMs
        serviceConfig.queueVisibilityTimeoutMs = Int64(settings.queueVisibilityTimeoutMs)
        serviceConfig.queueLongPollMaxMs = Int64(settings.queueLongPollMaxMs)
        serviceConfig.metricsText = MetricsExporter(registry: MetricsBackend.bootstrap(), stores: [store]).render
        let service = KVConnectService(
            tenants: [Tenant(store: store, accessTokens: [settings.accessToken])],
            signer: TokenSigner(secret: secret), configuration: serviceConfig, logger: logger)

        var front = HTTPServerConfiguration()
        front.host = settings.host
        front.port = settings.port
        front.maxBodyBytes = settings.maxBodyBytes
        front.ioThreads = settings.ioThreads
        front.tlsCertificateFile = settings.tlsCertFile
        front.tlsKeyFile = settings.tlsKeyFile
        server = HTTPServer(configuration: front, handler: FrontAdapter(service: service), logger: logger)
        // Queue push (pull endpoints work either way).
        if let url = settings.queueWebhookURL {
            let deliverer = WebhookDeliverer(url: url, secret: settings.queueWebhookSecret,
                                             timeoutMs: settings.queueWebhookTimeoutMs,
                                             databaseId: store.databaseId, concurrency: settings.queueConcurrency,
                                             logger: logger)
            store.startQueueDelivery(options: QueuePushOptions(
                concurrency: settings.queueConcurrency,
                leaseMs: Int64(settings.queueWebhookTimeoutMs) + 30_000)) { m, done in
                deliverer.deliver(m, done: done)
            }
        }
        do {
            try server.start()
        } catch {
            store.stopQueueDelivery(drainTimeoutMs: 0)
            store.close()
            throw error
        }
        logger.info("kvconnectd listening", metadata: [
            "listen": "\(settings.host):\(server.boundPort)",
            "database": "\(settings.databasePath)",
            "database_id": "\(store.databaseId)",
            "protocol_versions": "\(MetadataExchange.serverVersions.map(String.init).joined(separator: ","))",
            "http": front.tlsEnabled ? "https: HTTP/1.1 and HTTP/2 (TLS, ALPN h2)" : "HTTP/1.1 and HTTP/2 (h2c)",
            "url": "\(front.tlsEnabled ? "https" : "http")://\(settings.host):\(server.boundPort)",
            "queue": "\(settings.queueWebhookURL.map { "push to \($0.absoluteString) + pull" } ?? "pull only")",
            "queue_ready_again": "\(store.queueRecoveredOnOpen)",
        ])
    }

    /// Blocks until SIGTERM or SIGINT, then stops accepting, lets pending
    /// commits finish and closes the database.
    func runUntilSignalled() async {
        signal(SIGTERM, SIG_IGN)
        signal(SIGINT, SIG_IGN)
        let queue = DispatchQueue(label: "kvconnectd.signals")
        let signalName: String = await withCheckedContinuation { (cont: CheckedContinuation<String, Never>) in
            let once = OnceFlag()
            var sources: [DispatchSourceSignal] = []
            for (sig, name) in [(SIGTERM, "SIGTERM"), (SIGINT, "SIGINT")] {
                let src = DispatchSource.makeSignalSource(signal: sig, queue: queue)
                src.setEventHandler { if once.claim() { cont.resume(returning: name) } }
                src.resume()
                sources.append(src)
            }
            // SIGHUP: reload the TLS certificate and key (new connections).
            signal(SIGHUP, SIG_IGN)
            let hup = DispatchSource.makeSignalSource(signal: SIGHUP, queue: queue)
            hup.setEventHandler { [self] in reloadTLS() }
            hup.resume()
            sources.append(hup)
            Daemon.keepAlive = sources
        }
        logger.info("shutting down", metadata: ["signal": "\(signalName)"])
        server.stop()
        // In-flight deliveries get their timeout to report back; anything
        // left in flight is ready again on the next start.
        store.stopQueueDelivery(drainTimeoutMs: Int64(settings.queueWebhookTimeoutMs) + 1000)
        store.close()
        logger.info("stopped")
    }

    private func reloadTLS() {
        guard settings.tlsCertFile != nil else {
            logger.info("SIGHUP: TLS not configured, nothing to reload")
            return
        }
        do {
            try server.reloadTLS()
            logger.info("SIGHUP: reloaded TLS certificate and key", metadata: [
                "tls_cert_file": "\(settings.tlsCertFile ?? "")", "tls_key_file": "\(settings.tlsKeyFile ?? "")"])
        } catch {
            logger.error("SIGHUP: TLS reload failed, keeping the previous certificate", metadata: [
                "reason": "\(error)"])
        }
    }

    nonisolated(unsafe) static var keepAlive: [DispatchSourceSignal] = []
}

final class OnceFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var done = false
    func claim() -> Bool {
        lock.lock(); defer { lock.unlock() }
        if done { return false }
        done = true
        return true
    }
}

/// Process-wide live counts of the front, for the daemon's metrics
/// (read at scrape time from the `LiveCount` counters).
public enum FrontStats {
    /// HTTP/2 connections open (h2c and h2 over TLS).
    public static var openHTTP2Connections: Int { LiveCount.http2Connections.value }
    /// HTTP/1.1 requests in progress in libmicrohttpd, including streaming
    /// responses (watches). Idle keep-alive connections are not counted:
    /// libmicrohttpd owns those sockets.
    public static var activeHTTP1Requests: Int { LiveCount.mhdRequests.value }
    /// Open response streams (watch streams over either HTTP version).
    public static var openResponseStreams: Int { LiveCount.responseStreams.value }
    /// TLS sessions alive (handshaking or serving).
    public static var openTLSSessions: Int { LiveCount.tlsSessions.value }
    /// HTTP/2 connections whose open streams reached `maxConcurrentStreams`
    /// since start (once per connection): their client queues requests.
    public static var http2StreamLimitReached: Int { LiveCount.http2StreamLimitReached.value }
    /// HTTP/2 connections closed with ENHANCE_YOUR_CALM for a rapid-reset
    /// flood since start.
    public static var http2RapidResetCloses: Int { LiveCount.http2RapidResetCloses.value }
}

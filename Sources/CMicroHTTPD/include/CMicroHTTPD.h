#ifndef KV_CMICROHTTPD_H
#define KV_CMICROHTTPD_H
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <microhttpd.h>

// Typed wrappers around libmicrohttpd's variadic calls, so Swift sees a small,
// non-variadic API. Linux calls that do not need libmicrohttpd live in CLinux.

/// URI log callback: runs once per request before headers are parsed; its
/// return value becomes the request's `*con_cls` (our per-request context).
typedef void *(*kv_mhd_uri_log_cb)(void *cls, const char *uri, struct MHD_Connection *connection);

/// Starts a daemon without a listen socket (connections arrive through
/// MHD_add_connection), internal poll() threads, suspend/resume enabled,
/// `memory_limit` bytes of memory pool per connection (bounds the request
/// header block), `notify_connection` called when a connection starts/closes.
struct MHD_Daemon *kv_mhd_start_daemon(unsigned int thread_pool_size,
                                       unsigned int connection_timeout_seconds,
                                       unsigned int connection_limit,
                                       MHD_AccessHandlerCallback access_handler,
                                       void *access_cls,
                                       MHD_RequestCompletedCallback completed,
                                       void *completed_cls,
                                       kv_mhd_uri_log_cb uri_log,
                                       void *uri_log_cls,
                                       size_t memory_limit,
                                       MHD_NotifyConnectionCallback notify_connection,
                                       void *notify_connection_cls);

/// The connection's socket context (set by the notify-connection callback), or NULL.
void *kv_mhd_socket_context(struct MHD_Connection *connection);

/// The socket of a connection, or -1.
int kv_mhd_connection_fd(struct MHD_Connection *connection);

/// The client address as "ip:port" into buf (NUL-terminated); returns 0 on success.
int kv_mhd_client_address(struct MHD_Connection *connection, char *buf, size_t buflen);

/// A response of unknown size (chunked on HTTP/1.1) produced by `reader`;
/// `free_cb` runs once MHD is done with it. NULL on failure.
struct MHD_Response *kv_mhd_create_stream_response(size_t block_size,
                                                   MHD_ContentReaderCallback reader,
                                                   void *cls,
                                                   MHD_ContentReaderFreeCallback free_cb);

/// 1 when the client has closed (or reset) the connection's socket: FIN,
/// HUP or error pending. Non-blocking.
int kv_mhd_peer_closed(struct MHD_Connection *connection);

/// Re-arms TCP_QUICKACK on the connection's socket (best effort).
void kv_mhd_quickack(struct MHD_Connection *connection);

/// Size of the current request's header block (request line to the empty line).
size_t kv_mhd_request_header_size(struct MHD_Connection *connection);

#endif

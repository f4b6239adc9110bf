#define _GNU_SOURCE
#include "CMicroHTTPD.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <poll.h>

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
                                       void *notify_connection_cls) {
    // poll(), not epoll: libmicrohttpd 0.9.75's MHD_epoll() repeats
    // epoll_wait with the original (long) timeout whenever a call returned
    // exactly MAX_EVENTS (128) events, so a worker with 128·k connections
    // ready at once blocks with their (edge-triggered, already consumed)
    // events unprocessed: HTTP/1.1 fell to ~150 requests/s with 512
    // connections. poll() is level-triggered and has no such loop.
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
                         MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC |
                         MHD_USE_NO_LISTEN_SOCKET;
    if (thread_pool_size < 1) thread_pool_size = 1;
    // Port 0 and no listen socket: the front accepts and hands sockets over.
    return MHD_start_daemon(flags, 0, NULL, NULL, access_handler, access_cls,
                            MHD_OPTION_THREAD_POOL_SIZE, thread_pool_size,
                            MHD_OPTION_CONNECTION_TIMEOUT, connection_timeout_seconds,
                            MHD_OPTION_CONNECTION_LIMIT, connection_limit,
                            MHD_OPTION_NOTIFY_COMPLETED, completed, completed_cls,
                            MHD_OPTION_URI_LOG_CALLBACK, uri_log, uri_log_cls,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, memory_limit,
                            MHD_OPTION_NOTIFY_CONNECTION, notify_connection, notify_connection_cls,
                            MHD_OPTION_END);
}

void *kv_mhd_socket_context(struct MHD_Connection *connection) {
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return info == NULL ? NULL : info->socket_context;
}

int kv_mhd_connection_fd(struct MHD_Connection *connection) {
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (info == NULL) return -1;
    return (int)info->connect_fd;
}

int kv_mhd_client_address(struct MHD_Connection *connection, char *buf, size_t buflen) {
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (buflen == 0) return -1;
    buf[0] = 0;
    if (info == NULL || info->client_addr == NULL) return -1;
    const struct sockaddr *sa = info->client_addr;
    char ip[INET6_ADDRSTRLEN];
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        if (!inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip)) return -1;
        snprintf(buf, buflen, "%s:%u", ip, (unsigned)ntohs(in->sin_port));
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        if (!inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip)) return -1;
        snprintf(buf, buflen, "[%s]:%u", ip, (unsigned)ntohs(in6->sin6_port));
        return 0;
    }
    return -1;
}

struct MHD_Response *kv_mhd_create_stream_response(size_t block_size,
                                                   MHD_ContentReaderCallback reader,
                                                   void *cls,
                                                   MHD_ContentReaderFreeCallback free_cb) {
    return MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, block_size, reader, cls, free_cb);
}

int kv_mhd_peer_closed(struct MHD_Connection *connection) {
    int fd = kv_mhd_connection_fd(connection);
    if (fd < 0) return 0;
    struct pollfd p = { .fd = fd, .events = POLLRDHUP, .revents = 0 };
    if (poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) return 1;
    return 0;
}

size_t kv_mhd_request_header_size(struct MHD_Connection *connection) {
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
    return info == NULL ? 0 : info->header_size;
}

void kv_mhd_quickack(struct MHD_Connection *connection) {
    int fd = kv_mhd_connection_fd(connection);
    if (fd < 0) return;
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
}

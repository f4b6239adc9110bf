#ifndef KV_CLINUX_H
#define KV_CLINUX_H
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

// Linux calls Swift's Glibc module does not expose (GNU extensions,
// variadic calls, epoll/eventfd declarations, struct tcp_info from
// <linux/tcp.h>), so every Swift target can use them without importing
// libmicrohttpd.

/// accept4(2) with SOCK_NONBLOCK | SOCK_CLOEXEC.
int kv_accept_nonblocking(int listen_fd, struct sockaddr *addr, socklen_t *addrlen);

/// Names the calling thread (visible in top/gdb); truncated to 15 bytes.
void kv_set_thread_name(const char *name);

/// TCP bytes received on the socket so far (TCP_INFO); -1 if unknown (not
/// TCP, or a kernel older than 4.1).
int kv_tcp_bytes_received(int fd, uint64_t *out);

/// send(2) and shutdown(2) flags as plain constants: glibc declares them as enum members
/// behind same-named macros, which Swift's Glibc module does not reliably
/// export (a release build of a file not importing libmicrohttpd misses them).
static const int KV_MSG_NOSIGNAL = MSG_NOSIGNAL;
static const int KV_MSG_DONTWAIT = MSG_DONTWAIT;
static const int KV_SHUT_WR = SHUT_WR;
static const int KV_SHUT_RDWR = SHUT_RDWR;

#endif

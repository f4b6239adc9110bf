#define _GNU_SOURCE
#include <pthread.h>
#include <string.h>
#include "CLinux.h"

int kv_accept_nonblocking(int listen_fd, struct sockaddr *addr, socklen_t *addrlen) {
    return accept4(listen_fd, addr, addrlen, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

void kv_set_thread_name(const char *name) {
    char buf[16];
    strncpy(buf, name, sizeof buf - 1);
    buf[sizeof buf - 1] = 0;
    (void)pthread_setname_np(pthread_self(), buf);
}

// Separate file: glibc's <netinet/tcp.h> has an old struct tcp_info without
// tcpi_bytes_received, and it clashes with <linux/tcp.h>, which has it.
#include "CLinux.h"
#include <linux/tcp.h>
#include <netinet/in.h>
#include <string.h>

int kv_tcp_bytes_received(int fd, uint64_t *out) {
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    memset(&ti, 0, sizeof ti);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0) return -1;
    // Kernels before 4.1 return a shorter struct without the field.
    if (len < offsetof(struct tcp_info, tcpi_bytes_received) + sizeof ti.tcpi_bytes_received) return -1;
    *out = ti.tcpi_bytes_received;
    return 0;
}

// Separate file: glibc's <netinet/tcp.h> (used by shim.c) has an old
// struct tcp_info without tcpi_bytes_received, and it clashes with
// <linux/tcp.h>, which has it.
#include "CMicroHTTPD.h"
#include <linux/tcp.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>

int kv_connection_fd(struct MHD_Connection *connection);

int kv_mhd_bytes_received(struct MHD_Connection *connection, uint64_t *out) {
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (info == NULL) return -1;
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    memset(&ti, 0, sizeof ti);
    if (getsockopt((int)info->connect_fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0) return -1;
    // Kernels before 4.1 return a shorter struct without the field.
    if (len < offsetof(struct tcp_info, tcpi_bytes_received) + sizeof ti.tcpi_bytes_received) return -1;
    *out = ti.tcpi_bytes_received;
    return 0;
}

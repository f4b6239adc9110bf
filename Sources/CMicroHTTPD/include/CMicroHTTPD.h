#ifndef KV_CMICROHTTPD_H
#define KV_CMICROHTTPD_H
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <microhttpd.h>
#endif

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
// curl_easy_setopt, curl_multi_setopt and curl_easy_getinfo are variadic:
// Swift cannot call them, so typed wrappers.
static inline CURLcode kv_curl_easy_setopt_long(CURL *h, CURLoption o, long v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode kv_curl_easy_setopt_ptr(CURL *h, CURLoption o, const void *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode kv_curl_easy_setopt_off(CURL *h, CURLoption o, curl_off_t v) { return curl_easy_setopt(h, o, v); }
static inline CURLMcode kv_curl_multi_setopt_long(CURLM *m, CURLMoption o, long v) { return curl_multi_setopt(m, o, v); }
static inline long kv_curl_response_code(CURL *h) {
    long code = 0;
    return curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK ? code : 0;
}
static inline void *kv_curl_private(CURL *h) {
    char *p = 0;
    return curl_easy_getinfo(h, CURLINFO_PRIVATE, &p) == CURLE_OK ? p : 0;
}
// CURLMsg's result lives in a union.
static inline CURLcode kv_curl_msg_result(CURLMsg *m) { return m->data.result; }
// The response body is not needed: count it as consumed.
static size_t kv_curl_discard(char *p, size_t size, size_t n, void *u) { (void)p; (void)u; return size * n; }
static inline CURLcode kv_curl_discard_body(CURL *h) { return curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, kv_curl_discard); }

// A growing buffer for a response body (the CLI's one-shot requests).
typedef struct { char *data; size_t len; } kv_curl_buffer;
static size_t kv_curl_collect(char *p, size_t size, size_t n, void *u) {
    kv_curl_buffer *b = (kv_curl_buffer *)u;
    size_t add = size * n;
    char *d = (char *)realloc(b->data, b->len + add + 1);
    if (!d) return 0;
    memcpy(d + b->len, p, add);
    b->data = d;
    b->len += add;
    return add;
}
static inline CURLcode kv_curl_collect_body(CURL *h, kv_curl_buffer *b) {
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, kv_curl_collect);
    return curl_easy_setopt(h, CURLOPT_WRITEDATA, b);
}

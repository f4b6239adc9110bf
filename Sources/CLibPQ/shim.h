// libpq, the PostgreSQL reference client library (Debian: libpq-dev).
#include <libpq-fe.h>

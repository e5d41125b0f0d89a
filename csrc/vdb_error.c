#include "vdb_error.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char vdb_error_message[1024];

int vdb_set_error(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(vdb_error_message, sizeof vdb_error_message, fmt, ap);
    va_end(ap);
    return code;
}

const char *vdb_last_error(void) { return vdb_error_message; }


/* vdb_error — setting the per-thread error message (with the OS error for I/O failures). */
#include "vdb_error.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char vdb_error_message[1024];
static _Thread_local int vdb_error_errno;

int vdb_set_io_error(int os_errno, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(vdb_error_message, sizeof vdb_error_message, fmt, ap);
    va_end(ap);
    vdb_error_errno = os_errno;
    return VDB_EIO;
}

int vdb_last_errno(void) { return vdb_error_errno; }

int vdb_set_error(int code, const char *fmt, ...)
{
    vdb_error_errno = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(vdb_error_message, sizeof vdb_error_message, fmt, ap);
    va_end(ap);
    return code;
}

const char *vdb_last_error(void) { return vdb_error_message; }


/* vdb_error — error codes and the per-thread error message.
 *
 * Contract: every engine function that can fail returns int: VDB_OK (0) or a negative code, and
 * sets a message with vdb_set_error() before returning it. The message lives in thread-local
 * storage, so it is valid until the same thread's next engine call. Thread-safe.
 */
#ifndef VDB_ERROR_H
#define VDB_ERROR_H

enum {
    VDB_OK = 0,
    VDB_ENOMEM = -1,    /* allocation failed or size overflow */
    VDB_EINVAL = -2,    /* bad argument (a bug in the caller or bad user input) */
    VDB_ECORRUPT = -3,  /* a file failed validation: the message names it */
    VDB_EIO = -4,       /* an operating-system I/O call failed */
    VDB_ENOTFOUND = -5, /* no such thing */
    VDB_ELOCKED = -6,   /* another process or handle holds the writer lock */
    VDB_EDIM = -7,      /* vector dimension does not match the collection */
    VDB_EREADONLY = -8, /* writes refused (after an fsync failure, until reopened) */
};

/* Sets the calling thread's message (printf-style) and returns code, so callers can write
 * `return vdb_set_error(VDB_EINVAL, "...")`. */
int vdb_set_error(int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
const char *vdb_last_error(void);
/* The OS errno behind the calling thread's last VDB_EIO (0 when none): set by vdb_set_io_error. */
int vdb_last_errno(void);
/* vdb_set_error for a failed OS call: also records errno. */
int vdb_set_io_error(int os_errno, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

#endif

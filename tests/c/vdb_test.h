/* vdb_test.h — the harness of the C tests in tests/c: CHECK and CHECK_OK, which count checks and
 * failures and report the first failures with file and line, and the summary line main() ends with.
 * Each test is one program (tests/test_c_units.py builds and runs it); include this once, in it. */
#ifndef VDB_TEST_H
#define VDB_TEST_H

#include <stdio.h>

#include "vdb_error.h"

#define VDB_TEST_MAX_REPORTED 30 /* failures printed; later ones are only counted */

static int failures, checks;

#define CHECK(cond, ...)                                                           \
    do {                                                                           \
        checks++;                                                                  \
        if (!(cond)) {                                                             \
            failures++;                                                            \
            if (failures <= VDB_TEST_MAX_REPORTED) {                               \
                fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);    \
                fprintf(stderr, __VA_ARGS__);                                      \
                fputc('\n', stderr);                                               \
            }                                                                      \
        }                                                                          \
    } while (0)

/* An engine call that must succeed; the failure names the call, its code and the engine's message. */
#define CHECK_OK(expr)                                                                        \
    do {                                                                                      \
        int rc_ = (expr);                                                                     \
        CHECK(rc_ == VDB_OK, "%s -> %d (%s)", #expr, rc_, vdb_last_error());                  \
    } while (0)

/* Prints "<checks> checks, <failures> failures" and returns main's exit status. */
static inline int vdb_test_summary(void)
{
    printf("%d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}

#endif

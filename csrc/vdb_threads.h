/* vdb_threads — a small process-wide worker pool for parallel loops.
 *
 * vdb_parallel_for(n_tasks, fn, ctx) runs fn(ctx, task, worker) for task in [0, n_tasks) on up to
 * vdb_threads_count() threads (the caller's thread is one of them) and returns when all are done.
 * worker is in [0, vdb_threads_count()), so callers can keep per-worker scratch. With one task or
 * one thread it runs inline on the caller. Workers are started lazily and live until exit.
 * Several threads may call vdb_parallel_for at once (calls are serialized on the pool; the later
 * one waits). Thread count: VECTORDB_NUM_THREADS, else the number of CPUs this process may run on
 * (sched_getaffinity); capped at 64.
 * A task that itself calls vdb_parallel_for runs that inner loop inline on its own thread (no
 * deadlock, no oversubscription). After fork() the child has no workers: the pool forgets them and
 * starts new ones on the child's first parallel call (pthread_atfork handlers keep the locks sane).
 * Workers block all signals, so Python's signal handling stays on its main thread.
 */
#ifndef VDB_THREADS_H
#define VDB_THREADS_H

#include <stddef.h>

typedef void (*vdb_task_fn)(void *ctx, size_t task, size_t worker);

size_t vdb_threads_count(void);
/* Sets the thread count for later calls (1..64); returns the count in force. */
size_t vdb_threads_set_count(size_t n);
void vdb_parallel_for(size_t n_tasks, vdb_task_fn fn, void *ctx);

#endif

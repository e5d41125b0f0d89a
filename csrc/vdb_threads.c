/* vdb_threads — see vdb_threads.h for the contract.
 *
 * One job at a time: a caller takes call_lock, publishes (fn, ctx, n_tasks) under lock, bumps the
 * generation and wakes the workers; everybody (caller = worker 0) pulls task numbers from an atomic
 * counter; the caller returns once every participating worker has checked back in.
 * Nested use (a task calling vdb_parallel_for) runs inline instead of deadlocking on call_lock.
 * fork(): the atfork handlers hold both locks across the fork, so the child gets them in a known
 * state; the child has no worker threads, so it forgets them and starts new ones on demand.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#include "vdb_threads.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#define VDB_THREADS_MAX 64

typedef struct {
    size_t index;        /* 1..VDB_THREADS_MAX-1 (the caller is 0) */
    uint64_t start_gen;  /* generation current when the worker was created */
} vdb_worker_arg;

static pthread_mutex_t vdb_pool_call_lock = PTHREAD_MUTEX_INITIALIZER; /* serializes callers */
static pthread_mutex_t vdb_pool_lock = PTHREAD_MUTEX_INITIALIZER;      /* guards the fields below */
static pthread_cond_t vdb_pool_wake = PTHREAD_COND_INITIALIZER;
static pthread_cond_t vdb_pool_done = PTHREAD_COND_INITIALIZER;
static size_t vdb_pool_started;      /* workers alive: indices 1..started */
static uint64_t vdb_pool_generation; /* bumped once per job */
static size_t vdb_pool_participants; /* workers 1..participants take part in the current job */
static size_t vdb_pool_remaining;    /* participants not yet finished */
static vdb_task_fn vdb_pool_fn;
static void *vdb_pool_ctx;
static size_t vdb_pool_n_tasks;
static _Atomic size_t vdb_pool_next; /* next task number to hand out */
static vdb_worker_arg vdb_pool_args[VDB_THREADS_MAX];

static pthread_once_t vdb_threads_once = PTHREAD_ONCE_INIT;
static _Atomic size_t vdb_threads_n = 1;
static _Thread_local int vdb_threads_inside; /* this thread is running pool tasks */

static void vdb_threads_atfork_prepare(void)
{
    pthread_mutex_lock(&vdb_pool_call_lock);
    pthread_mutex_lock(&vdb_pool_lock);
}

static void vdb_threads_atfork_parent(void)
{
    pthread_mutex_unlock(&vdb_pool_lock);
    pthread_mutex_unlock(&vdb_pool_call_lock);
}

static void vdb_threads_atfork_child(void)
{
    /* Only the forking thread exists in the child; the parent's workers (and any of their waits on
     * the condition variables) are gone. */
    vdb_pool_started = 0;
    vdb_pool_participants = 0;
    vdb_pool_remaining = 0;
    pthread_cond_init(&vdb_pool_wake, NULL);
    pthread_cond_init(&vdb_pool_done, NULL);
    pthread_mutex_unlock(&vdb_pool_lock);
    pthread_mutex_unlock(&vdb_pool_call_lock);
}

static size_t vdb_threads_default(void)
{
    const char *s = getenv("VECTORDB_NUM_THREADS");
    if (s && *s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (*end == '\0' && v >= 1)
            return v > VDB_THREADS_MAX ? VDB_THREADS_MAX : (size_t)v;
    }
    long n = 0;
#if defined(__linux__)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        n = CPU_COUNT(&set); /* respects taskset / container CPU pinning */
#endif
    if (n < 1)
        n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        n = 1;
    return n > VDB_THREADS_MAX ? VDB_THREADS_MAX : (size_t)n;
}

static void vdb_threads_init(void)
{
    atomic_store(&vdb_threads_n, vdb_threads_default());
    pthread_atfork(vdb_threads_atfork_prepare, vdb_threads_atfork_parent, vdb_threads_atfork_child);
}

size_t vdb_threads_count(void)
{
    pthread_once(&vdb_threads_once, vdb_threads_init);
    return atomic_load(&vdb_threads_n);
}

size_t vdb_threads_set_count(size_t n)
{
    pthread_once(&vdb_threads_once, vdb_threads_init);
    if (n >= 1)
        atomic_store(&vdb_threads_n, n > VDB_THREADS_MAX ? VDB_THREADS_MAX : n);
    return atomic_load(&vdb_threads_n);
}

static void vdb_threads_run_tasks(vdb_task_fn fn, void *ctx, size_t n_tasks, size_t worker)
{
    size_t t;
    while ((t = atomic_fetch_add_explicit(&vdb_pool_next, 1, memory_order_relaxed)) < n_tasks)
        fn(ctx, t, worker);
}

static void *vdb_threads_worker(void *argp)
{
    const vdb_worker_arg *arg = argp;
    uint64_t seen = arg->start_gen;
    vdb_threads_inside = 1;
    pthread_mutex_lock(&vdb_pool_lock);
    for (;;) {
        while (vdb_pool_generation == seen)
            pthread_cond_wait(&vdb_pool_wake, &vdb_pool_lock);
        seen = vdb_pool_generation;
        if (arg->index > vdb_pool_participants)
            continue; /* not needed for this job */
        vdb_task_fn fn = vdb_pool_fn;
        void *ctx = vdb_pool_ctx;
        size_t n_tasks = vdb_pool_n_tasks;
        pthread_mutex_unlock(&vdb_pool_lock);
        vdb_threads_run_tasks(fn, ctx, n_tasks, arg->index);
        pthread_mutex_lock(&vdb_pool_lock);
        if (--vdb_pool_remaining == 0)
            pthread_cond_signal(&vdb_pool_done);
    }
    return NULL;
}

/* Starts workers up to index `want` (pool lock held). Returns how many exist; a failed
 * pthread_create just leaves the pool smaller. */
static size_t vdb_threads_start(size_t want)
{
    if (vdb_pool_started >= want)
        return vdb_pool_started;
    /* Workers must not take signals meant for the application (the interpreter handles them in its main
     * thread): create them with every signal blocked. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    while (vdb_pool_started < want) {
        vdb_worker_arg *a = &vdb_pool_args[vdb_pool_started + 1];
        a->index = vdb_pool_started + 1;
        a->start_gen = vdb_pool_generation;
        pthread_t tid;
        if (pthread_create(&tid, &attr, vdb_threads_worker, a) != 0)
            break;
#if defined(__linux__)
        pthread_setname_np(tid, "vectordb-work");
#endif
        vdb_pool_started++;
    }
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return vdb_pool_started;
}

void vdb_parallel_for(size_t n_tasks, vdb_task_fn fn, void *ctx)
{
    if (n_tasks == 0)
        return;
    size_t nt = vdb_threads_count();
    if (n_tasks == 1 || nt <= 1 || vdb_threads_inside) {
        for (size_t t = 0; t < n_tasks; t++)
            fn(ctx, t, 0);
        return;
    }
    size_t want = (nt < n_tasks ? nt : n_tasks) - 1;

    pthread_mutex_lock(&vdb_pool_call_lock);
    pthread_mutex_lock(&vdb_pool_lock);
    size_t have = vdb_threads_start(want);
    size_t participants = have < want ? have : want;
    vdb_pool_fn = fn;
    vdb_pool_ctx = ctx;
    vdb_pool_n_tasks = n_tasks;
    vdb_pool_participants = participants;
    vdb_pool_remaining = participants;
    atomic_store_explicit(&vdb_pool_next, 0, memory_order_relaxed);
    vdb_pool_generation++;
    if (participants > 0)
        pthread_cond_broadcast(&vdb_pool_wake);
    pthread_mutex_unlock(&vdb_pool_lock);

    vdb_threads_inside = 1;
    vdb_threads_run_tasks(fn, ctx, n_tasks, 0);
    vdb_threads_inside = 0;

    pthread_mutex_lock(&vdb_pool_lock);
    while (vdb_pool_remaining > 0)
        pthread_cond_wait(&vdb_pool_done, &vdb_pool_lock);
    pthread_mutex_unlock(&vdb_pool_lock);
    pthread_mutex_unlock(&vdb_pool_call_lock);
}

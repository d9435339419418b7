/*
 * hazard.c - let vCPU threads read a table while another thread replaces it.
 *
 * Every thread that accesses a filter owns a reader record. Before using a table it publishes
 * the table's pointer there (a hazard pointer), then re-reads the filter's current pointer: if
 * that changed meanwhile, it retries. An updater swaps the filter's pointer first and then waits
 * until no record still holds the old one. Both sides use sequentially consistent operations,
 * so either the reader's re-check sees the new table or the updater's scan sees the hazard:
 * no table is freed while an access may read it, and each access sees exactly one table.
 *
 * A reader pays one store, one fence and two loads per access (once per batch), and readers
 * share no cache line, so vCPUs do not slow each other down. Records are never freed: a thread
 * that exits gives its record back for the next thread to reuse. Nested use (a callback backend
 * that calls into another filter) gets a small stack of hazards per thread.
 */
#include <sched.h>
#include <stdlib.h>

#include "internal.h"

#define MF_HAZARD_DEPTH MF_NESTING_MAX

struct reader {
    _Atomic(const struct mf_table *) hazard[MF_HAZARD_DEPTH];
    unsigned depth;    /* touched only by the owning thread */
    atomic_bool taken; /* owned by a live thread */
    struct reader *next;
};

static _Atomic(struct reader *) readers; /* a push-only list */
static _Thread_local struct reader *self;
static pthread_key_t exit_key;
static pthread_once_t exit_once = PTHREAD_ONCE_INIT;

static void give_back(void *r)
{
    atomic_store_explicit(&((struct reader *)r)->taken, false, memory_order_release);
}

static void make_key(void)
{
    /* if this fails, records are simply not reused when threads exit */
    (void)pthread_key_create(&exit_key, give_back);
}

static struct reader *take_record(void)
{
    pthread_once(&exit_once, make_key);
    struct reader *r;
    for (r = atomic_load(&readers); r; r = r->next) {
        bool expected = false;
        if (atomic_compare_exchange_strong(&r->taken, &expected, true))
            break;
    }
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r)
            return NULL;
        atomic_store(&r->taken, true);
        struct reader *head = atomic_load(&readers);
        do
            r->next = head;
        while (!atomic_compare_exchange_weak(&readers, &head, r));
    }
    r->depth = 0;
    (void)pthread_setspecific(exit_key, r);
    return r;
}

struct mf_table *mf_hazard_enter(_Atomic(struct mf_table *) *src, int *rc)
{
    struct reader *r = self;
    if (!r && !(r = self = take_record())) {
        *rc = MF_ENOMEM;
        return NULL;
    }
    if (r->depth == MF_HAZARD_DEPTH) {
        *rc = MF_ENESTED;
        return NULL;
    }
    _Atomic(const struct mf_table *) *slot = &r->hazard[r->depth++];
    struct mf_table *t;
    do {
        t = atomic_load(src);
        atomic_store(slot, t);
    } while (t != atomic_load(src));
    return t;
}

void mf_hazard_exit(void)
{
    struct reader *r = self;
    atomic_store_explicit(&r->hazard[--r->depth], NULL, memory_order_release);
}

bool mf_hazard_inside(void) { return self && self->depth; }

void mf_hazard_wait_unused(const struct mf_table *old)
{
    for (struct reader *r = atomic_load(&readers); r; r = r->next)
        for (unsigned i = 0; i < MF_HAZARD_DEPTH; i++)
            while (atomic_load(&r->hazard[i]) == old)
                sched_yield(); /* an access is short; the vCPU holding it will finish */
}

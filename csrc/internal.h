/*
 * internal.h - structures shared by the core's translation units; not part of the API.
 */
#ifndef MF_INTERNAL_H
#define MF_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "mmiofilter.h"

/* A compiled rule: what the access path needs to know about the owner of a byte. */
struct mf_crule {
    char name[MF_NAME_MAX];
    uint64_t start;
    uint8_t action;
    /* value and mask bytes live in the table's pool; bytes past *_len are 0 */
    size_t value_off, value_len, mask_off, mask_len;
};

/* One run of bytes with a single owner. Runs tile the whole BAR in order; run i covers
 * [run_start[i], run_start[i+1]) (the last one ends at the BAR's size). Gaps no rule covers
 * are runs too, owned by MF_NO_RULE with action allow, so every offset has exactly one run
 * and "the run after this one" is always the next index, even across pages. */
struct mf_run_info {
    uint32_t rule;
    uint8_t action;
};

/* Page index entry: a page that more than one run intersects, and the runs [lo, hi) that
 * do. A page not in the index lies within a single run. */
struct mf_page_slot {
    uint64_t page; /* MF_EMPTY_SLOT when free */
    uint32_t lo, hi;
};
#define MF_EMPTY_SLOT UINT64_MAX

struct mf_table {
    struct mf_config cfg;
    unsigned page_shift;

    size_t nrules;
    struct mf_crule *rules;
    _Atomic uint64_t *hits; /* per rule: the only mutable part of a table */
    uint8_t *pool;

    size_t nruns;
    uint64_t *run_start; /* separate from run_info so the binary search stays in few lines */
    struct mf_run_info *run_info;

    size_t nslots; /* a power of two, or 0 */
    size_t nindexed;
    struct mf_page_slot *slots;

    /* page layout, computed once at compile time */
    size_t nareas;
    struct mf_area *areas;
    uint64_t trapped_pages, collateral;

    size_t footprint;
};

static inline uint64_t mf_run_end(const struct mf_table *t, size_t i)
{
    return i + 1 < t->nruns ? t->run_start[i + 1] : t->cfg.bar_size;
}

/* The run owning byte `off` (off < bar_size). O(1) to find the page, then a binary search over
 * the runs of that page only; a page holding one run skips straight to a search of the
 * page-spanning runs, which the index never needs to store. */
size_t mf_find_run(const struct mf_table *t, uint64_t off);

/* Layout: fills t->areas, t->trapped_pages, t->collateral (layout.c). */
int mf_layout_compute(struct mf_table *t);

/* Backend: exactly one device access of `width` bytes (backend.c). */
int mf_dev_read(const struct mf_backend *b, uint64_t off, unsigned width, uint64_t *value);
int mf_dev_write(const struct mf_backend *b, uint64_t off, unsigned width, uint64_t value);

/* Event ring (events.c). */
struct mf_ring {
    pthread_mutex_t lock;
    struct mf_event *buf;
    size_t cap, head, count;
    uint64_t next_seq, dropped;
};
int mf_ring_init(struct mf_ring *r, size_t cap);
void mf_ring_destroy(struct mf_ring *r);
void mf_ring_push(struct mf_ring *r, uint32_t bar, const struct mf_access *acc, uint64_t value,
                  uint8_t outcome, const char *rule);

struct mf_filter {
    _Atomic(struct mf_table *) cur;
    struct mf_backend backend;
    uint32_t bar;
    pthread_mutex_t update_lock;
    struct mf_ring ring;
};

/* Decide and perform one access against table t (access.c). The caller has validated it. */
int mf_access_table(struct mf_filter *f, struct mf_table *t, const struct mf_access *acc,
                    struct mf_result *res);

/* Hazard pointers (hazard.c): a reader announces the table it reads; an updater waits until
 * no reader announces the table it has just unpublished before handing it back. */
struct mf_table *mf_hazard_enter(_Atomic(struct mf_table *) *src);
void mf_hazard_exit(void);
bool mf_hazard_inside(void);
void mf_hazard_wait_unused(const struct mf_table *old);

void mf_set_error(struct mf_error *err, int64_t rule, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif /* MF_INTERNAL_H */

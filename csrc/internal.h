/*
 * internal.h - structures shared by the core's translation units; not part of the API.
 */
#ifndef MF_INTERNAL_H
#define MF_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "mmiofilter.h"

/* A compiled rule: what the access path needs to know about the owner of a byte. Names are
 * kept apart (t->names): they are only read to record an event. */
struct mf_crule {
    uint64_t start;
    /* value and mask bytes live in the table's pool; bytes past *_len are 0 */
    uint32_t value_off, value_len, mask_off, mask_len;
    /* what the rule's action keeps apart, by action (its row says which): a guard's index
     * into the table's guards, a redirect's into its redirects; else MF_NO_RULE */
    union {
        uint32_t guard;
        uint32_t redirect;
    };
    uint8_t action;
};

/* Where a redirect rule's bytes go: byte start + i of the BAR is byte target_offset + i of
 * the filter's targets[target]. Kept apart so that other rules stay 32 bytes. */
struct mf_redirect {
    uint64_t target_offset, size;
    uint32_t rule, target;
};

struct mf_guard; /* guard.h */

/* One run of bytes with a single owner. Runs tile the whole BAR in order; run i covers
 * [runs[i].start, runs[i+1].start) (the last one ends at the BAR's size). Gaps no rule covers
 * are runs too, owned by MF_NO_RULE with action allow, so every offset has exactly one run
 * and "the run after this one" is always the next index, even across pages. 16 bytes: the
 * runs of a page usually share one or two cache lines. */
struct mf_run {
    uint64_t start;
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
    char (*names)[MF_NAME_MAX];
    _Atomic uint64_t *hits; /* per rule: the only mutable part of a table */
    uint8_t *pool;

    size_t nguards;
    struct mf_guard *guards;

    size_t nredirects;
    struct mf_redirect *redirects;

    size_t nruns;
    struct mf_run *runs;

    size_t nslots; /* a power of two, or 0 */
    unsigned slot_shift;
    size_t nindexed;
    struct mf_page_slot *slots;

    /* page layout, computed once at compile time (layout.c) */
    size_t nareas, nrd_areas;
    struct mf_area *areas, *rd_areas; /* direct and read-direct areas */
    uint64_t trapped_pages, read_direct_pages, collateral_read, collateral_write;

    size_t footprint;
};

static inline uint64_t mf_run_end(const struct mf_table *t, size_t i)
{
    return i + 1 < t->nruns ? t->runs[i + 1].start : t->cfg.bar_size;
}

static inline size_t mf_slot_of(const struct mf_table *t, uint64_t page)
{
    /* Fibonacci hashing: multiplicative, good spread for the strided pages real maps have */
    return (size_t)((page * 0x9E3779B97F4A7C15ull) >> t->slot_shift);
}

/* The last run in [lo, lo + n) starting at or before off, given runs[lo].start <= off.
 * Branchless (the compiler emits a conditional move), so its cost is log2(n) steps
 * whatever the offsets are, with no mispredictions for a guest to provoke. */
static inline size_t mf_search_runs(const struct mf_table *t, size_t lo, size_t hi, uint64_t off)
{
    size_t n = hi - lo;
    while (n > 1) {
        size_t half = n / 2;
        lo = t->runs[lo + half].start <= off ? lo + half : lo;
        n -= half;
    }
    return lo;
}

/* The run owning byte `off` (off < bar_size). O(1) to find the page, then a binary search over
 * the runs of that page only. A page not in the index lies inside one run, found by a search
 * of all runs: such pages are either direct (the VMM does not trap them) or wholly owned by
 * one rule. */
static inline size_t mf_find_run(const struct mf_table *t, uint64_t off)
{
    if (t->nslots) {
        uint64_t page = off >> t->page_shift;
        for (size_t s = mf_slot_of(t, page);; s = (s + 1) & (t->nslots - 1)) {
            const struct mf_page_slot *e = &t->slots[s];
            if (e->page == page)
                return mf_search_runs(t, e->lo, e->hi, off);
            if (e->page == MF_EMPTY_SLOT)
                break;
        }
    }
    return mf_search_runs(t, 0, t->nruns, off);
}

/* `width` fill bytes, little-endian: what a refused read returns. */
static inline uint64_t mf_fill_value(uint8_t fill, unsigned width)
{
    uint64_t v = 0;
    for (unsigned k = 0; k < width; k++)
        v |= (uint64_t)fill << (8 * k);
    return v;
}

/* The first n (at most 8) bytes at p as a little-endian value, and back: how KVM's
 * run->mmio.data and a pread buffer hold an access's value. */
static inline uint64_t mf_load_le(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n && i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static inline void mf_store_le(uint8_t *p, unsigned n, uint64_t v)
{
    for (unsigned i = 0; i < n && i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Layout: fills the table's page layout fields (layout.c). */
int mf_layout_compute(struct mf_table *t);


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
                  uint8_t outcome, const char *rule, const char *detail);

struct mf_filter {
    _Atomic(struct mf_table *) cur;
    struct mf_backend backend;
    struct mf_backend targets[MF_TARGETS_MAX]; /* redirect rules' backends, by index */
    size_t ntargets;
    uint32_t bar;
    pthread_mutex_t update_lock;
    struct mf_ring ring;
};

/* Decide and perform one access against table t (access.c). The caller has validated it. */
int mf_access_table(struct mf_filter *f, struct mf_table *t, const struct mf_access *acc,
                    struct mf_result *res);

/* Hazard pointers (hazard.c): a reader announces the table it reads; an updater waits until
 * no reader announces the table it has just unpublished before handing it back. */
/* NULL with *rc = MF_ENESTED or MF_ENOMEM when the thread cannot announce one more table. */
struct mf_table *mf_hazard_enter(_Atomic(struct mf_table *) *src, int *rc);
void mf_hazard_exit(void);
bool mf_hazard_inside(void);
void mf_hazard_wait_unused(const struct mf_table *old);

void mf_set_error(struct mf_error *err, int64_t rule, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif /* MF_INTERNAL_H */

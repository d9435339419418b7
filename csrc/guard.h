/*
 * guard.h - the interface between the access path and stateful guards; not part of the API.
 *
 * A guard kind is a struct mf_guard_class: it checks its parameters and names the register
 * blocks it owns (at compile time), makes and frees its protocol state, and decides one access
 * to one of its registers. The generic part (guard.c) keeps the state shared between the
 * tables of one filter, serializes the accesses to it, and arms a new guard only once no
 * access can still run under a table without it.
 */
#ifndef MF_GUARD_H
#define MF_GUARD_H

#include <stdbool.h>

#include "internal.h"

#define MF_GUARD_MAX_BLOCKS 3

/* A byte range a guard owns: [start, end). */
struct mf_block {
    uint64_t start, end;
};

/* One access handed to a guard: one its class declares valid. The guard performs
 * whatever device accesses it decides on through `dev` and says what it did. */
struct mf_guard_call {
    const struct mf_backend *dev;
    const struct mf_guard_spec *spec; /* the parameters of the table the access runs under */
    void *state;
    uint64_t offset;
    uint32_t value; /* write: the guest's value */
    bool is_write;
    /* out */
    uint8_t outcome;   /* MF_PASS: the device saw exactly this access; MF_BLOCKED; MF_EMULATED */
    uint32_t result;   /* read: what the guest gets; write: what reached the device */
    bool device_error; /* a device access failed (state left fail-closed) */
    char *detail;      /* MF_DETAIL_MAX bytes: the reason an event gives, set on refusals */
};

struct mf_guard_class {
    uint8_t kind;
    const char *name;
    /* The accesses that reach the guard at all, as QEMU's MemoryRegionOps.valid describes
     * them: widths min_width..max_width bytes, and at a multiple of the width unless
     * `unaligned`. Any other access is refused before the guard sees it. */
    struct {
        uint8_t min_width, max_width;
        bool unaligned;
    } valid;
    /* Check the parameters and write the blocks the guard owns; 0, or -1 with a reason. */
    int (*blocks)(const struct mf_guard_spec *spec, struct mf_block *out, size_t *n,
                  char *why, size_t why_len);
    /* Do two specs put the guard on the same registers (so one state can serve both)? */
    bool (*same_registers)(const struct mf_guard_spec *a, const struct mf_guard_spec *b);
    void *(*state_new)(const struct mf_guard_spec *spec);
    void (*state_free)(void *state);
    void (*access)(struct mf_guard_call *call);
    /* Optional: learn what the device already holds, once, when a new state is armed (a
     * packet someone queued before the guard existed). Device accesses go through call->dev;
     * offset, value and is_write are unused. */
    void (*arm)(struct mf_guard_call *call);
};

/* The guard kinds, indexed by enum mf_guard_kind (NULL where no kind has that number). */
extern const struct mf_guard_class *const mf_guard_classes[MF_GUARD_KINDS];
extern const struct mf_guard_class mf_guard_fsp;
const struct mf_guard_class *mf_guard_class_of(uint8_t kind);

/* The state one or more tables share: reference-counted, one lock for all its accesses. */
struct mf_guard_state {
    /* A spin-then-yield lock: the sections are a few dozen instructions and a device access,
     * and an uncontended pthread mutex alone cost as much as a plain trapped access here. */
    atomic_flag lock;
    _Atomic unsigned refs;
    _Atomic bool armed; /* writes are refused until the table that made it is the only one */
    const struct mf_guard_class *cls;
    void *impl;
};

/* A guard rule in a compiled table. */
struct mf_guard {
    uint32_t rule;
    struct mf_guard_spec spec;
    const struct mf_guard_class *cls;
    size_t nblocks;
    struct mf_block block[MF_GUARD_MAX_BLOCKS];
    struct mf_guard_state *state;
};

struct mf_guard_state *mf_guard_state_new(const struct mf_guard_class *cls,
                                          const struct mf_guard_spec *spec);
void mf_guard_state_put(struct mf_guard_state *s);

/* Decide one access owned wholly by guard `g` of table t (access.c calls it). */
int mf_guard_access(struct mf_filter *f, struct mf_table *t, const struct mf_guard *g,
                    const struct mf_access *acc, struct mf_result *res, char *detail);

/* Before publishing `next` in place of `cur` (NULL for a filter's first table): adopt cur's
 * state for every guard of next on the same registers, and give every other guard whose state
 * was armed before (a table published again) a fresh state, since the old one missed what was
 * done under the tables in between. MF_OK or MF_ENOMEM (next is then unusable: free it).
 * After the old table has drained: arm next's remaining new states, letting each look at the
 * device first. */
int mf_guards_adopt(struct mf_table *next, const struct mf_table *cur);
void mf_guards_arm(struct mf_table *t, const struct mf_backend *dev);

#endif /* MF_GUARD_H */

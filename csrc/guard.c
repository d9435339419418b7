/*
 * guard.c - what every guard kind shares: state life cycle, locking, arming, dispatch.
 *
 * Why the state is shared between tables: a policy swap must not reset a protocol. If the new
 * table started with a fresh state while a packet the old one checked is still queued, the
 * guest could rewrite that packet through the new table. So the new table adopts the old
 * table's state when its guard sits on the same registers, and accesses under either table
 * take the same lock. A guard with no predecessor cannot know what the old table let through,
 * so it refuses every access until the old table has drained (mf_guards_arm).
 */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>

#include "guard.h"

const struct mf_guard_class *const mf_guard_classes[MF_GUARD_KINDS] = {
    [MF_GUARD_FSP] = &mf_guard_fsp,
};

/* The union's size is the ABI: a new kind must fit in it. */
_Static_assert(sizeof(((struct mf_guard_spec *)0)->reserved) == 256, "mf_guard_spec union size");
_Static_assert(sizeof(struct mf_fsp_params) <= sizeof(((struct mf_guard_spec *)0)->reserved),
               "mf_fsp_params fits the mf_guard_spec union");

const struct mf_guard_class *mf_guard_class_of(uint8_t kind)
{
    return kind < MF_GUARD_KINDS ? mf_guard_classes[kind] : NULL;
}

struct mf_guard_state *mf_guard_state_new(const struct mf_guard_class *cls,
                                          const struct mf_guard_spec *spec)
{
    struct mf_guard_state *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->impl = cls->state_new(spec);
    if (!s->impl) {
        free(s);
        return NULL;
    }
    atomic_flag_clear(&s->lock);
    s->cls = cls;
    atomic_init(&s->refs, 1);
    atomic_init(&s->armed, false);
    return s;
}

void mf_guard_state_put(struct mf_guard_state *s)
{
    if (!s || atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    s->cls->state_free(s->impl);
    free(s);
}

int mf_guards_adopt(struct mf_table *next, const struct mf_table *cur)
{
    for (size_t i = 0; i < next->nguards; i++) {
        struct mf_guard *g = &next->guards[i];
        const struct mf_guard *o = NULL;
        for (size_t j = 0; cur && j < cur->nguards && !o; j++)
            if (cur->guards[j].cls == g->cls &&
                g->cls->same_registers(&g->spec, &cur->guards[j].spec))
                o = &cur->guards[j];
        if (o) {
            if (g->state != o->state) {
                atomic_fetch_add(&o->state->refs, 1);
                mf_guard_state_put(g->state);
                g->state = o->state;
            }
            continue;
        }
        /* A table published again: its state stopped watching when the table was retired,
         * and what the guest did since (under other tables) would pass it by. */
        if (atomic_load(&g->state->armed)) {
            struct mf_guard_state *fresh = mf_guard_state_new(g->cls, &g->spec);
            if (!fresh)
                return MF_ENOMEM;
            mf_guard_state_put(g->state);
            g->state = fresh;
        }
    }
    return MF_OK;
}

void mf_guards_arm(struct mf_table *t, const struct mf_backend *dev)
{
    for (size_t i = 0; i < t->nguards; i++) {
        struct mf_guard *g = &t->guards[i];
        struct mf_guard_state *s = g->state;
        if (atomic_load(&s->armed))
            continue; /* adopted: it has been watching all along */
        if (g->cls->arm) {
            char unused[MF_DETAIL_MAX] = "";
            struct mf_guard_call call = {.dev = dev, .spec = &g->spec, .state = s->impl,
                                         .detail = unused};
            g->cls->arm(&call); /* no access can reach an unarmed state: no lock needed */
        }
        atomic_store(&s->armed, true);
    }
}

static void lock(struct mf_guard_state *s)
{
    for (unsigned spins = 0; atomic_flag_test_and_set_explicit(&s->lock, memory_order_acquire);)
        if (++spins % 64 == 0)
            sched_yield(); /* the holder may be in a slow backend (a callback, pread) */
}

static void unlock(struct mf_guard_state *s)
{
    atomic_flag_clear_explicit(&s->lock, memory_order_release);
}

int mf_guard_access(struct mf_filter *f, struct mf_table *t, const struct mf_guard *g,
                    const struct mf_access *acc, struct mf_result *res, char *detail)
{
    const uint64_t bytefill = mf_fill_value(t->cfg.fill, acc->width);
    res->value = acc->is_write ? 0 : bytefill;
    res->outcome = MF_BLOCKED;
    /* An access the guard kind gives no meaning to (for the FSP guard: anything but one whole
     * 32-bit register) would reach a part of a register, or two registers at once. */
    if (acc->width < g->cls->valid.min_width || acc->width > g->cls->valid.max_width ||
        (!g->cls->valid.unaligned && acc->offset % acc->width)) {
        snprintf(detail, MF_DETAIL_MAX, "%u-byte access at +%#llx", (unsigned)acc->width,
                 (unsigned long long)(acc->offset % 8));
        return MF_OK;
    }
    struct mf_guard_state *s = g->state;
    /* Reads too: a read settles state (a queue seen idle), which the old table may still be
     * changing behind this state's back. */
    if (!atomic_load(&s->armed)) {
        snprintf(detail, MF_DETAIL_MAX, "arming: policy swap in progress");
        return MF_OK;
    }
    struct mf_guard_call call;
    call.dev = &f->backend;
    call.spec = &g->spec;
    call.state = s->impl;
    call.offset = acc->offset;
    call.value = (uint32_t)acc->value;
    call.is_write = acc->is_write;
    call.outcome = MF_BLOCKED;
    call.result = 0;
    call.device_error = false;
    call.detail = detail; /* the guard writes its reason straight into the event's */
    lock(s);
    g->cls->access(&call);
    unlock(s);
    res->outcome = call.outcome;
    if (call.outcome == MF_BLOCKED)
        res->value = acc->is_write ? 0 : bytefill;
    else
        res->value = call.result;
    return call.device_error ? MF_EDEVICE : MF_OK;
}

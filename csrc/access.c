/*
 * access.c - decide one trapped access byte by byte (contract §3).
 *
 * Flow: the VMM took an exit on a trapped page and calls mf_access(). We validate the access
 * (width, range with no wrap, value) and find the run owning its first byte through the page
 * index. When that run owns every byte (the common case), its one action decides; a guard or
 * a redirect rule takes the whole access. Otherwise we walk the following runs for the other
 * bytes (at most 8) and classify each byte by its action's row (actions.h):
 *
 *   read:  the byte passes (device), is redirected (its rule's target), or is answered here
 *          (the rule's value byte or the fill). Device untouched unless some byte passes.
 *   write: the byte passes (perhaps with bits forced), is redirected, or is blocked.
 *          Device untouched unless some byte passes.
 *
 * When every byte passes, the device sees exactly the guest's access: one access of the same
 * width at the same offset, because registers have per-access side effects. When none does,
 * the device is not touched at all. A mixed access is the dangerous case: by default it is
 * refused whole (partial = deny), since half a register write is rarely what a driver meant;
 * partial = split does what vfio does and accesses the passing bytes in naturally aligned
 * chunks. Either way no byte that does not pass reaches the device.
 */
#include "actions.h"
#include "backend.h"
#include "chunk.h"
#include "guard.h"
#include "internal.h"

/* What one access found out about its bytes. */
struct plan {
    unsigned width;
    uint32_t rule[8];   /* owner of each byte (MF_NO_RULE for none) */
    uint8_t action[8];
    uint8_t vbyte[8];   /* the owner's value byte at this offset (emulate, mask) */
    uint8_t mbyte[8];   /* the owner's mask byte at this offset (mask) */
};

static uint8_t pool_byte(const struct mf_table *t, size_t off, size_t len, uint64_t i)
{
    return i < len ? t->pool[off + i] : 0;
}

static void make_plan(struct mf_table *t, const struct mf_access *acc, size_t run,
                      struct plan *p)
{
    p->width = acc->width;
    uint32_t counted[8];
    unsigned ncounted = 0;
    for (unsigned k = 0; k < acc->width; k++) {
        uint64_t a = acc->offset + k;
        while (a >= mf_run_end(t, run)) /* runs tile the BAR: the next byte is in the next run */
            run++;
        uint32_t r = t->runs[run].rule;
        p->rule[k] = r;
        p->action[k] = t->runs[run].action;
        p->vbyte[k] = p->mbyte[k] = 0;
        if (r == MF_NO_RULE)
            continue;
        const struct mf_crule *c = &t->rules[r];
        uint64_t i = a - c->start;
        if (mf_action(c->action)->read_value || mf_action(c->action)->write_forced) {
            p->vbyte[k] = pool_byte(t, c->value_off, c->value_len, i);
            p->mbyte[k] = pool_byte(t, c->mask_off, c->mask_len, i);
        }
        /* a hit counts once per access per rule, whatever the outcome */
        bool seen = false;
        for (unsigned j = 0; j < ncounted; j++)
            seen |= counted[j] == r;
        if (!seen) {
            counted[ncounted++] = r;
            atomic_fetch_add_explicit(&t->hits[r], 1, memory_order_relaxed);
        }
    }
}

/* Access the bytes selected by `sel` (bit k = byte k) in naturally aligned chunks: at
 * position p in a run ending at e, the widest w of 8, 4, 2, 1 with p % w == 0 and p + w <= e.
 * Aligned chunks are the accesses every PCI device must accept. `off` is where byte 0 of the
 * access lies in b's space (for a target, modulo 2^64: only the selected bytes need to be
 * real addresses). For reads, the bytes read are merged into *v; for writes, *v supplies
 * them. A failure returns `fail`. */
static int split_access(const struct mf_backend *b, uint64_t off, unsigned width, unsigned sel,
                        bool is_write, uint64_t *v, int fail)
{
    unsigned k = 0;
    while (k < width) {
        if (!(sel >> k & 1)) {
            k++;
            continue;
        }
        unsigned e = k;
        while (e < width && (sel >> e & 1))
            e++;
        uint64_t p = off + k, end = off + e;
        while (p < end) {
            unsigned w = mf_chunk_width(p, end);
            unsigned shift = 8 * (unsigned)(p - off);
            uint64_t lane = w == 8 ? ~0ull : ((1ull << (8 * w)) - 1);
            if (is_write) {
                if (mf_dev_write(b, p, w, (*v >> shift) & lane))
                    return fail;
            } else {
                uint64_t x;
                if (mf_dev_read(b, p, w, &x))
                    return fail;
                *v = (*v & ~(lane << shift)) | ((x & lane) << shift);
            }
            p += w;
        }
        k = e;
    }
    return MF_OK;
}

static const char *rule_name(const struct mf_table *t, uint32_t r)
{
    return r == MF_NO_RULE ? "" : t->names[r];
}

/* Index of the first byte whose bit is set in `sel`, or -1. */
static int first_of(unsigned sel) { return sel ? __builtin_ctz(sel) : -1; }

/* The redirect bytes `tsel` of a split access, rule by rule (in the order of their first
 * byte), each in aligned chunks of its target's addresses. */
static int split_targets(struct mf_filter *f, const struct mf_table *t,
                         const struct mf_access *acc, const struct plan *p, unsigned tsel,
                         bool is_write, uint64_t *v)
{
    while (tsel) {
        const uint32_t r = p->rule[first_of(tsel)];
        unsigned sel = 0;
        for (unsigned k = 0; k < p->width; k++)
            sel |= (unsigned)(p->rule[k] == r) << k;
        const struct mf_crule *c = &t->rules[r];
        const struct mf_redirect *d = &t->redirects[c->redirect];
        /* where byte 0 of the access would land in the target (mod 2^64) */
        const uint64_t base = d->target_offset + (acc->offset - c->start);
        int rc = split_access(&f->targets[d->target], base, p->width, sel, is_write, v,
                              MF_ETARGET);
        if (rc != MF_OK)
            return rc;
        tsel &= ~sel;
    }
    return MF_OK;
}

static int do_read(struct mf_filter *f, struct mf_table *t, const struct mf_access *acc,
                   const struct plan *p, struct mf_result *res, const char **why)
{
    const unsigned w = p->width, all = (1u << w) - 1;
    unsigned pass = 0, emul = 0, audit = 0, tgt = 0;
    for (unsigned k = 0; k < w; k++) {
        const struct mf_action_row *a = mf_action(p->action[k]);
        pass |= (unsigned)a->read_passes << k;
        tgt |= (unsigned)a->redirected << k;
        emul |= (unsigned)(!a->read_passes && a->read_value) << k;
        audit |= (unsigned)a->read_recorded << k;
    }
    /* the answer for bytes that do not pass: the rule's value or the fill */
    uint64_t local = 0;
    for (unsigned k = 0; k < w; k++)
        local |= (uint64_t)(emul >> k & 1 ? p->vbyte[k] : t->cfg.fill) << (8 * k);

    if (pass == all) {
        res->outcome = MF_PASS;
        *why = audit ? rule_name(t, p->rule[first_of(audit)]) : NULL;
        return mf_dev_read(&f->backend, acc->offset, w, &res->value) ? MF_EDEVICE : MF_OK;
    }
    *why = rule_name(t, p->rule[first_of(all & ~pass)]);
    /* no byte reaches the device or a target: answered here; else the access is mixed */
    if (pass == 0 && tgt == 0) {
        res->value = local;
        res->outcome = emul == all ? MF_EMULATED : MF_BLOCKED;
        return MF_OK;
    }
    if (t->cfg.partial == MF_PARTIAL_DENY) {
        res->value = mf_fill_value(t->cfg.fill, w);
        res->outcome = MF_BLOCKED;
        return MF_OK;
    }
    res->value = local;
    res->outcome = MF_PARTIAL;
    int rc = split_access(&f->backend, acc->offset, w, pass, false, &res->value, MF_EDEVICE);
    return rc != MF_OK ? rc : split_targets(f, t, acc, p, tgt, false, &res->value);
}

static int do_write(struct mf_filter *f, struct mf_table *t, const struct mf_access *acc,
                    const struct plan *p, struct mf_result *res, const char **why)
{
    const unsigned w = p->width, all = (1u << w) - 1;
    unsigned blocked = 0, audit = 0, changed = 0, tgt = 0;
    uint64_t out = 0;
    for (unsigned k = 0; k < w; k++) {
        const struct mf_action_row *a = mf_action(p->action[k]);
        tgt |= (unsigned)a->redirected << k;
        uint8_t b = (uint8_t)(acc->value >> (8 * k));
        if (a->write_forced) {
            uint8_t nb = (uint8_t)((b & ~p->mbyte[k]) | (p->vbyte[k] & p->mbyte[k]));
            changed |= (unsigned)(nb != b) << k;
            b = nb;
        }
        blocked |= (unsigned)a->write_blocked << k;
        audit |= (unsigned)a->write_recorded << k;
        out |= (uint64_t)b << (8 * k);
    }

    if (blocked == 0) {
        res->value = out;
        res->outcome = changed ? MF_MASKED : MF_PASS;
        *why = changed ? rule_name(t, p->rule[first_of(changed)])
               : audit ? rule_name(t, p->rule[first_of(audit)])
                       : NULL;
        return mf_dev_write(&f->backend, acc->offset, w, out) ? MF_EDEVICE : MF_OK;
    }
    *why = rule_name(t, p->rule[first_of(blocked)]);
    res->value = 0;
    if ((blocked == all && tgt == 0) || t->cfg.partial == MF_PARTIAL_DENY) {
        res->outcome = MF_BLOCKED;
        return MF_OK;
    }
    res->outcome = MF_PARTIAL;
    /* report what was written (to the device or a target), 0 in the skipped bytes */
    for (unsigned k = 0; k < w; k++)
        if ((blocked & ~tgt) >> k & 1)
            out &= ~(0xFFull << (8 * k));
    res->value = out;
    int rc = split_access(&f->backend, acc->offset, w, all & ~blocked, true, &out, MF_EDEVICE);
    return rc != MF_OK ? rc : split_targets(f, t, acc, p, tgt, true, &out);
}

/* The common case: every byte of the access has the same owner, so the access has one
 * action and needs no per-byte plan. Same decisions as the general path, by construction:
 * a uniform access is never mixed. */
static int access_uniform(struct mf_filter *f, struct mf_table *t, const struct mf_access *acc,
                          size_t run, struct mf_result *res, const char **why)
{
    const uint32_t r = t->runs[run].rule;
    const struct mf_action_row *a = mf_action(t->runs[run].action);
    const unsigned w = acc->width;
    if (r != MF_NO_RULE)
        atomic_fetch_add_explicit(&t->hits[r], 1, memory_order_relaxed);
    const char *name = r == MF_NO_RULE ? NULL : t->names[r];
    if (!acc->is_write) {
        *why = a->read_recorded ? name : NULL;
        if (a->read_passes) {
            res->outcome = MF_PASS;
            return mf_dev_read(&f->backend, acc->offset, w, &res->value) ? MF_EDEVICE : MF_OK;
        }
        *why = name;
        if (!a->read_value) {
            res->outcome = MF_BLOCKED;
            res->value = mf_fill_value(t->cfg.fill, w);
            return MF_OK;
        }
        const struct mf_crule *c = &t->rules[r];
        uint64_t v = 0;
        for (unsigned k = 0; k < w; k++)
            v |= (uint64_t)pool_byte(t, c->value_off, c->value_len, acc->offset + k - c->start)
                 << (8 * k);
        res->outcome = MF_EMULATED;
        res->value = v;
        return MF_OK;
    }
    *why = a->write_recorded ? name : NULL;
    if (a->write_blocked) {
        *why = name;
        res->outcome = MF_BLOCKED;
        res->value = 0;
        return MF_OK;
    }
    uint64_t out = acc->value;
    res->outcome = MF_PASS;
    if (a->write_forced) {
        const struct mf_crule *c = &t->rules[r];
        uint64_t m = 0, v = 0;
        for (unsigned k = 0; k < w; k++) {
            uint64_t i = acc->offset + k - c->start;
            m |= (uint64_t)pool_byte(t, c->mask_off, c->mask_len, i) << (8 * k);
            v |= (uint64_t)pool_byte(t, c->value_off, c->value_len, i) << (8 * k);
        }
        out = (out & ~m) | (v & m);
        if (out != acc->value) {
            res->outcome = MF_MASKED;
            *why = name;
        }
    }
    res->value = out;
    return mf_dev_write(&f->backend, acc->offset, w, out) ? MF_EDEVICE : MF_OK;
}

/* An access owned wholly by a guard: the guard decides, and its event carries the guard's
 * reason. Apart, so that the reason's buffer (and the stack check a char array brings) stays
 * off the common path. */
static __attribute__((noinline)) int access_guarded(struct mf_filter *f, struct mf_table *t,
                                                    const struct mf_access *acc, uint32_t r,
                                                    struct mf_result *res)
{
    char detail[MF_DETAIL_MAX];
    detail[0] = '\0';
    atomic_fetch_add_explicit(&t->hits[r], 1, memory_order_relaxed);
    int rc = mf_guard_access(f, t, &t->guards[t->rules[r].guard], acc, res, detail);
    res->status = (int8_t)rc;
    if (rc == MF_OK && res->outcome != MF_PASS)
        mf_ring_push(&f->ring, f->bar, acc, acc->is_write ? acc->value : res->value,
                     res->outcome, t->names[r], detail);
    return rc;
}

/* An access owned wholly by one redirect rule: one access of the same width to its target,
 * at the same place relative to the rule. Counted, not an event: the VMM asked for it. */
static __attribute__((noinline)) int access_redirected(struct mf_filter *f, struct mf_table *t,
                                                       const struct mf_access *acc, uint32_t r,
                                                       struct mf_result *res)
{
    const struct mf_crule *c = &t->rules[r];
    const struct mf_redirect *d = &t->redirects[c->redirect];
    const struct mf_backend *b = &f->targets[d->target];
    const uint64_t at = d->target_offset + (acc->offset - c->start);
    atomic_fetch_add_explicit(&t->hits[r], 1, memory_order_relaxed);
    res->outcome = MF_REDIRECTED;
    int rc;
    if (acc->is_write) {
        res->value = acc->value;
        rc = mf_dev_write(b, at, acc->width, acc->value) ? MF_ETARGET : MF_OK;
    } else {
        rc = mf_dev_read(b, at, acc->width, &res->value) ? MF_ETARGET : MF_OK;
    }
    res->status = (int8_t)rc;
    return rc;
}

int mf_access_table(struct mf_filter *f, struct mf_table *t, const struct mf_access *acc,
                    struct mf_result *res)
{
    const char *why = NULL;
    int rc;
    size_t run = mf_find_run(t, acc->offset);
    bool uniform = acc->offset + acc->width <= mf_run_end(t, run);
    if (t->cfg.unaligned == MF_UNALIGNED_DENY && acc->offset % acc->width) {
        struct plan p;
        make_plan(t, acc, run, &p); /* for the hit counters: the bytes were still touched */
        res->outcome = MF_BLOCKED;
        res->value = acc->is_write ? 0 : mf_fill_value(t->cfg.fill, acc->width);
        why = "(unaligned)";
        rc = MF_OK;
    } else if (uniform && mf_action(t->runs[run].action)->guarded) {
        return access_guarded(f, t, acc, t->runs[run].rule, res);
    } else if (uniform && mf_action(t->runs[run].action)->redirected) {
        return access_redirected(f, t, acc, t->runs[run].rule, res);
    } else if (uniform) {
        rc = access_uniform(f, t, acc, run, res, &why);
    } else {
        struct plan p;
        make_plan(t, acc, run, &p);
        rc = acc->is_write ? do_write(f, t, acc, &p, res, &why) : do_read(f, t, acc, &p, res, &why);
    }
    res->status = (int8_t)rc;
    /* an event for every outcome but a plain pass, and for an audited pass */
    if (rc == MF_OK && why)
        mf_ring_push(&f->ring, f->bar, acc, acc->is_write ? acc->value : res->value,
                     res->outcome, why, NULL);
    return rc;
}

/* Validation comes first and touches nothing: a bad access is the guest's (or the VMM's)
 * bug and must not reach the device, the counters or the event ring. */
static int validate(const struct mf_table *t, const struct mf_access *acc)
{
    unsigned w = acc->width;
    if (w != 1 && w != 2 && w != 4 && w != 8)
        return MF_EWIDTH;
    /* offset + width <= size, written so it cannot wrap */
    if (acc->offset > t->cfg.bar_size || w > t->cfg.bar_size - acc->offset)
        return MF_ERANGE;
    if (acc->is_write && w < 8 && (acc->value >> (8 * w)))
        return MF_EVALUE;
    return MF_OK;
}

static int access_one(struct mf_filter *f, struct mf_table *t, const struct mf_access *acc,
                      struct mf_result *res)
{
    int rc = validate(t, acc);
    if (rc != MF_OK) {
        res->status = (int8_t)rc;
        res->value = 0;
        res->outcome = MF_BLOCKED;
        return rc;
    }
    return mf_access_table(f, t, acc, res);
}

int mf_access(struct mf_filter *f, const struct mf_access *acc, struct mf_result *res)
{
    int rc;
    struct mf_table *t = mf_hazard_enter(&f->cur, &rc);
    if (!t) {
        res->status = (int8_t)rc;
        res->value = 0;
        res->outcome = MF_BLOCKED;
        return rc;
    }
    rc = access_one(f, t, acc, res);
    mf_hazard_exit();
    return rc;
}

int mf_access_scalar(struct mf_filter *f, uint64_t offset, unsigned width, int is_write,
                     uint64_t value, struct mf_result *res)
{
    /* a width that does not fit uint8_t must not wrap into a valid one */
    struct mf_access acc = {offset, value, (uint8_t)(width > 8 ? 0 : width), is_write != 0};
    return mf_access(f, &acc, res);
}

size_t mf_access_batch(struct mf_filter *f, const struct mf_access *acc, struct mf_result *res,
                       size_t n)
{
    int rc;
    struct mf_table *t = mf_hazard_enter(&f->cur, &rc);
    if (!t) {
        for (size_t i = 0; i < n; i++)
            res[i] = (struct mf_result){.status = (int8_t)rc, .outcome = MF_BLOCKED};
        return n;
    }
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += access_one(f, t, &acc[i], &res[i]) != MF_OK;
    mf_hazard_exit();
    return bad;
}

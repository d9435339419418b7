/*
 * filter.c - a filter's life: creation, policy updates, counters, teardown.
 */
#include <stdio.h>
#include <stdlib.h>

#include "guard.h"
#include "internal.h"

/* Can `b` reach bytes [0, need) of what it stands for? `what` names it in the message. */
static int check_backend(const struct mf_backend *b, uint64_t need, const char *what,
                         struct mf_error *err)
{
    switch (b->kind) {
    case MF_BACKEND_MEMORY:
        if (!b->base || b->length < need) {
            mf_set_error(err, -1, "%s: memory backend maps %#llx bytes, less than %#llx", what,
                         (unsigned long long)b->length, (unsigned long long)need);
            return MF_EINVAL;
        }
        return MF_OK;
    case MF_BACKEND_FD:
        if (b->fd < 0 || b->fd_offset < 0 || need > (uint64_t)INT64_MAX - (uint64_t)b->fd_offset) {
            mf_set_error(err, -1, "%s: fd backend: bad fd, or offset + %#llx bytes past 2^63",
                         what, (unsigned long long)need);
            return MF_EINVAL;
        }
        return MF_OK;
    case MF_BACKEND_CALLBACK:
        if (!b->read || !b->write) {
            mf_set_error(err, -1, "%s: callback backend needs both read and write", what);
            return MF_EINVAL;
        }
        return MF_OK;
    }
    mf_set_error(err, -1, "%s: unknown backend kind %u", what, b->kind);
    return MF_EINVAL;
}

/* Every redirect rule of `t` names a target the filter has, which reaches the rule's bytes. */
static int check_targets(const struct mf_backend *targets, size_t ntargets,
                         const struct mf_table *t, struct mf_error *err)
{
    for (size_t k = 0; k < t->nredirects; k++) {
        const struct mf_redirect *d = &t->redirects[k];
        if (d->target >= ntargets) {
            mf_set_error(err, d->rule,
                         "rule '%s': redirect target #%u was not given to the filter (it has %zu)",
                         t->names[d->rule], d->target, ntargets);
            return MF_EINVAL;
        }
        char what[MF_NAME_MAX + 32];
        snprintf(what, sizeof what, "rule '%s': target #%u", t->names[d->rule], d->target);
        if (check_backend(&targets[d->target], d->target_offset + d->size, what, err)) {
            err->rule = d->rule;
            return MF_EINVAL;
        }
    }
    return MF_OK;
}

struct mf_filter *mf_filter_new(const struct mf_backend *backend,
                                const struct mf_backend *targets, size_t ntargets,
                                uint32_t bar, size_t ring_capacity, struct mf_table *table,
                                struct mf_error *err)
{
    struct mf_filter *f = NULL;
    if (!table || !backend || (ntargets && !targets)) {
        mf_set_error(err, -1, "table, backend or targets is NULL");
        goto fail;
    }
    if (ring_capacity == 0 || ring_capacity > MF_RING_MAX) {
        mf_set_error(err, -1, "event ring capacity %zu is not in 1..%u", ring_capacity,
                     (unsigned)MF_RING_MAX);
        goto fail;
    }
    if (bar >= MF_NUM_BARS) {
        mf_set_error(err, -1, "bar %u is not a BAR index 0..%d", bar, MF_NUM_BARS - 1);
        goto fail;
    }
    if (ntargets > MF_TARGETS_MAX) {
        mf_set_error(err, -1, "%zu redirect targets is more than %u", ntargets,
                     (unsigned)MF_TARGETS_MAX);
        goto fail;
    }
    if (check_backend(backend, table->cfg.bar_size, "the device", err))
        goto fail;
    for (size_t k = 0; k < ntargets; k++) {
        char what[32];
        snprintf(what, sizeof what, "target #%zu", k);
        if (check_backend(&targets[k], 0, what, err))
            goto fail;
    }
    if (check_targets(targets, ntargets, table, err))
        goto fail;
    f = calloc(1, sizeof *f);
    if (!f || mf_ring_init(&f->ring, ring_capacity) != MF_OK) {
        free(f);
        mf_set_error(err, -1, "out of memory");
        goto fail;
    }
    if (pthread_mutex_init(&f->update_lock, NULL)) {
        mf_ring_destroy(&f->ring);
        free(f);
        mf_set_error(err, -1, "cannot create the update lock");
        goto fail;
    }
    if (mf_guards_adopt(table, NULL) != MF_OK) { /* a retired table: fresh guard states */
        mf_ring_destroy(&f->ring);
        pthread_mutex_destroy(&f->update_lock);
        free(f);
        mf_set_error(err, -1, "out of memory");
        goto fail;
    }
    f->backend = *backend;
    for (size_t k = 0; k < ntargets; k++)
        f->targets[k] = targets[k];
    f->ntargets = ntargets;
    f->bar = bar;
    mf_guards_arm(table, backend); /* no table before this one: nothing to drain */
    atomic_init(&f->cur, table);
    return f;
fail:
    mf_table_free(table);
    return NULL;
}

void mf_filter_free(struct mf_filter *f)
{
    if (!f)
        return;
    mf_table_free(atomic_load(&f->cur));
    mf_ring_destroy(&f->ring);
    pthread_mutex_destroy(&f->update_lock);
    free(f);
}

int mf_filter_update(struct mf_filter *f, struct mf_table *t, struct mf_table **old,
                     struct mf_error *err)
{
    if (!t || !old) {
        mf_set_error(err, -1, "table or old is NULL");
        return MF_EINVAL;
    }
    /* Waiting for readers from inside an access would wait for ourselves (or for a thread
     * that waits for us through the update lock). */
    if (mf_hazard_inside()) {
        mf_set_error(err, -1, "update from inside an access (a callback backend) would wait "
                              "for itself");
        return MF_EBUSY;
    }
    if (check_targets(f->targets, f->ntargets, t, err))
        return MF_EINVAL;
    pthread_mutex_lock(&f->update_lock);
    struct mf_table *cur = atomic_load(&f->cur);
    if (t == cur || t->cfg.bar_size != cur->cfg.bar_size ||
        t->cfg.page_size != cur->cfg.page_size) {
        pthread_mutex_unlock(&f->update_lock);
        if (t == cur)
            mf_set_error(err, -1, "the table is already the filter's");
        else
            mf_set_error(err, -1,
                         "the table's BAR size %#llx or page size %#llx differs from the "
                         "filter's (%#llx, %#llx)",
                         (unsigned long long)t->cfg.bar_size,
                         (unsigned long long)t->cfg.page_size,
                         (unsigned long long)cur->cfg.bar_size,
                         (unsigned long long)cur->cfg.page_size);
        return MF_EINVAL;
    }
    if (mf_guards_adopt(t, cur) != MF_OK) {
        pthread_mutex_unlock(&f->update_lock);
        return MF_ENOMEM;
    }
    struct mf_table *prev = atomic_exchange(&f->cur, t);
    mf_hazard_wait_unused(prev);
    mf_guards_arm(t, &f->backend); /* guards new to this filter: the old table is gone */
    pthread_mutex_unlock(&f->update_lock);
    *old = prev;
    return MF_OK;
}

int mf_filter_counters(struct mf_filter *f, uint64_t *out, size_t n)
{
    int rc;
    struct mf_table *t = mf_hazard_enter(&f->cur, &rc);
    if (!t)
        return rc;
    if (n != t->nrules) {
        mf_hazard_exit();
        return MF_EINVAL;
    }
    mf_table_counters(t, out, n);
    mf_hazard_exit();
    return MF_OK;
}

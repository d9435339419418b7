/*
 * filter.c - a filter's life: creation, policy updates, counters, teardown.
 */
#include <stdlib.h>

#include "guard.h"
#include "internal.h"

struct mf_filter *mf_filter_new(const struct mf_backend *backend, uint32_t bar,
                                size_t ring_capacity, struct mf_table *table,
                                struct mf_error *err)
{
    struct mf_filter *f = NULL;
    if (!table || !backend) {
        mf_set_error(err, -1, "table or backend is NULL");
        goto fail;
    }
    if (ring_capacity == 0 || ring_capacity > (1u << 24)) {
        mf_set_error(err, -1, "event ring capacity %zu is not in 1..2^24", ring_capacity);
        goto fail;
    }
    switch (backend->kind) {
    case MF_BACKEND_MEMORY:
        if (!backend->base || backend->length < table->cfg.bar_size) {
            mf_set_error(err, -1, "memory backend maps %#llx bytes, less than the BAR's %#llx",
                         (unsigned long long)backend->length,
                         (unsigned long long)table->cfg.bar_size);
            goto fail;
        }
        break;
    case MF_BACKEND_FD:
        if (backend->fd < 0 || backend->fd_offset < 0 ||
            table->cfg.bar_size > (uint64_t)INT64_MAX - (uint64_t)backend->fd_offset) {
            mf_set_error(err, -1, "fd backend: bad fd or offset + BAR size past 2^63");
            goto fail;
        }
        break;
    case MF_BACKEND_CALLBACK:
        if (!backend->read || !backend->write) {
            mf_set_error(err, -1, "callback backend needs both read and write");
            goto fail;
        }
        break;
    default:
        mf_set_error(err, -1, "unknown backend kind %u", backend->kind);
        goto fail;
    }
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

int mf_filter_update(struct mf_filter *f, struct mf_table *t, struct mf_table **old)
{
    if (!t || !old)
        return MF_EINVAL;
    /* Waiting for readers from inside an access would wait for ourselves (or for a thread
     * that waits for us through the update lock). */
    if (mf_hazard_inside())
        return MF_EBUSY;
    pthread_mutex_lock(&f->update_lock);
    struct mf_table *cur = atomic_load(&f->cur);
    if (t == cur || t->cfg.bar_size != cur->cfg.bar_size ||
        t->cfg.page_size != cur->cfg.page_size) {
        pthread_mutex_unlock(&f->update_lock);
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
    struct mf_table *t = mf_hazard_enter(&f->cur);
    if (!t)
        return MF_EBUSY;
    if (n != t->nrules) {
        mf_hazard_exit();
        return MF_EINVAL;
    }
    mf_table_counters(t, out, n);
    mf_hazard_exit();
    return MF_OK;
}

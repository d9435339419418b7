/*
 * events.c - the bounded event ring.
 *
 * A guest that hammers a blocked register produces an event per access. The ring has a fixed
 * capacity so that guest can neither grow host memory nor stall its vCPU: when full, the
 * oldest event is overwritten and a drop counter says how many were lost (and `seq` keeps
 * counting, so a reader sees where the gap is). Events are the slow path, so a mutex is fine.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

int mf_ring_init(struct mf_ring *r, size_t cap)
{
    memset(r, 0, sizeof *r);
    r->buf = calloc(cap, sizeof *r->buf);
    if (!r->buf)
        return MF_ENOMEM;
    r->cap = cap;
    if (pthread_mutex_init(&r->lock, NULL)) {
        free(r->buf);
        return MF_ENOMEM;
    }
    return MF_OK;
}

void mf_ring_destroy(struct mf_ring *r)
{
    pthread_mutex_destroy(&r->lock);
    free(r->buf);
}

void mf_ring_push(struct mf_ring *r, uint32_t bar, const struct mf_access *acc, uint64_t value,
                  uint8_t outcome, const char *rule, const char *detail)
{
    pthread_mutex_lock(&r->lock);
    /* Wall-clock time (an audit trail is read next to other logs), under the lock so that
     * times follow `seq` unless the clock itself is set back. */
    struct timespec ts;
    uint64_t now = 0;
    if (clock_gettime(CLOCK_REALTIME, &ts) == 0 && ts.tv_sec >= 0)
        now = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    if (r->count == r->cap) {
        r->head = (r->head + 1) % r->cap;
        r->count--;
        r->dropped++;
    }
    struct mf_event *e = &r->buf[(r->head + r->count) % r->cap];
    r->count++;
    e->seq = r->next_seq++;
    e->time_ns = now;
    e->offset = acc->offset;
    e->value = value;
    e->bar = bar;
    e->width = acc->width;
    e->is_write = acc->is_write;
    e->outcome = outcome;
    size_t n = strnlen(rule, MF_NAME_MAX - 1);
    memcpy(e->rule, rule, n);
    e->rule[n] = '\0';
    n = detail ? strnlen(detail, MF_DETAIL_MAX - 1) : 0;
    memcpy(e->detail, detail ? detail : "", n);
    e->detail[n] = '\0';
    pthread_mutex_unlock(&r->lock);
}

size_t mf_drain_events(struct mf_filter *f, struct mf_event *out, size_t cap)
{
    struct mf_ring *r = &f->ring;
    pthread_mutex_lock(&r->lock);
    size_t n = r->count < cap ? r->count : cap;
    for (size_t i = 0; i < n; i++)
        out[i] = r->buf[(r->head + i) % r->cap];
    r->head = (r->head + n) % r->cap;
    r->count -= n;
    pthread_mutex_unlock(&r->lock);
    return n;
}

uint64_t mf_events_dropped(struct mf_filter *f)
{
    pthread_mutex_lock(&f->ring.lock);
    uint64_t d = f->ring.dropped;
    pthread_mutex_unlock(&f->ring.lock);
    return d;
}

size_t mf_events_pending(struct mf_filter *f)
{
    pthread_mutex_lock(&f->ring.lock);
    size_t n = f->ring.count;
    pthread_mutex_unlock(&f->ring.lock);
    return n;
}

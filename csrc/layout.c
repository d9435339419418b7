/*
 * layout.c - which pages a VMM may map straight into the guest (DESIGN §4).
 *
 * The MMU protects whole pages, so one non-allow byte traps its whole page, and so does a
 * partial last page (a mapping cannot end mid-page). The direct areas are the maximal runs of
 * the other pages: the same list vfio reports in VFIO_REGION_INFO_CAP_SPARSE_MMAP. Computed
 * once per table from the runs, so it costs O(runs), never O(pages).
 */
#include <stdlib.h>
#include <string.h>

#include "actions.h"
#include "internal.h"

/* Walks trapped page ranges in ascending order; direct areas are the gaps between them. */
struct walk {
    struct mf_table *t;
    uint64_t next;          /* first page not yet classified */
    uint64_t trapped_bytes; /* bytes of the BAR inside trapped pages */
};

static void trap(struct walk *w, uint64_t first, uint64_t last)
{
    struct mf_table *t = w->t;
    const unsigned sh = t->page_shift;
    const uint64_t full_pages = t->cfg.bar_size >> sh;
    if (last < w->next)
        return; /* already trapped by an earlier run */
    if (first < w->next)
        first = w->next;
    if (first > w->next)
        t->areas[t->nareas++] = (struct mf_area){w->next << sh, (first - w->next) << sh};
    t->trapped_pages += last - first + 1;
    /* the partial page ends at the BAR's end; a full page's end never wraps */
    uint64_t end = last + 1 > full_pages ? t->cfg.bar_size : (last + 1) << sh;
    w->trapped_bytes += end - (first << sh);
    w->next = last + 1;
}

int mf_layout_compute(struct mf_table *t)
{
    const unsigned sh = t->page_shift;
    const uint64_t full_pages = t->cfg.bar_size >> sh; /* pages wholly inside the BAR */

    /* At most one direct area before each non-allow run, and one at the end. */
    t->areas = malloc((t->nruns + 1) * sizeof *t->areas);
    if (!t->areas)
        return MF_ENOMEM;
    t->nareas = 0;
    t->trapped_pages = 0;

    struct walk w = {t, 0, 0};
    uint64_t restricted = 0; /* bytes owned by a non-direct action: never collateral */
    for (size_t i = 0; i < t->nruns; i++) {
        if (mf_action_direct(t->runs[i].action))
            continue;
        uint64_t s = t->runs[i].start, e = mf_run_end(t, i);
        restricted += e - s;
        trap(&w, s >> sh, (e - 1) >> sh);
    }
    if (t->cfg.bar_size & (t->cfg.page_size - 1)) /* a mapping cannot end mid-page */
        trap(&w, full_pages, full_pages);
    if (full_pages > w.next)
        t->areas[t->nareas++] = (struct mf_area){w.next << sh, (full_pages - w.next) << sh};
    t->collateral = w.trapped_bytes - restricted;
    return MF_OK;
}

size_t mf_table_direct_areas(const struct mf_table *t, struct mf_area *out, size_t cap)
{
    for (size_t i = 0; i < t->nareas && i < cap; i++)
        out[i] = t->areas[i];
    return t->nareas;
}

uint64_t mf_table_collateral(const struct mf_table *t) { return t->collateral; }
uint64_t mf_table_trapped_pages(const struct mf_table *t) { return t->trapped_pages; }

static uint8_t *put_le(uint8_t *p, uint64_t v, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
    return p + n;
}

size_t mf_table_sparse_mmap(const struct mf_table *t, uint8_t *out, size_t cap)
{
    /* struct vfio_info_cap_header {u16 id; u16 version; u32 next;}, u32 nr_areas,
     * u32 reserved, then struct vfio_region_sparse_mmap_area {u64 offset; u64 size;}[] */
    size_t len = 16 + 16 * t->nareas;
    if (!out || cap < len)
        return len;
    uint8_t *p = out;
    p = put_le(p, 1, 2); /* VFIO_REGION_INFO_CAP_SPARSE_MMAP */
    p = put_le(p, 1, 2); /* version */
    p = put_le(p, 0, 4); /* next: the VMM chains capabilities itself */
    p = put_le(p, t->nareas, 4);
    p = put_le(p, 0, 4);
    for (size_t i = 0; i < t->nareas; i++) {
        p = put_le(p, t->areas[i].offset, 8);
        p = put_le(p, t->areas[i].length, 8);
    }
    return len;
}

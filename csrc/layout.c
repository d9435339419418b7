/*
 * layout.c - which pages a VMM may map straight into the guest (contract §4).
 *
 * The MMU protects whole pages, so a page takes the most restrictive class of its bytes:
 *   direct       every byte allow: mapped read-write, no exit;
 *   read-direct  no byte hides, changes or records a read (allow, readonly, mask bytes only):
 *                mapped read-only, reads cost no exit, writes exit and are filtered;
 *   trapped      any other byte (deny, emulate, audit, guard...), or the partial last page
 *                (a mapping cannot end mid-page): every access exits.
 * The direct areas are the maximal runs of direct pages: the list vfio reports in
 * VFIO_REGION_INFO_CAP_SPARSE_MMAP. The read-direct areas likewise. Computed once per table from
 * the runs, so it costs O(runs), never O(pages).
 */
#include <stdlib.h>
#include <string.h>

#include "actions.h"
#include "internal.h"

enum { PAGE_DIRECT = 0, PAGE_READ_DIRECT = 1, PAGE_TRAPPED = 2 };

/* The class a byte of this action gives its page, from the action's properties
 * (actions.h): a read-direct byte's reads pass unhidden and unrecorded; only its writes need
 * the filter. */
static int page_class(uint8_t action)
{
    if (mf_action_direct(action))
        return PAGE_DIRECT;
    return mf_action_read_direct(action) ? PAGE_READ_DIRECT : PAGE_TRAPPED;
}

/* A range of pages [first, last] of one class other than direct. */
struct seg {
    uint64_t first, last;
    int cls;
};

/* Adds [first, last] of class cls to segs[0..*n), which are sorted and disjoint. Ranges arrive
 * in the order of the runs, so `first` never decreases and neither does `last`: a new range
 * can only overlap the tail of the last segment, and the stricter class wins the overlap. */
static void add_range(struct seg *segs, size_t *n, uint64_t first, uint64_t last, int cls)
{
    if (*n) {
        struct seg *cur = &segs[*n - 1];
        if (first <= cur->last + 1 && cls == cur->cls) {
            if (last > cur->last)
                cur->last = last;
            return;
        }
        if (first <= cur->last) {
            if (cls < cur->cls) { /* the overlap stays trapped: keep what lies past it */
                if (last <= cur->last)
                    return;
                first = cur->last + 1;
            } else if (first == cur->first) { /* trapped over read-direct: the page is trapped */
                (*n)--;
            } else {
                cur->last = first - 1;
            }
        }
    }
    segs[(*n)++] = (struct seg){first, last, cls};
}

/* Bytes of the BAR in pages [first, last]: the partial last page ends at the BAR's end. */
static uint64_t pages_bytes(const struct mf_table *t, uint64_t first, uint64_t last)
{
    const unsigned sh = t->page_shift;
    uint64_t end = last + 1 > (t->cfg.bar_size >> sh) ? t->cfg.bar_size : (last + 1) << sh;
    return end - (first << sh);
}

int mf_layout_compute(struct mf_table *t)
{
    const unsigned sh = t->page_shift;
    const uint64_t full_pages = t->cfg.bar_size >> sh; /* pages wholly inside the BAR */

    /* One segment per non-allow run and the partial page at most; one direct area before
     * each segment and one at the end; no more read-direct areas than segments. */
    struct seg *segs = malloc((t->nruns + 1) * sizeof *segs);
    t->areas = malloc((t->nruns + 2) * sizeof *t->areas);
    t->rd_areas = malloc((t->nruns + 1) * sizeof *t->rd_areas);
    if (!segs || !t->areas || !t->rd_areas) {
        free(segs);
        free(t->areas);
        free(t->rd_areas);
        t->areas = t->rd_areas = NULL;
        return MF_ENOMEM;
    }
    size_t nsegs = 0;
    uint64_t restricted = 0;    /* bytes owned by a non-allow action: never write collateral */
    uint64_t read_unclean = 0;  /* bytes whose reads need the filter: never read collateral */
    for (size_t i = 0; i < t->nruns; i++) {
        int cls = page_class(t->runs[i].action);
        if (cls == PAGE_DIRECT)
            continue;
        uint64_t s = t->runs[i].start, e = mf_run_end(t, i);
        restricted += e - s;
        if (cls == PAGE_TRAPPED)
            read_unclean += e - s;
        add_range(segs, &nsegs, s >> sh, (e - 1) >> sh, cls);
    }
    if (t->cfg.bar_size & (t->cfg.page_size - 1)) /* a mapping cannot end mid-page */
        add_range(segs, &nsegs, full_pages, full_pages, PAGE_TRAPPED);

    t->nareas = t->nrd_areas = 0;
    t->trapped_pages = t->read_direct_pages = 0;
    uint64_t next = 0, rd_bytes = 0, trap_bytes = 0;
    for (size_t i = 0; i < nsegs; i++) {
        const struct seg *g = &segs[i];
        if (g->first > next)
            t->areas[t->nareas++] = (struct mf_area){next << sh, (g->first - next) << sh};
        uint64_t bytes = pages_bytes(t, g->first, g->last);
        if (g->cls == PAGE_READ_DIRECT) {
            struct mf_area *prev = t->nrd_areas ? &t->rd_areas[t->nrd_areas - 1] : NULL;
            if (prev && prev->offset + prev->length == g->first << sh)
                prev->length += bytes; /* adjacent: areas are maximal */
            else
                t->rd_areas[t->nrd_areas++] = (struct mf_area){g->first << sh, bytes};
            t->read_direct_pages += g->last - g->first + 1;
            rd_bytes += bytes;
        } else {
            t->trapped_pages += g->last - g->first + 1;
            trap_bytes += bytes;
        }
        next = g->last + 1;
    }
    if (full_pages > next)
        t->areas[t->nareas++] = (struct mf_area){next << sh, (full_pages - next) << sh};
    free(segs);
    /* Writes of allow bytes exit in every page not mapped read-write; reads of any byte whose
     * read passes unrecorded exit only in trapped pages. */
    t->collateral_write = rd_bytes + trap_bytes - restricted;
    t->collateral_read = trap_bytes - read_unclean;
    return MF_OK;
}

static size_t copy_areas(const struct mf_area *areas, size_t n, struct mf_area *out, size_t cap)
{
    for (size_t i = 0; i < n && i < cap; i++)
        out[i] = areas[i];
    return n;
}

size_t mf_table_direct_areas(const struct mf_table *t, struct mf_area *out, size_t cap)
{
    return copy_areas(t->areas, t->nareas, out, cap);
}

size_t mf_table_read_direct_areas(const struct mf_table *t, struct mf_area *out, size_t cap)
{
    return copy_areas(t->rd_areas, t->nrd_areas, out, cap);
}

uint64_t mf_table_collateral(const struct mf_table *t) { return t->collateral_write; }
uint64_t mf_table_collateral_write(const struct mf_table *t) { return t->collateral_write; }
uint64_t mf_table_collateral_read(const struct mf_table *t) { return t->collateral_read; }
uint64_t mf_table_trapped_pages(const struct mf_table *t)
{
    return t->trapped_pages + t->read_direct_pages;
}
uint64_t mf_table_read_direct_pages(const struct mf_table *t) { return t->read_direct_pages; }

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

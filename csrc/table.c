/*
 * table.c - compile one BAR's rules into an immutable lookup table.
 *
 * The rules overlap, shadow each other and cross pages; the access path must not care. So
 * compilation resolves ownership once (DESIGN §2: highest priority, then the most restrictive
 * action, then the rule listed last) with a sweep over the rule boundaries, producing runs that
 * tile the BAR with one owner each. Then it indexes the pages where more than one run meets.
 *
 * Nothing here is proportional to the BAR or the number of pages: a 64 GiB BAR with k rules
 * costs O(k) memory and O(k log k) time.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

void mf_set_error(struct mf_error *err, int64_t rule, const char *fmt, ...)
{
    if (!err)
        return;
    err->rule = rule;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
}

/* ---- ownership order ----------------------------------------------------------------- */

/* Does rule a own a byte rather than rule b, when both cover it? */
static bool outranks(const struct mf_rule *rules, uint32_t a, uint32_t b)
{
    if (rules[a].priority != rules[b].priority)
        return rules[a].priority > rules[b].priority;
    /* enum mf_action is ordered from the least to the most restrictive */
    if (rules[a].action != rules[b].action)
        return rules[a].action > rules[b].action;
    return a > b; /* listed last wins */
}

/* A binary max-heap of rule indices ordered by outranks(); rules that have ended are removed
 * lazily when they reach the top. */
struct heap {
    uint32_t *v;
    size_t n;
    const struct mf_rule *rules;
};

static void heap_push(struct heap *h, uint32_t r)
{
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!outranks(h->rules, r, h->v[p]))
            break;
        h->v[i] = h->v[p];
        i = p;
    }
    h->v[i] = r;
}

static void heap_pop(struct heap *h)
{
    uint32_t last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && outranks(h->rules, h->v[c + 1], h->v[c]))
            c++;
        if (!outranks(h->rules, h->v[c], last))
            break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n)
        h->v[i] = last;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Rules sorted by start; the key is carried along because qsort has no context argument. */
struct by_start {
    uint64_t start;
    uint32_t rule;
};

static int cmp_by_start(const void *a, const void *b)
{
    uint64_t x = ((const struct by_start *)a)->start, y = ((const struct by_start *)b)->start;
    return (x > y) - (x < y);
}

/* ---- validation ---------------------------------------------------------------------- */

static bool is_pow2(uint64_t x) { return x && !(x & (x - 1)); }

static int validate(const struct mf_rule *rules, size_t n, const struct mf_config *cfg,
                    struct mf_error *err)
{
    if (cfg->bar_size == 0) {
        mf_set_error(err, -1, "BAR size must be at least 1 byte");
        return MF_EINVAL;
    }
    if (!is_pow2(cfg->page_size) || cfg->page_size < 4096) {
        mf_set_error(err, -1, "page size %#llx is not a power of two >= 4096",
                     (unsigned long long)cfg->page_size);
        return MF_EINVAL;
    }
    if (cfg->partial > MF_PARTIAL_SPLIT || cfg->unaligned > MF_UNALIGNED_DENY) {
        mf_set_error(err, -1, "unknown partial (%u) or unaligned (%u) mode", cfg->partial,
                     cfg->unaligned);
        return MF_EINVAL;
    }
    if (n > (1u << 30)) {
        mf_set_error(err, -1, "%zu rules is more than the 2^30 a table holds", n);
        return MF_EINVAL;
    }
    if (n && !rules) {
        mf_set_error(err, -1, "rules is NULL");
        return MF_EINVAL;
    }
    uint64_t pool = 0; /* value and mask bytes, addressed with 32-bit offsets */
    for (size_t i = 0; i < n; i++) {
        const struct mf_rule *r = &rules[i];
        if (!r->name || !memchr(r->name, '\0', MF_NAME_MAX) || !r->name[0]) {
            mf_set_error(err, (int64_t)i, "rule #%zu: name missing, empty or longer than %d bytes",
                         i, MF_NAME_MAX - 1);
            return MF_EINVAL;
        }
        if (r->action >= MF_NUM_ACTIONS) {
            mf_set_error(err, (int64_t)i, "rule %s: unknown action %u", r->name, r->action);
            return MF_EINVAL;
        }
        /* written so that nothing wraps: start <= bar_size, then size <= what is left */
        if (r->size == 0 || r->start > cfg->bar_size || r->size > cfg->bar_size - r->start) {
            mf_set_error(err, (int64_t)i,
                         "rule %s: [%#llx, +%#llx) is empty or outside the BAR of size %#llx",
                         r->name, (unsigned long long)r->start, (unsigned long long)r->size,
                         (unsigned long long)cfg->bar_size);
            return MF_EINVAL;
        }
        if (r->value_len > r->size || r->mask_len > r->size || (r->value_len && !r->value) ||
            (r->mask_len && !r->mask)) {
            mf_set_error(err, (int64_t)i, "rule %s: value or mask wider than the rule", r->name);
            return MF_EINVAL;
        }
        pool += (uint64_t)r->value_len + r->mask_len;
        if (pool > UINT32_MAX) {
            mf_set_error(err, (int64_t)i, "rule %s: values and masks exceed 4 GiB in all", r->name);
            return MF_EINVAL;
        }
    }
    return MF_OK;
}

/* ---- resolution: rules -> runs ------------------------------------------------------- */

static int resolve_runs(struct mf_table *t, const struct mf_rule *rules, size_t n)
{
    uint64_t bar_size = t->cfg.bar_size;
    uint64_t *pos = malloc((2 * n + 2) * sizeof *pos);
    struct by_start *order = malloc((n ? n : 1) * sizeof *order);
    uint32_t *heapv = malloc((n ? n : 1) * sizeof *heapv);
    t->runs = malloc((2 * n + 1) * sizeof *t->runs);
    if (!pos || !order || !heapv || !t->runs) {
        free(pos), free(order), free(heapv);
        return MF_ENOMEM;
    }

    /* Every ownership change happens at a rule start or end. */
    size_t npos = 0;
    pos[npos++] = 0;
    for (size_t i = 0; i < n; i++) {
        pos[npos++] = rules[i].start;
        pos[npos++] = rules[i].start + rules[i].size;
        order[i] = (struct by_start){rules[i].start, (uint32_t)i};
    }
    qsort(pos, npos, sizeof *pos, cmp_u64);
    qsort(order, n, sizeof *order, cmp_by_start);

    struct heap h = {heapv, 0, rules};
    size_t next = 0, nruns = 0;
    for (size_t j = 0; j < npos; j++) {
        uint64_t p = pos[j];
        if (p == bar_size)
            break; /* all later positions equal bar_size too */
        if (j && p == pos[j - 1])
            continue;
        while (next < n && order[next].start == p)
            heap_push(&h, order[next++].rule);
        while (h.n && rules[h.v[0]].start + rules[h.v[0]].size <= p)
            heap_pop(&h);
        uint32_t owner = h.n ? h.v[0] : MF_NO_RULE;
        /* Same owner as the run before: the rule is contiguous there, so extend it. */
        if (nruns && t->runs[nruns - 1].rule == owner)
            continue;
        t->runs[nruns].start = p;
        t->runs[nruns].rule = owner;
        t->runs[nruns].action = owner == MF_NO_RULE ? MF_ALLOW : rules[owner].action;
        nruns++;
    }
    t->nruns = nruns;
    free(pos), free(order), free(heapv);
    return MF_OK;
}

/* ---- the page index ------------------------------------------------------------------ */

static int index_pages(struct mf_table *t)
{
    /* A page needs an entry when a run starts inside it (not on its first byte). */
    size_t want = 0;
    uint64_t pmask = t->cfg.page_size - 1, last = MF_EMPTY_SLOT;
    for (size_t i = 1; i < t->nruns; i++) {
        uint64_t s = t->runs[i].start;
        if ((s & pmask) && (s >> t->page_shift) != last) {
            last = s >> t->page_shift;
            want++;
        }
    }
    if (!want)
        return MF_OK;
    size_t nslots = 1;
    while (nslots < 2 * want) /* load factor <= 1/2 keeps probes short */
        nslots <<= 1;
    t->slots = malloc(nslots * sizeof *t->slots);
    if (!t->slots)
        return MF_ENOMEM;
    for (size_t s = 0; s < nslots; s++)
        t->slots[s].page = MF_EMPTY_SLOT;
    t->nslots = nslots;
    /* top log2(nslots) bits of the product; nslots >= 2 so the shift is < 64 */
    t->slot_shift = 64 - (unsigned)__builtin_ctzll((unsigned long long)nslots);

    last = MF_EMPTY_SLOT;
    for (size_t i = 1; i < t->nruns; i++) {
        uint64_t s = t->runs[i].start, page = s >> t->page_shift;
        if (!(s & pmask) || page == last)
            continue;
        last = page;
        uint64_t first = page << t->page_shift;
        uint64_t final = first + pmask; /* last byte of the page, clipped to the BAR */
        if (final >= t->cfg.bar_size)
            final = t->cfg.bar_size - 1;
        size_t lo = mf_search_runs(t, 0, i, first);
        size_t hi = mf_search_runs(t, i, t->nruns, final) + 1;
        size_t slot = mf_slot_of(t, page);
        while (t->slots[slot].page != MF_EMPTY_SLOT)
            slot = (slot + 1) & (nslots - 1);
        t->slots[slot] = (struct mf_page_slot){page, (uint32_t)lo, (uint32_t)hi};
        t->nindexed++;
    }
    return MF_OK;
}

/* ---- compile ------------------------------------------------------------------------- */

static int copy_rules(struct mf_table *t, const struct mf_rule *rules, size_t n)
{
    size_t pool_len = 0;
    for (size_t i = 0; i < n; i++)
        pool_len += rules[i].value_len + rules[i].mask_len;
    t->rules = calloc(n ? n : 1, sizeof *t->rules);
    t->names = calloc(n ? n : 1, sizeof *t->names);
    t->hits = calloc(n ? n : 1, sizeof *t->hits);
    t->pool = malloc(pool_len ? pool_len : 1);
    if (!t->rules || !t->names || !t->hits || !t->pool)
        return MF_ENOMEM;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        struct mf_crule *c = &t->rules[i];
        strcpy(t->names[i], rules[i].name); /* length checked by validate() */
        c->start = rules[i].start;
        c->action = rules[i].action;
        c->value_off = (uint32_t)at;
        c->value_len = (uint32_t)rules[i].value_len;
        if (c->value_len)
            memcpy(t->pool + at, rules[i].value, c->value_len);
        at += c->value_len;
        c->mask_off = (uint32_t)at;
        c->mask_len = (uint32_t)rules[i].mask_len;
        if (c->mask_len)
            memcpy(t->pool + at, rules[i].mask, c->mask_len);
        at += c->mask_len;
    }
    t->footprint += n * (sizeof *t->rules + sizeof *t->names + sizeof *t->hits) + pool_len;
    return MF_OK;
}

struct mf_table *mf_table_compile(const struct mf_rule *rules, size_t n,
                                  const struct mf_config *cfg, struct mf_error *err)
{
    if (!cfg) {
        mf_set_error(err, -1, "config is NULL");
        return NULL;
    }
    if (validate(rules, n, cfg, err) != MF_OK)
        return NULL;
    struct mf_table *t = calloc(1, sizeof *t);
    if (!t) {
        mf_set_error(err, -1, "out of memory");
        return NULL;
    }
    t->cfg = *cfg;
    t->page_shift = (unsigned)__builtin_ctzll((unsigned long long)cfg->page_size);
    t->nrules = n;
    int rc = copy_rules(t, rules, n);
    if (rc == MF_OK)
        rc = resolve_runs(t, rules, n);
    if (rc == MF_OK)
        rc = index_pages(t);
    if (rc == MF_OK)
        rc = mf_layout_compute(t);
    if (rc != MF_OK) {
        mf_set_error(err, -1, "out of memory");
        mf_table_free(t);
        return NULL;
    }
    t->footprint += sizeof *t + t->nruns * sizeof *t->runs +
                    t->nslots * sizeof *t->slots + t->nareas * sizeof *t->areas;
    return t;
}

void mf_table_free(struct mf_table *t)
{
    if (!t)
        return;
    free(t->rules);
    free((void *)t->hits);
    free(t->pool);
    free(t->runs);
    free(t->names);
    free(t->slots);
    free(t->areas);
    free(t);
}

size_t mf_table_footprint(const struct mf_table *t) { return t->footprint; }
size_t mf_table_runs(const struct mf_table *t) { return t->nruns; }
size_t mf_table_indexed_pages(const struct mf_table *t) { return t->nindexed; }
size_t mf_table_rule_count(const struct mf_table *t) { return t->nrules; }

const char *mf_table_rule_name(const struct mf_table *t, size_t rule)
{
    return rule < t->nrules ? t->names[rule] : NULL;
}

void mf_table_counters(const struct mf_table *t, uint64_t *out, size_t n)
{
    for (size_t i = 0; i < n && i < t->nrules; i++)
        out[i] = atomic_load_explicit(&t->hits[i], memory_order_relaxed);
}

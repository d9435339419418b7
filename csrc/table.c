/*
 * table.c - compile one BAR's rules into an immutable lookup table.
 *
 * The rules overlap, shadow each other and cross pages; the access path must not care. So
 * compilation resolves ownership once (contract §2: highest priority, then the most restrictive
 * action, then the rule listed last) with a sweep over the rule boundaries, producing runs that
 * tile the BAR with one owner each. Then it indexes the pages where more than one run meets.
 *
 * Nothing here is proportional to the BAR or the number of pages: a 64 GiB BAR with k rules
 * costs O(k) memory and O(k log k) time.
 */
#include <stdlib.h>
#include <string.h>

#include "actions.h"
#include "guard.h"
#include "internal.h"

/* ---- ownership order ----------------------------------------------------------------- */

/* Does rule a own a byte rather than rule b, when both cover it? */
static bool outranks(const struct mf_rule *rules, uint32_t a, uint32_t b)
{
    if (rules[a].priority != rules[b].priority)
        return rules[a].priority > rules[b].priority;
    if (rules[a].action != rules[b].action)
        return mf_action(rules[a].action)->rank > mf_action(rules[b].action)->rank;
    return a > b; /* listed last wins */
}

/* A byte range one rule claims: a rule is one interval, a guard one per register block. */
struct ival {
    uint64_t start, end;
    uint32_t rule;
};

/* A binary max-heap of interval indices ordered by their rules' outranks(); intervals that
 * have ended are removed lazily when they reach the top. */
struct heap {
    uint32_t *v;
    size_t n;
    const struct mf_rule *rules;
    const struct ival *iv;
};

static bool iv_outranks(const struct heap *h, uint32_t a, uint32_t b)
{
    return outranks(h->rules, h->iv[a].rule, h->iv[b].rule);
}

static void heap_push(struct heap *h, uint32_t r)
{
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!iv_outranks(h, r, h->v[p]))
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
        if (c + 1 < h->n && iv_outranks(h, h->v[c + 1], h->v[c]))
            c++;
        if (!iv_outranks(h, h->v[c], last))
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

static int cmp_by_start(const void *a, const void *b)
{
    uint64_t x = ((const struct ival *)a)->start, y = ((const struct ival *)b)->start;
    return (x > y) - (x < y);
}

/* ---- validation ---------------------------------------------------------------------- */

static bool is_pow2(uint64_t x) { return x && !(x & (x - 1)); }

/* Printable ASCII, no leading or trailing space, not "(...)": names appear in events, where
 * "(unaligned)" and the like name the filter's own decisions. */
static bool name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || s[0] == ' ' || s[n - 1] == ' ' || s[0] == '(')
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] > 0x7E)
            return false;
    return true;
}

/* What one rule must be on its own, before any BAR: rule `i` of a table, or a lone rule
 * (i < 0) that a binding checks as it is made. */
static int check_rule(const struct mf_rule *r, int64_t i, struct mf_error *err)
{
    const int64_t at = i < 0 ? 0 : i;
    if (!r->name || !memchr(r->name, '\0', MF_NAME_MAX)) {
        mf_set_error(err, at, "rule #%lld: name missing or longer than %d bytes",
                     (long long)at, MF_NAME_MAX - 1);
        return MF_EINVAL;
    }
    if (!name_ok(r->name)) {
        mf_set_error(err, at,
                     "rule #%lld: a name is printable ASCII without leading or trailing spaces, "
                     "not empty and not starting with '(' (reserved)",
                     (long long)at);
        return MF_EINVAL;
    }
    const char *name = r->name;
    const struct mf_action_row *a = r->action < MF_NUM_ACTIONS ? mf_action(r->action) : NULL;
    if (!a) {
        mf_set_error(err, at, "rule '%s': unknown action %u", name, r->action);
        return MF_EINVAL;
    }
    if (r->size == 0) {
        mf_set_error(err, at, "rule '%s': size must be at least 1", name);
        return MF_EINVAL;
    }
    if (r->start > UINT64_MAX - (r->size - 1)) {
        mf_set_error(err, at, "rule '%s': start %#llx + size %#llx wraps past 2^64", name,
                     (unsigned long long)r->start, (unsigned long long)r->size);
        return MF_EINVAL;
    }
    if (r->value_len > r->size || r->mask_len > r->size) {
        mf_set_error(err, at, "rule '%s': %s of %zu bytes does not fit in the rule's %llu byte(s)",
                     name, r->value_len > r->size ? "value" : "mask",
                     r->value_len > r->size ? r->value_len : r->mask_len,
                     (unsigned long long)r->size);
        return MF_EINVAL;
    }
    if ((r->value_len && !r->value) || (r->mask_len && !r->mask)) {
        mf_set_error(err, at, "rule '%s': value or mask length without the bytes", name);
        return MF_EINVAL;
    }
    if (a->redirected) {
        if (r->target >= MF_TARGETS_MAX) {
            mf_set_error(err, at, "rule '%s': redirect target #%u is not below %d", name,
                         r->target, MF_TARGETS_MAX);
            return MF_EINVAL;
        }
        /* the target's last byte + 1 must be representable, as a BAR's end is */
        if (r->target_offset > UINT64_MAX - r->size) {
            mf_set_error(err, at,
                         "rule '%s': target_offset %#llx + size %#llx is outside 0..2^64-1",
                         name, (unsigned long long)r->target_offset,
                         (unsigned long long)r->size);
            return MF_EINVAL;
        }
    } else if (r->target || r->target_offset) {
        mf_set_error(err, at, "rule '%s': target and target_offset belong to redirect rules, "
                              "not %s", name, a->name);
        return MF_EINVAL;
    }
    return MF_OK;
}

int mf_rule_check(const struct mf_rule *r, struct mf_error *err)
{
    if (!r) {
        mf_set_error(err, -1, "rule is NULL");
        return MF_EINVAL;
    }
    return check_rule(r, -1, err);
}

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
    if (n > MF_RULES_MAX) {
        mf_set_error(err, -1, "%zu rules is more than the %u a table holds", n,
                     (unsigned)MF_RULES_MAX);
        return MF_EINVAL;
    }
    if (n && !rules) {
        mf_set_error(err, -1, "rules is NULL");
        return MF_EINVAL;
    }
    uint64_t pool = 0; /* value and mask bytes, addressed with 32-bit offsets */
    for (size_t i = 0; i < n; i++) {
        const struct mf_rule *r = &rules[i];
        if (check_rule(r, (int64_t)i, err) != MF_OK)
            return MF_EINVAL;
        /* written so that nothing wraps: start <= bar_size, then size <= what is left */
        if (r->start > cfg->bar_size || r->size > cfg->bar_size - r->start) {
            mf_set_error(err, (int64_t)i,
                         "rule '%s': [%#llx, +%#llx) lies outside the BAR [0, %#llx)", r->name,
                         (unsigned long long)r->start, (unsigned long long)r->size,
                         (unsigned long long)cfg->bar_size);
            return MF_EINVAL;
        }
        if (mf_action(r->action)->guarded) {
            struct mf_block b[MF_GUARD_MAX_BLOCKS];
            size_t nb = 0;
            char why[120];
            const struct mf_guard_class *cls = r->guard ? mf_guard_class_of(r->guard->kind) : NULL;
            if (!cls) {
                mf_set_error(err, (int64_t)i, "rule '%s': guard without a known guard kind",
                             r->name);
                return MF_EINVAL;
            }
            if (cls->blocks(r->guard, b, &nb, why, sizeof why)) {
                mf_set_error(err, (int64_t)i, "rule '%s': %s", r->name, why);
                return MF_EINVAL;
            }
            uint64_t lo = UINT64_MAX, hi = 0;
            for (size_t k = 0; k < nb; k++) {
                lo = b[k].start < lo ? b[k].start : lo;
                hi = b[k].end > hi ? b[k].end : hi;
            }
            if (r->start != lo || r->size != hi - lo) {
                mf_set_error(err, (int64_t)i,
                             "rule '%s': a guard's range must be its registers' span "
                             "[%#llx, %#llx)",
                             r->name, (unsigned long long)lo, (unsigned long long)hi);
                return MF_EINVAL;
            }
        } else if (r->guard) {
            mf_set_error(err, (int64_t)i,
                         "rule '%s': guard parameters on a rule that is not a guard", r->name);
            return MF_EINVAL;
        }
        pool += (uint64_t)r->value_len + r->mask_len;
        if (pool > UINT32_MAX) {
            mf_set_error(err, (int64_t)i, "rule '%s': values and masks exceed 4 GiB in all",
                         r->name);
            return MF_EINVAL;
        }
    }
    return MF_OK;
}

/* ---- resolution: rules -> runs ------------------------------------------------------- */

/* The intervals the rules claim: one per rule, one per register block of a guard. */
static struct ival *claims(const struct mf_table *t, const struct mf_rule *rules, size_t n,
                           size_t *count)
{
    size_t k = n;
    for (size_t g = 0; g < t->nguards; g++)
        k += t->guards[g].nblocks - 1;
    struct ival *iv = malloc((k ? k : 1) * sizeof *iv);
    if (!iv)
        return NULL;
    k = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t g = t->rules[i].guard;
        if (!mf_action(t->rules[i].action)->guarded) {
            iv[k++] = (struct ival){rules[i].start, rules[i].start + rules[i].size, (uint32_t)i};
            continue;
        }
        for (size_t b = 0; b < t->guards[g].nblocks; b++)
            iv[k++] = (struct ival){t->guards[g].block[b].start, t->guards[g].block[b].end,
                                    (uint32_t)i};
    }
    *count = k;
    return iv;
}

static int resolve_runs(struct mf_table *t, const struct mf_rule *rules, size_t n)
{
    uint64_t bar_size = t->cfg.bar_size;
    size_t m = 0;
    struct ival *iv = claims(t, rules, n, &m);
    uint64_t *pos = malloc((2 * m + 2) * sizeof *pos);
    uint32_t *heapv = malloc((m ? m : 1) * sizeof *heapv);
    t->runs = malloc((2 * m + 1) * sizeof *t->runs);
    if (!iv || !pos || !heapv || !t->runs) {
        free(iv), free(pos), free(heapv);
        return MF_ENOMEM;
    }

    /* Every ownership change happens at an interval start or end. */
    size_t npos = 0;
    pos[npos++] = 0;
    for (size_t i = 0; i < m; i++) {
        pos[npos++] = iv[i].start;
        pos[npos++] = iv[i].end;
    }
    qsort(pos, npos, sizeof *pos, cmp_u64);
    qsort(iv, m, sizeof *iv, cmp_by_start);

    struct heap h = {heapv, 0, rules, iv};
    size_t next = 0, nruns = 0;
    for (size_t j = 0; j < npos; j++) {
        uint64_t p = pos[j];
        if (p == bar_size)
            break; /* all later positions equal bar_size too */
        if (j && p == pos[j - 1])
            continue;
        while (next < m && iv[next].start == p)
            heap_push(&h, (uint32_t)next++);
        while (h.n && iv[h.v[0]].end <= p)
            heap_pop(&h);
        uint32_t owner = h.n ? iv[h.v[0]].rule : MF_NO_RULE;
        /* Same owner as the run before: the rule is contiguous there, so extend it. */
        if (nruns && t->runs[nruns - 1].rule == owner)
            continue;
        t->runs[nruns].start = p;
        t->runs[nruns].rule = owner;
        t->runs[nruns].action = owner == MF_NO_RULE ? MF_ALLOW : rules[owner].action;
        nruns++;
    }
    t->nruns = nruns;
    free(iv), free(pos), free(heapv);
    return MF_OK;
}

/* A guard must see every access to its registers: a byte another rule owns would let
 * accesses past it (or hide them from it). */
static int check_guards(const struct mf_table *t, struct mf_error *err)
{
    for (size_t g = 0; g < t->nguards; g++) {
        const struct mf_guard *gd = &t->guards[g];
        for (size_t b = 0; b < gd->nblocks; b++) {
            for (size_t i = mf_find_run(t, gd->block[b].start);
                 i < t->nruns && t->runs[i].start < gd->block[b].end; i++) {
                uint32_t r = t->runs[i].rule;
                if (r == gd->rule)
                    continue;
                uint64_t at = t->runs[i].start > gd->block[b].start ? t->runs[i].start
                                                                    : gd->block[b].start;
                mf_set_error(err, gd->rule,
                             "rule '%s': guard register byte %#llx is owned by %s%s: a guard must "
                             "own all its registers",
                             t->names[gd->rule], (unsigned long long)at,
                             r == MF_NO_RULE ? "no rule" : "rule ",
                             r == MF_NO_RULE ? "" : t->names[r]);
                return MF_EINVAL;
            }
        }
    }
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
    size_t nguards = 0, nredirects = 0;
    for (size_t i = 0; i < n; i++) {
        nguards += mf_action(rules[i].action)->guarded;
        nredirects += mf_action(rules[i].action)->redirected;
    }
    t->guards = nguards ? calloc(nguards, sizeof *t->guards) : NULL;
    t->redirects = nredirects ? calloc(nredirects, sizeof *t->redirects) : NULL;
    if (!t->rules || !t->names || !t->hits || !t->pool || (nguards && !t->guards) ||
        (nredirects && !t->redirects))
        return MF_ENOMEM;
    t->footprint += nredirects * sizeof *t->redirects;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        struct mf_crule *c = &t->rules[i];
        strcpy(t->names[i], rules[i].name); /* length checked by validate() */
        c->start = rules[i].start;
        c->action = rules[i].action;
        c->guard = MF_NO_RULE;
        if (mf_action(rules[i].action)->redirected) {
            t->redirects[t->nredirects] = (struct mf_redirect){
                rules[i].target_offset, rules[i].size, (uint32_t)i, rules[i].target};
            c->redirect = (uint32_t)t->nredirects++;
        }
        if (mf_action(rules[i].action)->guarded) {
            struct mf_guard *g = &t->guards[t->nguards];
            g->rule = (uint32_t)i;
            g->spec = *rules[i].guard;
            g->cls = mf_guard_class_of(g->spec.kind);
            char why[8];
            g->cls->blocks(&g->spec, g->block, &g->nblocks, why, sizeof why); /* validated */
            g->state = mf_guard_state_new(g->cls, &g->spec);
            if (!g->state)
                return MF_ENOMEM;
            c->guard = (uint32_t)t->nguards++;
            t->footprint += sizeof *g;
        }
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
    if (rc == MF_OK && check_guards(t, err) != MF_OK) {
        mf_table_free(t);
        return NULL;
    }
    if (rc != MF_OK) {
        mf_set_error(err, -1, "out of memory");
        mf_table_free(t);
        return NULL;
    }
    t->footprint += sizeof *t + t->nruns * sizeof *t->runs +
                    t->nslots * sizeof *t->slots + t->nareas * sizeof *t->areas +
                    t->nrd_areas * sizeof *t->rd_areas;
    return t;
}

void mf_table_free(struct mf_table *t)
{
    if (!t)
        return;
    for (size_t g = 0; g < t->nguards; g++)
        mf_guard_state_put(t->guards[g].state);
    free(t->guards);
    free(t->redirects);
    free(t->rules);
    free((void *)t->hits);
    free(t->pool);
    free(t->runs);
    free(t->names);
    free(t->slots);
    free(t->areas);
    free(t->rd_areas);
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

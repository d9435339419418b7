/*
 * core_fuzz.c - libFuzzer harness for the C core (build: see fuzz/README.md).
 *
 * The input is decoded into a BAR size, a page size, a policy and a sequence of accesses (some
 * invalid, some policy updates). Every access goes through mf_access_scalar() over a callback
 * backend that records the device accesses it receives, with two redirect targets recording
 * theirs. An independent byte-level model here, written from docs/contract-details.md and
 * sharing no code with the core, predicts the outcome, the value and the exact lists of device
 * and target accesses; any difference, or any device access carrying a byte the policy does
 * not pass, aborts.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_input.h"
#include "mmiofilter.h"

#define MAX_RULES 12
#define MAX_LOG 16
#define NTARGETS 2

struct dev_access {
    uint64_t off, value;
    unsigned width;
    bool write;
};

/* A device or a target: reads return a pattern of the address xor a salt; every access is
 * recorded. */
struct sink {
    struct dev_access log[MAX_LOG];
    size_t n;
    uint8_t salt;
};

struct world {
    struct mf_rule rules[MAX_RULES];
    uint8_t values[MAX_RULES][8], masks[MAX_RULES][8];
    char names[MAX_RULES][8];
    size_t nrules;
    struct mf_config cfg;
    struct sink dev, tgt[NTARGETS];
};

#define FAIL(...)                                                                             \
    do {                                                                                      \
        fprintf(stderr, __VA_ARGS__);                                                         \
        fputc('\n', stderr);                                                                  \
        abort();                                                                              \
    } while (0)

static uint8_t pattern(uint64_t a, uint8_t salt) { return (uint8_t)(a * 131 + 7 + (a >> 9)) ^ salt; }

static int sink_read(void *ctx, uint64_t off, unsigned w, uint64_t *v)
{
    struct sink *s = ctx;
    if (s->n == MAX_LOG)
        FAIL("more device accesses than any single access can need");
    uint64_t x = 0;
    for (unsigned i = 0; i < w; i++)
        x |= (uint64_t)pattern(off + i, s->salt) << (8 * i);
    s->log[s->n++] = (struct dev_access){off, x, w, false};
    *v = x;
    return 0;
}

static int sink_write(void *ctx, uint64_t off, unsigned w, uint64_t v)
{
    struct sink *s = ctx;
    if (s->n == MAX_LOG)
        FAIL("more device accesses than any single access can need");
    s->log[s->n++] = (struct dev_access){off, v, w, true};
    return 0;
}

/* ---- the independent model ----------------------------------------------------------- */

/* Restrictiveness on a priority tie (docs/contract-details.md): deny > emulate > redirect >
 * mask > readonly > guard > audit > allow. */
static int rank_of(uint8_t action)
{
    switch (action) {
    case MF_ALLOW: return 0;
    case MF_AUDIT: return 1;
    case MF_GUARD: return 2;
    case MF_READONLY: return 3;
    case MF_MASK: return 4;
    case MF_REDIRECT: return 5;
    case MF_EMULATE: return 6;
    case MF_DENY: return 7;
    }
    FAIL("no rank for action %u", action);
}

/* Owner of byte a: highest priority, then most restrictive action, then listed last. */
static int owner(const struct world *wd, uint64_t a)
{
    int best = -1;
    for (size_t i = 0; i < wd->nrules; i++) {
        const struct mf_rule *r = &wd->rules[i];
        if (a < r->start || a - r->start >= r->size)
            continue;
        if (best < 0 || r->priority > wd->rules[best].priority ||
            (r->priority == wd->rules[best].priority &&
             rank_of(r->action) >= rank_of(wd->rules[best].action)))
            best = (int)i;
    }
    return best;
}

struct expect {
    uint8_t outcome;
    uint64_t value;
    struct sink dev, tgt[NTARGETS]; /* the accesses each should see (salts unused) */
};

static void expect_access(struct sink *s, uint64_t off, uint64_t value, unsigned w, bool write)
{
    if (s->n == MAX_LOG)
        FAIL("model: more accesses than any single access can need");
    s->log[s->n++] = (struct dev_access){off, value, w, write};
}

/* The bytes `sel` of an access, byte k at address base + k (mod 2^64) of a sink with `salt`,
 * in naturally aligned chunks of those addresses. Reads fill *rv's bytes. */
static void chunks(struct sink *s, uint64_t base, unsigned w, const bool *sel, bool write,
                   uint64_t wvalue, uint8_t salt, uint64_t *rv)
{
    for (unsigned k = 0; k < w;) {
        if (!sel[k]) {
            k++;
            continue;
        }
        unsigned end = k;
        while (end < w && sel[end])
            end++;
        for (uint64_t p = base + k; p < base + end;) {
            unsigned cw = 8;
            while (p % cw || p + cw > base + end)
                cw /= 2;
            uint64_t v = 0;
            for (unsigned i = 0; i < cw; i++) {
                unsigned b = (unsigned)(p - base) + i;
                uint8_t byte = write ? (uint8_t)(wvalue >> (8 * b)) : pattern(p + i, salt);
                v |= (uint64_t)byte << (8 * i);
                if (!write)
                    *rv = (*rv & ~(0xFFull << (8 * b))) | (uint64_t)byte << (8 * b);
            }
            expect_access(s, p, v, cw, write);
            p += cw;
        }
        k = end;
    }
}

static void predict(const struct world *wd, uint64_t off, unsigned w, bool write, uint64_t val,
                    struct expect *e)
{
    memset(e, 0, sizeof *e);
    uint64_t fill = 0;
    for (unsigned k = 0; k < w; k++)
        fill |= (uint64_t)wd->cfg.fill << (8 * k);
    if (wd->cfg.unaligned == MF_UNALIGNED_DENY && off % w) {
        e->outcome = MF_BLOCKED;
        e->value = write ? 0 : fill;
        return;
    }
    int own[8];
    uint8_t act[8], vb[8] = {0}, mb[8] = {0};
    for (unsigned k = 0; k < w; k++) {
        int r = owner(wd, off + k);
        own[k] = r;
        act[k] = r < 0 ? MF_ALLOW : wd->rules[r].action;
        if (r >= 0) {
            uint64_t i = off + k - wd->rules[r].start;
            vb[k] = i < wd->rules[r].value_len ? wd->rules[r].value[i] : 0;
            mb[k] = i < wd->rules[r].mask_len ? wd->rules[r].mask[i] : 0;
        }
    }
    /* wholly inside one redirect rule: one access of the same width to its target */
    bool one_rule = true;
    for (unsigned k = 1; k < w; k++)
        one_rule &= own[k] == own[0];
    if (one_rule && act[0] == MF_REDIRECT) {
        const struct mf_rule *r = &wd->rules[own[0]];
        uint64_t at = r->target_offset + (off - r->start);
        uint64_t v = val;
        if (!write) {
            v = 0;
            for (unsigned k = 0; k < w; k++)
                v |= (uint64_t)pattern(at + k, wd->tgt[r->target].salt) << (8 * k);
        }
        e->outcome = MF_REDIRECTED;
        e->value = v;
        expect_access(&e->tgt[r->target], at, v, w, write);
        return;
    }
    bool dev[8], tgt[8];
    unsigned ndev = 0, ntgt = 0, nemul = 0;
    uint64_t out = 0, local = 0;
    for (unsigned k = 0; k < w; k++) {
        uint8_t b = (uint8_t)(val >> (8 * k));
        tgt[k] = act[k] == MF_REDIRECT;
        if (write) {
            dev[k] = act[k] == MF_ALLOW || act[k] == MF_AUDIT || act[k] == MF_MASK;
            if (act[k] == MF_MASK)
                b = (uint8_t)((b & ~mb[k]) | (vb[k] & mb[k]));
            out |= (uint64_t)(dev[k] || tgt[k] ? b : 0) << (8 * k);
        } else {
            dev[k] = act[k] == MF_ALLOW || act[k] == MF_AUDIT || act[k] == MF_READONLY ||
                     act[k] == MF_MASK;
            nemul += act[k] == MF_EMULATE;
            local |= (uint64_t)(act[k] == MF_EMULATE ? vb[k] : wd->cfg.fill) << (8 * k);
            out |= (uint64_t)(dev[k] ? pattern(off + k, 0) : 0) << (8 * k);
        }
        ndev += dev[k];
        ntgt += tgt[k];
    }
    if (ndev == w) {
        e->outcome = write && out != val ? MF_MASKED : MF_PASS;
        e->value = out;
        expect_access(&e->dev, off, out, w, write);
    } else if (ndev == 0 && ntgt == 0) {
        e->outcome = write ? MF_BLOCKED : nemul == w ? MF_EMULATED : MF_BLOCKED;
        e->value = write ? 0 : local;
    } else if (wd->cfg.partial == MF_PARTIAL_DENY) {
        e->outcome = MF_BLOCKED;
        e->value = write ? 0 : fill;
    } else {
        e->outcome = MF_PARTIAL;
        e->value = write ? out : local;
        chunks(&e->dev, off, w, dev, write, out, 0, &e->value);
        /* redirect bytes rule by rule, in the order of each rule's first byte */
        bool done[8] = {false};
        for (unsigned k = 0; k < w; k++) {
            if (!tgt[k] || done[k])
                continue;
            bool sel[8];
            for (unsigned j = 0; j < w; j++)
                done[j] |= sel[j] = own[j] == own[k];
            const struct mf_rule *r = &wd->rules[own[k]];
            uint64_t base = r->target_offset + (off - r->start);
            chunks(&e->tgt[r->target], base, w, sel, write, out, wd->tgt[r->target].salt,
                   &e->value);
        }
    }
}

static bool same_log(const struct sink *got, const struct sink *want)
{
    if (got->n != want->n)
        return false;
    for (size_t i = 0; i < got->n; i++) {
        const struct dev_access *a = &got->log[i], *b = &want->log[i];
        if (a->off != b->off || a->value != b->value || a->width != b->width ||
            a->write != b->write)
            return false;
    }
    return true;
}

/* ---- decoding ------------------------------------------------------------------------- */

static uint64_t pick_offset(struct input *in, const struct world *wd)
{
    uint64_t size = wd->cfg.bar_size;
    uint64_t sel = take(in, 1);
    uint64_t base;
    if (sel % 4 >= 2 && wd->nrules) { /* near a rule edge, where the bugs are */
        const struct mf_rule *r = &wd->rules[sel / 4 % wd->nrules];
        base = sel & 0x80 ? r->start + r->size : r->start;
    } else if (sel % 4 == 1) { /* near a page edge */
        base = (take(in, 4) % (size / wd->cfg.page_size + 1)) * wd->cfg.page_size;
    } else {
        base = take(in, 8) % size;
    }
    return base + (uint64_t)(int8_t)take(in, 1) % 24 - 12;
}

static void decode_rules(struct input *in, struct world *wd)
{
    uint64_t size = wd->cfg.bar_size;
    wd->nrules = take(in, 1) % (MAX_RULES + 1);
    for (size_t i = 0; i < wd->nrules; i++) {
        struct mf_rule *r = &wd->rules[i];
        snprintf(wd->names[i], sizeof wd->names[i], "r%zu", i);
        uint64_t start = i && take(in, 1) & 1 ? wd->rules[i - 1].start + take(in, 1) % 16
                                              : take(in, 8) % size;
        if (start >= size)
            start = size - 1;
        uint64_t len = take(in, 1);
        len = len & 0x80 ? (len & 0x7F) * 0x800 + 1 : len % 16 + 1;
        if (len > size - start)
            len = size - start;
        uint8_t ab = (uint8_t)take(in, 1);
        uint8_t action = ab % 7 == 6 ? MF_REDIRECT : ab % 7; /* every action but a guard */
        *r = (struct mf_rule){.name = wd->names[i], .start = start, .size = len,
                              .priority = (int32_t)(ab >> 4) % 3 - 1, .action = action};
        if (action == MF_REDIRECT) {
            uint8_t tb = (uint8_t)take(in, 1);
            r->target = tb & 1;
            if (tb & 2) /* anywhere the rule fits, up to the top of the target's space */
                r->target_offset = take(in, 8) % (UINT64_MAX - len + 1);
            else /* near the rule's own offset, aligned like it or not */
                r->target_offset = (start & 0xFFFF) + (tb >> 2);
        }
        r->value_len = (size_t)take(in, 1) % 9;
        r->mask_len = (size_t)take(in, 1) % 9;
        if (r->value_len > len)
            r->value_len = len;
        if (r->mask_len > len)
            r->mask_len = len;
        for (size_t k = 0; k < 8; k++) {
            wd->values[i][k] = (uint8_t)take(in, 1);
            wd->masks[i][k] = (uint8_t)take(in, 1);
        }
        r->value = wd->values[i];
        r->mask = wd->masks[i];
    }
}

static struct mf_table *compile(struct world *wd)
{
    struct mf_error err;
    struct mf_table *t = mf_table_compile(wd->rules, wd->nrules, &wd->cfg, &err);
    if (!t)
        FAIL("a valid policy did not compile: %s", err.message);
    return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct input in = {data, size};
    static struct world wd; /* static: the callback context; reset for every input */
    memset(&wd, 0, sizeof wd);
    uint64_t kind = take(&in, 1);
    wd.cfg.page_size = 4096u << (kind % 5);
    uint64_t raw = take(&in, 5);
    switch (kind / 5 % 4) {
    case 0: wd.cfg.bar_size = 1 + raw % 0x5000; break;                      /* small, any */
    case 1: wd.cfg.bar_size = (1 + raw % 8) * wd.cfg.page_size; break;      /* whole pages */
    case 2: wd.cfg.bar_size = 1ull << 36; break;                           /* 64 GiB */
    default: wd.cfg.bar_size = 1 + raw % (1ull << 36); break;
    }
    uint8_t modes = (uint8_t)take(&in, 1);
    wd.cfg.fill = (uint8_t)take(&in, 1);
    wd.cfg.partial = modes & 1;
    wd.cfg.unaligned = modes >> 1 & 1;
    decode_rules(&in, &wd);

    struct mf_backend be = {.kind = MF_BACKEND_CALLBACK, .read = sink_read, .write = sink_write,
                            .ctx = &wd.dev};
    struct mf_backend targets[NTARGETS];
    for (unsigned k = 0; k < NTARGETS; k++) {
        wd.tgt[k].salt = (uint8_t)(0x5A + 0x69 * k);
        targets[k] = (struct mf_backend){.kind = MF_BACKEND_CALLBACK, .read = sink_read,
                                         .write = sink_write, .ctx = &wd.tgt[k]};
    }
    struct mf_error err;
    struct mf_filter *f = mf_filter_new(&be, targets, NTARGETS, 0, 4, compile(&wd), &err);
    if (!f)
        FAIL("mf_filter_new: %s", err.message);

    while (in.n) {
        uint8_t op = (uint8_t)take(&in, 1);
        if (op % 16 == 0) { /* a policy update: new fill, and sometimes new rules */
            wd.cfg.fill = (uint8_t)take(&in, 1);
            if (op & 0x10)
                decode_rules(&in, &wd);
            struct mf_table *old = NULL;
            if (mf_filter_update(f, compile(&wd), &old, &err) != MF_OK)
                FAIL("update refused: %s", err.message);
            mf_table_free(old);
            continue;
        }
        static const unsigned widths[] = {1, 2, 4, 8, 1, 2, 4, 8, 4, 4, 0, 3, 16, 5};
        unsigned w = widths[op % 14];
        bool write = op & 0x80;
        uint64_t off = op & 0x40 ? pick_offset(&in, &wd) : take(&in, 8);
        uint64_t val = take(&in, 8);
        if (write && w < 8 && !(op & 0x20))
            val &= (1ull << (8 * w)) - 1;
        wd.dev.n = 0;
        for (unsigned k = 0; k < NTARGETS; k++)
            wd.tgt[k].n = 0;
        struct mf_result res;
        int rc = mf_access_scalar(f, off, w, write, val, &res);
        bool valid = (w == 1 || w == 2 || w == 4 || w == 8) && off <= wd.cfg.bar_size &&
                     w <= wd.cfg.bar_size - off && !(write && w < 8 && val >> (8 * w));
        if (!valid) {
            if (rc == MF_OK || wd.dev.n || wd.tgt[0].n || wd.tgt[1].n)
                FAIL("invalid access (off %#llx w %u) accepted or touched the device",
                     (unsigned long long)off, w);
            continue;
        }
        if (rc != MF_OK)
            FAIL("valid access rejected: %d", rc);
        struct expect e;
        predict(&wd, off, w, write, val, &e);
        if (res.outcome != e.outcome || res.value != e.value)
            FAIL("off %#llx w %u %s: outcome %u value %#llx, expected %u %#llx",
                 (unsigned long long)off, w, write ? "write" : "read", res.outcome,
                 (unsigned long long)res.value, e.outcome, (unsigned long long)e.value);
        if (!same_log(&wd.dev, &e.dev))
            FAIL("off %#llx w %u: device saw %zu accesses, expected %zu (or different ones)",
                 (unsigned long long)off, w, wd.dev.n, e.dev.n);
        for (unsigned k = 0; k < NTARGETS; k++)
            if (!same_log(&wd.tgt[k], &e.tgt[k]))
                FAIL("off %#llx w %u: target %u saw %zu accesses, expected %zu (or others)",
                     (unsigned long long)off, w, k, wd.tgt[k].n, e.tgt[k].n);
    }
    struct mf_event ev[4];
    while (mf_drain_events(f, ev, 4))
        ;
    mf_filter_free(f);
    return 0;
}

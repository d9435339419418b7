/*
 * core_fuzz.c - libFuzzer harness for the C core (build: see fuzz/README.md).
 *
 * The input is decoded into a BAR size, a page size, a policy and a sequence of accesses (some
 * invalid, some policy updates). Every access goes through mf_access_scalar() over a callback
 * backend that records the device accesses it receives. An independent byte-level model here,
 * written from contract §2-3 and docs/contract-details.md and sharing no code with the core,
 * predicts the outcome, the value and the exact list of device accesses; any difference, or any
 * device access carrying a byte the policy does not pass, aborts.
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


struct dev_access {
    uint64_t off, value;
    unsigned width;
    bool write;
};

struct world {
    struct mf_rule rules[MAX_RULES];
    uint8_t values[MAX_RULES][8], masks[MAX_RULES][8];
    char names[MAX_RULES][8];
    size_t nrules;
    struct mf_config cfg;
    struct dev_access log[MAX_LOG];
    size_t nlog;
};

#define FAIL(...)                                                                             \
    do {                                                                                      \
        fprintf(stderr, __VA_ARGS__);                                                         \
        fputc('\n', stderr);                                                                  \
        abort();                                                                              \
    } while (0)

/* The device: reads return a pattern of the address; writes are only recorded. */
static uint8_t pattern(uint64_t a) { return (uint8_t)(a * 131 + 7 + (a >> 9)); }

static int dev_read(void *ctx, uint64_t off, unsigned w, uint64_t *v)
{
    struct world *wd = ctx;
    if (wd->nlog == MAX_LOG)
        FAIL("more device accesses than any single access can need");
    uint64_t x = 0;
    for (unsigned i = 0; i < w; i++)
        x |= (uint64_t)pattern(off + i) << (8 * i);
    wd->log[wd->nlog++] = (struct dev_access){off, x, w, false};
    *v = x;
    return 0;
}

static int dev_write(void *ctx, uint64_t off, unsigned w, uint64_t v)
{
    struct world *wd = ctx;
    if (wd->nlog == MAX_LOG)
        FAIL("more device accesses than any single access can need");
    wd->log[wd->nlog++] = (struct dev_access){off, v, w, true};
    return 0;
}

/* ---- the independent model ----------------------------------------------------------- */

/* Owner of byte a: highest priority, then most restrictive action, then listed last. */
static int owner(const struct world *wd, uint64_t a)
{
    int best = -1;
    for (size_t i = 0; i < wd->nrules; i++) {
        const struct mf_rule *r = &wd->rules[i];
        if (a < r->start || a - r->start >= r->size)
            continue;
        if (best < 0 || r->priority > wd->rules[best].priority ||
            (r->priority == wd->rules[best].priority && r->action >= wd->rules[best].action))
            best = (int)i;
    }
    return best;
}

struct expect {
    uint8_t outcome;
    uint64_t value;
    struct dev_access log[MAX_LOG];
    size_t nlog;
};

static void chunks(struct expect *e, uint64_t off, unsigned w, const bool *sel, bool write,
                   uint64_t wvalue)
{
    for (unsigned k = 0; k < w;) {
        if (!sel[k]) {
            k++;
            continue;
        }
        unsigned end = k;
        while (end < w && sel[end])
            end++;
        for (uint64_t p = off + k; p < off + end;) {
            unsigned cw = 8;
            while (p % cw || p + cw > off + end)
                cw /= 2;
            uint64_t v = 0;
            for (unsigned i = 0; i < cw; i++) {
                unsigned b = (unsigned)(p - off) + i;
                v |= (uint64_t)(write ? (uint8_t)(wvalue >> (8 * b)) : pattern(p + i)) << (8 * i);
            }
            e->log[e->nlog++] = (struct dev_access){p, v, cw, write};
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
    uint8_t act[8], vb[8] = {0}, mb[8] = {0};
    for (unsigned k = 0; k < w; k++) {
        int r = owner(wd, off + k);
        act[k] = r < 0 ? MF_ALLOW : wd->rules[r].action;
        if (r >= 0) {
            uint64_t i = off + k - wd->rules[r].start;
            vb[k] = i < wd->rules[r].value_len ? wd->rules[r].value[i] : 0;
            mb[k] = i < wd->rules[r].mask_len ? wd->rules[r].mask[i] : 0;
        }
    }
    bool pass[8];
    unsigned npass = 0, nemul = 0;
    uint64_t out = 0, local = 0;
    for (unsigned k = 0; k < w; k++) {
        uint8_t b = (uint8_t)(val >> (8 * k));
        if (write) {
            pass[k] = act[k] == MF_ALLOW || act[k] == MF_AUDIT || act[k] == MF_MASK;
            if (act[k] == MF_MASK)
                b = (uint8_t)((b & ~mb[k]) | (vb[k] & mb[k]));
            out |= (uint64_t)(pass[k] ? b : 0) << (8 * k);
        } else {
            pass[k] = act[k] <= MF_MASK;
            nemul += act[k] == MF_EMULATE;
            local |= (uint64_t)(act[k] == MF_EMULATE ? vb[k] : wd->cfg.fill) << (8 * k);
            out |= (uint64_t)(pass[k] ? pattern(off + k) : 0) << (8 * k);
        }
        npass += pass[k];
    }
    if (npass == w) {
        e->outcome = write && out != val ? MF_MASKED : MF_PASS;
        e->value = out;
        e->log[e->nlog++] = (struct dev_access){off, out, w, write};
    } else if (npass == 0) {
        e->outcome = write ? MF_BLOCKED : nemul == w ? MF_EMULATED : MF_BLOCKED;
        e->value = write ? 0 : local;
    } else if (wd->cfg.partial == MF_PARTIAL_DENY) {
        e->outcome = MF_BLOCKED;
        e->value = write ? 0 : fill;
    } else {
        e->outcome = MF_PARTIAL;
        if (write) {
            e->value = out;
        } else {
            e->value = 0;
            for (unsigned k = 0; k < w; k++)
                e->value |= (pass[k] ? (out >> (8 * k)) & 0xFF : (local >> (8 * k)) & 0xFF)
                            << (8 * k);
        }
        chunks(e, off, w, pass, write, out);
    }
}

static bool same_log(const struct dev_access *a, const struct dev_access *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i].off != b[i].off || a[i].value != b[i].value || a[i].width != b[i].width ||
            a[i].write != b[i].write)
            return false;
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
        *r = (struct mf_rule){.name = wd->names[i], .start = start, .size = len,
                              .priority = (int32_t)(ab >> 4) % 3 - 1, .action = ab % 6};
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

    struct mf_backend be = {.kind = MF_BACKEND_CALLBACK, .read = dev_read, .write = dev_write,
                            .ctx = &wd};
    struct mf_error err;
    struct mf_filter *f = mf_filter_new(&be, 0, 4, compile(&wd), &err);
    if (!f)
        FAIL("mf_filter_new: %s", err.message);

    while (in.n) {
        uint8_t op = (uint8_t)take(&in, 1);
        if (op % 16 == 0) { /* a policy update: new fill, and sometimes new rules */
            wd.cfg.fill = (uint8_t)take(&in, 1);
            if (op & 0x10)
                decode_rules(&in, &wd);
            struct mf_table *old = NULL;
            if (mf_filter_update(f, compile(&wd), &old) != MF_OK)
                FAIL("update refused");
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
        wd.nlog = 0;
        struct mf_result res;
        int rc = mf_access_scalar(f, off, w, write, val, &res);
        bool valid = (w == 1 || w == 2 || w == 4 || w == 8) && off <= wd.cfg.bar_size &&
                     w <= wd.cfg.bar_size - off && !(write && w < 8 && val >> (8 * w));
        if (!valid) {
            if (rc == MF_OK || wd.nlog)
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
        if (wd.nlog != e.nlog || !same_log(wd.log, e.log, e.nlog))
            FAIL("off %#llx w %u: device saw %zu accesses, expected %zu (or different ones)",
                 (unsigned long long)off, w, wd.nlog, e.nlog);
    }
    struct mf_event ev[4];
    while (mf_drain_events(f, ev, 4))
        ;
    mf_filter_free(f);
    return 0;
}

/*
 * standalone.c - the core used from C alone, as a VMM or a fuzzer uses it: no Python.
 *
 * Built by tests/test_c_standalone.py with -fsanitize=address,undefined (when the compiler
 * has them), so it also runs the access path and concurrent updates under the sanitizers.
 * Exits non-zero, saying why, on the first wrong answer.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mmiofilter.h"

#define CHECK(cond)                                                                           \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);          \
            exit(1);                                                                          \
        }                                                                                     \
    } while (0)

static uint8_t bar[0x4000];

static struct mf_table *compile(uint8_t fill)
{
    static const uint8_t mask[4] = {0, 0, 0, 0x02}; /* NV_PMC_ENABLE bit 25 */
    struct mf_rule rules[] = {
        {.name = "deny", .start = 0x100, .size = 4, .action = MF_DENY},
        {.name = "pmc", .start = 0x200, .size = 4, .action = MF_MASK,
         .value = mask, .value_len = 4, .mask = mask, .mask_len = 4},
        {.name = "ro", .start = 0x1FFC, .size = 8, .action = MF_READONLY},
    };
    struct mf_config cfg = {.bar_size = sizeof bar, .page_size = 4096, .fill = fill};
    struct mf_error err;
    struct mf_table *t = mf_table_compile(rules, 3, &cfg, &err);
    if (!t)
        fprintf(stderr, "compile: %s\n", err.message);
    return t;
}

static uint64_t rd(struct mf_filter *f, uint64_t off, unsigned w, uint8_t *outcome)
{
    struct mf_result r;
    CHECK(mf_access_scalar(f, off, w, 0, 0, &r) == MF_OK);
    *outcome = r.outcome;
    return r.value;
}

static atomic_bool stop;

static void *reader(void *arg)
{
    struct mf_filter *f = arg;
    while (!atomic_load(&stop)) {
        uint8_t o;
        uint64_t v = rd(f, 0x100, 4, &o);
        uint8_t fill = (uint8_t)v;
        CHECK(o == MF_BLOCKED && v == 0x01010101u * fill); /* one whole policy per access */
    }
    return NULL;
}

int main(void)
{
    struct mf_backend be = {.kind = MF_BACKEND_MEMORY, .base = bar, .length = sizeof bar};
    struct mf_error err;
    struct mf_filter *f = mf_filter_new(&be, NULL, 0, 0, 4, compile(0xFF), &err);
    CHECK(f);
    uint8_t o;

    /* layout: pages 0 and 1 (the rule at 0x1FFC crosses into page 2) */
    struct mf_area areas[4];
    struct mf_table *cur = compile(0xFF);
    CHECK(mf_table_direct_areas(cur, areas, 4) == 1);
    CHECK(areas[0].offset == 0x3000 && areas[0].length == 0x1000);
    /* pages 1 and 2 hold only readonly and allow bytes: read-direct; page 0's deny traps it */
    CHECK(mf_table_read_direct_areas(cur, areas, 4) == 1);
    CHECK(areas[0].offset == 0x1000 && areas[0].length == 0x2000);
    CHECK(mf_table_trapped_pages(cur) == 3 && mf_table_read_direct_pages(cur) == 2);
    CHECK(mf_table_collateral_read(cur) == 0x1000 - 4); /* page 0 less the deny */
    CHECK(mf_table_collateral_write(cur) == 0x3000 - 16 && mf_table_collateral(cur) == 0x3000 - 16);
    mf_table_free(cur);

    /* the access path */
    memset(bar, 0xAB, sizeof bar);
    CHECK(rd(f, 0x100, 4, &o) == 0xFFFFFFFF && o == MF_BLOCKED);
    CHECK(rd(f, 0x104, 4, &o) == 0xABABABAB && o == MF_PASS);
    struct mf_result r;
    CHECK(mf_access_scalar(f, 0x200, 4, 1, 0, &r) == MF_OK && r.outcome == MF_MASKED);
    CHECK(bar[0x203] == 0x02 && r.value == 0x02000000);
    CHECK(mf_access_scalar(f, 0x1FF8, 8, 1, 0, &r) == MF_OK && r.outcome == MF_BLOCKED);
    CHECK(bar[0x1FF8] == 0xAB);
    CHECK(mf_access_scalar(f, sizeof bar - 4, 8, 0, 0, &r) == MF_ERANGE);
    CHECK(mf_access_scalar(f, UINT64_MAX - 2, 4, 0, 0, &r) == MF_ERANGE);
    CHECK(mf_access_scalar(f, 0, 3, 0, 0, &r) == MF_EWIDTH);

    /* events: 3 recorded (deny read, masked write, blocked write) in a ring of 4 */
    struct mf_event ev[8];
    CHECK(mf_drain_events(f, ev, 8) == 3);
    CHECK(!strcmp(ev[0].rule, "deny") && !strcmp(ev[1].rule, "pmc") && !strcmp(ev[2].rule, "ro"));
    for (int i = 0; i < 10; i++)
        rd(f, 0x100, 4, &o);
    CHECK(mf_events_pending(f) == 4 && mf_events_dropped(f) == 6);

    /* concurrent readers while the policy is swapped: fills 1..200 */
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        CHECK(pthread_create(&th[i], NULL, reader, f) == 0);
    for (int i = 0; i < 2000; i++) {
        struct mf_table *old = NULL;
        CHECK(mf_filter_update(f, compile((uint8_t)(1 + i % 200)), &old, NULL) == MF_OK);
        uint64_t hits[3];
        mf_table_counters(old, hits, 3);
        mf_table_free(old);
    }
    atomic_store(&stop, true);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    mf_filter_free(f);

    /* redirect: BAR bytes 0x300..0x30F are config-space bytes 0x40..0x4F of a target */
    static uint8_t config[0x100];
    for (unsigned i = 0; i < sizeof config; i++)
        config[i] = (uint8_t)i;
    struct mf_backend target = {.kind = MF_BACKEND_MEMORY, .base = config,
                                .length = sizeof config};
    struct mf_rule mirror = {.name = "mirror", .start = 0x300, .size = 0x10,
                             .action = MF_REDIRECT, .target = 0, .target_offset = 0x40};
    struct mf_config cfg = {.bar_size = sizeof bar, .page_size = 4096, .fill = 0xFF};
    CHECK(!mf_filter_new(&be, NULL, 0, 0, 4, mf_table_compile(&mirror, 1, &cfg, &err), &err));
    CHECK(err.rule == 0 && strstr(err.message, "redirect target #0 was not given"));
    f = mf_filter_new(&be, &target, 1, 0, 4, mf_table_compile(&mirror, 1, &cfg, &err), &err);
    CHECK(f);
    memset(bar, 0xAB, sizeof bar);
    CHECK(rd(f, 0x304, 4, &o) == 0x47464544 && o == MF_REDIRECTED);
    CHECK(mf_access_scalar(f, 0x308, 2, 1, 0xBEEF, &r) == MF_OK && r.outcome == MF_REDIRECTED);
    CHECK(config[0x48] == 0xEF && config[0x49] == 0xBE && bar[0x308] == 0xAB);
    CHECK(mf_events_pending(f) == 0); /* counted, not an event */
    uint64_t hits[1];
    CHECK(mf_filter_counters(f, hits, 1) == MF_OK && hits[0] == 2);
    mirror.target = 1; /* a target the filter does not have: refused, with the reason */
    struct mf_table *bad = mf_table_compile(&mirror, 1, &cfg, &err), *old = NULL;
    CHECK(bad && mf_filter_update(f, bad, &old, &err) == MF_EINVAL && !old);
    CHECK(strstr(err.message, "rule 'mirror': redirect target #1"));
    mf_table_free(bad);
    CHECK(!strcmp(mf_strerror(MF_ETARGET), "a redirect target's backend failed"));
    mf_filter_free(f);
    puts("standalone: all checks passed");
    return 0;
}

/*
 * guard_fuzz.c - libFuzzer harness for the FSP mailbox guard (build: see fuzz/README.md).
 *
 * The input is decoded into a mailbox layout (GH100's register offsets rebased into a 64 KiB
 * BAR, or a variant), a guard policy (channels, max_packet, denied NVDM types and PRC
 * sub-messages), an FSP model (its EMEM size, when it takes packets, whether and when it
 * replies) and a sequence of operations: raw guest
 * accesses to the mailbox registers (any width, sometimes misaligned, values drawn from the
 * protocol's interesting ones), the driver's whole send and receive sequences, the FSP taking
 * packets and replying (at once or later), policy swaps, a retired table published again,
 * filter restarts, device faults, and another client of the mailbox (GH100's PMU/SOE) on a
 * channel the guest does not have. Every access goes through mf_access() over a callback
 * backend: a simulated FSP written here from docs/fsp-guard.md and mmiofilter/simulated/fsp.py
 * (SimFsp), sharing no code with the guard, modelling what the hardware is documented to do:
 * eight ports on one EMEM that wraps at its size, eight queues, a packet read from its
 * channel's base (channel q at q * max_packet, the admin's fact), a reply written there. The FSP
 * checks what it receives, and the harness aborts with a message naming the broken property:
 *
 *   security   the FSP never takes a first packet whose NVDM type is denied by the policy in
 *              force when its doorbell passed, nor a continuation of (or a whole) message of a
 *              denied type, nor a PRC message whose sub-message (byte 8) is denied or missing
 *              from its first packet; no doorbell reaches it with a head off the channel's
 *              base; it never sees an access to its registers that is not one aligned
 *              32-bit access; a QUEUE_TAIL write reaches it only immediately before the
 *              QUEUE_HEAD write (the doorbell) of the same queue; a doorbell never reaches it
 *              twice for one packet, nor with bounds the guard must refuse.
 *   coherence  every dword of a packet whose doorbell passed was last written by the guest
 *              through EMEMD (the guard checked its shadow of what the guest wrote; a dword
 *              the FSP wrote since, or nobody wrote, means the guard checked other bytes than
 *              the FSP will read).
 *   no TOCTOU  the packet the FSP takes equals, byte for byte, EMEM at its doorbell; no EMEMD
 *              or QUEUE_TAIL write reaches a packet the FSP has not taken.
 *   liveness   a well-formed COT packet sent with the driver's sequence, once every queue is
 *              idle and the harness has consumed every reply the way the driver does, passes
 *              and is taken; the driver's consumption of a reply leaves an idle MSGQ idle.
 *              Not checked where the guard fails closed as documented: after a device fault,
 *              a message never answered, a doorbell rung with no guard, or a restart while a
 *              packet queued under the guard waited, changed by a time without a guard.
 *   API        every access returns MF_OK (MF_EDEVICE only under an injected fault) with an
 *              outcome in range; a refused or emulated access writes nothing to the device; a
 *              passed one did exactly the guest's access; events drain with sane fields.
 *
 * GUARD_FUZZ_TRACE=1 prints every access, event and FSP step. -DGUARD_FUZZ_NO_LIVENESS and
 * -DGUARD_FUZZ_NO_COHERENCE drop those checks, to fuzz past a known bug. fuzz/make_guard_seeds.py
 * writes the seeds in this encoding.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_input.h"
#include "mmiofilter.h"

#define BAR_SIZE 0x10000u
#define EMEM_BYTES 65536u
#define MAX_CH 8
#define AINCW (1u << 24)
#define AINCR (1u << 25)
#define SOM (1u << 31)
#define EOM (1u << 30)
#define SEQ(s) (((uint32_t)(s)&3u) << 28)
#define MSG_BASE (0x7Eu | 0x10DEu << 8)
#define MSG_HDR(t) (MSG_BASE | (uint32_t)(t) << 24)
#define NVDM_FIRMWARE_UPDATE 0x12
#define NVDM_PRC 0x13
#define NVDM_COT 0x14
#define NVDM_RESPONSE 0x15

enum reg { EMEMC, EMEMD, QHEAD, QTAIL, MHEAD, MTAIL };
static const char *const REG_NAME[] = {"EMEMC", "EMEMD", "QUEUE_HEAD", "QUEUE_TAIL",
                                       "MSGQ_HEAD", "MSGQ_TAIL"};

#define FAIL(...)                                                                             \
    do {                                                                                      \
        fprintf(stderr, "guard_fuzz: ");                                                      \
        fprintf(stderr, __VA_ARGS__);                                                         \
        fputc('\n', stderr);                                                                  \
        abort();                                                                              \
    } while (0)

/* GUARD_FUZZ_TRACE=1 in the environment prints every access and FSP step (for findings). */
static int tracing = -1;
#define TRACE(...)                                                                            \
    do {                                                                                      \
        if (tracing < 0)                                                                      \
            tracing = getenv("GUARD_FUZZ_TRACE") != NULL;                                     \
        if (tracing)                                                                          \
            fprintf(stderr, __VA_ARGS__);                                                     \
    } while (0)


static uint32_t le32(const uint8_t *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static void put32(uint8_t *b, uint32_t v)
{
    for (unsigned k = 0; k < 4; k++)
        b[k] = (uint8_t)(v >> (8 * k));
}

static bool denied(const uint8_t *deny, uint8_t type) { return deny[type / 8] >> (type % 8) & 1; }

/* ---- the simulated FSP ----------------------------------------------------------------- */

struct fsp {
    uint32_t emem_size; /* a port's address wraps here (a power of two) */
    uint32_t chan_bytes; /* channel q is EMEM [q * chan_bytes, (q + 1) * chan_bytes) */
    uint8_t emem[EMEM_BYTES];
    uint8_t by_guest[EMEM_BYTES / 4]; /* 1: the dword was last written through EMEMD */
    uint32_t ememc[MAX_CH], qhead[MAX_CH], qtail[MAX_CH], mhead[MAX_CH], mtail[MAX_CH];
    /* a doorbell the FSP has not taken yet, with what EMEM and the policy were at it; the
     * packet is EMEM [db_head, db_tail + 4), db_head its channel's base */
    bool pending[MAX_CH];
    bool db_unguarded[MAX_CH]; /* rung while no guard was in force: nothing to check */
    uint32_t db_head[MAX_CH], db_tail[MAX_CH];
    uint8_t db_deny[MAX_CH][32], db_prc[MAX_CH][32];
    uint8_t snap[MAX_CH][EMEM_BYTES];
    /* reassembly and replies */
    bool partial[MAX_CH];
    uint8_t partial_type[MAX_CH], partial_sub[MAX_CH];
    bool owe[MAX_CH]; /* a message ended: a reply is due at owe_at */
    uint32_t owe_at[MAX_CH];
    uint8_t owe_type[MAX_CH];
    int tail_armed; /* the queue whose QUEUE_TAIL write was the device's last access, or -1 */
    bool other_started[MAX_CH]; /* another client began a packet there (op_other_client) */
    unsigned packets, messages, unanswered;
};

struct world {
    /* the run's configuration */
    unsigned channels;
    uint64_t base[3]; /* emem, queue, msgq */
    bool allow_fw, auto_take, late_reply, respond;
    /* the policy in force */
    uint32_t max_packet;
    uint8_t deny[32], prc[32];
    /* no guard in force (a table without it: the admin's choice, nothing is checked); a
     * doorbell rang then (a packet no guard would pass, such as a continuation of no message,
     * may have reached the FSP, which a later guard takes for one whose reply will come) */
    bool unguarded, unguarded_rang;
    /* a restart armed a fresh guard state while a packet queued under a guard was waiting,
     * changed since its doorbell (its bytes, or its queue's HEAD/TAIL) by a time without a
     * guard: see note_unguarded_changes */
    bool unguarded_changed;
    /* a table an update handed back, kept to publish again, and its policy */
    struct mf_table *retired;
    uint8_t retired_deny[32], retired_prc[32];
    bool retired_unguarded;
    struct mf_config cfg;
    struct mf_guard_spec spec;
    struct mf_rule rules[3];
    size_t nplain;
    uint8_t pval[2][8], pmask[2][8];
    struct mf_filter *f;
    /* what the device saw during the current access */
    unsigned dev_writes, dev_reads;
    uint64_t last_wr_off, last_wr_val, acc_off, acc_rd_val;
    bool acc_read; /* the device was read at the guest's offset during the access */
    unsigned ops;
    /* device faults: the fault_in-th device access from now fails; fault_lands: it took
     * effect all the same (a write reached the register, a read had its side effect) */
    unsigned fault_in;
    bool fault_lands, faulted, ever_faulted;
    struct fsp sim;
};

/* Which mailbox register (and channel) holds byte `off`, or -1. */
static int reg_of(const struct world *w, uint64_t off, unsigned *ch)
{
    for (int b = 0; b < 3; b++) {
        if (off >= w->base[b] && off - w->base[b] < 8ull * MAX_CH) {
            *ch = (unsigned)((off - w->base[b]) / 8);
            return 2 * b + ((off - w->base[b]) % 8 >= 4);
        }
    }
    return -1;
}

static uint64_t reg_off(const struct world *w, int reg, unsigned ch)
{
    return w->base[reg / 2] + 8ull * ch + 4ull * (unsigned)(reg % 2);
}

static bool touches_mailbox(const struct world *w, uint64_t off, unsigned width)
{
    unsigned ch;
    for (unsigned k = 0; k < width; k++)
        if (reg_of(w, off + k, &ch) >= 0)
            return true;
    return false;
}

static uint8_t pattern(uint64_t a) { return (uint8_t)(a * 167 + 13 + (a >> 8)); }

/* The EMEM byte port ch reaches (all eight on one EMEM, wrapping at its size). */
static uint32_t port_step(struct fsp *s, unsigned ch, uint32_t bit)
{
    uint32_t a = s->ememc[ch] & 0xFFFCu;
    if (s->ememc[ch] & bit)
        s->ememc[ch] = (s->ememc[ch] & ~0xFFFCu) | ((a + 4) & 0xFFFCu);
    return a % s->emem_size;
}

/* The FSP answers the last message of queue c: 20 bytes at its channel's base in EMEM. */
static void fsp_reply(struct world *w, unsigned c)
{
    struct fsp *s = &w->sim;
    if (!s->owe[c])
        return;
    s->owe[c] = false;
    const uint32_t words[5] = {SOM | EOM, MSG_HDR(NVDM_RESPONSE), 0, s->owe_type[c], 0};
    uint32_t at = s->owe_at[c];
    for (unsigned i = 0; i < 5 && at + 4 * i + 4 <= s->emem_size; i++) {
        put32(&s->emem[at + 4 * i], words[i]);
        s->by_guest[(at + 4 * i) / 4] = 0;
    }
    s->mhead[c] = at;
    s->mtail[c] = at + 16;
    TRACE("    fsp: reply on queue %u at %#x (type %#04x)\n", c, at, s->owe_type[c]);
}

/* The FSP takes the packet whose doorbell rang on queue c (SimFsp.take, one queue). */
static void fsp_take(struct world *w, unsigned c)
{
    struct fsp *s = &w->sim;
    if (!s->pending[c])
        return;
    /* A serial FSP answers its last message before it reads the next one. */
    if (s->owe[c])
        fsp_reply(w, c);
    s->pending[c] = false;
    uint32_t head = s->db_head[c], tail = s->db_tail[c];
    /* without a guard the guest may move them (the FSP goes by what it was told) */
    if (!s->db_unguarded[c] && (s->qhead[c] != head || s->qtail[c] != tail))
        FAIL("queue %u: HEAD/TAIL %#x/%#x at take, %#x/%#x at the doorbell", c, s->qhead[c],
             s->qtail[c], head, tail);
    s->qhead[c] = s->qtail[c];
    uint32_t len = tail + 4 - head; /* the doorbell checked the bounds */
    if (!s->db_unguarded[c] && memcmp(&s->emem[head], s->snap[c], len)) {
        uint32_t at = 0;
        while (s->emem[head + at] == s->snap[c][at])
            at++;
        FAIL("TOCTOU: queue %u took packet [%#x, %#x) whose byte %#x changed since its "
             "doorbell (%#x -> %#x)",
             c, head, tail + 4, head + at, s->snap[c][at], s->emem[head + at]);
    }
    s->packets++;
    const uint8_t *pkt = &s->emem[head];
    uint32_t mctp = le32(pkt);
    TRACE("    fsp: queue %u takes [%#x, %#x): %08x %08x\n", c, head, tail + 4, mctp,
          le32(pkt + 4));
    const uint8_t *deny = s->db_deny[c], *prc = s->db_prc[c];
    if (mctp & SOM) {
        uint32_t hdr = le32(pkt + 4);
        uint8_t type = (uint8_t)(hdr >> 24);
        if (denied(deny, type))
            FAIL("security: queue %u: the FSP took a first packet of denied NVDM type %#04x "
                 "([%#x, %#x), MCTP 0x%08x)",
                 c, type, head, tail + 4, mctp);
        if (type == NVDM_PRC && len < 12 && !s->db_unguarded[c])
            FAIL("security: queue %u: the FSP took a PRC first packet without its "
                 "sub-message ([%#x, %#x))",
                 c, head, tail + 4);
        if (type == NVDM_PRC && denied(prc, pkt[8]))
            FAIL("security: queue %u: the FSP took a PRC message of denied sub-message %#04x "
                 "(scope %#x)",
                 c, pkt[8], pkt[9]);
        if ((hdr & 0x00FFFF7Fu) != MSG_BASE)
            return; /* SimFsp ignores it, keeping any message in progress */
        s->partial[c] = true;
        s->partial_type[c] = type;
        s->partial_sub[c] = len >= 12 ? pkt[8] : 0;
    } else if (s->partial[c]) {
        if (denied(deny, s->partial_type[c]))
            FAIL("security: queue %u: the FSP took a continuation of a message of denied NVDM "
                 "type %#04x ([%#x, %#x), MCTP 0x%08x)",
                 c, s->partial_type[c], head, tail + 4, mctp);
        if (s->partial_type[c] == NVDM_PRC && denied(prc, s->partial_sub[c]))
            FAIL("security: queue %u: the FSP took a continuation of a PRC message of denied "
                 "sub-message %#04x",
                 c, s->partial_sub[c]);
    } else {
        return;
    }
    if (mctp & EOM) {
        s->partial[c] = false;
        s->messages++;
        if (denied(deny, s->partial_type[c]))
            FAIL("security: queue %u: the FSP assembled a message of denied type %#04x", c,
                 s->partial_type[c]);
        s->unanswered += !w->respond;
        if (w->respond) {
            s->owe[c] = true;
            s->owe_at[c] = head;
            s->owe_type[c] = s->partial_type[c];
            if (!w->late_reply)
                fsp_reply(w, c);
        }
    }
}

/* A QUEUE_HEAD write reached the FSP: the doorbell of the packet at its channel's base,
 * TAIL - HEAD + 4 bytes long (the FSP reads from the base, whatever HEAD says). */
static void fsp_doorbell(struct world *w, unsigned c)
{
    struct fsp *s = &w->sim;
    uint32_t head = s->qhead[c], tail = s->qtail[c], base = c * s->chan_bytes;
    if (w->unguarded) {
        /* no guard: what reaches the FSP is the admin's choice; it takes only what it can */
        if (s->pending[c] || head != base || head % 4 || tail % 4 ||
            (uint64_t)tail < (uint64_t)head + 4 || (uint64_t)tail - head + 4 > s->chan_bytes ||
            (uint64_t)tail + 4 > s->emem_size) {
            TRACE("    fsp: unguarded doorbell on queue %u ignored\n", c);
            return;
        }
        memset(s->db_deny[c], 0, 32);
        memset(s->db_prc[c], 0, 32);
        s->db_unguarded[c] = true;
        w->unguarded_rang = true;
        s->db_head[c] = head;
        s->db_tail[c] = tail;
        s->pending[c] = true;
        if (w->auto_take)
            fsp_take(w, c);
        return;
    }
    if (c >= w->channels)
        FAIL("security: a doorbell on queue %u reached the FSP (the guard serves %u)", c,
             w->channels);
    if (head != base)
        FAIL("security: queue %u: a doorbell with head %#x, off the channel's base %#x, "
             "reached the FSP (it reads from the base: bytes the guard never checked)",
             c, head, base);
    /* 64-bit: both are the guest's 32-bit values, and must not wrap into passing */
    if (head % 4 || tail % 4 || (uint64_t)tail < (uint64_t)head + 4 ||
        (uint64_t)tail - head + 4 > s->chan_bytes || (uint64_t)tail + 4 > s->emem_size)
        FAIL("queue %u: a doorbell with bounds [%#x, %#x) reached the FSP (channel %u bytes)", c,
             head, tail + 4, s->chan_bytes);
#ifndef GUARD_FUZZ_NO_COHERENCE /* define it to see what an incoherent shadow leads to */
    for (uint32_t a = head; a <= tail; a += 4)
        if (!s->by_guest[a / 4])
            FAIL("coherence: queue %u: the doorbell of [%#x, %#x) passed, but the dword at "
                 "%#x (0x%08x) was not last written by the guest (the FSP wrote it, or nobody "
                 "did): the guard checked bytes the FSP will not read",
                 c, head, tail + 4, a, le32(&s->emem[a]));
#endif
    memcpy(s->snap[c], &s->emem[head], tail + 4 - head);
    memcpy(s->db_deny[c], w->deny, sizeof w->deny);
    memcpy(s->db_prc[c], w->prc, sizeof w->prc);
    s->db_unguarded[c] = false;
    s->db_head[c] = head;
    s->db_tail[c] = tail;
    s->pending[c] = true;
    TRACE("    fsp: doorbell on queue %u for [%#x, %#x)\n", c, head, tail + 4);
    if (w->auto_take)
        fsp_take(w, c);
}

static bool in_pending_packet(const struct world *w, uint32_t a, unsigned *which)
{
    for (unsigned c = 0; c < MAX_CH; c++)
        if (w->sim.pending[c] && !w->sim.db_unguarded[c] && a >= w->sim.db_head[c] &&
            a <= w->sim.db_tail[c]) {
            *which = c;
            return true;
        }
    return false;
}

static bool fault_now(struct world *w)
{
    if (!w->fault_in || --w->fault_in)
        return false;
    w->faulted = w->ever_faulted = true;
    TRACE("    device fault (%s)\n", w->fault_lands ? "landed" : "lost");
    return true;
}

static int dev_read(void *ctx, uint64_t off, unsigned width, uint64_t *v)
{
    struct world *w = ctx;
    struct fsp *s = &w->sim;
    w->dev_reads++;
    if (s->tail_armed >= 0)
        FAIL("QUEUE_TAIL(%d) reached the FSP, then a read of %#llx before its doorbell",
             s->tail_armed, (unsigned long long)off);
    unsigned c = 0;
    int r = width == 4 && off % 4 == 0 ? reg_of(w, off, &c) : -1;
    uint64_t x = 0;
    bool fault = fault_now(w);
    if (fault && !w->fault_lands) {
        *v = 0;
        return -1;
    }
    if (r < 0) {
        if (touches_mailbox(w, off, width) && !w->unguarded)
            FAIL("security: a %u-byte read at %#llx reached the FSP's registers", width,
                 (unsigned long long)off);
        for (unsigned k = 0; k < width; k++)
            x |= (uint64_t)pattern(off + k) << (8 * k);
    } else {
        switch (r) {
        case EMEMC: x = s->ememc[c]; break;
        case EMEMD: x = le32(&s->emem[port_step(s, c, AINCR)]); break;
        case QHEAD: x = s->qhead[c]; break;
        case QTAIL: x = s->qtail[c]; break;
        case MHEAD: x = s->mhead[c]; break;
        default: x = s->mtail[c]; break;
        }
    }
    if (off == w->acc_off) {
        w->acc_read = true;
        w->acc_rd_val = x;
    }
    *v = fault ? 0 : x;
    return fault ? -1 : 0;
}

static int dev_write(void *ctx, uint64_t off, unsigned width, uint64_t v)
{
    struct world *w = ctx;
    struct fsp *s = &w->sim;
    w->dev_writes++;
    w->last_wr_off = off;
    w->last_wr_val = v;
    unsigned c = 0;
    int r = width == 4 && off % 4 == 0 ? reg_of(w, off, &c) : -1;
    if (r < 0 && touches_mailbox(w, off, width) && !w->unguarded)
        FAIL("security: a %u-byte write of %#llx at %#llx reached the FSP's registers", width,
             (unsigned long long)v, (unsigned long long)off);
    if (s->tail_armed >= 0 && !(r == QHEAD && c == (unsigned)s->tail_armed))
        FAIL("security: QUEUE_TAIL(%d) reached the FSP without its doorbell right after "
             "(next: a write of %#llx at %#llx)",
             s->tail_armed, (unsigned long long)v, (unsigned long long)off);
    bool fault = fault_now(w);
    if (r < 0 || (fault && !w->fault_lands)) {
        if (fault && r == QHEAD)
            s->tail_armed = -1; /* the guard tried: the tail stays without its doorbell */
        return fault ? -1 : 0;  /* plain memory outside the mailbox: nothing to model */
    }
    uint32_t x = (uint32_t)v;
    unsigned q;
    switch (r) {
    case EMEMC: s->ememc[c] = x; break;
    case EMEMD: {
        uint32_t a = port_step(s, c, AINCW);
        if (in_pending_packet(w, a, &q) && le32(&s->emem[a]) != x)
            FAIL("TOCTOU: EMEMD(%u) wrote 0x%08x at %#x, inside the packet queue %u's doorbell "
                 "announced and the FSP has not taken",
                 c, x, a, q);
        put32(&s->emem[a], x);
        s->by_guest[a / 4] = 1;
        break;
    }
    case QTAIL:
        if (w->unguarded) {
            s->qtail[c] = x;
            break;
        }
        if (s->pending[c])
            FAIL("TOCTOU: QUEUE_TAIL(%u) = %#x reached the FSP before it took the packet "
                 "[%#x, %#x)",
                 c, x, s->db_head[c], s->db_tail[c] + 4);
        s->qtail[c] = x;
        s->tail_armed = fault ? -1 : (int)c; /* after a failed tail, the guard gives up */
        break;
    case QHEAD:
        if (w->unguarded) {
            s->qhead[c] = x;
            fsp_doorbell(w, c);
            break;
        }
        if (s->tail_armed != (int)c)
            FAIL("security: a doorbell (QUEUE_HEAD(%u) = %#x) reached the FSP without the "
                 "guard's QUEUE_TAIL write before it",
                 c, x);
        s->tail_armed = -1;
        if (s->pending[c])
            FAIL("security: a second doorbell on queue %u reached the FSP before it took the "
                 "packet [%#x, %#x)",
                 c, s->db_head[c], s->db_tail[c] + 4);
        s->qhead[c] = x;
        fsp_doorbell(w, c);
        break;
    case MHEAD: s->mhead[c] = x; break;
    default: s->mtail[c] = x; break;
    }
    return fault ? -1 : 0;
}

/* ---- policy ---------------------------------------------------------------------------- */

static struct mf_table *compile(struct world *w)
{
    uint64_t lo = w->base[0], hi = w->base[0];
    for (int b = 1; b < 3; b++) {
        lo = w->base[b] < lo ? w->base[b] : lo;
        hi = w->base[b] > hi ? w->base[b] : hi;
    }
    w->spec = (struct mf_guard_spec){
        .kind = MF_GUARD_FSP,
        .fsp = {.emem = w->base[0], .queue = w->base[1], .msgq = w->base[2],
                .channels = w->channels, .max_packet = w->max_packet},
    };
    memcpy(w->spec.fsp.deny, w->deny, sizeof w->deny);
    memcpy(w->spec.fsp.prc_deny, w->prc, sizeof w->prc);
    w->rules[0] = (struct mf_rule){.name = "fsp", .start = lo, .size = hi + 8ull * MAX_CH - lo,
                                   .priority = 1, .action = MF_GUARD, .guard = &w->spec};
    struct mf_error err;
    struct mf_table *t = w->unguarded ? mf_table_compile(w->rules + 1, w->nplain, &w->cfg, &err)
                                      : mf_table_compile(w->rules, 1 + w->nplain, &w->cfg, &err);
    if (!t)
        FAIL("a valid policy did not compile: %s", err.message);
    return t;
}

/* A plain rule right before or after one of the guard's register blocks, never on it. */
static void decode_plain(struct input *in, struct world *w)
{
    w->nplain = 0;
    unsigned n = (unsigned)take(in, 1) % 3;
    for (unsigned i = 0; i < n; i++) {
        uint8_t where = (uint8_t)take(in, 1), ab = (uint8_t)take(in, 1);
        uint64_t len = 1 + where / 6 % 12;
        uint64_t edge = w->base[where % 3] + (where / 3 % 2 ? 8ull * MAX_CH : 0);
        uint64_t start = where / 3 % 2 ? edge : edge - len;
        bool clash = false;
        for (int b = 0; b < 3; b++)
            clash |= start < w->base[b] + 8ull * MAX_CH && w->base[b] < start + len;
        uint64_t vm = take(in, 8);
        if (clash)
            continue;
        size_t k = w->nplain++;
        for (unsigned j = 0; j < 8; j++) {
            w->pval[k][j] = (uint8_t)(vm >> (8 * j));
            w->pmask[k][j] = (uint8_t)(vm >> (8 * j) ^ 0x5A);
        }
        w->rules[1 + k] = (struct mf_rule){
            .name = k ? "plain1" : "plain0", .start = start, .size = len,
            .priority = (int32_t)(ab >> 4) % 3 - 1, .action = ab % 6,
            .value = w->pval[k], .value_len = 8 < len ? 8 : len,
            .mask = w->pmask[k], .mask_len = 8 < len ? 8 : len};
    }
}

static const uint8_t TYPES[16] = {0x12, 0x14, 0x13, 0x17, 0x15, 0x10, 0x11, 0x16,
                                  0x18, 0x19, 0x1A, 0x00, 0x7F, 0xFF, 0xC0, 0x12};

/* The denied types: 0x12 unless the run allows firmware updates, plus a few of TYPES. */
static void decode_deny(struct input *in, struct world *w)
{
    memset(w->deny, 0, sizeof w->deny);
    uint8_t b = (uint8_t)take(in, 1);
    /* in allow mode, a policy may still deny it (an admin revoking firmware updates) */
    if (!w->allow_fw || b & 0x40)
        w->deny[NVDM_FIRMWARE_UPDATE / 8] |= 1u << (NVDM_FIRMWARE_UPDATE % 8);
    for (unsigned i = 0; i < b % 4; i++) {
        uint8_t t = b & 0x80 ? (uint8_t)take(in, 1) : TYPES[take(in, 1) % 16];
        if (t != NVDM_FIRMWARE_UPDATE || b & 0x40)
            w->deny[t / 8] |= (uint8_t)(1u << (t % 8));
    }
}

/* The PRC sub-messages gpu-admin-tools sends (FspRpc.prc_*): ECC, reset coupling, NVLink
 * link mask, knob read, knob write; then others. */
static const uint8_t PRC_SUBS[8] = {0x01, 0x04, 0x0A, 0x0C, 0x0D, 0x00, 0x0B, 0xFF};

/* The denied PRC sub-messages: the GH100 profile's defaults, none, or a few. */
static void decode_prc(struct input *in, struct world *w)
{
    memset(w->prc, 0, sizeof w->prc);
    uint8_t b = (uint8_t)take(in, 1);
    if (b % 4 == 0)
        return;
    if (b % 4 == 1) {
        for (unsigned i = 0; i < 5; i++)
            if (PRC_SUBS[i] != 0x0C)
                w->prc[PRC_SUBS[i] / 8] |= (uint8_t)(1u << (PRC_SUBS[i] % 8));
        return;
    }
    for (unsigned i = 0; i < 1 + b / 4 % 4; i++) {
        uint8_t t = b & 0x80 ? (uint8_t)take(in, 1) : PRC_SUBS[take(in, 1) % 8];
        w->prc[t / 8] |= (uint8_t)(1u << (t % 8));
    }
}

/* A multiple of 4 in 20..64 KiB (a channel holds a packet and the FSP's 20-byte reply), with
 * channels * max_packet inside the EMEM. */
static uint32_t decode_max_packet(struct input *in, unsigned channels)
{
    uint8_t b = (uint8_t)take(in, 1);
    uint32_t m;
    switch (b % 4) {
    case 0: m = 1024; break;
    case 1: m = 20 + 4 * (uint32_t)(take(in, 1) % 252); break;
    case 2: m = 20 + 4 * (uint32_t)(take(in, 2) % 16380); break;
    default: m = 20 + 4 * (uint32_t)(b / 4 % 6); break;
    }
    uint32_t most = EMEM_BYTES / channels / 4 * 4;
    return m > most ? most : m;
}

/* ---- guest accesses -------------------------------------------------------------------- */

static void drain(struct world *w)
{
    struct mf_event ev[8];
    size_t n;
    while ((n = mf_drain_events(w->f, ev, 8)))
        for (size_t i = 0; i < n; i++) {
            TRACE("    event: %#llx %s %s\n", (unsigned long long)ev[i].offset, ev[i].rule,
                  ev[i].detail);
            if (ev[i].outcome > MF_PARTIAL || !memchr(ev[i].detail, 0, MF_DETAIL_MAX) ||
                !memchr(ev[i].rule, 0, MF_NAME_MAX) || ev[i].width > 8)
                FAIL("a malformed event (outcome %u)", ev[i].outcome);
        }
}

/* The guard's reason for the last event, for failure messages. */
static const char *last_detail(struct world *w)
{
    static struct mf_event ev[8];
    static char why[MF_DETAIL_MAX + MF_NAME_MAX + 8];
    size_t n, last = 0;
    why[0] = 0;
    while ((n = mf_drain_events(w->f, ev, 8)))
        last = n;
    if (last)
        snprintf(why, sizeof why, "%s: %s", ev[last - 1].rule, ev[last - 1].detail);
    return why;
}

/* One guest access through the filter; checks what the API promises about it. */
static struct mf_result guest(struct world *w, uint64_t off, unsigned width, bool write,
                              uint64_t value)
{
    if (width < 8)
        value &= (1ull << (8 * width)) - 1;
    w->dev_writes = w->dev_reads = 0;
    w->faulted = w->acc_read = false;
    w->acc_off = off;
    struct mf_result res;
    int rc = mf_access_scalar(w->f, off, width, write, value, &res);
    TRACE("  %s %#llx/%u %#llx -> status %d outcome %u\n", write ? "write" : "read ",
          (unsigned long long)off, width, (unsigned long long)(write ? value : res.value), rc,
          res.outcome);
    if (w->faulted && rc == MF_EDEVICE && res.status == MF_EDEVICE)
        return res; /* the device failed: only the FSP's own checks apply */
    if (w->unguarded && rc == MF_OK)
        return res; /* no guard: the plain rules decide, nothing of the guard's to check */
    if (rc != MF_OK || res.status != MF_OK)
        FAIL("a valid access (off %#llx, width %u, %s) returned %d", (unsigned long long)off,
             width, write ? "write" : "read", rc);
    if (res.outcome > MF_PARTIAL)
        FAIL("outcome %u out of range", res.outcome);
    if (w->faulted)
        return res; /* a fault the guard absorbed (a failed read it refused on) */
    if (w->sim.tail_armed >= 0)
        FAIL("security: an access ended with QUEUE_TAIL(%d) written and no doorbell",
             w->sim.tail_armed);
    unsigned c;
    int r = width == 4 && off % 4 == 0 ? reg_of(w, off, &c) : -1;
    if (r >= 0) {
        /* one whole guard register */
        if (res.outcome != MF_PASS && res.outcome != MF_BLOCKED && res.outcome != MF_EMULATED)
            FAIL("%s(%u): outcome %u from a guard", REG_NAME[r], c, res.outcome);
        if (write && res.outcome != MF_PASS && w->dev_writes)
            FAIL("%s(%u) write refused or held (outcome %u) but the device saw %u writes",
                 REG_NAME[r], c, res.outcome, w->dev_writes);
        if (write && res.outcome == MF_PASS &&
            (w->last_wr_off != off || w->last_wr_val != value || res.value != value ||
             w->dev_writes != 1 + (r == QHEAD)))
            FAIL("%s(%u) write of %#llx passed but the device saw something else", REG_NAME[r],
                 c, (unsigned long long)value);
        if (!write && w->dev_writes)
            FAIL("%s(%u) read made the guard write the device", REG_NAME[r], c);
        if (!write && res.outcome == MF_PASS && (!w->acc_read || w->acc_rd_val != res.value))
            FAIL("%s(%u) read passed but returned %#llx, not the device's word", REG_NAME[r], c,
                 (unsigned long long)res.value);
    } else if (touches_mailbox(w, off, width) && res.outcome == MF_PASS) {
        FAIL("a %u-byte access at %#llx over the guard's registers passed", width,
             (unsigned long long)off);
    }
    return res;
}

static uint32_t greg(struct world *w, int reg, unsigned ch, bool write, uint32_t value,
                     uint8_t *outcome)
{
    struct mf_result r = guest(w, reg_off(w, reg, ch), 4, write, value);
    if (outcome)
        *outcome = r.outcome;
    return (uint32_t)r.value;
}

/* ---- interesting values ---------------------------------------------------------------- */

static const uint32_t ADDRS[16] = {0,     4,     8,      12,     16,     20,     0x3FC, 0x400,
                                   0x1000, 0x100, 0x800, 0xFFF0, 0xFFF8, 0xFFFC, 0x2000, 0x7FC};

static uint32_t pick_addr(struct input *in, uint8_t k)
{
    return k % 4 == 3 ? (uint32_t)take(in, 2) & 0xFFFCu : ADDRS[k / 4 % 16];
}

static uint32_t mctp_hdr(uint8_t k) { return (k & 1 ? SOM : 0) | (k & 2 ? EOM : 0) | SEQ(k >> 2); }

/* A value for a write to register `reg`: byte 0 picks the kind (0: four random bytes follow;
 * 1: zero; else one of the register's interesting values), byte 1 is its parameter. */
static uint32_t pick_value(struct input *in, struct world *w, int reg, unsigned ch)
{
    uint8_t k = (uint8_t)take(in, 1);
    if (k % 8 == 0)
        return (uint32_t)take(in, 4);
    if (k % 8 == 1)
        return 0;
    uint8_t a = (uint8_t)take(in, 1);
    switch (reg) {
    case EMEMC: { /* an address, AINCW (k bit 3), AINCR (bit 4), rarely a bit of no meaning */
        uint32_t v = pick_addr(in, a) | (k & 8 ? AINCW : 0) | (k & 16 ? AINCR : 0);
        return (k & 0xE0) == 0xE0 ? v | 1u << (take(in, 1) % 32) : v;
    }
    case EMEMD:
        switch (k / 8 % 4) {
        case 0: return mctp_hdr(a); /* SOM a bit 0, EOM bit 1, SEQ bits 3:2 */
        case 1: return MSG_HDR(TYPES[a % 16]);
        case 2: return MSG_HDR(a) ^ (k & 0x20 ? 0x100u : 0); /* any type, or a bad vendor */
        default: return (uint32_t)a * 0x01010101u;
        }
    case QHEAD:
    case QTAIL: { /* near an address (or the queue's HEAD: k bit 3), a packet size away */
        static const int32_t d[8] = {0, 4, 8, 12, 16, -4, 1, 2};
        uint32_t base = k & 8 ? w->sim.qhead[ch] : pick_addr(in, a);
        uint32_t dd = (uint32_t)d[k / 16 % 8];
        switch (take(in, 1) % 4) {
        case 0: return base + dd;
        case 1: return base + w->max_packet - 4 + dd;
        case 2: return base + w->max_packet + dd;
        default: return base + 4 * (uint32_t)take(in, 1);
        }
    }
    default: /* MSGQ: the device's head or tail, a reply's tail, an address */
        switch (k / 8 % 4) {
        case 0: return w->sim.mhead[ch];
        case 1: return w->sim.mtail[ch];
        case 2: return w->sim.mhead[ch] + 16;
        default: return pick_addr(in, a);
        }
    }
}

/* A raw access to a mailbox register: any register, width and alignment. */
static void op_raw(struct input *in, struct world *w, bool write)
{
    uint8_t sel = (uint8_t)take(in, 1), shape = (uint8_t)take(in, 1);
    int reg = sel % 6;
    unsigned ch = sel / 6 % 8;
    if (!(sel & 0x80)) /* mostly a queue the guard serves; else any of the eight */
        ch %= w->channels;
    uint64_t off = reg_off(w, reg, ch);
    unsigned width = 4;
    switch (shape % 8) {
    case 4: width = 1; off += shape / 8 % 4; break;
    case 5: width = 2; off += shape / 8 % 4; break;
    case 6: width = 8; off -= shape & 8 ? 4 : 0; break;
    case 7: off += 1 + shape / 8 % 3; break;
    default: break;
    }
    uint64_t v = write ? pick_value(in, w, reg, ch) : 0;
    if (write && width == 8)
        v |= (uint64_t)pick_value(in, w, reg ^ 1, ch) << 32;
    guest(w, off, width, write, v);
}

/* ---- the driver ------------------------------------------------------------------------ */

/* The driver's send of one packet of `n` dwords through port p to queue q at EMEM `at`. */
static bool send_packet(struct world *w, unsigned p, unsigned q, uint32_t at, const uint32_t *dw,
                        unsigned n, uint8_t skip)
{
    uint8_t o;
    bool ok = true;
    if (!(skip & 1)) {
        greg(w, EMEMC, p, true, at | AINCW, &o);
        ok &= o == MF_PASS;
    }
    for (unsigned i = 0; i < n; i++) {
        greg(w, EMEMD, p, true, dw[i], &o);
        ok &= o == MF_PASS;
    }
    if (!(skip & 2)) {
        greg(w, QTAIL, q, true, at + 4 * n - 4 + (skip & 8 ? 4 : 0), &o);
        ok &= o == MF_EMULATED;
    }
    if (!(skip & 4)) {
        greg(w, QHEAD, q, true, at, &o);
        ok &= o == MF_PASS;
    }
    return ok;
}

static uint32_t packet_words(struct input *in, uint32_t *dw, unsigned n, uint32_t mctp, int type)
{
    uint32_t seed = (uint32_t)take(in, 1);
    for (unsigned i = 0; i < n; i++)
        dw[i] = (seed + i) * 0x9E3779B1u;
    dw[0] = mctp;
    if (type >= 0 && n > 1)
        dw[1] = MSG_HDR(type);
    /* a PRC message's sub-message (byte 8) and scope (byte 9: one-shot, knob, persistent) */
    if (type == NVDM_PRC && n > 2)
        dw[2] = PRC_SUBS[seed % 8] | (uint32_t)(1 + seed / 8 % 3) << 8 | (seed & 0xFF00u) << 8;
    return seed;
}

static unsigned pick_channel(struct input *in, const struct world *w)
{
    return (unsigned)take(in, 1) % w->channels;
}

static unsigned pick_dwords(struct input *in, const struct world *w)
{
    uint8_t b = (uint8_t)take(in, 1);
    unsigned max = w->max_packet / 4;
    unsigned n = (b & 0xC0) == 0xC0 ? max + (b & 1) : 2 + b % 8;
    return n > EMEM_BYTES / 4 / 2 ? EMEM_BYTES / 4 / 2 : n;
}

/* Where a packet goes: its channel's base (where the FSP reads), or just off it, or
 * anywhere. */
static uint32_t pick_at(struct input *in, const struct world *w, unsigned q)
{
    uint8_t k = (uint8_t)take(in, 1);
    uint32_t base = q * w->max_packet;
    switch (k % 4) {
    case 0: case 1: return base;
    case 2: return base + 4 * (1 + k / 4 % 8);
    default: return pick_addr(in, k);
    }
}

static uint32_t dws[EMEM_BYTES / 4];

/* The driver sends one packet; the guest may skip steps or use another port. */
static void op_send(struct input *in, struct world *w)
{
    uint8_t how = (uint8_t)take(in, 1);
    unsigned q = pick_channel(in, w);
    unsigned p = how & 0x10 ? (unsigned)take(in, 1) % MAX_CH : q; /* any port */
    if (how & 0x20)
        q = (unsigned)take(in, 1) % MAX_CH; /* any queue, served or closed */
    uint32_t at = pick_at(in, w, q);
    unsigned n = pick_dwords(in, w);
    if (at + 4 * n > EMEM_BYTES)
        at = EMEM_BYTES - 4 * n;
    uint8_t t = TYPES[take(in, 1) % 16];
    packet_words(in, dws, n, mctp_hdr(how), how & 1 ? t : -1);
    send_packet(w, p, q, at, dws, n, how & 0x80 ? (uint8_t)take(in, 1) : 0);
}

/* The driver sends a whole message in max_packet pieces, the FSP taking each in turn. */
static void op_message(struct input *in, struct world *w)
{
    unsigned q = pick_channel(in, w);
    uint8_t t = TYPES[take(in, 1) % 16];
    unsigned total = 2 + (unsigned)take(in, 1) * 4, room = w->max_packet / 4 - 1;
    uint32_t at = pick_at(in, w, q);
    if (room > 256)
        room = 256;
    unsigned npk = (total + room - 1) / room;
    if (npk > 8)
        npk = 8;
    for (unsigned i = 0; i < npk; i++) {
        unsigned body = i + 1 < npk ? room : total - room * (npk - 1);
        if (body > room || body == 0)
            body = room;
        uint32_t mctp = (i == 0 ? SOM : 0) | (i + 1 == npk ? EOM : 0) | SEQ(i);
        packet_words(in, dws, body + 1, mctp, -1);
        if (i == 0 && body >= 1)
            dws[1] = MSG_HDR(t);
        if (i == 0 && body >= 2 && t == NVDM_PRC)
            dws[2] = PRC_SUBS[dws[3] % 8] | 0x100u << (dws[3] / 8 % 2);
        send_packet(w, q, q, at, dws, body + 1, 0);
        fsp_take(w, q);
    }
}

/* The driver reads the reply waiting on queue q and marks it read. */
static void op_receive(struct input *in, struct world *w)
{
    unsigned q = pick_channel(in, w);
    uint8_t how = (uint8_t)take(in, 1);
    uint32_t head = greg(w, MHEAD, q, false, 0, NULL);
    uint32_t tail = greg(w, MTAIL, q, false, 0, NULL);
    unsigned n = (tail - head) / 4 + 1;
    greg(w, EMEMC, q, true, (head & 0xFFFC) | AINCR, NULL);
    for (unsigned i = 0; i < n && i < 8; i++)
        greg(w, EMEMD, q, false, 0, NULL);
    if (!(how & 1))
        greg(w, MTAIL, q, true, head, NULL);
    if (!(how & 2))
        greg(w, MHEAD, q, true, head, NULL);
}

/* The FSP takes what is queued (one queue or all). */
static void op_take(struct input *in, struct world *w)
{
    unsigned c = (unsigned)take(in, 1) % (MAX_CH + 1);
    for (unsigned i = 0; i < MAX_CH; i++)
        if (c == MAX_CH || c == i)
            fsp_take(w, i);
}

static void op_reply(struct input *in, struct world *w)
{
    unsigned c = (unsigned)take(in, 1) % (MAX_CH + 1);
    for (unsigned i = 0; i < MAX_CH; i++)
        if (c == MAX_CH || c == i)
            fsp_reply(w, i);
}

/* A new guard state cannot know that the FSP still owes a reply (nothing in the registers
 * says so; docs/fsp-guard.md): a swap that makes one is modelled as taking longer than the
 * FSP's answers, as a restart is. */
static void answer_all(struct world *w)
{
    for (unsigned c = 0; c < MAX_CH; c++) {
        fsp_take(w, c);
        fsp_reply(w, c);
    }
}

/* No guard from here: the packets waiting for the FSP lose the guard's promises (the guest
 * may rewrite them, or their denied type, unseen: the admin's choice). */
static void drop_guard(struct world *w)
{
    for (unsigned c = 0; c < MAX_CH; c++) {
        /* another client's send in progress may be disturbed from here: it starts over */
        w->sim.other_started[c] = false;
        if (w->sim.pending[c]) {
            w->sim.db_unguarded[c] = true;
            memset(w->sim.db_deny[c], 0, 32);
            memset(w->sim.db_prc[c], 0, 32);
        }
    }
    w->sim.tail_armed = -1;
}

/* A policy swap on the same registers: new denied types and PRC sub-messages, fill, plain
 * rules (max_packet is the FSP's channel size: it stays); with how bit 6, no guard at all, or
 * the guard again. With how bit 5 the table the update hands back is kept, to be published
 * again (op_republish). */
static void op_swap(struct input *in, struct world *w)
{
    uint8_t how = (uint8_t)take(in, 1);
    uint8_t was_deny[32], was_prc[32];
    bool was_unguarded = w->unguarded;
    memcpy(was_deny, w->deny, 32);
    memcpy(was_prc, w->prc, 32);
    if (how & 64) {
        w->unguarded = !w->unguarded;
        if (w->unguarded)
            drop_guard(w);
        else
            answer_all(w); /* the guard comes back with a fresh state */
    }
    if (how & 1)
        decode_deny(in, w);
    if (how & 2)
        decode_prc(in, w);
    if (how & 4)
        w->cfg.fill = (uint8_t)take(in, 1);
    if (how & 8)
        decode_plain(in, w);
    if (how & 16)
        w->cfg.partial ^= 1;
    struct mf_table *old = NULL;
    struct mf_table *t = compile(w);
    if (mf_filter_update(w->f, t, &old, NULL) != MF_OK || !old)
        FAIL("policy update refused");
    if (how & 32) {
        mf_table_free(w->retired);
        w->retired = old;
        memcpy(w->retired_deny, was_deny, 32);
        memcpy(w->retired_prc, was_prc, 32);
        w->retired_unguarded = was_unguarded;
    } else {
        mf_table_free(old);
    }
}

/* The table an earlier update handed back is published again (mf_filter_update): its guard
 * state missed what happened since, so it must start afresh (docs/fsp-guard.md). */
static void op_republish(struct world *w)
{
    if (!w->retired)
        return;
    if (!w->retired_unguarded)
        answer_all(w); /* its guard may start afresh (if its state is not the current one) */
    struct mf_table *old = NULL;
    if (mf_filter_update(w->f, w->retired, &old, NULL) != MF_OK || !old)
        FAIL("publishing a retired table again was refused");
    TRACE("    a retired table published again\n");
    w->retired = old;
    uint8_t tmp[32];
    memcpy(tmp, w->deny, 32);
    memcpy(w->deny, w->retired_deny, 32);
    memcpy(w->retired_deny, tmp, 32);
    memcpy(tmp, w->prc, 32);
    memcpy(w->prc, w->retired_prc, 32);
    memcpy(w->retired_prc, tmp, 32);
    bool u = w->unguarded;
    w->unguarded = w->retired_unguarded;
    w->retired_unguarded = u;
    if (w->unguarded)
        drop_guard(w);
}

static void new_filter(struct world *w)
{
    struct mf_backend be = {.kind = MF_BACKEND_CALLBACK, .read = dev_read, .write = dev_write,
                            .ctx = w};
    struct mf_error err;
    w->f = mf_filter_new(&be, NULL, 0, 0, 8, compile(w), &err);
    if (!w->f)
        FAIL("mf_filter_new: %s", err.message);
}

/* A fresh guard state counts a reply as due for every queued packet whose MCTP header has EOM
 * (docs/fsp-guard.md, "What the guard assumes"): it cannot tell the last packet of a message
 * the FSP began before it existed from a continuation of no message, which the FSP never
 * answers. A guard never rings such a packet; but one queued under a guard and rewritten (or
 * its HEAD/TAIL moved) while no guard was in force may be one, and then its channel stays
 * closed: failing closed, as documented, not a liveness bug. So does a channel whose fresh
 * state finds a packet queued and MSGQ non-empty (the guard takes what MSGQ holds for an
 * earlier message's reply; if the FSP answers the packet before that is consumed, the guard
 * waits for a reply that already came: documented too). Under a guard neither can arise (a
 * doorbell passes only with MSGQ empty and no reply due), so only a time without a guard
 * leaves them. Such a restart is noted. */
static void note_unguarded_changes(struct world *w)
{
    struct fsp *s = &w->sim;
    for (unsigned c = 0; c < MAX_CH; c++) {
        if (s->pending[c] && s->mhead[c] != s->mtail[c]) {
            TRACE("    queue %u: a packet queued and MSGQ non-empty at the restart\n", c);
            w->unguarded_changed = true;
        }
        if (!s->pending[c] || !s->db_unguarded[c])
            continue; /* nothing queued, or still as the guard checked it */
        uint32_t len = s->db_tail[c] + 4 - s->db_head[c];
        if (s->qhead[c] != s->db_head[c] || s->qtail[c] != s->db_tail[c] ||
            memcmp(&s->emem[s->db_head[c]], s->snap[c], len)) {
            TRACE("    queue %u: its queued packet changed while no guard was in force\n", c);
            w->unguarded_changed = true;
        }
    }
}

/* Another client of the mailbox, on a channel the guard does not give the guest (GH100: the
 * PMU and SOE on channel 4, OGKM gh100 dev_fsp_addendum.h), straight to the FSP: the guard
 * sees none of it. In two steps, so that the guest can act in between: it consumes its last
 * reply, points its own port at its channel's base and writes the MCTP header; then it writes
 * the rest of a COT packet through that port and rings its own queue. The FSP must take the
 * packet it meant, byte for byte (snap), and never a denied type: the guest must not reach it
 * (move or step its port, write its EMEM, ring or consume for it). */
static void op_other_client(struct input *in, struct world *w)
{
    struct fsp *s = &w->sim;
    uint8_t b = (uint8_t)take(in, 1);
    if (w->channels >= MAX_CH || w->unguarded)
        return; /* no channel is someone else's; or no guard: anything goes */
    unsigned c = w->channels + b % (MAX_CH - w->channels), n = 2 + b / 16 % 4;
    uint32_t base = c * s->chan_bytes;
    if (s->pending[c] || s->owe[c] || (uint64_t)base + 4 * n > s->emem_size ||
        4 * n > s->chan_bytes)
        return; /* it waits for its queue and its reply, as drivers do; or its channel is not
                 * in this EMEM */
    if (!s->other_started[c]) {
        s->mtail[c] = s->mhead[c];
        s->ememc[c] = base | AINCW;
        uint32_t a = port_step(s, c, AINCW);
        put32(&s->emem[a], SOM | EOM);
        s->by_guest[a / 4] = 0;
        s->other_started[c] = true;
        TRACE("    other client: queue %u's MCTP header at %#x\n", c, a);
        return;
    }
    s->other_started[c] = false;
    put32(&s->snap[c][0], SOM | EOM);
    for (unsigned i = 1; i < n; i++) {
        uint32_t v = i == 1 ? MSG_HDR(NVDM_COT) : 0x50C0u + i, a = port_step(s, c, AINCW);
        put32(&s->emem[a], v);
        put32(&s->snap[c][4 * i], v); /* what it means the FSP to take */
        s->by_guest[a / 4] = 0;
    }
    s->qtail[c] = base + 4 * n - 4;
    s->qhead[c] = base;
    /* the guest's policy is not the other client's: what it sends is the GPU's own */
    memset(s->db_deny[c], 0, sizeof s->db_deny[c]);
    memset(s->db_prc[c], 0, sizeof s->db_prc[c]);
    s->db_unguarded[c] = false;
    s->db_head[c] = base;
    s->db_tail[c] = base + 4 * n - 4;
    s->pending[c] = true;
    TRACE("    other client: doorbell on queue %u for [%#x, %#x)\n", c, base, base + 4 * n);
    if (w->auto_take)
        fsp_take(w, c);
}

/* The VMM restarts: a new filter, a fresh guard state, the same device. A fresh state cannot
 * know that the FSP still owes a reply (nothing in the registers says so), so the restart is
 * modelled as taking longer than the FSP's answers: owed replies are written first. */
static void op_restart(struct world *w)
{
    /* Nor can it know of a doorbell the FSP has not acted on yet whose queue a time without a
     * guard has made look idle since (HEAD = TAIL): the restart is slower than the FSP there
     * too (docs/fsp-guard.md, "What the guard assumes"). */
    for (unsigned c = 0; c < MAX_CH; c++)
        if (w->sim.pending[c] && w->sim.db_unguarded[c] && w->sim.qhead[c] == w->sim.qtail[c])
            fsp_take(w, c);
    for (unsigned c = 0; c < MAX_CH; c++)
        fsp_reply(w, c);
    note_unguarded_changes(w);
    drain(w);
    mf_filter_free(w->f);
    mf_table_free(w->retired); /* it belonged to the old filter's life */
    w->retired = NULL;
    w->unguarded = false;
    new_filter(w);
}

/* Liveness: once the FSP has caught up and every reply is consumed as the driver does, a
 * well-formed COT packet sent with the driver's sequence must pass and be taken. */
static void op_liveness(struct input *in, struct world *w)
{
    struct fsp *s = &w->sim;
    unsigned q = pick_channel(in, w);
    uint8_t b = (uint8_t)take(in, 1);
    uint32_t at = q * w->max_packet;
    unsigned n = 2 + b / 8 % 3;
#ifdef GUARD_FUZZ_NO_LIVENESS /* define it to fuzz past a known liveness bug */
    return;
#endif
    if (denied(w->deny, NVDM_COT) || 4 * n > w->max_packet || w->ever_faulted || w->fault_in ||
        w->unguarded || w->unguarded_rang || w->unguarded_changed)
        return;
    drain(w);
    for (unsigned c = 0; c < MAX_CH; c++) {
        fsp_take(w, c);
        fsp_reply(w, c);
    }
    /* a message the FSP never answered keeps its channel: the guard waits for the reply */
    if (s->unanswered)
        return;
    for (unsigned c = 0; c < w->channels; c++) {
        for (int round = 0; round < 3; round++) {
            bool idle = s->mhead[c] == s->mtail[c];
            uint32_t h = greg(w, MHEAD, c, false, 0, NULL);
            uint32_t t = greg(w, MTAIL, c, false, 0, NULL);
            if (round && idle && h == t)
                break;
            greg(w, MTAIL, c, true, h, NULL);
            greg(w, MHEAD, c, true, h, NULL);
            if (idle && s->mhead[c] != s->mtail[c])
                FAIL("liveness: MSGQ(%u) was idle on the device; the driver read a reply at %#x "
                     "and wrote TAIL = HEAD = %#x, and now the device's MSGQ is %#x/%#x "
                     "(the driver would wait for it forever)",
                     c, h, h, s->mhead[c], s->mtail[c]);
        }
        if (s->mhead[c] != s->mtail[c] || s->qhead[c] != s->qtail[c] || s->pending[c])
            return; /* left in a state the check does not cover */
    }
    /* the queues past `channels` are other clients' (GH100: the PMU/SOE's channel 4): the
     * guard neither tracks them nor lets the guest near them, so whatever they hold must not
     * keep the guest's channels closed */
    drain(w);
    uint32_t words[4] = {SOM | EOM, MSG_HDR(NVDM_COT), 0x1234, 0x5678};
    unsigned before = s->packets;
    uint8_t o[4];
    greg(w, EMEMC, q, true, at | AINCW, &o[0]);
    if (o[0] != MF_PASS)
        FAIL("liveness: EMEMC(%u) = %#x refused (%s)", q, at | AINCW, last_detail(w));
    for (unsigned i = 0; i < n; i++) {
        greg(w, EMEMD, q, true, words[i], &o[1]);
        if (o[1] != MF_PASS)
            FAIL("liveness: EMEMD(%u) write %u refused (%s)", q, i, last_detail(w));
    }
    greg(w, QTAIL, q, true, at + 4 * n - 4, &o[2]);
    if (o[2] != MF_EMULATED)
        FAIL("liveness: QUEUE_TAIL(%u) not held (outcome %u: %s)", q, o[2], last_detail(w));
    greg(w, QHEAD, q, true, at, &o[3]);
    if (o[3] != MF_PASS)
        FAIL("liveness: a COT packet at %#x on queue %u was refused (%s)", at, q,
             last_detail(w));
    fsp_take(w, q);
    if (s->packets != before + 1)
        FAIL("liveness: the FSP did not take the COT packet");
}

/* ---- the run --------------------------------------------------------------------------- */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct world wd; /* static: the callback context */
    struct world *w = &wd;
    struct input in = {data, size};
    memset(w, 0, offsetof(struct world, sim));
    memset(&w->sim, 0, offsetof(struct fsp, snap));
    memset(&w->sim.partial, 0, sizeof w->sim - offsetof(struct fsp, partial));
    w->sim.tail_armed = -1;

    uint8_t mode = (uint8_t)take(&in, 1);
    w->channels = mode & 8 ? 1 + (mode & 7) : 8;
    w->sim.emem_size = EMEM_BYTES;
    w->allow_fw = mode & 0x10;
    w->auto_take = mode & 0x20;
    w->late_reply = mode & 0x40;
    w->respond = !(mode & 0x80);
    uint8_t lay = (uint8_t)take(&in, 1);
    switch (lay % 4) {
    case 2: /* the three blocks back to back */
        w->base[0] = 0x1000;
        w->base[1] = 0x1000 + 8ull * MAX_CH;
        w->base[2] = 0x1000 + 16ull * MAX_CH;
        break;
    case 3: /* reversed */
        w->base[0] = 0x3F00;
        w->base[1] = 0x3E00;
        w->base[2] = 0x3D00;
        break;
    default: /* GH100's offsets, in a 64 KiB BAR */
        w->base[0] = 0x2AC0;
        w->base[1] = 0x2C00;
        w->base[2] = 0x2C80;
        break;
    }
    w->cfg = (struct mf_config){.bar_size = BAR_SIZE, .page_size = 4096, .fill = 0xFF,
                                .partial = lay >> 2 & 1, .unaligned = lay >> 3 & 1};
    w->max_packet = decode_max_packet(&in, w->channels);
    w->sim.chan_bytes = w->max_packet;
    /* the EMEM: 64 KiB, or (lay bit 4) the smallest power of two holding the channel areas,
     * which is all the guard lets the guest write (a port wraps past it) */
    if (lay & 0x10) {
        uint32_t need = w->channels * w->max_packet;
        while (w->sim.emem_size / 2 >= need && w->sim.emem_size > 256)
            w->sim.emem_size /= 2;
    }
    decode_deny(&in, w);
    decode_prc(&in, w);
    decode_plain(&in, w);
    new_filter(w);

    while (in.n) {
        uint8_t op = (uint8_t)take(&in, 1);
        w->ops++;
        TRACE("op %u: %#04x\n", w->ops, op);
        switch (op % 16) {
        case 0: case 1: case 2: case 3: case 4: op_raw(&in, w, op & 0x80); break;
        case 5: case 6: op_send(&in, w); break;
        case 7: op_message(&in, w); break;
        case 8: case 9: op_take(&in, w); break;
        case 10: op_reply(&in, w); break;
        case 11: op_receive(&in, w); break;
        case 12: op_swap(&in, w); break;
        case 13: op_liveness(&in, w); break;
        case 14:
            if (op >> 4 == 0) {
                op_restart(w);
            } else if (op >> 4 == 2) {
                op_republish(w);
            } else if (op >> 4 == 3) {
                op_other_client(&in, w);
            } else if (op >> 4 != 1) {
                op_raw(&in, w, true);
            } else {
                uint8_t f = (uint8_t)take(&in, 1);
                w->fault_in = 1 + f % 8;
                w->fault_lands = f & 0x80;
            }
            break;
        default: { /* a burst of EMEMD writes through one port */
            unsigned p = pick_channel(&in, w), n = 1 + (unsigned)take(&in, 1) % 8;
            for (unsigned i = 0; i < n; i++)
                greg(w, EMEMD, p, true, pick_value(&in, w, EMEMD, p), NULL);
            break;
        }
        }
        drain(w);
    }
    mf_filter_free(w->f);
    w->f = NULL;
    mf_table_free(w->retired);
    w->retired = NULL;
    return 0;
}

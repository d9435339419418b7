/*
 * guard_fsp.c - the FSP mailbox guard: let boot traffic through, refuse firmware updates.
 *
 * On GH100 a firmware update is a message (NVDM type FIRMWARE_UPDATE, 0x12) that the driver
 * queues in the FSP's EMEM and announces with a doorbell; the same mailbox carries the COT
 * message of every boot, so no byte range can be blocked. Facts, from NVIDIA's open driver
 * (open-gpu-kernel-modules: arch/hopper/kern_fsp_gh100.c, fsp_mctp_format.h,
 * fsp_nvdm_format.h, fsp_emem_channels.h, nvdm_payload_cmd_response.h) and NVIDIA's
 * gpu-admin-tools (FspRpc, gpu/fsp_emem_rpc.py); docs/fsp-guard.md has the sources:
 *
 *   EMEMC(i): OFFS 7:2 and BLK 15:8 (64-dword blocks), so bits 15:2 are a dword address;
 *             AINCW bit 24 and AINCR bit 25 step it by one dword after each EMEMD write/read.
 *   Send:     wait QUEUE_HEAD == QUEUE_TAIL; EMEMC = 0 | AINCW; the packet through EMEMD;
 *             QUEUE_TAIL = padded size - 4; QUEUE_HEAD = 0, which interrupts the FSP (the
 *             doorbell). The FSP sets HEAD = TAIL once it has taken the packet.
 *   Packet:   dword 0 MCTP header (SOM 31, EOM 30, SEQ 29:28); with SOM, dword 1 the message
 *             header (type 6:0 = 0x7E, vendor 23:8 = 0x10DE, NVDM type 31:24).
 *   Reply:    MSGQ_HEAD/TAIL; the driver reads EMEM from the channel start, then sets
 *             MSGQ_TAIL = MSGQ_HEAD; body {taskId, commandNvdmType, errorCode} at byte 8.
 *
 * What the guard does (docs/fsp-guard.md has the whole table):
 *   - shadows every EMEMD write at the address its port's EMEMC says, and follows the
 *     auto-increment; a port whose address it does not know cannot write;
 *   - holds QUEUE_TAIL writes, so the FSP never sees a queued packet the guard has not
 *     checked, and on the doorbell checks the packet from the shadow: every dword written by
 *     the guest, bounds, headers, and the NVDM type of the message's first packet;
 *   - a passed doorbell writes the held tail, then the head, and makes the packet untouchable
 *     (EMEMD into it, EMEMC of its port, QUEUE_TAIL and QUEUE_HEAD of its queue) until the FSP
 *     has taken it, which the guard checks by reading QUEUE_HEAD back itself;
 *   - follows the FSP's replies (due at a message's last packet, published in MSGQ, consumed
 *     by the guest's MSGQ writes, which may only empty MSGQ) and keeps packets out of a
 *     channel where a reply may still land, since the FSP's own writes there would change a
 *     packet after its check;
 *   - a refused message gets the answer a real FSP gives to a type it does not support
 *     (errorCode 0xA0), emulated through MSGQ and EMEMD reads, so the driver fails fast.
 */
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "guard_fsp.h"

/* ---- registers, parameters ----------------------------------------------------------- */

/* Each block holds the registers of all eight ports, queues or message queues. */
static uint64_t span(void) { return 8ull * MF_FSP_PORTS; }

static int fsp_blocks(const struct mf_guard_spec *spec, struct mf_block *out, size_t *n,
                      char *why, size_t why_len)
{
    const struct mf_fsp_params *p = &spec->fsp;
    if (p->channels < 1 || p->channels > MF_FSP_MAX_CHANNELS) {
        snprintf(why, why_len, "fsp guard: channels %u is not in 1..%d", p->channels,
                 MF_FSP_MAX_CHANNELS);
        return -1;
    }
    /* the channel holds a packet, and the FSP's reply (20 bytes at least) */
    if (p->max_packet < REPLY_BYTES || p->max_packet > MF_FSP_EMEM_BYTES || p->max_packet % 4) {
        snprintf(why, why_len, "fsp guard: max_packet %u is not a multiple of 4 in 20..%d",
                 p->max_packet, MF_FSP_EMEM_BYTES);
        return -1;
    }
    /* the channel areas are all the EMEM the guard lets the guest write: they must be EMEM */
    if ((uint64_t)p->channels * p->max_packet > MF_FSP_EMEM_BYTES) {
        snprintf(why, why_len, "fsp guard: %u channels of %u bytes exceed the %d-byte EMEM",
                 p->channels, p->max_packet, MF_FSP_EMEM_BYTES);
        return -1;
    }
    const uint64_t base[3] = {p->emem, p->queue, p->msgq};
    for (int i = 0; i < 3; i++) {
        if (base[i] % 4 || base[i] > UINT64_MAX - span()) {
            snprintf(why, why_len, "fsp guard: register block at %#llx is misaligned or wraps",
                     (unsigned long long)base[i]);
            return -1;
        }
        for (int j = 0; j < i; j++)
            if (base[i] < base[j] + span() && base[j] < base[i] + span()) {
                snprintf(why, why_len, "fsp guard: register blocks at %#llx and %#llx overlap",
                         (unsigned long long)base[j], (unsigned long long)base[i]);
                return -1;
            }
        out[i] = (struct mf_block){base[i], base[i] + span()};
    }
    *n = 3;
    return 0;
}

static bool fsp_same_registers(const struct mf_guard_spec *a, const struct mf_guard_spec *b)
{
    return a->fsp.emem == b->fsp.emem && a->fsp.queue == b->fsp.queue &&
           a->fsp.msgq == b->fsp.msgq;
}

static void *fsp_state_new(const struct mf_guard_spec *spec)
{
    (void)spec;
    /* calloc: every port unknown, every queue FL_UNKNOWN, no dword valid, no message */
    struct fsp *s = calloc(1, sizeof(struct fsp));
    if (s)
        s->unsettled = 0xFF;
    return s;
}


static void fsp_state_free(void *s) { free(s); }

/* Which register an aligned offset inside the guard's blocks is, and its index. */
static enum reg decode(const struct mf_fsp_params *p, uint64_t off, unsigned *idx)
{
    uint64_t base = off - p->emem < span()    ? p->emem
                    : off - p->queue < span() ? p->queue
                                              : p->msgq;
    *idx = (unsigned)((off - base) / 8);
    bool second = (off - base) % 8 == 4;
    if (base == p->emem)
        return second ? EMEMD : EMEMC;
    if (base == p->queue)
        return second ? QTAIL : QHEAD;
    return second ? MTAIL : MHEAD;
}

/* ---- device, shadow and port helpers ------------------------------------------------- */

bool mf_fsp_dev_rd(struct mf_guard_call *c, uint64_t off, uint32_t *v)
{
    uint64_t x = 0;
    if (mf_dev_read(c->dev, off, 4, &x)) {
        c->device_error = true;
        return false;
    }
    *v = (uint32_t)x;
    return true;
}

bool mf_fsp_dev_wr(struct mf_guard_call *c, uint64_t off, uint32_t v)
{
    if (mf_dev_write(c->dev, off, 4, v)) {
        c->device_error = true;
        return false;
    }
    return true;
}

/* The shadow's valid bits: one per EMEM dword, set when the guest's write of it passed. */
bool mf_fsp_dword_valid(const struct fsp *s, uint32_t addr)
{
    uint32_t d = addr / 4;
    return s->valid[d / 64] >> (d % 64) & 1;
}

void mf_fsp_set_valid(struct fsp *s, uint32_t addr, bool valid)
{
    uint32_t d = addr / 4;
    if (valid)
        s->valid[d / 64] |= 1ull << (d % 64);
    else
        s->valid[d / 64] &= ~(1ull << (d % 64));
}

/* Forget what the guest wrote into EMEM [start, start + len): the FSP may write there. */
void mf_fsp_invalidate(struct fsp *s, uint64_t start, uint64_t len)
{
    for (uint64_t a = start & ~3ull; a < start + len && a < MF_FSP_EMEM_BYTES; a += 4)
        mf_fsp_set_valid(s, (uint32_t)a, false);
}

/* A port as an EMEMC word says it (the address and the auto-increments), and back. */
struct port mf_fsp_port_of(uint32_t ememc)
{
    return (struct port){.addr = ememc & EMEMC_ADDR,
                         .known = true,
                         .aincw = ememc & EMEMC_AINCW,
                         .aincr = ememc & EMEMC_AINCR,
                         .diverged = false};
}

uint32_t mf_fsp_ememc_of(const struct port *pt)
{
    return pt->addr | (pt->aincw ? EMEMC_AINCW : 0) | (pt->aincr ? EMEMC_AINCR : 0);
}

uint32_t mf_fsp_shadow_dword(const struct fsp *s, uint32_t addr)
{
    const uint8_t *b = &s->emem[addr];
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

void mf_fsp_step(struct port *pt)
{
    /* the carry past bit 15 is not documented: from there on the address is unknown */
    if (pt->addr >= EMEM_LAST_DWORD)
        pt->known = false;
    else
        pt->addr += 4;
}

void mf_fsp_pass_read(struct mf_guard_call *c)
{
    uint32_t v;
    if (mf_fsp_dev_rd(c, c->offset, &v)) {
        c->outcome = MF_PASS;
        c->result = v;
    }
}

void mf_fsp_pass_write(struct mf_guard_call *c)
{
    if (mf_fsp_dev_wr(c, c->offset, c->value)) {
        c->outcome = MF_PASS;
        c->result = c->value;
    }
}

void mf_fsp_emulate(struct mf_guard_call *c, uint32_t v)
{
    c->outcome = MF_EMULATED;
    c->result = v;
}


/* Is queue `q` free of a packet the FSP has not taken? Unknown queues (a fresh state) are
 * read from the device: HEAD != TAIL there is a packet someone queued before us. */
bool mf_fsp_queue_idle(struct mf_guard_call *c, struct fsp *s, unsigned q)
{
    struct chan *ch = &s->chan[q];
    const struct mf_fsp_params *p = &c->spec->fsp;
    if (ch->flight == FL_IDLE)
        return true;
    uint32_t head, tail, mh = 0, mt = 0;
    /* A first look reads MSGQ before the queue: a reply seen there while the packet is still
     * queued afterwards is an earlier message's (the FSP answers a packet only after taking
     * it); read after, it could be this packet's own, taken and answered in between. Unread,
     * it is taken for an earlier one (failing closed: its consumption frees nothing). */
    bool mq_read = ch->flight == FL_BUSY || (mf_fsp_dev_rd(c, p->msgq + 8ull * q, &mh) &&
                                              mf_fsp_dev_rd(c, p->msgq + 8ull * q + 4, &mt));
    if (!mf_fsp_dev_rd(c, p->queue + 8ull * q, &head))
        return false;
    if (ch->flight == FL_BUSY) {
        if (head != ch->tail)
            return false;
    } else {
        if (!mf_fsp_dev_rd(c, p->queue + 8ull * q + 4, &tail))
            return false;
        if (head != tail) {
            /* someone queued a packet before this state existed. It is placed only where a
             * guard would have rung it: at its channel's base, inside the channel. Anywhere
             * else the registers may have moved since its doorbell (the FSP goes by what it
             * was told), so neither the bytes the FSP reads nor where it replies are known:
             * all of EMEM is off limits until the FSP has taken it, and then every doorbell
             * until its reply has come and gone (found by the guard fuzzer). */
            const uint32_t base = mf_fsp_channel_base(p, q);
            mf_fsp_set_flight(s, q, FL_BUSY);
            ch->whole = !(head == base && tail % 4 == 0 && tail >= head + 4 &&
                          tail - head <= p->max_packet - 4);
            ch->head = head;
            ch->tail = tail;
            /* it may end a message: count its reply as due, into its channel */
            ch->owed = OWED_DUE;
            ch->reply_unplaced = ch->whole;
            ch->mq_seen_mask = 0;
            ch->mq_stale = !mq_read || mh != mt;
            ch->last_head = base;
            return false;
        }
    }
    mf_fsp_set_flight(s, q, FL_IDLE);
    return true;
}

/* Would writing the EMEM dword at `addr` change a packet the FSP may be reading? */
bool mf_fsp_in_flight_at(struct mf_guard_call *c, struct fsp *s, uint32_t addr)
{
    for (unsigned q = 0; s->unsettled >> q && q < c->spec->fsp.channels; q++) {
        struct chan *ch = &s->chan[q];
        if (!(s->unsettled >> q & 1) || mf_fsp_queue_idle(c, s, q))
            continue;
        if (ch->whole || (addr >= ch->head && addr <= ch->tail))
            return true;
    }
    return false;
}

void mf_fsp_set_flight(struct fsp *s, unsigned q, uint8_t flight)
{
    s->chan[q].flight = flight;
    if (flight == FL_IDLE)
        s->unsettled &= (uint8_t)~(1u << q);
    else
        s->unsettled |= (uint8_t)(1u << q);
}

static void fsp_access(struct mf_guard_call *c)
{
    struct fsp *s = c->state;
    unsigned i;
    enum reg r = decode(&c->spec->fsp, c->offset, &i);
    /* Ports and queues past `channels` are someone else's: on GH100 the PMU and SOE talk to
     * the FSP through channel 4 (OGKM gh100 dev_fsp_addendum.h, FSP_EMEM_CHANNEL_PMU_SOE).
     * Every access to them is refused, reads too: an EMEMD read steps the port, and the
     * registers would tell the guest of the other client's traffic. */
    if (i >= c->spec->fsp.channels) {
        static const char *const name[] = {"EMEMC", "EMEMD", "QUEUE_HEAD", "QUEUE_TAIL",
                                           "MSGQ_HEAD", "MSGQ_TAIL"};
        DETAIL(c, "%s(%u): not one of the guest's %u channels", name[r], i,
               c->spec->fsp.channels);
        return;
    }
    switch (r) {
    case EMEMC:
        mf_fsp_ememc(c, s, i);
        break;
    case EMEMD:
        mf_fsp_ememd(c, s, i);
        break;
    case QHEAD:
        mf_fsp_queue_reg(c, s, i, false);
        break;
    case QTAIL:
        mf_fsp_queue_reg(c, s, i, true);
        break;
    case MHEAD:
        mf_fsp_msgq_reg(c, s, i, false);
        break;
    case MTAIL:
        mf_fsp_msgq_reg(c, s, i, true);
        break;
    }
}

/* A new state looks at every queue before the guest can: a packet queued before the guard
 * existed is in flight, and its reply due, even if the FSP takes it before the guest asks. Due
 * only if the packet ends a message, which its MCTP header says: read it through the queue's
 * port, putting the port's EMEMC back as it was. */
static void fsp_arm(struct mf_guard_call *c)
{
    struct fsp *s = c->state;
    const struct mf_fsp_params *p = &c->spec->fsp;
    for (unsigned q = 0; q < p->channels; q++) {
        struct chan *ch = &s->chan[q];
        if (mf_fsp_queue_idle(c, s, q) || ch->whole)
            continue;
        uint64_t ememc = p->emem + 8ull * q;
        uint32_t saved, mctp;
        if (!mf_fsp_dev_rd(c, ememc, &saved))
            continue;
        bool read = mf_fsp_dev_wr(c, ememc, ch->head) && mf_fsp_dev_rd(c, ememc + 4, &mctp);
        if (!mf_fsp_dev_wr(c, ememc, saved))
            continue; /* the port's address is unknown to us, as in any fresh state */
        s->port[q] = mf_fsp_port_of(saved);
        if (read && !(mctp & MCTP_EOM))
            ch->owed = OWED_NONE; /* the message goes on: its continuations are refused */
    }
}

const struct mf_guard_class mf_guard_fsp = {
    .kind = MF_GUARD_FSP,
    .name = "fsp",
    /* 32-bit registers: a narrower, wider or misaligned access has no meaning in the
     * protocol (dev_fsp_pri.h: every NV_PFSP mailbox register is 32 bits) */
    .valid = {.min_width = 4, .max_width = 4, .unaligned = false},
    .blocks = fsp_blocks,
    .same_registers = fsp_same_registers,
    .state_new = fsp_state_new,
    .state_free = fsp_state_free,
    .access = fsp_access,
    .arm = fsp_arm,
};

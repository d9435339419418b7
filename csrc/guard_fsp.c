/*
 * guard_fsp.c - the FSP mailbox guard: let boot traffic through, refuse firmware updates.
 *
 * On GH100 a firmware update is a message (NVDM type FIRMWARE_UPDATE, 0x12) that the driver
 * queues in the FSP's EMEM and announces with a doorbell; the same mailbox carries the COT
 * message of every boot, so no byte range can be blocked. Facts, from NVIDIA's open driver
 * (open-gpu-kernel-modules: arch/hopper/kern_fsp_gh100.c, fsp_mctp_format.h,
 * fsp_nvdm_format.h, fsp_emem_channels.h, nvdm_payload_cmd_response.h; DESIGN §6):
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
 *   - a refused message gets the answer a real FSP gives to a type it does not support
 *     (errorCode 0xA0), emulated through MSGQ and EMEMD reads, so the driver fails fast.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "guard.h"

#define EMEMC_ADDR 0x0000FFFCu /* BLK 15:8, OFFS 7:2 */
#define EMEMC_AINCW (1u << 24)
#define EMEMC_AINCR (1u << 25)
#define EMEMC_KNOWN (EMEMC_ADDR | EMEMC_AINCW | EMEMC_AINCR)
#define EMEM_LAST_DWORD (MF_FSP_EMEM_BYTES - 4)

#define MCTP_SOM (1u << 31)
#define MCTP_EOM (1u << 30)
#define MCTP_SEQ(h) (((h) >> 28) & 3u)
#define MSG_TYPE_VENDOR_PCI 0x7Eu
#define MSG_VENDOR_NV 0x10DEu
#define NVDM_FSP_RESPONSE 0x15u
#define FSP_ERR_NOT_SUPPORTED 0xA0u
#define REPLY_BYTES 20u /* MCTP header, message header, taskId, commandNvdmType, errorCode */

enum reg { EMEMC, EMEMD, QHEAD, QTAIL, MHEAD, MTAIL };
enum flight { FL_UNKNOWN, FL_IDLE, FL_BUSY };
enum msg { MSG_NONE, MSG_OPEN, MSG_REFUSING };
/* A reply the FSP owes a queue: due (it may be written into the channel at any time), then
 * published (MSGQ seen non-empty), then consumed by a MSGQ write. Only a consumed reply frees
 * its channel: a MSGQ write before the reply appeared frees nothing. */
enum owed { OWED_NONE, OWED_DUE, OWED_PUBLISHED };

struct port {
    uint32_t addr; /* EMEM byte address of the next EMEMD access */
    bool known, aincw, aincr;
    bool diverged; /* the guard answered EMEMD reads: the device's address lags behind */
};

struct chan {
    uint8_t flight;
    uint32_t head, tail; /* FL_BUSY: the FSP may be reading EMEM [head, tail + 4) */
    bool whole;          /* FL_BUSY with a packet we could not place: all of EMEM */
    bool held;
    uint32_t held_tail;
    uint8_t msg, msg_type, next_seq;
    uint32_t last_head; /* the channel of the last packet passed: where the FSP replies */
    uint8_t owed;       /* OWED_*: the reply to a message that ended (EOM passed) */
    uint8_t mq_seen_mask;  /* MSGQ HEAD (bit 0) and TAIL (bit 1) read since the reply fell due */
    uint32_t mq_seen[2];
    bool reply; /* an emulated refusal is waiting in MSGQ */
    uint32_t reply_at, mq_head, mq_tail;
    uint8_t reply_bytes[REPLY_BYTES];
};

struct fsp {
    struct port port[MF_FSP_MAX_CHANNELS];
    struct chan chan[MF_FSP_MAX_CHANNELS];
    uint8_t emem[MF_FSP_EMEM_BYTES];
    uint64_t valid[MF_FSP_EMEM_BYTES / 4 / 64]; /* one bit per dword the guest wrote */
    uint8_t unsettled; /* bit q: queue q is not known to be idle (the fast path's question) */
};

/* ---- registers, parameters ----------------------------------------------------------- */

static uint64_t span(const struct mf_fsp_params *p) { return 8ull * p->channels; }

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
    const uint64_t base[3] = {p->emem, p->queue, p->msgq};
    for (int i = 0; i < 3; i++) {
        if (base[i] % 4 || base[i] > UINT64_MAX - span(p)) {
            snprintf(why, why_len, "fsp guard: register block at %#llx is misaligned or wraps",
                     (unsigned long long)base[i]);
            return -1;
        }
        for (int j = 0; j < i; j++)
            if (base[i] < base[j] + span(p) && base[j] < base[i] + span(p)) {
                snprintf(why, why_len, "fsp guard: register blocks at %#llx and %#llx overlap",
                         (unsigned long long)base[j], (unsigned long long)base[i]);
                return -1;
            }
        out[i] = (struct mf_block){base[i], base[i] + span(p)};
    }
    *n = 3;
    return 0;
}

static bool fsp_same_registers(const struct mf_guard_spec *a, const struct mf_guard_spec *b)
{
    return a->fsp.emem == b->fsp.emem && a->fsp.queue == b->fsp.queue &&
           a->fsp.msgq == b->fsp.msgq && a->fsp.channels == b->fsp.channels;
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

static void set_flight(struct fsp *s, unsigned q, uint8_t flight)
{
    s->chan[q].flight = flight;
    if (flight == FL_IDLE)
        s->unsettled &= (uint8_t)~(1u << q);
    else
        s->unsettled |= (uint8_t)(1u << q);
}

static void fsp_state_free(void *s) { free(s); }

/* Which register an aligned offset inside the guard's blocks is, and its index. */
static enum reg decode(const struct mf_fsp_params *p, uint64_t off, unsigned *idx)
{
    uint64_t base = off - p->emem < span(p)    ? p->emem
                    : off - p->queue < span(p) ? p->queue
                                               : p->msgq;
    *idx = (unsigned)((off - base) / 8);
    bool second = (off - base) % 8 == 4;
    if (base == p->emem)
        return second ? EMEMD : EMEMC;
    if (base == p->queue)
        return second ? QTAIL : QHEAD;
    return second ? MTAIL : MHEAD;
}

/* ---- device and shadow helpers ------------------------------------------------------- */

static bool dev_rd(struct mf_guard_call *c, uint64_t off, uint32_t *v)
{
    uint64_t x = 0;
    if (mf_dev_read(c->dev, off, 4, &x)) {
        c->device_error = true;
        return false;
    }
    *v = (uint32_t)x;
    return true;
}

static bool dev_wr(struct mf_guard_call *c, uint64_t off, uint32_t v)
{
    if (mf_dev_write(c->dev, off, 4, v)) {
        c->device_error = true;
        return false;
    }
    return true;
}

static bool dword_valid(const struct fsp *s, uint32_t addr)
{
    uint32_t d = addr / 4;
    return s->valid[d / 64] >> (d % 64) & 1;
}

/* Forget what the guest wrote into EMEM [start, start + len): the FSP may write there. */
static void invalidate(struct fsp *s, uint64_t start, uint64_t len)
{
    for (uint64_t a = start & ~3ull; a < start + len && a < MF_FSP_EMEM_BYTES; a += 4) {
        uint64_t d = a / 4;
        s->valid[d / 64] &= ~(1ull << (d % 64));
    }
}

static uint32_t shadow_dword(const struct fsp *s, uint32_t addr)
{
    const uint8_t *b = &s->emem[addr];
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static void step(struct port *pt)
{
    /* the carry past bit 15 is not documented: from there on the address is unknown */
    if (pt->addr >= EMEM_LAST_DWORD)
        pt->known = false;
    else
        pt->addr += 4;
}

static void pass_read(struct mf_guard_call *c)
{
    uint32_t v;
    if (dev_rd(c, c->offset, &v)) {
        c->outcome = MF_PASS;
        c->result = v;
    }
}

static void pass_write(struct mf_guard_call *c)
{
    if (dev_wr(c, c->offset, c->value)) {
        c->outcome = MF_PASS;
        c->result = c->value;
    }
}

static void emulate(struct mf_guard_call *c, uint32_t v)
{
    c->outcome = MF_EMULATED;
    c->result = v;
}

/* The reason an event gives for a refusal or an emulation. */
#define DETAIL(c, ...) snprintf((c)->detail, MF_DETAIL_MAX, __VA_ARGS__)

/* Is queue `q` free of a packet the FSP has not taken? Unknown queues (a fresh state) are
 * read from the device: HEAD != TAIL there is a packet someone queued before us. */
static bool queue_idle(struct mf_guard_call *c, struct fsp *s, unsigned q)
{
    struct chan *ch = &s->chan[q];
    const struct mf_fsp_params *p = &c->spec->fsp;
    if (ch->flight == FL_IDLE)
        return true;
    uint32_t head, tail;
    if (!dev_rd(c, p->queue + 8ull * q, &head))
        return false;
    if (ch->flight == FL_BUSY) {
        if (head != ch->tail)
            return false;
    } else {
        if (!dev_rd(c, p->queue + 8ull * q + 4, &tail))
            return false;
        if (head != tail) {
            /* someone queued a packet before this state existed; if we cannot place it,
             * all of EMEM is off limits until the FSP has taken it */
            set_flight(s, q, FL_BUSY);
            ch->whole = !(head % 4 == 0 && tail % 4 == 0 && head <= tail &&
                          tail <= EMEM_LAST_DWORD);
            ch->head = head;
            ch->tail = tail;
            /* it may end a message: count its reply as due, into its channel */
            ch->owed = OWED_DUE;
            ch->mq_seen_mask = 0;
            ch->last_head = ch->whole ? 0 : head;
            return false;
        }
    }
    set_flight(s, q, FL_IDLE);
    return true;
}

/* Would writing the EMEM dword at `addr` change a packet the FSP may be reading? */
static bool in_flight_at(struct mf_guard_call *c, struct fsp *s, uint32_t addr)
{
    for (unsigned q = 0; s->unsettled >> q && q < c->spec->fsp.channels; q++) {
        struct chan *ch = &s->chan[q];
        if (!(s->unsettled >> q & 1) || queue_idle(c, s, q))
            continue;
        if (ch->whole || (addr >= ch->head && addr <= ch->tail))
            return true;
    }
    return false;
}

/* ---- EMEM ports ---------------------------------------------------------------------- */

static void ememc(struct mf_guard_call *c, struct fsp *s, unsigned i)
{
    struct port *pt = &s->port[i];
    if (!c->is_write) {
        if (pt->diverged && pt->known) {
            DETAIL(c, "refusal reply");
            emulate(c, pt->addr | (pt->aincw ? EMEMC_AINCW : 0) | (pt->aincr ? EMEMC_AINCR : 0));
            return;
        }
        pass_read(c);
        if (c->outcome == MF_PASS) /* the device's word is the truth: learn the address */
            *pt = (struct port){c->result & EMEMC_ADDR, true, c->result & EMEMC_AINCW,
                                c->result & EMEMC_AINCR, false};
        return;
    }
    if (c->value & ~EMEMC_KNOWN) {
        DETAIL(c, "EMEMC(%u): unknown bits %#x", i, c->value & ~EMEMC_KNOWN);
        return;
    }
    if (i < c->spec->fsp.channels && !queue_idle(c, s, i)) {
        DETAIL(c, "EMEMC(%u): queue in flight", i);
        return;
    }
    pass_write(c);
    if (c->outcome == MF_PASS)
        *pt = (struct port){c->value & EMEMC_ADDR, true, c->value & EMEMC_AINCW,
                            c->value & EMEMC_AINCR, false};
    else
        pt->known = false; /* the write may or may not have landed */
}

/* The emulated reply covering EMEM `addr`, if any. */
static const struct chan *reply_at(const struct mf_guard_call *c, const struct fsp *s,
                                   uint32_t addr)
{
    for (unsigned q = 0; q < c->spec->fsp.channels; q++) {
        const struct chan *ch = &s->chan[q];
        if (ch->reply && addr >= ch->reply_at && addr - ch->reply_at < REPLY_BYTES)
            return ch;
    }
    return NULL;
}

static void ememd(struct mf_guard_call *c, struct fsp *s, unsigned i)
{
    struct port *pt = &s->port[i];
    if (!c->is_write) {
        const struct chan *r = pt->known ? reply_at(c, s, pt->addr) : NULL;
        if (r) {
            const uint8_t *b = &r->reply_bytes[pt->addr - r->reply_at];
            emulate(c, (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                           (uint32_t)b[3] << 24);
            pt->diverged = true;
            DETAIL(c, "refusal reply");
            if (pt->aincr)
                step(pt);
            return;
        }
        if (pt->diverged) {
            DETAIL(c, "EMEMD(%u) read: port out of step", i);
            return;
        }
        pass_read(c);
        if (c->outcome != MF_PASS)
            pt->known = false; /* a failed read may still have stepped the device's address */
        else if (pt->known && pt->aincr)
            step(pt);
        return;
    }
    if (!pt->known || pt->diverged) {
        DETAIL(c, "EMEMD(%u) write: address unknown", i);
        return;
    }
    if (in_flight_at(c, s, pt->addr)) {
        DETAIL(c, "EMEMD(%u) write into a queued packet", i);
        return;
    }
    pass_write(c);
    uint32_t a = pt->addr, d = a / 4;
    if (c->outcome != MF_PASS) {
        /* the write may or may not have landed, and moved the address */
        s->valid[d / 64] &= ~(1ull << (d % 64));
        pt->known = false;
        return;
    }
    for (unsigned k = 0; k < 4; k++)
        s->emem[a + k] = (uint8_t)(c->value >> (8 * k));
    s->valid[d / 64] |= 1ull << (d % 64);
    if (pt->aincw)
        step(pt);
}

/* ---- the command queue and its doorbell ---------------------------------------------- */

static bool denied(const struct mf_fsp_params *p, uint8_t type)
{
    return p->deny[type / 8] >> (type % 8) & 1;
}

/* Queue the answer a real FSP gives to a message type it does not support. */
static void queue_reply(struct chan *ch, uint32_t at, uint8_t type)
{
    const uint32_t words[5] = {
        MCTP_SOM | MCTP_EOM,
        MSG_TYPE_VENDOR_PCI | MSG_VENDOR_NV << 8 | (uint32_t)NVDM_FSP_RESPONSE << 24,
        0, /* taskId */
        type,
        FSP_ERR_NOT_SUPPORTED,
    };
    for (unsigned w = 0; w < 5; w++)
        for (unsigned k = 0; k < 4; k++)
            ch->reply_bytes[4 * w + k] = (uint8_t)(words[w] >> (8 * k));
    ch->reply = true;
    ch->reply_at = at;
    ch->mq_head = at;
    ch->mq_tail = at + REPLY_BYTES - 4;
}

/* Check the packet [head, tail + 4) in the shadow. Returns true to ring the doorbell. On a
 * refusal, *type is the NVDM type the reply names and *reply whether to send one now (a
 * refused first packet of a longer message is answered at its last packet, as the FSP would). */
static bool check_packet(struct mf_guard_call *c, struct fsp *s, struct chan *ch, uint32_t head,
                         uint32_t tail, uint8_t *type, bool *reply)
{
    const struct mf_fsp_params *p = &c->spec->fsp;
    *type = 0;
    *reply = true;
    for (uint32_t a = head; a <= tail; a += 4)
        if (!dword_valid(s, a)) {
            DETAIL(c, "packet dword %#x not written", a);
            ch->msg = MSG_NONE;
            return false;
        }
    uint32_t mctp = shadow_dword(s, head);
    bool som = mctp & MCTP_SOM, eom = mctp & MCTP_EOM;
    *reply = eom;
    if (som) {
        uint32_t hdr = shadow_dword(s, head + 4);
        *type = (uint8_t)(hdr >> 24);
        if ((hdr & 0x7F) != MSG_TYPE_VENDOR_PCI || (hdr >> 8 & 0xFFFF) != MSG_VENDOR_NV) {
            DETAIL(c, "doorbell: bad message header %#x", hdr);
            *reply = true;
            ch->msg = MSG_NONE;
            return false;
        }
        if (denied(p, *type)) {
            DETAIL(c, "nvdm 0x%02x refused", *type);
            ch->msg = eom ? MSG_NONE : MSG_REFUSING;
            ch->msg_type = *type;
            return false;
        }
        ch->msg = eom ? MSG_NONE : MSG_OPEN;
        ch->msg_type = *type;
        ch->next_seq = (uint8_t)((MCTP_SEQ(mctp) + 1) & 3);
        return true;
    }
    /* A continuation carries no type: it belongs to the message whose first packet we saw. */
    *type = ch->msg_type;
    if (ch->msg == MSG_OPEN && MCTP_SEQ(mctp) == ch->next_seq && !denied(p, ch->msg_type)) {
        ch->msg = eom ? MSG_NONE : MSG_OPEN;
        ch->next_seq = (uint8_t)((ch->next_seq + 1) & 3);
        return true;
    }
    if (ch->msg == MSG_REFUSING || ch->msg == MSG_OPEN) {
        DETAIL(c, "nvdm 0x%02x refused (continuation)", ch->msg_type);
    } else {
        ch->msg_type = *type = 0; /* a continuation of no message has no type */
        DETAIL(c, "doorbell: continuation of no message");
    }
    ch->msg = eom ? MSG_NONE : MSG_REFUSING;
    return false;
}

static void doorbell(struct mf_guard_call *c, struct fsp *s, unsigned q)
{
    const struct mf_fsp_params *p = &c->spec->fsp;
    struct chan *ch = &s->chan[q];
    uint32_t head = c->value;
    if (!queue_idle(c, s, q)) {
        DETAIL(c, "doorbell %u: previous packet not taken", q);
        return;
    }
    if (!ch->held) {
        DETAIL(c, "doorbell %u: no packet queued", q);
        return;
    }
    uint32_t tail = ch->held_tail;
    ch->held = false; /* whatever happens, this tail has been used */
    /* head <= tail is checked before any subtraction: both are the guest's 32-bit values */
    if (head % 4 || tail % 4 || tail > EMEM_LAST_DWORD || head > tail || tail - head < 4 ||
        tail - head + 4 > p->max_packet) {
        DETAIL(c, "bad packet bounds %#x..%#x", head, tail + 4);
        return;
    }
    /* The driver reads the reply to a message before it sends the next one; a doorbell before
     * that would also move the channel where the reply is due. */
    if (ch->owed != OWED_NONE) {
        DETAIL(c, "doorbell %u: reply not consumed yet", q);
        return;
    }
    /* The FSP writes a reply into the channel of the message it answers. Channels of different
     * queues must therefore not overlap where a packet waits or a reply is due: else one
     * queue's reply could rewrite another queue's packet after the guard checked it. */
    for (unsigned o = 0; o < p->channels; o++) {
        const struct chan *oc = &s->chan[o];
        if (oc->owed && head < (uint64_t)oc->last_head + p->max_packet &&
            oc->last_head < (uint64_t)tail + 4) {
            DETAIL(c, "packet where queue %u's reply is due", o);
            return;
        }
        if (o == q)
            continue;
        if (!queue_idle(c, s, o) &&
            (oc->whole || (head < (uint64_t)oc->tail + 4 &&
                           oc->head < (uint64_t)head + p->max_packet))) {
            DETAIL(c, "reply area over queue %u's packet", o);
            return;
        }
    }
    if (c->device_error)
        return;
    uint32_t mh, mt;
    if (!dev_rd(c, p->msgq + 8ull * q, &mh) || !dev_rd(c, p->msgq + 8ull * q + 4, &mt))
        return;
    if (mh != mt || ch->reply) {
        DETAIL(c, "doorbell %u: a reply is still waiting", q);
        return;
    }
    uint8_t type;
    bool reply;
    if (!check_packet(c, s, ch, head, tail, &type, &reply)) {
        if (reply)
            queue_reply(ch, head, type);
        return;
    }
    /* From here the FSP may take the packet and write its reply into this channel, even if a
     * write below fails (it may have landed): the shadow no longer says what is there. */
    ch->last_head = head;
    if (reply) { /* the message ended: the FSP will answer into this channel */
        ch->owed = OWED_DUE;
        ch->mq_seen_mask = 0;
    }
    invalidate(s, head, p->max_packet);
    /* The order the driver uses: the FSP is interrupted by the head write. */
    if (!dev_wr(c, p->queue + 8ull * q + 4, tail) || !dev_wr(c, c->offset, head)) {
        set_flight(s, q, FL_UNKNOWN); /* the device's HEAD and TAIL will say */
        return;
    }
    c->outcome = MF_PASS;
    c->result = head;
    set_flight(s, q, FL_BUSY);
    ch->whole = false;
    ch->head = head;
    ch->tail = tail;
}

static void queue_reg(struct mf_guard_call *c, struct fsp *s, unsigned q, bool is_tail)
{
    struct chan *ch = &s->chan[q];
    if (!c->is_write) {
        if (is_tail && ch->held) {
            emulate(c, ch->held_tail);
            return;
        }
        pass_read(c);
        if (c->outcome == MF_PASS && !is_tail && ch->flight == FL_BUSY && c->result == ch->tail)
            set_flight(s, q, FL_IDLE);
        return;
    }
    if (!is_tail) {
        doorbell(c, s, q);
        return;
    }
    if (!queue_idle(c, s, q)) {
        DETAIL(c, "QUEUE_TAIL(%u): packet in flight", q);
        return;
    }
    ch->held = true;
    ch->held_tail = c->value;
    emulate(c, 0); /* held: reaches the device just before a doorbell that passes */
    DETAIL(c, "tail held until the doorbell");
}

/* ---- the message queue --------------------------------------------------------------- */

static void msgq_reg(struct mf_guard_call *c, struct fsp *s, unsigned q, bool is_tail)
{
    const struct mf_fsp_params *p = &c->spec->fsp;
    struct chan *ch = &s->chan[q];
    if (!ch->reply) {
        if (!c->is_write) {
            pass_read(c);
            /* the guest looks for its reply (it reads HEAD and TAIL): once both have been seen
             * since the reply fell due, and differ, the reply is published */
            if (c->outcome == MF_PASS && ch->owed == OWED_DUE) {
                ch->mq_seen[is_tail] = c->result;
                ch->mq_seen_mask |= (uint8_t)(1u << is_tail);
                if (ch->mq_seen_mask == 3 && ch->mq_seen[0] != ch->mq_seen[1])
                    ch->owed = OWED_PUBLISHED;
            }
            return;
        }
        /* The guest may only empty MSGQ (the driver writes TAIL = HEAD, then HEAD = TAIL): a
         * reply queued by the guest would pass for the FSP's own. So MSGQ non-empty always
         * means the FSP published; and a driver that consumes without polling is told by the
         * device whether the reply is there. */
        uint32_t mh, mt;
        if (!dev_rd(c, p->msgq + 8ull * q, &mh) || !dev_rd(c, p->msgq + 8ull * q + 4, &mt))
            return;
        if (c->value != (is_tail ? mh : mt)) {
            DETAIL(c, "MSGQ_%s(%u) would queue a reply", is_tail ? "TAIL" : "HEAD", q);
            return;
        }
        if (ch->owed == OWED_DUE && mh != mt)
            ch->owed = OWED_PUBLISHED;
        pass_write(c);
        if (c->outcome != MF_PASS)
            return;
        if (ch->owed == OWED_PUBLISHED) {
            /* consumed: the FSP has written its channel since we shadowed it */
            ch->owed = OWED_NONE;
            invalidate(s, ch->last_head, p->max_packet);
        }
        return;
    }
    DETAIL(c, "refusal reply");
    if (!c->is_write) {
        emulate(c, is_tail ? ch->mq_tail : ch->mq_head);
        return;
    }
    if (is_tail)
        ch->mq_tail = c->value;
    else
        ch->mq_head = c->value;
    /* the driver writes TAIL = HEAD, then HEAD: the head write ends the reply, so that it
     * does not reach the device's MSGQ */
    if (!is_tail && ch->mq_head == ch->mq_tail)
        ch->reply = false; /* it lived in the guard only: EMEM is as the shadow says */
    emulate(c, 0);
}

static void fsp_access(struct mf_guard_call *c)
{
    struct fsp *s = c->state;
    unsigned i;
    switch (decode(&c->spec->fsp, c->offset, &i)) {
    case EMEMC:
        ememc(c, s, i);
        break;
    case EMEMD:
        ememd(c, s, i);
        break;
    case QHEAD:
        queue_reg(c, s, i, false);
        break;
    case QTAIL:
        queue_reg(c, s, i, true);
        break;
    case MHEAD:
        msgq_reg(c, s, i, false);
        break;
    case MTAIL:
        msgq_reg(c, s, i, true);
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
        if (queue_idle(c, s, q) || ch->whole)
            continue;
        uint64_t ememc = p->emem + 8ull * q;
        uint32_t saved, mctp;
        if (!dev_rd(c, ememc, &saved))
            continue;
        bool read = dev_wr(c, ememc, ch->head) && dev_rd(c, ememc + 4, &mctp);
        if (!dev_wr(c, ememc, saved))
            continue; /* the port's address is unknown to us, as in any fresh state */
        s->port[q] = (struct port){saved & EMEMC_ADDR, true, saved & EMEMC_AINCW,
                                   saved & EMEMC_AINCR, false};
        if (read && !(mctp & MCTP_EOM))
            ch->owed = OWED_NONE; /* the message goes on: its continuations are refused */
    }
}

const struct mf_guard_class mf_guard_fsp = {
    .kind = MF_GUARD_FSP,
    .name = "fsp",
    .blocks = fsp_blocks,
    .same_registers = fsp_same_registers,
    .state_new = fsp_state_new,
    .state_free = fsp_state_free,
    .access = fsp_access,
    .arm = fsp_arm,
};

/*
 * guard_fsp_emem.c - the FSP guard's EMEM ports: follow each port's address and
 * auto-increment, shadow what the guest writes, answer reads of an emulated reply.
 */
#include "guard_fsp.h"

/* ---- EMEM ports ---------------------------------------------------------------------- */

void fsp_ememc(struct mf_guard_call *c, struct fsp *s, unsigned i)
{
    struct port *pt = &s->port[i];
    if (!c->is_write) {
        if (pt->diverged && pt->known) {
            DETAIL(c, "refusal reply");
            fsp_emulate(c, pt->addr | (pt->aincw ? EMEMC_AINCW : 0) | (pt->aincr ? EMEMC_AINCR : 0));
            return;
        }
        fsp_pass_read(c);
        if (c->outcome == MF_PASS) /* the device's word is the truth: learn the address */
            *pt = (struct port){c->result & EMEMC_ADDR, true, c->result & EMEMC_AINCW,
                                c->result & EMEMC_AINCR, false};
        return;
    }
    if (c->value & ~EMEMC_KNOWN) {
        DETAIL(c, "EMEMC(%u): unknown bits %#x", i, c->value & ~EMEMC_KNOWN);
        return;
    }
    if (i < c->spec->fsp.channels && !fsp_queue_idle(c, s, i)) {
        DETAIL(c, "EMEMC(%u): queue in flight", i);
        return;
    }
    fsp_pass_write(c);
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

void fsp_ememd(struct mf_guard_call *c, struct fsp *s, unsigned i)
{
    struct port *pt = &s->port[i];
    if (!c->is_write) {
        const struct chan *r = pt->known ? reply_at(c, s, pt->addr) : NULL;
        if (r) {
            const uint8_t *b = &r->reply_bytes[pt->addr - r->reply_at];
            fsp_emulate(c, (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                           (uint32_t)b[3] << 24);
            pt->diverged = true;
            DETAIL(c, "refusal reply");
            if (pt->aincr)
                fsp_step(pt);
            return;
        }
        if (pt->diverged) {
            DETAIL(c, "EMEMD(%u) read: port out of step", i);
            return;
        }
        fsp_pass_read(c);
        if (c->outcome != MF_PASS)
            pt->known = false; /* a failed read may still have stepped the device's address */
        else if (pt->known && pt->aincr)
            fsp_step(pt);
        return;
    }
    if (!pt->known || pt->diverged) {
        DETAIL(c, "EMEMD(%u) write: address unknown", i);
        return;
    }
    if (fsp_in_flight_at(c, s, pt->addr)) {
        DETAIL(c, "EMEMD(%u) write into a queued packet", i);
        return;
    }
    fsp_pass_write(c);
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
        fsp_step(pt);
}

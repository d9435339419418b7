/*
 * guard_fsp_emem.c - the FSP guard's EMEM ports: follow each port's address and
 * auto-increment, shadow what the guest writes, answer reads of an emulated reply.
 */
#include "guard_fsp.h"

/* ---- EMEM ports ---------------------------------------------------------------------- */

void mf_fsp_ememc(struct mf_guard_call *c, struct fsp *s, unsigned i)
{
    struct port *pt = &s->port[i];
    if (!c->is_write) {
        if (pt->diverged && pt->known) {
            DETAIL(c, "refusal reply");
            mf_fsp_emulate(c, mf_fsp_ememc_of(pt));
            return;
        }
        mf_fsp_pass_read(c);
        if (c->outcome == MF_PASS) /* the device's word is the truth: learn the address */
            *pt = mf_fsp_port_of(c->result);
        return;
    }
    if (c->value & ~EMEMC_KNOWN) {
        DETAIL(c, "EMEMC(%u): unknown bits %#x", i, c->value & ~EMEMC_KNOWN);
        return;
    }
    if (!mf_fsp_queue_idle(c, s, i)) {
        DETAIL(c, "EMEMC(%u): queue in flight", i);
        return;
    }
    mf_fsp_pass_write(c);
    if (c->outcome == MF_PASS)
        *pt = mf_fsp_port_of(c->value);
    else
        pt->known = false; /* the write may or may not have landed */
}

/* The emulated reply covering EMEM `addr`, if any. */
static const struct chan *reply_at(const struct fsp *s, uint32_t addr)
{
    for (unsigned q = 0; q < MF_FSP_PORTS; q++) {
        const struct chan *ch = &s->chan[q];
        if (ch->reply && addr >= ch->reply_at && addr - ch->reply_at < REPLY_BYTES)
            return ch;
    }
    return NULL;
}

void mf_fsp_ememd(struct mf_guard_call *c, struct fsp *s, unsigned i)
{
    struct port *pt = &s->port[i];
    if (!c->is_write) {
        const struct chan *r = pt->known ? reply_at(s, pt->addr) : NULL;
        if (r) {
            const uint8_t *b = &r->reply_bytes[pt->addr - r->reply_at];
            mf_fsp_emulate(c, (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                                  (uint32_t)b[3] << 24);
            pt->diverged = true;
            DETAIL(c, "refusal reply");
            if (pt->aincr)
                mf_fsp_step(pt);
            return;
        }
        if (pt->diverged) {
            DETAIL(c, "EMEMD(%u) read: port out of step", i);
            return;
        }
        /* Reads stay in the guest's channels too: past them is other clients' traffic (the
         * PMU/SOE's channel 4 on GH100), and an unknown address could be anywhere. */
        if (!pt->known || pt->addr >= (uint64_t)c->spec->fsp.channels * c->spec->fsp.max_packet) {
            DETAIL(c, "EMEMD(%u) read: outside the channels", i);
            return;
        }
        mf_fsp_pass_read(c);
        if (c->outcome != MF_PASS)
            pt->known = false; /* a failed read may still have stepped the device's address */
        else if (pt->known && pt->aincr)
            mf_fsp_step(pt);
        return;
    }
    if (!pt->known || pt->diverged) {
        DETAIL(c, "EMEMD(%u) write: address unknown", i);
        return;
    }
    /* Only the channel areas are EMEM for certain (OGKM gh100 dev_fsp_addendum.h: 1 KiB
     * channels, channel 4 at 4096, FSP_EMEM_CHANNEL_MAX 8): past the physical EMEM a port
     * wraps (gpu-admin-tools reads its size from HWCFG), and a wrapped write would rewrite a
     * checked dword unseen. */
    const struct mf_fsp_params *p = &c->spec->fsp;
    if (pt->addr >= (uint64_t)p->channels * p->max_packet) {
        DETAIL(c, "EMEMD(%u) write at %#x: outside the channels", i, pt->addr);
        return;
    }
    if (mf_fsp_in_flight_at(c, s, pt->addr)) {
        DETAIL(c, "EMEMD(%u) write into a queued packet", i);
        return;
    }
    mf_fsp_pass_write(c);
    uint32_t a = pt->addr;
    if (c->outcome != MF_PASS) {
        /* the write may or may not have landed, and moved the address */
        mf_fsp_set_valid(s, a, false);
        pt->known = false;
        return;
    }
    for (unsigned k = 0; k < 4; k++)
        s->emem[a + k] = (uint8_t)(c->value >> (8 * k));
    mf_fsp_set_valid(s, a, true);
    if (pt->aincw)
        mf_fsp_step(pt);
}

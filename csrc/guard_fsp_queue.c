/*
 * guard_fsp_queue.c - the FSP guard's command queues and message queues: hold the tail, check
 * the packet at the doorbell, follow the FSP's replies, emulate the answer to a refusal.
 */
#include <string.h>

#include "guard_fsp.h"

/* ---- the command queue and its doorbell ---------------------------------------------- */

static bool bit(const uint8_t map[32], uint8_t n)
{
    return map[n / 8] >> (n % 8) & 1;
}

/* Is a message of this type (and, for PRC, this sub-message) refused under the policy? */
static bool denied(const struct mf_fsp_params *p, uint8_t type, uint8_t sub)
{
    return bit(p->deny, type) || (type == MF_FSP_NVDM_PRC && bit(p->prc_deny, sub));
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
        if (!mf_fsp_dword_valid(s, a)) {
            DETAIL(c, "packet dword %#x not written", a);
            ch->msg = MSG_NONE;
            return false;
        }
    uint32_t mctp = mf_fsp_shadow_dword(s, head);
    bool som = mctp & MCTP_SOM, eom = mctp & MCTP_EOM;
    *reply = eom;
    if (som) {
        uint32_t hdr = mf_fsp_shadow_dword(s, head + 4);
        *type = (uint8_t)(hdr >> 24);
        if ((hdr & 0x7F) != MSG_TYPE_VENDOR_PCI || (hdr >> 8 & 0xFFFF) != MSG_VENDOR_NV) {
            DETAIL(c, "doorbell: bad message header %#x", hdr);
            *reply = true;
            ch->msg = MSG_NONE;
            return false;
        }
        uint8_t sub = 0;
        if (*type == MF_FSP_NVDM_PRC && !bit(p->deny, *type)) {
            /* PRC carries NVLink isolation and persistent settings (gpu-admin-tools
             * FspRpc.prc_*): its sub-message is packet byte 8, its scope byte 9 */
            if (tail - head < 8) {
                DETAIL(c, "prc without its sub-message refused");
                ch->msg = eom ? MSG_NONE : MSG_REFUSING;
                ch->msg_type = *type;
                ch->msg_sub = 0;
                return false;
            }
            uint32_t word = mf_fsp_shadow_dword(s, head + 8);
            sub = (uint8_t)word;
            if (bit(p->prc_deny, sub)) {
                DETAIL(c, "prc 0x%02x (scope 0x%x) refused", sub, (unsigned)(word >> 8 & 0xFF));
                ch->msg = eom ? MSG_NONE : MSG_REFUSING;
                ch->msg_type = *type;
                ch->msg_sub = sub;
                return false;
            }
        }
        if (denied(p, *type, sub)) {
            DETAIL(c, "nvdm 0x%02x refused", *type);
            ch->msg = eom ? MSG_NONE : MSG_REFUSING;
            ch->msg_type = *type;
            ch->msg_sub = sub;
            return false;
        }
        ch->msg = eom ? MSG_NONE : MSG_OPEN;
        ch->msg_type = *type;
        ch->msg_sub = sub;
        ch->next_seq = (uint8_t)((MCTP_SEQ(mctp) + 1) & 3);
        return true;
    }
    /* A continuation carries no type: it belongs to the message whose first packet we saw. */
    *type = ch->msg_type;
    if (ch->msg == MSG_OPEN && MCTP_SEQ(mctp) == ch->next_seq &&
        !denied(p, ch->msg_type, ch->msg_sub)) {
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
    if (!mf_fsp_queue_idle(c, s, q)) {
        DETAIL(c, "doorbell %u: previous packet not taken", q);
        return;
    }
    if (!ch->held) {
        DETAIL(c, "doorbell %u: no packet queued", q);
        return;
    }
    uint32_t tail = ch->held_tail;
    ch->held = false; /* whatever happens, this tail has been used */
    /* Every public driver queues at its channel's base (OGKM kfspSendPacket_GH100: HEAD = 0;
     * nouveau gh100_fsp_send; gpu-admin-tools: channel N at N * 1024), and an FSP that reads
     * from the base would take bytes the guard never checked: any other head is refused. */
    const uint32_t base = mf_fsp_channel_base(p, q);
    if (head != base) {
        DETAIL(c, "doorbell %u: head %#x off base", q, head);
        return;
    }
    /* head <= tail is checked before any subtraction: both are the guest's 32-bit values */
    if (tail % 4 || tail < head || tail - head < 4 || tail - head > p->max_packet - 4) {
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
        if (oc->owed && (oc->reply_unplaced || (head < (uint64_t)oc->last_head + p->max_packet &&
                                                oc->last_head < (uint64_t)tail + 4))) {
            DETAIL(c, "packet where queue %u's reply is due", o);
            return;
        }
        if (o == q)
            continue;
        if (!mf_fsp_queue_idle(c, s, o) &&
            (oc->whole || (head < (uint64_t)oc->tail + 4 &&
                           oc->head < (uint64_t)head + p->max_packet))) {
            DETAIL(c, "reply area over queue %u's packet", o);
            return;
        }
    }
    if (c->device_error)
        return;
    uint32_t mh, mt;
    if (!mf_fsp_dev_rd(c, p->msgq + 8ull * q, &mh) || !mf_fsp_dev_rd(c, p->msgq + 8ull * q + 4, &mt))
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
        ch->reply_unplaced = false;
        ch->mq_seen_mask = 0;
        ch->mq_stale = false; /* MSGQ was empty: checked above */
    }
    mf_fsp_invalidate(s, head, p->max_packet);
    /* The order the driver uses: the FSP is interrupted by the head write. */
    if (!mf_fsp_dev_wr(c, p->queue + 8ull * q + 4, tail) || !mf_fsp_dev_wr(c, c->offset, head)) {
        mf_fsp_set_flight(s, q, FL_UNKNOWN); /* the device's HEAD and TAIL will say */
        return;
    }
    c->outcome = MF_PASS;
    c->result = head;
    mf_fsp_set_flight(s, q, FL_BUSY);
    ch->whole = false;
    ch->head = head;
    ch->tail = tail;
}

void mf_fsp_queue_reg(struct mf_guard_call *c, struct fsp *s, unsigned q, bool is_tail)
{
    struct chan *ch = &s->chan[q];
    if (!c->is_write) {
        if (is_tail && ch->held) {
            mf_fsp_emulate(c, ch->held_tail);
            return;
        }
        mf_fsp_pass_read(c);
        if (c->outcome == MF_PASS && !is_tail && ch->flight == FL_BUSY && c->result == ch->tail)
            mf_fsp_set_flight(s, q, FL_IDLE);
        return;
    }
    if (!is_tail) {
        doorbell(c, s, q);
        return;
    }
    if (!mf_fsp_queue_idle(c, s, q)) {
        DETAIL(c, "QUEUE_TAIL(%u): packet in flight", q);
        return;
    }
    ch->held = true;
    ch->held_tail = c->value;
    mf_fsp_emulate(c, 0); /* held: reaches the device just before a doorbell that passes */
    DETAIL(c, "tail held until the doorbell");
}

/* ---- the message queue --------------------------------------------------------------- */

void mf_fsp_msgq_reg(struct mf_guard_call *c, struct fsp *s, unsigned q, bool is_tail)
{
    const struct mf_fsp_params *p = &c->spec->fsp;
    struct chan *ch = &s->chan[q];
    if (!ch->reply) {
        if (!c->is_write) {
            mf_fsp_pass_read(c);
            /* the guest looks for its reply (it reads HEAD and TAIL): once both have been seen
             * since the reply fell due, and differ, the reply is published */
            if (c->outcome == MF_PASS && ch->owed == OWED_DUE && !ch->mq_stale) {
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
        if (!mf_fsp_dev_rd(c, p->msgq + 8ull * q, &mh) || !mf_fsp_dev_rd(c, p->msgq + 8ull * q + 4, &mt))
            return;
        if (c->value != (is_tail ? mh : mt)) {
            DETAIL(c, "MSGQ_%s(%u) would queue a reply", is_tail ? "TAIL" : "HEAD", q);
            return;
        }
        if (ch->owed == OWED_DUE && mh != mt && !ch->mq_stale)
            ch->owed = OWED_PUBLISHED;
        mf_fsp_pass_write(c);
        if (c->outcome != MF_PASS)
            return;
        if (ch->mq_stale) {
            ch->mq_stale = false; /* the earlier reply is consumed; the queued packet's is due */
            return;
        }
        if (ch->owed == OWED_PUBLISHED) {
            /* consumed: the FSP has written its channel since we shadowed it */
            ch->owed = OWED_NONE;
            if (ch->reply_unplaced)
                mf_fsp_invalidate(s, 0, MF_FSP_EMEM_BYTES);
            else
                mf_fsp_invalidate(s, ch->last_head, p->max_packet);
            ch->reply_unplaced = false;
        }
        return;
    }
    DETAIL(c, "refusal reply");
    if (!c->is_write) {
        mf_fsp_emulate(c, is_tail ? ch->mq_tail : ch->mq_head);
        return;
    }
    if (is_tail)
        ch->mq_tail = c->value;
    else
        ch->mq_head = c->value;
    /* A write that leaves MSGQ empty consumes the reply: the open driver writes TAIL = HEAD
     * then HEAD (kfspReadPacket_GH100), gpu-admin-tools TAIL = HEAD alone
     * (FspEmemRpc.receive_data). The open driver's HEAD write then meets the device's MSGQ,
     * which it leaves empty. */
    if (ch->mq_head == ch->mq_tail)
        ch->reply = false; /* it lived in the guard only: EMEM is as the shadow says */
    mf_fsp_emulate(c, 0);
}

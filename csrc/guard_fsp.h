/*
 * guard_fsp.h - the FSP guard's state and the helpers its parts share; not part of the API.
 *
 * guard_fsp.c holds the guard kind (registers, state, dispatch, arming) and the helpers;
 * guard_fsp_emem.c the EMEM ports and the shadow they write; guard_fsp_queue.c the command
 * queues, their doorbell and the replies. docs/fsp-guard.md describes what they decide.
 * Every function here is internal (mf_fsp_ prefix): `nm` of the library shows only mf_ names.
 *
 * State transitions of one queue q (channel q: EMEM [q * max_packet, (q + 1) * max_packet)):
 *
 *   what                                  | flight          | owed            | msg
 *   --------------------------------------+-----------------+-----------------+--------------
 *   fresh state                           | UNKNOWN         | NONE            | NONE
 *   device HEAD != TAIL (first look)      | BUSY (+whole if | DUE (anywhere   | -
 *                                         |  unplaceable)   |  if unplaceable)|
 *   device HEAD == TAIL, or HEAD read     | IDLE            | -               | -
 *     back equal to the tail passed       |                 |                 |
 *   QUEUE_TAIL write while IDLE           | - (tail held)   | -               | -
 *   doorbell passed, packet without EOM   | BUSY            | -               | OPEN
 *   doorbell passed, packet with EOM      | BUSY            | DUE             | NONE
 *   doorbell refused at the packet check  | -               | -               | REFUSING (no
 *                                         |                 |                 |  EOM) / NONE
 *   doorbell whose device write failed    | UNKNOWN         | DUE if EOM      | as passed
 *   first look: MSGQ already non-empty    | -               | DUE, stale      | -
 *   MSGQ write passed while stale         | -               | DUE (not stale) | -
 *   MSGQ seen non-empty while DUE         | -               | PUBLISHED       | -
 *   MSGQ write emptying it, PUBLISHED     | -               | NONE (channel   | -
 *                                         |                 |  shadow dropped)|
 *   refused packet with EOM / unreadable  | emulated reply waits in MSGQ until a MSGQ write
 *                                         | leaves its HEAD equal to its TAIL
 *
 * A port i: `known` once an EMEMC write passes or an EMEMC read is seen; unknown after a
 * failed EMEMD access, or a step past the last dword; `diverged` from the device once it read
 * an emulated reply, until its next EMEMC write.
 */
#ifndef MF_GUARD_FSP_H
#define MF_GUARD_FSP_H

#include <stdio.h>

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
    bool held;           /* a QUEUE_TAIL write is held until the doorbell */
    uint32_t held_tail;
    uint8_t msg, msg_type, msg_sub, next_seq; /* msg_sub: a PRC message's sub-message */
    uint32_t last_head; /* the channel of the last packet passed: where the FSP replies */
    uint8_t owed;         /* OWED_*: the reply to a message that ended (EOM passed) */
    /* the reply due is to a packet a first look could not place (off its channel's base, or
     * not a packet at all): the FSP may write it anywhere in EMEM */
    bool reply_unplaced;
    uint8_t mq_seen_mask; /* MSGQ HEAD (bit 0) and TAIL (bit 1) read since the reply fell due */
    /* a first look found the packet queued and a reply already in MSGQ: an earlier message's
     * (the FSP answers a packet only after taking it), so seeing or consuming it neither
     * publishes nor consumes the reply due; the first MSGQ write that passes ends it */
    bool mq_stale;
    uint32_t mq_seen[2];
    bool reply; /* an emulated refusal is waiting in MSGQ */
    uint32_t reply_at, mq_head, mq_tail;
    uint8_t reply_bytes[REPLY_BYTES];
};

struct fsp {
    struct port port[MF_FSP_PORTS];
    struct chan chan[MF_FSP_PORTS];
    uint8_t emem[MF_FSP_EMEM_BYTES];
    uint64_t valid[MF_FSP_EMEM_BYTES / 4 / 64]; /* one bit per dword the guest wrote */
    uint8_t unsettled; /* bit q: queue q is not known to be idle (the fast path's question) */
};

/* The reason an event gives for a refusal or an emulation. */
#define DETAIL(c, ...) snprintf((c)->detail, MF_DETAIL_MAX, __VA_ARGS__)

/* The base of channel q in EMEM: where every public driver queues its packets. */
static inline uint32_t mf_fsp_channel_base(const struct mf_fsp_params *p, unsigned q)
{
    return q * p->max_packet;
}

/* guard_fsp.c: device access, the shadow, ports, queue state */
bool mf_fsp_dev_rd(struct mf_guard_call *c, uint64_t off, uint32_t *v);
bool mf_fsp_dev_wr(struct mf_guard_call *c, uint64_t off, uint32_t v);
bool mf_fsp_dword_valid(const struct fsp *s, uint32_t addr);
void mf_fsp_set_valid(struct fsp *s, uint32_t addr, bool valid);
void mf_fsp_invalidate(struct fsp *s, uint64_t start, uint64_t len);
uint32_t mf_fsp_shadow_dword(const struct fsp *s, uint32_t addr);
struct port mf_fsp_port_of(uint32_t ememc);
uint32_t mf_fsp_ememc_of(const struct port *pt);
void mf_fsp_step(struct port *pt);
void mf_fsp_pass_read(struct mf_guard_call *c);
void mf_fsp_pass_write(struct mf_guard_call *c);
void mf_fsp_emulate(struct mf_guard_call *c, uint32_t v);
bool mf_fsp_queue_idle(struct mf_guard_call *c, struct fsp *s, unsigned q);
bool mf_fsp_in_flight_at(struct mf_guard_call *c, struct fsp *s, uint32_t addr);
void mf_fsp_set_flight(struct fsp *s, unsigned q, uint8_t flight);
/* guard_fsp_emem.c, guard_fsp_queue.c: one register each, under the guard's lock */
void mf_fsp_ememc(struct mf_guard_call *c, struct fsp *s, unsigned i);
void mf_fsp_ememd(struct mf_guard_call *c, struct fsp *s, unsigned i);
void mf_fsp_queue_reg(struct mf_guard_call *c, struct fsp *s, unsigned q, bool is_tail);
void mf_fsp_msgq_reg(struct mf_guard_call *c, struct fsp *s, unsigned q, bool is_tail);

#endif /* MF_GUARD_FSP_H */

/*
 * chunk.h - naturally aligned chunks, the accesses every PCI device must accept.
 *
 * Used where one access must become several: the passing bytes of a split access (access.c)
 * and a page-crossing KVM fragment of 3, 5, 6 or 7 bytes (kvm.c).
 */
#ifndef MF_CHUNK_H
#define MF_CHUNK_H

#include <stdint.h>

/* At position p of a run ending at end (p < end): the widest w of 8, 4, 2, 1 with
 * p % w == 0 and p + w <= end. */
static inline unsigned mf_chunk_width(uint64_t p, uint64_t end)
{
    unsigned w = 8;
    while (w > 1 && (p % w || end - p < w))
        w >>= 1;
    return w;
}

#endif /* MF_CHUNK_H */

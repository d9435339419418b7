/*
 * access_mmio.c - one KVM_EXIT_MMIO as KVM gives it (mf_access_mmio, mmiofilter.h).
 *
 * KVM hands a VMM any length from 1 to 8: the guest's own width (1, 2, 4, 8), or the part of a
 * page-crossing access that lies in a trapped page (a 4-byte read at 0xFFF whose first byte is
 * in a mapped page arrives as 3 bytes at 0x1000). A fragment of 3, 5, 6 or 7 bytes is taken
 * apart into naturally aligned accesses, each filtered on its own, as the hardware would make
 * it several bus transactions (docs/contract-details.md, item 11): the device still sees only
 * widths it accepts and only bytes the policy passes. The whole fragment is validated first,
 * so an invalid one touches nothing, and all its pieces are decided under one table.
 */
#include "chunk.h"
#include "internal.h"

/* The outcome of a fragment from those of its pieces: theirs when they agree; MASKED when each
 * passed, some with bits forced; PARTIAL otherwise (some bytes reached the device, or some
 * were answered differently from others). */
static uint8_t merge_outcome(uint8_t a, uint8_t b)
{
    if (a == b)
        return a;
    if ((a == MF_PASS || a == MF_MASKED) && (b == MF_PASS || b == MF_MASKED))
        return MF_MASKED;
    return MF_PARTIAL;
}

int mf_access_mmio(struct mf_filter *f, uint64_t offset, unsigned len, int is_write,
                   uint8_t data[8], struct mf_result *res)
{
    res->value = 0;
    res->outcome = MF_BLOCKED;
    if (len < 1 || len > 8) {
        res->status = MF_EWIDTH;
        return MF_EWIDTH;
    }
    int rc;
    struct mf_table *t = mf_hazard_enter(&f->cur, &rc);
    if (!t) {
        res->status = (int8_t)rc;
        return rc;
    }
    rc = MF_OK;
    /* offset + len <= size, written so it cannot wrap */
    if (offset > t->cfg.bar_size || len > t->cfg.bar_size - offset) {
        rc = MF_ERANGE;
        goto out;
    }
    uint64_t in = is_write ? mf_load_le(data, len) : 0;
    bool whole = len == 1 || len == 2 || len == 4 || len == 8; /* the guest's own width */
    for (unsigned k = 0; k < len;) {
        unsigned cw = whole ? len : mf_chunk_width(offset + k, offset + len);
        uint64_t lane = cw == 8 ? ~0ull : (1ull << (8 * cw)) - 1;
        struct mf_access acc = {offset + k, (in >> (8 * k)) & lane, (uint8_t)cw, is_write != 0};
        struct mf_result r;
        rc = mf_access_table(f, t, &acc, &r);
        res->value |= (r.value & lane) << (8 * k);
        res->outcome = k ? merge_outcome(res->outcome, r.outcome) : r.outcome;
        if (!is_write)
            mf_store_le(data + k, cw, r.value);
        if (rc != MF_OK)
            break; /* a device error: the pieces before it were done, the rest are not */
        k += cw;
    }
out:
    mf_hazard_exit();
    res->status = (int8_t)rc;
    return rc;
}

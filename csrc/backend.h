/*
 * backend.h - the only code that touches the device (with backend.c).
 *
 * Every call is exactly one device access of exactly the guest's width: registers have side
 * effects per access (a read that clears status, a FIFO that pops), so splitting, merging or
 * widening an access makes it a different access. The memory backend is inline here because
 * it is the one on the hot path: exact-width volatile loads and stores, never memcpy, whose
 * access widths the compiler and libc choose.
 */
#ifndef MF_BACKEND_H
#define MF_BACKEND_H

#include "mmiofilter.h"

/* Unaligned accesses are legal on PCI and x86; a type with alignment 1 lets the compiler
 * emit a single access of the full width without the undefined behaviour of a misaligned
 * uint32_t pointer (GCC/Clang attribute; the core is built with either). */
typedef uint16_t __attribute__((aligned(1), may_alias)) u16_any;
typedef uint32_t __attribute__((aligned(1), may_alias)) u32_any;
typedef uint64_t __attribute__((aligned(1), may_alias)) u64_any;

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define LE16(x) __builtin_bswap16(x)
#define LE32(x) __builtin_bswap32(x)
#define LE64(x) __builtin_bswap64(x)
#else
#define LE16(x) (x)
#define LE32(x) (x)
#define LE64(x) (x)
#endif

static inline int mf_mem_read(const struct mf_backend *b, uint64_t off, unsigned w, uint64_t *v)
{
    volatile uint8_t *p = (volatile uint8_t *)b->base + off;
    switch (w) {
    case 1: *v = *p; return 0;
    case 2: *v = LE16(*(volatile u16_any *)p); return 0;
    case 4: *v = LE32(*(volatile u32_any *)p); return 0;
    case 8: *v = LE64(*(volatile u64_any *)p); return 0;
    }
    return -1;
}

static inline int mf_mem_write(const struct mf_backend *b, uint64_t off, unsigned w, uint64_t v)
{
    volatile uint8_t *p = (volatile uint8_t *)b->base + off;
    switch (w) {
    case 1: *p = (uint8_t)v; return 0;
    case 2: *(volatile u16_any *)p = LE16((uint16_t)v); return 0;
    case 4: *(volatile u32_any *)p = LE32((uint32_t)v); return 0;
    case 8: *(volatile u64_any *)p = LE64(v); return 0;
    }
    return -1;
}

int mf_dev_read_slow(const struct mf_backend *b, uint64_t off, unsigned w, uint64_t *v);
int mf_dev_write_slow(const struct mf_backend *b, uint64_t off, unsigned w, uint64_t v);

/* One device access of `w` bytes; 0 on success. */
static inline int mf_dev_read(const struct mf_backend *b, uint64_t off, unsigned w, uint64_t *v)
{
    return b->kind == MF_BACKEND_MEMORY ? mf_mem_read(b, off, w, v) : mf_dev_read_slow(b, off, w, v);
}

static inline int mf_dev_write(const struct mf_backend *b, uint64_t off, unsigned w, uint64_t v)
{
    return b->kind == MF_BACKEND_MEMORY ? mf_mem_write(b, off, w, v)
                                        : mf_dev_write_slow(b, off, w, v);
}

#endif /* MF_BACKEND_H */

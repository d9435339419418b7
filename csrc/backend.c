/*
 * backend.c - the only code that touches the device.
 *
 * Every call is exactly one device access of exactly the guest's width: device registers have
 * side effects per access (a read that clears status, a FIFO that pops), so splitting,
 * merging or widening an access is a different access. That is why the memory backend uses
 * volatile loads and stores of the exact width and never memcpy, whose width the compiler
 * and libc choose.
 */
#include <errno.h>
#include <unistd.h>

#include "internal.h"

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

static int mem_read(const struct mf_backend *b, uint64_t off, unsigned w, uint64_t *v)
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

static int mem_write(const struct mf_backend *b, uint64_t off, unsigned w, uint64_t v)
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

/* vfio-pci's region read/write handlers turn one pread of width 1, 2, 4 or 8 into one device
 * access of that width, so the fd backend must never short-read or retry in pieces. */
static int fd_read(const struct mf_backend *b, uint64_t off, unsigned w, uint64_t *v)
{
    uint8_t buf[8];
    ssize_t n;
    do
        n = pread(b->fd, buf, w, b->fd_offset + (int64_t)off);
    while (n < 0 && errno == EINTR);
    if (n != (ssize_t)w)
        return -1;
    uint64_t x = 0;
    for (unsigned i = 0; i < w; i++)
        x |= (uint64_t)buf[i] << (8 * i);
    *v = x;
    return 0;
}

static int fd_write(const struct mf_backend *b, uint64_t off, unsigned w, uint64_t v)
{
    uint8_t buf[8];
    for (unsigned i = 0; i < w; i++)
        buf[i] = (uint8_t)(v >> (8 * i));
    ssize_t n;
    do
        n = pwrite(b->fd, buf, w, b->fd_offset + (int64_t)off);
    while (n < 0 && errno == EINTR);
    return n == (ssize_t)w ? 0 : -1;
}

int mf_dev_read(const struct mf_backend *b, uint64_t off, unsigned w, uint64_t *v)
{
    switch (b->kind) {
    case MF_BACKEND_MEMORY: return mem_read(b, off, w, v);
    case MF_BACKEND_FD: return fd_read(b, off, w, v);
    case MF_BACKEND_CALLBACK: return b->read(b->ctx, off, w, v) ? -1 : 0;
    }
    return -1;
}

int mf_dev_write(const struct mf_backend *b, uint64_t off, unsigned w, uint64_t v)
{
    switch (b->kind) {
    case MF_BACKEND_MEMORY: return mem_write(b, off, w, v);
    case MF_BACKEND_FD: return fd_write(b, off, w, v);
    case MF_BACKEND_CALLBACK: return b->write(b->ctx, off, w, v) ? -1 : 0;
    }
    return -1;
}

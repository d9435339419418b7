/*
 * backend.c - the fd and callback backends. The memory backend, the one on the hot path, is
 * inline in backend.h, which also says why every access keeps exactly the guest's width.
 */
#include <errno.h>
#include <unistd.h>

#include "backend.h"

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

int mf_dev_read_slow(const struct mf_backend *b, uint64_t off, unsigned w, uint64_t *v)
{
    switch (b->kind) {
    case MF_BACKEND_FD: return fd_read(b, off, w, v);
    case MF_BACKEND_CALLBACK: return b->read(b->ctx, off, w, v) ? -1 : 0;
    }
    return -1;
}

int mf_dev_write_slow(const struct mf_backend *b, uint64_t off, unsigned w, uint64_t v)
{
    switch (b->kind) {
    case MF_BACKEND_FD: return fd_write(b, off, w, v);
    case MF_BACKEND_CALLBACK: return b->write(b->ctx, off, w, v) ? -1 : 0;
    }
    return -1;
}

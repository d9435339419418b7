/*
 * kvm.c - a vCPU loop that answers trapped BAR accesses with the filter (mmiofilter_kvm.h).
 *
 * The path of a trapped access: the guest touches a page with no memory slot, KVM_RUN returns
 * KVM_EXIT_MMIO with the address, width and (for a write) data; we find the BAR window, call
 * the filter with the BAR offset, put a read's answer into kvm_run, and enter the guest again.
 * Nothing on that path allocates, locks or returns to Python, so the exit costs what KVM costs
 * plus the filter's lookup.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "chunk.h"
#include "mmiofilter_kvm.h"

int mf_kvm_open(void)
{
    int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (ioctl(fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) {
        close(fd);
        return -ENOTSUP;
    }
    return fd;
}

int mf_kvm_create_vm(int kvm_fd)
{
    int vm = ioctl(kvm_fd, KVM_CREATE_VM, 0);
    if (vm < 0)
        return -errno;
    /* Intel without unrestricted guest needs a TSS for real mode; harmless elsewhere. Put it
     * just below the 4 GiB firmware window, where no guest memory is. */
    (void)ioctl(vm, KVM_SET_TSS_ADDR, 0xfffbd000ul);
    return vm;
}

int mf_kvm_set_memory(int vm_fd, uint32_t slot, uint64_t gpa, uint64_t size, void *host,
                      int readonly)
{
    struct kvm_userspace_memory_region r = {
        .slot = slot,
        .flags = readonly ? KVM_MEM_READONLY : 0,
        .guest_phys_addr = gpa,
        .memory_size = size,
        .userspace_addr = (uint64_t)(uintptr_t)host,
    };
    return ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0 ? -errno : 0;
}

int mf_kvm_create_vcpu(int kvm_fd, int vm_fd, uint32_t id, void **run, size_t *run_size)
{
    int size = ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (size < (int)sizeof(struct kvm_run))
        return size < 0 ? -errno : -EINVAL;
    int vcpu = ioctl(vm_fd, KVM_CREATE_VCPU, (unsigned long)id);
    if (vcpu < 0)
        return -errno;
    void *p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (p == MAP_FAILED) {
        int e = -errno;
        close(vcpu);
        return e;
    }
    *run = p;
    *run_size = (size_t)size;
    return vcpu;
}

int mf_kvm_set_rsi(int vcpu_fd, uint64_t rsi)
{
    struct kvm_regs regs;
    if (ioctl(vcpu_fd, KVM_GET_REGS, &regs) < 0)
        return -errno;
    regs.rsi = rsi;
    return ioctl(vcpu_fd, KVM_SET_REGS, &regs) < 0 ? -errno : 0;
}

int mf_kvm_get_rip(int vcpu_fd, uint64_t *rip)
{
    struct kvm_regs regs;
    if (ioctl(vcpu_fd, KVM_GET_REGS, &regs) < 0)
        return -errno;
    *rip = regs.rip;
    return 0;
}

static uint64_t load_le(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n && i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static void store_le(uint8_t *p, unsigned n, uint64_t v)
{
    for (unsigned i = 0; i < n && i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static const struct mf_kvm_window *window_of(const struct mf_kvm_window *w, size_t n,
                                             uint64_t gpa, unsigned len)
{
    for (size_t i = 0; i < n; i++)
        if (gpa >= w[i].gpa && gpa - w[i].gpa < w[i].size && len <= w[i].size - (gpa - w[i].gpa))
            return &w[i];
    return NULL;
}

/* One MMIO exit inside a window: 0, or a negative MF_E* code from the filter.
 *
 * KVM hands over any length from 1 to 8: a guest access that crosses from a mapped page into
 * a trapped one arrives as the fragment in the trapped page (a 4-byte read at 0xFFF is 3 bytes
 * at 0x1000). The hardware would make it two bus transactions too. A fragment of 3, 5, 6 or 7
 * bytes is taken apart into naturally aligned accesses, each filtered on its own, so the
 * device still sees only widths it accepts and only bytes the policy passes. */
static int filter_mmio(const struct mf_kvm_window *w, struct kvm_run *run)
{
    unsigned len = run->mmio.len;
    if (!w->filter) {
        if (!run->mmio.is_write)
            store_le(run->mmio.data, len, w->constant);
        return 0;
    }
    uint64_t off = run->mmio.phys_addr - w->gpa;
    uint64_t data = run->mmio.is_write ? load_le(run->mmio.data, len) : 0;
    bool whole = len == 1 || len == 2 || len == 4 || len == 8; /* the guest's own width */
    for (unsigned k = 0; k < len;) {
        unsigned cw = whole ? len : mf_chunk_width(off + k, off + len);
        uint64_t lane = cw == 8 ? ~0ull : (1ull << (8 * cw)) - 1;
        struct mf_result res;
        int rc = mf_access_scalar(w->filter, off + k, cw, run->mmio.is_write,
                                  (data >> (8 * k)) & lane, &res);
        if (rc != MF_OK)
            return rc;
        if (!run->mmio.is_write)
            store_le(run->mmio.data + k, cw, res.value);
        k += cw;
    }
    return 0;
}

int mf_kvm_run(int vcpu_fd, void *run_area, const struct mf_kvm_window *windows,
               size_t nwindows, struct mf_kvm_stats *stats, struct mf_kvm_exit *ex)
{
    struct kvm_run *run = run_area;
    memset(ex, 0, sizeof *ex);
    for (;;) {
        if (ioctl(vcpu_fd, KVM_RUN, 0) < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                ex->kind = MF_KVM_PAUSED;
                return 0;
            }
            ex->kind = MF_KVM_ERROR;
            ex->error = errno;
            return -errno;
        }
        stats->exits++;
        ex->reason = run->exit_reason;
        switch (run->exit_reason) {
        case KVM_EXIT_MMIO: {
            unsigned len = run->mmio.len;
            const struct mf_kvm_window *w = window_of(windows, nwindows, run->mmio.phys_addr, len);
            if (w && len >= 1 && len <= 8) {
                int rc = filter_mmio(w, run);
                if (rc == 0) {
                    stats->mmio_handled++;
                    continue; /* the common case: straight back into the guest */
                }
                ex->kind = MF_KVM_ERROR;
                ex->error = rc;
            } else {
                ex->kind = MF_KVM_MMIO;
            }
            ex->address = run->mmio.phys_addr;
            ex->size = len;
            ex->is_write = run->mmio.is_write;
            ex->value = run->mmio.is_write ? load_le(run->mmio.data, len) : 0;
            return 0;
        }
        case KVM_EXIT_IO:
            ex->kind = MF_KVM_IO;
            ex->address = run->io.port;
            ex->size = run->io.size;
            ex->is_write = run->io.direction == KVM_EXIT_IO_OUT;
            /* one datum: string I/O (count > 1) is not something our guests do */
            ex->value = ex->is_write
                            ? load_le((uint8_t *)run + run->io.data_offset, run->io.size)
                            : 0;
            return 0;
        case KVM_EXIT_HLT:
            ex->kind = MF_KVM_HLT;
            return 0;
        case KVM_EXIT_SHUTDOWN:
            ex->kind = MF_KVM_SHUTDOWN;
            return 0;
        case KVM_EXIT_INTR:
            ex->kind = MF_KVM_PAUSED;
            return 0;
        default:
            ex->kind = MF_KVM_OTHER;
            return 0;
        }
    }
}

void mf_kvm_complete(void *run_area, uint64_t value)
{
    struct kvm_run *run = run_area;
    if (run->exit_reason == KVM_EXIT_IO && run->io.direction == KVM_EXIT_IO_IN)
        store_le((uint8_t *)run + run->io.data_offset, run->io.size, value);
    else if (run->exit_reason == KVM_EXIT_MMIO && !run->mmio.is_write)
        store_le(run->mmio.data, run->mmio.len, value);
}

void mf_kvm_pause(void *run_area)
{
    atomic_store((_Atomic uint8_t *)&((struct kvm_run *)run_area)->immediate_exit, 1);
}

void mf_kvm_resume(void *run_area)
{
    atomic_store((_Atomic uint8_t *)&((struct kvm_run *)run_area)->immediate_exit, 0);
}

uint64_t mf_kvm_rdtsc(void)
{
#if defined(__x86_64__) || defined(__i386__)
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return (uint64_t)hi << 32 | lo;
#else
    return 0;
#endif
}

uint64_t mf_kvm_tsc_hz(void)
{
    /* TSC ticks over 50 ms of CLOCK_MONOTONIC; constant_tsc makes one measure enough */
    struct timespec a, b, pause = {0, 50 * 1000 * 1000};
    clock_gettime(CLOCK_MONOTONIC, &a);
    uint64_t t0 = mf_kvm_rdtsc();
    nanosleep(&pause, NULL);
    uint64_t t1 = mf_kvm_rdtsc();
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = (double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec);
    return ns > 0 ? (uint64_t)((double)(t1 - t0) * 1e9 / ns) : 0;
}

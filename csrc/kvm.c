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
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <linux/kvm.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
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
#ifdef KVM_SYNC_X86_REGS
    /* KVM copies the registers into kvm_run at every exit: the loop reads the stack pointer
     * there (at_stack()) without an ioctl */
    int sync = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_SYNC_REGS);
    if (sync > 0 && (sync & KVM_SYNC_X86_REGS))
        ((struct kvm_run *)p)->kvm_valid_regs = KVM_SYNC_X86_REGS;
#endif
    *run = p;
    *run_size = (size_t)size;
    return vcpu;
}

int mf_kvm_set_cpuid(int kvm_fd, int vcpu_fd)
{
    /* what this KVM and host can give a guest, as QEMU's -cpu host starts from */
    for (unsigned n = 64; n <= 4096; n *= 2) {
        struct kvm_cpuid2 *c = calloc(1, sizeof *c + n * sizeof c->entries[0]);
        if (!c)
            return -ENOMEM;
        c->nent = n;
        if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c) < 0) {
            int e = errno;
            free(c);
            if (e == E2BIG)
                continue;
            return -e;
        }
        int rc = ioctl(vcpu_fd, KVM_SET_CPUID2, c) < 0 ? -errno : 0;
        free(c);
        return rc;
    }
    return -E2BIG;
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

static const struct mf_kvm_window *window_of(const struct mf_kvm_window *w, size_t n,
                                             uint64_t gpa, unsigned len)
{
    for (size_t i = 0; i < n; i++)
        if (gpa >= w[i].gpa && gpa - w[i].gpa < w[i].size && len <= w[i].size - (gpa - w[i].gpa))
            return &w[i];
    return NULL;
}

/* ---- page-crossing accesses ------------------------------------------------------------
 *
 * x86 KVM splits an emulated access at the guest's 4 KiB page boundary (arch/x86/kvm/x86.c,
 * emulator_read_write(): one emulator_read_write_onepage() per page, each MMIO part a
 * vcpu->mmio_fragments[] entry) and reports the fragments as consecutive KVM_EXIT_MMIO exits
 * of the same instruction, without entering the guest in between (complete_emulated_mmio()).
 * With immediate_exit set while a fragment is completed, KVM_RUN either reports the next
 * fragment or, the instruction being done, returns EINTR without entering the guest: that is
 * how the loop learns whether a piece ending at a page boundary has a continuation.
 *
 * A write piece carries no answer, so it is held until that is known, and a pair is decided as
 * the one access the guest made. A read piece must be answered before KVM names the next one
 * (complete_emulated_mmio() copies run->mmio.data into the instruction's buffer first), so a
 * page-crossing read is decided piece by piece and its events say so
 * (docs/contract-details.md, item 16). */
#define GUEST_PAGE 4096u
#define PROBE 2 /* our immediate_exit value; mf_kvm_pause() stores 1 */

static bool ends_page(uint64_t gpa, unsigned len) { return ((gpa + len) % GUEST_PAGE) == 0; }

static _Atomic uint8_t *exit_flag(struct kvm_run *run)
{
    return (_Atomic uint8_t *)&run->immediate_exit;
}

/* Set immediate_exit for one KVM_RUN unless a pause already did. */
static void probe_begin(struct kvm_run *run)
{
    uint8_t zero = 0;
    atomic_compare_exchange_strong(exit_flag(run), &zero, PROBE);
}

/* Clear our probe; a pause requested meanwhile (1) stays. True when no pause is pending. */
static bool probe_end(struct kvm_run *run)
{
    uint8_t mine = PROBE;
    atomic_compare_exchange_strong(exit_flag(run), &mine, 0);
    return atomic_load(exit_flag(run)) == 0;
}

static uint64_t next_seq(struct mf_filter *f)
{
    pthread_mutex_lock(&f->ring.lock);
    uint64_t s = f->ring.next_seq;
    pthread_mutex_unlock(&f->ring.lock);
    return s;
}

/* Give the events an access of [lo, hi) recorded from `from` on a detail saying how KVM
 * delivered it (the slow path: a page-crossing access). Another vCPU's event can be told
 * apart by its offset or direction; one at the same bytes at the same moment is not. */
static void note_events(struct mf_filter *f, uint64_t from, uint64_t lo, uint64_t hi,
                        bool is_write, const char *detail)
{
    struct mf_ring *r = &f->ring;
    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < r->count; i++) {
        struct mf_event *e = &r->buf[(r->head + i) % r->cap];
        if (e->seq >= from && e->offset >= lo && e->offset < hi && e->is_write == is_write &&
            !e->detail[0])
            snprintf(e->detail, sizeof e->detail, "%s", detail);
    }
    pthread_mutex_unlock(&r->lock);
}

int mf_kvm_mmio(struct mf_filter *f, uint64_t offset, struct mf_kvm_exit *ex, void *run,
                struct mf_result *res)
{
    uint8_t data[8] = {0};
    unsigned len = ex->size;
    if (ex->is_write)
        mf_store_le(data, len, ex->value);
    bool joined = (ex->flags & MF_KVM_JOINED) != 0;
    bool continued = (ex->flags & MF_KVM_CONTINUED) != 0;
    uint64_t from = joined ? next_seq(f) : ex->note_from;
    if (!ex->is_write && ends_page(ex->address, len))
        ex->note_from = next_seq(f); /* for its continuation's note, if one comes */
    int rc = mf_access_mmio(f, offset, len, (int)ex->is_write, data, res);
    char why[MF_DETAIL_MAX];
    if (joined) {
        snprintf(why, sizeof why, "page-crossing write, %u+%u bytes joined", ex->first,
                 len - ex->first);
        note_events(f, from, offset, offset + len, true, why);
    } else if (continued) { /* the previous read's events and this one's */
        snprintf(why, sizeof why, "page-crossing read, %u+%u bytes per page", ex->first, len);
        note_events(f, from, offset - ex->first, offset + len, false, why);
    }
    if (rc == MF_OK && !ex->is_write && run)
        mf_store_le(((struct kvm_run *)run)->mmio.data, len, res->value);
    return rc;
}

/* One MMIO access the loop answers: in C when its window `w` (window_of(), NULL for none)
 * covers it (true), else described in `ex` for the caller (false). A filter's failure is
 * described in `ex` too (false). */
static bool answer(const struct mf_kvm_window *w, struct kvm_run *run, struct mf_kvm_stats *stats,
                   struct mf_kvm_exit *ex)
{
    if (!w || ex->size < 1 || ex->size > 8) {
        ex->kind = MF_KVM_MMIO;
        return false;
    }
    if (!w->filter) { /* the floor: no decision at all */
        if (!ex->is_write)
            mf_store_le(run->mmio.data, ex->size, w->constant);
        stats->mmio_handled++;
        return true;
    }
    struct mf_result res;
    int rc = mf_kvm_mmio(w->filter, ex->address - w->gpa, ex, ex->is_write ? NULL : run, &res);
    if (rc != MF_OK) {
        ex->kind = MF_KVM_FILTER;
        ex->error = rc;
        return false;
    }
    stats->mmio_handled++;
    return true;
}

static void describe_mmio(const struct kvm_run *run, struct mf_kvm_exit *ex)
{
    ex->reason = KVM_EXIT_MMIO;
    ex->address = run->mmio.phys_addr;
    ex->size = run->mmio.len;
    ex->is_write = run->mmio.is_write;
    ex->value = run->mmio.is_write ? mf_load_le(run->mmio.data, run->mmio.len) : 0;
    ex->first = ex->size;
    ex->flags = 0;
}

/* Whether an MMIO access is at the guest's stack pointer: then the guest's stack is on a
 * trapped page, where KVM's emulator reports only one of the accesses of pushad, call, int...
 * (docs/kvm.md). The page offsets are compared first, so the translation (an ioctl) runs for
 * one access in 4096 at most; the stack segment is taken to be flat. */
static bool at_stack(int vcpu_fd, const struct kvm_run *run, uint64_t gpa)
{
#ifdef KVM_SYNC_X86_REGS
    if (!(run->kvm_valid_regs & KVM_SYNC_X86_REGS))
        return false;
    uint64_t rsp = run->s.regs.regs.rsp;
    if ((rsp ^ gpa) % GUEST_PAGE)
        return false;
    struct kvm_translation tr = {.linear_address = rsp};
    return ioctl(vcpu_fd, KVM_TRANSLATE, &tr) == 0 && tr.valid && tr.physical_address == gpa;
#else
    (void)vcpu_fd, (void)run, (void)gpa;
    return false;
#endif
}

/* An exit the loop stops at with an error: where the guest was, for the message. */
static void stop_at(int vcpu_fd, struct mf_kvm_exit *ex, uint32_t kind)
{
    struct kvm_regs regs;
    ex->kind = kind;
    if (ioctl(vcpu_fd, KVM_GET_REGS, &regs) == 0)
        ex->rip = regs.rip;
}

int mf_kvm_run(int vcpu_fd, void *run_area, const struct mf_kvm_window *windows,
               size_t nwindows, struct mf_kvm_stats *stats, struct mf_kvm_exit *ex)
{
    struct kvm_run *run = run_area;
    /* the caller handed back an exit whose successor is still in kvm_run (MF_KVM_AGAIN) */
    bool again = ex->kind == MF_KVM_MMIO && (ex->flags & MF_KVM_AGAIN);
    struct mf_kvm_exit held = {0};  /* a write piece ending at a page boundary */
    struct mf_kvm_exit piece = {0}; /* a read piece ending at one, already answered */
    bool holding = false;
    /* a read the caller answered may continue too */
    bool reading = ex->kind == MF_KVM_MMIO && !ex->is_write && ends_page(ex->address, ex->size);
    if (reading)
        piece = *ex;
    memset(ex, 0, sizeof *ex);
    for (;;) {
        if (!again) {
            bool probe = holding || reading;
            if (probe)
                probe_begin(run);
            int r = ioctl(vcpu_fd, KVM_RUN, 0);
            int err = errno;
            bool own = probe && probe_end(run);
            if (r < 0 && (err == EINTR || err == EAGAIN)) {
                /* no continuation: the instruction is done and the guest not re-entered */
                reading = false;
                if (holding) {
                    holding = false;
                    if (!answer(window_of(windows, nwindows, held.address, held.size), run, stats,
                                &held)) {
                        *ex = held;
                        return ex->kind == MF_KVM_FILTER ? ex->error : 0;
                    }
                }
                if (own)
                    continue;
                ex->kind = MF_KVM_PAUSED;
                return 0;
            }
            if (r < 0) {
                ex->kind = MF_KVM_ERROR;
                ex->error = -err;
                return -err;
            }
            stats->exits++;
        }
        again = false;
        bool mmio = run->exit_reason == KVM_EXIT_MMIO;
        if (holding) {
            holding = false;
            unsigned total = held.size + (mmio ? run->mmio.len : 0);
            const struct mf_kvm_window *hw = window_of(windows, nwindows, held.address, held.size);
            if (mmio && run->mmio.is_write && run->mmio.phys_addr == held.address + held.size &&
                total <= 8 && hw == window_of(windows, nwindows, held.address, total)) {
                /* the continuation: the pair is the guest's access */
                uint8_t data[8] = {0};
                mf_store_le(data, held.size, held.value);
                memcpy(data + held.size, run->mmio.data, run->mmio.len);
                held.size = total;
                held.value = mf_load_le(data, total);
                held.flags = MF_KVM_JOINED;
                if (answer(hw, run, stats, &held))
                    continue;
                *ex = held;
                return ex->kind == MF_KVM_FILTER ? ex->error : 0;
            }
            /* not a continuation: the held piece was an access of its own */
            if (!answer(hw, run, stats, &held)) {
                *ex = held;
                if (ex->kind == MF_KVM_FILTER)
                    return ex->error;
                ex->flags |= MF_KVM_AGAIN;
                return 0;
            }
        }
        if (reading) {
            reading = false;
            if (mmio && !run->mmio.is_write && run->mmio.phys_addr == piece.address + piece.size) {
                describe_mmio(run, ex);
                ex->flags = MF_KVM_CONTINUED;
                ex->first = piece.size;
                ex->note_from = piece.note_from;
                if (!answer(window_of(windows, nwindows, ex->address, ex->size), run, stats, ex))
                    return ex->kind == MF_KVM_FILTER ? ex->error : 0;
                memset(ex, 0, sizeof *ex);
                continue;
            }
        }
        ex->reason = run->exit_reason;
        switch (run->exit_reason) {
        case KVM_EXIT_MMIO: {
            describe_mmio(run, ex);
            if (at_stack(vcpu_fd, run, ex->address)) {
                stop_at(vcpu_fd, ex, MF_KVM_STACK);
                return 0;
            }
            const struct mf_kvm_window *w = window_of(windows, nwindows, ex->address, ex->size);
            if (ex->is_write && ex->size < 8 && ends_page(ex->address, ex->size)) {
                held = *ex; /* decided once we know whether it continues */
                holding = true;
                memset(ex, 0, sizeof *ex);
                continue;
            }
            if (!answer(w, run, stats, ex))
                return ex->kind == MF_KVM_FILTER ? ex->error : 0;
            if (!ex->is_write && w && w->filter && ends_page(ex->address, ex->size)) {
                piece = *ex; /* does it continue? (the probe tells) */
                reading = true;
            }
            memset(ex, 0, sizeof *ex);
            continue; /* the common case: straight back into the guest */
        }
        case KVM_EXIT_IO:
            ex->kind = MF_KVM_IO;
            ex->address = run->io.port;
            ex->size = run->io.size;
            ex->is_write = run->io.direction == KVM_EXIT_IO_OUT;
            /* one datum: string I/O (count > 1) is not something our guests do */
            ex->value = ex->is_write
                            ? mf_load_le((uint8_t *)run + run->io.data_offset, run->io.size)
                            : 0;
            return 0;
        case KVM_EXIT_HLT:
            ex->kind = MF_KVM_HLT;
            return 0;
        case KVM_EXIT_SHUTDOWN:
            stop_at(vcpu_fd, ex, MF_KVM_SHUTDOWN);
            return 0;
        case KVM_EXIT_INTR:
            ex->kind = MF_KVM_PAUSED;
            return 0;
        case KVM_EXIT_INTERNAL_ERROR:
            ex->suberror = run->internal.suberror;
            stop_at(vcpu_fd, ex, MF_KVM_INTERNAL);
            return 0;
        default:
            stop_at(vcpu_fd, ex, MF_KVM_OTHER);
            return 0;
        }
    }
}

void mf_kvm_complete(void *run_area, uint64_t value)
{
    struct kvm_run *run = run_area;
    if (run->exit_reason == KVM_EXIT_IO && run->io.direction == KVM_EXIT_IO_IN)
        mf_store_le((uint8_t *)run + run->io.data_offset, run->io.size, value);
    else if (run->exit_reason == KVM_EXIT_MMIO && !run->mmio.is_write)
        mf_store_le(run->mmio.data, run->mmio.len, value);
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

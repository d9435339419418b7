/*
 * mmiofilter_kvm.h - embedding the filter in a KVM vCPU loop (Linux, x86).
 *
 * A VMM maps the BAR's direct areas into the guest as memory slots, so the guest reaches them
 * with no exit, and leaves the trapped pages unmapped, so every access to them is a
 * KVM_EXIT_MMIO. mf_kvm_run() runs a vCPU and answers those exits itself, calling the filter
 * and re-entering the guest without returning to the caller; every other exit (I/O ports, HLT,
 * shutdown, a pause request) returns, decoded, for the caller (Python, in mmiofilter.kvm) to
 * handle. The thin ioctl wrappers here exist so that callers need no struct layouts of
 * linux/kvm.h.
 */
#ifndef MMIOFILTER_KVM_H
#define MMIOFILTER_KVM_H

#include <stddef.h>
#include <stdint.h>

#include "mmiofilter.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A guest-physical window that a filter answers: [gpa, gpa + size) is BAR offset 0.. */
struct mf_kvm_window {
    uint64_t gpa;
    uint64_t size;
    struct mf_filter *filter; /* NULL: answer reads with `constant`, drop writes (the floor) */
    uint64_t constant;
};

struct mf_kvm_stats {
    uint64_t exits;        /* every KVM_RUN return */
    uint64_t mmio_handled; /* MMIO exits answered inside the loop */
};

/* What mf_kvm_run() returns to its caller. */
enum mf_kvm_stop {
    MF_KVM_IO = 1,       /* port I/O: port, size, direction, value (out) */
    MF_KVM_MMIO = 2,     /* MMIO outside every window (or windows == NULL): address, size... */
    MF_KVM_HLT = 3,
    MF_KVM_SHUTDOWN = 4, /* triple fault; `rip` where the guest was */
    MF_KVM_PAUSED = 5,   /* mf_kvm_pause() was called, or a signal interrupted KVM_RUN */
    MF_KVM_OTHER = 6,    /* any other exit reason: see `reason` and `rip` */
    MF_KVM_ERROR = 7,    /* an ioctl (KVM_RUN) failed: `error` is -errno */
    MF_KVM_FILTER = 8,   /* the filter failed on a trapped access: `error` is an MF_E* code */
    MF_KVM_INTERNAL = 9, /* KVM_EXIT_INTERNAL_ERROR: KVM could not complete the instruction
                          * at `rip` (`suberror`: KVM_INTERNAL_ERROR_*, 1 = emulation) */
    MF_KVM_STACK = 10    /* an MMIO access (address, size...) at the guest's stack pointer:
                          * the stack is on a trapped page, which is unsupported; nothing was
                          * filtered or completed. `rip`: after a write, at a read */
};

/* mf_kvm_exit.flags. JOINED: an MMIO write made of the two page pieces of one instruction
 * (`first` bytes in the first page). AGAIN: kvm_run holds a further exit; pass this struct
 * back unchanged to the next mf_kvm_run(), which handles that exit before KVM_RUN.
 * CONTINUED: an MMIO read continuing the previous one (`first` bytes) across a page boundary,
 * in the same instruction. */
#define MF_KVM_JOINED 1
#define MF_KVM_AGAIN 2
#define MF_KVM_CONTINUED 4

/* Error codes, one convention: every code here is negative. A wrapper returns -errno; the
 * filter's codes are the MF_E* of mmiofilter.h; `kind` says which of the two `error` is. */
struct mf_kvm_exit {
    uint32_t kind;   /* enum mf_kvm_stop */
    uint32_t reason; /* KVM_EXIT_* */
    uint64_t address; /* port or guest-physical address */
    uint64_t value;   /* out/write data, little-endian */
    uint32_t size;
    uint32_t is_write;
    int32_t error;    /* MF_KVM_ERROR: -errno; MF_KVM_FILTER: MF_E*; else 0 */
    uint32_t suberror; /* MF_KVM_INTERNAL: run->internal.suberror */
    uint64_t rip;      /* SHUTDOWN, OTHER, INTERNAL, STACK: the guest's instruction pointer */
    uint32_t flags;    /* MF_KVM_JOINED, MF_KVM_AGAIN, MF_KVM_CONTINUED */
    uint32_t first;    /* MMIO: JOINED, CONTINUED: the bytes in the first page */
    uint64_t note_from; /* MMIO read: the filter's event seq before its first piece was
                         * decided (set by mf_kvm_mmio(); the CONTINUED piece notes from it) */
};

/* ioctl wrappers: return a file descriptor or >= 0 on success, -errno on failure. */
int mf_kvm_open(void);                     /* /dev/kvm, checking the API version */
int mf_kvm_create_vm(int kvm_fd);
int mf_kvm_set_memory(int vm_fd, uint32_t slot, uint64_t gpa, uint64_t size, void *host,
                      int readonly);       /* size 0 deletes the slot */
int mf_kvm_create_vcpu(int kvm_fd, int vm_fd, uint32_t id, void **run, size_t *run_size);
/* Give the vCPU every CPUID leaf KVM supports here (KVM_GET_SUPPORTED_CPUID, then
 * KVM_SET_CPUID2); before its first KVM_RUN. */
int mf_kvm_set_cpuid(int kvm_fd, int vcpu_fd);
int mf_kvm_set_rsi(int vcpu_fd, uint64_t rsi); /* the firmware's vCPU index */
int mf_kvm_get_rip(int vcpu_fd, uint64_t *rip);

/* Run until an exit the loop does not handle. MMIO inside a window is filtered there and then
 * (mf_kvm_mmio()). The caller completes an I/O or MMIO "in" by writing `value` with
 * mf_kvm_complete() before running again, and passes the same `exit` back each time (zeroed
 * before the first call). Returns 0, or the (negative) `error` of MF_KVM_ERROR and
 * MF_KVM_FILTER.
 *
 * Page-crossing accesses (docs/contract-details.md, item 16): KVM reports an access that
 * crosses from one trapped page into the next as one exit per page, back to back. A write
 * piece that ends at a page boundary is held, and KVM_RUN asked (immediate_exit) to report
 * its continuation without entering the guest: the two pieces are then decided as one access
 * (MF_KVM_JOINED), and a piece with no continuation alone, before the guest runs on. A read
 * piece must be answered before KVM reports the next one, so a page-crossing read is decided
 * per page (probed the same way), and its events say so (MF_KVM_CONTINUED). Instructions
 * KVM cannot emulate on MMIO stop the vCPU (MF_KVM_INTERNAL), and so does an access at the
 * guest's stack pointer (MF_KVM_STACK); see docs/kvm.md.
 *
 * Thread-safe per vCPU; windows and filters may be shared between vCPUs. */
int mf_kvm_run(int vcpu_fd, void *run, const struct mf_kvm_window *windows, size_t nwindows,
               struct mf_kvm_stats *stats, struct mf_kvm_exit *exit);
/* Decide the MMIO access `exit` describes (an MF_KVM_MMIO stop) at BAR offset `offset` with
 * mf_access_mmio(), noting a JOINED write or a CONTINUED read in the events (it may update
 * `exit->note_from`: pass the struct back to mf_kvm_run() as it is); for a read, also
 * complete kvm_run (`run`, or NULL not to). Returns the filter's status. */
int mf_kvm_mmio(struct mf_filter *f, uint64_t offset, struct mf_kvm_exit *exit, void *run,
                struct mf_result *res);
/* Give the data of an "in" port access or MMIO read that mf_kvm_run returned. */
void mf_kvm_complete(void *run, uint64_t value);
/* Ask the vCPU to return MF_KVM_PAUSED at its next entry (set from any thread; to interrupt a
 * vCPU already in the guest, also signal its thread). mf_kvm_resume() clears it. */
void mf_kvm_pause(void *run);
void mf_kvm_resume(void *run);

/* Host time-stamp counter and its rate, to turn the guest's rdtsc deltas into nanoseconds. */
uint64_t mf_kvm_rdtsc(void);
uint64_t mf_kvm_tsc_hz(void);

#ifdef __cplusplus
}
#endif
#endif /* MMIOFILTER_KVM_H */

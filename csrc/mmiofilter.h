/*
 * mmiofilter.h - the public C API of the mmiofilter core.
 *
 * What it promises is docs/contract.md, cited below as "contract §n"; the points it leaves
 * open are numbered in docs/contract-details.md.
 *
 * A VMM traps guest accesses to the pages of a PCI BAR that hold protected registers and hands
 * each trapped access to this core, which decides it byte by byte against a compiled policy and
 * touches the device only with bytes the policy passes. The Python package is one user of this
 * API (through cffi); a VMM written in C is another, and the fuzzers a third.
 *
 * Life cycle
 *   1. Describe the rules of one BAR (struct mf_rule) and compile them with mf_table_compile().
 *      A table is immutable: the rules resolved into non-overlapping byte runs, the index that
 *      finds the run of any offset, the page layout. Only its hit counters change.
 *   2. Create a filter with mf_filter_new(): a backend (how to reach the device), the backends
 *      redirect rules are served by (targets, by index), the BAR index, an event-ring capacity
 *      and the first table, which the filter then owns.
 *   3. Call mf_access() (one access) or mf_access_batch() (many) from any number of threads.
 *   4. Swap policies with mf_filter_update(): the new table is published atomically and the old
 *      one is handed back once no access can still be reading it.
 *   5. mf_filter_free() when no thread uses the filter any more.
 *
 * Security property: the device is never touched by a byte the policy does not pass. An access
 * that fails validation touches nothing and records nothing.
 *
 * All multi-byte values are little-endian, as on PCI. Thread safety: every function taking a
 * filter may be called concurrently, except mf_filter_free(). Tables are read-only once
 * compiled and may be shared for layout queries.
 */
#ifndef MMIOFILTER_H
#define MMIOFILTER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- version --------------------------------------------------------------------------
 *
 * The one source of the project's version: the Python package (mmiofilter.__version__,
 * pyproject's version), the shared library's name and mmiofilter.pc are all read from these
 * three numbers. The soname changes with MF_VERSION_MAJOR. */
#define MF_VERSION_MAJOR 0
#define MF_VERSION_MINOR 1
#define MF_VERSION_PATCH 0
#define MF_VERSION_STR_(x) #x
#define MF_VERSION_XSTR_(x) MF_VERSION_STR_(x)
#define MF_VERSION_STRING                                                                      \
    MF_VERSION_XSTR_(MF_VERSION_MAJOR) "." MF_VERSION_XSTR_(MF_VERSION_MINOR) "."              \
    MF_VERSION_XSTR_(MF_VERSION_PATCH)

/* The version of the library actually loaded ("0.1.0"), which may differ from the header's
 * MF_VERSION_STRING when a program runs against a newer shared library. */
const char *mf_version(void);

/* ---- actions, outcomes, error codes ---------------------------------------------------- */

/* Per-byte actions (docs/contract-details.md). The codes are only names: what each action
 * does, and how restrictive it is when rules of equal priority overlap (deny > emulate >
 * redirect > mask > readonly > guard > audit > allow), is one table in the core
 * (csrc/actions.h); new actions are appended. */
enum mf_action {
    MF_ALLOW = 0,    /* read and write pass */
    MF_AUDIT = 1,    /* pass, and the access is recorded as an event */
    MF_READONLY = 2, /* read passes, write dropped */
    MF_MASK = 3,     /* read passes, write passes with bits forced: b' = (b & ~m) | (v & m) */
    MF_EMULATE = 4,  /* read returns the rule's value byte, write dropped; device untouched */
    MF_DENY = 5,     /* read returns the fill byte, write dropped */
    MF_GUARD = 6,    /* a stateful guard decides each access (struct mf_guard_spec); a guard
                        must own every byte of its registers */
    MF_REDIRECT = 7  /* read from / written to the rule's target backend; device untouched */
};
#define MF_NUM_ACTIONS 8

enum mf_outcome {
    MF_PASS = 0,     /* the device saw exactly the guest's access */
    MF_MASKED = 1,   /* a write reached the device with some bits forced */
    MF_EMULATED = 2, /* a read answered wholly from rule values, device untouched */
    MF_BLOCKED = 3,  /* nothing reached the device; a read returned fill */
    MF_PARTIAL = 4,  /* split mode: only the passing bytes reached the device (or a target) */
    MF_REDIRECTED = 5 /* one redirect rule owned every byte: the access went to its target,
                         the device untouched; counted, not an event */
};

enum mf_partial_mode { MF_PARTIAL_DENY = 0, MF_PARTIAL_SPLIT = 1 };
enum mf_unaligned_mode { MF_UNALIGNED_ALLOW = 0, MF_UNALIGNED_DENY = 1 };

/* Return codes. Conventions: every function returning int returns MF_OK (0) or one of the
 * negative codes below, each with one meaning; functions returning a pointer return NULL on
 * failure and say why in a struct mf_error (when the caller passes one); an access also
 * leaves its code in mf_result.status. mf_strerror() names a code. */
#define MF_OK 0
#define MF_EWIDTH (-1)   /* access width not 1, 2, 4 or 8 */
#define MF_ERANGE (-2)   /* offset + width outside the BAR (wrap included) */
#define MF_EVALUE (-3)   /* write value does not fit in the width */
#define MF_EDEVICE (-4)  /* the device backend failed; some split chunks may have been done */
#define MF_EINVAL (-5)   /* a bad argument to compile/new/update; mf_error says which */
#define MF_ENOMEM (-6)   /* out of memory */
#define MF_EBUSY (-7)    /* mf_filter_update() from inside an access: it would wait for itself */
/* MF_ENESTED: accesses nested more than MF_NESTING_MAX filters deep (callback backends
 * calling into filters); nothing was touched. MF_ETARGET: a redirect target's backend failed;
 * some split chunks may have been done. The codes are -1..-MF_ERRORS_MAX. */
#define MF_ENESTED (-8)
#define MF_ETARGET (-9)
#define MF_ERRORS_MAX 9

/* A short English description of a return code ("unknown error" for any other value). */
const char *mf_strerror(int code);

#define MF_NESTING_MAX 8

/* ---- rules and tables ------------------------------------------------------------------ */

#define MF_NAME_MAX 64 /* rule names are at most 63 bytes and a NUL */
#define MF_NO_RULE UINT32_MAX
#define MF_NUM_BARS 6           /* BAR indexes are 0..5 (PCI type 0 header) */
#define MF_TARGETS_MAX 16       /* redirect targets one filter can have */
#define MF_RING_MAX 16777216    /* largest event ring (2^24 events) */
#define MF_RULES_MAX 1073741824 /* rules in one table (2^30) */

/* ---- guards (docs/fsp-guard.md): stateful rules for protocols carried over MMIO --------
 *
 * A guard rule (action MF_GUARD) names a guard kind and its parameters. It owns a fixed set of
 * 4-byte registers derived from the parameters; every access to one of them goes, in order and
 * under the guard's lock, to the guard, which decides it from the protocol state it keeps:
 * pass, refuse (BLOCKED: a read returns fill, a write is dropped) or answer itself (EMULATED:
 * a read returns the guard's value, a write is held by the guard). An access that is not
 * exactly one register (width 4, aligned) is refused. The guard's state lives with the compiled
 * table; mf_filter_update() hands it to the next table when that table has a guard of the same
 * kind on the same registers (its parameters may differ), so a policy swap neither forgets a
 * message in flight nor lets two states disagree. A guard new to a filter refuses every access
 * until the swap that introduced it has drained the old table. A table published again (one a
 * previous mf_filter_update() handed back) is such a guard too: its old state missed what was
 * done under the tables in between, so it gets a fresh one.
 *
 * The rule's start and size must be the span of the guard's registers (lowest register to the
 * end of the highest); the bytes between register blocks are not the guard's.
 */
enum mf_guard_kind { MF_GUARD_FSP = 1 };
#define MF_GUARD_KINDS 2 /* one more than the highest kind */

#define MF_FSP_PORTS 8          /* EMEM ports, command queues, message queues: all 8 guarded */
#define MF_FSP_MAX_CHANNELS 8
#define MF_FSP_EMEM_BYTES 65536 /* EMEMC bits 15:0 address EMEM bytes */
#define MF_FSP_NVDM_PRC 19      /* 0x13: PRC, decided on its sub-message (packet byte 8) */

/* NVIDIA FSP mailbox (GH100; docs/fsp-guard.md). Registers, as BAR offsets:
 * EMEMC(i) = emem + 8i, EMEMD(i) = emem + 8i + 4, QUEUE_HEAD(i) = queue + 8i,
 * QUEUE_TAIL(i) = queue + 8i + 4, MSGQ_HEAD(i) = msgq + 8i, MSGQ_TAIL(i) = msgq + 8i + 4, for
 * i < MF_FSP_PORTS: the guard owns all eight of each (all eight ports write the same EMEM),
 * whatever `channels` says. The three blocks must not overlap. Channel q is EMEM
 * [q * max_packet, (q + 1) * max_packet); a packet starts at its channel's base. Queues
 * q >= channels are closed (their writes are refused), and EMEM writes outside the channel
 * areas [0, channels * max_packet) are refused. */
struct mf_fsp_params {
    uint64_t emem, queue, msgq;
    uint32_t channels;   /* 1..MF_FSP_MAX_CHANNELS: queues the guest may use */
    uint32_t max_packet; /* channel bytes, a multiple of 4 in 20..MF_FSP_EMEM_BYTES, with
                          * channels * max_packet <= MF_FSP_EMEM_BYTES (GH100: 1024) */
    uint8_t deny[32];     /* refused NVDM types: bit t % 8 of byte t / 8 */
    uint8_t prc_deny[32]; /* refused PRC sub-messages (MF_FSP_NVDM_PRC), by packet byte 8 */
};

/* A guard's kind and its parameters: a tagged union, so that a new kind adds a member and
 * leaves the size and layout of the struct as they are. */
struct mf_guard_spec {
    uint8_t kind; /* enum mf_guard_kind: which member of the union holds */
    union {
        struct mf_fsp_params fsp;
        uint64_t reserved[32]; /* the union's size: 256 bytes whatever the kinds */
    };
};

struct mf_rule {
    const char *name;       /* copied at compile time; at most MF_NAME_MAX - 1 bytes */
    uint64_t start;         /* first byte, relative to the BAR */
    uint64_t size;          /* >= 1; start + size <= BAR size */
    int32_t priority;       /* the highest priority owns a byte */
    uint8_t action;         /* enum mf_action */
    /* value and mask laid little-endian over the rule's bytes; bytes past *_len are 0.
     * *_len <= size. Copied at compile time. */
    const uint8_t *value;
    size_t value_len;
    const uint8_t *mask;
    size_t mask_len;
    const struct mf_guard_spec *guard; /* action MF_GUARD only, else NULL; copied */
    /* action MF_REDIRECT only, else 0: byte start + i of the BAR is byte target_offset + i
     * of the filter's target backend number `target` (mf_filter_new's targets[target]);
     * target_offset + size must not pass 2^64. */
    uint32_t target;
    uint64_t target_offset;
};

struct mf_config {
    uint64_t bar_size;  /* bytes, >= 1 */
    uint64_t page_size; /* a power of two >= 4096 */
    uint8_t fill;       /* returned for denied bytes (0xFF: what vfio and a PCI master abort give) */
    uint8_t partial;    /* enum mf_partial_mode */
    uint8_t unaligned;  /* enum mf_unaligned_mode */
};

/* Why compile/new/update failed: `rule` is the index of the offending rule or -1. */
struct mf_error {
    int64_t rule;
    char message[160];
};

struct mf_table;

/* Check one rule on its own, before it meets a BAR: its name (1..MF_NAME_MAX - 1 bytes of
 * printable ASCII, no leading or trailing space, not starting with '(', which names the
 * filter's own decisions in events), action, size >= 1, start + size within 2^64, value and
 * mask within the rule, target fields (redirect only). mf_table_compile() runs the same checks
 * on every rule, then checks it against the BAR and its guard. MF_OK or MF_EINVAL with err. */
int mf_rule_check(const struct mf_rule *r, struct mf_error *err);

/* Compile `n` rules (all of one BAR) into a table. Returns NULL and fills `err` (if not NULL)
 * on bad input. Cost O(n log n); memory O(n), independent of the BAR and page size. */
struct mf_table *mf_table_compile(const struct mf_rule *rules, size_t n,
                                  const struct mf_config *cfg, struct mf_error *err);
void mf_table_free(struct mf_table *t);

/* Bytes the table occupies (the figure that must not grow with the BAR). */
size_t mf_table_footprint(const struct mf_table *t);
/* Number of resolved byte runs (including the implicit-allow gaps) and of indexed pages. */
size_t mf_table_runs(const struct mf_table *t);
size_t mf_table_indexed_pages(const struct mf_table *t);
size_t mf_table_rule_count(const struct mf_table *t);
const char *mf_table_rule_name(const struct mf_table *t, size_t rule);
/* Copy the per-rule hit counters (accesses that touched a byte the rule owns) into out[n]. */
void mf_table_counters(const struct mf_table *t, uint64_t *out, size_t n);

/* ---- page layout (contract §4) --------------------------------------------------------- */

struct mf_area {
    uint64_t offset; /* page-aligned */
    uint64_t length; /* a non-zero multiple of the page size */
};

/* Pages come in three classes: direct (every byte allow: map read-write), read-direct (only
 * allow, readonly and mask bytes, so no read is hidden, changed or recorded: map read-only,
 * e.g. KVM_MEM_READONLY, and only writes exit) and trapped (any other byte, or the partial last
 * page: every access exits). A VMM that cannot map read-only traps read-direct pages too; the
 * filter decides every access that reaches it the same way whatever its page's class. */

/* The direct areas: maximal runs of direct pages, sorted. Writes at most `cap` areas to `out`
 * and returns how many there are in all (call with cap 0 to size). */
size_t mf_table_direct_areas(const struct mf_table *t, struct mf_area *out, size_t cap);
/* The read-direct areas: maximal runs of read-direct pages, sorted; as above. */
size_t mf_table_read_direct_areas(const struct mf_table *t, struct mf_area *out, size_t cap);
/* Pages that are not direct: read-direct and trapped pages (what a VMM that maps nothing
 * read-only traps). */
uint64_t mf_table_trapped_pages(const struct mf_table *t);
/* Pages that are read-direct (a subset of mf_table_trapped_pages). */
uint64_t mf_table_read_direct_pages(const struct mf_table *t);
/* Collateral: what page granularity costs. For writes, the allow bytes outside direct pages;
 * for reads, the bytes whose reads pass unrecorded (allow, readonly, mask) in trapped pages.
 * mf_table_collateral is mf_table_collateral_write (its meaning before read-direct pages). */
uint64_t mf_table_collateral_write(const struct mf_table *t);
uint64_t mf_table_collateral_read(const struct mf_table *t);
uint64_t mf_table_collateral(const struct mf_table *t);
/* Write the layout as a struct vfio_region_info_cap_sparse_mmap (linux/vfio.h: 16-byte
 * header {id=1, version=1, next=0, nr_areas, reserved} then {offset, size} per direct area),
 * little-endian. Returns the byte length; writes only if it fits in `cap`. The capability
 * cannot say read-only: it lists the direct areas only. */
size_t mf_table_sparse_mmap(const struct mf_table *t, uint8_t *out, size_t cap);

/* ---- backends -------------------------------------------------------------------------- */

enum mf_backend_kind { MF_BACKEND_MEMORY = 0, MF_BACKEND_FD = 1, MF_BACKEND_CALLBACK = 2 };

/* Callback backend: return 0 on success, non-zero on failure. `value` is little-endian in
 * meaning: a 2-byte read at offset o returns byte o in bits 7:0. */
typedef int (*mf_read_fn)(void *ctx, uint64_t offset, unsigned width, uint64_t *value);
typedef int (*mf_write_fn)(void *ctx, uint64_t offset, unsigned width, uint64_t value);

struct mf_backend {
    uint8_t kind;             /* enum mf_backend_kind */
    /* memory: the BAR mapped at `base` (an mmap of resourceN, a VFIO region, a memfd);
     * accessed with exact-width volatile loads and stores, never memcpy. */
    volatile void *base;
    uint64_t length;          /* bytes mapped at base: must cover the BAR */
    /* fd: pread/pwrite of exactly the width at `fd_offset` + offset (the VFIO slow path). */
    int fd;
    int64_t fd_offset;
    /* callback: a device model. */
    mf_read_fn read;
    mf_write_fn write;
    void *ctx;
};

/* ---- filters and accesses -------------------------------------------------------------- */

struct mf_filter;

/* Create a filter over `backend` (copied) with a first table (owned by the filter from then
 * on, also on failure). `targets` are the ntargets (0..MF_TARGETS_MAX) backends redirect
 * rules name by index (copied; NULL when ntargets is 0): the VMM's config-space emulation,
 * say. A table with a redirect rule naming a target the filter does not have is refused.
 * `ring_capacity` in 1..MF_RING_MAX events. Returns NULL and fills err on failure. */
struct mf_filter *mf_filter_new(const struct mf_backend *backend,
                                const struct mf_backend *targets, size_t ntargets,
                                uint32_t bar, size_t ring_capacity, struct mf_table *table,
                                struct mf_error *err);
/* Free the filter and its current table. No access may be in progress or follow. */
void mf_filter_free(struct mf_filter *f);

/* Publish `t` (same BAR size and page size as the current table) atomically: every access
 * sees all of the old table or all of the new one. Returns once no access can still be
 * reading the old table, which is handed back in *old for the caller to read its counters
 * and free. Updates are serialized. On failure `t` stays the caller's, the current table
 * stays in force and err (if not NULL) says why: MF_EINVAL (a bad table: another BAR or page
 * size, a redirect target the filter does not have) or MF_EBUSY (called from inside an
 * access on a filter, through a callback backend, where waiting would deadlock). */
int mf_filter_update(struct mf_filter *f, struct mf_table *t, struct mf_table **old,
                     struct mf_error *err);

/* Copy the current table's counters (n must be its rule count) and layout queries run
 * against whatever table is current; callers that need a stable view serialize with
 * updates themselves. */
int mf_filter_counters(struct mf_filter *f, uint64_t *out, size_t n);

struct mf_access {
    uint64_t offset;
    uint64_t value;   /* for writes */
    uint8_t width;    /* 1, 2, 4 or 8 */
    uint8_t is_write;
};

struct mf_result {
    uint64_t value;   /* read: returned to the guest; write: what reached the device */
    int8_t status;    /* MF_OK or a negative MF_E* code */
    uint8_t outcome;  /* enum mf_outcome, valid when status is MF_OK or MF_EDEVICE */
};

/* One access. Returns the status (also in res->status). */
int mf_access(struct mf_filter *f, const struct mf_access *acc, struct mf_result *res);
/* The same with the access as scalars, as a KVM_EXIT_MMIO handler has it. */
int mf_access_scalar(struct mf_filter *f, uint64_t offset, unsigned width, int is_write,
                     uint64_t value, struct mf_result *res);
/* `n` accesses in order, under one table: the batch sees a single policy. Returns the number
 * of accesses whose status is not MF_OK. */
size_t mf_access_batch(struct mf_filter *f, const struct mf_access *acc, struct mf_result *res,
                       size_t n);
/* One KVM_EXIT_MMIO as KVM gives it: `offset` is run->mmio.phys_addr minus the BAR's guest
 * address, `len` is run->mmio.len (1 to 8) and `data` is run->mmio.data, little-endian: read
 * for a write, filled in for a read (copy nothing back: it is written in place). A length of
 * 1, 2, 4 or 8 is one access of that width. A length of 3, 5, 6 or 7 is the part of a
 * page-crossing access that lies in a trapped page; it is taken apart into naturally aligned
 * accesses, each decided on its own (docs/contract-details.md, item 11). The whole
 * fragment is validated first (MF_EWIDTH, MF_ERANGE: nothing touched, nothing recorded).
 * res->value is the fragment's value (read: as returned; write: as it reached the device);
 * res->outcome is the pieces' outcome when they agree, MF_MASKED when all passed and some
 * were masked, else MF_PARTIAL. Returns the status (also in res->status). */
int mf_access_mmio(struct mf_filter *f, uint64_t offset, unsigned len, int is_write,
                   uint8_t data[8], struct mf_result *res);

/* ---- events ---------------------------------------------------------------------------- */

#define MF_DETAIL_MAX 48

struct mf_event {
    uint64_t seq;
    uint64_t time_ns; /* CLOCK_REALTIME when the event was made, ns since the epoch */
    uint64_t offset;
    uint64_t value;   /* write: what the guest wrote; read: what it was returned */
    uint32_t bar;
    uint8_t width;
    uint8_t is_write;
    uint8_t outcome;
    char rule[MF_NAME_MAX]; /* the rule owning the first byte that did not pass */
    char detail[MF_DETAIL_MAX]; /* a guard's reason ("nvdm 0x12 refused"); else empty */
};

/* Move up to `cap` events, oldest first, out of the ring. Returns how many. */
size_t mf_drain_events(struct mf_filter *f, struct mf_event *out, size_t cap);
/* Events lost because the ring was full. */
uint64_t mf_events_dropped(struct mf_filter *f);
/* Events waiting in the ring. */
size_t mf_events_pending(struct mf_filter *f);

#ifdef __cplusplus
}
#endif
#endif /* MMIOFILTER_H */

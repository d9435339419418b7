/*
 * vmm.c - a minimal KVM VMM in plain C that puts mmiofilter in front of a device BAR.
 *
 * Build against the installed library and run (needs /dev/kvm; x86-64 host):
 *   make -C csrc install PREFIX=$HOME/.local
 *   make -C examples PKG_CONFIG_PATH=$HOME/.local/lib/pkgconfig
 *   LD_LIBRARY_PATH=$HOME/.local/lib examples/vmm
 *
 * What it shows, in the order a VMM does it (docs/embedding.md explains each step):
 *   1. the admin's policy as C rules, compiled into a table (mf_table_compile);
 *   2. a filter over the BAR (mf_filter_new); here the "device" is anonymous memory standing in
 *      for an mmap of a VFIO region or a sysfs resourceN file;
 *   3. the layout: the BAR's direct areas become KVM memory slots (no exits), its trapped pages
 *      stay unmapped, so every guest access to them is a KVM_EXIT_MMIO;
 *   4. the exit handler: each KVM_EXIT_MMIO in the BAR window goes to mf_access_mmio() exactly
 *      as KVM gives it, and the guest is entered again.
 * The guest is a few hand-assembled 32-bit instructions that read and write the BAR and print
 * what they read on port 0xE9. The program checks what the guest saw and what the device holds
 * afterwards, and exits non-zero if the filter let anything through that the policy forbids.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <mmiofilter.h>

#define RAM_SIZE 0x10000u       /* guest RAM at GPA 0, code at 0x1000 */
#define BAR_GPA 0xC0000000u     /* where the guest sees BAR0 */
#define BAR_SIZE 0x10000u       /* 64 KiB: sixteen 4 KiB pages */
#define PAGE 4096u
#define ID_VALUE 0x140000a1u    /* what the device's ID register at 0x0 holds */
#define NVLINK_BIT 0x02000000u  /* NV_PMC_ENABLE (0x200) bit 25, NVLINK (open-gpu-doc
                                   gv100 dev_master.ref.txt): the host set it, it stays set */

/* The guest: flat 32-bit code at 0x1000. Each `mov eax, [BAR + x]; out 0xE9, eax` reports
 * what the guest read. */
static const uint8_t guest[] = {
    0xA1, 0x00, 0x00, 0x00, 0xC0,             /* mov eax, [BAR+0x0]    ID register: passes  */
    0xE7, 0xE9,                               /* out 0xE9, eax                              */
    0xC7, 0x05, 0x00, 0x02, 0x00, 0xC0,       /* mov dword [BAR+0x200], 0                   */
    0x00, 0x00, 0x00, 0x00,                   /*      clear NV_PMC_ENABLE: bit 25 is forced  */
    0xA1, 0x00, 0x02, 0x00, 0xC0,             /* mov eax, [BAR+0x200]                       */
    0xE7, 0xE9,                               /* out 0xE9, eax                              */
    0xC7, 0x05, 0x00, 0x10, 0x00, 0xC0,       /* mov dword [BAR+0x1000], 0x12345678         */
    0x78, 0x56, 0x34, 0x12,                   /*      the flash window: dropped             */
    0xA1, 0x00, 0x10, 0x00, 0xC0,             /* mov eax, [BAR+0x1000]  reads fill          */
    0xE7, 0xE9,                               /* out 0xE9, eax                              */
    0xA1, 0x00, 0x20, 0x00, 0xC0,             /* mov eax, [BAR+0x2000]  direct page: no exit */
    0xE7, 0xE9,                               /* out 0xE9, eax                              */
    0xF4,                                     /* hlt                                        */
};

static void die(const char *what)
{
    perror(what);
    exit(2);
}

/* The admin's policy for this BAR, compiled. */
static struct mf_table *compile_policy(void)
{
    static const uint8_t nvlink[4] = {0, 0, 0, NVLINK_BIT >> 24}; /* little-endian */
    struct mf_rule rules[] = {
        {.name = "pmc-enable-nvlink", .start = 0x200, .size = 4, .action = MF_MASK,
         .mask = nvlink, .mask_len = 4, .value = nvlink, .value_len = 4},
        {.name = "flash", .start = 0x1000, .size = 0x100, .action = MF_DENY},
    };
    struct mf_config cfg = {.bar_size = BAR_SIZE, .page_size = PAGE, .fill = 0xFF};
    struct mf_error err;
    struct mf_table *t = mf_table_compile(rules, 2, &cfg, &err);
    if (!t) {
        fprintf(stderr, "policy: %s\n", err.message);
        exit(2);
    }
    return t;
}

/* Map the table's direct areas into the guest; the trapped pages stay holes. A VMM that swaps
 * policies (mf_filter_update) remaps the slots from the new table's layout. */
static void map_direct_areas(int vm, const struct mf_table *t, uint8_t *bar)
{
    struct mf_area areas[8];
    size_t n = mf_table_direct_areas(t, areas, 8);
    for (size_t i = 0; i < n && i < 8; i++) {
        struct kvm_userspace_memory_region r = {
            .slot = 1 + (uint32_t)i,
            .guest_phys_addr = BAR_GPA + areas[i].offset,
            .memory_size = areas[i].length,
            .userspace_addr = (uint64_t)(uintptr_t)(bar + areas[i].offset),
        };
        if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r) < 0)
            die("KVM_SET_USER_MEMORY_REGION (BAR)");
        printf("direct area [%#llx, +%#llx): mapped, no exits\n",
               (unsigned long long)areas[i].offset, (unsigned long long)areas[i].length);
    }
}

/* Flat 32-bit protected mode, no paging: the segment caches are set directly. */
static void enter_protected_mode(int vcpu)
{
    struct kvm_sregs s;
    if (ioctl(vcpu, KVM_GET_SREGS, &s) < 0)
        die("KVM_GET_SREGS");
    struct kvm_segment code = {.base = 0, .limit = 0xFFFFFFFF, .selector = 0x8, .type = 11,
                               .present = 1, .dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1};
    struct kvm_segment data = code;
    data.type = 3;
    data.selector = 0x10;
    s.cs = code;
    s.ds = s.es = s.fs = s.gs = s.ss = data;
    s.cr0 |= 1; /* PE */
    if (ioctl(vcpu, KVM_SET_SREGS, &s) < 0)
        die("KVM_SET_SREGS");
    struct kvm_regs regs = {.rip = 0x1000, .rflags = 0x2, .rsp = RAM_SIZE};
    if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0)
        die("KVM_SET_REGS");
}

static const char *outcome_name(uint8_t o)
{
    static const char *const names[] = {"pass",    "masked",  "emulated",
                                        "blocked", "partial", "redirected"};
    return o < sizeof names / sizeof names[0] ? names[o] : "?";
}

int main(void)
{
    printf("mmiofilter %s\n", mf_version());
    uint8_t *bar = mmap(NULL, BAR_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    uint8_t *ram = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (bar == MAP_FAILED || ram == MAP_FAILED)
        die("mmap");
    uint32_t id = ID_VALUE, enable = NVLINK_BIT | 0x1; /* what the host left in the device */
    memcpy(bar + 0x0, &id, 4);
    memcpy(bar + 0x200, &enable, 4);
    memcpy(bar + 0x2000, &id, 4);
    memcpy(ram + 0x1000, guest, sizeof guest);

    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0)
        die("/dev/kvm");
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0)
        die("KVM_CREATE_VM");
    struct kvm_userspace_memory_region mem = {
        .slot = 0, .guest_phys_addr = 0, .memory_size = RAM_SIZE,
        .userspace_addr = (uint64_t)(uintptr_t)ram,
    };
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &mem) < 0)
        die("KVM_SET_USER_MEMORY_REGION (RAM)");
    struct mf_table *table = compile_policy();
    map_direct_areas(vm, table, bar);
    struct mf_backend be = {.kind = MF_BACKEND_MEMORY, .base = bar, .length = BAR_SIZE};
    struct mf_error err;
    struct mf_filter *filter = mf_filter_new(&be, NULL, 0, 0, 64, table, &err); /* owns the table now */
    if (!filter) {
        fprintf(stderr, "filter: %s\n", err.message);
        return 2;
    }

    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (vcpu < 0 || run_size < (int)sizeof(struct kvm_run))
        die("KVM_CREATE_VCPU");
    struct kvm_run *run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (run == MAP_FAILED)
        die("mmap kvm_run");
    enter_protected_mode(vcpu);

    uint32_t seen[4];
    unsigned nseen = 0, mmio_exits = 0;
    for (;;) {
        if (ioctl(vcpu, KVM_RUN, 0) < 0)
            die("KVM_RUN");
        if (run->exit_reason == KVM_EXIT_HLT)
            break;
        if (run->exit_reason == KVM_EXIT_IO && run->io.port == 0xE9 && nseen < 4) {
            memcpy(&seen[nseen], (uint8_t *)run + run->io.data_offset, 4);
            printf("guest read 0x%08x\n", seen[nseen++]);
            continue;
        }
        if (run->exit_reason != KVM_EXIT_MMIO || run->mmio.phys_addr < BAR_GPA ||
            run->mmio.phys_addr - BAR_GPA >= BAR_SIZE) {
            fprintf(stderr, "unexpected exit %u\n", run->exit_reason);
            return 2;
        }
        /* The exit handler: the access exactly as KVM gives it (1..8 bytes, little-endian;
         * a read's data is filled in), then straight back into the guest. */
        struct mf_result res;
        uint64_t offset = run->mmio.phys_addr - BAR_GPA;
        int rc = mf_access_mmio(filter, offset, run->mmio.len, run->mmio.is_write,
                                run->mmio.data, &res);
        if (rc != MF_OK) {
            fprintf(stderr, "mf_access_mmio at %#llx: %s\n", (unsigned long long)offset,
                    mf_strerror(rc));
            return 2;
        }
        mmio_exits++;
        printf("exit: %-5s 0x%04llx len %u -> %s\n", run->mmio.is_write ? "write" : "read",
               (unsigned long long)offset, run->mmio.len, outcome_name(res.outcome));
    }

    struct mf_event ev[8];
    size_t nev = mf_drain_events(filter, ev, 8);
    for (size_t i = 0; i < nev; i++)
        printf("event: %s %#llx %s (rule %s)\n", ev[i].is_write ? "write" : "read",
               (unsigned long long)ev[i].offset, outcome_name(ev[i].outcome), ev[i].rule);

    /* The checks: what the guest saw, and what the device holds. */
    uint32_t enable_after, flash_after;
    memcpy(&enable_after, bar + 0x200, 4);
    memcpy(&flash_after, bar + 0x1000, 4);
    int ok = nseen == 4 && seen[0] == ID_VALUE && seen[1] == NVLINK_BIT &&
             seen[2] == 0xFFFFFFFFu && seen[3] == ID_VALUE && enable_after == NVLINK_BIT &&
             flash_after == 0 && mmio_exits == 5 && nev == 3;
    printf("mmio exits %u (the direct page cost none); NV_PMC_ENABLE 0x%08x; flash 0x%08x\n",
           mmio_exits, enable_after, flash_after);
    printf("%s\n", ok ? "the policy held" : "FAILED: the policy did not hold");
    mf_filter_free(filter);
    return ok ? 0 : 1;
}

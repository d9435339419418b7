/*
 * actions.h - what each action does to a byte, as data; not part of the API.
 *
 * One row per enum mf_action, in the spirit of vfio-pci's perm_bits (drivers/vfio/pci/
 * vfio_pci_config.c): the access path, the compiler and the layout read these properties and
 * never compare action codes, so a new action is one new row (and its own handling where a
 * property says "handled elsewhere"). A byte whose row says nothing passes does not pass:
 * the guard's bytes in an access that is not one whole guard register fail closed because
 * their row says so.
 */
#ifndef MF_ACTIONS_H
#define MF_ACTIONS_H

#include <stdbool.h>
#include <stdint.h>

#include "mmiofilter.h"

struct mf_action_row {
    const char *name; /* as a policy spells it */
    /* Restrictiveness for priority ties (docs/contract-details.md): the higher rank owns the
     * byte. Ranks are distinct. */
    uint8_t rank;
    /* Read of the byte: */
    bool read_passes;   /* the device is read and its byte returned as-is; else it is hidden */
    bool read_value;    /* a hidden byte is the rule's value byte (else the fill) */
    bool read_recorded; /* an access touching the byte is an event even when it passes */
    /* Write of the byte: */
    bool write_blocked;  /* the byte never reaches the device */
    bool write_forced;   /* the byte reaches the device with the rule's mask forced */
    bool write_recorded; /* as read_recorded, for writes */
    /* Where the byte is served from instead of the device: */
    bool redirected; /* reads and writes go to the rule's target backend */
    bool guarded;    /* a stateful guard decides an access that is exactly one of its
                        registers; in any other access the byte is refused (the flags above) */
};

/* Indexed by enum mf_action. Ranks follow deny > emulate > redirect > mask > readonly > guard >
 * audit > allow: a guard passes some writes, so it yields to every action that passes none. */
static const struct mf_action_row mf_action_rows[] = {
    [MF_ALLOW] = {.name = "allow", .rank = 0, .read_passes = true},
    [MF_AUDIT] = {.name = "audit", .rank = 1, .read_passes = true, .read_recorded = true,
                  .write_recorded = true},
    [MF_READONLY] = {.name = "readonly", .rank = 3, .read_passes = true, .write_blocked = true},
    [MF_MASK] = {.name = "mask", .rank = 4, .read_passes = true, .write_forced = true},
    [MF_EMULATE] = {.name = "emulate", .rank = 6, .read_value = true, .write_blocked = true},
    [MF_DENY] = {.name = "deny", .rank = 7, .write_blocked = true},
    [MF_GUARD] = {.name = "guard", .rank = 2, .read_recorded = true, .write_blocked = true,
                  .write_recorded = true, .guarded = true},
    [MF_REDIRECT] = {.name = "redirect", .rank = 5, .write_blocked = true, .redirected = true},
};
_Static_assert(sizeof mf_action_rows / sizeof mf_action_rows[0] == MF_NUM_ACTIONS,
               "one row per enum mf_action");

/* The row of a valid action code (the compiler refuses any other). */
static inline const struct mf_action_row *mf_action(uint8_t action)
{
    return &mf_action_rows[action];
}

/* A byte the VMM may map read-write into the guest: nothing about it needs the filter. */
static inline bool mf_action_direct(uint8_t action)
{
    const struct mf_action_row *a = mf_action(action);
    return a->read_passes && !a->read_recorded && !a->write_blocked && !a->write_forced &&
           !a->write_recorded && !a->redirected && !a->guarded;
}

/* A byte whose reads need no filter (writes still do): what a read-only mapping may expose. */
static inline bool mf_action_read_direct(uint8_t action)
{
    const struct mf_action_row *a = mf_action(action);
    return a->read_passes && !a->read_recorded && !a->redirected && !a->guarded;
}

#endif /* MF_ACTIONS_H */

"""The filtered device: a source, a `BarFilter` per BAR, what the client was allowed to map,
and policy reloads that never take a mapping back.

This state outlives a connection: once an fd of a BAR went out, the pages it covers stay
direct for the server's lifetime (vfio-user has no message to revoke a mapping, and a client
may have passed the fd on), so a reload that would trap one of them is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..devices import PolicyFile, attach
from ..filter import BarFilter
from ..results import Event
from .source import DeviceSource

log = logging.getLogger("mmiofilter")

PolicyLoader = Callable[[], PolicyFile]


class ReloadRefused(RuntimeError):
    pass


def _covered(area: tuple[int, int], direct: list[tuple[int, int]]) -> bool:
    off, length = area
    return any(o <= off and off + length <= o + n for o, n in direct)


def _pages(areas: list[tuple[int, int]], page: int) -> set[int]:
    return {at for off, n in areas for at in range(off, off + n, page)}


class FilteredDevice:
    def __init__(self, source: DeviceSource, load_policy: PolicyLoader) -> None:
        self.source = source
        self.load_policy = load_policy
        self.filters: dict[int, BarFilter] = {}
        #: BAR index -> page offsets an fd of it went out for (never shrinks).
        self.exported: dict[int, set[int]] = {}
        policy_file = load_policy()
        self.where = policy_file.where
        for index, size in source.bar_sizes().items():
            self.filters[index] = self._attach(policy_file, index, size)
        for index, f in self.filters.items():
            lay = f.layout
            log.info(
                "BAR%d: %d bytes, %d direct area(s) (%d bytes mapped by the client), "
                "%d trapped page(s), policy %s",
                index, f.size, len(lay.direct), lay.direct_bytes, lay.trapped_count, self.where,
            )  # fmt: skip

    def _attach(self, policy_file: PolicyFile, index: int, size: int) -> BarFilter:
        f, resolved = attach(
            policy_file,
            self.source.bar_backend(index),
            size,
            bar=index,
            targets={"config": self.source.config_target()},
        )
        for w in resolved.warnings:
            log.warning("BAR%d: %s", index, w)
        return f

    def mappable(self, index: int) -> list[tuple[int, int]]:
        """The direct areas of BAR `index` the client may map: none when the source offers no
        mapping (a real device's fd would map the whole BAR)."""
        if not self.source.can_export:
            return []
        return list(self.filters[index].layout.direct)

    def export(self, index: int, areas: list[tuple[int, int]]) -> int:
        """The fd that maps `areas` of BAR `index`; they stay direct from now on."""
        fd = self.source.export(index, areas)
        self.exported.setdefault(index, set()).update(_pages(areas, self.filters[index].page_size))
        return fd

    def reload(self) -> None:
        """Re-read the policy and swap it into every BAR's filter atomically, or change nothing
        and raise ReloadRefused / the policy's own error saying why."""
        policy_file = self.load_policy()
        staged: dict[int, BarFilter] = {}
        for index, f in self.filters.items():
            # A throwaway filter resolves the new policy against the device (discovery reads
            # only) and computes its layout, before anything changes.
            staged[index] = self._attach(policy_file, index, f.size)
        for index, new in staged.items():
            page = new.page_size
            exported = self.exported.get(index, set())
            lost = sorted(
                at for at in exported if not _covered((at, page), list(new.layout.direct))
            )
            if lost:
                rules = sorted(
                    {
                        r.name
                        for r in new.policy.for_bar(index)
                        for at in lost
                        if r.start < at + page and at < r.start + r.size
                    }
                )
                raise ReloadRefused(
                    f"reload of {policy_file.where} refused: it would trap {len(lost)} page(s) "
                    f"of BAR{index} that the client maps directly (first at {lost[0]:#x}; "
                    f"rules {', '.join(rules) or '(none)'}); vfio-user cannot take a mapping "
                    "back: restart the server to apply this policy"
                )
        for index, new in staged.items():
            self.filters[index].update(new.policy)
        self.where = policy_file.where
        log.info("policy reloaded from %s", policy_file.where)

    def drain_events(self) -> list[Event]:
        out: list[Event] = []
        for f in self.filters.values():
            out.extend(f.drain_events())
        return out

    def close(self) -> None:
        self.filters.clear()
        self.source.close()

"""The page layout of a filtered BAR (contract §4), as the C core computed it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    """Which pages a VMM may map into the guest and which it must trap.

    Pages come in three classes. Direct pages hold only `allow` bytes: the VMM maps them
    read-write and the guest's accesses cost no exit. Read-direct pages hold only `allow`,
    `readonly` and `mask` bytes, so no read is hidden, changed or recorded: the VMM maps them
    read-only (KVM_MEM_READONLY) and only writes exit. Every other page is trapped. A VMM that
    cannot map read-only traps read-direct pages as well: the filter decides every access that
    reaches it the same way whatever its page's class.

    `direct` and `read_direct` are the sorted maximal `(offset, length)` areas of direct and of
    read-direct pages. `sparse_mmap` holds vfio's VFIO_REGION_INFO_CAP_SPARSE_MMAP for the
    direct areas (the capability cannot say read-only). `trapped_count` counts the pages that
    are not direct (read-direct ones included, as before read-direct pages existed);
    `fully_trapped_count` those where reads exit too.

    Collateral is what page granularity costs: `collateral_write_bytes`, the `allow` bytes
    outside direct pages (their writes exit only because of their page; `collateral` is the
    same figure, its name before read-direct pages); `collateral_read_bytes`, the bytes whose
    reads pass unrecorded (`allow`, `readonly`, `mask`) in trapped pages.
    """

    size: int
    page_size: int
    direct: list[tuple[int, int]]
    trapped_count: int
    collateral: int
    sparse_mmap: bytes
    read_direct: list[tuple[int, int]]
    collateral_read_bytes: int

    @property
    def collateral_write_bytes(self) -> int:
        return self.collateral

    @property
    def pages(self) -> int:
        """Pages of the BAR, the partial last one included."""
        return -(-self.size // self.page_size)

    @property
    def trapped_pages(self) -> list[int]:
        """Indices of the pages that are not direct (the complement of `direct`, read-direct
        pages included); as long as their number."""
        return _complement(self.direct, self.pages, self.page_size)

    @property
    def fully_trapped_pages(self) -> list[int]:
        """Indices of the trapped pages, where reads exit too (neither direct nor
        read-direct); as long as their number."""
        mapped = sorted([*self.direct, *self.read_direct])
        return _complement(mapped, self.pages, self.page_size)

    @property
    def direct_bytes(self) -> int:
        return sum(length for _, length in self.direct)

    @property
    def read_direct_bytes(self) -> int:
        return sum(length for _, length in self.read_direct)

    @property
    def read_direct_count(self) -> int:
        """How many pages are read-direct."""
        return self.read_direct_bytes // self.page_size

    @property
    def fully_trapped_count(self) -> int:
        """How many pages are trapped for reads and writes alike."""
        return self.trapped_count - self.read_direct_count

    def page_class(self, offset: int) -> str:
        """ "direct", "read-direct" or "trapped": the class of the page holding `offset`."""
        if not 0 <= offset < self.size:
            raise ValueError(f"offset {offset:#x} is outside the BAR (size {self.size:#x})")
        for name, areas in (("direct", self.direct), ("read-direct", self.read_direct)):
            if any(off <= offset < off + length for off, length in areas):
                return name
        return "trapped"


def _complement(areas: list[tuple[int, int]], pages: int, page_size: int) -> list[int]:
    out: list[int] = []
    page = 0
    for off, length in [*areas, (pages * page_size, 0)]:
        first = off // page_size
        out.extend(range(page, first))
        page = first + length // page_size
    return out

"""The page layout of a filtered BAR (contract §4), as the C core computed it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    """Which pages a VMM may map into the guest (`direct`) and which it must trap.

    `direct` is the sorted list of maximal `(offset, length)` areas of direct pages: the same
    information as vfio's VFIO_REGION_INFO_CAP_SPARSE_MMAP, whose bytes `sparse_mmap` holds.
    `collateral` counts the allowed bytes that sit in trapped pages.
    """

    size: int
    page_size: int
    direct: list[tuple[int, int]]
    trapped_count: int
    collateral: int
    sparse_mmap: bytes

    @property
    def pages(self) -> int:
        """Pages of the BAR, the partial last one included."""
        return -(-self.size // self.page_size)

    @property
    def trapped_pages(self) -> list[int]:
        """Indices of the trapped pages (the complement of `direct`); as long as their number."""
        out: list[int] = []
        page = 0
        for off, length in [*self.direct, (self.pages * self.page_size, 0)]:
            first = off // self.page_size
            out.extend(range(page, first))
            page = first + length // self.page_size
        return out

    @property
    def direct_bytes(self) -> int:
        return sum(length for _, length in self.direct)

"""mmiofilter: a byte-exact userspace MMIO filter for PCI BARs passed through to VMs.

The contract is docs/contract.md; the points it leaves open are decided in
docs/contract-details.md.
"""

from ._version import __version__
from .backends import Backend, CallbackBackend, FdBackend, MemoryBackend
from .errors import AccessError, BackendError, PolicyError
from .filter import BarFilter
from .guards import FspGuard
from .layout import Layout
from .results import Event, Outcome, Result
from .rules import ACTIONS, Policy, Rule

__all__ = [
    "ACTIONS",
    "AccessError",
    "Backend",
    "BackendError",
    "BarFilter",
    "CallbackBackend",
    "Event",
    "FdBackend",
    "FspGuard",
    "Layout",
    "MemoryBackend",
    "Outcome",
    "Policy",
    "PolicyError",
    "Result",
    "Rule",
    "__version__",
]

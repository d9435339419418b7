"""What other components' tests import: the surface listed in docs/testing-helpers.md.

- Plain-Python helpers, usable under `@given`, in unittest or in a script (no pytest, no
  hypothesis): fake devices (`fake_device`, `FakeDevice`, `DeviceFactory`), filters over them
  (`bar_filter`, `device_of`, `model_filter`, the factories), simulated GPUs (`GpuSpec`,
  `simulated_gpu`), FSP mailbox scenarios (`Send`, `Raw`, `run_mailbox`,
  `assert_fsp_guarded`, ...), and the security check `assert_security`.
- The reference model (`ModelFilter`, `ModelDevice`, `owner`, `compute_layout`, ...): the
  oracle differential tests compare the C core and `BarFilter` against.
- Hypothesis strategies: random BARs, rules, policies and accesses (`strategies`), realistic
  ones (profile policies, register accesses, GPU specs: `device_strategies`) and FSP mailbox
  traffic (`fsp_strategies`). These need hypothesis (`pip install mmiofilter[testing]`).

Every name resolves on first use, so importing this package (as the pytest plugin does) costs
little and never needs hypothesis; only a strategy's name imports it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what type checkers see; at run time the names resolve lazily below
    from .device_strategies import (
        ProfilePolicy,
        gpu_specs,
        ioctrl_units,
        msix_configs,
        profile_names,
        profile_options,
        profile_policies,
        register_accesses,
    )
    from .devices import DeviceFactory, FakeDevice, MappingKeptWarning, fake_device
    from .filters import (
        BarFilterFactory,
        ModelFilterFactory,
        bar_filter,
        device_of,
        model_filter,
    )
    from .fsp_strategies import (
        cot_payloads,
        driver_sends,
        firmware_update_payloads,
        fsp_messages,
        hostile_sends,
        inforom_payloads,
        mailbox_accesses,
        mailbox_sequences,
        prc_payloads,
    )
    from .gpus import GpuSpec, SimulatedGpu, simulated_gpu
    from .mailbox import (
        InterleavedBar,
        Raw,
        Send,
        SendResult,
        assert_driver_served,
        assert_fsp_guarded,
        run_mailbox,
    )
    from .model import (
        MIN_PAGE_SIZE,
        UNALIGNED_RULE,
        WIDTHS,
        Device,
        ModelDevice,
        ModelFilter,
        ModelLayout,
        action_of,
        chunks,
        compute_layout,
        elementary_intervals,
        owner,
    )
    from .security import assert_security
    from .strategies import (
        BAD_WIDTHS,
        MAX_BAR_SIZE,
        PAGE_SIZES,
        PRIORITIES,
        Access,
        accesses,
        bar_sizes,
        invalid_accesses,
        page_sizes,
        policies,
        rule_names,
        rules,
    )

# name -> the submodule defining it. Modules marked (h) import hypothesis.
_WHERE: dict[str, str] = {
    **dict.fromkeys(
        (
            "MIN_PAGE_SIZE",
            "UNALIGNED_RULE",
            "WIDTHS",
            "Device",
            "ModelDevice",
            "ModelFilter",
            "ModelLayout",
            "action_of",
            "chunks",
            "compute_layout",
            "elementary_intervals",
            "owner",
        ),
        "model",
    ),
    "assert_security": "security",
    **dict.fromkeys(
        ("DeviceFactory", "FakeDevice", "MappingKeptWarning", "fake_device"), "devices"
    ),
    **dict.fromkeys(
        ("BarFilterFactory", "ModelFilterFactory", "bar_filter", "device_of", "model_filter"),
        "filters",
    ),
    **dict.fromkeys(("GpuSpec", "SimulatedGpu", "simulated_gpu"), "gpus"),
    **dict.fromkeys(
        (
            "InterleavedBar",
            "Raw",
            "Send",
            "SendResult",
            "assert_driver_served",
            "assert_fsp_guarded",
            "run_mailbox",
        ),
        "mailbox",
    ),
    **dict.fromkeys(  # (h)
        (
            "BAD_WIDTHS",
            "MAX_BAR_SIZE",
            "PAGE_SIZES",
            "PRIORITIES",
            "Access",
            "accesses",
            "bar_sizes",
            "invalid_accesses",
            "page_sizes",
            "policies",
            "rule_names",
            "rules",
        ),
        "strategies",
    ),
    **dict.fromkeys(  # (h)
        (
            "ProfilePolicy",
            "gpu_specs",
            "ioctrl_units",
            "msix_configs",
            "profile_names",
            "profile_options",
            "profile_policies",
            "register_accesses",
        ),
        "device_strategies",
    ),
    **dict.fromkeys(  # (h)
        (
            "cot_payloads",
            "driver_sends",
            "firmware_update_payloads",
            "fsp_messages",
            "hostile_sends",
            "inforom_payloads",
            "mailbox_accesses",
            "mailbox_sequences",
            "prc_payloads",
        ),
        "fsp_strategies",
    ),
}


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    except ModuleNotFoundError as e:
        if e.name != "hypothesis" and not (e.name or "").startswith("hypothesis."):
            raise
        raise ImportError(
            f"mmiofilter.testing.{name} is a hypothesis strategy and needs hypothesis: "
            "pip install mmiofilter[testing]"
        ) from e
    globals()[name] = value  # once resolved, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})


# The same names as _WHERE (a test checks), as a literal for type checkers and readers.
__all__ = [
    "BAD_WIDTHS",
    "MAX_BAR_SIZE",
    "MIN_PAGE_SIZE",
    "PAGE_SIZES",
    "PRIORITIES",
    "UNALIGNED_RULE",
    "WIDTHS",
    "Access",
    "BarFilterFactory",
    "Device",
    "DeviceFactory",
    "FakeDevice",
    "GpuSpec",
    "InterleavedBar",
    "MappingKeptWarning",
    "ModelDevice",
    "ModelFilter",
    "ModelFilterFactory",
    "ModelLayout",
    "ProfilePolicy",
    "Raw",
    "Send",
    "SendResult",
    "SimulatedGpu",
    "accesses",
    "action_of",
    "assert_driver_served",
    "assert_fsp_guarded",
    "assert_security",
    "bar_filter",
    "bar_sizes",
    "chunks",
    "compute_layout",
    "cot_payloads",
    "device_of",
    "driver_sends",
    "elementary_intervals",
    "fake_device",
    "firmware_update_payloads",
    "fsp_messages",
    "gpu_specs",
    "hostile_sends",
    "inforom_payloads",
    "invalid_accesses",
    "ioctrl_units",
    "mailbox_accesses",
    "mailbox_sequences",
    "model_filter",
    "msix_configs",
    "owner",
    "page_sizes",
    "policies",
    "prc_payloads",
    "profile_names",
    "profile_options",
    "profile_policies",
    "register_accesses",
    "rule_names",
    "rules",
    "run_mailbox",
    "simulated_gpu",
]

"""mmiofilter's hypothesis strategies in a component's property test, through the plugin."""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

from hypothesis import given, settings
from hypothesis import strategies as st

from mmiofilter.testing.security import assert_security

if TYPE_CHECKING:
    from mmiofilter.testing.pytest_plugin import BarFilterFactory, ModelFilterFactory

SIZE = 0x4000


# The factories are session-scoped, so hypothesis' health checks stay on: each example makes
# its own filters and devices, released as soon as it drops them.
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_random_policies_against_the_model(
    data: st.DataObject,
    mmio_strategies: ModuleType,
    bar_filter_factory: BarFilterFactory,
    model_filter_factory: ModelFilterFactory,
) -> None:
    policy = data.draw(mmio_strategies.policies(SIZE))
    f = bar_filter_factory(policy, size=SIZE, backend="callback")
    m = model_filter_factory(policy, size=SIZE)
    for acc in data.draw(st.lists(mmio_strategies.accesses(SIZE, policy), max_size=12)):
        assert f.access(*acc) == m.access(*acc)
    log = bar_filter_factory.device(f).log
    assert log == model_filter_factory.device(m).log
    assert_security(policy, log)

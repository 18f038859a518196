"""How a call is bound and keyed before it is registered (no backend involved)."""

from __future__ import annotations

import pytest

from tests.unit.unit_app import add


def test_call_keys_stay_what_earlier_versions_stored() -> None:
    # Call keys are stored by every backend and compared with new calls (registration
    # concurrency, deduplication): changing how they are computed orphans stored ones.
    assert add.make_call(add.bind((1, 2), {})).call_key == "319802229d09037b926c990ada42305c24fe964c"
    assert add.make_call(add.bind((), {"y": 2, "x": 1})).call_key == "319802229d09037b926c990ada42305c24fe964c"


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((1, 2), {}), ((1,), {"y": 2}), ((), {"x": 1, "y": 2}), ((), {"y": 2, "x": 1})],
)
def test_every_way_of_passing_the_same_arguments_binds_the_same(args: tuple[int, ...], kwargs: dict[str, int]) -> None:
    assert add.bind(args, kwargs) == {"x": 1, "y": 2}


@pytest.mark.parametrize(("args", "kwargs"), [((1,), {}), ((1, 2, 3), {}), ((1, 2), {"x": 1}), ((1,), {"z": 2})])
def test_a_call_that_does_not_fit_the_signature_is_refused_naming_the_task(
    args: tuple[int, ...], kwargs: dict[str, int]
) -> None:
    with pytest.raises(TypeError, match="tests.unit.unit_app.add"):
        add.bind(args, kwargs)

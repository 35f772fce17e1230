"""On/off environment switches: the accepted spellings, the default, and a clear error for anything else."""

from __future__ import annotations

import pytest

from neutrino.env import env_flag
from neutrino.errors import ConfigError
from neutrino.layers.quant.blocked import EXACT_ENV, exact_requested
from neutrino.models.decode_plan import PLAN_ENV, DecodePlan


@pytest.mark.parametrize("raw, expected", [("1", True), ("TRUE", True), ("yes", True), ("on", True),
                                           ("0", False), ("false", False), ("No", False), (" off ", False)])
def test_spellings(monkeypatch, raw: str, expected: bool) -> None:
    monkeypatch.setenv("NEUTRINO_X", raw)
    assert env_flag("NEUTRINO_X", not expected) is expected


def test_unset_or_empty_is_the_default(monkeypatch) -> None:
    monkeypatch.delenv("NEUTRINO_X", raising=False)
    assert env_flag("NEUTRINO_X", True) and not env_flag("NEUTRINO_X", False)
    monkeypatch.setenv("NEUTRINO_X", "")
    assert env_flag("NEUTRINO_X", True)


def test_the_engine_switches_reject_other_values(monkeypatch) -> None:
    monkeypatch.setenv(EXACT_ENV, "false")
    assert not exact_requested()  # "false" no longer means "not 0", i.e. on
    monkeypatch.setenv(EXACT_ENV, "exact")
    with pytest.raises(ConfigError, match=r"NEUTRINO_QUANT_EXACT='exact': expected one of 1, true"):
        exact_requested()
    monkeypatch.setenv(PLAN_ENV, "off")
    assert not DecodePlan().enabled
    monkeypatch.setenv(PLAN_ENV, "2")
    with pytest.raises(ConfigError, match=r"NEUTRINO_DECODE_PLAN='2'"):
        DecodePlan()

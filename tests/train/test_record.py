"""run.json's pinned fields that come from the pod's environment."""

from __future__ import annotations

import pytest

from kubetune.errors import ConfigError
from kubetune.kube.names import PARAMS_ENV
from kubetune.train import record


def test_sweep_params_come_from_the_run_else_from_the_launcher(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(PARAMS_ENV, raising=False)
    assert record.sweep_params({}) == {}
    monkeypatch.setenv(PARAMS_ENV, '{"lora.r": 8, "train.learning_rate": 0.0003}')
    assert record.sweep_params({}) == {"lora.r": 8, "train.learning_rate": 0.0003}
    assert record.sweep_params({"task": "few-shot"}) == {"task": "few-shot"}


@pytest.mark.parametrize("raw", ["[1, 2]", "{lr: 1"])
def test_a_params_variable_that_is_not_an_object_names_itself(
    raw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PARAMS_ENV, raw)
    with pytest.raises(ConfigError, match=f"^{PARAMS_ENV}: not a JSON object"):
        record.sweep_params({})

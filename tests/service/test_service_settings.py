"""Settings from the environment, fail-fast validation, the run command's metrics directory, module boundaries."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.__main__ import main
from service.main import metrics_dir
from service.metrics import MULTIPROC_ENV
from service.settings import Settings, available_cpus


def test_settings_come_from_prefixed_environment_variables(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "MODELS_STORE": str(store),
        "MODELS": "deepfm, xdeepfm",
        "PINNED_VERSIONS": "deepfm=3,xdeepfm=1",
        "POLL_INTERVAL_S": "2.5",
        "STRICT": "true",
        "ADMIN_TOKEN": "",  # empty counts as unset
        "WORKERS": "1",
        "TORCH_THREADS": "1",
    }.items():
        monkeypatch.setenv(f"DEEPFM_SERVE_{name}", value)
    settings = Settings()
    assert settings.models_store == store
    assert settings.models == ("deepfm", "xdeepfm")
    assert settings.pinned_versions == {"deepfm": 3, "xdeepfm": 1}
    assert (settings.poll_interval_s, settings.strict, settings.admin_token) == (2.5, True, None)
    monkeypatch.setenv("DEEPFM_SERVE_TORCH_THREADS", "2")
    assert Settings().torch_threads == 2
    monkeypatch.delenv("DEEPFM_SERVE_TORCH_THREADS")
    assert Settings().torch_threads == 1  # whatever the CPU count: more CPUs go to more workers


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"models_store": "/no/such/dir"}, "is not a directory"),
        ({"pinned_versions": "deepfm:3"}, "not of the form model=version"),
        ({"models": "xdeepfm"}, "default_model 'deepfm' is not among models"),
        ({"models": "deepfm", "pinned_versions": "xdeepfm=1"}, "pinned_versions names models that are not loaded"),
        ({"admin_token": "short"}, "at least 16 characters"),
        ({"poll_interval_s": "-1"}, "greater than or equal to 0"),
        ({"workers": "1", "torch_threads": str(available_cpus() + 1)}, "exceeds the"),
        ({"log_level": "loud"}, "log_level"),
        ({"max_batch_rows": "0"}, "max_batch_rows"),
        ({"poll_intervals": "3"}, r"unknown settings \['DEEPFM_SERVE_POLL_INTERVALS'\]"),
    ],
)
def test_bad_settings_fail_fast_with_a_clear_message(
    store: Path, monkeypatch: pytest.MonkeyPatch, overrides: dict[str, str], message: str
) -> None:
    monkeypatch.setenv("DEEPFM_SERVE_MODELS_STORE", str(store))
    for name, value in overrides.items():
        monkeypatch.setenv(f"DEEPFM_SERVE_{name.upper()}", value)
    with pytest.raises(ValidationError, match=message):
        Settings()


def test_the_run_command_refuses_bad_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DEEPFM_SERVE_MODELS_STORE", "/no/such/dir")
    assert main(["--port", "1"]) == 2
    (line,) = capsys.readouterr().err.splitlines()  # one line naming the variable
    assert line.startswith("invalid settings: DEEPFM_SERVE_MODELS_STORE: ") and "is not a directory" in line


def test_metrics_dir_is_made_for_several_workers_and_emptied_when_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with metrics_dir(workers=1):
        assert MULTIPROC_ENV not in os.environ
    with metrics_dir(workers=2):
        made = Path(os.environ[MULTIPROC_ENV])
        assert made.is_dir()
    assert not made.exists() and MULTIPROC_ENV not in os.environ
    given = tmp_path / "metrics"
    given.mkdir()
    (given / "counter_123.db").write_bytes(b"stale")
    monkeypatch.setenv(MULTIPROC_ENV, str(given))
    with metrics_dir(workers=2):
        assert list(given.iterdir()) == []

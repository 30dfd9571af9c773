"""The README's "Your own data" commands, run as written (bash) on a synthetic clicks.csv in a fresh folder;
then its example request row, scored by the service on the model they exported."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from synthetic_data import click_log

from deepfm.artifact import load_artifact
from service.app import create_app
from service.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
SECTION = re.search(r"^## Your own data\n(.*?)^## ", (REPO_ROOT / "README.md").read_text(), re.DOTALL | re.MULTILINE)
COMMANDS = re.findall(r"```bash\n(.*?)```", SECTION.group(1) if SECTION else "", re.DOTALL)
EXAMPLE_ROW = re.search(
    r"`POST /predict` takes raw rows such as `(\{.*?\})`", SECTION.group(1) if SECTION else "", re.DOTALL
)


def test_the_section_shows_init_train_and_evaluate() -> None:
    assert SECTION is not None and len(COMMANDS) == 1
    for command in ("deepfm init --data", "deepfm train --data", "deepfm train --config", "deepfm evaluate"):
        assert command in COMMANDS[0]
    assert EXAMPLE_ROW is not None


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The section's commands in a folder holding clicks.csv: (folder, their standard output)."""
    folder = tmp_path_factory.mktemp("own_data_readme")
    click_log(6_000, seed=2).to_csv(folder / "clicks.csv", index=False)
    script = COMMANDS[0].replace(".venv/bin/", f"{Path(sys.executable).parent}/")
    script = script.replace("configs/", f"{REPO_ROOT / 'configs'}/")
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=folder, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return folder, result.stdout


def test_the_commands_export_the_models_they_say(ran: tuple[Path, str]) -> None:
    folder, out = ran

    assert sorted(p.relative_to(folder / "models_store").as_posix() for p in (folder / "models_store").glob("*/*")) == [
        "deepfm/1",
        "deepfm/2",
        "xdeepfm/1",
    ]
    inferred = (folder / "my.yaml").read_text()
    assert "kind: table" in inferred and "{name: tags, type: sequence}" in inferred
    evaluated = json.loads(out[out.rindex("\n{\n") :])  # evaluate prints last
    recorded = load_artifact(folder / "models_store" / "deepfm" / "1").metadata["metrics"]["test"]
    assert evaluated["auc"] == pytest.approx(recorded["auc"], abs=1e-6)
    assert recorded["auc"] > 0.6


def test_the_example_row_scores_on_the_declared_model(ran: tuple[Path, str]) -> None:
    folder, _ = ran
    assert EXAMPLE_ROW is not None
    row = json.loads(EXAMPLE_ROW.group(1).replace("\n", " "))
    hand_declared = load_artifact(folder / "models_store" / "deepfm" / "2")
    assert hand_declared.schema.fields["ad"].transform.kind.value == "hash"

    with TestClient(
        create_app(Settings(models_store=folder / "models_store", pinned_versions={"deepfm": 2}))
    ) as client:
        response = client.post("/predict", json={"instances": [row, {**row, "user": "never-seen"}]})

    assert response.status_code == 200, response.text
    assert response.json()["version"] == 2 and len(response.json()["predictions"]) == 2

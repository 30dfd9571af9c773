"""The README's scoring examples, run as written (bash and curl) against the served repo models_store."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tools.processes import REPO, Server, run_server

README_ADDRESS = "localhost:8000"
# A bash block that starts with a curl call to the README's server and ends with the output it shows.
EXAMPLE = re.compile(rf"```bash\n(curl -s {re.escape(README_ADDRESS)}/.*?)\n# (\{{.*?\}})\n```", re.DOTALL)
EXAMPLES = EXAMPLE.findall((REPO / "README.md").read_text())
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def shown_output_pattern(shown: str) -> str:
    """The printed JSON as a regex: numbers shortened to `0.2406...` match any further digits."""
    return re.escape(shown).replace(re.escape("..."), r"\d*")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`python -m service` from the repo root with default settings (as `make serve`), on a free port."""
    with run_server(tmp_path_factory.mktemp("readme"), {}) as running:
        yield running


def test_readme_shows_the_scoring_and_ranking_examples() -> None:
    assert len(EXAMPLES) >= 2, "README lost its curl examples, or their '# {...}' output lines"
    assert any('"top_k"' in command for command, _ in EXAMPLES)


@needs_curl
@pytest.mark.parametrize(("command", "shown"), EXAMPLES, ids=[f"example-{i}" for i in range(len(EXAMPLES))])
def test_readme_example_prints_what_the_readme_shows(server: Server, command: str, shown: str) -> None:
    address = server.url.removeprefix("http://")
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", command.replace(README_ADDRESS, address)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(shown_output_pattern(shown), result.stdout.strip()), (result.stdout, shown)

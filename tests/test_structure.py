"""The code's structure, as torchrec's test_code_quality holds its own: which package may import which."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def imported_modules(package: str) -> dict[str, set[str]]:
    """Each module file of a package -> the top-level names of what it imports."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[str(path.relative_to(REPO))] = names
    return found


def test_the_library_never_imports_the_service_or_its_web_stack() -> None:
    offending = {
        module: sorted(n for n in names if n.split(".")[0] in {"service", "fastapi", "starlette", "uvicorn"})
        for module, names in imported_modules("deepfm").items()
    }
    assert {m: n for m, n in offending.items() if n} == {}


def test_the_service_never_imports_training_or_models() -> None:
    offending = {
        module: sorted(n for n in names if n.startswith(("deepfm.training", "deepfm.models", "deepfm.config")))
        for module, names in imported_modules("service").items()
    }
    assert {m: n for m, n in offending.items() if n} == {}


def test_importing_the_service_loads_no_training_dataset_model_or_pandas_code() -> None:
    """What `import service.app, service.main` pulls in, in a fresh interpreter (imports of imports count):
    serving encodes with `deepfm.data.encoding` and never fits, so neither the fitting module nor pandas."""
    forbidden = [
        "deepfm.training",
        "deepfm.models",
        "deepfm.config",
        "deepfm.data.movielens",
        "deepfm.data.dataset",
        "deepfm.data.fitting",
        "pandas",
    ]
    code = f"import sys, service.app, service.main; print([m for m in {forbidden!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"

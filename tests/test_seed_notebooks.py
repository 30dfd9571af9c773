"""The seed notebooks' code cells run unchanged and print the seed's shapes and parameter counts.

Each cell is stored verbatim under tests/seeds/ (see its README); the seed text files live in
`shared/seeds/` beside the repository.
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from deepfm.data.schema import DatasetSchema

SEEDS_DIR = Path(__file__).resolve().parents[2] / "shared" / "seeds"
CELLS_DIR = Path(__file__).resolve().parent / "seeds"
LAYERS_GUIDE = "000_48c02f36a43bd387"
EMBEDDING_GUIDE = "001_2d92ab7d4a04188b"
CELL_NAME = re.compile(r"\d+_in_(\w+)\.txt")


def _cells(notebook: str) -> list[tuple[str, str]]:
    """(execution count, source) of each stored cell of a notebook, in notebook order."""
    paths = sorted((CELLS_DIR / notebook).glob("*.txt"))
    return [(CELL_NAME.fullmatch(p.name).group(1), p.read_text()) for p in paths]  # type: ignore[union-attr]


def _without_norm_bias(text: str) -> str:
    """A repr without the `bias=True` that newer torch prints in norm layers and the seed's torch did not."""
    return re.sub(r"((?:BatchNorm1d|LayerNorm)\(.*?), bias=True", r"\1", text)


def _run(cells: list[tuple[str, str]], namespace: dict[str, Any]) -> tuple[str, list[Any]]:
    """Execute cells in order in one namespace, like a notebook kernel.

    Returns:
        everything printed, and each cell's value (its last line's, if an expression; else None).
    """
    stdout, values = io.StringIO(), []
    with contextlib.redirect_stdout(stdout):
        for count, source in cells:
            tree = ast.parse(source, filename=f"In [{count}]")
            last = tree.body[-1] if tree.body else None
            if isinstance(last, ast.Expr):  # a trailing expression is the cell's value, as in Jupyter
                del tree.body[-1]
            exec(compile(tree, f"In [{count}]", "exec"), namespace)
            value = None
            if isinstance(last, ast.Expr):
                value = eval(compile(ast.Expression(last.value), f"In [{count}]", "eval"), namespace)
            values.append(value)
    return stdout.getvalue(), values


@pytest.mark.parametrize("notebook", [LAYERS_GUIDE, EMBEDDING_GUIDE])
def test_stored_cells_are_the_seed_cells_verbatim(notebook: str) -> None:
    seed = (SEEDS_DIR / f"{notebook}.txt").read_text()
    cells = _cells(notebook)
    assert [count for count, _ in cells] == re.findall(r"^In \[(\w+)\]:$", seed, flags=re.MULTILINE)
    for count, source in cells:
        assert f"In [{count}]:\n{source}\n" in seed, f"cell In [{count}] differs from the seed"


def test_layers_guide() -> None:
    torch.manual_seed(0)
    seed = (SEEDS_DIR / f"{LAYERS_GUIDE}.txt").read_text()
    namespace: dict[str, Any] = {}
    out, values = _run(_cells(LAYERS_GUIDE), namespace)
    for line in [
        "Batch size B=8, Fields F=6, FM dim D=16",
        "first_order:      torch.Size([8, 1])",
        "field_embeddings: torch.Size([8, 6, 16])",
        "flat_embeddings:  torch.Size([8, 56])",
        "Parameters: 0 (none — FM is parameter-free!)",
        "Output: fm_output        torch.Size([8, 1])         — (B, 1)",
        "  All close:      True",
        "Output dim: 32",
        "Output: dnn_output      torch.Size([8, 32])       — (B, last_hidden)",
        "Total DNN parameters: 18,080",
        "Output dim: 192",
        "Output: cin_output       torch.Size([8, 192])       — (B, output_dim)",
        "With split_half=True, output_dim = 192 = 64 + 128",
        "split_half=True   output_dim= 192  output_shape=torch.Size([8, 192])  params=54,016",
        "Total parameters: 8,672",
        "Output: attn_output      torch.Size([8, 6, 16])      — (B, F, D)  (same shape!)",
    ]:
        assert f"{line}\n" in out, line
    for name in ("fm", "dnn", "cin", "attn"):
        assert f"\n{_without_norm_bias(repr(namespace[name]))}\n" in seed, name
    dnn_table, activations, cin_table, comparison = (v for v in values if v is not None)
    assert dnn_table["params"].tolist()[:10] == [7296, 256, 0, 0, 8256, 128, 0, 0, 2080, 64]
    assert activations["activation"].tolist() == ["relu", "leaky_relu", "gelu", "tanh"]
    assert cin_table["conv_in_channels"].tolist() == [36, 384]
    assert cin_table["to_output_pool"].tolist() == [64, 128]
    assert cin_table["to_next_layer"].tolist() == [64, 128]
    assert comparison["params"].tolist() == [0, 18_080, 54_016, 8_672]
    assert comparison["output_shape"].tolist() == ["(8, 1)", "(8, 32)", "(8, 192)", "(8, 6, 16)"]


def _check_embedding_guide(out: str, namespace: dict[str, Any], batch_size: int) -> None:
    """The figures the "FeatureEmbedding Guide" prints, on a run of its cells from In [3] on."""
    schema = namespace["schema"]
    assert schema.num_fields == 7 and schema.total_embedding_dim == 64
    sizes = {n: f.vocabulary_size for n, f in schema.fields.items()}
    assert sizes == {
        "user_id": 944, "movie_id": 1679, "gender": 3, "age": 8, "occupation": 22, "zip_prefix": 383, "genres": 20
    }  # fmt: skip
    genres = schema.fields["genres"]
    assert (genres.feature_type.value, genres.max_length, genres.combiner) == ("sequence", 6, "mean")
    seed = (SEEDS_DIR / f"{EMBEDDING_GUIDE}.txt").read_text()
    printed = repr(namespace["emb"])
    shown = seed[seed.index("FeatureEmbedding(\n") : seed.index("\n\n## 4.")]
    assert printed.startswith(shown)
    for line in [
        "fm_embed_dim = 16 (common dimension for FM/CIN/Attention)",
        f"  first_order:      torch.Size([{batch_size}, 1])      — linear term (summed across fields)",
        f"  field_embeddings: torch.Size([{batch_size}, 7, 16])  — projected to common fm_dim, one per field",
        f"  flat_embeddings:  torch.Size([{batch_size}, 64])   — raw concat of all field embeddings",
        "  TOTAL            dim=64",
        "  first_order sum:      0.000000  (should be ~0)",
        "  field_embeddings sum: 0.000000  (should be ~0)",
        "  flat_embeddings sum:  0.000000  (should be ~0)",
        "  gender           4 -> 16  (64 params)",
        "  genres           8 -> 16  (128 params)",
        "Total parameters:     48,983",
        "  second_order_embeddings           45,412 params",
        "  first_order_embeddings             3,059 params",
        "  projections                          512 params",
    ]:
        assert f"{line}\n" in out, line
    for view in ("fo_oov", "fe_oov", "fl_oov"):
        assert torch.count_nonzero(namespace[view]) == 0, view


def test_embedding_guide(movielens_dir: Path) -> None:
    """The notebook as written: `ExperimentConfig()` finds the data through DEEPFM_DATA_DIR."""
    torch.manual_seed(0)
    namespace: dict[str, Any] = {}
    out, _ = _run(_cells(EMBEDDING_GUIDE), namespace)
    assert "Schema has 7 fields, total_embedding_dim = 64\n" in out
    assert "  genres           shape=torch.Size([4, 6])  dtype=torch.int64\n" in out
    _check_embedding_guide(out, namespace, batch_size=4)


def test_embedding_guide_on_a_stand_in_schema() -> None:
    """Cells In [3] on, with the MovieLens schema and a small training set standing in for In [1]."""
    torch.manual_seed(0)
    schema = DatasetSchema.from_json((CELLS_DIR / "movielens_100k_schema.json").read_text())
    generator = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(8):
        features = {n: torch.randint(1, f.vocabulary_size, (), generator=generator) for n, f in schema.fields.items()}
        features["genres"] = torch.tensor([3, 7, 0, 0, 0, 0])
        rows.append((features, torch.randint(0, 2, (), generator=generator).float()))
    config = SimpleNamespace(feature=SimpleNamespace(fm_embed_dim=16))
    namespace: dict[str, Any] = {"config": config, "schema": schema, "train_ds": rows}
    out, _ = _run(_cells(EMBEDDING_GUIDE)[1:], namespace)
    _check_embedding_guide(out, namespace, batch_size=4)

"""Data flows one way: a library module imports only the layers below its own.

tables -> events -> sequences -> tensors (``data``) -> model (``models``) -> hazards
(``survival``, ``losses``) -> metrics and figures. Each module's imports are read with ``ast``
(no import is run), so a new upward arrow fails here with the file and line that adds it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import ehrseq

LIB = Path(ehrseq.__file__).parent

#: The layer of each top-level module of ``ehrseq``: a module may import its own package and
#: strictly lower layers. A module missing here counts as the top layer.
LAYERS = {
    "runtime": 0,
    "config": -1,  # the lowest: the profile and the environment, read by everything
    "checks": 0,
    "numbers": 0,  # how a number or an interval is written: no ehrseq import
    "ehrseq": 1,  # the package root: the version and the runtime helpers it re-exports
    "data": 2,
    "survival": 3,
    "models": 4,
    "losses": 4,
    "metrics": 4,
    "plotting": 5,
    "train": 5,
    "artifacts": 5,
    "evaluate": 6,
    "pretrain": 6,
    "runs": 6,
    "next_visit": 7,  # heads and baselines of next-visit prediction, on pretrain
    "pretrained": 8,  # pretrained encoders as artefacts: pretrain, next_visit, artifacts
    "report": 0,  # HTML pieces of a report, no ehrseq import
    "baselines": 3,  # Cox and bag-of-codes features, on data
    "loss_sweep": 6,  # chapter 7's runs as artefacts: losses, models, train, artifacts
    "recipes": 0,  # what the two recipes below share: sizes, seeds, profiles
    "behrt_survival": 7,  # chapter 6b's models as artefacts: runs, models, artifacts
    "mlm_ablation": 7,  # chapter 4b's encoders as artefacts: pretrain, artifacts
    "cli": 9,  # the command line: above everything it runs
    "embeddings": 3,  # code embeddings (skip-gram, scores, files), on data and runtime
    "masking": 0,  # BERT's token corruption, shared by pretrain and medrep: no ehrseq import
    "medrep": 4,  # concept representations from text and the graph, on embeddings
    "medrep_variants": 7,  # chapter 12b's three encoders: models, metrics, pretrain
    "embedding_downstream": 7,  # frozen code vectors scored downstream: evaluate
    "medcodebert": 7,  # BEHRT + time gap + type, pretrained: pretrain, evaluate, embeddings
}
TOP = max(LAYERS.values()) + 1


def _top_level(module: str) -> str:
    """``ehrseq.models.behrt`` -> ``models``; ``ehrseq`` -> ``ehrseq``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """``(line, module, names)`` of every ``ehrseq`` import in a file, lazy ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "ehrseq":
                found.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "ehrseq":
                    found.append((node.lineno, alias.name, []))
    return found


def _module_name(path: Path) -> str:
    """``.../ehrseq/models/behrt.py`` -> ``ehrseq.models.behrt``; a package's ``__init__`` -> the package."""
    parts = path.relative_to(LIB.parent).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def _modules() -> list[Path]:
    return sorted(LIB.rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(LIB)))
def test_no_import_runs_upward(path):
    me = _top_level(_module_name(path))
    mine = LAYERS.get(me, TOP)
    upward = [
        f"{path.relative_to(LIB.parent)}:{line}: {me} (layer {mine}) imports {module} "
        f"(layer {LAYERS.get(_top_level(module), TOP)})"
        for line, module, _ in _imports(path)
        if _top_level(module) != me and LAYERS.get(_top_level(module), TOP) >= mine
    ]
    assert not upward, "imports that run upward or sideways:\n" + "\n".join(upward)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(LIB)))
def test_no_private_name_crosses_a_module(path):
    """Private helpers stay inside their package (``data.*`` may share them, ``plotting``
    may not take them from ``metrics``): a helper two layers need is public and lives low."""
    me = _top_level(_module_name(path))
    private = [
        f"{path.relative_to(LIB.parent)}:{line}: {module}.{name}"
        for line, module, names in _imports(path)
        for name in names
        if name.startswith("_") and not name.startswith("__") and _top_level(module) != me
    ]
    assert not private, "private names imported from another module:\n" + "\n".join(private)


def test_the_layers_named_here_exist():
    on_disk = {p.stem for p in LIB.glob("*.py")} | {p.name for p in LIB.iterdir() if p.is_dir()}
    assert set(LAYERS) - {"ehrseq"} <= on_disk


def test_models_and_losses_load_no_metrics_at_run_time():
    code = (
        "import sys, ehrseq.models, ehrseq.losses; "
        "print(sorted(m for m in ('ehrseq.metrics', 'ehrseq.train', 'ehrseq.plotting') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

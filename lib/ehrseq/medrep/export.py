"""Concept vectors out in MedRep's layout: a concept index beside a plain matrix.

MedRep ships its representations as a matrix whose row ``i`` is the concept named in row ``i``
of an index. :func:`save_index_matrix` writes that pair (``concept_index.csv``: ``row``,
``concept_id``, ``concept_name``; ``embeddings.npy``: the ``(V, d)`` float32 matrix, read
without pickle) and :func:`load_index_matrix` reads it back through the same checks as
:mod:`ehrseq.embeddings.io` (the ``{concept_ids, embeddings}`` torch file lives there).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from ehrseq.embeddings import CodeEmbedding, EmbeddingFileError, check_embedding

__all__ = ["save_index_matrix", "load_index_matrix"]


def save_index_matrix(emb: CodeEmbedding, folder: str | Path) -> tuple[Path, Path]:
    """Write ``concept_index.csv`` and ``embeddings.npy`` into ``folder``; return both paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    index = pd.DataFrame(
        {
            "row": np.arange(len(emb)),
            "concept_id": emb.concept_ids,
            "concept_name": list(emb.names) if emb.names is not None else "",
        }
    )
    index_path, matrix_path = folder / "concept_index.csv", folder / "embeddings.npy"
    index.to_csv(index_path, index=False)
    np.save(matrix_path, np.asarray(emb.vectors, dtype=np.float32), allow_pickle=False)
    return index_path, matrix_path


def load_index_matrix(
    folder: str | Path, concept_ids: Iterable[int] | None = None, dim: int | None = None
) -> CodeEmbedding:
    """Read what :func:`save_index_matrix` wrote, and check it fits the model.

    Args:
        folder: the folder with ``concept_index.csv`` and ``embeddings.npy``.
        concept_ids: the ids the model knows; every id of the file must be among them.
        dim: the dimension the model expects.

    Raises:
        EmbeddingFileError: naming the folder and the problem (a missing file, rows of the
            index and the matrix that differ, a wrong dimension, ids the model lacks).
    """
    folder = Path(folder)
    index_path, matrix_path = folder / "concept_index.csv", folder / "embeddings.npy"
    for path in (index_path, matrix_path):
        if not path.is_file():
            raise EmbeddingFileError(f"{folder}: no {path.name}")
    index = pd.read_csv(index_path, keep_default_na=False)
    matrix = np.load(matrix_path, allow_pickle=False)
    ids = index["concept_id"].to_numpy(np.int64)
    if not (index["row"].to_numpy() == np.arange(len(ids))).all():
        raise EmbeddingFileError(f"{folder}: the index rows are not 0..{len(ids) - 1} in order")
    # what every loaded embedding must satisfy (shape, repeated ids, finite vectors)
    names = list(index["concept_name"].astype(str))
    emb = check_embedding(folder, ids, matrix, None, None, names)
    if dim is not None and emb.dim != dim:
        raise EmbeddingFileError(
            f"{folder}: embedding dimension {emb.dim}, the model expects {dim}"
        )
    if concept_ids is not None:
        lack = ids[~np.isin(ids, np.fromiter(concept_ids, dtype=np.int64))]
        if len(lack):
            raise EmbeddingFileError(
                f"{folder}: {len(lack)} of {len(ids)} concept ids are not in the model's "
                f"vocabulary, e.g. {lack[:5].tolist()}"
            )
    return emb

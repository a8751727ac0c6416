"""Code embeddings on disk: a parquet table with the concept index, and a torch tensor file.

Two formats, each loaded with the same checks (the ids are 1-D integers without repeats, the
matrix is ``(len(ids), d)`` and finite, ``d`` is what the caller expects, every id is in the
caller's vocabulary), and each refusal names the file and the problem:

- **parquet** (:func:`save_parquet`, :func:`load_parquet`): one row per code, columns
  ``concept_id`` (int64), ``concept_name`` and ``vocabulary_id`` (strings, null when unknown),
  then ``vector``, a fixed-size list of ``d`` float32. Readable by any parquet tool; the
  concept columns answer "which row is which code?" without the vocabulary.
- **torch** (:func:`save_torch`, :func:`load_torch`): ``torch.save`` of a plain dict
  ``{"concept_ids": int64 (V,), "embeddings": float32 (V, d)}``, the layout DeepPLP's
  ``setCustomEmbeddingModel`` reads; loaded with ``torch.load(weights_only=True)``, so a file
  cannot run code.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from ehrseq.data.concepts import Vocabulary
from ehrseq.embeddings.base import CodeEmbedding

__all__ = [
    "EmbeddingFileError",
    "check_embedding",
    "save_parquet",
    "load_parquet",
    "save_torch",
    "load_torch",
]

_META_KEY = b"ehrseq.embedding"
_FORMAT_VERSION = 1


class EmbeddingFileError(ValueError):
    """An embedding file that cannot be used; the message names the file and the problem."""


def _fail(path: Path, problem: str) -> EmbeddingFileError:
    return EmbeddingFileError(f"{path}: {problem}")


def check_embedding(
    path: Path,
    ids: np.ndarray,
    vectors: np.ndarray,
    dim: int | None,
    vocabulary: Vocabulary | Iterable[int] | None,
    names: list | None = None,
) -> CodeEmbedding:
    """``ids`` and ``vectors`` read from ``path`` as a :class:`CodeEmbedding`, once they pass
    every check a loaded embedding needs.

    Raises:
        EmbeddingFileError: naming ``path`` and the problem: ids that are not 1-D integers
            or repeat, a matrix that is not 2-D or has another number of rows, a wrong
            dimension (``dim``), a non-finite vector, ids outside ``vocabulary``.
    """
    if ids.ndim != 1:
        raise _fail(path, f"concept ids must be 1-D, got shape {ids.shape}")
    if len(ids) and not np.issubdtype(ids.dtype, np.integer):
        raise _fail(path, f"concept ids must be integers, got {ids.dtype}")
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1]
        raise _fail(path, f"{len(dup)} concept ids appear more than once, e.g. {dup[:5].tolist()}")
    if vectors.ndim != 2:
        raise _fail(path, f"embeddings must be a 2-D matrix, got shape {vectors.shape}")
    if vectors.shape[0] != len(ids):
        raise _fail(path, f"{vectors.shape[0]} embedding rows for {len(ids)} concept ids")
    if dim is not None and vectors.shape[1] != dim:
        raise _fail(path, f"embedding dimension {vectors.shape[1]}, expected {dim}")
    if not np.isfinite(vectors).all():
        row = int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0])
        raise _fail(path, f"the vector of concept {int(ids[row])} is not finite")
    if vocabulary is not None:
        known = (
            vocabulary.concept["concept_id"].to_numpy(np.int64)
            if isinstance(vocabulary, Vocabulary)
            else np.asarray(list(vocabulary), dtype=np.int64)
        )
        missing = ids[~np.isin(ids, known)]
        if len(missing):
            raise _fail(
                path,
                f"{len(missing)} of {len(ids)} concept ids are not in the vocabulary, "
                f"e.g. {missing[:5].tolist()}",
            )
    try:
        return CodeEmbedding(ids.astype(np.int64), vectors, names)
    except ValueError as err:  # pragma: no cover - every case is checked above
        raise _fail(path, str(err)) from err


def _concept_columns(
    emb: CodeEmbedding, vocabulary: Vocabulary | None
) -> tuple[list[str | None], list[str | None]]:
    n = len(emb)
    names: list[str | None] = list(emb.names) if emb.names is not None else [None] * n
    vocab_ids: list[str | None] = [None] * n
    if vocabulary is not None:
        c = vocabulary.concept.set_index("concept_id")
        for i, cid in enumerate(emb.concept_ids):
            if cid in c.index:
                row = c.loc[cid]
                vocab_ids[i] = str(row["vocabulary_id"])
                if names[i] is None:
                    names[i] = str(row["concept_name"])
    return names, vocab_ids


def save_parquet(
    emb: CodeEmbedding, path: str | Path, vocabulary: Vocabulary | None = None
) -> Path:
    """Write ``emb`` as a parquet table (layout in the module docstring).

    Args:
        emb: the embedding.
        path: the file to write.
        vocabulary: fills ``concept_name`` (unless ``emb.names`` has them) and
            ``vocabulary_id``; without it they are the embedding's names and null.

    Returns:
        The path written.
    """
    path = Path(path)
    names, vocab_ids = _concept_columns(emb, vocabulary)
    flat = pa.array(emb.vectors.astype(np.float32).reshape(-1), type=pa.float32())
    vectors = pa.FixedSizeListArray.from_arrays(flat, emb.dim)
    table = pa.table(
        {
            "concept_id": pa.array(emb.concept_ids, type=pa.int64()),
            "concept_name": pa.array(names, type=pa.string()),
            "vocabulary_id": pa.array(vocab_ids, type=pa.string()),
            "vector": vectors,
        }
    )
    meta = {"format_version": _FORMAT_VERSION, "dim": emb.dim, "n_codes": len(emb)}
    table = table.replace_schema_metadata({_META_KEY: json.dumps(meta).encode()})
    pq.write_table(table, path)
    return path


def load_parquet(
    path: str | Path,
    vocabulary: Vocabulary | Iterable[int] | None = None,
    dim: int | None = None,
) -> CodeEmbedding:
    """Read a parquet embedding and check it (module docstring).

    ``vector`` may also be a variable-length list column (as other tools write), provided
    every row has the same length.

    Args:
        path: the file.
        vocabulary: refuse ids outside it (a :class:`~ehrseq.data.concepts.Vocabulary` or ids).
        dim: refuse another dimension.

    Raises:
        EmbeddingFileError: naming the file and the problem (missing file or column,
            duplicate ids, ragged or wrong-dimension vectors, ids outside the vocabulary).
    """
    path = Path(path)
    if not path.is_file():
        raise _fail(path, "no such file")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise _fail(path, f"not a readable parquet file ({err})") from err
    missing = [c for c in ("concept_id", "vector") if c not in table.column_names]
    if missing:
        raise _fail(path, f"missing columns {missing}; found {table.column_names}")
    ids = table.column("concept_id").to_numpy()
    col = table.column("vector").combine_chunks()
    if not (pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type)):
        raise _fail(path, f"column 'vector' must be a list of floats, got {col.type}")
    if col.null_count:
        raise _fail(path, f"{col.null_count} rows have no vector")
    lengths = np.asarray(pc.list_value_length(col).to_numpy(zero_copy_only=False))
    if len(lengths) and (lengths != lengths[0]).any():
        raise _fail(path, f"vectors have different lengths ({sorted(set(lengths.tolist()))[:5]})")
    width = int(lengths[0]) if len(lengths) else (dim or 0)
    flat = np.asarray(col.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    vectors = flat.reshape(len(ids), width) if len(ids) else np.zeros((0, width), np.float32)
    names = None
    if "concept_name" in table.column_names:
        raw = table.column("concept_name").to_pylist()
        if all(n is not None for n in raw):
            names = raw
    return check_embedding(path, ids, vectors, dim, vocabulary, names)


def save_torch(emb: CodeEmbedding, path: str | Path) -> Path:
    """``torch.save({"concept_ids": (V,) int64, "embeddings": (V, d) float32}, path)``."""
    path = Path(path)
    torch.save(
        {
            "concept_ids": torch.from_numpy(emb.concept_ids.astype(np.int64)),
            "embeddings": torch.from_numpy(emb.vectors.astype(np.float32)),
        },
        path,
    )
    return path


def load_torch(
    path: str | Path,
    vocabulary: Vocabulary | Iterable[int] | None = None,
    dim: int | None = None,
) -> CodeEmbedding:
    """Read a ``{concept_ids, embeddings}`` tensor file (``weights_only=True``) and check it.

    Raises:
        EmbeddingFileError: naming the file and the problem (missing file or key, a file that
            is not plain tensors, duplicate ids, a wrong dimension, ids outside the
            vocabulary).
    """
    path = Path(path)
    if not path.is_file():
        raise _fail(path, "no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for files it refuses
        raise _fail(path, f"not a plain-tensor torch file ({type(err).__name__}: {err})") from err
    if not isinstance(obj, dict):
        raise _fail(path, f"expected a dict with concept_ids and embeddings, got {type(obj)}")
    missing = [k for k in ("concept_ids", "embeddings") if k not in obj]
    if missing:
        raise _fail(path, f"missing keys {missing}; found {sorted(obj)}")
    ids, vectors = obj["concept_ids"], obj["embeddings"]
    if not (isinstance(ids, torch.Tensor) and isinstance(vectors, torch.Tensor)):
        raise _fail(path, "concept_ids and embeddings must be tensors")
    if not vectors.is_floating_point():
        raise _fail(path, f"embeddings must be floats, got {vectors.dtype}")
    return check_embedding(path, ids.numpy(), vectors.float().numpy(), dim, vocabulary)

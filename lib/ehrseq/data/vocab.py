"""The vocabulary: token strings <-> integer ids, fitted on training patients only.

A token names a domain and a concept, ``condition:201826``. A measurement with a value gets
the decile of that value among the *training* values of the same concept,
``measurement:3004410:q7`` (deciles ``q0`` .. ``q9``; ``q0`` is the lowest tenth). The cut
points are the 10%, 20%, ..., 90% quantiles (NumPy's default linear interpolation) of the
training values of each concept, so a held-out value never moves them.

Ids ``0..4`` are the special tokens ``[PAD]`` (0), ``[UNK]``, ``[MASK]``, ``[CLS]``,
``[SEP]``; the other tokens follow by training frequency (most frequent first).

Counting and back-off
    ``min_frequency`` counts rows (not patients) of the training frame. The value-free token
    of a measurement concept, ``measurement:3004410``, counts every row of the concept, with
    or without a value, so it is always at least as frequent as any of its deciles.

    :meth:`Vocab.encode` maps each row to the first token of this chain that is in the
    vocabulary: the token itself; for a measurement with a value, the value-free token of the
    concept; then, when an ancestor map is given, each ancestor (nearest first) in the same
    domain -- with the decile of the value under the ancestor's own cut points, then without
    a value; finally ``[UNK]``. The report counts each outcome.

Saved as JSON (tokens, counts, cut points, settings): no pickle.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ehrseq.data.events import DOMAINS
from ehrseq.data.sequences import SPECIAL_CLS, SPECIAL_SEP, domain_codes

__all__ = [
    "SPECIAL_TOKENS",
    "PAD_ID",
    "UNK_ID",
    "MASK_ID",
    "CLS_ID",
    "SEP_ID",
    "Vocab",
]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[MASK]", "[CLS]", "[SEP]")
PAD_ID, UNK_ID, MASK_ID, CLS_ID, SEP_ID = range(len(SPECIAL_TOKENS))
_MEAS = DOMAINS.index("measurement")
_KEY_STRIDE = 128  # key = concept_id * 128 + domain * 11 + (decile + 1); 7 * 11 < 128
_FORMAT = "ehrseq.vocab"
_VERSION = 1


def _keys(dom: np.ndarray, cid: np.ndarray, q: np.ndarray) -> np.ndarray:
    """One int64 per (domain, concept, decile or -1) -- no strings on the hot path."""
    return cid.astype(np.int64) * _KEY_STRIDE + dom.astype(np.int64) * 11 + (q.astype(np.int64) + 1)


def _unkey(key: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rest = np.mod(key, _KEY_STRIDE)
    return rest // 11, (key - rest) // _KEY_STRIDE, rest % 11 - 1


def _token(dom: int, cid: int, q: int) -> str:
    return f"{DOMAINS[dom]}:{cid}" + (f":q{q}" if q >= 0 else "")


def _parse(token: str) -> int:
    parts = token.split(":")
    if len(parts) not in (2, 3) or parts[0] not in DOMAINS:
        raise ValueError(f"token {token!r}: expected 'domain:concept_id[:qK]'")
    q = int(parts[2][1:]) if len(parts) == 3 else -1
    return int(
        _keys(np.array([DOMAINS.index(parts[0])]), np.array([int(parts[1])]), np.array([q]))[0]
    )


def _row_columns(frame: pd.DataFrame, name: str) -> tuple[np.ndarray, ...]:
    missing = {"domain", "concept_id", "value_as_number"} - set(frame.columns)
    if missing:
        raise ValueError(f"{name}: missing columns {sorted(missing)}")
    special = (
        frame["special"].to_numpy(np.int8)
        if "special" in frame.columns
        else np.zeros(len(frame), dtype=np.int8)
    )
    dom = domain_codes(frame["domain"])
    bad = (special == 0) & ((dom < 0) | (dom >= len(DOMAINS)))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"{name}: {int(bad.sum())} rows with an unknown domain, e.g. row {i} "
            f"{frame['domain'].iloc[i]!r}; expected one of {DOMAINS}"
        )
    cid = frame["concept_id"].to_numpy(np.int64)
    val = frame["value_as_number"].to_numpy(np.float64)
    return special, dom, cid, val


class Vocab:
    """Token <-> id map with per-concept decile cut points for measurement values.

    Build one with :meth:`fit`; do not call the constructor by hand unless restoring.

    Args:
        tokens: the non-special tokens in id order (ids start at ``len(SPECIAL_TOKENS)``).
        counts: training count of each token, same order, as ``min_frequency`` counts them
            (the value-free token of a measurement counts every row of its concept, so
            these are not the token frequencies of encoded sequences; for those, use
            :func:`ehrseq.pretrain.code_counts`).
        value_cuts: concept id -> the ``n_value_bins - 1`` increasing cut points.
        min_frequency: the threshold the vocabulary was built with (kept for the record).
        n_value_bins: number of value bins (10: deciles).
    """

    def __init__(
        self,
        tokens: list[str],
        counts: list[int],
        value_cuts: Mapping[int, Iterable[float]],
        *,
        min_frequency: int = 1,
        n_value_bins: int = 10,
    ) -> None:
        if len(tokens) != len(counts):
            raise ValueError(f"{len(tokens)} tokens but {len(counts)} counts")
        self.tokens = list(tokens)
        self.counts = [int(c) for c in counts]
        self.min_frequency = int(min_frequency)
        self.n_value_bins = int(n_value_bins)
        self.itos: list[str] = [*SPECIAL_TOKENS, *self.tokens]
        self.stoi: dict[str, int] = {s: i for i, s in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("duplicate tokens in the vocabulary")
        keys = np.array([_parse(s) for s in self.tokens], dtype=np.int64)
        self._key_index = pd.Index(keys)
        self._key_ids = np.arange(len(SPECIAL_TOKENS), len(self.itos), dtype=np.int64)
        cut_ids = np.array(sorted(value_cuts), dtype=np.int64)
        self.value_cuts: dict[int, np.ndarray] = {
            int(c): np.asarray(value_cuts[c], dtype=np.float64) for c in cut_ids
        }
        self._cut_ids = cut_ids
        self._cut_table = (
            np.stack([self.value_cuts[int(c)] for c in cut_ids])
            if len(cut_ids)
            else np.zeros((0, self.n_value_bins - 1))
        )

    # ------------------------------------------------------------------ building
    @classmethod
    def fit(
        cls,
        frame: pd.DataFrame,
        train_ids: Iterable[int],
        *,
        min_frequency: int = 1,
        n_value_bins: int = 10,
    ) -> Vocab:
        """Build the vocabulary from the rows of training patients.

        Args:
            frame: an event table or a sequence frame (``person_id``, ``domain``,
                ``concept_id``, ``value_as_number``; special-token rows are skipped).
            train_ids: the training patients; rows of anyone else are ignored. Pass the
                training split explicitly -- there is no default, on purpose.
            min_frequency: keep a token seen in at least this many training rows.
            n_value_bins: value bins per measurement concept (10: deciles).

        Raises:
            ValueError: ``min_frequency`` or ``n_value_bins`` below 1 (2 for bins), an
                unknown domain, or no training rows at all.
        """
        if min_frequency < 1:
            raise ValueError(f"min_frequency = {min_frequency}: must be at least 1")
        if not 2 <= n_value_bins <= 10:
            raise ValueError(f"n_value_bins = {n_value_bins}: must be between 2 and 10")
        train = np.unique(np.asarray(list(train_ids), dtype=np.int64))
        rows = np.isin(frame["person_id"].to_numpy(np.int64), train)
        special, dom, cid, val = _row_columns(frame, "frame")
        rows &= special == 0
        if not rows.any():
            raise ValueError("Vocab.fit: no rows of training patients in the frame")
        dom, cid, val = dom[rows], cid[rows], val[rows]

        # cut points per concept, all concepts at once: sort by (concept, value)
        valued = (dom == _MEAS) & np.isfinite(val)
        mc, mv = cid[valued], val[valued]
        o = np.lexsort((mv, mc))
        mc, mv = mc[o], mv[o]
        concepts, start, count = np.unique(mc, return_index=True, return_counts=True)
        probs = np.arange(1, n_value_bins) / n_value_bins
        at = start[:, None] + probs[None, :] * (count[:, None] - 1)  # fractional rank
        lo = np.floor(at).astype(np.int64)
        hi = np.minimum(lo + 1, (start + count - 1)[:, None])
        frac = at - lo
        cuts = mv[lo] + (mv[hi] - mv[lo]) * frac if len(mv) else np.zeros((0, len(probs)))
        value_cuts = {int(c): cuts[i].tolist() for i, c in enumerate(concepts)}

        vocab = cls([], [], value_cuts, min_frequency=min_frequency, n_value_bins=n_value_bins)
        q = vocab._deciles(dom, cid, val)
        keys = np.concatenate(
            [_keys(dom, cid, q), _keys(dom[q >= 0], cid[q >= 0], np.full(int((q >= 0).sum()), -1))]
        )
        uniq, cnt = np.unique(keys, return_counts=True)
        keep = cnt >= min_frequency
        uniq, cnt = uniq[keep], cnt[keep]
        order = np.lexsort((uniq, -cnt))
        d, c, qq = _unkey(uniq[order])
        tokens = [_token(int(a), int(b), int(e)) for a, b, e in zip(d, c, qq)]
        return cls(
            tokens,
            cnt[order].tolist(),
            value_cuts,
            min_frequency=min_frequency,
            n_value_bins=n_value_bins,
        )

    # ------------------------------------------------------------------ encoding
    def _deciles(
        self, dom: np.ndarray, cid: np.ndarray, val: np.ndarray, cut_cid: np.ndarray | None = None
    ) -> np.ndarray:
        """Value bin of each measurement row under ``cut_cid``'s cut points (-1: none)."""
        cut_cid = cid if cut_cid is None else cut_cid
        q = np.full(len(dom), -1, dtype=np.int64)
        if len(self._cut_ids) == 0:
            return q
        idx = np.flatnonzero((dom == _MEAS) & np.isfinite(val))
        pos = np.searchsorted(self._cut_ids, cut_cid[idx]).clip(0, len(self._cut_ids) - 1)
        has = self._cut_ids[pos] == cut_cid[idx]
        idx, pos = idx[has], pos[has]
        # bin = number of cut points <= value (side="right"), for each row's own cut points
        q[idx] = (self._cut_table[pos] <= val[idx, None]).sum(axis=1)
        return q

    def _lookup(self, keys: np.ndarray) -> np.ndarray:
        if len(self._key_ids) == 0:
            return np.full(len(keys), -1, dtype=np.int64)
        at = self._key_index.get_indexer(keys)
        return np.where(at >= 0, self._key_ids[at.clip(0)], -1)

    def encode(
        self, frame: pd.DataFrame, ancestors: Mapping[int, list[int]] | None = None
    ) -> tuple[np.ndarray, dict[str, int]]:
        """Map every row to a token id, all rows at once.

        Args:
            frame: an event table or a sequence frame (rows with ``special`` 1/2 become
                ``[CLS]``/``[SEP]``).
            ancestors: concept id -> ancestor concept ids, nearest first, for back-off of
                codes unseen in training (see the module docstring).

        Returns:
            ``(ids, report)``: ids ``(n,)`` int64, and counts ``tokens``, ``special``,
            ``exact``, ``value_dropped`` (fell back to the value-free token),
            ``ancestor`` (backed off to an ancestor), ``unknown`` (``[UNK]``) and
            ``unknown_concepts`` (distinct concepts that ended as ``[UNK]``).

        Shapes:
            frame: ``(n, ...)``; ids: ``(n,)``.
        """
        special, dom, cid, val = _row_columns(frame, "frame")
        n = len(frame)
        ids = np.full(n, UNK_ID, dtype=np.int64)
        ids[special == SPECIAL_CLS] = CLS_ID
        ids[special == SPECIAL_SEP] = SEP_ID
        ev = special == 0
        q = self._deciles(dom, cid, val)
        got = self._lookup(_keys(dom, cid, q))
        todo = ev & (got < 0)
        ids[ev & (got >= 0)] = got[ev & (got >= 0)]
        report = {
            "tokens": int(n),
            "special": int((~ev).sum()),
            "exact": int((ev & (got >= 0)).sum()),
            "value_dropped": 0,
            "ancestor": 0,
            "unknown": 0,
            "unknown_concepts": 0,
        }
        # 1. a decile token too rare: the value-free token of the same concept
        retry = np.flatnonzero(todo & (q >= 0))
        if len(retry):
            got = self._lookup(_keys(dom[retry], cid[retry], np.full(len(retry), -1)))
            hit = retry[got >= 0]
            ids[hit] = got[got >= 0]
            todo[hit] = False
            report["value_dropped"] = len(hit)
        # 2. ancestors, nearest first: a loop over distinct unseen concepts, not over rows
        if ancestors and todo.any():
            rows = np.flatnonzero(todo)
            uc, inv = np.unique(cid[rows], return_inverse=True)
            by_concept = np.split(
                rows[np.argsort(inv, kind="stable")], np.cumsum(np.bincount(inv))[:-1]
            )
            for c, r in zip(uc.tolist(), by_concept):
                for a in ancestors.get(c, ()):
                    for with_value in (True, False):
                        if len(r) == 0:
                            break
                        a_arr = np.full(len(r), a, dtype=np.int64)
                        qa = (
                            self._deciles(dom[r], a_arr, val[r], cut_cid=a_arr)
                            if with_value
                            else np.full(len(r), -1)
                        )
                        got = self._lookup(_keys(dom[r], a_arr, qa))
                        ids[r[got >= 0]] = got[got >= 0]
                        todo[r[got >= 0]] = False
                        report["ancestor"] += int((got >= 0).sum())
                        r = r[got < 0]
        report["unknown"] = int(todo.sum())
        report["unknown_concepts"] = len(np.unique(cid[todo]))
        return ids, report

    def token_of(self, domain: str, concept_id: int, value: float = float("nan")) -> str:
        """The token string of one event (no back-off): ``"measurement:3004410:q7"``.

        A slow, readable version of what :meth:`encode` does for whole columns.
        """
        d = DOMAINS.index(domain)
        cuts = self.value_cuts.get(int(concept_id))
        if domain == "measurement" and cuts is not None and np.isfinite(value):
            return _token(d, concept_id, int(np.searchsorted(cuts, value, side="right")))
        return _token(d, concept_id, -1)

    # ------------------------------------------------------------------ plumbing
    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def __repr__(self) -> str:
        # two lines, so that it fits a narrow page (the book's column, a terminal)
        return (
            f"Vocab({len(self)} tokens: {len(SPECIAL_TOKENS)} special + {len(self.tokens)},\n"
            f"      {len(self.value_cuts)} measurement concepts with value bins, "
            f"min_frequency={self.min_frequency})"
        )

    def to_dict(self) -> dict:
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "special_tokens": list(SPECIAL_TOKENS),
            "min_frequency": self.min_frequency,
            "n_value_bins": self.n_value_bins,
            "tokens": self.tokens,
            "counts": self.counts,
            "value_cuts": {str(c): v.tolist() for c, v in self.value_cuts.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> Vocab:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: not an ehrseq vocabulary, or other special tokens.
        """
        if d.get("format") != _FORMAT:
            raise ValueError(f"not an ehrseq vocabulary (format {d.get('format')!r})")
        if tuple(d["special_tokens"]) != SPECIAL_TOKENS:
            raise ValueError(
                f"special tokens {d['special_tokens']} differ from this library's {SPECIAL_TOKENS}"
            )
        return cls(
            d["tokens"],
            d["counts"],
            {int(k): v for k, v in d["value_cuts"].items()},
            min_frequency=d["min_frequency"],
            n_value_bins=d["n_value_bins"],
        )

    def save(self, path: str | Path) -> None:
        """Write the vocabulary as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        """Read a vocabulary written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))

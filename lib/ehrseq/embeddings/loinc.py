r"""LOINC-aware lab embeddings: the six LOINC parts, per-lab decile tokens, a value
encoder.

A laboratory code alone says which test was ordered, not what it showed; a record of
HbA1c 7.9 % and one of HbA1c 5.2 % are the same code. This module gives a lab event a
vector that knows both the test and its value, in three ways the chapter compares:

1. **Decile tokens.** Bins fitted per lab on training values (the 10 %, ..., 90 %
   quantiles); an event becomes the token ``"<lab> (decile k)"`` (:class:`DecileBins`)
   and a plain skip-gram (:func:`~ehrseq.embeddings.skipgram.train_skipgram`) learns a
   vector per token.
2. **LOINC parts.** Every LOINC term is six parts, COMPONENT, PROPERTY, TIME_ASPCT,
   SYSTEM, SCALE_TYP and METHOD_TYP (e.g. creatinine = ``Creatinine | MCnc | Pt |
   Ser/Plas | Qn``). A lab's base vector is the mean of six part vectors shared across
   labs,

   .. math:: b_\ell = \frac{1}{6}\sum_{k=1}^{6} P_k[\text{part}_k(\ell)],

   so two labs measured the same way in the same specimen start near each other.
3. **A value encoder.** A lab event with value :math:`x` (z-scored per lab on training
   values, :math:`z = (x - m_\ell)/s_\ell` with the median and IQR / 1.349, clipped to
   :math:`\pm z_{\max}`) gets

   .. math:: h = \tanh(W_1 [z, b_\ell] + c_1), \qquad
       u(\ell, x) = b_\ell + (W_2 + D_\ell)^\top h + c_2,

   a small MLP of the value conditioned on the lab (:math:`D_\ell`, zero at the start,
   is the lab's own read-out of the shared hidden layer), so "high" can mean diabetes
   for HbA1c and kidney disease for creatinine. Other codes keep a plain vector each.

Vectors (3) are trained with the skip-gram negative-sampling loss of
:mod:`ehrseq.embeddings.skipgram` on the pairs of
:func:`~ehrseq.embeddings.skipgram.pair_positions` over a
:class:`~ehrseq.embeddings.corpus.CodeCorpus` (reused, not rewritten): the center of a
pair is the value-aware input vector of its event, the context a plain output vector.

**Source of the parts table.** ``data/vocabulary/loinc_parts.csv`` holds, for each of
the vocabulary's 54 LOINC concepts, LOINC's own part values: the LOINC table's columns
COMPONENT, PROPERTY, TIME_ASPCT, SYSTEM, SCALE_TYP and METHOD_TYP (METHOD_TYP empty
where LOINC has none), as in LOINC version 2.7x (LOINC, Regenstrief Institute,
https://loinc.org). They were written for the book from knowledge of LOINC, not copied
from a release file, and ``tests/test_embeddings_loinc.py`` checks every row against the
concept's long common name in ``concept.csv``. LOINC is copyright of the Regenstrief
Institute; real use needs its licence.

References:
    McDonald et al., "LOINC, a universal standard for identifying laboratory
    observations: a 5-year update", Clin Chem 2003. Rossi et al., arXiv
    1907.09600 (LOINC codes with normal / abnormal / very abnormal values, and the
    ordering test: normal nearer abnormal than very abnormal).

Derived in the chapter on medical-code embeddings (issue #17, item 5).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from ehrseq.data.concepts import Vocabulary, data_dir
from ehrseq.embeddings.base import lookup_rows
from ehrseq.embeddings.corpus import CodeCorpus, _omop_event_arrays
from ehrseq.embeddings.skipgram import negative_distribution, pair_positions, sgns_loss

__all__ = [
    "PART_COLUMNS",
    "LOINC_PARTS_COLUMNS",
    "LoincParts",
    "load_loinc_parts",
    "DecileBins",
    "ValueScaler",
    "ValueCorpus",
    "DecileCorpus",
    "decile_corpus",
    "LoincConfig",
    "LoincLabModel",
    "LoincLabResult",
    "train_loinc_embedding",
    "ordering_distances",
]

#: The six LOINC parts, as columns of ``loinc_parts.csv`` (LOINC's COMPONENT, PROPERTY,
#: TIME_ASPCT, SYSTEM, SCALE_TYP, METHOD_TYP).
PART_COLUMNS: tuple[str, ...] = (
    "component",
    "property",
    "time_aspect",
    "system",
    "scale",
    "method",
)
LOINC_PARTS_COLUMNS: tuple[str, ...] = ("loinc_code", "concept_id", *PART_COLUMNS)
_LOINC_CODE = re.compile(r"^\d{1,7}-\d$")
#: Token ids of decile tokens: ``concept_id * DECILE_ID_FACTOR + k``, k = 0 .. B - 1.
DECILE_ID_FACTOR = 100


# --------------------------------------------------------------------------------------
# The parts table
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LoincParts:
    """The six LOINC parts of each lab, and the LOINC concepts that have none.

    Attributes:
        table: one row per lab, columns :data:`LOINC_PARTS_COLUMNS` (``method`` is
            ``""`` where LOINC has no method).
        n_missing: LOINC concepts of the vocabulary without a row (0 when no
            vocabulary).
        missing_codes: their LOINC codes.
        path: the file read (``None`` when built from a frame).
    """

    table: pd.DataFrame
    n_missing: int = 0
    missing_codes: tuple[str, ...] = ()
    path: Path | None = None

    def report(self) -> str:
        """How many labs have parts and how many LOINC concepts lack them (1 line)."""
        which = ": " + ", ".join(self.missing_codes[:5]) if self.n_missing else ""
        return (
            f"{len(self.table)} labs with LOINC parts; {self.n_missing} LOINC "
            f"concepts without parts{which}"
        )

    def part_index(self) -> tuple[dict[int, np.ndarray], list[tuple[str, str]]]:
        """Index every distinct (part, value) pair; give each lab its six indices.

        Returns ``(concept_id -> (6,) int64 indices, [(part, value), ...])``; an empty
        method is the value ``"(none)"`` of ``method``.
        """
        values: list[tuple[str, str]] = []
        index: dict[tuple[str, str], int] = {}
        out = {}
        for row in self.table.itertuples(index=False):
            idx = []
            for col in PART_COLUMNS:
                key = (col, getattr(row, col) or "(none)")
                if key not in index:
                    index[key] = len(values)
                    values.append(key)
                idx.append(index[key])
            out[int(row.concept_id)] = np.asarray(idx, dtype=np.int64)
        return out, values


def _bad(path: object, column: str, row: pd.Series, what: str) -> ValueError:
    example = ", ".join(f"{k}={v!r}" for k, v in row.items())
    return ValueError(f"{path}: column {column!r} {what}, e.g. row ({example})")


def load_loinc_parts(
    path: str | Path | pd.DataFrame | None = None, vocabulary: Vocabulary | None = None
) -> LoincParts:
    r"""Read and check the LOINC parts table (``data/vocabulary/loinc_parts.csv``).

    Each row is one lab: its LOINC code, its OMOP ``concept_id`` and the six parts
    (:data:`PART_COLUMNS`); every part but ``method`` must be non-empty. With a
    vocabulary, each row's ``concept_id`` must be a LOINC concept whose ``concept_code``
    is the row's ``loinc_code``, and LOINC concepts without a row are counted
    (:attr:`LoincParts.n_missing`).

    Args:
        path: the CSV file, a frame with the same columns, or ``None`` for the shipped
            file.
        vocabulary: the vocabulary to check the rows against (optional).

    Shapes:
        Returns a table of ``L`` rows and 8 columns (strings, ``concept_id`` int64).

    Raises:
        ValueError: naming the file, the column and an example row: a missing or unknown
            column, an empty part, a malformed LOINC code, a repeated or non-integer
            ``concept_id``, or a row that disagrees with the vocabulary.
    """
    if isinstance(path, pd.DataFrame):
        where: object = "loinc parts frame"
        raw = path.copy()
        file = None
    else:
        file = Path(path) if path is not None else data_dir() / "vocabulary" / "loinc_parts.csv"
        where = file
        if not file.is_file():
            raise ValueError(f"{file}: no such LOINC parts file")
        raw = pd.read_csv(file, dtype=str, keep_default_na=False)
    cols = list(raw.columns)
    if cols != list(LOINC_PARTS_COLUMNS):
        missing = [c for c in LOINC_PARTS_COLUMNS if c not in cols]
        extra = [c for c in cols if c not in LOINC_PARTS_COLUMNS]
        raise ValueError(
            f"{where}: columns must be {list(LOINC_PARTS_COLUMNS)}; missing {missing}, "
            f"unknown {extra}"
        )
    table = raw.astype(str).apply(lambda s: s.str.strip())
    table = table.replace({"nan": "", "None": ""})
    for col in LOINC_PARTS_COLUMNS:
        if col == "method":
            continue
        empty = table[col] == ""
        if empty.any():
            raise _bad(where, col, table.loc[empty].iloc[0], "is empty")
    bad_code = ~table["loinc_code"].str.match(_LOINC_CODE)
    if bad_code.any():
        raise _bad(where, "loinc_code", table.loc[bad_code].iloc[0], "is not a LOINC code")
    bad_id = ~table["concept_id"].str.fullmatch(r"\d+")
    if bad_id.any():
        raise _bad(where, "concept_id", table.loc[bad_id].iloc[0], "is not an integer")
    for col in ("loinc_code", "concept_id"):
        dup = table[col].duplicated(keep=False)
        if dup.any():
            raise _bad(where, col, table.loc[dup].iloc[0], "repeats")
    table["concept_id"] = table["concept_id"].astype(np.int64)
    missing_codes: tuple[str, ...] = ()
    if vocabulary is not None:
        concept = vocabulary.concept
        loinc = concept.loc[concept["vocabulary_id"] == "LOINC"]
        code_of = dict(zip(loinc["concept_id"].astype(np.int64), loinc["concept_code"]))
        for i, row in table.iterrows():
            cid = int(row["concept_id"])
            if cid not in code_of:
                raise _bad(where, "concept_id", table.loc[i], "is not a LOINC concept")
            if code_of[cid] != row["loinc_code"]:
                raise _bad(
                    where,
                    "loinc_code",
                    table.loc[i],
                    f"differs from the concept's code {code_of[cid]!r}",
                )
        have = set(table["concept_id"].tolist())
        missing_codes = tuple(str(code_of[c]) for c in sorted(code_of) if c not in have)
    return LoincParts(
        table=table.reset_index(drop=True),
        n_missing=len(missing_codes),
        missing_codes=missing_codes,
        path=file,
    )


# --------------------------------------------------------------------------------------
# Decile tokens and value scaling
# --------------------------------------------------------------------------------------


def _lab_arrays(concept_id, value, who: str) -> tuple[np.ndarray, np.ndarray]:
    cid = np.asarray(concept_id, dtype=np.int64).reshape(-1)
    val = np.asarray(value, dtype=np.float64).reshape(-1)
    if len(cid) != len(val):
        raise ValueError(f"{who}: concept_id and value differ in length ({len(cid)}, {len(val)})")
    return cid, val


@dataclass(frozen=True, eq=False)
class DecileBins:
    r"""Per-lab quantile bins fitted on training values.

    For lab :math:`\ell` with training values :math:`x_1..x_n`, the edges are :math:`e_j
    = Q(j / B)`, :math:`j = 1..B-1` (``np.quantile``, linear interpolation), and a value
    :math:`x` falls in bin :math:`k = \#\{j : e_j \le x\}` (0-based, so a value equal to
    an edge goes up). Its token id is ``concept_id * 100 + k`` and its name ``"<concept
    name> (decile k+1)"``.

    Attributes:
        concept_ids: ``(L,)`` labs with bins.
        edges: ``(L, B - 1)`` edges, non-decreasing along each row.
        n_bins: :math:`B` (10 for deciles).
        counts: ``(L,)`` training values per lab.
    """

    concept_ids: np.ndarray
    edges: np.ndarray
    n_bins: int
    counts: np.ndarray

    @classmethod
    def fit(cls, concept_id, value, n_bins: int = 10, min_count: int = 1) -> DecileBins:
        """Fit the bins of every lab with at least ``min_count`` finite values.

        Args:
            concept_id: ``(N,)`` lab of each training value.
            value: ``(N,)`` the values (NaN ones are ignored).
            n_bins: :math:`B`, ``2 <= B <= 100``.
            min_count: labs with fewer finite values get no bins.

        Raises:
            ValueError: on arrays of different lengths, a bad ``n_bins`` or no lab to
                fit.
        """
        cid, val = _lab_arrays(concept_id, value, "DecileBins.fit")
        if not (isinstance(n_bins, int | np.integer) and 2 <= n_bins <= DECILE_ID_FACTOR):
            raise ValueError(f"DecileBins.fit: n_bins must be in 2..100, got {n_bins!r}")
        ok = np.isfinite(val)
        cid, val = cid[ok], val[ok]
        labs, counts = np.unique(cid, return_counts=True)
        keep = counts >= max(min_count, 1)
        labs, counts = labs[keep], counts[keep]
        if len(labs) == 0:
            raise ValueError(
                f"DecileBins.fit: no lab has {min_count} finite values ({len(val)} given)"
            )
        q = np.arange(1, n_bins) / n_bins
        edges = np.stack([np.quantile(val[cid == lab], q) for lab in labs])  # (L, B-1)
        return cls(labs.astype(np.int64), edges, int(n_bins), counts.astype(np.int64))

    def bin(self, concept_id, value) -> np.ndarray:
        """Bin ``k`` of each value; ``-1`` for a lab without bins or a NaN. ``(N,)``."""
        cid, val = _lab_arrays(concept_id, value, "DecileBins.bin")
        row = lookup_rows(self.concept_ids, cid)  # (N,) -1 for a lab without bins
        known = (row >= 0) & np.isfinite(val)
        k = (self.edges[row] <= val[:, None]).sum(1)  # (N,)
        return np.where(known, k, -1).astype(np.int64)

    def tokens(self, concept_id, value) -> np.ndarray:
        """Token id ``concept_id * 100 + k`` of each value; ``0`` where unbinned."""
        cid, _ = _lab_arrays(concept_id, value, "DecileBins.tokens")
        k = self.bin(concept_id, value)
        return np.where(k >= 0, cid * DECILE_ID_FACTOR + k, 0).astype(np.int64)

    @staticmethod
    def split_token(token_id) -> tuple[np.ndarray, np.ndarray]:
        """``(concept_id, k)`` of decile token ids."""
        t = np.asarray(token_id, dtype=np.int64)
        return t // DECILE_ID_FACTOR, t % DECILE_ID_FACTOR


@dataclass(frozen=True, eq=False)
class ValueScaler:
    r"""Per-lab robust z-scores from training values.

    .. math:: z = \mathrm{clip}\Big(\frac{x - m_\ell}{s_\ell}, \pm z_{\max}\Big), \qquad
        m_\ell = \mathrm{median}, \quad s_\ell = \mathrm{IQR} / 1.349

    (:math:`s_\ell` is the SD for normal data; the median and IQR keep a skewed lab such
    as NT-proBNP, whose few huge values would inflate an SD, on a usable scale). Where
    the IQR is 0 (a score with few levels) the SD is used, and 1 where that is 0 too.

    Attributes:
        concept_ids: ``(L,)`` labs; center, scale: ``(L,)`` :math:`m_\ell`,
            :math:`s_\ell`.
        z_max: the clip.
    """

    concept_ids: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    z_max: float = 5.0

    @classmethod
    def fit(cls, concept_id, value, z_max: float = 5.0) -> ValueScaler:
        r"""Fit :math:`m_\ell` and :math:`s_\ell` of every lab with a finite value.

        Raises:
            ValueError: on arrays of different lengths or no finite value.
        """
        cid, val = _lab_arrays(concept_id, value, "ValueScaler.fit")
        ok = np.isfinite(val)
        if not ok.any():
            raise ValueError("ValueScaler.fit: no finite value")
        frame = pd.DataFrame({"c": cid[ok], "x": val[ok]}).groupby("c")["x"]
        q = frame.quantile([0.25, 0.5, 0.75]).unstack()
        scale = (q[0.75] - q[0.25]) / 1.349
        sd = frame.std(ddof=0).reindex(q.index).fillna(0.0)
        scale = scale.where(scale > 0, sd)
        scale = scale.where(scale > 0, 1.0)
        return cls(q.index.to_numpy(np.int64), q[0.5].to_numpy(), scale.to_numpy(), z_max)

    def transform(self, concept_id, value) -> np.ndarray:
        """z of each value; ``0`` for a lab without statistics or a NaN. ``(N,)``."""
        cid, val = _lab_arrays(concept_id, value, "ValueScaler.transform")
        row = lookup_rows(self.concept_ids, cid)  # (N,) -1 for a lab without statistics
        known = (row >= 0) & np.isfinite(val)
        z = (val - self.center[row]) / self.scale[row]
        return np.where(known, np.clip(z, -self.z_max, self.z_max), 0.0)


# --------------------------------------------------------------------------------------
# A corpus that keeps the values
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ValueCorpus:
    """A :class:`~ehrseq.embeddings.corpus.CodeCorpus` with each event's raw value.

    Attributes:
        corpus: the codes in time order.
        value: ``(N,)`` float64 value of each corpus row (NaN: not a measurement, or
            none).
        concept_id: ``(N,)`` int64 original concept id of each row (also for unknown
            tokens).
    """

    corpus: CodeCorpus
    value: np.ndarray
    concept_id: np.ndarray

    @classmethod
    def from_arrays(
        cls,
        person,
        days,
        concept_id,
        value,
        vocabulary: Vocabulary | Iterable[int] | None = None,
        min_count: int = 1,
        seed: int = 0,
    ) -> ValueCorpus:
        r"""Build the corpus, keeping each event's value on its row.

        Rows are put in :class:`CodeCorpus` order here (person, day, a seeded random key
        within the day), and each is then moved :math:`10^{-6}` day per rank within its
        person, so that no two events of a person share a time and
        :meth:`CodeCorpus.from_arrays` keeps exactly this order (a time weight changes
        by at most :math:`e^{-n \cdot 10^{-6}/\tau}` for a person of :math:`n` events).

        Args:
            person, days, concept_id: as :meth:`CodeCorpus.from_arrays`.
            value: ``(N,)`` values (NaN where none).
            vocabulary, min_count, seed: as :meth:`CodeCorpus.from_arrays`.

        Raises:
            ValueError: on arrays of different lengths (and what ``CodeCorpus`` raises).
        """
        person = np.asarray(person, dtype=np.int64)
        days = np.asarray(days, dtype=np.float64)
        cid = np.asarray(concept_id, dtype=np.int64)
        val = np.asarray(value, dtype=np.float64)
        if not (len(person) == len(days) == len(cid) == len(val)):
            raise ValueError(
                "ValueCorpus.from_arrays: person, days, concept_id, value differ in "
                "length "
                f"({len(person)}, {len(days)}, {len(cid)}, {len(val)})"
            )
        rng = np.random.default_rng(seed)
        order = np.lexsort((rng.random(len(person)), days, person))
        person, days, cid, val = person[order], days[order], cid[order], val[order]
        starts = np.r_[0, np.flatnonzero(person[1:] != person[:-1]) + 1]
        first = np.repeat(starts, np.diff(np.r_[starts, len(person)]))
        days = days + (np.arange(len(person)) - first) * 1e-6
        corpus = CodeCorpus.from_arrays(person, days, cid, vocabulary, min_count, seed)
        # the order is kept: times are distinct within a person and persons are sorted
        if not np.array_equal(corpus.person, person):
            raise ValueError("ValueCorpus.from_arrays: CodeCorpus changed the event order")
        return cls(corpus=corpus, value=val, concept_id=cid)

    @classmethod
    def from_omop_tables(
        cls,
        tables: Mapping[str, pd.DataFrame],
        persons: Iterable[int] | None = None,
        vocabulary: Vocabulary | Iterable[int] | None = None,
        min_count: int = 1,
        seed: int = 0,
    ) -> ValueCorpus:
        """Conditions, drugs, procedures (value NaN) and measurements (their value).

        Args:
            tables: OMOP clinical tables
                (:data:`~ehrseq.embeddings.corpus.OMOP_CODE_TABLES`).
            persons: keep only these persons (e.g. the training split); ``None``: all.

        Raises:
            ValueError: when none of the tables is present.
        """
        person, days, concept, value = _omop_event_arrays(
            tables, persons, "ValueCorpus.from_omop_tables", values=True
        )
        return cls.from_arrays(person, days, concept, value, vocabulary, min_count, seed)


@dataclass(frozen=True, eq=False)
class DecileCorpus:
    """What :func:`decile_corpus` returns.

    Attributes:
        corpus: the events, binned lab values as decile tokens (ids ``concept_id * 100 +
            k``).
        n_decile: events that became a decile token.
        n_unbinned: lab events that kept their plain code (no bins or no value).
    """

    corpus: CodeCorpus
    n_decile: int
    n_unbinned: int


def decile_corpus(vc: ValueCorpus, bins: DecileBins, seed: int = 0) -> DecileCorpus:
    """The same events with every binned lab event replaced by its decile token.

    A lab event without bins or without a value keeps its plain concept id (counted in
    ``n_unbinned``); the event order and times are those of ``vc`` (distinct within a
    person, so :meth:`CodeCorpus.from_arrays` keeps them). Every code is known
    (``vocabulary=None``).

    Args:
        vc: the corpus with values.
        bins: per-lab bins, fitted on training values (:meth:`DecileBins.fit`).
        seed: passed to :meth:`CodeCorpus.from_arrays` (no tie to break).

    Shapes:
        ``corpus`` has the ``N`` events of ``vc``, in its order.
    """
    c = vc.corpus
    is_lab = np.isin(vc.concept_id, bins.concept_ids)
    tok = bins.tokens(vc.concept_id, vc.value)  # (N,)
    new_id = np.where(tok > 0, tok, vc.concept_id)
    corpus = CodeCorpus.from_arrays(c.person, c.days, new_id, None, 1, seed)
    return DecileCorpus(corpus, int((tok > 0).sum()), int((is_lab & (tok == 0)).sum()))


# --------------------------------------------------------------------------------------
# The LOINC-aware, value-aware model
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoincConfig:
    """Settings of :func:`train_loinc_embedding`.

    Attributes:
        dim: vector length ``d``; hidden: width of the value MLP.
        window, tau, negatives, ns_exponent: as
            :class:`~ehrseq.embeddings.skipgram.SkipGramConfig`.
        epochs, batch_size, lr: Adam on the SGNS loss.
        max_pairs: at most this many pairs per epoch, drawn at random (``0``: all).
        use_parts: a lab's base vector is the mean of its six part vectors (else one
            vector per lab, as any other code).
        value_aware: add the value MLP (else a lab event's vector ignores its value).
        z_max: clip of the z-scores.
        seed: seeds the initialisation, the pair sample, the batches and the negatives.
    """

    dim: int = 32
    hidden: int = 32
    window: int = 5
    tau: float = math.inf
    negatives: int = 5
    ns_exponent: float = 0.75
    epochs: int = 3
    batch_size: int = 2048
    lr: float = 0.01
    max_pairs: int = 300_000
    use_parts: bool = True
    value_aware: bool = True
    z_max: float = 5.0
    seed: int = 0

    def validate(self) -> LoincConfig:
        """Raise ``ValueError`` naming the first setting that does not make sense."""
        checks = [
            (self.dim >= 1 and self.hidden >= 1, "dim and hidden must be >= 1"),
            (self.window >= 1, "window must be >= 1"),
            (self.tau > 0, "tau must be > 0"),
            (self.negatives >= 1, "negatives must be >= 1"),
            (
                self.epochs >= 1 and self.batch_size >= 1,
                "epochs, batch_size must be >= 1",
            ),
            (self.lr > 0, "lr must be > 0"),
            (self.max_pairs >= 0, "max_pairs must be >= 0"),
            (self.z_max > 0, "z_max must be > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"LoincConfig: {message} (got {self})")
        return self


class LoincLabModel(nn.Module):
    r"""Input vectors :math:`u(t, z)` and output vectors :math:`v_t` of a SGNS model.

    .. math::
        u(t, z) = \begin{cases} b_t + \mathbb{1}_{\text{value}}\,
            \big((W_2 + D_t)^\top \tanh(W_1 [z, b_t] + c_1) + c_2\big)
            & t \text{ a lab} \\ E_t & \text{otherwise}\end{cases},
        \qquad b_t = \tfrac16\sum_k P_k[\text{part}_k(t)] \text{ (or } E_t\text{
        without parts)}

    Args:
        n_tokens: ``V``, tokens of the corpus (token 0 the unknown one).
        parts: ``(V, 6)`` int64 part indices of each token, ``-1`` rows for a token
            without parts.
        is_lab: ``(V,)`` bool, the tokens that get the value MLP.
        n_part_values: distinct (part, value) pairs.
        config: the settings.

    Shapes:
        :meth:`inputs` takes ``tokens`` ``(B,)`` and ``z`` ``(B,)`` and returns ``(B,
        d)``.
    """

    def __init__(
        self,
        n_tokens: int,
        parts: Tensor,
        is_lab: Tensor,
        n_part_values: int,
        config: LoincConfig,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        d = config.dim
        if parts.shape != (n_tokens, len(PART_COLUMNS)) or is_lab.shape != (n_tokens,):
            raise ValueError(
                f"LoincLabModel: parts must be ({n_tokens}, 6) and is_lab "
                f"({n_tokens},); got "
                f"{tuple(parts.shape)}, {tuple(is_lab.shape)}"
            )
        self.config = config
        self.codes = nn.Embedding(n_tokens, d)
        self.part = nn.Embedding(max(n_part_values, 1), d)
        self.out = nn.Embedding(n_tokens, d)
        with torch.no_grad():
            self.codes.weight.uniform_(-0.5 / d, 0.5 / d, generator=generator)
            self.part.weight.uniform_(-0.5 / d, 0.5 / d, generator=generator)
            self.out.weight.zero_()
        self.value = nn.Sequential(nn.Linear(1 + d, config.hidden), nn.Tanh())
        self.value_out = nn.Linear(config.hidden, d)
        self.value_lab = nn.Embedding(n_tokens, config.hidden * d)  # per-lab read-out
        nn.init.zeros_(self.value_lab.weight)
        with torch.no_grad():
            for lin in (self.value[0], self.value_out):
                bound = 1.0 / math.sqrt(lin.in_features)
                lin.weight.uniform_(-bound, bound, generator=generator)
                lin.bias.uniform_(-bound, bound, generator=generator)
        has = (parts >= 0).all(1) & bool(config.use_parts)
        self.register_buffer("parts", parts.clamp_min(0))
        self.register_buffer("has_parts", has)
        self.register_buffer("is_lab", is_lab & bool(config.value_aware))

    def base(self, tokens: Tensor) -> Tensor:
        """Base vectors ``b_t``, the part mean for a lab: ``(B,)`` -> ``(B, d)``."""
        plain = self.codes(tokens)  # (B, d)
        mean_parts = self.part(self.parts[tokens]).mean(1)  # (B, 6, d) -> (B, d)
        return torch.where(self.has_parts[tokens, None], mean_parts, plain)

    def inputs(self, tokens: Tensor, z: Tensor) -> Tensor:
        """Value-aware input vectors ``u(t, z)``: ``(B,)``, ``(B,)`` -> ``(B, d)``."""
        b = self.base(tokens)  # (B, d)
        if not self.config.value_aware:
            return b  # no lab gets the value MLP
        h = self.value(torch.cat([z[:, None], b], dim=1))  # (B, hidden)
        per_lab = self.value_lab(tokens).view(len(tokens), h.shape[1], -1)  # (B, H, d)
        shift = self.value_out(h) + torch.bmm(h.unsqueeze(1), per_lab).squeeze(1)  # (B, d)
        return b + shift * self.is_lab[tokens, None]

    @torch.no_grad()
    def inputs_by_lab(self, tokens: Tensor, z: Tensor) -> Tensor:
        r""":meth:`inputs` for many events, the per-lab read-out applied lab by lab.

        Equal to :meth:`inputs` (tested), without gathering a ``(H, d)`` read-out per
        event: the events of one lab share :math:`D_\ell`, so ``h @ D_l`` runs once per
        lab, on its rows. ``(N,)``, ``(N,)`` -> ``(N, d)``.
        """
        b = self.base(tokens)  # (N, d)
        if not self.config.value_aware:
            return b
        h = self.value(torch.cat([z[:, None], b], dim=1))  # (N, hidden)
        shift = self.value_out(h)  # (N, d)
        for t in torch.unique(tokens[self.is_lab[tokens]]).tolist():
            rows = tokens == t  # (N,) the events of lab t
            d_lab = self.value_lab.weight[t].view(h.shape[1], -1)  # (H, d)
            shift[rows] += h[rows] @ d_lab
        return b + shift * self.is_lab[tokens, None]

    def forward(
        self,
        center: Tensor,
        z: Tensor,
        context: Tensor,
        negatives: Tensor,
        weight: Tensor,
    ) -> Tensor:
        """SGNS loss of a batch (:func:`~ehrseq.embeddings.skipgram.sgns_loss`).

        Shapes:
            ``center``, ``z``, ``context``, ``weight``: ``(B,)``; ``negatives``:
            ``(B, K)``; returns a scalar.
        """
        u = self.inputs(center, z)  # (B, d)
        return sgns_loss(u, self.out(context), self.out(negatives), weight)


@dataclass
class LoincLabResult:
    """What :func:`train_loinc_embedding` returns.

    Attributes:
        model: the trained :class:`LoincLabModel` (eval mode).
        concept_ids: ``(V,)`` concept id of each token (token 0 = unknown).
        scaler: the per-lab z-scores (fitted on the training corpus).
        parts: the parts table used.
        losses: mean loss per pair of each epoch; n_pairs: pairs per epoch.
        n_labs_without_parts: lab concepts of the corpus with no parts row (plain
            vector).
        seconds: training wall time.
    """

    model: LoincLabModel
    concept_ids: np.ndarray
    scaler: ValueScaler
    parts: LoincParts
    losses: list[float]
    n_pairs: int
    n_labs_without_parts: int
    seconds: float
    config: LoincConfig = field(default_factory=LoincConfig)

    def token_of(self, concept_id) -> np.ndarray:
        """Token of each concept id (``0`` where unknown). ``(N,)`` int64."""
        return np.maximum(lookup_rows(self.concept_ids, concept_id), 0)

    @torch.no_grad()
    def event_vectors(self, concept_id, value) -> np.ndarray:
        """Vector ``u(t, z)`` of each event, z from the training scaler.

        Shapes:
            ``concept_id``, ``value``: ``(N,)``; returns ``(N, d)`` float32.

        Raises:
            ValueError: on arrays of different lengths.
        """
        cid, val = _lab_arrays(concept_id, value, "LoincLabResult.event_vectors")
        tok = torch.from_numpy(self.token_of(cid))
        z = torch.from_numpy(self.scaler.transform(cid, val)).float()
        return self.model.inputs_by_lab(tok, z).numpy()


def train_loinc_embedding(
    vc: ValueCorpus,
    parts: LoincParts,
    config: LoincConfig | None = None,
) -> LoincLabResult:
    r"""Train LOINC-part, value-aware lab vectors with skip-gram negative sampling.

    Pairs are the (center, context) positions of
    :func:`~ehrseq.embeddings.skipgram.pair_positions` over the corpus (unknown tokens
    left out), at most ``max_pairs`` drawn per epoch; the loss is
    :func:`~ehrseq.embeddings.skipgram.sgns_loss` with the center's value-aware vector
    :math:`u(t, z)` (:class:`LoincLabModel`), a plain context vector, and ``K``
    negatives from :math:`P_n \propto \text{count}^{0.75}`. Values are z-scored per lab
    on this corpus (fit on training patients only).

    Args:
        vc: the training corpus with values.
        parts: the parts table (:func:`load_loinc_parts`).
        config: settings (default :class:`LoincConfig`).

    Raises:
        ValueError: on a bad config or a corpus without a pair.
    """
    cfg = (config or LoincConfig()).validate()
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    corpus = vc.corpus
    labs = np.unique(vc.concept_id[np.isfinite(vc.value)])  # labs get the value MLP
    scaler = ValueScaler.fit(vc.concept_id, vc.value, cfg.z_max)
    z_all = scaler.transform(vc.concept_id, vc.value).astype(np.float32)  # (N,)
    index, values = parts.part_index()
    n_tok = len(corpus.concept_ids)
    part_rows = np.full((n_tok, len(PART_COLUMNS)), -1, dtype=np.int64)
    for t, cid in enumerate(corpus.concept_ids):
        if int(cid) in index:
            part_rows[t] = index[int(cid)]
    is_lab = np.isin(corpus.concept_ids, labs) & (corpus.concept_ids != 0)
    n_without = int((is_lab & (part_rows[:, 0] < 0)).sum())

    i, j, w = pair_positions(corpus.person, corpus.days, cfg.window, cfg.tau)
    known = (corpus.tokens[i] != 0) & (corpus.tokens[j] != 0)
    i, j, w = i[known], j[known], w[known]
    if len(i) == 0:
        raise ValueError("train_loinc_embedding: the corpus gives no (center, context) pair")
    probs = torch.from_numpy(negative_distribution(corpus.counts, cfg.ns_exponent))
    model = LoincLabModel(
        n_tok,
        torch.from_numpy(part_rows),
        torch.from_numpy(is_lab),
        len(values),
        cfg,
        generator=gen,
    )
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    tokens = torch.from_numpy(corpus.tokens)
    z_t = torch.from_numpy(z_all)
    n_epoch = len(i) if cfg.max_pairs == 0 else min(cfg.max_pairs, len(i))
    losses = []
    for _ in range(cfg.epochs):
        pick = rng.permutation(len(i))[:n_epoch]
        ci = torch.from_numpy(i[pick])
        cj = torch.from_numpy(j[pick])
        cw = torch.from_numpy(w[pick])
        total = 0.0
        for start in range(0, n_epoch, cfg.batch_size):
            pi, pj = (
                ci[start : start + cfg.batch_size],
                cj[start : start + cfg.batch_size],
            )
            pw = cw[start : start + cfg.batch_size]
            neg = torch.multinomial(probs, len(pi) * cfg.negatives, True, generator=gen)
            loss = model(tokens[pi], z_t[pi], tokens[pj], neg.view(len(pi), -1), pw)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(pi)
        losses.append(total / n_epoch)
    model.eval()
    return LoincLabResult(
        model=model,
        concept_ids=corpus.concept_ids.copy(),
        scaler=scaler,
        parts=parts,
        losses=losses,
        n_pairs=n_epoch,
        n_labs_without_parts=n_without,
        seconds=time.perf_counter() - t0,
        config=cfg,
    )


def ordering_distances(
    result: LoincLabResult,
    vocabulary: Vocabulary,
    loinc_codes: Iterable[str] | None = None,
    high: float = 2.0,
    very_high: float = 4.0,
) -> pd.DataFrame:
    r"""The ordering test: is "normal" nearer "high" than "very high" is to "normal"?

    For lab :math:`\ell` with reference mean :math:`\mu` and SD :math:`\sigma`
    (``concept_annotation``'s ``ref_mean``, ``ref_sd``), normal, high and very high are
    the values :math:`\mu`, :math:`\mu + 2\sigma` and :math:`\mu + 4\sigma`; with
    :math:`u` the event vectors (:meth:`LoincLabResult.event_vectors`) the lab passes
    when

    .. math:: \lVert u(\ell, \mu) - u(\ell, \mu + 2\sigma)\rVert <
        \lVert u(\ell, \mu) - u(\ell, \mu + 4\sigma)\rVert .

    A value-blind model gives every value of a lab one vector: both distances are 0 and
    no lab passes.

    Args:
        result: a trained model (:func:`train_loinc_embedding`).
        vocabulary: with ``annotation`` holding ``concept_code``, ``concept_id``,
            ``ref_mean``, ``ref_sd``.
        loinc_codes: the labs (LOINC codes); default: every lab of the parts table with a
            reference range.
        high, very_high: the two shifts, in reference SDs (``0 < high < very_high``).

    Shapes:
        One row per lab: ``loinc_code``, ``concept_id``, ``normal_high``,
        ``normal_very_high``, ``passes``.

    Raises:
        ValueError: on shifts out of order or a code without a reference range.
    """
    if not 0 < high < very_high:
        raise ValueError(f"ordering_distances: need 0 < high < very_high, got {high}, {very_high}")
    ann = vocabulary.annotation.dropna(subset=["ref_mean", "ref_sd"])
    ann = ann.drop_duplicates("concept_code").set_index("concept_code")
    if loinc_codes is None:
        codes = [c for c in result.parts.table["loinc_code"] if c in ann.index]
    else:
        codes = list(loinc_codes)
    absent = [c for c in codes if c not in ann.index]
    if absent:
        raise ValueError(f"ordering_distances: no reference range for {absent[:5]}")
    rows = []
    for code in codes:
        mean, sd = float(ann.loc[code, "ref_mean"]), float(ann.loc[code, "ref_sd"])
        cid = int(ann.loc[code, "concept_id"])
        values = np.array([mean, mean + high * sd, mean + very_high * sd])
        u = result.event_vectors(np.full(3, cid), values)  # (3, d)
        near = float(np.linalg.norm(u[0] - u[1]))
        far = float(np.linalg.norm(u[0] - u[2]))
        rows.append((code, cid, near, far, near < far))
    columns = ["loinc_code", "concept_id", "normal_high", "normal_very_high", "passes"]
    return pd.DataFrame(rows, columns=columns)

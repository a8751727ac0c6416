r"""The skip-gram corpus: every patient's codes in time order, as token indices with days.

A code embedding learns from which codes a patient's record puts near which. The corpus keeps,
for every clinical event, the person, the time in days and a token index into
``concept_ids``; token ``0`` is the unknown token (concept id ``0``, OMOP's "no matching
concept"), which takes every code outside the given vocabulary and every code seen fewer than
``min_count`` times. Both counts are reported (:attr:`CodeCorpus.n_unknown`,
:attr:`CodeCorpus.n_rare`), since a silent drop of a tenth of the record is a result.

Codes recorded on the same day carry no order (a visit's diagnoses, drugs and labs share a
date); a seeded shuffle within each person-day keeps a window counted in positions from seeing
only neighbours of the same OMOP table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ehrseq.data.concepts import Vocabulary

__all__ = ["UNKNOWN_CONCEPT_ID", "CodeCorpus", "OMOP_CODE_TABLES"]

#: Concept id of the unknown token (OMOP's "No matching concept").
UNKNOWN_CONCEPT_ID = 0
#: OMOP tables read by :meth:`CodeCorpus.from_omop_tables`: (table, concept column, date column).
OMOP_CODE_TABLES: tuple[tuple[str, str, str], ...] = (
    ("condition_occurrence", "condition_concept_id", "condition_start_date"),
    ("drug_exposure", "drug_concept_id", "drug_exposure_start_date"),
    ("procedure_occurrence", "procedure_concept_id", "procedure_date"),
    ("measurement", "measurement_concept_id", "measurement_date"),
)
_NS_PER_DAY = 86_400 * 10**9


def _known_ids(vocabulary: Vocabulary | Iterable[int] | None) -> np.ndarray | None:
    if vocabulary is None:
        return None
    if isinstance(vocabulary, Vocabulary):
        return np.unique(vocabulary.concept["concept_id"].to_numpy(np.int64))
    return np.unique(np.asarray(list(vocabulary), dtype=np.int64))


@dataclass(frozen=True, eq=False)
class CodeCorpus:
    """Time-ordered codes of many patients, grouped by person.

    Attributes:
        person: ``(N,)`` int64 person id of each event; each person's events are contiguous.
        days: ``(N,)`` float64 event time in days (since 1970-01-01), non-decreasing within a
            person.
        tokens: ``(N,)`` int64 index into ``concept_ids`` (``0`` = unknown).
        concept_ids: ``(V,)`` int64 concept id of each token; ``concept_ids[0] = 0``.
        counts: ``(V,)`` int64 events per token.
        n_unknown: events whose code is not in the vocabulary (or is concept 0).
        n_rare: events whose code was seen fewer than ``min_count`` times.
        unknown_codes: the unknown concept ids and their counts, most frequent first.
    """

    person: np.ndarray
    days: np.ndarray
    tokens: np.ndarray
    concept_ids: np.ndarray
    counts: np.ndarray
    n_unknown: int = 0
    n_rare: int = 0
    unknown_codes: Mapping[int, int] | None = None

    def __post_init__(self) -> None:
        n = len(self.tokens)
        if not (len(self.person) == len(self.days) == n):
            raise ValueError(
                f"CodeCorpus: person, days and tokens differ in length "
                f"({len(self.person)}, {len(self.days)}, {n})"
            )
        if len(self.concept_ids) == 0 or self.concept_ids[0] != UNKNOWN_CONCEPT_ID:
            raise ValueError("CodeCorpus: concept_ids[0] must be the unknown token (concept 0)")
        if n and (self.tokens.min() < 0 or self.tokens.max() >= len(self.concept_ids)):
            raise ValueError("CodeCorpus: a token index lies outside concept_ids")
        if n > 1:
            same = self.person[1:] == self.person[:-1]
            if (same & (self.days[1:] < self.days[:-1])).any():
                raise ValueError("CodeCorpus: days decrease within a person")
            starts = np.flatnonzero(np.r_[True, ~same])
            if len(np.unique(self.person[starts])) != len(starts):
                raise ValueError("CodeCorpus: a person's events are not contiguous")

    @property
    def n_tokens(self) -> int:
        """Events in the corpus ``N`` (unknown ones included)."""
        return len(self.tokens)

    @property
    def n_persons(self) -> int:
        return int(len(np.unique(self.person)))

    def report(self) -> str:
        """Events, persons, vocabulary size, and how many events became unknown (3 lines)."""
        share = self.n_unknown / max(self.n_tokens, 1)
        return "\n".join(
            [
                f"{self.n_tokens:,} events of {self.n_persons:,} persons, "
                f"{len(self.concept_ids) - 1} codes",
                f"{self.n_unknown:,} events ({share:.2%}) had a code outside the vocabulary",
                f"{self.n_rare:,} events had a code seen < min_count times "
                "(both mapped to the unknown token)",
            ]
        )

    def thin(self, concept_ids: Iterable[int], keep: int, seed: int = 0) -> CodeCorpus:
        r"""The corpus with each of the given codes cut to ``keep`` of its events.

        Makes codes rare in a controlled way: for every code :math:`c` of
        ``concept_ids``, :math:`\min(k, n_c)` of its :math:`n_c` events are kept, drawn
        uniformly without replacement (a seeded random key per event, the ``k`` smallest
        kept); every other event stays. The order of the kept events is unchanged, and
        the tokens are renumbered as :meth:`from_arrays` numbers them (most frequent
        first, ties by concept id; the unknown token stays ``0``, its counts too).

        Args:
            concept_ids: the codes to thin (known, non-zero codes of the corpus).
            keep: :math:`k \ge 1`, the events each of them keeps.
            seed: seeds the draw.

        Shapes:
            Returns a corpus of :math:`N - \sum_c \max(n_c - k, 0)` events.

        Raises:
            ValueError: on ``keep < 1`` or a code the corpus does not hold (or the unknown
                token), naming them.
        """
        if not (isinstance(keep, int | np.integer) and keep >= 1):
            raise ValueError(f"CodeCorpus.thin: keep must be an integer >= 1, got {keep!r}")
        items = concept_ids if isinstance(concept_ids, np.ndarray) else list(concept_ids)
        ids = np.unique(np.asarray(items, dtype=np.int64).reshape(-1))
        token_of = {int(c): t for t, c in enumerate(self.concept_ids) if t > 0}
        absent = [int(c) for c in ids if int(c) not in token_of]
        if absent:
            raise ValueError(
                f"CodeCorpus.thin: {len(absent)} codes are not known codes of the corpus, "
                f"e.g. {absent[:5]}"
            )
        v = len(self.concept_ids)
        chosen = np.zeros(v, dtype=bool)
        chosen[[token_of[int(c)] for c in ids]] = True
        idx = np.flatnonzero(chosen[self.tokens])  # events of the chosen codes
        key = np.random.default_rng(seed).random(len(idx))
        order = np.lexsort((key, self.tokens[idx]))  # by code, then the random key
        sorted_tok = self.tokens[idx][order]
        first = np.r_[0, np.flatnonzero(np.diff(sorted_tok)) + 1]  # each code's first
        rank = np.arange(len(idx)) - np.repeat(first, np.diff(np.r_[first, len(idx)]))
        kept = np.ones(self.n_tokens, dtype=bool)
        kept[idx[order][rank >= keep]] = False
        old = self.tokens[kept]  # (N',) old tokens
        old_counts = np.bincount(old, minlength=v)
        known = np.arange(1, v)
        by_freq = known[np.lexsort((self.concept_ids[known], -old_counts[known]))]
        new_of_old = np.zeros(v, dtype=np.int64)
        new_of_old[by_freq] = np.arange(1, v)
        tokens = new_of_old[old]
        return CodeCorpus(
            person=self.person[kept],
            days=self.days[kept],
            tokens=tokens,
            concept_ids=np.r_[UNKNOWN_CONCEPT_ID, self.concept_ids[by_freq]].astype(np.int64),
            counts=np.bincount(tokens, minlength=v).astype(np.int64),
            n_unknown=self.n_unknown,
            n_rare=self.n_rare,
            unknown_codes=self.unknown_codes,
        )

    def sentences(self) -> list[list[str]]:
        """Each person's codes as strings (``str(concept_id)``), for gensim. Unknown: ``"0"``."""
        words = self.concept_ids.astype(str)[self.tokens]
        cuts = np.flatnonzero(self.person[1:] != self.person[:-1]) + 1
        return [w.tolist() for w in np.split(words, cuts)]

    @classmethod
    def from_arrays(
        cls,
        person: np.ndarray,
        days: np.ndarray,
        concept_id: np.ndarray,
        vocabulary: Vocabulary | Iterable[int] | None = None,
        min_count: int = 1,
        seed: int = 0,
    ) -> CodeCorpus:
        r"""Build the corpus from one row per event (any order).

        Rows are sorted by person, then day, then a seeded random key (so codes of the same
        day come in random order). A code becomes the unknown token when it is ``0``, is not
        in ``vocabulary`` (when one is given), or occurs fewer than ``min_count`` times.
        Known tokens are numbered by frequency, most frequent first, ties by concept id.

        Args:
            person: ``(N,)`` person ids.
            days: ``(N,)`` event times in days (float).
            concept_id: ``(N,)`` OMOP concept ids.
            vocabulary: the known codes (a :class:`~ehrseq.data.concepts.Vocabulary` or ids);
                ``None`` knows every non-zero code.
            min_count: fewer occurrences than this make a code unknown (counted in
                ``n_rare``).
            seed: seed of the within-day shuffle.

        Raises:
            ValueError: on arrays of different lengths, missing times or ``min_count < 1``.
        """
        person = np.asarray(person, dtype=np.int64)
        days = np.asarray(days, dtype=np.float64)
        concept_id = np.asarray(concept_id, dtype=np.int64)
        if not (len(person) == len(days) == len(concept_id)):
            raise ValueError(
                f"CodeCorpus.from_arrays: person, days, concept_id differ in length "
                f"({len(person)}, {len(days)}, {len(concept_id)})"
            )
        if np.isnan(days).any():
            raise ValueError(
                f"CodeCorpus.from_arrays: {int(np.isnan(days).sum())} events have no time"
            )
        if min_count < 1:
            raise ValueError(f"CodeCorpus.from_arrays: min_count must be >= 1, got {min_count}")
        rng = np.random.default_rng(seed)
        order = np.lexsort((rng.random(len(person)), days, person))
        person, days, concept_id = person[order], days[order], concept_id[order]

        known = _known_ids(vocabulary)
        unknown = concept_id == UNKNOWN_CONCEPT_ID
        if known is not None:
            unknown |= ~np.isin(concept_id, known)
        ids, inverse, counts = np.unique(concept_id, return_inverse=True, return_counts=True)
        unk_ids, unk_counts = np.unique(concept_id[unknown], return_counts=True)
        top = np.argsort(-unk_counts, kind="stable")
        unknown_codes = {int(unk_ids[i]): int(unk_counts[i]) for i in top}
        rare_code = (counts < min_count) & ~np.isin(ids, unk_ids)
        rare = rare_code[inverse] & ~unknown
        keep_code = ~rare_code & ~np.isin(ids, unk_ids)
        kept_ids, kept_counts = ids[keep_code], counts[keep_code]
        by_freq = np.lexsort((kept_ids, -kept_counts))
        concept_ids = np.r_[UNKNOWN_CONCEPT_ID, kept_ids[by_freq]].astype(np.int64)
        token_of_code = np.zeros(len(ids), dtype=np.int64)
        token_of_code[np.flatnonzero(keep_code)[by_freq]] = np.arange(1, len(concept_ids))
        tokens = token_of_code[inverse]
        n_unknown, n_rare = int(unknown.sum()), int(rare.sum())
        token_counts = np.bincount(tokens, minlength=len(concept_ids)).astype(np.int64)
        return cls(
            person=person,
            days=days,
            tokens=tokens,
            concept_ids=concept_ids,
            counts=token_counts,
            n_unknown=n_unknown,
            n_rare=n_rare,
            unknown_codes=unknown_codes,
        )

    @classmethod
    def from_events(
        cls,
        events: pd.DataFrame,
        domains: tuple[str, ...] | None = ("condition", "drug", "procedure", "measurement"),
        vocabulary: Vocabulary | Iterable[int] | None = None,
        min_count: int = 1,
        seed: int = 0,
    ) -> CodeCorpus:
        """Build the corpus from an event table (:mod:`ehrseq.data.events` contract).

        Args:
            events: ``person_id``, ``time``, ``concept_id`` and ``domain`` columns are used.
            domains: the domains kept (``None``: all; the default leaves out visit types and
                death).
            vocabulary, min_count, seed: as in :meth:`from_arrays`.

        Raises:
            ValueError: on a missing column.
        """
        need = ["person_id", "time", "concept_id"] + (["domain"] if domains else [])
        missing = [c for c in need if c not in events.columns]
        if missing:
            raise ValueError(f"CodeCorpus.from_events: events lack columns {missing}")
        if domains:
            events = events.loc[events["domain"].isin(domains)]
        t = pd.to_datetime(events["time"]).to_numpy("datetime64[ns]").astype(np.int64)
        return cls.from_arrays(
            events["person_id"].to_numpy(),
            t / _NS_PER_DAY,
            events["concept_id"].to_numpy(),
            vocabulary=vocabulary,
            min_count=min_count,
            seed=seed,
        )

    @classmethod
    def from_omop_tables(
        cls,
        tables: Mapping[str, pd.DataFrame],
        vocabulary: Vocabulary | Iterable[int] | None = None,
        min_count: int = 1,
        seed: int = 0,
        persons: Iterable[int] | None = None,
    ) -> CodeCorpus:
        """Build the corpus from OMOP clinical tables held in memory (e.g. a synthetic cohort's).

        Reads the standard concept and start date of :data:`OMOP_CODE_TABLES`; a table that
        is absent is skipped. ``persons`` keeps only those persons' rows (e.g. the training
        split); ``None`` keeps all. For an export on disk, read it with
        :func:`ehrseq.data.omop.load_omop` and use :meth:`from_events`.

        Raises:
            ValueError: when none of the tables is present.
        """
        person, days, concept = _omop_event_arrays(tables, persons, "CodeCorpus.from_omop_tables")
        return cls.from_arrays(person, days, concept, vocabulary, min_count, seed)


def _omop_event_arrays(
    tables: Mapping[str, pd.DataFrame],
    persons: Iterable[int] | None,
    who: str,
    values: bool = False,
) -> tuple[np.ndarray, ...]:
    """``person, days, concept`` (and ``value`` with ``values``) of the OMOP tables' events.

    Days are the start date in days since 1970; ``value`` is a measurement's
    ``value_as_number`` and NaN elsewhere. Tables of :data:`OMOP_CODE_TABLES` that are absent
    are skipped; ``persons`` keeps only those persons' rows.

    Raises:
        ValueError: (naming ``who``) when none of the tables is present.
    """
    keep = None if persons is None else np.asarray(list(persons), dtype=np.int64)
    parts = []
    for table, concept_col, date_col in OMOP_CODE_TABLES:
        if table not in tables:
            continue
        df = tables[table]
        if keep is not None:
            df = df.loc[df["person_id"].isin(keep)]
        t = pd.to_datetime(df[date_col]).to_numpy("datetime64[ns]").astype(np.int64)
        cols = [df["person_id"].to_numpy(), t / _NS_PER_DAY, df[concept_col].to_numpy()]
        if values:
            cols.append(
                df["value_as_number"].to_numpy(np.float64)
                if table == "measurement" and "value_as_number" in df
                else np.full(len(df), np.nan)
            )
        parts.append(cols)
    if not parts:
        raise ValueError(f"{who}: none of {[t for t, _, _ in OMOP_CODE_TABLES]} given")
    return tuple(np.concatenate(cols) for cols in zip(*parts))

"""Events -> sequences: cut at the prediction time, group into visits, order, truncate.

One call, :func:`build_sequences`, turns the event table (see :mod:`ehrseq.data.events`) into a
*sequence frame*: one row per token, in the order the model reads them, for every patient at
once. Everything is done with whole-column NumPy operations (sorts, cumulative sums, shifted
comparisons); there is no loop over patients.

Leakage rule
    With a prediction time :math:`t^*_i` per patient, a row enters the history only if
    :math:`t < t^*_i` (strictly before). Rows at or after :math:`t^*_i`, rows of patients
    without a prediction time and rows dated before birth are dropped and counted.

Strategies (how tokens are ordered and what a *visit* is)
    ``flat``
        Time order, as the event table is sorted. A visit is a calendar day: the visit index
        goes up by one each day the patient has a row. ``visit_occurrence_id`` is not used.
    ``visit``
        A visit is the ``visit_occurrence_id`` of a row *when it resolves to a known visit*:
        the id belongs to a ``visit``-domain row of the same person (or to ``known_visits``
        when given). Otherwise -- missing id, an id with no visit row, or one owned by another
        person -- the row falls back to **its own calendar day** (rows of that person and day
        without a resolved visit form one visit). ``report["rows_visit_fallback_day"]`` counts
        the rows that used the fallback. Visits are ordered by their first event time; the
        tokens of a visit stay together (even when visits overlap in time) in time order.
    ``domain``
        As ``visit``, but inside a visit tokens are grouped by domain in the order of
        :data:`ehrseq.data.events.DOMAINS` (condition, drug, procedure, measurement,
        observation, visit, death), then by time.

Truncation keeps the most recent history, in this order: the last ``max_visits`` visits,
then the last ``max_codes_per_visit`` tokens of each visit (in reading order), then (after
the optional ``[CLS]``/``[SEP]`` tokens are inserted) the last ``max_len`` tokens, ``[CLS]``
included. A ``[SEP]`` left at the start of a cut sequence is dropped too. Every step counts
what it cut.

The sequence frame (one row per token, sorted by ``person_id`` then ``position``):

=============== ============== ==============================================================
column          dtype          meaning
=============== ============== ==============================================================
person_id       int64          patient
time            datetime64[ns] event time (``[CLS]``/``[SEP]``: time of the neighbouring token)
domain          category       one of :data:`TOKEN_DOMAINS` (``"[CLS]"``/``"[SEP]"`` for those)
concept_id      int64          standard concept (0 for special tokens)
value_as_number float64        measurement value or NaN
special         int8           0 event, 1 ``[CLS]``, 2 ``[SEP]``
visit           int64          visit index, 1 for the first *kept* visit, +1 per new visit
position        int64          token index within the patient, from 0
age             float32        age in years at ``time``: days / 365.25
time_delta      float32        days since the previous token (0 for the first; clipped at 0)
visit_time      datetime64[ns] first event time of the token's visit
visit_age       float32        age in years at ``visit_time``
visit_delta     float32        days from the previous kept visit's ``visit_time`` (0 first)
=============== ============== ==============================================================

``time_delta`` can only be negative before clipping when the ``visit`` or ``domain``
strategies put an earlier event after a later one (overlapping visits, domain grouping).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ehrseq.data.events import DOMAINS, check_events

__all__ = [
    "STRATEGIES",
    "TOKEN_DOMAINS",
    "SPECIAL_CLS",
    "SPECIAL_SEP",
    "Sequences",
    "build_sequences",
    "domain_codes",
]

STRATEGIES = ("flat", "visit", "domain")
TOKEN_DOMAINS = (*DOMAINS, "[CLS]", "[SEP]")
SPECIAL_CLS = 1
SPECIAL_SEP = 2
NS_PER_DAY = 86_400 * 10**9
NS_PER_YEAR = 365.25 * NS_PER_DAY
_CLS_DOMAIN = TOKEN_DOMAINS.index("[CLS]")
_SEP_DOMAIN = TOKEN_DOMAINS.index("[SEP]")
_REPORT_KEYS = (
    "events_in",
    "events_without_prediction_time",
    "events_at_or_after_prediction_time",
    "events_before_birth",
    "rows_visit_fallback_day",
    "rows_visit_id_unresolved",
    "events_cut_max_visits",
    "events_cut_max_codes_per_visit",
    "events_cut_max_len",
    "tokens_cut_max_len",
    "patients_truncated",
    "patients_without_history",
    "events_out",
    "tokens_out",
    "patients_out",
)
"""The counts in :attr:`Sequences.report`, in order (see :func:`build_sequences`)."""


@dataclass
class Sequences:
    """The sequence frame (see the module docstring) with the settings and counts behind it.

    Attributes:
        frame: one row per token, sorted by ``person_id`` then ``position``.
        strategy: ``"flat"``, ``"visit"`` or ``"domain"``.
        report: counts of what was dropped, cut or fell back (all ``int``).
    """

    frame: pd.DataFrame
    strategy: str
    report: dict[str, int] = field(default_factory=dict)

    @property
    def person_ids(self) -> np.ndarray:
        """Patients in frame order, shape ``(N,)``."""
        pid = self.frame["person_id"].to_numpy()
        return pid[_starts(pid)] if len(pid) else pid

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per patient, in :attr:`person_ids` order, shape ``(N,)``."""
        pid = self.frame["person_id"].to_numpy()
        return np.diff(np.append(_starts(pid), len(pid)))

    def __len__(self) -> int:
        return len(self.person_ids)


def domain_codes(domain: pd.Series) -> np.ndarray:
    """Index of each row's domain in :data:`TOKEN_DOMAINS` (``-1`` when not one of them).

    Shapes:
        domain: ``(n,)`` strings or categorical; returns ``(n,)`` int64.
    """
    if isinstance(domain.dtype, pd.CategoricalDtype):
        lut = np.array(
            [TOKEN_DOMAINS.index(c) if c in TOKEN_DOMAINS else -1 for c in domain.cat.categories]
            + [-1],
            dtype=np.int64,
        )
        return lut[domain.cat.codes.to_numpy()]
    return pd.Categorical(domain, categories=list(TOKEN_DOMAINS)).codes.astype(np.int64)


def _ns(values: pd.Series | pd.Index | np.ndarray) -> np.ndarray:
    """Datetimes as int64 nanoseconds since the epoch (NaT -> min int64)."""
    arr = np.asarray(values)
    if arr.dtype.kind != "M":  # strings or objects: parse (slow path, small tables)
        arr = np.asarray(pd.to_datetime(values))
    if arr.dtype.kind != "M":
        raise ValueError(f"expected naive datetimes, got dtype {arr.dtype}")
    return arr.astype("datetime64[ns]").view(np.int64)


def _starts(key: np.ndarray) -> np.ndarray:
    """Indices where a run of equal values in ``key`` starts."""
    if len(key) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.r_[True, key[1:] != key[:-1]])


def _lookup(sorted_keys: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position of each ``query`` value in ``sorted_keys`` and whether it was found."""
    if len(sorted_keys) == 0:
        return np.zeros(len(query), dtype=np.int64), np.zeros(len(query), dtype=bool)
    pos = np.searchsorted(sorted_keys, query).clip(0, len(sorted_keys) - 1)
    return pos, sorted_keys[pos] == query


def _new_run(*keys: np.ndarray) -> np.ndarray:
    """True where any of ``keys`` differs from the row before (and on the first row)."""
    n = len(keys[0])
    new = np.zeros(n, dtype=bool)
    if n:
        new[0] = True
        for k in keys:
            new[1:] |= k[1:] != k[:-1]
    return new


def _group_first(new: np.ndarray) -> np.ndarray:
    """For each row, the index of the first row of its group (``new`` marks group starts)."""
    idx = np.arange(len(new))
    return np.maximum.accumulate(np.where(new, idx, 0)) if len(new) else idx


def _group_last(new: np.ndarray) -> np.ndarray:
    """For each row, the index of the last row of its group (``new`` marks group starts)."""
    n = len(new)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    end = np.r_[new[1:], True]
    idx = np.arange(n)
    return np.minimum.accumulate(np.where(end, idx, n)[::-1])[::-1]


def _prediction_table(prediction_times: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Sorted person ids and their prediction times (int64 ns)."""
    id_col = next((c for c in ("person_id", "subject_id") if c in prediction_times.columns), None)
    if id_col is None or "prediction_time" not in prediction_times.columns:
        raise ValueError(
            "prediction_times needs a person_id (or subject_id) column and a prediction_time "
            f"column; got {list(prediction_times.columns)}"
        )
    ids = prediction_times[id_col].to_numpy(np.int64)
    pt = _ns(prediction_times["prediction_time"])
    if prediction_times["prediction_time"].isna().any():
        raise ValueError("prediction_times.prediction_time has missing values")
    order = np.argsort(ids, kind="stable")
    ids, pt = ids[order], pt[order]
    dup = ids[1:] == ids[:-1]
    if dup.any():
        raise ValueError(
            f"prediction_times: {int(dup.sum())} patients have several prediction times "
            f"(e.g. person {ids[1:][dup][0]}); one per patient is supported"
        )
    return ids, pt


def _known_visit_table(
    events: pd.DataFrame, known_visits: pd.DataFrame | None
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted known visit ids and the person each belongs to."""
    if known_visits is None:
        is_visit = (events["domain"] == "visit").to_numpy() & events[
            "visit_occurrence_id"
        ].notna().to_numpy()
        vid = events["visit_occurrence_id"].to_numpy(np.int64, na_value=0)[is_visit]
        vp = events["person_id"].to_numpy(np.int64)[is_visit]
    else:
        missing = {"person_id", "visit_occurrence_id"} - set(known_visits.columns)
        if missing:
            raise ValueError(f"known_visits: missing columns {sorted(missing)}")
        kv = known_visits.dropna(subset=["visit_occurrence_id"])
        vid = kv["visit_occurrence_id"].to_numpy(np.int64)
        vp = kv["person_id"].to_numpy(np.int64)
    order = np.argsort(vid, kind="stable")
    vid, vp = vid[order], vp[order]
    first = _starts(vid)
    return vid[first], vp[first]


def _take(cols: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[idx] for k, v in cols.items()}


def _insert_specials(
    cols: dict[str, np.ndarray], new_pat: np.ndarray, new_vis: np.ndarray, cls: bool, sep: bool
) -> dict[str, np.ndarray]:
    """Insert ``[CLS]`` before each patient and ``[SEP]`` after each visit, all at once.

    Each special row copies its neighbour's person, time and visit; then gets
    ``concept_id`` 0, ``value_as_number`` NaN and its own ``special`` and ``domain`` codes.
    """
    vis_end = np.r_[new_vis[1:], True] if len(new_vis) else new_vis
    before = new_pat.astype(np.int64) if cls else np.zeros(len(new_pat), dtype=np.int64)
    after = vis_end.astype(np.int64) if sep else np.zeros(len(new_pat), dtype=np.int64)
    count = 1 + before + after
    start = np.cumsum(count) - count
    total = int(count.sum())
    real_pos = start + before
    cls_pos = start[new_pat] if cls else np.zeros(0, dtype=np.int64)
    sep_pos = real_pos[vis_end] + 1 if sep else np.zeros(0, dtype=np.int64)
    out = {}
    for k, v in cols.items():
        arr = np.empty(total, dtype=v.dtype)
        arr[real_pos] = v
        arr[cls_pos] = v[new_pat] if cls else arr[cls_pos]
        arr[sep_pos] = v[vis_end] if sep else arr[sep_pos]
        out[k] = arr
    for pos, special, dom in (
        (cls_pos, SPECIAL_CLS, _CLS_DOMAIN),
        (sep_pos, SPECIAL_SEP, _SEP_DOMAIN),
    ):
        out["special"][pos] = special
        out["dom"][pos] = dom
        out["cid"][pos] = 0
        out["val"][pos] = np.nan
    return out


def build_sequences(
    events: pd.DataFrame,
    persons: pd.DataFrame,
    prediction_times: pd.DataFrame | None = None,
    *,
    strategy: str = "flat",
    max_len: int | None = None,
    max_visits: int | None = None,
    max_codes_per_visit: int | None = None,
    add_cls: bool = False,
    add_sep: bool = False,
    known_visits: pd.DataFrame | None = None,
) -> Sequences:
    r"""Turn the event table into token sequences for every patient at once.

    Ages and gaps are

    .. math::

        \mathrm{age}_j = \frac{t_j - t_\mathrm{birth}}{365.25\ \mathrm{days}}, \qquad
        \Delta_j = \max\!\left(0, \frac{t_j - t_{j-1}}{1\ \mathrm{day}}\right),\ \Delta_0 = 0.

    Args:
        events: the event table (checked with :func:`ehrseq.data.events.check_events`).
        persons: ``person_id`` and ``birth_datetime`` for every patient in ``events``.
        prediction_times: ``person_id`` (or ``subject_id``) and ``prediction_time``, one row per
            patient; only rows strictly before it are kept, and patients absent from it are
            dropped. ``None`` keeps every row (pre-training).
        strategy: ``"flat"``, ``"visit"`` or ``"domain"`` (see the module docstring).
        max_len: most tokens per patient, special tokens included; keeps the most recent.
        max_visits: most visits per patient; keeps the most recent.
        max_codes_per_visit: most tokens per visit; keeps the last ones in reading order.
        add_cls: put one ``[CLS]`` token first.
        add_sep: put a ``[SEP]`` token after every visit (BEHRT).
        known_visits: ``person_id`` and ``visit_occurrence_id`` of the visits that exist (e.g.
            the OMOP ``visit_occurrence`` table). ``None``: the ``visit``-domain rows of
            ``events``.

    Returns:
        :class:`Sequences` with the frame and ``report``: ``events_in``,
        ``events_without_prediction_time``, ``events_at_or_after_prediction_time``,
        ``events_before_birth``, ``rows_visit_fallback_day``, ``rows_visit_id_unresolved``,
        ``events_cut_max_visits``, ``events_cut_max_codes_per_visit``, ``events_cut_max_len``,
        ``tokens_cut_max_len``, ``patients_truncated``, ``patients_without_history``,
        ``events_out``, ``tokens_out``, ``patients_out``.

    Shapes:
        events: ``(n_events, 8)``; the frame: ``(n_tokens, 13)``.

    Raises:
        ValueError: an unknown strategy, a limit below 1 (``max_len`` too short to keep an
            event after ``[CLS]``/``[SEP]``), a patient missing from ``persons``, or a bad
            ``prediction_times`` table (missing columns, missing values, several rows per
            patient).
    """
    _check_arguments(strategy, max_len, max_visits, max_codes_per_visit, add_cls, add_sep)
    check_events(events)
    if not {"person_id", "birth_datetime"} <= set(persons.columns):
        raise ValueError(
            f"persons: needs person_id and birth_datetime, got {list(persons.columns)}"
        )
    report: dict[str, int] = dict.fromkeys(_REPORT_KEYS, 0)
    report["events_in"] = len(events)
    rows = _EventRows.of(events)
    keep, cohort = _cut_at_prediction_time(rows, prediction_times, report)
    births = _births(persons)
    keep &= ~_before_birth(rows, births, keep, report)
    idx = np.flatnonzero(keep)
    cols = _token_columns(events, rows, idx)
    new_pat = _new_run(cols["pid"])
    cols, new_vis = _group_visits(cols, events, idx, strategy, known_visits, report)
    tokens = _Tokens(cols, new_pat, new_vis)
    truncated: list[np.ndarray] = []  # ids of patients that lost something, per step
    tokens = _cut_max_visits(tokens, max_visits, report, truncated)
    tokens = _cut_max_codes_per_visit(tokens, max_codes_per_visit, report, truncated)
    if (add_cls or add_sep) and len(tokens.cols["pid"]):
        tokens = _Tokens.of(
            _insert_specials(tokens.cols, tokens.new_pat, tokens.new_vis, add_cls, add_sep)
        )
    tokens = _cut_max_len(tokens, max_len, add_cls, add_sep, report, truncated)
    tokens = _cls_follows_first_token(tokens)
    report["patients_truncated"] = len(np.unique(np.concatenate(truncated))) if truncated else 0
    report["events_out"] = int((tokens.cols["special"] == 0).sum())
    report["tokens_out"] = len(tokens.cols["pid"])
    report["patients_out"] = int(tokens.new_pat.sum())
    report["patients_without_history"] = int(len(cohort) - report["patients_out"])
    return Sequences(frame=_frame(tokens, births), strategy=strategy, report=report)


# ----------------------------------------------------------------------------------------------
# The steps of build_sequences, in the order it runs them
# ----------------------------------------------------------------------------------------------


def _check_arguments(
    strategy: str,
    max_len: int | None,
    max_visits: int | None,
    max_codes_per_visit: int | None,
    add_cls: bool,
    add_sep: bool,
) -> None:
    """Raise ``ValueError`` on an unknown strategy, a limit below 1, or a ``max_len`` that
    leaves no room for an event after ``[CLS]``/``[SEP]``."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r}: expected one of {STRATEGIES}")
    for name, lim in (
        ("max_len", max_len),
        ("max_visits", max_visits),
        ("max_codes_per_visit", max_codes_per_visit),
    ):
        if lim is not None and lim < 1:
            raise ValueError(f"{name} = {lim}: must be at least 1 (or None for no limit)")
    min_len = 1 + int(add_cls) + int(add_sep)
    if max_len is not None and max_len < min_len:
        raise ValueError(
            f"max_len = {max_len} is too short: [CLS]/[SEP] need at least {min_len} tokens "
            "to keep one event"
        )


@dataclass(frozen=True)
class _EventRows:
    """The event table's person and time columns, and where each person's rows start.

    Rows are sorted by person, so a per-person look-up is done once per person and repeated
    over that person's rows (:meth:`per_row`).
    """

    pid: np.ndarray  # (n_events,) int64
    t: np.ndarray  # (n_events,) int64 ns
    p_start: np.ndarray  # (n_persons,) first row of each person
    p_count: np.ndarray  # (n_persons,) rows of each person

    @classmethod
    def of(cls, events: pd.DataFrame) -> _EventRows:
        pid = events["person_id"].to_numpy(np.int64)
        p_start = _starts(pid)
        return cls(pid, _ns(events["time"]), p_start, np.diff(np.append(p_start, len(pid))))

    def per_row(self, sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each row's person looked up in ``sorted_keys``: position and whether found."""
        pos, found = _lookup(sorted_keys, self.pid[self.p_start])
        return np.repeat(pos, self.p_count), np.repeat(found, self.p_count)


def _cut_at_prediction_time(
    rows: _EventRows, prediction_times: pd.DataFrame | None, report: dict[str, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The leakage cut: keep rows strictly before the patient's prediction time.

    Drops (and counts) the rows of patients without a prediction time
    (``events_without_prediction_time``) and rows at or after it
    (``events_at_or_after_prediction_time``); without ``prediction_times`` keeps every row.

    Returns:
        the keep mask ``(n_events,)`` and the cohort: the patients a sequence is owed to
        (those of ``prediction_times``, else those of the events).
    """
    keep = np.ones(len(rows.pid), dtype=bool)
    if prediction_times is None:
        return keep, rows.pid[rows.p_start]
    pt_ids, pt_vals = _prediction_table(prediction_times)
    pos, found = rows.per_row(pt_ids)
    before = found & (rows.t < pt_vals[pos])
    report["events_without_prediction_time"] = int((~found).sum())
    report["events_at_or_after_prediction_time"] = int((found & ~before).sum())
    keep &= before
    return keep, pt_ids


def _births(persons: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Person ids, sorted, and their birth times (int64 ns)."""
    p_ids = persons["person_id"].to_numpy(np.int64)
    order = np.argsort(p_ids, kind="stable")
    return p_ids[order], _ns(persons["birth_datetime"])[order]


def _before_birth(
    rows: _EventRows,
    births: tuple[np.ndarray, np.ndarray],
    keep: np.ndarray,
    report: dict[str, int],
) -> np.ndarray:
    """The kept rows dated before the patient's birth, to drop (``events_before_birth``).

    Raises:
        ValueError: if a kept row's patient has no row in ``persons``.
    """
    p_ids, p_birth = births
    pos, found = rows.per_row(p_ids)
    if (keep & ~found).any():
        missing = np.unique(rows.pid[keep & ~found])
        raise ValueError(
            f"persons: {len(missing)} patients of events have no row, e.g. {missing[:5].tolist()}"
        )
    before_birth = keep & (rows.t < p_birth[pos])
    report["events_before_birth"] = int(before_birth.sum())
    return before_birth


def _token_columns(
    events: pd.DataFrame, rows: _EventRows, idx: np.ndarray
) -> dict[str, np.ndarray]:
    """The kept rows ``idx`` as the token columns: ``pid``, ``t`` (ns), ``dom`` (index in
    :data:`TOKEN_DOMAINS`), ``cid``, ``val`` and ``special`` (0: every row is an event)."""
    return {
        "pid": rows.pid[idx],
        "t": rows.t[idx],
        "dom": domain_codes(events["domain"])[idx],
        "cid": events["concept_id"].to_numpy(np.int64)[idx],
        "val": events["value_as_number"].to_numpy(np.float64)[idx],
        "special": np.zeros(len(idx), dtype=np.int8),
    }


def _group_visits(
    cols: dict[str, np.ndarray],
    events: pd.DataFrame,
    idx: np.ndarray,
    strategy: str,
    known_visits: pd.DataFrame | None,
    report: dict[str, int],
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Give each token its visit (``gid``, numbered across patients) and the visit's first
    event time (``vt``), and order the tokens as the strategy reads them.

    ``flat``: a visit is a calendar day and the order stays. ``visit``/``domain``: a visit is
    the row's resolved ``visit_occurrence_id``, else its own day; counts the rows that fell
    back to the day (``rows_visit_fallback_day``) and those of them that had an id
    (``rows_visit_id_unresolved``). Drops nothing.

    Returns:
        the columns in reading order, and where each visit starts.
    """
    day = np.floor_divide(cols["t"], NS_PER_DAY)
    if strategy == "flat":
        new_vis = _new_run(cols["pid"], day)
        cols["gid"] = np.cumsum(new_vis)
        cols["vt"] = cols["t"][_group_first(new_vis)]
        return cols, new_vis
    vid_na = events["visit_occurrence_id"].isna().to_numpy()[idx]
    vid = events["visit_occurrence_id"].to_numpy(np.int64, na_value=0)[idx]
    kv_ids, kv_pid = _known_visit_table(events, known_visits)
    vpos, vfound = _lookup(kv_ids, vid)
    known = ~vid_na & vfound
    known[known] = kv_pid[vpos[known]] == cols["pid"][known]
    report["rows_visit_fallback_day"] = int((~known).sum())
    report["rows_visit_id_unresolved"] = int((~vid_na & ~known).sum())
    key = np.where(known, vid, day)
    kind = (~known).astype(np.int8)
    o = np.lexsort((key, kind, cols["pid"]))  # stable: time order kept inside a group
    ps, ks, kk = cols["pid"][o], key[o], kind[o]
    gnew = _new_run(ps, ks, kk)
    gid = np.empty(len(o), dtype=np.int64)
    gid[o] = np.cumsum(gnew)
    vt = np.empty(len(o), dtype=np.int64)
    vt[o] = cols["t"][o][_group_first(gnew)]
    cols["gid"], cols["vt"] = gid, vt
    sort_keys = (
        (gid, vt, cols["pid"]) if strategy == "visit" else (cols["dom"], gid, vt, cols["pid"])
    )
    cols = _take(cols, np.lexsort(sort_keys))
    return cols, _new_run(cols["pid"], cols["gid"])


@dataclass(frozen=True)
class _Tokens:
    """The token columns in reading order, and where each patient and each visit starts."""

    cols: dict[str, np.ndarray]
    new_pat: np.ndarray  # (n_tokens,) bool
    new_vis: np.ndarray  # (n_tokens,) bool

    @classmethod
    def of(cls, cols: dict[str, np.ndarray]) -> _Tokens:
        return cls(cols, _new_run(cols["pid"]), _new_run(cols["pid"], cols["gid"]))

    def keep(self, ok: np.ndarray) -> _Tokens:
        """The tokens where ``ok`` is true."""
        return _Tokens.of(_take(self.cols, np.flatnonzero(ok)))


def _cut_max_visits(
    tokens: _Tokens, max_visits: int | None, report: dict[str, int], truncated: list[np.ndarray]
) -> _Tokens:
    """Truncation 1: keep each patient's last ``max_visits`` visits; counts the tokens cut
    (``events_cut_max_visits``) and notes whose they were in ``truncated``."""
    if max_visits is None or not len(tokens.cols["pid"]):
        return tokens
    gv = np.cumsum(tokens.new_vis)
    last = _group_last(tokens.new_pat)
    ok = gv > gv[last] - max_visits
    report["events_cut_max_visits"] = int((~ok).sum())
    truncated.append(tokens.cols["pid"][~ok])
    return tokens.keep(ok)


def _cut_max_codes_per_visit(
    tokens: _Tokens,
    max_codes_per_visit: int | None,
    report: dict[str, int],
    truncated: list[np.ndarray],
) -> _Tokens:
    """Truncation 2: keep the last ``max_codes_per_visit`` tokens of each visit, in reading
    order; counts the tokens cut (``events_cut_max_codes_per_visit``) and whose they were."""
    if max_codes_per_visit is None or not len(tokens.cols["pid"]):
        return tokens
    rank_from_end = _group_last(tokens.new_vis) - np.arange(len(tokens.new_vis))
    ok = rank_from_end < max_codes_per_visit
    report["events_cut_max_codes_per_visit"] = int((~ok).sum())
    truncated.append(tokens.cols["pid"][~ok])
    return tokens.keep(ok)


def _cut_max_len(
    tokens: _Tokens,
    max_len: int | None,
    add_cls: bool,
    add_sep: bool,
    report: dict[str, int],
    truncated: list[np.ndarray],
) -> _Tokens:
    """Truncation 3: keep each patient's last ``max_len`` tokens, ``[CLS]`` included (it stays
    first), and drop a ``[SEP]`` that would open the cut sequence. Counts the tokens cut
    (``tokens_cut_max_len``), the events among them (``events_cut_max_len``) and whose."""
    cols = tokens.cols
    if max_len is None or not len(cols["pid"]):
        return tokens
    # per patient: rows [head, keep_from) are cut, where head skips the [CLS]
    n = len(cols["pid"])
    starts = np.flatnonzero(tokens.new_pat)
    ends = np.append(starts[1:], n)
    head = starts + int(add_cls)
    keep_from = np.maximum(head, ends - (max_len - int(add_cls)))
    over = keep_from > head
    if not over.any():
        return tokens
    if add_sep:  # a [SEP] that opens a cut sequence has lost its visit: drop it too
        orphan = over.copy()
        orphan[over] = cols["special"][keep_from[over]] == SPECIAL_SEP
        keep_from = keep_from + orphan
    mark = np.zeros(n + 1, dtype=np.int64)
    np.add.at(mark, head[over], 1)
    np.add.at(mark, keep_from[over], -1)
    cut = np.cumsum(mark[:n]) > 0
    report["tokens_cut_max_len"] = int(cut.sum())
    report["events_cut_max_len"] = int((cut & (cols["special"] == 0)).sum())
    truncated.append(cols["pid"][starts[over]])
    return tokens.keep(~cut)


def _cls_follows_first_token(tokens: _Tokens) -> _Tokens:
    """Give each ``[CLS]`` the time and visit of the first token it now precedes (after the
    cuts, not necessarily the one it was inserted before). Drops nothing."""
    cols = tokens.cols
    cls_rows = np.flatnonzero(cols["special"] == SPECIAL_CLS)
    for k in ("t", "gid", "vt"):
        cols[k][cls_rows] = cols[k][cls_rows + 1]
    return _Tokens.of(cols) if len(cls_rows) else tokens


def _frame(tokens: _Tokens, births: tuple[np.ndarray, np.ndarray]) -> pd.DataFrame:
    """The sequence frame: renumber visits and positions from each patient's first kept
    token, and derive ages and gaps (see the module docstring). Drops nothing."""
    cols, new_pat, new_vis = tokens.cols, tokens.new_pat, tokens.new_vis
    p_ids, p_birth = births
    n = len(cols["pid"])
    p_starts = np.flatnonzero(new_pat)
    p_lens = np.diff(np.append(p_starts, n))
    v_starts = np.flatnonzero(new_vis)
    v_lens = np.diff(np.append(v_starts, n))
    pat_first = np.repeat(p_starts, p_lens)
    gv = np.cumsum(new_vis)
    visit = gv - gv[pat_first] + 1 if n else gv
    position = np.arange(n) - pat_first
    t = cols["t"]
    delta = np.zeros(n, dtype=np.float64)
    if n > 1:
        delta[1:] = np.maximum(t[1:] - t[:-1], 0) / NS_PER_DAY
    delta[p_starts] = 0.0
    vt_v = cols["vt"][v_starts]  # one row per visit
    vdelta_v = np.zeros(len(v_starts), dtype=np.float64)
    if len(v_starts) > 1:
        vdelta_v[1:] = np.maximum(vt_v[1:] - vt_v[:-1], 0) / NS_PER_DAY
    vdelta_v[new_pat[v_starts]] = 0.0
    visit_delta = np.repeat(vdelta_v, v_lens)
    birth_p = p_birth[_lookup(p_ids, cols["pid"][p_starts])[0]]  # one lookup per patient
    birth = np.repeat(birth_p, p_lens)
    birth_v = birth[v_starts]
    vt = cols["vt"]
    return pd.DataFrame(
        {
            "person_id": cols["pid"],
            "time": t.view("datetime64[ns]"),
            "domain": pd.Categorical.from_codes(cols["dom"], categories=list(TOKEN_DOMAINS)),
            "concept_id": cols["cid"],
            "value_as_number": cols["val"],
            "special": cols["special"],
            "visit": visit.astype(np.int64),
            "position": position.astype(np.int64),
            "age": ((t - birth) / NS_PER_YEAR).astype(np.float32),
            "time_delta": delta.astype(np.float32),
            "visit_time": vt.view("datetime64[ns]"),
            "visit_age": np.repeat(((vt_v - birth_v) / NS_PER_YEAR).astype(np.float32), v_lens),
            "visit_delta": visit_delta.astype(np.float32),
        },
        copy=False,  # one block per column: no consolidation copy of a million rows
    )

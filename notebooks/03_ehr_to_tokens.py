# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # From EHR tables to tokens
#
# ## Outline
# A sequence model reads integers. A hospital exports tables. This chapter and the next walk
# the road between them, one stage at a time, on the synthetic cohort written to disk as a
# plain OMOP CDM export and read back by the same code a reader runs on their own data:
#
# $$
# \begin{aligned}
# \text{OMOP tables} &\xrightarrow{\mathtt{load\_omop}} \text{events}
# \xrightarrow{\mathtt{build\_sequences}} \text{sequences} \\
# &\xrightarrow{\mathtt{Vocab},\ \mathtt{encode}} \text{tensors}.
# \end{aligned}
# $$
#
# This chapter goes as far as the sequences. We will
# 1. read the export, validate every row, and account for each one in a **load report**;
#    see strict mode refuse a broken copy, and meet the quirks of a real export (Eunomia
#    GiBleed);
# 2. fix a **prediction time** and an outcome per patient, the labels every later chapter
#    learns from;
# 3. cut each history at the prediction time (nothing from the future may leak in), order it
#    flat, by visit or by domain, and truncate it keeping the most recent events.
#
# The next chapter, {doc}`03b_vocabulary_and_tensors`, takes the sequences the rest of the
# way: it fits the **vocabulary** on training patients only, with value-decile tokens for
# labs and `[UNK]` for codes never seen in training; pads patients into **tensors** that
# follow one contract, buckets them by length, and checks that padding never changes what a
# model computes; and exports everything as **MEDS**, the format that sequence-model tools
# exchange.
#
# There is no model to train here: each stage ends with the assertions that keep it honest.

# %% [markdown]
# ## Setup
# One config per chapter; `EHRSEQ_PROFILE` (`smoke`, `book`, `full`) picks its size.

# %%
import shutil
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from IPython.display import Markdown, display

import ehrseq
from ehrseq.book import keep, plural
from ehrseq.config import for_profile, format_config
from ehrseq.data.download import local_sample
from ehrseq.data.labels import Outcome, survival_labels
from ehrseq.data.omop import OmopValidationError, load_omop, open_cdm, validate_omop
from ehrseq.data.sequences import build_sequences
from ehrseq.data.synthetic import SyntheticConfig, generate_cohort
from ehrseq.plotting import apply_style


@dataclass(frozen=True)
class Config:
    profile: str = "book"
    n_patients: int = 5000  # people in the synthetic cohort
    seed: int = 7  # one seed for the generator and the global random states
    threads: int = 2  # DuckDB worker threads of the OMOP reader
    # prediction time = start of observation + this much history
    history_days: float = 365.0
    horizon_years: float = 5.0  # follow-up window after the prediction time
    max_len: int = 96  # most tokens per patient ([CLS] and [SEP] included)


profiles = {"smoke": {"n_patients": 1000}, "full": {"n_patients": 50_000}}
cfg = for_profile(Config, profiles)
device = ehrseq.get_device()
ehrseq.seed_everything(cfg.seed)
apply_style()
print(format_config(cfg))
print(f"device: {device}")


keep("n_patients", cfg.n_patients)
keep("max_len", cfg.max_len)
keep("horizon_years", cfg.horizon_years)
# every file this chapter writes goes here, and is removed at the end
work = Path(tempfile.mkdtemp(prefix="ehrseq_ch03_"))

# %% [markdown]
# Nothing here runs on the device: every stage is NumPy, pandas and DuckDB on the CPU, and
# the tensors are built on the CPU, where a `DataLoader` builds them during training too.
#
# ## Data: from OMOP tables to events
# ### An OMOP export on disk
# The generator of the first chapter gives OMOP tables in memory. We write them out as one
# parquet file per table, exactly the shape of a folder a data engineer hands over, and from
# here on forget that they were synthetic.

# %%
cohort = generate_cohort(SyntheticConfig(n_patients=cfg.n_patients, seed=cfg.seed))
export = work / "omop"
cohort.write_omop(export)
pd.DataFrame(
    [
        {
            "file": p.name,
            "rows": pq.ParquetFile(p).metadata.num_rows,
            "kB": p.stat().st_size // 1024,
        }
        for p in sorted(export.iterdir())
    ]
)

# %% [markdown]
# `load_omop` queries the files in place with DuckDB, checks every row against a list of
# rules (a person that exists, a date that parses, a concept in the CONCEPT table, a visit
# that exists, ...), and returns one long **event table** sorted by patient and time, the
# person table and the observation periods. Every row of every table it read is counted in
# the **load report**, in lenient mode (the default) as kept, repaired or dropped.

# %%
omop = load_omop(open_cdm(export, threads=cfg.threads))
events, person, observation_period = omop.events, omop.person, omop.observation_period
report = omop.report
print(omop)
report.to_frame()

# %% [markdown]
# The long view has, per table, a `read` row, one row per problem found (none here), and a
# `rows_kept` row. The accounting is the first thing to check on any export: **rows in =
# rows kept + rows dropped**, table by table. We check it from the long view itself, not
# from the report's own summary.


# %%
def rows_add_up(report) -> pd.DataFrame:
    """Per table: rows read, kept and dropped, from the long view.

    Asserts that they add up.
    """
    long = report.to_frame()
    per_table = pd.DataFrame(
        {
            "read": long[long["reason"] == "read"].groupby("table")["rows"].sum(),
            "kept": long[long["reason"] == "rows_kept"].groupby("table")["rows"].sum(),
            "dropped": long[long["action"] == "dropped"].groupby("table")["rows"].sum(),
        }
    ).fillna(0)
    per_table = per_table.astype(int).loc[report.tables]
    accounted = per_table["kept"] + per_table["dropped"]
    assert (per_table["read"] == accounted).all(), per_table
    return per_table


totals = rows_add_up(report)
assert totals["dropped"].sum() == 0  # the clean export loses nothing
domain_rows = events["domain"].value_counts()
table_of = {
    "visit": "visit_occurrence",
    "condition": "condition_occurrence",
    "procedure": "procedure_occurrence",
    "drug": "drug_exposure",
    "measurement": "measurement",
    "death": "death",
}
for dom, table in table_of.items():  # each kept row became exactly one event
    assert domain_rows.get(dom, 0) == totals.loc[table, "kept"], dom
keep("n_rows_read", int(totals["read"].sum()))
keep("n_events", len(events))
keep("load_seconds", float(sum(report.seconds.values())))
totals

# %% [markdown]
# The export has {glue:text}`n_rows_read:,` rows (vocabulary included); they became
# {glue:text}`n_events:,` events in {glue:text}`load_seconds:.1f` seconds. The event table
# follows one contract, shared by every reader of the library (OMOP, MEDS): a patient, a
# time, a standard concept, the source concept, a domain, a value with its unit, and the
# visit the row claims.

# %%
concept_name = cohort.vocabulary.concept.set_index("concept_id")["concept_name"]
shown = events.head(4).copy()
shown["concept"] = concept_name.reindex(shown["concept_id"]).to_numpy()
shown.T  # one row per field of the contract

# %% [markdown]
# ### Strict mode
# Lenient mode keeps going and counts. **Strict mode** raises at the first rule any row
# breaks: the right setting for a pipeline that must not silently absorb a new problem in
# next month's export. On the clean export it passes, and finds what the lenient load found.

# %%
strict_report = validate_omop(open_cdm(export, threads=cfg.threads), mode="strict")
pd.testing.assert_frame_equal(strict_report.summary(), report.summary())

# %% [markdown]
# Now break a copy the way real exports break. The copy's `condition_occurrence` is
# re-exported as CSV (every value is text in a CSV, which is how an impossible date gets in;
# a parquet `DATE` column could not hold one) with two extra rows: one for a person who is
# not in the person table, one dated 30 February.

# %%
broken = work / "omop_broken"
shutil.copytree(export, broken)
co = pd.read_parquet(broken / "condition_occurrence.parquet")
bad = co.iloc[:2].copy()
bad["condition_occurrence_id"] = co["condition_occurrence_id"].max() + np.array([1, 2])
# unknown, known
bad["person_id"] = [person["person_id"].max() + 1, co["person_id"].iloc[1]]
first_date = str(co["condition_start_date"].iloc[0].date())
bad["condition_start_date"] = [first_date, "2019-02-30"]
bad["condition_start_datetime"] = [co["condition_start_datetime"].iloc[0], pd.NaT]
(broken / "condition_occurrence.parquet").unlink()
pd.concat([co.astype({"condition_start_date": str}), bad]).to_csv(
    broken / "condition_occurrence.csv", index=False
)
print("\n".join((broken / "condition_occurrence.csv").read_text().splitlines()[-2:]))

# %% [markdown]
# Strict mode stops at the first broken rule and says where: the table, the column, the rule,
# how many rows, example rows with their row numbers in the file, and the two ways forward.

# %%
try:
    load_omop(open_cdm(broken, threads=cfg.threads), mode="strict")
    raise AssertionError("strict mode accepted a broken export")
except OmopValidationError as err:
    # wrapped to the book's column, the text unchanged
    for line in str(err).splitlines():
        print(textwrap.fill(line, 86, subsequent_indent="    "))
    assert (err.table, err.column, err.rule) == (
        "condition_occurrence",
        "person_id",
        "unknown_person",
    )

# %% [markdown]
# Lenient mode loads the same copy, drops both rows, and says why, one reason per row:

# %%
broken_report = validate_omop(open_cdm(broken, threads=cfg.threads))
broken_totals = rows_add_up(broken_report)
issues = broken_report.to_frame()
issues = issues[~issues["reason"].isin(["read", "rows_kept"])]
assert broken_report.count("condition_occurrence", "unknown_person", "dropped") == 1
assert broken_report.count("condition_occurrence", "bad_date", "dropped") == 1
kept_broken = broken_totals.loc["condition_occurrence", "kept"]
assert kept_broken == totals.loc["condition_occurrence", "kept"]
display(issues)
broken_totals.loc[["condition_occurrence"]]

# %% [markdown]
# ### A real export: Eunomia GiBleed
# Synthetic data is clean because we wrote it. The OHDSI **Eunomia GiBleed** sample is a
# small real-format CDM (Synthea patients, CDM 5.3) with the quirks of a real export: its
# `visit_occurrence` table keeps only inpatient visits while nearly every event row still
# carries a visit id, and its `observation_period` table has periods for persons who are not
# in `person`. When the sample is on disk (`EHRSEQ_SHARED_DATA`, or `shared/data` beside the
# repository, as `ehrseq.data.download.local_sample` finds it) the same reader runs on it; a
# fresh clone without it skips this part.

# %%
gibleed_dir = local_sample("eunomia_gibleed")  # None when absent
have_gibleed = gibleed_dir is not None and (gibleed_dir / "person.parquet").exists()
gibleed = None
if have_gibleed:
    gibleed = load_omop(open_cdm(gibleed_dir, threads=cfg.threads))
    g_report = gibleed.report
    g_totals = rows_add_up(g_report)
    print(gibleed)
    print(g_report.summary().to_string())
    g_issues = g_report.to_frame()
    g_issues = g_issues[~g_issues["reason"].isin(["read", "rows_kept"])]
    display(g_issues)
else:
    print("Eunomia GiBleed not found: this section runs on synthetic data only.")

# %% [markdown]
# Read the report as a list of facts about the export, not as errors to hide. Orphan
# observation periods are **dropped** (a period of nobody cannot be used), but dangling visit
# ids only **flag** their rows: the event happened, only its visit is unknown. Strict mode
# refuses this export, on the first rule it meets:

# %%
if gibleed is not None:
    try:
        load_omop(gibleed.cdm, mode="strict", domains=["condition"])
        raise AssertionError("strict mode accepted GiBleed")
    except OmopValidationError as err:
        print(textwrap.fill(str(err).splitlines()[0], 86, subsequent_indent="    "))
        assert err.rule == "unknown_person" and err.table == "observation_period"

    # no prediction time: the whole history, as for pre-training
    g_seqs = build_sequences(gibleed.events, gibleed.person, strategy="visit")
    clinical = (
        "condition_occurrence",
        "procedure_occurrence",
        "drug_exposure",
        "measurement",
    )
    n_dangling = sum(g_report.count(t, "dangling_visit", "kept") for t in clinical)
    n_orphans = g_report.count("observation_period", "unknown_person", "dropped")
    n_fallback = g_seqs.report["rows_visit_fallback_day"]
    g = {
        "persons": len(gibleed.person),
        "periods_read": g_totals.loc["observation_period", "read"],
        "orphan_periods": n_orphans,
        "dangling_share": n_dangling / sum(g_totals.loc[t, "read"] for t in clinical),
        "fallback_share": n_fallback / g_seqs.report["events_out"],
        "median_tokens": float(np.median(g_seqs.lengths)),
    }
    assert g["orphan_periods"] == g["periods_read"] - g["persons"]
    gibleed_text = (
        f"On GiBleed, {g['orphan_periods']:,} of the {g['periods_read']:,} observation "
        f"periods belong to nobody in the {g['persons']:,}-person table, and "
        f"{g['dangling_share']:.1%} of condition, procedure, drug and measurement rows "
        "point to a visit that does not exist. Grouping by visit therefore falls back "
        f"to the calendar day for {g['fallback_share']:.1%} of the events; the median "
        f"patient has {g['median_tokens']:.0f} events."
    )
else:
    gibleed_text = "The GiBleed sample was not available when this page was built."
keep("gibleed_text", Markdown(gibleed_text))

# %% [markdown]
# {glue:md}`gibleed_text` The sequence builder below handles that fallback explicitly and
# counts it, rather than inventing visits.
#
# ## Labels: prediction time, horizon, outcome
# A sequence is always *the history up to a moment*. That moment, the **prediction time**,
# comes first, because it decides both what the model may read and what it must predict.
# As in the previous chapter, it is one year after the start of each patient's observation
# period, the outcome is the first record of **heart failure** (a concept set taken from the
# vocabulary, as a real study writes one down), and follow-up lasts at most
# {glue:text}`horizon_years:.0f` years.

# %%
hf_concepts = cohort.vocabulary.ids("heart_failure", "condition")
outcome = Outcome.of_concepts("heart_failure", hf_concepts)
horizon_days = cfg.horizon_years * 365.25
history = cfg.history_days
labels = survival_labels(
    events, person, observation_period, outcome, history, horizon_days=horizon_days
)
label_table = labels.table
prediction_times = labels.prediction_times  # person_id, prediction_time
keep("n_labelled", len(label_table))
keep("event_rate", float(label_table["event"].mean()))
keep("n_prevalent", labels.dropped["outcome_before_index"])
print("\n".join(concept_name.reindex(hf_concepts)))  # one concept a line
label_table.head()

# %% [markdown]
# {glue:text}`n_labelled:,` patients get a label ({glue:text}`event_rate:.1%` with an
# observed heart failure); {glue:text}`n_prevalent` already had one before their prediction
# time and get none. The others that are missing left the data before their prediction time:

# %%
pd.Series(labels.dropped, name="patients without a label").to_frame()

# %% [markdown]
# This table is the **label sidecar**: it travels beside the event streams and is all a later
# chapter needs to train and score. {doc}`03b_vocabulary_and_tensors` writes it next to the
# MEDS export.
#
# ## Sequences: cut, group, order, truncate
# `build_sequences` turns the event table into one row per token for every patient at once,
# with no loop over patients. It does four things, in order: it drops every row **at or
# after** the prediction time, decides what a *visit* is, orders the tokens, and truncates.
#
# ### Three strategies, one patient
# - `flat`: time order; a visit is a calendar day.
# - `visit`: a visit is the `visit_occurrence_id` of a row when that visit exists for that
#   patient (otherwise the row's calendar day); the tokens of a visit stay together.
# - `domain`: as `visit`, and inside a visit the tokens are grouped by domain (conditions,
#   drugs, procedures, measurements, ..., the visit itself).
#
# Each token carries the patient's **age** (years), its **visit** index and the **time
# delta** (days) since the previous token; `[CLS]` opens a sequence and `[SEP]` closes each
# visit, as in BEHRT.

# %%
specials = {"add_cls": True, "add_sep": True}
strategies = {
    s: build_sequences(events, person, prediction_times, strategy=s, **specials)
    for s in ("flat", "visit", "domain")
}
lengths = pd.Series(strategies["visit"].lengths, index=strategies["visit"].person_ids)
visits = strategies["visit"].frame.groupby("person_id")["visit"].max()
frame = strategies["visit"].frame
n_domains = frame[frame["special"] == 0].groupby("person_id")["domain"].nunique()
# a short history with a few visits and several domains reads well in a table
pick = lengths[(lengths <= 22) & (visits.reindex(lengths.index) >= 3)]
pick = pick[n_domains.reindex(pick.index) >= 4]
example = int(pick.index[0]) if len(pick) else int(lengths.idxmin())


def token_name(f: pd.DataFrame) -> pd.Series:
    """A readable token: special tokens as is, events as 'domain: concept [value]'."""
    names = concept_name.reindex(f["concept_id"]).fillna("")
    # cut at a word's end, with an ellipsis, so that no word is left half-written
    name = names.map(lambda n: textwrap.shorten(n, 24, placeholder=" …")).to_numpy()
    value = f["value_as_number"].map(lambda v: "" if np.isnan(v) else f" = {v:g}")
    value = value.to_numpy()
    dom = f["domain"].astype(str).to_numpy()
    text = np.where(f["special"] > 0, dom, dom + ": " + name + value)
    return pd.Series(text, index=f.index, dtype=object)


side = {}
for s, seqs in strategies.items():
    f = seqs.frame[seqs.frame["person_id"] == example].reset_index(drop=True)
    cols = {"token": token_name(f)}
    if s != "domain":
        cols |= {"visit": f["visit"]}
    if s == "visit":  # age and time delta do not depend on the strategy: shown once
        cols |= {"age": f["age"].astype(float).round(2)}
        cols |= {"Δ days": f["time_delta"].astype(int)}
    side[s] = pd.DataFrame(cols)
side_by_side = pd.concat(side, axis=1)
side_by_side.index.name = "position"
keep("example", example)
side_by_side

# %% [markdown]
# Patient {glue:text}`example`'s history, three ways (a token's age and time delta do not
# depend on the strategy and are shown once; `domain` has the same visits as `visit`, only
# the order inside a visit changes). Each visit starts with a non-zero time
# delta, the gap since the last visit; inside a visit the deltas are 0 because this export
# records dates, not times. On this cohort `flat` and `visit` differ only where a patient has
# two visits on one day (an outpatient visit and an emergency visit, say): `flat` merges them
# into one day-visit, `visit` keeps them apart.

# %%
n_visits = pd.DataFrame(
    {s: seq.frame.groupby("person_id")["visit"].max() for s, seq in strategies.items()}
)
differs = n_visits["flat"] != n_visits["visit"]
n_two_visit_days = int(differs.sum())
# a small cohort may have none: say so rather than "0 patients have"
if n_two_visit_days == 0:
    two_visit_text = (
        "No patient of this cohort has such a day before their prediction time "
        "(the table above is empty), so here `flat` and `visit` find the same visits."
    )
else:
    verb = "has" if n_two_visit_days == 1 else "have"
    two_visit_text = (
        f"{plural(n_two_visit_days, 'patient', ',')} {verb} such a day before their "
        "prediction time."
    )
keep("two_visit_text", Markdown(two_visit_text))
assert (n_visits["visit"] == n_visits["domain"]).all()
# a day can only hold several visits
assert (n_visits["flat"] <= n_visits["visit"]).all()
n_visits[differs].head()

# %% [markdown]
# {glue:md}`two_visit_text` On a real export the difference can be much larger, or vanish (on
# GiBleed almost no visit id resolves, and `visit` falls back to days).
#
# ### The leakage cut
# A row enters the history only if it is **strictly before** the prediction time. An event
# dated on the prediction day is cut as well: with date-only records we cannot know whether
# it happened before the moment of prediction. Two checks on the whole cohort: no token is
# at or after its patient's prediction time, and rewriting the future cannot change the
# sequences (here we delete it).

# %%
seqs = strategies["visit"]
t_star = prediction_times.set_index("person_id")["prediction_time"]
own_t_star = t_star.reindex(seqs.frame["person_id"]).to_numpy()
assert (seqs.frame["time"].to_numpy() < own_t_star).all()

row_t_star = t_star.reindex(events["person_id"]).to_numpy()
past_only = events[events["time"].to_numpy() < row_t_star].reset_index(drop=True)
again = build_sequences(
    past_only, person, prediction_times, strategy="visit", add_cls=True, add_sep=True
)
pd.testing.assert_frame_equal(again.frame, seqs.frame)
cut_report = pd.Series(
    {k: seqs.report[k] for k in ("events_in", "events_without_prediction_time")}
    | {k: seqs.report[k] for k in ("events_at_or_after_prediction_time", "events_out")},
    name="events",
).to_frame()
n_future = seqs.report["events_at_or_after_prediction_time"]
keep("share_future", n_future / seqs.report["events_in"])
cut_report

# %% [markdown]
# {glue:text}`share_future:.0%` of all events lie at or after the prediction time: most of
# a patient's record is their future, which is exactly why the cut has to be right.
#
# ### How long are the histories?

# %% mystnb={"figure": {"name": "fig-lengths", "caption": "Length of each labelled patient's history before the prediction time: tokens ([CLS] and [SEP] included, left) with the truncation limit (dashed), and visits (right)."}}
fig, axes = plt.subplots(1, 2, figsize=(9, 3), constrained_layout=True)
axes[0].hist(lengths, bins=40)
cap = f"max_len = {cfg.max_len}"
axes[0].axvline(cfg.max_len, color="k", linestyle="--", label=cap)
axes[0].set_xlabel("tokens per patient")
axes[0].set_ylabel("patients")
axes[0].legend(loc="upper right")  # the long tail leaves that corner empty
axes[1].hist(visits, bins=np.arange(0.5, visits.max() + 1.5, 1))
axes[1].xaxis.set_major_locator(plt.MaxNLocator(integer=True))
axes[1].set_xlabel("visits per patient")
axes[1].set_ylabel("patients")
plt.show()
keep("median_tokens", float(lengths.median()))
keep("p95_tokens", float(lengths.quantile(0.95)))
keep("max_tokens", int(lengths.max()))
keep("median_visits", float(visits.median()))

# %% [markdown]
# The median patient brings {glue:text}`median_tokens:.0f` tokens in
# {glue:text}`median_visits:.0f` visits; 5 % bring more than {glue:text}`p95_tokens:.0f`, the
# longest {glue:text}`max_tokens`.
#
# ### Truncation keeps the most recent history
# A model has a context length. When a history is longer, `build_sequences` keeps the **most
# recent** tokens (the last {glue:text}`max_len` here, `[CLS]` included), since recent events
# usually say most about what comes next; a `[SEP]` left at the start of a cut sequence is
# dropped with its visit. Its report counts what was cut.

# %%
seqs = build_sequences(
    events,
    person,
    prediction_times,
    strategy="visit",
    max_len=cfg.max_len,
    add_cls=True,
    add_sep=True,
)
full = strategies["visit"]
assert seqs.lengths.max() <= cfg.max_len
n_cut = full.report["tokens_out"] - seqs.report["tokens_out"]
assert seqs.report["tokens_cut_max_len"] == n_cut
# the events kept are exactly the last ones of the untruncated sequence, in the same
# order
full_ev = full.frame[full.frame["special"] == 0]
cut_ev = seqs.frame[seqs.frame["special"] == 0]
n_kept = cut_ev.groupby("person_id").size().reindex(full_ev["person_id"]).to_numpy()
from_end = full_ev.groupby("person_id").cumcount(ascending=False).to_numpy()
tail = full_ev[from_end < n_kept]
assert np.array_equal(tail["concept_id"].to_numpy(), cut_ev["concept_id"].to_numpy())
assert np.array_equal(tail["time"].to_numpy(), cut_ev["time"].to_numpy())
keep("n_truncated", seqs.report["patients_truncated"])
keep("share_truncated", seqs.report["patients_truncated"] / seqs.report["patients_out"])
keep("events_cut", seqs.report["events_cut_max_len"])
pd.Series(seqs.report, name="count").to_frame()

# %% [markdown]
# {glue:text}`n_truncated` patients ({glue:text}`share_truncated:.1%`) lose their oldest
# {glue:text}`events_cut:,` events in all. `patients_without_history` counts labelled patients
# with no event before the prediction time: they have nothing to read and get no sequence.

# %%
shutil.rmtree(work)  # the export and the broken copy were temporary

# %% [markdown]
# ## Summary
# - `load_omop` reads an OMOP export in place and accounts for every row: per table, the rows
#   read equal the rows kept plus the rows dropped. Strict mode stops at the first broken rule
#   with the table, column, rule and example rows; lenient mode handles and counts.
# - Real exports have quirks that are facts, not bugs. {glue:md}`gibleed_text`
# - The prediction time comes first. Nothing at or after it enters a sequence, and deleting
#   the future leaves every sequence unchanged; {glue:text}`share_future:.0%` of the events are
#   such future.
# - Flat, visit and domain orderings differ in what a visit is and how tokens are grouped in
#   it. Truncation to {glue:text}`max_len` tokens keeps the most recent history; it shortened
#   the histories of {glue:text}`share_truncated:.1%` of patients.
#
# {doc}`03b_vocabulary_and_tensors` turns these sequences into integer tensors: a vocabulary
# fitted on training patients only, padded batches, and a MEDS export.
#
# ## Exercises
# 1. Move the prediction time to two years after the start of observation. How do the
#    median history length, the share of truncated patients and the number of labelled
#    patients change, and why does the last one fall?
# 2. Set `dangling_visit` to `"repair"` (`load_omop(..., actions={"dangling_visit":
#    "repair"})`) on GiBleed. What changes in the events, and in `rows_visit_fallback_day`?
# 3. Break the copy of the export in a third way: a measurement whose `value_as_number` is
#    the text `"12,5"`. Which rule catches it, and what does lenient mode do with the row?

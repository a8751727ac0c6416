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
# # The discrete-time survival framework
#
# ## Outline
# Every model in this book answers the same question: *from what we know about a patient
# today, how likely is heart failure in each of the coming months?* This chapter sets up
# that question precisely, before any neural network appears.
#
# We will
# 1. define hazard, survival and cumulative incidence in discrete time, and say what
#    censoring and a competing event (death) do to them,
# 2. turn the OMOP tables of the synthetic cohort into a survival label table: a prediction
#    time per patient, a follow-up window, an event or a censoring, and time cut into bins,
# 3. check the labels against the generator's true hazard with a Kaplan-Meier curve,
# 4. score the **oracle** (the true risk, which no model can beat) and an honest **baseline**
#    (a Cox model on counts of codes) with the metrics every later chapter reports:
#    Harrell's and Uno's C-index, the integrated Brier score and a calibration plot.

# %% [markdown]
# ## Setup
# One config per chapter; `EHRSEQ_PROFILE` (`smoke`, `book`, `full`) picks its size.

# %%
import tempfile
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from lifelines import CoxPHFitter, KaplanMeierFitter
from matplotlib.lines import Line2D

import ehrseq
from ehrseq.book import keep, keep_table, show
from ehrseq.config import for_profile, format_config
from ehrseq.data.labels import Outcome, discretize, survival_labels
from ehrseq.data.meds import read_survival_labels, write_survival_labels
from ehrseq.data.omop import load_omop
from ehrseq.data.synthetic import DAYS_PER_MONTH, SyntheticConfig, generate_cohort
from ehrseq.evaluate import SurvivalProtocol, format_table
from ehrseq.metrics import calibration_table, survival_at_times
from ehrseq.plotting import apply_style
from ehrseq.plotting.survival import plot_calibration, plot_survival_by_risk_group
from ehrseq.survival import hazards_to_survival


@dataclass(frozen=True)
class Config:
    profile: str = "book"
    n_patients: int = 8000  # people in the synthetic cohort
    seed: int = 7  # one seed for the generator, the split and the bootstrap
    # prediction time = start of observation + this much history
    history_days: float = 365.0
    horizon_years: float = 5.0  # follow-up window after the prediction time
    bins_per_year: int = 4  # discrete-time bins per year (4: quarters of 91.3 days)
    test_fraction: float = 0.3  # share of labelled patients held out for evaluation
    # a code is a feature when this share of training patients has it
    min_code_share: float = 0.02
    # ridge penalty of the Cox baseline, on standardised features
    penalizer: float = 0.1
    n_boot: int = 200  # bootstrap resamples per confidence interval


cfg = for_profile(
    Config,
    {
        "smoke": {"n_patients": 4000, "n_boot": 50},
        "full": {"n_patients": 100_000, "n_boot": 1000},
    },
)
device = ehrseq.get_device()
rng = ehrseq.seed_everything(cfg.seed)
apply_style()
print(format_config(cfg))
print(f"device: {device}")
keep("horizon_years", float(cfg.horizon_years))
keep("bins_per_year", cfg.bins_per_year)
keep("min_code_share", cfg.min_code_share)
keep("n_boot", cfg.n_boot)

# %% [markdown]
# Nothing in this chapter trains on the device: the Cox model runs in lifelines on the CPU.
# The device line is printed so that every chapter reports it the same way.
#
# ## Data
# ### From the OMOP tables to the event table
# We generate the cohort of the previous chapter, write its tables out as a plain OMOP CDM
# export, and read them back with `load_omop`, the same reader a real export goes through
# (a later chapter opens it up). The result is one long event table, sorted by patient and
# time, plus the person table and the observation periods. The ground truth stays aside: the
# labels are built from the tables alone.

# %%
cohort = generate_cohort(SyntheticConfig(n_patients=cfg.n_patients, seed=cfg.seed))
truth = cohort.truth
with tempfile.TemporaryDirectory() as folder:
    cohort.write_omop(folder)
    omop = load_omop(folder)
events, person, observation_period = omop.events, omop.person, omop.observation_period
print(omop)
events[["person_id", "time", "domain", "concept_id", "value_as_number"]].head()

# %% [markdown]
# ### Hazard, survival and cumulative incidence in discrete time
# Cut the time after the prediction time into bins $1, 2, \dots, K$ and let $T$ be the bin in
# which the event happens. Three functions describe the same distribution:
#
# $$
# \begin{aligned}
# h_t &= P(T = t \mid T \ge t), \\
# S(t) &= P(T > t) = \prod_{k \le t} (1 - h_k), \\
# F(t) &= P(T \le t) = 1 - S(t).
# \end{aligned}
# $$
#
# The **hazard** $h_t$ is the probability of the event in bin $t$ for someone still
# event-free when the bin starts; the **survival** $S(t)$ is the probability of getting
# through bins $1..t$ without it; the **cumulative incidence** $F(t)$ is its complement. The
# probability that the event falls exactly in bin $t$ is $f_t = h_t\, S(t-1)$, and summing it
# gives back $F$. A discrete-time model predicts the $K$ hazards of each patient
# {cite}`kvamme2019continuous`; everything else follows from the product.
#
# The generator knows the true monthly hazard of every patient. Three lines turn hazards into
# survival; the library's `hazards_to_survival` (used by every later chapter) must agree.


# %%
def survival_from_hazards(hazards: np.ndarray) -> np.ndarray:
    """S_i(t_k) = prod_{j <= k} (1 - h_ij), one row per patient."""
    return np.cumprod(1.0 - hazards, axis=1)  # (n, T)


# (5, 24): 2 years, monthly
hazards = truth.hazard["heart_failure"][:5, :24].astype(np.float64)
surv = survival_from_hazards(hazards)
incidence = 1.0 - surv  # F(t)
# f_t = h_t S(t-1)
pmf = hazards * np.concatenate([np.ones((5, 1)), surv[:, :-1]], axis=1)
assert surv.shape == hazards.shape == (5, 24)
assert np.allclose(surv, hazards_to_survival(hazards))
assert np.allclose(np.cumsum(pmf, axis=1), incidence)
assert (np.diff(surv, axis=1) <= 0).all()

# %% [markdown]
# **The width of a bin** is a modelling choice. Coarser bins lose no information *at the
# bin edges*: the hazard of a quarter is one minus the chance of surviving its three months,
# and the survival read at the end of each quarter is unchanged.

# %%
# (5, 8): 8 quarters
quarterly = 1.0 - np.prod((1.0 - hazards).reshape(5, 8, 3), axis=2)
assert np.allclose(hazards_to_survival(quarterly), surv[:, 2::3])

horizon_days = cfg.horizon_years * 365.25  # the follow-up window, in days
bin_days = 365.25 / cfg.bins_per_year  # width of one bin
n_bins = int(round(cfg.horizon_years * cfg.bins_per_year))  # bins in the window
keep("bin_days", float(bin_days))

# %% [markdown]
# What a coarser bin loses is *when within the bin* the event happened, and it blurs who was
# still at risk when a patient was censored inside a bin. What a finer bin costs is more
# outputs per patient and fewer events per bin to learn each hazard from. The labels below
# use {glue:text}`bins_per_year` bins per year ({glue:text}`bin_days:.1f` days each): a
# year is too coarse for a five-year horizon (five numbers per patient), a month gives
# sixty hazards with only a handful of events each in a cohort of this size (table below).
#
# ### The outcome, the prediction time and the follow-up window
# **The outcome** is the first record of any heart-failure condition concept. Which concepts
# count is a clinical definition, and taking it from the vocabulary (the group
# `heart_failure`, role `condition`) is legitimate: a real study writes down such a concept
# set too. What a model may never use is the generator's truth (the true onset dates, the
# hazards).

# %%
hf_concepts = cohort.vocabulary.ids("heart_failure", "condition")
outcome = Outcome.of_concepts("heart_failure", hf_concepts)
concept_names = cohort.vocabulary.concept.set_index("concept_id")["concept_name"]
concept_names.loc[hf_concepts].to_frame()

# %% [markdown]
# **The prediction time** (the *index* time) is when the model is asked. Here it is one year
# after the start of a patient's observation period, so every patient brings a year of
# history. **The follow-up window** is the {glue:text}`horizon_years:.0f` years after it.
# For each patient, `survival_labels` then decides:
# - an **event** when the first outcome record falls inside the window;
# - a **censoring** when the window ends first or the patient leaves the data (dropout or
#   the end of the data): we stop knowing whether heart failure would have come. Death also
#   ends follow-up and is recorded as a censoring, although it is something else (see
#   below);
# - **excluded** when the outcome was recorded *before* the prediction time. Such a patient
#   is a prevalent case, not at risk of a first occurrence; their rows stay in the event
#   table (another task might use them as history), they just get no label.
#
# Only rows strictly before the prediction time may ever feed a model.

# %%
history = cfg.history_days
labels = survival_labels(
    events, person, observation_period, outcome, history, horizon_days=horizon_days
)
label_table = labels.table
label_table.head(8)

# %% [markdown]
# That table is the **sidecar**: it travels beside the patients' event streams (in MEDS
# terms, a label file with `subject_id` and `prediction_time` plus our survival columns) and
# is all a later chapter needs to train and score a model. Writing it and reading it back
# loses nothing.

# %%
with tempfile.TemporaryDirectory() as folder:
    path = write_survival_labels(label_table, f"{folder}/heart_failure.parquet")
    reread = read_survival_labels(path)
reread = reread[label_table.columns]
pd.testing.assert_frame_equal(reread, label_table, check_dtype=False)
pd.Series(labels.dropped, name="patients not labelled").to_frame()

# %% [markdown]
# The rules, as assertions on the table: every event lies inside the window, every censoring
# inside it too, and every patient dropped as a prevalent case really has an outcome row
# before the prediction time (which is still in the event table).

# %%
pt = label_table["prediction_time"]
window_end = pt + pd.Timedelta(days=horizon_days)
is_event = label_table["event"] == 1
assert label_table["event_time"].notna().eq(is_event).all()
assert label_table["censor_time"].notna().eq(~is_event).all()
assert (label_table.loc[is_event, "event_time"] >= pt[is_event]).all()
assert (label_table.loc[is_event, "event_time"] <= window_end[is_event]).all()
assert (label_table.loc[~is_event, "censor_time"] <= window_end[~is_event]).all()
assert label_table["duration"].between(0, horizon_days).all()

hf_events = events[events["concept_id"].isin(hf_concepts)]
first_hf = hf_events.groupby("person_id")["time"].min()
start = observation_period.groupby("person_id")["observation_period_start_date"].min()
end = observation_period.groupby("person_id")["observation_period_end_date"].max()
index_time = start + pd.Timedelta(days=cfg.history_days)
# still observed at the prediction time
followed = index_time < end + pd.Timedelta(days=1)
before = first_hf < index_time.reindex(first_hf.index)
prevalent = first_hf.index[before & followed.reindex(first_hf.index)]
assert len(prevalent) == labels.dropped["outcome_before_index"]
assert not label_table["subject_id"].isin(prevalent).any()
assert events["person_id"].isin(prevalent).sum() > 0  # their history is kept

# %% [markdown]
# Here is a handful of patients on one time axis. The grey segment is the year of history
# before the prediction time, the coloured one the follow-up window as observed; the patient
# at the top had heart failure during the history year, so has no label.

# %% mystnb={"figure": {"caption": "Survival labels of a few patients: a year of history (grey) before the prediction time (dashed), then follow-up until the event (cross), a censoring (circle), or the end of the window.", "name": "fig-label-swimmers"}}
shown = pd.concat(
    [
        label_table[is_event].head(4),
        label_table[~is_event & (label_table["duration"] < horizon_days)].head(3),
        label_table[~is_event & (label_table["duration"] >= horizon_days)].head(2),
    ]
)
history_years = cfg.history_days / 365.25
fig, ax = plt.subplots(figsize=(8, 3.6))
for row, (_, lab) in enumerate(shown.iterrows()):
    t0 = (lab["prediction_time"] - start[lab["subject_id"]]).days / 365.25
    t1 = t0 + lab["duration"] / 365.25
    ax.plot([0, t0], [row, row], color="0.7", linewidth=4, solid_capstyle="butt")
    ax.plot([t0, t1], [row, row], color="C0" if lab["event"] else "C1", linewidth=4)
    marker = "x" if lab["event"] else "o"
    ax.plot(t1, row, marker, color="k", markersize=8, fillstyle="none")
if len(prevalent):
    row = len(shown)
    pid = prevalent[0]
    ax.plot([0, history_years], [row, row], color="0.7", linewidth=4)
    onset_years = (first_hf[pid] - start[pid]).days / 365.25
    ax.plot(onset_years, row, "x", color="C3", markersize=8)
    ax.text(history_years + 0.1, row, "outcome before index: no label", va="center")
ax.axvline(history_years, color="k", linestyle="--", linewidth=1)
ax.set_xlabel("years since start of observation")
ax.set_ylabel("patient")
ax.set_yticks([])
ax.set_xlim(0, history_years + cfg.horizon_years + 0.3)
edge = {"linewidth": 4, "markeredgecolor": "k"}
key = [
    Line2D([], [], color="0.7", linewidth=4, label="history"),
    Line2D([], [], color="C0", marker="x", label="event", **edge),
    Line2D([], [], color="C1", marker="o", label="censored", **edge),
]
ax.legend(handles=key, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3)
plt.show()

# %% [markdown]
# ### Time into bins
# `discretize` maps each duration in days to its bin, $j = \lfloor d / w \rfloor$ (the last
# bin closed, so an event on the last day of the window lands in it). The table compares bin
# widths on these labels: the number of hazards each patient needs, and how many events each
# hazard has to be learnt from.

# %%
durations = label_table["duration"].to_numpy()
event = label_table["event"].to_numpy()
widths = {"month": 365.25 / 12, "quarter": 365.25 / 4, "year": 365.25}
rows = []
for name, width in widths.items():
    k = int(np.ceil(horizon_days / width - 1e-9))
    b, e = discretize(durations, event, width=width, n_bins=k, allow_past_last=True)
    assert e.sum() == event.sum()  # no event lost past the last bin
    per_bin = np.bincount(b[e == 1], minlength=k)
    rows.append(
        {
            "bin width": f"{name} ({width:.2f} days)",
            "bins": k,
            "events per bin (median)": np.median(per_bin),
            "events per bin (min)": per_bin.min(),
        }
    )
bin_table = pd.DataFrame(rows).set_index("bin width")
bins, bin_events = discretize(durations, event, width=bin_days, n_bins=n_bins)
assert bins.max() == n_bins - 1 and bin_events.sum() == event.sum()
bin_table

# %% [markdown]
# ### Censoring, and death as a competing event
# Censoring is harmless only when it is **non-informative**: whether a patient leaves
# observation must not depend on their risk of the outcome (given what the model
# conditions on). The generator's censoring is the end of the data, which depends only on
# the calendar date of enrolment, and a dropout drawn independently of everything else, so
# it qualifies. Real data rarely guarantees this: patients who move to a nursing home, or
# stop visiting because they feel well, leave for reasons tied to their health.
#
# **Death is different.** After death, heart failure can no longer happen: death is a
# *competing event*, not a censoring. The labels still stop follow-up at death, and what the
# models of this book estimate is then the **cause-specific hazard**, the probability of heart
# failure in a bin for a patient still alive and free of heart failure when it starts.
# That hazard is well defined and learnable from these labels. What changes is how to
# read the survival built from it: $\prod_t (1 - h_t)$ describes a world in which nobody
# dies of other causes, so $1 - S(t)$ overstates the share of real patients who will have
# heart failure by time $t$ (those who die first never get it). The real-world probability is
# the cause-specific cumulative incidence (Aalen-Johansen), shown beside the Kaplan-Meier
# curve below. The true hazard the generator returns is the cause-specific one, too.

# %%
death_time = events.loc[events["domain"] == "death"].groupby("person_id")["time"].min()
censor_time = label_table["censor_time"]
died = censor_time.notna() & censor_time.eq(
    death_time.reindex(label_table["subject_id"]).to_numpy()
)
reason = np.select(
    [is_event, died, label_table["duration"] >= horizon_days],
    ["heart failure in the window", "censored: death", "censored: end of window"],
    "censored: left the data",
)
reasons = pd.Series(reason).value_counts(normalize=True)
reasons = reasons.rename("share of labelled patients")
reasons.to_frame().round(3)

# %% [markdown]
# ### A first check: the labels against the truth
# The Kaplan-Meier estimator,
# $\hat S(t) = \prod_{s \le t} \bigl(1 - d(s)/n(s)\bigr)$ with $d(s)$ events among the $n(s)$
# patients still followed at $s$, estimates the survival of the whole labelled population
# from censored labels. The generator's truth gives the same curve another way: average over
# the labelled patients their true survival $\prod (1 - h_m)$, with the product starting at the
# month of each patient's prediction time (the generator's months start at enrolment, so the
# two clocks agree to within a day). The two should agree up to sampling noise. Strictly,
# they estimate slightly different things once death competes: the truth freezes a
# patient's hazard at death, while Kaplan-Meier averages the hazard over those still alive;
# here the difference is far below the noise.

# %%
persons = truth.persons.set_index("person_id")
subject = label_table["subject_id"].to_numpy()
enrol = persons.loc[subject, "enrol_date"].to_numpy()
index_days = (pt - enrol).dt.days.to_numpy(np.float64)
n_months = int(round(cfg.horizon_years * 12))
# rows of the truth arrays
row_of = pd.Index(truth.persons["person_id"]).get_indexer(subject)
assert (row_of >= 0).all()
# first month after the index
m0 = np.ceil(index_days / DAYS_PER_MONTH - 1e-9).astype(int)
months = m0[:, None] + np.arange(n_months)  # (n, n_months): the window, month by month
assert months.max() < truth.hazard["heart_failure"].shape[1]
true_hazards = truth.hazard["heart_failure"][row_of[:, None], months].astype(np.float64)
true_surv = hazards_to_survival(true_hazards)  # (n, n_months), at the end of each month
# days since the prediction time
month_days = np.arange(1, n_months + 1) * DAYS_PER_MONTH
true_risk = truth.true_risk(
    "heart_failure",
    index_days=index_days,
    horizon_days=horizon_days,
    person_ids=subject,
)
assert np.allclose(1.0 - true_surv[:, -1], true_risk)

kmf = KaplanMeierFitter(label="Kaplan-Meier (labels)").fit(durations / 365.25, event)
grid_years = np.concatenate([[0.0], month_days / 365.25])
true_marginal = np.concatenate([[1.0], true_surv.mean(axis=0)])
km_on_grid = kmf.survival_function_at_times(grid_years).to_numpy()
km_gap = float(np.abs(km_on_grid - true_marginal).max())

# Aalen-Johansen: F(t) = sum_{s <= t} S_any(s-) d_hf(s) / n(s),
# S_any the KM of either event
# 0 censored, 1 heart failure, 2 death
cause = np.where(is_event, 1, np.where(died, 2, 0))
times, at_time = np.unique(durations, return_inverse=True)
n_at_risk = len(durations) - np.concatenate([[0], np.cumsum(np.bincount(at_time))[:-1]])
d_hf = np.bincount(at_time, weights=cause == 1)
d_any = np.bincount(at_time, weights=cause > 0)
s_any_before = np.concatenate([[1.0], np.cumprod(1.0 - d_any / n_at_risk)[:-1]])
aj_incidence = np.cumsum(s_any_before * d_hf / n_at_risk)  # (unique times,)

# %% mystnb={"figure": {"caption": "Left: Kaplan-Meier estimate of heart-failure-free survival from the labels (with its 95% band) beside the generator's true survival averaged over the same patients. Right: one minus the Kaplan-Meier curve overstates the real-world cumulative incidence (Aalen-Johansen), because patients who die first never get heart failure.", "name": "fig-km-vs-truth"}}
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
kmf.plot_survival_function(ax=axes[0])
truth_label = "truth (mean of true S)"
axes[0].plot(grid_years, true_marginal, color="C3", linestyle="--", label=truth_label)
axes[0].set_xlabel("years since prediction time")
axes[0].set_ylabel("survival probability (no heart failure)")
axes[0].legend()
axes[1].step(
    kmf.timeline,
    1.0 - kmf.survival_function_.to_numpy()[:, 0],
    where="post",
    label="1 - Kaplan-Meier (death censored)",
)
aj_label = "Aalen-Johansen (death competes)"
axes[1].step(times / 365.25, aj_incidence, where="post", label=aj_label)
axes[1].set_xlabel("years since prediction time")
axes[1].set_ylabel("cumulative incidence of heart failure")
axes[1].legend()
plt.show()

# %%
s_km_end = float(kmf.survival_function_at_times(cfg.horizon_years).iloc[0])
f_aj_end = float(aj_incidence[-1])
keep("n_labelled", len(label_table))
keep("n_prevalent", int(labels.dropped["outcome_before_index"]))
keep("n_outside", int(labels.dropped["index_outside_observation"]))
keep("event_rate", float(event.mean()))
keep("censor_death", float(reasons.get("censored: death", 0.0)))
keep("censor_left", float(reasons.get("censored: left the data", 0.0)))
keep("censor_end", float(reasons.get("censored: end of window", 0.0)))
keep("km_gap", km_gap)
keep("km_incidence", 1.0 - s_km_end)
keep("aj_incidence", f_aj_end)
assert km_gap < 0.03, km_gap
assert f_aj_end <= 1.0 - s_km_end + 1e-9

# %% [markdown]
# Of the {glue:text}`n_labelled` labelled patients ({glue:text}`n_prevalent` were dropped
# as prevalent cases, {glue:text}`n_outside` because they left the data within their first
# year), {glue:text}`event_rate:.1%` have heart failure inside the window;
# {glue:text}`censor_left:.1%` leave the data early, {glue:text}`censor_death:.1%` die first,
# and {glue:text}`censor_end:.1%` reach the end of the window event-free. The Kaplan-Meier
# curve stays within {glue:text}`km_gap:.3f` of the truth over the whole window, so the
# labels and the censoring are doing what the story says. At {glue:text}`horizon_years:.0f`
# years, one minus Kaplan-Meier gives {glue:text}`km_incidence:.1%`; the Aalen-Johansen
# cumulative incidence, which lets death compete, gives {glue:text}`aj_incidence:.1%`.
#
# ## Model
# ### The oracle
# The generator's true hazard gives each patient's true probability of heart failure within
# the window, $1 - \prod_{m} (1 - h_m)$ over the window's months. It knows the latent disease
# onsets that the records show late or never, so it is a **ceiling**: no model reading the
# records can be expected to rank or predict better. Its monthly survival curves are the
# `true_surv` above.
#
# ### An honest baseline: Cox on a bag of codes
# The simplest model worth beating reads the year of history as a bag of codes. For each
# patient, only from rows **strictly before the prediction time**:
# - how often each condition and drug concept was recorded, as $\log(1 + \text{count})$,
#   keeping codes that at least {glue:text}`min_code_share:.0%` of the training patients have,
# - the last value of every lab and vital sign, with an indicator of whether it was measured
#   (a missing value is set to the training mean),
# - age at the prediction time and sex.
#
# A proportional hazards model on these features, $h(t \mid x) = h_0(t)\, e^{\beta^\top x}$,
# is fitted by lifelines with a small ridge penalty on standardised features.

# %%
order = rng.permutation(len(label_table))
n_test = int(round(cfg.test_fraction * len(label_table)))
is_test = np.zeros(len(label_table), dtype=bool)
is_test[order[:n_test]] = True

used = ["person_id", "time", "domain", "concept_id", "value_as_number"]
index_times = label_table[["subject_id", "prediction_time"]]
past = events[used].merge(index_times, left_on="person_id", right_on="subject_id")
# strictly before the prediction time
past = past[past["time"] < past["prediction_time"]]
assert (past["time"] < past["prediction_time"]).all()

codes = past[past["domain"].isin(["condition", "drug"])]
counts = pd.crosstab(codes["person_id"], codes["concept_id"])  # (patients, concepts)
counts = counts.reindex(subject, fill_value=0)
seen_in_train = (counts.loc[~is_test] > 0).sum(axis=0)
counts = counts.loc[:, seen_in_train >= cfg.min_code_share * (~is_test).sum()]
code_features = np.log1p(counts)
code_features.columns = [f"code_{c}" for c in code_features.columns]

labs = past[past["domain"] == "measurement"].dropna(subset=["value_as_number"])
labs = labs.sort_values(["person_id", "time"], kind="stable")
last = labs.groupby(["person_id", "concept_id"])["value_as_number"].last().unstack()
last = last.reindex(subject)
measured = last.notna().astype(float).add_prefix("measured_")
last = last.fillna(last.loc[~is_test].mean()).add_prefix("lab_")

demo = person.set_index("person_id").loc[subject]
age_days = (pt.to_numpy() - demo["birth_datetime"].to_numpy()) / np.timedelta64(1, "D")
age = age_days / 365.25
features = pd.concat([code_features, last, measured], axis=1)
features["age_years"] = age
features["male"] = (demo["gender_concept_id"].to_numpy() == 8507).astype(float)
features = features.loc[:, features.loc[~is_test].std() > 0]  # drop constant columns
mean, sd = features.loc[~is_test].mean(), features.loc[~is_test].std()
# (n, p), standardised on training rows
x = ((features - mean) / sd).reset_index(drop=True)
# what survived the constant-column filter, kind by kind, adding up to every column
kinds = {"code_": "codes", "lab_": "last lab values"}
kinds["measured_"] = "indicators of a measured lab"
n_kind = {name: int(x.columns.str.startswith(p).sum()) for p, name in kinds.items()}
demographics = {"age_years": "age", "male": "sex"}
others = [demographics[c] for c in x.columns if c in demographics]
assert sum(n_kind.values()) + len(others) == x.shape[1]
parts = [f"{n} {name}" for name, n in n_kind.items()] + others
listed = ", ".join(parts[:-1]) + f" and {parts[-1]}"
feature_breakdown = f"{x.shape[1]} features ({listed})"
keep("feature_breakdown", feature_breakdown)
print(feature_breakdown)
assert np.isfinite(x.to_numpy()).all()

# %% [markdown]
# ## Train
# The split is by patient: {glue:text}`n_train` for training, {glue:text}`n_test` held out.

# %%
train = x[~is_test].assign(duration=durations[~is_test], event=event[~is_test])
cph = CoxPHFitter(penalizer=cfg.penalizer).fit(train, "duration", "event")
keep("n_train", int((~is_test).sum()))
keep("n_test", int(is_test.sum()))
keep("n_features", int(x.shape[1]))


def describe(column: str) -> str:
    """A readable name for a feature column."""
    kind, _, rest = column.partition("_")
    if kind in ("code", "lab", "measured") and rest.isdigit():
        name = concept_names.get(int(rest), rest)
        texts = {"code": name, "lab": f"last {name}", "measured": f"{name} measured"}
        return texts[kind]
    return column


ranked = cph.params_.sort_values(key=np.abs, ascending=False)
age_rank = int(ranked.index.get_loc("age_years")) + 1  # 1 = the largest coefficient
ordinals = {2: "second", 3: "third", 4: "fourth", 5: "fifth"}
ordinal = ordinals.get(age_rank, f"number {age_rank}")
keep(
    "age_rank_phrase",
    "Age has the largest coefficient"
    if age_rank == 1
    else f"Age comes {ordinal} in the ranking of coefficients",
)
keep("beta_age_true", truth.coefficients["heart_failure"]["age_per_decade"])
keep("n_train_events", int(event[~is_test].sum()))
top = ranked.head(12)
top = top.set_axis([describe(c) for c in top.index]).rename("log hazard ratio per sd")
top.round(3).to_frame()

# %% [markdown]
# {glue:text}`age_rank_phrase`; in the true hazard age is a strong term too
# ({glue:text}`beta_age_true:.2f` on the log scale per decade). Read the rest of the ranking
# with care: age and sex are one column each, while a disease leaves several codes, drugs and
# labs behind, and the ridge penalty spreads its weight over all of them, so a ranking of
# single rows understates every disease against the two demographic columns. And with
# {glue:text}`n_train_events` events among the training patients, single
# coefficients carry sampling noise that the table does not show, enough to reorder
# neighbouring rows. What such a fit can show is an average: do the
# codes of diseases that enter the true hazard carry more weight than the others? Checking
# needs the truth (which concept belongs to which latent disease), which is fine for
# *evaluating* a model, never for building one.

# %%
groups = truth.concept_groups.drop_duplicates("concept_id")
group_of = groups.set_index("concept_id")["group"]
true_betas = truth.coefficients["heart_failure"]
in_hazard = {name for name, beta in true_betas.items() if beta != 0}
code_params = cph.params_[cph.params_.index.str.startswith("code_")]
code_ids = [int(c.removeprefix("code_")) for c in code_params.index]
code_groups = group_of.reindex(code_ids)
# the code's disease enters the true hazard
causal = code_groups.isin(in_hazard).to_numpy()
mean_causal = float(code_params[causal].mean())  # mean log hazard ratio per sd
mean_other = float(code_params[~causal].mean())
top = np.argsort(-code_params.abs().to_numpy())[:10]
n_causal = int(causal[top].sum())
keep("n_causal", n_causal)
keep("mean_causal", mean_causal)
keep("mean_other", mean_other)
assert mean_causal > max(mean_other, 0.0), (mean_causal, mean_other)
top_codes = [describe(c) for c in code_params.index[top]]
top_table = pd.DataFrame({"code": top_codes, "latent group": code_groups.iloc[top]})
show(top_table)  # the rank is the row's position: no 0..n index

# %% [markdown]
# {glue:text}`n_causal` of the ten largest code coefficients belong to diseases that enter
# the true heart-failure hazard. Averaged over all kept codes, a code of such a disease
# carries a log hazard ratio of {glue:text}`mean_causal:+.3f` per standard deviation, a code
# of anything else {glue:text}`mean_other:+.3f`: the baseline finds the recorded traces of the
# story, while the other codes get weights of both signs that mostly cancel (noise, and
# codes that merely travel with the diseases).
#
# ## Evaluate
# Every model of the book is scored the same way, by `ehrseq.evaluate.SurvivalProtocol`:
# each model hands over a predicted survival curve per test patient, read at the right edge
# of every bin, and the protocol turns the curves into metrics. The **risk score** is the
# predicted probability of the event by the horizon, $1 - \hat S(t_K)$.
# - **Harrell's C** {cite}`harrell1982evaluating`: among comparable pairs (the one with the
#   shorter time had the event), the share in which that patient had the higher risk.
#   0.5 is a coin, 1 a perfect ranking. Its value depends on the censoring pattern.
# - **Uno's C** {cite}`uno2011c`: the same, with pairs reweighted by the inverse probability of
#   remaining uncensored (estimated on the training labels) and truncated at the horizon, so
#   that, with independent censoring, it does not depend on how much censoring there is.
# - **Integrated Brier score** (IBS): the squared error between the predicted survival and
#   the observed status at time $t$, reweighted for censoring, and averaged over $t$ at the
#   bin edges inside the window. Lower is better. Predicting the Kaplan-Meier curve of the
#   training labels for everyone sets the bar of no information.
# - **AUROC** at the last bin edge inside the window: how well the risk by then separates
#   those with an event by then from those still event-free.
#
# Each comes with a percentile bootstrap interval over test patients
# ({glue:text}`n_boot` resamples). Harrell's C is short enough to write from its
# definition, over every pair of patients at once; the protocol's version must agree.

# %%
te = is_test
d_test, e_test = durations[te], event[te]
d_train, e_train = durations[~te], event[~te]
# right edge of every bin, days; the last: horizon
edges = np.arange(1, n_bins + 1) * bin_days

x_test = x[te]
cox_surv = cph.predict_survival_function(x_test, times=edges).to_numpy().T  # (n, K)
oracle_surv = survival_at_times(true_surv[te], month_days, edges)  # (n, K)
km_train = KaplanMeierFitter().fit(d_train, e_train)
km_at_edges = km_train.survival_function_at_times(edges).to_numpy()
null_surv = np.tile(km_at_edges, (te.sum(), 1))
# risk by the horizon
oracle_risk, cox_risk = 1.0 - oracle_surv[:, -1], 1.0 - cox_surv[:, -1]
assert np.allclose(oracle_risk, true_risk[te])


def harrell_by_pairs(d, e, risk):
    """Harrell's C from its definition: the share of comparable pairs ordered right."""
    tied_censored = (d[:, None] == d[None, :]) & (e[None, :] == 0)
    earlier = (d[:, None] < d[None, :]) | tied_censored
    comparable = (e[:, None] == 1) & earlier  # (n, n): patient i had the event first
    gap = risk[:, None] - risk[None, :]  # (n, n)
    right = (gap > 1e-8) + 0.5 * (np.abs(gap) <= 1e-8)  # concordant 1, tied 1/2
    return float(right[comparable].mean())


protocol = SurvivalProtocol(
    d_test, e_test, edges, d_train, e_train, n_boot=cfg.n_boot, seed=cfg.seed
)
few = slice(0, 2000)  # an (n, n) pair matrix stays small
for surv in (oracle_surv, cox_surv):
    by_pairs = harrell_by_pairs(d_test[few], e_test[few], 1.0 - surv[few, -1])
    harrell = protocol.metrics["Harrell C"](d_test[few], e_test[few], surv[few])
    assert np.isclose(by_pairs, harrell)

curves = {
    "oracle (true risk)": oracle_surv,
    "Cox, bag of codes": cox_surv,
    "Kaplan-Meier (no features)": null_surv,
}
shown = ["Harrell C", "Uno C", "IBS", "AUROC"]
# Antolini's C is left out: the costliest, not discussed
scored = [*shown, "calibration error"]
rows = [protocol.evaluate(name, s, metrics=scored) for name, s in curves.items()]
results = pd.DataFrame(rows).set_index("model")
# no training seeds here (nothing is trained by gradient descent): the seeds column
# stays out
scores = format_table(results.drop(columns="seeds", errors="ignore"), shown)
# one column per model (three intervals fit the page; four metrics did not), no wrap
# in a cell
keep_table("ch02_scores", scores.T.map(lambda v: v.replace(" ", "\u00a0")))

# %% [markdown]
# {glue:}`ch02_scores`
#
# How much of the gap between the baseline and the oracle is noise? The protocol's
# `difference` bootstraps the *difference* on the same resamples of test patients, and
# names a winner only when its interval excludes zero.

# %%
gap = protocol.difference("oracle", oracle_surv, "Cox", cox_surv, "Harrell C")
shown_gap = {k: f"{v:.3f}" if isinstance(v, float) else v for k, v in gap.items()}
print("\n".join(f"{k}: {v}" for k, v in shown_gap.items()))  # one line each
short = {
    "oracle (true risk)": "oracle",
    "Cox, bag of codes": "cox",
    "Kaplan-Meier (no features)": "km",
}
for model, key in short.items():
    for metric, name in [("Harrell C", "harrell"), ("Uno C", "uno"), ("IBS", "ibs")]:
        keep(f"{key}_{name}", results.loc[model, metric])
        keep(f"{key}_{name}_lower", results.loc[model, f"{metric} lower"])
        keep(f"{key}_{name}_upper", results.loc[model, f"{metric} upper"])
keep("gap", gap["difference"])
keep("gap_lower", gap["lower"])
keep("gap_upper", gap["upper"])
keep("verdict_gap", gap["verdict"])
keep("ibs_from", edges[0] / 365.25)
keep("ibs_to", edges[-2] / 365.25)
r_ibs = results["IBS"]
ibs_null = r_ibs["Kaplan-Meier (no features)"]
keep("ipa_cox", 1 - r_ibs["Cox, bag of codes"] / ibs_null)
keep("ipa_oracle", 1 - r_ibs["oracle (true risk)"] / ibs_null)

oracle, cox, km = (results.loc[m] for m in curves)
assert oracle["Harrell C"] > cox["Harrell C"] > 0.5
assert oracle["Uno C"] > cox["Uno C"] > 0.5
assert cox["Harrell C lower"] > 0.5
assert oracle["IBS"] <= cox["IBS"] <= km["IBS"]
assert gap["lower"] <= gap["difference"] <= gap["upper"]

# %% [markdown]
# On the {glue:text}`n_test` test patients the oracle reaches a Harrell C of
# {glue:text}`oracle_harrell:.3f` and the Cox baseline, on
# {glue:text}`feature_breakdown`, {glue:text}`cox_harrell:.3f`. The paired difference,
# {glue:text}`gap:.3f` (95% interval {glue:text}`gap_lower:.3f` to
# {glue:text}`gap_upper:.3f`: {glue:text}`verdict_gap`), is what the sequence models of
# the coming chapters can try to close.
#
# The integrated Brier scores (from {glue:text}`ibs_from:.2f` to {glue:text}`ibs_to:.2f`
# years) look close together. With {glue:text}`event_rate:.1%` of the patients having the
# event, even the no-information curve has a small squared error, so read them relative to
# it: the Cox model removes {glue:text}`ipa_cox:.0%` of the no-information score, the
# oracle {glue:text}`ipa_oracle:.0%` (this ratio, one minus the IBS over that of the null
# model, is sometimes called the index of prediction accuracy).
#
# **Calibration.** Discrimination says nothing about whether a predicted 10% means 10%.
# Grouping the test patients by predicted risk at the horizon and comparing the mean
# prediction with the Kaplan-Meier incidence of each group shows it.

# %% mystnb={"figure": {"caption": "Calibration at the horizon on the test patients: mean predicted risk against the Kaplan-Meier incidence in each decile of predicted risk, with 95% intervals.", "name": "fig-calibration"}}
deciles = {"horizon": horizon_days, "n_bins": 10}
cal_cox = calibration_table(d_test, cox_risk, e_test, **deciles)
cal_oracle = calibration_table(d_test, oracle_risk, e_test, **deciles)
fig, ax = plt.subplots(figsize=(5, 5))
plot_calibration(cal_oracle, ax=ax, label="oracle (true risk)")
plot_calibration(cal_cox, ax=ax, label="Cox, bag of codes")
# plot_calibration sizes the axes and adds the diagonal for one table; redo both for two
columns = ("predicted", "observed_upper")
top_value = max(t[c].max() for t in (cal_cox, cal_oracle) for c in columns)
ax.set_xlim(0, 1.05 * top_value)
ax.set_ylim(0, 1.05 * top_value)
handles = dict(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
ax.legend(handles.values(), handles.keys())
ax.set_title(f"Calibration at {cfg.horizon_years:g} years")
ax.set_xlabel(f"predicted risk of heart failure by {cfg.horizon_years:g} years")
ax.set_ylabel(f"observed risk by {cfg.horizon_years:g} years (Kaplan-Meier)")
plt.show()
cal_error = float(np.abs(cal_cox["predicted"] - cal_cox["observed"]).mean())
# the protocol's calibration error
assert np.isclose(cal_error, cox["calibration error"])
keep("cal_error", cal_error)
keep("cal_error_oracle", float(oracle["calibration error"]))

# %% [markdown]
# The Cox model's deciles lie off the diagonal by {glue:text}`cal_error:.3f` on average
# (mean absolute gap), the oracle's by {glue:text}`cal_error_oracle:.3f`. The oracle is
# calibrated by construction, so its gap is the sampling noise of the observed incidence in
# deciles of this size, the yardstick to read the Cox model's against. (A proportional
# hazards model fitted on a population is calibrated on average in that population; per
# decile it can still be off.) Finally, survival by predicted risk group: a model that
# discriminates spreads the groups apart.

# %% mystnb={"figure": {"caption": "Kaplan-Meier curves of the test patients in thirds of predicted risk, for the oracle (left) and the Cox baseline (right).", "name": "fig-risk-groups"}}
fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True, constrained_layout=True)
panels = [(axes[0], oracle_risk, "oracle"), (axes[1], cox_risk, "Cox, bag of codes")]
years, unit = d_test / 365.25, "years since prediction time"
for ax, risk, title in panels:
    plot_survival_by_risk_group(years, risk, e_test, n_groups=3, ax=ax, time_unit=unit)
    ax.set_title(title)
    ax.get_legend().remove()  # one legend for both panels, below them
# The panels share the y-axis: its lower limit must hold the lowest curve *and* band
# of both.
bands = [path for ax in axes for c in ax.collections for path in c.get_paths()]
lowest = min(
    [line.get_ydata().min() for ax in axes for line in ax.get_lines()]
    + [path.vertices[:, 1].min() for path in bands]
)
axes[0].set_ylim(max(0.0, lowest - 0.02), 1.01)
handles, names = axes[0].get_legend_handles_labels()
legend_title = "predicted risk group (thirds)"
fig.legend(handles, names, title=legend_title, loc="outside lower center", ncol=3)
plt.show()

# %% [markdown]
# ## Summary
# - In discrete time a model predicts one hazard per bin; survival is the product of one
#   minus the hazards and cumulative incidence its complement. Coarser bins keep the survival
#   at their edges exact and lose timing inside the bin.
# - A survival label is a prediction time, a window, and either an event or a censoring.
#   Outcomes before the prediction time remove the patient from the labels but not from the
#   data; only rows before the prediction time may feed a model.
# - Censoring must be non-informative; death is a competing event, so the hazard we model is
#   cause-specific and one minus its survival ({glue:text}`km_incidence:.1%` here) overstates
#   the real-world incidence ({glue:text}`aj_incidence:.1%`).
# - The oracle's C-index ({glue:text}`oracle_harrell:.3f`) is the ceiling, a Cox model on a
#   bag of codes ({glue:text}`cox_harrell:.3f`) the floor every sequence model has to beat.
#
# ## Exercises
# 1. Move the prediction time to two years after the start of observation. How many more
#    patients are dropped as prevalent cases, and what happens to the baseline's C-index?
# 2. Use monthly bins (`bins_per_year=12`). How many events does the emptiest bin have in the
#    smoke profile, and why is that a problem for a model that learns one hazard per bin?
# 3. Treat death as the outcome (`Outcome.of_death()`). Compute the oracle with
#    `truth.true_risk("death", ...)`. Is death easier or harder to rank than heart failure?
# 4. Drop the lab features from the baseline. How much of its C-index did they carry, and
#    which latent diseases do the labs reveal before they are diagnosed?
# 5. Replace $\log(1 + \text{count})$ by a 0/1 indicator of each code. Does the C-index change?
#    Does the calibration?

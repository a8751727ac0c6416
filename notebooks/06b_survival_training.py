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
# # Training a survival model and scoring it against the oracle
#
# ## Outline
# {doc}`06_survival_head` built the bridge from a BEHRT encoder's token states
# {cite}`li2020behrt` to discrete-time **hazards** {cite}`kvamme2019continuous`: visit states
# pooled from token states, the per-visit and per-bin hazard heads, the hazard NLL, the
# survival curve and the risk at a horizon, and the leakage test on a fresh encoder. This
# chapter trains the first sequence model of the book on the shared survival task with the
# per-bin head, the one that fits the task's labels.
#
# We will
# 1. start the head from the life table and train a small BEHRT with the per-bin head, over
#    several seeds, and keep each trained model as an artefact;
# 2. score it on the test patients beside the **oracle** and the life table, check its
#    calibration and the survival of its risk groups.
#
# {doc}`06c_risk_score_and_leakage` loads these models to measure why the *sum* of hazards
# is a biased risk score and to run the leakage test on the trained encoder.

# %% [markdown]
# ## Setup
# One config per chapter; `EHRSEQ_PROFILE` (`smoke`, `book`, `full`) picks its size. The
# model and its training are a recipe of the library, `ehrseq.behrt_survival`, so that
# {doc}`06c_risk_score_and_leakage` loads the models this chapter trains by the same
# definition. The
# cohort, its splits, the prediction times, the horizon and the bins are not chosen here:
# they come from `ehrseq.data.task.shared_task_config()`, the one task the modelling
# chapters share, so every one of them scores its models on the same test patients.

# %%
import time
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.ticker import MaxNLocator

import ehrseq
from ehrseq.behrt_survival import (
    behrt_survival,
    fit_seeds,
    new_model,
    save_seeds,
    task_life_table,
)
from ehrseq.book import keep, keep_table, plural
from ehrseq.config import for_profile, format_config
from ehrseq.data.task import prepare_survival_task, shared_task_config
from ehrseq.evaluate import SurvivalProtocol, format_table
from ehrseq.losses import hazard_nll
from ehrseq.metrics import calibration_table
from ehrseq.models import SurvivalModel, count_parameters
from ehrseq.plotting import apply_style
from ehrseq.plotting.survival import plot_calibration, plot_survival_by_risk_group
from ehrseq.survival import hazards_to_survival, life_table_hazards


@dataclass(frozen=True)
class Config:
    profile: str = "book"
    n_boot: int = 200  # bootstrap resamples per confidence interval


cfg = for_profile(Config, {"smoke": {"n_boot": 50}, "full": {"n_boot": 1000}})
# widths, dropout, training schedule and seeds of every model (the same in chapter 6c)
recipe = behrt_survival()
device = ehrseq.get_device()
rng = ehrseq.seed_everything(recipe.seeds[0])
apply_style()
print(format_config(cfg))
print(format_config(recipe))
print(f"device: {device}; CPU threads: {torch.get_num_threads()} (OMP_NUM_THREADS)")
chapter_start = time.perf_counter()


n_seeds = len(recipe.seeds)
keep("n_seeds", n_seeds)
keep("n_boot", cfg.n_boot)
# what a score over the seeds is, worded so that it stays true with a single seed
over_seeds = f"the mean over the {n_seeds} seeds" if n_seeds > 1 else "from one seed"
keep("seeds_mean", over_seeds)
keep("seeds_of", f"mean of {n_seeds} seeds" if n_seeds > 1 else "one seed")

# %% [markdown]
# Training moves the model and each batch to `device` (`fit` does it); on a GPU the
# scatter-add of the pooling uses atomic adds, so its last bits, and therefore the trained
# weights, are not bit-for-bit repeatable there. On the CPU they are.
#
# ## Data
# The shared task of {doc}`06_survival_head`. `prepare_survival_task` runs the whole path of
# the previous chapters in one call: the synthetic cohort written as an OMOP CDM and read
# back, heart-failure labels from a prediction time {glue:text}`history_text` after enrolment over a
# five-year horizon, a train / validation / test split made before anything is fitted,
# sequences cut strictly before the prediction time, a vocabulary fitted on the training
# patients, and the follow-up cut into bins.

# %%
task = prepare_survival_task(shared_task_config())  # the same task in every chapter
keep("history_text", plural(task.config.history_days / 365.25, "year", ".0f"))
tc = task.config
n_bins = tc.n_bins
print(task.vocab)
task.summary()

# %% [markdown]
# Each patient's label is a duration in days, an event indicator and the **bin** that holds
# the event or the censoring: bin $k$ covers $(c_k, c_{k+1}]$ days after the prediction
# time, with `task.cuts` = $c_0 = 0 < c_1 < \dots < c_K$ = the horizon. A patient followed
# to the end of the window is censored in the last bin.

# %%
train_frame, test_frame = task.frame("train"), task.frame("test")
keep("n_bins", n_bins)
keep("bin_days", float(tc.bin_days))
keep("horizon_years", float(tc.horizon_years))
keep("n_train", len(train_frame))
keep("n_test", len(test_frame))
keep("n_test_events", int(test_frame["event"].sum()))
assert len(task.cuts) == n_bins + 1 and task.cuts[-1] == tc.horizon_days
assert train_frame["bin"].between(0, n_bins - 1).all()
test_frame.head()

# %% [markdown]
# ## Model
# The model: the BEHRT encoder of {doc}`06_survival_head`, visit-causal, then the per-bin
# head on the mean state of the last real visit. The library's `SurvivalModel(encoder, head)`
# composes the two (a flat batch in, a `HazardOutput` out); every later chapter builds its
# models with it. Here `new_model` of `ehrseq.behrt_survival` builds it from the recipe:
# `BehrtEncoder(recipe.encoder_config(task))`, then `BinHazardHead(d_model, n_bins, ...)`.


# %%
model = new_model(task, recipe)  # a flat batch -> (B, K) hazards
print(
    f"{count_parameters(model.encoder)['total']:,} encoder parameters, "
    f"{count_parameters(model.head)['total']:,} in the head"
)
keep("n_params", count_parameters(model)["total"])

# %% [markdown]
# **Starting from the life table.** Before the model has seen a single code, the best it can
# do is give everyone the same hazards: the life-table estimate $\hat h_k = d_k / n_k$ (events
# in bin $k$ over patients still at risk at its start), which is the maximum-likelihood fit of
# a model without features. Setting the head's output bias to $\text{logit}(\hat h_k)$
# (`BinHazardHead(..., base_hazards=life_table)`) starts training there, instead of at
# $h = 0.5$ in every bin, where the first steps would be spent learning that heart failure is
# rare. The library's `life_table_hazards` computes the same table for the later chapters.
# Its loss on the validation patients is the bar the model has to clear.

# %%
bins_train = train_frame["bin"].to_numpy()
events_train = train_frame["event"].to_numpy()
at_risk = np.array([(bins_train >= k).sum() for k in range(n_bins)])  # n_k
n_events = np.bincount(bins_train[events_train == 1], minlength=n_bins)  # d_k
life_table = np.clip(n_events / at_risk, 1e-4, 1 - 1e-4)  # (K,)
assert np.array_equal(life_table, life_table_hazards(bins_train, events_train, n_bins))
assert np.array_equal(life_table, task_life_table(task))  # where the models start
life_logits = np.log(life_table / (1 - life_table))  # (K,)
life_logits = torch.as_tensor(life_logits, dtype=torch.float32)

val_frame = task.frame("val")
val_bins = torch.as_tensor(val_frame["bin"].to_numpy())
val_events = torch.as_tensor(val_frame["event"].to_numpy())
null_logits = life_logits.expand(len(val_frame), n_bins)  # (n, K): one row for all
null_val_nll = float(hazard_nll(null_logits, val_bins, val_events))
keep("null_val_nll", null_val_nll)

# %% [markdown]
# ## Train
# One call to the library's `train_seeds` trains the model once per seed under the protocol
# every modelling chapter shares: the hazard NLL as the loss (`runs.hazard_nll_step`), one
# call to `fit` per seed (AdamW with warm-up and cosine decay, gradient clipping, early
# stopping on the validation loss with patience {glue:text}`patience`, best weights
# restored), then a survival curve for every test patient. The seed changes the
# initialisation and the order of the batches; the cohort and its split stay fixed, so the
# spread across seeds is the noise of training alone. `train_seeds` calls `new_model` once
# per seed and, with `keep_models=True`, returns the trained models too.
#
# The call is `fit_seeds` of `ehrseq.behrt_survival`: `train_seeds` with the recipe's model
# (the encoder, then the head started at the life table above), its `TrainConfig` and
# batch size. Each seed's trained model is then an artefact (`save_seeds`, through
# `ehrseq.artifacts.load_or_train`, keyed by the task, the encoder config and the training
# recipe), so that {doc}`06c_risk_score_and_leakage` loads it rather than training it again.
# The models are trained already here, so the `train` step that `load_or_train` calls only
# copies their weights in; when the artefact is on disk from an earlier build, it is left as
# it is.

# %%
keep("patience", recipe.patience)
runs = fit_seeds(task, recipe)  # train_seeds(new_model, task, ..., keep_models=True)
models = {s: m.cpu().eval() for s, m in zip(recipe.seeds, runs.models, strict=True)}
save_seeds(task, recipe, models)  # for chapter 6c
histories = dict(zip(recipe.seeds, runs.histories, strict=True))
assert runs.learned()  # every seed's training loss is finite and fell
keep("fit_seconds", runs.cost["train s"])
first = histories[recipe.seeds[0]][["epoch", "train_loss", "val_loss", "lr", "time_s"]]
first.style.hide(axis="index").format(  # the learning rate in its own notation
    {"train_loss": "{:.4f}", "val_loss": "{:.4f}", "lr": "{:.2e}", "time_s": "{:.1f}"}
)

# %% [markdown]
# `fit`'s `val_loss` is the mean of the per-batch losses, and the length-bucketed validation
# batches differ in size (the last holds the few longest, sickest histories), so it is close
# to, but not exactly, the mean over patients. The life table's line in the figure is the
# mean over patients; the check after it scores every validation patient exactly.

# %% mystnb={"figure": {"caption": "Training and validation loss (negative log-likelihood per patient, averaged over batches) by epoch for each seed; the dotted line is the validation loss of the life table, the model without features.", "name": "fig-survival-head-loss"}}
fig, ax = plt.subplots(figsize=(7, 3.6), layout="constrained")
for i, (seed, history) in enumerate(histories.items()):
    ax.plot(history["epoch"], history["train_loss"], "--", color=f"C{i}", alpha=0.6)
    val_loss = history["val_loss"]
    ax.plot(history["epoch"], val_loss, "o-", color=f"C{i}", label=f"seed {seed}")
ax.axhline(null_val_nll, color="0.4", linestyle=":", label="life table (validation)")
ax.xaxis.set_major_locator(MaxNLocator(integer=True))
ax.set_xlabel("epoch")
ax.set_ylabel("hazard NLL per patient (nats)")
ax.set_title("solid: validation, dashed: training")
fig.legend(loc="outside right upper")  # beside the axes: the curves can run anywhere
plt.show()


# %%
@torch.no_grad()
def val_nll(model: SurvivalModel) -> float:
    """The validation NLL averaged over patients (not over batches)."""
    total = 0.0
    for b in task.loader("val", 256):
        nll = hazard_nll(model(b).logits, b["durations"], b["events"], reduction="sum")
        total += float(nll)
    return total / len(val_frame)


best_val = {seed: val_nll(m) for seed, m in models.items()}
best, n_beat = min(best_val.values()), sum(v < null_val_nll for v in best_val.values())
keep("best_val_nll", best)
if cfg.profile != "smoke":
    # every seed beats the featureless model
    assert max(best_val.values()) < null_val_nll
# the sentence on the life table, true whichever way this run went
null_text = f"the life table's {null_val_nll:.4f} nats"
best_text = f"best {best:.4f}" if n_seeds > 1 else f"its loss: {best:.4f}"
if n_beat == n_seeds:
    who = "every seed's model has" if n_seeds > 1 else "the model has"
    val_text = f"{who} a lower loss than {null_text} ({best_text})"
    gain_text = "most of the gain comes in the first epochs"
    gain_text += ", and early stopping keeps the best ones"
else:
    if n_beat == 0:
        who = "no seed's model has" if n_seeds > 1 else "the model does not have"
    else:
        who = f"{n_beat} of the {n_seeds} seeds' models have"
    val_text = f"{who} a lower loss than {null_text} ({best_text})"
    not_yet = "training has not yet got" if n_beat == 0 else "not every seed has got"
    gain_text = (
        f"in {plural(recipe.epochs, 'epoch')} at most, {not_yet} past the featureless "
        "start, and early stopping keeps the best epoch"
    )
keep("val_text", val_text)
keep("gain_text", gain_text)

# %% [markdown]
# On the validation patients {glue:text}`val_text`. The model is small
# ({glue:text}`n_params:,` parameters); {glue:text}`gain_text`.
#
# ## Evaluate
# `train_seeds` predicted every test patient's survival at the bin edges, in the order of
# `task.frame("test")`. `SurvivalProtocol` scores these curves beside two references on the
# same patients: the **oracle** (the generator's true survival, the ceiling) and the **life
# table** (the same curve for everyone, no information). The metrics are those of the
# survival-framework chapter: Harrell's C {cite}`harrell1982evaluating` and Uno's C
# {cite}`uno2011c` of the risk by the horizon, the integrated Brier score
# {cite}`graf1999assessment` of the curve at the edges $c_1, \dots, c_{K-1}$ (the last edge
# $c_K$ is the end of the window, after which nobody is at risk, so it cannot be scored),
# the AUROC at the last inner edge, and the calibration error. Each number is
# {glue:text}`seeds_mean`, with a percentile bootstrap interval over test patients
# ({glue:text}`n_boot` resamples).

# %%
d_test = test_frame["duration"].to_numpy()
e_test = test_frame["event"].to_numpy()
protocol = SurvivalProtocol(
    d_test,
    e_test,
    task.cuts[1:],  # the right edge of every bin; the last is the horizon
    train_frame["duration"],
    train_frame["event"],
    n_boot=cfg.n_boot,
)
oracle_surv = task.oracle_survival("test")  # (n, K), at task.cuts[1:]
oracle_risk = task.oracle_risk("test")  # (n,)
null_surv = np.tile(hazards_to_survival(life_table[None]), (len(d_test), 1))  # (n, K)
model_surv = runs.survs[0]  # (n, K): the first seed, for the figures
model_risk = 1.0 - model_surv[:, -1]  # (n,), risk by the horizon
assert model_surv.shape == oracle_surv.shape == (len(d_test), n_bins)
assert np.allclose(1.0 - oracle_surv[:, -1], oracle_risk, atol=1e-6)

BEHRT, ORACLE = "BEHRT, per-bin head", "oracle (true risk)"
NULL = "life table (no features)"
curves = {BEHRT: runs.survs, ORACLE: [oracle_surv], NULL: [null_surv]}
metrics = ["Harrell C", "Uno C", "IBS", "AUROC", "calibration error"]
rows = [protocol.evaluate(name, s, metrics=metrics) for name, s in curves.items()]
scores = pd.DataFrame(rows).set_index("model")
# "estimate [lower, upper]", one string per cell; no-break spaces keep it on one line
shown = format_table(scores, metrics).map(lambda v: v.replace(" ", "\u00a0"))
# two narrow tables rather than one wide
keep_table("ch06_ranking", shown[["Harrell C", "Uno C", "AUROC"]])
# the plug-in calibration error (estimate only), then the debiased one with its interval
debiased = "debiased RMS calibration error"
keep_table("ch06_curves", shown[["IBS", "calibration error", debiased, "seeds"]])
outside = int((scores["calibration error"] < scores["calibration error lower"]).sum())
outside_text = f"in {outside} of the {len(scores)} rows" if outside else "in no row"
keep("cal_outside_text", outside_text)

# %% [markdown]
# How well each model ranks the test patients (the two C-indices and the AUROC of the risk
# at the horizon; the life table gives everyone the same risk, so it scores 0.5 on every
# resample and its interval has no width):
#
# {glue:}`ch06_ranking`
#
# How good the predicted curves are (integrated Brier score, calibration error at the
# horizon):
#
# {glue:}`ch06_curves`
#
# The calibration error is shown without an interval: its bootstrap interval can lie
# above the estimate itself (here {glue:text}`cal_outside_text`): resampling the test
# patients with replacement adds noise to every decile's observed incidence, and an
# absolute gap only grows with noise, so the resampled errors run high. The debiased RMS
# calibration error beside it takes each decile's sampling variance out of its squared
# gap (Kumar et al.'s estimator, about 0 for a calibrated model) and comes with an
# interval that contains it.
#
# How much of the gap to the oracle is noise of the test set? The paired bootstrap of the
# *difference* answers it: both are scored on the same resamples of test patients, so what
# makes a patient easy or hard for both cancels.

# %%
gap = protocol.compare("oracle", [oracle_surv], "BEHRT", runs.survs)  # C, IBS, AUROC
gap = gap.set_index("metric")
spans = gap[["difference", "lower", "upper"]].itertuples(index=False)
gap_shown = pd.DataFrame(
    {
        "oracle minus BEHRT [95% interval]": [
            f"{d:+.4f} [{lo:+.4f}, {hi:+.4f}]" for d, lo, hi in spans
        ],
        "verdict": gap["verdict"],
    },
    index=gap.index,
)
keep_table("ch06_gap", gap_shown)
keep("diff_gap", gap.loc["Harrell C", "difference"])
keep("diff_gap_lower", gap.loc["Harrell C", "lower"])
keep("diff_gap_upper", gap.loc["Harrell C", "upper"])
keep("verdict_gap", gap.loc["Harrell C", "verdict"])
keep("verdict_gap_ibs", gap.loc["IBS", "verdict"])

behrt, oracle, null = (scores.loc[name] for name in (BEHRT, ORACLE, NULL))
for key, row in [("model", behrt), ("oracle", oracle)]:
    keep(f"{key}_harrell", row["Harrell C"])
    keep(f"{key}_uno", row["Uno C"])
    keep(f"{key}_ibs", row["IBS"])
keep("null_ibs", null["IBS"])
ipa_model, ipa_oracle = (1.0 - row["IBS"] / null["IBS"] for row in (behrt, oracle))
keep("ipa_model", ipa_model)
keep("ipa_oracle", ipa_oracle)


def share(x: float) -> str:
    return f"{x:.0%}" if x >= 0.005 else "less than 1%"


if ipa_model > 0:
    ipa_text = f"the model removes {share(ipa_model)} of the no-information score"
else:  # a model that does worse than the life table (a short run)
    ipa_text = (
        "the model does not improve on the no-information score "
        f"(its IBS is {share(-ipa_model)} higher)"
    )
keep("ipa_text", f"{ipa_text}, the oracle removes {share(ipa_oracle)}")
keep("c_seed_sd", behrt["Harrell C seed sd"])
keep(
    "c_seed_text",
    f"standard deviation {behrt['Harrell C seed sd']:.3f} in C over the {n_seeds} seeds"
    if n_seeds > 1
    else "with one seed there is no spread to report",
)
keep("c_boot_half", (behrt["Harrell C upper"] - behrt["Harrell C lower"]) / 2)
keep("cal_error", behrt["calibration error"])
assert 0.0 < behrt["IBS"] < 0.25
if cfg.profile != "smoke":
    assert 0.6 < behrt["Harrell C"] < oracle["Harrell C"]
    assert oracle["IBS"] < behrt["IBS"] < null["IBS"]
    assert behrt["calibration error"] < 0.05  # within a few points of the diagonal

# %% [markdown]
# {glue:}`ch06_gap`
#
# On the {glue:text}`n_test:,` test patients ({glue:text}`n_test_events:,` events), the
# oracle's Harrell C minus the model's is {glue:text}`diff_gap:+.3f` (95% interval
# {glue:text}`diff_gap_lower:+.3f` to {glue:text}`diff_gap_upper:+.3f`):
# {glue:text}`verdict_gap`. On the integrated Brier score: {glue:text}`verdict_gap_ibs`.
# With few events among many patients, even the life table has a small squared error, so
# read the Brier scores relative to it: {glue:text}`ipa_text`. Two kinds of noise sit in
# the tables: the bootstrap interval is about the test patients (another test set of the
# same size would give other numbers; half-width {glue:text}`c_boot_half:.3f` in C), the
# spread across seeds about training (another initialisation gives another model;
# {glue:text}`c_seed_text`).
#
# ### Calibration
# A C-index says nothing about whether a predicted 10 % means 10 %. Grouping the test
# patients by predicted risk at the horizon and comparing the mean prediction with the
# Kaplan-Meier incidence of each group shows it.

# %% mystnb={"figure": {"caption": "Calibration at the horizon on the test patients (first seed): mean predicted five-year risk against the Kaplan-Meier incidence in each decile of predicted risk, with 95% intervals, for the oracle and the BEHRT model.", "name": "fig-survival-head-calibration"}}
n_groups_cal = protocol.calibration_groups
cal_model = calibration_table(
    d_test, model_risk, e_test, horizon=tc.horizon_days, n_bins=n_groups_cal
)
cal_oracle = calibration_table(
    d_test, oracle_risk, e_test, horizon=tc.horizon_days, n_bins=n_groups_cal
)
fig, ax = plt.subplots(figsize=(5, 5))
plot_calibration(cal_oracle, ax=ax, label="oracle (true risk)")
plot_calibration(cal_model, ax=ax, label="BEHRT, per-bin head")
ax.set_title(f"Calibration at {tc.horizon_years:g} years")
ax.set_xlabel(f"predicted risk of heart failure by {tc.horizon_years:g} years")
ax.set_ylabel(f"observed risk by {tc.horizon_years:g} years (Kaplan-Meier)")
top = ax.get_xlim()[1]
ax.set_xlim(-0.02 * top, top)  # a margin, so that the markers at 0 are drawn whole
ax.set_ylim(-0.02 * top, top)
plt.show()
keep("mean_predicted", float(model_risk.mean()))
keep("mean_oracle", float(oracle_risk.mean()))

# %% [markdown]
# The mean absolute gap between the deciles and the diagonal is {glue:text}`cal_error:.3f`
# ({glue:text}`seeds_of`); on average the model predicts a five-year risk of
# {glue:text}`mean_predicted:.1%`, the oracle {glue:text}`mean_oracle:.1%`. The likelihood
# rewards calibrated hazards, and the life-table start helps: the model begins calibrated on
# average and learns to spread the risks from there.
#
# ### Survival by predicted risk group
# A model that discriminates spreads the Kaplan-Meier curves of its risk groups apart.

# %% mystnb={"figure": {"caption": "Kaplan-Meier curves of the test patients in thirds of predicted five-year risk, for the oracle (left) and the BEHRT model with the per-bin head (right, first seed).", "name": "fig-survival-head-risk-groups"}}
fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True, layout="constrained")
for ax, risk_score, title in [
    (axes[0], oracle_risk, "oracle"),
    (axes[1], model_risk, "BEHRT, per-bin head"),
]:
    plot_survival_by_risk_group(
        d_test / 365.25,
        risk_score,
        e_test,
        n_groups=3,
        ax=ax,
        time_unit="years since prediction time",
    )
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
assert names == axes[1].get_legend_handles_labels()[1]  # thirds of the same patients
legend_title = "predicted risk group (thirds)"
fig.legend(handles, names, title=legend_title, loc="outside lower center", ncol=3)
plt.show()
print(f"chapter ran in {(time.perf_counter() - chapter_start) / 60:.1f} min")

# %% [markdown]
# ## Summary
# - A small BEHRT ({glue:text}`n_params:,` parameters) with the per-bin head reaches a
#   Harrell C of {glue:text}`model_harrell:.3f` and an IBS of {glue:text}`model_ibs:.4f`
#   ({glue:text}`seeds_of`) against the oracle's
#   {glue:text}`oracle_harrell:.3f` and {glue:text}`oracle_ibs:.4f`. The oracle minus the
#   model in C is {glue:text}`diff_gap:+.3f` ({glue:text}`verdict_gap`); closing that gap is
#   the work of the coming chapters.
# - Starting the head at the life table makes the model calibrated on average from its
#   first step; the likelihood keeps it close to the diagonal as it learns to rank.
# - Each seed's model is an artefact: {doc}`06c_risk_score_and_leakage` loads it to
#   measure why the sum of per-visit hazards is a poor risk score and to run the leakage
#   test on the trained encoder.
#
# ## Exercises
# 1. Train with `causal=False`. Does the C-index of the per-bin head change?
# 2. The encoder never sees *when* the prediction is made: the last visit can be a day or a
#    year before the prediction time. Append a token at the prediction time (or feed the gap
#    to the head) and compare the C-index and the calibration.
# 3. Replace the mean state of the last visit by the `[CLS]` state (pass `states[:, 0]` to
#    `BinHazardHead`), or by a mean over all visits. Under the visit-causal mask, which
#    visits can the `[CLS]` token see? Train both with `causal=False` too, and explain the
#    four C-indices.
# 4. Remove the life-table initialisation of the head's bias. How many more epochs does the
#    model need to reach the same validation loss?
# 5. Use `TaskConfig(n_bins=60)` (monthly bins). Do the C-index and the IBS change?

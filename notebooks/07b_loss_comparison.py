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
# # Comparing the survival losses
#
# ## Outline
# {doc}`07_loss_functions` wrote the losses a discrete-time survival head can be trained
# with, and the two families in use pull in different directions: the **likelihood** asks
# for probabilities that match how often events happen, a **ranking loss** asks only that
# patients who fall ill earlier get the higher risk, and DeepHit's hybrid
# $\text{NLL} + \lambda \cdot \text{ranking}$ adds the two. The C-index, the metric most
# papers report, rewards only the second.
#
# We will
# 1. train one network with each loss on the shared survival task, sweeping $\lambda$, with
#    several seeds, and score every model with Harrell's and Uno's C, the integrated Brier
#    score and calibration, next to the oracle;
# 2. test DeepHit's claim that the hybrid trades likelihood for ranking, pair by pair on
#    the same test patients.
#
# The next chapter, {doc}`07c_where_losses_disagree`, loads the same trained models and
# looks at where the likelihood and the C-index disagree: calibration, a shift of every
# logit, and the epochs of training.

# %% [markdown]
# ## Setup
# One config per chapter; `EHRSEQ_PROFILE` (`smoke`, `book`, `full`) picks its size. The
# sweep itself, what decides each trained network, is a recipe of the library,
# `ehrseq.loss_sweep.loss_sweep()`, so that {doc}`07c_where_losses_disagree` loads the
# same networks from the same definition.

# %%
import time
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display

import ehrseq
from ehrseq.baselines import token_count_features
from ehrseq.book import (
    format_floats,
    interval,
    keep,
    keep_table,
    number,
    plural,
    record_claim,
    start_claims,
)
from ehrseq.config import for_profile, format_config
from ehrseq.data.task import prepare_survival_task, shared_task_config
from ehrseq.evaluate import HIGHER_IS_BETTER, SurvivalProtocol, format_table
from ehrseq.loss_sweep import load_or_fit_bag, loss_sweep, predict_survival
from ehrseq.metrics import calibration_table
from ehrseq.plotting import apply_style
from ehrseq.survival import hazards_to_survival, life_table_hazards


@dataclass(frozen=True)
class Config:
    profile: str = "book"
    seed: int = 7  # seed of the setup and of the bootstrap
    # lambda of the hybrid whose claims go to the results page
    claim_weight: float = 1.0
    n_boot: int = 200  # bootstrap resamples of test patients per interval


cfg = for_profile(Config, {"smoke": {"n_boot": 20}, "full": {"n_boot": 1000}})
sweep = loss_sweep()  # seeds, lambdas, network and training settings of every run
device = ehrseq.get_device()
ehrseq.seed_everything(cfg.seed)
apply_style()
print(format_config(cfg))
print(format_config(sweep))
print(f"device: {device}; CPU threads: {torch.get_num_threads()} (OMP_NUM_THREADS)")
CHAPTER = "07b_loss_comparison"
start_claims(CHAPTER)  # the claims this chapter tests go to the results page
assert cfg.claim_weight in sweep.rank_weights


n_seeds = len(sweep.seeds)
keep("seeds_text", plural(n_seeds, "seed"))
keep("n_boot", cfg.n_boot)
if sweep.patience is None:
    stopping = f"no early stopping ({plural(sweep.epochs, 'epoch')} every run)"
elif sweep.epochs <= sweep.patience + 1:  # no run can pass its patience before the end
    stopping = (
        f"early stopping after {plural(sweep.patience, 'epoch')} without improvement "
        f"(with at most {plural(sweep.epochs, 'epoch')}, no run can stop early at this "
        "size)"
    )
else:
    stopping = (
        f"early stopping after {plural(sweep.patience, 'epoch')} without improvement "
        f"(at most {plural(sweep.epochs, 'epoch')})"
    )
keep("stopping_text", stopping)
if n_seeds > 1:
    seed_mean_text = (
        f"Each number below is the mean over the {plural(n_seeds, 'seed')}. Its "
        f"interval is a 95% percentile bootstrap over test patients ({cfg.n_boot} "
        "resamples) of that seed mean: each resample rescores all seeds on the same "
        "resampled patients, so the interval covers the noise of the test set, and the "
        "spread over seeds (`sd`) the noise of training."
    )
    over_seeds = f"averaged over its {n_seeds} seeds"
    seed_caveat = f"Each model in these comparisons is {over_seeds}."
else:
    seed_mean_text = (
        "Each number below is the score of the one training seed. Its interval is a "
        f"95% percentile bootstrap over test patients ({cfg.n_boot} resamples): it "
        "covers the noise of the test set; with one seed there is no spread over seeds "
        "to show the noise of training."
    )
    seed_caveat = (
        "With one training seed per loss, these verdicts cover the noise of the test "
        "set but not that of training: another seed could change them."
    )
keep("seed_mean_text", Markdown(seed_mean_text))
keep("seed_caveat", seed_caveat)
keep("seed_means", "means over seeds" if n_seeds > 1 else "single-seed scores")
if n_seeds > 1:
    keep("seeds_scope", f"averaged over the {n_seeds} seeds")
else:
    keep("seeds_scope", "resampling the test patients")
chapter_start = time.perf_counter()

# %% [markdown]
# The losses and the small network below run on whatever `ehrseq.get_device()` picks; the
# metrics run in NumPy on the CPU. On a GPU the sums inside the losses may add in a different
# order from run to run, so the last digits of a trained model can differ; on the CPU the
# runs below repeat bit for bit.
#
# ## Data
# Every modelling chapter shares one protocol (`prepare_survival_task`): the same synthetic
# cohort, the same patients in training, validation and test, a prediction time
# {glue:text}`history_text` into each patient's record, a
# {glue:text}`horizon_years:g`-year horizon cut into {glue:text}`n_bins` equal bins, and the
# generator's true risk of every patient, the oracle.

# %%
task = prepare_survival_task(shared_task_config())  # the same task in every chapter
n_bins = task.config.n_bins
horizon_days = task.config.horizon_days
keep("n_bins", n_bins)
keep("horizon_years", float(task.config.horizon_years))
history_years = task.config.history_days / 365.25
keep("history_text", plural(history_years, "year", ".0f"))  # "2 years"
task.summary()

# %% [markdown]
# ### The fixed features and the network
# The network is the one {doc}`07_loss_functions` builds and checks: it reads the counts of
# every vocabulary token in the history before the prediction time, as
# $\log(1 + \text{count})$, and the age at the last recorded event, standardised on the
# training patients; one hidden layer makes the patient state, and the library's
# `BinHazardHead` maps it to one logit per bin, its biases starting at the logits of the
# life-table hazards of the training patients. Both come from the library
# (`ehrseq.baselines.token_count_features`, `ehrseq.models.BagOfTokensSurvival`), so that
# this chapter runs on its own.


# %%
data = token_count_features(task)  # {split: (x, durations, events)}
for split, (x, d, e) in data.items():
    n = len(task.frame(split))
    assert x.shape == (n, len(task.vocab) + 1) and d.shape == e.shape == (n,)
    assert torch.equal(d, torch.as_tensor(task.frame(split)["bin"].to_numpy()))
    assert int(d.max()) < n_bins and torch.isfinite(x).all()


d_train, e_train_bins = data["train"][1], data["train"][2]
life_table = torch.as_tensor(  # (T,), the life-table hazards of the training patients
    life_table_hazards(d_train.numpy(), e_train_bins.numpy(), n_bins),
    dtype=torch.float32,
)

# %% [markdown]
# ## Train
# {glue:text}`n_losses` losses: the likelihood ($\lambda = 0$), the hybrid at
# {glue:text}`hybrids_text` of $\lambda$, and the ranking loss alone, each with
# {glue:text}`seeds_text` (the seed sets the initialisation of the weights, dropout and the
# order of the batches). A run is one call of `load_or_fit_bag` from `ehrseq.loss_sweep`,
# where the sweep lives so that {doc}`07c_where_losses_disagree` gets the very same
# networks. It trains with `survival_loss`,
#
# $$
# \mathcal{L}_\lambda = \text{NLL} + \lambda \cdot \mathcal{L}_\text{rank}(1 - S),
# $$
#
# which is `hybrid_loss` of {doc}`07_loss_functions` (and `pairwise_ranking_loss` on
# $1 - S$ for the ranking loss alone), in the book's one training loop, `ehrseq.train.fit`:
# AdamW, warm-up and cosine decay, gradient clipping, and {glue:text}`stopping_text`,
# keeping the best weights. "Best" is judged by each run's **own** loss on the validation
# patients, as it would be by someone who had only that loss. After every epoch the loop
# also records, on the validation patients, the NLL, the ranking loss and Harrell's C
# (`validation_metrics`), whatever the model trains on.
#
# Each run is an artefact (`ehrseq.artifacts.load_or_train`, keyed by the task, the loss,
# the seed and the settings of `sweep` printed above): its weights and its per-epoch record
# are saved, and a second execution, or {doc}`07c_where_losses_disagree`, loads them
# instead of training again.

# %%
LOSSES = sweep.losses()  # {loss name: lambda}; None is the ranking loss alone
keep("n_losses", len(LOSSES))
keep("hybrids_text", plural(len(LOSSES) - 2, "value"))


runs, histories, test_surv = [], [], {}
for loss_name in LOSSES:
    for seed in sweep.seeds:
        run = load_or_fit_bag(task, data, sweep, loss_name, seed)  # trained, or loaded
        # (n, T), survival at the end of every bin
        test_surv[loss_name, seed] = predict_survival(run.model, data["test"][0])
        histories.append(run.history.assign(loss=loss_name, seed=seed))
        # fit keeps the first epoch with the lowest validation loss
        best = run.history.loc[run.history["val_loss"].idxmin(), "epoch"]
        runs.append(
            {
                "loss": loss_name,
                "seed": seed,
                "epochs run": len(run.history),
                "best epoch": int(best),
                "seconds": run.history["time_s"].sum(),  # when it was trained
                "loaded": run.loaded,
            }
        )
runs = pd.DataFrame(runs)
history = pd.concat(histories, ignore_index=True)
recorded = history[["train_loss", "val_loss", "val_nll", "val_rank"]]
assert np.isfinite(recorded).all().all()
train_seconds = float(runs["seconds"].sum())
seconds_format = ".1f" if train_seconds < 10 else ",.0f"
keep("train_seconds_text", plural(train_seconds, "second", seconds_format))
keep("n_runs", len(runs))
n_loaded = int(runs["loaded"].sum())
if n_loaded == 0:
    loaded_text = "all trained in this execution"
elif n_loaded == len(runs):
    loaded_text = "all loaded from their artefacts, trained by an earlier execution"
else:
    loaded_text = f"{n_loaded} of them loaded from their artefacts"
keep("loaded_text", loaded_text)
per_loss = runs.groupby("loss", sort=False)
per_run = per_loss[["epochs run", "best epoch", "seconds"]].mean()
# the header says that a fractional epoch is a mean over seeds, not a count
per_run = per_run.rename_axis("loss (mean over seeds)" if n_seeds > 1 else "loss")
format_floats(per_run, "{:.1f}")

# %% [markdown]
# The {glue:text}`n_runs` runs took {glue:text}`train_seconds_text` of training together
# ({glue:text}`loaded_text`).
#
# ## Evaluate
# Every model is scored on the test patients with the metrics of the survival-framework
# chapter: **Harrell's C** and **Uno's C** (truncated at the horizon, censoring weights from
# the training labels) {cite}`uno2011c` on the predicted risk by the horizon,
# $1 - S(t_{T})$; the **integrated Brier score** {cite}`graf1999assessment` of the whole
# predicted curve over the bin edges inside the window; and the mean predicted risk by the
# horizon next to the observed one (Kaplan-Meier). The oracle (the generator's true risk and
# survival) is the ceiling; the life-table curve, the same for everyone, is the
# no-information reference for the Brier score.

# %%
test = task.frame("test")
d_test, e_test = test["duration"].to_numpy(), test["event"].to_numpy()
train = task.frame("train")
d_train_days, e_train_days = train["duration"].to_numpy(), train["event"].to_numpy()
# bin edges inside the window, days; surv[:, :-1] sits on them
eval_times = task.cuts[1:-1]
protocol = SurvivalProtocol(
    d_test,
    e_test,
    task.cuts[1:],  # the right edge of every bin; the last is the horizon
    d_train_days,
    e_train_days,
    n_boot=cfg.n_boot,
    seed=cfg.seed,
)
# f(d, e, surv) each
harrell, uno, ibs = (protocol.metrics[m] for m in ("Harrell C", "Uno C", "IBS"))

oracle_surv = task.oracle_survival("test")  # (n, T), true survival at the bin edges
assert np.allclose(1 - oracle_surv[:, -1], task.oracle_risk("test"), atol=1e-6)
null_curve = hazards_to_survival(life_table[None].double().numpy())  # (1, T)
null_surv = np.tile(null_curve, (len(test), 1))  # (n, T), the same for everyone
overall = calibration_table(d_test, np.zeros(len(test)), e_test, horizon_days, n_bins=1)
# Kaplan-Meier risk by the horizon, all test patients
observed_risk = float(overall["observed"].iloc[0])

rows = []
for (loss_name, seed), surv in test_surv.items():
    rows.append(
        {
            "loss": loss_name,
            "seed": seed,
            "Harrell C": harrell(d_test, e_test, surv),
            "Uno C": uno(d_test, e_test, surv),
            "IBS": ibs(d_test, e_test, surv),
            "mean predicted risk": float((1 - surv[:, -1]).mean()),
        }
    )
per_seed = pd.DataFrame(rows)
reference = {
    "oracle": {
        "Harrell C": harrell(d_test, e_test, oracle_surv),
        "Uno C": uno(d_test, e_test, oracle_surv),
        "IBS": ibs(d_test, e_test, oracle_surv),
        "mean predicted risk": float((1 - oracle_surv[:, -1]).mean()),
    },
    "life table (no features)": {
        "IBS": ibs(d_test, e_test, null_surv),
        "mean predicted risk": float(1 - null_surv[0, -1]),
    },
}
keep("observed_risk", observed_risk)

# %% [markdown]
# {glue:md}`seed_mean_text` All losses share the same resamples, so their intervals can be
# compared pair by pair.


# %%
scored = ["Harrell C", "IBS"]  # the metrics with bootstrap intervals
# {loss: [(n, T) per seed]}
survs = {name: [test_surv[name, s] for s in sweep.seeds] for name in LOSSES}
summary = pd.DataFrame(  # seed means, bootstrap intervals of the mean, sd over seeds
    [protocol.evaluate(name, survs[name], metrics=scored) for name in LOSSES]
).set_index("model")
seed_means = per_seed.groupby("loss")[["Uno C", "mean predicted risk"]].mean()
summary = summary.join(seed_means)
summary["predicted / observed"] = summary["mean predicted risk"] / observed_risk
# "estimate [lower, upper]": a value and its interval on one line
shown = format_table(summary.drop(columns="seeds"), scored)
shown = shown.rename_axis("loss")
if n_seeds > 1:  # with one seed there is no spread over seeds to show
    shown.insert(1, "C sd", summary["Harrell C seed sd"].map("{:.4f}".format))
    shown["IBS sd"] = summary["IBS seed sd"].map("{:.4f}".format)
uno_shown = summary["Uno C"].map("{:.3f}".format)
shown.insert(shown.columns.get_loc("IBS"), "Uno C", uno_shown)
shown["mean predicted risk"] = summary["mean predicted risk"].map("{:.3f}".format)
shown["predicted / observed"] = summary["predicted / observed"].map("{:.2f}".format)
shown = shown.map(lambda v: v.replace(" ", "\u00a0"))  # no break inside a cell
# two tables, the ranking and the curve: one table this wide wraps every interval
ranking_columns = [c for c in ("Harrell C", "C sd", "Uno C") if c in shown.columns]
display(shown[ranking_columns])
display(shown.drop(columns=ranking_columns))

# %%
oracle = reference["oracle"]
null = reference["life table (no features)"]
# no C without features
pd.DataFrame(reference).T.map(lambda v: "" if pd.isna(v) else number(v, ".4f"))

# %% [markdown]
# The sweep in one figure: discrimination on the left, the Brier score on the right, with
# the oracle as the ceiling (dashed) and, for the Brier score, the no-information life table
# (dotted). Points are seeds, bars the bootstrap intervals of their mean.

# %% mystnb={"figure": {"caption": "Test Harrell C (left) and integrated Brier score (right, lower is better) for the likelihood (NLL), the hybrid NLL + λ · ranking, and the ranking loss alone. Dots: seeds; bars: mean with a 95% bootstrap interval over test patients. Dashed: the oracle; dotted: the life-table curve without features.", "name": "fig-loss-sweep"}}
labels = list(LOSSES)
pos = np.arange(len(labels))
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for ax, metric in zip(axes, ("Harrell C", "IBS"), strict=True):
    est = summary[metric].to_numpy()
    lower, upper = summary[f"{metric} lower"], summary[f"{metric} upper"]
    err = np.vstack([est - lower, upper - est])  # (2, n losses)
    ax.errorbar(
        pos,
        est,
        yerr=err,
        fmt="o",
        color="C0",
        capsize=4,
        label="mean over seeds",
    )
    for i, loss_name in enumerate(labels):
        seeds = per_seed.loc[per_seed["loss"] == loss_name, metric].to_numpy()
        ax.plot(np.full(len(seeds), i + 0.12), seeds, ".", color="0.5")
    ax.axhline(oracle[metric], color="C3", linestyle="--", label="oracle")
    ax.set_xticks(pos, [label.replace(" + ", "\n+ ") for label in labels])
    ax.set_xlabel("training loss ($\\lambda$ = weight of the ranking term)")
axes[0].set_ylabel("Harrell C on test patients")
axes[1].axhline(
    null["IBS"],
    color="0.3",
    linestyle=":",
    label="life table (no features)",
)
first_year, last_year = eval_times[0] / 365.25, eval_times[-1] / 365.25
axes[1].set_ylabel(f"integrated Brier score, {first_year:.2f} to {last_year:.2f} years")
handles = dict(zip(*reversed(axes[0].get_legend_handles_labels()), strict=True))
handles.update(zip(*reversed(axes[1].get_legend_handles_labels()), strict=True))
fig.legend(handles.values(), handles.keys(), loc="upper center", ncol=len(handles))
plt.tight_layout(rect=(0, 0, 1, 0.92))
plt.show()

# %%
nll_row, rank_row = summary.loc["NLL"], summary.loc["rank only"]
for name, row in [("nll", nll_row), ("rank", rank_row)]:
    for col, key in [
        ("Harrell C", "c"),
        ("Harrell C lower", "c_lower"),
        ("Harrell C upper", "c_upper"),
        ("Uno C", "uno"),
        ("IBS", "ibs"),
        ("IBS lower", "ibs_lower"),
        ("IBS upper", "ibs_upper"),
        ("mean predicted risk", "mean_risk"),
        ("predicted / observed", "ratio"),
    ]:
        keep(f"{name}_{key}", float(row[col]))
# the hybrid with the largest lambda
heaviest = summary.iloc[len(sweep.rank_weights) - 1]
keep("max_lam", float(sweep.rank_weights[-1]))
keep("max_lam_ratio", float(heaviest["predicted / observed"]))
keep("max_lam_ibs", float(heaviest["IBS"]))
keep("c_min", float(summary["Harrell C"].min()))
keep("c_max", float(summary["Harrell C"].max()))
c_width = float((summary["Harrell C upper"] - summary["Harrell C lower"]).mean())
keep("c_width", c_width)
c_range = float(summary["Harrell C"].max() - summary["Harrell C"].min())
keep("c_sweep_text", "hardly moves across" if c_range < c_width / 2 else "moves across")
keep("oracle_c", float(oracle["Harrell C"]))
keep("oracle_uno", float(oracle["Uno C"]))
keep("oracle_ibs", float(oracle["IBS"]))
keep("null_ibs", float(null["IBS"]))

assert np.isfinite(per_seed[["Harrell C", "Uno C", "IBS"]].to_numpy()).all()
assert oracle["Harrell C"] > 0.7 and oracle["IBS"] < null["IBS"]
if cfg.profile != "smoke":
    assert (summary["Harrell C"] > 0.7).all(), summary["Harrell C"]
    assert (summary["Harrell C"] < oracle["Harrell C"]).all()
    assert (summary["IBS"] > oracle["IBS"]).all()
    assert nll_row["IBS"] < null["IBS"]  # the likelihood beats no information
    # and is calibrated on average
    assert abs(nll_row["predicted / observed"] - 1) < 0.1

# %% [markdown]
# The C-index {glue:text}`c_sweep_text` the sweep: the {glue:text}`seed_means` run from
# {glue:text}`c_min:.3f` to {glue:text}`c_max:.3f`, while each interval is about
# {glue:text}`c_width:.2f` wide. The likelihood alone reaches {glue:text}`nll_c:.3f` (95%
# interval {glue:text}`nll_c_lower:.3f` to {glue:text}`nll_c_upper:.3f`, Uno's C
# {glue:text}`nll_uno:.3f`), the ranking loss alone {glue:text}`rank_c:.3f`; the oracle
# reaches {glue:text}`oracle_c:.3f` (Uno's C {glue:text}`oracle_uno:.3f`). The integrated
# Brier score is {glue:text}`nll_ibs:.4f` for the likelihood, {glue:text}`max_lam_ibs:.4f`
# at $\lambda$ = {glue:text}`max_lam:g` and {glue:text}`rank_ibs:.4f` for the ranking loss
# alone (the life table without features scores {glue:text}`null_ibs:.4f`, the oracle
# {glue:text}`oracle_ibs:.4f`); which of these differences the test set resolves, the
# paired comparisons below say. The **level** of the predicted risk moves too. The test
# patients' observed risk of heart failure within the horizon is
# {glue:text}`observed_risk:.3f`; the likelihood predicts on average
# {glue:text}`nll_ratio:.2f` times that, the ranking loss alone
# {glue:text}`rank_ratio:.2f` times, and the hybrid {glue:text}`max_lam_ratio:.2f` times at
# $\lambda$ = {glue:text}`max_lam:g`.
#
# Since all losses are scored on the same test patients, their **difference** is measured
# far more precisely than either alone: `SurvivalProtocol.compare` resamples patients once
# and scores both models, each averaged over its seeds, on every resample (Harrell's C, the
# integrated Brier score and the AUROC). Two comparisons with the likelihood: the hybrid at
# $\lambda$ = {glue:text}`claim_weight:g`, and the ranking loss alone. The claim under test
# is DeepHit's {cite}`lee2018deephit`: a hybrid loss trades likelihood for ranking, a better
# C-index bought with a worse proper score.

# %%
HYBRID = f"NLL + {cfg.claim_weight:g} rank"
keep("claim_weight", cfg.claim_weight)
paired = {
    other: protocol.compare(other, survs[other], "NLL", survs["NLL"])
    for other in (HYBRID, "rank only")
}
paired = {other: table.set_index("metric") for other, table in paired.items()}
paired_table = pd.concat(paired.values()).reset_index()
keep_table(
    "ch07_paired",
    pd.DataFrame(
        {
            "comparison": paired_table["comparison"],
            "metric": paired_table["metric"],
            "difference [95% interval]": [  # one line, no "-0.0000"
                interval(*r, "+.4f")
                for r in paired_table[["difference", "lower", "upper"]].to_numpy()
            ],
            "verdict": paired_table["verdict"],
        }
    ).set_index(["comparison", "metric"]),
)
PRICE = "the likelihood alone keeps the better integrated Brier score (IBS, NLL vs {})"
RANK_C = "the ranking loss alone ranks better than the likelihood (Harrell C, "
RANK_C += "rank only vs NLL)"
CLAIMS = {  # key prefix: the model, and the claim on C and on the IBS
    "hybrid": (
        HYBRID,
        "a hybrid loss trades likelihood for ranking: it ranks better than the "
        f"likelihood alone (Harrell C, {HYBRID} vs NLL)",
        "a hybrid loss trades likelihood for ranking: " + PRICE.format(HYBRID),
    ),
    "rank": (
        "rank only",
        RANK_C,
        "the ranking loss alone costs likelihood: " + PRICE.format("rank only"),
    ),
}
verdicts = {}
for short, (other, c_claim, ibs_claim) in CLAIMS.items():
    c_row = paired[other].loc["Harrell C"].to_dict() | {"metric": "Harrell C"}
    verdicts[f"{short}_c"] = record_claim(
        CHAPTER,
        f"{short}_c",
        c_claim,
        c_row,
        higher_is_better=HIGHER_IS_BETTER["Harrell C"],
        source="lee2018deephit",
    )
    nll_vs = protocol.difference("NLL", survs["NLL"], other, survs[other], "IBS")
    verdicts[f"{short}_ibs"] = record_claim(
        CHAPTER,
        f"{short}_ibs",
        ibs_claim,
        nll_vs,
        higher_is_better=HIGHER_IS_BETTER["IBS"],
        source="kvamme2019time",
    )
    # the claim's difference is NLL minus the other; the prose and the table read the
    # other minus NLL, as for the C-index, so the IBS difference is glued that way too
    keep(f"ibs_{short}_minus_nll", -float(nll_vs["difference"]))
    keep(f"ibs_{short}_minus_nll_lower", -float(nll_vs["upper"]))
    keep(f"ibs_{short}_minus_nll_upper", -float(nll_vs["lower"]))
    # as text for the prose: an IBS difference of -0.00004 reads 0.0000, not -0.0000
    ends = (("difference", "difference", ""), ("lower", "upper", "_lower"))
    for c_end, nll_end, key in (*ends, ("upper", "lower", "_upper")):
        keep(f"diff_{short}_c{key}_text", number(c_row[c_end], "+.4f"))
        keep(f"ibs_{short}_minus_nll{key}_text", number(-nll_vs[nll_end], "+.4f"))

# the hybrid's Harrell C against the likelihood's, by the verdict of the claim
RANKS = {
    "reproduced": "ranks better than the likelihood",
    "refuted": "ranks worse than the likelihood",
    "not resolved": "ranks neither better nor worse, as far as the test set can tell",
}
SCORES = {  # the likelihood's Brier score against the hybrid's
    "reproduced": "has the worse Brier score",
    "refuted": "has the better Brier score",
    "not resolved": "has a Brier score the test set cannot tell from the likelihood's",
}
TRADE = {  # (C verdict, IBS verdict): what the two halves make together
    ("reproduced", "reproduced"): "the trade DeepHit describes",
    ("reproduced", "not resolved"): "a gain without its cost",
    ("reproduced", "refuted"): "a gain on both counts, not a trade",
    ("not resolved", "reproduced"): "a cost without its gain",
    ("not resolved", "not resolved"): "the test set resolves neither half",
    ("not resolved", "refuted"): "a gain in the Brier score alone",
    ("refuted", "reproduced"): "a loss on both counts",
    ("refuted", "not resolved"): "a loss in ranking alone",
    ("refuted", "refuted"): "the opposite of the trade",
}
v_c, v_ibs = verdicts["hybrid_c"], verdicts["hybrid_ibs"]
trade = f"here the hybrid {RANKS[v_c]}, and {SCORES[v_ibs]}: {TRADE[v_c, v_ibs]}"
keep("trade_text", trade)

# %% [markdown]
# {glue:}`ch07_paired`
#
# The hybrid at $\lambda$ = {glue:text}`claim_weight:g` minus the likelihood: Harrell's C
# differs by {glue:text}`diff_hybrid_c_text` (95% interval
# {glue:text}`diff_hybrid_c_lower_text` to {glue:text}`diff_hybrid_c_upper_text`), so
# the claim that the hybrid ranks better is {glue:text}`verdict_hybrid_c`. On the
# integrated Brier score, also the hybrid minus the likelihood as in the table, the
# difference is {glue:text}`ibs_hybrid_minus_nll_text`
# ({glue:text}`ibs_hybrid_minus_nll_lower_text` to
# {glue:text}`ibs_hybrid_minus_nll_upper_text`; lower is better, so a positive
# difference means the hybrid scores worse), and the claim that the ranking term costs a
# proper score is {glue:text}`verdict_hybrid_ibs`. The ranking loss alone minus the
# likelihood: Harrell's C {glue:text}`diff_rank_c_text` ({glue:text}`verdict_rank_c`),
# the Brier score {glue:text}`ibs_rank_minus_nll_text` ({glue:text}`verdict_rank_ibs`).
# A trade, in DeepHit's sense, needs both halves reproduced; {glue:text}`trade_text`.
# {glue:text}`seed_caveat` All four verdicts go to the book's results page.
#
# Benchmarks of neural survival models on public data sets report such a split: DeepHit,
# trained with a likelihood-plus-ranking loss, competes on concordance but does worse on
# the integrated Brier score {cite}`kvamme2019time`. Here the network is small and reads
# fixed features; with a sequence encoder the balance may shift, and the same sweep answers
# the question there.

# %%
chapter_seconds = time.perf_counter() - chapter_start
print(f"chapter ran in {chapter_seconds:.0f} s ({cfg.profile} profile)")

# %% [markdown]
# ## Summary
# - On the shared task, with one fixed-feature network for every loss, the C-index of the
#   losses ({glue:text}`seed_means`) ran from {glue:text}`c_min:.3f` to
#   {glue:text}`c_max:.3f`. Tested pair by pair against the likelihood, the hybrid at
#   $\lambda$ = {glue:text}`claim_weight:g` ranking better is {glue:text}`verdict_hybrid_c`
#   (C {glue:text}`diff_hybrid_c_text`), and its costing a proper score is
#   {glue:text}`verdict_hybrid_ibs` (IBS {glue:text}`ibs_hybrid_minus_nll_text`).
#   {glue:text}`seed_caveat` The likelihood predicts {glue:text}`nll_ratio:.2f` times the
#   observed risk on average, the ranking loss alone {glue:text}`rank_ratio:.2f` times. The
#   oracle (C {glue:text}`oracle_c:.3f`, IBS {glue:text}`oracle_ibs:.4f`) is the ceiling for
#   all of them.
# - A mean predicted risk near the observed one says nothing about where the risk goes, and
#   a C-index says nothing about its level: {doc}`07c_where_losses_disagree` loads these
#   models and shows where the two kinds of score part ways.
#
# ## Exercises
# A change to a run must change its key too. A setting of `LossSweep` does
# (`loss_sweep(hidden=128)`); for a change that `load_or_fit_bag` does not cover, train with
# `ehrseq.train.fit` under an artefact name of your own (`ehrseq.artifacts.load_or_train`),
# or the runs load the sweep's old artefacts instead of training.
# 1. Replace the exponential penalty by the logistic one (`kind="logistic"` in
#    `pairwise_ranking_loss` and `hybrid_loss`) and rerun the sweep. Does the drift of the
#    predicted risk shrink?
# 2. Start the head's biases at zero (a hazard of 0.5 per bin) instead of the life table.
#    How many epochs does the likelihood need to reach the same validation NLL? Where does
#    the ranking loss alone, which nothing pulls back to the observed level, leave the
#    predicted risk, and its C-index?
# 3. Put a BEHRT encoder (`BehrtEncoder` and `BinHazardHead` on its token states) in place
#    of the fixed features, on a GPU or in the `full` profile, and repeat the sweep. Does a
#    model with more capacity gain more from the ranking term?

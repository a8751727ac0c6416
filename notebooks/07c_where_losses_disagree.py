# ---
# jupyter:
#   ehrseq:
#     runs_after: [07b_loss_comparison]
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
# # Where the likelihood and the C-index disagree
#
# ## Outline
# {doc}`07b_loss_comparison` trained one fixed-feature network with each survival loss, the
# likelihood, the hybrid $\text{NLL} + \lambda \cdot \text{ranking}$ of DeepHit and the
# ranking loss alone, scored them, and tested whether the ranking term buys a better C-index
# at the price of a proper score. The C-index, the metric most papers report, looks only at
# the *order* of the patients; the likelihood and the Brier score also ask whether the
# predicted risks have the right *level*. This chapter loads the same trained networks and
# looks at where the two kinds of score part ways.
#
# We will
# 1. load the networks of {doc}`07b_loss_comparison` from their artefacts, with the record
#    of every epoch of their training;
# 2. compare, in groups of predicted risk, what the likelihood and the ranking loss predict
#    with what happens (calibration at the horizon);
# 3. shift every logit of the likelihood model by one constant, which moves the level of
#    every risk and barely the order, and watch which criteria notice;
# 4. follow the validation NLL and the validation C of every run, epoch by epoch, and ask
#    whether the two choose the same epoch.

# %% [markdown]
# ## Setup
# One config per chapter; `EHRSEQ_PROFILE` (`smoke`, `book`, `full`) picks its size. The
# sweep of {doc}`07b_loss_comparison` (seeds, $\lambda$s, network and training settings) is
# the library's recipe `ehrseq.loss_sweep.loss_sweep()`, the same object in both chapters
# and in every profile: it is part of the key of each trained network, so the same recipe
# loads the same networks.

# %%
import time
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown
from matplotlib.ticker import MaxNLocator

import ehrseq
from ehrseq.baselines import token_count_features
from ehrseq.book import format_floats, keep, plural
from ehrseq.config import for_profile, format_config
from ehrseq.data.task import prepare_survival_task, shared_task_config
from ehrseq.evaluate import SurvivalProtocol
from ehrseq.loss_sweep import load_or_fit_bag, loss_sweep, predict_survival
from ehrseq.losses import hazard_nll, pairwise_ranking_loss
from ehrseq.metrics import calibration_table
from ehrseq.plotting import apply_style
from ehrseq.plotting.survival import plot_calibration
from ehrseq.survival import hazards_to_survival, life_table_hazards


@dataclass(frozen=True)
class Config:
    profile: str = "book"
    seed: int = 7  # seed of the setup, the bootstrap and the subsample of pairs
    n_boot: int = 200  # bootstrap resamples of test patients per interval
    calibration_groups: int = 10  # risk groups of the calibration plot and error


cfg = for_profile(
    Config,
    {"smoke": {"n_boot": 20, "calibration_groups": 5}, "full": {"n_boot": 1000}},
)
sweep = loss_sweep()  # the sweep of chapter 7b: it decides which artefacts load
device = ehrseq.get_device()
rng = ehrseq.seed_everything(cfg.seed)
apply_style()
print(format_config(cfg))
print(format_config(sweep))
print(f"device: {device}; CPU threads: {torch.get_num_threads()} (OMP_NUM_THREADS)")

n_seeds = len(sweep.seeds)
if n_seeds > 1:
    keep("seeds_scope", f"averaged over the {n_seeds} seeds")
else:
    keep("seeds_scope", "resampling the test patients")
chapter_start = time.perf_counter()

# %% [markdown]
# The networks run on whatever `ehrseq.get_device()` picks, the metrics in NumPy on the CPU.
# Networks trained on a GPU can differ in their last digits from run to run; on the CPU they
# repeat bit for bit.
#
# ## Data
# The shared survival task (`prepare_survival_task`) with a prediction time
# {glue:text}`history_text` into each patient's record and a
# {glue:text}`horizon_years:g`-year horizon cut into {glue:text}`n_bins` bins, and the fixed
# features of {doc}`07_loss_functions` (`token_count_features`: the log counts of every
# token before the prediction time and the standardised age).

# %%
task = prepare_survival_task(shared_task_config())  # the same task in every chapter
n_bins = task.config.n_bins
horizon_days = task.config.horizon_days
keep("n_bins", n_bins)
keep("horizon_years", float(task.config.horizon_years))
history_years = task.config.history_days / 365.25
keep("history_text", plural(history_years, "year", ".0f"))  # "2 years"

data = token_count_features(task)  # {split: (x, durations, events)}
n_features = data["train"][0].shape[1]
for split, (x, d, e) in data.items():
    assert x.shape == (len(task.frame(split)), n_features)
    assert d.shape == e.shape == x.shape[:1]
d_train, e_train_bins = data["train"][1], data["train"][2]
life_table = torch.as_tensor(  # (T,), the life-table hazards of the training patients
    life_table_hazards(d_train.numpy(), e_train_bins.numpy(), n_bins),
    dtype=torch.float32,
)
test = task.frame("test")
d_test, e_test = test["duration"].to_numpy(), test["event"].to_numpy()
train = task.frame("train")
protocol = SurvivalProtocol(  # the test labels and time grid of every modelling chapter
    d_test,
    e_test,
    task.cuts[1:],  # the right edge of every bin; the last is the horizon
    train["duration"].to_numpy(),
    train["event"].to_numpy(),
    n_boot=cfg.n_boot,
    seed=cfg.seed,
    calibration_groups=cfg.calibration_groups,
)
harrell, ibs = protocol.metrics["Harrell C"], protocol.metrics["IBS"]  # f(d, e, surv)
task.summary()

# %% [markdown]
# ## Model
# ### The networks of chapter 7b
# One network per loss and seed: the likelihood ($\lambda = 0$), the hybrid at each
# $\lambda$ of the sweep, and the ranking loss alone. `load_or_fit_bag` is the function
# {doc}`07b_loss_comparison` trains them with: the same task, recipe, loss and seed give the
# same artefact key, so it loads the weights that chapter saved and the record
# `ehrseq.train.fit` kept of every epoch (the validation NLL, ranking loss and Harrell's C
# among them). Run before chapter 7b, it trains them the same way.

# %%
LOSSES = sweep.losses()  # {loss name: lambda}; None is the ranking loss alone

models, histories, runs, test_surv = {}, [], [], {}
for loss_name in LOSSES:
    for seed in sweep.seeds:
        run = load_or_fit_bag(task, data, sweep, loss_name, seed)  # loaded, or trained
        models[loss_name, seed] = run.model.eval()
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
                "loaded": run.loaded,
            }
        )
runs = pd.DataFrame(runs)
history = pd.concat(histories, ignore_index=True)
assert np.isfinite(history[["val_loss", "val_nll", "val_c_index"]]).all().all()
n_loaded = int(runs["loaded"].sum())
keep("n_runs", len(runs))
if n_loaded == len(runs):
    loaded_text = "all came from the artefacts of chapter 7b"
elif n_loaded == 0:
    loaded_text = "none had an artefact yet, so this execution trained them all"
else:
    loaded_text = f"{n_loaded} came from artefacts"
    loaded_text += " and this execution trained the others"
keep("loaded_text", loaded_text)
epochs = runs.groupby("loss", sort=False)[["epochs run", "best epoch"]].mean()
# the header says that a fractional epoch is a mean over seeds, not a count
epochs = epochs.rename_axis("loss (mean over seeds)" if n_seeds > 1 else "loss")
format_floats(epochs, "{:.1f}")

# %% [markdown]
# Of the {glue:text}`n_runs` runs, {glue:text}`loaded_text`.
#
# ## Evaluate
# ### Calibration at the horizon
# {doc}`07b_loss_comparison` compared the mean predicted risk of each loss with the observed
# one, but a mean hides where the risk goes. Sorting the test patients into groups by
# predicted risk and comparing each group's mean prediction with its Kaplan-Meier incidence
# shows it (first seed of each loss).

# %% mystnb={"figure": {"caption": "Calibration at the horizon on the test patients, first seed: mean predicted risk of heart failure against the observed (Kaplan-Meier) incidence in groups of predicted risk, with 95% intervals, for the likelihood and the ranking loss alone.", "name": "fig-loss-calibration"}}
fig, ax = plt.subplots(figsize=(5.5, 5.5))
tables = {}
for loss_name in ("NLL", "rank only"):
    risk = 1 - test_surv[loss_name, sweep.seeds[0]][:, -1]
    tables[loss_name] = calibration_table(
        d_test, risk, e_test, horizon_days, n_bins=cfg.calibration_groups
    )
    plot_calibration(tables[loss_name], ax=ax, label=loss_name)
top = max(t[c].max() for t in tables.values() for c in ("predicted", "observed_upper"))
ax.set_xlim(0, 1.05 * top)
ax.set_ylim(0, 1.05 * top)
ax.set_title(f"Calibration at {task.config.horizon_years:g} years")
ax.set_xlabel(f"predicted risk of heart failure by {task.config.horizon_years:g} years")
ax.set_ylabel(f"observed risk by {task.config.horizon_years:g} years (Kaplan-Meier)")
plt.show()

cal_gap = {}  # mean absolute gap between predicted and observed risk over the groups
for name, t in tables.items():
    cal_gap[name] = float(np.abs(t["predicted"] - t["observed"]).mean())
keep("cal_gap_nll", cal_gap["NLL"])
keep("cal_gap_rank", cal_gap["rank only"])
for name, key in [("NLL", "nll"), ("rank only", "rank")]:
    for column, short in [("predicted", "pred"), ("observed", "obs")]:
        groups = tables[name][column]  # lowest-risk group first
        keep(f"{short}_lo_{key}", float(groups.iloc[0]))
        keep(f"{short}_hi_{key}", float(groups.iloc[-1]))
# {loss: [(n, T) per seed]}
survs = {name: [test_surv[name, s] for s in sweep.seeds] for name in LOSSES}
cal_diff = protocol.difference(
    "rank only", survs["rank only"], "NLL", survs["NLL"], "calibration error"
)
keep("diff_cal", cal_diff["difference"])
keep("verdict_cal", cal_diff["verdict"])
rank_table = tables["rank only"]
# the ranking loss overpredicts its lowest group, underpredicts its highest
levels_off = bool(
    rank_table["predicted"].iloc[0] > 2 * rank_table["observed"].iloc[0]
    and rank_table["predicted"].iloc[-1] < rank_table["observed"].iloc[-1]
)
spread = {  # predicted risk of the highest group minus that of the lowest
    name: t["predicted"].iloc[-1] - t["predicted"].iloc[0] for name, t in tables.items()
}
if cfg.profile != "smoke":
    assert levels_off
    assert spread["rank only"] < spread["NLL"]
if spread["rank only"] < spread["NLL"]:
    squeeze = "The ranking loss squeezes its predictions into a narrow band"
else:
    squeeze = (
        "The ranking loss keeps its predictions in a narrow band (at this size the "
        "likelihood's band is no wider)"
    )
keep("squeeze_text", squeeze)
if levels_off:
    levels = (
        "It put the patients in nearly the right *order* but never moved their risks "
        "to the right *levels*: no pair in the ranking loss asks what a risk should be "
        "in absolute terms."
    )
else:
    levels = (
        "At this size its groups do not show that pattern clearly, but nothing in the "
        "ranking loss pulls its risks to the observed *levels*: no pair asks what a "
        "risk should be in absolute terms."
    )
keep("levels_text", Markdown(levels))

# %% [markdown]
# The mean absolute gap to the diagonal is {glue:text}`cal_gap_nll:.3f` for the likelihood
# and {glue:text}`cal_gap_rank:.3f` for the ranking loss (first seed);
# {glue:text}`seeds_scope`, the paired difference in calibration error, ranking loss minus
# likelihood, is {glue:text}`diff_cal:+.3f` ({glue:text}`verdict_cal`).
# {glue:text}`squeeze_text`: its lowest-risk group is
# predicted {glue:text}`pred_lo_rank:.3f` and has {glue:text}`obs_lo_rank:.3f` observed, its
# highest-risk group is predicted {glue:text}`pred_hi_rank:.3f` against
# {glue:text}`obs_hi_rank:.3f` observed (the likelihood: {glue:text}`pred_lo_nll:.3f`
# against {glue:text}`obs_lo_nll:.3f`, and {glue:text}`pred_hi_nll:.3f` against
# {glue:text}`obs_hi_nll:.3f`). {glue:md}`levels_text`
#
# ### A shift of every logit
# Take the likelihood model (first seed) and add the same constant $\delta$ to every logit
# on the test patients. That moves the level of every hazard and, to within rounding, keeps
# the order of the patients, so Harrell's C does not notice. The NLL and the Brier score do.

# %%
shifts = np.linspace(-1.5, 1.5, 13)
x_test, bins_test, events_test = (t.to(device) for t in data["test"])
n_pairs = min(len(test), sweep.max_pair_patients)  # patients in the (n, n) ranking loss
pair_rows = torch.as_tensor(np.sort(rng.choice(len(test), size=n_pairs, replace=False)))
pair_rows = pair_rows.to(device)
reference_model = models["NLL", sweep.seeds[0]].eval()
with torch.no_grad():
    base_logits = reference_model(x_test).logits  # (n, T)
    shift_rows = []
    for delta in shifts:
        shifted = base_logits + float(delta)  # (n, T)
        surv = hazards_to_survival(torch.sigmoid(shifted))  # (n, T)
        surv_np = surv.double().cpu().numpy()
        shift_rows.append(
            {
                "shift": float(delta),
                "NLL": float(hazard_nll(shifted, bins_test, events_test)),
                "IBS": ibs(d_test, e_test, surv_np),
                "Harrell C": harrell(d_test, e_test, surv_np),
                "ranking loss": float(
                    pairwise_ranking_loss(
                        1 - surv[pair_rows],
                        bins_test[pair_rows],
                        events_test[pair_rows],
                        sigma=sweep.sigma,
                    )
                ),
            }
        )
shift_table = pd.DataFrame(shift_rows).set_index("shift")
c_shifted = shift_table["Harrell C"]
c_move = float((c_shifted - c_shifted.loc[0.0]).abs().max())
keep("c_move", c_move)
# the prose writes 5.8 × 10⁻⁵, not 5.8e-05
mantissa, exponent = f"{c_move:.1e}".split("e")
superscript = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
c_move_text = f"{mantissa} × 10{str(int(exponent)).translate(superscript)}"
keep("c_move_text", "0" if c_move == 0 else c_move_text)
keep("nll_best_shift", float(shift_table["NLL"].idxmin()))
keep("ibs_best_shift", float(shift_table["IBS"].idxmin()))
keep("rank_best_shift", float(shift_table["ranking loss"].idxmin()))
keep("shift_max", float(shifts[-1]))
assert c_move < 0.01, c_move  # a common shift barely reorders patients
nll_best, ibs_best = shift_table["NLL"].idxmin(), shift_table["IBS"].idxmin()
rank_best = shift_table["ranking loss"].idxmin()
if abs(nll_best) <= 0.25 and abs(ibs_best) <= 0.25:
    level = "the likelihood trained the level to where the data put it"
else:
    level = "in this run the likelihood has not yet trained the level"
    level += " to where the data put it"
keep("level_text", level)
if rank_best == nll_best:
    rank_level = ", where the NLL is lowest too:"
    rank_level += " in this run it agrees with the likelihood"
elif abs(rank_best) == shifts[-1]:  # the minimum lies beyond the grid
    rank_level = (
        ", the edge of the grid, so its minimum lies further out: it has an opinion "
        "about the level, and not the calibrated one"
    )
else:
    rank_level = ": it has an opinion about the level, and not the calibrated one"
keep("rank_level_text", rank_level)
if cfg.profile != "smoke":
    assert abs(shift_table["NLL"].idxmin()) <= 0.25
    assert abs(shift_table["IBS"].idxmin()) <= 0.25
    assert shift_table["ranking loss"].idxmin() != shift_table["NLL"].idxmin()

# %% mystnb={"figure": {"caption": "Four criteria of the likelihood model's test predictions when the same constant δ is added to every hazard logit (dashed: δ = 0, the model as trained). Harrell's C barely moves; the NLL, the integrated Brier score and the ranking loss each respond to the level, and the text says where each is lowest.", "name": "fig-loss-shift"}}
fig, axes = plt.subplots(2, 2, figsize=(8, 5.6), sharex=True, layout="constrained")
units = {
    "NLL": "nats per patient",
    "IBS": "integrated Brier score",
    "Harrell C": "C-index",
}
for ax, column in zip(axes.flat, shift_table.columns, strict=True):
    ax.plot(shift_table.index, shift_table[column], marker="o", markersize=3)
    ax.axvline(0.0, color="0.6", linestyle="--", linewidth=1)
    ax.set_ylabel(units.get(column, "mean pair penalty"))
    ax.set_title(column)
for ax in axes[1]:
    ax.set_xlabel("shift $\\delta$ added to every logit")
c0 = shift_table.loc[0.0, "Harrell C"]
# a range on which a real change in C would show
axes[1, 0].set_ylim(c0 - 0.02, c0 + 0.02)
plt.show()

# %% [markdown]
# Over shifts from $-${glue:text}`shift_max:g` to {glue:text}`shift_max:g`, Harrell's C moves
# by at most {glue:text}`c_move_text`. The NLL is lowest at $\delta$ =
# {glue:text}`nll_best_shift:g` and the Brier score at {glue:text}`ibs_best_shift:g`:
# {glue:text}`level_text`. Two models that differ by a factor
# in the risks they announce can have the same C-index, and only a proper scoring rule, the
# likelihood or the Brier score, tells them apart. The ranking loss does react to the level,
# through the shape of the exponential; its lowest value on the grid is at $\delta$ =
# {glue:text}`rank_best_shift:g`{glue:text}`rank_level_text`.
#
# ### Over the epochs
# After each epoch the training loop recorded the validation NLL and the validation C of
# every run. From one epoch to the next the two can move together or apart.

# %%
steps = []
for (loss_name, _seed), h in history.groupby(["loss", "seed"], sort=False):
    d_nll, d_c = h["val_nll"].diff().iloc[1:], h["val_c_index"].diff().iloc[1:]
    steps.append(
        pd.DataFrame(
            {
                "loss": loss_name,
                "NLL better, C worse": (d_nll < 0) & (d_c < 0),
                "NLL worse, C better": (d_nll > 0) & (d_c > 0),
                "both better": (d_nll < 0) & (d_c > 0),
                "both worse": (d_nll > 0) & (d_c < 0),
            }
        )
    )
steps = pd.concat(steps)
step_counts = steps.groupby("loss", sort=False).sum()
step_counts["epoch steps"] = steps.groupby("loss", sort=False).size()
keep("n_nll_up_c_down", int(step_counts["NLL better, C worse"].sum()))
keep("n_nll_down_c_up", int(step_counts["NLL worse, C better"].sum()))
keep("n_steps", int(step_counts["epoch steps"].sum()))

seed0 = sweep.seeds[0]  # the first seed of every loss
best_epoch = runs.set_index(["loss", "seed"])["best epoch"]  # the epoch each run kept
first = history[(history["loss"] == "NLL") & (history["seed"] == seed0)]
kept_epoch = int(best_epoch["NLL", seed0])
peak_epoch = int(first.loc[first["val_c_index"].idxmax(), "epoch"])
keep("kept_epoch", kept_epoch)
keep("peak_epoch", peak_epoch)
c_at = first.set_index("epoch")["val_c_index"]
nll_at = first.set_index("epoch")["val_nll"]
if peak_epoch < kept_epoch:  # the C-index peaked while the NLL was still improving
    story = (
        f"the validation C peaks at epoch {peak_epoch} ({c_at[peak_epoch]:.3f}) while "
        f"the validation NLL goes on improving, from {nll_at[peak_epoch]:.4f} at that "
        f"epoch to {nll_at[kept_epoch]:.4f} at epoch {kept_epoch}, the epoch whose "
        f"weights the run keeps; there the C has fallen to {c_at[kept_epoch]:.3f}"
    )
elif peak_epoch == kept_epoch:
    story = (
        f"the validation C and the validation NLL are both best at epoch {kept_epoch} "
        f"(C {c_at[kept_epoch]:.3f}): in this run the two criteria pick the same epoch"
    )
else:
    story = (
        f"the validation NLL is best at epoch {kept_epoch} (the epoch the run keeps, "
        f"C {c_at[kept_epoch]:.3f}) and the validation C goes on rising to "
        f"{c_at[peak_epoch]:.3f} at epoch {peak_epoch}, while the NLL worsens"
    )
keep("epoch_story", story)
HOW = "stopping on the C-index keeps a model that ranks a little better and predicts "
HOW += "probabilities a little worse"
if peak_epoch != kept_epoch:
    criterion = f'Which epoch is "best" therefore depends on the criterion: {HOW}.'
    epoch_summary = (
        f"during training the validation C of the first likelihood run peaked at epoch "
        f"{peak_epoch}, the validation NLL at epoch {kept_epoch}"
    )
else:
    criterion = "In this run the two criteria pick the same epoch; "
    criterion += f"where they do not, {HOW}."
    epoch_summary = (
        "during training the validation C and NLL of the first likelihood run were "
        f"best at the same epoch ({kept_epoch}), so that run does not set the two apart"
    )
keep("criterion_text", criterion)
keep("epoch_summary", epoch_summary)
step_counts

# %% mystnb={"figure": {"caption": "Validation NLL (left, lower is better) and validation Harrell C (right) after each epoch for the first seed, trained with the likelihood and with the ranking loss alone. Stars mark the epoch whose weights each run kept, the one with the best validation value of its own loss; dotted: the NLL of the life table without features.", "name": "fig-loss-epochs"}}
null_nll_val = hazard_nll(
    torch.logit(life_table).expand(len(data["val"][1]), n_bins), *data["val"][1:]
)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
# every y value, for the limits
drawn = {"val_nll": [float(null_nll_val)], "val_c_index": []}
for color, loss_name in zip(("C0", "C1"), ("NLL", "rank only"), strict=True):
    h = history[(history["loss"] == loss_name) & (history["seed"] == seed0)]
    best = int(best_epoch[loss_name, seed0])
    at_best = h["epoch"] == best
    for ax, column in zip(axes, ("val_nll", "val_c_index"), strict=True):
        style = dict(marker="o", markersize=3, color=color, label=loss_name)
        ax.plot(h["epoch"], h[column], **style)
        ax.plot(best, h.loc[at_best, column], "*", markersize=12, color=color)
        drawn[column].extend(h[column])
axes[0].axhline(
    float(null_nll_val),
    color="0.3",
    linestyle=":",
    label="life table (no features)",
)
axes[0].set_ylabel("validation NLL (nats per patient)")
axes[1].set_ylabel("validation Harrell C")
for ax, column in zip(axes, ("val_nll", "val_c_index"), strict=True):
    lo, hi = min(drawn[column]), max(drawn[column])
    margin = 0.06 * (hi - lo)  # the life-table line inside
    ax.set_ylim(lo - margin, hi + margin)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
handles, names = axes[0].get_legend_handles_labels()
star = plt.Line2D([], [], marker="*", markersize=12, color="0.3", linestyle="none")
handles.append(star)
names.append("epoch kept (best own validation loss)")
fig.legend(handles, names, loc="upper center", ncol=len(handles))
plt.tight_layout(rect=(0, 0, 1, 0.9))
plt.show()

# %% [markdown]
# With the likelihood (first seed), {glue:text}`epoch_story`. Over all runs,
# {glue:text}`n_nll_up_c_down` of the {glue:text}`n_steps` epoch-to-epoch steps improved the
# NLL and worsened the C, and {glue:text}`n_nll_down_c_up` did the opposite. The later epochs
# of a likelihood run spend their effort on the *levels* of the risks, which the C-index does
# not see, and may trade a few ordered pairs for them: when the two criteria disagree, the
# steps above say how often. {glue:text}`criterion_text` Choose by what the model is for:
# ranking patients for an intervention needs discrimination; telling a patient "one in ten"
# needs calibration, and the likelihood is the loss that asks for it.

# %%
chapter_seconds = time.perf_counter() - chapter_start
print(f"chapter ran in {chapter_seconds:.0f} s ({cfg.profile} profile)")

# %% [markdown]
# ## Summary
# - At the horizon, in groups of predicted risk, the mean gap between predicted and observed
#   risk is {glue:text}`cal_gap_nll:.3f` for the likelihood and {glue:text}`cal_gap_rank:.3f`
#   for the ranking loss alone (first seed); {glue:text}`seeds_scope`, the paired difference
#   in calibration error, ranking loss minus likelihood, is {glue:text}`diff_cal:+.3f`
#   ({glue:text}`verdict_cal`).
# - The C-index is blind to the level of the risks: shifting every logit moved it by at most
#   {glue:text}`c_move_text` while the NLL and the Brier score saw the change, and
#   {glue:text}`epoch_summary`. Report a proper scoring rule or a calibration plot next to
#   every C-index.
#
# ## Exercises
# 1. Recalibrate the ranking-only model after training: fit one shared shift $\delta$ of
#    its logits on the validation patients by minimising the NLL. How much of its Brier
#    score gap to the likelihood does that close, and does its C-index change?
# 2. Multiply every logit of the likelihood model by a factor (a temperature) instead of
#    adding a shift. Which factor do the NLL and the Brier score prefer? Does Harrell's C
#    move more than under a shift, and why?
# 3. Stop every run of the sweep on the validation C-index instead of its own loss:
#    `ehrseq.train.fit` with `TrainConfig(monitor="val_c_index", mode="max")`, the loss
#    `ehrseq.loss_sweep.survival_loss` and `validation_metrics` as its `eval_fn`, under an
#    artefact name of your own so that the runs do not load the sweep's. Which losses
#    change, by how much, and what happens to the Brier score?

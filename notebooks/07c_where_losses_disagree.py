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
# fields from `seeds` to `max_pair_patients` are those of {doc}`07b_loss_comparison`, value
# for value in every profile: they are part of the key of each trained network, so the same
# values load the same networks.

# %%
import time
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown
from matplotlib.ticker import MaxNLocator
from torch.utils.data import DataLoader, TensorDataset

import ehrseq
from ehrseq.artifacts import artifact_root, config_key, load_or_train
from ehrseq.baselines import token_count_features
from ehrseq.book import keep, plural
from ehrseq.config import for_profile, format_config
from ehrseq.data.task import prepare_survival_task, shared_task_config
from ehrseq.evaluate import SurvivalProtocol
from ehrseq.losses import hazard_nll, hybrid_loss, pairwise_ranking_loss
from ehrseq.metrics import calibration_table, concordance_index
from ehrseq.models import BagOfTokensSurvival
from ehrseq.plotting import apply_style
from ehrseq.plotting.survival import plot_calibration
from ehrseq.survival import hazards_to_survival, life_table_hazards
from ehrseq.train import TrainConfig, fit


@dataclass(frozen=True)
class Config:
    profile: str = "book"
    seed: int = 7  # seed of the setup, the bootstrap and the subsample of pairs
    n_boot: int = 200  # bootstrap resamples of test patients per interval
    calibration_groups: int = 10  # risk groups of the calibration plot and error
    # the sweep of 07b_loss_comparison, as there: these decide which artefacts load
    seeds: tuple[int, ...] = (0, 1, 2)  # training seeds per loss (initialisation, batch order)
    rank_weights: tuple[float, ...] = (0.0, 0.1, 0.5, 1.0, 5.0)  # lambda in NLL + lambda * rank
    sigma: float = 0.1  # temperature of the ranking loss (DeepHit's and pycox's default)
    hidden: int = 64  # width of the patient state that the hazard head reads
    dropout: float = 0.1  # on the hidden layer and in the head
    epochs: int = 25  # at most; each run stops early on its own validation loss
    patience: int | None = 3  # epochs without improvement before stopping
    batch_size: int = 256  # patients per step; the ranking loss compares pairs within a batch
    lr: float = 1e-3  # peak AdamW learning rate
    weight_decay: float = 0.01  # AdamW decay on weight matrices
    max_pair_patients: int = 4000  # patients per (n, n) pair matrix when scoring a whole split


cfg = for_profile(
    Config,
    {
        "smoke": {
            "n_boot": 20,
            "calibration_groups": 5,
            "seeds": (0,),
            "rank_weights": (0.0, 1.0),
            "epochs": 3,
        },
        "full": {
            "n_boot": 1000,
            "seeds": (0, 1, 2, 3, 4),
            "rank_weights": (0.0, 0.01, 0.1, 0.5, 1.0, 5.0),
            "hidden": 256,
            "epochs": 40,
            "batch_size": 1024,
        },
    },
)
device = ehrseq.get_device()
rng = ehrseq.seed_everything(cfg.seed)
apply_style()
print(format_config(cfg))
print(f"device: {device}; CPU threads: {torch.get_num_threads()} (OMP_NUM_THREADS)")

n_seeds = len(cfg.seeds)
keep(
    "seeds_scope",
    f"averaged over the {n_seeds} seeds" if n_seeds > 1 else "resampling the test patients",
)
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
keep("history_text", plural(task.config.history_days / 365.25, "year", ".0f"))  # "2 years"

data = token_count_features(task)  # {split: (x, durations, events)}
n_features = data["train"][0].shape[1]
for split, (x, d, e) in data.items():
    assert x.shape == (len(task.frame(split)), n_features) and d.shape == e.shape == x.shape[:1]
d_train, e_train_bins = data["train"][1], data["train"][2]
life_table = torch.as_tensor(  # (T,), the life-table hazards of the training patients
    life_table_hazards(d_train.numpy(), e_train_bins.numpy(), n_bins), dtype=torch.float32
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
# $\lambda$ of the sweep, and the ranking loss alone. `load_or_fit` below is the one of
# {doc}`07b_loss_comparison`, line for line: the same task, network, loss and training
# settings give the same artefact key, so it loads the weights that chapter saved and the
# record `ehrseq.train.fit` kept of every epoch (the validation NLL, ranking loss and
# Harrell's C among them). Run before chapter 7b, it trains them the same way.

# %%
LOSSES: dict[str, float | None] = {
    **{("NLL" if lam == 0 else f"NLL + {lam:g} rank"): lam for lam in cfg.rank_weights},
    "rank only": None,
}


def survival_loss(out, durations, events, rank_weight: float | None) -> torch.Tensor:
    """NLL + rank_weight * ranking; rank_weight=None is the ranking loss alone."""
    if rank_weight is None:
        return pairwise_ranking_loss(1 - out.surv, durations, events, sigma=cfg.sigma)
    return hybrid_loss(out.logits, durations, events, rank_weight=rank_weight, sigma=cfg.sigma)


def validation_metrics(model, loader) -> dict[str, float]:
    """NLL, ranking loss and Harrell's C of the horizon risk, on all validation patients."""
    nll, rank, risk, durations, events = [], [], [], [], []
    for x, d, e in loader:  # one batch unless the split is large
        x, d, e = x.to(device), d.to(device), e.to(device)
        out = model(x)
        nll.append(hazard_nll(out.logits, d, e, reduction="sum"))
        rank.append(pairwise_ranking_loss(1 - out.surv, d, e, sigma=cfg.sigma))
        risk.append(1 - out.surv[:, -1])  # (B,), predicted risk by the horizon
        durations.append(d)
        events.append(e)
    d, e, r = (torch.cat(t).cpu().numpy() for t in (durations, events, risk))
    return {
        "nll": float(sum(nll)) / len(d),
        "rank": float(torch.stack(rank).mean()),
        "c_index": concordance_index(d, r, e),
    }


def predict_survival(model, x: torch.Tensor) -> np.ndarray:
    """Predicted survival at the end of every bin, (n, T), float64 for the metrics."""
    model.eval()
    with torch.no_grad():
        return model(x.to(device)).surv.double().cpu().numpy()


n_val = len(data["val"][0])
val_loader = DataLoader(TensorDataset(*data["val"]), batch_size=min(n_val, cfg.max_pair_patients))


def load_or_fit(loss_name: str, seed: int):
    """One run: the trained network of this loss and seed, and its per-epoch record."""
    rank_weight = LOSSES[loss_name]
    recipe = {  # all that decides the weights besides the task: part of the artefact's key
        "n_features": n_features,
        **{k: getattr(cfg, k) for k in ("hidden", "dropout", "sigma", "epochs", "patience")},
        **{k: getattr(cfg, k) for k in ("batch_size", "lr", "weight_decay")},
        "val_batch": val_loader.batch_size,  # the validation ranking loss pairs within it
        "rank_weight": rank_weight,
        "seed": seed,
    }

    def train(model, folder) -> None:
        train_loader = DataLoader(
            TensorDataset(*data["train"]),
            batch_size=cfg.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(seed),
        )
        train_cfg = TrainConfig(
            epochs=cfg.epochs,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            patience=cfg.patience,
            seed=seed,
            out_dir=folder,  # metrics.csv: the per-epoch record
            desc=f"{loss_name}, seed {seed}",
        )

        def step(model, batch) -> torch.Tensor:
            return survival_loss(model(batch[0]), *batch[1:], rank_weight)

        fit(model, train_loader, val_loader, step, train_cfg, eval_fn=validation_metrics)

    ehrseq.seed_everything(seed)  # the initial weights
    model = BagOfTokensSurvival(  # the head's bias starts at the life table
        n_features, cfg.hidden, n_bins, cfg.dropout, base_hazards=life_table
    )
    parts = (task.config, recipe)
    model, loaded = load_or_train(model, "bag-loss-sweep", train, *parts)
    folder = artifact_root() / f"bag-loss-sweep-{config_key(*parts)}"
    return model.to(device), pd.read_csv(folder / "metrics.csv"), loaded


models, histories, runs, test_surv = {}, [], [], {}
for loss_name in LOSSES:
    for seed in cfg.seeds:
        model, run_history, loaded = load_or_fit(loss_name, seed)
        models[loss_name, seed] = model.eval()
        test_surv[loss_name, seed] = predict_survival(model, data["test"][0])  # (n, T)
        histories.append(run_history.assign(loss=loss_name, seed=seed))
        runs.append(
            {
                "loss": loss_name,
                "seed": seed,
                "epochs run": len(run_history),
                # fit keeps the first epoch with the lowest validation loss
                "best epoch": int(run_history.loc[run_history["val_loss"].idxmin(), "epoch"]),
                "loaded": loaded,
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
    loaded_text = f"{n_loaded} came from artefacts and this execution trained the others"
keep("loaded_text", loaded_text)
runs.groupby("loss", sort=False)[["epochs run", "best epoch"]].mean().round(1)

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
    risk = 1 - test_surv[loss_name, cfg.seeds[0]][:, -1]
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

cal_gap = {name: float(np.abs(t["predicted"] - t["observed"]).mean()) for name, t in tables.items()}
keep("cal_gap_nll", cal_gap["NLL"])
keep("cal_gap_rank", cal_gap["rank only"])
for name, key in [("NLL", "nll"), ("rank only", "rank")]:
    for column, short in [("predicted", "pred"), ("observed", "obs")]:
        keep(f"{short}_lo_{key}", float(tables[name][column].iloc[0]))  # lowest-risk group
        keep(f"{short}_hi_{key}", float(tables[name][column].iloc[-1]))  # highest-risk group
survs = {name: [test_surv[name, s] for s in cfg.seeds] for name in LOSSES}  # (n, T) per seed
cal_diff = protocol.difference(
    "rank only", survs["rank only"], "NLL", survs["NLL"], "calibration error"
)
keep("diff_cal", cal_diff["difference"])
keep("verdict_cal", cal_diff["verdict"])
rank_table = tables["rank only"]
levels_off = bool(  # the ranking loss overpredicts its lowest group, underpredicts its highest
    rank_table["predicted"].iloc[0] > 2 * rank_table["observed"].iloc[0]
    and rank_table["predicted"].iloc[-1] < rank_table["observed"].iloc[-1]
)
spread = {name: t["predicted"].iloc[-1] - t["predicted"].iloc[0] for name, t in tables.items()}
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
        "It put the patients in nearly the right *order* but never moved their risks to the "
        "right *levels*: no pair in the ranking loss asks what a risk should be in absolute "
        "terms."
    )
else:
    levels = (
        "At this size its groups do not show that pattern clearly, but nothing in the "
        "ranking loss pulls its risks to the observed *levels*: no pair asks what a risk "
        "should be in absolute terms."
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
n_pairs = min(len(test), cfg.max_pair_patients)  # patients in the (n, n) ranking loss
pair_rows = torch.as_tensor(np.sort(rng.choice(len(test), size=n_pairs, replace=False)))
pair_rows = pair_rows.to(device)
reference_model = models["NLL", cfg.seeds[0]].eval()
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
                        sigma=cfg.sigma,
                    )
                ),
            }
        )
shift_table = pd.DataFrame(shift_rows).set_index("shift")
c_move = float((shift_table["Harrell C"] - shift_table.loc[0.0, "Harrell C"]).abs().max())
keep("c_move", c_move)
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
    level = "in this run the likelihood has not yet trained the level to where the data put it"
keep("level_text", level)
if rank_best == nll_best:
    rank_level = ", where the NLL is lowest too: in this run it agrees with the likelihood"
elif abs(rank_best) == shifts[-1]:  # the minimum lies beyond the grid
    rank_level = (
        ", the edge of the grid, so its minimum lies further out: it has an opinion about "
        "the level, and not the calibrated one"
    )
else:
    rank_level = ": it has an opinion about the level, and not the calibrated one"
keep("rank_level_text", rank_level)
if cfg.profile != "smoke":
    assert abs(shift_table["NLL"].idxmin()) <= 0.25 and abs(shift_table["IBS"].idxmin()) <= 0.25
    assert shift_table["ranking loss"].idxmin() != shift_table["NLL"].idxmin()

# %% mystnb={"figure": {"caption": "Four criteria of the likelihood model's test predictions when the same constant delta is added to every hazard logit (dashed: delta = 0, the model as trained). Harrell's C barely moves; the NLL, the integrated Brier score and the ranking loss each respond to the level, and the text says where each is lowest.", "name": "fig-loss-shift"}}
fig, axes = plt.subplots(2, 2, figsize=(8, 5.6), sharex=True, layout="constrained")
units = {"NLL": "nats per patient", "IBS": "integrated Brier score", "Harrell C": "C-index"}
for ax, column in zip(axes.flat, shift_table.columns, strict=True):
    ax.plot(shift_table.index, shift_table[column], marker="o", markersize=3)
    ax.axvline(0.0, color="0.6", linestyle="--", linewidth=1)
    ax.set_ylabel(units.get(column, "mean pair penalty"))
    ax.set_title(column)
for ax in axes[1]:
    ax.set_xlabel("shift $\\delta$ added to every logit")
c0 = shift_table.loc[0.0, "Harrell C"]
axes[1, 0].set_ylim(c0 - 0.02, c0 + 0.02)  # a range on which a real change in C would show
plt.show()

# %% [markdown]
# Over shifts from $-${glue:text}`shift_max:g` to {glue:text}`shift_max:g`, Harrell's C moves
# by at most {glue:text}`c_move:.1e`. The NLL is lowest at $\delta$ =
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

first = history[(history["loss"] == "NLL") & (history["seed"] == cfg.seeds[0])]
kept_epoch = int(
    runs.loc[(runs["loss"] == "NLL") & (runs["seed"] == cfg.seeds[0]), "best epoch"].iloc[0]
)
peak_epoch = int(first.loc[first["val_c_index"].idxmax(), "epoch"])
keep("kept_epoch", kept_epoch)
keep("peak_epoch", peak_epoch)
c_at = first.set_index("epoch")["val_c_index"]
nll_at = first.set_index("epoch")["val_nll"]
if peak_epoch < kept_epoch:  # the C-index peaked while the NLL was still improving
    story = (
        f"the validation C peaks at epoch {peak_epoch} ({c_at[peak_epoch]:.3f}) while the "
        f"validation NLL goes on improving, from {nll_at[peak_epoch]:.4f} at that epoch to "
        f"{nll_at[kept_epoch]:.4f} at epoch {kept_epoch}, the epoch whose weights the run "
        "keeps; "
        f"there the C has fallen to {c_at[kept_epoch]:.3f}"
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
    criterion = f"In this run the two criteria pick the same epoch; where they do not, {HOW}."
    epoch_summary = (
        f"during training the validation C and NLL of the first likelihood run were best at "
        f"the same epoch ({kept_epoch}), so that run does not set the two apart"
    )
keep("criterion_text", criterion)
keep("epoch_summary", epoch_summary)
step_counts

# %% mystnb={"figure": {"caption": "Validation NLL (left, lower is better) and validation Harrell C (right) after each epoch for the first seed, trained with the likelihood and with the ranking loss alone. Stars mark the epoch whose weights each run kept, the one with the best validation value of its own loss; dotted: the NLL of the life table without features.", "name": "fig-loss-epochs"}}
null_nll_val = hazard_nll(
    torch.logit(life_table).expand(len(data["val"][1]), n_bins), *data["val"][1:]
)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
drawn = {"val_nll": [float(null_nll_val)], "val_c_index": []}  # every y value, for the limits
for color, loss_name in zip(("C0", "C1"), ("NLL", "rank only"), strict=True):
    h = history[(history["loss"] == loss_name) & (history["seed"] == cfg.seeds[0])]
    best = runs.loc[(runs["loss"] == loss_name) & (runs["seed"] == cfg.seeds[0]), "best epoch"]
    best = int(best.iloc[0])
    for ax, column in zip(axes, ("val_nll", "val_c_index"), strict=True):
        ax.plot(h["epoch"], h[column], marker="o", markersize=3, color=color, label=loss_name)
        ax.plot(best, h.loc[h["epoch"] == best, column], "*", markersize=12, color=color)
        drawn[column].extend(h[column])
axes[0].axhline(float(null_nll_val), color="0.3", linestyle=":", label="life table (no features)")
axes[0].set_ylabel("validation NLL (nats per patient)")
axes[1].set_ylabel("validation Harrell C")
for ax, column in zip(axes, ("val_nll", "val_c_index"), strict=True):
    lo, hi = min(drawn[column]), max(drawn[column])
    ax.set_ylim(lo - 0.06 * (hi - lo), hi + 0.06 * (hi - lo))  # the life-table line inside
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
handles, names = axes[0].get_legend_handles_labels()
handles.append(plt.Line2D([], [], marker="*", markersize=12, color="0.3", linestyle="none"))
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
#   {glue:text}`c_move:.1e` while the NLL and the Brier score saw the change, and
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
# 3. In {doc}`07b_loss_comparison`, stop every run on the validation C-index
#    (`TrainConfig(monitor="val_c_index", mode="max")`, and the monitor in the `recipe` of
#    `load_or_fit`, so that the runs get artefacts of their own) instead of its own loss.
#    Which losses change, by how much, and what happens to the Brier score?

# ---
# jupyter:
#   ehrseq:
#     runs_after: [05b_pretraining_schedules]
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
# # Comparing frozen, LoRA and full fine-tuning
#
# ## Outline
# {doc}`08_finetuning_strategies` took the book's pretrained BEHRT encoder {cite}`li2020behrt`
# (the `joint` one of {doc}`05b_pretraining_schedules`, pretrained on the training patients'
# histories) and built three ways to adapt it to the heart-failure survival task: a **frozen
# encoder** under a trained survival head, **LoRA** {cite}`hu2022lora` adapters on the
# attention projections, and **full fine-tuning**, beside the same network trained **from
# scratch**. This chapter trains them all and compares them.
#
# We will
# 1. load the pretrained encoder (chapter 5b's artefact, as {doc}`08_finetuning_strategies`
#    does) and build the regimes from the same settings;
# 2. fine-tune a per-bin survival head under each regime, LoRA at
#    {glue:text}`lora_ranks_text`, measuring discrimination, calibration, trainable
#    parameters, memory and time;
# 3. repeat it all on a small training cohort, to see how the answer depends on how much
#    labelled data there is;
# 4. test two claims with paired intervals on the same test patients, and record them for the
#    book's results page: *pretraining helps* (the pretrained network fully fine-tuned
#    against the same network trained from scratch) and *LoRA matches full fine-tuning*
#    (an equivalence claim: the difference in C lies within a margin), and place the best
#    model beside the oracle, the true risk that no model reading the records can beat.

# %% [markdown]
# ## Setup
# One config per chapter; `EHRSEQ_PROFILE` (`smoke`, `book`, `full`) picks its size.

# %%
import copy
import dataclasses
import time
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

import ehrseq
from ehrseq.book import (
    keep,
    keep_table,
    plural,
    read_claims,
    record_comparisons,
    start_claims,
)
from ehrseq.config import for_profile, format_config
from ehrseq.data.task import prepare_survival_task, shared_task_config
from ehrseq.evaluate import SurvivalProtocol
from ehrseq.models import BehrtEncoder, BinHazardHead, SurvivalModel, apply_lora, freeze
from ehrseq.plotting import apply_style
from ehrseq.pretrained import book_encoder_config, book_recipe, load_or_pretrain
from ehrseq.runs import train_seeds
from ehrseq.survival import life_table_hazards
from ehrseq.train import TrainConfig

CHAPTER = "08b_finetuning_comparison"


# fine-tuning fields as in 08_finetuning_strategies; the encoder and its pretraining
# are the book's (ehrseq.pretrained: book_encoder_config, book_recipe)
@dataclass(frozen=True)
class Config:
    profile: str = "book"
    batch_size: int = 64  # patients per fine-tuning batch
    # on the survival head's input (the encoder's is its config's)
    head_dropout: float = 0.1
    lr_full: float = 5e-4  # peak learning rate when every pretrained weight trains
    lr_scratch: float = 1e-3  # the same network from random weights
    lr_lora: float = 5e-3  # LoRA adapters and head
    lr_frozen: float = 1e-2  # the head alone
    lora_ranks: tuple[int, ...] = (2, 8)  # ranks r of the LoRA sweep
    lora_alpha: float = 16.0  # the update is scaled by alpha / r
    lora_mlp: bool = False  # also adapt the feed-forward layers
    epochs_large: int = 3  # most fine-tuning epochs on the whole training split
    epochs_small: int = 10  # most epochs on the small cohort (fewer steps per epoch)
    patience: int = 2  # epochs without a better validation loss before stopping
    small_fraction: float = 0.15  # share of the training split in the small cohort
    seeds: tuple[int, ...] = (0,)  # fine-tuning seeds (initialisation, batch order)
    n_boot: int = 200  # bootstrap resamples of every paired difference
    # "LoRA matches full fine-tuning": |difference in C| below this
    lora_margin: float = 0.01


cfg = for_profile(
    Config,
    {
        "smoke": {
            "lora_ranks": (4,),
            "epochs_large": 2,
            "epochs_small": 2,
            "small_fraction": 0.3,
            "n_boot": 50,
        },
        "full": {
            "batch_size": 256,
            "lr_full": 2e-4,
            "lr_scratch": 5e-4,
            "lora_ranks": (2, 8, 16, 64),
            "seeds": (0, 1, 2, 3, 4),
            "epochs_large": 20,
            "epochs_small": 40,
            "patience": 4,
            "small_fraction": 0.05,
            "n_boot": 1000,
        },
    },
)
device = ehrseq.get_device()
rng = ehrseq.seed_everything(0)
apply_style()
start_claims(CHAPTER)
print(format_config(cfg))
print(f"device: {device}; CPU threads: {torch.get_num_threads()} (OMP_NUM_THREADS)")
keep("seeds_text", plural(len(cfg.seeds), "seed"))
n_seeds = len(cfg.seeds)
over_seeds = f"averaged over the {n_seeds} seeds" if n_seeds > 1 else "of the one seed"
keep("over_seeds", over_seeds)
*head_ranks, last_rank = cfg.lora_ranks
keep(
    "lora_ranks_text",
    f"ranks {', '.join(map(str, head_ranks))} and {last_rank}"
    if head_ranks
    else f"rank {last_rank}",
)
keep("small_fraction", float(cfg.small_fraction))

# %% [markdown]
# On a CPU everything here is repeatable bit for bit. On a GPU, the atomic adds of the
# visit pooling and of the attention backward pass leave the last bits of each run
# nondeterministic.
#
# ## Data
# The shared survival task (`shared_task_config`): the synthetic cohort written as OMOP,
# heart-failure labels from a prediction time {glue:text}`history_text` after enrolment, five years of
# follow-up cut into equal bins, a patient-level split into training, validation and test
# patients (the test split with extra people generated for it alone, so that it holds enough
# events to resolve small differences), and the vocabulary fitted on the training patients.
# Every modelling chapter builds exactly this.

# %%
task = prepare_survival_task(shared_task_config())
keep("history_text", plural(task.config.history_days / 365.25, "year", ".0f"))
n_bins = task.config.n_bins
train_frame, test_frame = task.frame("train"), task.frame("test")
keep("n_train", len(train_frame))
keep("n_test", len(test_frame))
keep("n_test_events", int(test_frame["event"].sum()))
keep("n_bins", n_bins)
task.summary().round(3)

# %% [markdown]
# **Two training cohorts.** To see how the choice of regime depends on the amount of labelled
# data, every regime is trained twice: on all {glue:text}`n_train` training patients
# (*large*), and on a random {glue:text}`small_fraction:.0%` of them (*small*). The small
# cohort is drawn once, so every regime and seed sees the same patients: it is the same task
# with a smaller training split (`dataclasses.replace` of the task's split), so the library's
# loaders, `train_seeds` and the protocol work on it unchanged. The encoder is pretrained on
# the histories of the whole training split in both cases: the common situation of many
# unlabelled records and few labelled ones. Validation and test patients stay the same.

# %%
n_small = int(round(cfg.small_fraction * len(train_frame)))
small_ids = np.sort(rng.choice(task.split["train"], size=n_small, replace=False))
cohorts = {
    "small": dataclasses.replace(task, split={**task.split, "train": small_ids}),
    "large": task,
}
epochs_of = {"small": cfg.epochs_small, "large": cfg.epochs_large}
cohort_table = pd.DataFrame(
    {
        name: {
            "patients": len(t.frame("train")),
            "events": int(t.frame("train")["event"].sum()),
            "max epochs": epochs_of[name],
        }
        for name, t in cohorts.items()
    }
).T
assert cohort_table.loc["small", "patients"] == n_small
keep("n_small", n_small)
keep("events_small", int(cohort_table.loc["small", "events"]))
keep("events_large", int(cohort_table.loc["large", "events"]))
cohort_table


# %%
def life_table(t) -> np.ndarray:
    """h_k = d_k / n_k per bin of a task's training patients: where the head starts."""
    frame = t.frame("train")
    return life_table_hazards(frame["bin"], frame["event"], n_bins)


# %% [markdown]
# **One evaluation.** Every model hands over a survival curve per test patient, read at the
# bin edges; the library's `SurvivalProtocol` scores them all the same way, and its
# `difference` and `compare` give the paired bootstrap interval of a difference between two
# models on the same test patients ({glue:text}`n_boot` resamples). The ceiling is the
# oracle, the generator's true survival of each test patient.

# %%
d_test = test_frame["duration"].to_numpy(float)
e_test = test_frame["event"].to_numpy(int)
d_train = train_frame["duration"].to_numpy(float)
e_train = train_frame["event"].to_numpy(int)
edges = task.cuts[1:]  # right edge of every bin, days
protocol = SurvivalProtocol(d_test, e_test, edges, d_train, e_train, n_boot=cfg.n_boot)
SCORED = ("Harrell C", "Uno C", "IBS", "AUROC", "calibration error")
oracle_surv = task.oracle_survival("test")  # (n, K)
oracle = {m: protocol.metrics[m](d_test, e_test, oracle_surv) for m in SCORED}
keep("oracle_c", oracle["Harrell C"])
keep("n_boot", cfg.n_boot)
pd.Series(oracle, name="oracle (true risk)").round(4).to_frame()

# %% [markdown]
# ## Model
# ### The encoder and the regimes
# The pretrained encoder, the survival model on top of it and the four regimes are those of
# {doc}`08_finetuning_strategies`, which derives them and checks that LoRA does what it
# promises; here they are built again from the same settings. The encoder is the book's
# (`ehrseq.pretrained`): its config is `book_encoder_config`, and its weights are the
# artefact of the `joint` schedule (`book_recipe()`) that {doc}`05b_pretraining_schedules`
# trains. `load_or_pretrain` with the same key parts (the task, the encoder config and the
# recipe) loads them, and trains them only if no file exists yet.

# %%
encoder_cfg = book_encoder_config(task)  # the book's encoder sizes for this profile
recipe = book_recipe()  # the joint schedule of 05b_pretraining_schedules
started = time.perf_counter()
pretrained = load_or_pretrain(task, encoder_cfg, recipe)
pretrain_seconds = time.perf_counter() - started
pretrained_state = copy.deepcopy(pretrained.model.encoder.state_dict())
print(format_config(encoder_cfg))
print(format_config(pretrained.recipe))  # next-visit weight resolved to |V|
print(
    f"{'loaded' if pretrained.loaded else 'trained'} in {pretrain_seconds:.1f} s "
    f"from {pretrained.folder.name}"
)

# %% [markdown]
# The survival model (the per-bin hazard head on the mean token state of the last visit,
# starting at the life table of the cohort it trains on) and one builder for every regime,
# each with its own learning rate:


# %%
def new_model(pretrained_weights: bool, base_hazards: np.ndarray) -> SurvivalModel:
    encoder = BehrtEncoder(encoder_cfg)
    if pretrained_weights:
        encoder.load_state_dict(pretrained_state)
    head = BinHazardHead(  # starts at the life table
        encoder_cfg.d_model, n_bins, dropout=cfg.head_dropout, base_hazards=base_hazards
    )
    return SurvivalModel(encoder, head)  # a flat batch -> HazardOutput of shape (B, K)


def setting(kind, lr, rank=None, pretrained=True) -> dict:
    """A regime: what trains (kind, LoRA rank), from which weights, at which lr."""
    return {"kind": kind, "rank": rank, "pretrained": pretrained, "lr": lr}


REGIMES = {
    "frozen": setting("frozen", cfg.lr_frozen),
    **{f"LoRA r={r}": setting("lora", cfg.lr_lora, rank=r) for r in cfg.lora_ranks},
    "full": setting("full", cfg.lr_full),
    "from scratch": setting("full", cfg.lr_scratch, pretrained=False),
}


def build(regime: str, base_hazards: np.ndarray) -> SurvivalModel:
    spec = REGIMES[regime]
    model = new_model(spec["pretrained"], base_hazards)
    if spec["kind"] == "frozen":
        freeze(model.encoder)
    elif spec["kind"] == "lora":
        apply_lora(
            model,
            r=spec["rank"],
            alpha=cfg.lora_alpha,
            include_mlp=cfg.lora_mlp,
            trainable=("head",),
        )
    return model


# %% [markdown]
# ## Train
# Every (cohort, regime) goes through the library's `train_seeds` with
# {glue:text}`seeds_text`: for each seed, a fresh model from `build`, trained by `fit` with
# the hazard likelihood (AdamW with warm-up and cosine decay, gradient clipping, early
# stopping on the validation loss with patience {glue:text}`patience`, best weights
# restored), its wall time and the activations of one batch measured, and the test patients
# predicted. The **validation** loss is what we use to *choose* (a LoRA rank, the best
# regime); the test metrics are what we *report*.

# %%
keep("patience", cfg.patience)
curves, rows = {}, []
for cohort, t in cohorts.items():
    base_hazards = life_table(t)  # the head starts at this cohort's life table
    for regime, spec in REGIMES.items():
        runs = train_seeds(
            lambda regime=regime, hazards=base_hazards: build(regime, hazards),
            t,
            TrainConfig(epochs=epochs_of[cohort], lr=spec["lr"], patience=cfg.patience),
            cfg.seeds,
            hierarchical=False,
            batch_size=cfg.batch_size,
            device=device,
            name=f"{cohort} / {regime}",
        )
        # finite, and the training loss went down
        assert runs.learned(), (cohort, regime)
        curves[cohort, regime] = runs.survs
        scores = {}
        for m in SCORED:
            metric = protocol.metrics[m]
            scores[m] = np.mean([metric(d_test, e_test, s) for s in runs.survs])
        val_loss = np.mean([h["val_loss"].min() for h in runs.histories])
        rows.append(
            {
                "cohort": cohort,
                "regime": regime,
                "trainable": runs.cost["parameters"],
                "val loss": float(val_loss),
                **scores,
                "activations MiB": runs.cost["activations MiB"],
                "fit (s)": runs.cost["train s"],
                "s / epoch": runs.cost["s / epoch"],
                "epochs": runs.cost["epochs"],
            }
        )
table = pd.DataFrame(rows).set_index(["cohort", "regime"])
# same size in both cohorts
assert table.groupby("regime")["trainable"].nunique().eq(1).all()
if cfg.profile != "smoke":
    assert (table.loc["large", "Harrell C"] > 0.6).all()

# %% [markdown]
# ## Evaluate
# ### The regimes side by side
# Two tables, so that each fits the page. First what each cohort and regime predicts: the
# validation loss that choices are made on and the test metrics ({glue:text}`over_seeds`),
# with the oracle as the ceiling. Then what it costs: the trainable parameters, the
# activations autograd keeps for one training batch of {glue:text}`batch_size` of the
# cohort's patients (why they follow what trains is in {doc}`08_finetuning_strategies`), the
# wall time of the whole `fit`, the time per epoch and the epochs run. Wall times depend on
# the machine and its load: compare them within the table, not with another run.

# %%
keep("batch_size", cfg.batch_size)
predicted = table[["val loss", *SCORED]].copy()
predicted.loc[("", "oracle (true risk)"), list(SCORED)] = [oracle[m] for m in SCORED]
keep_table("regimes", predicted.reset_index(), floatfmt="{:.4f}")  # aligned decimals
costs = table[["trainable", "activations MiB", "fit (s)", "s / epoch", "epochs"]].copy()
for column in ("trainable", "epochs"):  # counts, not measurements
    costs[column] = costs[column].map(lambda v: f"{v:,.0f}")
keep_table("costs", costs.reset_index(), floatfmt="{:.2f}")

# %% [markdown]
# ```{glue:} regimes
# ```
#
# ```{glue:} costs
# ```
#
# What does each regime add over the same network trained from scratch? The paired
# difference of Harrell's C on the same test patients, with its 95% interval, against the
# number of trainable parameters:

# %% mystnb={"figure": {"name": "fig-c-vs-params", "caption": "Test Harrell C of each pretrained regime minus that of the same network trained from scratch (paired bootstrap, 95% interval over test patients), against the number of trainable parameters (log scale), on the small (left) and large (right) training cohort. Dotted: no difference."}}
gains = []
for cohort in cohorts:
    scratch = curves[cohort, "from scratch"]
    for regime in REGIMES:
        if regime == "from scratch":
            continue
        d = protocol.difference(regime, curves[cohort, regime], "from scratch", scratch)
        gains.append({"cohort": cohort, "regime": regime, **d})
gains = pd.DataFrame(gains).set_index(["cohort", "regime"])
fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True, layout="constrained")
for ax, cohort in zip(axes, ["small", "large"], strict=True):
    for i, regime in enumerate(r for r in REGIMES if r != "from scratch"):
        g = gains.loc[(cohort, regime)]
        ax.errorbar(
            table.loc[(cohort, regime), "trainable"],
            g["difference"],
            yerr=[[g["difference"] - g["lower"]], [g["upper"] - g["difference"]]],
            fmt="s" if regime == "frozen" else "D" if regime == "full" else "o",
            color=f"C{i}",
            capsize=3,
            label=regime,
        )
    ax.axhline(0.0, color="k", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.margins(x=0.1)  # no marker on the frame
    ax.set_xlabel("trainable parameters (log scale)")
    n_train = len(cohorts[cohort].frame("train"))
    ax.set_title(f"{cohort} cohort ({n_train:,} training patients)")
axes[0].set_ylabel("test Harrell C minus from scratch")
handles, names = axes[0].get_legend_handles_labels()
# below, off the data
fig.legend(handles, names, loc="outside lower center", ncol=len(names))
plt.show()

# %% [markdown]
# ### Two claims, tested
# **Pretraining helps**: the pretrained network fully fine-tuned against the same network
# trained from scratch, in each cohort. **LoRA matches full fine-tuning**: an equivalence
# claim, reproduced only when the whole interval of the difference in C lies within
# $\pm${glue:text}`lora_margin`, refuted when it lies wholly outside, not resolved otherwise.
# The LoRA rank is the one with the lowest validation loss on the large cohort. Both are
# recorded, with their intervals and verdicts, for the book's results page; the IBS and the
# AUROC are compared beside the C-index.

# %%
keep("lora_margin", cfg.lora_margin)
lora_ranks = [f"LoRA r={r}" for r in cfg.lora_ranks]
best_lora = table.loc["large"].loc[lora_ranks, "val loss"].idxmin()
keep("best_lora", best_lora)
keep(
    "best_lora_how",
    "The LoRA rank chosen on validation"
    if len(lora_ranks) > 1
    else "The one LoRA rank of this run",
)
large = table.loc["large"]
ratio = large.loc[best_lora, "trainable"] / large.loc["full", "trainable"]
keep("lora_trainable", int(large.loc[best_lora, "trainable"]))
keep("full_trainable", int(large.loc["full", "trainable"]))
keep("lora_ratio", float(ratio))
tests = {
    "pretraining_helps": ("large", "full", "from scratch"),
    "pretraining_helps_small": ("small", "full", "from scratch"),
    "lora_matches_full": ("large", best_lora, "full"),
    "lora_matches_full_small": ("small", best_lora, "full"),
}
claims = {  # key: (claim, source); recorded for the results page
    "pretraining_helps": (
        "pretraining helps: pretrained + full fine-tuning beats from scratch (C)",
        "li2020behrt",
    ),
    "pretraining_helps_small": (
        "pretraining helps with few labels (small cohort, C)",
        "li2020behrt",
    ),
    "lora_matches_full": (
        "LoRA matches full fine-tuning (C within the margin)",
        "hu2022lora",
    ),
    "lora_matches_full_small": (
        "LoRA matches full fine-tuning with few labels (C within the margin)",
        "hu2022lora",
    ),
}
margins = {key: cfg.lora_margin for key in claims if key.startswith("lora")}
compared = []
# one table per cohort: the model names repeat
for key, (cohort, a, b) in tests.items():
    rows = protocol.compare(a, curves[cohort, a], b, curves[cohort, b])
    compared.append(
        record_comparisons(
            CHAPTER, rows, {key: (a, b)}, {key: claims[key]}, margins=margins
        ).assign(cohort=cohort)
    )
compared = pd.concat(compared, ignore_index=True)
# one string: a value and its interval on one line
interval = "difference [95% interval]"
bounds = compared[["difference", "lower", "upper"]].itertuples(index=False)
compared[interval] = [f"{d:+.4f} [{lo:+.4f}, {hi:+.4f}]" for d, lo, hi in bounds]
compared = compared.rename(columns={"verdict": "which is better"})
keep_table(
    "claims",
    compared[["cohort", "comparison", "metric", interval, "which is better"]],
)
# an equivalence refuted says not in which direction: the sign of the difference does
recorded = read_claims().query("chapter == @CHAPTER").set_index("key")
for key in margins:
    verdict, difference = recorded.loc[key, ["verdict", "difference"]]
    side = "higher" if difference > 0 else "lower"
    keep(
        f"{key}_text",
        f"refuted, LoRA's C being {side} by more than the margin"
        if verdict == "refuted"
        else verdict,
    )
# did early stopping end the large cohort's runs, or the cap on epochs?
# "epochs" is a mean over seeds: at the cap only if every seed ran to it
at_cap = table.loc["large", "epochs"] >= cfg.epochs_large
cap = plural(cfg.epochs_large, "epoch")
if at_cap.all():
    cap_text = "every regime on the large cohort ran the full"
    cap_text += f" {cap} without early stopping"
elif at_cap.any():
    cap_text = f"{at_cap.sum()} of {len(at_cap)} regimes on the large cohort"
    cap_text += " ran the full"
    cap_text += f" {cap} without early stopping"
else:
    cap_text = f"early stopping ended every regime on the large cohort before {cap}"
keep("large_cap_text", cap_text)
keep(
    "large_cap_caveat",
    "; longer training could change these differences" if at_cap.any() else "",
)

# %% [markdown]
# ```{glue:} claims
# ```
#
# The last column reads each interval against zero: which model is better on that metric.
# The equivalence claims read the interval of C against $\pm${glue:text}`lora_margin`
# instead, so the two can differ: an interval that excludes zero but reaches inside the
# margin names a better model and leaves the equivalence not resolved.
#
# With all {glue:text}`n_train` labelled training patients, full fine-tuning of the
# pretrained encoder minus the same network trained from scratch is
# {glue:text}`diff_pretraining_helps:+.3f` in C ({glue:text}`diff_pretraining_helps_lower:+.3f`
# to {glue:text}`diff_pretraining_helps_upper:+.3f`): the claim that pretraining helps is
# {glue:text}`verdict_pretraining_helps`. With {glue:text}`n_small` labelled patients
# ({glue:text}`events_small` events) the difference is
# {glue:text}`diff_pretraining_helps_small:+.3f`
# ({glue:text}`diff_pretraining_helps_small_lower:+.3f` to
# {glue:text}`diff_pretraining_helps_small_upper:+.3f`):
# {glue:text}`verdict_pretraining_helps_small`. On how long the runs trained:
# {glue:text}`large_cap_text`{glue:text}`large_cap_caveat`.
#
# {glue:text}`best_lora_how`, {glue:text}`best_lora`, trains
# {glue:text}`lora_trainable:,` parameters, {glue:text}`lora_ratio:.1%` of the
# {glue:text}`full_trainable:,` that full fine-tuning trains. Its C minus full fine-tuning's
# is {glue:text}`diff_lora_matches_full:+.3f` ({glue:text}`diff_lora_matches_full_lower:+.3f`
# to {glue:text}`diff_lora_matches_full_upper:+.3f`) on the large cohort: the claim that it
# matches full fine-tuning within {glue:text}`lora_margin` is
# {glue:text}`lora_matches_full_text`; on the small cohort
# {glue:text}`diff_lora_matches_full_small:+.3f`
# ({glue:text}`diff_lora_matches_full_small_lower:+.3f` to
# {glue:text}`diff_lora_matches_full_small_upper:+.3f`):
# {glue:text}`lora_matches_full_small_text`. An equivalence claim needs a narrow
# interval: with a margin of {glue:text}`lora_margin`, an interval wider than twice the
# margin can never reproduce it, whatever the estimate.

# %% [markdown]
# ### The best fine-tuned model beside the oracle
# Which regime is "best" is decided without the test patients: the pretrained regime with
# the lowest validation loss on the large cohort. Its gap to the oracle is a paired
# difference on the same test patients.

# %%
best = table.loc["large"].drop(index="from scratch")["val loss"].idxmin()
gap = protocol.difference("oracle", [oracle_surv], best, curves["large", best])
keep("best", best)
best_c = float(table.loc[("large", best), "Harrell C"])
keep("best_c", best_c)
keep("gap", float(gap["difference"]))
keep("gap_lower", float(gap["lower"]))
keep("gap_upper", float(gap["upper"]))
keep("share_closed", (best_c - 0.5) / float(oracle["Harrell C"] - 0.5))
short = {"full": "full", "from scratch": "scratch", "frozen": "frozen"}
for c in cohorts:
    for regime, key in short.items():
        keep(f"{key}_{c}", float(table.loc[(c, regime), "Harrell C"]))
    keep(f"lora_{c}", float(table.loc[(c, best_lora), "Harrell C"]))
assert oracle["Harrell C"] > table.loc[("large", best), "Harrell C"] > 0.5
gap_shown = {k: f"{v:+.4f}" if isinstance(v, float) else v for k, v in gap.items()}
pd.Series(gap_shown).to_frame("oracle minus the best regime (Harrell C)")

# %% [markdown]
# The regime chosen on validation, {glue:text}`best`, reaches a test C of
# {glue:text}`best_c:.3f`, {glue:text}`gap:.3f` below the oracle's {glue:text}`oracle_c:.3f`
# (paired interval {glue:text}`gap_lower:.3f` to {glue:text}`gap_upper:.3f`): it has covered
# {glue:text}`share_closed:.0%` of the way from a coin to the ceiling. Part of the rest no
# model of these records can close (the oracle knows onsets and episodes that are not yet
# recorded); part is learning, from {glue:text}`events_large` training events, with a small
# model and a CPU budget of a few minutes.

# %% [markdown]
# ## Summary
# - **With all {glue:text}`n_train` labelled training patients**, full fine-tuning reaches a
#   test C of {glue:text}`full_large:.3f` against {glue:text}`scratch_large:.3f` from scratch
#   (pretraining helps: {glue:text}`verdict_pretraining_helps`, and
#   {glue:text}`large_cap_text`{glue:text}`large_cap_caveat`); {glue:text}`best_lora`
#   reaches {glue:text}`lora_large:.3f` with {glue:text}`lora_ratio:.1%` of the trainable
#   parameters (LoRA matches full fine-tuning: {glue:text}`lora_matches_full_text`), the
#   frozen encoder {glue:text}`frozen_large:.3f`.
# - **With {glue:text}`n_small` labelled patients**, full fine-tuning reaches
#   {glue:text}`full_small:.3f` against {glue:text}`scratch_small:.3f` from scratch
#   (pretraining helps: {glue:text}`verdict_pretraining_helps_small`), {glue:text}`best_lora`
#   {glue:text}`lora_small:.3f` (LoRA matches full:
#   {glue:text}`lora_matches_full_small_text`),
#   the frozen encoder {glue:text}`frozen_small:.3f`.
# - **Against the ceiling.** The regime chosen on validation, {glue:text}`best`, is
#   {glue:text}`gap:.3f` below the oracle's C ({glue:text}`gap_lower:.3f` to
#   {glue:text}`gap_upper:.3f`).
#
# How the regimes were built, what each trains and what its training holds in memory are in
# {doc}`08_finetuning_strategies`.
#
# ## Exercises
# 1. Start from the encoder pretrained with masked-code modelling alone
#    (`book_recipe(schedule="mlm")`, which {doc}`05b_pretraining_schedules` has already
#    trained). Which regime suffers most, and what does that say about what the next-visit
#    objective puts into the last visit's state?
# 2. Shrink the small cohort to 5% of the training split. Where does the frozen encoder
#    overtake full fine-tuning, if it ever does?
# 3. How wide is the interval of the LoRA-minus-full difference? Work out how many test
#    events an equivalence margin of 0.005 would need.
# 4. Give the head the age at the prediction time explicitly: concatenate
#    $(\text{age} - 60) / 10$ to the last visit's state and widen `BinHazardHead` by one
#    input. Which regime gains most, and what does that say about how well masked-code and
#    next-visit pretraining encode age?

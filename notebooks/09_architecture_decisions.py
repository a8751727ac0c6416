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
# # Baselines and architecture decisions
#
# ## Outline
# Which architecture should read a patient's record? Before the next chapter builds a more
# elaborate transformer, this one lines up the candidates **under one protocol** and asks
# what each buys:
#
# - a **Cox model on a bag of codes** {cite}`cox1972regression`: counts of every token before
#   the prediction time, plus age and sex. It sees *what* happened, never *when* or *in
#   which order*;
# - a **Cox model on engineered features**: what a careful epidemiologist builds from code
#   lists (counts, recency windows, the last value and the slope of every lab), added one
#   block at a time: what a sequence model has to beat;
# - an **LSTM over visits** {cite}`hochreiter1997long`: each visit is the mean of its code
#   embeddings, read in time order, with BEHRT's age, time-gap and domain inputs;
# - a **flat BEHRT** {cite}`li2020behrt`: a transformer over every token of the history,
#   with age, visit, position and time-gap embeddings, trained from scratch.
#
# The cohort's heart-failure hazard has terms that only a model reading *when* and *in which
# order* things happened can use (chapter 1: an NSAID within 90 days of kidney disease, a
# rising natriuretic peptide, the years since a diabetes diagnosis, a gap in
# antihypertensive refills, hypertension before diabetes). Both neural models get the same
# inputs and the same tuning budget, chosen on the validation patients only; every model is
# scored on the same test patients against the same ceiling, the **oracle** (the generator's
# true risk), and every comparison the prose makes is a paired interval with its verdict.

# %% [markdown]
# ## Setup
# One config per chapter; `EHRSEQ_PROFILE` (`smoke`, `book`, `full`) picks its size. The task
# is the one every modelling chapter shares (`shared_task_config`).

# %%
import dataclasses
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display
from lifelines import KaplanMeierFitter

import ehrseq
from ehrseq.baselines import (
    FEATURE_BLOCKS,
    CoxBaseline,
    bag_of_codes,
    engineered_features,
)
from ehrseq.book import (
    format_floats,
    keep,
    keep_table,
    number,
    plural,
    record_comparisons,
    start_claims,
)
from ehrseq.config import for_profile, format_config
from ehrseq.data.task import prepare_survival_task, shared_task_config
from ehrseq.evaluate import SurvivalProtocol, format_table, plot_comparison
from ehrseq.models import (
    BehrtConfig,
    BehrtEncoder,
    BinHazardHead,
    LSTMConfig,
    SurvivalModel,
    VisitLSTM,
)
from ehrseq.plotting import apply_style
from ehrseq.runs import train_seeds
from ehrseq.runtime import measure
from ehrseq.survival import life_table_hazards
from ehrseq.train import TrainConfig

CHAPTER = "09_architecture_decisions"


@dataclass(frozen=True)
class Config:
    profile: str = "book"
    # seeds of the chosen configurations (the grid uses the first)
    seeds: tuple[int, ...] = (0,)
    # grid: BEHRT's d_model, the LSTM's embedding and state
    widths: tuple[int, ...] = (32, 64)
    lrs_lstm: tuple[float, ...] = (3e-3, 1e-2)  # grid: peak learning rates of the LSTM
    lrs_behrt: tuple[float, ...] = (5e-4, 1e-3)  # grid: peak learning rates of BEHRT
    n_layers: int = 2  # transformer blocks of BEHRT (the LSTM has one layer)
    n_heads: int = 4  # attention heads
    ff_mult: int = 2  # feed-forward width of a block = ff_mult * d_model
    dropout: float = 0.1  # on embeddings, residual branches and the head
    epochs: int = 4  # most passes over the training patients, for both models
    # stop when the validation loss has not improved for this many epochs
    patience: int = 2
    batch_size: int = 128  # patients per optimiser step
    min_code_share: float = 0.02  # a feature is kept when this share of training has it
    penalizer: float = 0.3  # ridge penalty of the Cox models, on standardised features
    n_boot: int = 200  # bootstrap resamples of every paired difference
    n_boot_table: int = 30  # resamples of the per-model intervals of the protocol table


cfg = for_profile(
    Config,
    {
        "smoke": {
            "widths": (8, 16),
            "n_layers": 1,
            "n_heads": 2,
            "epochs": 2,
            "min_code_share": 0.05,
            "n_boot": 20,
            "n_boot_table": 10,
        },
        "full": {
            "seeds": (0, 1, 2),
            "widths": (64, 128),
            "n_layers": 4,
            "ff_mult": 4,
            "epochs": 10,
            "n_boot": 1000,
            "n_boot_table": 200,
        },
    },
)
device = ehrseq.get_device()
rng = ehrseq.seed_everything(0)
apply_style()
start_claims(CHAPTER)
print(format_config(cfg))
print(f"device: {device}")
keep("n_seeds_phrase", plural(len(cfg.seeds), "seed"))
keep("n_boot", cfg.n_boot)
keep("epochs", cfg.epochs)

# %% [markdown]
# On a GPU, `fit` trains in bf16 autocast and some attention kernels are nondeterministic, so
# the numbers move a little between runs; on a CPU every seed is repeatable bit for bit.
#
# ## Data: the shared protocol
# `prepare_survival_task` builds the cohort, the labels (first heart failure within five
# years of a prediction time {glue:text}`history_text` after enrolment), the split into training, validation
# and test patients, the token sequences strictly before the prediction time, and the time
# bins. The test split has extra people generated for it alone, so that it holds enough
# events to resolve small differences. Every model below reads this object and nothing else.

# %%
task = prepare_survival_task(shared_task_config())
keep("history_text", plural(task.config.history_days / 365.25, "year", ".0f"))
train, test = task.frame("train"), task.frame("test")
edges = task.cuts[1:]  # right edge of every bin, days: where survival curves are read
n_bins = task.config.n_bins
keep("n_train", len(train))
keep("n_test", len(test))
keep("n_test_events", int(test["event"].sum()))
keep("n_bins", n_bins)
keep("bin_days", float(task.config.bin_days))
keep("horizon_years", float(task.config.horizon_years))
task.summary()

# %% [markdown]
# ### One evaluation for every model
# Every model hands over a predicted survival curve per test patient, read at the
# {glue:text}`n_bins` bin edges ({glue:text}`bin_days:.0f` days each over
# {glue:text}`horizon_years:.0f` years), shape `(n_test, n_bins)`. The library's
# `SurvivalProtocol` scores such curves the same way for every model: Harrell's
# {cite}`harrell1982evaluating`, Uno's {cite}`uno2011c` and Antolini's
# {cite}`antolini2005time` C, the integrated Brier score {cite}`graf1999assessment`, the
# AUROC at the last bin edge inside the window, and the calibration error over deciles of
# predicted risk. Its table gives each model a bootstrap interval over test patients for
# orientation; whether one model beats another is decided by `compare`, the **paired**
# bootstrap of the difference on the same resamples ({glue:text}`n_boot` of them), which
# removes what makes a patient easy or hard for both models.

# %%
d_test, e_test = test["duration"].to_numpy(float), test["event"].to_numpy(int)
d_train, e_train = train["duration"].to_numpy(float), train["event"].to_numpy(int)
protocol = SurvivalProtocol(d_test, e_test, edges, d_train, e_train, n_boot=cfg.n_boot)
# the table's intervals
table_protocol = dataclasses.replace(protocol, n_boot=cfg.n_boot_table)
METRICS = list(protocol.metrics)

# %% [markdown]
# Two references bracket every model: the **Kaplan-Meier** curve of the training labels,
# the same for everyone (every C-index is 0.5), and the **oracle**, the generator's true
# survival at the bin edges (the ceiling: it knows latent onsets that no record shows).

# %%
km = KaplanMeierFitter().fit(d_train, e_train)
km_surv = np.tile(km.survival_function_at_times(edges).to_numpy(), (len(test), 1))
oracle_surv = task.oracle_survival("test")  # (n_test, n_bins)
assert oracle_surv.shape == km_surv.shape == (len(test), n_bins)
assert np.allclose(1.0 - oracle_surv[:, -1], task.oracle_risk("test"), atol=0.02)
curves = {"Kaplan-Meier (no features)": [km_surv], "oracle": [oracle_surv]}
costs: dict[str, dict] = {}

# %% [markdown]
# ## Model 1: a Cox model on a bag of codes
# The classical baseline forgets the order of the record. Each patient becomes one row: the
# count of every vocabulary token in the history (conditions, drugs, procedures, visit
# types, lab tokens with their value decile), as $\log(1 + \text{count})$, plus age at the
# prediction time and sex (`ehrseq.baselines.bag_of_codes`, the very tokens the neural
# models read). Features that fewer than {glue:text}`min_code_share:.0%` of training
# patients have are dropped, the rest standardised on the training patients, and a
# ridge-penalised Cox model is fitted (`CoxBaseline`),
#
# $$
# h_i(t) = h_0(t) \exp(\beta^\top x_i), \qquad
# \hat S_i(t) = \hat S_0(t)^{\exp(\beta^\top x_i)},
# $$
#
# with the baseline survival $\hat S_0$ from Breslow's estimator, read at the same bin edges
# as every other model's curves.

# %%
keep("min_code_share", cfg.min_code_share)


def fit_cox(features, name: str) -> CoxBaseline:
    """Fit a Cox baseline on the training patients, keep its test curves and cost."""
    with measure("cpu") as used:
        cox = CoxBaseline(penalizer=cfg.penalizer, min_share=cfg.min_code_share)
        cox.fit(features(task, "train"), d_train, e_train)
    # (n_test, n_bins)
    curves[name] = [cox.predict_survival(features(task, "test"), edges)]
    costs[name] = {"parameters": cox.n_parameters, "train s": used.seconds}
    return cox


cox_bag = fit_cox(bag_of_codes, "Cox, bag of codes")
keep("n_cox_features", cox_bag.n_parameters)
print(f"{cox_bag.n_parameters} features kept")

# %% [markdown]
# ## Model 2: a Cox model on engineered features
# A careful analyst builds more than token counts: from the cohort's code lists
# (the clinical groups, never the latent hazard) `ehrseq.baselines.engineered_features`
# builds, per group, whether and how often it was recorded (`counts`), a record in the last
# 90 days and the years since the first one (`recency`), the latest standardised value of
# every lab with a missing flag (`last_lab`), and the least-squares slope of each lab over
# its last three values (`lab_slope`). Adding the blocks one at a time shows what each buys;
# each step is a paired difference of Harrell's C against the step before.

# %%
block_rows, previous = [], curves["Cox, bag of codes"]
for k in range(1, len(FEATURE_BLOCKS) + 1):
    blocks = FEATURE_BLOCKS[:k]
    name = f"Cox, {' + '.join(blocks)}"
    if k == len(FEATURE_BLOCKS):
        name = "Cox, engineered features"
    cox = fit_cox(lambda t, s, b=blocks: engineered_features(t, s, b), name)
    step = protocol.difference(name, curves[name], "previous", previous, "Harrell C")
    block_rows.append(
        {
            "features": " + ".join(blocks) if k == 1 else f"+ {blocks[-1]}",
            "columns": cox.n_parameters,
            "Harrell C": protocol.metrics["Harrell C"](d_test, e_test, curves[name][0]),
            "gain": step["difference"],
            "gain lower": step["lower"],
            "gain upper": step["upper"],
            "verdict": step["verdict"]
            .replace(name, "this step")
            .replace("previous", "the step before"),
        }
    )
    previous = curves[name]
    if k < len(FEATURE_BLOCKS):  # the intermediate steps live in the block table only
        del curves[name], costs[name]
cox_engineered = cox
block_table = pd.DataFrame(block_rows)
block_table.loc[0, "verdict"] += " (against the bag of codes)"
nb = "\u00a0"  # a no-break space: a value and its interval stay on one line
block_table["gain"] = [
    f"{number(g, '+.3f')}{nb}[{number(lo, '+.3f')},{nb}{number(hi, '+.3f')}]"
    for g, lo, hi in block_table[["gain", "gain lower", "gain upper"]].to_numpy()
]
block_table = block_table.drop(columns=["gain lower", "gain upper"])
block_table["features"] = block_table["features"].str.replace(" ", nb)
keep_table("cox_blocks", block_table)  # shown where pasted

# %% [markdown]
# ```{glue:} cox_blocks
# ```
#
# Each row adds one block to the rows above; the gain is the paired difference of Harrell's C
# against the row before (the first row against the bag of codes), with its 95% interval
# over test patients. The largest coefficients
# of the full model show which features it leans on:

# %%
concept_name = task.cohort.vocabulary.concept.set_index("concept_id")["concept_name"]


def describe(column: str) -> str:
    """A readable name for an engineered feature (labs by their concept name)."""
    labels = {"lab_last_": "last {}", "lab_missing_": "{} not measured"}
    for prefix, label in labels.items():
        if column.startswith(prefix):
            name = str(concept_name.get(int(column.removeprefix(prefix)), column))
            return label.format(name.split(" [")[0])
    if column.startswith("lab_slope_"):
        name = str(concept_name.get(int(column.removeprefix("lab_slope_")), column))
        return f"slope of {name.split(' [')[0]}"
    named = {"age_years": "age", "male": "male sex"}
    return named.get(column, column.replace("_", " "))


ranked = cox_engineered.model_.params_.sort_values(key=np.abs, ascending=False)
age_rank = int(ranked.index.get_loc("age_years")) + 1  # 1 = the largest coefficient
keep(
    "age_rank_phrase",
    "Age has the largest coefficient"
    if age_rank == 1
    else f"Age is number {age_rank} in the ranking of coefficients",
)
keep("n_train_events", int(e_train.sum()))
top = ranked.head(10)
top = top.set_axis([describe(c) for c in top.index]).rename("log hazard ratio per sd")
format_floats(top.to_frame())  # three decimals, no "-0.000"

# %% [markdown]
# {glue:text}`age_rank_phrase`. Read the order with care. Age and sex are one column each,
# while a disease enters through several correlated ones (whether, how often and how long
# ago it was recorded, its drugs, the labs it moves), among which the ridge penalty splits
# its weight, so a ranking of single columns understates every disease against the two
# demographic ones. And with {glue:text}`n_train_events` events among the training
# patients, single coefficients carry sampling noise that the table does not show, enough
# to reorder neighbouring rows. The table shows which kinds of feature the model leans on; what each block adds to the
# ranking of patients is the paired gain in the table above.

# %% [markdown]
# ## Model 3: an LSTM over visits, with BEHRT's inputs
# The recurrent baseline reads the **hierarchical batch** (`codes (B, V, C)`, masks, and per
# visit the age and the days since the previous visit). For a fair comparison it gets what
# BEHRT gets, in the same form (`LSTMConfig(time_inputs="embeddings", use_domain=True)`):
# each code's embedding plus its domain's, averaged over the visit, plus an embedding of
# the age in one-year bins and of the gap since the previous visit in logarithmic bins (the
# binning of BEHRT's embeddings). A forward LSTM {cite}`hochreiter1997long` then reads the
# visits in order (packed, so padded visits never touch a real state); the order itself
# needs no position embedding.
#
# Every neural model here feeds the **same survival head**: a `BinHazardHead` mapping the
# state of the last real visit to {glue:text}`n_bins` hazard logits (the logistic-hazard
# model {cite}`kvamme2019continuous`), its bias started at the training life table
# (`life_table_hazards`), composed with the encoder by the library's `SurvivalModel`.

# %%
life_table = life_table_hazards(train["bin"], train["event"], n_bins)  # (K,)


def bin_head(d_model: int) -> BinHazardHead:
    """The survival head every neural model of this chapter and the next shares."""
    return BinHazardHead(d_model, n_bins, dropout=cfg.dropout, base_hazards=life_table)


def lstm(width: int) -> SurvivalModel:
    lcfg = LSTMConfig.from_vocab(
        task.vocab,
        d_embed=width,
        d_hidden=width,
        dropout=cfg.dropout,
        time_inputs="embeddings",
        use_domain=True,
    )
    return SurvivalModel(VisitLSTM(lcfg), bin_head(width))


hier_batch = task.dataset("train").batch(np.arange(4), hierarchical=True)
out = lstm(cfg.widths[0])(hier_batch)
B, V, C = hier_batch["codes"].shape
assert out.logits.shape == out.hazards.shape == (B, n_bins)
assert out.surv.shape == (B, n_bins) and (out.surv[:, 1:] <= out.surv[:, :-1]).all()
print(f"hierarchical batch: codes {(B, V, C)} -> hazards {tuple(out.hazards.shape)}")

# %% [markdown]
# ## Model 4: flat BEHRT
# BEHRT {cite}`li2020behrt` reads the **flat batch**: every token of the history in one
# sequence, embedded as the sum of code, age, visit, position, time-gap and domain
# embeddings, through a stack of transformer blocks that attend over all tokens
# {cite}`vaswani2017attention`. The same head reads the mean state of the tokens of the last
# visit. No pretraining here: the encoder learns from the survival loss alone.


# %%
def flat_behrt(width: int) -> SurvivalModel:
    bcfg = BehrtConfig.from_vocab(
        task.vocab,
        d_model=width,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        d_ff=cfg.ff_mult * width,
        dropout=cfg.dropout,
        max_len=task.config.max_len,
    )
    return SurvivalModel(BehrtEncoder(bcfg), bin_head(width))


flat_batch = task.dataset("train").batch(np.arange(4))
out = flat_behrt(cfg.widths[0])(flat_batch)
assert out.logits.shape == (flat_batch["codes"].shape[0], n_bins)
codes_shape, hazards_shape = tuple(flat_batch["codes"].shape), tuple(out.hazards.shape)
print(f"flat batch: codes {codes_shape} -> hazards {hazards_shape}")

# %% [markdown]
# ## Train: the same tuning budget for both
# A comparison of two architectures is only fair when both are tuned alike. Each neural model
# gets the same grid of {glue:text}`n_grid` settings (width times peak learning rate; the
# learning rates are each model's usual range, since a recurrent network and a transformer
# train at different step sizes), the same most epochs ({glue:text}`epochs`, early stopping
# with patience {glue:text}`patience` on the validation loss, best weights kept) and the same
# batches. Every run goes through `ehrseq.runs.train_seeds` (the library's one loop, `fit`,
# with the discrete-time hazard likelihood). The setting with the lowest **validation**
# loss is chosen; the test patients are not looked at until the choice is made.

# %%
grid = {
    "LSTM": (lstm, True, cfg.lrs_lstm),
    "flat BEHRT": (flat_behrt, False, cfg.lrs_behrt),
}
keep("n_grid", len(cfg.widths) * len(cfg.lrs_lstm))
keep("patience", cfg.patience)
assert len(cfg.lrs_lstm) == len(cfg.lrs_behrt)  # the same budget
grid_rows, grid_runs = [], {}
for name, (make, hierarchical, lrs) in grid.items():
    for width in cfg.widths:
        for lr in lrs:
            runs = train_seeds(
                lambda make=make, width=width: make(width),
                task,
                TrainConfig(epochs=cfg.epochs, lr=lr, patience=cfg.patience),
                cfg.seeds[:1],
                hierarchical=hierarchical,
                batch_size=cfg.batch_size,
                device=device,
                name=f"{name} d={width} lr={lr:g}",
            )
            # finite, and the training loss went down
            assert runs.learned(), (name, width, lr)
            grid_runs[name, width, lr] = runs
            grid_rows.append(
                {
                    "model": name,
                    "width": width,
                    "learning rate": lr,
                    "parameters": runs.cost["parameters"],
                    "validation loss": float(runs.histories[0]["val_loss"].min()),
                    "epochs": int(runs.cost["epochs"]),
                    "train s": runs.cost["train s"],
                }
            )
grid_table = pd.DataFrame(grid_rows)
chosen_rows = grid_table.groupby("model")["validation loss"].idxmin()
grid_table["chosen"] = np.where(grid_table.index.isin(chosen_rows), "yes", "")
keep_table("grid", grid_table, floatfmt="{:.4g}")  # shown where pasted

# %% [markdown]
# ```{glue:} grid
# ```
#
# The chosen settings (lowest validation loss per model) are then trained with the remaining
# seeds, if any, and only their test curves are scored.

# %%
chosen = {}
for name, row in grid_table.loc[chosen_rows].set_index("model").iterrows():
    width, lr = int(row["width"]), float(row["learning rate"])
    make, hierarchical, _ = grid[name]
    runs = grid_runs[name, width, lr]
    if len(cfg.seeds) > 1:
        more = train_seeds(
            lambda make=make, width=width: make(width),
            task,
            TrainConfig(epochs=cfg.epochs, lr=lr, patience=cfg.patience),
            cfg.seeds[1:],
            hierarchical=hierarchical,
            batch_size=cfg.batch_size,
            device=device,
            name=name,
        )
        runs.survs += more.survs
    curves[name], costs[name] = runs.survs, runs.cost
    chosen[name] = {"width": width, "lr": lr}
    keep(f"{'lstm' if name == 'LSTM' else 'behrt'}_width", width)
    keep(f"{'lstm' if name == 'LSTM' else 'behrt'}_lr", lr)

# %% [markdown]
# ## Evaluate
# ### The protocol table
# Each metric averaged over seeds, with its 95% bootstrap interval over test patients in
# brackets, in four tables so that each fits the page: the ranking metrics (two tables: Harrell's and
# Uno's C, then Antolini's C and the AUROC), the probability metrics, and the size and
# cost of one training run (mean over seeds; wall-clock on the machine that built this
# page).

# %%
rows = [table_protocol.evaluate(n, survs, costs.get(n)) for n, survs in curves.items()]
results = pd.DataFrame(rows).set_index("model")
shown = results
if device.type == "cpu":
    shown = results.drop(columns="peak MiB", errors="ignore")
table = format_table(shown, METRICS).map(lambda v: v.replace(" ", "\u00a0"))  # no wrap
ranking = ["Harrell C", "Uno C", "Antolini C", "AUROC"]
display(table[ranking[:2]])  # two columns per table: four overflow the page
display(table[ranking[2:]])
curve_metrics = ["IBS", "calibration error", "debiased RMS calibration error"]
display(table[curve_metrics])
display(table.drop(columns=[*ranking, *curve_metrics]))  # size and cost

# %% mystnb={"figure": {"name": "fig-baselines", "caption": "Discrimination (Harrell's C, left) and integrated Brier score (right) of every model on the test patients, averaged over training seeds, with 95% bootstrap intervals over test patients. Dashed: the oracle; dotted: chance (left) and the Kaplan-Meier curve (right)."}}
models = [m for m in results.index if m not in ("oracle", "Kaplan-Meier (no features)")]
fig = plot_comparison(results, models)
for ax in fig.axes:  # the reference lines named above each panel
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize="small")
fig.tight_layout()
plt.show()

# %% [markdown]
# ### Which differences are real?
# Two intervals that overlap can still hide a clear difference, because the same test
# patients are easy or hard for every model. `compare` bootstraps the **difference** on the
# same resamples (a paired bootstrap), for Harrell's C, the IBS and the AUROC, each averaged
# over seeds first. Every claim below is recorded, with its interval and verdict, for the
# book's results page: *reproduced* when the interval excludes 0 in the claimed direction,
# *refuted* when it excludes 0 in the other, *not resolved* otherwise.

# %%
r = results["Harrell C"]
best = r[models].idxmax()
pairs = {
    "behrt_vs_cox_bag": ("flat BEHRT", "Cox, bag of codes"),
    "behrt_vs_cox_engineered": ("flat BEHRT", "Cox, engineered features"),
    "behrt_vs_lstm": ("flat BEHRT", "LSTM"),
    "engineered_vs_bag": ("Cox, engineered features", "Cox, bag of codes"),
    "lstm_vs_cox_engineered": ("LSTM", "Cox, engineered features"),
    "oracle_vs_best": ("oracle", best),
}
claims = {  # key: (claim, source); recorded for the results page
    "behrt_vs_cox_bag": (
        "BEHRT beats a Cox model on a bag of codes (Harrell C)",
        "li2020behrt",
    ),
    "behrt_vs_cox_engineered": (
        "BEHRT beats a Cox model on engineered features (Harrell C)",
        "this book",
    ),
    "behrt_vs_lstm": (
        "BEHRT beats an LSTM with the same inputs and tuning budget (Harrell C)",
        "li2020behrt",
    ),
    "engineered_vs_bag": (
        "engineered features beat a bag of codes in a Cox model (Harrell C)",
        "this book",
    ),
    "lstm_vs_cox_engineered": (
        "an LSTM beats a Cox model on engineered features (Harrell C)",
        "this book",
    ),
}
compared = pd.concat(
    [protocol.compare(a, curves[a], b, curves[b]) for a, b in pairs.values()],
    ignore_index=True,
)
# glues verdict_*, diff_* for every pair
record_comparisons(CHAPTER, compared, pairs, claims)
nb = "\u00a0"  # a difference and its interval in one cell, on one line
spans = compared[["difference", "lower", "upper"]].itertuples(index=False)
differences = compared[["comparison", "metric"]].assign(
    **{
        "difference [95% interval]": [
            f"{number(d, '+.4f')}{nb}[{number(lo, '+.4f')},{nb}{number(hi, '+.4f')}]"
            for d, lo, hi in spans
        ],
        "verdict": compared["verdict"],
    }
)
differences["metric"] = differences["metric"].str.replace(" ", nb)
keep_table("differences", differences)

# %% [markdown]
# ```{glue:} differences
# ```

# %%
short = {
    "oracle": "oracle",
    "Kaplan-Meier (no features)": "km",
    "Cox, bag of codes": "cox",
    "Cox, engineered features": "coxeng",
    "LSTM": "lstm",
    "flat BEHRT": "behrt",
}
for model, key in short.items():
    keep(f"{key}_c", float(results.loc[model, "Harrell C"]))
    keep(f"{key}_cal", float(results.loc[model, "calibration error"]))
    if model in costs:
        seconds = float(results.loc[model, "train s"])
        keep(f"{key}_params", int(results.loc[model, "parameters"]))
        keep(f"{key}_seconds", seconds)
        keep(f"{key}_time", f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s")
keep("oracle_c_lower", float(results.loc["oracle", "Harrell C lower"]))
keep("oracle_c_upper", float(results.loc["oracle", "Harrell C upper"]))

# The best model is named from point estimates; what the prose says about it follows the
# paired interval against the oracle, and a network with one seed is flagged as such.
neural = ("LSTM", "flat BEHRT")
one_seed = len(cfg.seeds) == 1 and best in neural
keep("best", best + (" (a network trained from one seed)" if one_seed else ""))
by_pair = compared.set_index(["comparison", "metric"])
gap = by_pair.loc[(f"oracle - {best}", "Harrell C")]
if gap["lower"] > 0:
    below = (
        f"is {gap['difference']:.3f} below it (paired interval {gap['lower']:.3f} to "
        f"{gap['upper']:.3f})"
    )
else:
    below = (
        f"cannot be told from it at this size (oracle minus {best}: "
        f"{number(gap['difference'], '+.3f')}, paired interval "
        f"{number(gap['lower'], '+.3f')} to {number(gap['upper'], '+.3f')})"
    )
keep("below_ceiling", below)
if 0.5 < r[best] < r["oracle"]:
    share = (r[best] - 0.5) / (r["oracle"] - 0.5)
    closed = f"it covers {share:.0%} of the way from a coin (0.5) to the ceiling"
    keep("share_closed", closed)
elif r[best] <= 0.5:
    keep("share_closed", "it ranks the patients no better than a coin (0.5)")
else:
    closed = "its estimate reaches the ceiling, which only noise can explain"
    keep("share_closed", closed)

ipa = 1.0 - results["IBS"] / results.loc["Kaplan-Meier (no features)", "IBS"]
for model, key in short.items():
    x = float(ipa[model])
    keep(f"{key}_ipa", x)
    # a negative share would read "removes -3 %": say instead that the score got worse
    ipa_text = f"{max(x, 0.0):.0%}" if x > -0.005 else f"none (it is {-x:.0%} worse)"
    keep(f"{key}_ipa_text", ipa_text)
if len(cfg.seeds) == 1:
    note = "a seed that trains differently moves a network's C too, and with one seed "
    note += "this run cannot say by how much; the `full` profile trains more seeds"
    keep("seed_note", Markdown(note))  # markdown: the backticks set `full` as code
else:
    note = "a network's C in the table is the mean over its seeds, and each paired "
    note += "difference averages the seeds' curves first; how far a single seed "
    keep("seed_note", Markdown(note + "strays is not part of the interval"))

assert r["oracle"] > 0.5 and r["Cox, bag of codes"] > 0.5
assert results.loc["oracle", "IBS"] < results.loc["Kaplan-Meier (no features)", "IBS"]
if cfg.profile != "smoke":
    assert (r[models] > 0.6).all(), r[models]
    assert (r["oracle"] > r[models]).all()
    km_ibs = results.loc["Kaplan-Meier (no features)", "IBS"]
    assert (results.loc[models, "IBS"] < km_ibs).all()

# %% [markdown]
# **How far from the ceiling.** On the {glue:text}`n_test` test patients
# ({glue:text}`n_test_events` events) the oracle reaches a Harrell C of
# {glue:text}`oracle_c:.3f` ({glue:text}`oracle_c_lower:.3f` to
# {glue:text}`oracle_c_upper:.3f`). The model with the highest C in this run,
# {glue:text}`best`, {glue:text}`below_ceiling`: {glue:text}`share_closed`. Part of the
# rest is out of reach for any model: the oracle knows the latent onsets that are not yet in
# the record.
#
# **Sequence against no sequence.** Flat BEHRT reaches {glue:text}`behrt_c:.3f`, the Cox
# model on a bag of codes {glue:text}`cox_c:.3f` and the one on engineered features
# {glue:text}`coxeng_c:.3f`. BEHRT minus the bag of codes is
# {glue:text}`diff_behrt_vs_cox_bag:+.3f` ({glue:text}`diff_behrt_vs_cox_bag_lower:+.3f` to
# {glue:text}`diff_behrt_vs_cox_bag_upper:+.3f`): the claim that BEHRT beats it is
# {glue:text}`verdict_behrt_vs_cox_bag`. BEHRT minus the engineered features is
# {glue:text}`diff_behrt_vs_cox_engineered:+.3f`
# ({glue:text}`diff_behrt_vs_cox_engineered_lower:+.3f` to
# {glue:text}`diff_behrt_vs_cox_engineered_upper:+.3f`):
# {glue:text}`verdict_behrt_vs_cox_engineered`. On the integrated Brier score the paired
# verdicts read "{glue:text}`verdict_behrt_vs_cox_bag_ibs`" and
# "{glue:text}`verdict_behrt_vs_cox_engineered_ibs`", on the AUROC
# "{glue:text}`verdict_behrt_vs_cox_bag_auroc`" and
# "{glue:text}`verdict_behrt_vs_cox_engineered_auroc`". The engineered features against
# the bag: {glue:text}`diff_engineered_vs_bag:+.3f`
# ({glue:text}`diff_engineered_vs_bag_lower:+.3f` to
# {glue:text}`diff_engineered_vs_bag_upper:+.3f`), {glue:text}`verdict_engineered_vs_bag`;
# the table of blocks above shows what each block adds. The prices differ: the bag-of-codes
# Cox model has {glue:text}`cox_params` coefficients and fits in {glue:text}`cox_time`,
# BEHRT has {glue:text}`behrt_params:,` parameters and trains for {glue:text}`behrt_time`
# per seed.
#
# **BEHRT against the LSTM.** With the same inputs and the same grid, the LSTM reaches
# {glue:text}`lstm_c:.3f`; BEHRT minus the LSTM is {glue:text}`diff_behrt_vs_lstm:+.3f`
# ({glue:text}`diff_behrt_vs_lstm_lower:+.3f` to {glue:text}`diff_behrt_vs_lstm_upper:+.3f`):
# the claim that BEHRT beats it is {glue:text}`verdict_behrt_vs_lstm`. Against the engineered
# Cox model the LSTM is {glue:text}`diff_lstm_vs_cox_engineered:+.3f`
# ({glue:text}`diff_lstm_vs_cox_engineered_lower:+.3f` to
# {glue:text}`diff_lstm_vs_cox_engineered_upper:+.3f`):
# {glue:text}`verdict_lstm_vs_cox_engineered`.
#
# **Probabilities.** Relative to the Kaplan-Meier curve, the oracle removes
# {glue:text}`oracle_ipa_text` of its integrated Brier score, the bag-of-codes Cox model
# {glue:text}`cox_ipa_text`, the engineered one {glue:text}`coxeng_ipa_text`, BEHRT
# {glue:text}`behrt_ipa_text` and the LSTM {glue:text}`lstm_ipa_text`. Mean calibration errors
# over deciles at the horizon are {glue:text}`cox_cal:.3f` (bag of codes),
# {glue:text}`coxeng_cal:.3f` (engineered), {glue:text}`behrt_cal:.3f` (BEHRT) and
# {glue:text}`lstm_cal:.3f` (LSTM), against {glue:text}`oracle_cal:.3f` for the truth, whose
# deciles still carry the sampling noise of the observed incidence.
#
# **What the verdicts rest on.** This profile trains each neural model with
# {glue:text}`n_seeds_phrase`. The paired intervals are over test patients, so they say how sure we are *for
# these trained networks*: {glue:md}`seed_note`.
#
# ## Summary
# - One protocol for every model: the same task, splits, prediction times and bins; the
#   risk score is the predicted probability of the event within the horizon; every
#   comparison is a paired bootstrap of the difference with a recorded verdict.
# - The oracle's C is {glue:text}`oracle_c:.3f`; a Cox model on a bag of codes reaches
#   {glue:text}`cox_c:.3f`, one on engineered features {glue:text}`coxeng_c:.3f`
#   (against the bag: {glue:text}`verdict_engineered_vs_bag_c`), flat BEHRT trained from scratch
#   {glue:text}`behrt_c:.3f` (against the bag: {glue:text}`verdict_behrt_vs_cox_bag_c`;
#   against the engineered features: {glue:text}`verdict_behrt_vs_cox_engineered_c`).
# - With BEHRT's inputs and the same tuning budget, the LSTM reaches {glue:text}`lstm_c:.3f`
#   (BEHRT against the LSTM: {glue:text}`verdict_behrt_vs_lstm_c`).
# - A fair comparison needs the same information in the same form and the same tuning for
#   every model, choices made on validation patients, and a test set large enough that a
#   paired interval can tell the small differences in C between these models from zero.
#
# ## Exercises
# 1. Give the LSTM its old scalar time inputs (`time_inputs="scalar"`, age divided by 110)
#    and rerun the grid. How much of its C came from the form of the inputs?
# 2. None of the models knows how long before the prediction time the last visit was. Add it
#    (a final pseudo-visit at the prediction time, or a feature for the head). Which model
#    gains?
# 3. Shorten the recency window of the engineered features to 30 days, or lengthen it to a
#    year (`engineered_features(..., window_days=...)`). Which of the cohort's terms does
#    each window catch?
# 4. Add an engineered feature for the order effect of chapter 1 (hypertension recorded
#    before diabetes). How much of the gap between the engineered Cox model and BEHRT does it
#    close?
# 5. Give the Cox models only the code features (no age, no sex). How much of their C did
#    the two demographic features carry?
# 6. Tune the Cox penalty on the validation split too (a grid of four values). Does any
#    verdict change?

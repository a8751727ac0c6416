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
# # What each BEHRT embedding contributes
#
# ## Outline
# {doc}`04_behrt_embeddings` built BEHRT's input layer {cite}`li2020behrt` term by term: a
# sum of embeddings of the code, the age (in bins of width $w$), the visit, the position,
# the time since the previous event and the domain, then a LayerNorm,
#
# $$
# \begin{aligned}
# e_{l} &= E_\text{code}[c_l] + E_\text{age}\big[\lfloor a_l / w \rfloor\big]
#         + E_\text{visit}[v_l] \\
#       &\quad + P[p_l] + E_\Delta(\Delta_l) + E_\text{domain}[o_l], \\
# h^{(0)}_l &= \text{LayerNorm}(e_l).
# \end{aligned}
# $$
#
# and checked that `ehrseq`'s `BehrtEmbeddings` computes exactly that sum. This chapter asks
# what each term is worth. We will
# 1. **ablate**: pretrain small BEHRT encoders by masked-code modelling with one embedding
#    removed or changed at a time, several seeds each, and measure on held-out patients what
#    each term contributes, next to a baseline that ignores the patient entirely;
# 2. read the difference each change makes, paired seed by seed with the full encoder,
#    against what the synthetic cohort does and does not encode.
#
# Each pretrained encoder is kept as an artefact; {doc}`04c_inside_the_embedding_tables`
# loads two of them and looks inside their tables: why fixed sinusoids start at a
# disadvantage, and what the learned position and age tables look like.

# %% [markdown]
# ## Setup
# One config per chapter; `EHRSEQ_PROFILE` (`smoke`, `book`, `full`) picks its size. The
# encoders and their pretraining are a recipe of the library, `ehrseq.mlm_ablation`, so that
# {doc}`04c_inside_the_embedding_tables` loads the encoders this chapter pretrains by the
# same definition.

# %%
import math
import time
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown
from scipy import stats
from torch.utils.data import DataLoader, Subset

import ehrseq
from ehrseq.book import keep, plural
from ehrseq.config import for_profile, format_config
from ehrseq.data.synthetic import OWN_CODE_SHARE
from ehrseq.data.task import prepare_survival_task, shared_task_config
from ehrseq.data.tensors import LengthBucketSampler, collate_flat
from ehrseq.evaluate import NOT_RESOLVED
from ehrseq.mlm_ablation import (
    VARIANTS,
    frequency_baseline_scores,
    frequency_priors,
    load_or_pretrain,
    mlm_ablation,
    pretrain_loader,
)
from ehrseq.plotting import apply_style
from ehrseq.pretrain import TokenIds, evaluate_masked_codes


@dataclass(frozen=True)
class Config:
    profile: str = "book"
    seed: int = 7  # seed of the setup (the ablation runs use the recipe's seeds)
    eval_batch_size: int = 256  # patients per evaluation batch
    # test patients on which masked-code modelling is scored
    heldout_patients: int = 2000


cfg = for_profile(Config, {})
# widths, embeddings, pretraining schedule and seeds of every run (the same in 4c)
recipe = mlm_ablation()
device = ehrseq.get_device()
rng = ehrseq.seed_everything(cfg.seed)
apply_style()
print(format_config(cfg))
print(format_config(recipe))
print(f"device: {device}; CPU threads: {torch.get_num_threads()} (OMP_NUM_THREADS)")
chapter_start = time.perf_counter()


keep("epochs", recipe.epochs)
keep("epochs_text", plural(recipe.epochs, "epoch"))  # "1 epoch", "4 epochs"
keep("n_seeds", len(recipe.seeds))
keep("seeds_text", plural(len(recipe.seeds), "seed"))
# the generator's parameter, quoted in the discussion
keep("own_code_share", OWN_CODE_SHARE)

# %% [markdown]
# On a GPU the pretraining runs of the ablation are not bit-for-bit reproducible (atomic adds
# in the backward pass of embeddings and attention are scheduled differently from run to
# run); on a CPU they are. The seeds still decide the initial weights, the batch order and
# the masks.
#
# ## Data
# Every modelling chapter uses the same survival task: the same cohort, splits, prediction
# times and vocabulary (`prepare_survival_task`). This chapter needs no survival labels, only
# the token tensors, but it takes them from the same task so that the encoder it studies
# reads exactly what the survival models of later chapters read.

# %%
task = prepare_survival_task(shared_task_config())  # the same task in every chapter
vocab = task.vocab
ids = TokenIds.from_vocab(vocab)
n_pretrain = recipe.n_patients(task)  # the first training patients (all in `full`)
keep("n_pretrain", n_pretrain)
# e.g. "2 years"
keep("history_text", plural(task.config.history_days / 365.25, "year", ".0f"))
keep("n_heldout", min(cfg.heldout_patients, len(task.split["test"])))
task.summary()

# %% [markdown]
# **What we pretrain on.** The training split, with each patient's history *before the
# prediction time* (the shared task's tensors), not the full histories that
# `build_sequences(..., prediction_times=None)` would give. Three reasons: these are the very
# tensors the survival models fine-tune on later; nothing from after any prediction time
# enters the encoder, so no later chapter has to ask whether pretraining saw the future; and
# they are about a third of the tokens of the full histories, which keeps the
# {glue:text}`n_runs` pretraining runs within a CPU budget. The price is real: the histories
# cover {glue:text}`history_text`, so a patient's age changes by no more than that along the
# sequence, and no gap between two events is longer. The held-out patients are the first
# {glue:text}`n_heldout:,` patients of the test split, never seen by the vocabulary or the
# pretraining (the shared test split is sized for survival events; masked-code scores need
# masked positions, of which these patients hold plenty).

# %% [markdown]
# ## Train: what does each embedding contribute?
# The way to find out is to take one away and measure the damage. We pretrain one encoder per
# **variant** of the input layer, with masked-code modelling (BERT's objective, the subject
# of the next chapter: hide 15 % of the codes, predict them from the rest), the same data
# ({glue:text}`n_pretrain:,` training patients), the same budget of
# {glue:text}`epochs_text` and {glue:text}`seeds_text` per variant, through `ehrseq.pretrain.pretrain` with `schedule="mlm"`.
#
# Each encoder is then scored on the **held-out test patients**, on the same masked
# positions for every model: the cross-entropy of the hidden codes (lower is better) and
# the top-1 and top-10 accuracy (the true code is the best guess, or among the ten best).
# Two yardsticks that ignore the patient. The **code-frequency baseline** always guesses the
# most frequent training codes. The **domain-frequency baseline** is sharper: it knows the
# domain of the hidden token (as the model does, through the domain embedding, which masking
# leaves in place) and guesses the most frequent training codes *of that domain*. A model
# that only matches the second has learned the domain prior and nothing about the patient;
# what it gains beyond it comes from the context.
#
# Each run is an artefact (`load_or_pretrain` of `ehrseq.mlm_ablation`, through
# `load_or_train`, keyed by the task, the encoder config and the training recipe), so a
# second build of the book reads the weights from disk, and so does
# {doc}`04c_inside_the_embedding_tables`. The variants are the library's `VARIANTS`, each
# a change to the `BehrtConfig` of the encoder with every embedding:

# %%
variants = dict(VARIANTS)  # {name: changes to the full encoder's BehrtConfig}, a copy
for name, changes in variants.items():  # one setting per line: no line runs off the page
    settings = [f"{key}={value!r}" for key, value in changes.items()] or ["(none)"]
    print(f"{name:28}{settings[0]}")
    for setting in settings[1:]:
        print(f"{'':28}{setting}")
train_loader = pretrain_loader(task, recipe)  # length-bucketed, shuffled batches
test_set = task.dataset("test")
heldout = np.arange(min(cfg.heldout_patients, len(test_set)))  # the first test patients
test_loader = DataLoader(
    Subset(test_set, heldout),
    batch_sampler=LengthBucketSampler(
        test_set.lengths[heldout], cfg.eval_batch_size, shuffle=False
    ),
    collate_fn=collate_flat,
)
# add-one code frequencies of the training patients: overall, and within each domain
priors = frequency_priors(train_loader, ids)  # counts (V,), log-priors (V,), (O, V)
counts = priors["counts"]  # (vocab,) training frequency of each code
# the masks of evaluate_masked_codes(..., seed=0): every encoder is scored on them
baselines = frequency_baseline_scores(test_loader, ids, priors, device=device)


def run_variant(overrides: dict, seed: int) -> dict:
    """Pretrain one encoder by masked-code modelling (or load it); score it on test."""
    run = load_or_pretrain(task, recipe, overrides, seed, loader=train_loader)
    history = pd.read_csv(run.folder / "metrics.csv")
    scores = evaluate_masked_codes(run.model, test_loader, ids, counts=counts)
    assert scores["n_masked"] == baselines["n"]  # the same masked positions
    return {
        **{m: scores[m] for m in ("loss", "top1", "top10", "n_masked")},
        "baseline_loss": baselines["prior"],
        **{f"baseline_{m}": scores[f"baseline_{m}"] for m in ("top1", "top10")},
        "domain_baseline_loss": baselines["domain"],
        **{f"domain_baseline_{m}": baselines[f"domain_{m}"] for m in ("top1", "top10")},
        "first_train_loss": float(history["train_loss"].iloc[0]),
        "last_train_loss": float(history["train_loss"].iloc[-1]),
        "train_seconds": float(history["time_s"].sum()),
    }


runs = []
ablation_start = time.perf_counter()
for name, overrides in variants.items():
    for seed in recipe.seeds:
        runs.append({"variant": name, "seed": seed, **run_variant(overrides, seed)})
ablation_seconds = time.perf_counter() - ablation_start
runs = pd.DataFrame(runs)
keep("n_runs", len(runs))
keep("ablation_minutes", ablation_seconds / 60)
keep("train_minutes", float(runs["train_seconds"].sum()) / 60)
keep("seconds_per_run", float(runs["train_seconds"].mean()))
keep("n_masked", int(runs["n_masked"].iloc[0]))
shown = runs[["variant", "seed", "loss", "top1", "top10", "train_seconds"]].head()
shown.round({"loss": 3, "top1": 3, "top10": 3, "train_seconds": 1})  # no float noise

# %% [markdown]
# Training the {glue:text}`n_runs` encoders took {glue:text}`train_minutes:.1f` minutes
# ({glue:text}`seconds_per_run:.0f` s each, on the machine that trained them); this build
# spent {glue:text}`ablation_minutes:.1f` minutes on the whole section, loading what was on
# disk. Every run must have learned something: its training loss fell, and on held-out
# patients it beats the code-frequency baseline on all three scores.
# {glue:text}`learned_check`

# %%
assert np.isfinite(runs[["loss", "top1", "top10", "last_train_loss"]].to_numpy()).all()
fell = runs["last_train_loss"] < runs["first_train_loss"]
beats = (
    (runs["loss"] < runs["baseline_loss"])
    & (runs["top1"] > runs["baseline_top1"])
    & (runs["top10"] > runs["baseline_top10"])
)
if fell.all() and beats.all():
    learned_check = f"All {len(runs)} runs do (asserted below)."
else:  # only the smoke profile gets here: the asserts below hold everywhere else
    fell_text = (
        f"the training loss fell in {int(fell.sum())} of the {len(runs)} runs"
        if recipe.epochs > 1
        else "with a single epoch each run logs one training loss, so none can fall"
    )
    learned_check = (
        f"In the {cfg.profile} profile that is not asserted: {fell_text}, and "
        f"{int(beats.sum())} of the {len(runs)} runs beat the code-frequency baseline "
        "on all three scores."
    )
    if not beats.all():
        learned_check += " Read the comparisons below as a rehearsal of the method."
keep("learned_check", learned_check)
if cfg.profile != "smoke":  # one epoch on a tiny cohort (smoke) need not get there
    assert fell.all() and beats.all()

# %% [markdown]
# ## Evaluate
# ### The ablation table
# Per variant, the mean over seeds and a 95 % confidence interval for that mean (Student's
# $t$ with {glue:text}`seeds_text`, so wide: it reflects initialisation, batch order and
# masking, not the choice of held-out patients, which is fixed; where every seed gives the
# same value the table says so, rather than show an interval of no width). The last two
# rows are the baselines, identical for every run.


# %%
def mean_ci(values: pd.Series) -> tuple[float, float]:
    """Mean and the half-width of its 95 % t-interval (NaN with a single value)."""
    v = values.to_numpy(float)
    if len(v) < 2:
        return float(v.mean()), float("nan")
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(half)


metrics = {"loss": "held-out loss", "top1": "top-1", "top10": "top-10"}
summary_rows = []
for name in variants:
    r = runs[runs["variant"] == name]
    entry = {"variant": name}
    for m in metrics:
        entry[m], entry[f"{m}_ci"] = mean_ci(r[m])
    summary_rows.append(entry)
baseline = {m: float(runs[f"baseline_{m}"].iloc[0]) for m in metrics}
domain_baseline = {m: float(runs[f"domain_baseline_{m}"].iloc[0]) for m in metrics}
summary_rows.append({"variant": "code-frequency baseline", **baseline})
summary_rows.append({"variant": "domain-frequency baseline", **domain_baseline})
ablation = pd.DataFrame(summary_rows).set_index("variant")


def show(mean: float, half: float, pct: bool) -> str:
    """``mean ± half``; no interval of zero width where the seeds merely agree."""

    def f(v: float) -> str:
        text = f"{100 * v:.1f}" if pct else f"{v:.3f}"
        return "0" + text[2:] if float(text) == 0 else text  # "-0.0" reads as "0.0"

    if not np.isfinite(half):  # a single seed
        return f(mean)
    if half == 0:  # every seed gave the same value: no spread to show
        return f"{f(mean)} (same in every seed)"
    # non-breaking spaces: an estimate and its interval stay on one line
    tiny = "0.1" if pct else "0.001"
    spread = f(half) if float(f(half)) > 0 else f"<{tiny}"
    return f"{f(mean)}\u00a0±\u00a0{spread}"


ablation_table = pd.DataFrame(
    {
        label + (" (%)" if m != "loss" else ""): [
            show(r[m], r[f"{m}_ci"], m != "loss") for _, r in ablation.iterrows()
        ]
        for m, label in metrics.items()
    },
    index=ablation.index,
)
full_row = ablation.loc["all embeddings"]
ctx_gain = {m: 100 * (full_row[m] - domain_baseline[m]) for m in ("top1", "top10")}
keep("ctx_gain_top1", ctx_gain["top1"])
keep("ctx_gain_top10", ctx_gain["top10"])


# the same gains seed by seed: is each clearly above zero over the seeds?
full_runs = runs[runs["variant"] == "all embeddings"]
words, clear = {}, []
for m, label in (("top1", "top-1"), ("top10", "top-10")):
    gain, half = mean_ci(100 * (full_runs[m] - domain_baseline[m]))
    side = "above" if gain > 0 else "below"
    # a gap shown as 0.0 is no gap; the words hold whatever the numbers are
    words[m] = None if f"{abs(gain):.1f}" == "0.0" else f"{abs(gain):.1f} points {side}"
    if words[m] and gain > 0 and not half >= gain:  # NaN half (one seed): no interval
        clear.append(label)
budget = (
    f"The full encoder's top-1 is {words['top1'] or 'level with'} the "
    f"domain-frequency baseline (top-10: {words['top10'] or 'level with it'}). "
)
epochs_text = plural(recipe.epochs, "epoch")
if len(clear) == 2:
    budget += (
        "That margin is everything these encoders learned from the context in "
        f"{epochs_text}, and the order embeddings can only matter "
        "within it. Longer pretraining widens it, and may reorder the small "
        "differences (exercise 1)."
    )
elif all(w and w.endswith("below") for w in words.values()):
    # a short run on a small cohort (smoke) need not get past the baseline
    budget += (
        f"After {epochs_text} on {n_pretrain:,} patients the encoder "
        "has not yet learned all that the domain of a hidden token gives away, let "
        "alone much from the context, so there is hardly a margin in which the order "
        "embeddings could matter: the differences above are between encoders that have "
        "barely started. "
        "Longer pretraining (exercise 1) gives them something to compare."
    )
else:  # level with the baseline, or a margin the seeds cannot tell from zero
    which = f"Only the {clear[0]} margin is" if clear else "Neither margin is"
    budget += (
        f"{which} clearly above zero over the seeds: in {epochs_text} these encoders "
        "have learned little from the context beyond the domain of the hidden token, "
        "and the order embeddings can only matter within that little. Longer "
        "pretraining (exercise 1) gives them something to compare."
    )
keep("budget", Markdown(budget))
for m in metrics:
    keep(f"all_{m}", float(ablation.loc["all embeddings", m]))
    keep(f"base_{m}", baseline[m])
    keep(f"dom_{m}", domain_baseline[m])
ablation_table

# %% mystnb={"figure": {"name": "fig-ablation", "caption": "Masked-code modelling on held-out patients, per variant of the input layer: mean over seeds with its 95 % confidence interval (bar; for the accuracies, cut at 0 and 100 %) and each seed (dots). Dashed: the code-frequency baseline; dash-dotted: the domain-frequency baseline; dotted: the encoder with all embeddings. Lower loss and higher accuracy are better."}}
names = list(variants)
fig, axes = plt.subplots(1, 3, figsize=(10, 4.2), sharey=True, layout="constrained")
for ax, (m, label) in zip(axes, metrics.items(), strict=True):
    scale = 1.0 if m == "loss" else 100.0
    y = np.arange(len(names))[::-1]
    for yi, name in zip(y, names, strict=True):
        seeds_m = runs.loc[runs["variant"] == name, m].to_numpy() * scale
        ax.plot(seeds_m, np.full(len(seeds_m), yi), "o", color="C0", alpha=0.35, ms=4)
        row = ablation.loc[name]
        mean, half = row[m] * scale, row[f"{m}_ci"] * scale
        lo, hi = mean - half, mean + half
        if m != "loss":  # an accuracy lies in [0, 100] %, and so does its interval
            lo, hi = max(lo, 0.0), min(hi, 100.0)
        ax.errorbar(
            mean,
            yi,
            xerr=[[mean - lo], [hi - mean]] if np.isfinite(half) else None,
            fmt="s",
            color="C0",
            capsize=3,
            ms=5,
        )
    for value, ls, color, text in (
        (baseline[m], "--", "C3", "code-frequency baseline"),
        (domain_baseline[m], "-.", "C1", "domain-frequency baseline"),
        (ablation.loc["all embeddings", m], ":", "0.3", "all embeddings"),
    ):
        ax.axvline(value * scale, ls=ls, color=color, label=text)
    ax.set_xlabel(label + (" (nats per masked code)" if m == "loss" else " (%)"))
    ax.set_yticks(y, names)
fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=3)
plt.show()

# %% [markdown]
# ### What removing a term changes
# The differences between variants are what the ablation is about, so we look at them
# directly. Each seed of a variant is paired with the same seed of the full
# encoder (same batches, same masks, same held-out positions), and the paired differences
# give a sharper interval than the two means would.

# %%
full = runs[runs["variant"] == "all embeddings"].set_index("seed")
diff_rows = []
for name in names[1:]:
    r = runs[runs["variant"] == name].set_index("seed")
    entry = {"variant": name}
    for m in metrics:
        entry[f"Δ {m}"], entry[f"Δ {m} ci"] = mean_ci(r[m] - full.loc[r.index, m])
    diff_rows.append(entry)
diffs = pd.DataFrame(diff_rows).set_index("variant")


def verdict(row: pd.Series) -> str:
    """Read the paired loss difference: called only when its interval excludes 0."""
    d, half = row["Δ loss"], row["Δ loss ci"]
    if not np.isfinite(half) or abs(d) <= half:
        return NOT_RESOLVED
    return "worse than all embeddings" if d > 0 else "better than all embeddings"


diffs["verdict"] = diffs.apply(verdict, axis=1)
diffs_table = pd.DataFrame(
    {
        column: [
            show(d, h, m != "loss")
            for d, h in zip(diffs[f"Δ {m}"], diffs[f"Δ {m} ci"], strict=True)
        ]
        for m, column in (
            ("loss", "Δ held-out loss"),
            ("top1", "Δ top-1 (points)"),
            ("top10", "Δ top-10 (points)"),
        )
    }
    | {"verdict (loss)": diffs["verdict"]},
    index=diffs.index,
)
for name in names[1:]:
    slug = name.split(" (")[0].replace(" ", "_").replace(",", "")
    keep(f"d_loss_{slug}", float(diffs.loc[name, "Δ loss"]))
    keep(f"d_top1_{slug}", float(100 * diffs.loc[name, "Δ top1"]))
    keep(f"verdict_{slug}", diffs.loc[name, "verdict"])
worse = [n for n in names[1:] if diffs.loc[n, "verdict"].startswith("worse")]
better = [n for n in names[1:] if diffs.loc[n, "verdict"].startswith("better")]
same = [n for n in names[1:] if diffs.loc[n, "verdict"] == NOT_RESOLVED]


def listing(items: list[str]) -> str:
    return ", ".join(f"*{i}*" for i in items) if items else "none"


keep(
    "verdicts",
    Markdown(
        "Worse than the full encoder, with an interval that excludes zero: "
        f"{listing(worse)}. "
        f"Better: {listing(better)}. Not resolved: {listing(same)}."
    ),
)
diffs_table

# %% [markdown]
# {glue:md}`verdicts`
#
# How to read this on *this* cohort. Two facts about the generator (chapter 1) decide most of
# it. A visit is a bundle: a diagnosis comes with the drug and the procedure that treat it
# and the labs that check it, on the same day. And a chronic disease is recorded *the same
# way again and again*: a record of a chronic disease uses the patient's own code for it with
# probability {glue:text}`own_code_share:.0%` (and by chance otherwise), and a treated patient gets the same drug at every treated visit. So the best
# clue to a hidden code is usually a copy of it elsewhere in the record, whatever visit it
# sits in; knowing *which* visit a code shares matters mainly for acute episodes (the
# antibiotic given at the pneumonia visit), a small share of the tokens.
#
# - **Domain** ({glue:text}`d_loss_no_domain:+.3f` nats, top-1
#   {glue:text}`d_top1_no_domain:+.1f` points when removed: {glue:text}`verdict_no_domain`). Under masking the domain is all
#   that is left of the hidden token: knowing it is a drug rules out every condition and lab
#   of the vocabulary. The next chapter returns to this: a genuine hint, but one that makes
#   masked-code accuracy partly a test of the domain.
# - **Visit, position and time** all describe the order and grouping of the record: the
#   visit index names the visit, the positions of the `[SEP]` tokens imply it, a gap of 0
#   days means "same visit as the previous token". Removing one changes the loss by
#   {glue:text}`d_loss_no_visit:+.3f` (visit: {glue:text}`verdict_no_visit`),
#   {glue:text}`d_loss_no_position:+.3f` (position: {glue:text}`verdict_no_position`) and
#   {glue:text}`d_loss_no_time:+.3f` (time: {glue:text}`verdict_no_time`); removing all three, which turns
#   the record into a bag of codes, by {glue:text}`d_loss_no_visit_position_or_time:+.3f`
#   ({glue:text}`verdict_no_visit_position_or_time`). With records that repeat themselves,
#   a bag of codes already holds much of what masked-code modelling can use, and in a short
#   pretraining every extra table is also one more random vector added to each code.
# - **Age** ({glue:text}`d_loss_no_age:+.3f` removed, {glue:text}`verdict_no_age`;
#   {glue:text}`d_loss_age_bins_of_5_years:+.3f` with five-year bins; a negative difference
#   means a *lower* loss than the full encoder's). Age raises the generator's rates of
#   chronic diseases and visits, but the codes say which diseases a patient has far more
#   directly than age does.
# - **Sinusoidal instead of learned positions**
#   ({glue:text}`d_loss_sinusoidal_position:+.3f`, {glue:text}`verdict_sinusoidal_position`).
#   Whatever the verdict, the two tables differ in scale
#   ({doc}`04c_inside_the_embedding_tables` measures by how much).
#
# What the story does *not* encode matters as much. Time enters the generator through
# monthly hazards: a myocardial infarction within the last 12 months, a pneumonia within
# the last 3, a visit rate that rises with the number of active diseases. None of that
# decides *which code is hidden* given the rest of the record, which is all masked-code
# modelling asks. An embedding that does not help this objective can still help the
# survival task, where the time since an infarction changes the hazard; the survival
# chapters measure that directly.
#
# Finally, the budget. {glue:md}`budget`

# %%
chapter_seconds = time.perf_counter() - chapter_start
keep("chapter_minutes", chapter_seconds / 60)
print(f"chapter ran in {chapter_seconds:.0f} s ({cfg.profile} profile)")

# %% [markdown]
# ## Summary
# - Pretrained by masked-code modelling for {glue:text}`epochs_text`, the full encoder
#   reaches a held-out loss of {glue:text}`all_loss:.3f` against {glue:text}`base_loss:.3f`
#   for the code-frequency baseline and {glue:text}`dom_loss:.3f` for the domain-frequency
#   baseline; top-1 {glue:text}`all_top1:.1%` against {glue:text}`base_top1:.1%` and
#   {glue:text}`dom_top1:.1%`; top-10 {glue:text}`all_top10:.1%` against
#   {glue:text}`base_top10:.1%` and {glue:text}`dom_top10:.1%` ({glue:text}`seeds_text`,
#   {glue:text}`n_masked:,` masked test positions).
# - {glue:md}`verdicts` Removing the domain, what is left of a masked token, changes the
#   loss by {glue:text}`d_loss_no_domain:+.3f` nats ({glue:text}`verdict_no_domain`);
#   removing visit, position and time together by
#   {glue:text}`d_loss_no_visit_position_or_time:+.3f` nats
#   ({glue:text}`verdict_no_visit_position_or_time`). The generator's time story (recent
#   drugs, lab trends, disease duration) is about the outcome hazard, which masked-code
#   modelling never sees.
# - The whole chapter ran in {glue:text}`chapter_minutes:.1f` minutes on this machine.
#
# ## Exercises
# 1. Train longer (`epochs=12`) for the full encoder and the bag of codes (no visit,
#    position or time). Does the gap between them change? Then pretrain on full histories:
#    `build_sequences(events, person, None, strategy="visit", max_len=128, add_cls=True,
#    add_sep=True)` for the training patients, encoded with `task.vocab`. Does the time
#    embedding start to matter once histories span the whole record rather than the
#    {glue:text}`history_text` before the prediction time?
# 2. Replace `"log_bins"` by `"log_linear"` for the time gap. Which is better here, and how
#    many parameters does each cost?
# 3. BEHRT used the alternating segment instead of the visit index. Add
#    `{"visit_embedding": "segment"}` to the ablation. Does knowing the visit *number* add
#    anything to knowing where visits start and end?
# 4. Remove the domain *and* keep the loss honest: the next chapter shows that the domain of
#    a masked token is a hint. Compute top-1 accuracy among codes of the right domain only,
#    for the model with and without the domain embedding.

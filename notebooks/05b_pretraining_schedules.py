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
# # Pretraining schedules
#
# ## Outline
# {doc}`05_pretraining_objectives` wrote two self-supervised objectives by hand and checked
# them against `ehrseq.pretrain`: **masked-code modelling** (MLM), BERT's objective
# {cite}`devlin2019bert` as BEHRT used it {cite}`li2020behrt`, which hides some codes and
# predicts them from everything else, past *and* future; and **next-visit prediction**,
# which predicts the set of codes of visit $t+1$ from the visits up to $t$ under the
# visit-causal mask, the way a survival model will read a history. It also built the model
# that carries both heads on one encoder, and a next-visit head with a **copy term** over
# the history. This chapter trains them and asks what each teaches.
#
# We will pretrain with each objective alone, with both at once (**joint**) and one after
# the other (**sequential**), and the next-visit objective once more with the copy head;
# compare them on held-out patients with lookup-table baselines, the sharpest of which
# simply repeat the patient's own record (the last visit, the chronic codes); and find the
# better of the two schedules that train both objectives. Two chapters load the encoders
# trained here: {doc}`05d_next_visit_vs_history` tests, with paired intervals over the
# test patients, whether the next-visit heads beat the rules that read the same history
# (its verdicts go to the book's results page), and {doc}`05c_inside_the_encoder` looks
# inside the learned code embedding of the best encoder found here.

# %% [markdown]
# ## Setup
# One config per chapter; `EHRSEQ_PROFILE` (`smoke`, `book`, `full`) picks its size.

# %%
import time
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown
from myst_nb import glue

import ehrseq
from ehrseq.book import keep, keep_table, plural, start_claims
from ehrseq.config import for_profile, format_config
from ehrseq.data.task import prepare_survival_task, shared_task_config
from ehrseq.next_visit import (
    chronic_codes,
    most_frequent,
    recurring_codes,
    repeat_codes,
    repeat_last_visit,
    repeat_rate_scorer,
    repeat_rates,
)
from ehrseq.plotting import apply_style
from ehrseq.pretrain import TokenIds, code_counts, code_domains, frequency_rank
from ehrseq.pretrained import (
    book_encoder_config,
    book_recipe,
    load_or_pretrain,
    load_or_rank_masked_codes,
    load_or_score_next_visit,
)

CHAPTER = "05b_pretraining_schedules"


# the encoder and the pretraining recipe are the book's (ehrseq.pretrained),
# not this chapter's
@dataclass(frozen=True)
class Config:
    profile: str = "book"
    seed: int = 7  # seed of the setup (every pretraining run has the recipe's seed)
    eval_batch_size: int = 256  # patients per evaluation batch
    k: int = 10  # recall@k of the next visit; top-k of the masked codes
    # recurrence thresholds (validation)
    chronic_shares: tuple[float, ...] = (0.3, 0.5, 0.7)


# every profile alike; the recipe's size follows the profile
cfg = for_profile(Config, {})
# the book's pretraining recipe; the runs below change its schedule
recipe = book_recipe()
device = ehrseq.get_device()
rng = ehrseq.seed_everything(cfg.seed)
apply_style()
print(format_config(cfg))
print(f"device: {device}; CPU threads: {torch.get_num_threads()} (OMP_NUM_THREADS)")
chapter_start = time.perf_counter()
# no claims here (05d_next_visit_vs_history records them):
# clears those of an older build
start_claims(CHAPTER)

keep("epochs", recipe.epochs)
keep("epochs_text", plural(recipe.epochs, "epoch"))  # "2 epochs"
keep("k", cfg.k)

# %% [markdown]
# ## Data
# The survival task every modelling chapter shares (`shared_task_config()`: the same people,
# splits and vocabulary, so the encoders pretrained here are the ones later chapters load),
# for its token tensors: the training split's histories before the prediction time are the
# pretraining data ({doc}`04b_embedding_ablation` says why), the validation split watches the
# learning curves and picks between models, and the test split, with its extra test-only
# people, is held out for the final scores. The baselines count code frequencies on the
# training tokens.

# %%
task = prepare_survival_task(shared_task_config())
vocab = task.vocab
ids = TokenIds.from_vocab(vocab)
train_loader = task.loader("train", recipe.batch_size)
# patients per batch of each split's scores: validation batched like training
BATCH = {"val": recipe.batch_size, "test": cfg.eval_batch_size}
counts = code_counts(train_loader, ids)  # (vocab,) training frequency of each code
keep("vocab_size", len(vocab))
keep("n_steps", recipe.epochs * len(train_loader))  # optimiser steps of a run
task.summary()

# %% [markdown]
# ## Model
# The model of {doc}`05_pretraining_objectives`: `BehrtForPretraining` with BERT's
# masked-code head (its output layer tied to the code embedding) and a next-visit head on
# the state of each visit's `[SEP]`, the linear one or the copy head as each run's recipe
# says, on the book's pretrained BEHRT encoder (`book_encoder_config(task)` from
# `ehrseq.pretrained`, the encoder config that {doc}`05c_inside_the_encoder` and
# {doc}`08_finetuning_strategies` load too), with the book's recipe `book_recipe()` (each
# run below changes its schedule or head):

# %%
encoder_cfg = book_encoder_config(task)
keep("init_std", encoder_cfg.init_std)
print(format_config(encoder_cfg))
print(format_config(recipe))

# %% [markdown]
# ## Train
# ### Four schedules, and the copy head
# - `mlm`: masked-code modelling alone, BEHRT's pretraining;
# - `next_visit`: next-visit prediction alone;
# - `joint`: both losses every step, $\mathcal L = \mathcal L_\text{MLM} + w\,\mathcal L_\text{NV}$;
# - `sequential`: the first half of the epochs (rounded down) with MLM, the rest with next-visit
#   prediction, starting from the MLM weights;
# - `next_visit_copy`: `next_visit` again, the same encoder, epochs and batches, with the
#   copy head in place of the linear one: the ablation of the copy term.
#
# Every schedule gets the same {glue:text}`epochs_text` over the same batches. One choice
# needs a word: the library *averages* the next-visit cross-entropy over the
# {glue:text}`vocab_size` vocabulary entries, so that term is hundreds of times smaller than
# the masked-code loss and, summed with it, would hardly move the shared encoder. We weight
# it by $w = |V|$, which turns the average over codes into a sum over codes (one binary
# decision per code, as in Doctor AI {cite}`choi2016doctor`), and use the same weight in every
# schedule (the book's recipe leaves `next_visit_weight` at None, which means $|V|$).
#
# A second choice concerns the start. BERT initialises every weight with a standard
# deviation of 0.02. In a small encoder trained for few steps ({glue:text}`n_steps:,` per
# run here) that start is a trap for next-visit prediction: the embeddings leave their
# LayerNorm with unit scale while the attention and feed-forward branches start tens of
# times smaller, so the state after visit $t$ is at first almost only the `[SEP]` token's
# own embedding. The quickest way down the loss is then to learn the output biases (every
# code's overall frequency), and a model can sit there for hundreds of steps, predicting the
# same codes for everyone. Starting the
# weights at {glue:text}`init_std` lets the branches that read the history matter from the
# first step (exercise 2 goes back to 0.02). The copy head starts where a lookup table
# ends: its biases are set so that, before any step, it predicts each code with the
# training rate at which the code comes back when it is already in the history, and
# appears when it is not (the repeat rates of the Evaluate section), as the survival heads
# of later chapters start at the life table.
#
# Each pretrained model is an **artefact**: `load_or_pretrain` (from `ehrseq.pretrained`)
# loads it when a file keyed by a hash of everything that decides its weights (the task,
# the encoder config, the recipe) is present, and trains it otherwise. Re-running the
# chapter costs nothing; changing any setting trains afresh.

# %%
SCHEDULES = ("mlm", "next_visit", "joint", "sequential")
RUNS = (*SCHEDULES, "next_visit_copy")  # the four schedules and the copy-head ablation
recipes = {s: book_recipe(schedule=s) for s in SCHEDULES}
recipes["next_visit_copy"] = book_recipe(schedule="next_visit", head="copy")


pretrained, histories, loaded, seconds = {}, {}, {}, {}
for run in RUNS:
    t0 = time.perf_counter()
    result = load_or_pretrain(task, encoder_cfg, recipes[run])
    seconds[run] = time.perf_counter() - t0
    pretrained[run] = result  # the model, and the artefact it came from
    histories[run] = result.history
    loaded[run] = result.loaded
    result.model.to(device).eval()
# the recipe's None, resolved: the same in every run
nv_weight = result.recipe.next_visit_weight
assert nv_weight == ids.vocab_size  # the average over codes becomes a sum over codes
keep("nv_weight", nv_weight)
build_minutes = sum(seconds.values()) / 60  # this build: ~0 when loaded from disk
keep("build_minutes", build_minutes)
n_trained = len(RUNS) - sum(loaded.values())
if n_trained == 0:
    build_text = f"loading all {len(RUNS)} runs from disk, with no pretraining"
elif n_trained == len(RUNS):
    took = f"{build_minutes:.1f} minutes"
    build_text = f"of which pretraining all {len(RUNS)} runs took {took}"
else:
    runs = plural(n_trained, "run")
    took = f"{build_minutes:.1f} minutes"
    build_text = f"of which pretraining the {runs} not on disk took {took}"
keep("build_text", build_text)
keep("train_minutes", sum(float(h["time_s"].sum()) for h in histories.values()) / 60)
rounded = {run: round(s, 1) for run, s in seconds.items()}  # no 6-digit noise
pd.DataFrame({"loaded from disk": loaded, "seconds": rounded}).rename_axis("schedule")

# %% [markdown]
# ### Learning curves
# `fit` records the training and validation losses of every epoch. The validation losses use
# the same masks every epoch, so their curves are comparable across epochs.

# %% mystnb={"figure": {"name": "fig-learning-curves", "caption": "Validation losses per epoch of each schedule. Left: masked-code cross-entropy (nats per masked code). Right: next-visit binary cross-entropy, averaged over the vocabulary. The sequential schedule switches objectives after the first half of the epochs (rounded down), so each of its curves covers only the epochs of its own phase; next_visit_copy is next_visit with the copy head."}}
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6), layout="constrained")
for i, schedule in enumerate(RUNS):
    h = histories[schedule]
    for ax, col in ((ax1, "val_mlm_loss"), (ax2, "val_nv_loss")):
        if col in h and h[col].notna().any():
            ax.plot(h["epoch"], h[col], "o-", color=f"C{i}", label=schedule, ms=4)
ax1.set_ylabel("masked-code loss (nats)")
ax2.set_ylabel("next-visit loss (BCE per code)")
for ax in (ax1, ax2):
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))  # whole epochs
legend = [p for ax in (ax1, ax2) for p in zip(*ax.get_legend_handles_labels())]
handles = {label: line for line, label in legend}
fig.legend(  # below both panels, in the order of RUNS, clear of the curves
    [handles[r] for r in RUNS if r in handles],
    [r for r in RUNS if r in handles],
    loc="outside lower center",
    ncol=len(RUNS),
)
plt.show()

# %%
for schedule, h in histories.items():
    for col in ("train_mlm_loss", "train_nv_loss"):
        seen = h[col].dropna() if col in h else pd.Series(dtype=float)
        assert np.isfinite(seen).all()
        if len(seen) > 1:  # every objective a schedule trains goes down
            assert seen.iloc[-1] < seen.iloc[0], (schedule, col)

# %% [markdown]
# ## Evaluate
# ### Against baselines
# Every model is scored on the held-out test patients, all on the same masked positions
# and the same (patient, visit) pairs, so that two models can be compared pair by pair:
# - masked codes: top-1 and top-{glue:text}`k` accuracy;
# - next visit: recall@{glue:text}`k`, the share of the next visit's codes found among the
#   {glue:text}`k` codes the model ranks highest, and **average precision** (AP: the
#   precision at the rank of each true code, averaged over the true codes), which reads
#   the whole ranking rather than its top {glue:text}`k`.
#
# The scores are artefacts too: `load_or_rank_masked_codes` and
# `load_or_score_next_visit` (from `ehrseq.pretrained`) key each model's or rule's table
# by the pretrained run or the rule's inputs, the split and its batches, so
# {doc}`05d_next_visit_vs_history` loads the tables scored here instead of scoring them
# again.
#
# A schedule that never trained a head is not scored on that head's task (its head is
# random, and its score would say nothing). The baselines are lookup tables, counted on the
# training patients:
# - **code frequency**: always the most frequent training codes, for everyone;
# - **domain frequency** (masked codes): the masked token keeps its domain embedding, so the
#   model knows it is hiding, say, a drug; guessing the most frequent training codes *of
#   that domain* uses exactly that hint and nothing about the patient;
# - **repeat last visit** (next visit): the codes of visit $t$ again, then the most frequent
#   others;
# - **repeat chronic codes** (next visit): every code of the patient's history up to $t$ that
#   belongs to a chronic condition or its care, then the most frequent others. "Chronic" is
#   read from the training data, not from the generator: a code is chronic when, of the
#   training patients who have it and a visit after its first record (at least
#   {glue:text}`min_eligible` of them), at least a share $s$ have it again at a later visit
#   (diagnoses, refills and monitoring labs recur; an acute problem does not). The share
#   $s$ is chosen among {glue:text}`chronic_grid` on the validation patients (here
#   {glue:text}`chronic_share`);
# - **repeat rate** (next visit): per code, two numbers counted on the training pairs: how
#   often it appears in the next visit when the patient already had it in a visit up to
#   $t$, and when not; rank the codes by the number that applies.

# %%
trained_heads = {
    "mlm": {"mlm"},
    "next_visit": {"next_visit"},
    "joint": {"mlm", "next_visit"},
    "sequential": {"mlm", "next_visit"},
    "next_visit_copy": {"next_visit"},
}
MLM_RUNS = [r for r in RUNS if "mlm" in trained_heads[r]]
NV_RUNS = [r for r in RUNS if "next_visit" in trained_heads[r]]
recall_col = f"recall@{cfg.k}"

code_domain = code_domains(train_loader, ids.vocab_size)  # (vocab,) domain of each code
recurrence = recurring_codes(train_loader, ids)  # per code: eligible, recurred, share


def chronic_at(share: float) -> torch.Tensor:
    """(vocab,) bool: codes that recur in at least `share` of the eligible patients."""
    return chronic_codes(recurrence, share, task.config.min_frequency)


# (vocab,) each; the copy head starts here
rate_seen, rate_unseen = repeat_rates(train_loader, ids)
baselines = {
    "baseline: code frequency": most_frequent(counts),
    "baseline: repeat last visit": repeat_last_visit(counts),
    "baseline: repeat rate": repeat_rate_scorer(rate_seen, rate_unseen),
}


def masked_ranks(split: str) -> pd.DataFrame:
    """Rank of the true code at every masked position (rows), per model and baseline."""
    runs = {r: pretrained[r] for r in MLM_RUNS}
    ranks = load_or_rank_masked_codes(
        task, split, runs, batch_size=BATCH[split], device=device
    )  # fmt: skip
    first = ranks[MLM_RUNS[0]]
    for r in MLM_RUNS:  # the same masks for every model
        assert ranks[r][["person_id", "label"]].equals(first[["person_id", "label"]])
    labels = torch.tensor(first["label"].to_numpy())  # (N,)
    table = pd.DataFrame(
        {r: ranks[r]["rank"].to_numpy() for r in MLM_RUNS}, index=first["person_id"]
    )
    table["baseline: code frequency"] = frequency_rank(counts, ids, labels).numpy()
    table["baseline: domain frequency"] = frequency_rank(
        counts, ids, labels, code_group=code_domain,
        label_group=torch.tensor(first["domain_id"].to_numpy()),
    ).numpy()  # fmt: skip
    return table


def next_visit_scores(split: str, extra: dict) -> pd.DataFrame:
    """Recall@k and AP of every next-visit model and baseline.

    One row per (patient, visit) pair.
    """
    scorers = {r: pretrained[r] for r in NV_RUNS} | baselines | extra
    return load_or_score_next_visit(
        task, split, scorers, batch_size=BATCH[split], k=cfg.k, device=device
    )


ROWS = [
    *RUNS,
    "baseline: code frequency",
    "baseline: domain frequency",
    "baseline: repeat last visit",
    "baseline: repeat chronic codes",
    "baseline: repeat rate",
]
TOP1, TOPK = "masked top-1", f"masked top-{cfg.k}"
RECALL, AP = f"next-visit {recall_col}", "next-visit AP"


def summary(ranks: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """Means over the masked positions and the next-visit pairs (NaN: not scored)."""
    table = pd.DataFrame({TOP1: (ranks <= 1).mean(), TOPK: (ranks <= cfg.k).mean()})
    nv = pd.DataFrame({RECALL: pairs[recall_col].mean(), AP: pairs["ap"].mean()})
    table = table.join(nv, how="outer")
    return table.reindex([r for r in ROWS if r in table.index])


# validation: the share that makes a code chronic (and, below, the schedule we keep)
shares = cfg.chronic_shares
candidates = {f"chronic {s:g}": repeat_codes(chronic_at(s), counts) for s in shares}
val_ranks = masked_ranks("val")
val_pairs = next_visit_scores("val", candidates)
chronic_val = val_pairs[recall_col][list(candidates)].mean()  # recall@k of each share
chronic_share = cfg.chronic_shares[int(np.argmax(chronic_val.to_numpy()))]
chronic = chronic_at(chronic_share)  # (vocab,) bool
assert chronic.any() and not chronic[list(ids.special_ids)].any()
baselines["baseline: repeat chronic codes"] = repeat_codes(chronic, counts)
val_scores = summary(val_ranks, val_pairs.drop(columns=list(candidates), level=1))
keep("chronic_grid", ", ".join(f"{s:g}" for s in cfg.chronic_shares))
keep("chronic_share", chronic_share)
keep("min_eligible", task.config.min_frequency)

test_ranks = masked_ranks("test")
test_pairs = next_visit_scores("test", {})
test_scores = summary(test_ranks, test_pairs)
keep("n_test_pairs", len(test_pairs))
keep("n_test_patients", test_pairs.index.get_level_values("person_id").nunique())
keep("n_test_masked", len(test_ranks))
keep_table(  # shown once, where the prose pastes it
    "results_table",
    test_scores.rename_axis("test patients")
    .rename(columns=lambda c: c.replace("-", "\u2011"))  # no break at "top-"
    .reset_index(),
    floatfmt="{:.1%}",
)

# %% [markdown]
# On the test patients ({glue:text}`n_test_patients:,` patients,
# {glue:text}`n_test_pairs:,` next-visit pairs, {glue:text}`n_test_masked:,` masked codes):
#
# ```{glue:} results_table
# ```
#
# ### The best schedule
# Which encoder suits the survival chapters best? Their survival heads read a
# history under the visit-causal mask, and masked-code modelling alone never trains the
# encoder that way; next-visit prediction alone never teaches it to fill in a hidden code.
# So the candidates are the two schedules that train both, and the choice between them is
# made on the **validation** patients (the test patients only report): the larger mean gain
# over the code-frequency baseline, as a ratio, on masked top-{glue:text}`k` and on
# next-visit recall@{glue:text}`k`. (A head that was never trained counts as no gain, 1.0x,
# in the table below.)

# %%
val_base = val_scores.loc["baseline: code frequency"]
gain = (
    pd.DataFrame(
        {
            "masked": val_scores[TOPK] / val_base[TOPK],
            "next visit": val_scores[RECALL] / val_base[RECALL],
        }
    )
    .loc[list(RUNS)]
    .fillna(1.0)
)
gain["mean"] = gain.mean(axis=1)
best = str(gain.loc[["joint", "sequential"], "mean"].idxmax())
# the best at each task, on validation
mlm_best = str(val_scores.loc[MLM_RUNS, TOP1].idxmax())
nv_best = str(val_scores.loc[NV_RUNS, RECALL].idxmax())
m_row, n_row = test_scores.loc[mlm_best], test_scores.loc[nv_best]
base_row = test_scores.loc["baseline: code frequency"]
for name, value in (("best", best), ("mlm_best", mlm_best), ("nv_best", nv_best)):
    glue(name, Markdown(f"`{value}`"), display=False)  # a name, shown as code
for name, value in {
    "best_top1": m_row[TOP1],
    "best_topk": m_row[TOPK],
    "best_recall": n_row[RECALL],
    "base_top1": base_row[TOP1],
    "base_topk": base_row[TOPK],
    "base_recall": base_row[RECALL],
}.items():
    keep(name, float(value))
gain.rename_axis("schedule (validation patients)").style.format("{:.2f}x")

# %% [markdown]
# The better of the two is {glue:md}`best`. (The book's encoder, the one
# {doc}`08_finetuning_strategies` fine-tunes, is always the `joint` schedule's, whichever
# is better here, so that no later chapter depends on this choice;
# {doc}`05c_inside_the_encoder` says more.)
# Task by task, on the test patients: the best masked-code model ({glue:md}`mlm_best`) has
# top-1 {glue:text}`best_top1:.1%` against {glue:text}`base_top1:.1%` for the
# code-frequency baseline and top-{glue:text}`k`
# {glue:text}`best_topk:.1%` against {glue:text}`base_topk:.1%`; the best next-visit model
# ({glue:md}`nv_best`) has recall@{glue:text}`k` {glue:text}`best_recall:.1%` against
# {glue:text}`base_recall:.1%`. At the book's scale both must beat the code-frequency
# baseline clearly: by a fifth (as a ratio) on the masked codes, by a tenth on the next
# visit. The tiny smoke test only checks that the scores exist.

# %%
assert np.isfinite([m_row[TOP1], m_row[TOPK], n_row[RECALL]]).all()
if cfg.profile != "smoke":  # two epochs on a tiny cohort (smoke) need not get there
    assert m_row[TOP1] > 1.2 * base_row[TOP1]
    assert m_row[TOPK] > 1.2 * base_row[TOPK]
    assert n_row[RECALL] > 1.1 * base_row[RECALL]


# %%
# the schedules in words, worded after the test scores above
def shown_gap(value: float, reference: float) -> float:
    """The gap in points between two shares as the prose shows them (to 0.1 %)."""
    return round(round(100 * value, 1) - round(100 * reference, 1), 1)


def relation(value: float, reference: float) -> str:
    gap = shown_gap(value, reference)
    return "level with" if gap == 0 else "above" if gap > 0 else "below"


def compare(value: float, reference: float) -> str:
    verb = relation(value, reference)
    if verb == "level with":
        return verb
    return f"{abs(shown_gap(value, reference)):.1f} points {verb}"


seq, joint = test_scores.loc["sequential"], test_scores.loc["joint"]
mlm_top1 = test_scores.loc["mlm", TOP1]
nv_recall = test_scores.loc["next_visit", RECALL]
seq_text = (
    f"The **sequential** schedule's masked top-1 after its next-visit phase is "
    f"{seq[TOP1]:.1%}, {compare(seq[TOP1], base_row[TOP1])} the code-frequency "
    f"baseline and {compare(seq[TOP1], mlm_top1)} `mlm`"
)
if seq[TOP1] < mlm_top1:  # forgetting
    seq_text += (
        ": the masked-code head still expects the encoder its first phase built, "
        "and the second phase has changed it"
    )
joint_vs = {  # the joint schedule against each single objective, on its own task
    "`mlm`": relation(joint[TOP1], mlm_top1),
    "`next_visit`": relation(joint[RECALL], nv_recall),
}
joint_text = (
    f"The **joint** schedule trains both at once: masked top-1 {joint[TOP1]:.1%}, "
    f"{joint_vs['`mlm`']} `mlm`'s {mlm_top1:.1%}; recall@{cfg.k} {joint[RECALL]:.1%}, "
    f"{joint_vs['`next_visit`']} `next_visit`'s {nv_recall:.1%}"
)
behind = [name for name, rel in joint_vs.items() if rel == "below"]
if len(behind) == 2:
    joint_text += (
        "; in this budget it reaches neither single objective, two objectives sharing "
        f"{encoder_cfg.d_model} dimensions and the same number of steps."
    )
elif behind:
    kept_up = "in this budget it keeps up with one objective"
    joint_text += f"; {kept_up} but falls behind {behind[0]}."
else:
    joint_text += "; sharing the encoder costs neither objective anything here."
# a plain next-visit head that does no better than code frequencies
# sits in the trap of Train
stuck = [
    f"`{r}`"
    for r in ("next_visit", "joint")
    if relation(test_scores.loc[r, RECALL], base_row[RECALL]) != "above"
]
if stuck:
    do = "do" if len(stuck) > 1 else "does"
    heads = "their heads have" if len(stuck) > 1 else "its head has"
    joint_text += (
        f" On the next visit {' and '.join(stuck)} {do} no "
        f"better than the code-frequency baseline ({base_row[RECALL]:.1%}): "
        f"{heads} learned how frequent each code is and hardly anything "
        "about the patient, the trap described under Train, not "
        "escaped in this budget."
    )
glue("schedules_md", Markdown(f"{seq_text}. {joint_text}"), display=False)

# %% [markdown]
# What each objective teaches shows in the tables. Masked-code modelling learns which codes
# go together *given everything else in the record*, before and after; it says nothing
# directly about what comes next. Next-visit prediction learns the forward direction, and
# does it under the visit-causal mask, the same way a survival model reads a history.
# {glue:md}`schedules_md`
#
# Beating a baseline that ignores the patient is easy. Whether the next-visit heads beat
# the rules that read the same history the model reads (the last visit, the chronic codes,
# the repeat rates), and the best masked-code model the domain-frequency baseline, each
# with a paired interval over the test patients, is the question of
# {doc}`05d_next_visit_vs_history`, which loads the five models trained here.

# %%
chapter_seconds = time.perf_counter() - chapter_start
keep("chapter_minutes", chapter_seconds / 60)
print(f"chapter ran in {chapter_seconds:.0f} s ({cfg.profile} profile)")

# %% [markdown]
# ## Summary
# - With the same {glue:text}`epochs` epochs each, on test patients: masked top-1
#   {glue:text}`best_top1:.1%` ({glue:md}`mlm_best`) against {glue:text}`base_top1:.1%`
#   for the code-frequency baseline, top-{glue:text}`k` {glue:text}`best_topk:.1%` against
#   {glue:text}`base_topk:.1%`; next-visit recall@{glue:text}`k` {glue:text}`best_recall:.1%`
#   ({glue:md}`nv_best`) against {glue:text}`base_recall:.1%`. {glue:md}`schedules_md`
#   The better of the two schedules that train both objectives, on the validation
#   patients, is {glue:md}`best`; the book's encoder, which later chapters load, is
#   `joint`'s.
# - Pretraining the four schedules and the copy-head run took
#   {glue:text}`train_minutes:.1f` minutes (summed from `fit`'s logs, including runs loaded
#   from disk); the whole chapter ran in {glue:text}`chapter_minutes:.1f` minutes in this
#   build, {glue:text}`build_text`.
# - {doc}`05d_next_visit_vs_history` loads these models and tests them against the rules
#   that read the same history, with paired intervals over the test patients and verdicts
#   on the book's results page; {doc}`05c_inside_the_encoder` looks inside the code
#   embedding of the best encoder and names the artefact that later chapters load and
#   fine-tune.
#
# ## Exercises
# 1. Switch the domain embedding off (`dataclasses.replace(encoder_cfg, use_domain=False)`)
#    and pretrain with `mlm`. How much of the masked top-1 accuracy was the domain hint?
#    Compare with the domain-frequency baseline.
# 2. Pretrain `next_visit` with BERT's `init_std=0.02`. Plot recall@{glue:text}`k` per epoch
#    (pass `eval_fn` to `fit`) and compare it with the code-frequency baseline. Then
#    weight the next-visit term by 1 instead of $|V|$ in the joint schedule: what happens,
#    and why, given how the two losses are averaged?
# 3. Give the copy head to the `joint` schedule (`book_recipe(schedule="joint",
#    head="copy")`): does sharing the encoder with a head that can copy from the history
#    cost the masked codes anything, and does the encoder it trains help the survival
#    chapters? ({doc}`05d_next_visit_vs_history` asks what the copy term buys on the next
#    visit itself.)

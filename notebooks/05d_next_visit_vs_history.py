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
# # Against the record's own history
#
# ## Outline
# {doc}`05b_pretraining_schedules` pretrained the BEHRT encoder {cite}`li2020behrt` with
# masked-code modelling, with next-visit prediction, with both at once (`joint`) and one
# after the other (`sequential`), and trained `next_visit` once more with the **copy head**
# of {doc}`05_pretraining_objectives`, which reads which codes the history already holds.
# Against a lookup table that ignores the patient (the most frequent training codes), every
# trained head did well. That test is easy. The fair one is against rules that read what
# the model reads: for the next visit, the patient's own record (repeat the last visit,
# repeat the chronic codes, rank each code by how often it comes back); for a masked code,
# the domain of the hidden token, which the model sees.
#
# We will
# 1. load the five pretrained models (the artefacts of {doc}`05b_pretraining_schedules`)
#    and rebuild its lookup tables by the same rules on the same training and validation
#    patients;
# 2. score the next-visit heads and the rules on the same test pairs, each with a 95 %
#    interval over the test patients;
# 3. test six claims about the next visit (the plain head and the copy head against the
#    rules, and the copy term itself) and two about the masked codes, each a paired
#    difference with its interval. Every verdict goes to the book's results page,
#    {doc}`99_results`.

# %% [markdown]
# ## Setup
# One config per chapter; `EHRSEQ_PROFILE` (`smoke`, `book`, `full`) picks its size. The
# encoder and the pretraining recipe are the book's (`ehrseq.pretrained`), and the
# evaluation settings are those of {doc}`05b_pretraining_schedules`, so that the models and
# the rules are the ones scored there.

# %%
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown
from myst_nb import glue

import ehrseq
from ehrseq.book import keep, keep_table, record_claim, start_claims
from ehrseq.config import for_profile, format_config
from ehrseq.data.task import prepare_survival_task, shared_task_config
from ehrseq.next_visit import (
    chronic_codes,
    most_frequent,
    paired_visit_difference,
    recurring_codes,
    repeat_codes,
    repeat_last_visit,
    repeat_rate_scorer,
    repeat_rates,
    visit_mean_interval,
)
from ehrseq.pretrain import TokenIds, code_counts, code_domains, frequency_rank
from ehrseq.pretrained import (
    book_encoder_config,
    book_recipe,
    load_or_pretrain,
    load_or_rank_masked_codes,
    load_or_score_next_visit,
)

CHAPTER = "05d_next_visit_vs_history"


@dataclass(frozen=True)
class Config:
    profile: str = "book"
    seed: int = 7  # seed of the setup and of the paired bootstraps
    # patients per test batch (05b's: the same masked positions)
    eval_batch_size: int = 256
    k: int = 10  # recall@k of the next visit; top-k of the masked codes
    n_boot: int = 1000  # bootstrap resamples of the test patients (paired intervals)
    # recurrence thresholds (validation)
    chronic_shares: tuple[float, ...] = (0.3, 0.5, 0.7)


cfg = for_profile(Config, {"smoke": {"n_boot": 200}})
# the book's pretraining recipe; 05b varied its schedule and head
recipe = book_recipe()
device = ehrseq.get_device()
rng = ehrseq.seed_everything(cfg.seed)
print(format_config(cfg))
print(f"device: {device}; CPU threads: {torch.get_num_threads()} (OMP_NUM_THREADS)")
start_claims(CHAPTER)  # this run's claims replace the last run's on the results page

keep("k", cfg.k)
keep("n_boot", cfg.n_boot)

# %% [markdown]
# ## Data
# The survival task every modelling chapter shares (`shared_task_config()`), batched as in
# {doc}`05b_pretraining_schedules`: the training patients' histories were the pretraining
# data and give the lookup tables their counts, the validation patients chose between
# models and between thresholds, and the test patients only report.

# %%
task = prepare_survival_task(shared_task_config())
ids = TokenIds.from_vocab(task.vocab)
train_loader = task.loader("train", recipe.batch_size)
# patients per batch of each split's scores, as in 05b (whose tables are loaded)
BATCH = {"val": recipe.batch_size, "test": cfg.eval_batch_size}
counts = code_counts(train_loader, ids)  # (vocab,) training frequency of each code
task.summary()

# %% [markdown]
# ## Model
# ### The pretrained models
# Nothing is trained here. The book's encoder config and the five recipes of
# {doc}`05b_pretraining_schedules` (`book_encoder_config(task)` and
# `book_recipe(schedule=..., head=...)`) give `load_or_pretrain` the keys of that chapter's
# artefacts, and it loads them. (Were one missing, it would be trained exactly as there.)
# The same goes for the scores below: `load_or_score_next_visit` and
# `load_or_rank_masked_codes` load the tables that chapter scored, the same models and
# rules on the same patients and batches, and would score them exactly as there.
# The masked codes are scored for the runs that trained the masked-code head, the next
# visit for the plain head (`next_visit`) and the copy head (`next_visit_copy`), trained
# alike but for the head.

# %%
encoder_cfg = book_encoder_config(task)
SCHEDULES = ("mlm", "next_visit", "joint", "sequential")
recipes = {s: book_recipe(schedule=s) for s in SCHEDULES}
recipes["next_visit_copy"] = book_recipe(schedule="next_visit", head="copy")
pretrained, loaded = {}, {}
for run, run_recipe in recipes.items():
    result = load_or_pretrain(task, encoder_cfg, run_recipe)
    pretrained[run], loaded[run] = result, result.loaded
    result.model.to(device).eval()
MLM_RUNS = ["mlm", "joint", "sequential"]  # the runs that trained the masked-code head
NV_RUNS = ["next_visit", "next_visit_copy"]  # the plain head and the copy head
recall_col = f"recall@{cfg.k}"
pd.Series(loaded, name="loaded from disk").rename_axis("run").to_frame()

# %% [markdown]
# ### The rules that read the history
# The lookup tables of {doc}`05b_pretraining_schedules`, counted on the training patients:
# - **code frequency**: always the most frequent training codes, for everyone;
# - **repeat last visit**: the codes of visit $t$ again, then the most frequent others;
# - **repeat chronic codes**: every code of the patient's history up to $t$ that recurs,
#   then the most frequent others. A code is chronic when, of the training patients who
#   have it and a visit after its first record (at least {glue:text}`min_eligible` of
#   them), at least a share $s$ have it again at a later visit; $s$ is the one of
#   {glue:text}`chronic_grid` with the best recall@{glue:text}`k` on the validation
#   patients;
# - **repeat rate**: per code, how often it appears in the next visit when the patient
#   already had it, and when not; rank the codes by the rate that applies;
# - **domain frequency** (masked codes): the masked token keeps its domain embedding, so
#   the model knows it is hiding, say, a drug; guessing the most frequent training codes
#   *of that domain* uses exactly that hint and nothing about the patient.
#
# The masked-code model to test is the one with the best masked top-1 on the validation
# patients, as in {doc}`05b_pretraining_schedules`.

# %%
recurrence = recurring_codes(train_loader, ids)  # per code: eligible, recurred, share


def chronic_at(share: float) -> torch.Tensor:
    """(vocab,) bool: codes that recur in at least `share` of the eligible patients."""
    return chronic_codes(recurrence, share, task.config.min_frequency)


shares = cfg.chronic_shares
candidates = {f"chronic {s:g}": repeat_codes(chronic_at(s), counts) for s in shares}
val_pairs = load_or_score_next_visit(
    task, "val", candidates, batch_size=BATCH["val"], k=cfg.k, device=device
)
val_recall = val_pairs[recall_col][list(candidates)].mean()  # recall@k of each share
chronic_share = cfg.chronic_shares[int(np.argmax(val_recall.to_numpy()))]
chronic = chronic_at(chronic_share)  # (vocab,) bool
assert chronic.any() and not chronic[list(ids.special_ids)].any()
rate_seen, rate_unseen = repeat_rates(train_loader, ids)  # (vocab,) each
scorers = {r: pretrained[r] for r in NV_RUNS} | {
    "baseline: code frequency": most_frequent(counts),
    "baseline: repeat last visit": repeat_last_visit(counts),
    "baseline: repeat rate": repeat_rate_scorer(rate_seen, rate_unseen),
    "baseline: repeat chronic codes": repeat_codes(chronic, counts),
}
keep("chronic_grid", ", ".join(f"{s:g}" for s in cfg.chronic_shares))
keep("chronic_share", chronic_share)
keep("min_eligible", task.config.min_frequency)
keep("n_chronic", int(chronic.sum()))
keep("n_regular", len(ids.regular_tensor()))

code_domain = code_domains(train_loader, ids.vocab_size)  # (vocab,) domain of each code
mlm_runs = {r: pretrained[r] for r in MLM_RUNS}
val_ranks = load_or_rank_masked_codes(
    task, "val", mlm_runs, batch_size=BATCH["val"], device=device
)  # fmt: skip
val_top1 = {r: (ranks["rank"] <= 1).mean() for r, ranks in val_ranks.items()}
mlm_best = max(val_top1, key=val_top1.get)  # the first of equals, as idxmax
glue("mlm_best", Markdown(f"`{mlm_best}`"), display=False)  # a name, shown as code
top1_frame = pd.Series(val_top1, name="masked top-1 (validation)").to_frame()
top1_frame.rename_axis("run").style.format("{:.1%}")  # a share, not 6 decimals

# %% [markdown]
# ## Evaluate
# ### The next visit, model by rule
# Every scorer on the same (patient, visit) pairs of the test patients: recall@{glue:text}`k`
# (the share of the next visit's codes among the {glue:text}`k` ranked highest) and
# average precision (AP: the precision at the rank of each true code, averaged over the
# true codes). Of the {glue:text}`n_regular` codes, {glue:text}`n_chronic` count as
# chronic (recurring in at least {glue:text}`chronic_share:.0%` of the eligible training
# patients, the share that did best on validation). Each mean has a 95 % interval from
# {glue:text}`n_boot` bootstrap resamples of the test **patients** (a patient's visits are
# not independent). The ablation: the plain linear head (`next_visit`), the same training
# with the copy head (`next_visit_copy`), and the rules.

# %%
test_pairs = load_or_score_next_visit(
    task, "test", scorers, batch_size=BATCH["test"], k=cfg.k, device=device
)
groups = test_pairs.index.get_level_values("person_id").to_numpy()
keep("n_test_pairs", len(test_pairs))
keep("n_test_patients", len(np.unique(groups)))
ABLATION = [
    "next_visit",
    "next_visit_copy",
    "baseline: repeat last visit",
    "baseline: repeat chronic codes",
    "baseline: repeat rate",
    "baseline: code frequency",
]


def with_interval(ci) -> str:
    """A share and its interval as one cell that never wraps (non-breaking spaces)."""
    return f"{ci.estimate:.1%}\u00a0[{ci.lower:.1%},\u00a0{ci.upper:.1%}]"


def mean_cell(col: str, scorer: str) -> str:
    """The mean of `col` over the test pairs for `scorer`, with its interval."""
    ci = visit_mean_interval(test_pairs[col][scorer], groups, n_boot=cfg.n_boot)
    return with_interval(ci)


ablation = pd.DataFrame(
    {
        f"recall@{cfg.k} [95 % interval]": [mean_cell(recall_col, r) for r in ABLATION],
        "AP [95 % interval]": [mean_cell("ap", r) for r in ABLATION],
    },
    index=pd.Index(ABLATION, name="next visit (test pairs)"),
)
keep_table("nv_ablation", ablation.reset_index())  # shown once, where it is pasted

# %% [markdown]
# For the {glue:text}`n_test_patients:,` test patients and their
# {glue:text}`n_test_pairs:,` next-visit pairs:
#
# ```{glue:} nv_ablation
# ```
#
# ### Paired differences
# Two intervals that overlap do not say that two scorers are alike: their errors fall on
# the same patients. Each difference below is **paired** (the same test pairs for both,
# resampled together) and is recorded as a claim for the book's results page. A model is
# said to win only when the interval of the difference excludes 0; otherwise the
# comparison is *not resolved*.

# %%
CLAIMS = {  # key: (model, reference, claim)
    "nv_copy_vs_last": (
        "next_visit_copy",
        "baseline: repeat last visit",
        "next-visit prediction (copy head) beats repeating the last visit",
    ),
    "nv_copy_vs_chronic": (
        "next_visit_copy",
        "baseline: repeat chronic codes",
        "next-visit prediction (copy head) beats repeating the chronic codes",
    ),
    "nv_copy_vs_rate": (
        "next_visit_copy",
        "baseline: repeat rate",
        "next-visit prediction (copy head) beats the repeat-rate lookup table",
    ),
    "nv_copy_vs_plain": (
        "next_visit_copy",
        "next_visit",
        "a copy term over the history improves the next-visit head",
    ),
    "nv_plain_vs_last": (
        "next_visit",
        "baseline: repeat last visit",
        "next-visit prediction (plain head) beats repeating the last visit",
    ),
    "nv_plain_vs_chronic": (
        "next_visit",
        "baseline: repeat chronic codes",
        "next-visit prediction (plain head) beats repeating the chronic codes",
    ),
}


def pct(x: float) -> str:
    """A difference of two shares, in percentage points."""
    return f"{100 * x:+.2f}"


def pct_interval(d: dict, space: str = " ") -> str:
    """The difference and its interval in points; tables pass a non-breaking space."""
    return f"{pct(d['difference'])}{space}[{pct(d['lower'])},{space}{pct(d['upper'])}]"


diff_rows, verdicts, intervals = [], {}, {}
for key, (a, b, claim) in CLAIMS.items():
    row = {}
    for metric, col in ((f"recall@{cfg.k}", recall_col), ("AP", "ap")):
        d = paired_visit_difference(
            test_pairs[col][a], test_pairs[col][b], groups, comparison=f"{a} - {b}",
            metric=metric, n_boot=cfg.n_boot, seed=cfg.seed,
        )  # fmt: skip
        row[metric] = d
    recall_diff = row[f"recall@{cfg.k}"]
    verdicts[key] = record_claim(
        CHAPTER, key, claim, recall_diff, higher_is_better=True, source="this book"
    )
    intervals[key] = pct_interval(recall_diff)  # for the prose below
    diff_rows.append(
        {
            "comparison": f"{a} − {b}",
            f"recall@{cfg.k} difference (points) [95 % interval]": pct_interval(
                recall_diff, "\u00a0"
            ),
            "AP difference (points) [95 % interval]": pct_interval(row["AP"], "\u00a0"),
            f"verdict (recall@{cfg.k})": verdicts[key],
        }
    )
nv_diffs = pd.DataFrame(diff_rows)
keep_table("nv_diffs", nv_diffs)  # shown once, where it is pasted

# %% [markdown]
# ```{glue:} nv_diffs
# ```
#
# {glue:md}`nv_md`
#
# ### The masked codes
# The masked codes get the same treatment against their sharpest baseline, the domain
# frequency, on the same masked positions of the test patients as in
# {doc}`05b_pretraining_schedules`, for the best masked-code model on validation
# ({glue:md}`mlm_best`):

# %%
# one row per masked code
best_run = {mlm_best: pretrained[mlm_best]}
test_ranks = load_or_rank_masked_codes(
    task, "test", best_run, batch_size=BATCH["test"], device=device
)[mlm_best]
labels = torch.tensor(test_ranks["label"].to_numpy())  # (N,)
domain_rank = frequency_rank(
    counts, ids, labels, code_group=code_domain,
    label_group=torch.tensor(test_ranks["domain_id"].to_numpy()),
).numpy()  # fmt: skip
mask_groups = test_ranks["person_id"].to_numpy()  # the patient of each masked position
mask_rows = []
for key, k in (("mlm_top1_vs_domain", 1), ("mlm_topk_vs_domain", cfg.k)):
    d = paired_visit_difference(
        (test_ranks["rank"] <= k).to_numpy(float), (domain_rank <= k).astype(float),
        mask_groups, comparison=f"{mlm_best} - baseline: domain frequency",
        metric=f"masked top-{k}", n_boot=cfg.n_boot, seed=cfg.seed,
    )  # fmt: skip
    verdicts[key] = record_claim(
        CHAPTER,
        key,
        f"masked-code modelling beats the domain-frequency baseline (top-{k})",
        d,
        higher_is_better=True,
        source="this book",
    )
    intervals[key] = pct_interval(d)
    mask_rows.append(
        {
            "metric": f"masked top-{k}",
            mlm_best: f"{d['a']:.1%}",
            "domain frequency": f"{d['b']:.1%}",
            "difference (points) [95 % interval]": pct_interval(d, "\u00a0"),
            "verdict": verdicts[key],
        }
    )
mask_diffs = pd.DataFrame(mask_rows)
keep_table("mask_diffs", mask_diffs)
mask_diffs.style.hide(axis="index")  # the prose does not paste it: shown here


# %%
def outcome(key: str, what: str) -> str:
    """The verdict of a claim in words, with its difference and interval in points."""
    interval = intervals[key]
    if verdicts[key] == "reproduced":
        return f"{what} wins ({interval} points)"
    if verdicts[key] == "refuted":
        return f"{what} loses ({interval} points)"
    return (
        f"the test patients cannot tell {what} from it ({interval} points, "
        "the interval includes 0: not resolved)"
    )


r_of = test_pairs[recall_col].mean()  # recall@k of each scorer over the test pairs
nv_md = (
    f"On recall@{cfg.k}, the plain head ({r_of['next_visit']:.1%}) against repeating "
    f"the last visit ({r_of['baseline: repeat last visit']:.1%}): "
    f"{outcome('nv_plain_vs_last', 'the plain head')}; against repeating the chronic "
    f"codes ({r_of['baseline: repeat chronic codes']:.1%}): "
    f"{outcome('nv_plain_vs_chronic', 'the plain head')}. With the copy head "
    f"({r_of['next_visit_copy']:.1%}): against repeating the last visit, "
    f"{outcome('nv_copy_vs_last', 'the copy head')}; against repeating the chronic "
    f"codes, {outcome('nv_copy_vs_chronic', 'the copy head')}; against the repeat-rate "
    f"lookup table ({r_of['baseline: repeat rate']:.1%}), "
    f"{outcome('nv_copy_vs_rate', 'the copy head')}. The copy term against the plain "
    f"head: {outcome('nv_copy_vs_plain', 'the copy head')}."
)
glue("nv_md", Markdown(nv_md), display=False)
mask_md = (
    f"The best masked-code model (`{mlm_best}`) against the domain-frequency baseline: "
    f"top-1 {mask_rows[0][mlm_best]} against {mask_rows[0]['domain frequency']}, and "
    f"{outcome('mlm_top1_vs_domain', f'`{mlm_best}`')}; top-{cfg.k} "
    f"{mask_rows[1][mlm_best]} against {mask_rows[1]['domain frequency']}, and "
    f"{outcome('mlm_topk_vs_domain', f'`{mlm_best}`')}."
)
glue("mask_md", Markdown(mask_md), display=False)
assert set(verdicts.values()) <= {"reproduced", "refuted", "not resolved"}

# the lesson on the next visit, worded after the verdicts above
plain_keys = ("nv_plain_vs_last", "nv_plain_vs_chronic")
plain_lost = [verdicts[k] == "refuted" for k in plain_keys]
copier = "a rule that simply copies"
if all(plain_lost):
    plain_part = (
        f"competes badly with {copier}: here it loses to repeating the last visit "
        "and to repeating the chronic codes"
    )
elif any(plain_lost):
    plain_part = f"competes badly with {copier}: here it loses to one of the two rules"
else:
    plain_part = (
        "is at a disadvantage against a rule that simply copies, though here "
        "it loses to neither rule"
    )
cannot_tell = "the test patients cannot tell the copy head from the plain head"
copy_part = {
    "reproduced": "and here the copy head beats the plain head",
    "refuted": "but here the copy head loses to the plain head",
    "not resolved": f"but here {cannot_tell}",
}[verdicts["nv_copy_vs_plain"]]
opening = (
    "On the next visit the lesson is about the head, not the encoder."
    if verdicts["nv_copy_vs_plain"] == "reproduced"
    else "On the next visit the question is about the head, not the encoder."
)
head_md = (
    f"{opening} A record is mostly repetition, and a head that must rebuild every "
    f"repeated code from one pooled state {plain_part}. Given a copy term, the same "
    "encoder and the same training decide *which* codes of the history come back and "
    f"add the ones that are new, {copy_part}."
)
glue("head_md", Markdown(head_md), display=False)
pd.Series(verdicts, name="verdict").rename_axis("claim").to_frame()

# %% [markdown]
# {glue:md}`mask_md`
#
# ### What the verdicts say
# {glue:md}`head_md` Whether that is enough to beat each rule on these patients is in the
# verdicts above, each with its interval; a verdict of "not resolved" means the test set
# cannot tell the two apart, not that they are equal, and a resolved difference can still
# be too small to matter: the tables give its size in points.

# %% [markdown]
# ## Summary
# - The five models of {doc}`05b_pretraining_schedules`, loaded from its artefacts, against
#   the rules that read what they read, on the same test pairs with paired intervals over
#   {glue:text}`n_test_patients:,` patients. {glue:md}`nv_md`
# - {glue:md}`mask_md`
# - {glue:md}`head_md` Every verdict is on the book's results page, {doc}`99_results`.
# - {doc}`05c_inside_the_encoder` looks inside the code embedding of the best encoder of
#   {doc}`05b_pretraining_schedules` and names the artefact that later chapters load and
#   fine-tune.
#
# ## Exercises
# 1. Resample the (patient, visit) pairs instead of the patients: pass each pair its own
#    group (`groups=np.arange(len(test_pairs))`) to `paired_visit_difference`. How much
#    narrower do the intervals get, and why do they then claim more than the data hold?
# 2. Choose the chronic share on the test patients instead of the validation patients.
#    How much does the chronic rule gain, and what would the verdicts against it be worth?
#    Then write a rule that ranks first the codes of the last visit *and* the chronic codes
#    of the history (a scorer is a function of `batch` and `history`, like those of
#    `ehrseq.next_visit`): does either head still beat it?
# 3. The copy head's features say whether and when a code was recorded. Drop the recency
#    features (`half_lives` of one very long half-life) and train `next_visit_copy` again:
#    how much of its gain over the repeat-rate lookup table was timing?

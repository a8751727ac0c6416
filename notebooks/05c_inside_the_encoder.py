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
# # Inside the encoder
#
# ## Outline
# {doc}`05_pretraining_objectives` wrote two self-supervised objectives by hand,
# masked-code modelling and next-visit prediction, and {doc}`05b_pretraining_schedules`
# pretrained the BEHRT encoder {cite}`li2020behrt` with each alone, with both at once
# (`joint`) and one after the other (`sequential`), scored them against lookup tables, and
# found the better of the two schedules that train both objectives on the validation
# patients. This chapter looks inside what pretraining learned and hands the book's
# encoder on.
#
# We will
# 1. load the four pretrained encoders (the artefacts of {doc}`05b_pretraining_schedules`)
#    and find the best one by the same rule on the same validation patients;
# 2. look inside the learned code embedding and check it against the generator's truth (do
#    diabetes codes sit together?), against shuffled groups and an untrained encoder;
# 3. name the artefact that later chapters load and fine-tune.

# %% [markdown]
# ## Setup
# One config per chapter; `EHRSEQ_PROFILE` (`smoke`, `book`, `full`) picks its size.

# %%
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from IPython.display import Markdown
from myst_nb import glue

import ehrseq
from ehrseq.book import keep
from ehrseq.config import for_profile, format_config
from ehrseq.data.task import prepare_survival_task, shared_task_config
from ehrseq.next_visit import most_frequent
from ehrseq.plotting import apply_style
from ehrseq.pretrain import (
    BehrtForPretraining,
    TokenIds,
    code_counts,
    frequency_rank,
)
from ehrseq.pretrained import (
    book_encoder_config,
    book_recipe,
    load_or_pretrain,
    load_or_rank_masked_codes,
    load_or_score_next_visit,
    pretrained_model,
)


# the encoder and the pretraining recipe are the book's (ehrseq.pretrained), as in 05b
@dataclass(frozen=True)
class Config:
    profile: str = "book"
    seed: int = 7  # seed of the setup
    k: int = 10  # recall@k of the next visit; top-k of the masked codes
    n_shuffles: int = 1000  # permutations of the group labels for the shuffled baseline


cfg = for_profile(Config, {"smoke": {"n_shuffles": 200}})
recipe = book_recipe()  # the book's pretraining recipe (joint); 05b varied its schedule
device = ehrseq.get_device()
rng = ehrseq.seed_everything(cfg.seed)
apply_style()
print(format_config(cfg))
print(f"device: {device}; CPU threads: {torch.get_num_threads()} (OMP_NUM_THREADS)")

keep("k", cfg.k)

# %% [markdown]
# ## Data
# The survival task every modelling chapter shares (`shared_task_config()`), as in
# {doc}`05b_pretraining_schedules`: its training patients' histories were the pretraining
# data and give the code frequencies, and its validation patients decided which schedule
# was best.

# %%
task = prepare_survival_task(shared_task_config())
vocab = task.vocab
ids = TokenIds.from_vocab(vocab)
train_loader = task.loader("train", recipe.batch_size)
counts = code_counts(train_loader, ids)  # (vocab,) training frequency of each code
task.summary()

# %% [markdown]
# ## Model
# ### The pretrained encoders
# The book's encoder config and recipe (`book_encoder_config(task)` and
# `book_recipe(schedule=...)` from `ehrseq.pretrained`), as in
# {doc}`05b_pretraining_schedules`, so that `load_or_pretrain` finds each schedule's
# artefact under the same key (the task, the encoder config, the recipe) and loads it.
# Were one missing, it would be trained exactly as there; the two chapters may run at the
# same time, and a file lock lets only one of them train. The copy-head run of the
# ablation is not needed here.

# %%
encoder_cfg = book_encoder_config(task)
SCHEDULES = ("mlm", "next_visit", "joint", "sequential")
recipes = {s: book_recipe(schedule=s) for s in SCHEDULES}
pretrained, models, loaded = {}, {}, {}
for schedule in SCHEDULES:
    result = load_or_pretrain(task, encoder_cfg, recipes[schedule])
    pretrained[schedule] = result  # the model, and the artefact it came from
    models[schedule], loaded[schedule] = result.model, result.loaded
    models[schedule].to(device).eval()
pd.Series(loaded, name="loaded from disk").rename_axis("schedule").to_frame()

# %% [markdown]
# ### The best schedule
# {doc}`05b_pretraining_schedules` chose between the two schedules that train both
# objectives: the one with the larger mean gain over the code-frequency baseline, as a
# ratio, on masked top-{glue:text}`k` and on next-visit recall@{glue:text}`k` of the
# validation patients. The same rule, on the same masked positions and (patient, visit)
# pairs (5b's scores, loaded: `load_or_rank_masked_codes` and `load_or_score_next_visit`
# keep them as artefacts):

# %%
CANDIDATES = ("joint", "sequential")
BASE = "baseline: code frequency"
# 5b's scores of the validation patients, loaded (computed here were they missing)
candidates = {r: pretrained[r] for r in CANDIDATES}
val_ranks = load_or_rank_masked_codes(
    task, "val", candidates, batch_size=recipe.batch_size, device=device
)
# the same masks
assert val_ranks["joint"]["label"].equals(val_ranks["sequential"]["label"])
labels = torch.tensor(val_ranks["joint"]["label"].to_numpy())  # (N,)
base_topk = (frequency_rank(counts, ids, labels).numpy() <= cfg.k).mean()
val_pairs = load_or_score_next_visit(
    task, "val", candidates | {BASE: most_frequent(counts)},
    batch_size=recipe.batch_size, k=cfg.k, device=device,
)  # fmt: skip
val_recall = val_pairs[f"recall@{cfg.k}"].mean()  # per scorer, over the pairs
top_k = {r: (val_ranks[r]["rank"] <= cfg.k).mean() for r in CANDIDATES}
gain = pd.DataFrame(
    {
        "masked": {r: top_k[r] / base_topk for r in CANDIDATES},
        "next visit": {r: val_recall[r] / val_recall[BASE] for r in CANDIDATES},
    }
)
gain["mean"] = gain.mean(axis=1)
best = str(gain["mean"].idxmax())
glue("best", Markdown(f"`{best}`"), display=False)  # a name, shown as code
gain.rename_axis("schedule (validation patients)").style.format("{:.2f}x")

# %% [markdown]
# The best schedule is {glue:md}`best`.
#
# ## Inside the code embedding
# Pretraining shapes the code table: two codes that occur in the same contexts end up with
# similar vectors. The nearest neighbours (by cosine similarity) of a few codes, in the
# embedding of the best schedule, with the latent disease group that the generator assigned
# to each concept (the group is never shown to the model):

# %%
groups = task.cohort.truth.concept_groups.set_index("concept_id")["group"]
concept = task.cohort.vocabulary.concept.set_index("concept_id")
regular = ids.regular_tensor().numpy()
token = np.array(vocab.itos, dtype=object)
concept_of = np.array([int(t.split(":")[1]) if ":" in t else -1 for t in vocab.itos])
group_of = pd.Series(concept_of).map(groups).to_numpy(dtype=object)
seen = counts.numpy() > 0  # tokens that occur in the training tensors
# codes of a latent disease group ("routine" care belongs to no disease), seen in
# training
in_disease = [isinstance(g, str) and g != "routine" for g in group_of]
analysed = np.array([i for i in regular if seen[i] and in_disease[i]])


def unit_embedding(model: BehrtForPretraining) -> np.ndarray:
    """The code table with rows scaled to length 1 (dot products are cosines)."""
    table = model.encoder.embeddings.code.weight.detach().cpu()  # (vocab, d)
    return F.normalize(table, dim=1).numpy()


def describe(i: int) -> str:
    """Concept name, domain and decile of token i."""
    domain, cid, *decile = token[i].split(":")
    name = concept["concept_name"].get(int(cid), token[i])
    return f"{name} ({', '.join([domain, *decile])})"


def top_code(group: str, domain: str) -> int | None:
    """The most frequent analysed token of a group and domain, None if there is none."""
    prefix = domain + ":"
    pool = [i for i in analysed if group_of[i] == group and token[i].startswith(prefix)]
    return max(pool, key=lambda i: counts[i]) if pool else None


emb_best = unit_embedding(models[best])
queries = [
    top_code("type2_diabetes", "condition"),
    top_code("type2_diabetes", "drug"),
    top_code("hypertension", "condition"),
    top_code("copd", "drug"),
]
neighbour_rows = []
for q in (q for q in queries if q is not None):
    others = analysed[analysed != q]
    cos = emb_best[others] @ emb_best[q]  # (n - 1,) cosine with the query
    for rank, j in enumerate(np.argsort(-cos)[:5], start=1):
        neighbour_rows.append(
            {
                "query": f"{describe(q)} [{group_of[q]}]",
                "rank": rank,
                "neighbour": describe(others[j]),
                "group": group_of[others[j]],
                "cosine": float(cos[j]),
            }
        )
neighbours = pd.DataFrame(neighbour_rows).set_index(["query", "rank"])
neighbours.style.format({"cosine": "{:.2f}"})

# %% [markdown]
# A handful of neighbours is an anecdote. The generator's truth makes it a measurement: the
# {glue:text}`n_analysed` codes of a disease group that occur in training each belong to one
# of {glue:text}`n_groups` groups. Two numbers per embedding:
# - the mean cosine similarity of two codes of the **same** group minus that of two codes of
#   **different** groups (pairs of the same concept, such as two deciles of one lab, are left
#   out: they share a group trivially);
# - the **neighbour agreement**: the share of codes whose nearest other concept belongs to
#   their own group, against the same share after **shuffling** the group labels among the
#   concepts {glue:text}`n_shuffles` times.
#
# An untrained encoder is the control: random vectors should agree no more than shuffled
# labels do.


# %%
def group_structure(emb: np.ndarray, rng: np.random.Generator) -> dict:
    """Within- minus between-group cosine; nearest-neighbour agreement vs shuffled."""
    x = emb[analysed]  # (n, d) unit rows
    sim = x @ x.T  # (n, n) cosine
    cid = concept_of[analysed]
    same_concept = cid[:, None] == cid[None, :]  # (n, n)
    sim_nn = np.where(same_concept, -np.inf, sim)  # never your own concept
    nearest = sim_nn.argmax(1)  # (n,)
    concepts, inverse = np.unique(cid, return_inverse=True)
    concept_group = pd.Series(concepts).map(groups).to_numpy()

    def agreement(labels_of_concept: np.ndarray) -> float:
        g = labels_of_concept[inverse]  # (n,)
        return float((g == g[nearest]).mean())

    g = concept_group[inverse]
    same_group = (g[:, None] == g[None, :]) & ~same_concept
    other_group = g[:, None] != g[None, :]
    shuffles = range(cfg.n_shuffles)
    shuffled = np.array([agreement(rng.permutation(concept_group)) for _ in shuffles])
    gap = sim[same_group].mean() - sim[other_group].mean()
    return {
        "within - between cosine": float(gap),
        "neighbour agreement": agreement(concept_group),
        "shuffled mean": float(shuffled.mean()),
        "shuffled 95th percentile": float(np.quantile(shuffled, 0.95)),
        "p (shuffled >= observed)": float(
            (1 + (shuffled >= agreement(concept_group)).sum()) / (1 + len(shuffled))
        ),
    }


# the start of every run
untrained = pretrained_model(task, encoder_cfg, recipes["mlm"])
embeddings = {"untrained": unit_embedding(untrained)}
embeddings.update({s: unit_embedding(models[s]) for s in SCHEDULES})
rows = {}
for name, e in embeddings.items():
    rows[name] = group_structure(e, np.random.default_rng(cfg.seed))
structure = pd.DataFrame(rows).T.rename_axis("code embedding")
keep("n_analysed", len(analysed))
keep("n_groups", int(pd.Series(group_of[analysed]).nunique()))
keep("n_shuffles", cfg.n_shuffles)
s_best, s_rand = structure.loc[best], structure.loc["untrained"]
keep("agree_best", float(s_best["neighbour agreement"]))
keep("agree_shuffled", float(s_best["shuffled mean"]))
keep("agree_q95", float(s_best["shuffled 95th percentile"]))
keep("agree_untrained", float(s_rand["neighbour agreement"]))
keep("gap_best", float(s_best["within - between cosine"]))
keep("gap_untrained", float(s_rand["within - between cosine"]))
keep("p_best", float(s_best["p (shuffled >= observed)"]))
# one group up close: the type 2 diabetes codes in the best schedule's embedding
x = emb_best[analysed]  # (n, d)
same_concept = concept_of[analysed][:, None] == concept_of[analysed][None, :]
# (n,) nearest other concept
nearest = np.where(same_concept, -np.inf, x @ x.T).argmax(1)
is_t2d = group_of[analysed] == "type2_diabetes"
keep("n_t2d", int(is_t2d.sum()))
t2d_agree = float((group_of[analysed][nearest] == "type2_diabetes")[is_t2d].mean())
t2d_share = float(is_t2d.mean())  # the chance that a code drawn at random is one
keep("t2d_agree", t2d_agree)
keep("t2d_share", t2d_share)


def cosine_text(x: float) -> str:
    """A signed cosine to 3 decimals; one that shows as zero gets no sign ("-0.000")."""
    return "0.000" if abs(x) < 5e-4 else f"{x:+.3f}"


if cfg.profile != "smoke":  # the learned embedding knows the latent groups
    assert s_best["neighbour agreement"] > s_best["shuffled 95th percentile"]
    assert s_best["within - between cosine"] > s_rand["within - between cosine"]
headers = {  # the headers in print: a minus sign and a "greater or equal" sign
    "within - between cosine": "within − between cosine",
    "p (shuffled >= observed)": "p (shuffled ≥ observed)",
}
structure.rename(columns=headers).style.format(
    {
        "within − between cosine": cosine_text,
        "neighbour agreement": "{:.1%}",
        "shuffled mean": "{:.1%}",
        "shuffled 95th percentile": "{:.1%}",
        "p (shuffled ≥ observed)": "{:.3f}",
    }
)

# %% mystnb={"figure": {"name": "fig-group-agreement", "caption": "Share of codes whose nearest other concept in the code embedding belongs to the same latent disease group, for an untrained encoder and each pretraining schedule. The grey band spans the shuffled baseline (group labels permuted among concepts) up to its 95th percentile."}}
fig, ax = plt.subplots(figsize=(6, 3.3), layout="constrained")
names = list(structure.index)
bar_colours = ["0.6"] + ["C0"] * len(SCHEDULES)
ax.bar(names, structure["neighbour agreement"] * 100, color=bar_colours)
ax.axhspan(
    0,
    structure["shuffled 95th percentile"].max() * 100,
    color="0.85",
    zorder=0,
    label="shuffled groups (to the 95th percentile)",
)
ax.set_ylabel("nearest neighbour in the same group (%)")
ax.set_xlabel("code embedding")
ax.set_axisbelow(True)  # grid lines behind the bars
fig.legend(loc="outside upper right")  # above the bars, clear of them
plt.show()

# %%
# The next paragraph in words that hold at every size: what the book profile asserts
# above is stated only where it holds, and a p-value at its floor is called that.
recovered = (
    s_best["neighbour agreement"] > s_best["shuffled 95th percentile"]
    and s_best["within - between cosine"] > s_rand["within - between cosine"]
)
p_value = s_best["p (shuffled >= observed)"]
p_text = f"permutation p = {p_value:.3f}"
if p_value <= 1 / (1 + cfg.n_shuffles):  # no shuffle reached the observed agreement
    p_text += f", the smallest that {cfg.n_shuffles:,} shuffles can give"
keep("p_text", p_text)
gap_best = cosine_text(s_best["within - between cosine"])
gap_rand = cosine_text(s_rand["within - between cosine"])
if float(gap_best) > float(gap_rand):  # compared as the prose shows them
    gap_text = (
        "Codes of the same group are also more similar on average: the "
        f"within-minus-between cosine is {gap_best} against {gap_rand} untrained."
    )
else:
    gap_text = (
        "On average, though, codes of the same group are no more similar than in the "
        f"untrained encoder: the within-minus-between cosine is {gap_best} against "
        f"{gap_rand} untrained."
    )
keep("gap_text", gap_text)
if recovered:
    found_text = (
        "Nobody told the model that a diagnosis, the drug that treats it and the lab "
        "that monitors it belong together; it found out because the generator records "
        "them together, at the same visits of the same patients."
    )
else:
    found_text = (
        "At this size the embedding does not clearly recover the groups (the larger "
        "profiles assert that it does): pretraining has had too little data and too "
        "few steps."
    )
keep("found_text", found_text)
t2d_text = (
    f"of the {int(is_t2d.sum())} type-2-diabetes codes (conditions, drugs, procedures, "
    f"lab deciles), {t2d_agree:.0%} have a diabetes code as their nearest other concept"
)
shown_agree, shown_share = round(100 * t2d_agree), round(100 * t2d_share)  # as printed
if shown_agree > shown_share:
    chance = f"{t2d_share:.0%}"
    t2d_text += f", where a code drawn at random would be one {chance} of the time."
else:
    t2d_text += (
        f", {'below' if shown_agree < shown_share else 'level with'} the "
        f"{t2d_share:.0%} that codes drawn at random would give: in this embedding the "
        "diabetes codes have not found each other, whatever the groups do overall."
    )
keep("t2d_text", t2d_text)
groups_summary = "The learned code embedding recovers"
if not recovered:
    groups_summary = "At this size the learned code embedding does not clearly recover"
keep("groups_summary", groups_summary + " the generator's latent disease groups")

# %% [markdown]
# In the embedding of the best ({glue:md}`best`) schedule, {glue:text}`agree_best:.0%` of the
# codes have a nearest other concept from their own latent group, against
# {glue:text}`agree_shuffled:.0%` on average with shuffled groups (95th percentile
# {glue:text}`agree_q95:.0%`, {glue:text}`p_text`) and {glue:text}`agree_untrained:.0%` for
# the untrained encoder. {glue:text}`gap_text` {glue:text}`found_text` Up close, for
# diabetes: {glue:text}`t2d_text` (The group includes lab deciles, and a normal HbA1c is no
# sign of diabetes.)
#
# ## The encoder later chapters reuse
# {doc}`08_finetuning_strategies` (and {doc}`08b_finetuning_comparison`) load the book's
# encoder: `load_or_pretrain(task, book_encoder_config(task), book_recipe())`, the `joint`
# schedule with the book's settings from `ehrseq.pretrained`. Here the validation patients
# found {glue:md}`best` the better of the two schedules that train both objectives;
# chapter 8 uses `joint` whichever it is, so that it does not depend on a choice made at
# run time. The call finds the artefact below on disk (or trains it the same way when the
# file is missing) and returns these weights; a later chapter keeps `model.encoder`.

# %%
book = load_or_pretrain(task, book_encoder_config(task), book_recipe())
glue("encoder_key", Markdown(f"`{book.folder.name}`"), display=False)
print(f"artefact: {book.folder.name}")
print("task:", format_config(task.config))
print("encoder:", format_config(encoder_cfg))
print("recipe:", format_config(book.recipe))
assert book.loaded  # loaded above, so it comes from disk
for name, tensor in book.model.state_dict().items():
    torch.testing.assert_close(tensor, models["joint"].state_dict()[name].cpu())

# %% [markdown]
# ## Summary
# - {doc}`05b_pretraining_schedules` found {glue:md}`best` the better of the two schedules
#   that train both objectives on the validation patients; the same rule finds it here
#   among the saved artefacts.
# - {glue:text}`groups_summary`: nearest-neighbour agreement {glue:text}`agree_best:.0%`
#   against {glue:text}`agree_shuffled:.0%` for shuffled groups and
#   {glue:text}`agree_untrained:.0%` untrained.
# - The book's encoder is always the `joint` schedule's, whichever schedule is best: the
#   artefact {glue:md}`encoder_key` that the chapters which fine-tune it load.
#
# ## Exercises
# 1. Compute neighbour agreement per domain (conditions, drugs, procedures, labs). Which
#    kind of code is placed best, and how does that follow from how the generator records
#    it?

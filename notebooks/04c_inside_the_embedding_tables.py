# ---
# jupyter:
#   ehrseq:
#     runs_after: [04b_embedding_ablation]
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
# # Inside the embedding tables
#
# ## Outline
# {doc}`04b_embedding_ablation` pretrained small BEHRT encoders {cite}`li2020behrt` by
# masked-code modelling with one term of the input layer removed or changed at a time, and
# measured what each term is worth on held-out patients. Two of its encoders are worth
# opening: the one with every embedding, and the one whose learned position table is
# replaced by fixed sinusoids. This chapter loads both from the artefacts chapter 4b saved
# and looks at the tables themselves.
#
# We will
# 1. load the two encoders of {doc}`04b_embedding_ablation` (first seed), or pretrain them
#    the same way if this chapter runs first;
# 2. see why fixed sinusoids, added as they are, start at a disadvantage: the length of
#    their rows against that of the learned ones;
# 3. ask whether the learned position and age tables came out smooth: are neighbouring
#    rows similar and distant rows not?

# %% [markdown]
# ## Setup
# One config per chapter; `EHRSEQ_PROFILE` (`smoke`, `book`, `full`) picks its size. The
# encoders and their pretraining are not set here: they are the recipe of
# {doc}`04b_embedding_ablation`, `ehrseq.mlm_ablation.mlm_ablation()`. With the task, the
# variant and the seed it makes the key of each pretrained encoder, so this chapter loads
# the encoders that chapter saved.

# %%
import time
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

import ehrseq
from ehrseq.book import keep, plural
from ehrseq.config import for_profile, format_config
from ehrseq.data.task import prepare_survival_task, shared_task_config
from ehrseq.mlm_ablation import VARIANTS, load_or_pretrain, mlm_ablation
from ehrseq.models import BehrtEncoder
from ehrseq.models.behrt import sinusoidal_table
from ehrseq.plotting import apply_style
from ehrseq.pretrain import BehrtForPretraining


@dataclass(frozen=True)
class Config:
    profile: str = "book"
    seed: int = 7  # seed of the setup
    n_positions: int = 64  # rows of the position table compared


cfg = for_profile(Config, {})
recipe = mlm_ablation()  # the encoders of chapter 4b; this chapter opens the first seed
device = ehrseq.get_device()
rng = ehrseq.seed_everything(cfg.seed)
apply_style()
print(format_config(cfg))
print(format_config(recipe))
print(f"device: {device}; CPU threads: {torch.get_num_threads()} (OMP_NUM_THREADS)")
chapter_start = time.perf_counter()
keep("epochs_text", plural(recipe.epochs, "epoch"))  # "1 epoch", "4 epochs"

# %% [markdown]
# The tables are read on the CPU. Encoders pretrained on a GPU are not bit-for-bit
# reproducible (atomic adds in the backward pass of embeddings and attention); on a CPU they
# are.
#
# ## Data
# The shared task's token tensors, as in {doc}`04b_embedding_ablation`: each training
# patient's history before the prediction time, the first of them (all in `full`) for
# pretraining, in length-bucketed batches (`load_or_pretrain` makes them as 4b does). They
# are needed only to pretrain the encoders when chapter 4b has not, and to know which age
# bins the training tokens use.

# %%
task = prepare_survival_task(shared_task_config())  # the same task in every chapter
max_len = task.config.max_len  # the longest sequence, the rows of a position table
task.summary()

# %% [markdown]
# ## Model
# ### The encoders of chapter 4b
# Each encoder of the ablation is an artefact (`ehrseq.artifacts.load_or_train`) keyed by
# the task, the encoder's config and the pretraining recipe. Run after
# {doc}`04b_embedding_ablation`, `load_or_pretrain` loads the first seed's encoder with
# every embedding and the one with sinusoidal positions; run first, it pretrains each
# exactly as 4b does (masked-code modelling, `ehrseq.pretrain.pretrain` with
# `schedule="mlm"`) and saves it under 4b's key.

# %%
variants = {name: VARIANTS[name] for name in ("all embeddings", "sinusoidal position")}
first_seed = recipe.seeds[0]
kept_models, loaded = {}, {}
for name, overrides in variants.items():
    run = load_or_pretrain(task, recipe, overrides, first_seed)  # loaded, or pretrained
    loaded[name] = run.loaded
    kept_models[name] = run.model.cpu().eval()
print("loaded from chapter 4b:" if all(loaded.values()) else "loaded:", loaded)

# %% [markdown]
# ## Evaluate
# ### Why fixed sinusoids start at a disadvantage
# Every learned table starts with entries of standard deviation
# $\sigma$ = {glue:text}`init_std` (BERT's initialisation, `BehrtConfig.init_std`), so a row
# has length about $\sigma\sqrt d$. A sinusoidal row has length
# $\sqrt{d/2}$, whatever $d$. Before the LayerNorm, the sum is therefore dominated by the
# position; after it, a token's vector is almost only *where* it is, and the code has to grow
# by an order of magnitude, against weight decay, before it is heard. Vaswani et al. scale
# their token embeddings by $\sqrt d$ for this reason {cite}`vaswani2017attention`;
# `BehrtEmbeddings` adds the table as it is. The encoder "at initialisation" is the
# sinusoidal one before pretraining: the same config and seed, so the same starting weights.

# %%
ehrseq.seed_everything(first_seed)  # the initial weights of the first seed's encoders
sinusoidal_cfg = recipe.encoder_config(task, variants["sinusoidal position"])
keep("init_std", sinusoidal_cfg.init_std)
initial = BehrtForPretraining(BehrtEncoder(sinusoidal_cfg))
norms = {}
for label, model in (
    ("at initialisation", initial),
    ("after pretraining", kept_models["sinusoidal position"]),
):
    e = model.encoder.embeddings
    table = sinusoidal_table(max_len, recipe.d_model)
    norms[label] = {
        "code row": float(e.code.weight.detach().norm(dim=1).mean()),
        "domain row": float(e.domain.weight.detach().norm(dim=1).mean()),
        "sinusoidal position row": float(table.norm(dim=1).mean()),
    }
norms = pd.DataFrame(norms)
keep(
    "sin_ratio_init",
    norms.loc["sinusoidal position row", "at initialisation"]
    / norms.loc["code row", "at initialisation"],
)
keep(
    "sin_ratio_trained",
    norms.loc["sinusoidal position row", "after pretraining"]
    / norms.loc["code row", "after pretraining"],
)
norms.rename_axis("mean length of a row").style.format("{:.2f}")

# %% [markdown]
# At initialisation a sinusoidal row is {glue:text}`sin_ratio_init:.0f` times longer than a
# code row; after pretraining still {glue:text}`sin_ratio_trained:.1f` times. The fixed
# table is not worse at encoding order; it is too loud. Scaling it down to the size of the
# learned rows (or the codes up) is exercise 1.
#
# ### What the tables learned
# The learned position and age tables of the full encoder can be compared with what they
# would be if they encoded order and age smoothly: neighbouring rows similar, distant rows
# not.

# %%
full_model = kept_models["all embeddings"]
embeddings = full_model.encoder.embeddings
n_pos = cfg.n_positions
pos_w = F.normalize(embeddings.position.weight.detach()[:n_pos], dim=1)
age_w = F.normalize(embeddings.age.weight.detach(), dim=1)
pos_sim = (pos_w @ pos_w.T).numpy()  # (n_pos, n_pos) cosine
token_ages = torch.from_numpy(task.encoding.select(task.split["train"]).arrays["ages"])
used = np.flatnonzero(np.bincount(embeddings.age_bins(token_ages)))  # age bins in use
age_sim = (age_w[used] @ age_w[used].T).numpy()  # (used, used) cosine
pos_near = float(np.mean(np.diagonal(pos_sim, 1)))
pos_far = float(np.mean([np.diagonal(pos_sim, k).mean() for k in range(20, 40)]))
age_near = float(np.mean(np.diagonal(age_sim, 1)))
age_far = float(np.mean([np.diagonal(age_sim, k).mean() for k in range(10, 20)]))
keep("pos_near", pos_near)
keep("pos_far", pos_far)
keep("age_near", age_near)
keep("age_far", age_far)

# %% mystnb={"figure": {"name": "fig-learned-tables", "caption": "Cosine similarity between rows of the learned tables of one pretrained encoder (all embeddings, first seed). Left: positions 0 to 63. Right: the age bins that occur in the training data."}}
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6), layout="constrained")
for ax, sim, ticks, label in (
    (ax1, pos_sim, np.arange(0, n_pos, 16), "position (tokens)"),
    (ax2, age_sim, np.arange(0, len(used), 10), "age bin (years)"),
):
    im = ax.imshow(sim, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="none")
    ax.set_xlabel(label)
    ax.set_ylabel(label)
    ax.grid(False)
    if ax is ax2:
        ax.set_xticks(ticks, (used[ticks] * recipe.age_bin_years).astype(int))
        ax.set_yticks(ticks, (used[ticks] * recipe.age_bin_years).astype(int))
fig.colorbar(im, ax=[ax1, ax2], label="cosine similarity")
plt.show()
chapter_seconds = time.perf_counter() - chapter_start
print(f"chapter ran in {chapter_seconds:.0f} s ({cfg.profile} profile)")

# %% [markdown]
# Neighbouring positions have a mean cosine of {glue:text}`pos_near:.2f`, positions 20 to 40
# apart {glue:text}`pos_far:.2f`; neighbouring age bins {glue:text}`age_near:.2f`, bins 10 to
# 20 years apart {glue:text}`age_far:.2f`. Nothing told the tables that position 5 lies
# between 4 and 6, or age 61 between 60 and 62; whatever smoothness they show was learned
# from the data in {glue:text}`epochs_text`, and rows trained on few tokens stay close to
# their random start.
#
# ## Summary
# - Fixed sinusoids, added as they are, start {glue:text}`sin_ratio_init:.0f` times louder
#   than the learned code rows, and are still {glue:text}`sin_ratio_trained:.1f` times
#   louder after pretraining: the position drowns the code before the LayerNorm.
# - The learned tables owe any smoothness to the data: neighbouring positions have a mean
#   cosine of {glue:text}`pos_near:.2f` (against {glue:text}`pos_far:.2f` 20 to 40 apart),
#   neighbouring age bins {glue:text}`age_near:.2f` (against {glue:text}`age_far:.2f` 10
#   to 20 years apart).
# - The encoders came from {doc}`04b_embedding_ablation` as artefacts: a chapter that only
#   reads a trained model loads it by the key of the chapter that trained it.
#
# ## Exercises
# 1. Make the sinusoidal variant fair: after building the model, multiply its table
#    (`model.encoder.embeddings.sinusoid`, a buffer) by $\sigma\sqrt 2$ so that its rows are as
#    long as the learned ones at initialisation, and rerun the two position variants of
#    {doc}`04b_embedding_ablation`. Which wins now? Then think about length: sinusoids
#    extrapolate to positions never seen in training, a learned table cannot.
# 2. Draw the same similarity maps for the time-gap table (`embeddings.time_bins`) and for the
#    encoder of another seed. Which features of the maps repeat across seeds?
# 3. Pretrain with five-year age bins (the `age bins of 5 years` variant of chapter 4b) and
#    compare the age map: does a coarser table come out smoother?

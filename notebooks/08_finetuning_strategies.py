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
# # Frozen, LoRA or full fine-tuning
#
# ## Outline
# A pretrained encoder {cite}`devlin2019bert,li2020behrt` is only useful once it is adapted
# to the question at hand, here the heart-failure survival task that every modelling chapter
# shares. There are three common ways to adapt it, and they differ in what they train:
#
# - **frozen encoder**: keep every pretrained weight and train only the survival head on top
#   ({glue:text}`head_params:,` parameters here);
# - **LoRA** {cite}`hu2022lora`: keep the pretrained weights, but add a trainable low-rank
#   update to some of the linear layers (the attention projections), plus the head;
# - **full fine-tuning**: train everything, starting from the pretrained weights.
#
# We will
# 1. load the book's pretrained BEHRT encoder, the `joint` one that
#    {doc}`05b_pretraining_schedules` trains on the training patients' histories (masked
#    codes and next-visit codes in every step), from its artefact;
# 2. write LoRA in a few lines, check that the library's version is the same layer, and show
#    on our encoder that it does what it promises: the same outputs at initialisation,
#    gradients only in the adapters, merging and unmerging without loss;
# 3. build every regime from one function (frozen, LoRA at {glue:text}`lora_ranks_text`, full,
#    and the same network from scratch) and measure what each trains and what its training
#    holds in memory.
#
# The next chapter, {doc}`08b_finetuning_comparison`, fine-tunes a per-bin survival head under
# each regime, on all the labelled training patients and on a small cohort of them, and tests
# two claims with paired intervals on the same test patients: *pretraining helps* and *LoRA
# matches full fine-tuning*.

# %% [markdown]
# ## Setup
# One config per chapter; `EHRSEQ_PROFILE` (`smoke`, `book`, `full`) picks its size.

# %%
import copy
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

import ehrseq
from ehrseq.book import keep, plural, start_claims
from ehrseq.config import for_profile, format_config
from ehrseq.data.task import prepare_survival_task, shared_task_config
from ehrseq.models import (
    BehrtEncoder,
    BinHazardHead,
    LoRALinear,
    SurvivalModel,
    apply_lora,
    count_parameters,
    freeze,
    merge_lora,
    unmerge_lora,
)
from ehrseq.models.lora import ATTENTION_MODULES, lora_modules
from ehrseq.plotting import apply_style
from ehrseq.pretrain import TokenIds, code_counts, evaluate_masked_codes
from ehrseq.pretrained import book_encoder_config, book_recipe, load_or_pretrain
from ehrseq.runs import hazard_nll_step
from ehrseq.survival import life_table_hazards
from ehrseq.train import to_device

CHAPTER = "08_finetuning_strategies"


# fine-tuning fields as in 08b_finetuning_comparison; the encoder and its pretraining
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


cfg = for_profile(
    Config,
    {
        "smoke": {
            "lora_ranks": (4,),
        },
        "full": {
            "batch_size": 256,
            "lr_full": 2e-4,
            "lr_scratch": 5e-4,
            "lora_ranks": (2, 8, 16, 64),
        },
    },
)
device = ehrseq.get_device()
ehrseq.seed_everything(0)
apply_style()
# records no claim (08b_finetuning_comparison does): clears older ones
start_claims(CHAPTER)
print(format_config(cfg))
print(f"device: {device}; CPU threads: {torch.get_num_threads()} (OMP_NUM_THREADS)")
*head_ranks, last_rank = cfg.lora_ranks
keep(
    "lora_ranks_text",
    f"ranks {', '.join(map(str, head_ranks))} and {last_rank}"
    if head_ranks
    else f"rank {last_rank}",
)

# %% [markdown]
# On a CPU everything here is repeatable bit for bit. On a GPU, the atomic adds of the
# visit pooling and of the attention backward pass leave the last bits of each run
# nondeterministic. The memory table at the end counts what autograd saves and what the
# optimiser keeps, not what an allocator holds, so it reads the same on either device.
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
train_set = task.dataset("train")
keep("n_bins", n_bins)
task.summary().round(3)


# %%
def life_table(t) -> np.ndarray:
    """h_k = d_k / n_k per bin of a task's training patients: where the head starts."""
    frame = t.frame("train")
    return life_table_hazards(frame["bin"], frame["event"], n_bins)


# %% [markdown]
# ## Model
# ### The pretrained encoder
# The book's pretrained encoder, the one that {doc}`05b_pretraining_schedules` trains under
# its `joint` schedule: a BEHRT encoder of {glue:text}`d_model` dimensions and
# {glue:text}`n_layers` layers, pretrained with masked-code modelling (BERT's objective,
# bidirectional) and next-visit prediction (the set of codes of the next visit, from a
# visit-causal pass) summed in every step, the next-visit term weighted by the vocabulary
# size so that it is a sum over codes rather than a mean. It reads only the histories of the
# training patients, never a label. Its sizes and its recipe are not this chapter's settings
# but the book's, one per profile in `ehrseq.pretrained` (`book_encoder_config`,
# `book_recipe`), so that every chapter that starts from a pretrained encoder starts from
# the same one.
#
# Pretraining is the most expensive step, so its weights are an **artefact**:
# `load_or_pretrain` loads chapter 5b's file, keyed by a hash of the task, the encoder config
# and the recipe, and trains the same weights only if that file does not exist yet.

# %%
encoder_cfg = book_encoder_config(task)  # the book's encoder sizes for this profile
recipe = book_recipe()  # the joint schedule of 05b_pretraining_schedules
ids = TokenIds.from_vocab(task.vocab)
started = time.perf_counter()
pretrained = load_or_pretrain(task, encoder_cfg, recipe)
pretrain_seconds = time.perf_counter() - started
pretrained_state = copy.deepcopy(pretrained.model.encoder.state_dict())
pretrain_history = pretrained.history
print(format_config(encoder_cfg))
print(format_config(pretrained.recipe))  # next-visit weight resolved to |V|
print(
    f"{'loaded' if pretrained.loaded else 'trained'} in {pretrain_seconds:.1f} s "
    f"from {pretrained.folder.name}"
)
keep("d_model", encoder_cfg.d_model)
keep("n_layers", encoder_cfg.n_layers)
columns = ["epoch", "train_loss", "val_mlm_loss", "val_mlm_acc", "val_nv_loss"]
pretrain_history[columns].round(4)

# %% [markdown]
# Did pretraining learn anything? The masked codes of the validation patients, predicted by
# the encoder and by always guessing the most frequent training codes:

# %%
counts = code_counts(task.loader("train", 256), ids)
masked = evaluate_masked_codes(
    pretrained.model.to(device), task.loader("val", 256), ids, counts=counts
)
keep("mlm_top10", masked["top10"])
keep("mlm_base10", masked["baseline_top10"])
mlm_gain = masked["top10"] - masked["baseline_top10"]
keep("mlm_better", "better than" if mlm_gain > 0 else "no better than")
keep(
    "mlm_verdict",
    f"{100 * mlm_gain:.1f} percentage points more. A small encoder, a few epochs and "
    "short histories: a modest start, but one the survival model can build on"
    if mlm_gain > 0
    else f"no better. After {plural(recipe.epochs, 'epoch')} of pretraining "
    "at this size the encoder has learnt little beyond which codes are common, so the "
    "fine-tuned regimes start from a weak encoder",
)
assert np.isfinite(pretrain_history["train_loss"]).all()
assert pretrain_history["train_loss"].iloc[-1] < pretrain_history["train_loss"].iloc[0]
if cfg.profile != "smoke":
    assert masked["top10"] > masked["baseline_top10"]
shown = {  # the count as a whole number, the shares at three decimals
    k: f"{int(v):,}" if k == "n_masked" else f"{v:.3f}" for k, v in masked.items()
}
pd.Series(shown).to_frame("validation")

# %% [markdown]
# The true code is among the encoder's ten best guesses for {glue:text}`mlm_top10:.1%` of the
# masked validation codes, against {glue:text}`mlm_base10:.1%` for the ten most frequent
# codes: {glue:text}`mlm_verdict`.

# %% [markdown]
# ### The survival model
# On top of the encoder sits the per-bin hazard head of {doc}`06_survival_head`: the mean
# token state of each patient's last visit before the prediction time goes through a linear
# layer to {glue:text}`n_bins` hazard logits, trained with the discrete-time negative
# log-likelihood. The head starts at the life table of the cohort it trains on (its bias is
# set with `base_hazards`), the best prediction without features.
#
# One detail matters for the frozen regime. `freeze` switches off gradients but not dropout,
# and `fit` puts the model in training mode every epoch, so a frozen encoder would still
# drop {glue:text}`encoder_dropout:.0%` of its activations at random: noise on the features
# the head learns from, and not the network the head will see at test time. The library's
# `SurvivalModel` keeps a frozen encoder in evaluation mode when the model trains.


# %%
def new_model(pretrained_weights: bool, base_hazards: np.ndarray) -> SurvivalModel:
    encoder = BehrtEncoder(encoder_cfg)
    if pretrained_weights:
        encoder.load_state_dict(pretrained_state)
    head = BinHazardHead(  # starts at the life table
        encoder_cfg.d_model, n_bins, dropout=cfg.head_dropout, base_hazards=base_hazards
    )
    return SurvivalModel(encoder, head)  # a flat batch -> HazardOutput of shape (B, K)


keep("encoder_dropout", encoder_cfg.dropout)
batch = train_set.batch(np.arange(8))  # eight training patients, padded
model = new_model(True, life_table(task)).eval()
with torch.no_grad():
    out = model(batch)
assert out.logits.shape == out.hazards.shape == (8, n_bins)
assert out.surv.shape == (8, n_bins)
print(f"logits {tuple(out.logits.shape)}, survival {tuple(out.surv.shape)}")

# %% [markdown]
# ### LoRA in a few lines
# A linear layer computes $y = x W_0^\top + b$ with a pretrained $W_0 \in \mathbb R^{d_\text{out}
# \times d_\text{in}}$. LoRA {cite}`hu2022lora` freezes $W_0$ and learns a low-rank change of
# it,
#
# $$
# W = W_0 + \frac{\alpha}{r}\, B A, \qquad
# A \in \mathbb R^{r \times d_\text{in}},\quad B \in \mathbb R^{d_\text{out} \times r},
# \quad r \ll \min(d_\text{in}, d_\text{out}),
# $$
#
# computed as $y = x W_0^\top + b + \frac{\alpha}{r} (x A^\top) B^\top$ without ever forming
# $BA$. $A$ starts random and $B$ at zero, so the adapted network starts as the pretrained
# one; $\alpha / r$ keeps the size of the update comparable across ranks, so the learning
# rate need not be retuned when $r$ changes. A layer with $d_\text{in} = d_\text{out} = d$
# trains $2 r d$ numbers instead of $d^2$. After training, $\frac{\alpha}{r} BA$ can be added
# into $W_0$ (*merged*), and the adapted model costs nothing extra at inference.
#
# The whole idea, inline:


# %%
class TinyLoRA(nn.Module):
    """y = base(x) + (alpha / r) x A^T B^T, with base frozen, A random and B = 0."""

    def __init__(self, base: nn.Linear, r: int, alpha: float):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.A = nn.Parameter(torch.randn(r, base.in_features) / base.in_features**0.5)
        self.B = nn.Parameter(torch.zeros(base.out_features, r))
        self.scaling = alpha / r

    def forward(self, x):
        return self.base(x) + self.scaling * (x @ self.A.T) @ self.B.T  # (*, d_out)


torch.manual_seed(0)
base = nn.Linear(encoder_cfg.d_model, encoder_cfg.d_model)
tiny = TinyLoRA(copy.deepcopy(base), r=4, alpha=cfg.lora_alpha)
library = LoRALinear(copy.deepcopy(base), r=4, alpha=cfg.lora_alpha)
x = torch.randn(5, 7, encoder_cfg.d_model)  # (B, L, d)
# B = 0: no change
assert torch.equal(tiny(x), base(x)) and torch.equal(library(x), base(x))
with torch.no_grad():
    tiny.B.normal_()  # pretend training moved B
    library.lora_A.copy_(tiny.A)
    library.lora_B.copy_(tiny.B)
assert library(x).shape == x.shape
# the library's layer is the same layer
assert torch.allclose(tiny(x), library(x), atol=1e-5)
assert not torch.allclose(tiny(x), base(x), atol=1e-3)

# %% [markdown]
# ### LoRA on our encoder
# `apply_lora` wraps the query, key, value and output projections of every attention block
# (`q_proj`, `k_proj`, `v_proj`, `o_proj`) in `LoRALinear`, freezes everything else, and
# keeps the modules named in `trainable` (the head) trainable. Four promises to check on the
# pretrained encoder, with a real batch:
#
# 1. at initialisation ($B = 0$) the adapted model computes exactly what the pretrained one
#    computes;
# 2. once $B \neq 0$ the outputs change;
# 3. a backward pass gives gradients to $A$, $B$ and the head, and none to the pretrained
#    weights;
# 4. merging $\frac{\alpha}{r} BA$ into the weights changes no output, and unmerging gives the
#    original weights back.

# %%
rank = cfg.lora_ranks[-1]
base_model = new_model(True, life_table(task)).eval()
lora_model = apply_lora(
    copy.deepcopy(base_model), r=rank, alpha=cfg.lora_alpha, trainable=("head",)
).eval()
wrapped = lora_modules(lora_model)
assert len(wrapped) == len(ATTENTION_MODULES) * encoder_cfg.n_layers
with torch.no_grad():
    assert torch.equal(lora_model(batch).logits, base_model(batch).logits)  # 1. B = 0

    for _, m in wrapped:
        m.lora_B.normal_(std=0.02)  # 2. a non-zero B changes the function
    adapted = lora_model(batch).logits
assert not torch.allclose(adapted, base_model(batch).logits, atol=1e-4)

lora_model.train()  # 3. gradients only where they should be
hazard_nll_step(lora_model, batch).backward()
for name, p in lora_model.named_parameters():
    is_adapter = name.endswith(("lora_A", "lora_B"))
    if is_adapter or name.startswith("head."):
        assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name
    else:
        assert not p.requires_grad and p.grad is None, name
lora_model.eval()

before = {n: m.base.weight.detach().clone() for n, m in wrapped}  # 4. merge / unmerge
with torch.no_grad():
    merge_lora(lora_model)
    assert all(m.merged for _, m in wrapped)
    assert torch.allclose(lora_model(batch).logits, adapted, atol=1e-5)
    unmerge_lora(lora_model)
    assert torch.allclose(lora_model(batch).logits, adapted, atol=1e-5)
assert all(torch.allclose(m.base.weight, before[n], atol=1e-6) for n, m in wrapped)

n_adapter = sum(m.lora_A.numel() + m.lora_B.numel() for _, m in wrapped)
n_head = sum(p.numel() for p in lora_model.head.parameters())
counted = count_parameters(lora_model)
# r (d_in + d_out) per layer
assert n_adapter == len(wrapped) * rank * 2 * encoder_cfg.d_model
assert counted["trainable"] == n_adapter + n_head
print(
    f"LoRA r={rank}: {counted['trainable']:,} trainable of {counted['total']:,} "
    f"({counted['share']:.1%}): {n_adapter:,} in {len(wrapped)} adapters, "
    f"{n_head:,} in the head"
)

# %% [markdown]
# ### The regimes
# One builder for every regime, so the models differ only in what trains. The learning rate
# follows what trains: the head alone takes large steps, the adapters medium ones, and a whole
# pretrained network small ones so as not to wipe out what it learnt. The model trained from
# scratch is the same network (the same `book_encoder_config`) with random weights and its
# own learning rate, `lr_scratch`, of the order that {doc}`06b_survival_training` uses to
# train such a network from scratch.


# %%
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


base_hazards = life_table(task)
sizes = {name: count_parameters(build(name, base_hazards)) for name in REGIMES}
sizes = pd.DataFrame(sizes).T
sizes["trainable"] = sizes["trainable"].astype(int)
sizes["total"] = sizes["total"].astype(int)
frozen_model = build("frozen", life_table(task)).train()
assert not frozen_model.encoder.training and frozen_model.head.training
assert sizes.loc["frozen", "trainable"] == n_bins * (encoder_cfg.d_model + 1)
assert sizes.loc["full", "trainable"] == sizes.loc["full", "total"]
keep("head_params", int(sizes.loc["frozen", "trainable"]))
sizes.style.format({"share": "{:.2%}", "trainable": "{:,}", "total": "{:,}"})

# %% [markdown]
# What training holds in memory besides the model also follows from what trains. For every
# trainable number AdamW keeps a gradient and two moments (three float32 numbers). And for
# every layer that a gradient has to flow back through, autograd keeps the activations of
# the forward pass until the backward pass. `saved_for_backward_mib` measures the second:
# it records every tensor that autograd saves while one training batch of
# {glue:text}`batch_size` patients goes forward (counting each storage once, weights
# excluded). It is exact and does not depend on the device or on what the allocator reuses.

# %%
# one training batch
probe = to_device(train_set.batch(np.arange(cfg.batch_size)), device)
keep("batch_size", cfg.batch_size)
memory = pd.DataFrame(index=list(REGIMES))
for regime in REGIMES:
    m = build(regime, life_table(task)).to(device).train()
    memory.loc[regime, "activations MiB"] = ehrseq.saved_for_backward_mib(
        lambda m=m: hazard_nll_step(m, probe), exclude=m.parameters()
    )
memory["grad + AdamW MiB"] = sizes["trainable"] * 3 * 4 / 2**20
# a frozen encoder keeps only the head's input; every LoRA rank keeps the whole
# forward pass
full_activations = memory.loc["full", "activations MiB"]
assert memory.loc["frozen", "activations MiB"] < 0.1 * full_activations
assert (
    memory.loc[[f"LoRA r={r}" for r in cfg.lora_ranks], "activations MiB"]
    > 0.5 * memory.loc["full", "activations MiB"]
).all()
keep("act_frozen", float(memory.loc["frozen", "activations MiB"]))
keep("act_lora", float(memory.loc[f"LoRA r={cfg.lora_ranks[0]}", "activations MiB"]))
keep("act_full", float(memory.loc["full", "activations MiB"]))
lora_ratio = (
    memory.loc[f"LoRA r={cfg.lora_ranks[0]}", "activations MiB"]
    / memory.loc["full", "activations MiB"]
)
keep("act_lora_ratio", float(lora_ratio))  # LoRA's activations over full fine-tuning's
keep("lora_r0", cfg.lora_ranks[0])
keep("adam_lora", float(memory.loc[f"LoRA r={cfg.lora_ranks[0]}", "grad + AdamW MiB"]))
keep("adam_full", float(memory.loc["full", "grad + AdamW MiB"]))
memory.round(3)

# %% [markdown]
# A frozen encoder keeps {glue:text}`act_frozen:.2f` MiB for this batch, the input of the
# head. LoRA keeps {glue:text}`act_lora:.1f` MiB (rank {glue:text}`lora_r0`),
# {glue:text}`act_lora_ratio:.0%` of the {glue:text}`act_full:.1f` MiB of full fine-tuning:
# to reach $A$ and $B$ in the first layer, the gradient has to pass back through every layer
# above it, so most of the forward pass is kept. What LoRA saves is the optimiser state:
# {glue:text}`adam_lora:.2f` MiB against {glue:text}`adam_full:.2f` MiB for full
# fine-tuning here, small either way at this encoder's size; on a large encoder the
# optimiser state of full fine-tuning is what matters.

# %% [markdown]
# ## Summary
# - **The pretrained encoder.** The true code is among its ten best guesses for
#   {glue:text}`mlm_top10:.1%` of the masked validation codes, {glue:text}`mlm_better` the
#   {glue:text}`mlm_base10:.1%` of the ten most frequent codes. It is the book's joint
#   encoder of {doc}`05b_pretraining_schedules`, loaded from that chapter's artefact, keyed by
#   the task, the encoder config and the recipe.
# - **What each regime trains.** The frozen encoder trains
#   {glue:text}`n_bins` × ({glue:text}`d_model` + 1) head parameters, LoRA adds
#   $2 r d$ per adapted projection, full fine-tuning trains everything. The asserts above
#   show LoRA doing what it promises on our encoder: identical outputs at initialisation,
#   gradients only in $A$, $B$ and the head, and a lossless merge and unmerge.
# - **Memory.** A frozen encoder keeps almost no activations; LoRA keeps most of them
#   ({glue:text}`act_lora_ratio:.0%` of full fine-tuning's: the gradient must pass back
#   through every layer) and saves the optimiser state.
#
# {doc}`08b_finetuning_comparison` loads this encoder's artefact, trains every regime on a
# large and a small cohort, and tests whether pretraining helps and whether LoRA matches full
# fine-tuning.
#
# ## Exercises
# Both exercises ask about training too: make the same change in
# {doc}`08b_finetuning_comparison`, which trains the regimes.
#
# 1. Adapt the feed-forward layers too (`lora_mlp=True` in the config). How many parameters
#    does that add at each rank, and does the equivalence claim change its verdict?
# 2. Fix $\alpha = 2r$ instead of a constant $\alpha$. Which ranks change behaviour, and
#    why does the constant $\alpha$ make the learning rate easier to carry across ranks?

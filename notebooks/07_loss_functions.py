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
# # Loss functions for discrete-time survival
#
# ## Outline
# A survival head turns a patient into one hazard logit per time bin. What it learns depends
# on the loss it is trained with, and the two families in use pull in different directions:
# the **likelihood** asks for probabilities that match how often events happen, a **ranking
# loss** asks only that patients who fall ill earlier get the higher risk. The C-index, the
# metric most papers report, rewards only the second.
#
# We will
# 1. write the discrete-time negative log-likelihood from the logits in a few lines, check it
#    against the library and against binary cross-entropy on person-period rows, and see
#    why it must be computed in log space rather than from a clamped sigmoid;
# 2. build the pairwise ranking loss over comparable pairs, the same pairs Harrell's C counts,
#    and the hybrid $\text{NLL} + \lambda \cdot \text{ranking}$ of DeepHit;
# 3. build the small network, on fixed features of the shared survival task, that every loss
#    will train.
#
# The next chapter, {doc}`07b_loss_comparison`, trains that network with each loss on the
# shared survival task, sweeping $\lambda$, with several seeds, scores every model with
# Harrell's and Uno's C and the integrated Brier score, next to the oracle; the one after,
# {doc}`07c_where_losses_disagree`, looks at calibration and at where the likelihood and the
# C-index disagree.

# %% [markdown]
# ## Setup
# One config per chapter; `EHRSEQ_PROFILE` (`smoke`, `book`, `full`) picks its size.

# %%
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import ehrseq
from ehrseq.baselines import token_count_features
from ehrseq.book import format_floats, keep, plural, start_claims
from ehrseq.config import for_profile, format_config
from ehrseq.data.task import prepare_survival_task, shared_task_config
from ehrseq.losses import hazard_nll, hybrid_loss, pairwise_ranking_loss
from ehrseq.metrics import concordance_index
from ehrseq.models import BagOfTokensSurvival, count_parameters
from ehrseq.survival import hazards_to_survival, life_table_hazards


@dataclass(frozen=True)
# sigma, hidden, dropout and batch_size as in 07b_loss_comparison, which trains
class Config:
    profile: str = "book"
    seed: int = 7  # seed of the setup
    # temperature of the ranking loss (DeepHit's and pycox's default)
    sigma: float = 0.1
    hidden: int = 64  # width of the patient state that the hazard head reads
    dropout: float = 0.1  # on the hidden layer and in the head
    # patients per step; the ranking loss compares pairs within a batch
    batch_size: int = 256


cfg = for_profile(
    Config,
    {
        "smoke": {},  # nothing here trains: the smoke profile keeps the book's sizes
        "full": {"hidden": 256, "batch_size": 1024},
    },
)
device = ehrseq.get_device()
ehrseq.seed_everything(cfg.seed)
print(format_config(cfg))
print(f"device: {device}; CPU threads: {torch.get_num_threads()} (OMP_NUM_THREADS)")
CHAPTER = "07_loss_functions"
# no claims here (07b_loss_comparison tests them); clears older ones
start_claims(CHAPTER)


keep("sigma", cfg.sigma)
keep("batch_size", cfg.batch_size)
chapter_start = time.perf_counter()

# %% [markdown]
# ## Data
# Every modelling chapter shares one protocol (`prepare_survival_task`): the same synthetic
# cohort, the same patients in training, validation and test, a prediction time
# {glue:text}`history_text` into each patient's record, a
# {glue:text}`horizon_years:g`-year horizon cut into {glue:text}`n_bins` equal bins, and the
# generator's true risk of every patient, the oracle.

# %%
task = prepare_survival_task(shared_task_config())  # the same task in every chapter
n_bins = task.config.n_bins
horizon_days = task.config.horizon_days
keep("n_bins", n_bins)
keep("bin_days", float(task.config.bin_days))
keep("horizon_years", float(task.config.horizon_years))
# "2 years"
keep("history_text", plural(task.config.history_days / 365.25, "year", ".0f"))
task.summary()

# %% [markdown]
# ### A fixed-feature patient state
# The losses act on the hazard logits and nothing else, so the lesson does not depend on the
# encoder behind them. Comparing several losses with several seeds each means many training
# runs, too many for a BEHRT encoder trained from scratch on a CPU within the budget of one
# chapter. The network here therefore reads **fixed features**: the counts of every
# vocabulary token (conditions, drugs, procedures and the value-decile tokens of labs, all
# from the history before the prediction time), as $\log(1 + \text{count})$, and the age at
# the last recorded event, standardised on the training patients. The counts are left
# unstandardised on purpose: a token that only five training patients have would become a
# z-score of about {glue:text}`rare_z:.0f` for them, and the network would fit those rare
# tokens before the common ones. The features are `ehrseq.baselines.token_count_features`,
# checked below against the task's labels. In other chapters the same head sits on sequence
# encoders; swapping one in here is an exercise of {doc}`07b_loss_comparison`.


# %%
data = token_count_features(task)  # {split: (x, durations, events)}
n_features = data["train"][0].shape[1]
for split, (x, d, e) in data.items():
    n = len(task.frame(split))
    assert x.shape == (n, len(task.vocab) + 1) and d.shape == e.shape == (n,)
    assert torch.equal(d, torch.as_tensor(task.frame(split)["bin"].to_numpy()))
    assert int(d.max()) < n_bins and torch.isfinite(x).all()
keep("n_features", n_features)
n_train = len(data["train"][1])
# z-score of a 0/1 feature 5 patients have
keep("rare_z", float(np.sqrt((n_train - 5) / 5)))
print({split: tuple(x.shape) for split, (x, _, _) in data.items()})

# %% [markdown]
# The labels are the ones `hazard_nll` expects: `durations` is the **bin index** of the
# event or the censoring, `events` is 1 for an event in that bin and 0 for a censoring in it.
#
# ## Model: the losses
# ### The discrete-time likelihood
# A head gives patient $i$ one logit $x_{ik}$ per bin and the hazard
# $h_{ik} = \sigma(x_{ik})$, the probability of the event in bin $k$ for someone event-free
# when it starts. Patient $i$ was followed to bin $j$ and had the event there ($e = 1$) or
# was censored there ($e = 0$). The library's convention, that of pycox's logistic-hazard
# loss {cite}`kvamme2019continuous`, reads a censoring in bin $j$ as **having survived bin
# $j$**: censoring happens at the end of its bin. The likelihood of the label is then
#
# $$
# \begin{aligned}
# L_i &= \prod_{k < j} (1 - h_{ik}) \cdot
# \begin{cases} h_{ij} & e = 1 \\ 1 - h_{ij} & e = 0 \end{cases}, \\
# \text{NLL}_i &= -\Bigl[\sum_{k<j} \log(1 - h_{ik}) + e \log h_{ij}
# + (1 - e) \log(1 - h_{ij})\Bigr].
# \end{aligned}
# $$
#
# Bins after $j$ carry no information: the patient was not observed there. Both logarithms
# come straight from the logit, $\log h = \log\sigma(x)$ and
# $\log(1 - h) = \log\sigma(-x)$, with `F.logsigmoid`:


# %%
def nll_from_logits(logits, durations, events):
    """Mean discrete-time NLL; a censoring in bin j has survived bin j."""
    # (B, T): log h, log(1 - h)
    log_h, log_s = F.logsigmoid(logits), F.logsigmoid(-logits)
    k = torch.arange(logits.shape[1], device=logits.device)  # (T,)
    before = k < durations[:, None]  # (B, T): bins survived for sure
    at = k == durations[:, None]  # (B, T): the bin of the label
    # (B, T): event or survived bin j
    last = torch.where(events[:, None].bool(), log_h, log_s)
    ll = torch.where(before, log_s, 0.0) + torch.where(at, last, 0.0)  # (B, T)
    return -ll.sum(dim=1).mean()


# %% [markdown]
# The same sum is a binary cross-entropy on **person-period rows**: expand each patient into
# one row per bin $k \le j$, with target $y_{ik} = 1$ only in the bin of an event, and the
# NLL is the sum of the row losses {cite}`kvamme2019continuous`. A survival model in discrete
# time is a classifier of "event in this bin or not" over the bins a patient was at risk in.
# Both must agree with `ehrseq.losses.hazard_nll`, also at logits far from zero.

# %%
gen = torch.Generator().manual_seed(0)
logits = 3.0 * torch.randn(8, 6, generator=gen)  # (B, T)
logits[0, 0], logits[1, 2] = 40.0, -40.0  # hazards of 1 - 4e-18 and 4e-18
# (B,) bin index of event or censoring
durations = torch.tensor([0, 2, 5, 3, 1, 4, 5, 0])
events = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])  # (B,)

k = torch.arange(logits.shape[1])
targets = ((k == durations[:, None]) & (events[:, None] == 1)).float()  # (B, T), y_ik
at_risk = (k <= durations[:, None]).float()  # (B, T), the person-period rows
# (B, T): a BCE term per person-period row, zero-weighted after the patient's bin
bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * at_risk
bce = bce.sum() / logits.shape[0]

ours = nll_from_logits(logits, durations, events)
library = hazard_nll(logits, durations, events)
assert torch.isfinite(ours) and ours.shape == ()
assert torch.allclose(ours, library) and torch.allclose(library, bce)
assert hazard_nll(logits, durations, events, reduction="none").shape == (8,)
print(f"inline {ours:.5f}   hazard_nll {library:.5f}   person-period BCE {bce:.5f}")

# %% [markdown]
# ### Log space, not a clamped sigmoid
# A tempting version computes `h = torch.sigmoid(logits)` and takes `torch.log(h)` and
# `torch.log(1 - h)`. In 32-bit floats $\sigma(x)$ rounds to exactly 1 once $x$ passes about
# 17, so $\log(1 - h) = -\infty$ and one such patient turns the loss into `inf`. The usual
# patch clamps $h$ into $[\epsilon, 1 - \epsilon]$. That keeps the loss finite but caps it
# at $-\log \epsilon$ and, worse, sets its **gradient to zero** wherever the clamp is
# active: a model that is confidently wrong gets no signal to change its mind. The log-sigmoid
# form is exact for any logit and its gradient, $\sigma(x)$ or $-\sigma(-x)$, never vanishes
# where the model is wrong. The table compares the two terms of the NLL at a few logits.

# %%
eps = 1e-7  # a common clamp (Keras' default epsilon)
x = torch.tensor([-40.0, -20.0, -10.0, 0.0, 10.0, 20.0, 40.0], requires_grad=True)


def per_logit(term):
    """The value of a per-logit loss term and its derivative d term / d x."""
    value = term(x)
    (grad,) = torch.autograd.grad(value.sum(), x)
    return value.detach(), grad


def clamped(x):
    return torch.sigmoid(x).clamp(eps, 1 - eps)


event_exact = per_logit(lambda x: -F.logsigmoid(x))  # -log h: an event in this bin
event_clamped = per_logit(lambda x: -torch.log(clamped(x)))
surv_exact = per_logit(lambda x: -F.logsigmoid(-x))  # -log(1 - h): a bin survived
surv_clamped = per_logit(lambda x: -torch.log(1 - clamped(x)))
with torch.no_grad():
    surv_naive = -torch.log(1 - torch.sigmoid(x))  # no clamp at all
EVENT, SURVIVED = "event in the bin: -log h", "bin survived: -log(1 - h)"
numerics = pd.DataFrame(  # two levels of column names keep the headers short
    {
        (EVENT, "log space"): event_exact[0].numpy(),
        (EVENT, "clamped"): event_clamped[0].numpy(),
        (EVENT, "d/dx log space"): event_exact[1].numpy(),
        (EVENT, "d/dx clamped"): event_clamped[1].numpy(),
        (SURVIVED, "log space"): surv_exact[0].numpy(),
        (SURVIVED, "clamped"): surv_clamped[0].numpy(),
        (SURVIVED, "unclamped"): surv_naive.numpy(),
        (SURVIVED, "d/dx log space"): surv_exact[1].numpy(),
        (SURVIVED, "d/dx clamped"): surv_clamped[1].numpy(),
    },
    index=pd.Index(x.detach().numpy(), name="logit x"),
)

assert torch.isfinite(event_exact[0]).all() and torch.isfinite(surv_exact[0]).all()
# -log(1 - sigmoid(40)) = 40
assert torch.allclose(surv_exact[0][-1], torch.tensor(40.0))
assert torch.isinf(surv_naive[-1])  # 1 - sigmoid(40) is exactly 0 in float32
assert float(surv_clamped[0].max()) <= -np.log(eps) + 1e-3  # the clamp caps the loss
# dead gradient
assert float(surv_clamped[1][-1]) == 0.0 and float(surv_exact[1][-1]) > 0.99
assert float(event_clamped[1][0]) == 0.0 and float(event_exact[1][0]) < -0.99
keep("clamp_cap", float(-np.log(eps)))
# float32 rounds 1 - eps: a bit under the cap
keep("surv_clamped_40", float(surv_clamped[0][-1]))
format_floats(numerics.astype("float64"), "{:.4f}")  # a gradient of -0.0 reads 0.0000

# %% [markdown]
# At $x = 40$ a survived bin costs 40 nats under the exact loss and only
# {glue:text}`surv_clamped_40:.1f` once clamped (the cap $-\log \epsilon$ is
# {glue:text}`clamp_cap:.1f`; 32-bit floats round $1 - \epsilon$ and lower it a little), and
# the clamped gradient is 0 from $x = 20$ on:
# the clamp hides exactly the mistakes that most need correcting. `hazard_nll` works in log
# space throughout, which is why it, and every head of the library, takes **logits**.
#
# ### A ranking loss over comparable pairs
# Harrell's C {cite}`harrell1982evaluating` counts pairs of patients. A pair $(i, j)$ is
# **comparable** when $i$ had the event first:
#
# $$
# A_{ij} = e_i \bigl( [\,j_i < j_j\,] + [\,j_i = j_j\,](1 - e_j) \bigr),
# $$
#
# so the earlier of the two must be an event, and a patient censored in the bin of an event
# counts as having outlived it (the censoring convention of the likelihood); two events in
# the same bin, or a censoring before the other's time, say nothing about the order. On six
# patients:

# %%
names = ["a", "b", "c", "d", "e", "f"]
pair_durations = torch.tensor([1, 3, 3, 3, 0, 4])  # bin of event or censoring
pair_events = torch.tensor([1, 1, 0, 1, 0, 0])  # a, b, d had the event
pair_risk = torch.tensor([0.9, 0.5, 0.6, 0.4, 0.8, 0.1])  # some model's risk scores


def comparable_pairs(durations, events):
    """A[i, j] = True: i had the event before j's time, or j was censored in i's bin."""
    e = events.bool()
    earlier = durations[:, None] < durations[None, :]  # (B, B)
    tie_censored = (durations[:, None] == durations[None, :]) & ~e[None, :]  # (B, B)
    return e[:, None] & (earlier | tie_censored)  # (B, B)


A = comparable_pairs(pair_durations, pair_events)
pd.DataFrame(A.int().numpy(), index=names, columns=names).rename_axis(
    index="earlier event i", columns="j"
)

# %% [markdown]
# Patient $a$ (event in bin 1) is comparable with everyone followed past bin 1; $b$ and $d$
# (events in bin 3) with $c$, censored in bin 3, and with $f$, but not with each other; $e$,
# censored in bin 0, with no one. Harrell's C is the share of comparable pairs in which
# the earlier patient has the higher risk, and the library's `concordance_index` counts the
# same pairs:

# %%
concordant = (pair_risk[:, None] > pair_risk[None, :]).float()  # (B, B)
c_pairs = float((A * concordant).sum() / A.sum())
toy = (pair_durations.numpy(), pair_risk.numpy(), pair_events.numpy())
c_library = concordance_index(*toy)
assert np.isclose(c_pairs, c_library)
keep("n_comparable", int(A.sum()))
keep("c_toy", c_pairs)
print(f"{int(A.sum())} comparable pairs, C = {c_pairs:.3f}")

# %% [markdown]
# Of the {glue:text}`n_comparable` comparable pairs the risks order most correctly,
# C = {glue:text}`c_toy:.3f`; the high risk given to $e$ costs nothing, because $e$, censored
# before anyone's event, is in no comparable pair.
#
# The C-index is a step function of the risks and has no useful gradient. A ranking loss
# replaces the step by a smooth penalty on each comparable pair's risk difference
# $\Delta_{ij} = r_i - r_j$. DeepHit {cite}`lee2018deephit` uses
# $\eta(\Delta) = \exp(-\Delta / \sigma)$, which is near zero for a well-ordered pair and
# grows fast for a wrong one, and averages it over the comparable pairs:
#
# $$
# \mathcal{L}_{\text{rank}} = \frac{1}{\sum_{ij} A_{ij}} \sum_{i,j} A_{ij}\,
# \exp\!\bigl(-\Delta_{ij} / \sigma\bigr).
# $$
#
# With a whole predicted curve per patient, DeepHit compares the pair **at the earlier
# time**: $\Delta_{ij} = F_i(t_{j_i}) - F_j(t_{j_i})$, with $F = 1 - S$ the cumulative risk
# implied by the hazards. Both fit in a few lines, given the matrix of differences:


# %%
def ranking_from_differences(diff, durations, events, sigma=cfg.sigma):
    """Mean of exp(-diff_ij / sigma) over the comparable pairs."""
    A = comparable_pairs(durations, events)  # (B, B)
    return torch.where(A, torch.exp(-diff / sigma), 0.0).sum() / A.sum()


diff_scores = pair_risk[:, None] - pair_risk[None, :]  # (B, B), r_i - r_j
ours = ranking_from_differences(diff_scores, pair_durations, pair_events)
library = pairwise_ranking_loss(pair_risk, pair_durations, pair_events, sigma=cfg.sigma)
assert torch.allclose(ours, library)
pair_matrix = pairwise_ranking_loss(
    pair_risk, pair_durations, pair_events, sigma=cfg.sigma, reduction="none"
)
assert pair_matrix.shape == (6, 6) and torch.equal(pair_matrix > 0, A)  # the same pairs

pair_logits = torch.randn(6, 5, generator=gen)  # (B, T) hazard logits of a model
cum_risk = 1 - hazards_to_survival(torch.sigmoid(pair_logits))  # (B, T), F_i(t_k)
at_earlier = cum_risk[:, pair_durations]  # (B, B): [a, i] = F_a(t_{j_i})
# (B, B): F_i(t_i) - F_j(t_i)
diff_curves = at_earlier.diagonal()[:, None] - at_earlier.T
ours = ranking_from_differences(diff_curves, pair_durations, pair_events)
library = pairwise_ranking_loss(cum_risk, pair_durations, pair_events, sigma=cfg.sigma)
assert torch.allclose(ours, library)

# %% [markdown]
# The library's mean is over comparable pairs, so its scale does not depend on how much
# censoring a batch happens to hold (pycox averages over all $B^2$ entries instead). With
# $\sigma$ = {glue:text}`sigma` and risks in $[0, 1]$ the penalty of a pair ranges from
# $e^{-10}$ to $e^{10}$: a badly ordered pair dominates the batch.
#
# ### Both at once
# The likelihood does not look at pairs; the ranking loss does not look at probabilities.
# DeepHit trains on a weighted sum of the two. The library keeps the likelihood at weight 1,
#
# $$
# \begin{aligned}
# \mathcal{L} &= \text{NLL} + \lambda\, \mathcal{L}_{\text{rank}}\bigl(F\bigr), \\
# F_i(t_k) &= 1 - \prod_{l \le k} \bigl(1 - \sigma(x_{il})\bigr),
# \end{aligned}
# $$
#
# so $\lambda = 0$ is the likelihood alone, and "ranking only" is the limit
# $\lambda \to \infty$ (the ranking loss by itself).

# %%
for lam in (0.0, 0.5, 2.0):
    both = hybrid_loss(logits, durations, events, rank_weight=lam, sigma=cfg.sigma)
    risk = 1 - hazards_to_survival(torch.sigmoid(logits))  # (B, T): F(t) per bin
    rank = pairwise_ranking_loss(risk, durations, events, sigma=cfg.sigma)
    assert torch.allclose(both, hazard_nll(logits, durations, events) + lam * rank)

# %%
train_batches = DataLoader(TensorDataset(*data["train"][1:]), batch_size=cfg.batch_size)
pairs, both_events = [], []
for d, e in train_batches:
    A_batch = comparable_pairs(d, e)  # (B, B)
    pairs.append(int(A_batch.sum()))
    both_events.append(int((A_batch & e.bool()[None, :]).sum()))  # j had the event too
keep("pairs_per_batch", float(np.median(pairs)))
keep("event_vs_censored", float(1 - sum(both_events) / sum(pairs)))
keep("train_event_rate", float(data["train"][2].float().mean()))

# %% [markdown]
# The ranking term compares patients **within a batch**. With {glue:text}`batch_size`
# patients per step and {glue:text}`train_event_rate:.1%` of training patients having the
# event, a batch holds a median of {glue:text}`pairs_per_batch:.0f` comparable pairs, and
# {glue:text}`event_vs_censored:.0%` of them set an event against a patient who was
# censored.
#
# ### The network
# `ehrseq.models.BagOfTokensSurvival`: one hidden layer makes the patient state from the
# {glue:text}`n_features` features, and
# the library's `BinHazardHead` maps it to {glue:text}`n_bins` logits, one per bin of
# {glue:text}`bin_days:.0f` days: {glue:text}`n_params:,` parameters in all. The same
# architecture, initialisation and optimiser serve every loss; only the loss changes.
#
# The head's biases start at the logits of the **life-table hazards** of the training
# patients, $\hat h_k = d_k / n_k$ (events in bin $k$ over patients still followed in bin
# $k$). They are the maximum-likelihood hazards of a model without features, so training
# starts from a calibrated curve instead of spending its first epochs learning that heart
# failure is rare. The library's `life_table_hazards` computes them (a bin without a
# training event, $\hat h_k = 0$ and a logit of $-\infty$, is clipped to a small hazard);
# the check below confirms the claim: at those
# hazards the gradient of the NLL with respect to a shared logit per bin is zero.


# %%
d_train, e_train_bins = data["train"][1], data["train"][2]
bins = torch.arange(n_bins)
followed = (d_train[:, None] >= bins).sum(dim=0)  # (T,), n_k: still followed in bin k
n_events = torch.bincount(d_train[e_train_bins == 1], minlength=n_bins)  # (T,), d_k
# (T,), the no-feature MLE n_events / followed (see below)
life_table = life_table_hazards(d_train.numpy(), e_train_bins.numpy(), n_bins)
life_table = torch.as_tensor(life_table, dtype=torch.float32)
seen = n_events > 0
assert torch.allclose(life_table[seen], (n_events / followed)[seen].float())
assert (life_table > 0).all() and (life_table < 1).all()

# one logit per bin, everyone
shared = torch.logit(life_table).clone().requires_grad_(True)
nll_shared = hazard_nll(shared.expand(len(d_train), n_bins), d_train, e_train_bins)
(grad,) = torch.autograd.grad(nll_shared, shared)
assert grad[n_events > 0].abs().max() < 1e-5, grad

model = BagOfTokensSurvival(n_features, cfg.hidden, n_bins, cfg.dropout)
out = model(data["train"][0][:5])
assert out.logits.shape == out.hazards.shape == (5, n_bins)
assert out.surv.shape == (5, n_bins) and bool((out.surv.diff(dim=1) <= 0).all())
keep("n_params", count_parameters(model)["total"])
print(f"{sum(p.numel() for p in model.parameters()):,} parameters")

# %%
chapter_seconds = time.perf_counter() - chapter_start
print(f"chapter ran in {chapter_seconds:.0f} s ({cfg.profile} profile)")

# %% [markdown]
# ## Summary
# - The discrete-time NLL sums $\log(1 - h)$ over the bins a patient survived and $\log h$
#   (event) or $\log(1 - h)$ (censored, having survived its bin) at the last one. It is
#   binary cross-entropy on person-period rows, and it belongs in log space: a clamped
#   sigmoid caps the loss at {glue:text}`clamp_cap:.1f` nats and kills the gradient of the
#   mistakes that matter most.
# - A ranking loss penalises comparable pairs, the pairs Harrell's C counts, with a smooth
#   function of their risk difference; the hybrid adds it to the NLL with weight $\lambda$.
# - The network that every loss will train reads {glue:text}`n_features` fixed features and
#   starts its head at the life-table hazards of the training patients, where the gradient
#   of the NLL with respect to a shared logit per bin is zero. {doc}`07b_loss_comparison`
#   trains it with each loss and compares what they buy.
#
# ## Exercises
# 1. The library reads a censoring in bin $j$ as having survived bin $j$. Change
#    `nll_from_logits` so that a patient censored in bin $j$ is only known to have survived
#    the bins before it, and compare it with `hazard_nll` on the toy batch. Which patients'
#    losses change, and in which direction?
# 2. On the six patients, compare the penalties of every comparable pair under
#    `pairwise_ranking_loss(..., reduction="none")` with `kind="exp"` and
#    `kind="logistic"`, at $\sigma$ = 0.1 and 1. How much more than the best-ordered pair
#    does the worst-ordered pair weigh under each?

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
# # Hierarchical BEHRT
#
# ## Outline
# Flat BEHRT {cite}`li2020behrt` reads a history as one long sequence of tokens and lets
# every token attend to every other. That ignores a structure the record already has: codes
# come in **visits**. The codes of one visit share a time stamp and have no order; the
# visits are ordered in time and separated by gaps that can be a day or five years. A
# hierarchical model follows that structure in two stages:
#
# 1. **within a visit**, pool the codes into one vector by attention (a learned query
#    weighs the codes of the visit);
# 2. **across visits**, add the age, the visit's position and the gap in days since the
#    previous visit, and run a causal transformer {cite}`vaswani2017attention` over the
#    visits.
#
# We build both stages, test the masks and the causality with assertions, compare the model
# with a flat BEHRT under the protocol of the previous chapter (same task, splits, head,
# metrics and training recipe, similar parameter counts), ablate the time-gap embedding,
# and ask whether the hierarchical model's risks are calibrated. The next chapter,
# {doc}`10b_hierarchy_scaling`, measures what the hierarchy buys in compute: attention over
# $L = VC$ tokens costs $O((VC)^2)$, attention inside visits and then across them
# $O(VC^2 + V^2)$.

# %% [markdown]
# ## Setup
# One config per chapter; `EHRSEQ_PROFILE` (`smoke`, `book`, `full`) picks its size. The task
# is the one every modelling chapter shares (`shared_task_config`); both models here train
# with one recipe (width, learning rate, epochs), so they differ only in the architecture.

# %%
import dataclasses
import math
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from lifelines import KaplanMeierFitter
from scipy.optimize import brentq
from torch import nn

import ehrseq
from ehrseq.book import (
    interval,
    keep,
    keep_table,
    number,
    plural,
    record_claim,
    record_comparisons,
    start_claims,
)
from ehrseq.config import for_profile, format_config
from ehrseq.data.task import prepare_survival_task, shared_task_config
from ehrseq.evaluate import (
    HIGHER_IS_BETTER,
    SurvivalProtocol,
    format_table,
    plot_comparison,
)
from ehrseq.losses import hazard_nll
from ehrseq.models import (
    AttentionPool,
    BehrtConfig,
    BehrtEncoder,
    BinHazardHead,
    HierarchicalBehrt,
    HierarchicalConfig,
    SurvivalModel,
    VisitHazardHead,
    count_parameters,
    hierarchical_inputs,
)
from ehrseq.models.behrt import log_time_bins
from ehrseq.models.hierarchical import VisitEmbeddings
from ehrseq.plotting import apply_style
from ehrseq.runs import predict_survival, train_seeds
from ehrseq.survival import hazards_to_survival, life_table_hazards
from ehrseq.train import TrainConfig

CHAPTER = "10_hierarchical_behrt"


@dataclass(frozen=True)
class Config:
    profile: str = "book"
    seeds: tuple[int, ...] = (0,)  # training seeds of every model
    d_model: int = 64  # width of both models
    n_layers: int = 2  # flat: blocks over tokens; hierarchical: blocks across visits
    n_heads: int = 4  # attention heads (and pooling heads)
    d_ff: int = 128  # feed-forward width of a transformer block
    dropout: float = 0.1  # on embeddings, residual branches and the head
    epochs: int = 4  # most passes over the training patients
    # stop when the validation loss has not improved for this many epochs
    patience: int = 2
    batch_size: int = 128  # patients per optimiser step
    lr: float = 1e-3  # peak learning rate
    n_boot: int = 200  # bootstrap resamples of every paired difference
    n_boot_table: int = 30  # resamples of the per-model intervals of the protocol table


cfg = for_profile(
    Config,
    {
        "smoke": {
            "d_model": 16,
            "n_layers": 1,
            "n_heads": 2,
            "d_ff": 32,
            "epochs": 2,
            "n_boot": 20,
            "n_boot_table": 10,
        },
        "full": {
            "seeds": (0, 1, 2),
            "d_model": 128,
            "n_layers": 4,
            "d_ff": 512,
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
keep("n_seeds", len(cfg.seeds))
keep("seeds_text", plural(len(cfg.seeds), "seed"))
keep("n_boot", cfg.n_boot)

# %% [markdown]
# On a GPU, `fit` trains in bf16 autocast and some attention kernels are nondeterministic, so
# the numbers move a little between runs; on a CPU every seed is repeatable bit for bit.
#
# ## Data: the hierarchical batch
# The task is the one of the previous chapter: same cohort, labels, splits and bins.

# %%
task = prepare_survival_task(shared_task_config())
train, test = task.frame("train"), task.frame("test")
horizon = task.config.horizon_days  # days
edges = task.cuts[1:]  # right edge of every bin, days
n_bins = task.config.n_bins
keep("n_test", len(test))
keep("n_test_events", int(test["event"].sum()))
keep("decile_size", round(len(test) / 10))  # patients per decile of predicted risk
keep("max_len", task.config.max_len)
task.summary()

# %% [markdown]
# A hierarchical batch holds the same tokens as a flat one (minus `[CLS]` and `[SEP]`: the
# visit structure replaces them), arranged as `codes (B, V, C)`: `V` visits of at most `C`
# codes, padded to the largest in the batch. `code_mask` marks real codes, `visit_mask` real
# visits; age and the days since the previous visit come once per visit.

# %%
train_set = task.dataset("train")
spread = np.argsort(train_set.lengths, kind="stable")  # short to long histories
# six patients, from the shortest history to the longest
six = spread[np.linspace(0, len(spread) - 1, 6).astype(int)]
batch = train_set.batch(six, hierarchical=True)
B, V, C = batch["codes"].shape
assert batch["code_mask"].shape == (B, V, C) and batch["visit_mask"].shape == (B, V)
assert batch["ages"].shape == batch["time_deltas"].shape == (B, V)
# no code in a pad
assert not (batch["code_mask"] & ~batch["visit_mask"][..., None]).any()
for key, value in batch.items():  # one line per tensor: name and shape
    print(f"{key:>14}: {tuple(value.shape)}")
# the longest history of the six, one column per real visit (at most ten)
real_visits = np.flatnonzero(batch["visit_mask"][B - 1].numpy())[:10]
pd.DataFrame(
    {
        "real codes": batch["code_mask"][B - 1].sum(1).numpy()[real_visits],
        "age (years)": [f"{a:.1f}" for a in batch["ages"][B - 1].numpy()[real_visits]],
        "days since previous visit": [
            f"{t:,.0f}" for t in batch["time_deltas"][B - 1].numpy()[real_visits]
        ],
    },
    index=pd.Index(real_visits, name="visit"),
).T

# %% [markdown]
# ## Model
# ### Level 1: pooling the codes of a visit by attention
# A visit is a **set** of codes: $u_{1}, \dots, u_{C}$ (code plus domain embedding, width
# $d$). A learned query $q$ scores each code, a softmax over the **real** codes turns scores
# into weights, and the visit vector is the weighted sum of the values; with $H$ heads each
# head has its own slice of $q$ and of the projections {cite}`vaswani2017attention`:
#
# $$
# \alpha^h_c = \frac{\exp(q_h^\top W^h_K u_c / \sqrt{d_h})}
#                   {\sum_{c':\, m_{c'}} \exp(q_h^\top W^h_K u_{c'} / \sqrt{d_h})},
# \qquad
# z = W_O \big\Vert_{h=1}^{H} \sum_{c:\, m_c} \alpha^h_c\, W^h_V u_c .
# $$
#
# Unlike a mean, the pool can give a rare but telling code most of the weight. In a few
# lines, reading the weights of the library's `AttentionPool`:


# %%
def attention_pool(
    pool: AttentionPool,
    x: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    """Pool each set x (N, C, d) over its real members (mask (N, C)) into (N, d)."""
    N, C, d = x.shape
    H = pool.n_heads
    q = pool.query.view(H, d // H)  # (H, d_h): one learned query per head
    k = pool.k_proj(x).view(N, C, H, d // H)  # (N, C, H, d_h)
    v = pool.v_proj(x).view(N, C, H, d // H)  # (N, C, H, d_h)
    scores = torch.einsum("hk,nchk->nhc", q, k) / math.sqrt(d // H)  # (N, H, C)
    # padding gets no weight
    scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
    alpha = scores.softmax(dim=-1)  # (N, H, C), sums to 1 over the real codes
    # heads side by side, (N, d)
    y = torch.einsum("nhc,nchk->nhk", alpha, v).reshape(N, d)
    return pool.o_proj(y)


torch.manual_seed(0)
pool = AttentionPool(d_model=16, n_heads=4).eval()
nn.init.normal_(pool.query)  # a non-zero query, so the weights are not uniform
x = torch.randn(5, 7, 16)  # 5 visits, up to 7 codes, d = 16
# (5, 7): real codes first
mask = torch.arange(7) < torch.tensor([7, 3, 1, 5, 2])[:, None]
assert pool(x, mask).shape == (5, 16)
assert torch.allclose(attention_pool(pool, x, mask), pool(x, mask), atol=1e-6)

# %% [markdown]
# **A visit with no real code.** The batch pads visits to `V` slots, and a padded visit has
# no real code at all. Then every score is $-\infty$ and the softmax is $0/0$: the inline
# version returns NaN. Zeroing that row afterwards by a multiplication does not help
# ($\text{NaN} \times 0$ is NaN), so one empty visit would turn the loss of the whole batch
# into NaN. The library's pool lets such a row attend to every slot (to keep the softmax
# finite) and then returns exactly zero for it, with finite gradients; the model never
# encodes padded visits in the first place, but the pool is safe on its own.

# %%
empty = mask.clone()
empty[2] = False  # visit 2 has no real code
naive = attention_pool(pool, x, empty)
assert torch.isnan(naive[2]).all()  # naive: NaN
assert torch.isnan((naive * empty.any(-1, keepdim=True)).sum())  # and it spreads
x_grad = x.clone().requires_grad_(True)
pooled = pool(x_grad, empty)
pooled.sum().backward()
assert torch.isfinite(pooled).all() and (pooled[2] == 0).all()  # library: exact zero
assert torch.isfinite(x_grad.grad).all()  # and finite gradients
# others unchanged
assert torch.allclose(pooled[[0, 1, 3, 4]], pool(x, mask)[[0, 1, 3, 4]])

# %% [markdown]
# ### Level 2: the visit embedding and a causal transformer across visits
# Each visit vector $z_{t}$ gets what BEHRT adds to every token, once per visit:
#
# $$
# x_{t} = z_{t} + E_\text{age}[\lfloor a_{t} \rfloor] + P[t] + E_\text{time}(\Delta_{t}),
# $$
#
# the age in whole years, a learned embedding of the visit's position $t$, and the days since
# the previous visit $\Delta_t$ in logarithmic bins: bin
# $\lceil (n - 1) \log(1 + \Delta) / \log(1 + \Delta_\max) \rceil$, so that a day and a week fall
# in different bins, and so do a year and two (bin 0 is reserved for the first visit, 0 days):

# %%
days = torch.tensor([0.0, 1, 7, 30, 91, 365, 730, 1826])
gaps = pd.Series(log_time_bins(days, 32, 36525.0), name="time bin")
gaps.index = pd.Index(days.int().numpy(), name="days since previous visit")
gaps.to_frame().T

# %% [markdown]
# A stack of pre-LayerNorm transformer blocks then attends **causally across visits**:
# visit $t$ sees visits $\le t$ only, so a hazard read off visit $t$ never sees the future.
# `HierarchicalBehrt` puts the two levels together; with `n_code_layers > 0` it would also
# run transformer blocks inside each visit before pooling, as deeper hierarchical models do
# (Hi-BEHRT {cite}`li2023hibehrt` runs them inside sliding windows of the history);
# {doc}`10b_hierarchy_scaling` measures what that costs. Shapes, level by level:

# %%
sizes = {"d_model": cfg.d_model, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads}
hcfg_demo = HierarchicalConfig.from_vocab(task.vocab, **sizes, d_ff=cfg.d_ff)
model = HierarchicalBehrt(hcfg_demo).eval()
inputs = hierarchical_inputs(batch)
z = model.visit_encoder(
    inputs["codes"], inputs["code_mask"], inputs["visit_mask"], inputs["domain_ids"]
)  # (B, V, d)
h0 = model.embeddings(z, inputs["ages"], inputs["time_deltas"])  # (B, V, d)
states = model(**inputs)  # (B, V, d): a pure encoder, one state per visit
# per-visit hazards (B, V)
out = SurvivalModel(model, VisitHazardHead(cfg.d_model)).eval()(batch)
assert z.shape == h0.shape == states.shape == (B, V, cfg.d_model)
assert isinstance(model.embeddings, VisitEmbeddings)
padded = ~inputs["visit_mask"]  # (B, V)
assert (z[padded] == 0).all() and (states[padded] == 0).all()
assert out.hazards.shape == (B, V) and (out.hazards[~out.mask] == 0).all()
print(
    f"codes {tuple(inputs['codes'].shape)} -> visits {tuple(z.shape)}"
    f" -> states {tuple(states.shape)}"
)

# %% [markdown]
# ### Tests: the masks and the arrow of time
# Three properties every visit-level model must have, checked on a real batch with random
# weights (they are properties of the wiring, not of training):
#
# 1. **code mask**: whatever sits in a padded code slot of a real visit changes nothing;
# 2. **visit mask**: whatever sits in a padded visit changes nothing, and a padded visit's
#    state is exactly zero;
# 3. **no leakage**: the state of visit $t$ (all a per-visit hazard at $t$ reads) does not
#    change when visits after $t$ change.
#    The same edit with the causal mask switched off does change it, so the test has teeth.


# %%
def scramble(
    t: torch.Tensor,
    where: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """Replace the entries of t at `where` by random values of the same kind."""
    if t.dtype == torch.long:
        noise = torch.randint(5, len(task.vocab), t.shape, generator=generator)
    else:
        noise = 1000 * torch.rand(t.shape, generator=generator)
    return torch.where(where, noise, t)


g = torch.Generator().manual_seed(0)
with torch.no_grad():
    reference = model(**inputs)  # (B, V, d)

    # 1. code mask: random ids in padded code slots of real visits
    pad_code = ~inputs["code_mask"] & inputs["visit_mask"][..., None]  # (B, V, C)
    assert pad_code.any()
    edited = {**inputs, "codes": scramble(inputs["codes"], pad_code, g)}
    assert torch.allclose(model(**edited), reference, atol=1e-6)

    # 2. visit mask: random ids, ages and gaps in padded visits
    pad_visit = ~inputs["visit_mask"]  # (B, V)
    assert pad_visit.any()
    edited = {
        **inputs,
        "codes": scramble(inputs["codes"], pad_visit[..., None].expand(B, V, C), g),
        "ages": scramble(inputs["ages"], pad_visit, g),
        "time_deltas": scramble(inputs["time_deltas"], pad_visit, g),
    }
    assert torch.allclose(model(**edited), reference, atol=1e-6)

    # 3. leakage: change every visit after the first one of each patient
    later = torch.arange(V) >= 1  # (V,)
    # (B, V, C) real codes after visit 0
    future = later[None, :, None] & inputs["code_mask"]
    older = later & inputs["visit_mask"]  # (B, V): the real visits after the first
    edited = {
        **inputs,
        "codes": scramble(inputs["codes"], future, g),
        "ages": torch.where(older, inputs["ages"] + 3.0, inputs["ages"]),
    }
    causal, changed = model(**inputs), model(**edited)  # (B, V, d) visit states
    # visit 0 blind to later
    assert torch.allclose(changed[:, 0], causal[:, 0], atol=1e-6)
    assert not torch.allclose(changed[:, 1:], causal[:, 1:])  # edit is real
    leaky = model(**edited, causal=False)[:, 0]
    assert not torch.allclose(leaky, model(**inputs, causal=False)[:, 0])  # teeth

# %% [markdown]
# The same check at every cut point $t$, not just after the first visit: for each $t$, edit
# the visits after $t$ and compare the hazards up to $t$.

# %%
with torch.no_grad():
    for t in range(V - 1):
        after = (torch.arange(V) > t)[None, :, None] & inputs["code_mask"]
        if not after.any():
            continue
        edited = {**inputs, "codes": scramble(inputs["codes"], after, g)}
        up_to_t = model(**edited)[:, : t + 1]
        assert torch.allclose(up_to_t, causal[:, : t + 1], atol=1e-6), t

# %% [markdown]
# ### The survival head: the same as for every model
# For the comparison, the hierarchical encoder's visit states feed the same per-bin head as
# the flat BEHRT and the LSTM of the previous chapter: a `BinHazardHead` on the state of the
# last real visit, with its bias started at the training life table (as in chapters 6-8),
# composed with the encoder by the library's `SurvivalModel`.

# %%
life_table = life_table_hazards(train["bin"], train["event"], n_bins)  # (K,)


def bin_head(d_model: int) -> BinHazardHead:
    """The survival head shared by every neural model of chapters 9 and 10."""
    return BinHazardHead(d_model, n_bins, dropout=cfg.dropout, base_hazards=life_table)


def flat_behrt(
    max_len: int = task.config.max_len,
    max_visits: int = 512,
) -> SurvivalModel:
    bcfg = BehrtConfig.from_vocab(
        task.vocab,
        d_model=cfg.d_model,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        d_ff=cfg.d_ff,
        dropout=cfg.dropout,
        max_len=max_len,
        max_visits=max_visits,
    )
    return SurvivalModel(BehrtEncoder(bcfg), bin_head(bcfg.d_model))


def hierarchical(
    time_embedding: str = "log_bins",
    n_code_layers: int = 0,
) -> SurvivalModel:
    hcfg = HierarchicalConfig.from_vocab(
        task.vocab,
        d_model=cfg.d_model,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        d_ff=cfg.d_ff,
        dropout=cfg.dropout,
        time_embedding=time_embedding,
        n_code_layers=n_code_layers,
    )
    return SurvivalModel(HierarchicalBehrt(hcfg), bin_head(cfg.d_model))


out = hierarchical()(batch)
assert out.logits.shape == (B, n_bins) and out.surv.shape == (B, n_bins)
n_flat = count_parameters(flat_behrt())["trainable"]
n_hier = count_parameters(hierarchical())["trainable"]
n_hier_no_dt = count_parameters(hierarchical("none"))["trainable"]
keep("n_flat", n_flat)
keep("n_hier", n_hier)
keep("param_ratio", n_hier / n_flat)
pd.Series(
    {
        "flat BEHRT": n_flat,
        "hierarchical BEHRT": n_hier,
        "hierarchical, no gaps": n_hier_no_dt,
    },
    name="trainable parameters",
).map("{:,}".format).to_frame()

# %% [markdown]
# The two models have {glue:text}`n_flat:,` and {glue:text}`n_hier:,` parameters: the same
# width, the same number of transformer blocks, the same head. Most of the difference is
# where the position tables sit (per token for the flat model, per visit here) and the
# pooling's projections.
#
# ## Train
# Each model is trained with {glue:text}`seeds_text` by `ehrseq.runs.train_seeds`, as in
# the previous chapter: `fit` with the hazard NLL of the bin labels (`hazard_nll_step`),
# early stopping on the validation loss, and the wall time of the run recorded by `measure`
# (with the peak of allocated memory on a GPU). The activations that one training batch of
# {glue:text}`batch_size` patients keeps for the backward pass are measured exactly by
# `saved_for_backward_mib`, on any device. `train_seeds` trains the models that its `make`
# function builds, in place; keeping them lets the calibration section below read their
# predictions for the validation patients.


# %%
keep("batch_size", cfg.batch_size)
runs = {
    "flat BEHRT": (flat_behrt, False),
    "hierarchical BEHRT": (hierarchical, True),
    "hierarchical, no gaps": (lambda: hierarchical("none"), True),
}
curves, costs, trained = {}, {}, {}
for name, (make, is_hier) in runs.items():
    trained[name] = []
    seed_runs = train_seeds(
        lambda make=make, name=name: trained[name].append(make()) or trained[name][-1],
        task,
        TrainConfig(epochs=cfg.epochs, lr=cfg.lr, patience=cfg.patience),
        cfg.seeds,
        hierarchical=is_hier,
        batch_size=cfg.batch_size,
        device=device,
        name=name,
    )
    assert seed_runs.learned(), name  # finite, and the training loss went down
    curves[name], costs[name] = seed_runs.survs, seed_runs.cost

# %% [markdown]
# ## Evaluate
# ### The protocol table
# The evaluation of the previous chapter, unchanged: the risk score is the probability of the
# event within the horizon, $1 - \hat S(\text{last edge})$; the curves are read at the bin
# edges; each metric is averaged over seeds, with a 95% bootstrap interval over test patients
# for orientation; differences are decided by paired intervals ({glue:text}`n_boot`
# resamples).

# %%
d_test, e_test = test["duration"].to_numpy(float), test["event"].to_numpy(int)
d_train, e_train = train["duration"].to_numpy(float), train["event"].to_numpy(int)
protocol = SurvivalProtocol(d_test, e_test, edges, d_train, e_train, n_boot=cfg.n_boot)
table_protocol = dataclasses.replace(protocol, n_boot=cfg.n_boot_table)

km = KaplanMeierFitter().fit(d_train, e_train)
km_surv = np.tile(km.survival_function_at_times(edges).to_numpy(), (len(test), 1))
oracle_surv = task.oracle_survival("test")  # (n_test, n_bins)
curves = {"Kaplan-Meier (no features)": [km_surv], "oracle": [oracle_surv], **curves}
rows = [table_protocol.evaluate(n, s, costs.get(n)) for n, s in curves.items()]
results = pd.DataFrame(rows).set_index("model")
# "estimate [lower, upper]" per metric
shown = format_table(results, list(protocol.metrics))
curve_metrics = ["IBS", "calibration error"]  # how good the predicted curves are
# how well they rank
rank_metrics = [m for m in protocol.metrics if m not in curve_metrics]
cost_columns = ["parameters", "s / epoch", "activations MiB"]
cost_columns += [] if device.type == "cpu" else ["peak MiB"]
# two narrow tables rather than one wide
keep_table("protocol_ranking", shown[rank_metrics])
# the plug-in calibration error, then the debiased one with its interval
calibration_columns = [*curve_metrics, "debiased RMS calibration error"]
keep_table("protocol_curves", shown[calibration_columns])
# what each model costs: the baselines train nothing, so they have no row here
keep_table("protocol_costs", shown.loc[shown["parameters"] != "", cost_columns])
outside = int((results["calibration error"] < results["calibration error lower"]).sum())
outside_text = f"in {outside} of the {len(results)} rows" if outside else "in no row"
keep("cal_outside_text", outside_text)

# %% [markdown]
# How well each model ranks the test patients (the three C-indices and the AUROC of the risk
# at the horizon; the Kaplan-Meier curve gives every patient the same risk, so it scores
# exactly 0.5 on each):
#
# ```{glue:} protocol_ranking
# ```
#
# How good the predicted curves are (integrated Brier score, calibration error at the
# horizon):
#
# ```{glue:} protocol_curves
# ```
#
# What each trained model costs:
#
# ```{glue:} protocol_costs
# ```
#
# The calibration error is shown without an interval: its bootstrap interval can lie
# above the estimate itself (here {glue:text}`cal_outside_text`): resampling the test
# patients with replacement adds noise to every decile's observed incidence, and an
# absolute gap only grows with noise, so the resampled errors run high. The debiased RMS
# calibration error beside it takes each decile's sampling variance out of its squared
# gap (Kumar et al.'s estimator, about 0 for a calibrated model; a root-mean-square
# weighs large gaps more than a mean absolute gap does) and comes with an interval that
# contains it. The calibration section below compares the calibration
# errors themselves by paired differences on the same resamples, where the excess
# largely cancels.

# %% mystnb={"figure": {"name": "fig-flat-vs-hier", "caption": "Harrell's C (left) and integrated Brier score (right) of flat and hierarchical BEHRT and of the hierarchical model without the time-gap embedding, on the test patients, averaged over training seeds, with 95% bootstrap intervals over test patients. Dashed: the oracle; dotted: chance (left) and the Kaplan-Meier curve (right)."}}
models = list(runs)
fig = plot_comparison(results, models)
key = {}  # one key above both panels, where it covers no point
for ax in fig.axes:
    for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
        key.setdefault(label, handle)
    ax.get_legend().remove()
names = {
    "chance": "chance (left)",
    "Kaplan-Meier (no features)": "Kaplan-Meier, no features (right)",
}
fig.legend(
    key.values(),
    [names.get(label, label) for label in key],
    loc="lower center",
    bbox_to_anchor=(0.5, 1.0),
    ncol=len(key),
)
plt.show()

# %% [markdown]
# ### Which differences are real?
# Paired bootstrap of the difference of seed-mean metrics (Harrell's C, IBS, AUROC), on the
# same resamples of test patients; the two claims are recorded for the results page.
# {glue:text}`seed_note`

# %%
pairs = {
    "hier_vs_flat": ("hierarchical BEHRT", "flat BEHRT"),
    "gaps_help": ("hierarchical BEHRT", "hierarchical, no gaps"),
    "oracle_vs_hier": ("oracle", "hierarchical BEHRT"),
}
claims = {  # key: (claim, source); recorded for the results page
    "hier_vs_flat": (
        "a hierarchical BEHRT beats a flat BEHRT (Harrell C)",
        "li2023hibehrt",
    ),
    "gaps_help": (
        "the time-gap embedding helps the hierarchical model (Harrell C)",
        "this book",
    ),
}
compared = pd.concat(
    [protocol.compare(a, curves[a], b, curves[b]) for a, b in pairs.values()],
    ignore_index=True,
)
# glues verdict_*, diff_* for every pair
record_comparisons(CHAPTER, compared, pairs, claims)
keep(
    "seed_note",
    "With one training seed per model, the intervals cover the sampling of test "
    "patients but not the variation between training runs: a verdict says that these "
    "trained models differ, not that every training run would."
    if len(cfg.seeds) == 1
    else f"The metrics are averaged over {plural(len(cfg.seeds), 'training seed')}; "
    "the intervals cover the sampling of test patients, not the variation between "
    "training runs.",
)


def signed(x: float, digits: int = 3) -> str:
    """x with its sign, "+0.012"; a value that rounds to zero is written "0.000"."""
    return number(x, f"+.{digits}f")


def with_interval(table: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """difference, lower and upper as one column, "+0.0123 [-0.0040, +0.0290]"."""
    out = table.drop(columns=["difference", "lower", "upper"])
    out.insert(
        out.columns.get_loc("verdict"),
        "difference [95% interval]",
        [  # one line per interval (non-breaking spaces), no "-0.0000"
            interval(d, lo, hi, f"+.{digits}f")
            for d, lo, hi in table[["difference", "lower", "upper"]].to_numpy()
        ],
    )
    return out


keep_table("differences", with_interval(compared))

# %% [markdown]
# ```{glue:} differences
# ```

# %%
short = {
    "oracle": "oracle",
    "Kaplan-Meier (no features)": "km",
    "flat BEHRT": "flat",
    "hierarchical BEHRT": "hier",
    "hierarchical, no gaps": "nogap",
}
for model, key in short.items():
    for metric, mkey in (("Harrell C", "c"), ("IBS", "ibs")):
        keep(f"{key}_{mkey}", float(results.loc[model, metric]))
        keep(f"{key}_{mkey}_lower", float(results.loc[model, f"{metric} lower"]))
        keep(f"{key}_{mkey}_upper", float(results.loc[model, f"{metric} upper"]))
    keep(f"{key}_cal", float(results.loc[model, "calibration error"]))
    if model in runs:
        keep(f"{key}_seconds", float(results.loc[model, "train s"]))
        keep(f"{key}_epoch_s", float(results.loc[model, "s / epoch"]))
epoch_s = results["s / epoch"]
epoch_speedup = float(epoch_s["flat BEHRT"] / epoch_s["hierarchical BEHRT"])
keep("epoch_speedup", epoch_speedup)
if 1 / 1.1 < epoch_speedup < 1.1:
    epoch_text = "an epoch of either model takes about as long (within 10 %)"
elif epoch_speedup > 1:
    epoch_text = (
        f"an epoch of the flat model takes {epoch_speedup:.1f} times as long"
        " as one of the hierarchical model"
    )
else:
    epoch_text = (
        f"an epoch of the hierarchical model takes {1 / epoch_speedup:.1f} times as "
        "long as one of the flat model"
    )
keep("epoch_ratio_text", epoch_text)
nogap_c = float(results.loc["hierarchical, no gaps", "Harrell C"])
keep(
    "nogap_chance_note",
    ", below the 0.5 of a random ranking: at this size the model without gaps has not "
    "learned to rank the patients, and the difference that follows compares a working "
    "model with a failed one"
    if nogap_c < 0.5
    else "",
)

r = results["Harrell C"]
assert r["oracle"] > 0.5
assert results.loc["oracle", "IBS"] < results.loc["Kaplan-Meier (no features)", "IBS"]
if cfg.profile != "smoke":
    assert (r[models] > 0.6).all(), r[models]
    assert (r["oracle"] > r[models]).all()
    km_ibs = results.loc["Kaplan-Meier (no features)", "IBS"]
    assert (results.loc[models, "IBS"] < km_ibs).all()

# %% [markdown]
# **Flat against hierarchical.** On the same {glue:text}`n_test:,` test patients
# ({glue:text}`n_test_events:,` events) the flat BEHRT reaches a Harrell C of
# {glue:text}`flat_c:.3f` ({glue:text}`flat_c_lower:.3f` to {glue:text}`flat_c_upper:.3f`)
# and the hierarchical model {glue:text}`hier_c:.3f` ({glue:text}`hier_c_lower:.3f` to
# {glue:text}`hier_c_upper:.3f`). The paired difference, hierarchical minus flat, is
# {glue:text}`diff_hier_vs_flat:+.3f` ({glue:text}`diff_hier_vs_flat_lower:+.3f` to
# {glue:text}`diff_hier_vs_flat_upper:+.3f`): the claim that the hierarchy beats the flat
# model is {glue:text}`verdict_hier_vs_flat`. On the integrated Brier score the paired
# verdict reads "{glue:text}`verdict_hier_vs_flat_ibs`", on the AUROC
# "{glue:text}`verdict_hier_vs_flat_auroc`". The oracle reaches {glue:text}`oracle_c:.3f`;
# oracle minus hierarchical is {glue:text}`diff_oracle_vs_hier:+.3f` (paired verdict:
# "{glue:text}`verdict_oracle_vs_hier_c`"). The other difference is the price:
# {glue:text}`epoch_ratio_text` ({glue:text}`hier_epoch_s:.1f` s per epoch for the
# hierarchical model, {glue:text}`flat_epoch_s:.1f` s for the flat one), on histories of at
# most {glue:text}`max_len` tokens (wall times on a shared machine, so only roughly
# comparable across rows).
#
# **The time-gap embedding.** Without it the hierarchical model reaches
# {glue:text}`nogap_c:.3f`{glue:text}`nogap_chance_note`; with gaps minus without is
# {glue:text}`diff_gaps_help:+.3f`
# ({glue:text}`diff_gaps_help_lower:+.3f` to {glue:text}`diff_gaps_help_upper:+.3f`): the
# claim that the gaps help is {glue:text}`verdict_gaps_help`. Without the gap embedding the
# model still sees the order of the visits (their positions) and their ages in one-year
# bins, which carry part of the timing: a gap of a year shows as a step in age.
#
# ### Are the hierarchical model's risks probabilities?
# The protocol's calibration error is the mean absolute gap between predicted risk and the
# Kaplan-Meier incidence at the horizon over deciles of predicted risk: the hierarchical
# model's is {glue:text}`hier_cal:.3f`, the Kaplan-Meier curve's {glue:text}`km_cal:.3f`, the
# oracle's {glue:text}`oracle_cal:.3f`. The oracle's is not zero: each decile's observed
# incidence is itself an estimate from about {glue:text}`decile_size:,` patients, so even the
# truth shows a gap. That is the floor any model's calibration error sits on, and the first
# question is whether the hierarchical model is above it at all. The Kaplan-Meier curve is the wrong
# yardstick: it gives every patient the same risk, so its deciles are random groups whose
# noise differs from that of groups sorted by risk.
#
# A second question is where a real gap would come from. Two candidates: the **base rate**
# (calibration in the large: the mean predicted risk against the observed incidence; the
# head starts at the training life table, so an early-stopped model may keep a base rate
# that fits the training patients) and the **spread** (risks too extreme or too timid
# across patients). Two recalibrations, each fitted on the **validation** patients and
# applied unchanged to the test patients, tell them apart. The first shifts every hazard
# logit by the same $\delta$, chosen so that the validation patients' mean predicted risk at
# the horizon equals their Kaplan-Meier incidence (the base rate only):
#
# $$
# \begin{aligned}
# \tilde h_{ik} &= \sigma\bigl(\operatorname{logit} h_{ik} + \delta\bigr), \\
# \frac{1}{n_\text{val}} \sum_{i \in \text{val}} \Bigl(1 - \prod_k (1 - \tilde h_{ik})\Bigr)
# &= 1 - \hat S_\text{KM}^\text{val}(\text{horizon}).
# \end{aligned}
# $$
#
# The second fits an intercept and a slope by the hazard likelihood of the validation labels
# (the base rate and the spread):
#
# $$
# \hat h_{ik} = \sigma\bigl(a + b \operatorname{logit} h_{ik}\bigr).
# $$


# %%
def survival_to_hazards(surv: np.ndarray) -> np.ndarray:
    """h_k = 1 - S_k / S_{k-1} with S_0 = 1, the inverse of ``hazards_to_survival``."""
    previous = np.concatenate([np.ones((len(surv), 1)), surv[:, :-1]], axis=1)
    return 1.0 - surv / np.clip(previous, 1e-12, None)


def hazard_logits(surv: np.ndarray) -> np.ndarray:
    h = np.clip(survival_to_hazards(surv), 1e-7, 1 - 1e-7)
    return np.log(h / (1 - h))  # (n, K)


def shifted(surv: np.ndarray, delta: float, slope: float = 1.0) -> np.ndarray:
    """Survival after replacing every hazard logit z by ``delta + slope * z``."""
    z = delta + slope * hazard_logits(surv)  # (n, K)
    return hazards_to_survival(1.0 / (1.0 + np.exp(-z)))


def fit_intercept_slope(
    surv: np.ndarray,
    bins: np.ndarray,
    events: np.ndarray,
) -> np.ndarray:
    """(a, b) minimising the hazard NLL of the labels for logits a + b * logit(h)."""
    z = torch.tensor(hazard_logits(surv), dtype=torch.float64)  # (n, K)
    ab = torch.tensor([0.0, 1.0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([ab], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = ab[0] + ab[1] * z  # (n, K)
        loss = hazard_nll(logits, torch.as_tensor(bins), torch.as_tensor(events))
        loss.backward()
        return loss

    opt.step(closure)
    return ab.detach().numpy()


val = task.frame("val")
km_val = KaplanMeierFitter().fit(val["duration"], val["event"])
observed_val = 1.0 - float(km_val.survival_function_at_times(edges[-1]).iloc[0])
hier_models = trained["hierarchical BEHRT"]
hier_val = [predict_survival(m, task, "val", hierarchical=True) for m in hier_models]
# delta = 0: the same
assert np.allclose(shifted(hier_val[0], 0.0), hier_val[0], atol=1e-6)
deltas = [
    brentq(lambda d, s=s: (1.0 - shifted(s, d)[:, -1]).mean() - observed_val, -5.0, 5.0)
    for s in hier_val
]
curves["hierarchical, recalibrated"] = [
    shifted(s, d) for s, d in zip(curves["hierarchical BEHRT"], deltas, strict=True)
]
val_bins, val_events = val["bin"].to_numpy(), val["event"].to_numpy()
scalings = [fit_intercept_slope(s, val_bins, val_events) for s in hier_val]
hier_test = curves["hierarchical BEHRT"]
curves["hierarchical, rescaled"] = [
    shifted(s, a, b) for s, (a, b) in zip(hier_test, scalings, strict=True)
]
calibration = pd.DataFrame(
    [
        protocol.difference(a, curves[a], b, curves[b], "calibration error")
        for a, b in (
            ("oracle", "hierarchical BEHRT"),
            ("hierarchical BEHRT", "Kaplan-Meier (no features)"),
            ("hierarchical, recalibrated", "hierarchical BEHRT"),
            ("hierarchical, recalibrated", "oracle"),
            ("hierarchical, rescaled", "hierarchical BEHRT"),
            ("hierarchical, rescaled", "oracle"),
        )
    ]
)
cal_keys = (
    "oracle_hier",
    "hier_km",
    "recal_hier",
    "recal_oracle",
    "scaled_hier",
    "scaled_oracle",
)
for key, (_, row) in zip(cal_keys, calibration.iterrows(), strict=True):
    # as many decimals as it takes for the two ends of the interval to differ
    digits = 3
    while digits < 6 and signed(row["lower"], digits) == signed(row["upper"], digits):
        digits += 1
    ends = f"{signed(row['lower'], digits)} to {signed(row['upper'], digits)}"
    keep(f"cal_{key}_text", f"{signed(row['difference'], digits)} ({ends})")
    keep(f"cal_{key}", float(row["difference"]))
    keep(f"cal_{key}_lower", float(row["lower"]))
    keep(f"cal_{key}_upper", float(row["upper"]))
    keep(f"cal_{key}_verdict", row["verdict"])
record_claim(
    CHAPTER,
    "oracle_better_calibrated",
    "the truth is better calibrated than the hierarchical model (calibration error)",
    calibration.iloc[0].to_dict(),
    higher_is_better=HIGHER_IS_BETTER["calibration error"],
    source="this book",
)
mean_risk = {
    name: float(np.mean([1.0 - s[:, -1] for s in curves[name]]))
    for name in ("hierarchical BEHRT", "hierarchical, recalibrated", "oracle")
}
keep("delta", float(np.mean(deltas)))
keep("scale_a", float(np.mean([a for a, _ in scalings])))
scale_b = float(np.mean([b for _, b in scalings]))
keep("scale_b", scale_b)
if scale_b < 0.9:
    slope_text = "below one: the model's hazard logits were too spread out"
    slope_text += " across patients"
elif scale_b > 1.1:
    slope_text = "above one: the model's hazard logits were too timid across patients"
else:
    slope_text = "close to one: the spread of the model's hazards was about right"
keep("slope_text", slope_text)
calibration_error = protocol.metrics["calibration error"]
rescaled = curves["hierarchical, rescaled"][0]
keep("scaled_cal", calibration_error(d_test, e_test, rescaled))
keep("mean_risk_hier", mean_risk["hierarchical BEHRT"])
keep("mean_risk_recal", mean_risk["hierarchical, recalibrated"])
km_test = KaplanMeierFitter().fit(d_test, e_test)
km_at_horizon = float(km_test.survival_function_at_times(edges[-1]).iloc[0])
keep("observed_test", 1.0 - km_at_horizon)
recalibrated = curves["hierarchical, recalibrated"][0]
keep("recal_cal", calibration_error(d_test, e_test, recalibrated))
keep_table("calibration", with_interval(calibration).drop(columns="metric"))

# %% [markdown]
# ```{glue:} calibration
# ```
#
# The oracle's calibration error minus the hierarchical model's is
# {glue:text}`cal_oracle_hier_text`: the claim that the truth is better calibrated
# than the model, that the model sits above the noise floor, is
# {glue:text}`verdict_oracle_better_calibrated`. Against the Kaplan-Meier curve the
# paired verdict reads "{glue:text}`cal_hier_km_verdict`". On average the model predicts a
# risk of {glue:text}`mean_risk_hier:.3f` at the horizon, against an observed incidence of
# {glue:text}`observed_test:.3f` in the test patients. The validation patients ask for a
# logit shift of {glue:text}`delta:+.2f`; after it the mean risk is
# {glue:text}`mean_risk_recal:.3f` and the calibration error
# {glue:text}`recal_cal:.3f`, a change of {glue:text}`cal_recal_hier_text` (paired
# verdict: "{glue:text}`cal_recal_hier_verdict`"); against the oracle the shifted model
# reads "{glue:text}`cal_recal_oracle_verdict`". The intercept and slope fitted on the validation
# patients are {glue:text}`scale_a:+.2f` and {glue:text}`scale_b:.2f`, a slope
# {glue:text}`slope_text`; with them the calibration error is {glue:text}`scaled_cal:.3f`, a
# change of {glue:text}`cal_scaled_hier_text` (paired verdict:
# "{glue:text}`cal_scaled_hier_verdict`"), and
# against the oracle "{glue:text}`cal_scaled_oracle_verdict`". Read together: the first
# verdict says whether there is anything beyond the noise of decile incidence to explain;
# the two recalibrations say how much of it is the base rate (the shift) and how much the
# spread (the slope); a verdict of "oracle is better" after rescaling leaves a part that a
# two-parameter map of the model's own hazards does not fix.
#
# ## Summary
# - A hierarchical BEHRT pools the codes of each visit with a learned query (attention
#   pooling, safe for visits with no real code), adds age, visit position and the gap in
#   days to each visit, and runs a causal transformer across visits. Assertions check that
#   padded codes and padded visits change nothing and that a visit's hazard never sees a
#   later visit.
# - Under the protocol of the previous chapter, with similar parameter counts
#   ({glue:text}`n_flat:,` and {glue:text}`n_hier:,`) and {glue:text}`seeds_text`, flat and
#   hierarchical BEHRT reach {glue:text}`flat_c:.3f` and {glue:text}`hier_c:.3f`
#   (the claim that the hierarchy beats the flat model: {glue:text}`verdict_hier_vs_flat`);
#   {glue:text}`epoch_ratio_text`.
# - Removing the time-gap embedding: the claim that the gaps help is
#   {glue:text}`verdict_gaps_help`.
# - Calibration: against the truth's own calibration error, the floor set by the noise of
#   observed incidence in deciles, the claim that the truth is better calibrated is
#   {glue:text}`verdict_oracle_better_calibrated`; a single logit shift fitted on the
#   validation patients changes the model's error by {glue:text}`cal_recal_hier_text`
#   (paired verdict: "{glue:text}`cal_recal_hier_verdict`").
# - What the hierarchy buys in compute, time and memory per training step as the number of
#   visits and codes grows, is measured in {doc}`10b_hierarchy_scaling`.
#
# ## Exercises
# 1. Replace the attention pooling by the masked mean (`code_pooling="mean"`). Does the
#    C-index change? For which visits would you expect attention pooling to help?
# 2. Train the variant with one transformer block inside each visit (`n_code_layers=1`)
#    under the protocol. What does it cost per epoch, and what does it buy?
# 3. Switch the time embedding to `"log_linear"` and the age bins to half a year
#    (`age_bin_years=0.5`). Repeat the gap ablation in a task with a one-year horizon.
# 4. Switch the causal mask off (`causal=False`) and train with the per-bin head. Why is this
#    safe here, and why would it leak with per-visit hazards
#    (`SurvivalModel(encoder, VisitHazardHead(...))`)? Run the leakage test of this chapter on it to see the test fail.
# 5. The attention weights of the pooling say which codes of a visit the model looks at.
#    Extract them from the `AttentionPool` of a trained model for visits that record a
#    myocardial infarction. Do they favour the infarction code?

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
# # BEHRT embeddings
#
# ## Outline
# A transformer reads a set of vectors. Before the first attention layer, each token of a
# patient's history must become one vector of width $d$, and that vector is all the
# transformer ever learns about the token: *what* it is, *when* it happened, *in which visit*,
# *where* in the sequence, and *what kind* of record it is. BEHRT {cite}`li2020behrt` builds
# that vector the way BERT {cite}`devlin2019bert` does, as a **sum of embeddings**, and adds
# the patient's age to it:
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
# We will
# 1. build each term from the tensors of the previous chapter: the code, the age (and the
#    choice of the age bin width $w$), the visit (index or BEHRT's alternating segment), the
#    position (a learned table or the fixed sinusoids of {cite}`vaswani2017attention`), the
#    time since the previous event (log-spaced bins) and the domain;
# 2. write the sum and the LayerNorm inline, then check that `ehrseq`'s `BehrtEmbeddings`
#    computes exactly the same thing, for several configurations;
# 3. put the layer under `BehrtEncoder` and count what each table costs.
#
# The next chapter, {doc}`04b_embedding_ablation`, **ablates** the layer: it pretrains small
# BEHRT encoders by masked-code modelling with one embedding removed or changed at a time,
# several seeds each, and measures on held-out patients what each term contributes, next to
# a baseline that ignores the patient entirely.

# %% [markdown]
# ## Setup
# One config per chapter; `EHRSEQ_PROFILE` (`smoke`, `book`, `full`) picks its size.

# %%
import math
import time
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

import ehrseq
from ehrseq.book import keep, plural
from ehrseq.config import for_profile, format_config
from ehrseq.data.events import DOMAINS
from ehrseq.data.task import prepare_survival_task, shared_task_config
from ehrseq.data.tensors import SPECIAL_DOMAIN_ID
from ehrseq.models import BehrtConfig, BehrtEncoder, count_parameters, encoder_inputs
from ehrseq.models.behrt import BehrtEmbeddings, sinusoidal_table
from ehrseq.plotting import apply_style


@dataclass(frozen=True)
class Config:
    profile: str = "book"
    seed: int = 7  # seed of the random tables
    d_model: int = 64  # embedding width d
    n_layers: int = 2  # transformer blocks
    n_heads: int = 4  # attention heads
    d_ff: int = 128  # feed-forward width
    # on embeddings and residual branches (not attention: see BehrtConfig)
    dropout: float = 0.1
    age_bin_years: float = 1.0  # width w of an age bin (BEHRT: one year)
    n_time_bins: int = 32  # log-spaced bins of the time since the previous event
    batch_size: int = 64  # patients in the batch we look at


cfg = for_profile(
    Config,
    {
        "smoke": {"d_model": 32, "d_ff": 64},
        "full": {"d_model": 128, "n_layers": 4, "d_ff": 512},
    },
)
device = ehrseq.get_device()
rng = ehrseq.seed_everything(cfg.seed)
apply_style()
print(format_config(cfg))
print(f"device: {device}; CPU threads: {torch.get_num_threads()} (OMP_NUM_THREADS)")
chapter_start = time.perf_counter()


keep("d_model", cfg.d_model)
keep("n_layers", cfg.n_layers)
keep("age_bin_years", cfg.age_bin_years)
keep("age_bin_text", plural(cfg.age_bin_years, "year"))  # "1 year"
keep("n_time_bins", cfg.n_time_bins)

# %% [markdown]
# ## Data
# Every modelling chapter uses the same survival task: the same cohort, splits, prediction
# times and vocabulary (`prepare_survival_task`). This chapter needs no survival labels, only
# the token tensors, but it takes them from the same task so that the encoder it studies
# reads exactly what the survival models of later chapters read.

# %%
task = prepare_survival_task(shared_task_config())  # the same task in every chapter
vocab = task.vocab
keep("vocab_size", len(vocab))
keep("n_train", len(task.split["train"]))
# "2 years"
keep("history_text", plural(task.config.history_days / 365.25, "year", ".0f"))
task.summary()

# %% [markdown]
# One patient of a training batch, token by token, in the tensor contract of the previous
# chapter ({glue:text}`shown_text`):

# %%
batch = next(iter(task.loader("train", cfg.batch_size)))
B, L = batch["codes"].shape
# the patient nearest 24 tokens (a bucketed batch may hold only longer ones)
row = int(torch.argmin((batch["lengths"] - 24).abs()))
# shown: whole visits, up to the last [SEP] among the first 24 tokens
seps = (batch["codes"][row, :24] == vocab.stoi["[SEP]"]).nonzero().flatten()
n_show = int(seps[-1]) + 1 if len(seps) else int(min(batch["lengths"][row], 24))
n_patient = int(batch["lengths"][row])
shown_text = (
    f"all {n_patient} of their tokens"
    if n_show == n_patient
    else f"the first {n_show} of their {n_patient} tokens, whole visits"
)
keep("shown_text", shown_text)
domain_name = dict(enumerate(("[PAD]", *DOMAINS, "special")))
patient = pd.DataFrame(
    {
        "token": [vocab.itos[i] for i in batch["codes"][row, :n_show].tolist()],
        "age (years)": batch["ages"][row, :n_show].double().numpy().round(2),
        "visit_ids": batch["visit_ids"][row, :n_show].numpy(),
        "positions": batch["positions"][row, :n_show].numpy(),
        "time_deltas (days)": batch["time_deltas"][row, :n_show].numpy(),
        "domain": [domain_name[i] for i in batch["domain_ids"][row, :n_show].tolist()],
    }
)
patient

# %% [markdown]
# ## Model: the input layer, piece by piece
# Every term below is a lookup in a table of $d$-dimensional rows (or, for one variant of
# time, a linear map), indexed by something the batch already holds. The tables start random
# and are learned with the rest of the network.
#
# ### Code
# The code embedding is the heart of the input: one row per vocabulary entry, so
# `vocab_size` rows of width $d$. Everything else only *modifies* a code's vector.

# %%
torch.manual_seed(cfg.seed)
code_table = torch.nn.Embedding(len(vocab), cfg.d_model)
x_code = code_table(batch["codes"])  # (B, L, d)
assert x_code.shape == (B, L, cfg.d_model)
print(f"codes {tuple(batch['codes'].shape)} -> code vectors {tuple(x_code.shape)}")

# %% [markdown]
# ### Age, and the width of an age bin
# Ages arrive as real numbers of years. BEHRT embeds the age in whole years, a table with
# one row per year: $\lfloor a / w \rfloor$ with $w = 1$. The width trades resolution against
# data per row: a narrow bin can tell 61 from 62 but each of its rows is trained on fewer
# tokens; a wide bin pools them. The figure counts the training tokens that fall in each bin
# for $w$ = 1 and 5 years.


# %%
def age_bin(ages: torch.Tensor, width: float, n_bins: int) -> torch.Tensor:
    """floor(age / width), clamped into the table (older ages share the last row)."""
    return torch.floor(ages / width).long().clamp(0, n_bins - 1)  # (B, L)


train_enc = task.encoding.select(task.split["train"])
token_ages = torch.from_numpy(train_enc.arrays["ages"])  # (tokens,) years
first = torch.from_numpy(train_enc.offsets[:-1])
last = torch.from_numpy(train_enc.offsets[1:] - 1)
age_rows = {}
for width in (1.0, 5.0):
    demo_cfg = BehrtConfig.from_vocab(vocab, age_bin_years=width)
    bins = age_bin(token_ages, width, demo_cfg.n_age_bins)
    library = BehrtEmbeddings(demo_cfg).age_bins(token_ages)
    assert torch.equal(bins, library)  # the library bins ages the same way
    per_bin = torch.bincount(bins, minlength=demo_cfg.n_age_bins)
    spans = (bins[last] != bins[first]).float().mean()
    age_rows[width] = {
        "rows in the table": demo_cfg.n_age_bins,
        "rows used": int((per_bin > 0).sum()),
        "median tokens per used row": float(per_bin[per_bin > 0].median()),
        "fewest tokens in a used row": int(per_bin[per_bin > 0].min()),
        "patients whose history spans 2+ bins": float(spans),
    }
age_choice = pd.DataFrame(age_rows).T.rename_axis("bin width (years)")
counts = ["rows in the table", "rows used", "fewest tokens in a used row"]
age_choice[counts] = age_choice[counts].astype(int)  # counts, not floats
age_choice = age_choice.round(2)
keep("age_span_1y", age_rows[1.0]["patients whose history spans 2+ bins"])
keep("age_span_5y", age_rows[5.0]["patients whose history spans 2+ bins"])
keep("age_min_tokens_1y", age_rows[1.0]["fewest tokens in a used row"])
age_choice

# %% mystnb={"figure": {"name": "fig-age-bins", "caption": "Training tokens per age bin, for bins of one and of five years. Every row of the age table is trained on the tokens of its bin."}}
fig, axes = plt.subplots(1, 2, figsize=(8, 3), layout="constrained")
for ax, width in zip(axes, (1.0, 5.0), strict=True):
    # bin edges that hold every age
    lo = width * math.floor(float(token_ages.min()) / width)
    hi = width * (math.floor(float(token_ages.max()) / width) + 1)
    edges = np.arange(lo, hi + width / 2, width)
    ax.hist(token_ages.numpy(), bins=edges, color="C0")
    ax.set_xlabel("age at the token (years)")
    ax.set_ylabel("training tokens per bin")
    ax.set_title(f"w = {width:.0f} year" + ("s" if width > 1 else ""))
plt.show()

# %% [markdown]
# With one-year bins each row in use still sees at least {glue:text}`age_min_tokens_1y:,`
# training tokens, enough to learn, so we keep BEHRT's $w$ = {glue:text}`age_bin_text` and
# test five years in the ablation ({doc}`04b_embedding_ablation`). Note the last column: a
# history of {glue:text}`history_text` crosses an age bin for
# {glue:text}`age_span_1y:.0%` of patients at $w = 1$ and {glue:text}`age_span_5y:.0%` at
# $w = 5$. On these histories the age embedding says mostly
# *how old this patient is*, hardly *how the patient aged along the record*.
#
# ### Visit
# Codes recorded together belong together: a diagnosis, the drug that treats it and the lab
# that checks it. `visit_ids` numbers the visits 1, 2, ... (0 is padding). Two ways to embed
# it: the **index** itself (a row per visit number), or BEHRT's **segment**, which only
# alternates A, B, A, B between consecutive visits (rows 1 and 2), enough to tell where one
# visit ends and the next begins without a row per visit number.


# %%
def segment(visit_ids: torch.Tensor) -> torch.Tensor:
    """BEHRT's alternating segment: 1 for odd visits, 2 for even ones, 0 at padding."""
    return torch.where(visit_ids > 0, 1 + (visit_ids - 1) % 2, 0)  # (B, L)


seg_emb = BehrtEmbeddings(BehrtConfig.from_vocab(vocab, visit_embedding="segment"))
assert torch.equal(segment(batch["visit_ids"]), seg_emb.visit_index(batch["visit_ids"]))
patient["segment"] = segment(batch["visit_ids"])[row, :n_show].numpy()
patient[["token", "visit_ids", "segment"]]

# %% [markdown]
# ### Position: learned or sinusoidal
# Attention is blind to order: permute the tokens and each one gets the same output, only
# permuted. The position $p_l = 0, 1, \dots$ of a token breaks that symmetry. BERT and BEHRT
# **learn** a table $P$ with one row per position; the original transformer
# {cite}`vaswani2017attention` uses a fixed **sinusoidal** table, no parameters at all:
#
# $$
# P_{p,2i} = \sin\!\big(p / 10000^{2i/d}\big), \qquad P_{p,2i+1} = \cos\!\big(p / 10000^{2i/d}\big).
# $$
#
# Each pair of dimensions is a clock with its own period, from $2\pi$ positions to
# $2\pi \cdot 10000$: fast clocks tell neighbours apart, slow ones tell the beginning from the
# end, and the dot product $P_p \cdot P_{p+k}$ depends only on the distance $k$.


# %%
def sinusoids(max_len: int, d: int) -> torch.Tensor:
    """Vaswani et al.'s table: column pairs (2i, 2i + 1) share one frequency."""
    p = torch.arange(max_len, dtype=torch.float32)[:, None]  # (max_len, 1)
    freq = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)  # (d / 2,)
    table = torch.empty(max_len, d)
    table[:, 0::2] = torch.sin(p * freq)  # (max_len, d / 2)
    table[:, 1::2] = torch.cos(p * freq)  # (max_len, d / 2)
    return table


max_len = task.config.max_len
P = sinusoids(max_len, cfg.d_model)  # (max_len, d)
library_table = sinusoidal_table(max_len, cfg.d_model)
torch.testing.assert_close(P, library_table, rtol=1e-5, atol=1e-5)
similarity = P @ P.T / cfg.d_model  # (max_len, max_len)
# the same value all along a diagonal: it depends on the distance only
for k in (1, 5, 20):
    diag = torch.diagonal(similarity, offset=k)
    assert float(diag.max() - diag.min()) < 1e-4, k
print(f"sinusoidal table {tuple(P.shape)}, no parameters")

# %% mystnb={"figure": {"name": "fig-sinusoidal", "caption": "Left: the sinusoidal position table, one row per position and one column per dimension. Right: the dot product of position 0 with position p, divided by d; it falls with the distance and never reaches zero, so far positions stay distinguishable from near ones."}}
fig = plt.figure(figsize=(9, 3.2), layout="constrained")
ax1, ax2 = fig.subplots(1, 2, width_ratios=(1.4, 1))
colours = {"cmap": "RdBu_r", "vmin": -1, "vmax": 1}
im = ax1.imshow(P.numpy(), aspect="auto", interpolation="none", **colours)
ax1.set_xlabel("dimension $j$")
ax1.set_ylabel("position $p$ (tokens)")
ax1.grid(False)
fig.colorbar(im, ax=ax1, label="$P_{p,j}$")
# room between the colour bar and the right panel
fig.get_layout_engine().set(wspace=0.08)
ax2.plot(np.arange(max_len), similarity[0].numpy())
ax2.set_xlabel("distance $p$ (tokens)")
ax2.set_ylabel("$P_0 \\cdot P_p \\,/\\, d$")
plt.show()

# %% [markdown]
# The learned table can, in principle, discover the same and more (for instance that
# position 1 is always the first code after `[CLS]`), but it costs `max_len` $\times d$
# parameters and says nothing about positions beyond the longest training sequence. The
# ablation in {doc}`04b_embedding_ablation` compares the two.
#
# ### Time since the previous event
# Two tokens four positions apart can be an hour or five years apart. `time_deltas` holds the
# days $\Delta$ since the previous token (0 inside a visit). Gaps span four orders of
# magnitude, so they are embedded on a log scale: $n$ bins, bin 0 exactly for $\Delta = 0$
# (the same visit), the others evenly spaced in $\log(1 + \Delta)$ up to
# $\Delta_\max$ = 100 years,
#
# $$
# \text{bin}(\Delta) = \left\lceil (n-1) \frac{\log(1+\Delta)}{\log(1+\Delta_\max)} \right\rceil .
# $$
#
# (The alternative `time_embedding="log_linear"` projects $\log(1+\Delta)$ with a
# `Linear(1, d)`: smooth, but one direction in $\mathbb R^d$ for all gaps.)


# %%
def time_bin(time_deltas: torch.Tensor, n_bins: int, max_days: float) -> torch.Tensor:
    """Log-spaced bin of the gap in days; bin 0 holds exactly 0 days."""
    # (B, L) in [0, 1]
    scaled = torch.log1p(time_deltas.clamp(min=0)) / math.log1p(max_days)
    return torch.ceil(scaled * (n_bins - 1)).long().clamp(0, n_bins - 1)  # (B, L)


time_cfg = BehrtConfig.from_vocab(vocab, n_time_bins=cfg.n_time_bins)
token_dt = torch.from_numpy(train_enc.arrays["time_deltas"])  # (tokens,) days
dt_bins = time_bin(token_dt, time_cfg.n_time_bins, time_cfg.max_time_days)
assert torch.equal(dt_bins, BehrtEmbeddings(time_cfg).time_bin(token_dt))
n_bins = cfg.n_time_bins
upper = np.expm1(np.arange(1, n_bins) / (n_bins - 1) * np.log1p(36525.0))
bin_table = pd.DataFrame(
    {
        "from (days)": np.r_[0.0, 0.0, upper[:-1]],
        "to (days)": np.r_[0.0, upper],
        "share of training tokens": torch.bincount(dt_bins, minlength=n_bins).numpy()
        / len(dt_bins),
    }
).rename_axis("time bin")
keep("share_dt_zero", float((token_dt == 0).float().mean()))
keep("n_dt_bins_used", int((bin_table["share of training tokens"] > 0).sum()))
keep("max_gap_days", float(token_dt.max()))
formats = {
    "from (days)": "{:.1f}",
    "to (days)": "{:.1f}",
    "share of training tokens": "{:.2%}",
}
bin_table[bin_table["share of training tokens"] > 0].style.format(formats)

# %% [markdown]
# {glue:text}`share_dt_zero:.0%` of the training tokens sit in bin 0 (same day as the
# previous token, mostly the same visit), and {glue:text}`n_dt_bins_used` of the
# {glue:text}`n_time_bins` bins are used at all: the longest gap in the training tokens is
# {glue:text}`max_gap_days:,.0f` days, within a history of {glue:text}`history_text`, well
# below the top bins, which are there for records that span decades.
#
# ### Domain
# The last term tells the model what *kind* of record a token is: condition, drug,
# procedure, measurement, observation, visit, death, or a special token (`[CLS]`, `[SEP]`).
# It is a table of {glue:text}`n_domain_ids` rows. It matters most when a code is hidden, as
# in masked-code modelling: the model still sees that the hidden token is, say, a drug.

# %%
dom_counts = pd.Series(
    np.bincount(train_enc.arrays["domain_ids"], minlength=SPECIAL_DOMAIN_ID + 1),
    index=[domain_name[i] for i in range(SPECIAL_DOMAIN_ID + 1)],
    name="training tokens",
)
keep("n_domain_ids", int(time_cfg.n_domains))
dom_counts.to_frame()

# %% [markdown]
# ### The sum, then LayerNorm
# Now the whole layer, written out: look each term up, add, normalise over the $d$
# dimensions. LayerNorm puts the sum back on a common scale whatever the number of terms, so
# switching a term off does not change the size of what the first block reads. (Dropout
# follows in training; we compare in eval mode, where it is the identity.)


# %%
def embed_inline(emb: BehrtEmbeddings, batch: dict) -> torch.Tensor:
    """The BEHRT input layer, term by term, with the tables of ``emb``."""
    c = emb.cfg
    x = emb.code.weight[batch["codes"]]  # (B, L, d)
    if c.use_age:
        x = x + emb.age.weight[age_bin(batch["ages"], c.age_bin_years, c.n_age_bins)]
    if c.visit_embedding == "index":
        x = x + emb.visit.weight[batch["visit_ids"].clamp(max=c.max_visits)]
    elif c.visit_embedding == "segment":
        x = x + emb.visit.weight[segment(batch["visit_ids"])]
    if c.position_embedding == "learned":
        x = x + emb.position.weight[batch["positions"]]
    elif c.position_embedding == "sinusoidal":
        x = x + sinusoids(c.max_len, c.d_model)[batch["positions"]]
    if c.time_embedding == "log_bins":
        # one time bin per token, (B, L)
        dt_bin = time_bin(batch["time_deltas"], c.n_time_bins, c.max_time_days)
        x = x + emb.time_bins.weight[dt_bin]
    elif c.time_embedding == "log_linear":
        x = x + emb.time_proj(torch.log1p(batch["time_deltas"].clamp(min=0))[..., None])
    if c.use_domain:
        x = x + emb.domain.weight[batch["domain_ids"]]
    norm = emb.norm
    return F.layer_norm(x, (c.d_model,), norm.weight, norm.bias, c.layer_norm_eps)


layouts = {  # the book's default, BEHRT's original choices, and the code alone
    "index, learned, log bins": {},
    "segment, sinusoidal, log-linear, 5-year ages": {
        "visit_embedding": "segment",
        "position_embedding": "sinusoidal",
        "time_embedding": "log_linear",
        "age_bin_years": 5.0,
    },
    "code only": {
        "use_age": False,
        "visit_embedding": "none",
        "position_embedding": "none",
        "time_embedding": "none",
        "use_domain": False,
    },
}
inputs = {k: v for k, v in encoder_inputs(batch).items() if k != "attention_mask"}
for name, overrides in layouts.items():
    torch.manual_seed(cfg.seed)
    sizes = {"d_model": cfg.d_model, "max_len": max_len, "n_time_bins": cfg.n_time_bins}
    emb_cfg = BehrtConfig.from_vocab(vocab, **sizes, **overrides)
    emb = BehrtEmbeddings(emb_cfg).eval()
    with torch.no_grad():
        h0 = emb(**inputs)  # (B, L, d)
        assert h0.shape == (B, L, cfg.d_model), name
        torch.testing.assert_close(embed_inline(emb, batch), h0, rtol=1e-5, atol=1e-5)
shape = tuple(h0.shape)
print(f"inline sum == BehrtEmbeddings for {len(layouts)} layouts; output {shape}")

# %% [markdown]
# The library computes exactly the inline sum. From here on we import it.
#
# ### The encoder, and what the embeddings cost
# `BehrtEncoder` puts the embedding layer under a stack of pre-LayerNorm transformer blocks
# and a final LayerNorm. Its output has one vector per token and is zero at padding.

# %%
enc_cfg = BehrtConfig.from_vocab(
    vocab,
    d_model=cfg.d_model,
    n_layers=cfg.n_layers,
    n_heads=cfg.n_heads,
    d_ff=cfg.d_ff,
    dropout=cfg.dropout,
    max_len=max_len,
    age_bin_years=cfg.age_bin_years,
    n_time_bins=cfg.n_time_bins,
)
encoder = BehrtEncoder(enc_cfg).eval()
with torch.no_grad():
    hidden = encoder(**encoder_inputs(batch))  # (B, L, d)
assert hidden.shape == (B, L, cfg.d_model)
assert (hidden[~batch["attention_mask"]] == 0).all()  # zero at padding
tables = {
    "code": encoder.embeddings.code,
    "age": encoder.embeddings.age,
    "visit": encoder.embeddings.visit,
    "position": encoder.embeddings.position,
    "time": encoder.embeddings.time_bins,
    "domain": encoder.embeddings.domain,
    "LayerNorm": encoder.embeddings.norm,
    "transformer blocks": encoder.blocks,
}
param_table = pd.DataFrame(
    {
        "rows x width": [
            "x".join(map(str, m.weight.shape)) if isinstance(m, nn.Embedding) else ""
            for m in tables.values()
        ],
        "parameters": [count_parameters(m)["total"] for m in tables.values()],
    },
    index=pd.Index(list(tables), name="part"),
)
n_params = count_parameters(encoder)["total"]
param_table["share"] = param_table["parameters"] / n_params
keep("n_params", n_params)
keep("embedding_share", float(param_table["share"].iloc[:7].sum()))
table_name = {"visit": "visit-index"}  # the other parts are named as in the table
table_rows = {"visit": f", {enc_cfg.max_visits + 1:,} rows, one per visit number"}
biggest = param_table["share"].iloc[:6].sort_values(ascending=False)  # the six tables
keep(
    "biggest_tables",
    " and ".join(
        f"the {table_name.get(p, p)} table ({share:.0%}{table_rows.get(p, '')})"
        for p, share in biggest.iloc[:2].items()
    ),
)
param_table.style.format({"share": "{:.1%}", "parameters": "{:,}"})

# %% [markdown]
# This small encoder has {glue:text}`n_params:,` parameters, and
# {glue:text}`embedding_share:.0%` of them are in the input layer. Of the whole encoder,
# {glue:text}`biggest_tables` hold the largest shares.

# %%
chapter_seconds = time.perf_counter() - chapter_start
keep("chapter_minutes", chapter_seconds / 60)
print(f"chapter ran in {chapter_seconds:.0f} s ({cfg.profile} profile)")

# %% [markdown]
# ## Summary
# - BEHRT's input is a sum: code + age + visit + position + time + domain, then LayerNorm.
#   Written inline in a dozen lines, it equals `ehrseq.models.behrt.BehrtEmbeddings` for the
#   default layout, BEHRT's segment/sinusoidal layout and the code alone.
# - Age bins of {glue:text}`age_bin_text` leave at least
#   {glue:text}`age_min_tokens_1y:,` training tokens per used bin; time gaps go into
#   {glue:text}`n_time_bins` log-spaced bins, bin 0 being "same day"
#   ({glue:text}`share_dt_zero:.0%` of tokens).
# - The layer holds {glue:text}`embedding_share:.0%` of a small encoder's
#   {glue:text}`n_params:,` parameters. What each term is worth is measured in
#   {doc}`04b_embedding_ablation`.
# - The whole chapter ran in {glue:text}`chapter_minutes:.1f` minutes on this machine.
#
# ## Exercises
# These train nothing: each runs in seconds to a few minutes on a CPU, with the `batch`,
# `row`, `train_enc` and `encoder` of this chapter. The exercises that pretrain encoders
# with a changed input layer come after the ablation, at the end of
# {doc}`04b_embedding_ablation`.
#
# 1. **Order blindness, measured.** Build a `BehrtEncoder` with
#    `position_embedding="none"`, `visit_embedding="none"`, `time_embedding="none"` and
#    `dropout=0.0`, and keep one patient:
#    `{k: v[row : row + 1, :n_show] for k, v in encoder_inputs(batch).items()}`. Shuffle
#    its tokens after `[CLS]` (one `torch.randperm`, applied to every input but
#    `positions`) and check with `torch.testing.assert_close` that the hidden states come
#    out shuffled the same way. Switch the learned positions back on: how far do the hidden
#    states move now? The age and the domain travel with each token; could either of them
#    let a model recover the order of the record, and how finely?
# 2. **How loud is each term?** The learned tables start with entries of standard deviation
#    0.02 (`BehrtConfig.init_std`). On the batch, measure the mean length of each term of
#    $e_l$ in `encoder.embeddings` (look the rows up as `embed_inline` does) and of a row of
#    `sinusoidal_table`, for $d$ = 32, 64 and 128, and compare with $0.02\sqrt d$ and
#    $\sqrt{d/2}$. Then, with `position_embedding="sinusoidal"`, compare the cosine of
#    $h^{(0)}$ between two tokens with the same code at different positions and between two
#    tokens with different codes at the same position. Which pair is more alike after the
#    LayerNorm, and what does that predict for the sinusoidal variant of the ablation?
# 3. **Tables sized to the data.** Find the largest visit number in the training tokens
#    (`train_enc.arrays["visit_ids"]`) and the share of the visit-index table's rows (the
#    `rows x width` column above) that training ever reaches. How many parameters would
#    `max_visits` set to that number save, and how many the `"segment"` embedding? Do the
#    same for the time bins: which $\Delta_\max$ (`max_time_days`) would put the longest
#    training gap into the last bin, and how many of the {glue:text}`n_time_bins` bins
#    would then be used? What happens under each choice to a patient whose record is longer
#    than any training record?

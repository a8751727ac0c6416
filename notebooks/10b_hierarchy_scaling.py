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
# # Scaling the hierarchical BEHRT
#
# ## Outline
# {doc}`10_hierarchical_behrt` built a hierarchical BEHRT, which pools the codes of each visit
# by attention and then runs a causal transformer across visits, and compared it with a flat
# BEHRT for accuracy. This chapter measures what the hierarchy buys in compute: attention over
# $L = VC$ tokens costs $O((VC)^2)$, attention inside visits and then across them
# $O(VC^2 + V^2)$. We time one training step of each model and measure the memory it keeps
# for the backward pass over a grid of visits $V$ and codes per visit $C$, and fit how each
# cost grows.

# %% [markdown]
# ## Setup
# One config per chapter; `EHRSEQ_PROFILE` (`smoke`, `book`, `full`) picks its size. The
# models have the width and depth of {doc}`10_hierarchical_behrt`; nothing here is trained,
# so the timings measure the architectures, not what they learned.

# %%
import time
from dataclasses import dataclass

import matplotlib.pyplot as plt
import matplotlib.ticker as ticker
import numpy as np
import pandas as pd
import torch
from torch import nn

import ehrseq
from ehrseq.book import keep
from ehrseq.config import for_profile, format_config
from ehrseq.data.task import prepare_survival_task, shared_task_config
from ehrseq.models import (
    BehrtConfig,
    BehrtEncoder,
    BinHazardHead,
    HierarchicalBehrt,
    HierarchicalConfig,
    SurvivalModel,
)
from ehrseq.numbers import number
from ehrseq.plotting import apply_style
from ehrseq.runs import hazard_nll_step
from ehrseq.runtime import measure
from ehrseq.survival import life_table_hazards
from ehrseq.train import to_device


@dataclass(frozen=True)
class Config:
    profile: str = "book"
    d_model: int = 64  # width of both models
    n_layers: int = 2  # flat: blocks over tokens; hierarchical: blocks across visits
    n_heads: int = 4  # attention heads (and pooling heads)
    d_ff: int = 128  # feed-forward width of a transformer block
    dropout: float = 0.1  # on embeddings, residual branches and the head
    # BERT's dropout on the attention probabilities: with it, the CPU kernel keeps the
    # probabilities for the backward pass; without it (the library's default, 0) a fused
    # kernel recomputes them and the flat model's memory loses its L^2 term (exercise 2)
    attention_dropout: float = 0.1
    scale_visits: tuple[int, ...] = (8, 16, 32, 64)  # V of the scaling benchmark
    scale_codes: tuple[int, ...] = (4, 8, 16)  # C of the scaling benchmark
    scale_batch: int = 8  # patients per benchmark step
    scale_repeats: int = 3  # timed steps per model and size (the fastest is kept)


cfg = for_profile(
    Config,
    {
        "smoke": {
            "d_model": 16,
            "n_layers": 1,
            "n_heads": 2,
            "d_ff": 32,
            "scale_visits": (4, 8),
            "scale_codes": (4, 8),
            "scale_batch": 4,
            "scale_repeats": 2,
        },
        "full": {
            "d_model": 128,
            "n_layers": 4,
            "d_ff": 512,
            "scale_visits": (16, 32, 64, 128, 256),
            "scale_codes": (8, 16, 32),
            "scale_batch": 32,
            "scale_repeats": 10,
        },
    },
)
device = ehrseq.get_device()
rng = ehrseq.seed_everything(0)
apply_style()
print(format_config(cfg))
print(f"device: {device}")

# %% [markdown]
# ## The models
# The task of {doc}`10_hierarchical_behrt` supplies the vocabulary, the time bins and the
# training life table that starts the survival head; the three models are built as there: a
# flat BEHRT, the hierarchical BEHRT, and the hierarchical BEHRT with a transformer block
# inside each visit, each with the same per-bin head.

# %%
task = prepare_survival_task(shared_task_config())
train = task.frame("train")
n_bins = task.config.n_bins
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
        attention_dropout=cfg.attention_dropout,
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
        attention_dropout=cfg.attention_dropout,
        time_embedding=time_embedding,
        n_code_layers=n_code_layers,
    )
    return SurvivalModel(HierarchicalBehrt(hcfg), bin_head(cfg.d_model))


# %% [markdown]
# ## Scaling: what the hierarchy buys in compute
# The accuracy comparison of {doc}`10_hierarchical_behrt` runs on short histories (at most
# {glue:text}`max_len` tokens). Records of real patients run to thousands of codes, and
# there the cost of attention decides what can be trained at all. Count the attention
# scores of one layer and head for a patient of $V$ visits with $C$ codes each:
#
# - **flat**: every token attends to every token, $(VC)^2$ scores;
# - **hierarchical**, as trained there: $VC + V^2$ scores ($C$ per visit for the pooling,
#   $V^2$ at the visit level);
# - **hierarchical with a transformer block inside each visit** (`n_code_layers=1`,
#   the design of deeper hierarchical models): $VC^2 + VC + V^2$.
#
# We time one training step (forward, hazard NLL, backward) of each model on full synthetic
# batches (every visit has exactly $C$ codes, so $L = VC$) over a grid of $V$ and $C$, the
# approach of `benchmarks/bench_attention_scaling.py` at small sizes. The time is the fastest
# of {glue:text}`scale_repeats` timed steps after one warm-up step, with one torch thread and
# the models timed in turns, which is the estimate least disturbed by other jobs on a shared
# machine. **Memory** is measured twice. `saved_for_backward_mib` records every tensor that
# autograd keeps for the backward pass of one step (the activations, weights excluded):
# exact, and the same on any device. And we count the attention scores one forward pass
# builds, from the shapes: on a CPU, `scaled_dot_product_attention` with a mask
# materialises exactly these, so the count says which part of the activations grows
# fastest. On a GPU, `measure` adds the peak of allocated tensors.

# %%
keep("max_len", task.config.max_len)
keep("scale_repeats", cfg.scale_repeats)
keep("scale_batch", cfg.scale_batch)
keep("attention_dropout", cfg.attention_dropout)
V_max, C_max = max(cfg.scale_visits), max(cfg.scale_codes)


def full_batches(b: int, v: int, c: int, seed: int = 0) -> tuple[dict, dict]:
    """The same full patients, as a flat batch (b, v*c) and a hierarchical (b, v, c)."""
    g = torch.Generator().manual_seed(seed)
    L = v * c
    codes = torch.randint(5, len(task.vocab), (b, v, c), generator=g)  # (b, v, c)
    domains = torch.randint(1, 8, (b, v, c), generator=g)  # (b, v, c)
    gaps = torch.randint(1, 400, (b, v), generator=g).float()  # (b, v)
    gaps[:, 0] = 0.0
    ages = 40 + 30 * torch.rand(b, 1, generator=g) + gaps.cumsum(1) / 365.25  # (b, v)
    labels = {
        "durations": torch.randint(0, n_bins, (b,), generator=g),
        "events": torch.randint(0, 2, (b,), generator=g),
    }
    hier = {
        "codes": codes,
        "code_mask": torch.ones(b, v, c, dtype=torch.bool),
        "visit_mask": torch.ones(b, v, dtype=torch.bool),
        "ages": ages,
        "time_deltas": gaps,
        "domain_ids": domains,
        **labels,
    }
    first = torch.zeros(b, v, c)
    first[:, :, 0] = 1.0  # the gap sits on a visit's first code
    flat = {
        "codes": codes.reshape(b, L),  # (b, v, c) -> (b, L)
        "attention_mask": torch.ones(b, L, dtype=torch.bool),
        "ages": ages[:, :, None].expand(b, v, c).reshape(b, L),  # (b, L)
        "visit_ids": (torch.arange(L) // c + 1).expand(b, L),  # (b, L)
        "positions": torch.arange(L).expand(b, L),  # (b, L)
        "time_deltas": (gaps[:, :, None] * first).reshape(b, L),  # (b, L)
        "domain_ids": domains.reshape(b, L),  # (b, L)
        **labels,
    }
    return to_device(flat, device), to_device(hier, device)


def attention_scores(name: str, b: int, v: int, c: int) -> int:
    """Attention scores one forward pass builds, from the shapes (all heads, layers)."""
    H, layers = cfg.n_heads, cfg.n_layers
    if name == "flat":
        return layers * b * H * (v * c) ** 2
    within = b * v * H * c**2 if name == "hierarchical + block in visits" else 0
    return within + b * v * H * c + layers * b * H * v**2


torch.manual_seed(0)
bench_models = {
    "flat": flat_behrt(max_len=V_max * C_max, max_visits=V_max),
    "hierarchical": hierarchical(),
    "hierarchical + block in visits": hierarchical(n_code_layers=1),
}
for m in bench_models.values():
    m.to(device).train()


def timed_step(model: nn.Module, b: dict) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    model.zero_grad(set_to_none=True)
    hazard_nll_step(model, b).backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


threads = torch.get_num_threads()
torch.set_num_threads(1)
bench = []
try:
    for v in cfg.scale_visits:
        for c in cfg.scale_codes:
            flat_b, hier_b = full_batches(cfg.scale_batch, v, c)
            inputs_of = {n: flat_b if n == "flat" else hier_b for n in bench_models}
            for n, m in bench_models.items():
                timed_step(m, inputs_of[n])  # warm-up
            times: dict[str, list[float]] = {n: [] for n in bench_models}
            # in turns, so a busy machine slows all alike
            for _ in range(cfg.scale_repeats):
                for n, m in bench_models.items():
                    times[n].append(timed_step(m, inputs_of[n]))
            for n, m in bench_models.items():
                saved = ehrseq.saved_for_backward_mib(
                    lambda m=m, b=inputs_of[n]: hazard_nll_step(m, b),
                    exclude=m.parameters(),
                )
                peak = float("nan")
                if device.type == "cuda":
                    with measure(device) as mem:
                        timed_step(m, inputs_of[n])
                    peak = mem.peak_mib
                bench.append(
                    {
                        "model": n,
                        "V": v,
                        "C": c,
                        "L = VC": v * c,
                        "s / step": min(times[n]),
                        "attention scores": attention_scores(n, cfg.scale_batch, v, c),
                        "activations MiB": saved,
                        "peak MiB (GPU)": peak,
                    }
                )
finally:
    torch.set_num_threads(threads)
bench = pd.DataFrame(bench)
bench["score MiB"] = bench["attention scores"] * 4 / 2**20  # float32
# milliseconds per step, one decimal: the table's columns stay apart
step_ms = bench.pivot_table(index=["V", "C"], columns="model", values="s / step")
(1000 * step_ms).round(1).rename_axis(columns="ms per step:")

# %% [markdown]
# How do the costs grow? A power law $y \propto (VC)^s$ is a straight line of slope $s$ on
# log-log axes. We fit $s$ by least squares for each model, and also the two exponents of
# $y \propto V^p C^q$, which separate growing the number of visits from growing the number
# of codes per visit. For the score counts the expected exponents are exact: $p = q = 2$ for the flat model; for the
# hierarchical ones, sums of terms with different exponents, so one power law only
# summarises the range measured.


# %%
def exponents(rows: pd.DataFrame, column: str) -> dict:
    """Slope s of log y on log(VC); (p, q) of the fit log y = a + p log V + q log C."""
    y = np.log(rows[column].to_numpy(float))
    s = np.polyfit(np.log(rows["L = VC"].to_numpy(float)), y, 1)[0]
    X = np.column_stack([np.ones(len(rows)), np.log(rows["V"]), np.log(rows["C"])])
    (_, p, q), *_ = np.linalg.lstsq(X, y, rcond=None)
    return {"slope in VC": float(s), "p (V)": float(p), "q (C)": float(q)}


slopes = pd.DataFrame(
    {
        (n, what): exponents(bench[bench["model"] == n], column)
        for n in bench_models
        for what, column in (
            ("time", "s / step"),
            ("activations", "activations MiB"),
            ("scores", "attention scores"),
        )
    }
).T
slopes.index.names = ["model", "cost"]
keep_slopes = {
    "flat": "flat",
    "hierarchical": "hier",
    "hierarchical + block in visits": "hblock",
}
for n, key in keep_slopes.items():
    for what in ("time", "activations", "scores"):
        keep(f"slope_{key}_{what}", float(slopes.loc[(n, what), "slope in VC"]))
        keep(f"p_{key}_{what}", float(slopes.loc[(n, what), "p (V)"]))
        keep(f"q_{key}_{what}", float(slopes.loc[(n, what), "q (C)"]))
    # as text, never "-0.00": a measured time's slope can sit at zero
    keep(f"slope_{key}_time_text", number(slopes.loc[(n, "time"), "slope in VC"], ".2f"))
largest = bench[(bench["V"] == V_max) & (bench["C"] == C_max)].set_index("model")
keep("L_max", V_max * C_max)
flat_big, hier_big = largest.loc["flat"], largest.loc["hierarchical"]
keep("speedup_largest", float(flat_big["s / step"] / hier_big["s / step"]))
score_ratio = float(flat_big["attention scores"] / hier_big["attention scores"])
keep("score_ratio_largest", score_ratio)
keep("flat_score_mib_largest", float(largest.loc["flat", "score MiB"]))
keep("flat_act_mib_largest", float(largest.loc["flat", "activations MiB"]))
keep("hier_act_mib_largest", float(largest.loc["hierarchical", "activations MiB"]))
act_ratio = float(flat_big["activations MiB"] / hier_big["activations MiB"])
keep("act_ratio_largest", act_ratio)


def size_text(mib: float) -> str:
    """A memory size readable at any scale: "1,234 MiB", "3.4 MiB", "120 KiB"."""
    if mib >= 10:
        return f"{mib:,.0f} MiB"
    return f"{mib:.1f} MiB" if mib >= 1 else f"{mib * 1024:,.0f} KiB"


def times_text(ratio: float) -> str:
    """ "32", "2.4": a ratio with the digits that matter."""
    return f"{ratio:,.0f}" if ratio >= 10 else f"{ratio:.1f}"


def compare_text(ratio: float, flat: str, hier: str, same: str) -> str:
    """A flat/hierarchical ratio in words; within 10 % of 1 it reads ``same``."""
    if 1 / 1.1 < ratio < 1.1:
        return same
    if ratio > 1:
        return flat.format(times_text(ratio))
    return hier.format(times_text(1 / ratio))


keep("flat_score_size", size_text(float(largest.loc["flat", "score MiB"])))
keep("flat_act_size", size_text(float(largest.loc["flat", "activations MiB"])))
keep("hier_act_size", size_text(float(largest.loc["hierarchical", "activations MiB"])))
keep(
    "score_ratio_text",
    compare_text(
        score_ratio,
        "{} times as many scores as the hierarchical one",
        "{} times fewer scores than the hierarchical one",
        "about as many scores as the hierarchical one",
    ),
)
keep(
    "act_ratio_text",
    compare_text(
        act_ratio,
        "the flat model keeps {} times as much",
        "the hierarchical model keeps {} times as much",
        "about as much",
    ),
)
step_ratio = float(flat_big["s / step"] / hier_big["s / step"])
keep(
    "step_ratio_text",
    compare_text(
        step_ratio,
        "one flat step takes {} times as long as a hierarchical one",
        "one hierarchical step takes {} times as long as a flat one",
        "a flat step and a hierarchical one take about as long (within 10 %)",
    ),
)
flat_rows = bench[bench["model"] == "flat"]
# how much the flat step's time grows from the smallest to the largest L
time_growth = float(
    flat_rows.loc[flat_rows["L = VC"] == flat_rows["L = VC"].max(), "s / step"].min()
    / flat_rows.loc[flat_rows["L = VC"] == flat_rows["L = VC"].min(), "s / step"].min()
)
keep("time_growth", time_growth)
time_slopes = slopes.xs("time", level="cost")["slope in VC"]
if time_growth < 1.5 or (time_slopes < 0).any():  # the premise of a growth rate fails
    keep(
        "time_note",
        " Across these sizes a flat step's time changes by a factor of only"
        f" {time_growth:.1f} (a step takes about"
        f" {1000 * largest['s / step'].min():.0f} ms): the fixed cost of a step and the"
        " noise of timing it dominate, and these slopes say nothing yet about how the"
        " time grows.",
    )
    keep(
        "time_summary",
        "at this size the measured time is dominated by the fixed cost of a step and by"
        " timing noise, and its slopes say nothing about growth",
    )
else:
    keep("time_note", "")
    flat_slope, hier_slope = time_slopes["flat"], time_slopes["hierarchical"]
    order = "keep" if flat_slope > hier_slope else "do not keep"
    keep(
        "time_summary",
        f"the measured time slopes, {number(flat_slope, '.2f')} against"
        f" {number(hier_slope, '.2f')}, {order}"
        " that ordering at these sizes, damped by the linear layers and the fixed cost"
        " of a step",
    )

# exact by construction
assert abs(slopes.loc[("flat", "scores"), "slope in VC"] - 2.0) < 1e-9
scores = bench.pivot_table(index=["V", "C"], columns="model", values="attention scores")
assert (scores["flat"] >= scores["hierarchical"]).all()
saved = bench.pivot_table(index=["V", "C"], columns="model", values="activations MiB")
if device.type == "cpu" and cfg.attention_dropout > 0:  # the CPU kernel then keeps them
    flat_scores = bench[bench["model"] == "flat"].set_index(["V", "C"])["score MiB"]
    assert (saved["flat"] >= flat_scores).all()
if cfg.profile != "smoke":
    assert largest.loc["flat", "s / step"] > largest.loc["hierarchical", "s / step"]
    for what in ("time", "activations"):
        assert (
            slopes.loc[("flat", what), "slope in VC"]
            > slopes.loc[("hierarchical", what), "slope in VC"]
        ), what
    # "a slope below one" below
    assert slopes.loc[("hierarchical", "time"), "slope in VC"] < 1
slopes.round(2)


# %% mystnb={"figure": {"name": "fig-attention-scaling", "caption": "Cost of one training step against the number of tokens L = VC, log-log. Top left: wall time (fastest of the timed steps; on a CPU, one thread); top right: activations kept for the backward pass (measured); bottom left: attention scores built by one forward pass (from the shapes). Each line joins the sizes with the same number of codes per visit C (marker); grey dotted and dashed lines have slopes 1 and 2."}}
class PlainLogFormatter(ticker.LogFormatterSciNotation):
    """Log-axis tick labels as plain numbers ("0.002", "20") at the default ticks."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return f"{x:g}" if super().__call__(x, pos) else ""


# two by two, to fit the column: three panels and the key in the fourth
fig, grid = plt.subplots(2, 2, figsize=(7.5, 6.4), layout="constrained")
axes, key_ax = grid.flat[:3], grid.flat[3]
colors = dict(zip(bench_models, ("C0", "C1", "C2"), strict=True))
markers = dict(zip(cfg.scale_codes, "os^Dv", strict=False))
slope_styles = {1: ":", 2: "--"}  # grey reference lines
Ls = sorted(bench["L = VC"].unique())
for ax, column, scale, label in (
    (axes[0], "s / step", 1000, "ms per training step"),
    (axes[1], "activations MiB", 1, "MiB kept for backward"),
    (axes[2], "attention scores", 1, "attention scores per forward"),
):
    for (n, c), rows in bench.groupby(["model", "C"], sort=False):
        style = {"marker": markers[c], "c": colors[n], "alpha": 0.85}
        ax.loglog(rows["L = VC"], scale * rows[column], **style)
    lo, hi = Ls[0], Ls[-1]
    base = scale * bench[column].min()
    for k, ls in slope_styles.items():
        ax.loglog([lo, hi], [base, base * (hi / lo) ** k], c="grey", lw=0.8, ls=ls)
    # the sizes measured, as plain numbers, slanted so that close ones do not collide
    ax.set_xticks(Ls, [f"{L:,}" for L in Ls], rotation=45, ha="right")
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    if column != "attention scores":  # counts keep powers of ten
        ax.yaxis.set_major_formatter(PlainLogFormatter())
        ax.yaxis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False))
    ax.set_xlabel("tokens per patient L = V x C")
    ax.tick_params(labelsize=9)
    ax.set_ylabel(label)
handles = [plt.Line2D([], [], color=colors[n], label=n) for n in bench_models]
handles += [
    plt.Line2D([], [], color="grey", lw=0.8, ls=ls, label=f"slope {k}")
    for k, ls in slope_styles.items()
]
for c in cfg.scale_codes:
    label = f"C = {c} codes per visit"
    key = plt.Line2D([], [], color="grey", marker=markers[c], ls="", label=label)
    handles.append(key)
key_ax.axis("off")  # the fourth cell holds the key
key_ax.legend(handles=handles, loc="center", fontsize=9)
plt.show()

# %% [markdown]
# **What the slopes say.** The attention scores grow exactly as the shapes say: slope
# {glue:text}`slope_flat_scores:.2f` in $VC$ for the flat model ($p = q = 2$), while the
# hierarchical model's exponents split, {glue:text}`p_hier_scores:.2f` in $V$ (the $V^2$ of
# the visit level takes over as $V$ grows) and {glue:text}`q_hier_scores:.2f` in $C$ (the
# pooling is linear in $C$ and shares the count with the $V^2$ term). A transformer block
# inside each visit adds a $VC^2$ term: exponents {glue:text}`p_hblock_scores:.2f` and
# {glue:text}`q_hblock_scores:.2f`. At the largest size, $L$ = {glue:text}`L_max` tokens,
# the flat model builds {glue:text}`score_ratio_text`, {glue:text}`flat_score_size` in
# float32 for a batch of {glue:text}`scale_batch` patients.
#
# The measured activations: at the largest size the flat model keeps
# {glue:text}`flat_act_size` for the backward pass of one step, the hierarchical one
# {glue:text}`hier_act_size` ({glue:text}`act_ratio_text`). Their slopes in $VC$ are
# {glue:text}`slope_flat_activations:.2f` (flat) and {glue:text}`slope_hier_activations:.2f`
# (hierarchical): every model keeps $O(L d)$ activations for its linear layers, and only
# the flat model adds the $O(L^2)$ attention probabilities of every layer and head, which
# take over as $L$ grows. (They are kept because these models drop out attention
# probabilities as BERT does, {glue:text}`attention_dropout`; exercise 2 turns that off.)
#
# The measured time: slope {glue:text}`slope_flat_time_text` in $VC$ for the flat model,
# {glue:text}`slope_hier_time_text` for the hierarchical one and
# {glue:text}`slope_hblock_time_text` with a block inside visits.{glue:text}`time_note` At
# small sizes much of a step is spent in the linear layers and the embeddings, which cost
# $O(L d^2)$ for every model, and in the fixed cost of a step (a slope below one means that
# this fixed part still weighs), so the quadratic term of the flat model shows only at
# large $L$. At the largest size {glue:text}`step_ratio_text`. A power law fitted over a
# range where two terms compete is a summary of that range, not an asymptotic exponent; to
# see the asymptote, extend the grid (on a GPU, where the `full` profile runs, to thousands
# of tokens).
#
# ## Summary
# - Attention scores grow as $(VC)^2$ for the flat model and as $VC + V^2$ (or
#   $VC^2 + V^2$ with blocks inside visits) for the hierarchical one;
#   {glue:text}`time_summary`.
# - Memory: at the largest size the flat model keeps {glue:text}`flat_act_size` of
#   activations for the backward pass, the hierarchical one {glue:text}`hier_act_size`
#   ({glue:text}`act_ratio_text`); only the flat model keeps the $O(L^2)$ attention
#   probabilities, whose share grows with $L$.
#
# ## Exercises
# 1. Extend the scaling grid to $V = 256$ and $C = 32$ on a GPU (`EHRSEQ_PROFILE=full`). At
#    what size does the flat model run out of memory, and how do the measured peaks compare
#    with the score counts?
# 2. Set `attention_dropout=0` in the `Config` (the library's default, which the training
#    chapters use because on a CPU the dropout mask costs a third of a step). Which kernel
#    does `scaled_dot_product_attention` now take, and what happens to the flat model's
#    activation slope in $VC$? Does the hierarchy still buy memory, and where?

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
# # Results: every claim the book tests
#
# ## Outline
# The chapters compare models on the same test patients. Each comparison that backs a claim,
# one of this book's or one its sources make (pretraining helps; LoRA matches full
# fine-tuning with far fewer trainable parameters; a hybrid loss trades likelihood for
# ranking; hierarchical against flat; BEHRT against Cox and an LSTM; next-visit prediction
# against repeating the record), is a **paired bootstrap** of the difference between two
# models over the same resampled test patients, with a 95 % interval. The code-embedding
# claims of chapter 12 compare embeddings, not patients: their interval is a paired
# Student-t interval over training seeds, as each claim's text says. A verdict follows from
# the interval alone:
#
# - **reproduced**: the interval excludes 0 on the side the claim predicts (for a claim that
#   two models match, the whole interval lies within the stated margin);
# - **refuted**: the interval excludes 0 on the other side (or lies wholly outside the
#   margin);
# - **not resolved**: the interval contains 0; this test set cannot tell.
#
# Each chapter writes its claims when it runs (`ehrseq.book.record_claim`); this page reads
# them back for the active profile, so every row below was measured by this build.

# %% [markdown]
# ## Setup

# %%
import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ehrseq.book import NBSP, VERDICTS, claims_folder, interval, keep, read_claims
from ehrseq.config import current_profile
from ehrseq.plotting import apply_style

apply_style()
profile = current_profile()
claims = read_claims(profile)
n_chapters = claims["chapter"].nunique()
print(f"profile {profile}: {len(claims)} claims from {n_chapters} chapters")
print(f"read from {claims_folder(profile)}")

# %% [markdown]
# The chapters that test claims must all have run in this profile before this page (the book
# build runs it last). Under the quick `smoke` profile the tests may run it first, and it then
# shows what is there.

# %%
EXPECTED = {
    "05d_next_visit_vs_history",
    "07b_loss_comparison",
    "08b_finetuning_comparison",
    "09_architecture_decisions",
    "10_hierarchical_behrt",
    "12_code_embeddings",
    "12b_medrep_concepts",
    "12c_medcodebert",
    "13_mime_gct",
}
missing = sorted(EXPECTED - set(claims["chapter"]))
if profile != "smoke":
    assert not missing, f"run these chapters first, in profile {profile}: {missing}"
print("chapters without claims yet:", missing or "none")

# %% [markdown]
# ## The table

# %%
# four columns, so a claim and its interval each stay on one line beside the text column
table = pd.DataFrame(
    {
        "chapter": claims["chapter"].str.split("_").str[0],
        "claim": claims["claim"],
        "difference [95 % CI]": [
            # book.interval (no "-0.0000"), the estimate held to its interval too
            interval(d, lo, hi, "+.4f").replace(" [", f"{NBSP}[")
            + ("" if pd.isna(m) else f" (margin{NBSP}±{m:g})")
            for d, lo, hi, m in zip(
                claims["difference"],
                claims["lower"],
                claims["upper"],
                claims["margin"],
                strict=True,
            )
        ],
        "verdict": claims["verdict"].str.replace(" ", NBSP),  # on one line
    }
).set_index("chapter")
counts = claims["verdict"].value_counts().reindex(list(VERDICTS), fill_value=0)
keep("n_claims", len(claims))
for verdict, n in counts.items():
    keep(f"n_{verdict.replace(' ', '_')}", int(n))
# a Styler shows each claim whole (a plain frame cuts long text at 50 characters)
table.reset_index().style.hide(axis="index").set_properties(
    subset=["claim"], **{"text-align": "left", "white-space": "normal"}
)

# %% [markdown]
# Of {glue:text}`n_claims` claims, {glue:text}`n_reproduced` are reproduced,
# {glue:text}`n_refuted` refuted and {glue:text}`n_not_resolved` not resolved on this build's
# test patients.
#
# ## The intervals
# Each claim's difference with its 95 % paired interval. The metrics differ in scale and
# direction (a lower IBS is better), so each row says which side supports the claim.

# %% mystnb={"figure": {"name": "fig-claims", "caption": "Every tested claim, one panel per metric: the paired difference between the two models and its 95 % interval, coloured by verdict. The dotted line is no difference; a grey band is the margin of a claim that two models match."}}
colour = {"reproduced": "tab:green", "refuted": "tab:red", "not resolved": "tab:gray"}
metrics = list(dict.fromkeys(claims["metric"])) or ["(none yet)"]
sizes = [max(int((claims["metric"] == m).sum()), 1) for m in metrics]
fig, axes = plt.subplots(
    len(metrics),
    1,
    figsize=(9, 0.6 * sum(sizes) + 1.2 * len(metrics)),
    gridspec_kw={"height_ratios": sizes},
    squeeze=False,
)
for ax, metric in zip(axes[:, 0], metrics, strict=True):
    rows = claims.loc[claims["metric"] == metric]
    y = np.arange(len(rows))[::-1]
    for yi, (_, row) in zip(y, rows.iterrows(), strict=True):
        if not pd.isna(row["margin"]):  # the band within which two models "match"
            ax.fill_betweenx(
                [yi - 0.35, yi + 0.35],
                -row["margin"],
                row["margin"],
                color="0.9",
            )
        ax.errorbar(
            row["difference"],
            yi,
            xerr=[
                [row["difference"] - row["lower"]],
                [row["upper"] - row["difference"]],
            ],
            fmt="o",
            color=colour[row["verdict"]],
            capsize=3,
        )
    ax.axvline(0.0, color="black", linestyle=":", linewidth=1)
    ax.set_yticks(y, [textwrap.fill(c, 45) for c in rows["claim"]], fontsize="small")
    ax.set_ylim(-0.7, max(len(rows), 1) - 0.3)
    label = metric.replace("_", " ")  # "effective_rank" reads "effective rank"
    ax.set_xlabel(f"difference in {label} (first model minus second)")
for verdict, c in colour.items():
    axes[0, 0].plot([], [], "o", color=c, label=verdict)
axes[0, 0].legend(loc="best", fontsize="small")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Summary
# - Every claim above is a paired comparison (on the same test patients, or for the
#   embeddings of chapter 12 the same training seeds); its verdict is read from the
#   interval, never typed.
# - "Not resolved" is a result: it says how much larger a test set, or how much larger an
#   effect, the claim would need.
#
# ## Exercises
# 1. Run the book in the `full` profile on a GPU. Which "not resolved" rows become resolved,
#    and in which direction?
# 2. Pick one refuted claim and find, in its chapter, the setting its source used that this
#    book did not. Would you expect the verdict to change with it?

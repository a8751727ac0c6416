"""The last stage of ``ehrseq run``: ``metrics.json`` and ``report.html`` from the stages' files.

It reads only what the earlier stages wrote under ``--out``, so it is cheap and always reruns.
"""

from __future__ import annotations

import argparse
import dataclasses
import html
import json
from pathlib import Path

import numpy as np
import pandas as pd

from ehrseq.cli.cohort import CohortSpec

__all__ = ["loss_figure", "write_outputs"]

_METRICS = ("Harrell C", "Uno C", "Antolini C", "IBS", "AUROC", "calibration error")


def _csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return pd.DataFrame()


def _metrics_json(metrics: pd.DataFrame, compare: pd.DataFrame) -> dict:
    models = {}
    for row in metrics.to_dict("records"):
        models[row["model"]] = {
            m: {"estimate": row[m], "lower": row[f"{m} lower"], "upper": row[f"{m} upper"]}
            for m in _METRICS
            if m in row
        }
    return {"models": models, "paired_differences": compare.to_dict("records")}


def _baselines_json(folder: Path) -> dict:
    """The sizes of the baselines: ``cox.json`` and ``lasso.json`` of the ``baselines``
    stage (an empty dict for a file that is missing)."""

    def read(name: str) -> dict:
        path = folder / name
        return json.loads(path.read_text()) if path.is_file() else {}

    return {"Cox, bag of codes": read("cox.json"), "L1 logistic": read("lasso.json")}


def _baselines_html(baselines: dict, grid: pd.DataFrame) -> str:
    """What the baselines kept, and the L1 logistic regression's choice of penalty."""
    from ehrseq.report import table_html

    cox, lasso = baselines["Cox, bag of codes"], baselines["L1 logistic"]
    text = f"Cox, bag of codes: {cox.get('features', '?')} features (ridge)."
    if lasso:
        text += (
            f" L1 logistic regression (outcome within the horizon): C = {lasso['C']:g} chosen "
            f"on the validation persons' AUROC, {lasso['non_zero']} of {lasso['features']} "
            f"features non-zero, fitted on the {lasso['train_labelled']} training persons "
            f"with a binary label ({lasso['train_unlabelled']} censored before the horizon "
            "without the outcome left out); its probability follows the training "
            "Kaplan-Meier incidence over time."
        )
    return f'<p class="note">{html.escape(text)}</p>' + (table_html(grid) if len(grid) else "")


def _figures(out: Path, cuts: np.ndarray) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ehrseq.plotting import apply_style
    from ehrseq.plotting.survival import plot_calibration, plot_survival_by_risk_group
    from ehrseq.report import figure_html

    apply_style()
    frame = pd.read_parquet(out / "task" / "frame.parquet")
    test = frame[frame["split"] == "test"]
    surv = np.load(out / "finetune" / "surv_test.npy")
    figs = []
    fig, ax = plt.subplots(figsize=(6, 4))
    plot_survival_by_risk_group(
        test["duration"].to_numpy(), 1.0 - surv[:, -1], test["event"].to_numpy(), ax=ax
    )
    figs.append(
        figure_html(
            fig,
            "Kaplan-Meier curves of the test persons in thirds of the BEHRT model's "
            f"predicted risk at the horizon ({cuts[-1]:.0f} days), 95% bands.",
        )
    )
    cal = _csv(out / "evaluate" / "calibration.csv")
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, part in cal.groupby("model", sort=False):
        plot_calibration(part.drop(columns="model"), ax=ax, label=str(name))
    ax.legend()
    figs.append(
        figure_html(
            fig,
            "Calibration at the horizon: predicted risk against the Kaplan-Meier incidence "
            "per decile of predicted risk (test persons).",
        )
    )
    history = _csv(out / "finetune" / "history.csv")
    if len(history):
        figs.append(figure_html(loss_figure(history), "Fine-tuning loss per epoch."))
    return figs


def loss_figure(history: pd.DataFrame):
    """Training (and validation) loss against the epoch, ticked at whole epochs.

    Args:
        history: ``epoch``, ``train_loss`` and optionally ``val_loss``, one row per epoch.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(history["epoch"], history["train_loss"], marker="o", label="training")
    if "val_loss" in history:
        ax.plot(history["epoch"], history["val_loss"], marker="o", label="validation")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs, never 1.5
    ax.set_xlabel("Epoch")
    ax.set_ylabel("Hazard NLL (nats per person)")
    ax.legend()
    return fig


def write_outputs(
    out: Path,
    spec: CohortSpec,
    cfg,
    args: argparse.Namespace,
    status: dict[str, str],
    device: str,
) -> None:
    """Write ``out/metrics.json`` and ``out/report.html`` from the stages' files."""
    from ehrseq import __version__
    from ehrseq.evaluate import format_table
    from ehrseq.report import html_page, table_html

    metrics = _csv(out / "evaluate" / "metrics.csv")
    compare = _csv(out / "evaluate" / "compare.csv")
    attrition = _csv(out / "cohort" / "attrition.csv")
    task_summary = _csv(out / "task" / "summary.csv")
    cuts = np.load(out / "task" / "cuts.npy")
    load_summary = _csv(out / "load" / "summary.csv")
    load_issues = _csv(out / "load" / "report.csv")
    if len(load_issues):
        load_issues = load_issues[~load_issues["reason"].isin(["read", "rows_kept"])]
    notes = json.loads((out / "load" / "meta.json").read_text())["notes"]
    baselines = _baselines_json(out / "baselines")

    doc = {
        "ehrseq": __version__,
        "input": str(args.path),
        "cohort": {
            "name": spec.name,
            "file": str(args.cohort),
            "persons": int(attrition["persons"].iloc[-1]),
            "attrition": attrition.to_dict("records"),
            "horizon_days": spec.horizon_days,
        },
        "splits": task_summary.to_dict("records"),
        "config": dataclasses.asdict(cfg) | {"profile": args.profile, "device": device},
        "baselines": baselines,
        **_metrics_json(metrics, compare),
    }
    (out / "metrics.json").write_text(json.dumps(doc, indent=1, default=str))

    table = format_table(metrics.set_index("model"), list(_METRICS)).reset_index()
    sections = [
        (
            "Metrics",
            table_html(table) + '<p class="note">Estimates on the test persons with '
            f"95% percentile bootstrap intervals ({cfg.n_boot} resamples of test persons). "
            "IBS and calibration error: lower is better.</p>",
        ),
        ("Paired differences", table_html(compare)),
        ("Baselines", _baselines_html(baselines, _csv(out / "baselines" / "lasso_grid.csv"))),
        ("Figures", "\n".join(_figures(out, cuts))),
        ("Cohort attrition", table_html(attrition)),
        ("Splits", table_html(task_summary)),
        (
            "Load report",
            table_html(load_summary)
            + table_html(load_issues)
            + "".join(f'<p class="note">{html.escape(str(n))}</p>' for n in notes),
        ),
        (
            "Run",
            table_html(pd.DataFrame([{"stage": k, "status": v} for k, v in status.items()]))
            + table_html(
                pd.DataFrame([doc["config"]]).T.reset_index().set_axis(["setting", "value"], axis=1)
            ),
        ),
    ]
    intro = html.escape(
        f"Cohort {spec.name!r} from {args.path}: {doc['cohort']['persons']:,} persons, "
        f"horizon {spec.horizon_days:g} days, {len(cuts) - 1} time bins. ehrseq {__version__}."
    )
    page = html_page(f"ehrseq run: {spec.name}", sections, intro)
    (out / "report.html").write_text(page)

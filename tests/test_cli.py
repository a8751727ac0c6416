"""The ``ehrseq`` command: validate, cohort and run on a small synthetic OMOP export, the
GiBleed sample where present, and bad input that must end in one line and a non-zero exit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from ehrseq.cli import main
from ehrseq.cli.cohort import CliError, ConceptSet
from ehrseq.cli.steps import COMPARISONS
from ehrseq.data.download import local_sample
from ehrseq.data.meds import LABEL_CORE_COLUMNS, read_survival_labels

pytestmark = pytest.mark.usefixtures("one_thread")

# the synthetic cohort's NSAID ingredients (their clinical drugs are descendants) and the
# "Heart failure" parent of the four heart-failure conditions
NSAIDS = (2000003101, 2000003103)
HEART_FAILURE = 2000001047

COHORT = """
name = "nsaid_hf"
washout_days = 180
horizon_years = 3
[index]
concepts = {index}
include_descendants = {desc}
[outcome]
{outcome}
"""


def write_cohort(folder: Path, *, index=NSAIDS, desc="true", outcome=None) -> Path:
    outcome = outcome or f"concepts = [{HEART_FAILURE}]\ninclude_descendants = true"
    path = folder / "cohort.toml"
    path.write_text(COHORT.format(index=list(index), desc=desc, outcome=outcome))
    return path


@pytest.fixture(scope="module")
def omop(tmp_path_factory) -> Path:
    from ehrseq.data.synthetic import SyntheticConfig, generate_cohort

    folder = tmp_path_factory.mktemp("omop")
    generate_cohort(SyntheticConfig(n_patients=400, seed=3)).write_omop(folder)
    return folder


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("EHRSEQ_NO_PROGRESS", "1")


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    err = [line for line in err if not line.startswith(("  ", "/")) and "Warning" not in line]
    assert len(err) == 1 and err[0].startswith("ehrseq: error: "), err
    return err[0]


# -- help --------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [[], ["validate"], ["cohort"], ["run"]])
def test_help_explains_each_command(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "OMOP" in out
    if command in (["cohort"], ["run"]):
        assert "include_descendants" in out  # the cohort file is shown by example


# -- validate ----------------------------------------------------------------------------------
def test_validate_prints_the_load_report(omop, capsys):
    assert main(["validate", str(omop)]) == 0
    out = capsys.readouterr().out
    assert "condition_occurrence" in out and "rows_kept" in out


def test_memory_limit_caps_duckdb_or_fails_in_one_line(omop, capsys, monkeypatch):
    # main() sets the variable for its process: monkeypatch restores it (unset) afterwards
    monkeypatch.setenv("EHRSEQ_DUCKDB_MEMORY", "")
    assert main(["validate", str(omop), "--memory-limit", "256MB"]) == 0
    assert "rows_kept" in capsys.readouterr().out
    monkeypatch.setenv("EHRSEQ_DUCKDB_MEMORY", "")
    assert main(["validate", str(omop), "--memory-limit", "lots"]) == 1
    assert "EHRSEQ_DUCKDB_MEMORY" in one_line_error(capsys)


def test_validate_strict_exits_1_on_a_broken_rule(omop, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(omop, broken)
    cond = pd.read_parquet(broken / "condition_occurrence.parquet")
    cond.loc[0, "person_id"] = 987654321  # nobody
    cond.to_parquet(broken / "condition_occurrence.parquet", index=False)
    assert main(["validate", str(broken)]) == 0  # lenient: counted, usable
    assert "unknown_person" in capsys.readouterr().out
    assert main(["validate", str(broken), "--strict"]) == 1
    assert "unknown_person" in one_line_error(capsys)
    assert main(["validate", str(broken), "--strict", "--allow", "unknown_person"]) == 0


# -- cohort ------------------------------------------------------------------------------------
def test_cohort_prints_attrition_and_writes_meds_labels(omop, tmp_path, capsys):
    labels = tmp_path / "labels.parquet"
    cohort = write_cohort(tmp_path)
    assert main(["cohort", str(omop), "--cohort", str(cohort), "--labels", str(labels)]) == 0
    out = capsys.readouterr().out
    assert "with an index event" in out and "at least 180 days" in out
    table = pq.read_table(labels)
    assert table.column_names[:3] == list(LABEL_CORE_COLUMNS)
    assert {"event_time", "censor_time", "duration"} <= set(table.column_names)
    back = read_survival_labels(labels)
    assert len(back) > 50 and back["event"].sum() > 0
    assert (back["duration"] <= 3 * 365.25 + 1e-6).all()


def test_atlas_concept_set_gives_the_same_cohort(omop, tmp_path, capsys):
    items = [
        {"concept": {"CONCEPT_ID": HEART_FAILURE}, "includeDescendants": True, "isExcluded": False},
        {"concept": {"CONCEPT_ID": 123}, "includeDescendants": False, "isExcluded": True},
    ]
    (tmp_path / "hf.json").write_text(json.dumps({"items": items}))
    toml_labels, atlas_labels = tmp_path / "a.parquet", tmp_path / "b.parquet"
    cohort = write_cohort(tmp_path)
    assert main(["cohort", str(omop), "--cohort", str(cohort), "--labels", str(toml_labels)]) == 0
    cohort = write_cohort(tmp_path, outcome='atlas = "hf.json"')
    assert main(["cohort", str(omop), "--cohort", str(cohort), "--labels", str(atlas_labels)]) == 0
    pd.testing.assert_frame_equal(
        read_survival_labels(toml_labels), read_survival_labels(atlas_labels)
    )


def test_concept_set_descendants_and_exclusions():
    tree = {1: [1, 2, 3], 4: [4, 5]}
    expand = lambda ids: [d for i in ids for d in tree.get(i, [i])]  # noqa: E731
    items = {
        "items": [
            {"concept": {"CONCEPT_ID": 1}, "includeDescendants": True},
            {"concept": {"CONCEPT_ID": 4}, "includeDescendants": False},
            {"concept": {"CONCEPT_ID": 3}, "includeDescendants": False, "isExcluded": True},
        ]
    }
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(items, f)
    assert ConceptSet.from_atlas(f.name).resolve(expand) == [1, 2, 4]
    with pytest.raises(CliError, match="needs a vocabulary"):
        ConceptSet(include=((1, True),)).resolve(None)


# -- other input formats ---------------------------------------------------------------------
def _labels(path: Path, cohort: Path, labels: Path, capsys) -> pd.DataFrame:
    assert main(["cohort", str(path), "--cohort", str(cohort), "--labels", str(labels)]) == 0
    capsys.readouterr()
    return read_survival_labels(labels)


def test_duckdb_file_gives_the_folder_cohort(omop, tmp_path, capsys):
    import duckdb

    path = tmp_path / "cdm.duckdb"
    with duckdb.connect(str(path)) as con:
        for table in sorted(omop.glob("*.parquet")):
            con.execute(f"CREATE TABLE {table.stem} AS SELECT * FROM read_parquet('{table}')")
    assert main(["validate", str(path)]) == 0
    assert "condition_occurrence" in capsys.readouterr().out
    cohort = write_cohort(tmp_path)  # descendants through the file's concept_ancestor
    pd.testing.assert_frame_equal(
        _labels(path, cohort, tmp_path / "db.parquet", capsys),
        _labels(omop, cohort, tmp_path / "folder.parquet", capsys),
    )


def test_meds_folder_cohort_with_concepts_listed(omop, tmp_path, capsys):
    from ehrseq.cli.inputs import descendants_of
    from ehrseq.data.meds import write_meds
    from ehrseq.data.omop import load_omop

    data = load_omop(omop)
    root = write_meds(data.events, data.person, tmp_path / "meds")
    data.cdm.close()
    assert main(["validate", str(root)]) == 0
    assert "valid" in capsys.readouterr().out
    cohort = write_cohort(tmp_path)  # MEDS has no vocabulary: descendants are refused
    labels = tmp_path / "labels.parquet"
    assert main(["cohort", str(root), "--cohort", str(cohort), "--labels", str(labels)]) == 1
    assert "needs a vocabulary" in one_line_error(capsys)
    expand = descendants_of(omop)  # the concepts listed, as a MEDS user would
    outcome = f"concepts = {expand([HEART_FAILURE])}"
    cohort = write_cohort(tmp_path, index=expand(list(NSAIDS)), desc="false", outcome=outcome)
    meds = _labels(root, cohort, labels, capsys)
    folder = _labels(omop, write_cohort(tmp_path), tmp_path / "folder.parquet", capsys)
    # observation runs from the first to the last event (MEDS has no observation periods), so
    # fewer persons pass the washout; those who do have the same index date and outcome
    assert len(meds) > 50 and meds["event"].sum() > 0
    both = meds.merge(folder, on="subject_id", suffixes=("", "_omop"), validate="1:1")
    assert len(both) == len(meds)
    assert (both["prediction_time"] == both["prediction_time_omop"]).all()
    assert (both["event"] == both["event_omop"]).all()


# -- bad input ---------------------------------------------------------------------------------
def _without_person(omop: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "no_person"
    shutil.copytree(omop, folder)
    (folder / "person.parquet").unlink()
    return folder


@pytest.mark.parametrize(
    "case, match",
    [
        ("missing_folder", "does not exist"),
        ("missing_table", "person"),
        ("empty_cohort", "empty cohort"),
        ("outcome_never_observed", "never observed"),
        ("bad_toml", "not valid TOML"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(case, match, omop, tmp_path, capsys):
    path, cohort = omop, write_cohort(tmp_path)
    if case == "missing_folder":
        path = tmp_path / "nowhere"
    elif case == "missing_table":
        path = _without_person(omop, tmp_path)
    elif case == "empty_cohort":  # the ingredients alone: no exposure is coded with them
        cohort = write_cohort(tmp_path, desc="false")
    elif case == "outcome_never_observed":
        cohort = write_cohort(tmp_path, outcome="concepts = [999999999]")
    elif case == "bad_toml":
        cohort.write_text("name = [")
    labels = tmp_path / "labels.parquet"
    assert main(["cohort", str(path), "--cohort", str(cohort), "--labels", str(labels)]) == 1
    assert match in one_line_error(capsys)


def test_unwritable_out_is_one_line_and_exit_1(omop, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    cohort = write_cohort(tmp_path)
    out = blocker / "out"
    assert main(["run", str(omop), "--cohort", str(cohort), "--out", str(out)]) == 1
    assert "cannot write to output folder" in one_line_error(capsys)


# -- run ---------------------------------------------------------------------------------------
def test_run_writes_report_and_metrics_and_resumes_from_cache(omop, tmp_path, capsys):
    out, cohort = tmp_path / "out", write_cohort(tmp_path)
    argv = ["run", str(omop), "--cohort", str(cohort), "--out", str(out), "--profile", "smoke"]
    assert main(argv) == 0
    report = (out / "report.html").read_text()
    assert report.count("data:image/png;base64,") >= 2
    for heading in ("Metrics", "Cohort attrition", "Load report"):
        assert f"<h2>{heading}</h2>" in report
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["models"]) == {
        "BEHRT survival",
        "Cox, bag of codes",
        "L1 logistic",
        "Kaplan-Meier",
    }
    pairs = {row["comparison"] for row in metrics["paired_differences"]}
    assert pairs == {f"{a} - {b}" for a, b in COMPARISONS.values()}
    lasso = metrics["baselines"]["L1 logistic"]
    assert lasso["train_labelled"] + lasso["train_unlabelled"] > 0
    assert 0 < lasso["non_zero"] <= lasso["features"]
    assert "<h2>Baselines</h2>" in report and "L1 logistic regression" in report
    c = metrics["models"]["Cox, bag of codes"]["Harrell C"]
    assert c["lower"] <= c["estimate"] <= c["upper"]
    stages = lambda: json.loads((out / "stages.json").read_text())["status"]  # noqa: E731
    assert set(stages().values()) == {"ran"}

    assert main(argv) == 0  # nothing changed: every stage comes from the cache
    status = stages()
    assert all(status[s] == "cached" for s in status if s != "report"), status

    assert main([*argv, "--epochs", "1"]) == 0  # only fine-tuning and what follows rerun
    status = stages()
    assert [s for s, v in status.items() if v == "ran"] == ["finetune", "evaluate", "report"]

    # --init: the previous run's encoder starts this one (kept as it is without pretraining)
    init = out / "pretrain" / "encoder.pt"
    before = torch.load(init, weights_only=True)
    assert main([*argv, "--init", str(init), "--pretrain-epochs", "0"]) == 0
    status = stages()
    assert [s for s, v in status.items() if v == "ran"] == [
        "pretrain",
        "finetune",
        "evaluate",
        "report",
    ]
    after = torch.load(init, weights_only=True)
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)
    capsys.readouterr()

    # an encoder of other sizes does not fit: one line, exit 1
    from ehrseq.models import BehrtConfig, BehrtEncoder

    other = tmp_path / "other.pt"
    config = BehrtConfig(vocab_size=9, max_len=16, d_model=8, n_layers=1, n_heads=2, d_ff=16)
    torch.save(BehrtEncoder(config).state_dict(), other)
    assert main([*argv, "--init", str(other)]) == 1
    err = one_line_error(capsys)
    assert f"--init {other}" in err and "do not fit" in err
    assert main([*argv, "--init", str(tmp_path / "nothing.pt")]) == 1
    assert "no such checkpoint" in one_line_error(capsys)


def test_loss_figure_counts_whole_epochs():
    from ehrseq.cli.outputs import loss_figure

    history = pd.DataFrame({"epoch": [1, 2], "train_loss": [2.0, 1.5], "val_loss": [2.1, 1.8]})
    ax = loss_figure(history).axes[0]
    low, high = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if low <= t <= high]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks


# -- the GiBleed sample ------------------------------------------------------------------------
GIBLEED = local_sample("eunomia_gibleed")  # None when absent


@pytest.mark.shared_data
@pytest.mark.skipif(GIBLEED is None, reason="shared OMOP samples absent")
def test_gibleed_new_users_of_nsaids_to_gi_bleeding(tmp_path, capsys):
    cohort = tmp_path / "gibleed.toml"
    cohort.write_text(
        'name = "nsaid_gi_bleed"\nwashout_days = 365\nhorizon_years = 5\n'
        "[index]\nconcepts = [1118084, 1124300]\ninclude_descendants = true\n"
        "[outcome]\nconcepts = [192671]\ninclude_descendants = true\n"
    )
    labels = tmp_path / "labels.parquet"
    assert main(["cohort", str(GIBLEED), "--cohort", str(cohort), "--labels", str(labels)]) == 0
    assert "with an index event" in capsys.readouterr().out
    back = read_survival_labels(labels)
    assert len(back) > 1000 and back["event"].sum() > 50


# -- the steps, callable from a notebook ---------------------------------------------------------
def test_steps_compute_what_run_writes(omop, tmp_path):
    """Chapter 11 calls ehrseq.cli.steps directly: the same task, encoder, curves and metrics
    as the stages of ``ehrseq run`` with the same command line."""
    import numpy as np

    from ehrseq.cli import build_parser, steps
    from ehrseq.cli.cohort import CohortSpec, build_cohort
    from ehrseq.cli.inputs import descendants_of, read_input
    from ehrseq.cli.pipeline import resolve_config

    cohort, out = write_cohort(tmp_path), tmp_path / "out"
    argv = ["run", str(omop), "--cohort", str(cohort), "--out", str(out), "--profile", "smoke"]
    argv += ["--device", "cpu"]
    assert main(argv) == 0
    cfg = resolve_config(build_parser().parse_args(argv))
    spec = CohortSpec.from_toml(cohort)
    data = read_input(omop)
    found = build_cohort(
        spec, data.events, data.person, data.observation_period, descendants_of(omop)
    )
    task = steps.build_task(data, found.labels, cfg, spec.horizon_days)
    frame = steps.task_frame(task)
    written = pd.read_parquet(out / "task" / "frame.parquet")
    pd.testing.assert_frame_equal(frame.reset_index(drop=True), written.reset_index(drop=True))

    state, _ = steps.pretrain_encoder(task, cfg, device="cpu", root=tmp_path / "again")
    saved = torch.load(out / "pretrain" / "encoder.pt", weights_only=True)
    assert state.keys() == saved.keys()
    assert all(torch.equal(state[k], saved[k]) for k in saved)
    runs = steps.finetune_survival(task, cfg, state, device="cpu")
    np.testing.assert_allclose(runs.survs[0], np.load(out / "finetune" / "surv_test.npy"))
    fits = steps.baseline_curves(task, cfg)
    curves = fits.curves
    for name, file in (
        ("Cox, bag of codes", "cox"),
        ("L1 logistic", "lasso"),
        ("Kaplan-Meier", "km"),
    ):
        np.testing.assert_allclose(curves[name], np.load(out / "baselines" / f"{file}.npy"))
    lasso = json.loads((out / "baselines" / "lasso.json").read_text())
    assert lasso["C"] == fits.lasso.C and lasso["non_zero"] == len(fits.lasso.coef)

    protocol = steps.survival_protocol(frame, task.cuts, cfg)
    metrics, compare, _ = steps.evaluate_models(
        protocol, {"BEHRT survival": runs.survs[0], **curves}
    )
    pd.testing.assert_frame_equal(
        metrics, pd.read_csv(out / "evaluate" / "metrics.csv"), check_dtype=False, rtol=1e-9
    )
    pd.testing.assert_frame_equal(
        compare, pd.read_csv(out / "evaluate" / "compare.csv"), check_dtype=False, rtol=1e-9
    )
    with pytest.raises(ValueError, match="no curves for"):
        steps.evaluate_models(protocol, curves)  # BEHRT's curves missing


def test_a_run_stopped_half_way_resumes_where_it_stopped(omop, tmp_path, monkeypatch, capsys):
    """Ctrl-C in pretraining's second epoch, then in fine-tuning's: each re-run continues
    from the last finished epoch (the checkpoints kept in ``.partial/``) and the run ends
    with the weights and metrics of a run never stopped."""
    import ehrseq.train as training

    cohort = write_cohort(tmp_path)
    base = ["run", str(omop), "--cohort", str(cohort), "--profile", "smoke", "--n-boot", "5"]
    base += ["--pretrain-epochs", "2", "--epochs", "2"]
    whole, out = tmp_path / "whole", tmp_path / "out"
    assert main([*base, "--out", str(whole)]) == 0
    assert not (whole / ".partial").exists()
    real, seen = training._set_epoch, []

    def stop_at(n: int):  # Ctrl-C at the n-th start of a second epoch
        def patched(loader, epoch):
            if epoch == 1:
                seen.append(epoch)
                if len(seen) == n:
                    raise KeyboardInterrupt
            real(loader, epoch)

        return patched

    monkeypatch.setattr(training, "_set_epoch", stop_at(1))
    assert main([*base, "--out", str(out)]) == 130  # in pretraining
    assert len(list((out / ".partial").glob("pretrain-*/behrt-pretrained-*/last.pt"))) == 1
    seen.clear()
    monkeypatch.setattr(training, "_set_epoch", stop_at(2))  # pretraining resumes at
    assert main([*base, "--out", str(out)]) == 130  # its 2nd epoch; then fine-tuning's
    assert len(list((out / ".partial").glob("finetune-*/last.pt"))) == 1
    assert not list((out / ".partial").glob("pretrain-*"))  # finished: its folder is gone
    monkeypatch.setattr(training, "_set_epoch", real)
    assert main([*base, "--out", str(out)]) == 0
    status = json.loads((out / "stages.json").read_text())["status"]
    assert status["pretrain"] == "cached" and status["finetune"] == "ran"
    assert not (out / ".partial").exists()
    for name in ("pretrain/encoder.pt", "finetune/model.pt"):
        a, b = (torch.load(r / name, weights_only=True) for r in (whole, out))
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert list((out / "pretrain").glob("behrt-pretrained-*/model.pt"))  # kept, as before
    got, want = (json.loads((r / "metrics.json").read_text())["models"] for r in (out, whole))
    assert got == want

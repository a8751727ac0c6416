"""The ``ehrseq`` command: run the book's pipeline on your own OMOP or MEDS export.

Three subcommands, each a step of the one before it::

    ehrseq validate PATH                     # is the export usable? (the load report)
    ehrseq cohort PATH --cohort cohort.toml  # who is in the cohort? (attrition, labels)
    ehrseq run PATH --cohort cohort.toml --out results/   # train, evaluate, report

``PATH`` is an OMOP CDM folder (one CSV, CSV.gz or parquet file per table), a DuckDB file
(``.duckdb``), or a MEDS folder (``data/*.parquet``). The cohort file is described in
:mod:`ehrseq.cli.cohort`; ``run``'s stages and cache in :mod:`ehrseq.cli.pipeline`.

Bad input ends with one line on standard error, ``ehrseq: error: ...``, and exit code 1
(``--debug`` shows the traceback instead); a usage mistake exits with 2.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from ehrseq.cli.cohort import CliError
from ehrseq.config import set_env

__all__ = ["main", "build_parser", "CliError"]

_COHORT_HELP = """\
cohort.toml, for example (new users of two NSAIDs, outcome heart failure):

  name = "nsaid_hf"
  washout_days = 365           # observation required before the index date
  horizon_days = 1826          # follow-up after the index date
  exclude_prior_outcome = true # drop people with the outcome before index
  [index]
  concepts = [1118084, 1124300]
  include_descendants = true   # add descendants through concept_ancestor
  [outcome]
  atlas = "outcome.json"       # or a concept set exported from OHDSI ATLAS
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``ehrseq`` command (one sub-parser per subcommand)."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="ehrseq",
        description=textwrap.dedent(
            """\
            Run the book's survival pipeline on your own EHR export.

            Start with `ehrseq validate PATH` to see whether the export loads, then
            `ehrseq cohort PATH --cohort cohort.toml` to see who is in the cohort, then
            `ehrseq run PATH --cohort cohort.toml --out DIR` to train and evaluate a model
            (DIR/report.html, DIR/metrics.json). PATH is an OMOP CDM folder (CSV or
            parquet files, one per table), a DuckDB file, or a MEDS folder."""
        ),
        formatter_class=fmt,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add_path(p: argparse.ArgumentParser) -> None:
        p.add_argument("path", type=Path, help="OMOP folder, DuckDB file or MEDS folder")
        p.add_argument(
            "--memory-limit",
            default=None,
            metavar="SIZE",
            help=(
                "cap DuckDB's memory while reading an OMOP export, e.g. 4GB; beyond it "
                "DuckDB spills to a temporary folder (same as EHRSEQ_DUCKDB_MEMORY)"
            ),
        )

    p = sub.add_parser(
        "validate",
        help="check an export and print the load report",
        description=(
            "Read every table the pipeline uses, apply the validation rules and print what "
            "was kept, repaired, flagged or dropped per table. Lenient by default (exit 0 "
            "when the export is usable); --strict exits 1 on the first broken rule."
        ),
        formatter_class=fmt,
    )
    add_path(p)
    p.add_argument("--strict", action="store_true", help="exit 1 on any broken rule")
    p.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="RULE",
        help="a rule --strict tolerates, e.g. concept_zero (repeatable)",
    )

    def add_cohort(p: argparse.ArgumentParser) -> None:
        p.add_argument("--cohort", type=Path, required=True, help="cohort TOML file (see below)")
        p.add_argument(
            "--strict", action="store_true", help="refuse an export that breaks any rule"
        )

    p = sub.add_parser(
        "cohort",
        help="build the cohort: attrition table and survival labels",
        description=(
            "Select new users of the index concept set, apply washout and prior-outcome "
            "exclusion, label the first outcome within the horizon, print the attrition "
            "table and write the labels as MEDS label parquet (subject_id, prediction_time, "
            "boolean_value, plus event_time, censor_time, duration in days)."
        ),
        epilog=_COHORT_HELP,
        formatter_class=fmt,
    )
    add_path(p)
    add_cohort(p)
    p.add_argument(
        "--labels",
        type=Path,
        default=None,
        help="where to write the labels (default: <cohort name>_labels.parquet here)",
    )

    from ehrseq.cli.pipeline import PROFILES

    p = sub.add_parser(
        "run",
        help="validate, build the cohort, train, evaluate, write report.html",
        description=(
            "The whole pipeline: validate (lenient), build the cohort, tokenise histories "
            "before the index date, pretrain a BEHRT encoder (or load --init), fine-tune "
            "the survival model, fit Kaplan-Meier, Cox and L1 logistic (PatientLevelPrediction) "
            "baselines on a bag of codes, evaluate with bootstrap "
            "intervals and calibration, and write DIR/report.html and DIR/metrics.json. "
            "Every stage is cached in DIR and skipped on a re-run unless its inputs "
            "changed. Uses CUDA with bf16 when a GPU is present.\n\n"
            "Several GPUs (or CPU processes) on one machine: launch it with "
            "torchrun, e.g. `torchrun --standalone --nproc_per_node 4 -m ehrseq.cli "
            "run PATH --cohort cohort.toml --out DIR`. Rank 0 runs every stage and "
            "writes every file; the other ranks wait, then join pretraining and "
            "fine-tuning, each on its share of the batches (a step averages one batch "
            "per rank). A rank that fails makes the others exit 1 (at most "
            "--rank-timeout minutes later)."
        ),
        epilog=_COHORT_HELP,
        formatter_class=fmt,
    )
    add_path(p)
    add_cohort(p)
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    p.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="default",
        help="model and training size: smoke (seconds, a check) or default",
    )
    p.add_argument("--init", type=Path, default=None, help="encoder checkpoint to start from")
    p.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (profile's)")
    p.add_argument(
        "--pretrain-epochs", type=int, default=None, help="pretraining epochs; 0 skips it"
    )
    p.add_argument("--n-bins", type=int, default=None, help="time bins over the horizon")
    p.add_argument("--n-boot", type=int, default=None, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=7, help="split, initialisation and bootstrap")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA if any)")
    p.add_argument("--force", action="store_true", help="ignore the cache, rerun every stage")
    p.add_argument(
        "--rank-timeout",
        type=float,
        default=60.0,
        metavar="MIN",
        help="under torchrun: minutes a rank waits for the others before failing (60)",
    )
    return parser


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def _validate(args: argparse.Namespace) -> int:
    from ehrseq.cli.inputs import validate_input

    _, text = validate_input(args.path, mode="lenient")
    print(text)
    if not args.strict:
        return 0
    from ehrseq.data.omop import OmopValidationError

    try:
        validate_input(args.path, mode="strict", allow=args.allow)
    except (OmopValidationError, ValueError) as err:
        print(f"\nstrict: FAILED\n{err}")
        print(f"ehrseq: error: strict validation failed: {_first_line(err)}", file=sys.stderr)
        return 1
    print("\nstrict: passed")
    return 0


def _cohort(args: argparse.Namespace) -> int:
    from ehrseq.cli.pipeline import cohort_command

    return cohort_command(args)


def _run(args: argparse.Namespace) -> int:
    from ehrseq.cli.pipeline import run_command

    return run_command(args)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ehrseq``; returns the exit code (0 ok, 1 bad input, 2 bad usage)."""
    args = build_parser().parse_args(argv)
    command = {"validate": _validate, "cohort": _cohort, "run": _run}[args.command]
    if args.memory_limit:  # read by every DuckDB connection the library opens
        set_env("EHRSEQ_DUCKDB_MEMORY", args.memory_limit)
    try:
        return command(args)
    except KeyboardInterrupt:
        print("ehrseq: interrupted", file=sys.stderr)
        return 130
    except (CliError, ValueError, OSError, RuntimeError) as err:
        if args.debug:
            raise
        print(f"ehrseq: error: {_first_line(err)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())

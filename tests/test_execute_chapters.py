"""The parallel executor of `make book` sees every chapter, in book order, results last."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location(
        "execute_chapters", ROOT / "scripts/execute_chapters.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_chapter_is_in_the_toc_and_found():
    ex = _module()
    found = [p.name for p in ex.chapters()]
    on_disk = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]*_*.py"))
    assert sorted(found) == on_disk  # a chapter missing from _toc.yml would not be built
    assert found == sorted(found)  # book order is chapter order
    finals = [n for n in found if n.startswith(ex.FINAL_PREFIX)]
    assert finals and found[-len(finals) :] == finals


def test_reads_the_chapter_as_the_book_does():
    ex = _module()
    nb = ex.read(ROOT / "notebooks/01_synthetic_cohort.py")
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert sum(c.cell_type == "code" for c in nb.cells) > 5


def test_a_figure_cell_with_two_outputs_is_reported():
    import nbformat

    ex = _module()
    nb = nbformat.v4.new_notebook()
    image = nbformat.v4.new_output("display_data", data={"image/png": "", "text/plain": "<Figure>"})
    glued = nbformat.v4.new_output(
        "display_data", data={"application/papermill.record/text/plain": "1"}
    )
    value = nbformat.v4.new_output("execute_result", data={"text/plain": "0.5"}, execution_count=1)
    good = nbformat.v4.new_code_cell(
        "plt.show()", metadata={"mystnb": {"figure": {"name": "fig-a"}}}
    )
    good.outputs = [image, glued]
    bad = nbformat.v4.new_code_cell("x", metadata={"mystnb": {"figure": {"name": "fig-b"}}})
    bad.outputs = [image, value]
    nb.cells = [good, bad]
    problems = ex.figure_problems(nb)
    assert len(problems) == 1 and "fig-b" in problems[0]


def test_slowest_cells_read_nbclient_timing():
    import nbformat

    ex = _module()
    nb = nbformat.v4.new_notebook()

    def cell(source: str, start: str | None, end: str | None):
        c = nbformat.v4.new_code_cell(source)
        if start:
            c.metadata["execution"] = {"iopub.execute_input": start, "shell.execute_reply": end}
        return c

    nb.cells = [
        cell("# setup\nimport torch", "2026-01-01T00:00:00.000Z", "2026-01-01T00:00:02.000Z"),
        cell("fit(model)", "2026-01-01T00:00:02.000Z", "2026-01-01T00:01:32.500Z"),
        cell("plot()", None, None),
        nbformat.v4.new_markdown_cell("text"),
    ]
    slow = ex.slowest_cells(nb, n=5)
    assert [r["cell"] for r in slow] == [1, 0]
    assert slow[0] == {"cell": 1, "seconds": 90.5, "first_line": "fit(model)"}
    assert slow[1]["first_line"] == "import torch"


def test_runs_after_names_earlier_chapters(tmp_path):
    ex = _module()
    chapter = tmp_path / "05c_x.py"
    chapter.write_text(
        "# ---\n# jupyter:\n#   ehrseq:\n#     runs_after: [05b_y]\n#   kernelspec:\n"
        "#     display_name: Python 3\n#     language: python\n#     name: python3\n# ---\n\n"
        "# %%\nx = 1\n"
    )
    assert ex.runs_after(chapter) == ["05b_y"]
    order = [p.stem for p in ex.chapters()]
    for path in ex.chapters():  # every declared dependency is a chapter earlier in the book
        for stem in ex.runs_after(path):
            assert stem in order[: order.index(path.stem)], (path.name, stem)


def test_a_stored_chapter_matches_its_source_in_the_cache(tmp_path):
    """What execute_chapters stores must match the chapter as the book reads it, or the book
    build executes every chapter again (timing metadata in the cells broke that once)."""
    import copy

    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    ex = _module()
    source = ex.read(ROOT / "notebooks/01_synthetic_cohort.py")
    executed = copy.deepcopy(source)
    for cell in executed.cells:
        if cell.cell_type == "code":
            cell.metadata["execution"] = {
                "iopub.execute_input": "2026-01-01T00:00:00Z",
                "shell.execute_reply": "2026-01-01T00:00:01Z",
            }
            cell.outputs = []
    cache = get_cache(str(tmp_path / "cache"))
    ex.strip_timing(executed)
    cache.cache_notebook_bundle(
        CacheBundleIn(executed, "01.py"), check_validity=False, overwrite=True
    )
    cache.match_cache_notebook(source)  # raises KeyError when the hashes differ


def test_schedule_starts_the_longest_chain_first():
    mod = _module()
    paths = mod.chapters()
    order = [p.stem for p in mod.schedule(paths, {})]
    assert sorted(order) == sorted(p.stem for p in paths)
    for p in paths:  # a chapter starts after every chapter it waits for
        for before in mod.runs_after(p):
            assert order.index(before) < order.index(p.stem), (before, p.stem)
    # 05b is shorter than 04b alone, but four chapters wait for it: it starts first
    assert order.index("05b_pretraining_schedules") < order.index("04b_embedding_ablation")
    # a recorded time overrides the file's
    first = paths[0]
    assert mod.schedule(paths, {str(first): 1e6})[0] == first


def test_a_changed_chapter_takes_its_readers_along(tmp_path, monkeypatch):
    """A chapter that runs again takes along the cached chapters that load its artefacts
    (transitively) and the results pages, not the others; the page that reads the
    execution records loses its cache record, and every page taken along is touched."""
    import os

    ex = _module()
    names = ["05b_a", "05c_b", "05d_c", "06_d", "99_results"]
    paths = [tmp_path / f"{n}.py" for n in names]
    after = {"05c_b": ["05b_a"], "05d_c": ["05c_b"], "06_d": []}
    for p in paths:
        p.write_text("")
        os.utime(p, (0, 0))
    monkeypatch.setattr(ex, "runs_after", lambda p: after.get(p.stem, []))
    status = tmp_path / "status.md"
    status.write_text("")
    os.utime(status, (0, 0))
    monkeypatch.setattr(ex, "READS_CACHE", [status])

    class Record:
        def __init__(self, pk, uri):
            self.pk, self.uri = pk, uri

    class Cache:
        records = [Record(1, str(status)), Record(2, str(paths[3]))]

        def list_cache_records(self):
            return list(self.records)

        def remove_cache(self, pk):
            self.records = [r for r in self.records if r.pk != pk]

    cache = Cache()
    todo = ex.with_dependants([paths[0]], paths[1:], cache)
    assert [p.stem for p in todo] == ["05b_a", "05c_b", "05d_c", "99_results"]
    assert [r.pk for r in cache.records] == [2]  # status.md's record is gone, 06_d's kept
    assert paths[3].stat().st_mtime == 0  # untouched
    assert all(p.stat().st_mtime > 0 for p in (paths[1], paths[2], paths[4], status))
    assert ex.dependants([paths[3]], [paths[0], paths[1], paths[4]]) == [paths[4]]

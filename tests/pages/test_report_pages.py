"""Each page a person reads about a run, opened in a real browser: the evaluation report, the curation report,
the gate page and the search summary, from a real (tiny) training. Each page must load with no console or script
error, every picture decoded, and its key figures readable as text; a screenshot of each is kept under the test's
temporary folder. The checks themselves must catch a broken picture and a script error."""

from __future__ import annotations

import re

import pytest
from browser import look
from registered import register_as, run_copy, unique_model_name

from artlora.io import runs, storage
from artlora.tasks.search_report import TrialReport, summary_html

pytestmark = pytest.mark.usefixtures("tracking_server")


def opened(browser, html: str, tmp_path, name: str, ready: str = "h1"):
    """The page written to a file and opened from there, as from a download or the object store."""
    path = tmp_path / f"{name}.html"
    path.write_text(html)
    return look(browser, path.as_uri(), tmp_path / f"{name}.png", ready=ready)


def test_the_evaluation_report_reads_in_a_browser(browser, style_run, store, tmp_path):
    html = store.get_bytes(storage.join(style_run.adapter_uri.rsplit("/", 1)[0], "eval", "report.html")).decode()
    page = opened(browser, html, tmp_path, "evaluate")
    assert not page.problems, page.problems
    metrics = runs.run_metrics(style_run.run_id)
    # The charts (loss, learning rate, per style, sweep), the strips and the pictures: all decoded.
    assert page.images >= 10
    for shown in (
        "Training",
        "Painted while it trained",
        "Style confusion matrices",
        "LoRA strength sweep",
        f"{metrics['val_loss_lora']:.4f}",
        f"{metrics['val_loss_base']:.4f}",
    ):
        assert shown in page.text, shown
    assert page.screenshot.stat().st_size > 10_000


def test_the_curation_report_reads_in_a_browser(browser, style_run, store, tmp_path):
    dataset_uri = store.get_json(style_run.cache_uri)["dataset_uri"]
    pages = [uri for uri in store.list(storage.join(dataset_uri, "reports")) if uri.endswith(".html")]
    report = store.get_json(pages[0].removesuffix(".html") + ".json")
    page = opened(browser, store.get_bytes(pages[0]).decode(), tmp_path, "ingest")
    assert not page.problems, page.problems
    assert f"{report['inputs']} inputs" in page.text and "Accepted, by style" in page.text
    for style in report["by_style"]:
        assert style in page.text


def test_the_gate_page_reads_in_a_browser(browser, style_run, store, tmp_path):
    name = unique_model_name()
    # A copy of the style run: the gate page beside its adapter is this registration's, not another test's.
    adapter_uri, run_id = run_copy(store, style_run.adapter_uri, style_run.run_id)
    result = register_as(style_run.config.register, name, adapter_uri, run_id)
    page = opened(browser, store.get_bytes(result.gate_report_uri).decode(), tmp_path, "gate")
    assert not page.problems, page.problems
    assert f"{name} version 1 is champion" in page.text
    assert re.search(r"val_loss_lora \(lower is better\)\s+pass", page.text), page.text


def test_the_search_summary_reads_in_a_browser(browser, style_run, tmp_path):
    trials = [
        TrialReport(
            number=number,
            run_id=style_run.run_id,
            label=f"learning_rate={rate}",
            adapter_uri=style_run.adapter_uri,
            metrics=runs.run_metrics(style_run.run_id),
            curves={key: runs.metric_history(style_run.run_id, key) for key in ("loss", "val_loss")},
            grid_png=runs.run_artifact_bytes(style_run.run_id, "eval/grid.png"),
        )
        for number, rate in ((1, 0.01), (2, 0.001))
    ]
    page = opened(browser, summary_html(style_run.config, trials, trials[0]), tmp_path, "search")
    assert not page.problems, page.problems
    assert page.images == 4  # the training and validation loss charts, and the two trials' grids
    assert "Winner: trial 1 (learning_rate=0.01)" in page.text and "learning_rate=0.001" in page.text


@pytest.mark.parametrize(
    ("planted", "problem"),
    [
        ('<img alt="planted" src="data:image/png;base64,bm90IGEgcGljdHVyZQ==">', "picture not loaded: planted"),
        ('<img alt="gone" src="missing.png">', "picture not loaded: gone"),
        ("<script>throw new Error('planted failure')</script>", "script error: planted failure"),
        ("<script>console.error('planted complaint')</script>", "console error: planted complaint"),
    ],
)
def test_the_checks_catch_a_broken_picture_and_a_script_error(browser, tmp_path, planted, problem):
    page = opened(browser, f"<!doctype html><title>t</title><h1>page</h1>{planted}", tmp_path, "planted")
    assert problem in page.problems

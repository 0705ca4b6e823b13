"""MLflow's own UI after a small training, evaluation and registration (the session's `mlflow server`), opened in
a real browser: the run page with its metrics, the metric charts, the gallery painted while training with its step
slider, and the model version page showing the model card. The UI is MLflow's; what is checked is that artlora's
records show in it as a person would look for them."""

from __future__ import annotations

import re

import pytest
from browser import Looked, look
from registered import register_as, unique_model_name

from artlora import contracts
from artlora.io import runs

pytestmark = [pytest.mark.usefixtures("tracking_server"), pytest.mark.slow]

# The UI asks who is signed in; a server without the basic-auth app answers 404 (artlora's servers have it).
WHO_IS_SIGNED_IN = "/ajax-api/2.0/mlflow/users/current"


def problems(page: Looked) -> list[str]:
    """The page's problems, less the console line of the sign-in question (when it is the only failed request)."""
    expected = all(WHO_IS_SIGNED_IN in request for request in page.failed_requests)
    return [
        problem
        for problem in page.problems
        if not (expected and problem.startswith("console error: Failed to load resource") and "404" in problem)
    ]


@pytest.fixture(scope="module")
def registered(style_run, mlflow_server):
    import os
    from unittest import mock

    name = unique_model_name()
    with mock.patch.dict(os.environ, mlflow_server.environment()):  # its URL and the admin's login
        register_as(style_run.config.register, name, style_run.adapter_uri, style_run.run_id)
        experiment = runs.get_run(style_run.run_id).info.experiment_id
    admin = mlflow_server.admin
    return (
        name,
        f"{mlflow_server.url}/#/experiments/{experiment}/runs/{style_run.run_id}",
        (admin.username, admin.password),
    )


def test_the_run_page_shows_the_evaluation_metrics(browser, registered, style_run, tmp_path):
    _, run_page, login = registered
    page = look(browser, run_page, tmp_path / "run.png", ready="text=val_loss_lora", login=login)
    assert not problems(page), page.problems
    metrics = runs.run_metrics(style_run.run_id)
    for name in ("val_loss_lora", "val_loss_base", "style_hits_lora", "loss"):
        assert name in page.text and str(metrics[name])[:6] in page.text, name


def test_the_metric_charts_and_the_gallery_slider_show_the_training(browser, registered, style_run, tmp_path):
    from playwright.sync_api import expect

    _, run_page, login = registered
    page = browser.new_page(
        viewport={"width": 1600, "height": 1200}, http_credentials={"username": login[0], "password": login[1]}
    )
    try:
        page.goto(f"{run_page}/model-metrics")
        first = page.locator(f"img[src*='{contracts.gallery_key(0).replace('/', '~')}%2Bstep%2B']").first
        first.wait_for()
        assert "%2Bstep%2B0%2B" in first.get_attribute("src")  # the base model's painting first
        assert page.evaluate("image => image.naturalWidth", first.element_handle()) > 0
        slider = page.get_by_role("slider").first
        assert slider.get_attribute("aria-valuemax") == str(style_run.config.train.max_steps)
        slider.focus()
        page.keyboard.press("ArrowRight")  # the next painted step: the last, in this short run
        last = re.compile(rf"%2Bstep%2B{style_run.config.train.max_steps}%2B")
        expect(first).to_have_attribute("src", last)
        page.locator("input[placeholder*='Search metric']").fill("loss")
        expect(page.locator(".js-plotly-plot").first).to_be_visible()
        page.screenshot(path=str(tmp_path / "model-metrics.png"), full_page=True)
    finally:
        page.close()


def test_the_model_version_page_shows_the_model_card(browser, registered, mlflow_server, tmp_path):
    name, _, login = registered
    url = f"{mlflow_server.url}/#/models/{name}/versions/1"
    page = look(browser, url, tmp_path / "version.png", ready="text=Styles and trigger words", login=login)
    assert not problems(page), page.problems
    for shown in (f"{name} version 1:", "Gate: champion", "Lineage", "Per style", "Report and samples"):
        assert shown in page.text, shown
    assert "| style |" not in page.text, "the card's tables render as tables, not as Markdown source"


def test_the_run_artifacts_hold_the_report_and_the_gallery_images(browser, registered, tmp_path):
    _, run_page, login = registered
    page = look(browser, f"{run_page}/artifacts", tmp_path / "artifacts.png", ready="text=images", login=login)
    assert not problems(page), page.problems
    for folder in ("adapter", "eval", "images", "register"):
        assert folder in page.text.splitlines(), folder

"""The lab in a real browser: train from the page, pick the run, compare it.

A two-step fine-tune started on the Train tab runs to the end with its progress shown; its
checkpoint appears in the Models tab's picker; switching to it re-indexes the gallery and the
Metrics tab then shows the new pair's numbers.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from test_browser import ARGS, CHROMIUM, metrics_rows, open_app

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="Debian chromium not installed (apt-get install chromium)",
    ),
]


@pytest.fixture(scope="module")
def lab_app(explorer_inputs, tmp_path_factory):
    """A fresh explorer (its own runs folder) served with training on."""
    from emcl.training.jobs import TrainJobs, TrainSettings
    from ui import app
    from ui.flags import Serving

    cache = tmp_path_factory.mktemp("lab_cache")
    explorer = explorer_inputs["make"](cache)
    setup = explorer_inputs["setup"](cache)
    settings = TrainSettings(
        runs_dir=str(setup.runs_dir),
        data=str(explorer_inputs["world"]),
        cache_dir=str(cache / "frames"),
        device="cpu",
        batch_size=4,
        val_videos=2,
        grace_s=3.0,
        pretrained=str(explorer_inputs["checkpoints"]["demo-base"]),
    )
    jobs = TrainJobs(settings)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    serving = Serving(port=port, training_disk_bytes=settings.disk_budget_bytes)
    demo = app.queued(app.build_demo(explorer, serving, lab=app.Lab(jobs=jobs)))
    launch = app.launch_settings(setup, explorer, serving)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch)
    yield {"url": url, "explorer": explorer, "jobs": jobs}
    demo.close()


@pytest.fixture(scope="module")
def lab_page(lab_app):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = open_app(browser, lab_app["url"])
        yield page
        browser.close()


def choose(page, selector: str, text: str) -> None:
    """Pick the option containing ``text`` in the Gradio dropdown ``selector``."""
    page.click(f"{selector} input")
    page.locator(f"{selector} [role=option]", has_text=text).first.click()


def test_train_from_the_page_then_switch_to_the_run(lab_page, lab_app):
    page = lab_page
    before = metrics_rows(page)

    page.get_by_role("tab", name="Train").click()
    page.get_by_label("max steps").fill("2")
    page.get_by_label("epochs").fill("1")
    page.get_by_label("K", exact=True).fill("8")
    page.click("#emcl-train-start")
    # Progress is shown while the job runs, then the finished run with its checkpoint.
    page.wait_for_function(
        "() => /running|preparing|step/.test("
        "document.querySelector('#emcl-train-status').innerText)",
        timeout=60_000,
    )
    page.wait_for_function(
        "() => /finished/.test(document.querySelector('#emcl-train-status').innerText)",
        timeout=240_000,
    )
    runs = lab_app["jobs"].list_runs()
    assert len(runs) == 1 and runs[0].status == "finished"
    run_name = runs[0].run
    assert Path(runs[0].export).is_dir()
    assert run_name in page.inner_text("#emcl-train-runs")

    page.get_by_role("tab", name="Models").click()
    page.click("#emcl-models-refresh")  # the picker offers the finished run
    choose(page, "#emcl-emcl-side", run_name)
    page.click("#emcl-switch")
    page.wait_for_function(
        "(name) => document.querySelector('#emcl-current-pair').innerText.includes(name)",
        arg=run_name,
        timeout=120_000,
    )
    served = lab_app["explorer"].snapshot.emcl
    assert served is not None and served.encoder.config.emcl.k == 8  # the K set on the page

    # The Metrics tab now compares the chosen pair: the base rows stay, the EMCL rows change.
    deadline = time.monotonic() + 60
    after = metrics_rows(page)
    while after == before and time.monotonic() < deadline:
        time.sleep(1)
        page.get_by_role("tab", name="Search").click()
        after = metrics_rows(page)
    assert after[0] == before[0]  # Base
    assert after[2:] != before[2:]  # the jointly trained rows are the new run's

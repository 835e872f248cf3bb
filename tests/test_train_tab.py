"""The Train tab (ui/tabs/train.py): the form as a validated request, the starting-weight choices,
the views of the jobs, and the tab served with logins (the user who pressed Train reaches the job
runner; refusals come back as messages). The runner itself is tests/test_train_jobs.py's."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

import gradio as gr
import pytest
from gradio_client import Client

from emcl.training.job_progress import JobStatus, Progress
from emcl.training.jobs import MAKE_PRETRAINED, JobRefused, TrainRequest
from ui.tabs import train as train_tab

FORM = {
    "model": "EMCL-Net (with the EMCL layer)",
    "k": 8,
    "iters": 3,
    "lam": 0.5,
    "beta": 2.0,
    "momentum": 0.9,
    "init": "data",
    "seed": 1,
    "epochs": 2,
    "max_steps": 0,
}


@dataclass
class Settings:
    pretrained: str
    preset: str = "demo-v2"


@dataclass
class FakeJobs:
    """What the tab uses of TrainJobs, recording the calls (no training process)."""

    settings: Settings
    runs: list[JobStatus] = field(default_factory=list)
    calls: list[tuple] = field(default_factory=list)

    def list_runs(self) -> list[JobStatus]:
        return sorted(self.runs, key=lambda s: s.started, reverse=True)

    def current(self) -> JobStatus | None:
        return next((r for r in self.runs if r.running), None)

    def start(self, request: TrainRequest, user: str | None) -> JobStatus:
        self.calls.append(("start", request, user))
        if self.current() is not None:
            raise JobRefused(f"busy: {self.current().summary()}")
        status = JobStatus(f"run-{len(self.runs)}", "running", user, request.to_dict(), time.time())
        self.runs.append(status)
        return status

    def cancel(self, user: str | None) -> JobStatus:
        self.calls.append(("cancel", user))
        raise JobRefused("no training is running")

    def delete_run(self, name: str, user: str | None) -> None:
        self.calls.append(("delete", name, user))
        self.runs = [r for r in self.runs if r.run != name]


def status(run: str, state: str, started: float, **progress) -> JobStatus:
    request = TrainRequest(init_from="/c", k=4).to_dict()
    return JobStatus(run, state, "alice", request, started, progress=Progress(**progress))


# --------------------------------------------------------------------------------------------
# Pure parts
# --------------------------------------------------------------------------------------------
def test_the_form_becomes_a_validated_request():
    allowed = ["/ckpt/a", "/ckpt/b"]
    request = train_tab.request_from_form(**FORM, weights="/ckpt/b", allowed=allowed)
    assert request == TrainRequest(
        init_from="/ckpt/b",
        emcl=True,
        k=8,
        iters=3,
        lam=0.5,
        beta=2.0,
        init="data",
        seed=1,
        epochs=2,
    )
    assert request.max_steps is None  # 0: no cap
    capped = train_tab.request_from_form(
        **{**FORM, "max_steps": 2.0}, weights="/ckpt/a", allowed=allowed
    )
    assert capped.max_steps == 2
    base = {**FORM, "model": "base (no EMCL layer)"}
    assert not train_tab.request_from_form(**base, weights="/ckpt/a", allowed=allowed).emcl
    with pytest.raises(JobRefused, match="pick the starting weights from the list"):
        train_tab.request_from_form(**FORM, weights="/etc", allowed=allowed)
    with pytest.raises(ValueError, match="k must be an integer"):
        train_tab.request_from_form(**{**FORM, "k": 0}, weights="/ckpt/a", allowed=allowed)
    with pytest.raises(ValueError, match="max_steps must be a whole number"):
        train_tab.request_from_form(**{**FORM, "max_steps": -2}, weights="/ckpt/a", allowed=allowed)


def test_the_weight_choices_offer_the_backbone_first_and_say_when_it_is_missing(tmp_path):
    jobs = FakeJobs(Settings(pretrained=str(tmp_path / "pre")))
    choices = train_tab.weight_choices(jobs, lambda: [("demo-emcl", "/ck/emcl")])
    assert choices[0] == (
        "video-pretrained backbone (pre): not made yet",
        str(tmp_path / "pre"),
    )
    assert choices[1:] == [("demo-emcl", "/ck/emcl")]
    assert MAKE_PRETRAINED in train_tab.weights_note(jobs)
    (tmp_path / "pre").mkdir()
    assert not train_tab.weight_choices(jobs, list)[0][0].endswith("not made yet")
    assert train_tab.weights_note(jobs) == ""


def test_the_view_follows_the_running_job_and_offers_the_others_for_deletion(tmp_path):
    jobs = FakeJobs(Settings(pretrained=str(tmp_path)))
    line, bar, *_ = train_tab.view(jobs)
    assert line == "No training has run yet." and bar == ""
    jobs.runs = [
        status("old", "finished", 1.0, step=4, total_steps=4, fraction=1.0, val_r1=((4, 20.0),)),
        status(
            "new",
            "running",
            2.0,
            step=5,
            total_steps=20,
            fraction=0.25,
            eta_s=75.0,
            losses=((5, 2.0),),
        ),
    ]
    line, bar, loss, val, rows, pick = train_tab.view(jobs)
    assert line == "alice is training new: step 5/20 (25 %), ETA 1 min 15 s"
    assert "width:25.0%" in bar and "ETA 1 min 15 s" in bar
    assert list(loss.data[0].y) == [2.0] and len(val.data) == 0  # no validation yet: a note
    assert [row[:2] for row in rows] == [["new", "running"], ["old", "finished"]]
    assert rows[1][6:8] == ["4/4", "20.0"]
    assert pick["choices"] == ["old"] and pick["value"] == "old"
    jobs.runs = jobs.runs[:1]
    line, bar, *_ = train_tab.view(jobs)
    assert line.startswith("No training is running. Last: old: finished")
    assert "width:100.0%" in bar


# --------------------------------------------------------------------------------------------
# Served with logins
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served_tab(tmp_path_factory):
    pretrained = tmp_path_factory.mktemp("backbone")
    jobs = FakeJobs(Settings(pretrained=str(pretrained)))
    choices = lambda: [("demo-emcl", "/ck/emcl")]  # noqa: E731
    with gr.Blocks() as demo:
        tab = train_tab.build(jobs, choices)
        train_tab.wire(tab, jobs, choices)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    logins = [("alice", "alice-pw"), ("bob", "bob-pw")]
    _, url, _ = demo.queue().launch(
        server_name="127.0.0.1", server_port=port, auth=logins, prevent_thread_lock=True, quiet=True
    )
    yield {"url": url, "jobs": jobs, "pretrained": str(pretrained)}
    demo.close()


def test_train_start_takes_named_parameters_and_the_signed_in_user(served_tab):
    jobs: FakeJobs = served_tab["jobs"]
    alice = Client(served_tab["url"], auth=("alice", "alice-pw"), verbose=False)
    named = alice.view_api(print_info=False, return_format="dict")["named_endpoints"]
    params = [p["parameter_name"] for p in named["/train_start"]["parameters"]]
    assert params == [*FORM, "weights"]
    assert {"/train_cancel", "/train_delete"} <= set(named)
    result = alice.predict(**{**FORM, "max_steps": 2}, weights="/ck/emcl", api_name="/train_start")
    assert result[0].startswith("alice is training run-0: preparing the data")
    _, request, user = jobs.calls[-1]
    assert user == "alice" and request.k == 8 and request.max_steps == 2
    assert request.init_from == "/ck/emcl"

    bob = Client(served_tab["url"], auth=("bob", "bob-pw"), verbose=False)
    with pytest.raises(Exception, match="busy: alice is training run-0"):
        bob.predict(**FORM, weights=served_tab["pretrained"], api_name="/train_start")
    with pytest.raises(Exception, match="pick the starting weights from the list"):
        bob.predict(**FORM, weights="/etc/passwd", api_name="/train_start")
    with pytest.raises(Exception, match="no training is running"):
        bob.predict(api_name="/train_cancel")
    assert jobs.calls[-1] == ("cancel", "bob")
    bob.predict(name="run-0", api_name="/train_delete")
    assert jobs.calls[-1] == ("delete", "run-0", "bob") and jobs.runs == []

"""``--device`` values (cpu | cuda | auto) and a GPU out of memory as a clear, survivable error
(emcl/explorer/device.py, ui/flags.py)."""

from __future__ import annotations

import pytest
import torch

from emcl.explorer import search as search_service
from emcl.explorer.device import DEVICES, DeviceMemoryError, check_device, device_errors
from emcl.explorer.knobs import KnobError
from ui.flags import parse_args, setup_from


def _no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("value", ["tpu", "CUDA", "gpu", ""])
def test_device_outside_the_set_is_refused_with_the_set(value, capsys):
    with pytest.raises(SystemExit) as stop:
        parse_args(["--device", value])
    assert stop.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(ValueError, match="auto, cpu, cuda"):
        check_device(value)


def test_cuda_without_a_gpu_says_so_and_exits_non_zero(monkeypatch, capsys):
    _no_gpu(monkeypatch)
    with pytest.raises(SystemExit) as stop:
        parse_args(["--device", "cuda"])
    assert stop.value.code == 2
    assert "no CUDA GPU" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no CUDA GPU"):
        check_device("cuda", cuda_available=False)
    assert check_device("cuda", cuda_available=True) == "cuda"


def test_only_auto_falls_back_to_the_cpu(monkeypatch):
    from emcl.model.backbone import resolve_device

    _no_gpu(monkeypatch)
    assert DEVICES == ("auto", "cpu", "cuda")
    for value, expected in (("auto", "cpu"), ("cpu", "cpu")):
        setup = setup_from(parse_args(["--device", value]))
        assert setup.device == value and resolve_device(setup.device).type == expected
    assert parse_args([]).device == "auto"


def test_out_of_memory_becomes_a_knob_error():
    @device_errors
    def request(fail: bool) -> str:
        if fail:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return "served"

    with pytest.raises(DeviceMemoryError, match="GPU ran out of memory") as caught:
        request(True)
    assert isinstance(caught.value, KnobError)  # the page shows it like a refused knob
    assert isinstance(caught.value.__cause__, torch.cuda.OutOfMemoryError)
    assert request(False) == "served"
    with pytest.raises(ValueError, match="not memory"), device_errors:
        raise ValueError("not memory")  # other errors pass through unchanged


def test_the_explorer_answers_an_out_of_memory_and_keeps_serving(explorer, monkeypatch):
    knobs = explorer.defaults("inference")
    query = explorer.snapshot.captions[0]

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with monkeypatch.context() as patch:
        patch.setattr(search_service, "rank", out_of_memory)
        with pytest.raises(DeviceMemoryError, match="--device cpu"):
            explorer.rank(query, knobs)
    result = explorer.rank(query, knobs)  # the next request is served as usual
    assert result.base and result.emcl


@pytest.mark.parametrize("command", ["train", "evaluate", "extract", "study"])
def test_every_command_refuses_a_device_outside_the_set(command, capsys):
    from emcl.__main__ import main

    with pytest.raises(SystemExit) as stop:
        main([command, "--device", "gpu"])
    assert stop.value.code == 2
    assert "must be one of auto, cpu, cuda; got 'gpu'" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_command_asked_for_cuda_without_a_gpu_says_so(capsys):
    from emcl.__main__ import main

    with pytest.raises(SystemExit) as stop:
        main(["train", "--device", "cuda"])
    assert stop.value.code == 2
    assert "torch sees no CUDA GPU" in capsys.readouterr().err

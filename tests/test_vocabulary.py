"""One vocabulary: the protocol names and block sizes defined once (emcl/core/protocols.py),
"emclnet" read as an alias only where saved names are read, the EM defaults written once, and
each knob's meaning written once (emcl/explorer/knob_docs.py) with docs/knobs.md generated
from it."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from emcl.core.em import EMCL_NET_DEFAULTS, EMCLLayer, EMParams
from emcl.core.protocols import ALIASES, BLOCK, INFERENCE, PROTOCOLS, TRAINED, protocol_name
from emcl.explorer import knob_docs
from emcl.explorer.knob_docs import KNOB_DOCS, PROTOCOL_DOC, api_description, parameter_doc
from emcl.explorer.knobs import LIMITS, Knobs
from emcl.model.config import EMCLConfig
from emcl.retrieval.blocks import similarity_matrix

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("emcl", "ui", "bench", "app.py")
DEFINED_IN = "emcl/core/protocols.py"


def source_trees() -> dict[str, ast.AST]:
    files: list[Path] = []
    for name in SOURCES:
        path = REPO / name
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return {p.relative_to(REPO).as_posix(): ast.parse(p.read_text()) for p in files}


# ---- protocols -----------------------------------------------------------------------------
def test_protocol_names_and_the_alias_read_at_the_boundary():
    assert PROTOCOLS == (TRAINED, INFERENCE) == ("trained", "inference")
    assert set(BLOCK) == set(PROTOCOLS)
    assert BLOCK[TRAINED] == (32, 32) and BLOCK[INFERENCE] == (64, 64)
    assert protocol_name("trained") == protocol_name("emclnet") == TRAINED
    assert protocol_name("inference") == INFERENCE
    assert set(ALIASES.values()) <= set(PROTOCOLS)
    for bad in ("EMCLNET", "train", "", None, 3):
        with pytest.raises(ValueError, match="protocol must be one of trained, inference"):
            protocol_name(bad)


def test_the_engine_takes_only_the_protocol_names():
    text, frames = torch.randn(3, 8), torch.randn(2, 4, 8)
    trained = similarity_matrix(text, frames=frames, protocol=TRAINED)
    assert trained.shape == (3, 2)
    with pytest.raises(ValueError, match="protocol must be one of"):
        similarity_matrix(text, frames=frames, protocol="emclnet")  # an alias, not a name


def test_no_other_module_spells_the_alias_or_the_block_sizes():
    found = []
    for path, tree in source_trees().items():
        if path == DEFINED_IN:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in ALIASES:
                found.append(f"{path}:{node.lineno} {node.value!r}")
            if isinstance(node, ast.Tuple) and len(node.elts) == 2:
                values = [getattr(e, "value", None) for e in node.elts]
                if tuple(values) in BLOCK.values():
                    found.append(f"{path}:{node.lineno} {tuple(values)}")
    assert found == []


# ---- EM defaults ---------------------------------------------------------------------------
def test_em_defaults_are_emparams_everywhere():
    fields = ("k", "iters", "lam", "beta")
    default = EMParams()
    assert default == EMCL_NET_DEFAULTS
    layer, config, knobs = EMCLLayer(), EMCLConfig(), Knobs()
    for name in fields:
        value = getattr(default, name)
        assert getattr(layer, name) == getattr(config, name) == getattr(knobs, name) == value
    assert config.params() == knobs.em == dataclasses.replace(default, init="prior")


# ---- the knobs in words --------------------------------------------------------------------
def test_every_knob_has_one_doc_in_the_knobs_order_with_its_limits():
    assert tuple(KNOB_DOCS) == Knobs.names()
    for name, (lo, hi) in LIMITS.items():
        accepted = KNOB_DOCS[name].accepted
        assert accepted.startswith(f"{lo:g} – ") or accepted.startswith(f"{int(lo)} – "), name
        assert f"{hi:g}" in accepted or f"{int(hi)}" in accepted, name
    assert KNOB_DOCS["init"].accepted == "prior, reference, data"
    assert PROTOCOL_DOC.accepted == "trained, inference"
    lam = parameter_doc("log10_lam")
    assert lam.label == "log₁₀ λ" and lam.accepted == "-3 – 1"
    assert parameter_doc("query") is None


def test_endpoint_descriptions_carry_each_parameters_hint_and_range():
    text = api_description("Base and EMCL rankings.\n  (JSON)", ["query", "beta", "protocol"])
    assert text.startswith("Base and EMCL rankings. (JSON) Parameters: beta: ")
    assert f"beta: {KNOB_DOCS['beta'].hint} ({KNOB_DOCS['beta'].accepted})" in text
    assert f"protocol: {PROTOCOL_DOC.hint} (trained, inference)" in text
    assert "query" not in text.split("Parameters:")[1]


def test_the_page_guide_shows_every_meaning():
    from ui.text import knob_guide

    guide = knob_guide()
    for doc in (*KNOB_DOCS.values(), PROTOCOL_DOC):
        assert doc.meaning in guide


def test_docs_knobs_md_is_generated_from_the_source():
    generated = knob_docs.markdown()
    on_disk = (REPO / "docs" / "knobs.md").read_text()
    assert on_disk == generated, (
        "docs/knobs.md is stale: run `python -m emcl knobs > docs/knobs.md`"
    )
    for doc in KNOB_DOCS.values():
        assert f"| `{doc.name}` | {doc.label} | {doc.meaning} | {doc.accepted} |" in generated


def test_python_m_emcl_knobs_prints_the_page():
    done = subprocess.run(
        [sys.executable, "-m", "emcl", "knobs"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == knob_docs.markdown()

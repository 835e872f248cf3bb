"""What each knob means, written once: the page's labels and hints (ui/knob_panel.py), the
API's endpoint descriptions and docs/knobs.md all come from :data:`KNOB_DOCS`.

The accepted values are read from the validation constants (emcl/explorer/knobs.py), the block
sizes from emcl/core/protocols.py and the defaults from emcl/core/em.py, so the text cannot
drift from what the code does. ``python -m emcl knobs > docs/knobs.md`` writes the reference
page (emcl/cli/knobs.py; tests/test_vocabulary.py checks it is current).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from emcl.core.em import EMCL_NET_DEFAULTS, INFERENCE_MODULE_DEFAULTS, EMParams
from emcl.core.protocols import BLOCK, INFERENCE, PROTOCOLS, TRAINED
from emcl.explorer.knobs import INITS, LIMITS, MODES, NAMES
from emcl.retrieval.ranking import CONTEXTS, SEARCH_BLOCK

_TRAINED_BLOCK = "{} captions × {} videos".format(*BLOCK[TRAINED])
_INFERENCE_BLOCK = "{} × {}".format(*BLOCK[INFERENCE])
_INTEGERS = ("k", "iters", "seed", "shortlist", "top_k")
LOG_PREFIX = "log10_"  # a knob on a log₁₀ slider is sent as log10_<name> by the page


@dataclass(frozen=True)
class KnobDoc:
    """One knob (or request parameter) in words."""

    name: str  # as Knobs, the API and the page name it
    label: str  # the widget's label
    title: str  # a short noun phrase (figure axes)
    hint: str  # one line beside the widget
    meaning: str  # the full meaning, Markdown
    accepted: str  # what validation accepts

    @property
    def axis(self) -> str:
        """``label (title)``: a figure axis along this knob."""
        return f"{self.label} ({self.title})"


def _range(name: str) -> str:
    lo, hi = LIMITS[name]
    if name in _INTEGERS:
        return f"{int(lo)} – {int(hi)} (whole numbers)"
    return f"{lo:g} – {hi:g}"


def _choices(values: Sequence[str]) -> str:
    return ", ".join(values)


def _doc(name: str, label: str, title: str, hint: str, meaning: str, accepted: str) -> KnobDoc:
    return KnobDoc(name, label, title, hint, " ".join(meaning.split()), accepted)


_DOCS = (
    _doc("mode", "EMCL mode", "which checkpoint",
         "joint: EMCL checkpoint + EM · inference: base checkpoint + EM",
         """*joint*: the checkpoint trained jointly with the EMCL layer, plus EM at inference (the
         supplement's ‡). *inference*: the base checkpoint with EM at inference only (§); β = 0
         reproduces the base ranking exactly.""",
         _choices(MODES)),
    _doc("beta", "β", "reconstruction weight", "weight of the reconstruction added back (0: off)",
         """The output is `x + β · μzᵀ`: β weighs the low-rank reconstruction added back to the
         features; 0 turns EMCL off.""",
         _range("beta")),
    _doc("k", "K", "subspaces", "number of subspaces",
         """Number of subspaces (bases μ). The *effective K* shown beside it is the numerical rank
         of the responsibilities z (singular values above 1e-3 of the largest): the reference
         initialisation collapses to about 2 whatever K is on CLIP-like features; a trained
         prior keeps what training made of it (31 of 32 for the shipped EMCL model as trained;
         docs/method.md §1.5, §1.5b).""",
         _range("k")),
    _doc("iters", "iterations", "EM iterations", "E/M iterations (0: off)",
         """E/M iterations T (the reference's `stage_num`); 0 leaves the features unchanged.""",
         _range("iters")),
    _doc("lam", "λ", "E-step temperature", "E-step temperature λ, log scale",
         """The E-step softmax temperature (σ, the reference's `lamd`), `z = softmax(Xᵀμ / λ)`,
         on a log₁₀ slider. On unit-norm features λ = 1 is nearly uniform; distinct subspaces
         need a sharp λ (≤ 0.03) and the *data* init (docs/method.md §1.5b).""",
         _range("lam")),
    _doc("init", "init", "initial bases", "initial bases",
         """*prior*: the momentum prior saved with a jointly trained checkpoint (it exists for its
         trained K only). *reference*: the authors' seeded ±1 sign vector, reproduced exactly
         (it collapses to about 2 subspaces, docs/method.md §1.5). *data*: ours, K random feature
         columns of the input as the first bases (it breaks the symmetry).""",
         _choices(INITS)),
    _doc("seed", "seed", "initialisation seed", "seeds the reference and data initialisations",
         """Seeds the *reference* and *data* initialisations (the prior needs none).""",
         _range("seed")),
    _doc("context", "EM context", "rows per EM run", "which rows share one EM run",
         f"""Which rows share one EM run in search: *shortlist* (the query and its top-M base
         candidates; the rest keep their base order), *gallery* (the query and every video),
         *block* (the reference protocol: the query against blocks of {SEARCH_BLOCK} videos).
         Scores depend on the context: EMCL is transductive. In the *trained* protocol the
         shortlist and the block context split their videos into blocks of
         {BLOCK[TRAINED][1]}, and a caption of the gallery runs in its own caption block
         whatever the context (see `protocol`). The columns show the same kind of score, the
         cosine of query and video (after EMCL in the EMCL column); the inference module ranks
         by the dot product of its outputs, shown small beside the cosine.""",
         _choices(CONTEXTS)),
    _doc("shortlist", "shortlist size M", "shortlist size", "base candidates the EM re-ranks",
         """M, the base candidates the EM re-ranks in the *shortlist* context.""",
         _range("shortlist")),
    _doc("isoftmax", "inverted softmax", "inverted softmax",
         "QB-Norm with the captions as query bank",
         """The inverted softmax (QB-Norm / dual softmax, docs/method.md §3): each score times a
         softmax over the query axis at temperature τ; search uses the gallery's captions as the
         query bank (transductive).""",
         "true, false"),
    _doc("isoftmax_temp", "τ", "inverted-softmax temperature",
         "inverted-softmax temperature τ, log scale",
         """The inverted softmax's temperature τ (the paper's 0.01), on a log₁₀ slider.""",
         _range("isoftmax_temp")),
    _doc("top_k", "top-k", "results per column", "results per column",
         """Results shown per column, clamped to the gallery; the ground truth's rank is shown
         even outside them.""",
         _range("top_k")),
    _doc("protocol", "protocol", "similarity protocol",
         "how search scores: as trained, or the inference module",
         f"""*{TRAINED}*, as trained: the checkpoints' own protocol (EMCL-Net): text-conditioned
         pooling of the model's own frame features, one EM run per block of {_TRAINED_BLOCK},
         cosines after EMCL. A query that is one of the gallery's captions is scored in its
         caption block against every video block, so its column is that caption's row of the
         Metrics tab's as-trained table; free text runs the EM on its shortlist split into
         blocks of {BLOCK[TRAINED][1]} videos (the *block* context: every video, *gallery*:
         one run). *{INFERENCE}*: the released inference module, mean-pooled unit-norm videos,
         the EM context as chosen above. Search takes the mode's default when a request names
         none: {TRAINED} in *joint* mode, {INFERENCE} in *inference* mode. The metrics and
         sweeps take `protocol` too: the live table is always {TRAINED}, the inference
         module's rows ({_INFERENCE_BLOCK} blocks, or the *gallery* context's one run) one
         click away. docs/method.md §2.""",
         _choices(PROTOCOLS)),
)  # fmt: skip
# In the knobs' own order; a knob without a doc fails here, at import.
KNOB_DOCS: dict[str, KnobDoc] = {name: {d.name: d for d in _DOCS}[name] for name in NAMES}

PROTOCOL_DOC = KNOB_DOCS["protocol"]  # the metrics' and sweeps' parameter of the same name


def parameter_doc(name: str) -> KnobDoc | None:
    """The doc of a request parameter: a knob, or a knob on a log₁₀ slider
    (``log10_lam``: the knob's meaning, its range in log₁₀); ``None`` for anything else."""
    knob = name.removeprefix(LOG_PREFIX)
    if knob != name and knob in KNOB_DOCS:
        doc = KNOB_DOCS[knob]
        lo, hi = (math.log10(v) for v in LIMITS[knob])
        return KnobDoc(
            name, f"log₁₀ {doc.label}", doc.title, doc.hint, doc.meaning, f"{lo:g} – {hi:g}"
        )
    return KNOB_DOCS.get(name)


def api_description(summary: str, names: Sequence[str]) -> str:
    """An endpoint's description: ``summary``, then each documented parameter's hint and
    accepted values."""
    docs = [doc for doc in map(parameter_doc, names) if doc is not None]
    return f"{' '.join(summary.split())} Parameters: ".lstrip() + "; ".join(
        f"{doc.name}: {doc.hint} ({doc.accepted})" for doc in docs
    )


def guide() -> str:
    """The page's "What the knobs mean": one bullet per knob."""
    docs = KNOB_DOCS.values()
    return "\n".join(f"- **{doc.label}** (`{doc.name}`) — {doc.meaning}" for doc in docs)


def _setting(params: EMParams) -> str:
    return f"K {params.k}, {params.iters} iterations, λ {params.lam:g}, β {params.beta:g}"


def markdown() -> str:
    """docs/knobs.md: the knobs, what they mean, what is accepted, the paper defaults."""
    rows = [
        f"| `{doc.name}` | {doc.label} | {doc.meaning} | {doc.accepted} |"
        for doc in KNOB_DOCS.values()
    ]
    lines = [
        "# The knobs",
        "",
        "<!-- Generated by `python -m emcl knobs > docs/knobs.md` from",
        "emcl/explorer/knob_docs.py; tests/test_vocabulary.py fails when this file is stale. -->",
        "",
        "One validated `Knobs` object (emcl/explorer/knobs.py) carries these from the page or the",
        "API to the engine. The page, the API (`/rank`, `/metrics`, `/search`, `/sweep`, ...)",
        "and this table take them by the names below; `/rank` takes `protocol` with its mode's",
        "default when it is left out, and `/metrics` with `trained`. Out-of-range values are",
        "refused with a message naming the field (docs/reliability.md §5).",
        "",
        "| name | on the page | meaning | accepted |",
        "|---|---|---|---|",
        *rows,
        "",
        "**Reset to paper defaults** sets *joint* to the EMCL checkpoint's training settings "
        f"and its trained prior (EMCL-Net's: {_setting(EMCL_NET_DEFAULTS)}) and *inference* to "
        f"the inference module's ({_setting(INFERENCE_MODULE_DEFAULTS)}, "
        f"{INFERENCE_MODULE_DEFAULTS.init} init, seed {INFERENCE_MODULE_DEFAULTS.seed}; "
        "docs/method.md §2.3).",
    ]
    return "\n".join(lines) + "\n"


__all__ = [
    "KNOB_DOCS",
    "PROTOCOL_DOC",
    "KnobDoc",
    "api_description",
    "guide",
    "markdown",
    "parameter_doc",
]

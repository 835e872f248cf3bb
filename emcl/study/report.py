"""``checkpoints/REPORT.md`` from ``study.json``: its numbers only, nothing computed twice."""

from __future__ import annotations

from typing import Any

from emcl.study.errors import ATTRIBUTES
from emcl.study.run import COMPARED, ROWS

LABELS = {
    "base": "† base",
    "base+emcl": "§ base + EMCL at inference",
    "emcl": "‡ EMCL trained jointly",
    "base(l2)": "base, L2-normalised mean-pooled (inference-module protocol)",
    "base+emcl(l2)": "base + EMCL on L2-normalised features (inference module)",
}


def _cell(summary: dict, metric: str) -> str:
    mean, std = summary[metric]["mean"], summary[metric]["std"]
    digits = 2 if metric == "MnR" else 1
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "n/a"
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def _errors_section(errors: dict[str, Any]) -> list[str]:
    """Where the top-1 clips come from and what they get wrong (emcl/study/errors.py)."""
    if not errors:
        return []
    lines = ["", "## What the top-1 gets wrong (t2v, test split, mean over seeds)", "",
             "Where the top-1 clip of each test caption comes from, and for the clips the "
             "caption does not describe, how many of its stated events per caption the "
             "clip gets wrong in each attribute (its closest event compared; "
             "emcl/study/errors.py).", "",
             "| model | own clip | another clip it describes | a clip it does not describe "
             "| " + " | ".join(f"wrong {a}" for a in ATTRIBUTES) + " |",
             "|---|---|---|---|" + "---|" * len(ATTRIBUTES)]  # fmt: skip
    for name, e in errors.items():
        wrong = " | ".join(f"{e['wrong_per_miss'][a]:.2f}" for a in ATTRIBUTES)
        lines.append(f"| {LABELS.get(name, name)} | {e['own_clip']:.1f} % | "
                     f"{e['another_described_clip']:.1f} % | {e['undescribed_clip']:.1f} % | "
                     f"{wrong} |")  # fmt: skip
    return lines


def _times_section(study: dict[str, Any]) -> list[str]:
    """What each part of the study took, and where it ran."""
    sec = study["seconds"]
    device = study["device"]
    finetunes = sec["finetune"]
    return [
        "",
        "## Times",
        "",
        f"Device: fine-tunes on `{device['finetune']}`, evaluation on "
        f"`{', '.join(device['evaluation'])}`; {study.get('jobs', 1)} fine-tune(s) at a time.",
        "",
        f"- pretraining, the backbone's own run: {_seconds(sec['pretrain'])}",
        f"- world build (this run; 0 if it existed): {_seconds(sec['world_build_this_run'])}",
        "- fine-tunes (each run's own wall clock): "
        + ", ".join(f"{k} {_seconds(v)}" for k, v in finetunes.items()),
        f"- all fine-tunes, wall clock of this run: {_seconds(sec['finetune_wall_this_run'])}",
        "- evaluation per seed: "
        + ", ".join(f"{k} {_seconds(v)}" for k, v in sec["evaluate"].items()),
        f"- the whole study command: {_seconds(sec['total_this_run'])}",
        "",
    ]


def _ablation_section(ablation: dict[str, Any], study: dict[str, Any]) -> list[str]:
    """What each step of the recipe bought (``python -m bench.pretrain_ablation``'s rows, each a
    checkpoint scored as the † row on the same test split), closed by this study's base."""
    if not ablation or not ablation.get("rows"):
        return []
    lines = ["", "## What each step of the recipe bought (t2v, test split)", "",
             "Each row is one checkpoint scored as the † row above, on the same 1,000 test clips "
             f"(`python -m bench.pretrain_ablation`, on `{ablation.get('device', 'n/a')}`); the "
             "last row is this study's base. Training time: that checkpoint's own run, on the "
             "machine that made it.", "",
             "| model | t2v R@1 | R@5 | R@10 | MnR | v2t R@1 | top-1 on a clip it does not "
             "describe | wrong motion / shape per miss | training time |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for label, row in ablation["rows"].items():
        t2v, v2t = row["t2v"], row["v2t"]
        lines.append(f"| {label} | {t2v['R1']:.1f} | {t2v['R5']:.1f} | {t2v['R10']:.1f} | "
                     f"{t2v['MnR']:.2f} | {v2t['R1']:.1f} | {_miss_cells(row['errors'])} | "
                     f"{_seconds(row.get('train_wall_seconds'))} |")  # fmt: skip
    base = study["summary"]["base"]
    lines.append(f"| this study's † base, mean ± std of {len(study['seeds'])} seeds | "
                 f"{_cell(base['t2v'], 'R1')} | {_cell(base['t2v'], 'R5')} | "
                 f"{_cell(base['t2v'], 'R10')} | {_cell(base['t2v'], 'MnR')} | "
                 f"{_cell(base['v2t'], 'R1')} | "
                 f"{_miss_cells((study.get('top1_errors') or {}).get('base'))} | "
                 "see Times |")  # fmt: skip
    return lines


def _miss_cells(errors: dict[str, Any] | None) -> str:
    """The ablation table's two error cells: the share of undescribed top-1 clips, and the
    wrong motions / shapes per such miss (emcl/study/errors.py)."""
    if not errors:
        return "n/a | n/a"
    wrong = errors["wrong_per_miss"]
    return (f"{errors['undescribed_clip']:.1f} % | "
            f"{wrong['motion']:.2f} / {wrong['shape']:.2f}")  # fmt: skip


def markdown(study: dict[str, Any]) -> str:
    """The report: setup, the rows with mean ± std and p-values, Table 2, the times."""
    seeds = study["seeds"]
    n = len(seeds)
    world, train = study["world"], study["train"]
    ceiling = study["ceiling"]["t2v_R1"]
    base_r1 = study["summary"]["base"]["t2v"]["R1"]["mean"]
    lines = [
        f"# Demo checkpoints: EMCL on the demo world v2, {n} seeds",
        "",
        "The app's checkpoints are this study's seed-0 pair: `demo-base/` (†) and `demo-emcl/` "
        "(‡), stored in fp16, each with its run's log beside the weights. The video-pretrained "
        "backbone they start from is shipped in fp16 as `demo-pretrain-video/` (the study read "
        "its fp32 original); `python -m emcl train --preset demo-pretrain --out "
        "runs/demo-pretrain`, then `--preset demo-pretrain-video --out runs/demo-pretrain-video`, "
        "make it.",
        "",
        f"Generated by `python -m emcl study` from `study.json`; seeds {seeds}. World v2 "
        f"(emcl/data/world/v2.py), seed {world['seed']}: {world['n_train']} training clips "
        f"(10 % of them the val split) and {world['n_test']} test clips with one caption each. "
        f"Ambiguity ceiling (the best expected t2v R@1 any model can reach, given captions that "
        f"match several test clips by construction): **{ceiling} %**; the base reaches "
        f"{base_r1:.1f} % ({100 * base_r1 / ceiling:.0f} % of it).",
        "",
        f"Per seed, a base and an EMCL fine-tune (preset `{train['preset']}`) start from the same "
        f"pretrained backbone (`{study['pretrained']}`), with the same new-module weights and "
        f"the same batches; both are taken after a fixed {train['steps']} steps (batch "
        f"{train['batch_size']}, lr {train['lr_new']:g} new modules / "
        f"{train['lr_backbone']:g} backbone). The knobs are the paper's defaults, fixed before "
        "the run; nothing was tuned on the test split.",
        "",
        f"## Rows (test split; mean ± std over {n} seeds; p: two-sided paired t-test)",
        "",
    ]
    for d, title in (("t2v", "text → video"), ("v2t", "video → text")):
        lines += [f"### {title}", "",
                  "| row | R@1 | R@5 | R@10 | MdR | MnR | p (R@1) | p (R@5) | p (MnR) | vs |",
                  "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for name in ROWS:
            s = study["summary"][name][d]
            cells = [_cell(s, m) for m in ("R1", "R5", "R10", "MdR", "MnR")]
            if name in COMPARED:
                p = study["p_values"][name][d]
                tests = [_p(p["R1"]), _p(p["R5"]), _p(p["MnR"]), COMPARED[name]]
            else:
                tests = ["", "", "", ""]
            lines.append(f"| {LABELS[name]} | " + " | ".join(cells + tests) + " |")
        lines.append("")
    lines += ["Per-seed R@1 (t2v):", "", "| row | " + " | ".join(f"s{s}" for s in seeds) + " |",
              "|---|" + "---|" * n]  # fmt: skip
    for name in ROWS:
        values = study["rows"][name]["t2v"]["R1"]
        lines.append(f"| {name} | " + " | ".join(f"{v:.1f}" for v in values) + " |")
    t2 = study["table2"]
    lines += ["", "## Table 2 of the supplement: beta with the inverted softmax (R@1, mean over "
              "seeds)", "", "| beta | ‡ t2v | ‡ v2t | § t2v | § v2t |",
              "|---|---|---|---|---|"]  # fmt: skip
    columns = ("t2v_R1", "v2t_R1", "base+emcl_t2v_R1", "base+emcl_v2t_R1")
    for i, beta in enumerate(t2["beta"]):
        lines.append(f"| {beta:g} | " + " | ".join(f"{t2[c][i]:.1f}" for c in columns) + " |")
    lines += _errors_section(study.get("top1_errors") or {})
    lines += _ablation_section(study.get("ablation") or {}, study)
    lines += _times_section(study)
    if study.get("note"):
        lines += ["## Notes", "", study["note"], ""]
    return "\n".join(lines)


__all__ = ["markdown"]

"""Golden digests of both demo worlds: every clip spec, the full annotation files, a small
build's files and rendered frames, and the pretraining corpus, against
tests/fixtures/world_golden.json.

The shipped checkpoints were trained on these worlds, so any change to a spec, a caption, a
pixel or a file byte shows up here. Regenerate the fixture only for an intended change of a
world: ``python tests/test_world_golden.py --write``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from emcl.data.world import build_world, v1, v2
from emcl.data.world.pretrain import pretrain_pairs
from emcl.video.writing import write_video

FIXTURE = Path(__file__).parent / "fixtures" / "world_golden.json"
FULL = {1: (2000, 1000), 2: (3000, 1000)}  # paths.DEMO_WORLDS, seed 0
SMALL = (6, 4)  # the small build: clips per split
PRETRAIN_PAIRS = 50
MODULES = {1: v1, 2: v2}


def _sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def _canonical(obj: object) -> str:
    """Sorted-key compact JSON; dataclasses become dicts and tuples lists."""
    if isinstance(obj, list) and obj and dataclasses.is_dataclass(obj[0]):
        obj = [dataclasses.asdict(x) for x in obj]
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _file_digests(files: dict[str, object]) -> dict[str, str]:
    return {n: _sha(c if isinstance(c, str) else _canonical(c)) for n, c in files.items()}


def spec_digests() -> dict[str, object]:
    """Every clip spec of both default worlds, their annotation files and v2's ceiling."""
    out: dict[str, object] = {}
    for version, (n_train, n_test) in FULL.items():
        module = MODULES[version]
        specs = module.make_specs(n_train, n_test, 0)
        out[f"v{version}/specs"] = _sha(_canonical(specs))
        out[f"v{version}/annotations"] = _file_digests(module.annotations(specs, 0))
        if version == 2:
            out["v2/ceiling"] = repr(module.test_ceiling(specs, 0))
    return out


def _frames(version: int, spec) -> bytes:
    """Every frame of a clip as rendered, ``[num_frames, SIZE, SIZE, 3]`` uint8 bytes."""
    frames = [MODULES[version].render_frame(spec, i) for i in range(spec.num_frames)]
    return np.stack(frames).tobytes()


def build_digests(root: Path) -> dict[str, object]:
    """A small build of each version: its returned parameters, its files (the videos by the
    frames they encode, machine-independent) and the videos' bytes."""
    out: dict[str, object] = {}
    for version in FULL:
        world = root / f"v{version}"
        meta = build_world(world, *SMALL, 0, workers=1, version=version)
        meta.pop("seconds")
        files = sorted(p for p in world.rglob("*") if p.is_file())
        out[f"v{version}/build"] = {
            "meta": _sha(_canonical(meta)),
            "files": {str(p.relative_to(world)): _sha(p.read_bytes()) for p in files},
            "frames": {
                s.video_id: _sha(_frames(version, s))
                for s in MODULES[version].make_specs(*SMALL, 0)
            },
        }
    return out


def pretrain_digests() -> dict[str, str]:
    frames, phrases = pretrain_pairs(0, PRETRAIN_PAIRS, workers=1)
    return {"frames": _sha(frames.tobytes()), "phrases": _sha(_canonical(phrases))}


def encoder() -> str:
    """What the mp4 bytes depend on beyond the frames: the bundled FFmpeg/x264 of PyAV."""
    import av

    return f"av {av.__version__} {sorted(av.library_versions.items())}"


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("golden")
    return root, build_digests(root)


def test_every_spec_and_annotation_file_of_both_default_worlds(golden):
    assert spec_digests() == golden["specs"]


def test_a_small_build_writes_the_same_files_and_frames(golden, built):
    _, digests = built
    for version in FULL:
        got, want = digests[f"v{version}/build"], golden["build"][f"v{version}/build"]
        assert got["meta"] == want["meta"]
        assert got["frames"] == want["frames"]
        assert sorted(got["files"]) == sorted(want["files"])
        for name, digest in want["files"].items():
            if not name.endswith(".mp4"):
                assert got["files"][name] == digest, name


def test_each_video_encodes_exactly_its_rendered_frames(built, tmp_path):
    """The mp4 bytes are the encoder's output for the golden frames at the world's settings
    (machine-local: x264 output depends on its build)."""
    root, _ = built
    for version, module in MODULES.items():
        for spec in module.make_specs(*SMALL, 0)[:3]:
            frames = np.frombuffer(_frames(version, spec), np.uint8).reshape(-1, 128, 128, 3)
            local = tmp_path / f"v{version}_{spec.video_id}.mp4"
            write_video(local, iter(frames), 12, crf=20)
            built_file = root / f"v{version}" / "videos" / f"{spec.video_id}.mp4"
            assert built_file.read_bytes() == local.read_bytes(), (version, spec.video_id)


def test_video_bytes_match_where_the_encoder_is_the_recorded_one(golden, built):
    if golden["encoder"] != encoder():
        pytest.skip(f"mp4 bytes recorded with {golden['encoder']}")
    _, digests = built
    for version in FULL:
        got, want = digests[f"v{version}/build"]["files"], golden["build"][f"v{version}/build"]
        assert got == want["files"]


def test_the_pretraining_corpus(golden):
    assert pretrain_digests() == golden["pretrain"]


def main() -> None:
    import tempfile

    if sys.argv[1:] != ["--write"]:
        raise SystemExit("usage: python tests/test_world_golden.py --write")
    with tempfile.TemporaryDirectory() as tmp:
        fixture = {
            "encoder": encoder(),
            "specs": spec_digests(),
            "build": build_digests(Path(tmp)),
            "pretrain": pretrain_digests(),
        }
    FIXTURE.write_text(json.dumps(fixture, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()

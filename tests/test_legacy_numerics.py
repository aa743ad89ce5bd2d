"""Legacy torch.save weights load only through torch.load(weights_only=True); non-finite losses skip the step and
abort after max_bad_steps in a row (issue 9)."""

import os
import shutil

import pytest
import torch
from safetensors.torch import load_file

from guidekit.checkpoints import load_model
from guidekit.cli import main
from guidekit.data import load_dataset
from guidekit.diffusion.schedule import NoiseSchedule
from guidekit.errors import GuidekitError
from guidekit.models.unet import UNetConfig
from guidekit.training.trainer import TrainConfig, Trainer
from guidekit.zoo import resolve


class Payload:
    """Unpickling this would create the marker file: the code a malicious checkpoint smuggles in."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def legacy_copy(tmp_path, weights) -> str:
    folder = tmp_path / "legacy"
    folder.mkdir()
    shutil.copy(resolve("fmnist-cfg") / "config.json", folder / "config.json")
    torch.save(weights, folder / "model.pt")
    return str(folder)


def test_legacy_pt_folder_loads_like_the_safetensors_folder(tmp_path):
    weights = load_file(resolve("fmnist-cfg") / "model.safetensors")
    model = load_model(legacy_copy(tmp_path, {"state_dict": weights}))
    ref = load_model("fmnist-cfg")
    for k, v in ref.net.state_dict().items():
        assert torch.equal(model.net.state_dict()[k], v), k


def test_malicious_legacy_pickle_is_refused_and_never_runs(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    weights = dict(load_file(resolve("fmnist-cfg") / "model.safetensors"), evil=Payload(marker))
    folder = legacy_copy(tmp_path, weights)
    with pytest.raises(GuidekitError, match="weights_only=True"):
        load_model(folder)
    assert main(["sample", folder, "--n", "1", "--steps", "2", "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "refused" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "o").exists()
    torch.load(tmp_path / "legacy" / "model.pt", weights_only=False)  # the payload is real: a plain load runs it
    assert marker.exists()


def tiny_trainer(tmp_path, steps=6, max_bad_steps=3):
    data = load_dataset("samples")
    cfg = TrainConfig(steps=steps, batch_size=4, warmup=0, save_every=100, log_every=1, max_bad_steps=max_bad_steps)
    return Trainer(UNetConfig.preset("tiny", num_classes=data.num_classes), data, NoiseSchedule.linear(1000), cfg,
                   tmp_path / "run")


def poison(trainer, bad_steps):
    real = trainer.loss_on

    def loss_on(step):
        loss = real(step)
        return loss * float("nan") if step in bad_steps else loss
    trainer.loss_on = loss_on


def test_non_finite_loss_skips_the_step_without_touching_the_weights(tmp_path):
    trainer = tiny_trainer(tmp_path)
    poison(trainer, {2, 3})
    seen = {}
    step_fn = trainer.opt.step

    def spy():
        seen[trainer.step] = True
        step_fn()
    trainer.opt.step = spy
    trainer.fit(progress=False)
    assert sorted(seen) == [0, 1, 4, 5]  # the optimizer never ran on the NaN steps
    assert all(torch.isfinite(p).all() for p in trainer.raw.parameters())


def test_too_many_non_finite_losses_in_a_row_abort_with_a_message(tmp_path):
    trainer = tiny_trainer(tmp_path, steps=10, max_bad_steps=3)
    poison(trainer, {4, 5, 6, 7})
    with pytest.raises(GuidekitError, match="not finite for 3 steps in a row at step 6"):
        trainer.fit(progress=False)


def test_loading_a_run_folder_skips_a_checkpoint_a_kill_cut_short(tmp_path):
    from guidekit.checkpoints import resolve_model_dir

    out = tmp_path / "run"
    assert main(["train", "--dataset", "samples", "--preset", "tiny", "--steps", "2", "--batch-size", "4",
                 "--save-every", "1", "--keep", "2", "--no-progress", "--out", str(out)]) == 0
    shutil.rmtree(out / "model")  # only checkpoints left, the newest missing a file it lists
    (out / "checkpoints" / "step-00000002" / "optimizer.safetensors").unlink()
    assert resolve_model_dir(out) == out / "checkpoints" / "step-00000001"


@pytest.mark.parametrize("seeds, cond, message", [
    ([], {}, "at least one seed"),
    ([0], {"y": [1]}, "must be a tensor"),
])
def test_generate_names_bad_seeds_and_cond(seeds, cond, message):
    from guidekit.sampling.generate import generate

    schedule = NoiseSchedule.linear(1000)
    with pytest.raises(GuidekitError, match=message):
        generate(lambda x, t, c: x, schedule, (1, 8, 8), seeds, cond, steps=2)


def sync_free_trainer(tmp_path, monkeypatch, name, **kw):
    """tiny_trainer taking the GPU's path (no per-step host sync: fused AdamW's found_inf) on the CPU."""
    monkeypatch.setattr(Trainer, "sync_free", True)
    return tiny_trainer(tmp_path / name, **kw)


def test_sync_free_update_matches_the_host_checked_one(tmp_path, monkeypatch):
    host = tiny_trainer(tmp_path / "host")
    host.fit(progress=False)
    device = sync_free_trainer(tmp_path, monkeypatch, "device")
    assert device.sync_free and not host.sync_free
    device.fit(progress=False)
    for (k, a), b in zip(host.raw.state_dict().items(), device.raw.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=k)  # fused vs foreach AdamW, both fp32
    for k, a in host.ema.state_dict().items():
        torch.testing.assert_close(device.ema.state_dict()[k], a, rtol=1e-5, atol=1e-6, msg=k)


def test_sync_free_skips_a_non_finite_step_on_the_device(tmp_path, monkeypatch):
    trainer = sync_free_trainer(tmp_path, monkeypatch, "run", steps=4)
    poison(trainer, {2})
    seen = {}
    step_fn = trainer.opt.step

    def spy():  # weights and EMA as the optimizer of each step sees them
        seen[trainer.step] = ([p.detach().clone() for p in trainer.raw.parameters()],
                              {k: v.clone() for k, v in trainer.ema.state_dict().items()})
        step_fn()
    trainer.opt.step = spy
    trainer.fit(progress=False)
    assert sorted(seen) == [0, 1, 2, 3]  # no host check: the optimizer is called, and skips on the device
    (w2, e2), (w3, e3) = seen[2], seen[3]
    assert all(torch.equal(a, b) for a, b in zip(w2, w3))  # step 2 changed no weight ...
    assert all(torch.equal(e2[k], e3[k]) for k in e2)  # ... and left the EMA alone
    assert not all(torch.equal(a, b) for a, b in zip(seen[1][0], w2))  # (step 1 did change them)
    assert all(torch.isfinite(p).all() for p in trainer.raw.parameters())
    assert int(trainer.opt.optimizer.state[next(trainer.raw.parameters())]["step"]) == 3  # 3 real AdamW steps


def test_sync_free_counts_non_finite_runs_and_aborts_at_the_next_check(tmp_path, monkeypatch):
    trainer = sync_free_trainer(tmp_path, monkeypatch, "run", steps=10, max_bad_steps=3)
    poison(trainer, {4, 5, 6, 7})
    with pytest.raises(GuidekitError, match="not finite for 3 steps in a row by step 7"):
        trainer.fit(progress=False)
    assert not (tmp_path / "run" / "run" / "model").exists()  # nothing saved after the abort (save_every=100)

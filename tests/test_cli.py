"""`guidekit train` then `guidekit sample` end to end; bad input exits with code 2 and leaves nothing behind."""

import json

import numpy as np
import pytest
from PIL import Image

from guidekit.cli import main

TRAIN = ["train", "--dataset", "samples", "--preset", "tiny", "--steps", "3", "--batch-size", "8", "--save-every", "2",
         "--no-progress"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(TRAIN + ["--out", str(out)]) == 0
    return out


def test_train_writes_run(run_dir):
    assert (run_dir / "model" / "config.json").exists() and (run_dir / "model" / "model.safetensors").exists()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-00000002", "step-00000003"]
    assert (run_dir / "log.csv").read_text().startswith("step,loss")


def test_resume_extends_a_run(run_dir, tmp_path):
    import shutil
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    assert main(["train", "--dataset", "samples", "--out", str(copy), "--resume", "--steps", "4", "--no-progress"]) == 0
    assert (copy / "checkpoints" / "step-00000004").exists()


def test_sample_writes_pngs_grid_and_manifest(run_dir, tmp_path):
    out = tmp_path / "s"
    code = main(["sample", str(run_dir), "--class", "trouser,7", "--class", "null", "--n", "2", "--seed", "5",
                 "--guidance-scale", "3", "--steps", "3", "--out", str(out), "--no-progress"])
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["w"] == 2.0 and manifest["seeds"] == [5, 6] and manifest["classes"] == [1, 7, -1]
    assert len(manifest["images"]) == 6 and manifest["images"][0]["class_name"] == "Trouser"
    assert (manifest["sampler"], manifest["spacing"]) == ("dpmpp-2m-sde", "logsnr")  # the few-step default
    for entry in manifest["images"]:
        assert Image.open(out / entry["file"]).size == (32, 32)
    assert Image.open(out / "grid.png").width > 64


def test_plain_sampling_commands_share_the_few_step_default():
    from guidekit.cli import build_parser

    for command in (["sample", "m", "--out", "o"], ["control", "m", "--controlnet", "c", "--condition-from", "0",
                                                     "--out", "o"], ["eval", "m"]):
        a = build_parser().parse_args(command)
        assert (a.sampler, a.steps, a.spacing) == ("dpmpp-2m-sde", 15, "logsnr"), command
    for command in (["edit", "m", "--stroke-from", "0", "--out", "o"], ["inpaint", "m", "--from-dataset", "0",
                                                                         "--mask", "half", "--out", "o"]):
        a = build_parser().parse_args(command)
        assert (a.sampler, a.steps, a.spacing) == ("ddim", 50, "trailing"), command  # measured with DDIM-50


def test_sample_is_independent_of_batch_size(run_dir, tmp_path):
    args = ["sample", str(run_dir), "--class", "3", "--n", "3", "--steps", "3", "--sampler", "ddpm", "--no-progress"]
    assert main(args + ["--batch-size", "1", "--out", str(tmp_path / "a")]) == 0
    assert main(args + ["--batch-size", "3", "--out", str(tmp_path / "b")]) == 0
    for name in ("0000_class3_seed0.png", "0002_class3_seed2.png"):
        a, b = (np.asarray(Image.open(tmp_path / d / name), dtype=np.int16) for d in "ab")
        # The same noise and labels; only the network's arithmetic may differ with the batch (a CPU can pick another
        # convolution kernel per batch size), which can flip a pixel's last 8-bit level, never more.
        assert np.abs(a - b).max() <= 1 and (a == b).mean() > 0.99


@pytest.mark.parametrize("args,message", [
    (["--class", "spaceship"], "spaceship"),
    (["--w", "-1"], "--w must be >= 0"),
    (["--guidance-scale", "0.5"], "guidance-scale must be >= 1"),
    (["--steps", "0"], "--steps must be >= 1"),
    (["--steps", "5000"], "must not exceed the training timesteps"),
    (["--sampler", "euler"], "invalid choice"),
])
def test_sample_bad_input_exits_2(run_dir, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        code = main(["sample", str(run_dir), "--out", str(out), "--no-progress"] + args)
        raise SystemExit(code)
    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_missing_data_dir_exits_2(tmp_path, capsys):
    code = main(["train", "--dataset", "fashion-mnist", "--data", str(tmp_path / "nowhere"), "--out",
                 str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "apt-get install dataset-fashion-mnist" in err
    assert not (tmp_path / "run").exists()


def test_corrupt_or_pickled_checkpoint_exits_2(run_dir, tmp_path, capsys):
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(run_dir / "model", bad)
    (bad / "model.safetensors").write_bytes(b"not a tensor file")
    assert main(["sample", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "corrupt" in capsys.readouterr().err
    (tmp_path / "m.pt").write_bytes(b"\x80\x04K\x01.")
    assert main(["sample", str(tmp_path / "m.pt"), "--out", str(tmp_path / "o")]) == 2
    assert "pickled" in capsys.readouterr().err
    assert main(["sample", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


def test_existing_output_needs_overwrite(run_dir, tmp_path, capsys):
    out = tmp_path / "s"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["sample", str(run_dir), "--n", "1", "--steps", "2", "--out", str(out), "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "keep.txt").exists()


def test_help_describes_every_option(capsys):
    for cmd in ("train", "sample"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        text = capsys.readouterr().out
        assert "--out" in text and "help" in text


@pytest.fixture(scope="module")
def classifier_dir(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("clf") / "clf"
    assert main(["train-classifier", "--dataset", "samples", "--like", str(run_dir), "--preset", "tiny", "--steps",
                 "2", "--batch-size", "8", "--log-every", "1", "--out", str(out), "--no-progress"]) == 0
    return out


def test_train_classifier_logs_noise_buckets(classifier_dir):
    header = (classifier_dir / "log.csv").read_text().splitlines()[0]
    assert "acc_t0_250" in header and "acc_t750_1000" in header
    assert (classifier_dir / "model" / "model.safetensors").exists()


def test_sample_with_classifier_guidance(run_dir, classifier_dir, tmp_path):
    out = tmp_path / "s"
    assert main(["sample", str(run_dir), "--classifier", str(classifier_dir), "--classifier-w", "2", "--base-null",
                 "--class", "bag", "--n", "2", "--steps", "2", "--out", str(out), "--no-progress"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["w"] == 0.0 and manifest["classifier_w"] == 2.0 and manifest["base_null"]
    assert manifest["images"][0]["class_name"] == "Bag"


def test_classifier_with_another_schedule_is_refused(run_dir, tmp_path, capsys):
    out = tmp_path / "clf"
    assert main(["train-classifier", "--dataset", "samples", "--schedule", "cosine", "--preset", "tiny", "--steps",
                 "1", "--batch-size", "8", "--out", str(out), "--no-progress"]) == 0
    assert main(["sample", str(run_dir), "--classifier", str(out), "--n", "1", "--steps", "2", "--out",
                 str(tmp_path / "s")]) == 2
    assert "another noise schedule" in capsys.readouterr().err

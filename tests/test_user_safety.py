"""What a hostile new user broke, one test per class: nothing of theirs is deleted, the work fails before it starts,
resume continues what was recorded, no traceback, messages that say what is wrong, one flag for the embedded
samples, and the README's own promises."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from guidekit.cli import main
from guidekit.zoo import WEIGHTS

QUICK = ["--n", "1", "--steps", "1"]


def run(argv, capsys) -> tuple[int, str]:
    """main(argv) → (exit code, stderr), argparse's SystemExit included."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def tree(folder: Path) -> dict:
    """Every file under folder with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def model(tmp_path) -> Path:
    """A copy of the zoo's fmnist-cfg as the user's own model folder."""
    return Path(shutil.copytree(WEIGHTS / "fmnist-cfg", tmp_path / "my-model"))


# 1. Data loss: an output never overlaps an input, the package or the working folder, and --overwrite replaces
#    only an earlier output of the same command.

def test_overwrite_never_deletes_an_input_or_the_package(model, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    guide = tmp_path / "drawings" / "guide.png"
    guide.parent.mkdir()
    shutil.copy(WEIGHTS.parents[1] / "metrics" / "weights" / "fmnist-evaluator" / "config.json", guide.parent / "x")
    from PIL import Image

    Image.new("L", (32, 32), 128).save(guide)
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints" / "step-00000001").mkdir(parents=True)
    shutil.copytree(model, run_dir / "model")
    before = {p: tree(p) for p in (model, guide.parent, run_dir, WEIGHTS / "fmnist-cfg")}
    cases = [
        (["sample", model, "--out", model], "is the input MODEL"),
        (["sample", model, "--out", model / "inside"], "lies inside the input MODEL"),
        (["sample", run_dir, "--out", run_dir], "is the input MODEL"),
        (["sample", "fmnist-cfg", "--out", WEIGHTS / "fmnist-cfg"], "guidekit's own files"),
        (["sample", "fmnist-cfg", "--out", WEIGHTS.parent], "guidekit's own files"),
        (["edit", model, "--guide", guide, "--t0", "0.5", "--out", guide.parent], "holds the input --guide"),
        (["sample", model, "--out", "."], "the working folder"),
        (["sample", model, "--out", ".."], "the working folder"),
        (["sample", model, "--out", guide.parent], "not one (it holds guide.png, x)"),  # not a sample folder
        (["demo", "--quick", "--out", guide.parent], "not one"),
        (["eval", model, "--json", model / "config.json"], "lies inside the input TARGET"),
    ]
    for argv, needle in cases:
        code, err = run(argv[:1] + [str(a) for a in argv[1:]] + QUICK * (argv[0] in ("sample", "edit"))
                        + ["--overwrite"] * (argv[0] in ("sample", "edit")), capsys)
        assert code == 2 and needle in err and "Traceback" not in err, (argv, err)
    assert {p: tree(p) for p in before} == before  # nothing deleted or changed


def test_overwrite_replaces_an_earlier_output_of_the_same_command(model, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(["sample", model, "--class", "0", *QUICK, "--out", out], capsys)[0] == 0
    assert json.loads((out / "manifest.json").read_text())["command"] == "sample"
    code, err = run(["sample", model, "--class", "1", *QUICK, "--out", out], capsys)
    assert code == 2 and "--overwrite" in err
    assert run(["sample", model, "--class", "1", *QUICK, "--out", out, "--overwrite"], capsys)[0] == 0
    assert json.loads((out / "manifest.json").read_text())["classes"] == [1]
    code, err = run(["edit", model, "--guide", out / "grid.png", "--t0", "0.5", *QUICK, "--out", tmp_path / "e"],
                    capsys)
    assert code == 0
    code, err = run(["edit", model, "--guide", model.parent / "e" / "0000_seed0.png", "--t0", "0.5", *QUICK,
                     "--out", out, "--overwrite"], capsys)  # an output of sample, not of edit
    assert code == 2 and "an output of 'guidekit sample'" in err


def test_a_new_training_run_never_writes_into_a_folder_of_other_files(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "log.csv").write_text("my own spreadsheet\n")
    (mine / "notes.txt").write_text("keep me\n")
    before = tree(mine)
    code, err = run(["train", "--data", "samples", "--preset", "tiny", "--steps", "1", "--batch-size", "4",
                     "--out", mine, "--no-progress"], capsys)
    assert code == 2 and "not a guidekit run" in err and "notes.txt" in err
    assert tree(mine) == before


# 2. Fail before the work: data, references, models and outputs are checked before any sampling.

def test_sweeps_fail_before_sampling_when_the_reference_is_missing(tmp_path, capsys, monkeypatch, no_system_data):
    from guidekit.models.unet import UNet

    def never(*a, **k):
        raise AssertionError("sampling started before the reference was checked")

    monkeypatch.setattr(UNet, "forward", never)  # the class attribute: whoever imported UNet sees the patch
    for argv in (["sweep", "cfg", "fmnist-cfg", "--w", "0,1", "--n", "20"],
                 ["sweep", "steps", "fmnist-cfg", "--samplers", "ddim", "--nfe", "2", "--baseline", "ddim:3",
                  "--n", "20"],
                 ["sweep", "sdedit", "fmnist-cfg", "--t0", "0.5", "--n", "20", "--guides", "samples"],
                 ["sweep", "control", "fmnist-cfg", "--controlnet", "fmnist-canny", "--scale", "0,1", "--n", "20",
                  "--dataset", "samples"]):
        out = tmp_path / argv[1]
        code, err = run(argv + ["--out", out], capsys)
        assert code == 2 and "no IDX data found" in err and "--data samples" in err, (argv, err)
        assert not out.exists()


def test_a_sweep_without_progress_bars_prints_a_line_per_row(tmp_path, capsys):
    out = tmp_path / "sweep"
    code = main(["sweep", "cfg", "fmnist-cfg", "--w", "0,1", "--n", "20", "--steps", "1", "--data", "samples",
                 "--no-progress", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "w = 0: FID" in printed and "w = 1: FID" in printed


# 5. Resume continues what was recorded.

def test_resume_reads_the_recorded_data_and_refuses_contradicting_options(tmp_path, capsys, make_idx_dir):
    out = tmp_path / "run"
    base = ["train", "--preset", "tiny", "--batch-size", "4", "--save-every", "1", "--no-progress", "--out", out]
    assert run(base + ["--data", "samples", "--steps", "1"], capsys)[0] == 0
    state = json.loads(next((out / "checkpoints").glob("step-*/state.json")).read_text())
    assert state["dataset"]["source"] == {"dataset": "samples", "split": None, "data": None}
    assert run(base + ["--resume", "--steps", "2"], capsys)[0] == 0  # the README's resume line, nothing else
    for flag, value in (("--preset", "small"), ("--prediction", "v"), ("--schedule", "cosine"),
                        ("--timesteps", "500"), ("--dataset", "mnist"), ("--dropout", "0.1")):
        code, err = run(base + ["--resume", "--steps", "3", flag, value], capsys)
        assert code == 2 and f"was trained with {flag}" in err and "Traceback" not in err, (flag, err)
    code, err = run(base + ["--resume", "--steps", "3", "--preset", "tiny", "--prediction", "eps"], capsys)
    assert code == 0  # the recorded values, given again, agree
    idx = make_idx_dir(n_train=20)
    code, err = run(base + ["--resume", "--steps", "4", "--data", idx, "--dataset", "samples"], capsys)
    assert code == 0  # --data may move; the samples are still the samples
    other = tmp_path / "other"
    assert run(["train", "--preset", "tiny", "--batch-size", "4", "--save-every", "1", "--no-progress", "--out",
                other, "--data", idx, "--steps", "1"], capsys)[0] == 0
    shutil.rmtree(idx)
    idx2 = make_idx_dir("idx", n_train=22)  # the same path, other files
    code, err = run(["train", "--no-progress", "--out", other, "--resume", "--steps", "2", "--data", idx2], capsys)
    assert code == 2 and "other data" in err


# 6. No traceback: exit 2 (130 for Ctrl-C) and a message.

@pytest.mark.parametrize("argv,needle", [
    (["sample", "fmnist-cfg", "--out", "{file}/x"], "which is a file"),
    (["sample", "fmnist-cfg", "--out", "/proc/guidekit-out"], "nothing can be created"),
    (["sample", "fmnist-cfg", "--out", "", "--overwrite"], "--out is empty"),
    (["train", "--data", "samples", "--out", "{file}"], "exists and is a file"),
    (["sweep", "cfg", "fmnist-cfg", "--out", "{file}"], "exists and is a file"),
    (["eval", "fmnist-cfg", "--json", "/proc/guidekit.json"], "nothing can be created"),
    (["sample", "fmnist-cfg", "--seed", str(2 ** 64)], "--seed must be <= 4294967295"),
    (["sample", "fmnist-cfg", "--seed", "9" * 5000], "--seed must be an integer"),
], ids=["out-under-file", "out-under-proc", "out-empty", "train-out-file", "sweep-out-file", "json-unwritable",
        "seed-2-64", "seed-huge"])
def test_bad_paths_and_numbers_exit_2_without_traceback(argv, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    argv = [a.replace("{file}", str(tmp_path / "afile")) for a in argv]
    if "--out" not in argv and argv[0] != "eval":
        argv += ["--out", str(tmp_path / "o")]
    code, err = run(argv, capsys)
    assert code == 2 and needle in err and "Traceback" not in err, err
    assert len(err) < 2000


def test_ctrl_c_while_starting_up_exits_130(monkeypatch, capsys):
    import guidekit.cli as cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["sample", "fmnist-cfg"]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_an_os_error_while_writing_exits_2(tmp_path, capsys, monkeypatch):
    import guidekit.cli.sample as sample

    def full(*a, **k):
        raise OSError(28, "No space left on device", str(tmp_path / "o" / "grid.png"))

    monkeypatch.setattr(sample, "title", full)
    code, err = run(["sample", "fmnist-cfg", *QUICK, "--class", "0", "--out", tmp_path / "o"], capsys)
    assert code == 2 and "No space left on device" in err and "Traceback" not in err


# 7. Messages that say what is wrong.

def test_messages_name_the_real_problem(model, tmp_path, capsys):
    code, err = run(["sample", model, "--class", "裤子", *QUICK, "--out", tmp_path / "o"], capsys)
    assert code == 2 and "unknown class '裤子'" in err and "empty" not in err
    code, err = run(["sample", model, "--class", "x" * 10000, *QUICK, "--out", tmp_path / "o"], capsys)
    assert code == 2 and "characters cut" in err and len(err) < 1000
    (tmp_path / "pictures").mkdir()
    code, err = run(["inpaint", model, "--image", tmp_path / "pictures", "--mask", "half", *QUICK, "--out",
                     tmp_path / "o"], capsys)
    assert code == 2 and "is a folder, not an image file" in err
    from safetensors.torch import load_file, save_file

    w = load_file(str(model / "model.safetensors"))
    w["conv_in.weight"] = w["conv_in.weight"].to(torch.int64)
    save_file(w, str(model / "model.safetensors"))
    code, err = run(["sample", model, *QUICK, "--out", tmp_path / "o"], capsys)
    assert code == 2 and "conv_in.weight (torch.int64)" in err and "NaN" not in err


def test_unicode_class_names_match_without_ascii_folding():
    from guidekit.data import class_index

    names = ["Hosé", "Kleid", "连衣裙"]
    assert class_index(names, "hosé") == 0 and class_index(names, "连衣") == 2 and class_index(names, "KLEID") == 1


# 8. One flag for the embedded samples, named in the error.

def test_data_samples_is_one_flag_for_every_command(tmp_path, capsys, no_system_data):
    code, err = run(["train", "--preset", "tiny", "--steps", "1", "--out", tmp_path / "t"], capsys)
    assert code == 2 and "--data samples" in err and "500 Fashion-MNIST images embedded" in err
    for argv in (["train", "--preset", "tiny", "--steps", "1", "--batch-size", "4", "--no-progress",
                  "--out", tmp_path / "t"],
                 ["eval", "fmnist-cfg", "--n", "10", "--steps", "1", "--no-progress"],
                 ["edit", "fmnist-cfg", "--stroke-from", "3", "--t0", "0.5", *QUICK, "--out", tmp_path / "e"],
                 ["inpaint", "fmnist-cfg", "--from-dataset", "3", "--mask", "half", *QUICK, "--jump-n-sample", "1",
                  "--out", tmp_path / "i"],
                 ["control", "fmnist-cfg", "--controlnet", "fmnist-canny", "--condition-from", "3", *QUICK,
                  "--out", tmp_path / "c"]):
        code, err = run(argv + ["--data", "samples"], capsys)
        assert code == 0, (argv, err)
    manifest = json.loads((tmp_path / "e" / "manifest.json").read_text())
    assert manifest["dataset"] == "samples"


def test_single_images_fall_back_to_the_samples_without_the_dataset(tmp_path, capsys, no_system_data):
    code, err = run(["inpaint", "fmnist-cfg", "--from-dataset", "1", "--mask", "half", *QUICK, "--jump-n-sample",
                     "1", "--out", tmp_path / "i"], capsys)
    assert code == 0 and "using the 500 images embedded" in err
    assert json.loads((tmp_path / "i" / "manifest.json").read_text())["source"] == "samples[1]"


# 9. The README and help as written.

def test_eval_takes_a_zoo_name(capsys):
    code, err = run(["eval", "fmnist-cfg", "--n", "10", "--steps", "1", "--data", "samples", "--no-progress"],
                    capsys)
    assert code == 0, err


def test_inpaint_with_few_steps_works_on_the_default_jump_length(tmp_path, capsys):
    code, err = run(["inpaint", "fmnist-cfg", "--data", "samples", "--from-dataset", "1", "--mask", "half",
                     "--n", "1", "--steps", "4", "--out", tmp_path / "i"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "i" / "manifest.json").read_text())["jump_length"] == 2
    code, err = run(["inpaint", "fmnist-cfg", "--data", "samples", "--from-dataset", "1", "--mask", "half",
                     "--n", "1", "--steps", "4", "--jump-length", "4", "--out", tmp_path / "j"], capsys)
    assert code == 2 and "--jump-length 4 leaves no room to jump back within --steps 4" in err


def test_every_sampling_command_says_why_its_sampler_default_is_what_it_is(capsys):
    for command in ("sample", "control", "eval", "edit", "inpaint"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "the default (" in text and "docs/results.md" in text, command


def test_long_cpu_training_prints_an_estimate(capsys, monkeypatch):
    import guidekit.training.base as base

    clock = iter([100.0, 150.0, 200.0, 250.0])  # 5 timed steps take 50 s: 10 s per step
    monkeypatch.setattr(base.time, "time", lambda: next(clock))
    eta = base.EtaNotice(0, 20000, "train", enabled=True)
    for step in range(10):
        eta.at(step)
    err = capsys.readouterr().err
    assert "10 s per step" in err and "2.3 days" in err and "--max-minutes" in err
    quiet = base.EtaNotice(0, 20, "train", enabled=True)
    for step in range(10):
        quiet.at(step)
    assert capsys.readouterr().err == ""


def test_docs_and_help_speak_of_the_project_not_of_issues():
    import re

    root = Path(__file__).resolve().parents[1]
    files = [root / "README.md", *sorted((root / "docs").glob("*.md")), *sorted((root / "src").rglob("*.py")),
             *sorted((root / "benchmarks").glob("*.py"))]
    hits = [f"{f.relative_to(root)}:{i}" for f in files for i, line in enumerate(f.read_text().splitlines(), 1)
            if re.search(r"\bissue(?:'s|s)?\b(?! tracker)", line, re.IGNORECASE)]
    assert hits == []

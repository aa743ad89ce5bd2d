"""guidekit.checkpoints: one protocol for every model folder; inference never imports training; formats unchanged."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import guidekit.checkpoints as ck
from guidekit.checkpoints.evaluator import SHIPPED
from guidekit.checkpoints.files import VERSIONS, check_format, format_of
from guidekit.errors import GuidekitError
from guidekit.zoo import WEIGHTS

SRC = Path(ck.__file__).resolve().parents[1]
KINDS = {"unet": "fmnist-cfg", "controlnet": "fmnist-canny", "classifier": "fmnist-classifier"}

# Run in a fresh interpreter (other tests import guidekit.training): any import of guidekit.training fails loudly,
# with the traceback of whoever imported it.
ISOLATED = r"""
import importlib, importlib.util, pkgutil, sys

class NoTraining:
    def find_spec(self, name, path=None, target=None):
        if name == "guidekit.training" or name.startswith("guidekit.training."):
            raise ImportError(f"an inference path imported {name}")

sys.meta_path.insert(0, NoTraining())
import guidekit.checkpoints as ck
import guidekit.experiments, guidekit.metrics, guidekit.ui
for name in ("sample", "sample_text", "control", "edit", "inpaint", "evaluate", "sweep", "sweep_control",
             "sweep_repaint", "sweep_sdedit", "sweep_steps", "sweep_text", "zoo", "ui", "demo"):
    importlib.import_module(f"guidekit.cli.{name}")
for pkg in (guidekit.experiments, guidekit.metrics, guidekit.ui):
    for m in pkgutil.iter_modules(pkg.__path__):
        if m.name != "app" or importlib.util.find_spec("gradio"):
            importlib.import_module(f"{pkg.__name__}.{m.name}")
model = ck.load_model("fmnist-cfg")
ck.load_controlnet("fmnist-canny", model.net)
ck.load_classifier("fmnist-classifier")
from guidekit.metrics.network import load_network, network_id
assert network_id(load_network()) == ck.evaluator_id(ck.load_evaluator())
from guidekit.pipelines import load_guiding_classifier
load_guiding_classifier("evaluator", model, "cpu", clean=True)
from guidekit.ui import service
import numpy as np
image, _ = service.dataset_image(1)
mask = np.full((32, 32), 255, np.uint8)
mask[8:24, 8:24] = 0
sketch = np.zeros((256, 256, 4), np.uint8)
sketch[..., 3], sketch[40:220, 90:120, :3] = 255, 255
tiny = service.Params(cls="Trouser", steps=1, n=1, jump_length=1, jump_n_sample=1)
for method in service.METHODS:
    service.run_method(method, "fmnist-cfg", tiny, image=image, mask=mask, sketch=sketch)
assert "guidekit.training" not in sys.modules
print("isolated")
"""

# The whole command line, parser included: its training commands show their settings' defaults from the light
# guidekit.training.config, and nothing else of training (no trainer, no accelerate) loads for an inference command.
COMMAND = r"""
import sys, tempfile
from guidekit.cli import main
out = tempfile.mkdtemp() + "/out"
assert main(["sample", "fmnist-cfg", "--class", "0", "--n", "1", "--steps", "1", "--no-progress", "--out", out]) == 0
loaded = sorted(m for m in sys.modules if m.startswith("guidekit.training"))
assert loaded == ["guidekit.training", "guidekit.training.config"] and "accelerate" not in sys.modules, loaded
print("isolated")
"""


@pytest.mark.parametrize("script", [ISOLATED, COMMAND], ids=["modules", "command-line"])
def test_inference_never_imports_training(script):
    """Loaders, CLI inference commands, metrics, experiments and the UI (each method run once), and `guidekit sample`
    through the whole parser, in a fresh process."""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "isolated" in done.stdout, done.stderr[-4000:]


def _imports(file: Path) -> set[str]:
    """Every guidekit module a file imports, lazily or not."""
    found = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {m for m in found if m.startswith("guidekit.")}


@pytest.mark.parametrize("layer,above", [
    (("diffusion", "models", "guidance", "sampling"),
     ("training", "experiments", "checkpoints", "pipelines", "metrics", "cli", "ui")),
    (("checkpoints",), ("pipelines", "training", "experiments", "metrics", "cli", "ui")),
])
def test_dependencies_point_one_way(layer, above):
    """Nothing under a lower layer imports a higher one (docs/architecture.md, Model folders)."""
    bad = {f"{f.relative_to(SRC)}: {m}" for part in layer for f in (SRC / part).rglob("*.py")
           for m in _imports(f) if m.split(".")[1] in above}
    assert not bad, sorted(bad)


def test_format_strings_are_the_ones_written_so_far():
    assert [format_of(k) for k in VERSIONS] == ["guidekit-unet/1", "guidekit-controlnet/1", "guidekit-classifier/1",
                                                "guidekit-evaluator/1", "guidekit-vae/1", "guidekit-latent/1"]
    assert check_format({"format": "guidekit-unet/1"}, "unet", Path("config.json")) == 1


@pytest.mark.parametrize("kind", list(VERSIONS))
def test_format_rule(kind):
    """A newer version of the same kind says upgrade; another kind names both; no or a bad format is refused."""
    file = Path("m/config.json")
    with pytest.raises(GuidekitError, match=rf"written by a newer guidekit \(format 'guidekit-{kind}/2'.*upgrade"):
        check_format({"format": f"guidekit-{kind}/2"}, kind, file)
    other = next(k for k in VERSIONS if k != kind)
    with pytest.raises(GuidekitError, match=rf"'guidekit-{other}/1', expected 'guidekit-{kind}/1'.*that is"):
        check_format({"format": format_of(other)}, kind, file)
    for config in ({}, {"format": 1}, {"format": f"guidekit-{kind}/0"}, {"format": f"guidekit-{kind}/x"}):
        with pytest.raises(GuidekitError, match="m/config.json has format .*: not a guidekit"):
            check_format(config, kind, file)


def _newer(folder: Path, tmp_path: Path) -> Path:
    """A copy of folder whose config.json claims the next format version."""
    dest = tmp_path / folder.name
    dest.mkdir()
    config = json.loads((folder / "config.json").read_text())
    kind, version = config["format"].split("/")
    (dest / "config.json").write_text(json.dumps({**config, "format": f"{kind}/{int(version) + 1}"}))
    (dest / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    return dest


def test_every_loader_refuses_a_newer_format(tmp_path):
    base = ck.load_model("fmnist-cfg").net
    loads = {"fmnist-cfg": ck.load_model, "fmnist-canny": lambda p: ck.load_controlnet(p, base),
             "fmnist-classifier": ck.load_classifier}
    for name, load in loads.items():
        with pytest.raises(GuidekitError, match="written by a newer guidekit.*upgrade guidekit"):
            load(_newer(WEIGHTS / name, tmp_path))
    with pytest.raises(GuidekitError, match="written by a newer guidekit.*upgrade guidekit"):
        ck.load_evaluator(_newer(SHIPPED, tmp_path))


def _same_files(written: Path, shipped: Path) -> None:
    """Both folders hold byte-identical model.safetensors and the same config.json."""
    assert (written / "model.safetensors").read_bytes() == (shipped / "model.safetensors").read_bytes()
    new, old = (json.loads((f / "config.json").read_text()) for f in (written, shipped))
    if "controlnet" in old:  # ControlNets saved before base_kind existed read as a guidekit base
        old["controlnet"].setdefault("base_kind", "guidekit")
    assert new == old


def _half(net: torch.nn.Module) -> dict:
    return {k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}


def test_shipped_folders_load_bit_identically_and_rewrite_to_the_same_files(tmp_path):
    """The zoo (fp16) and the shipped evaluator: loaded weights are the file's exactly; the writers reproduce them."""
    model = ck.load_model("fmnist-cfg")
    file = load_file(str(WEIGHTS / "fmnist-cfg" / "model.safetensors"))
    assert all(torch.equal(v, file[k].float()) for k, v in model.net.state_dict().items())
    ck.write_folder(tmp_path / "cfg", ck.model_files(model.net, model.schedule, model.class_names, _half(model.net)))
    _same_files(tmp_path / "cfg", WEIGHTS / "fmnist-cfg")
    for name in ("fmnist-canny", "fmnist-mask", "fmnist-sketch"):
        cn = ck.load_controlnet(name, model.net)
        ck.write_folder(tmp_path / name, ck.controlnet_files(cn.net, ck.fingerprint(model.net), cn.condition,
                                                             _half(cn.net)))
        _same_files(tmp_path / name, WEIGHTS / name)
    clf = ck.load_classifier("fmnist-classifier")
    ck.write_folder(tmp_path / "clf", ck.classifier_files(clf.net, clf.schedule, clf.class_names, _half(clf.net)))
    _same_files(tmp_path / "clf", WEIGHTS / "fmnist-classifier")
    config = json.loads((SHIPPED / "config.json").read_text())
    info = {k: v for k, v in config.items() if k not in ("format", "evaluator", "weights_dtype", "evaluator_id",
                                                         "metrics")}
    ck.save_evaluator(ck.load_evaluator(), tmp_path / "ev", config["metrics"], config["weights_dtype"], info)
    assert (tmp_path / "ev" / "config.json").read_text() == (SHIPPED / "config.json").read_text()
    _same_files(tmp_path / "ev", SHIPPED)


def test_earlier_import_paths_still_work():
    import guidekit.metrics.evaluator as me
    import guidekit.models.evaluator as models
    import guidekit.training as training

    for name in ("LoadedModel", "LoadedControlNet", "load_model", "load_controlnet", "save_controlnet",
                 "resolve_model_dir", "write_folder", "load_diffusers_model"):
        assert getattr(training, name) is getattr(ck, name)
    for name in ("load_evaluator", "save_evaluator", "evaluator_id"):
        assert getattr(me, name) is getattr(ck, name)
    assert (me.Evaluator, me.EvaluatorConfig, me.SHIPPED) == (models.Evaluator, models.EvaluatorConfig, SHIPPED)

"""Model folders, written once for every kind: config.json (with its "format") + safetensors, atomic, no pickles.

Kinds: base models (model.py, and diffusers folders in diffusers_folder.py), ControlNets (controlnet.py),
noise-aware classifiers (classifier.py), evaluators (evaluator.py); run folders' checkpoints (runs.py). The shared
file handling (atomic writes, reads, the format check, strict weight loading) is in files.py.
"""

from guidekit.checkpoints.classifier import LoadedClassifier, classifier_files, load_classifier, save_classifier
from guidekit.checkpoints.controlnet import (LoadedControlNet, controlnet_files, fingerprint, load_controlnet,
                                             save_controlnet)
from guidekit.checkpoints.diffusers_folder import is_diffusers_folder, load_diffusers_model
from guidekit.checkpoints.evaluator import evaluator_id, load_evaluator, save_evaluator
from guidekit.checkpoints.files import check_format, format_of, read_json, write_folder
from guidekit.checkpoints.model import LoadedModel, load_model, model_files, resolve_model_dir
from guidekit.checkpoints.runs import complete_checkpoints, is_complete, newest_checkpoint

__all__ = ["LoadedClassifier", "classifier_files", "load_classifier", "save_classifier", "LoadedControlNet",
           "controlnet_files", "fingerprint", "load_controlnet", "save_controlnet", "is_diffusers_folder",
           "load_diffusers_model", "evaluator_id", "load_evaluator", "save_evaluator", "check_format", "format_of",
           "read_json", "write_folder", "LoadedModel", "load_model", "model_files", "resolve_model_dir",
           "complete_checkpoints", "is_complete", "newest_checkpoint"]

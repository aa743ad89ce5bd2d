"""What every command and the web UI call: a loaded model, guidance and sampler settings in, images out, with
callback(StepInfo) after every move of the trajectory. Sweeps, plots and the demo (guidekit.experiments) build on
these; the policy of which label the network sees and the default w is guidekit.pipelines.policy."""

from guidekit.pipelines.control import (as_nets, condition_of, control_samples, controlled, extract_hints,
                                        hint_image, join_hints)
from guidekit.pipelines.denoiser import guided_denoiser, load_guiding_classifier
from guidekit.pipelines.edit import edit_guided, faithfulness
from guidekit.pipelines.inpaint import inpaint_guided, masked_errors
from guidekit.pipelines.policy import class_names, conditional, default_w, network_labels
from guidekit.pipelines.restore import check_restorable, restoration_errors, restore_guided
from guidekit.pipelines.sample import sample_guided
from guidekit.pipelines.settings import Guidance, SamplerSettings
from guidekit.pipelines.text import class_prompt_cond, prompt_cond

__all__ = ["Guidance", "SamplerSettings", "as_nets", "class_names", "class_prompt_cond", "condition_of",
           "conditional", "control_samples", "controlled", "default_w", "edit_guided", "extract_hints",
           "faithfulness", "guided_denoiser", "hint_image", "inpaint_guided", "join_hints", "load_guiding_classifier",
           "masked_errors", "network_labels", "prompt_cond", "check_restorable", "restoration_errors", "restore_guided", "sample_guided"]

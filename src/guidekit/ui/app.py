"""The Gradio front end of `guidekit ui`: pick a model and a method, draw or upload, run, download the PNG."""

from __future__ import annotations

import atexit
import functools
import inspect
import ipaddress
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no telemetry, no version check

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from guidekit import zoo  # noqa: E402
from guidekit.data import FASHION_MNIST_CLASSES  # noqa: E402
from guidekit.errors import GuidekitError, check  # noqa: E402
from guidekit.pipelines.settings import RULES  # noqa: E402
from guidekit.ui import service  # noqa: E402
from guidekit.ui.inputs import MAX_BYTES, MAX_SIDE, mask_from_paint, read_upload, thumbnail, tile  # noqa: E402

CANVAS = 256  # side of the canvas, in pixels (the model's 32x32 upscaled x8)
RESULT = 512  # about the longer side of a displayed result, in pixels
KEEP_FILES = 192  # PNGs kept (3 per request: the result, the model input and the full-resolution download)
METHODS = [("sample (classifier-free guidance)", "sample"), ("classifier guidance", "classifier"),
           ("ControlNet (sketch / canny)", "controlnet"), ("SDEdit (drawing → image)", "sdedit"),
           ("RePaint (inpainting)", "repaint")]
HINTS = [("by the canvas: extract it from a loaded or uploaded image, a drawing is the hint", "auto"),
         ("extract it from the canvas (a garment)", "extract"),
         ("the canvas is the hint (a drawing or an uploaded sketch)", "as drawn")]
EXTRACT = {"auto": None, "extract": True, "as drawn": False}  # HINTS value → Params.extract_hint
HELP = f"""**guidekit** — steer the Fashion-MNIST diffusion models (32×32 gray, light garment on black).
Draw on the black canvas (white or grey strokes: a ControlNet hint or an SDEdit guide), or load a test image / upload
one and, for **RePaint**, paint the region to regenerate over it. A loaded test image sets the class to its own; an
upload, whose class is unknown, sets it to null (∅). **ControlNet** extracts its hint (edges, sketch) from a loaded or
uploaded image and takes a drawing on the blank canvas as the hint itself (the hint option overrides this). Model: a
zoo name or a local model folder path (read from this machine; no checkpoint upload). Limits: uploads
≤ {MAX_BYTES / 1e6:g} MB and ≤ {MAX_SIDE}×{MAX_SIDE} pixels, ≤ {service.MAX_STEPS} steps, ≤ {service.MAX_N} images,
RePaint ≤ {service.MAX_NFE} model evaluations per image."""


def kwargs_for(target, **kwargs) -> dict:
    """The kwargs that this gradio version's `target` accepts (options differ between gradio 4, 5 and 6)."""
    params = inspect.signature(target).parameters
    return kwargs if any(p.kind == p.VAR_KEYWORD for p in params.values()) else \
        {k: v for k, v in kwargs.items() if k in params}


def of_kind(kind: str) -> list[str]:
    """Zoo names of one kind (model | classifier | controlnet)."""
    return [n for n, e in zoo.registry().items() if e["kind"] == kind]


def canvas_value(image: np.ndarray | None) -> dict:
    """An ImageEditor value whose background is image (uint8, model resolution) upscaled, or a black canvas."""
    if image is None:
        rgb = np.zeros((CANVAS, CANVAS, 3), dtype=np.uint8)
    else:
        big = tile(image[None], max(1, CANVAS // max(image.shape[:2])))
        rgb = np.repeat(big[..., None], 3, axis=2) if big.ndim == 2 else big
    rgba = np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 255, dtype=np.uint8)], axis=2)
    return {"background": rgba, "layers": [], "composite": rgba}


def display(image: np.ndarray, side: int = RESULT) -> np.ndarray:
    """A uint8 picture upscaled (nearest, so pixels stay sharp) to about `side` pixels on its longer side."""
    return tile(image[None], max(1, side // max(image.shape[:2])))


def canvas_arrays(value) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """(image = background, mask = unpainted pixels (255 = known), sketch = composite) of an ImageEditor value."""
    if not value:
        return None, None, None
    background, composite = value.get("background"), value.get("composite")
    mask = None
    if background is not None:
        mask = mask_from_paint(list(value.get("layers") or []), background.shape[:2])
    return background, mask, composite


class Outputs:
    """Writes the PNGs a request returns into a private temp folder, keeping the newest KEEP_FILES."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="guidekit-ui-"))
        atexit.register(shutil.rmtree, self.folder, ignore_errors=True)

    def png(self, image: np.ndarray) -> str:
        path = self.folder / f"guidekit-{uuid.uuid4().hex[:12]}.png"
        Image.fromarray(image).save(path, format="PNG")
        for old in sorted(self.folder.glob("*.png"), key=lambda p: p.stat().st_mtime)[:-KEEP_FILES]:
            old.unlink(missing_ok=True)
        return str(path)


def user_errors(fn):
    """fn whose GuidekitError reaches the user as a gr.Error and the server log as one line, without a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except GuidekitError as e:
            print(f"guidekit ui: error: {' '.join(str(e).split())}", file=sys.stderr, flush=True)
            raise gr.Error(str(e), **kwargs_for(gr.Error, print_exception=False)) from None

    return wrapper


def dataset_canvas(index, stroke) -> tuple[dict, str, str]:
    """(canvas, class, note) of test image `index`: the class control takes the image's class (null if unlabelled)."""
    image, name = service.dataset_image(index, stroke)
    label = service.dataset_class(index) or "null"
    return canvas_value(image), label, f"loaded {name}; class set to {label}"


def upload_canvas(file, model) -> tuple[dict, str, str]:
    """(canvas, class, note) of an uploaded file: its class is unknown, so the class control is reset to null (∅)."""
    image = thumbnail(read_upload(getattr(file, "name", file)), service.image_size(model))
    return canvas_value(image), "null", "class set to null (∅: an upload's class is unknown); pick it if you know it"


def build_app(device="cpu", max_queue: int = 16, concurrency: int = 1) -> gr.Blocks:
    """The Gradio Blocks of `guidekit ui`, queued with at most max_queue waiting and `concurrency` running."""
    outputs = Outputs()

    @user_errors
    def run(method, model, cls, w, classifier, classifier_w, base_null, controlnet, control_scale, hint, t0,
            jump_length, jump_n_sample, invert, sampler, steps, seed, n, canvas, prompt, negative_prompt,
            guidance_rule="cfg", rescale=0.0, guidance_interval="", guide_model="", dynamic_threshold=False,
            cads=False, progress=gr.Progress()):
        check(isinstance(hint, str) and hint in EXTRACT,
              f"unknown hint source {hint!r}: use one of {', '.join(EXTRACT)}")
        image, mask, sketch = canvas_arrays(canvas)
        params = service.Params(cls=cls, w=w, classifier=classifier, classifier_w=classifier_w,
                                base_null=base_null, controlnet=controlnet, control_scale=control_scale,
                                extract_hint=EXTRACT[hint], t0=t0, jump_length=jump_length,
                                jump_n_sample=jump_n_sample, invert=invert, steps=steps, seed=seed, n=n,
                                sampler=sampler, prompt=prompt, negative_prompt=negative_prompt,
                                guidance_rule=guidance_rule, rescale=rescale, guidance_interval=guidance_interval,
                                guide_model=guide_model or "", dynamic_threshold=bool(dynamic_threshold),
                                cads=bool(cads))
        result = service.run_method(method, model, params, image, mask, sketch, device,
                                    lambda f, text: progress(f, desc=text))
        full = tile(result.images)
        used = next(iter(result.inputs.values()), None)
        # every image as a uniquely named file: Gradio caches a returned array under its content hash and rewrites
        # that file on every request, so two concurrent requests with the same picture (the same SDEdit guide)
        # could truncate the file while the other's download reads it; files are copied atomically instead
        return (outputs.png(display(full)), None if used is None else outputs.png(display(used, CANVAS)),
                outputs.png(full), result.info)

    @user_errors
    def upload(file, model):
        value, label, note = upload_canvas(file, model)
        gr.Info(note)
        return value, label

    @user_errors
    def load_test_image(index, stroke):
        value, label, note = dataset_canvas(index, stroke)
        gr.Info(note)
        return value, label

    def show(method):
        return [gr.update(visible=method == m) for m in ("classifier", "controlnet", "sdedit", "repaint")]

    with gr.Blocks(**kwargs_for(gr.Blocks, title="guidekit", analytics_enabled=False,
                                delete_cache=(600, 3600))) as demo:
        gr.Markdown(HELP)
        with gr.Row():
            with gr.Column(scale=1):
                method = gr.Radio(METHODS, value="sample", label="method", elem_id="method")
                model = gr.Dropdown(of_kind("model"), value="fmnist-cfg", allow_custom_value=True,
                                    label="model (zoo name or local folder)")
                cls = gr.Dropdown(["null", *FASHION_MNIST_CLASSES], value="Trouser", allow_custom_value=True,
                                  label="class (name, prefix, index or null; class models)", elem_id="class")
                with gr.Accordion("prompt (text models: guidekit train --captions)", open=False):
                    prompt = gr.Textbox("", label="prompt (empty = ∅)", placeholder="a dark pair of trousers",
                                        max_length=service.MAX_PROMPT)
                    negative_prompt = gr.Textbox("", label="negative prompt (replaces ∅ in CFG)",
                                                 placeholder="a light sneaker", max_length=service.MAX_PROMPT)
                w = gr.Slider(0, 10, value=0.3, step=0.05, label="w: classifier-free guidance weight")
                with gr.Column(visible=False) as classifier_box:
                    classifier = gr.Dropdown(of_kind("classifier"), value="fmnist-classifier",
                                             allow_custom_value=True, label="classifier (zoo name or folder)")
                    classifier_w = gr.Slider(0, 20, value=5, step=0.5, label="classifier guidance weight")
                    base_null = gr.Checkbox(True, label="guide the model's null class (w unused)")
                with gr.Column(visible=False) as control_box:
                    controlnet = gr.Dropdown(of_kind("controlnet"), value="fmnist-sketch", allow_custom_value=True,
                                             label="ControlNet (zoo name or folder)")
                    control_scale = gr.Slider(0, 3, value=1, step=0.05, label="control scale")
                    hint = gr.Radio(HINTS, value="auto", label="hint", elem_id="hint")
                with gr.Column(visible=False) as sdedit_box:
                    t0 = gr.Slider(0.05, 1, value=0.5, step=0.05, label="t0 (small = faithful, 1 = pure noise)")
                with gr.Column(visible=False) as repaint_box:
                    jump_length = gr.Slider(1, 50, value=5, step=1, label="jump length j")
                    jump_n_sample = gr.Slider(1, 20, value=2, step=1, label="jump n sample r (1 = no resampling)")
                with gr.Accordion("guidance after CFG", open=False, elem_id="frontier"):
                    guidance_rule = gr.Radio(list(RULES), value="cfg", label="how CFG's two predictions combine",
                                             info="apg: Sadat et al. 2024; cfg-zero-star: Fan et al. 2025; cfgpp: "
                                                  "Chung et al. 2024 (w is its λ in [0, 1], DDIM only)")
                    rescale = gr.Slider(0, 1, value=0, step=0.05, label="CFG rescale φ (Lin et al. 2023)")
                    guidance_interval = gr.Textbox("", label="guidance interval lo,hi in σ (empty = every step)",
                                                   placeholder="0.3,5")
                    guide_model = gr.Dropdown(["", *of_kind("model")], value="", allow_custom_value=True,
                                              label="autoguidance: a weaker model in place of ∅ (Karras et al. 2024)")
                    dynamic_threshold = gr.Checkbox(False, label="dynamic thresholding (Imagen, p = 0.995)")
                    cads = gr.Checkbox(False, label="CADS: anneal the condition with noise (Sadat et al. 2023)")
                with gr.Accordion("sampler", open=False, elem_id="sampler"):
                    sampler = gr.Radio(list(service.SAMPLERS), value="ddim", label="sampler",
                                       info="DDIM 20 steps here, for quick previews; the command line's sample "
                                            "defaults to dpmpp-2m-sde 15 logsnr, edit and inpaint to DDIM 50")
                    steps = gr.Slider(1, service.MAX_STEPS, value=20, step=1, label="steps", elem_id="steps")
                    seed = gr.Number(0, precision=0, minimum=0, label="seed")
                    n = gr.Slider(1, service.MAX_N, value=1, step=1, label="images")
            with gr.Column(scale=1):
                canvas = gr.ImageEditor(**kwargs_for(
                    gr.ImageEditor, value=canvas_value(None), type="numpy", image_mode="RGBA", sources=(),
                    label="canvas", elem_id="canvas", canvas_size=(CANVAS, CANVAS), format="png", layers=False,
                    transforms=(),
                    brush=gr.Brush(colors=["#ffffff", "#c0c0c0", "#808080", "#404040", "#000000"],
                                   default_color="#ffffff", color_mode="fixed")))
                invert = gr.Checkbox(False, label="invert the canvas (a dark drawing on white)")
                with gr.Row():
                    upload_button = gr.UploadButton(f"upload image (≤ {MAX_BYTES / 1e6:g} MB)",
                                                    file_types=["image"], type="filepath")
                    blank = gr.Button("blank canvas")
                with gr.Row():
                    index = gr.Number(0, precision=0, minimum=0, label="test image #")
                    stroke = gr.Checkbox(False, label="as a stroke painting")
                    load = gr.Button("load test image", elem_id="load")
            with gr.Column(scale=1):
                go = gr.Button("run", variant="primary", elem_id="run")
                result = gr.Image(**kwargs_for(gr.Image, label="result", elem_id="result", type="numpy",
                                               interactive=False, image_mode=None, format="png"))
                used = gr.Image(**kwargs_for(gr.Image, label="model input (hint, guide or masked image)",
                                             type="numpy", interactive=False, image_mode=None, format="png"))
                download = gr.File(label="full-resolution PNG", interactive=False, elem_id="download")
                info = gr.JSON(label="info")
        method.change(show, method, [classifier_box, control_box, sdedit_box, repaint_box], queue=False)
        upload_button.upload(upload, [upload_button, model], [canvas, cls], api_name="upload")
        blank.click(lambda: canvas_value(None), None, canvas, queue=False)
        load.click(load_test_image, [index, stroke], [canvas, cls], api_name="load_test_image")
        go.click(run, [method, model, cls, w, classifier, classifier_w, base_null, controlnet, control_scale, hint,
                       t0, jump_length, jump_n_sample, invert, sampler, steps, seed, n, canvas, prompt,
                       negative_prompt, guidance_rule, rescale, guidance_interval, guide_model, dynamic_threshold,
                       cads],
                 [result, used, download, info], api_name="run")
    demo.queue(max_size=max_queue, default_concurrency_limit=concurrency)
    return demo


def is_loopback(host: str) -> bool:
    """Whether host only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, block: bool = True, quiet: bool = False):
    """Serve on host:port, never through a share tunnel; uploads capped at MAX_BYTES, decoding at 2·MAX_SIDE² pixels."""
    Image.MAX_IMAGE_PIXELS = MAX_SIDE * MAX_SIDE  # PIL (also inside gradio) refuses images over twice this
    return demo.launch(**kwargs_for(demo.launch, server_name=host, server_port=port, share=False,
                                    prevent_thread_lock=not block, show_error=False, quiet=quiet,
                                    max_file_size=MAX_BYTES, inbrowser=False, ssr_mode=False, mcp_server=False))

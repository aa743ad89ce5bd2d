"""The web UI: service functions on the zoo models (no gradio needed), limits, the CLI, and the Gradio app."""

import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

from guidekit.cli import main
from guidekit.errors import GuidekitError
from guidekit.ui import inputs, service
from guidekit.ui.service import Params, run_method

TINY = dict(steps=3, n=2, seed=0, jump_length=1, jump_n_sample=2)


def drawing() -> np.ndarray:
    """A 256x256 RGBA canvas: a white trouser-like block on black."""
    a = np.zeros((256, 256, 4), dtype=np.uint8)
    a[..., 3] = 255
    a[40:220, 90:120, :3] = 255
    a[40:220, 136:166, :3] = 255
    a[40:70, 90:166, :3] = 255
    return a


def known_square() -> np.ndarray:
    """A 32x32 mask, 255 = known, with the centre 16x16 to regenerate."""
    m = np.full((32, 32), 255, dtype=np.uint8)
    m[8:24, 8:24] = 0
    return m


@pytest.mark.parametrize("method", service.METHODS)
def test_every_method_returns_finite_images_of_the_right_shape(method):
    image, _ = service.dataset_image(1)
    reports = []
    result = run_method(method, "fmnist-cfg", Params(cls="Trouser", w=0.3, **TINY), image=image,
                        mask=known_square(), sketch=drawing(), progress=lambda f, text: reports.append(f))
    assert result.images.shape == (2, 32, 32) and result.images.dtype == np.uint8
    assert result.info["method"] == method and result.info["seeds"] == [0, 1]
    assert all(v.shape == (32, 32) for v in result.inputs.values())
    assert reports and reports[-1] == 1.0 and reports == sorted(reports)


def test_repaint_keeps_the_known_pixels():
    image, _ = service.dataset_image(5)
    mask = known_square()
    result = run_method("repaint", "fmnist-cfg", Params(cls="Trouser", **TINY), image=image, mask=mask)
    known = mask >= 128
    assert (result.images[:, known] == image[known]).all()
    assert (result.images[:, ~known] != image[~known]).any()
    assert result.info["known_fraction"] == 0.75 and result.info["nfe"] == 3 + 1 * 1 * 2


def test_the_service_matches_the_experiments_functions():
    from guidekit.checkpoints import load_controlnet, load_model
    from guidekit.pipelines import control_samples
    from guidekit.pipelines import Guidance, SamplerSettings, sample_guided
    from guidekit.pipelines import inpaint_guided
    from guidekit.pipelines import edit_guided

    model = load_model("fmnist-cfg")
    p = Params(cls="Trouser", w=0.3, steps=2, n=1, seed=3, jump_length=1, jump_n_sample=2)
    settings, y, seeds = SamplerSettings(steps=2), torch.tensor([1]), [3]
    same = lambda result, x: np.array_equal(result.images, inputs.to_uint8(x))  # noqa: E731
    assert same(run_method("sample", "fmnist-cfg", p), sample_guided(model, y, seeds, Guidance(0.3), settings))
    guide = inputs.model_image(drawing(), 32, 1)
    assert same(run_method("sdedit", "fmnist-cfg", p, sketch=drawing()),
                edit_guided(model, guide, y, seeds, 0.5, Guidance(0.3), settings))
    image, _ = service.dataset_image(2)
    x0, m = inputs.model_image(image, 32, 1), inputs.known_mask(known_square(), 32)
    assert same(run_method("repaint", "fmnist-cfg", p, image=image, mask=known_square()),
                inpaint_guided(model, x0, m, y, seeds, Guidance(0.3), settings, 1, 2)[0])
    cn = load_controlnet("fmnist-sketch", model.net)
    hint = (guide + 1) / 2
    assert same(run_method("controlnet", "fmnist-cfg", p, sketch=drawing()),
                control_samples(model, [cn], [hint], y, seeds, 1.0, settings, guidance=Guidance(0.3)))


def test_the_null_class_and_zero_control_scale_run_the_plain_model():
    a = run_method("sample", "fmnist-cfg", Params(cls="null", w=3.0, steps=2, n=1))
    assert a.info["class"] == "null" and a.info["w"] == 0.0
    b = run_method("controlnet", "fmnist-cfg", Params(cls="null", control_scale=0, steps=2, n=1), sketch=drawing())
    assert np.array_equal(a.images, b.images)


def test_extracted_hints_and_inverted_drawings():
    garment, _ = service.dataset_image(0)
    r = run_method("controlnet", "fmnist-cfg", Params(controlnet="fmnist-canny", extract_hint=True, steps=2, n=1),
                   sketch=garment)
    assert r.info["condition"] == "canny" and set(np.unique(r.inputs["hint"])) <= {0, 255}
    paper = 255 - drawing()[..., :3]  # a dark drawing on white
    a = run_method("sdedit", "fmnist-cfg", Params(invert=True, steps=2, n=1), sketch=paper)
    b = run_method("sdedit", "fmnist-cfg", Params(steps=2, n=1), sketch=drawing())
    assert np.array_equal(a.inputs["guide"], b.inputs["guide"]) and np.array_equal(a.images, b.images)


def blank_canvas() -> np.ndarray:
    """The background of the blank canvas: opaque black RGBA, as canvas_value(None) makes it."""
    a = np.zeros((256, 256, 4), dtype=np.uint8)
    a[..., 3] = 255
    return a


def test_controlnet_extracts_the_hint_of_a_loaded_garment_and_takes_a_drawing_as_is():
    garment, _ = service.dataset_image(0)
    p = dict(steps=2, n=1)  # the default ControlNet: fmnist-sketch
    loaded = run_method("controlnet", "fmnist-cfg", Params(**p), image=garment, sketch=garment)
    extracted = run_method("controlnet", "fmnist-cfg", Params(extract_hint=True, **p), sketch=garment)
    assert loaded.info["extract_hint"] is True and np.array_equal(loaded.images, extracted.images)
    assert np.array_equal(loaded.inputs["hint"], extracted.inputs["hint"])
    drawn = run_method("controlnet", "fmnist-cfg", Params(**p), image=blank_canvas(), sketch=drawing())
    as_is = run_method("controlnet", "fmnist-cfg", Params(extract_hint=False, **p), sketch=drawing())
    assert drawn.info["extract_hint"] is False and np.array_equal(drawn.images, as_is.images)
    forced = run_method("controlnet", "fmnist-cfg", Params(extract_hint=False, **p), image=garment, sketch=garment)
    assert forced.info["extract_hint"] is False and not np.array_equal(forced.images, loaded.images)
    with pytest.raises(GuidekitError, match="extract hint must be True, False or None"):
        run_method("controlnet", "fmnist-cfg", Params(extract_hint="yes", **p), sketch=drawing())


def test_painted_layers_become_the_unknown_region():
    layer = np.zeros((256, 256, 4), dtype=np.uint8)
    layer[64:192, 64:192] = (255, 0, 0, 255)
    mask = inputs.mask_from_paint([layer], (256, 256))
    m = inputs.known_mask(mask, 32)
    assert m.shape == (1, 1, 32, 32) and m[0, 0, 8:24, 8:24].eq(0).all() and m.sum() == 32 * 32 - 16 * 16
    assert inputs.mask_from_paint([np.zeros((256, 256, 4), np.uint8)], (256, 256)) is None


@pytest.mark.parametrize("method, arrays, message", [
    ("sdedit", {}, "guide is missing"),
    ("controlnet", {}, "hint is missing"),
    ("repaint", {"mask": known_square()}, "image to inpaint is missing"),
    ("repaint", {"image": np.zeros((32, 32), np.uint8)}, "mask is missing"),
    ("repaint", {"image": np.zeros((32, 32), np.uint8), "mask": np.full((32, 32), 255, np.uint8)},
     "nothing to inpaint"),
    ("repaint", {"image": np.zeros((32, 32), np.uint8), "mask": np.zeros((32, 32), np.uint8)}, "whole image"),
    ("sdedit", {"sketch": np.zeros((2000, 40), np.uint8)}, "limit is 1024x1024"),
    ("sdedit", {"sketch": np.full((8, 8), 2.0, np.float32)}, "spans"),
])
def test_missing_or_bad_arrays_are_refused_clearly(method, arrays, message):
    with pytest.raises(GuidekitError, match=message):
        run_method(method, "fmnist-cfg", Params(steps=2, n=1), **arrays)


@pytest.mark.parametrize("method, change, message", [
    ("sample", {"steps": service.MAX_STEPS + 1}, "steps must be"),
    ("sample", {"n": service.MAX_N + 1}, "number of images"),
    ("sample", {"sampler": "euler"}, "unknown sampler"),
    ("sample", {"w": -1.0}, "w must be"),
    ("sample", {"cls": "spaceship"}, "unknown class"),
    ("sdedit", {"t0": 0.0}, "t0 must be above 0"),
    ("repaint", {"steps": 250, "jump_length": 10, "jump_n_sample": 10}, "model evaluations per image"),
    ("classifier", {"cls": "null"}, "choose one"),
    ("upscale", {}, "unknown method"),
])
def test_bad_settings_are_refused_clearly(method, change, message):
    with pytest.raises(GuidekitError, match=message):
        run_method(method, "fmnist-cfg", Params(**{"steps": 2, "n": 1, **change}))


def test_unknown_models_and_mismatched_controlnets_are_refused(tmp_path):
    with pytest.raises(GuidekitError, match="model not found"):
        run_method("sample", str(tmp_path / "nope"), Params(steps=1))
    with pytest.raises(GuidekitError, match="not a guidekit ControlNet"):
        run_method("controlnet", "fmnist-cfg", Params(controlnet="fmnist-cfg", steps=1), sketch=drawing())


def test_upload_limits(tmp_path):
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)).save(big)
    assert big.stat().st_size > inputs.MAX_BYTES
    with pytest.raises(GuidekitError, match="the limit is 2 MB"):
        inputs.read_upload(big)
    wide = tmp_path / "wide.png"
    Image.new("L", (1500, 20)).save(wide)  # tiny file, too many pixels across
    with pytest.raises(GuidekitError, match="1500x20 pixels; the limit is 1024x1024"):
        inputs.read_upload(wide)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    with pytest.raises(GuidekitError, match="cannot read the upload"):
        inputs.read_upload(junk)
    ok = tmp_path / "ok.png"
    Image.fromarray(drawing()).save(ok)
    a = inputs.read_upload(ok)
    assert a.shape == (256, 256, 4) and inputs.thumbnail(a, 32).shape == (32, 32)


def test_the_cli_explains_a_missing_gradio(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio now raises ImportError
    assert main(["ui", "--port", "7861"]) == 2
    assert "pip install 'guidekit[ui]'" in capsys.readouterr().err


def test_the_cli_refuses_bad_ports():
    with pytest.raises(SystemExit):
        main(["ui", "--port", "70000"])


# --- the Gradio app (skipped without gradio) ---


def test_the_app_builds_with_its_limits():
    pytest.importorskip("gradio")
    from guidekit.ui.app import build_app, canvas_arrays, canvas_value, is_loopback

    demo = build_app("cpu", max_queue=5, concurrency=2)
    assert demo.analytics_enabled is False and demo._queue.max_size == 5
    fns = demo.fns.values() if isinstance(demo.fns, dict) else demo.fns
    assert any(getattr(fn, "api_name", None) == "run" for fn in fns)
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")
    value = canvas_value(service.dataset_image(0)[0])
    image, mask, sketch = canvas_arrays(value)
    assert image.shape == (256, 256, 4) and mask is None and sketch is image


def test_the_cli_warns_off_loopback(monkeypatch, capsys):
    pytest.importorskip("gradio")
    import guidekit.ui.app as app

    calls = []
    monkeypatch.setattr(app, "build_app", lambda *a: "demo")
    monkeypatch.setattr(app, "launch", lambda *a, **k: calls.append(a))
    assert main(["ui", "--host", "0.0.0.0", "--port", "7999", "--device", "cpu"]) == 0
    assert calls == [("demo", "0.0.0.0", 7999)] and "not loopback" in capsys.readouterr().err
    assert main(["ui", "--device", "cpu"]) == 0
    assert calls[-1] == ("demo", "127.0.0.1", 7860) and "warning" not in capsys.readouterr().err


def test_a_busy_port_is_a_clear_error(monkeypatch, capsys):
    pytest.importorskip("gradio")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["ui", "--port", str(port), "--device", "cpu"]) == 2
    assert "pick another --port" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sample_args(seed: int, steps: int = 2, cls: str = "Trouser", canvas=None, method: str = "sample") -> tuple:
    """The /run endpoint's inputs, in the order of build_app's run()."""
    return (method, "fmnist-cfg", cls, 0.3, "fmnist-classifier", 5, True, "fmnist-sketch", 1, "auto", 0.5, 5, 2,
            False, "ddim", steps, seed, 1, canvas, "", "")


def serve(monkeypatch, tmp_path, **options):
    """(demo, client) of the app launched on a free loopback port."""
    client_lib = pytest.importorskip("gradio_client")
    pytest.importorskip("gradio")
    from guidekit.ui.app import build_app, launch

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # launch() lowers it; restored after
    demo = build_app("cpu", **options)
    launch(demo, "127.0.0.1", free_port(), block=False, quiet=True)
    return demo, client_lib.Client(demo.local_url, verbose=False, analytics_enabled=False, download_files=str(tmp_path))


@pytest.mark.filterwarnings("ignore:::gradio.queueing")
def test_twenty_concurrent_requests_through_gradio(tmp_path, monkeypatch):
    client_lib = pytest.importorskip("gradio_client")
    demo, client = serve(monkeypatch, tmp_path, max_queue=32, concurrency=2)
    try:
        assert demo.local_url.startswith("http://127.0.0.1:") and demo.share is False
        sketch = tmp_path / "sketch.png"
        Image.fromarray(drawing()).save(sketch)
        canvas = {"background": client_lib.handle_file(str(sketch)), "layers": [],
                  "composite": client_lib.handle_file(str(sketch))}

        def request(seed):
            method = "sdedit" if seed % 4 == 3 else "sample"
            args = sample_args(seed, canvas=canvas if method == "sdedit" else None, method=method)
            return method, seed, client.predict(*args, api_name="/run")

        start = time.time()
        with ThreadPoolExecutor(20) as pool:
            results = list(pool.map(request, range(20)))
        elapsed = time.time() - start
        for method, seed, (shown, used, png, info) in results:
            assert info["method"] == method and info["seeds"] == [seed]
            full = np.asarray(Image.open(png))
            assert full.shape == (32, 32) and Image.open(shown).size == (512, 512)
            if seed in (0, 3):  # the same as calling the service directly
                direct = run_method(method, "fmnist-cfg", Params(cls="Trouser", w=0.3, steps=2, seed=seed),
                                    sketch=np.asarray(Image.open(sketch)))
                assert np.array_equal(full, direct.images[0])
        assert elapsed < 120
        wide = tmp_path / "wide.png"
        Image.new("L", (1500, 20)).save(wide)
        with pytest.raises(Exception, match="limit is 1024x1024"):
            client.predict(client_lib.handle_file(str(wide)), "fmnist-cfg", api_name="/upload")
        with pytest.raises(Exception, match="unknown class"):
            client.predict(*sample_args(0, cls="spaceship"), api_name="/run")
    finally:
        demo.close()


@pytest.mark.filterwarnings("ignore:::gradio.queueing")
def test_a_full_queue_refuses_requests(tmp_path, monkeypatch):
    demo, client = serve(monkeypatch, tmp_path, max_queue=1, concurrency=1)
    try:
        def request(seed):
            try:
                return client.predict(*sample_args(seed, steps=15), api_name="/run")[3]["seeds"] == [seed]
            except Exception as e:
                return str(e)

        with ThreadPoolExecutor(6) as pool:
            outcomes = list(pool.map(request, range(6)))
        assert outcomes.count(True) >= 1 and any("queue" in str(o).lower() for o in outcomes), outcomes
    finally:
        demo.close()


def canvas_arg(client_lib, tmp_path, image: np.ndarray, name: str) -> dict:
    """An ImageEditor value for gradio_client: image as background and composite, nothing painted."""
    path = tmp_path / name
    Image.fromarray(image).save(path)
    return {"background": client_lib.handle_file(str(path)), "layers": [],
            "composite": client_lib.handle_file(str(path))}


@pytest.mark.filterwarnings("ignore:::gradio.queueing")
def test_a_loaded_test_image_sets_its_class_and_an_upload_sets_null(tmp_path, monkeypatch):
    client_lib = pytest.importorskip("gradio_client")
    demo, client = serve(monkeypatch, tmp_path)
    try:
        for index in (0, 3):
            canvas, cls = client.predict(index, False, api_name="/load_test_image")
            assert cls == service.dataset_class(index) == service.dataset_image(index)[1].split(" ", 1)[1]
        assert cls == "Dress" and Image.open(canvas["background"]).size == (256, 256)
        garment = tmp_path / "garment.png"
        Image.fromarray(service.dataset_image(0)[0]).save(garment)
        canvas, cls = client.predict(client_lib.handle_file(str(garment)), "fmnist-cfg", api_name="/upload")
        assert cls == "null"
        # the loaded canvas through /run: the default hint option extracts the hint from the garment
        value = canvas_arg(client_lib, tmp_path, np.asarray(Image.open(canvas["background"])), "loaded.png")
        info = client.predict(*sample_args(0, cls="null", canvas=value, method="controlnet"), api_name="/run")[3]
        assert info["extract_hint"] is True and info["class"] == "null"
    finally:
        demo.close()


def error_lines(err: str) -> list[str]:
    """The lines of a server log that report a request's error."""
    return [line for line in err.splitlines() if "error" in line.lower() or "Traceback" in line]


@pytest.mark.filterwarnings("ignore:::gradio.queueing")
def test_user_errors_log_one_line_and_unexpected_ones_a_traceback(tmp_path, monkeypatch, capfd):
    pytest.importorskip("gradio_client")
    demo, client = serve(monkeypatch, tmp_path)
    try:
        capfd.readouterr()
        with pytest.raises(Exception, match="unknown class 'spaceship'"):
            client.predict(*sample_args(0, cls="spaceship"), api_name="/run")
        with pytest.raises(Exception, match="image index must be a whole number"):
            client.predict(10**6, False, api_name="/load_test_image")
        time.sleep(0.5)  # the server thread's log lands after the client's reply
        err = capfd.readouterr().err
        assert "Traceback" not in err, err
        lines = error_lines(err)
        assert len(lines) == 2 and lines[0].startswith("guidekit ui: error: unknown class 'spaceship'"), err
        assert lines[1].startswith("guidekit ui: error: image index must be a whole number"), err

        def broken(*args, **kwargs):
            raise RuntimeError("a bug, not the user's fault")
        monkeypatch.setattr(service, "run_method", broken)
        with pytest.raises(Exception):
            client.predict(*sample_args(0), api_name="/run")
        time.sleep(0.5)
        err = capfd.readouterr().err
        assert "Traceback" in err and "RuntimeError: a bug, not the user's fault" in err, err
        assert "guidekit ui: error" not in err
    finally:
        demo.close()


def test_every_method_takes_the_guidance_after_cfg():
    """The UI's accordion of methods after CFG reaches the pipelines: rule, rescale, interval, autoguidance, CADS."""
    frontier = dict(guidance_rule="apg", rescale=0.5, guidance_interval="0.5,inf", guide_model="fmnist-cfg",
                    cads=True, dynamic_threshold=True)
    r = run_method("sample", "fmnist-cfg", Params(cls="Trouser", w=0.5, steps=2, n=1, **frontier))
    assert r.info["rule"] == "apg" and r.info["interval"] == [0.5, "inf"] and r.info["cads"] == [0.6, 0.9]
    assert r.info["guide_model"].endswith("fmnist-cfg") and r.info["dynamic_threshold"] == 0.995
    plain = run_method("sample", "fmnist-cfg", Params(cls="Trouser", w=0.5, steps=2, n=1))
    assert not np.array_equal(r.images, plain.images)
    cfgpp = run_method("sample", "fmnist-cfg", Params(cls="Trouser", w=0.5, steps=2, n=1, guidance_rule="cfgpp"))
    assert cfgpp.info["rule"] == "cfgpp"
    with pytest.raises(GuidekitError, match="guidance interval"):
        run_method("sample", "fmnist-cfg", Params(cls="Trouser", w=0.5, steps=2, n=1, guidance_interval="5,1"))

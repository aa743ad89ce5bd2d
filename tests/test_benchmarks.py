"""benchmarks/conv_layouts.py reads Inductor's generated code right (the layout of each convolution's tensors);
benchmarks/repaint_gaussian.py runs and its exact-denoiser table behaves; benchmarks/roofline.py cuts recorded ops
into kernels and bounds their time right; benchmarks/fid_vs_nfe.py merges sweep folders into one plot."""

import sys
from pathlib import Path

import pytest
from benchmark_module import load_benchmark


_load = load_benchmark


conv_layouts = _load("conv_layouts")


@pytest.mark.parametrize("shape, stride, kind", [
    ((4, 64, 32, 32), (65536, 1, 2048, 64), "NHWC"),
    ((4, 64, 32, 32), (65536, 1024, 32, 1), "NCHW"),
    ((4, 1, 32, 32), (1024, 1, 32, 1), "dense"),  # one channel: both layouts at once
    ((128, 128, 1, 1), (128, 1, 1, 1), "dense"),  # one pixel
    ((4, 64, 32, 32), (131072, 1, 4096, 128), "strided"),  # the first 64 channels of a 128-channel NHWC tensor
    ((4, 64, 32, 32), (65536, 32, 2048, 1), "strided"),
    ((64,), (1,), "unknown"),
])
def test_layout_names_dense_and_strided_tensors(shape, stride, kind):
    assert conv_layouts.layout(shape, stride) == kind


CODE = """
        assert_size_stride(primals_1, (4, 64, 32, 32), (65536, 1, 2048, 64), 'input')
        buf2 = empty_strided_cuda((64, 64, 3, 3), (576, 1, 192, 64), torch.bfloat16)
        buf3 = extern_kernels.convolution(primals_1, buf2, None, stride=(1, 1), padding=(1, 1))
        buf5 = empty_strided_cuda((4, 128, 32, 32), (131072, 1, 4096, 128), torch.bfloat16)
        buf6 = buf5; del buf5  # reuse
        buf7 = torch.ops.aten.convolution_backward.default(reinterpret_tensor(buf6, (4, 64, 32, 32), (131072, 1, 4096, 128), 0), primals_1, buf2, [64], (1, 1))
        buf8 = torch.ops.aten.convolution_backward.default(buf6, buf3, buf2, [64], (1, 1))
"""  # noqa: E501


def test_scan_classifies_every_convolution_call():
    calls = conv_layouts.scan(CODE.split("\n"))
    assert [(op, [k for k, _ in args]) for _, op, args in calls] == [
        ("fwd", ["NHWC", "NHWC"]),
        ("bwd", ["strided", "NHWC", "NHWC"]),  # a channel slice of buf6, the gradient of a concatenation
        ("bwd", ["NHWC", "unknown", "NHWC"]),  # buf3 is an output without an assert: not guessed
    ]


def test_report_counts_strided_calls(tmp_path, capsys):
    code = tmp_path / "c.py"
    code.write_text(CODE)
    assert conv_layouts.report([str(code)]) == 1
    assert "1 convolution calls with a strided argument" in capsys.readouterr().out


def test_repaint_gaussian_table_shows_resampling_reduce_the_bias():
    """benchmarks/repaint_gaussian.py runs as documented and its exact-denoiser rows move toward p(b | a) with r."""
    import subprocess

    root = Path(__file__).parent.parent
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "repaint_gaussian.py"), "--n", "2000", "--rows",
                          "ddpm:20:100:1,ddpm:20:100:4"], capture_output=True, text=True, check=True, cwd=root)
    rows = [line.split("|")[1:-1] for line in out.stdout.splitlines() if line.startswith("| ddpm")]
    assert [(r[3].strip(), r[4].strip()) for r in rows] == [("1", "20"), ("4", "74")]  # NFE = 20 + 3·2·9
    bias = [abs(float(r[5])) for r in rows]
    assert bias[0] > 0.3 and bias[1] < bias[0] - 0.05  # standard error ≈ 0.0035


roofline = _load("roofline")


def _chain(batch: int = 2, backward: bool = False):
    """conv 4→8, GroupNorm, SiLU, conv 8→8 at 16×16 (training: MSE to zeros), recorded."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.manual_seed(0)
    c1, c2, gn = nn.Conv2d(4, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.GroupNorm(2, 8)
    x, zero = torch.randn(batch, 4, 16, 16), torch.zeros(batch, 8, 16, 16)
    if not backward:
        return roofline.record(lambda: c2(F.silu(gn(c1(x)))))
    return roofline.record(lambda: F.mse_loss(c2(F.silu(gn(c1(x)))), zero), backward=True)


def test_roofline_cuts_a_conv_norm_silu_chain_into_kernels():
    """eager: 4 kernels; fused: GroupNorm + SiLU read the conv's output once and write one tensor; ceiling: 2."""
    act = 2 * 8 * 16 * 16 * 2  # a (2, 8, 16, 16) activation in bf16 bytes
    eager, fused, ceiling = (roofline.kernels(_chain(), how) for how in ("eager", "fused", "ceiling"))
    assert [k[2] for k in eager] == [True, False, False, True]
    assert [k[0] for k in ceiling] == [2 * 2 * 8 * 256 * 4 * 9, 2 * 2 * 8 * 256 * 8 * 9]  # 2·B·Cout·HW·Cin·k²
    assert ceiling == [k for k in eager if k[2]] == [k for k in fused if k[2]]
    assert [k for k in fused if not k[2]] == [(0, act + 2 * 8 * 2 + act, False)]  # in, GN weight + bias, out


def test_roofline_prologue_cut_keeps_only_a_statistics_pass_per_normalization():
    """prologue: GroupNorm + SiLU go into the second convolution's loads, and only GroupNorm's statistics pass (one
    read of its input and weights) is left; a chain with no reduction between its matmuls leaves nothing."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    act = 2 * 8 * 16 * 16 * 2
    prologue = roofline.kernels(_chain(), "prologue")
    assert [k for k in prologue if k[2]] == [k for k in roofline.kernels(_chain(), "ceiling")]
    assert [k for k in prologue if not k[2]] == [(0, act + 2 * 8 * 2, False)]
    c1, c2, x = nn.Conv2d(4, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), torch.randn(2, 4, 16, 16)
    assert all(k[2] for k in roofline.kernels(roofline.record(lambda: c2(F.silu(c1(x)) + 1)), "prologue"))
    with pytest.raises(AssertionError, match="not one of"):
        roofline.kernels(_chain(), "prolog")


def test_roofline_fused_training_writes_what_the_backward_reads():
    """In training the fused GroupNorm + SiLU kernel also writes the GroupNorm output and its statistics (the
    backward reads them); the backward's SiLU + GroupNorm gradients fuse and write the weights' gradients."""
    act = 2 * 8 * 16 * 16 * 2
    ops = _chain(backward=True)
    fused = [k[1] for k in roofline.kernels(ops, "fused") if not k[2]]
    gn_silu = act + 2 * 8 * 2 + 2 * act + 2 * (2 * 2) * 2  # in, weights; GN out and SiLU out; mean, rstd (B·groups)
    assert gn_silu in fused
    # reads: dy, GN out, GN in, mean + rstd, GN weight; writes: dx, dweight + dbias
    assert 3 * act + 2 * (2 * 2) * 2 + 8 * 2 + act + 2 * 8 * 2 in fused


def test_roofline_scales_kernels_to_any_batch_exactly():
    big = roofline.kernels(_chain(8, backward=True), "fused")
    scaled = roofline.scale(roofline.kernels(_chain(2, True), "fused"), roofline.kernels(_chain(4, True), "fused"),
                            2, 4, 8)
    assert [(pytest.approx(f), pytest.approx(b), m) for f, b, m in scaled] == big


def test_roofline_bound_is_the_slower_of_compute_and_memory_per_kernel():
    r = roofline.bound([(2e12, 1e9, True), (0, 3e9, False)], peak=1e15, bw=1e12)
    assert r["sec"] == pytest.approx(2e-3 + 3e-3) and r["matmul_sec"] == pytest.approx(2e-3)
    assert r["other_sec"] == pytest.approx(3e-3) and r["kernels"] == 2


def test_roofline_does_not_fuse_across_a_matmul():
    """a = silu(x); y = a + conv(a); conv(gn(y)): the add needs the conv's output, so it cannot join the SiLU's
    kernel, though it reads the SiLU's output; it fuses with the GroupNorm after it instead."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    c1, c2, gn = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.GroupNorm(2, 8)
    x, act = torch.randn(2, 8, 16, 16), 2 * 8 * 16 * 16 * 2

    def forward():
        a = F.silu(x)
        return c2(gn(a + c1(a)))

    fused = [k[1] for k in roofline.kernels(roofline.record(forward), "fused") if not k[2]]
    assert fused == [2 * act, 3 * act + 2 * 8 * 2]  # silu: x in, a out; add + GN: a, conv out, weights in, one out


def test_roofline_measures_a_matmul_peak_and_a_copy_bandwidth():
    flops, bandwidth = roofline.measure("cpu", 64)
    assert flops > 1e6 and bandwidth > 1e6  # FLOP/s and bytes/s of this machine, whatever it is


def _steps_folder(root, sampler, spacing, rows, n=20):
    import json

    sub = root / sampler
    sub.mkdir(parents=True)
    (sub / "sweep.json").write_text(json.dumps({"n": n, "seed": 0, "w": 0.0, "sampler": sampler,
                                                "settings": {"sampler": sampler, "spacing": spacing}}))
    (sub / "results.csv").write_text("nfe,n,fid,kid\n" + "".join(f"{k},{n},{f},0.001\n" for k, f in rows))


def test_fid_vs_nfe_merges_folders_and_draws_a_row_from_its_first_machine(tmp_path, capsys):
    fid_vs_nfe = _load("fid_vs_nfe")
    _steps_folder(tmp_path / "gpu", "ddpm", "trailing", [(1000, 1.0)])
    _steps_folder(tmp_path / "gpu", "dpmpp-2m-sde", "trailing", [(10, 1.5), (15, 1.2)])
    _steps_folder(tmp_path / "cpu", "dpmpp-2m-sde", "trailing", [(15, 1.3), (20, 1.1)])
    _steps_folder(tmp_path / "cpu2", "dpmpp-2m-sde", "logsnr", [(15, 0.9)])
    _steps_folder(tmp_path / "cpu3", "dpmpp-2m-sde", "logsnr", [(10, 1.2)])
    series, styles = fid_vs_nfe.collect([("GPU", tmp_path / "gpu"), ("CPU", tmp_path / "cpu"),
                                         ("CPU", tmp_path / "cpu2"), ("CPU", tmp_path / "cpu3")])
    assert {k: [(r["nfe"], r["fid"]) for r in v] for k, v in series.items()} == {
        "DDPM GPU (baseline)": [(1000, 1.0)],
        "SDE-DPM-Solver++(2M), logsnr (CPU)": [(10, 1.2), (15, 0.9)],  # two folders, one curve
        "SDE-DPM-Solver++(2M), trailing (CPU)": [(20, 1.1)],  # NFE 15 ran on the GPU first
        "SDE-DPM-Solver++(2M), trailing (GPU)": [(10, 1.5), (15, 1.2)]}
    assert "FID 1.20 on GPU, 1.30 on CPU (not drawn)" in capsys.readouterr().out
    assert styles["SDE-DPM-Solver++(2M), logsnr (CPU)"]["markerfacecolor"] == "white"  # the second machine: hollow
    out = tmp_path / "plot.png"
    assert fid_vs_nfe.main(["--out", str(out), f"GPU={tmp_path / 'gpu'}", f"CPU={tmp_path / 'cpu'}"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fid_vs_nfe_refuses_folders_that_scored_other_images(tmp_path, capsys):
    fid_vs_nfe = _load("fid_vs_nfe")
    _steps_folder(tmp_path / "a", "ddpm", "trailing", [(1000, 1.0)])
    _steps_folder(tmp_path / "b", "ddim", "trailing", [(10, 2.0)], n=40)
    _steps_folder(tmp_path / "c", "ddim", "trailing", [(10, 2.0)])
    out = tmp_path / "plot.png"
    assert fid_vs_nfe.main(["--out", str(out), f"X={tmp_path / 'a'}", f"Y={tmp_path / 'b'}"]) == 2
    assert "only rows with the same n, seed and w" in capsys.readouterr().err
    assert fid_vs_nfe.main(["--out", str(out), f"Y={tmp_path / 'c'}"]) == 2  # no DDPM reference row
    assert "exactly one DDPM reference row" in capsys.readouterr().err
    assert fid_vs_nfe.main(["--out", str(out), f"{tmp_path / 'a'}"]) == 2
    assert "is not MACHINE=FOLDER" in capsys.readouterr().err
    assert fid_vs_nfe.main(["--out", str(out), f"X={tmp_path / 'missing'}"]) == 2
    assert not out.exists()


def test_sd_vs_diffusers_times_both_sides_on_the_same_tiny_pipeline(capsys):
    """benchmarks/sd_vs_diffusers.py: guidekit and StableDiffusionPipeline on one tiny pipeline folder, both timed,
    the same images to float rounding (both sides in this process, to keep it to seconds)."""
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    sd = _load("sd_vs_diffusers")
    r = sd.main(["--unet", "tiny", "--steps", "2", "--batch", "1", "--repeats", "1", "--in-process", "--device", "cpu"])
    assert [row["side"] for row in r["rows"]] == ["guidekit", "diffusers"]
    assert all(row["img_s"] > 0 for row in r["rows"]) and r["ratio"] > 0
    assert r["max_abs_diff"] < 1e-3 and r["image_shape"] == [1, 3, 16, 16]
    out = capsys.readouterr().out
    assert "| guidekit / diffusers |" in out and "max abs difference" in out


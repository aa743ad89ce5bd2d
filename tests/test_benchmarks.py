"""benchmarks/conv_layouts.py reads Inductor's generated code right (the layout of each convolution's tensors);
benchmarks/repaint_gaussian.py runs and its exact-denoiser table behaves."""

import importlib.util
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("conv_layouts", Path(__file__).parent.parent / "benchmarks" /
                                              "conv_layouts.py")
conv_layouts = importlib.util.module_from_spec(spec)
spec.loader.exec_module(conv_layouts)


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
    import sys

    root = Path(__file__).parent.parent
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "repaint_gaussian.py"), "--n", "2000", "--rows",
                          "ddpm:20:100:1,ddpm:20:100:4"], capture_output=True, text=True, check=True, cwd=root)
    rows = [line.split("|")[1:-1] for line in out.stdout.splitlines() if line.startswith("| ddpm")]
    assert [(r[3].strip(), r[4].strip()) for r in rows] == [("1", "20"), ("4", "74")]  # NFE = 20 + 3·2·9
    bias = [abs(float(r[5])) for r in rows]
    assert bias[0] > 0.3 and bias[1] < bias[0] - 0.05  # standard error ≈ 0.0035

"""Every guidekit command line quoted in the README, run in order as a new user would type it, at tiny settings,
on a machine without Fashion-MNIST: each ends with a result or a clear error, and nothing is deleted that the
command did not create itself."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from guidekit.cli import main
from guidekit.data import idx

README = Path(__file__).resolve().parents[1] / "README.md"
PLACEHOLDER = re.compile(r"\b[A-Z][A-Z0-9_]*\b|[\[\]|…]|\.\.\.")  # MODEL, DIR, N, [--x], a|b: a synopsis
SAMPLING = ("sample", "control", "edit", "inpaint", "restore", "eval")


def readme_commands() -> list[str]:
    """The README's concrete guidekit command lines: in sh blocks, then inline `guidekit ...` code spans."""
    text = README.read_text()
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        lines += [line.split("  #")[0].strip() for line in block.splitlines() if line.startswith("guidekit ")]
    spans = [s for s in re.findall(r"`(guidekit [^`]+)`", text) if not PLACEHOLDER.search(s.replace("guidekit", ""))]
    return lines + [s for s in spans if s not in lines]


def tiny(argv: list[str]) -> list[str]:
    """The same command at test size: few images and steps, the tiny preset."""
    command = argv[0] if argv[0] != "sweep" else "sweep"
    n = {"sweep": "20", "eval": "10"}.get(command, "1")
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        value = {"--n": n, "--steps": "1", "--preset": "tiny", "--pairs": "8"}.get(a)
        if value is not None and i + 1 < len(argv):
            out += [a, value]
            i += 2
            continue
        out.append(a)
        i += 1
    if command in SAMPLING + ("sweep",) and "--steps" not in out:
        out += ["--steps", "2"]
    if command == "train":
        out += ["--batch-size", "4", "--no-progress"]
    if command in SAMPLING + ("sweep",):
        out.append("--no-progress")
    return out


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_the_readme_quotes_runnable_commands():
    commands = readme_commands()
    assert len(commands) >= 12
    for verb in ("sample", "control", "edit", "inpaint", "eval", "sweep", "train", "zoo"):
        assert any(c.split()[1] == verb for c in commands), verb


@pytest.mark.slow
def test_every_readme_command_runs_on_a_machine_without_the_dataset(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(idx.HIDE_SYSTEM_ENV, "1")
    monkeypatch.delenv(idx.ENV_VAR, raising=False)
    monkeypatch.setenv("GUIDEKIT_CACHE", str(tmp_path / ".cache"))
    results = []
    for line in readme_commands():
        argv = tiny(shlex.split(line)[1:])
        before = files(tmp_path)
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
        err = capsys.readouterr().err
        results.append((line, code))
        assert code in (0, 2), (line, code, err)
        assert "Traceback" not in err, (line, err)
        if code == 2:
            assert re.search(r"^guidekit [\w-]+: error: ", err, re.M), (line, err)
        after = files(tmp_path)
        gone = [f for f in before if f not in after or after[f] != before[f]]
        out = argv[argv.index("--out") + 1].rstrip("/") if "--out" in argv else None
        assert all(out and (f == out or f.startswith(out + "/")) for f in gone), (line, gone)
    done = [line for line, code in results if code == 0]
    assert sum("fmnist-cfg" in line for line in done) >= 9, results  # the zoo tour works without any dataset


@pytest.mark.parametrize("doc", ["README.md", "docs/architecture.md"])
def test_the_python_examples_of_the_docs_run(doc, tmp_path, monkeypatch, capsys):
    """Every python block of the README and the architecture page runs as written (on the zoo model)."""
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", (README.parent / doc).read_text(), re.S)
    assert blocks
    for code in blocks:
        exec(compile(code, doc, "exec"), {"__name__": "docs_example"})

"""benchmarks/NAME.py imported as a module by the tests that check a benchmark script."""

import importlib.util
import sys
from pathlib import Path


def load_benchmark(name):
    """benchmarks/NAME.py as a module (registered in sys.modules: a dataclass in it looks its module up)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parent.parent / "benchmarks" / f"{name}.py")
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

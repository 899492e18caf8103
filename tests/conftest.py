import importlib.util
import os
import shutil
import sys
import tempfile
import types
from pathlib import Path

import pytest
import torch

# The measured formulation choice times candidates on first calls and keeps the winners in the user's
# cache directory: off for the suite (the hand rule decides, deterministically), and any cache file a
# test writes goes to a folder of the session's own. Set before fmdconv reads them.
os.environ["FMDCONV_MEASURE"] = "0"
_CACHE_DIR = tempfile.mkdtemp(prefix="fmdconv-test-cache-")
os.environ["FMDCONV_CACHE_DIR"] = _CACHE_DIR

# The triton formulation's tests (test_triton.py) run its kernels in Triton's CPU interpreter. Triton
# reads this when the kernels are decorated, so it is set before any test can import
# fmdconv.layers.triton_conv; not where CUDA is present (inductor's generated kernels would be
# interpreted too).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_configure(config):
    # Every model under test is tiny: one thread is faster, and two OpenMP threads spin badly when
    # the machine is busy (a shared CI box), turning seconds into minutes.
    torch.set_num_threads(1)


def pytest_unconfigure(config):
    shutil.rmtree(_CACHE_DIR, ignore_errors=True)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def benchmark_script(monkeypatch):
    """Loads ``benchmarks/<name>.py`` as a module (registered in ``sys.modules`` for the test, which a
    dataclass in the script needs), so a test can call its ``main``."""

    def load(name: str) -> types.ModuleType:
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, module)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def measurements(monkeypatch) -> list[tuple[str, ...]]:
    """The candidate lists the measured formulation choice times, each measurement one round."""
    from fmdconv.layers import formulations

    timed: list[tuple[str, ...]] = []
    measure = formulations.measure_formulations

    def recording(*args, **kwargs):
        timed.append(args[5])
        return measure(*args, **{**kwargs, "rounds": 1})

    monkeypatch.setattr(formulations, "measure_formulations", recording)
    return timed


@pytest.fixture
def saved_figures(monkeypatch):
    """Every matplotlib figure that fmdconv.viz writes during the test, in order (they are still saved)."""
    from fmdconv.viz import plots

    figures = []
    save = plots._save

    def recording_save(figure, out):
        figures.append(figure)
        return save(figure, out)

    monkeypatch.setattr(plots, "_save", recording_save)
    return figures

"""Shared fixtures: tiny trained run directories and the real names data (when present).

`tiny_run_dir(arch, ...)` trains a small model for one epoch on a small embedded
dataset (a fraction of a second) and returns its RUN_DIR; each distinct set of
arguments is built once per test session. Treat the returned folders as read-only:
copy one (shutil.copytree) before changing it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# The real data lives next to the repository, never inside it (see ../shared/data/README.md).
NAMES_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "names"

TINY_SIZE = 400  # samples in the tiny embedded dataset
TINY_HIDDEN = 16


def pytest_addoption(parser):
    parser.addoption(
        "--run-slow",
        action="store_true",
        help="Also run tests marked slow (full default trainings, about a minute each).",
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(
        reason="slow (full default trainings, the long parity sweeps); run with --run-slow"
    )
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def one_torch_thread():
    """Run the test with one torch thread, restoring the previous count after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory):
    """Factory: tiny_run_dir(arch="cell", nonlinearity="tanh", hidden_size=16,
    num_layers=None, epochs=1, seed=0) -> Path of a trained RUN_DIR (read-only)."""
    from rnn_export.data import embedded_spec
    from rnn_export.training import train

    built: dict[tuple, Path] = {}

    def make(
        arch: str = "cell",
        nonlinearity: str = "tanh",
        hidden_size: int = TINY_HIDDEN,
        num_layers: int | None = None,
        epochs: int = 1,
        seed: int = 0,
    ) -> Path:
        key = (arch, nonlinearity, hidden_size, num_layers, epochs, seed)
        if key not in built:
            name = "-".join(str(k) for k in key)
            out = tmp_path_factory.mktemp("runs") / name
            train(
                arch,
                out,
                data=embedded_spec(seed=seed, size=TINY_SIZE),
                epochs=epochs,
                hidden_size=hidden_size,
                num_layers=num_layers,
                nonlinearity=nonlinearity,
                seed=seed,
                progress=False,
            )
            built[key] = out
        return built[key]

    return make


@pytest.fixture(scope="session")
def names_dir() -> Path:
    """../shared/data/names, or skip the test when it is absent (as on a user's machine)."""
    if not NAMES_DIR.is_dir():
        pytest.skip(f"real data not present at {NAMES_DIR} (it lives outside the repository)")
    return NAMES_DIR


@pytest.fixture(scope="session")
def frames_data() -> Path:
    """../shared/data (its japanese_vowels/ and basic_motions/ .ts files), or skip the test."""
    shared = NAMES_DIR.parent
    for name in ("japanese_vowels", "basic_motions"):
        if not (shared / name).is_dir():
            pytest.skip(
                f"real data not present at {shared / name} (it lives outside the repository)"
            )
    return shared

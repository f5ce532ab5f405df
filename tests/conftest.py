"""Shared fixtures: a tiny trained run, the real Oxford-IIIT Pet sample, subprocess and network helpers.

Everything here is sized for a 2-core CPU: 64 px images, the narrowest MobileNetV2 (alpha 0.35) and
16-filter decoder blocks.
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

PETS_SAMPLE = Path(__file__).resolve().parents[2] / "shared/data/oxford-pets-sample"

# Keyword arguments of the smallest U-Net worth testing (fast to build and to run on a CPU).
TINY_MODEL = dict(encoder_weights=None, alpha=0.35, decoder_filters=(16, 16, 16, 16))


@pytest.fixture(scope="session")
def tiny_model_kwargs():
    """`build_unet` keyword arguments of a tiny, randomly initialized U-Net (add input_size and
    num_classes)."""
    return dict(TINY_MODEL)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A finished one-epoch quickstart run on synthetic pets at 64 px, with its epoch preview;
    returns the run folder."""
    from unet_tf.config import preset
    from unet_tf.train import train

    config = preset("quickstart", epochs=1, image_size=64, synthetic_train_examples=32,
                    synthetic_val_examples=16, batch_size=8, alpha=0.35,
                    decoder_filters=(16, 16, 16, 16), seed=0, epoch_previews=True)
    return train(config, run_dir=tmp_path_factory.mktemp("tiny_run") / "run", verbose=0)


@pytest.fixture(scope="session")
def pets_sample():
    """The real 400-image Oxford-IIIT Pet sample in its original layout (skips when absent)."""
    if not (PETS_SAMPLE / "images").is_dir() or not (PETS_SAMPLE / "annotations").is_dir():
        pytest.skip(f"the Oxford-IIIT Pet sample is not at {PETS_SAMPLE}")
    return PETS_SAMPLE


def _reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def network_reachable():
    """`network_reachable(host)`: True when a TCP connection to host:443 opens within 3 s."""
    cache = {}

    def check(host: str) -> bool:
        if host not in cache:
            cache[host] = _reachable(host)
        return cache[host]

    return check


@pytest.fixture(scope="session")
def run_python():
    """`run_python(args, cwd, timeout=600, env=None)`: runs this Python (whose environment has
    unet_tf installed) in a new process; returns (CompletedProcess, seconds). The timeout only
    catches a hang: a busy machine may take minutes where an idle one takes seconds."""

    def run(args, cwd, timeout=600, env=None):
        full_env = {**os.environ, **(env or {})}
        full_env = {key: value for key, value in full_env.items() if value != ""}
        started = time.perf_counter()
        process = subprocess.run([sys.executable, *args], cwd=cwd, env=full_env,
                                 capture_output=True, text=True, timeout=timeout)
        return process, time.perf_counter() - started

    return run


def pytest_configure(config):
    # Keras 3.15 + numpy 2 warn from inside keras (backend/tensorflow/core.py) on every variable it
    # saves; nothing the project can act on, and it buries real warnings.
    config.addinivalue_line(
        "filterwarnings", "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

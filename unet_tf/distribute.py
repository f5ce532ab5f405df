"""Choosing a tf.distribute strategy: one device, several GPUs, several machines, or a TPU.

    --strategy auto          MirroredStrategy with more than one GPU, TPUStrategy on a TPU runtime,
                             the default (one device) otherwise
    --strategy default       one device
    --strategy mirrored      every local GPU (or CPU) of this machine
    --strategy multi_worker  several machines; each runs the same command with its own TF_CONFIG
    --strategy tpu           a Cloud or Colab TPU

Under a strategy the model, optimizer, loss and metrics are built inside `strategy.scope()`, the
batch size of the configuration is per replica (the global batch is it times the number of
replicas), BatchNorm statistics are synchronized across replicas, and the Dice loss sums its
overlaps over all replicas before dividing, so it is the Dice of the global batch.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from unet_tf.config import STRATEGIES


def _tpu_runtime() -> bool:
    """A TPU is attached: Colab and Cloud TPU VMs set these, or expose the accelerator device."""
    return bool(os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR")
                or os.path.exists("/dev/accel0") or os.path.exists("/dev/vfio/0"))


def resolve_strategy(name: str) -> str:
    """The strategy `name` stands for on this machine: auto made concrete (several GPUs:
    mirrored; a TPU runtime: tpu; else default)."""
    if name not in STRATEGIES:
        raise ValueError(f"strategy={name!r}: expected one of {', '.join(STRATEGIES)}")
    if name != "auto":
        return name
    if _tpu_runtime():
        return "tpu"
    return "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "default"


def make_strategy(name: str) -> tf.distribute.Strategy:
    name = resolve_strategy(name)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
                "strategy='multi_worker' needs the TF_CONFIG environment variable on every "
                'machine, e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", '
                '"host2:12345"]}, "task": {"type": "worker", "index": 0}}\' (index 1 on host2)'
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=os.environ.get("TPU_NAME", ""))
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def is_chief() -> bool:
    """Whether this process writes the run folder: the chief, or worker 0 when there is none."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    task = config.get("task", {})
    if not task:
        return True
    if task.get("type") == "chief":
        return True
    has_chief = "chief" in config.get("cluster", {})
    return task.get("type") == "worker" and task.get("index", 0) == 0 and not has_chief


def prepare_multi_worker_fit(model, strategy, example_batch) -> None:
    """Lets Keras 3's `fit` run under MultiWorkerMirroredStrategy, which it fails at twice
    (keras-team/keras#20585, tensorflow/tensorflow#72388: open since Keras 3.0 / TensorFlow 2.16).

    It replaces two private methods of the model, `_maybe_symbolic_build` (with Keras' own
    `_symbolic_build`) and wraps `train_step`/`test_step`; checked on Keras 3.13.2 (TensorFlow
    2.19.0) and Keras 3.15.1 (TensorFlow 2.21.0) by tests/test_distribute.py's two-worker test,
    which CI runs on both stacks. A newer Keras may rename them: run that test first.

    1. Before the first step `fit` builds the metrics from one batch that it first reduces across
       workers, and that reduction fails on the (image, mask) pair ("Attempt to convert a value
       (PerReplica...) to a Tensor"): the model, loss and metrics are built here from a batch of
       the right shapes instead.
    2. After each step it averages every logged value across workers along axis 0, which scalars
       do not have ("Invalid reduction dimension 0"): the steps here log each value as a
       one-element vector, which that average turns back into the scalar.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return

    def build(iterator=None, data_batch=None):
        with strategy.scope():
            model._symbolic_build(data_batch=example_batch)

    def as_vectors(step):
        def wrapped(data):
            return {name: tf.reshape(value, [1]) for name, value in step(data).items()}
        return wrapped

    model._maybe_symbolic_build = build
    model.train_step = as_vectors(model.train_step)
    model.test_step = as_vectors(model.test_step)


def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """In-memory datasets have no files to split between workers: each worker takes every n-th
    batch instead (the automatic policy would try files first and warn)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)

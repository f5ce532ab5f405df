"""tf.distribute on this CPU: two logical devices agree with one; two local workers train together
and only the chief writes a run folder."""

import json
import os
import socket
import subprocess
import sys

import pytest

# Runs in its own process: logical devices must be set before TensorFlow starts.
MIRRORED_VS_ONE_DEVICE = r"""
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np
import unet_tf
from unet_tf.config import preset
from unet_tf.data import make_dataset
from unet_tf.data.synthetic import make_example
from unet_tf.data.preprocess import resize_image, resize_mask, trimap_to_classes
from unet_tf.metrics import metrics_for
from unet_tf.training import build_model

rng = np.random.default_rng(0)
examples = [make_example(rng) for _ in range(8)]
images = np.stack([resize_image(e["image"], 64).numpy() for e in examples])
masks = np.stack([trimap_to_classes(resize_mask(e["segmentation_mask"][..., 0], 64), "trimap").numpy()
                  for e in examples])

def one_step(config, strategy, weights):
    model = build_model(config, strategy)
    with strategy.scope():  # plain SGD at rate 1: the weight update is minus the gradient
        model.compile(optimizer=keras.optimizers.SGD(1.0), loss=model.loss,
                      metrics=metrics_for(config.class_names))
    if weights is not None:
        model.set_weights(weights)
    start = [w.copy() for w in model.get_weights()]
    # the same global batch of 8 for both: 8 on one device, 4 + 4 on two
    batches = make_dataset(images, masks, 8, training=False)
    logs = model.fit(batches, epochs=1, verbose=0).history
    trainable = {id(v) for v in model.trainable_weights}
    deltas = [(a - b) for a, b, v in zip(model.get_weights(), start, model.weights)
              if id(v) in trainable]
    return start, {k: float(v[0]) for k, v in logs.items()}, deltas

mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
results = {}
for loss_name in sys.argv[1:]:
    config = preset("quickstart", image_size=64, batch_size=4, alpha=0.35, loss=loss_name,
                    decoder_filters=(16, 16, 16, 16), strategy="default")
    keras.utils.set_random_seed(0)
    start, one_logs, one_deltas = one_step(config, tf.distribute.get_strategy(), None)
    _, two_logs, two_deltas = one_step(config, mirrored, start)
    norm = float(np.sqrt(sum(np.sum(d ** 2) for d in one_deltas)))
    difference = float(np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(one_deltas, two_deltas))))
    results[loss_name] = {"replicas": mirrored.num_replicas_in_sync, "one": one_logs,
                          "two": two_logs, "gradient_norm": norm,
                          "gradient_difference_norm": difference}
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def mirrored_results(tmp_path_factory, run_python):  # a minute on 2 cores
    process, _ = run_python(["-c", MIRRORED_VS_ONE_DEVICE, "dice", "dice_ce"],
                            cwd=tmp_path_factory.mktemp("mirrored"), timeout=300)
    assert process.returncode == 0, process.stderr[-3000:]
    return json.loads(process.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["dice", "dice_ce"])
def test_mirrored_two_devices_match_one_device(loss, mirrored_results):
    result = mirrored_results[loss]
    assert result["replicas"] == 2
    one, two = result["one"], result["two"]
    # The loss and the metrics of the step are those of the global batch...
    for key in ("loss", "dice", "iou", "pixel_accuracy", "dice_pet", "dice_border"):
        assert two[key] == pytest.approx(one[key], abs=2e-5), key
    # ...and so are the gradients, up to float32 noise through ~60 layers and synchronized
    # BatchNorm (measured: 0.4% of the norm; a per-replica Dice or a loss counted twice is 50-100%).
    assert result["gradient_difference_norm"] < 0.02 * result["gradient_norm"]


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow  # two processes training together: about a minute on 2 cores
def test_two_workers_on_localhost_train_and_only_the_chief_writes(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    run = tmp_path / "run"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    args = [sys.executable, "-m", "unet_tf.train", "--preset", "quickstart", "--strategy",
            "multi_worker", "--image-size", "64", "--batch-size", "4", "--alpha", "0.35",
            "--decoder-filters", "16", "16", "16", "16", "--synthetic-train-examples", "16",
            "--synthetic-val-examples", "8", "--epochs", "1", "--seed", "1", "--run-dir", str(run)]
    workers = []
    for index in range(2):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
               "TMPDIR": str(scratch),
               "TF_CONFIG": json.dumps({"cluster": cluster,
                                        "task": {"type": "worker", "index": index}})}
        workers.append(subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for worker in workers:
            outputs.append(worker.communicate(timeout=300))
    finally:
        for worker in workers:
            worker.kill()
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
        assert "MultiWorkerMirroredStrategy, 2 replica(s) x batch 4 = global batch 8" in out
    # The chief's run folder is complete; the other worker left nothing behind.
    for name in ("config.json", "model.keras", "history.csv", "metrics.json", "curves.png"):
        assert (run / name).is_file(), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "scratch"]
    assert [p.name for p in scratch.iterdir() if p.name.startswith("unet_tf-worker")] == []
    history = (run / "history.csv").read_text().splitlines()
    assert len(history) == 2  # header + one epoch

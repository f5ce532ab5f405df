"""The benchmark runs end to end on a small setup and reports every figure it promises."""

import json

import pytest


@pytest.mark.slow  # trains three small models: about a minute and a half on 2 cores
def test_benchmark_reports_pipeline_training_inference_and_memory(tmp_path, capsys):
    from unet_tf.benchmark import main

    out = tmp_path / "bench.json"
    assert main(["--examples", "24", "--image-size", "64", "--batch-size", "8", "--alpha", "0.35",
                 "--epochs", "2", "--steps-per-execution", "3", "--repeats", "3",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    for side in ("ours", "reference"):
        pipeline = result["pipeline"][side]
        assert pipeline["first_pass_images_per_s"] > 0 and pipeline["cached_images_per_s"] > 0
    # Measured from what each cache holds: uint8 images and masks (4 bytes a pixel) against the
    # tutorial's float32 images and uint8 masks (13 bytes a pixel).
    ratio = result["pipeline"]["ours"]["cache_mb"] / result["pipeline"]["reference"]["cache_mb"]
    assert ratio == pytest.approx(4 / 13)
    assert result["pipeline"]["ours"]["cache_mb"] == pytest.approx(24 * 64 * 64 * 4 / 2**20)
    # Every comparison is also a ratio field, ours over the reference.
    ratios = result["ratios"]
    assert ratios["cache_memory_ratio"] == pytest.approx(ratio)
    assert ratios["first_pass_ratio"] == pytest.approx(
        result["pipeline"]["ours"]["first_pass_images_per_s"]
        / result["pipeline"]["reference"]["first_pass_images_per_s"])
    assert ratios["training_ratio"] == pytest.approx(
        result["training_images_per_s"]["ours"] / result["training_images_per_s"]["reference"])
    runtimes = {"keras", "savedmodel", "onnxruntime", "tflite", "tflite_quantized"}
    assert set(ratios) >= {"cached_ratio", "training_steps_per_execution_3_ratio"} | {
        f"{name}_{batch}latency_ratio" for name in runtimes - {"keras"}
        for batch in ("", "batch8_")}
    for name in runtimes - {"keras"}:  # each latency also as a ratio to Keras', at batch 1 and 8
        for field in ("latency_ms", "batch8_latency_ms"):
            ratio_name = f"{name}_{field.replace('_ms', '')}_ratio"
            assert ratios[ratio_name] == pytest.approx(
                result["inference"][name][field] / result["inference"]["keras"][field])
    # The TFLite files run in LiteRT, not in TensorFlow's deprecated interpreter.
    assert result["inference"]["tflite"]["runtime"] == "ai_edge_litert"
    assert set(result["training_images_per_s"]) == {"ours", "reference",
                                                    "ours, steps_per_execution=3"}
    assert all(v > 0 for v in result["training_images_per_s"].values())
    assert set(result["inference"]) == runtimes
    assert all(v["latency_ms"] > 0 and v["batch8_latency_ms"] > 0
               for v in result["inference"].values())
    assert result["peak_rss_mb"] > 0
    table = capsys.readouterr().out
    assert "| training (img/s, steady state) |" in table and "| savedmodel |" in table
    assert "| onnxruntime (onnxruntime) |" in table

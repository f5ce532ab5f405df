r"""Draw the pictures of README.md and docs/ from a real training run.

    python docs/figures.py --run runs/RUN --data-dir data/oxford-iiit-pet --split test

Writes into --out (default: docs/):

- `pets-test.png`: four photos of --split at full resolution, each with its true mask, the
  model's mask (predicted as `predict` does, post-processing included) and its pet Dice, chosen
  at even steps of the split's ranking (the best, two between, the worst);
- `worst.png`: the split's four lowest-scoring photos with their errors (as `evaluate` draws);
- `curves.png`: the run's learning curves (from its history.csv).

It prints the split's scores, so a caption can say what the pictures come from.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from unet_tf import plots
from unet_tf.evaluation import (
    evaluate_split,
    evaluation_config,
    evaluation_data,
    format_report,
    per_image_scores,
    photo_title,
    score_column,
    worst_first,
)
from unet_tf.inference import postprocess
from unet_tf.run import HISTORY, METRICS, best_epoch, read_history
from unet_tf.run.model_file import load_model_safely


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a finished run folder (with model.keras)")
    parser.add_argument("--data-dir", required=True, help="a local Oxford-IIIT Pet copy")
    parser.add_argument("--split", default="test", help="the photos to show (default: test)")
    parser.add_argument("--out", default=str(Path(__file__).parent), help="default: docs/")
    args = parser.parse_args(argv)
    run, out = Path(args.run), Path(args.out)

    model, info = load_model_safely(run / "model.keras")
    config = evaluation_config(info, data_dir=args.data_dir, split=args.split)
    split, policy, _ = evaluation_data(info, config, named_split=True, full_resolution=True)
    names = config.class_names
    steps = postprocess.steps_for("auto", info.config.get("dataset"), names)
    report, _, predicted = evaluate_split(model, split, names, steps, policy=policy)
    print(format_report(report, names))
    rows = per_image_scores(split.names, split.masks, predicted, names)
    column = score_column(names)

    ranked = worst_first(rows, len(rows), column)[::-1]  # best first
    picks = [ranked[i] for i in np.linspace(0, len(ranked) - 1, 4).round().astype(int)]
    plots.plot_predictions([split.images[i] for i in picks], [split.masks[i] for i in picks],
                           [predicted[i] for i in picks], names, out / "pets-test.png",
                           titles=[photo_title(rows[i], column) for i in picks])
    worst = worst_first(rows, 4, column)
    plots.plot_worst([split.images[i] for i in worst], [split.masks[i] for i in worst],
                     [predicted[i] for i in worst], names,
                     [photo_title(rows[i], column) for i in worst], out / "worst.png")
    history = read_history(run / HISTORY)
    best = best_epoch(history) if "val_dice" in history else None
    averaged = json.loads((run / METRICS).read_text()).get("averaged_weights", {}).get("epochs")
    plots.plot_curves(history, out / "curves.png", best, averaged, names)
    print(f"pictures: {out / 'pets-test.png'}, {out / 'worst.png'}, {out / 'curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the `python -m unet_tf.<command>` commands share: a parser built from the command's module
docstring (first paragraph: the description; the rest, commands that run as written: the
epilog), and the options several commands take."""

import argparse
import sys
from pathlib import Path


def command_parser(module: str, doc: str) -> argparse.ArgumentParser:
    """The command's parser, named as it was called: `unet-tf-train` or `python -m unet_tf.train`."""
    called = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    prog = called if called.startswith("unet-tf-") else f"python -m {module}"
    return argparse.ArgumentParser(
        prog=prog, description=doc.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc.split("\n", 2)[2])


def add_tta_argument(parser: argparse.ArgumentParser) -> None:
    """`--tta`, the same for predict and evaluate."""
    parser.add_argument("--tta", action="store_true",
                        help="test-time augmentation: average each photo's and its mirror "
                             "image's class probabilities (twice the work)")

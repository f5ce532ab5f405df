"""What the `python -m unet_tf.<command>` commands share: a parser built from the command's module
docstring (first paragraph: the description; the rest, commands that run as written: the
epilog), the options several commands take, and how every command ends (`run_command`)."""

import argparse
import errno
import signal
import sys
import threading
import traceback
from pathlib import Path

from unet_tf.errors import UserError


def command_parser(module: str, doc: str) -> argparse.ArgumentParser:
    """The command's parser, named as it was called: `unet-tf-train` or `python -m unet_tf.train`."""
    called = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    prog = called if called.startswith("unet-tf-") else f"python -m {module}"
    return argparse.ArgumentParser(
        prog=prog, description=doc.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc.split("\n", 2)[2])


def positive_int(text: str, least: int = 1) -> int:
    """argparse type: an integer of at least 1 (`least`)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"{value}: expected {least} or more")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer of at least 0."""
    return positive_int(text, least=0)


def add_tta_argument(parser: argparse.ArgumentParser) -> None:
    """`--tta`, the same for predict and evaluate."""
    parser.add_argument("--tta", action="store_true",
                        help="test-time augmentation: average each photo's and its mirror "
                             "image's class probabilities (twice the work)")


REPORT_URL = "https://github.com/unet-tf/unet_tf/issues"


def run_command(body, argv=None) -> int:
    """Runs a command's `body(argv)` and turns what went wrong into an exit status.

    A user's error (a bad option, a missing or odd file, an output that would destroy something;
    see errors.UserError) and an OS error on a path (a full disk, no permission) print one line,
    `error: ...`, and exit 2; so does a full disk, wherever it is met. Ctrl-C exits 130, and so
    does SIGTERM (how schedulers and Colab stop a job): both unwind as KeyboardInterrupt, so
    what a command leaves is what Ctrl-C leaves. Anything else is a bug: its traceback, a request
    to report it, exit 1.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        return body(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except MemoryError:
        print("error: out of memory; try smaller images (--max-pixels), a smaller --batch-size "
              "or --image-size", file=sys.stderr)
        return 2
    except Exception as error:
        if isinstance(error, OSError) and error.filename is not None:
            reason = "the disk is full" if error.errno == errno.ENOSPC else error.strerror
            print(f"error: {error.filename}: {reason}", file=sys.stderr)
            return 2
        if _disk_full(error):  # h5py, TensorFlow and Keras say so in their own types
            print("error: the disk is full (No space left on device); free some space, then "
                  "run the command again (a training run: --resume it)", file=sys.stderr)
            return 2
        traceback.print_exc()
        print(f"\nerror: this is a bug in unet_tf, not something you did; please report it with "
              f"the lines above at {REPORT_URL}", file=sys.stderr)
        return 1


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _disk_full(error: BaseException) -> bool:
    """Whether `error`, or one it was raised from, is a full disk."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False

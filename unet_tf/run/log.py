r"""The run's two logs: history.csv (a row of numbers per epoch) and train.log (what it printed).

    with TrainLog() as log:                  # from here on, what is printed is also kept
        print(plan.block())                  # held until the run folder exists
        with open_run(config) as run:
            log.open(run.path, resumed_after=run.state.epochs_completed if run.resumed else None)
            ...                              # Keras' progress, summaries: into <run>/train.log

train.log is a log, not a screen: a progress bar that a terminal redraws in place ('\r', '\b')
is kept as the line it finally showed (one line per epoch), without its colours. A resumed run
appends to it, after a line saying when it was resumed.
"""

from __future__ import annotations

import datetime
import re
import sys
import threading
import traceback
from pathlib import Path

import keras

from unet_tf.errors import UserError
from unet_tf.run.folder import TRAIN_LOG
from unet_tf.training import TrainingDiverged

# Terminal escape sequences (Keras' bold and coloured progress bars): colours, not text.
_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_UNFINISHED_ESCAPE = re.compile(r"\x1b(\[[0-9;?]*)?$")
_PIECES = re.compile(r"\n|\r|\x08+|[^\n\r\x08]+")


class HistoryLogger(keras.callbacks.CSVLogger):
    """Keras' CSVLogger with the epochs numbered from 1, as Keras prints them and as metrics.json,
    curves.png and the summary count them (Keras' own numbers its rows from 0). A resumed `fit`
    starts at `initial_epoch`, so the numbers go on where the saved rows stopped."""

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch + 1, logs)


class _Line:
    r"""The line a terminal would show for what one stream wrote: '\r' goes back to its start,
    '\b' one character back, and what follows overwrites what is there; '\n' ends it."""

    def __init__(self):
        self.chars: list = []
        self.column = 0
        self.unfinished = ""  # an escape sequence cut in two by a write

    def feed(self, text: str) -> list:
        """The lines `text` completes (each as finally shown, trailing blanks dropped)."""
        text = self.unfinished + text
        cut = _UNFINISHED_ESCAPE.search(text)
        self.unfinished = cut.group() if cut else ""
        text = _ESCAPE.sub("", text[:cut.start()] if cut else text)
        lines = []
        for piece in _PIECES.findall(text):
            if piece == "\n":
                lines.append(self.take())
            elif piece == "\r":
                self.column = 0
            elif piece[0] == "\b":
                self.column = max(0, self.column - len(piece))
            else:
                self.chars[self.column:self.column + len(piece)] = piece
                self.column += len(piece)
        return lines

    def take(self) -> str:
        """The line shown now, started afresh."""
        line = "".join(self.chars).rstrip()
        self.chars, self.column = [], 0
        return line


class _Tee:
    """A stream that writes to `stream` and gives its lines to `log`; everything else (isatty,
    fileno, encoding, a notebook stream's own attributes) is the stream's, so that whoever asks
    (Keras, tqdm) sees the terminal or notebook it saw before."""

    def __init__(self, stream, log: "TrainLog"):
        self._stream = stream
        self._log = log
        self._line = _Line()

    def write(self, text):
        written = self._stream.write(text)
        self._log._add(self._line, text)
        return written

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        self._stream.flush()

    def __getattr__(self, name):
        if "_stream" not in self.__dict__:  # a copy being made: nothing to forward to yet
            raise AttributeError(name)
        return getattr(self.__dict__["_stream"], name)


class TrainLog:
    """While open, keeps what this process prints to sys.stdout and sys.stderr (still printed
    as before) for the run folder's train.log: lines printed before `open` names the folder are
    held and written first. On leaving, the streams are put back, even after an error, and an
    error that stops the run is written as the log's last lines.

    Output that does not pass through Python's sys.stdout and sys.stderr (TensorFlow's own C++
    messages) is not kept."""

    def __init__(self):
        self._lock = threading.RLock()
        self._held: list = []  # lines printed before the run folder is known
        self._file = None
        self._streams = None
        self._tees: tuple = ()

    def __enter__(self) -> "TrainLog":
        self._streams = sys.stdout, sys.stderr
        self._tees = _Tee(sys.stdout, self), _Tee(sys.stderr, self)
        sys.stdout, sys.stderr = self._tees
        return self

    def open(self, run: Path, resumed_after: int | None = None) -> None:
        """Starts writing `run`/train.log (appended to when `resumed_after`, the epochs the run
        had completed, says it is resumed), beginning with the lines held so far."""
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        header = (f"=== run started {stamp} ===" if resumed_after is None else
                  f"\n=== run resumed {stamp}, after epoch {resumed_after} ===")
        with self._lock:
            try:
                self._file = open(Path(run) / TRAIN_LOG, "w" if resumed_after is None else "a",
                                  encoding="utf-8", errors="backslashreplace")
            except OSError as error:  # the run goes on: a log is not worth stopping it for
                print(f"warning: cannot write {Path(run) / TRAIN_LOG} ({error.strerror}); "
                      "the run is not logged there", file=self._streams[1])
                self._held = []
                return
            self._write([header, *self._held])
            self._held = []

    def _add(self, line: _Line, text) -> None:
        with self._lock:
            if self._streams is not None:  # a tee someone still holds after the run only forwards
                self._write(line.feed(str(text)))

    def _write(self, lines: list) -> None:
        if not lines:
            return
        if self._file is None:
            if self._streams is not None:  # still open, before the run folder is known
                self._held.extend(lines)
            return
        try:
            self._file.write("".join(f"{line}\n" for line in lines))
            self._file.flush()  # a killed run's log ends with its last line
        except (OSError, ValueError):  # a full disk; a file closed meanwhile
            pass

    def __exit__(self, kind, error, trace) -> None:
        with self._lock:
            if sys.stdout is self._tees[0]:
                sys.stdout = self._streams[0]
            if sys.stderr is self._tees[1]:
                sys.stderr = self._streams[1]
            ended = [tee._line.take() for tee in self._tees]  # lines not finished by a '\n'
            self._write([line for line in ended if line])
            if error is not None:
                self._write(_error_lines(error))
            self._streams = None
            if self._file is not None:
                self._file.close()
                self._file = None
            self._held = []


def _error_lines(error: BaseException) -> list:
    """How an error that stopped the run ends its log: a user's error or a divergence as the one
    line the command prints, an interruption as one line, anything else with its traceback."""
    if isinstance(error, KeyboardInterrupt):
        return ["stopped: interrupted (Ctrl-C or SIGTERM)"]
    if isinstance(error, (UserError, TrainingDiverged)):
        return [f"error: {error}"]
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return [*text.rstrip("\n").split("\n"), f"error: {type(error).__name__}: {error}"]

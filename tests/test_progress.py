"""Progress in a log file (standard error not a terminal): a line per tenth of a long step, one
line for a step that is over in a moment."""

import itertools
from types import SimpleNamespace

from unet_tf import progress as progress_module


def lines_of(monkeypatch, capsys, seconds_per_item, total=100):
    clock = itertools.count()
    monkeypatch.setattr(progress_module, "interactive", lambda: False)
    monkeypatch.setattr(progress_module, "time",
                        SimpleNamespace(perf_counter=lambda: next(clock) * seconds_per_item))
    items = list(progress_module.progress(range(total), "evaluate", total=total, unit="batch"))
    assert items == list(range(total))  # every item passes through, in order
    return capsys.readouterr().err.splitlines()


def test_a_long_step_logs_each_tenth(monkeypatch, capsys):
    lines = lines_of(monkeypatch, capsys, seconds_per_item=0.5)
    assert lines == [f"evaluate: {n}/100 batch ({n // 2} s)" for n in range(10, 101, 10)]


def test_a_quick_step_logs_its_end_only(monkeypatch, capsys):
    assert lines_of(monkeypatch, capsys, seconds_per_item=0.001) == ["evaluate: 100/100 batch (0 s)"]

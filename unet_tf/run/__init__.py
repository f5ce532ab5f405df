"""The run folder and what reads and writes it.

    folder.py      opening a run folder (new, resumed, locked) and the names of its files
    log.py         history.csv's rows, numbered from 1, and train.log: what the run printed
    resume.py      the state an interrupted run continues from, saved after every epoch
    model_file.py  the model saved at each better epoch, read back safely with its `RunInfo`
    outputs.py     the folders and files other commands write (exports, reports, predictions)
"""

from unet_tf.run.folder import (
    BEST_EPOCH,
    CONFIG,
    HISTORY,
    LOCK,
    METRICS,
    MODEL,
    PLAN,
    TRAIN_LOG,
    Run,
    RunFolderError,
    best_epoch,
    check_new_run_dir,
    open_run,
    read_history,
)

__all__ = ["BEST_EPOCH", "CONFIG", "HISTORY", "LOCK", "METRICS", "MODEL", "PLAN", "TRAIN_LOG",
           "Run", "RunFolderError", "best_epoch", "check_new_run_dir", "open_run", "read_history"]

"""The checkpoints of a trial that trains in its Tune trial's own process (one worker), kept by raybench.

Each epoch's checkpoint goes to ``<storage>/<sweep id>/checkpoints/<trial id>/epoch_<NNNNNN>/`` (the
folder where a worker-group trial's Ray Train run keeps its own): its files first, then a marker file
(``complete.json``); only then are the trial's other checkpoints deleted. A trial that starts again
(``--resume`` of an unfinished trial: Tune keeps its trial id) goes on from the newest complete
checkpoint in its folder. At any moment at least one complete checkpoint exists once the first epoch
has ended, so a driver or a trial killed at any point loses at most the epoch in progress.

Hand-written, not Tune's ``CheckpointConfig(num_to_keep=1)``: Tune (Ray 2.60) deletes a trial's
previous checkpoint as soon as a new one is reported, before its experiment state, saved a moment
later, names the new one; a driver killed in between left the resumed trial pointing at a deleted
checkpoint ("Could not recover from checkpoint as it does not exist on storage anymore") and the trial
failed. Ray Train's runs (worker-group trials) persist their checkpoint list before deleting, so they
keep Ray Train's. Tune is told each checkpoint's path as the ``checkpoint_path`` metric, as a Ray Train
trial tells it through ``TuneReportCallback``.
"""

from __future__ import annotations

import json
import re

from raybench.storage import exists, split, write_bytes

MARKER = "complete.json"
_NAME = re.compile(r"epoch_(\d+)$")


class TrialCheckpoints:
    """A trial's checkpoint folder ``root`` (a local path or a URI the sweep's ``storage`` allows)."""

    def __init__(self, root: str):
        self.fs, self.root = split(root)

    def _folders(self) -> dict[str, int]:
        """The trial's checkpoint folders (complete or not) -> their epochs."""
        import pyarrow.fs as pafs

        # listed recursively and named by their files' paths: a GCS server (the emulator the tests run)
        # lists no sub-folder in a listing that is not recursive, only files
        prefix = self.root.rstrip("/") + "/"
        out = {}
        for i in self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True, recursive=True)):
            first = i.path[len(prefix):].split("/", 1)[0] if i.path.startswith(prefix) else ""
            if m := _NAME.match(first):
                out[prefix + first] = int(m.group(1))
        return out

    def _complete(self, path: str) -> bool:
        return exists(self.fs, f"{path}/{MARKER}")

    def latest(self):
        """The newest complete checkpoint (a ``ray.tune.Checkpoint`` in the storage's filesystem), or
        None when the trial has none."""
        from ray.tune import Checkpoint

        for path, _ in sorted(self._folders().items(), key=lambda kv: -kv[1]):
            if self._complete(path):
                return Checkpoint(path, filesystem=self.fs)
        return None

    def save(self, local_dir: str, epoch: int) -> str:
        """Keep the checkpoint in ``local_dir`` as epoch ``epoch``'s, then delete the trial's other
        checkpoints; returns its path in the storage's filesystem. An epoch whose checkpoint is
        complete already (a trial resumed after its last epoch reports it again) is not written twice."""
        import pyarrow.fs as pafs

        path = f"{self.root}/epoch_{epoch:06d}"
        if not self._complete(path):
            if exists(self.fs, path):  # written in part before an interruption
                self.fs.delete_dir(path)
            self.fs.create_dir(path, recursive=True)
            pafs.copy_files(local_dir, path, source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=self.fs)
            write_bytes(self.fs, f"{path}/{MARKER}", json.dumps({"epoch": epoch}).encode())
        for other in self._folders():
            if other != path:
                self.fs.delete_dir(other)
        return path

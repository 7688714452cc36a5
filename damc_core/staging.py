"""Writes outputs atomically: a file or folder is built beside its target and moved into place only when complete."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from damc_core.errors import InputError


OUTPUT_MARKER = ".damc-output"
"""File inside every folder written by staged_directory, holding the writer's name: a folder may be replaced only by
the writer named in it, so a mistyped output path can never delete a folder of the user's."""


class OutputFolderError(InputError, ValueError):
    """An output that must not be replaced: the current folder or one above it, a folder of other files, or a folder
    where a file is to be written."""


@contextlib.contextmanager
def staged_directory(target: Path, owner: str) -> Iterator[Path]:
    """Yield an empty folder next to `target`; on success it replaces `target`, on error it is deleted and `target`
    (e.g. an earlier good result) is left as it was.

    `owner` names the writer (e.g. the stage). `target` is checked before anything is written: it must be absent, an
    empty folder, or a folder this owner wrote before (its OUTPUT_MARKER names `owner`); otherwise OutputFolderError.
    """
    check_replaceable(target, owner)
    staging = target.parent / f".{target.name}-{secrets.token_hex(8)}"
    staging.parent.mkdir(parents=True, exist_ok=True)
    staging.mkdir()  # not tempfile.mkdtemp: its mode 0700 would become the output's; mkdir follows the umask
    try:
        (staging / OUTPUT_MARKER).write_text(owner + "\n", encoding="utf-8")
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    check_replaceable(target, owner)
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)


def check_replaceable(target: Path, owner: str) -> None:
    """Raise OutputFolderError unless `owner` may (re)write the folder `target` (see staged_directory)."""
    resolved = target.resolve()
    protected = {Path.cwd().resolve(), *Path.cwd().resolve().parents, Path.home().resolve()}
    if resolved in protected:
        raise OutputFolderError(
            f"{owner} refuses to write its output folder to {target} ({resolved}): that is the current folder, one "
            f"above it or the home folder, and replacing it would delete everything in it; give a folder of its own, "
            f"e.g. {target / 'subject'}"
        )
    if not target.exists() and not target.is_symlink():
        return
    if not target.is_dir() or target.is_symlink():
        raise OutputFolderError(f"{owner} refuses to replace {target}: it exists and is not a folder")
    marker = target / OUTPUT_MARKER
    if marker.is_file() and marker.read_text(encoding="utf-8").strip() == owner:
        return
    if any(target.iterdir()):
        raise OutputFolderError(
            f"{owner} refuses to replace {target}: it holds files {owner} did not write (no {OUTPUT_MARKER} naming "
            f"{owner}); choose a new or empty folder, or remove this one yourself"
        )


@contextlib.contextmanager
def staged_file(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target` that replaces `target` only if the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{secrets.token_hex(8)}.partial")
    try:
        yield partial
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)

# Private to the collection: may change without notice.
"""Replace a file atomically: a temp file in the same directory, fsync, rename.

The one writer behind every file the collection's modules write (WireGuard
keys and configs, Traefik's dynamic config, controller-side secrets). Readers
see the old file or the new one, never a half-written one, and a failure
leaves the old file as it was. Standard library only: it runs on the nodes.
"""

from __future__ import annotations

import os
import tempfile


def read_text(path):
    """The file's text, or None when it does not exist."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def write_atomic(path, content, mode=0o600, keep_mode=False, dir_mode=None):
    """Write ``content`` (str) to ``path`` through ``.<name>.*.tmp`` + ``os.replace``.

    The temp file has ``mode`` from the moment it exists (mkstemp makes it
    0600, so a secret is never readable by others, even briefly); with
    ``keep_mode`` an existing file's mode, and as root its owner, carry over
    instead. Its name starts with a dot and ends in ``.tmp``, so watchers that
    load ``*.yml`` (Traefik's file provider) never read it. A missing parent
    directory is created with ``dir_mode`` when given, else it is an error.
    """
    directory = os.path.dirname(os.path.abspath(path))
    if dir_mode is not None and not os.path.isdir(directory):
        os.makedirs(directory, mode=dir_mode)
    current = None
    if keep_mode:
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                               dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            if current is not None:
                os.fchmod(handle.fileno(), current.st_mode & 0o7777)
                if os.geteuid() == 0:
                    os.fchown(handle.fileno(), current.st_uid, current.st_gid)
            else:
                os.fchmod(handle.fileno(), mode)
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def _fsync_dir(directory):
    """Make the rename itself durable (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

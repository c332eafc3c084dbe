"""A model's code version as the files on disk say now, not as this process imported them.

The code-change sensor runs in the code server, which imports the project once: its ``chain.cfg``
(ml_platform.yaml / defs.yaml) stays what it was at start until someone reloads the code location,
and Dagster has no file watcher for that (`dagster dev` / `dg dev` reload only on "Reload
definitions"). So each tick reads the config files again; the transform / pipeline / check
modules are hashed from their source files (``inspect`` re-reads a changed file, whether or not it
parses: a half-saved module is a file that does not load, like half-saved YAML). The train run
it launches is a new process that imports the files as they are then, and records the code
version it trained (``defs/assets/training.py``).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from ml_platform import names
from ml_platform.control.chain import Chain
from ml_platform.core import code_version
from ml_platform.settings import ConfigError, load_settings
from ml_platform.settings.base import unreadable


@dataclass(frozen=True)
class CodeOnDisk:
    parts: dict[str, str]
    version: str
    # Why the loaded jobs cannot train this code: a run is launched with the code server's job
    # (its steps), so a change of the gate's checks or of the upstream asset needs a reload.
    reload_needed: str | None = None


def code_on_disk(chain: Chain) -> CodeOnDisk:
    """The model's manifest and code version from its files now. A model the config files do
    not declare (built in Python) keeps its loaded config. Raises ``ConfigError`` (one line
    naming the file) while the files do not load, e.g. half-edited or unreadable."""
    cfg = chain.cfg
    s = chain.settings
    where = s.source if s.source.is_file() else s.project
    if where is not None:
        try:
            cfg = load_settings(where).models.get(chain.name) or cfg
        except (OSError, UnicodeError) as e:  # the settings name the file they read; this is a backstop
            raise unreadable(getattr(e, "filename", None) or where, e) from None
    for path in code_version.user_code(cfg):
        _parses(code_version.source_file(path))
    parts = code_version.manifest(cfg)
    why = None
    if names.gate_checks(cfg) != names.gate_checks(chain.cfg):
        why = f"the gate's checks changed ({', '.join(names.gate_checks(cfg))})"
    elif cfg.source != chain.cfg.source:
        why = "the model's source asset changed"
    return CodeOnDisk(parts, code_version.code_version(parts), why)


def _parses(file: str | None) -> None:
    """ConfigError naming the file and line when a hashed module does not parse: ``inspect`` would
    hash a half-saved file, and the train run it launched would fail importing it."""
    if file is None:
        return
    try:
        ast.parse(Path(file).read_bytes(), filename=file)
    except SyntaxError as e:  # also a NUL byte or bad encoding: no line then
        where = f"{file}:{e.lineno}" if e.lineno else file
        raise ConfigError(f"{where}: not valid Python: {e.msg}") from None
    except (OSError, UnicodeError) as e:
        raise unreadable(file, e) from None


def stale_import(chain: Chain, loaded_version: str) -> str | None:
    """Why a code-change train run must not train the code this process imported: a long-lived
    process (a scale-out Celery worker imports the project once) would train and record older
    code than the change it was launched for. None when the import is the files' code, or while
    the files do not load (the import is all there is)."""
    try:
        now = code_on_disk(chain)
    except (ConfigError, OSError, UnicodeError):
        return None
    if now.version == loaded_version:
        return None
    return (
        f"this process imported code version {loaded_version}, the files on disk are {now.version}: it started "
        "before the change: restart `ml-platform worker`, then retrain (`ml-platform run` or `ml-platform train`)"
    )

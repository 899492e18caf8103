"""The authors' own ResNets, timed beside fmdconv's by ``fmdconv bench --authors-code DIR``.

fmdconv never ships or imports the authors' code: a run is given the folders of their releases
(``--authors-code DIR``, repeatable, or the environment variable ``FMDCONV_AUTHORS_CODE``, folders
separated by ``os.pathsep``), and each folder is recognised by the file that defines its ResNets:

- the FMDConv release: ``models/fmd_resnet.py`` (``fmd_resnet18``, ``fmd_resnet50``, ...);
- the ODConv release: ``models/od_resnet.py`` (``od_resnet18``, ...).

The file is loaded from that folder only, while the benchmark runs: the folder is put first on
``sys.path`` for the file's own imports (``from modules.fmdconv import FMDConv2d``), and afterwards
removed, with every module it brought in under its generic top-level names (``models``,
``modules``, ...) taken out of ``sys.modules`` again, so two releases with the same package names
load side by side and nothing of theirs stays importable. Their ResNets have the ImageNet stem only.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from torch import nn

AUTHORS_CODE_ENV = "FMDCONV_AUTHORS_CODE"
# The file each release defines its ResNets in, and its constructors' prefix (fmd_resnet18, ...).
RELEASES: dict[str, tuple[str, str]] = {
    "fmd": ("models/fmd_resnet.py", "fmd_"),
    "od": ("models/od_resnet.py", "od_"),
}


def authors_code_folders(given: Iterable[str | Path] = ()) -> list[Path]:
    """The folders given on the command line, else those of ``FMDCONV_AUTHORS_CODE`` (may be none)."""
    folders = [Path(folder).expanduser() for folder in given]
    if not folders:
        folders = [Path(f).expanduser() for f in os.environ.get(AUTHORS_CODE_ENV, "").split(os.pathsep) if f]
    return folders


def find_releases(folders: Iterable[str | Path]) -> dict[str, Path]:
    """Which method's release each folder holds: ``{"fmd": folder, "od": folder}`` (those found).

    Raises:
        ValueError: a folder does not exist, or holds none of the files of :data:`RELEASES`.
    """
    found: dict[str, Path] = {}
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise ValueError(f"authors' code folder {str(folder)!r} does not exist or is not a folder")
        kinds = [kind for kind, (file, _) in RELEASES.items() if (folder / file).is_file()]
        if not kinds:
            looked_for = " or ".join(file for file, _ in RELEASES.values())
            raise ValueError(f"authors' code folder {str(folder)!r} holds neither {looked_for}")
        found.update(dict.fromkeys(kinds, folder))
    return found


def _load(folder: Path, file: str) -> ModuleType:
    """Execute ``folder/file`` as a module with ``folder`` importable only while it runs."""
    generic = {entry.stem for entry in folder.iterdir() if entry.is_dir() or entry.suffix == ".py"}

    def taken_out() -> dict[str, ModuleType]:
        names = [name for name in sys.modules if name.split(".")[0] in generic]
        return {name: sys.modules.pop(name) for name in names}

    saved = taken_out()
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location(f"fmdconv_authors_{Path(file).stem}", folder / file)
        if spec is None or spec.loader is None:
            raise ImportError(f"no loader for {folder / file}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except Exception as error:  # their code, any failure: say which folder and why
        raise ValueError(
            f"cannot load the authors' code {folder / file}: {type(error).__name__}: {error}"
        ) from error
    finally:
        sys.path.remove(str(folder))
        taken_out()
        sys.modules.update(saved)
    return module


def build_authors_model(
    kind: str, folder: str | Path, arch: str, num_classes: int, kernel_num: int
) -> nn.Module:
    """The authors' ``arch`` (``"resnet18"``, ...) of method ``kind`` from their release in ``folder``."""
    if kind not in RELEASES:
        raise ValueError(f"kind must be one of {', '.join(RELEASES)} for the authors' code; got {kind!r}")
    file, prefix = RELEASES[kind]
    module = _load(Path(folder), file)
    constructor = getattr(module, prefix + arch, None)
    if constructor is None:
        raise ValueError(f"{Path(folder) / file} defines no {prefix + arch}")
    return constructor(num_classes=num_classes, kernel_num=kernel_num)

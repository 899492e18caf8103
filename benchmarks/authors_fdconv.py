"""Import the FDConv authors' layer (``FDConv_detection/mmdet_custom/FDConv.py`` of Linwei-Chen/FDConv)
from a checkout of their repository, with torch only.

Their module imports mmcv (only to register the layer), timm (``trunc_normal_``, unused by the layer)
and matplotlib (unused); small stand-ins are put in ``sys.modules`` for those that are missing. Used
by ``benchmarks/bench_fdconv.py`` and ``tests/data/make_fdconv_reference.py``; the test suite itself
never needs their code.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
import types
from pathlib import Path

from torch import nn

from fmdconv import create_model

AUTHORS_FILE = "FDConv_detection/mmdet_custom/FDConv.py"


def _stub(name: str, **attributes: object) -> None:
    if name in sys.modules:
        return
    try:
        importlib.import_module(name)
    except ImportError:
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        sys.modules[name] = module


class _Registry:
    def register_module(self, *args: object, **kwargs: object):
        return lambda cls: cls


def load_authors_fdconv(repository: str | Path) -> types.ModuleType:
    """The authors' FDConv module, from a checkout (or an exported tree) at ``repository``."""
    path = Path(repository) / AUTHORS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {AUTHORS_FILE} under {repository}")
    for name in ("mmcv", "timm", "timm.models", "matplotlib"):
        _stub(name)
    _stub("mmcv.cnn", CONV_LAYERS=_Registry())
    _stub("timm.models.layers", trunc_normal_=lambda tensor, **kwargs: tensor)
    _stub("matplotlib.pyplot")
    spec = importlib.util.spec_from_file_location("authors_fdconv_module", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def authors_layer(module: types.ModuleType, *args: object, **kwargs: object):
    """``module.FDConv(*args, **kwargs)``, its ``print`` of the kernel number silenced."""
    with contextlib.redirect_stdout(io.StringIO()):
        return module.FDConv(*args, **kwargs)


def authors_model(authors: object, name: str, kernel_num: int, **options: object) -> nn.Module:
    """The static ResNet with the authors' FDConv in every block convolution."""
    model = create_model(name, conv="static", **options)
    for module_name, conv in list(model.named_modules()):
        if (
            isinstance(conv, nn.Conv2d)
            and module_name.startswith("layer")
            and "downsample" not in module_name
        ):
            layer = authors_layer(
                authors,
                conv.in_channels,
                conv.out_channels,
                conv.kernel_size,
                stride=conv.stride,
                padding=conv.padding,
                bias=False,
                kernel_num=kernel_num,
            )
            parent, _, child = module_name.rpartition(".")
            setattr(model.get_submodule(parent), child, layer)
    return model

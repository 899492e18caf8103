"""What ``fmdconv bench`` measures: its variants (:class:`Variant`), settings (:class:`Setting`) and grids.

A variant is one network and one way of computing it: the static ResNet, a dynamic method at a
kernel number with the automatic formulation, the same network with one formulation forced on every
dynamic layer, computed the naive way (``grouped`` with the channel attentions on the feature maps,
what the authors' code does), in the channels_last memory format, through ``torch.compile``, or the
authors' own implementation of the method (loaded from a folder given to the run; see
:mod:`fmdconv.profiling.authors_code`). A setting is one situation: architecture, stem, image size,
batch size, training step or inference, the number of timed rounds, and the variants timed side by
side. The grids below are what ``fmdconv bench`` runs (docs/speed.md, "Running the benchmark").
"""

from __future__ import annotations

from dataclasses import dataclass

from fmdconv.layers import KERNEL_MIXTURES, formulations

AUTO = "auto"


@dataclass(frozen=True)
class Variant:
    """A network of the benchmark: ``conv`` kind, kernel number, and how it is computed.

    ``kernel_num`` is KernelWarehouse's ratio for ``conv="kw"`` (``kw_ratio``; named ``kw 4x``) and
    FDConv's number of frequency groups for ``conv="fd"``.

    ``formulation``: ``"auto"`` (the library's choice) or one formulation forced on every dynamic
    layer; ``naive``: every dynamic layer ``grouped`` with the channel attentions on the maps;
    ``compiled``: through ``torch.compile``; ``channels_last``: weights and inputs in that memory
    format; ``authors``: the authors' implementation of ``conv`` instead of fmdconv's.
    """

    conv: str
    kernel_num: int = 1
    naive: bool = False
    compiled: bool = False
    channels_last: bool = False
    formulation: str = AUTO
    authors: bool = False

    @property
    def name(self) -> str:
        if self.conv == "static":
            name = "static"
        elif self.conv == "kw":
            name = f"kw {self.kernel_num}x"
        else:
            name = f"{self.conv} n={self.kernel_num}"
        if self.formulation != AUTO:
            name += f" {self.formulation}"
        flags = (
            ("naive", self.naive),
            ("compiled", self.compiled),
            ("channels_last", self.channels_last),
            ("authors' code", self.authors),
        )
        return " ".join([name, *(flag for flag, on in flags if on)])

    @property
    def network(self) -> tuple[str, int, bool, bool]:
        """What identifies the network object itself (compiled and forced variants reuse the eager one)."""
        return self.conv, self.kernel_num, self.channels_last, self.authors

    @property
    def method(self) -> str:
        """The fmdconv network this variant computes (``"fmd n=4"``): what a forced row is compared within."""
        return Variant(self.conv, self.kernel_num).name


def exact_formulations(kind: str) -> tuple[str, ...]:
    """The formulations that can be forced on every layer of ``kind`` (ODConv, with its spatial
    attention: not ``mixed``); whether one runs on a device is checked when it is timed."""
    return tuple(name for name in formulations.CONVOLUTIONS if not (kind == "od" and name == "mixed"))


def forced(kind: str, kernel_num: int = 4) -> tuple[Variant, ...]:
    """``kind`` at ``kernel_num`` with each of its exact formulations forced."""
    return tuple(Variant(kind, kernel_num, formulation=name) for name in exact_formulations(kind))


@dataclass(frozen=True)
class Setting:
    """One measured situation: ``repeats`` timed rounds of ``variants`` after one warm-up round."""

    arch: str
    stem: str
    image_size: int
    batch_size: int
    mode: str
    repeats: int
    variants: tuple[Variant, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.arch} {self.stem} {self.image_size}px b{self.batch_size} {self.mode}"


STATIC = Variant("static")
ALL_VARIANTS: tuple[Variant, ...] = (
    STATIC,
    *(Variant(kind, n, naive) for n in (1, 4) for naive in (False, True) for kind in KERNEL_MIXTURES),
)
# Every formulation forced on FMDConv and ODConv (n = 4), beside their automatic choice.
FORCED = (*forced("fmd"), *forced("od"))
# The authors' FMDConv and ODConv ResNets (ImageNet stem only), timed where their code is given.
AUTHORS = (Variant("fmd", 4, authors=True), Variant("od", 4, authors=True))
# The two newest methods, in the authors' settings: KernelWarehouse 1x and 4x, FDConv with the 64
# frequency groups of the authors' detection models (their own code: benchmarks/bench_kernelwarehouse.py
# and benchmarks/bench_fdconv.py).
NEWEST = (Variant("kw", 1), Variant("kw", 4), Variant("fd", 64))
# FDConv's training step keeps several per-sample kernels per layer for its backward (its dense gate
# varies every kernel element): ResNet-18 peaks at 7.3 GB at 32x32 batch 16 and 14.4 GB at 112x112
# batch 32, so beside the other variants it does not fit a 24 GB machine in the default training
# settings; it is timed there in inference, and in training by benchmarks/bench_fdconv.py.
NEWEST_TRAINING = (Variant("kw", 1), Variant("kw", 4))


def _full_grid(arch: str, rounds: tuple[int, int, int]) -> list[Setting]:
    """Every variant at 32x32 batch 64 (CIFAR stem) and 224x224 batch 1 and 32 (ImageNet stem), plus
    the 112x112 batch-32 training step; ``rounds`` at batch 1, 64 (CIFAR) and 32 (ImageNet)."""
    one, cifar, imagenet = rounds
    everything = ALL_VARIANTS + NEWEST + FORCED
    return [
        Setting(arch, "cifar", 32, 64, "train", cifar, everything),
        Setting(arch, "cifar", 32, 64, "inference", cifar, everything),
        Setting(arch, "imagenet", 224, 1, "inference", one, everything + AUTHORS),
        Setting(arch, "imagenet", 112, 32, "train", imagenet, everything + AUTHORS),
        Setting(arch, "imagenet", 224, 32, "train", imagenet, everything + AUTHORS),
        Setting(arch, "imagenet", 224, 32, "inference", imagenet, everything + AUTHORS),
    ]


# Every variant everywhere: well over an hour on 2 CPU cores, and FDConv's training steps need more
# than 24 GB of memory (NEWEST_TRAINING).
FULL_SETTINGS: tuple[Setting, ...] = (
    *_full_grid("resnet18", (10, 2, 1)),
    *_full_grid("resnet50", (10, 1, 1)),
)

# The default grid. The naive computation of a training step (5-10x a static one) is timed only for
# the two methods the FMDConv paper compares; the slower settings keep the lean list; ResNet-50 is
# timed in inference only (a ResNet-50 training step at 224x224, batch 32, takes about 10 s static and
# up to a minute dynamic: FULL_SETTINGS has it). Every setting forces each formulation of FMDConv and
# ODConv beside their automatic choice.
_TRAINING = (
    *(v for v in ALL_VARIANTS if not v.naive),
    Variant("od", 4, naive=True),
    Variant("fmd", 4, naive=True),
)
_LEAN = (
    STATIC,
    Variant("od", 1),
    Variant("fmd", 1),
    Variant("od", 4),
    Variant("fmd", 4),
    Variant("fmd", 4, True),
)
_CHANNELS_LAST = (Variant("static", channels_last=True), Variant("fmd", 4, channels_last=True))
DEFAULT_SETTINGS: tuple[Setting, ...] = (
    Setting("resnet18", "cifar", 32, 64, "train", 3, _TRAINING + NEWEST_TRAINING + FORCED + _CHANNELS_LAST),
    Setting("resnet18", "cifar", 32, 64, "inference", 2, _LEAN + FORCED),
    Setting(
        "resnet18",
        "imagenet",
        224,
        1,
        "inference",
        30,
        ALL_VARIANTS + NEWEST + FORCED + _CHANNELS_LAST + AUTHORS,
    ),
    Setting("resnet18", "imagenet", 112, 32, "train", 3, _LEAN + NEWEST_TRAINING + FORCED + AUTHORS),
    Setting("resnet18", "imagenet", 224, 32, "train", 1, _LEAN + FORCED),
    Setting("resnet18", "imagenet", 224, 32, "inference", 2, _LEAN + FORCED),
    Setting("resnet50", "cifar", 32, 64, "inference", 2, _LEAN),
    Setting("resnet50", "imagenet", 224, 1, "inference", 5, _LEAN + NEWEST),
    Setting("resnet50", "imagenet", 224, 32, "inference", 1, _LEAN),
)

# torch.compile (``fmdconv bench --compile``), kept apart because compiling a network takes minutes on
# 2 CPU cores.
_COMPILED = (STATIC, Variant("fmd", 4), Variant("static", compiled=True), Variant("fmd", 4, compiled=True))
COMPILE_SETTINGS: tuple[Setting, ...] = (
    Setting("resnet18", "cifar", 32, 64, "train", 3, _COMPILED),
    Setting("resnet18", "imagenet", 224, 1, "inference", 30, _COMPILED),
)

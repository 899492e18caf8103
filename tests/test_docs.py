"""Every example in README.md and docs/*.md works as written.

The Python blocks of each document run in order in one namespace, in a scratch folder whose home
(``~``) holds small CIFAR files and whose working folder holds what the examples expect a user to
have: the ODConv authors' ResNet-18 4x checkpoint (written in their layout by the tests' re-statement
of their code) and a checkpoint of ``fmdconv train``'s default recipe. Blocks that work on the
user's own ``model``/``loader``/``optimizer`` get small ones. Blocks starting with ``>>>`` run as
doctests. Every ``fmdconv ...`` command in a fenced or indented block must parse: a sub-command and
flags that exist, with valid values (they are not run: most need data or a long time).
"""

from __future__ import annotations

import doctest
import re
import shlex
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fmdconv.cli import build_parser
from fmdconv.models import create_model
from fmdconv.train import build_model
from fmdconv.train.checkpoint import save_checkpoint
from fmdconv.train.recipe import load_recipe
from test_compat import authors_model
from test_data import make_cifar10_dir, write_cifar_batch

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
INDENTED = re.compile(r"^(?: {4}|\t)(.*)$", re.M)
COMMAND = re.compile(r"(?:^|[\s/])fmdconv(?:\.cli)? ([a-z].*)$")


def python_blocks(document: Path) -> list[tuple[int, str]]:
    """(first line number, code) of every fenced ``python`` block."""
    text = document.read_text()
    return [
        (text[: match.start()].count("\n") + 2, match.group(2))
        for match in FENCE.finditer(text)
        if match.group(1) == "python"
    ]


def commands(document: Path) -> list[str]:
    """The arguments of every ``fmdconv`` command in the document's non-Python code blocks."""
    text = document.read_text()
    lines = [
        line
        for match in FENCE.finditer(text)
        if match.group(1) != "python"
        for line in match.group(2).splitlines()
    ]
    lines += INDENTED.findall(FENCE.sub("", text))
    found = []
    for line in lines:
        line = line.removeprefix("$ ").split(" # ")[0].split("&&")[-1].strip()
        match = COMMAND.search(line)
        if match:
            found.append(match.group(1))
    return found


@pytest.fixture(scope="module")
def user_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(home, working folder) holding what the examples expect a user to have."""
    home = tmp_path_factory.mktemp("home")
    make_cifar10_dir(home / "data")
    cifar100 = home / "data" / "cifar-100-python"
    cifar100.mkdir()
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        images = rng.integers(0, 256, (64, 3, 32, 32), dtype=np.uint8)
        write_cifar_batch(cifar100 / split, images, rng.integers(0, 100, 64).tolist(), b"fine_labels")
    work = tmp_path_factory.mktemp("work")
    authors = authors_model("resnet18", "odconv", kernel_num=4, num_classes=1000)
    state = {f"module.{key}": value for key, value in authors.state_dict().items()}
    torch.save({"epoch": 100, "state_dict": state}, work / "od_resnet18_4x.pth.tar")
    recipe = load_recipe("fashion_mnist")
    save_checkpoint(
        work / "runs" / "fashion_mnist-resnet18-fmd" / "best.pt",
        {"model": build_model(recipe).state_dict(), "recipe": recipe.to_dict()},
    )
    return home, work


def users_objects() -> dict[str, Any]:
    """A small model, data loader and optimizer for the examples that work on the user's own."""
    model = create_model("resnet18", conv="fmd", kernel_num=2, width=0.125, num_classes=10, stem="cifar")
    loader = [(torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))) for _ in range(2)]
    return {"model": model, "loader": loader, "optimizer": torch.optim.SGD(model.parameters(), lr=0.01)}


@pytest.mark.parametrize(
    "document", [d for d in DOCUMENTS if python_blocks(d)], ids=lambda d: d.relative_to(ROOT).as_posix()
)
def test_python_examples_run_as_written(
    document: Path, user_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    home, work = user_files
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    namespace = users_objects()
    for line, code in python_blocks(document):
        where = f"{document.name}:{line}"
        if code.lstrip().startswith(">>>"):
            test = doctest.DocTestParser().get_doctest(code, namespace, where, str(document), line)
            runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
            runner.run(test)
            assert runner.summarize(verbose=False).failed == 0, where
        else:
            exec(compile(code, where, "exec"), namespace)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda d: d.relative_to(ROOT).as_posix())
def test_commands_parse(document: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # examples for GPU machines too
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.chdir(tmp_path)
    parser = build_parser()
    for command in commands(document):
        argv = [word for word in shlex.split(command) if word != "..."]
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{document.name}: `fmdconv {command}` does not parse")


def test_the_examples_are_found() -> None:
    assert len(python_blocks(ROOT / "README.md")) >= 5
    assert "compare" in commands(ROOT / "README.md")  # the README's first command
    assert any(
        c.startswith("train --recipe imagenet_resnet") for c in commands(ROOT / "docs" / "training.md")
    )


@pytest.mark.parametrize("run", ["fashion_mnist", "fashion_mnist_seeds", "fashion_mnist_amd_epyc"])
def test_the_readme_tables_are_the_committed_report_tables(run: str) -> None:
    """The main job's tables in the README are copied from the reports of the runs they describe."""
    report = (ROOT / "docs" / "results" / run / "report.md").read_text().splitlines()
    readme = (ROOT / "README.md").read_text().splitlines()
    start = report.index(next(line for line in report if line.startswith("| Method | Params |")))
    table = report[start : start + 7]
    assert len(table) == 7 and table[-1].startswith("| FMDConv |")
    first_row = readme.index(table[2])  # the Static row is unique to each table
    assert readme[first_row - 2 : first_row + 5] == table

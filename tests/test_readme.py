"""The README's Python examples type-check under ``mypy --strict`` against the installed package."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api")

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert blocks, "README.md has no python examples"
    return blocks


def _mypy(code: str, tmp_path: Path) -> tuple[str, int]:
    f = tmp_path / "readme_example.py"
    f.write_text(code, encoding="utf-8")
    out, err, status = mypy_api.run(
        ["--strict", "--no-incremental", "--config-file", "/dev/null", "--python-version", "3.11", str(f)]
    )
    return out + err, status


@pytest.mark.parametrize("i", range(len(_python_blocks())))
def test_readme_example_passes_mypy_strict(i: int, tmp_path: Path) -> None:
    out, status = _mypy(_python_blocks()[i], tmp_path)
    assert status == 0, out


def test_mypy_check_catches_a_wrong_call(tmp_path: Path) -> None:
    # Negative control: the same check fails on a misuse of the API (wrong argument types), so
    # the package really is typed and the check above is not vacuous.
    code = _python_blocks()[0] + '\nmodel.score("not ids", 3)\n'
    out, status = _mypy(code, tmp_path)
    assert status == 1 and "score" in out, out


def test_every_public_name_has_a_docstring() -> None:
    import importlib
    import inspect

    missing = []
    for name in [
        "",
        ".model",
        ".tokenizer",
        ".generation",
        ".session",
        ".chat",
        ".stops",
        ".cli",
        ".errors",
        ".hub",
        ".license",
    ]:
        mod = importlib.import_module("med42_rs" + name)
        for n, o in vars(mod).items():
            if n.startswith("_") or getattr(o, "__module__", None) != mod.__name__:
                continue
            if (inspect.isclass(o) or inspect.isfunction(o)) and not o.__doc__:
                missing.append(f"{mod.__name__}.{n}")
            if inspect.isclass(o):
                for an, ao in vars(o).items():
                    f = ao.fget if isinstance(ao, property) else getattr(ao, "__func__", ao)
                    if not an.startswith("_") and callable(f) and not f.__doc__:
                        missing.append(f"{mod.__name__}.{n}.{an}")
    assert not missing, missing

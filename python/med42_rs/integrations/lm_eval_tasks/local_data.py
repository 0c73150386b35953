"""The dataset loader of the offline tasks (``custom_dataset`` in their YAML): JSON or JSON-lines
files named by ``dataset_kwargs.data_files`` ({split: path}), read with ``datasets``' ``json``
builder, nothing downloaded. A relative path is relative to this folder (the sample files); give
absolute paths for your own copies of the data sets. ``subject`` keeps only the rows of that
``subject`` when the rows have one (MMLU's subsets in one file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def load(data_files: dict[str, str | list[str]], subject: str | None = None, **_task_metadata: Any) -> Any:
    """A ``datasets.DatasetDict`` with one split per ``data_files`` entry. Keyword arguments other
    than these two are lm-eval's task metadata (model arguments, version) and are ignored."""
    import datasets

    def resolve(p: str) -> str:
        path = Path(p).expanduser()
        path = path if path.is_absolute() else HERE / path
        if not path.is_file():
            raise FileNotFoundError(
                f"offline task data not found: {path} (set dataset_kwargs.data_files in the task YAML "
                "to the absolute path of your JSON or JSON-lines file)"
            )
        return str(path)

    files = {
        split: [resolve(p) for p in ([paths] if isinstance(paths, str) else paths)]
        for split, paths in data_files.items()
    }
    ds = datasets.load_dataset("json", data_files=files)
    if subject is not None:
        ds = ds.filter(lambda row: row.get("subject", subject) == subject)
    return ds

"""Task documents from local files, without the ``datasets`` library or a network.

Reads what lm-eval reads through ``datasets.load_dataset``: ``json`` (JSON
lines or one JSON array), ``csv`` and ``parquet`` files named in
``dataset_kwargs.data_files``, a folder saved with ``Dataset(Dict).save_to_disk``,
or a folder of data files whose names start with the split (``test.jsonl``,
``validation-00000-of-00001.parquet``). Rows become plain dicts; columns missing
from a row are ``None``, as ``datasets`` fills them.

``dataset_path: runwright-corpus`` is Runwright's own: documents from the held-out
tail of the built-in training corpus (see ``corpus_heldout_documents``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modelcore.evaluation.taskconfig import TaskConfig, TaskConfigError

FILE_FORMATS = ("json", "csv", "parquet")
_SUFFIX_FORMAT = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".arrow": "arrow"}
_SPLIT_ALIASES = {"valid": "validation", "val": "validation", "dev": "validation", "eval": "validation"}
CORPUS_DATASET = "runwright-corpus"

Doc = dict[str, Any]


def _unify(rows: list[Doc]) -> list[Doc]:
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return [{c: row.get(c) for c in columns} for row in rows]


def _read_json(path: Path, field: str | None) -> list[Doc]:
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if field is not None or stripped.startswith("["):
        data = json.loads(text)
        if field is not None:
            data = data[field]
        rows = list(data)
    else:
        rows = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise TaskConfigError(f"{path}:{lineno}: not a JSON object: {exc}") from exc
    if not all(isinstance(r, dict) for r in rows):
        raise TaskConfigError(f"{path}: every record must be a JSON object")
    return rows


def _read_table(path: Path, fmt: str) -> list[Doc]:
    if fmt == "csv":
        import pyarrow.csv as pacsv

        return pacsv.read_csv(path).to_pylist()
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        try:
            return pa.ipc.open_stream(source).read_all().to_pylist()
        except pa.ArrowInvalid:
            return pa.ipc.open_file(source).read_all().to_pylist()


def _read_file(path: Path, fmt: str, field: str | None = None) -> list[Doc]:
    try:
        return _read_json(path, field) if fmt == "json" else _read_table(path, fmt)
    except OSError as exc:
        raise TaskConfigError(f"{path}: cannot read: {exc}") from exc


def _resolve(cfg: TaskConfig, name: str) -> Path:
    path = Path(name).expanduser()
    if not path.is_absolute():
        # Relative to the YAML first, so a task folder can ship its data beside it.
        beside = cfg.base_dir / path
        path = beside if beside.exists() or not path.exists() else path.resolve()
    if not path.exists():
        raise TaskConfigError(f"{cfg.source}: dataset_kwargs.data_files: {name} does not exist ({path})")
    return path


def _data_files(cfg: TaskConfig) -> dict[str, list[Path]]:
    raw = cfg.dataset_kwargs.get("data_files")
    if raw is None:
        raise TaskConfigError(
            f"{cfg.source}: dataset_kwargs.data_files: missing (e.g. data_files: {{test: test.jsonl}})"
        )
    if isinstance(raw, str | list):
        raw = {"train": raw}
    if not isinstance(raw, dict):
        raise TaskConfigError(
            f"{cfg.source}: dataset_kwargs.data_files: must be a file, a list or {{split: file}}"
        )
    out = {}
    for split, files in raw.items():
        files = [files] if isinstance(files, str) else files
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise TaskConfigError(
                f"{cfg.source}: dataset_kwargs.data_files.{split}: must be a file name or a list"
            )
        out[str(split)] = [_resolve(cfg, f) for f in files]
    return out


def _split_of(path: Path) -> str:
    head = path.name.split(".")[0].split("-")[0].split("_")[0].lower()
    return _SPLIT_ALIASES.get(head, head) if head else "train"


def _load_folder(folder: Path) -> dict[str, list[Doc]]:
    if (folder / "dataset_dict.json").exists():
        splits = json.loads((folder / "dataset_dict.json").read_text())["splits"]
        return {s: _load_saved(folder / s) for s in splits}
    if (folder / "state.json").exists():
        return {"train": _load_saved(folder)}
    by_split: dict[str, list[Doc]] = {}
    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix in _SUFFIX_FORMAT]
    if not files:
        raise TaskConfigError(f"dataset_path: {folder} holds no .jsonl/.json/.csv/.parquet/.arrow files")
    for path in files:
        by_split.setdefault(_split_of(path), []).extend(_read_file(path, _SUFFIX_FORMAT[path.suffix]))
    return by_split


def _load_saved(folder: Path) -> list[Doc]:
    state = json.loads((folder / "state.json").read_text())
    rows: list[Doc] = []
    for entry in state["_data_files"]:
        rows.extend(_read_table(folder / entry["filename"], "arrow"))
    return rows


def corpus_heldout_documents(
    corpus: str = "stdlib",
    max_corpus_mb: float = 4.0,
    val_fraction: float = 0.05,
    max_docs: int = 32,
    max_chars: int = 2000,
) -> list[Doc]:
    """Documents from the held-out tail of the training corpus, as ``{"text": ...}``.

    Training holds out the last ``val_fraction`` of the corpus's tokens; by
    characters that is the same stretch of text up to tokenization, so a model
    trained with these data settings never saw it. Documents are cut into pieces
    of at most ``max_chars`` characters and the first ``max_docs`` are kept, so the
    task costs the same for every model.
    """
    from modelcore.data import capped_documents

    docs = list(capped_documents(corpus, max_corpus_mb))
    total = sum(len(d) for d in docs)
    skip = total - int(total * val_fraction)
    pieces: list[Doc] = []
    seen = 0
    for doc in docs:
        start = max(0, skip - seen)
        seen += len(doc)
        tail = doc[start:]
        for i in range(0, len(tail), max_chars):
            piece = tail[i : i + max_chars]
            if piece.strip():
                pieces.append({"text": piece})
            if len(pieces) >= max_docs:
                return pieces
    return pieces


def load_splits(cfg: TaskConfig, run_data: Any = None) -> dict[str, list[Doc]]:
    """All splits of a task's dataset as lists of documents.

    ``run_data`` is the evaluated run's ``DataConfig`` when the model is a Runwright
    run: ``runwright-corpus`` with ``corpus: run`` then reads that run's own held-out data.
    """
    kwargs = dict(cfg.dataset_kwargs)
    if cfg.dataset_path == CORPUS_DATASET:
        allowed = {"corpus", "max_corpus_mb", "val_fraction", "max_docs", "max_chars"}
        bad = sorted(set(kwargs) - allowed)
        if bad:
            raise TaskConfigError(f"{cfg.source}: dataset_kwargs.{bad[0]}: unknown for {CORPUS_DATASET}")
        if kwargs.get("corpus") == "run":
            if run_data is None:
                raise TaskConfigError(
                    f"{cfg.source}: dataset_kwargs.corpus: 'run' needs a Runwright run as --model "
                    "(its training data settings pick the held-out text)"
                )
            kwargs.update(
                corpus=run_data.corpus,
                max_corpus_mb=run_data.max_corpus_mb,
                val_fraction=run_data.val_fraction,
            )
        return {"test": corpus_heldout_documents(**kwargs)}
    if cfg.dataset_path in FILE_FORMATS:
        field = kwargs.pop("field", None)
        kwargs.pop("data_files", None)
        kwargs.pop("trust_remote_code", None)
        if kwargs:
            raise TaskConfigError(f"{cfg.source}: dataset_kwargs.{sorted(kwargs)[0]}: not supported")
        return {
            split: _unify([row for f in files for row in _read_file(f, cfg.dataset_path, field)])
            for split, files in _data_files(cfg).items()
        }
    folder = Path(cfg.dataset_path).expanduser()
    if not folder.is_absolute() and (cfg.base_dir / folder).is_dir():
        folder = cfg.base_dir / folder
    if folder.is_dir():
        return {split: _unify(rows) for split, rows in _load_folder(folder).items()}
    raise TaskConfigError(
        f"{cfg.source}: dataset_path: {cfg.dataset_path!r} is not json/csv/parquet, {CORPUS_DATASET}, "
        "or a local folder (hub datasets are not downloaded)"
    )


def split_docs(cfg: TaskConfig, splits: dict[str, list[Doc]], key: str) -> list[Doc]:
    """The documents of the split named by config key ``key`` (e.g. ``test_split``)."""
    name = getattr(cfg, key)
    if name not in splits:
        raise TaskConfigError(
            f"{cfg.source}: {key}: split {name!r} not in the dataset (has: {', '.join(sorted(splits)) or 'none'})"
        )
    if not splits[name]:
        raise TaskConfigError(f"{cfg.source}: {key}: split {name!r} is empty")
    return splits[name]

"""Reading task data from local files the way ``datasets.load_dataset`` would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelcore.evaluation.documents import corpus_heldout_documents, load_splits, split_docs
from modelcore.evaluation.taskconfig import TaskConfigError, load_task_config

ROWS = [{"q": "a", "label": 0}, {"q": "b", "label": 1, "extra": "x"}]


def _task(tmp_path: Path, dataset: str) -> Path:
    path = tmp_path / "t.yaml"
    path.write_text(
        f"task: t\n{dataset}test_split: test\noutput_type: loglikelihood\ndoc_to_text: q\ndoc_to_target: q\n"
    )
    return path


def test_jsonl_relative_to_the_yaml_with_missing_columns_filled(tmp_path):
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    cfg = load_task_config(
        _task(tmp_path, "dataset_path: json\ndataset_kwargs: {data_files: {test: test.jsonl}}\n")
    )
    docs = split_docs(cfg, load_splits(cfg), "test_split")
    assert docs == [{"q": "a", "label": 0, "extra": None}, {"q": "b", "label": 1, "extra": "x"}]


def test_json_array_csv_and_parquet_give_the_same_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"q": "a", "label": 0}, {"q": "b", "label": 1}]
    (tmp_path / "a.json").write_text(json.dumps(rows))
    (tmp_path / "a.csv").write_text("q,label\na,0\nb,1\n")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    for fmt, name in [("json", "a.json"), ("csv", "a.csv"), ("parquet", "a.parquet")]:
        cfg = load_task_config(
            _task(tmp_path, f"dataset_path: {fmt}\ndataset_kwargs: {{data_files: {{test: {name}}}}}\n")
        )
        assert load_splits(cfg)["test"] == rows, fmt  # csv labels are ints, as datasets infers


def test_local_folder_of_split_files_and_save_to_disk_folder(tmp_path):
    import pyarrow as pa

    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "test.jsonl").write_text(json.dumps(ROWS[0]) + "\n")
    (folder / "validation-00000-of-00001.jsonl").write_text(json.dumps(ROWS[0]) + "\n")
    cfg = load_task_config(_task(tmp_path, f"dataset_path: {folder}\n"))
    assert set(load_splits(cfg)) == {"test", "validation"}

    saved = tmp_path / "saved"
    (saved / "test").mkdir(parents=True)
    (saved / "dataset_dict.json").write_text(json.dumps({"splits": ["test"]}))
    (saved / "test" / "state.json").write_text(
        json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]})
    )
    table = pa.Table.from_pylist([{"q": "z", "label": 3}])
    arrow_file = str(saved / "test" / "data-00000-of-00001.arrow")
    with pa.OSFile(arrow_file, "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    cfg = load_task_config(_task(tmp_path, f"dataset_path: {saved}\n"))
    assert load_splits(cfg) == {"test": [{"q": "z", "label": 3}]}


def test_missing_file_and_missing_split_name_the_key(tmp_path):
    cfg = load_task_config(
        _task(tmp_path, "dataset_path: json\ndataset_kwargs: {data_files: {test: nope.jsonl}}\n")
    )
    with pytest.raises(TaskConfigError, match=r"dataset_kwargs\.data_files: nope\.jsonl does not exist"):
        load_splits(cfg)
    (tmp_path / "x.jsonl").write_text(json.dumps(ROWS[0]) + "\n")
    cfg = load_task_config(
        _task(tmp_path, "dataset_path: json\ndataset_kwargs: {data_files: {train: x.jsonl}}\n")
    )
    with pytest.raises(TaskConfigError, match="test_split: split 'test' not in the dataset"):
        split_docs(cfg, load_splits(cfg), "test_split")
    cfg = load_task_config(_task(tmp_path, "dataset_path: some_org/hub_dataset\n"))
    with pytest.raises(TaskConfigError, match="dataset_path:"):
        load_splits(cfg)


def test_heldout_corpus_documents_come_from_the_end_of_the_corpus():
    docs = corpus_heldout_documents(max_corpus_mb=0.2, val_fraction=0.05, max_docs=5, max_chars=300)
    assert 1 <= len(docs) <= 5
    assert all(0 < len(d["text"]) <= 300 for d in docs)
    again = corpus_heldout_documents(max_corpus_mb=0.2, val_fraction=0.05, max_docs=5, max_chars=300)
    assert docs == again
    head = corpus_heldout_documents(max_corpus_mb=0.2, val_fraction=1.0, max_docs=1, max_chars=300)
    assert head != docs[:1]  # the whole corpus starts elsewhere than its held-out tail

"""seg_plugins.data.build: what the dataset checks skipped is a value (SkipReport) returned by
each checked_dataset_dicts call, never state of the module; SkipReport.write keeps
OUTPUT_DIR/skipped_samples.json in step with the datasets it covers."""

import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

import seg_plugins  # noqa: F401  must come before detectron2 submodules (repairs the install)

# isort: split
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils import comm

from seg_plugins import add_seg_plugins_config
from seg_plugins.data.build import SKIP_REPORT_FILE, SkipReport, checked_dataset_dicts

SIZE = (16, 20)


def _cfg(*opts):
    cfg = get_cfg()
    add_seg_plugins_config(cfg)
    cfg.merge_from_list(list(opts))
    return cfg


def _records(root, n):
    """``n`` semantic records of 3 classes, their files written under ``root``."""
    rng = np.random.default_rng(n)
    os.makedirs(root, exist_ok=True)
    records = []
    for i in range(n):
        image, label = os.path.join(root, f"{i}.jpg"), os.path.join(root, f"{i}_label.png")
        Image.fromarray(rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)).save(image)
        Image.fromarray(rng.integers(0, 3, SIZE, dtype=np.uint8)).save(label)
        records.append(
            {"file_name": image, "sem_seg_file_name": label, "height": SIZE[0], "width": SIZE[1]}
        )
    return records


def _register(names, name, records):
    DatasetCatalog.register(name, lambda: [dict(r) for r in records])
    MetadataCatalog.get(name).set(stuff_classes=["a", "b", "c"], ignore_label=255)
    names.append(name)


def _entry(*files, total=4, level="light"):
    return {
        "total": total,
        "level": level,
        "skipped": [{"file_name": f, "problems": [{"kind": "missing_file"}]} for f in files],
    }


def _written(output_dir):
    with open(os.path.join(output_dir, SKIP_REPORT_FILE)) as f:
        return json.load(f)


# --------------------------------------------------------------------------- the leak
def test_each_call_reports_only_its_own_datasets(tmp_path, names):
    """Two runs in one process: the second, on a clean dataset, used to write the first's
    skipped files into its own skipped_samples.json (the report was a module global)."""
    bad = _records(tmp_path / "bad", 3)
    bad.append(dict(bad[0], file_name=str(tmp_path / "bad" / "gone.jpg")))
    _register(names, "t_report_bad", bad)
    _register(names, "t_report_clean", _records(tmp_path / "clean", 2))
    cfg = _cfg("DATASETS.SKIP_BAD_SAMPLES", True)

    records, first = checked_dataset_dicts(cfg, ["t_report_bad"], is_train=True)
    assert len(records) == 3 and first and first.covered == ("t_report_bad",)
    entry = first.datasets["t_report_bad"]
    assert entry["total"] == 4 and entry["level"] == "light"
    assert [os.path.basename(s["file_name"]) for s in entry["skipped"]] == ["gone.jpg"]
    assert first.write(str(tmp_path / "run1")) is not None

    records, second = checked_dataset_dicts(cfg, "t_report_clean", is_train=True)
    assert len(records) == 2
    assert not second and dict(second.datasets) == {} and second.covered == ("t_report_clean",)
    assert second.write(str(tmp_path / "run2")) is None
    assert not os.path.exists(tmp_path / "run2" / SKIP_REPORT_FILE)  # nothing of run 1
    assert list(first.datasets) == ["t_report_bad"]  # the first report is its own value

    # one call over both: one entry, both covered
    records, both = checked_dataset_dicts(cfg, ["t_report_clean", "t_report_bad"], is_train=True)
    assert len(records) == 5 and list(both.datasets) == ["t_report_bad"]
    assert both.covered == ("t_report_clean", "t_report_bad")


def test_a_dataset_clean_now_loses_its_entry_in_the_same_output_dir(tmp_path, names):
    bad = _records(tmp_path / "data", 2)
    _register(names, "t_report_fixed", bad + [dict(bad[0], file_name=str(tmp_path / "gone.jpg"))])
    out = str(tmp_path / "out")
    cfg = _cfg("DATASETS.SKIP_BAD_SAMPLES", True)
    _, report = checked_dataset_dicts(cfg, "t_report_fixed", is_train=True)
    assert report.write(out) == os.path.join(out, SKIP_REPORT_FILE)

    DatasetCatalog.remove("t_report_fixed")  # the bad record removed: the data was fixed
    DatasetCatalog.register("t_report_fixed", lambda: [dict(r) for r in bad])
    _, report = checked_dataset_dicts(cfg, "t_report_fixed", is_train=True)
    assert report.write(out) is None
    assert not os.path.exists(os.path.join(out, SKIP_REPORT_FILE))


# --------------------------------------------------------------------------- write
def test_write_replaces_covered_entries_keeps_others_and_deletes_an_empty_file(tmp_path, caplog):
    out = str(tmp_path / "out")
    path = os.path.join(out, SKIP_REPORT_FILE)
    with caplog.at_level(logging.WARNING, logger="seg_plugins.data.build"):
        assert SkipReport({"train": _entry("a", "b"), "val": _entry("c")}).write(out) == path
    assert f"3 bad sample(s) skipped; listed in {path}" in caplog.text
    assert _written(out) == {"train": _entry("a", "b"), "val": _entry("c")}

    # the train loader of a later run: its entry replaced, the test set's kept
    assert SkipReport({"train": _entry("d")}, ("train",)).write(out) == path
    assert _written(out) == {"train": _entry("d"), "val": _entry("c")}
    # a covered dataset with nothing skipped loses its entry; a dataset not covered keeps its
    assert SkipReport({}, ("val", "other")).write(out) is None
    assert _written(out) == {"train": _entry("d")}
    assert SkipReport({}, ("train",)).write(out) is None
    assert not os.path.exists(path)  # no entry left: no file
    assert SkipReport({}, ("train",)).write(out) is None and not os.path.exists(path)
    assert os.listdir(out) == []  # no temporary file left behind


def test_write_replaces_a_file_that_is_not_a_report(tmp_path, caplog):
    out = tmp_path / "out"
    out.mkdir()
    (out / SKIP_REPORT_FILE).write_text("[1, 2")
    with caplog.at_level(logging.WARNING, logger="seg_plugins.data.build"):
        SkipReport({"train": _entry("a")}).write(str(out))
    assert "is not a skip report" in caplog.text
    assert _written(out) == {"train": _entry("a")}


def test_write_only_on_the_main_process_and_with_an_output_dir(tmp_path, monkeypatch):
    report = SkipReport({"train": _entry("a")})
    assert report.write("") is None
    monkeypatch.setattr(comm, "is_main_process", lambda: False)
    assert report.write(str(tmp_path)) is None
    assert os.listdir(tmp_path) == []


def test_report_is_a_read_only_value():
    entries = {"train": _entry("a")}
    report = SkipReport(entries, ("val",))
    assert report.covered == ("val", "train")  # a dataset with an entry is covered
    entries["val"] = _entry("b")  # the caller's dict is not the report's
    assert list(report.datasets) == ["train"]
    with pytest.raises(TypeError):
        report.datasets["val"] = _entry("b")
    assert report and not SkipReport() and not SkipReport({}, ("train",))
    assert report == SkipReport({"train": _entry("a")}, ("val", "train"))

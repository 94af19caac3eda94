"""AtomicCOCOEvaluator scores the images it was given: equal to detectron2's COCOEvaluator
when every image was evaluated, and not counting images it never saw (left out by the
dataset checks) as missed detections."""

import seg_plugins  # noqa: F401  (first: repairs detectron2 where needed)

# isort: split
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import Boxes, BoxMode, Instances

from seg_plugins.data import register_shapes
from seg_plugins.evaluation import AtomicCOCOEvaluator

TINY = "coco_eval_shapes"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    register_shapes(TINY, root=str(root), num_train=1, num_val=4, image_size=48, seed=11)
    name = f"{TINY}_instance_val"
    return name, DatasetCatalog.get(name)


def _perfect(record: dict) -> dict:
    """The prediction that matches every ground-truth box of ``record`` exactly."""
    anns = [a for a in record["annotations"] if not a.get("iscrowd", 0)]
    boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns]
    instances = Instances((record["height"], record["width"]))
    instances.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    instances.scores = torch.ones(len(anns))
    instances.pred_classes = torch.tensor([a["category_id"] for a in anns], dtype=torch.int64)
    return {"instances": instances}


def _ap(evaluator, records) -> float:
    evaluator.reset()
    for record in records:
        evaluator.process([{"image_id": record["image_id"]}], [_perfect(record)])
    return evaluator.evaluate()["bbox"]["AP"]


def test_scores_the_images_it_saw(dataset, tmp_path):
    name, records = dataset
    assert MetadataCatalog.get(name).evaluator_type in ("coco", ["coco"])
    assert sum(len(r["annotations"]) for r in records[1:]) > 0
    ours = AtomicCOCOEvaluator(name, tasks=("bbox",), output_dir=str(tmp_path / "ours"))
    theirs = COCOEvaluator(name, tasks=("bbox",), output_dir=str(tmp_path / "theirs"))
    # every image: detectron2's figure
    assert _ap(ours, records) == pytest.approx(_ap(theirs, records)) == pytest.approx(100.0)
    # the first image left out (as the dataset checks skip one): its objects are not missed
    assert len(records[0]["annotations"]) > 0
    assert _ap(ours, records[1:]) == pytest.approx(100.0)
    assert _ap(theirs, records[1:]) < 100.0
    assert (tmp_path / "ours" / "coco_instances_results.json").is_file()

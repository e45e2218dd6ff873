"""Every artifact path of the pipeline, in one place (relative to the project root).

dvc.yaml names the same paths; tests/test_dvc_yaml.py checks that each stage's deps and outs
match what its flow declares in ``READS`` and ``WRITES``.
"""
from pathlib import Path

# prepare_data
PREPARED = Path("data/prepared")
MANIFEST = Path("data/manifest.parquet")
SOURCES = Path("data/sources")  # check_source@<name>: one checked manifest fragment per real source
DATA_REPORTS = Path("reports/data")

# hard_region_boxes
BOXES = Path("data/boxes.parquet")
BOX_REPORTS = Path("reports/boxes")

# The trained system: one directory per part, in the layout nightlab.trained.TrainedModels.from_dir reads.
MODELS = Path("models")

# train_image_model, per_class_iou, select_hard_classes
IMAGE_MODEL = MODELS / "image"
IMAGE_REPORTS = Path("reports/image")
IMAGE_IOU = IMAGE_REPORTS / "per_class_iou.parquet"
IMAGE_METRICS = IMAGE_REPORTS / "metrics.json"  # the image level on the selection and the report split
HARD_CLASSES = Path("reports/hard_classes.json")  # the selection with its evidence (threshold, IoUs)
HARD_SET = Path("data/hard_set.json")  # just the hard classes: what the region stages train on

# train_rdn, train_region_model, hdm_relabel_retrain
RDN_MODEL = MODELS / "rdn"
RDN_REPORTS = Path("reports/rdn")
REGION_MODEL = MODELS / "region"
REGION_REPORTS = Path("reports/region")
HDM_MODEL = MODELS / "hdm"
HDM_PROPOSALS = Path("data/hdm_proposals.parquet")
HDM_REPORTS = Path("reports/hdm")

# evaluate_merged
REPORTS = Path("reports")
METRICS = REPORTS / "metrics.json"
CONFUSIONS = Path("data/eval/confusions.npz")  # one confusion matrix per report image and variant
MERGED_REPORTS = REPORTS / "merged"

PROJECT_MODELS = (IMAGE_MODEL, REGION_MODEL, RDN_MODEL, HDM_MODEL)

# Training compute: each training stage's FLOPs (nightlab.compute), and the system's total with the baselines'.
COMPUTE = REPORTS / "compute"
COMPUTE_TOTAL = REPORTS / "compute.json"
TRAINING_STAGES = ("train_image_model", "train_rdn", "train_region_model", "hdm_relabel_retrain")

# Outside DVC's outs (DVC deletes outs before a stage runs; resuming needs these).
CHECKPOINTS = Path("checkpoints")
PREFECT_CACHE = Path(".prefect-cache")  # Prefect's persisted task results (pyproject.toml [tool.prefect])
LAST_METRICS = PREFECT_CACHE / "last_metrics.json"  # the previous pipeline run's metrics, for its artifact


def source_fragment(name: str) -> Path:
    return SOURCES / f"{name}.parquet"


BASELINE_DATA = Path("data/baselines")  # train_baseline@<name>: per-image confusions on the report split
BASELINE_REPORTS = REPORTS / "baselines"


def baseline_model(name: str) -> Path:
    return MODELS / "baselines" / name


def baseline_confusions(name: str) -> Path:
    return BASELINE_DATA / f"{name}.npz"


def baseline_reports(name: str) -> Path:
    return BASELINE_REPORTS / name


def compute_file(stage: str) -> Path:
    """Where a training stage records its FLOPs."""
    return COMPUTE / f"{stage}.json"

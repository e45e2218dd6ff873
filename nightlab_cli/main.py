"""The ``nightlab`` command: one small function per subcommand, registered in ``COMMANDS``.

To add a subcommand, write ``cmd_<name>(args) -> int | None`` and append a ``Command`` to
``COMMANDS`` with its arguments. Heavy imports (Prefect, DVC, torch) go inside the function,
so ``nightlab --help`` stays instant.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


def arg(*flags: str, **kwargs) -> tuple[tuple[str, ...], dict]:
    """One ``add_argument`` call, written down for later."""
    return flags, kwargs


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    run: Callable[[argparse.Namespace], int | None]
    args: list = field(default_factory=list)


def _fail(msg: str, code: int = 2) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return code


def _enter_project() -> Path:
    """Work at the root of the project around the current directory (where dvc.yaml is): stage
    names, params.yaml and every output path are relative to it, so the commands work from any
    sub-directory of the project."""
    here = Path.cwd().resolve()
    for root in (here, *here.parents):
        if (root / "dvc.yaml").is_file():
            os.chdir(root)
            return root
    raise SystemExit(f"error: no NightLab project (dvc.yaml) in {here} or above")


def cmd_run(args: argparse.Namespace) -> int:
    _enter_project()
    from flows.pipeline import run

    return run(args.targets, args.retries, args.force)


def cmd_schedule(args: argparse.Namespace) -> int | None:
    root = _enter_project()  # scheduled runs execute in this process's directory
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.settings import get_current_settings
    from pydantic import ValidationError

    from flows.pipeline import pipeline

    if not get_current_settings().api.url:
        return _fail("`nightlab schedule` needs a running Prefect server: export "
                     "PREFECT_API_URL=http://127.0.0.1:4200/api first (or set it in your Prefect profile), then "
                     "start `prefect server start --host 127.0.0.1 --port 4200` (the UI takes the API's address "
                     "from it when the server starts)")
    try:
        CronSchedule(cron=args.cron)
    except ValidationError as err:
        return _fail(f"--cron {args.cron!r}: {err.errors()[0]['msg']}")
    print(f"serving deployment 'pipeline/{args.name}' on cron {args.cron!r} from {root} (Ctrl+C stops)")
    # limit=1: a run that outlasts the interval must not overlap the next (DVC's repo lock).
    pipeline.serve(name=args.name, cron=args.cron, parameters={"retries": args.retries}, limit=1)
    return 0


def cmd_stages(args: argparse.Namespace) -> int:
    _enter_project()
    from dvc.exceptions import DvcException

    from flows.pipeline import stage_order

    try:
        order = stage_order(".", args.targets or None)
    except DvcException as err:
        return _fail(str(err))
    print("\n".join(order))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from flows.paths import HARD_CLASSES
    from nightlab.config import load_params
    from nightlab.device import pick_device
    from nightlab.errors import ConfigError, DataError
    from nightlab.predict import TwoLevel, plan_predictions, predict_files, synthetic_warning

    try:
        jobs = plan_predictions(args.images, args.out, args.image_level)
        params = load_params(args.params)
        device = pick_device(args.device, "--device")
    except (ConfigError, DataError) as err:
        return _fail(str(err))
    try:
        model = TwoLevel.from_params(params, args.models, args.hard or HARD_CLASSES, args.detector, device)
    except DataError as err:
        return _fail(f"{err} (train the models first: make repro)")
    # Models of this project's own run that predate the record in config.json: its dvc.lock says.
    lock = "dvc.lock" if Path(args.models).resolve() == Path("models").resolve() else None
    warning = synthetic_warning(args.models, lock)
    if warning:
        print(warning, file=sys.stderr)
    failures = predict_files(jobs, model)
    print(f"{len(jobs) - len(failures)} of {len(jobs)} images written to {args.out}")
    for _path, problem in failures:
        print(f"failed: {problem}", file=sys.stderr)
    return 1 if failures else 0


def cmd_export(args: argparse.Namespace) -> int:
    from nightlab.export import ExportError, export_onnx, export_torchscript
    from nightlab.io import DataError, read_json

    models, out = Path(args.models), Path(args.out)
    formats = ("torchscript", "onnx") if args.format == "both" else (args.format,)
    try:
        for fmt in formats:
            for name in ("image", "region", *([args.detector] if fmt == "onnx" else [])):
                cfg = read_json(models / name / "config.json")
                side = cfg.get("region_size")
                hw = (side, side) if side else (args.height, args.width)
                if fmt == "torchscript":
                    path = out / f"{name}_model.torchscript.pt"
                    diff, engine = export_torchscript(models / name, path, hw), "TorchScript"
                else:
                    path = out / f"{name}_{'network' if name == args.detector else 'model'}.onnx"
                    diff, engine = export_onnx(models / name, path, hw), "onnxruntime"
                print(f"{path}: max |{engine} - eager| = {diff:.2e}")
    except DataError as err:
        return _fail(f"{err} (train the models first: make repro, or point --models at them)")
    except (ExportError, OSError) as err:  # OSError: an unwritable --out, a full disk
        return _fail(str(err))
    if "onnx" in formats:
        print(f"{args.detector}_network.onnx holds the backbone and RPN head; anchors, box decoding and NMS stay in "
              "PyTorch (nightlab.models.rdn.RDN.proposals)")
    return 0


PROVENANCE = "provenance.json"


def _provenance(uses: tuple[str, ...] = ()) -> dict:
    """Which run an experiment report belongs to: HEAD, the md5 of dvc.lock and, for a report made from
    the metrics files ``uses``, those files and the dvc.lock entries of the stages behind them
    (nightlab.provenance.snapshot), against which ``nightlab report status`` judges it."""
    import subprocess

    from nightlab.provenance import lock_md5, snapshot

    rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or None
    lock = Path("dvc.lock")
    prov = {"git_rev": rev, "dvc_lock_md5": lock_md5(lock.read_bytes()) if lock.is_file() else None}
    if uses:
        prov.update(uses=list(uses), stages=snapshot(lock.read_text(), uses) if lock.is_file() else {})
    return prov


def _stages_then(path: Path, prov: dict) -> tuple[dict | None, str]:
    """The dvc.lock stages a report was made against, and where they come from: its provenance, or
    for an older report dvc.lock at the revision it names, when that file's md5 is the recorded one."""
    import subprocess

    from nightlab.provenance import REPORT_USES, lock_md5, snapshot

    if "stages" in prov:
        return prov["stages"], "its provenance"
    uses = prov.get("uses") or REPORT_USES.get(path.parent.name, ("reports/metrics.json",))
    rev = prov.get("git_rev")
    shown = subprocess.run(["git", "show", f"{rev}:dvc.lock"], capture_output=True, text=True) if rev else None
    if shown is None or shown.returncode != 0:
        return None, f"revision {str(rev)[:10]} is not in this clone"
    if lock_md5(shown.stdout) != prov.get("dvc_lock_md5"):
        return None, f"it was made against an uncommitted dvc.lock (not the one at {rev[:10]})"
    return snapshot(shown.stdout, uses), f"dvc.lock at {rev[:10]}"


def _report_status() -> int:
    """Every experiment report under reports/ with its provenance: current, or STALE with what changed
    since in the stages it used (params, outputs, code and inputs; nightlab.provenance). Exit 1 when any
    is stale."""
    import json

    from nightlab.provenance import changes, format_changes, lock_stages

    lock = Path("dvc.lock")
    now = lock_stages(lock.read_text()) if lock.is_file() else {}
    stale = 0
    found = sorted(Path("reports").rglob(PROVENANCE))
    for path in found:
        prov = json.loads(path.read_text())
        made = f"made at {str(prov.get('git_rev'))[:10]}"
        then, source = _stages_then(path, prov)
        if then is None:
            stale += 1
            print(f"STALE    {path.parent}  ({made}; cannot tell what changed: {source})")
            continue
        lines = changes(then, now)
        stale += bool(lines)
        if not lines:
            print(f"current  {path.parent}  ({made}; the {len(then)} stages it used are unchanged in dvc.lock)")
            continue
        print(f"STALE    {path.parent}  ({made}; {len(lines)} of the {len(then)} stages it used changed since, "
              f"per {source}):")
        print("\n".join(format_changes(lines)))
    if not found:
        print("no experiment reports (reports/*/provenance.json) yet")
    return 1 if stale else 0


def cmd_report(args: argparse.Namespace) -> int:
    import json
    import subprocess

    from flows.paths import HARD_CLASSES, IMAGE_METRICS, METRICS
    from nightlab.io import write_json
    from nightlab.sweep import (
        ablation_table,
        seeds_table,
        sweep_table,
        write_ablation_report,
        write_seeds_report,
        write_sweep_report,
    )

    _enter_project()
    if args.kind == "status":
        return _report_status()
    res = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True)
    if res.returncode != 0:
        return _fail(f"dvc exp show failed: {res.stderr.strip()}")
    def hard_of(rev: str) -> list[str] | None:
        """The hard classes a revision selected: its hard-classes report (git-tracked)."""
        if rev == "workspace":
            return json.loads(HARD_CLASSES.read_text())["names"] if HARD_CLASSES.is_file() else None
        shown = subprocess.run(["git", "show", f"{rev}:{HARD_CLASSES.as_posix()}"], capture_output=True, text=True)
        return json.loads(shown.stdout)["names"] if shown.returncode == 0 else None

    exps = json.loads(res.stdout or "[]")
    out = Path(args.out or {"threshold-sweep": "reports/sweep", "seeds": "reports/seeds"}.get(args.kind,
                                                                                                "reports/ablations"))
    prov = _provenance({"ablations": (IMAGE_METRICS.as_posix(), METRICS.as_posix())}.get(
        args.kind, (METRICS.as_posix(),)))
    if args.kind == "ablations":
        table = ablation_table(exps, IMAGE_METRICS.as_posix())
        if len(table) < 2:
            return _fail("no experiment that changes only image_model.* params found; run for example "
                         "dvc exp run -S image_model.light_adaptation=false per_class_iou --queue && dvc queue start")
        headline = json.loads(METRICS.read_text()) if METRICS.is_file() else None
        write_ablation_report(table, out / "ablations.md", headline, prov)
        write_json(out / PROVENANCE, prov)
        print((out / "ablations.md").read_text())
        return 0
    if args.kind == "seeds":
        table = seeds_table(exps, METRICS.as_posix())
        if table.empty:
            return _fail("no experiment with reports/metrics.json and a seed found; run "
                         "dvc exp run -S seed=1,2 --queue && dvc queue start")
        write_seeds_report(table, out / "seeds.md", prov)
        write_json(out / PROVENANCE, prov)
        print((out / "seeds.md").read_text())
        return 0
    table = sweep_table(exps, hard_of, METRICS.as_posix())
    if table.empty:
        return _fail("no experiment with reports/metrics.json and hard_classes.threshold found; run "
                     "dvc exp run -S hard_classes.threshold=0.3,0.4,0.5,0.6 -S 'splits.report=[*/val/night]' "
                     "-S splits.report_on_select=true --queue && dvc queue start")
    write_sweep_report(table, out / "threshold_sweep.md", out / "threshold_sweep.png", prov)
    write_json(out / PROVENANCE, prov)
    print((out / "threshold_sweep.md").read_text())
    return 0


def cmd_confirm(args: argparse.Namespace) -> int:
    import tempfile

    from flows.paths import HARD_SET, MODELS, PROJECT_MODELS
    from nightlab.config import load_params
    from nightlab.confirm import fresh_test_split, hard_boxes
    from nightlab.device import pick_device
    from nightlab.errors import ConfigError
    from nightlab.evaluation import TwoLevelSpec, evaluate_two_level
    from nightlab.headline import headline_metrics
    from nightlab.io import read_json, write_json
    from nightlab.trained import TrainedModels
    from nightlab.variants import CLAIMS

    _enter_project()
    try:
        p = load_params("params.yaml")
        device = pick_device(p.device)
    except ConfigError as err:
        return _fail(str(err))
    if p.data.synthetic is None:
        return _fail("confirm generates a fresh test split, which needs data.synthetic; with a real dataset, "
                     "keep a split you never report on and name it in splits.report once, at the end")
    if args.data_seed == p.data.seed:
        return _fail(f"--data-seed {args.data_seed} is the seed the models were trained and chosen with (data.seed); "
                     "pick one never used before")
    for need in (*PROJECT_MODELS, HARD_SET):
        if not need.exists():
            return _fail(f"{need}: not found; run dvc repro first")
    scenes = args.scenes or p.data.synthetic.test
    hard = read_json(HARD_SET)["ids"]
    models = TrainedModels.from_dir(MODELS, device, p.image_model.window)
    with tempfile.TemporaryDirectory(prefix="nightlab-confirm-") as tmp:
        print(f"generating {scenes} test scenes with data seed {args.data_seed} ...", flush=True)
        rep = fresh_test_split(tmp, p.data.synthetic, args.data_seed, scenes).select(p.splits.report)
        print(f"evaluating on {len(rep)} images ({', '.join(map(str, p.splits.report))}) ...", flush=True)
        ev = evaluate_two_level(rep, hard_boxes(rep, p.boxes, hard), models, hard, TwoLevelSpec.of(p))
    metrics = headline_metrics(ev, hard, p.evaluation.bootstrap, p.evaluation.bootstrap_seed)
    out = Path(args.out) / f"data_seed_{args.data_seed}.json"
    write_json(out, {"data_seed": args.data_seed, "scenes": scenes, "report.images": len(rep),
                     "split": [str(s) for s in p.splits.report], **_provenance(), "metrics": metrics})
    for claim in CLAIMS:
        m = {k: 100 * metrics[f"{claim.name}.{k}"] for k in ("diff", "ci_low", "ci_high")}
        print(f"{claim.name}: {m['diff']:+.2f} mIoU, 95% CI [{m['ci_low']:+.2f}, {m['ci_high']:+.2f}]")
    print(f"written to {out}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from nightlab.compare import WORKSPACE, read_revision, render
    from nightlab.errors import DataError

    root = _enter_project()
    revs = args.revs or [WORKSPACE, "HEAD"]
    try:
        revisions = [read_revision(root, rev) for rev in revs]
    except DataError as err:
        return _fail(str(err))
    if not any(r.metrics for r in revisions):
        return _fail(f"no reports/metrics.json at {', '.join(revs)}: run the pipeline (make repro) first")
    sys.stdout.write(render(revisions))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import subprocess

    _enter_project()
    return subprocess.call([sys.executable, "-m", "benches", *(["--quick"] if args.quick else [])])


def cmd_params(args: argparse.Namespace) -> int:
    from nightlab.config import ConfigError, Params, load_profile
    from nightlab.config.writer import DEFAULT_HEADER, params_yaml

    try:
        params = load_profile(args.profile) if args.profile else Params()
    except ConfigError as err:
        return _fail(str(err))
    header = DEFAULT_HEADER if not args.profile else (
        f"Written by `nightlab params --profile {args.profile}`: the defaults of nightlab/config.py with\n"
        f"the profile's overrides. Edit values here, or change the profile and run the command again.")
    text = params_yaml(params, header)
    if args.out == "-":
        sys.stdout.write(text)
    else:
        from nightlab.io import atomic_path

        with atomic_path(args.out) as tmp:
            tmp.write_text(text)
        print(f"{args.out}: written" + (f" from {args.profile}" if args.profile else " (defaults)"))
    return 0


def cmd_dvc_yaml(args: argparse.Namespace) -> int:
    root = _enter_project()
    from flows.dvc_yaml import render, write

    if args.check:
        if (root / "dvc.yaml").read_text() != render():
            return _fail("dvc.yaml is not what the flows declare: run `nightlab dvc-yaml` to write it again", 1)
        print("dvc.yaml: up to date with the flows")
        return 0
    print("dvc.yaml: written" if write(root / "dvc.yaml") else "dvc.yaml: unchanged")
    return 0


_TARGETS = arg("targets", nargs="*", help="stages to run, with what they depend on (default: all of dvc.yaml)")
_RETRIES = arg("--retries", type=int, default=0, metavar="N", help="retries of a failed stage (default: 0)")

_PARAMS = arg("--params", default="params.yaml", help="params file (default: params.yaml)")

COMMANDS: list[Command] = [
    Command("run", "run the pipeline once as a Prefect flow (DVC skips what is up to date)", cmd_run, [
        _TARGETS, _RETRIES,
        arg("--force", action="store_true", help="rerun stages even if DVC finds them up to date"),
    ]),
    Command("schedule", "serve the pipeline on a cron schedule (needs a Prefect server; blocks)", cmd_schedule, [
        arg("--cron", required=True, help='cron schedule, e.g. "0 3 * * *" (03:00 every day)'),
        arg("--name", default="nightly", help="deployment name: runs show as pipeline/NAME (default: nightly)"),
        _RETRIES,
    ]),
    Command("predict", "two-level prediction on image files (png/jpg, any size) with the trained models", cmd_predict, [
        arg("images", nargs="+", help="image files, folders (every png/jpg/jpeg below, sub-folders mirrored under "
            "--out) or quoted glob patterns ('night/**/*.png')"),
        arg("--out", required=True, help="output directory: <stem>_labelIds.png (Cityscapes labelIds), "
            "_trainIds.png, _color.png, _overlay.png"),
        arg("--image-level", action="store_true", help="also write the image-level prediction: "
            "<stem>_image_trainIds.png, _image_color.png"),
        arg("--models", default="models", help="directory with image/, region/, hdm/ (default: models)"),
        arg("--hard", default=None, help="hard classes JSON (default: the pipeline's, reports/hard_classes.json)"),
        arg("--detector", default="hdm", choices=["hdm", "rdn"], help="region detector (default: hdm)"),
        arg("--device", default="auto", choices=["auto", "cpu", "cuda"]),
        _PARAMS,
    ]),
    Command("export", "export the trained models to TorchScript and/or ONNX, each checked against eager PyTorch",
            cmd_export, [
        arg("--models", default="models", help="directory with image/, region/ and the detector (default: models)"),
        arg("--out", default="export", help="output directory (default: export)"),
        arg("--format", default="torchscript", choices=["torchscript", "onnx", "both"],
            help="torchscript (default): the image and region models, traced; onnx: those and the detector's "
                 "network part (backbone + RPN head: anchors, box decoding and NMS stay in PyTorch), with dynamic "
                 "batch, height and width, checked with onnxruntime; both: the two"),
        arg("--detector", default="hdm", choices=["hdm", "rdn"],
            help="the detector whose network --format onnx exports (default: hdm, as predict uses)"),
        arg("--height", type=int, default=128, help="example input height for the image model and detector"),
        arg("--width", type=int, default=256, help="example input width for the image model and detector"),
    ]),
    Command("report", "build a report from DVC experiments", cmd_report, [
        arg("kind", choices=["threshold-sweep", "seeds", "ablations", "status"],
            help="threshold-sweep: supplement Table 1 for our data; seeds: headline numbers over training seeds; "
                 "ablations: image-level variants (light adaptation, night-aware loss, full resolution); "
                 "status: whether each committed experiment report still matches dvc.lock"),
        arg("--out", default=None, help="output directory (default: reports/sweep, reports/seeds or "
                                        "reports/ablations)"),
    ]),
    Command("confirm", "evaluate the trained models on a fresh synthetic test split (a data seed never used)",
            cmd_confirm, [
        arg("--data-seed", type=int, required=True, help="the data seed of the fresh split (not data.seed)"),
        arg("--scenes", type=int, default=None, help="scenes to generate (default: data.synthetic.test)"),
        arg("--out", default="reports/confirm", help="output directory (default: %(default)s)"),
    ]),
    Command("compare", "headline mIoU and hard-class mIoU in percent, with their intervals, of revisions side by side",
            cmd_compare, [
        arg("revs", nargs="*", metavar="rev", help="git revisions or DVC experiment names, or workspace "
            "(default: workspace HEAD); the first is the one the changes are measured from"),
    ]),
    Command("bench", "run the benchmarks (benches/), writing benches/RESULTS.md", cmd_bench, [
        arg("--quick", action="store_true", help="tiny sizes: a smoke check"),
    ]),
    Command("params", "write a complete params.yaml: the defaults, or a profile on top of them", cmd_params, [
        arg("--profile", help="a profile (an overlay of the defaults), e.g. profiles/tiny.yaml"),
        arg("--out", default="params.yaml", help="where to write it; - for stdout (default: params.yaml)"),
    ]),
    Command("dvc-yaml", "write dvc.yaml from the flows' declarations (READS, WRITES, PARAMS, import closure)",
            cmd_dvc_yaml, [
        arg("--check", action="store_true", help="only check that dvc.yaml is the generated one (exit 1 if not)"),
    ]),
    Command("stages", "print the pipeline's stages in DAG order, as read from DVC", cmd_stages, [
        arg("targets", nargs="*", help="only these stages and what they depend on"),
    ]),
]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="nightlab", description="NightLab night-scene segmentation pipeline.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for c in COMMANDS:
        p = sub.add_parser(c.name, help=c.help, description=c.help)
        for flags, kwargs in c.args:
            p.add_argument(*flags, **kwargs)
        p.set_defaults(func=c.run)
    return ap


def main(argv: list[str] | None = None) -> int:
    from nightlab.errors import as_user_error

    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except Exception as err:  # a user's mistake (bad params, a missing GPU, a full disk): one block, exit 2
        user = as_user_error(err, f"nightlab {args.command}")
        if user is None:
            raise  # a bug: its traceback
        return _fail(str(user))


if __name__ == "__main__":
    sys.exit(main())

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
        return _fail("`nightlab schedule` needs a running Prefect server: start `prefect server start` and "
                     "export PREFECT_API_URL=http://127.0.0.1:4200/api (or set it in your Prefect profile)")
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
    from nightlab.config import ConfigError, load_params
    from nightlab.device import pick_device
    from nightlab.io import DataError
    from nightlab.predict import TwoLevel, predict_files

    try:
        params = load_params(args.params)
        model = TwoLevel.from_params(params.merge, args.detector, args.models, args.hard, pick_device(args.device))
    except (ConfigError, DataError) as err:
        return _fail(f"{err} (train the models first: make repro)")
    failures = predict_files(args.images, args.out, model)
    done = len(args.images) - len(failures)
    print(f"{done} of {len(args.images)} images written to {args.out}")
    for _path, problem in failures:
        print(f"failed: {problem}", file=sys.stderr)
    return 1 if failures else 0


def cmd_export(args: argparse.Namespace) -> int:
    from nightlab.export import export_model
    from nightlab.io import DataError, read_json

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        for name in ("image", "region"):
            cfg = read_json(Path(args.models) / name / "config.json")
            side = cfg.get("region_size")
            hw = (side, side) if side else (args.height, args.width)
            diff = export_model(Path(args.models) / name, out / f"{name}_model.torchscript.pt", hw)
            print(f"{out / name}_model.torchscript.pt: max |exported - eager| = {diff:.2e}")
    except (DataError, RuntimeError) as err:
        return _fail(str(err))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import json
    import subprocess

    from nightlab.sweep import sweep_table, write_sweep_report

    _enter_project()
    res = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True)
    if res.returncode != 0:
        return _fail(f"dvc exp show failed: {res.stderr.strip()}")
    def hard_of(rev: str) -> list[str] | None:
        """The hard classes a revision selected: its reports/hard_classes.json (git-tracked)."""
        if rev == "workspace":
            path = Path("reports/hard_classes.json")
            return json.loads(path.read_text())["names"] if path.is_file() else None
        shown = subprocess.run(["git", "show", f"{rev}:reports/hard_classes.json"], capture_output=True, text=True)
        return json.loads(shown.stdout)["names"] if shown.returncode == 0 else None

    table = sweep_table(json.loads(res.stdout or "[]"), hard_of)
    if table.empty:
        return _fail("no experiment with reports/metrics.json and hard_classes.threshold found; run "
                     "dvc exp run -S hard_classes.threshold=0.3,0.4,0.5,0.6 --queue && dvc queue start")
    out = Path(args.out)
    write_sweep_report(table, out / "threshold_sweep.md", out / "threshold_sweep.png")
    print((out / "threshold_sweep.md").read_text())
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import subprocess

    _enter_project()
    return subprocess.call([sys.executable, "-m", "benches", *(["--quick"] if args.quick else [])])


def cmd_params(args: argparse.Namespace) -> int:
    from nightlab.config import DEFAULT_HEADER, ConfigError, Params, load_profile, params_yaml

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
        arg("images", nargs="+", help="image files"),
        arg("--out", required=True, help="output directory: <stem>_trainIds.png, _color.png, _overlay.png"),
        arg("--models", default="models", help="directory with image/, region/, hdm/ (default: models)"),
        arg("--hard", default="reports/hard_classes.json", help="hard classes JSON (default: %(default)s)"),
        arg("--detector", default="hdm", choices=["hdm", "rdn"], help="region detector (default: hdm)"),
        arg("--device", default="auto", choices=["auto", "cpu", "cuda"]),
        _PARAMS,
    ]),
    Command("export", "export the image and region models to TorchScript, checked against eager", cmd_export, [
        arg("--models", default="models", help="directory with image/ and region/ (default: models)"),
        arg("--out", default="export", help="output directory (default: export)"),
        arg("--height", type=int, default=128, help="example input height for the image model"),
        arg("--width", type=int, default=256, help="example input width for the image model"),
    ]),
    Command("report", "build a report from DVC experiments", cmd_report, [
        arg("kind", choices=["threshold-sweep"], help="threshold-sweep: supplement Table 1 for our data"),
        arg("--out", default="reports/sweep", help="output directory (default: reports/sweep)"),
    ]),
    Command("bench", "run the benchmarks (benches/), writing benches/RESULTS.md", cmd_bench, [
        arg("--quick", action="store_true", help="tiny sizes: a smoke check"),
    ]),
    Command("params", "write a complete params.yaml: the defaults, or a profile on top of them", cmd_params, [
        arg("--profile", help="a profile (an overlay of the defaults), e.g. profiles/tiny.yaml"),
        arg("--out", default="params.yaml", help="where to write it; - for stdout (default: params.yaml)"),
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
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())

"""Measure the pipeline against its peers and its targets: ``python -m benches [--quick] [--only a,b]``.

Writes benches/RESULTS.md (a table per benchmark, the machine, the command) and
benches/results.json. Each benchmark is a module exposing ``run(quick) -> dict``; a failing one
is recorded with its error and the others still run. With --only, the other benchmarks' earlier
results are kept (each says when and how it was measured). Targets are read off the results,
never asserted.
"""
from __future__ import annotations

import argparse
import importlib
import json
import shlex
import sys
import time
import traceback
from pathlib import Path

from benches.common import machine

BENCHES = {  # name -> module, in running order (inference, onnx and dvc share one tiny-profile repro)
    "evaluator": "benches.evaluator",
    "generation": "benches.generation",
    "training_efficiency": "benches.training_efficiency",
    "loading": "benches.loading",
    "inference": "benches.inference",
    "onnx": "benches.onnx_runtime",
    "dvc": "benches.dvc_repro",
    "prefect_overhead": "benches.prefect_overhead",
    "memory": "benches.memory",
}
HERE = Path(__file__).resolve().parent


def fmt(value, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        value = f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return f"{value} {unit}".strip().replace("|", "\\|")  # a bare | would end a markdown cell


def verdict(met) -> str:
    return "-" if met is None else ("**yes**" if met else "**NO**")


def markdown(results: dict) -> str:
    m = results["machine"]
    out = ["# NightLab benchmarks", "",
           "Written by `python -m benches`; every figure is a median over the stated number of repeats, and "
           "every ratio is measured side by side in the same run. Targets are checked here, not in tests.", "",
           f"Last command: `{results['command']}`", ""]
    if results["quick"]:
        out += ["> **--quick run**: a smoke check on tiny sizes (the evaluator and generation run at their real "
                "image sizes with fewer images; the rest on tiny data and the tiny profile): the verdicts are "
                "indicative only. Run `python -m benches` for the real figures.", ""]
    out += ["## Machine", "", "| | |", "| --- | --- |",
            f"| CPU | {m['cpu']} |", f"| cores | {m['cores']} ({m['usable_cores']} usable) |", f"| RAM | {m['ram']} |",
            f"| GPU | {m['gpu']} |", f"| torch | {m['torch']} ({m['torch_threads']} threads), Python {m['python']} |",
            f"| date | {m['date']} |", "", "## Summary", "", "| benchmark | target | value | met? |",
            "| --- | --- | --- | --- |"]
    for name, r in results["benchmarks"].items():
        if "error" in r:
            out.append(f"| {name} | | failed | **ERROR** |")
            continue
        for f in r["figures"]:
            if f["target"] and f.get("summary", True):
                value = fmt(f["value"], f["unit"])
                out.append(f"| {name} | {f['figure']}: {f['target']} | {value} | {verdict(f['met'])} |")
    for name, r in results["benchmarks"].items():
        out += ["", f"## {name}: {r.get('title', '')}", ""]
        out += [f"Measured {r['measured']} with `{r['command']}`{' (--quick)' if r['quick'] else ''} "
                f"in {r['bench_s']:.1f} s.", ""]
        if "error" in r:
            out += ["**Failed:**", "", "```", r["error"].rstrip(), "```"]
            continue
        out += [f"Setup: {r['setup']}.", "", f"Repeats: {r['repeat']}.", "",
                "| figure | value | target | met? |", "| --- | --- | --- | --- |"]
        out += [f"| {f['figure']} | {fmt(f['value'], f['unit'])} | {f['target'] or ''} | {verdict(f['met'])} |"
                for f in r["figures"]]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benches", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke check in a few minutes")
    ap.add_argument("--only", help=f"comma-separated subset of: {', '.join(BENCHES)}")
    ap.add_argument("--models", help="trained models/ for the inference and onnx benchmarks (default: the project's "
                                     "models/ if complete, else a tiny-profile dvc repro in a temporary copy)")
    ap.add_argument("--shared-detector", help="inference: also time two-level inference with this detector (a "
                                              "model directory of an rdn.backbone: shared RDN/HDM on the same image "
                                              "model), side by side")
    ap.add_argument("--out", type=Path, default=HERE, help="where RESULTS.md and results.json go (default benches/)")
    a = ap.parse_args(argv)
    names = list(BENCHES) if not a.only else [n.strip() for n in a.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        ap.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHES)}")
    names = [n for n in BENCHES if n in names]
    command = shlex.join(["python", "-m", "benches", *(sys.argv[1:] if argv is None else argv)])
    a.out.mkdir(parents=True, exist_ok=True)
    json_path = a.out / "results.json"
    previous = json.loads(json_path.read_text())["benchmarks"] if a.only and json_path.is_file() else {}
    info = machine()
    results = {"machine": info, "command": command, "quick": a.quick, "benchmarks": {}}
    failed = 0
    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] {name} ...", flush=True)
        module = importlib.import_module(BENCHES[name])
        kwargs = {"models": a.models} if name in ("inference", "onnx") else {}
        if name == "inference" and a.shared_detector:
            kwargs["shared_detector"] = a.shared_detector
        t0 = time.perf_counter()
        try:
            r = module.run(a.quick, **kwargs)
        except Exception:
            r, failed = {"error": traceback.format_exc()[-4000:]}, failed + 1
            print(r["error"], file=sys.stderr, flush=True)
        r.update(measured=info["date"], command=results["command"], quick=a.quick, bench_s=time.perf_counter() - t0)
        results["benchmarks"][name] = r
        for f in r.get("figures", []):
            print(f"    {f['figure']}: {fmt(f['value'], f['unit'])}"
                  + (f"  (target {f['target']}: {'met' if f['met'] else 'NOT met'})" if f["target"] else ""),
                  flush=True)
    results["benchmarks"] = {n: results["benchmarks"].get(n) or previous[n] for n in BENCHES
                             if n in results["benchmarks"] or n in previous}
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    (a.out / "RESULTS.md").write_text(markdown(results))
    print(f"wrote {a.out / 'RESULTS.md'} and {json_path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

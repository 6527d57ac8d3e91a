"""Run every benchmark and rewrite benchmarks/RESULTS.md.

Each benchmark script's `main()` runs in its own subprocess (a fresh interpreter, so peak-memory figures and thread
settings do not leak between benchmarks) and hands back its result dict as JSON. The benchmarks run on the CPU, and
also on the GPU when CUDA is available and the script takes a `device` argument.

    python benchmarks/run.py [--quick] [--pipeline-results DIR/results.json] [--only bench_encoder ...]
"""

import argparse
import datetime
import inspect
import importlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import transformers

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("bench_tdt_loss", "bench_fused_joint", "bench_train_step", "bench_greedy_decoding", "bench_asr_pipeline",
              "bench_encoder", "bench_precision")
QUICK_REPEATS = 2  # for scripts that take `repeats` rather than `quick`
MIB = 2**20


# ------------------------------------------------------------------------------------------------ running them
def run_child(module_name: str, device: str, quick: bool, threads: int, output: Path) -> None:
    """In the subprocess: call the module's main() with the arguments it takes; write its dict and TARGETS as JSON
    (or why it was skipped: a script whose main() takes no `device` runs on the CPU only)."""
    module = importlib.import_module(module_name)
    accepted = inspect.signature(module.main).parameters
    if device != "cpu" and "device" not in accepted:
        record = {"skipped": "CPU only (its main() takes no device argument)"}
    else:
        arguments = {key: value for key, value in (("device", device), ("threads", threads)) if key in accepted}
        if quick and "quick" in accepted:
            arguments["quick"] = True
        elif quick and "repeats" in accepted:
            arguments["repeats"] = QUICK_REPEATS
        record = {"results": module.main(**arguments), "targets": getattr(module, "TARGETS", None)}
    output.write_text(json.dumps(record, default=str))


def run_benchmark(module_name: str, device: str, quick: bool, threads: int) -> dict:
    """-> {"results": .., "targets": ..}, {"skipped": why} or {"error": what}; prints a line for each outcome."""
    if not (HERE / f"{module_name}.py").is_file():
        print(f"[run] {module_name}.py not found: skipped", flush=True)
        return {"skipped": f"benchmarks/{module_name}.py does not exist (yet)"}
    print(f"[run] {module_name} on {device}{' (quick)' if quick else ''} ...", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "record.json"
        command = [sys.executable, __file__, "--child", module_name, "--device", device, "--threads", str(threads),
                   "--output", str(output)]
        completed = subprocess.run(command + (["--quick"] if quick else []), cwd=HERE, stderr=subprocess.PIPE, text=True)
        if completed.returncode != 0:
            print(completed.stderr, file=sys.stderr)
            last_line = (completed.stderr.strip().splitlines() or ["no error output"])[-1]
            print(f"[run] {module_name} on {device} failed (exit {completed.returncode}): {last_line}", flush=True)
            return {"error": f"exit code {completed.returncode}: {last_line}"}
        record = json.loads(output.read_text())
    if "skipped" in record:
        print(f"[run] {module_name} on {device}: skipped, {record['skipped']}", flush=True)
    return record


# ------------------------------------------------------------------------------------------------ the machine
def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def memory_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 2**20  # kB -> GiB
    return float("nan")


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine_rows(devices: list[str], threads: int) -> list[tuple[str, str]]:
    rows = [("date (UTC)", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")),
            ("CPU", cpu_model()), ("CPU capability (torch)", torch.backends.cpu.get_cpu_capability()),
            ("CPU cores", str(os.cpu_count())), ("RAM", f"{memory_gib():.1f} GiB"),
            ("torch threads", f"torch.set_num_threads({threads})"), ("load average at start (1/5/15 min)", load_average()),
            ("python", platform.python_version()), ("torch", torch.__version__),
            ("transformers", transformers.__version__)]
    if "cuda" in devices:
        rows.append(("GPU", torch.cuda.get_device_name()))
    return rows


# ------------------------------------------------------------------------------------------------ the report
def goal_rows(record: dict) -> list[dict]:
    """Rows of the goals table. Scripts returning "goals" (ours) are taken as they are; `_measure`-style dicts
    (times, extra_peak_bytes, meets_targets and the script's own "speedup" / "memory_ratio") give avalign's contender
    (the first) against each other one, and a row carries the script's target when its ratio is the one the script
    itself reports for that target."""
    results, targets = record["results"], record.get("targets") or {}
    if "goals" in results:
        return results["goals"]
    times, memory, met = results["times"], results["extra_peak_bytes"], results.get("meets_targets", {})
    ours, *others = times
    rows = []
    for other in others:
        speedup, memory_ratio = ratio(times[other]["wall_s"], times[ours]["wall_s"]), ratio(memory[ours], memory[other])
        speed_goal = reports_goal(results, targets, "speedup", speedup)
        memory_goal = reports_goal(results, targets, "memory_ratio", memory_ratio)
        rows += [
            dict(goal=f"forward+backward time, {ours} vs {other}", avalign=times[ours]["wall_s"],
                 peer=times[other]["wall_s"], unit="s", ratio=speedup,
                 cpu_ratio=ratio(times[other]["cpu_s"], times[ours]["cpu_s"]),
                 target=f">= {targets['speedup']:g}x" if speed_goal else None,
                 met=met.get("speedup") if speed_goal else None),
            dict(goal=f"extra peak memory, {ours} vs {other}", avalign=memory[ours] / MIB, peer=memory[other] / MIB,
                 unit="MiB", ratio=ratio(memory[other], memory[ours]), cpu_ratio=None,
                 target=f">= {1 / targets['memory_ratio']:.3g}x (<= {targets['memory_ratio']:.3g} of it)" if memory_goal else None,
                 met=met.get("memory_ratio") if memory_goal else None),
        ]
    return rows


def ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def reports_goal(results: dict, targets: dict, key: str, value: float | None) -> bool:
    """Is `value` the figure the script reports as `key`, for which it has a target?"""
    return key in targets and value is not None and math.isclose(results.get(key, math.nan), value)


def number(value) -> str:
    return "" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def goals_table(records: dict) -> list[str]:
    lines = ["| benchmark | device | goal | avalign | peer | unit | x better (wall) | x better (CPU time) | target | met |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (name, device), record in records.items():
        if "results" not in record:
            lines.append(f"| {name} | {device} | {record.get('skipped') or 'FAILED: ' + record['error']} |||||||")
            continue
        for row in goal_rows(record):
            met = {None: "", True: "yes", False: "**no**"}[row["met"]]
            lines.append(f"| {name} | {device} | {row['goal']} | {number(row['avalign'])} | {number(row['peer'])} | "
                         f"{row['unit']} | {number(row['ratio'])} | {number(row['cpu_ratio'])} | "
                         f"{row['target'] or ''} | {met} |")
    return lines


def flatten(value, prefix: str = "") -> list[tuple[str, str]]:
    """Nested dicts -> (dotted key, value) pairs; lists stay on one line."""
    if not isinstance(value, dict):
        return [(prefix, json.dumps(value, default=str) if isinstance(value, (list, str)) else number(value))]
    return [pair for key, item in value.items() for pair in flatten(item, f"{prefix}.{key}" if prefix else key)]


def details(records: dict) -> list[str]:
    """Everything else each benchmark reported (settings, correctness checks, agreement, raw times)."""
    lines = []
    for (name, device), record in records.items():
        if "results" in record:
            rest = {key: value for key, value in record["results"].items() if key != "goals"}
            lines += [f"### {name} ({device})", ""] + [f"- {key}: {value}" for key, value in flatten(rest)] + [""]
    return lines


def pipeline_lines(path: Path) -> list[str]:
    results = json.loads(path.read_text())
    timings = results.get("timings_seconds", {})
    lines = [f"Preset `{results.get('preset')}`, from `{path}`.", "", "| stage | wall time (s) |", "|---|---|"]
    lines += [f"| {stage} | {seconds:.1f} |" for stage, seconds in timings.items()]
    return lines + [f"| total | {sum(timings.values()):.1f} |"]


def write_report(path: Path, machine: list, records: dict, pipeline: Path | None, quick: bool) -> None:
    lines = ["# Benchmark results", "",
             f"Written by `python benchmarks/run.py{' --quick' if quick else ''}`; do not edit by hand. Peers: "
             "transformers' own implementation on the same weights or inputs; NeMo's label-looping greedy TDT "
             "(its own environment, benchmarks/peers/); the physical floor F of the TDT loss (2 x an exp pass over "
             "the logits); the CTC-only training step. *x better* = the peer's figure over "
             "avalign's (time, memory) or avalign's over the peer's (throughput): above 1 avalign is ahead. Times are "
             "medians of interleaved repeats after a warm-up; the CPU-time column is less sensitive to other load "
             "on the machine.", "",
             "Targets: TDT loss <= 1.5 F, >= 15x transformers and <= 1/4 of its extra peak memory; fused joint <= 1/3 "
             "of the unfused peak; hybrid stage-3 step <= 1.15x the CTC-only one; greedy decoding >= 5x generate and "
             ">= 1x NeMo; the ASR pipeline end to end >= 1.5x the stock one; encoder throughput >= 1x.", "",
             "## Machine", "", "| | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in machine]
    lines += ["", "## Goals", ""] + goals_table(records) + ["", "## Details", ""] + details(records)
    if pipeline is not None:
        lines += ["## Pipeline wall times", ""] + pipeline_lines(pipeline) + [""]
    path.write_text("\n".join(lines).rstrip() + "\n")


def run_all(names, quick: bool, threads: int, pipeline_results: Path | None, output: Path) -> None:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    machine = machine_rows(devices, threads)
    records = [[name, device, run_benchmark(name, device, quick, threads)] for device in devices for name in names]
    machine.append(("load average at end", load_average()))
    saved = Path(tempfile.gettempdir()) / "avalign_benchmark_records.json"
    saved.write_text(json.dumps(dict(machine=machine, records=records, quick=quick), default=str))
    print(f"[run] raw results in {saved} (re-render with --from-records)")
    render(saved, pipeline_results, output)


def render(saved: Path, pipeline_results: Path | None, output: Path) -> None:
    run = json.loads(saved.read_text())
    records = {(name, device): record for name, device, record in run["records"]}
    write_report(output, run["machine"], records, pipeline_results, run["quick"])
    print(f"[run] wrote {output}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats")
    parser.add_argument("--pipeline-results", type=Path, help="a pipeline run's results.json: add its stage wall times")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=BENCHMARKS)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads of every benchmark")
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--from-records", type=Path, help="only rewrite the report from a previous run's raw results")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.pipeline_results is not None and not arguments.pipeline_results.is_file():
        parser.error(f"--pipeline-results: {arguments.pipeline_results} is not a file")
    if arguments.child:
        run_child(arguments.child, arguments.device, arguments.quick, arguments.threads, arguments.output)
    elif arguments.from_records:
        render(arguments.from_records, arguments.pipeline_results, arguments.output)
    else:
        run_all(arguments.only, arguments.quick, arguments.threads, arguments.pipeline_results, arguments.output)


if __name__ == "__main__":
    main()

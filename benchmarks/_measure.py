"""Shared timing and peak-memory helpers for the side-by-side benchmarks (CPU, Linux)."""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch


MEMORY_METHOD = (
    "peak RSS (VmHWM of /proc/self/status) of a fresh subprocess that runs forward+backward once, minus its RSS "
    "(VmRSS) once the inputs exist (the peak reset there through /proc/self/clear_refs), minus the bytes of the "
    "gradients that the run leaves behind"
)


def machine():
    """What the timings depend on: CPU count and the 1-minute load average when the benchmark started."""
    return {"cpus": os.cpu_count(), "load_average": round(os.getloadavg()[0], 2)}


def interleaved_times(runs, repeats, warmup):
    """Run each callable of `runs` {name: fn} in turn, warmup + repeats rounds; median wall and CPU seconds per name.

    Interleaving spreads any load from other processes evenly over the contenders."""
    walls, cpus = {name: [] for name in runs}, {name: [] for name in runs}
    for round_index in range(warmup + repeats):
        for name, run in runs.items():
            wall, cpu = time.perf_counter(), time.process_time()
            run()
            if round_index >= warmup:
                walls[name].append(time.perf_counter() - wall)
                cpus[name].append(time.process_time() - cpu)
    return {name: {"wall_s": statistics.median(walls[name]), "cpu_s": statistics.median(cpus[name])} for name in runs}


def times_across_processes(script, names, processes, repeats, threads, arguments=()):
    """Each of `processes` fresh interpreters runs `script --interleave NAME... --repeats R --threads N [arguments]`,
    which prints `interleaved_times` of those contenders as one JSON line -> {name: [per-process medians]}.

    One process alone can settle on a layout of memory or threads that favours one contender by several per cent
    (the hybrid stage-3 step measured 1.06x to 1.16x the CTC-only one in eleven single-process runs), so a ratio
    read from one process says little; its spread across processes says how much."""
    command = [sys.executable, str(script), "--interleave", *names, "--repeats", str(repeats), "--threads", str(threads),
               *arguments]
    runs = [json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            for _ in range(processes)]
    return {name: [run[name] for run in runs] for name in names}


def median_times(per_process):
    """[{"wall_s", "cpu_s"}] per process -> the median of each over the processes."""
    return {key: statistics.median(times[key] for times in per_process) for key in ("wall_s", "cpu_s")}


def memory_status(field):
    """VmRSS (resident now) or VmHWM (peak resident) of this process in bytes. ru_maxrss would not do: after
    fork + exec it still holds the parent's RSS."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # kB


def extra_peak_bytes(run, gradient_bytes):
    """Run once; peak resident bytes beyond the RSS at the call and the gradients the run leaves behind."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # resets VmHWM to the current RSS
    except OSError:
        pass
    baseline = memory_status("VmRSS")
    if memory_status("VmHWM") > baseline:
        raise RuntimeError("the peak RSS before the run already exceeds the baseline: measure in a fresh process")
    run()
    return memory_status("VmHWM") - baseline - gradient_bytes


def measure_in_subprocess(script, name, threads):
    """Run `script --memory NAME --threads N` in a fresh interpreter; it prints one JSON line with extra_peak_bytes."""
    command = [sys.executable, script, "--memory", name, "--threads", str(threads)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])["extra_peak_bytes"]


def print_table(title, header, rows):
    """Print rows (lists of cells) under a header, columns aligned."""
    cells = [header] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]
    print(f"\n{title}")
    for index, row in enumerate(cells):
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths)))
        if index == 0:
            print("  ".join("-" * width for width in widths))


def print_contenders(title, results):
    """The side-by-side table of a benchmark's results: median wall and CPU time, extra peak memory per contender."""
    memory = results["extra_peak_bytes"]
    rows = [
        [name, f"{t['wall_s'] * 1e3:.0f}", f"{t['cpu_s'] * 1e3:.0f}", f"{memory[name] / 2**20:.1f}"]
        for name, t in results["times"].items()
    ]
    title += f" ({results['machine']['cpus']} CPUs, load average {results['machine']['load_average']})"
    print_table(title, ["contender", "wall ms", "cpu ms", "extra peak MiB"], rows)


def command_line(description, contenders, main, memory_child, print_results, repeats):
    """A benchmark script's entry point: run main() and print its results, or (--memory NAME, in the subprocess that
    measure_in_subprocess starts) print one contender's extra peak bytes as JSON."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--memory", choices=sorted(contenders), help=argparse.SUPPRESS)
    args = parser.parse_args()
    set_threads(args.threads)
    if args.memory:
        print(json.dumps({"extra_peak_bytes": memory_child(args.memory)}))
    else:
        print_results(main(repeats=args.repeats, threads=args.threads))


def tensor_bytes(*tensors):
    return sum(t.numel() * t.element_size() for t in tensors)


def set_threads(threads):
    torch.set_num_threads(threads)

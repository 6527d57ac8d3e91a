"""Issue 20: what each --jobs worker of a roman run did, from the run's log and its `.claims` (which worker, by pid,
claimed each stage): per worker, its stages in order with their start and end (seconds from the first stage's start),
its busy seconds, and when it ran out of work.

    .venv/bin/python docs/experiments/unified/schedule.py runs/roman-stop38.log runs/roman-stop38
"""

import re
import sys
from datetime import datetime
from pathlib import Path

LINE = re.compile(r"^(\S+ \S+),\d+ INFO \[(\S+)\] (starting|done in ([\d.]+) s)")


def main(log: Path, output_dir: Path) -> None:
    events = {}  # stage -> {"starting": time, "done": time}
    for line in log.read_text(errors="replace").replace("\r", "\n").splitlines():
        match = LINE.match(line)
        if match:
            when = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S")
            events.setdefault(match[2], {})["starting" if match[3] == "starting" else "done"] = when
    start = min(event["starting"] for event in events.values())
    workers = {}
    for claim in (output_dir / ".claims").iterdir():
        workers.setdefault(claim.read_text(), []).append(claim.name.replace("__", "/"))
    for pid, stages in sorted(workers.items()):
        stages.sort(key=lambda stage: events[stage]["starting"])
        busy = sum((events[s]["done"] - events[s]["starting"]).total_seconds() for s in stages if "done" in events[s])
        end = max((events[s]["done"] - start).total_seconds() for s in stages if "done" in events[s])
        print(f"worker {pid}: busy {busy:.0f} s, out of work at {end:.0f} s")
        for stage in stages:
            began, ended = ((events[stage][key] - start).total_seconds() for key in ("starting", "done"))
            print(f"  {began:6.0f} -> {ended:6.0f}  {stage} ({ended - began:.0f} s)")
    rest = [stage for stage in events if not any(stage in stages for stages in workers.values())]
    for stage in rest:
        began, ended = ((events[stage][key] - start).total_seconds() for key in ("starting", "done"))
        print(f"main: {began:6.0f} -> {ended:6.0f}  {stage}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))

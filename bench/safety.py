"""Never lose a paid result, never pay twice: the figures, from the simulator's counters.

    python bench/safety.py                  # every scenario
    python bench/safety.py full head        # some of them

full:     `-o /dev/full`: seconds from the first failed write to the exit, exit status,
          requests the simulator completed, and how many of them after that write.
head:     `-o - | head -1`: the same, with the pipe's reader gone after one line.
parallel: two runs started together on one output: their statuses, duplicate lines, and
          requests the simulator completed more than once.
caching:  the classic command line with `--use_caching True`, run twice: requests the
          second run sent.
changed:  an input regenerated with line 5 changed: what the rerun says and sends, and
          what `--force` sends.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import ROOT, SimulatorProcess, small_requests, table, write_workload

CONCURRENCY = 50
SCENARIOS = ("full", "head", "parallel", "caching", "changed")
LOGGED_AT = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ERROR apiproc: (.*)$", re.M)


def apiproc(*args: str) -> list[str]:
    return [sys.executable, "-m", "apiproc", *args]


def first_failed_write(stderr: str) -> tuple[float, int]:
    """When the run logged its first failed write (wall clock), and how many requests
    it said were in flight then."""
    for stamp, message in LOGGED_AT.findall(stderr):
        if "Cannot write" in message or "went away" in message:
            when = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
            in_flight = re.search(r"in flight \((\d+)\)", message)
            return when, int(in_flight.group(1)) if in_flight else -1
    raise RuntimeError("no failed write in the log:\n" + stderr)


def written(stderr: str) -> int:
    found = re.search(r"^Succeeded: ([\d,]+)", stderr, re.M)
    return int(found.group(1).replace(",", "")) if found else 0


def write_failure(name: str, shell: str, sim: SimulatorProcess) -> list[str]:
    done = subprocess.run(
        ["bash", "-c", shell + '; echo "exit ${PIPESTATUS[0]}" >&2'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    exited = time.time()
    failed_at, in_flight = first_failed_write(done.stderr)
    status = re.findall(r"^exit (\d+)$", done.stderr, re.M)[-1]
    completed = sim.stats()["succeeded"]
    after = completed - written(done.stderr) - 1  # the first unwritten one completed before
    return [
        name,
        status,
        f"{exited - failed_at:.2f}",
        str(in_flight),
        str(written(done.stderr)),
        str(completed),
        f"{after} (<= {CONCURRENCY})",
    ]


def full_and_head(names: list[str], work: Path) -> None:
    source = write_workload(work / "in.jsonl", small_requests(2_000))
    rows = [
        [
            "output",
            "exit",
            "s from 1st failed write to exit",
            "in flight then",
            "written",
            "completed",
            "completed after 1st failed write",
        ]
    ]
    for name in names:
        with SimulatorProcess(latency=0.5, latency_jitter=0.2) as sim:
            common = f"--request-url {sim.url} --api-key sk-bench --max-concurrency {CONCURRENCY}"
            common += " --max-requests-per-minute 6000"  # no discovery: 50 in flight at once
            run = " ".join(apiproc("run", str(source)))
            if name == "full":
                rows.append(write_failure("-o /dev/full", f"{run} -o /dev/full {common}", sim))
            else:
                shell = f"{run} -o - {common} | head -1 > /dev/null"
                rows.append(write_failure("-o - | head -1", shell, sim))
    print(table(rows))


def parallel(work: Path) -> None:
    source = write_workload(work / "in.jsonl", small_requests(500))
    rows = [["second run", "exits", "lines", "duplicate lines", "completed", "completed twice"]]
    for extra in ([], ["--wait"]):
        output = work / f"out{len(extra)}.jsonl"
        with SimulatorProcess(latency=0.2) as sim:
            args = apiproc("run", str(source), "-o", str(output), "--request-url", sim.url)
            args += ["--api-key", "sk-bench", "--max-concurrency", str(CONCURRENCY), *extra]
            runs = [subprocess.Popen(args, cwd=ROOT, stderr=subprocess.PIPE, text=True)]
            runs.append(subprocess.Popen(args, cwd=ROOT, stderr=subprocess.PIPE, text=True))
            for run in runs:
                run.communicate(timeout=600)
            ids = Counter(json.loads(line)["custom_id"] for line in output.open())
            completed = sim.stats()["succeeded"]
            rows.append(
                [
                    " ".join(extra) or "plain",
                    " and ".join(str(run.returncode) for run in runs),
                    str(sum(ids.values())),
                    str(sum(ids.values()) - len(ids)),
                    str(completed),
                    str(completed - len(ids)),
                ]
            )
    print(table(rows))


def caching(work: Path) -> None:
    system = "You are a careful assistant. " * 200
    rows_in = [{**row, "system": system} for row in small_requests(10)]
    source = write_workload(work / "classic.jsonl", rows_in)
    output = work / "classic_results.jsonl"
    rows = [["run", "exit", "sent (simulator)", "lines"]]
    with SimulatorProcess() as sim:
        for run in (1, 2):
            before = sim.stats()["requests"]
            args = [sys.executable, "api_request_parallel_processor.py"]
            args += ["--requests_filepath", str(source), "--save_filepath", str(output)]
            args += ["--request_url", sim.url, "--api_key", "sk-bench", "--use_caching", "True"]
            args += ["--logging_level", "WARNING"]
            done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False)
            sent = sim.stats()["requests"] - before
            rows.append(
                [
                    str(run),
                    str(done.returncode),
                    str(sent),
                    str(len(output.read_text().splitlines())),
                ]
            )
    print(table(rows))


def changed(work: Path) -> None:
    requests = small_requests(10)
    source = write_workload(work / "changed.jsonl", requests)
    output = work / "changed_results.jsonl"
    rows = [["run", "exit", "sent (simulator)", "message"]]
    with SimulatorProcess() as sim:
        for label, extra in (("first", []), ("line 5 changed", []), ("with --force", ["--force"])):
            if label == "line 5 changed":
                requests[4] = {**requests[4], "max_tokens": 99}
                write_workload(source, requests)
            before = sim.stats()["requests"]
            args = apiproc("run", str(source), "-o", str(output), "--request-url", sim.url)
            done = subprocess.run(
                [*args, "--api-key", "sk-bench", *extra],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=False,
            )
            message = next((line for line in done.stderr.splitlines() if "differ" in line), "")
            rows.append(
                [label, str(done.returncode), str(sim.stats()["requests"] - before), message[:110]]
            )
    print(table(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", help=", ".join(SCENARIOS))
    args = parser.parse_args()
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    args.scenarios = args.scenarios or list(SCENARIOS)
    with tempfile.TemporaryDirectory(prefix="apiproc-safety-") as directory:
        work = Path(directory)
        failures = [name for name in args.scenarios if name in ("full", "head")]
        if failures:
            full_and_head(failures, work)
        if "parallel" in args.scenarios:
            parallel(work)
        if "caching" in args.scenarios:
            caching(work)
        if "changed" in args.scenarios:
            changed(work)


if __name__ == "__main__":
    main()

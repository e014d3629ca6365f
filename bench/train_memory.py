"""Peak memory of the training job (``multimodal-train``) on image CSVs of growing size.

The training channel is read as a stream of record batches and each batch's images are embedded and their
base64 strings dropped (multimodal/core/ingest.py), so the job's peak memory should grow with the embedding
matrices (rows × embedding width × 4 bytes), not with the CSV. This benchmark checks that:

1. For each size, it writes a training CSV (ID, review_text, price_num, colour_cat, photo_image, label) of
   synthetic 30–60 KB JPEG photos (``multimodal.tools.synthetic.photo_jpeg``; a few hundred distinct ones,
   cycled), streamed to disk row by row. The label depends weakly on price_num and colour_cat.
2. It runs the job as a subprocess on a fresh $MULTIMODAL_ML_ROOT layout with a short fit (quality=toy,
   n_folds=2, n_secs=60, efficientnet_lite0, joint_expert=true).
3. It measures the job's peak memory two ways: the sum of the RSS of the job and all its descendants, polled
   with psutil every 0.2 s (max over the run), and the ``ru_maxrss`` of the job process from ``os.wait4`` (the
   largest single process, the kernel's exact high-water mark). It also reports the peak RSS per stage of the
   job (start-up, read and embed, experts, fusion, save and reports), told apart by the job's log lines.
4. It prints one result line per run, the differences between the sizes and a markdown table; with
   ``--write-docs`` it writes the section "Training memory: streamed channels" of docs/benchmarks.md (replacing
   the whole section, hand-written notes included). Each invocation keeps its job logs (stderr.txt, with the
   seconds since the job started), RSS samples (rss.csv) and results.json under WORK/runs/<UTC time>/.

With ``--baseline-tree PATH`` the same CSVs are also run with another checkout's code (``PYTHONPATH=PATH``,
this interpreter, ``python -m multimodal.sagemaker.training.job``), e.g. the commit before streaming::

    git worktree add --detach ../mm-baseline 47638f2   # from the repository root

Usage::

    .venv/bin/python bench/train_memory.py --sizes 2000 20000 [--baseline-tree ../mm-baseline] [--write-docs]

MB are 10^6 bytes throughout. Runs go one after another (never side by side); memory is what matters here:
wall times are noisy on a shared machine.
"""
from __future__ import annotations

import argparse
import base64
import csv
import datetime as dt
import json
import logging
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import psutil

log = logging.getLogger("train_memory")

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "benchmarks.md"
SECTION = "## Training memory: streamed channels"
MB = 1e6
POLL_SECONDS = 0.2
IMAGE_MODEL = "efficientnet_lite0"
HYPERPARAMETERS = {"quality": "toy", "n_folds": "2", "n_hours": "0", "n_mins": "0", "n_secs": "60",
                   "image_model": IMAGE_MODEL, "joint_expert": "true"}
CLASSES = ("basic", "standard", "premium", "luxury")
COLOURS = {"red": 0.5, "blue": -0.3, "green": 0.0, "black": 0.8, "white": -0.6}
ADJECTIVES = ("soft", "sturdy", "light", "warm", "cheap", "elegant", "plain", "bright", "loose", "snug")
QUOTES = ("true to size", "worth it", "not as pictured", "would buy again", "runs small", "great value")
# The job's stages, each starting at the first log line that matches (the fusion: after the last expert's
# result line). The streamed job embeds while it reads; the baseline reads the whole channel, then embeds.
READ_LINE = re.compile(r"hyperparameters: ")
EXPERT_LINE = re.compile(r"expert (\S+): fitting on")
EXPERT_DONE_LINE = re.compile(r"expert \S+: \d+ rows, \d+ classes, best model")
SAVE_LINE = re.compile(r"stage (read and )?fit: ")
EXIT_LINE = re.compile(r"job finished in ")
EMBED_LINE = re.compile(r"embedded (\d+) images in ([\d.]+) s \(([\d.]+) images/s")


# ---------------------------------------------------------------------------------------------- the data

@dataclass(frozen=True)
class DataSpec:
    rows: int
    distinct_photos: int
    seed: int

    def path(self, work: Path) -> Path:
        return work / "data" / f"train-{self.rows}-{self.distinct_photos}-{self.seed}.csv"


def make_photos(count: int, seed: int) -> list[str]:
    """``count`` distinct base64 JPEG photos of 30–60 KB."""
    from multimodal.tools.synthetic import photo_jpeg
    rng = np.random.default_rng(seed)
    return [base64.b64encode(photo_jpeg(float(rng.uniform(30, 60)), seed=seed * 100_000 + i)).decode("ascii")
            for i in range(count)]


def sentence(rng: np.random.Generator) -> str:
    """A short review with commas and double quotes."""
    a, b = rng.choice(ADJECTIVES, 2, replace=False)
    return f'{a.capitalize()}, {b} and "{rng.choice(QUOTES)}", size {int(rng.integers(34, 48))}'


def records(spec: DataSpec, photos: list[str]) -> Iterator[list[str]]:
    """The data rows, one at a time; the label depends weakly on the price and the colour."""
    rng = np.random.default_rng(spec.seed)
    colours = list(COLOURS)
    for i in range(spec.rows):
        price = float(rng.normal(50, 15))
        colour = colours[int(rng.integers(len(colours)))]
        latent = (price - 50) / 15 + COLOURS[colour] + float(rng.normal(0, 1.2))
        label = CLASSES[int(np.searchsorted([-0.8, 0.0, 0.8], latent))]
        missing = rng.random() < 0.03
        yield [f"r{i:06d}", sentence(rng), "" if missing else f"{price:.2f}", colour, photos[i % len(photos)], label]


def write_csv(spec: DataSpec, path: Path) -> None:
    """Stream the CSV to ``path`` row by row (never the whole frame in memory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    photos = make_photos(spec.distinct_photos, spec.seed)
    partial = path.with_suffix(".partial")
    with open(partial, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ID", "review_text", "price_num", "colour_cat", "photo_image", "label"])
        for record in records(spec, photos):
            writer.writerow(record)
    partial.rename(path)
    log.info("wrote %s: %d rows, %.1f MB in %.1f s", path, spec.rows, path.stat().st_size / MB,
             time.monotonic() - started)


def training_csv(spec: DataSpec, work: Path) -> Path:
    """The CSV of ``spec`` under ``work``, written unless a previous run left it."""
    path = spec.path(work)
    if path.is_file():
        log.info("reusing %s (%.1f MB)", path, path.stat().st_size / MB)
    else:
        write_csv(spec, path)
    return path


# ---------------------------------------------------------------------------------------------- a job run

@dataclass(frozen=True)
class Code:
    """Which code runs the job: a label, the command line and the PYTHONPATH (None: this environment's)."""

    label: str
    command: list[str]
    pythonpath: Path | None = None


@dataclass
class Sample:
    t: float
    tree_rss: int
    job_rss: int
    processes: int


@dataclass
class RunResult:
    code: str
    rows: int
    csv_mb: float
    embedding_mb: float
    peak_tree_mb: float
    maxrss_mb: float
    peak_processes: int
    wall_s: float
    exit_status: int | None
    timed_out: bool
    embed_s: float | None = None
    images_per_s: float | None = None
    stage_peaks_mb: dict[str, float] = field(default_factory=dict)
    load_5min: float | None = None
    run_dir: str = ""


def layout(root: Path, csv_path: Path) -> None:
    """A fresh $MULTIMODAL_ML_ROOT tree: hyperparameters, the training CSV (hard-linked), model/, output/."""
    if root.exists():
        shutil.rmtree(root)
    (root / "input" / "config").mkdir(parents=True)
    (root / "model").mkdir()
    (root / "output").mkdir()
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(HYPERPARAMETERS, indent=1))
    train = root / "input" / "data" / "train"
    train.mkdir(parents=True)
    try:
        os.link(csv_path, train / "train.csv")
    except OSError:
        shutil.copyfile(csv_path, train / "train.csv")


def job_environment(root: Path, code: Code) -> dict[str, str]:
    env = dict(os.environ, MULTIMODAL_ML_ROOT=str(root), PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("PYTHONPATH", None)
    if code.pythonpath is not None:
        env["PYTHONPATH"] = str(code.pythonpath)
    return env


def check_code(code: Code, env: dict[str, str], cwd: Path) -> None:
    """Fail early unless ``code`` imports the package from where it says."""
    if code.pythonpath is None:
        return
    python = code.command[0]
    found = subprocess.run([python, "-c", "import multimodal; print(multimodal.__file__)"], env=env, cwd=cwd,
                           capture_output=True, text=True, timeout=120, check=True).stdout.strip()
    if not Path(found).resolve().is_relative_to(code.pythonpath.resolve()):
        raise SystemExit(f"{code.label}: multimodal is imported from {found}, not from {code.pythonpath}")


def tree_rss(pid: int) -> tuple[int, int, int]:
    """(RSS of ``pid`` and all its descendants, RSS of ``pid`` alone, number of processes); zeros once gone."""
    try:
        job = psutil.Process(pid)
        processes = [job] + job.children(recursive=True)
    except psutil.Error:
        return 0, 0, 0
    total = own = 0
    for process in processes:
        try:
            rss = process.memory_info().rss
        except psutil.Error:
            continue
        total += rss
        own = rss if process.pid == pid else own
    return total, own, len(processes)


def kill_tree(pid: int) -> None:
    """SIGTERM then SIGKILL the job ``pid`` and its descendants, by PID."""
    try:
        job = psutil.Process(pid)
        processes = job.children(recursive=True) + [job]
    except psutil.Error:
        return
    for process in processes:
        try:
            process.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(processes, timeout=20)
    for process in alive:
        try:
            process.kill()
        except psutil.Error:
            pass


def copy_lines(stream: IO[str], sink: IO[str], lines: list[tuple[float, str]], started: float) -> None:
    """The job's log lines with the seconds since the job started, into ``lines`` and ``sink``."""
    for line in stream:
        t = time.monotonic() - started
        lines.append((t, line.rstrip("\n")))
        sink.write(f"{t:8.1f} {line}")
        sink.flush()


@dataclass
class Measured:
    samples: list[Sample]
    lines: list[tuple[float, str]]
    maxrss: int
    exit_status: int | None
    wall: float
    timed_out: bool


def measure(command: list[str], env: dict[str, str], cwd: Path, run_dir: Path, timeout: float) -> Measured:
    """Run ``command`` to its end (or ``timeout``), polling its process tree's RSS; reap it with wait4."""
    lines: list[tuple[float, str]] = []
    samples: list[Sample] = []
    with open(run_dir / "stdout.txt", "w") as out, open(run_dir / "stderr.txt", "w") as err:
        started = time.monotonic()
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=subprocess.PIPE, text=True,
                                   errors="replace")
        reader = threading.Thread(target=copy_lines, args=(process.stderr, err, lines, started), daemon=True)
        reader.start()
        timed_out = False
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            elapsed = time.monotonic() - started
            if elapsed > timeout and not timed_out:
                log.error("job %d ran past %.0f s: killing it", process.pid, timeout)
                timed_out = True
                kill_tree(process.pid)
                continue
            samples.append(Sample(elapsed, *tree_rss(process.pid)))
            time.sleep(POLL_SECONDS)
        wall = time.monotonic() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        reader.join(timeout=30)
    return Measured(samples, lines, usage.ru_maxrss * 1024, process.returncode, wall, timed_out)


def stage_starts(lines: list[tuple[float, str]]) -> list[tuple[str, float]]:
    """The stages found in the job's log, each with the time of its first line, in time order: start-up, read
    and embed, one per expert, fusion, save and reports, exit."""
    starts: dict[str, float] = {"start-up": 0.0}
    fusion: float | None = None
    for t, line in lines:
        expert = EXPERT_LINE.search(line)
        if expert:
            starts.setdefault(f"expert {expert.group(1)}", t)
        elif EXPERT_DONE_LINE.search(line):
            fusion = t
        else:
            for name, pattern in (("read and embed", READ_LINE), ("save and reports", SAVE_LINE),
                                  ("exit", EXIT_LINE)):
                if pattern.search(line):
                    starts.setdefault(name, t)
    if fusion is not None:
        starts["fusion"] = fusion
    return sorted(starts.items(), key=lambda item: item[1])


def stage_peaks(samples: list[Sample], lines: list[tuple[float, str]]) -> dict[str, float]:
    """Peak tree RSS (MB) between the start of each stage and the start of the next."""
    starts = stage_starts(lines)
    peaks: dict[str, float] = {}
    for k, (name, begin) in enumerate(starts):
        end = starts[k + 1][1] if k + 1 < len(starts) else float("inf")
        inside = [s.tree_rss for s in samples if begin <= s.t < end]
        if inside:
            peaks[name] = round(max(inside) / MB, 1)
    return peaks


def embedding_seconds(lines: list[tuple[float, str]]) -> tuple[float | None, float | None]:
    """Seconds spent embedding images and images per second, summed over the job's "embedded ..." lines."""
    images = seconds = 0.0
    for _, line in lines:
        match = EMBED_LINE.search(line)
        if match:
            images += int(match.group(1))
            seconds += float(match.group(2))
    return (round(seconds, 1), round(images / seconds, 1)) if seconds else (None, None)


def embedding_width() -> int:
    from multimodal.core.images import ENCODERS
    return ENCODERS[IMAGE_MODEL].dim


def run_job(code: Code, spec: DataSpec, csv_path: Path, runs: Path, timeout: float) -> RunResult:
    """One measured run of the job of ``code`` on the CSV of ``spec``, in a new directory under ``runs``."""
    slug = re.sub(r"[^a-z0-9]+", "-", code.label.lower()).strip("-")
    root = runs / f"{slug}-{spec.rows}"
    layout(root, csv_path)
    env = job_environment(root, code)
    check_code(code, env, root)
    log.info("%s, %d rows: running %s (MULTIMODAL_ML_ROOT=%s%s)", code.label, spec.rows, shlex.join(code.command),
             root, f", PYTHONPATH={code.pythonpath}" if code.pythonpath else "")
    measured = measure(code.command, env, root, root, timeout)
    with open(root / "rss.csv", "w") as handle:
        handle.write("seconds,tree_rss_mb,job_rss_mb,processes\n")
        handle.writelines(f"{s.t:.2f},{s.tree_rss / MB:.1f},{s.job_rss / MB:.1f},{s.processes}\n"
                          for s in measured.samples)
    embed_s, rate = embedding_seconds(measured.lines)
    result = RunResult(
        code=code.label, rows=spec.rows, csv_mb=round(csv_path.stat().st_size / MB, 1),
        embedding_mb=round(spec.rows * embedding_width() * 4 / MB, 1),
        peak_tree_mb=round(max((s.tree_rss for s in measured.samples), default=0) / MB, 1),
        maxrss_mb=round(measured.maxrss / MB, 1),
        peak_processes=max((s.processes for s in measured.samples), default=0),
        wall_s=round(measured.wall, 1), exit_status=measured.exit_status, timed_out=measured.timed_out,
        embed_s=embed_s, images_per_s=rate, stage_peaks_mb=stage_peaks(measured.samples, measured.lines),
        load_5min=round(os.getloadavg()[1], 2), run_dir=str(root))
    if result.exit_status != 0:
        log.error("%s, %d rows: the job failed (exit %s); its log: %s", code.label, spec.rows, result.exit_status,
                  root / "stderr.txt")
    return result


# ---------------------------------------------------------------------------------------------- reporting

def result_line(r: RunResult) -> str:
    stages = ", ".join(f"{k} {v:.0f}" for k, v in r.stage_peaks_mb.items())
    return (f"{r.code}: rows={r.rows} csv={r.csv_mb:.1f} MB embeddings={r.embedding_mb:.1f} MB "
            f"peak_rss_tree={r.peak_tree_mb:.1f} MB maxrss={r.maxrss_mb:.1f} MB processes={r.peak_processes} "
            f"wall={r.wall_s:.1f} s exit={r.exit_status}{' (timed out)' if r.timed_out else ''} "
            f"embed={r.embed_s} s ({r.images_per_s} images/s) load(5 min)={r.load_5min}; peak RSS by stage (MB): {stages}")


def deltas(results: list[RunResult]) -> list[tuple[str, int, int, dict[str, float]]]:
    """For each code, the differences between its smallest and largest size."""
    out = []
    for code in dict.fromkeys(r.code for r in results):
        runs = sorted((r for r in results if r.code == code), key=lambda r: r.rows)
        if len(runs) < 2:
            continue
        small, large = runs[0], runs[-1]
        out.append((code, small.rows, large.rows, {
            "csv_mb": large.csv_mb - small.csv_mb, "embedding_mb": large.embedding_mb - small.embedding_mb,
            "peak_tree_mb": large.peak_tree_mb - small.peak_tree_mb, "maxrss_mb": large.maxrss_mb - small.maxrss_mb}))
    return out


def delta_lines(results: list[RunResult]) -> list[str]:
    lines = []
    for code, small, large, d in deltas(results):
        ratio = d["peak_tree_mb"] / d["embedding_mb"] if d["embedding_mb"] else float("nan")
        lines.append(f"{code}, {small:,} → {large:,} rows: Δ CSV {d['csv_mb']:+.0f} MB, Δ embeddings "
                     f"{d['embedding_mb']:+.0f} MB, Δ peak RSS (tree) {d['peak_tree_mb']:+.0f} MB, Δ maxrss "
                     f"{d['maxrss_mb']:+.0f} MB (Δ peak RSS = {ratio:.1f} × Δ embeddings, "
                     f"{d['peak_tree_mb'] / d['csv_mb']:.2f} × Δ CSV)")
    return lines


def table(results: list[RunResult]) -> str:
    head = ("| code | rows | CSV MB | embeddings MB | peak RSS, process tree MB | maxrss (wait4) MB | "
            "image embedding s (images/s) | job wall s | exit |\n|---|---:|---:|---:|---:|---:|---:|---:|---|")
    body = [f"| {r.code} | {r.rows:,} | {r.csv_mb:,.1f} | {r.embedding_mb:,.1f} | {r.peak_tree_mb:,.0f} | "
            f"{r.maxrss_mb:,.0f} | {r.embed_s} ({r.images_per_s}) | {r.wall_s:,.0f} | "
            f"{r.exit_status}{' (timed out)' if r.timed_out else ''} |" for r in results]
    return "\n".join([head, *body])


def stage_table(results: list[RunResult]) -> str:
    names = list(dict.fromkeys(name for r in results for name in r.stage_peaks_mb))
    head = "| code | rows | " + " | ".join(names) + " |\n|---|---:|" + "---:|" * len(names)
    body = [f"| {r.code} | {r.rows:,} | " + " | ".join(
        f"{r.stage_peaks_mb[n]:,.0f}" if n in r.stage_peaks_mb else "" for n in names) + " |" for r in results]
    return "\n".join([head, *body])


def machine() -> str:
    models = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
              if line.startswith("model name")]
    model = models[0] if models else platform.processor() or "unknown CPU"
    return (f"{len(models) or os.cpu_count()} × {model}, "
            f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM, Python {platform.python_version()}")


def commit(tree: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def section(results: list[RunResult], argv: list[str], codes: list[Code], started: str) -> str:
    trees = "; ".join(f"`{c.label}`: {'PYTHONPATH=' + str(c.pythonpath) if c.pythonpath else 'this checkout'} "
                      f"(commit {commit(c.pythonpath or REPO)})" for c in codes)
    hp = ", ".join(f"{k}={v}" for k, v in HYPERPARAMETERS.items())
    parts = [
        SECTION, "",
        ("Generated by `bench/train_memory.py`: the training job (`multimodal-train`) run as a subprocess on a "
        "synthetic training CSV of N rows (ID, a `_text` review with commas and quotes, a `_num`, a `_cat`, one "
        f"`_image` column of base64 JPEG photos of 30–60 KB, a 4-class label), hyperparameters {hp}. Peak "
        "RSS (process tree) is the maximum over the run of the summed RSS of the job and all its descendants, "
        f"polled every {POLL_SECONDS} s with psutil; maxrss is the job process's `ru_maxrss` from `os.wait4` (the "
        "largest single process of the tree, exact). Embeddings = rows × "
        f"{embedding_width()} ({IMAGE_MODEL}) × 4 bytes. MB = 10^6 bytes."), "",
        f"Command: `{shlex.join(['python', *argv])}`  ",
        (f"Run: {started} on {machine()}; code: {trees}. The machine was shared with other jobs: wall times are "
        "noisy, memory is what this measures."), "",
        table(results), "",
        *[f"- {line}" for line in delta_lines(results)], "",
        ("Peak RSS (process tree, MB) by stage of the job, the stages told apart by its log lines: *read and "
        "embed* from the hyperparameters line to the first \"expert …: fitting\" line (the baseline reads the "
        "whole channel, then embeds; the streamed job embeds batch by batch as it reads); *expert X* from its "
        "\"fitting\" line to the next; *fusion* from the last expert's result line to \"stage … fit\"; *save "
        "and reports* to \"job finished\"; *exit* the interpreter's exit:"), "",
        stage_table(results), "",
    ]
    return "\n".join(parts)


def write_docs(text: str, path: Path = DOCS) -> None:
    """Replace the section (up to the next ``## `` heading) in ``path``, or append it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        start = lines.index(SECTION)
    except ValueError:
        body = "\n".join(lines).rstrip("\n") + "\n\n" + text
    else:
        end = next((k for k in range(start + 1, len(lines)) if lines[k].startswith("## ")), len(lines))
        body = "\n".join(lines[:start] + text.rstrip("\n").splitlines() + [""] + lines[end:])
    path.write_text(body.rstrip("\n") + "\n", encoding="utf-8")
    log.info("wrote the section %r of %s", SECTION, path)


# ---------------------------------------------------------------------------------------------- main

def codes(args: argparse.Namespace) -> list[Code]:
    train = shutil.which("multimodal-train", path=str(Path(sys.executable).parent)) or "multimodal-train"
    out = [Code("current", [train])]
    if args.baseline_tree:
        tree = args.baseline_tree.resolve()
        out.insert(0, Code(f"baseline {commit(tree)}", [sys.executable, "-m", "multimodal.sagemaker.training.job"],
                           tree))
    return out


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000], help="rows of each training CSV")
    parser.add_argument("--work", type=Path, default=Path("/tmp/train-memory"), help="CSVs and job layouts")
    parser.add_argument("--distinct-photos", type=int, default=200, help="distinct photos, cycled over the rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds before a job is killed")
    parser.add_argument("--baseline-tree", type=Path, help="also run the job of this checkout (PYTHONPATH)")
    parser.add_argument("--write-docs", action="store_true", help=f"write the section {SECTION!r} of {DOCS}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    now = dt.datetime.now(dt.UTC)
    started = now.isoformat(timespec="seconds")
    runs = args.work / "runs" / now.strftime("%Y%m%dT%H%M%S")  # one per invocation: runs never clobber others
    results: list[RunResult] = []
    for rows in args.sizes:
        spec = DataSpec(rows, args.distinct_photos, args.seed)
        csv_path = training_csv(spec, args.work)
        for code in codes(args):
            results.append(run_job(code, spec, csv_path, runs, args.timeout))
            print(result_line(results[-1]), flush=True)
    (runs / "results.json").write_text(json.dumps([asdict(r) for r in results], indent=1))
    log.info("results, job logs (stderr.txt) and RSS samples (rss.csv) in %s", runs)
    print()
    for line in delta_lines(results):
        print(line)
    print()
    print(table(results))
    print()
    print(stage_table(results))
    if args.write_docs:
        write_docs(section(results, [os.path.relpath(__file__, REPO), *argv], codes(args), started))
    return 0 if all(r.exit_status == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

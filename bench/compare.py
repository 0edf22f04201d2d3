#!/usr/bin/env python3
"""vaezoo against PyTorch, workload by workload, on this machine.

Builds the release benchmarks (`cargo bench --no-run`), then for each thread count and repeat
runs every selected workload on both sides in turn, vaezoo first (with RAYON_NUM_THREADS=t),
then the PyTorch reference of bench/pytorch/ (with --threads t), in the same environment
otherwise and with the same --steps/--warmup. Every JSON line goes to --out (one per workload
and run, with "repeat" added); at the end one markdown table per thread count compares the
median of the per-run median step times. Speed-up = PyTorch / vaezoo: above 1, vaezoo is
faster. Without a working `import torch`, only the vaezoo side runs, and it says so.

    python3 bench/compare.py --markdown               # 2 threads, 5 runs: ~15-20 min, 2 cores
    python3 bench/compare.py --threads 1,2 --repeats 3    # ~25-30 min
    python3 bench/compare.py --only nvae_text_train,vae_mlp_train --repeats 1
    python3 bench/compare.py --smoke --repeats 1      # a few steps each: checks the pipeline
"""
import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTORCH_DIR = ROOT / "bench" / "pytorch"
IDS_FILE = ROOT / "target" / "bench" / "wiki_batches.json"


@dataclass
class Group:
    """Workloads that one vaezoo bench run and one PyTorch script run produce together."""
    workloads: list
    bench: str                # cargo bench target in benches/
    script: str               # script in bench/pytorch/
    steps: int                # timed steps, both sides
    warmup: int               # untimed steps first, both sides
    bench_args: list = field(default_factory=list)
    script_args: list = field(default_factory=list)


# The references' defaults for steps and warm-up. The NVAE text workloads run one per process
# on both sides (peak RSS per workload); the NVIB micro-benchmarks run together, as
# nvib_layer.py runs them (vaezoo gets `--only` with the selected ones).
GROUPS = [
    Group(["vae_mlp_train"], "vae_mlp", "vae_mlp.py", 200, 20),
    Group(["nvae_text_train"], "nvae_text", "nvae_text.py", 20, 3, [], ["--mode", "train"]),
    Group(["nvae_text_greedy"], "nvae_text", "nvae_text.py", 5, 1, [], ["--mode", "eval"]),
    # vaezoo writes the batches it trained on; PyTorch trains on the same ones.
    Group(["nvae_text_train_wiki"], "nvae_text", "nvae_text.py", 20, 3,
          ["--ids-out", str(IDS_FILE)],
          ["--ids-file", str(IDS_FILE)]),
    Group(["nvib_layer_fwd_bwd", "denoising_attention_fwd_bwd", "denoising_attention_eval_fwd"],
          "nvib", "nvib_layer.py", 100, 10),
]
ALL_WORKLOADS = [w for g in GROUPS for w in g.workloads]
SMOKE_STEPS, SMOKE_WARMUP = 2, 1


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[1:]))
    p.add_argument("--repeats", type=int, default=5,
                   help="runs per side and thread count (default 5)")
    p.add_argument("--threads", default="2", help="comma-separated thread counts (default 2)")
    p.add_argument("--only", help="comma-separated workloads (default: all of "
                   + ", ".join(ALL_WORKLOADS) + ")")
    p.add_argument("--out", default=str(ROOT / "target" / "bench" / "results.jsonl"),
                   help="JSON lines of every run (overwritten)")
    p.add_argument("--markdown", action="store_true",
                   help="print a block for BENCHMARKS.md: command, date, CPU, versions, tables")
    p.add_argument("--smoke", action="store_true",
                   help=f"{SMOKE_STEPS} timed steps after {SMOKE_WARMUP} warm-up per workload: "
                        "checks the pipeline, the timings mean nothing")
    p.add_argument("--python", default=sys.executable, help="the Python that runs PyTorch")
    p.add_argument("--no-build", action="store_true", help="use the benches built last time")
    args = p.parse_args()
    args.threads = [int(t) for t in args.threads.split(",")]
    selected = set(args.only.split(",")) if args.only else set(ALL_WORKLOADS)
    unknown = selected - set(ALL_WORKLOADS)
    if unknown:
        p.error(f"unknown workload(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(ALL_WORKLOADS)}")
    args.selected = [w for w in ALL_WORKLOADS if w in selected]
    return args


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def build():
    """`cargo bench --no-run` of the three benches; returns {bench name: executable}."""
    names = sorted({g.bench for g in GROUPS})
    cmd = ["cargo", "bench", "--no-run", "--message-format=json-render-diagnostics"]
    for n in names:
        cmd += ["--bench", n]
    log("building: " + shlex.join(cmd))
    out = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if out.returncode != 0:
        sys.exit("cargo bench --no-run failed")
    exes = {}
    for line in out.stdout.splitlines():
        msg = json.loads(line)
        target = msg.get("target", {})
        if (msg.get("reason") == "compiler-artifact" and "bench" in target.get("kind", [])
                and msg.get("executable") and target.get("name") in names):
            exes[target["name"]] = msg["executable"]
    missing = set(names) - set(exes)
    if missing:
        sys.exit(f"no executable for bench(es) {', '.join(sorted(missing))}")
    return exes


def built_benches():
    """The newest built executable of each bench (for --no-build)."""
    deps = ROOT / "target" / "release" / "deps"
    exes = {}
    for name in sorted({g.bench for g in GROUPS}):
        found = [p for p in deps.glob(f"{name}-*")
                 if p.is_file() and p.suffix == "" and os.access(p, os.X_OK)]
        if not found:
            sys.exit(f"no built bench {name} in {deps}; run without --no-build")
        exes[name] = str(max(found, key=lambda p: p.stat().st_mtime))
    return exes


def torch_version(python):
    """torch.__version__, or None (with the reason logged) when it cannot be imported."""
    r = subprocess.run([python, "-c", "import torch; print(torch.__version__)"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        reason = (r.stderr.strip().splitlines() or ["no output"])[-1]
        log(f"PyTorch skipped: `import torch` failed with {python} ({reason}); "
            "running the vaezoo side only")
        return None
    return r.stdout.strip()


def run(cmd, env, cwd, label):
    """Runs one benchmark process; returns its JSON lines (or [] if it failed)."""
    started = time.perf_counter()
    r = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    secs = time.perf_counter() - started
    if r.returncode != 0:
        log(f"  {label}: FAILED (exit {r.returncode}) after {secs:.0f} s: {shlex.join(cmd)}")
        log("    " + "\n    ".join(r.stderr.strip().splitlines()[-15:]))
        return None
    recs = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    for rec in recs:
        unit = "tokens_per_s" if "tokens_per_s" in rec else "samples_per_s"
        log(f"  {label:8s} {rec['workload']:30s} {rec['median_step_ms']:10.2f} ms  "
            f"{rec[unit]:10.1f} {unit.replace('_per_s', '/s'):9s} "
            f"RSS {rec['peak_rss_mb']:7.1f} MB  ({secs:.0f} s)")
    return recs


def fmt_ms(values):
    m = statistics.median(values)
    if len(values) == 1:
        return f"{m:.2f}"
    return f"{m:.2f} ({min(values):.2f}–{max(values):.2f})"


def table(records, threads, workloads, have_torch):
    """One markdown table: per workload, the median of the per-run medians on each side."""
    rows = ["| workload | vaezoo ms/step | PyTorch ms/step | speed-up (PyTorch / vaezoo) "
            "| vaezoo rate | PyTorch rate | vaezoo peak RSS MB | PyTorch peak RSS MB |",
            "|---|---|---|---|---|---|---|---|"]
    for w in workloads:
        side = {fw: [r for r in records if r["workload"] == w and r["threads"] == threads
                     and r["framework"] == fw] for fw in ("vaezoo", "pytorch")}
        if not side["vaezoo"] and not side["pytorch"]:
            continue
        cells = [w]
        med = {}
        for fw in ("vaezoo", "pytorch"):
            rs = side[fw]
            med[fw] = statistics.median(r["median_step_ms"] for r in rs) if rs else None
            cells.append(fmt_ms([r["median_step_ms"] for r in rs]) if rs
                         else ("skipped" if fw == "pytorch" and not have_torch else "failed"))
        cells.append(f"{med['pytorch'] / med['vaezoo']:.2f}×"
                     if med["vaezoo"] and med["pytorch"] else "–")
        for fw in ("vaezoo", "pytorch"):
            rs = side[fw]
            if rs:
                unit = "tokens_per_s" if "tokens_per_s" in rs[0] else "samples_per_s"
                rate = statistics.median(r[unit] for r in rs)
                cells.append(f"{rate:,.0f} {unit.split('_')[0]}/s")
            else:
                cells.append("–")
        for fw in ("vaezoo", "pytorch"):
            rs = side[fw]
            cells.append(f"{max(r['peak_rss_mb'] for r in rs):,.0f}" if rs else "–")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


# Keys both sides report that must agree for a workload to be the same on both: the model
# size and the work per step (the wiki batches are the same file on both sides; the random
# text batches are drawn by each side's own generator, so their token counts differ a little).
SAME_KEYS = ["batch", "steps", "params", "vocab", "ns", "nt", "dim", "heads", "layers"]
SAME_KEYS_OF = {"nvae_text_train_wiki": ["mean_src_tokens_per_step"]}


def mismatches(records, workloads):
    """Workloads where the two sides' JSON lines disagree on a key of SAME_KEYS."""
    notes = []
    for w in workloads:
        for key in SAME_KEYS + SAME_KEYS_OF.get(w, []):
            seen = {}
            for r in records:
                if r["workload"] == w and key in r:
                    seen.setdefault(r["framework"], set()).add(r[key])
            if len(seen) == 2 and seen["vaezoo"] != seen["pytorch"]:
                notes.append(f"{w}: {key} is {sorted(seen['vaezoo'])} in vaezoo, "
                             f"{sorted(seen['pytorch'])} in PyTorch")
    return notes


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def git_commit():
    def git(*a):
        r = subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else ""
    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    return commit + ("+uncommitted changes" if git("status", "--porcelain") else "")


def main():
    args = parse_args()
    started = time.perf_counter()
    exes = built_benches() if args.no_build else build()
    torch = torch_version(args.python)
    groups = [g for g in GROUPS if any(w in args.selected for w in g.workloads)]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    records, failures = [], []
    with open(out, "w") as sink:
        for t in args.threads:
            env = dict(os.environ, RAYON_NUM_THREADS=str(t))
            for rep in range(1, args.repeats + 1):
                log(f"threads {t}, run {rep}/{args.repeats}")
                for g in groups:
                    steps, warmup = ((SMOKE_STEPS, SMOKE_WARMUP) if args.smoke
                                     else (g.steps, g.warmup))
                    timing = ["--steps", str(steps), "--warmup", str(warmup)]
                    only = ",".join(w for w in g.workloads if w in args.selected)
                    sides = [("vaezoo", [exes[g.bench], *timing, "--only", only, *g.bench_args],
                              ROOT)]
                    if torch:
                        sides.append(("pytorch", [args.python, g.script, "--threads", str(t),
                                                  "--json", *timing, *g.script_args],
                                      PYTORCH_DIR))
                    for fw, cmd, cwd in sides:
                        recs = run(cmd, env, cwd, fw)
                        if recs is None:
                            failures.append(f"{fw} {'/'.join(g.workloads)} (threads {t}, "
                                            f"run {rep})")
                            if fw == "vaezoo":
                                break  # no comparison (and for the wiki, no batch file)
                            continue
                        for rec in recs:
                            if rec["workload"] in args.selected:
                                rec["repeat"] = rep
                                records.append(rec)
                                sink.write(json.dumps(rec) + "\n")
                                sink.flush()
    minutes = (time.perf_counter() - started) / 60
    summary = []
    if args.markdown:
        date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        malloc = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}
        summary += [
            f"Command: `{shlex.join(['python3', 'bench/compare.py', *sys.argv[1:]])}`",
            "",
            f"- date: {date} ({minutes:.0f} min for the whole run)",
            f"- CPU: {cpu_model()}, {os.cpu_count()} logical CPUs; {platform.platform()}",
            f"- vaezoo {records[0]['version'] if records else '?'} at commit {git_commit()}; "
            + (f"PyTorch {torch} ({args.python})" if torch else "PyTorch skipped "
               "(`import torch` failed)"),
            f"- {args.repeats} run(s) per side and thread count"
            + (", smoke run: the timings mean nothing" if args.smoke else "")
            + (f"; glibc malloc tuning: {malloc}" if malloc else ""),
            "",
            "Each cell is the median of the runs' median step times (their range in brackets); "
            "rates are the median of the runs' rates, peak RSS the largest. Speed-up = PyTorch "
            "/ vaezoo: above 1, vaezoo is faster.",
            "",
        ]
    for t in args.threads:
        summary += [f"**{t} thread{'s' if t > 1 else ''}**", "",
                    table(records, t, args.selected, torch is not None), ""]
    if not torch:
        summary.append("PyTorch was skipped: `import torch` failed, so only vaezoo ran.")
    differ = mismatches(records, args.selected)
    if differ:
        summary.append("The two sides did not run the same workload: " + "; ".join(differ))
    if failures:
        summary.append("Failed runs: " + "; ".join(failures))
    print("\n".join(summary))
    log(f"{len(records)} results in {out} ({minutes:.1f} min)")
    sys.exit(1 if failures or differ else 0)


if __name__ == "__main__":
    main()

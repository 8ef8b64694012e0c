"""Folder prediction from 1 to N GPUs, side by side in one run: images/s of the whole job and the ratio.

One folder of real images (ISIC, replicated under new names to a larger set, split evenly into parts) is segmented
from disk to masks + results.csv on disk by each device count in turn, into fresh output folders, after one untimed
warm-up run (page cache, CUDA start-up, Ray workers). The engine that measured is printed and saved:

- ``ray``: ``ultralbm-edge predict --ray`` (``runtime.distributed.predict_ray``) with N inference actors of one GPU
  each, decoding and writing in Ray tasks on the machine's other cores; one run folder. Ray is started once for the
  whole script (RAY_ADDRESS, else a local instance).
- ``processes`` (when Ray is not installed): N ``ultralbm-edge predict`` processes, one per GPU
  (CUDA_VISIBLE_DEVICES), over disjoint halves (N-ths) of the files, each writing its own run folder with
  ``--workers`` decoding and writing (default: the cores / the largest device count, the same in every row). Each
  process is pinned to its own share of the machine's physical cores (both hyperthreads of each; ``--no-pin`` lets
  them float), so a row with more GPUs adds each GPU with the same share of CPU, as adding machines would: the CPU
  work, not the GPU, bounds one GPU's rate, and an unpinned one-GPU row would use the whole machine's CPUs.
  images/s over the union of the files, wall clock from the first start to the last exit. The processes may cache
  Python bytecode (under the run's temporary folder, PYTHONPYCACHEPREFIX), filled by the untimed warm-up run, as a
  pip-installed package has its .pyc from install time: the GPU machine's image sets PYTHONDONTWRITEBYTECODE and
  ships torch without .pyc, which would otherwise add ~5 s of compiling torch's sources to every process start.

Each row gives ``img_s`` (all images / wall seconds of the whole job, start-up of actors or processes included) and
``img_s_steady`` (ray: from the row of the 10th percentile image to the last; processes: all images / the longest
``predict`` call, interpreter start and model loading excluded). Masks of every run are checked (all images ok) and
compared with the 1-device run's by results.csv's mask_sha256.

    python benchmarks/scaling.py --images ../shared/data/isic2017/val/images --copies 20 --gpus 1,2 \\
        --engine ray --device cuda --json benchmarks/results/scaling_h200x2.json
    python benchmarks/scaling.py --images $ULTRALBM_SHARED/data/isic2017/val/images --copies 200 --gpus 1,2 \\
        --engine processes --device cuda --json benchmarks/results/scaling_processes_h200x2.json

``--device cpu`` runs the same logic on CPU workers (a check that the script works, not a measurement).
``--one-gpu`` (processes) puts every process on GPU 0: on a one-GPU machine it measures how the host side (CPUs,
memory, the disk the masks go to) scales from one process to N, each with its own share of the cores, as long as
the GPU is not the limit (check the pure rate with gpu_folder.py):

    python benchmarks/scaling.py --images $S/isic2017/val/images --copies 60 --gpus 1,2 --engine processes \
        --device cuda --one-gpu --repeats 3 --json benchmarks/results/scaling_one_gpu_h200.json
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import replicate, report

SUMMARY = re.compile(r"^(\d+) segmented, (\d+) already done, (\d+) failed in ([\d.]+) s with (.+) -> ", re.M)


def make_parts(images: Path, copies: int, parts: int, into: Path) -> list[Path]:
    """The replicated set, dealt round-robin into ``parts`` folders (each device count takes whole parts)."""
    everything = replicate(images, copies, into / "all")
    folders = [into / f"part{k}" for k in range(parts)]
    for d in folders:
        d.mkdir()
    for i, f in enumerate(sorted(everything.iterdir())):
        f.rename(folders[i % parts] / f.name)
    everything.rmdir()
    return folders


def mask_hashes(out_dirs: list[Path]) -> dict[str, str]:
    """Image name -> mask sha256 over the results.csv of one or more run folders; every row must be ok."""
    hashes = {}
    for out in out_dirs:
        for row in csv.DictReader(open(out / "results.csv")):
            assert row["status"] == "ok", row
            hashes[Path(row["path"]).name] = row["mask_sha256"]
    return hashes


class RayEngine:
    name = "ray"

    def __init__(self, args: argparse.Namespace) -> None:
        import ray

        from ultralbm_edge.runtime.distributed import ClusterOptions, predict_ray

        self.ray, self.predict_ray, self.ClusterOptions, self.args = ray, predict_ray, ClusterOptions, args
        address = os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address)
        else:
            ray.init(include_dashboard=False, num_cpus=args.ray_cpus)
        self.facts = {"ray": ray.__version__, "cluster": address or "local instance",
                      "cluster_resources": {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}}  # fmt: skip

    def run(self, parts: list[Path], devices: int, out: Path) -> tuple[dict[str, Any], list[Path]]:
        from ultralbm_edge.runtime.predict import PredictOptions

        stamps: list[float] = []
        cuda = self.args.device.startswith("cuda")
        # On the CPU (a check of the logic) the actors share the cores, leaving some to decode and write.
        cluster = self.ClusterOptions(actors=devices, gpus_per_actor=1.0 if cuda else 0.0, cpus_per_actor=1.0 if cuda else 0.5)
        t0 = time.perf_counter()
        summary = self.predict_ray(parts, self.args.model, out, PredictOptions(batch_size=self.args.batch, overwrite=True), cluster,
                                   device=self.args.device, on_progress=lambda done, total: stamps.append(time.perf_counter()))  # fmt: skip
        wall = time.perf_counter() - t0
        assert summary.ok == summary.total and not summary.failed, summary.failed[:3]
        k = len(stamps) // 10
        steady = (len(stamps) - 1 - k) / (stamps[-1] - stamps[k]) if len(stamps) > k + 1 and stamps[-1] > stamps[k] else float("nan")
        return {"images": summary.ok, "wall_s": wall, "img_s": summary.ok / wall, "img_s_steady": steady, "engine_detail": summary.engine}, [out]

    def close(self) -> None:
        self.ray.shutdown()


def cpu_shares(parts: int) -> list[list[int]]:
    """The CPUs this process may use, split into ``parts`` shares of whole physical cores (a core's hyperthreads in
    one share; /sys's topology, else one CPU per core), as equal as the count allows."""
    cpus = sorted(os.sched_getaffinity(0))
    cores: dict[tuple[str, str], list[int]] = {}
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            key = ((topology / "physical_package_id").read_text().strip(), (topology / "core_id").read_text().strip())
        except OSError:
            key = ("", str(cpu))
        cores.setdefault(key, []).append(cpu)
    groups = sorted(cores.values())
    if len(groups) < parts:
        raise SystemExit(f"{len(groups)} physical cores cannot be shared among {parts} processes: pass --no-pin")
    bounds = [round(k * len(groups) / parts) for k in range(parts + 1)]
    return [sorted(c for g in groups[bounds[k] : bounds[k + 1]] for c in g) for k in range(parts)]


class ProcessEngine:
    name = "processes"

    def __init__(self, args: argparse.Namespace, most_devices: int, bytecode_cache: Path) -> None:
        self.args = args
        self.shares = cpu_shares(most_devices) if args.pin else None
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        self.env = {**env, "PYTHONPYCACHEPREFIX": str(bytecode_cache)}
        self.facts = {"ray": "not installed" if importlib.util.find_spec("ray") is None else "not used",
                      "cpus_per_process": [len(s) for s in self.shares] if self.shares else "not pinned"}  # fmt: skip

    def run(self, parts: list[Path], devices: int, out: Path) -> tuple[dict[str, Any], list[Path]]:
        cuda = self.args.device.startswith("cuda")
        workers = self.args.workers
        procs, outs = [], []
        t0 = time.perf_counter()
        for k in range(devices):
            gpu = "0" if self.args.one_gpu else str(k)
            env = {**self.env, **({"CUDA_VISIBLE_DEVICES": gpu} if cuda else {})}
            outs.append(out / f"device{k}")
            cmd = [sys.executable, "-m", "ultralbm_edge", "-q", "predict", *map(str, parts[k::devices]), "-m", self.args.model,
                   "-o", str(outs[-1]), "--device", "cuda" if cuda else "cpu", "-b", str(self.args.batch), "--workers", str(workers),
                   "--overwrite"]  # fmt: skip
            pin = (lambda cpus=self.shares[k]: os.sched_setaffinity(0, cpus)) if self.shares else None
            procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=pin))
        results = [p.communicate() for p in procs]
        wall = time.perf_counter() - t0
        images, seconds, detail = 0, [], set()
        for proc, (stdout, stderr) in zip(procs, results):
            m = SUMMARY.search(stdout)
            assert proc.returncode == 0 and m, (proc.returncode, stdout[-1000:], stderr[-3000:])
            assert int(m.group(3)) == 0 and int(m.group(2)) == 0, stdout
            images += int(m.group(1))
            seconds.append(float(m.group(4)))
            detail.add(m.group(5))
        return {"images": images, "wall_s": wall, "img_s": images / wall, "img_s_steady": images / max(seconds),
                "workers_per_process": workers, "engine_detail": ", ".join(sorted(detail))}, outs  # fmt: skip

    def close(self) -> None:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, required=True, help="a folder of JPEGs (ISIC 2017 val images)")
    ap.add_argument("--copies", type=int, default=20, help="replicate the folder this many times (a larger set)")
    ap.add_argument("--limit", type=int, help="use only the first N images of --images (quick checks)")
    ap.add_argument("--gpus", default="1,2", help="device counts to compare, e.g. 1,2")
    ap.add_argument("--engine", choices=("auto", "ray", "processes"), default="auto", help="auto: ray when installed")
    ap.add_argument("--model", default="ultralbm", help="model for every run (default: the bundled checkpoint)")
    ap.add_argument("--device", default="cuda", help="cuda (one GPU per actor/process) or cpu (a check of the logic)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, help="processes: decode/write workers per predict process (default: cores / largest count)")
    ap.add_argument("--ray-cpus", type=int, help="CPUs of the local Ray instance (default: all)")
    ap.add_argument("--no-pin", dest="pin", action="store_false", help="processes: do not pin each process to its share of the cores")
    ap.add_argument("--repeats", type=int, default=1, help="rounds of all device counts in turn; ratios: medians of the rounds'")
    ap.add_argument("--one-gpu", action="store_true", help="processes: every process on GPU 0 (how the host side scales)")
    ap.add_argument("--keep", type=Path, help="keep the replicated folder and run folders here (default: a temp dir)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    counts = [int(n) for n in args.gpus.split(",")]
    args.workers = args.workers or min(64, max(1, (os.cpu_count() or 1) // max(counts)))  # predict takes 1-64
    engine_name = args.engine if args.engine != "auto" else ("ray" if importlib.util.find_spec("ray") else "processes")
    print(f"engine: {engine_name}" + (" (Ray is not installed)" if args.engine == "auto" and engine_name == "processes" else ""), flush=True)
    if args.one_gpu and engine_name != "processes":
        raise SystemExit("--one-gpu runs processes on GPU 0: use it with --engine processes")
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="ulbm-scaling-"))
    engine: RayEngine | ProcessEngine | None = None
    rows: list[dict[str, Any]] = []
    try:
        engine = RayEngine(args) if engine_name == "ray" else ProcessEngine(args, max(counts), tmp / "pycache")
        source = args.images
        if args.limit:
            source = tmp / "source"
            source.mkdir(parents=True)
            for p in sorted(args.images.glob("*.jpg"))[: args.limit]:
                shutil.copyfile(p, source / p.name)
        parts = make_parts(source, args.copies, math.lcm(*counts), tmp / "images")
        n_images = sum(len(list(d.iterdir())) for d in parts)
        for d in parts:  # the page cache holds the images for every run alike
            for f in d.iterdir():
                f.read_bytes()
        warm = tmp / "warm"
        warm.mkdir()
        for f in sorted(parts[0].iterdir())[: 4 * args.batch]:
            shutil.copyfile(f, warm / f.name)
        engine.run([warm], 1, tmp / "out_warm")  # untimed: CUDA start-up, graph capture, Ray workers
        reference: dict[str, str] | None = None
        for round_ in range(args.repeats):
            for n in counts:
                row, outs = engine.run(parts, n, tmp / f"out_{n}_round{round_}")
                hashes = mask_hashes(outs)
                assert len(hashes) == n_images, (len(hashes), n_images)
                reference = reference or hashes
                row = {"engine": engine.name, "devices": n, "device": args.device, "round": round_, **row,
                       "masks_identical_to_first": sum(hashes[k] == reference.get(k) for k in hashes)}  # fmt: skip
                row = {k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}
                rows.append(row)
                print(json.dumps(row), flush=True)
                if not args.keep:  # the next run writes into a fresh folder on a disk as empty as before
                    for d in outs:
                        shutil.rmtree(d)
    finally:
        if engine is not None:
            engine.close()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    base = counts[0]
    per_round = {key: {f"{n}_over_{base}": round_ratios(rows, n, base, key) for n in counts[1:]} for key in ("img_s", "img_s_steady")}
    ratios = {k: round(statistics.median(v), 3) for k, v in per_round["img_s"].items()}
    steady = {k: round(statistics.median(v), 3) for k, v in per_round["img_s_steady"].items()}
    unit = "GPU" if args.device.startswith("cuda") else "CPU worker"
    for r in rows:
        print(f"[{engine.name}] {r['devices']} {unit}(s): {r['images']} images in {r['wall_s']} s = {r['img_s']} img/s "
              f"(steady {r['img_s_steady']} img/s)")  # fmt: skip
    for key, value in ratios.items():
        n = int(key.split("_")[0])
        rounds = f" (median of {args.repeats} rounds: {per_round['img_s'][key]}, steady {per_round['img_s_steady'][key]})" if args.repeats > 1 else ""
        print(f"[{engine.name}] ratio {key.replace('_', ' ')}: {value}x images/s (ideal {n / base:g}x), steady {steady[key]}x{rounds}")
    report(rows, args.json, engine=engine.name, ratio=ratios, ratio_steady=steady, ratio_rounds=per_round, model=args.model,
           batch=args.batch, images=n_images, copies=args.copies, repeats=args.repeats, one_gpu=args.one_gpu, **engine.facts)  # fmt: skip


def round_ratios(rows: list[dict[str, Any]], devices: int, base: int, key: str) -> list[float]:
    """``key`` of the ``devices`` row over the ``base`` row, round by round."""
    by = {(r["round"], r["devices"]): r[key] for r in rows}
    return [round(by[r, devices] / by[r, base], 3) for r in sorted({r["round"] for r in rows})]


if __name__ == "__main__":
    main()

"""Which post-processing should ``predict`` apply by default? Measured on real expert masks, not assumed.

The model's probability map (bundled model, ONNX Runtime) is computed once per image; every candidate then turns it
into the mask ``predict`` would write (resized to the image, thresholded, post-processed) and is scored against the
expert mask at the image's own resolution: global DSC/IoU (one confusion matrix) and per-image Dice (mean, and the
worst image, the case a clinician notices).

    python benchmarks/postprocessing.py --json benchmarks/results/postprocessing.json
"""

from __future__ import annotations

import argparse
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from _common import report

from ultralbm_edge.export import export_onnx
from ultralbm_edge.runtime.backends import open_backend
from ultralbm_edge.runtime.dataset import load_labelled, paired_files
from ultralbm_edge.runtime.metrics import ConfusionAccumulator, dice
from ultralbm_edge.runtime.postprocess import PostprocessOptions, probability_to_mask

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = {
    "none": PostprocessOptions(keep_largest=False, fill_holes=False),
    "fill holes": PostprocessOptions(keep_largest=False, fill_holes=True),
    "largest component": PostprocessOptions(keep_largest=True, fill_holes=False, min_component_fraction=0.0),
    "largest + fill holes": PostprocessOptions(keep_largest=True, fill_holes=True, min_component_fraction=0.0),
    "components >= 10% of largest + fill": PostprocessOptions(keep_largest=True, fill_holes=True, min_component_fraction=0.1),
    "components >= 25% of largest + fill": PostprocessOptions(keep_largest=True, fill_holes=True, min_component_fraction=0.25),
}


def score(backend, folder: Path) -> dict[str, dict]:
    pairs = paired_files(folder)
    with ThreadPoolExecutor(2) as pool:
        cases = list(pool.map(lambda pair: load_labelled(*pair, 256), pairs))
    probs = np.concatenate([backend.run(np.stack([c.x for c in cases[i : i + 16]])) for i in range(0, len(cases), 16)])[:, 0]
    rows = {}
    for name, opts in CANDIDATES.items():
        acc, dices = ConfusionAccumulator(0.5), []
        for case, prob, (img, _) in zip(cases, probs, pairs):
            h, w = case.truth_full.shape
            mask = probability_to_mask(prob, h, w, opts) > 0
            truth = case.truth_full >= 0.5
            acc.add(mask.astype(np.float32), truth)
            dices.append((dice(mask, truth), img.name))
        m = acc.result()
        rows[name] = {"dsc": m["dsc"], "iou": m["iou"], "mean_dice": float(np.mean([d for d, _ in dices])),
                      "worst_dice": min(dices)[0], "worst_image": min(dices)[1], "images_below_0.5": sum(d < 0.5 for d, _ in dices)}  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="ultralbm", help="bundled name or .pth (exported to ONNX for the run)")
    ap.add_argument("--data", nargs="+", type=Path,
                    default=[ROOT.parent / "shared/data/isic2017/val", ROOT.parent / "shared/data/ph2/train", ROOT.parent / "shared/data/ph2/val"])  # fmt: skip
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        backend = open_backend(export_onnx(args.model, Path(tmp) / "m.onnx", dynamic_batch=True).path)
        results = []
        for folder in args.data:
            for name, row in score(backend, folder).items():
                results.append({"data": str(folder.relative_to(folder.parents[1])), "post-processing": name, **row})
    print(f"{'data':16s} {'post-processing':38s} {'DSC':>6s} {'IoU':>6s} {'mean Dice':>9s} {'worst':>6s} {'<0.5':>5s}  worst image")
    for r in results:
        print(f"{r['data']:16s} {r['post-processing']:38s} {r['dsc'] * 100:6.2f} {r['iou'] * 100:6.2f} {r['mean_dice'] * 100:9.2f} "
              f"{r['worst_dice']:6.3f} {r['images_below_0.5']:5d}  {r['worst_image']}")
    report(results, args.json, model=args.model)


if __name__ == "__main__":
    main()

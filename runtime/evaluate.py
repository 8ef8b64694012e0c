"""Accuracy of any model file on a labelled folder (DIR/images + DIR/masks), two ways, per image and overall.

- *raw*: the paper's protocol and the authors' test code: probabilities thresholded at the model's resolution
  (256 px), each expert mask through the same antialiased resize as the images, binarised at 0.5;
- *post-processed*: exactly what ``predict`` writes (the probability map resized to the image, thresholded,
  then the post-processing), against the expert mask at the image's own resolution.

Both are reported as one global confusion matrix (DSC, IoU, accuracy, sensitivity, specificity) and per image
(Dice, IoU, areas), worst first.
"""

from __future__ import annotations

import csv
import io
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .backends import Backend
from .dataset import LabelledImage, load_labelled, paired_files
from .imageio import DEFAULT_LIMITS, ImageLimits, read_image
from .metrics import ConfusionAccumulator, dice
from .postprocess import PostprocessOptions, probability_to_mask
from .report import Case, overlay_thumbnail, write_report
from .run_folder import csv_safe


@dataclass
class ImageScore:
    image: str
    dice: float  # post-processed, at the image's size: what predict writes
    iou: float
    dice_raw: float  # thresholded at the model's size: the paper's protocol
    truth_area_px: int
    predicted_area_px: int
    width: int
    height: int


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def _score(path: Path, case: LabelledImage, prob: np.ndarray, post: PostprocessOptions, raw: ConfusionAccumulator,
           final: ConfusionAccumulator) -> ImageScore:  # fmt: skip
    raw.add(prob, case.truth)
    h, w = case.truth_full.shape
    mask = probability_to_mask(prob, h, w, post) > 0
    truth = case.truth_full >= 0.5
    final.add(mask.astype(np.float32), truth)
    return ImageScore(path.name, round(dice(mask, truth), 5), round(_iou(mask, truth), 5),
                      round(dice(prob >= post.threshold, case.truth >= 0.5), 5), int(truth.sum()), int(mask.sum()), w, h)  # fmt: skip


def _batches(items: Iterable, size: int) -> Iterable[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def evaluate(
    backend: Backend,
    data: Path | str,
    post: PostprocessOptions | None = None,
    batch_size: int = 8,
    workers: int = 2,
    on_progress: Callable[[int, int], None] | None = None,
    limits: ImageLimits = DEFAULT_LIMITS,
) -> dict:
    """Scores of ``backend`` on ``data`` (see the module docstring). ``post`` defaults to predict's defaults with the
    model's threshold. Keys: the raw global metrics at the top level (``dsc``, ``iou``, ...; as the paper),
    ``postprocessed`` (the same for predict's masks, and the options), ``per_image`` (worst first)."""
    data = Path(data)
    pairs = paired_files(data)
    post = post or PostprocessOptions(backend.metadata.threshold)
    size = backend.metadata.image_size
    raw, final = ConfusionAccumulator(post.threshold), ConfusionAccumulator(0.5)
    scores: list[ImageScore] = []
    started = time.perf_counter()
    with ThreadPoolExecutor(max(1, workers)) as pool:
        loaded = pool.map(lambda pair: (pair[0], load_labelled(*pair, size, limits)), pairs)
        for batch in _batches(loaded, batch_size):
            probs = backend.run(np.stack([case.x for _, case in batch]))
            scores += [_score(path, case, p[0], post, raw, final) for (path, case), p in zip(batch, probs)]
            if on_progress:
                on_progress(len(scores), len(pairs))
    result = raw.result()
    result["postprocessed"] = {**final.result(), "options": asdict(post)}
    result["per_image"] = [asdict(s) for s in sorted(scores, key=lambda s: (s.dice, s.image))]
    result.update({"data": str(data), "threshold": post.threshold, "seconds": round(time.perf_counter() - started, 2)})
    result.update({f"model_{k}": v for k, v in backend.describe().items()})
    return result


def evaluation_report(backend: Backend, result: dict, path: Path, worst: int = 40, limits: ImageLimits = DEFAULT_LIMITS) -> Path:
    """An HTML page: the global metrics, the ``worst`` images by post-processed Dice with the prediction's and the
    expert's contours (recomputed for those images only), and every image's scores."""
    data = Path(result["data"])
    post = PostprocessOptions(**result["postprocessed"]["options"])
    by_name = {img.name: (img, mask) for img, mask in paired_files(data)}
    cases = []
    for score in result["per_image"][:worst]:
        image, mask = by_name[score["image"]]
        case = load_labelled(image, mask, backend.metadata.image_size, limits)
        prob = backend.run(case.x[None])[0, 0]
        h, w = case.truth_full.shape
        prediction = probability_to_mask(prob, h, w, post)
        facts = {"Dice": f"{score['dice']:.3f}", "raw Dice": f"{score['dice_raw']:.3f}",
                 "lesion px (expert / predicted)": f"{score['truth_area_px']} / {score['predicted_area_px']}"}  # fmt: skip
        cases.append(Case(score["image"], overlay_thumbnail(read_image(image, limits), prediction, case.truth_full >= 0.5), facts))
    pp = result["postprocessed"]
    summary = [
        {"scored": "raw (256 px, the paper's protocol)", **_percentages(result)},
        {"scored": "post-processed (what predict writes)", **_percentages(pp)},
    ]
    return write_report(
        path, "ultralbm-edge evaluate", f"{result['n_images']} images of {data} · model {backend.path.name} on {backend.name}",
        summary, cases, f"The {len(cases)} lowest Dice scores", result["per_image"], "Every image, worst first",
    )


def _percentages(metrics: dict) -> dict[str, str]:
    keys = ("dsc", "iou", "accuracy", "sensitivity", "specificity", "mean_dice")
    return {k.replace("_", " "): f"{metrics[k] * 100:.2f}" for k in keys}


def per_image_csv(result: dict) -> str:
    """The per-image scores as CSV, worst first (columns: ``ImageScore``'s fields)."""
    rows = result["per_image"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["image"])
    writer.writeheader()
    writer.writerows({k: csv_safe(v) for k, v in row.items()} for row in rows)
    return buf.getvalue()

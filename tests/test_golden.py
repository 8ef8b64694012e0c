"""The acceptance test: our model, from the image files, reproduces the authors' own outputs."""

import numpy as np
import pytest
import torch

from conftest import dice
from ultralbm_edge.runtime.imageio import read_image
from ultralbm_edge.runtime.preprocess import preprocess


def test_preprocessing_matches_the_authors_inputs(golden, ph2_val_images):
    for i, name in enumerate(golden["names"][: len(golden["inputs"])]):
        x = preprocess(read_image(ph2_val_images / name))
        np.testing.assert_allclose(x, golden["inputs"][i], rtol=0, atol=1e-3)


@pytest.mark.parametrize("strategy", ["sequential", "chunked"])
def test_official_checkpoint_reproduces_golden_outputs(official_model, golden, ph2_val_images, strategy):
    official_model.set_scan_strategy(strategy)
    batch = np.stack([preprocess(read_image(ph2_val_images / n)) for n in golden["names"]])
    with torch.no_grad():
        probs = torch.cat([official_model(torch.from_numpy(b)) for b in np.array_split(batch, 4)]).numpy()
    diff = np.abs(probs - golden["probs"])
    assert diff.max() <= 5e-3 and diff.mean() <= 1e-4, (diff.max(), diff.mean())
    for p, g in zip(probs, golden["probs"]):
        assert dice(p >= 0.5, g >= 0.5) >= 0.999

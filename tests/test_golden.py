"""The acceptance test: our model, from the image files, reproduces the authors' own outputs."""

import numpy as np
import pytest
import torch

from ultralbm_edge.runtime.imageio import read_image
from ultralbm_edge.runtime.parity import compare
from ultralbm_edge.runtime.preprocess import preprocess


def test_preprocessing_matches_the_authors_inputs(golden, ph2_val_images):
    for i, name in enumerate(golden["names"][: len(golden["inputs"])]):
        x = preprocess(read_image(ph2_val_images / name))
        np.testing.assert_allclose(x, golden["inputs"][i], rtol=0, atol=1e-3)


@pytest.mark.parametrize("strategy", ["sequential", "chunked"])
def test_official_checkpoint_reproduces_golden_outputs(official_model, golden, ph2_val_images, strategy):
    batch = np.stack([preprocess(read_image(ph2_val_images / n)) for n in golden["names"]])
    with torch.no_grad(), official_model.using_scan(strategy):
        probs = torch.cat([official_model(torch.from_numpy(b)) for b in np.array_split(batch, 4)]).numpy()
    report = compare(probs, golden["probs"], reference="the authors' outputs")
    assert report.ok, report.summary()

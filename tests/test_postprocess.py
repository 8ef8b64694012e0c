"""Mask cleaning: which components stay (8-connected, by area against the largest) and which holes are filled."""

import numpy as np
from ultralbm_edge.runtime.postprocess import (
    PostprocessOptions,
    clean_mask,
    large_components,
)


def _mask() -> np.ndarray:
    m = np.zeros((40, 40), np.uint8)
    m[2:12, 2:12] = 1  # area 100, with a hole of 4 pixels
    m[5:7, 5:7] = 0
    m[20:26, 20:25] = 1  # area 30
    m[26, 25] = 1  # touches it only diagonally: the same 8-connected component (area 31)
    m[30:34, 2:7] = 1  # area 20
    m[38, 38] = 1  # a speck
    return m


def test_large_components_keeps_the_largest_and_those_at_least_the_fraction_of_it():
    m = _mask()
    largest = large_components(m, 0.0)
    assert largest.sum() == 96 and largest[2:12, 2:12].sum() == 96
    kept = large_components(m, 0.25)  # >= 24 pixels: the 96 and the 31 (diagonal pixel included)
    assert kept.sum() == 96 + 31 and kept[26, 25] == 1 and kept[30:34, 2:7].sum() == 0 and kept[38, 38] == 0
    assert large_components(m, 0.2).sum() == 96 + 31 + 20
    one = np.zeros((8, 8), np.uint8)
    one[2:4, 2:4] = 1
    assert large_components(one, 0.0) is one and large_components(np.zeros((8, 8), np.uint8), 0.0).sum() == 0


def test_clean_mask_fills_holes_and_writes_0_or_255():
    out = clean_mask(_mask(), PostprocessOptions(min_component_fraction=0.0))
    assert set(np.unique(out)) == {0, 255} and (out[2:12, 2:12] == 255).all() and out.sum() == 100 * 255

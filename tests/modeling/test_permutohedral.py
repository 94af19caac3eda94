"""Tests of the permutohedral lattice filter (seg_plugins.modeling.postprocessing.permutohedral)
against the exact Gaussian sums it approximates (CPU, a few thousand points)."""

import math

import pytest
import torch

from seg_plugins.modeling.postprocessing import permutohedral
from seg_plugins.modeling.postprocessing.permutohedral import PermutohedralLattice, lattice_gain


def _cloud(n, d, side, seed=0):
    """n points uniform in [0, side]^d."""
    return torch.rand(n, d, generator=torch.Generator().manual_seed(seed)) * side


def _exact(features, values):
    """sum_j exp(-|f_i - f_j|^2 / 2) values_j in float64 (j = i included)."""
    f = features.double()
    return torch.exp(-0.5 * torch.cdist(f, f) ** 2) @ values.double()


def _rel(approx, exact):
    return ((approx.double() - exact).norm() / exact.norm()).item()


def test_gain_formula():
    # (2 pi)^(d/2) / ((3/2)^(d/2) / sqrt(d + 1) * 2^(d+1)), at d = 1 and 5 by hand.
    assert lattice_gain(1) == pytest.approx(math.sqrt(2 * math.pi) / (math.sqrt(1.5 / 2) * 4))
    assert lattice_gain(5) == pytest.approx((4 * math.pi / 3) ** 2.5 * math.sqrt(6) / 64)


@pytest.mark.parametrize(
    "d, n, side, margin", [(1, 400, 20.0, 3.0), (2, 3000, 12.0, 3.0), (3, 6000, 7.0, 2.5)]
)
def test_dense_points_sum_like_the_gaussian(d, n, side, margin):
    """Where the points are dense at the kernel's scale, the filter of ones is the Gaussian's
    row sum (the gain is right) and the filter of any values is close to the exact sum."""
    features = _cloud(n, d, side)
    lattice = PermutohedralLattice(features)
    exact_ones = _exact(features, torch.ones(n, 1))[:, 0]
    ratio = lattice(torch.ones(n, 1))[:, 0].double() / exact_ones
    interior = ((features > margin) & (features < side - margin)).all(1)  # far from the edges
    assert interior.sum() >= 50
    assert ratio[interior].min() > 0.97 and ratio[interior].max() < 1.03, ratio[interior]
    values = torch.rand(n, 3, generator=torch.Generator().manual_seed(1))
    assert _rel(lattice(values), _exact(features, values)) < 0.03


def test_sparse_points_lose_mass_but_never_gain():
    """Sparse points (5-D, few per unit volume): the lattice drops what the blur sends to
    vertices that no point splats onto, so it underestimates the sums (what the CRF's
    message tolerates, docs/crf.md), never overestimates them by much."""
    features = _cloud(2000, 5, 4.0)
    ratio = (
        PermutohedralLattice(features)(torch.ones(2000, 1))[:, 0]
        / _exact(features, torch.ones(2000, 1))[:, 0].float()
    )
    assert ratio.max() < 1.1 and ratio.median() < 0.95, (ratio.max(), ratio.median())


def test_filter_is_linear_and_keeps_constants_up_to_the_normalisation():
    features = _cloud(500, 3, 5.0)
    lattice = PermutohedralLattice(features)
    gen = torch.Generator().manual_seed(2)
    a, b = torch.rand(500, 2, generator=gen), torch.rand(500, 2, generator=gen)
    torch.testing.assert_close(lattice(3 * a - b), 3 * lattice(a) - lattice(b))
    ones = lattice(torch.ones(500, 1))
    constant = lattice(torch.full((500, 4), 7.0))
    torch.testing.assert_close(constant / ones, torch.full((500, 4), 7.0))  # normalised


def test_self_weight_is_the_diagonal_of_a_dense_lattice_and_bounds_it_otherwise():
    dense = PermutohedralLattice(torch.arange(300.0)[:, None] / 4)  # 1-D, 4 points per std
    diagonal = dense(torch.eye(300)).diagonal()
    torch.testing.assert_close(diagonal[5:-5], dense.self_weight[5:-5])
    sparse = PermutohedralLattice(_cloud(400, 4, 6.0))
    diagonal = sparse(torch.eye(400)).diagonal()
    assert (diagonal <= sparse.self_weight + 1e-5).all()
    assert (diagonal < sparse.self_weight - 0.01).any()  # some vertices are missing


def test_sparse_products_equal_dense_ones():
    features = _cloud(300, 4, 3.0)
    lattice = PermutohedralLattice(features)
    values = torch.rand(300, 3, generator=torch.Generator().manual_seed(3))
    splat = lattice.splat_matrix.to_dense()
    assert splat.shape == (lattice.num_vertices + 1, 300)
    torch.testing.assert_close(lattice.splat_matrix @ values, splat @ values)
    on_lattice = torch.rand(lattice.num_vertices + 1, 3)
    torch.testing.assert_close(
        lattice.slice_matrix @ on_lattice, lattice.slice_matrix.to_dense() @ on_lattice
    )
    # Each point splats with barycentric weights: d + 1 of them, non-negative, sum 1.
    weights = splat.sum(0)
    torch.testing.assert_close(weights, torch.ones(300))
    assert (splat >= -1e-6).all() and ((splat > 0).sum(0) <= 5).all()


def test_packed_and_row_keys_give_the_same_lattice(monkeypatch):
    """Keys that do not fit PACK_BITS (16-bit colour over a small std) take the slower
    row-wise path: the same vertices, the same filter."""
    features = _cloud(800, 5, 6.0)
    values = torch.rand(800, 2, generator=torch.Generator().manual_seed(4))
    packed = PermutohedralLattice(features)
    monkeypatch.setattr(permutohedral, "PACK_BITS", 0)
    rows = PermutohedralLattice(features)
    assert rows.num_vertices == packed.num_vertices
    torch.testing.assert_close(rows(values), packed(values))
    torch.testing.assert_close(rows.self_weight, packed.self_weight)


def test_wide_ranges_take_the_row_path_and_filter_the_same(monkeypatch):
    """Coordinates spread over ~20000 (16-bit intensities over theta_b = 3) do not pack into
    PACK_BITS: the vertices are deduplicated as rows. Two clusters that far apart do not
    interact, and the lattice's vertices are absolute: each cluster filters exactly as it
    does alone (where its keys pack)."""
    near = _cloud(400, 5, 4.0, seed=6)
    far = _cloud(300, 5, 4.0, seed=7) + torch.tensor([0.0, 0.0, 21000.0, 9000.0, 15000.0])
    gen = torch.Generator().manual_seed(8)
    values = torch.rand(700, 2, generator=gen)
    calls = []
    find_rows = permutohedral._find_rows
    monkeypatch.setattr(permutohedral, "_find_rows", lambda *a: calls.append(1) or find_rows(*a))
    both = PermutohedralLattice(torch.cat([near, far]))(values)
    assert calls  # the row path
    calls.clear()
    torch.testing.assert_close(both[:400], PermutohedralLattice(near)(values[:400]))
    torch.testing.assert_close(both[400:], PermutohedralLattice(far)(values[400:]))
    assert not calls  # each cluster alone packs


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"float features of shape \(N, d\)"):
        PermutohedralLattice(torch.zeros(10, 2, dtype=torch.long))
    lattice = PermutohedralLattice(_cloud(10, 2, 1.0))
    with pytest.raises(ValueError, match=r"values of shape \(10, K\)"):
        lattice(torch.zeros(9, 2))

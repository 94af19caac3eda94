"""Gaussian filtering in d dimensions with the permutohedral lattice (Adams, Baek & Davis,
"Fast High-Dimensional Filtering Using the Permutohedral Lattice", Eurographics 2010,
https://doi.org/10.1111/j.1467-8659.2009.01645.x) in vectorised PyTorch: the filter that
Krähenbühl & Koltun's dense CRF code uses for its kernels.

Shape shorthand: N points, d feature dimensions, K value channels, M lattice vertices.

``PermutohedralLattice(features)`` embeds the N points of ``features`` (N, d) once: each point
lies in one simplex of the lattice and has d + 1 barycentric weights on its vertices.
``lattice(values)`` then filters values (N, K) in time O((N + M) (d + 1) K):

    splat:  each point's values onto its simplex's vertices, times its barycentric weights;
    blur:   along each of the d + 1 lattice directions with the kernel [1/2, 1, 1/2];
    slice:  back at each point, with the same weights;

which approximates ``out_i = sum_j exp(-|f_i - f_j|^2 / 2) values_j`` (j = i included). The
approximation: the resampling (splat, slice) widens the kernel a little, and only vertices
that some point splats onto exist, so what the blur sends to any other vertex is lost (most
where the points are sparse at the kernel's scale). Splat and slice are sparse (CSR) matrix
products, the blur gathers neighbour rows that are looked up once: the lattice is built once
per set of features and filters any number of value sets (a CRF's mean-field iterations).

Scale. The features are scaled by sqrt(2/3) (d + 1) (Adams et al. Sec. 4, as Krähenbühl's
code) and the output by ``lattice_gain(d)``, which makes the filter of a constant signal over
uniformly dense points the Gaussian's sum, (2 pi)^(d/2) per unit density: the filter is an
approximation of the kernel SUM, not of a normalised average. (Krähenbühl's code divides by
the filter of ones, symmetrically by default in its 2013 release, where any gain cancels.)
"""

import math
import warnings

import torch
from torch import Tensor

__all__ = ["PermutohedralLattice", "csr_matrix", "lattice_gain"]

# Vertex keys are packed into one int64 when their coordinates' ranges fit in these bits
# (a sort of N (d + 1) integers); beyond (e.g. 16-bit colour over a small std) the keys are
# deduplicated as rows of d integers, which is slower.
PACK_BITS = 62


def lattice_gain(d: int) -> float:
    """The factor that turns the lattice's filter in R^d into the Gaussian's sum.

    The vertices are the points of Z^(d+1) with sum 0 whose coordinates are congruent mod
    d + 1: one per volume sqrt(d + 1) (d + 1)^(d-1) of that hyperplane, (3/2)^(d/2) /
    sqrt(d + 1) of feature space after the scale sqrt(2/3) (d + 1) (the elevation is an
    isometry). A constant signal at rho points per unit volume puts rho times that volume on
    each vertex; the blur multiplies it by 2 per direction and slicing keeps it. The
    Gaussian sums to (2 pi)^(d/2) rho. Verified numerically in tests/modeling/test_crf.py.
    """
    volume = 1.5 ** (d / 2) / math.sqrt(d + 1)
    return (2 * math.pi) ** (d / 2) / (volume * 2 ** (d + 1))


class PermutohedralLattice:
    """The permutohedral lattice of one set of points (see the module docstring).

    ``self_weight`` (N,) is each point's weight onto itself in the filter, for a dense
    lattice (every vertex within reach exists); with missing vertices the true weight is
    smaller (by 0.05-0.15 of ~0.7 on image features).

    Example::

        features = torch.rand(2000, 2) * 8
        lattice = PermutohedralLattice(features)
        values = torch.rand(2000, 3)
        exact = torch.exp(-0.5 * torch.cdist(features, features) ** 2) @ values
        assert (lattice(values) - exact).norm() < 0.05 * exact.norm()
    """

    def __init__(self, features: Tensor):
        """
        Args:
            features: float tensor of shape (N, d), the points; the filter is the Gaussian
                of unit std in these coordinates (divide by the std first).
        """
        if features.dim() != 2 or features.shape[1] < 1 or not features.is_floating_point():
            raise ValueError(f"expected float features of shape (N, d), got {features.shape}")
        self.num_points, self.dim = features.shape
        self.dtype = features.dtype
        with torch.no_grad():
            rem0, rank, weights = _embed(features.T.contiguous())  # (d + 1, N) each
            vertex, order, self.num_vertices, self.neighbours = _hash(rem0, rank)
            self._build_matrices(vertex, order, weights)
            self.self_weight = _self_weight(weights) * lattice_gain(self.dim)

    def _build_matrices(self, vertex: Tensor, order: Tensor, weights: Tensor):
        """The slice matrix (N, M + 1) and the splat matrix (M + 1, N) in CSR (row M: the
        empty vertex that missing neighbours point to); the gain goes into the slice."""
        n, d1, m = self.num_points, self.dim + 1, self.num_vertices
        device = weights.device
        flat_weights = weights.T.reshape(-1)  # point-major, like vertex
        pointers = torch.arange(0, n * d1 + 1, d1, device=device)
        slice_values = flat_weights * lattice_gain(self.dim)
        self.slice_matrix = csr_matrix(pointers, vertex, slice_values, (n, m + 1))
        counts = torch.bincount(vertex, minlength=m + 1)
        pointers = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        self.splat_matrix = csr_matrix(pointers, order // d1, flat_weights[order], (m + 1, n))

    def __call__(self, values: Tensor) -> Tensor:
        """Filter ``values`` of shape (N, K); returns (N, K) in the lattice's dtype."""
        if values.dim() != 2 or values.shape[0] != self.num_points:
            raise ValueError(f"expected values of shape ({self.num_points}, K), got {values.shape}")
        values = values.to(self.dtype).contiguous()
        return self.slice_matrix @ self.blur(self.splat_matrix @ values)

    def blur(self, lattice: Tensor) -> Tensor:
        """[1/2, 1, 1/2] along each lattice direction, on (M + 1, K) (row M stays 0)."""
        m = self.num_vertices
        other, gathered = torch.empty_like(lattice), lattice.new_empty(m, lattice.shape[1])
        other[m:] = 0
        for forward, backward in self.neighbours:
            torch.index_select(lattice, 0, forward, out=other[:m])
            torch.index_select(lattice, 0, backward, out=gathered)
            gathered.add_(other[:m])
            torch.add(lattice[:m], gathered, alpha=0.5, out=other[:m])
            lattice, other = other, lattice
        return lattice


def csr_matrix(pointers: Tensor, columns: Tensor, values: Tensor, size) -> Tensor:
    """torch.sparse_csr_tensor with int32 indices where they fit (half the memory, 5-20%
    faster products on the CPU), without its invariant checks (the callers build valid
    indices) and without its warning that CSR support is in beta (tests/modeling/test_crf.py
    checks the products used here against dense ones)."""
    if max(*size, len(columns)) < 2**31:
        pointers, columns = pointers.int(), columns.int()
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(pointers, columns, values, size=size, check_invariants=False)


def _embed(features: Tensor):
    """For features (d, N): the remainder-0 vertex of each point's simplex (d + 1, N, int64),
    the rank of each of its coordinates (d + 1, N) and the barycentric weights (d + 1, N)
    (Adams et al. Sec. 3-4; the order of operations and the ties as Krähenbühl's code)."""
    d, n = features.shape
    i = torch.arange(1, d + 1, device=features.device, dtype=features.dtype)[:, None]
    scaled = features * (math.sqrt(2.0 / 3.0) * (d + 1) / torch.sqrt(i * (i + 1)))
    # Elevate onto the hyperplane sum = 0 of R^(d+1): x_j = sum_{k >= j} s_k - j s_(j-1).
    elevated = torch.cat([scaled.flip(0).cumsum(0).flip(0), scaled.new_zeros(1, n)])
    elevated[1:] -= i * scaled
    # The nearest point with coordinates that are multiples of d + 1, and the ranks of the
    # differences (rank 0 = the largest; ties by index, as Krähenbühl's code).
    down = torch.round(elevated / (d + 1))
    diff = elevated - down * (d + 1)
    order = torch.argsort(diff, dim=0, descending=True, stable=True)
    positions = torch.arange(d + 1, device=diff.device)[:, None].expand(d + 1, n)
    rank = torch.empty_like(order).scatter_(0, order, positions)
    rank += down.sum(0).long()
    # The coordinates sum to down.sum() * (d + 1) != 0: move back onto the plane.
    low, high = rank < 0, rank > d
    shift = low.long() - high.long()
    rank += (d + 1) * shift
    rem0 = (down.long() + shift) * (d + 1)
    # Barycentric weights (Adams et al. Sec. 4.1): differences of the sorted coordinates.
    v = (elevated - rem0.to(elevated.dtype)) / (d + 1)
    bary = elevated.new_zeros(d + 2, n)
    bary.scatter_add_(0, d - rank, v)
    bary.scatter_add_(0, d + 1 - rank, -v)
    bary[0] += 1 + bary[d + 1]
    return rem0, rank, bary[: d + 1]


def _hash(rem0: Tensor, rank: Tensor):
    """The lattice's vertices: the vertex index of each (point, remainder) pair (N (d + 1),
    point-major), their order by vertex (N (d + 1)), the number M of vertices, and per
    direction the indices (M = absent) of each vertex's neighbours forward and backward
    (d + 1, 2, M).

    Vertex r of a point's simplex is rem0 + r in the coordinates of rank <= d - r and
    rem0 + r - (d + 1) in the others; its first d coordinates determine it (sum 0)."""
    d = rem0.shape[0] - 1
    r = torch.arange(d + 1, device=rem0.device)[:, None, None]  # (d + 1, 1, 1)
    # Coordinates lie within 2d of rem0's range: d to a vertex, d more to its neighbour.
    low = rem0[:d].amin(1) - 2 * d
    span = rem0[:d].amax(1) + 2 * d - low + 1
    # Neighbour of a vertex along direction j: +d in coordinate j and -1 in all others
    # (j = d: -1 in all d stored ones).
    steps = torch.full((d + 1, d), -1, dtype=torch.long, device=rem0.device)
    steps[torch.arange(d), torch.arange(d)] = d
    if torch.log2(span.double()).sum().item() <= PACK_BITS:
        radix = torch.cumprod(torch.cat([span.new_ones(1), span[:-1]]), 0)
        # Packing is linear: key(rem0 + offset) = key(rem0) + offset . radix.
        base = ((rem0[:d] - low[:, None]) * radix[:, None]).sum(0)  # (N,)
        keys = base + r[:, 0] * radix.sum()  # (d + 1, N)
        for coordinate in range(d):
            wraps = rank[coordinate] > d - r[:, 0]  # (d + 1, N)
            keys -= wraps * ((d + 1) * radix[coordinate])
        keys = keys.T.reshape(-1)
        sorted_keys, order = torch.sort(keys)
        unique, vertex_sorted = _runs(sorted_keys)
        forward = torch.stack([_find(unique, unique + (step * radix).sum()) for step in steps])
    else:
        coords = rem0[None, :d] + torch.where(rank[None, :d] <= d - r, r, r - (d + 1))
        rows = coords.permute(2, 0, 1).reshape(-1, d)  # point-major
        unique, vertex = torch.unique(rows, dim=0, return_inverse=True)
        order = torch.argsort(vertex, stable=True)
        vertex_sorted = vertex[order]
        forward = torch.stack([_find_rows(unique, unique + step) for step in steps])
    m = len(unique)
    vertex = torch.empty_like(vertex_sorted)
    vertex[order] = vertex_sorted
    # Backward neighbours mirror the forward ones: b = forward(a) iff a = backward(b).
    backward = torch.full_like(forward, m)
    source = torch.arange(m, device=rem0.device).expand_as(forward)
    found = forward < m
    backward[found.nonzero(as_tuple=True)[0], forward[found]] = source[found]
    return vertex, order, m, torch.stack([forward, backward], 1)


def _runs(sorted_keys: Tensor):
    """The distinct values of a sorted 1-D tensor and each element's index among them."""
    new = torch.ones_like(sorted_keys, dtype=torch.bool)
    new[1:] = sorted_keys[1:] != sorted_keys[:-1]
    return sorted_keys[new], new.cumsum(0) - 1


def _find(sorted_keys: Tensor, queries: Tensor) -> Tensor:
    """The index of each query in ``sorted_keys`` (distinct), len(sorted_keys) if absent."""
    index = torch.searchsorted(sorted_keys, queries).clamp_(max=len(sorted_keys) - 1)
    return torch.where(sorted_keys[index] == queries, index, len(sorted_keys))


def _find_rows(sorted_rows: Tensor, queries: Tensor) -> Tensor:
    """The index of each query row among the distinct ``sorted_rows``, len(rows) if absent."""
    m = len(sorted_rows)
    unique, inverse = torch.unique(torch.cat([sorted_rows, queries]), dim=0, return_inverse=True)
    position = torch.full((len(unique),), m, dtype=torch.long, device=queries.device)
    position[inverse[:m]] = torch.arange(m, device=queries.device)
    return position[inverse[m:]]


def _self_weight(weights: Tensor) -> Tensor:
    """Each point's weight onto itself through splat, blur, slice in a dense lattice,
    before the gain: sum_ab w_a w_b c(|a - b|). Vertices a and b of a simplex are |a - b|
    lattice steps apart: the blur reaches one from the other on two paths (one step along
    |a - b| directions, or back along the other d + 1 - |a - b|), weight 2^-|a-b| +
    2^-(d+1-|a-b|); a vertex reaches itself by staying (1) or by a step along all d + 1
    directions, either way (2 * 2^-(d+1))."""
    d = weights.shape[0] - 1
    steps = torch.arange(d + 1, device=weights.device)
    apart = (steps[:, None] - steps[None]).abs()
    paths = (0.5**apart + 0.5 ** (d + 1 - apart)).to(weights.dtype)
    paths.fill_diagonal_(1 + 2.0**-d)
    return torch.einsum("an,ab,bn->n", weights, paths, weights)

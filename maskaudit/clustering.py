"""Group samples by their feature vectors and flag the ones that fit no group.

Shape key: ``N`` samples, ``F`` features, ``d`` PCA dimensions kept.

Pipeline of :func:`cluster_features` (all deterministic given ``seed``):

1. Non-finite values are replaced (NaN by the column median, +/-inf by the column's
   finite maximum / minimum) and constant columns are dropped.
2. Columns are standardised and projected by PCA onto the fewest components (at most
   20, at least 2 when available) that keep 90% of the variance (PCA fitted on a
   seeded subsample of 20,000 rows above that). Steps 1 and 2 read the features in
   chunks of rows: no N x F copy is made, and memory-mapped features stay on disk.
3. K-Means with ``k`` in ``2..max_k`` chosen by the silhouette score (computed on a
   seeded subsample of at most 2,000 points). Above 5,000 samples, ``k`` and the centres
   come from a seeded subsample of 5,000 and every point goes to its nearest centre.
4. Each sample's distance ``d`` to its own centroid is turned into a robust z-score
   within its cluster, ``(t - median(t)) / (1.4826 * MAD(t))`` of ``t = d**(2/3)``
   (Wilson-Hilferty: makes the right-skewed chi-like distances of a Gaussian cluster
   nearly normal, so the cut-off means the same in 2 or 20 dimensions); z > 3.5 is far
   (the Iglewicz-Hoaglin cut-off for modified z-scores). Clusters of fewer than 10 members use the pooled
   distances of all large clusters as reference. Members of small clusters (fewer than
   ``max(3, 2% of N)`` members and at most 10% of N, when some cluster is not small)
   are scored against the nearest large cluster instead, and flagged.
5. DBSCAN on the first (at most 10) PCA dimensions, ``min_samples = max(4, 2 * dims)``
   capped at ``N // 4`` (at least 2). ``eps`` is the knee of the sorted k-distance curve
   (Kneedle: the point farthest below the chord), never below its 98th percentile: on
   clean Gaussian clusters about 1% of the points are then noise, while isolated far
   points, which dominate the top of the curve, stay noise. Above 5,000 samples DBSCAN
   runs on a seeded subsample of 5,000 and every other point is noise when its
   nearest core point is farther than ``eps``.
6. ``outlier = dbscan_noise | small cluster | z > 3.5``.

``outlier_score = r**2 / (1 + r**2)`` with ``r = max(z / 3.5, d_core / eps)``
(``d_core`` is the distance to the nearest DBSCAN core point, 0 for core points) is
monotone in both signals and crosses 0.5 exactly at the flagging thresholds; flagged
samples score at least 0.5, the others at most 0.5.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .pages import release_pages

__all__ = ["ClusterResult", "cluster_features"]

# PCA: at most this many components, and the fewest that keep this share of variance.
PCA_MAX_COMPONENTS = 20
PCA_VARIANCE = 0.90
# Robust z-score above which a sample is far from its centroid (Iglewicz & Hoaglin).
Z_THRESHOLD = 3.5
# Median and MAD of fewer distances than this are too unstable: such clusters are
# measured against the pooled distances of all large clusters instead.
Z_MIN_MEMBERS = 10
# A cluster is small below max(SMALL_CLUSTER_MIN, SMALL_CLUSTER_FRACTION * N) members,
# but a cluster holding more than SMALL_CLUSTER_MAX_SHARE of N is never small (with
# N = 6, two points are a third of the data, not an unusual group).
SMALL_CLUSTER_FRACTION = 0.02
SMALL_CLUSTER_MIN = 3
SMALL_CLUSTER_MAX_SHARE = 0.1
# Silhouette is O(n^2): computed on a seeded subsample of at most this many points.
SILHOUETTE_SAMPLE = 2000
# PCA is fitted on a seeded subsample of at most this many rows (then applied to all).
PCA_FIT_SAMPLE = 20_000
# k is selected, and the centres found, on a seeded subsample of at most this many
# points; the other points are assigned to the nearest centre.
KMEANS_SAMPLE = 5_000
KMEANS_N_INIT = 3
KMEANS_MAX_ITER = 100
# Whole-matrix checks run over this many rows at a time (no N x F temporary).
CHUNK_ROWS = 20_000
# DBSCAN runs on at most this many points and this many leading PCA dimensions.
DBSCAN_SAMPLE = 5_000
DBSCAN_MAX_DIMS = 10
# eps is never below this quantile of the k-distances (bounds the non-core share).
EPS_MIN_QUANTILE = 0.98
# eps when the k-distance knee is 0 (mostly duplicated rows), relative to the data scale.
EPS_FLOOR = 1e-6
# Below this many samples, clustering is meaningless: one cluster, no outliers.
MIN_SAMPLES_TO_CLUSTER = 4


@dataclass
class ClusterResult:
    """Clusters, outlier flags and a 2-D map of N samples.

    Attributes
    ----------
    labels : ndarray of int64, shape (N,)
        K-Means cluster of each sample, ``0..k-1``.
    outlier : ndarray of bool, shape (N,)
        DBSCAN noise, or member of a small cluster, or far from its centroid.
    outlier_score : ndarray of float64, shape (N,)
        In [0, 1], higher is more outlying; >= 0.5 for flagged samples, <= 0.5 otherwise.
    coords : ndarray of float64, shape (N, 2)
        First two PCA components (zeros where unavailable), for the report's map.
    k : int
        Number of K-Means clusters (1 when too few samples or no varying feature).
    dbscan_eps : float
        DBSCAN radius in PCA space (NaN when DBSCAN was not run).
    dbscan_noise : ndarray of bool, shape (N,)
        DBSCAN noise points.
    kmeans_distance : ndarray of float64, shape (N,)
        Euclidean distance to the own K-Means centroid in PCA space.
    kmeans_z : ndarray of float64, shape (N,)
        Robust z-score of ``kmeans_distance ** (2/3)`` within the cluster (against the nearest large cluster for members
        of small clusters); 0 when undefined.
    small_cluster : ndarray of bool, shape (N,)
        Member of a small cluster.
    silhouette : float
        Silhouette score of the chosen ``k`` (NaN when not computed).
    """

    labels: np.ndarray
    outlier: np.ndarray
    outlier_score: np.ndarray
    coords: np.ndarray
    k: int
    dbscan_eps: float
    dbscan_noise: np.ndarray
    kmeans_distance: np.ndarray
    kmeans_z: np.ndarray
    small_cluster: np.ndarray
    silhouette: float


def cluster_features(features: np.ndarray, *, seed: int = 0, max_k: int = 8) -> ClusterResult:
    """Cluster samples with K-Means and flag outliers with K-Means distances and DBSCAN.

    See the module docstring for every step and threshold.

    Parameters
    ----------
    features : array-like of float, shape (N, F), or a sequence of (N, F_i) blocks
        One feature vector per sample (blocks are taken side by side, without a concatenated copy).
        NaN and +/-inf are allowed (replaced per column).
    seed : int, default 0
        Seed of every random choice (K-Means initialisation, subsamples, PCA solver).
    max_k : int, default 8
        Largest number of K-Means clusters tried (at least 2).

    Returns
    -------
    ClusterResult
        With fewer than 4 samples, or no varying feature, every sample is in cluster 0,
        nothing is an outlier and every score is 0.

    Raises
    ------
    ValueError
        If ``features`` is not a numeric (N, F) array, or ``max_k < 2``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.normal(0, 1, (50, 5)), rng.normal(8, 1, (50, 5)), [[30.0] * 5]])
    >>> result = cluster_features(x, seed=0)
    >>> np.bincount(result.labels)  # two groups, and the far point on its own
    array([50, 50,  1])
    >>> np.flatnonzero(result.outlier), int(np.argmax(result.outlier_score))
    (array([100]), 100)
    """
    blocks = _check_features(features)
    if isinstance(max_k, bool) or not isinstance(max_k, (int, np.integer)) or max_k < 2:
        raise ValueError(f"max_k must be an integer >= 2, got {max_k!r}")
    n = len(blocks[0])
    z, coords = _project(blocks, seed=seed)
    if n < MIN_SAMPLES_TO_CLUSTER or z.shape[1] == 0:
        return _trivial(n, coords)

    labels, centroids, k, silhouette = _kmeans(z, seed=seed, max_k=max_k)
    distance = np.linalg.norm(z - centroids[labels], axis=1)
    sizes = np.bincount(labels, minlength=k)
    small = (sizes < max(SMALL_CLUSTER_MIN, SMALL_CLUSTER_FRACTION * n)) & (
        sizes <= SMALL_CLUSTER_MAX_SHARE * n
    )
    if small.all():
        small[:] = False  # no group is "normal", so no group is unusual either
    kmeans_z = _robust_z(z, labels, centroids, distance, small)
    in_small = small[labels]

    eps, d_core = _dbscan(z[:, :DBSCAN_MAX_DIMS], seed=seed)
    noise = d_core > eps

    ratio = np.maximum(np.maximum(kmeans_z, 0.0) / Z_THRESHOLD, d_core / eps)
    score = ratio**2 / (1.0 + ratio**2)
    outlier = noise | in_small | (kmeans_z > Z_THRESHOLD)
    score[outlier] = np.maximum(score[outlier], 0.5)
    return ClusterResult(
        labels=labels.astype(np.int64),
        outlier=outlier,
        outlier_score=score,
        coords=coords,
        k=int(k),
        dbscan_eps=float(eps),
        dbscan_noise=noise,
        kmeans_distance=distance,
        kmeans_z=kmeans_z,
        small_cluster=in_small,
        silhouette=float(silhouette),
    )


# --------------------------------------------------------------------------- steps


def _check_features(features) -> list[np.ndarray]:
    """The (N, F_i) blocks of ``features``, an (N, F) array or a sequence of blocks side by side (not copied)."""
    is_blocks = isinstance(features, (list, tuple)) and len(features) > 0 and all(
        isinstance(block, np.ndarray) and block.ndim == 2 for block in features)
    blocks = list(features) if is_blocks else [np.asarray(features)]
    for x in blocks:
        if x.ndim != 2:
            raise ValueError(f"features must have shape (N, F), got an array of shape {x.shape}")
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            raise ValueError(f"features must be a numeric (N, F) array, got dtype {x.dtype}")
        if np.iscomplexobj(x):
            raise ValueError("features must be a real-valued (N, F) array, got complex values")
    if len({len(x) for x in blocks}) > 1:
        raise ValueError(f"feature blocks must have the same rows, got {[len(x) for x in blocks]}")
    return blocks


def _raw_rows(blocks: list[np.ndarray], rows) -> np.ndarray:
    """A float32 copy of ``rows`` (a slice or sorted indices) of the blocks side by side, (r, F).
    Memory-mapped blocks give their pages back after each read (maskaudit.pages); sorted indices are
    read CHUNK_ROWS positions at a time, since a sample scattered over the whole file would map
    nearly all of its pages at once."""
    if isinstance(rows, slice):
        return _read_rows(blocks, rows)
    rows = np.asarray(rows)
    bounds = np.searchsorted(rows, [chunk.start for chunk in _chunks(len(blocks[0]))] + [len(blocks[0])])
    parts = [_read_rows(blocks, rows[low:high]) for low, high in zip(bounds[:-1], bounds[1:])]
    return np.concatenate(parts) if parts else _read_rows(blocks, rows)


def _read_rows(blocks: list[np.ndarray], rows) -> np.ndarray:
    """:func:`_raw_rows` of one read, then the blocks' pages released."""
    x = np.concatenate([np.asarray(block[rows], dtype=np.float32) for block in blocks], axis=1)
    release_pages(*blocks)
    return x


def _chunks(n: int):
    return (slice(start, min(start + CHUNK_ROWS, n)) for start in range(0, n, CHUNK_ROWS))


@dataclass(frozen=True)
class _Standardiser:
    """Raw feature rows to the rows PCA reads, fitted over all N rows without holding them: NaN, +inf
    and -inf replaced per column (by the median, maximum and minimum of its finite values; 0 in a
    column without any), constant columns dropped, the others centred and scaled to unit variance."""

    nan_fill: np.ndarray     # (F,) float32
    posinf_fill: np.ndarray  # (F,) float32
    neginf_fill: np.ndarray  # (F,) float32
    kept: np.ndarray         # (F',) int, the columns that vary
    mean: np.ndarray         # (F',) float32
    std: np.ndarray          # (F',) float32, > 0

    @classmethod
    def fit(cls, blocks: list[np.ndarray]) -> "_Standardiser":
        n, f = len(blocks[0]), sum(block.shape[1] for block in blocks)
        fills = [np.zeros(f, np.float32) for _ in range(3)]
        finite_columns = np.ones(f, dtype=bool)
        for rows in _chunks(n):
            finite_columns &= np.isfinite(_raw_rows(blocks, rows)).all(axis=0)
        for j in np.flatnonzero(~finite_columns):  # one column at a time: N values
            column = _column(blocks, j)
            good = column[np.isfinite(column)]
            if len(good):
                fills[0][j], fills[1][j], fills[2][j] = np.median(good), good.max(), good.min()
        low, high = np.full(f, np.inf, np.float32), np.full(f, -np.inf, np.float32)
        total = np.zeros(f, np.float64)
        for rows in _chunks(n):
            x = _replace_non_finite(_raw_rows(blocks, rows), *fills)
            low, high = np.minimum(low, x.min(axis=0, initial=np.inf)), np.maximum(high, x.max(axis=0, initial=-np.inf))
            total += x.sum(axis=0, dtype=np.float64)
        kept = np.flatnonzero(high > low)
        mean = (total[kept] / max(n, 1)).astype(np.float32)
        squares = np.zeros(len(kept), np.float64)
        for rows in _chunks(n):
            x = _replace_non_finite(_raw_rows(blocks, rows), *fills)[:, kept] - mean
            squares += np.einsum("ij,ij->j", x, x, dtype=np.float64)
        std = np.sqrt(squares / max(n, 1)).astype(np.float32)
        std[std == 0] = 1.0
        return cls(*fills, kept=kept, mean=mean, std=std)

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """(r, F) raw rows to (r, F') standardised float32 rows (``raw`` is overwritten)."""
        x = _replace_non_finite(raw, self.nan_fill, self.posinf_fill, self.neginf_fill)[:, self.kept]
        x -= self.mean
        x /= self.std
        return x


def _column(blocks: list[np.ndarray], j: int) -> np.ndarray:
    """(N,) float32 copy of column ``j`` of the blocks side by side."""
    for block in blocks:
        if j < block.shape[1]:
            column = np.asarray(block[:, j], dtype=np.float32)
            release_pages(block)
            return column
        j -= block.shape[1]
    raise IndexError(j)


def _replace_non_finite(x: np.ndarray, nan_fill, posinf_fill, neginf_fill) -> np.ndarray:
    """``x`` (r, F) with NaN, +inf and -inf replaced by each column's fill, in place."""
    finite_columns = np.isfinite(x).all(axis=0)
    if not finite_columns.all():
        for j in np.flatnonzero(~finite_columns):
            column = x[:, j]
            column[np.isnan(column)] = nan_fill[j]
            column[column == np.inf] = posinf_fill[j]
            column[column == -np.inf] = neginf_fill[j]
    return x


def _project(blocks: list[np.ndarray], *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Standardise and PCA-project, reading the rows in chunks (never an N x F copy); return
    (scores (N, d), coords (N, 2))."""
    from sklearn.decomposition import PCA

    n = len(blocks[0])
    coords = np.zeros((n, 2), dtype=np.float64)
    if n < 2:
        return np.zeros((n, 0)), coords
    standardiser = _Standardiser.fit(blocks)
    f = len(standardiser.kept)
    if f == 0:
        return np.zeros((n, 0)), coords
    n_components = min(PCA_MAX_COMPONENTS, n - 1, f)
    pca = PCA(n_components=n_components, random_state=seed)
    fit_rows = _subsample(n, PCA_FIT_SAMPLE, np.random.default_rng([seed, 2]))
    pca.fit(standardiser.apply(_raw_rows(blocks, fit_rows)))
    kept = np.cumsum(pca.explained_variance_ratio_)
    d = int(np.searchsorted(kept, PCA_VARIANCE - 1e-9) + 1)
    d = min(max(d, 2), n_components)
    # only the d components kept, filled a chunk at a time: at 200,000 slices every component, listed
    # and then concatenated, was a short peak of 70 MB
    scores = np.empty((n, d), dtype=np.float64)
    for start in range(0, n, PCA_FIT_SAMPLE):
        rows = slice(start, min(start + PCA_FIT_SAMPLE, n))
        scores[rows] = pca.transform(standardiser.apply(_raw_rows(blocks, rows)))[:, :d]
    coords[:, : min(2, n_components)] = scores[:, :2]
    return scores, coords


def _trivial(n: int, coords: np.ndarray) -> ClusterResult:
    return ClusterResult(
        labels=np.zeros(n, dtype=np.int64),
        outlier=np.zeros(n, dtype=bool),
        outlier_score=np.zeros(n, dtype=np.float64),
        coords=coords,
        k=1,
        dbscan_eps=float("nan"),
        dbscan_noise=np.zeros(n, dtype=bool),
        kmeans_distance=np.zeros(n, dtype=np.float64),
        kmeans_z=np.zeros(n, dtype=np.float64),
        small_cluster=np.zeros(n, dtype=bool),
        silhouette=float("nan"),
    )


def _subsample(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    if n <= size:
        return np.arange(n)
    return np.sort(rng.choice(n, size=size, replace=False))


def _kmeans(
    z: np.ndarray, *, seed: int, max_k: int
) -> tuple[np.ndarray, np.ndarray, int, float]:
    """K-Means with k chosen by silhouette; return labels, centroids (k, d), k, silhouette."""
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import silhouette_score
    from threadpoolctl import threadpool_limits

    n = z.shape[0]
    rng = np.random.default_rng(seed)
    select = z[_subsample(n, KMEANS_SAMPLE, rng)]
    m = select.shape[0]
    # The silhouette subsample is drawn once, so every k is judged on the same points.
    sil_idx = _subsample(m, SILHOUETTE_SAMPLE, rng)
    best_score, best_k, best_centers = -np.inf, 1, None
    # One OpenMP thread: on at most KMEANS_SAMPLE points threads cost more than they save
    # (10x slower on a busy 2-core machine), and results cannot depend on the core count.
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="openmp"):
        # Fewer distinct points than k: sklearn warns, and that k is skipped below.
        warnings.simplefilter("ignore", ConvergenceWarning)
        for k in range(2, min(max_k, m - 1) + 1):
            model = KMeans(
                n_clusters=k,
                n_init=KMEANS_N_INIT,
                max_iter=KMEANS_MAX_ITER,
                random_state=seed,
            ).fit(select)
            sil_labels = model.labels_[sil_idx]
            if not 2 <= np.unique(sil_labels).size <= sil_idx.size - 1:
                continue
            score = float(silhouette_score(select[sil_idx], sil_labels))
            if score > best_score:
                best_score, best_k, best_centers = score, k, model.cluster_centers_
        if best_centers is None:  # (nearly) identical points: one cluster
            return np.zeros(n, dtype=np.int64), z.mean(axis=0, keepdims=True), 1, np.nan
    k, centers = best_k, best_centers
    labels = _assign(z, centers)
    silhouette = best_score
    # Renumber clusters by decreasing size (ties by old index) for a stable report.
    sizes = np.bincount(labels, minlength=k)
    order = np.lexsort((np.arange(k), -sizes))
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    return rank[labels], centers[order], k, silhouette


def _assign(z: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Nearest centre of every row (chunked, to bound memory)."""
    labels = np.empty(z.shape[0], dtype=np.int64)
    c2 = (centers**2).sum(axis=1)
    for start in range(0, z.shape[0], 65536):
        block = z[start : start + 65536]
        d2 = c2[None, :] - 2.0 * block @ centers.T
        labels[start : start + block.shape[0]] = np.argmin(d2, axis=1)
    return labels


def _mad_z(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Robust z of ``values`` against the median / MAD of ``reference`` (0 if degenerate)."""
    med = np.median(reference)
    scale = 1.4826 * np.median(np.abs(reference - med))
    if scale <= 0:
        # More than half of the reference is identical: fall back to the mean deviation.
        scale = 1.2533 * np.mean(np.abs(reference - med))
    if scale <= 0:
        return np.zeros_like(values)
    return (values - med) / scale


def _robust_z(
    z: np.ndarray,
    labels: np.ndarray,
    centroids: np.ndarray,
    distance: np.ndarray,
    small: np.ndarray,
) -> np.ndarray:
    """Per-cluster robust z of the centroid distance; small clusters vs the nearest large one."""
    out = np.zeros(z.shape[0], dtype=np.float64)
    large = np.flatnonzero(~small)
    t = distance ** (2.0 / 3.0)
    pooled = t[~small[labels]]

    def reference(c: int) -> np.ndarray:
        own = t[labels == c]
        return own if own.size >= Z_MIN_MEMBERS else pooled

    for c in range(centroids.shape[0]):
        members = np.flatnonzero(labels == c)
        if members.size == 0:
            continue
        if not small[c]:
            out[members] = _mad_z(t[members], reference(c))
            continue
        # Distance of each member to every large centroid; use the nearest one's spread.
        to_large = np.linalg.norm(z[members, None, :] - centroids[None, large, :], axis=2)
        nearest = large[np.argmin(to_large, axis=1)]
        for c_ref in np.unique(nearest):
            who = members[nearest == c_ref]
            d_ref = np.linalg.norm(z[who] - centroids[c_ref], axis=1)
            out[who] = _mad_z(d_ref ** (2.0 / 3.0), reference(c_ref))
    return out


def _dbscan(z: np.ndarray, *, seed: int) -> tuple[float, np.ndarray]:
    """DBSCAN with eps at the k-distance knee; return (eps, distance to nearest core point).

    Core points have distance 0; a point is noise iff its distance exceeds ``eps``.
    """
    from sklearn.neighbors import NearestNeighbors

    n, dims = z.shape
    rng = np.random.default_rng([seed, 1])  # independent of the K-Means subsample
    fit_idx = _subsample(n, DBSCAN_SAMPLE, rng)
    fit = z[fit_idx]
    m = fit.shape[0]
    min_samples = min(max(4, 2 * dims), max(2, m // 4))
    # k-d trees beat brute force only in a few dimensions.
    algorithm = "kd_tree" if dims <= 5 else "brute"
    nn = NearestNeighbors(n_neighbors=min_samples, algorithm=algorithm).fit(fit)
    # Neighbours of each fitted point, itself included (as DBSCAN counts them).
    kdist = nn.kneighbors(fit, return_distance=True)[0][:, -1]
    eps = _knee(np.sort(kdist))
    eps = max(eps, float(np.quantile(kdist, EPS_MIN_QUANTILE)))
    if eps <= 0:
        # Mostly exact duplicates: only copies count as near. A floor far below the data's
        # scale (standardised, so about 1) keeps d_core / eps finite.
        eps = EPS_FLOOR * max(float(np.sqrt(np.mean(fit**2) * dims)), 1.0)
    core = fit[kdist <= eps]
    d_core = NearestNeighbors(n_neighbors=1, algorithm=algorithm).fit(core).kneighbors(z)[0][:, 0]
    return eps, d_core


def _knee(sorted_values: np.ndarray) -> float:
    """Kneedle knee of an increasing curve: the value farthest below its chord."""
    m = sorted_values.size
    if m < 3:
        return float(sorted_values[-1])
    lo, hi = sorted_values[0], sorted_values[-1]
    if hi <= lo:
        return float(hi)
    x = np.linspace(0.0, 1.0, m)
    y = (sorted_values - lo) / (hi - lo)
    return float(sorted_values[int(np.argmax(x - y))])

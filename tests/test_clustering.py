import dataclasses

import numpy as np
import pytest

from maskaudit.clustering import ClusterResult, cluster_features


def blobs_with_outliers(n_per_blob=40, dims=10, seed=0):
    """Three Gaussian blobs in 10-D, then two points far from all of them (last rows)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 6.0, (3, dims))
    x = np.concatenate([rng.normal(c, 1.0, (n_per_blob, dims)) for c in centres])
    far = np.stack([centres[0] + 15.0, centres[1] - 15.0])
    return np.concatenate([x, far])


def assert_consistent(result: ClusterResult, n: int):
    assert result.labels.shape == (n,) and result.labels.dtype == np.int64
    assert result.outlier.shape == (n,) and result.outlier.dtype == bool
    assert result.outlier_score.shape == (n,)
    assert result.coords.shape == (n, 2)
    assert result.dbscan_noise.shape == (n,) and result.kmeans_distance.shape == (n,)
    assert ((result.outlier_score >= 0) & (result.outlier_score <= 1)).all()
    assert np.isfinite(result.coords).all() and np.isfinite(result.kmeans_z).all()
    assert (result.outlier_score[result.outlier] >= 0.5).all()
    assert (result.outlier_score[~result.outlier] <= 0.5).all()
    assert set(np.unique(result.labels)) <= set(range(result.k))
    # Outliers are exactly the union of the three documented reasons.
    np.testing.assert_array_equal(
        result.outlier, result.dbscan_noise | result.small_cluster | (result.kmeans_z > 3.5)
    )


def test_planted_outliers_are_flagged_and_ranked_first():
    x = blobs_with_outliers()
    n = x.shape[0]
    result = cluster_features(x, seed=0)
    assert_consistent(result, n)
    assert result.outlier[-2:].all()
    assert set(np.argsort(-result.outlier_score)[:2]) == {n - 2, n - 1}
    assert result.outlier[:-2].mean() <= 0.05  # few false alarms among the blobs
    # The three blobs are recovered: each blob lies in one cluster.
    for b in range(3):
        assert np.unique(result.labels[b * 40 : (b + 1) * 40]).size == 1
    assert 0 < result.silhouette <= 1 and result.dbscan_eps > 0


def test_clean_blobs_have_few_outliers():
    x = blobs_with_outliers(n_per_blob=100)[:-2]
    result = cluster_features(x, seed=0)
    assert result.k == 3
    assert result.outlier.mean() <= 0.03


def test_deterministic_given_seed():
    x = blobs_with_outliers(seed=3)
    a, b = cluster_features(x, seed=7), cluster_features(x, seed=7)
    for field in dataclasses.fields(ClusterResult):
        np.testing.assert_array_equal(getattr(a, field.name), getattr(b, field.name))


def test_large_n_subsample_path_is_deterministic_and_finds_outlier():
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [rng.normal(0, 1, (3500, 4)), rng.normal(10, 1, (3500, 4)), [[40.0, -40, 40, -40]]]
    )
    a = cluster_features(x, seed=1)
    b = cluster_features(x, seed=1)
    np.testing.assert_array_equal(a.outlier_score, b.outlier_score)
    assert_consistent(a, x.shape[0])
    assert a.outlier[-1] and int(np.argmax(a.outlier_score)) == x.shape[0] - 1
    assert a.outlier.mean() < 0.03


def test_clusters_numbered_by_decreasing_size():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (20, 3)), rng.normal(9, 1, (60, 3))])
    result = cluster_features(x, seed=0)
    sizes = np.bincount(result.labels)
    assert (np.diff(sizes) <= 0).all()


@pytest.mark.parametrize("n", [0, 1, 2, 3])
def test_fewer_than_four_samples_is_one_cluster_without_outliers(n):
    result = cluster_features(np.arange(n * 3, dtype=float).reshape(n, 3) ** 2, seed=0)
    assert_consistent(result, n)
    assert result.k == 1
    assert not result.labels.any() and not result.outlier.any()
    np.testing.assert_array_equal(result.outlier_score, np.zeros(n))


def test_constant_features_are_one_cluster_without_outliers():
    result = cluster_features(np.full((30, 4), 2.5), seed=0)
    assert_consistent(result, 30)
    assert result.k == 1 and not result.outlier.any()


def test_constant_columns_do_not_change_the_result():
    x = blobs_with_outliers()
    padded = np.column_stack([x[:, :3], np.ones(len(x)), x[:, 3:], np.zeros(len(x))])
    a, b = cluster_features(x, seed=0), cluster_features(padded, seed=0)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.outlier_score, b.outlier_score, rtol=1e-5, atol=1e-7)  # float32 features


def test_non_finite_values_are_handled():
    x = blobs_with_outliers()
    x[5, 2] = np.nan
    x[7] = np.nan  # a whole row
    x[9, 1] = np.inf
    x[11, 4] = -np.inf
    x = np.column_stack([x, np.full(len(x), np.nan)])  # a whole column
    before = x.copy()
    result = cluster_features(x, seed=0)
    assert_consistent(result, x.shape[0])
    assert np.isfinite(result.outlier_score).all()
    assert result.outlier[-2:].all()
    np.testing.assert_array_equal(x, before)  # the caller's array is untouched


def test_feature_blocks_side_by_side_equal_their_concatenation():
    """The scan passes its QAM, bottleneck and shape features as three blocks (no concatenated copy)."""
    x = blobs_with_outliers()
    x[5, 2], x[9, 1] = np.nan, np.inf
    x = np.column_stack([x, np.ones(len(x))])  # a constant column, dropped in place
    blocks = (x[:, :4].astype(np.float32), x[:, 4:8].copy(), x[:, 8:].copy())
    before = [block.copy() for block in blocks]
    a, b = cluster_features(x, seed=0), cluster_features(blocks, seed=0)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.outlier, b.outlier)
    np.testing.assert_allclose(a.outlier_score, b.outlier_score, rtol=1e-5, atol=1e-7)
    for block, original in zip(blocks, before):
        np.testing.assert_array_equal(block, original)  # the caller's blocks are untouched
    with pytest.raises(ValueError, match="same rows"):
        cluster_features((x[:10], x[:11]))


def test_duplicated_rows_and_one_stray_point():
    rng = np.random.default_rng(0)
    x = np.repeat(rng.normal(size=(3, 4)), 20, axis=0)
    x = np.vstack([x, [[9.0, 9.0, 9.0, 9.0]]])
    result = cluster_features(x, seed=0)
    assert_consistent(result, x.shape[0])
    assert np.flatnonzero(result.outlier).tolist() == [60]


def test_single_feature_and_integer_input():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.integers(0, 5, 40), [60]])[:, None]
    result = cluster_features(x, seed=0)
    assert_consistent(result, 41)
    assert result.outlier[-1]
    assert (result.coords[:, 1] == 0).all()  # only one PCA component exists


@pytest.mark.parametrize(
    ("features", "kwargs", "match"),
    [
        (np.zeros(5), {}, r"shape \(N, F\)"),
        (np.zeros((2, 3, 4)), {}, r"shape \(N, F\)"),
        (np.array([["a", "b"]]), {}, r"numeric \(N, F\)"),
        (np.zeros((5, 2)), {"max_k": 1}, r"max_k must be an integer >= 2"),
    ],
)
def test_rejects_bad_input(features, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cluster_features(features, **kwargs)


def test_a_scattered_sample_of_rows_is_read_a_chunk_at_a_time_with_the_same_values(monkeypatch, tmp_path):
    """PCA's fitting sample lies all over a memory-mapped store: it is read CHUNK_ROWS positions at a
    time (so only those pages are resident at once) and gives exactly the rows a direct read gives."""
    import maskaudit.clustering as clustering

    monkeypatch.setattr(clustering, "CHUNK_ROWS", 7)
    rng = np.random.default_rng(0)
    stored = np.lib.format.open_memmap(tmp_path / "features.npy", mode="w+", dtype=np.float32, shape=(50, 3))
    stored[:] = rng.normal(size=(50, 3))
    blocks = [stored, rng.normal(size=(50, 2)).astype(np.float32)]
    rows = np.sort(rng.choice(50, 17, replace=False))
    expected = np.concatenate([stored[rows], blocks[1][rows]], axis=1)
    np.testing.assert_array_equal(clustering._raw_rows(blocks, rows), expected)
    np.testing.assert_array_equal(clustering._raw_rows(blocks, slice(3, 20)), np.concatenate([stored[3:20], blocks[1][3:20]], axis=1))
    assert clustering._raw_rows(blocks, np.array([], dtype=int)).shape == (0, 5)

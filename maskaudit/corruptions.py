"""Synthetic label corruptions for benchmarking label-quality detectors.

Every corruption works on the masks of ONE sample, shape (K, H, W) (K classes, H x W pixels,
any dtype read as bool), takes an explicit ``numpy.random.Generator`` and returns a NEW bool
array of the same shape; the input is never modified.

=====================  =====================================================================
name                   what it does
=====================  =====================================================================
``erode_dilate_1_8``   every structure of the sample eroded OR dilated (one coin flip for the
                       sample) by n px, n uniform in [1, 8] (Pick-and-Learn, "noise 1")
``erode_dilate_5_13``  the same with n in [5, 13] ("noise 2")
``delete``             one non-empty class emptied (a forgotten structure)
``spurious``           a blob of plausible size added to one class, away from its structure
``swap``               two non-empty classes exchanged (for JSRT: left<->right, heart<->lung)
=====================  =====================================================================

Further kinds (:data:`EXTRA_CORRUPTIONS`; the hard one-class benchmark sets use the first six):

=====================  =====================================================================
``dilate_5_13``        every structure dilated by n px, n uniform in [5, 13]
``erode_5_13``         every structure eroded by n px, n uniform in [5, 13]
``shift``              the whole mask moved by 8-24 px in a random direction
``foreign``            another image's mask (the ``donor``), as if files were mixed up
``delete_object``      one connected component of one class removed
``jagged``             the boundary made ragged (noise of 2-5 px along the contour)
``smooth``             the outline over-simplified (a heavy blur of the mask, thresholded)
=====================  =====================================================================

The label critic (``maskaudit.critic``) trains on random mixtures of these at random strengths.

The pixel counts of the paper apply at 256 px, the JSRT working size. The registry entries
scale n by ``max(H, W) / 256`` (at least 1 px), so that a 128 px dataset is corrupted by the
same fraction of its size; the plain functions take pixels as given unless ``ref_size`` is set.

Registry callables have the signature ``fn(masks, rng, *, classes=None, donor=None) ->
(new_masks, detail)`` where ``classes`` are the K class names (used by ``swap`` to pick sensible
pairs), ``donor`` is another sample's masks (K, H, W) (used by ``foreign`` only) and ``detail``
is one human-readable line for the truth file.

Example
-------
>>> import numpy as np
>>> m = np.zeros((1, 32, 32), bool); m[0, 10:20, 10:20] = True
>>> out = erode_dilate(m, np.random.default_rng(0), low=2, high=2, mode="dilate")
>>> int(out.sum()) > int(m.sum())
True
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import polygon as draw_polygon
from .distance import mask_box, signed_distance

__all__ = [
    "CORRUPTIONS",
    "CRITIC_FAMILIES",
    "EXTRA_CORRUPTIONS",
    "NEEDS_DONOR",
    "SENSIBLE_SWAPS",
    "CorruptedSample",
    "add_spurious",
    "corrupt_arrays",
    "corrupt_dataset",
    "delete_component",
    "delete_structure",
    "dilate",
    "erode_dilate",
    "get_corruption",
    "pick_donor",
    "plan_corruptions",
    "random_blob",
    "random_corruption",
    "sample_rng",
    "swap_classes",
]

#: Class-name pairs that make anatomical sense to confuse (JSRT names). ``swap`` prefers these
#: when the class names are known; otherwise any two different non-empty classes are swapped.
SENSIBLE_SWAPS: tuple[tuple[str, str], ...] = (
    ("left_lung", "right_lung"),
    ("left_clavicle", "right_clavicle"),
    ("heart", "left_lung"),
)

#: Erosion never shrinks a structure below this many pixels (or below its own size, if smaller):
#: n is clamped per structure instead, as thin structures (JSRT clavicles, ~12 px wide at 256 px)
#: would otherwise vanish and the corruption would turn into a deletion.
MIN_KEEP_PIXELS = 8

#: The resolution the paper's pixel counts refer to.
REFERENCE_SIZE = 256


def _as_masks(masks: np.ndarray) -> np.ndarray:
    """Validate one sample's masks and return a bool copy (K, H, W)."""
    arr = np.asarray(masks)
    if arr.ndim != 3 or min(arr.shape) < 1:
        raise ValueError(f"masks must have shape (K, H, W) with K, H, W >= 1, got {arr.shape}")
    return arr.astype(bool, copy=True)


def _nonempty(masks: np.ndarray) -> list[int]:
    return [k for k in range(masks.shape[0]) if masks[k].any()]


def _class_name(k: int, classes: Sequence[str] | None) -> str:
    return classes[k] if classes is not None and k < len(classes) else f"class{k}"


def _scaled(n: int, shape: tuple[int, ...], ref_size: int | None) -> int:
    if ref_size is None:
        return n
    return max(1, int(round(n * max(shape[-2:]) / ref_size)))


# --------------------------------------------------------------------------- erode / dilate


def dilate(mask: np.ndarray, n: float) -> np.ndarray:
    """(H, W) bool: ``mask`` dilated by a disk of radius n px (the same pixels as
    ``skimage.morphology.dilation(mask, disk(n))``, computed with a distance transform)."""
    if not mask.any():
        return mask.copy()
    return signed_distance(mask, reach=n) >= -n


def _erode_clamped(mask: np.ndarray, n: int, min_keep: int) -> tuple[np.ndarray, int]:
    """Erode ``mask`` by a disk of radius <= n keeping >= min(min_keep, area) pixels."""
    area = int(mask.sum())
    if area == 0 or n <= 0 or mask.all():
        return mask.copy(), 0
    keep = min(min_keep, area)
    # Estimate the largest admissible radius from the distance transform (erosion by disk(r)
    # keeps exactly the pixels whose distance to the background exceeds r, up to borders),
    # then verify with the real erosion and step down if needed.
    edt = np.maximum(signed_distance(mask, reach=0), 0.0)  # distance to the background, 0 outside the mask
    r = n
    if int((edt > r).sum()) < keep:
        values = np.sort(edt[mask])[::-1]
        r = min(n, max(0, int(np.ceil(values[keep - 1])) - 1))
    while r > 0:
        out = edt > r  # = erosion by disk(r) (pixels further than r from the background)
        if int(out.sum()) >= keep:
            return out, r
        r -= 1
    return mask.copy(), 0


def _erode_dilate(
    masks: np.ndarray,
    rng: np.random.Generator,
    *,
    low: int,
    high: int,
    mode: str = "random",
    ref_size: int | None = None,
    min_keep: int = MIN_KEEP_PIXELS,
    classes: Sequence[str] | None = None,
) -> tuple[np.ndarray, str]:
    m = _as_masks(masks)
    if not 0 <= low <= high:
        raise ValueError(f"need 0 <= low <= high, got low={low}, high={high}")
    if mode not in ("random", "erode", "dilate"):
        raise ValueError(f"mode must be 'random', 'erode' or 'dilate', got {mode!r}")
    n_raw = int(rng.integers(low, high + 1))
    op = mode if mode != "random" else ("erode" if rng.random() < 0.5 else "dilate")
    n = _scaled(n_raw, m.shape, ref_size)
    out = np.empty_like(m)
    clamped = []
    for k in range(m.shape[0]):
        if not m[k].any():
            out[k] = False
        elif op == "dilate":
            out[k] = dilate(m[k], n)
        else:
            out[k], used = _erode_clamped(m[k], n, min_keep)
            if used < n:
                clamped.append(f"{_class_name(k, classes)}->{used}")
    detail = f"{op} n={n}" + (f" (drawn {n_raw} at {ref_size} px)" if n != n_raw else "")
    if clamped:
        detail += " clamped " + ",".join(clamped)
    return out, detail


def erode_dilate(
    masks: np.ndarray,
    rng: np.random.Generator,
    *,
    low: int,
    high: int,
    mode: str = "random",
    ref_size: int | None = None,
    min_keep: int = MIN_KEEP_PIXELS,
) -> np.ndarray:
    """Erode or dilate every structure of one sample by the same n pixels (Pick-and-Learn).

    Parameters
    ----------
    masks : (K, H, W) array, read as bool
        The sample's masks, one channel per class.
    rng : numpy.random.Generator
        Draws n uniformly in [low, high] and, if ``mode="random"``, erosion or dilation (p=0.5).
    low, high : int
        Inclusive range of n in pixels (at ``ref_size`` if given, else at the masks' size).
    mode : {"random", "erode", "dilate"}
    ref_size : int, optional
        Scale n by ``max(H, W) / ref_size`` (at least 1). None: n is in the masks' pixels.
    min_keep : int
        Erosion is clamped per structure (smaller disk) so that at least
        ``min(min_keep, area)`` pixels remain; no structure vanishes.

    Returns
    -------
    (K, H, W) bool, new array. Empty channels stay empty. The footprint is
    ``skimage.morphology.disk(n)``; borders are handled by reflection, so a structure cut by
    the image edge is not eroded from that edge.

    Raises
    ------
    ValueError
        If ``masks`` is not 3-D or the range or mode is invalid.
    """
    return _erode_dilate(
        masks, rng, low=low, high=high, mode=mode, ref_size=ref_size, min_keep=min_keep
    )[0]


# --------------------------------------------------------------------------- delete


def _delete_structure(
    masks: np.ndarray, rng: np.random.Generator, *, classes: Sequence[str] | None = None
) -> tuple[np.ndarray, str]:
    m = _as_masks(masks)
    candidates = _nonempty(m)
    if not candidates:
        raise ValueError("delete needs at least one non-empty class; all masks are empty")
    k = int(rng.choice(candidates))
    m[k] = False
    return m, f"deleted {_class_name(k, classes)}"


def delete_structure(masks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Empty one non-empty class, chosen uniformly, of one sample (K, H, W).

    Raises ``ValueError`` if every class is empty. For a one-class dataset this empties the
    whole mask; see :func:`delete_component` for removing a single object instead.
    """
    return _delete_structure(masks, rng)[0]


def _delete_component(
    masks: np.ndarray, rng: np.random.Generator, *, classes: Sequence[str] | None = None
) -> tuple[np.ndarray, str]:
    m = _as_masks(masks)
    candidates = _nonempty(m)
    if not candidates:
        raise ValueError("delete_object needs at least one non-empty class; all masks are empty")
    k = int(rng.choice(candidates))
    labels, n = ndi.label(m[k], structure=np.ones((3, 3), bool))
    c = int(rng.integers(1, n + 1))
    m[k][labels == c] = False
    return m, f"deleted object {c}/{n} of {_class_name(k, classes)}"


def delete_component(masks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Remove one connected component (8-connectivity) of one non-empty class.

    Meant for one-class datasets with many objects (cells), where :func:`delete_structure`
    would empty the whole image. Raises ``ValueError`` if every class is empty.
    """
    return _delete_component(masks, rng)[0]


# --------------------------------------------------------------------------- spurious


def random_blob(
    rng: np.random.Generator, center: tuple[float, float], radius: float, shape: tuple[int, int]
) -> np.ndarray:
    """An irregular star-convex blob of mean radius ``radius`` (bool (H, W)), within 1.3 radius."""
    theta = np.linspace(0.0, 2.0 * np.pi, 64, endpoint=False)
    r = np.ones_like(theta)
    for j, amp in ((2, 0.25), (3, 0.1), (4, 0.05)):
        r += rng.uniform(0.0, amp) * np.cos(j * theta + rng.uniform(0.0, 2.0 * np.pi))
    r = radius * np.clip(r, 0.6, 1.3)
    rows = center[0] + r * np.sin(theta)
    cols = center[1] + r * np.cos(theta)
    out = np.zeros(shape, bool)
    rr, cc = draw_polygon(rows, cols, shape=shape)
    out[rr, cc] = True
    if not out.any():  # radius below one pixel
        out[int(round(center[0])), int(round(center[1]))] = True
    return out


def _add_spurious(
    masks: np.ndarray,
    rng: np.random.Generator,
    *,
    size_range: tuple[float, float] = (0.15, 0.5),
    classes: Sequence[str] | None = None,
) -> tuple[np.ndarray, str]:
    m = _as_masks(masks)
    _, h, w = m.shape
    candidates = _nonempty(m)
    k = int(rng.choice(candidates)) if candidates else int(rng.integers(0, m.shape[0]))
    if m[k].any():
        labels, n = ndi.label(m[k], structure=np.ones((3, 3), bool))
        sizes = np.bincount(labels.ravel())[1:]
        ref_area = float(sizes[int(rng.integers(0, n))])
    else:
        ref_area = 0.005 * h * w
    area = max(12.0, ref_area * rng.uniform(*size_range))
    radius = float(np.sqrt(area / np.pi))
    # distance of every pixel to the class's structure (inf-like where the class is empty)
    dist = ndi.distance_transform_edt(~m[k]) if m[k].any() else np.full((h, w), np.inf)
    yy, xx = np.mgrid[0:h, 0:w]
    while radius >= 1.0:
        reach = 1.3 * radius
        margin = max(2.0, 0.25 * radius)
        ok = (
            (dist > reach + margin)
            & (yy >= reach)
            & (yy <= h - 1 - reach)
            & (xx >= reach)
            & (xx <= w - 1 - reach)
        )
        if ok.any():
            idx = rng.choice(np.flatnonzero(ok))
            cy, cx = divmod(int(idx), w)
            blob = random_blob(rng, (cy, cx), radius, (h, w))
            m[k] |= blob
            return m, (
                f"spurious blob of {int(blob.sum())} px in {_class_name(k, classes)} "
                f"at (y={cy}, x={cx})"
            )
        radius *= 0.8
    raise ValueError(f"no room for a spurious blob in class {k} of a {h}x{w} mask")


def add_spurious(
    masks: np.ndarray,
    rng: np.random.Generator,
    *,
    size_range: tuple[float, float] = (0.15, 0.5),
) -> np.ndarray:
    """Add an irregular blob to one class of one sample, away from that class's structure.

    A non-empty class is chosen uniformly; the blob's area is ``uniform(*size_range)`` times
    the area of one of that class's components (at least 12 px), so it has a plausible size
    for the class. It lies entirely inside the image and at least 2 px from the class's
    existing pixels, so the class gains exactly one connected component (8-connectivity).
    It may overlap other classes. If there is no room the blob is shrunk; ``ValueError`` if
    even a 1 px radius blob does not fit.
    """
    return _add_spurious(masks, rng, size_range=size_range)[0]


# --------------------------------------------------------------------------- swap


def _swap_classes(
    masks: np.ndarray,
    rng: np.random.Generator,
    *,
    classes: Sequence[str] | None = None,
    pairs: Sequence[tuple[int | str, int | str]] | None = None,
) -> tuple[np.ndarray, str]:
    m = _as_masks(masks)
    k_total = m.shape[0]
    if k_total < 2:
        raise ValueError("swap needs at least two classes")
    names = list(classes) if classes is not None else None

    def index(c: int | str) -> int | None:
        if isinstance(c, str):
            return names.index(c) if names is not None and c in names else None
        return int(c) if 0 <= int(c) < k_total else None

    def usable(i: int, j: int) -> bool:
        return i != j and m[i].any() and m[j].any() and not np.array_equal(m[i], m[j])

    candidates: list[tuple[int, int]] = []
    wanted = pairs if pairs is not None else (SENSIBLE_SWAPS if names is not None else ())
    for a, b in wanted:
        i, j = index(a), index(b)
        if i is not None and j is not None and usable(i, j):
            candidates.append((i, j))
    if not candidates and pairs is None:
        candidates = [
            (i, j) for i in range(k_total) for j in range(i + 1, k_total) if usable(i, j)
        ]
    if not candidates:
        raise ValueError("swap needs two different non-empty classes (from `pairs` if given)")
    i, j = candidates[int(rng.integers(0, len(candidates)))]
    m[[i, j]] = m[[j, i]]
    return m, f"swapped {_class_name(i, classes)}<->{_class_name(j, classes)}"


def swap_classes(
    masks: np.ndarray,
    rng: np.random.Generator,
    *,
    classes: Sequence[str] | None = None,
    pairs: Sequence[tuple[int | str, int | str]] | None = None,
) -> np.ndarray:
    """Exchange the masks of two classes of one sample (K, H, W).

    Candidate pairs: ``pairs`` (class indices or names) if given; else, when ``classes``
    names are given, the :data:`SENSIBLE_SWAPS` present among them (JSRT: left<->right lung,
    left<->right clavicle, heart<->left lung); else (or if none of those is usable) any two
    classes. A pair is usable when both masks are non-empty and different. One usable pair
    is chosen uniformly. Raises ``ValueError`` if there is none (e.g. K = 1).
    """
    return _swap_classes(masks, rng, classes=classes, pairs=pairs)[0]


# --------------------------------------------------------------------------- shift, foreign, outline


def _shift(masks: np.ndarray, rng: np.random.Generator, *, low: int = 8, high: int = 24,
           ref_size: int | None = REFERENCE_SIZE, classes: Sequence[str] | None = None) -> tuple[np.ndarray, str]:
    """Move every class by the same n px (n uniform in [low, high] at ``ref_size``) in a random
    direction; what leaves the image is lost, what enters is background."""
    m = _as_masks(masks)
    if not _nonempty(m):
        raise ValueError("shift needs at least one non-empty class; all masks are empty")
    n = _scaled(int(rng.integers(low, high + 1)), m.shape, ref_size)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    dy, dx = int(round(n * np.sin(angle))), int(round(n * np.cos(angle)))
    out = np.zeros_like(m)
    h, w = m.shape[1:]
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = \
        m[:, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)]
    return out, f"shifted by (y={dy}, x={dx})"


def _foreign(masks: np.ndarray, rng: np.random.Generator, *, donor: np.ndarray | None = None,
             classes: Sequence[str] | None = None) -> tuple[np.ndarray, str]:
    """Replace the masks by ``donor``, another image's masks of the same shape."""
    m = _as_masks(masks)
    if donor is None or np.shape(donor) != m.shape:
        raise ValueError(f"foreign needs a donor mask of shape {m.shape}")
    donor = np.asarray(donor, dtype=bool)
    if np.array_equal(donor, m):
        raise ValueError("foreign needs a donor mask that differs from the sample's own")
    return donor.copy(), "another image's mask"


def _jagged(masks: np.ndarray, rng: np.random.Generator, *, low: int = 2, high: int = 5,
            ref_size: int | None = REFERENCE_SIZE, classes: Sequence[str] | None = None) -> tuple[np.ndarray, str]:
    """Make every boundary ragged: the mask's signed distance plus smooth noise of amplitude n px."""
    m = _as_masks(masks)
    if not _nonempty(m):
        raise ValueError("jagged needs at least one non-empty class; all masks are empty")
    n = _scaled(int(rng.integers(low, high + 1)), m.shape, ref_size)
    noise = ndi.gaussian_filter(rng.standard_normal(m.shape[1:]), sigma=max(1.0, n / 2))
    noise *= n / max(float(noise.std()), 1e-6)
    out = np.zeros_like(m)
    reach = float(noise.max())  # no pixel further outside than the noise's peak can join the mask
    for k in _nonempty(m):
        out[k] = signed_distance(m[k], reach=max(reach, 0.0)) + noise > 0
    return out, f"jagged boundary, {n} px"


_SMOOTH_TRUNCATE = 4.0  # the over-smoothing blur's kernel reaches this many sigmas (scipy's default)


def _smooth(masks: np.ndarray, rng: np.random.Generator, *, low: int = 6, high: int = 16,
            ref_size: int | None = REFERENCE_SIZE, classes: Sequence[str] | None = None) -> tuple[np.ndarray, str]:
    """Over-simplify every outline: blur each class with sigma n px and threshold at 0.5."""
    m = _as_masks(masks)
    if not _nonempty(m):
        raise ValueError("smooth needs at least one non-empty class; all masks are empty")
    n = _scaled(int(rng.integers(low, high + 1)), m.shape, ref_size)
    out = np.zeros_like(m)
    radius = int(_SMOOTH_TRUNCATE * n + 0.5)  # scipy's kernel radius: the blur reaches this far
    for k in _nonempty(m):
        # Blurred on the mask's box grown by twice the kernel's radius: the same values as the
        # whole image's (what a mirrored crop edge brings in lies at least a radius from the
        # mask, so is background), at the cost of the structure, not of the image.
        box = mask_box(m[k], 2 * radius + 1)
        out[k][box] = ndi.gaussian_filter(m[k][box].astype(np.float32), sigma=n, truncate=_SMOOTH_TRUNCATE) > 0.5
    return out, f"over-smoothed, sigma {n} px"


# --------------------------------------------------------------------------- registry

CorruptionFn = Callable[..., tuple[np.ndarray, str]]


def _kind(fn: Callable[..., tuple[np.ndarray, str]], name: str, **options) -> CorruptionFn:
    """A registry entry: ``fn`` with ``options`` fixed and the registry's signature."""

    def entry(masks, rng, *, classes=None, donor=None):
        if name == "foreign":
            return fn(masks, rng, classes=classes, donor=donor, **options)
        return fn(masks, rng, classes=classes, **options)

    entry.__name__ = name
    return entry


def _ed(low: int, high: int, mode: str = "random") -> CorruptionFn:
    prefix = {"random": "erode_dilate", "erode": "erode", "dilate": "dilate"}[mode]
    return _kind(_erode_dilate, f"{prefix}_{low}_{high}", low=low, high=high, mode=mode, ref_size=REFERENCE_SIZE)


#: The benchmark's corruption kinds: ``fn(masks, rng, *, classes=None, donor=None) -> (new_masks, detail)``.
CORRUPTIONS: dict[str, CorruptionFn] = {
    "erode_dilate_1_8": _ed(1, 8),
    "erode_dilate_5_13": _ed(5, 13),
    "delete": _kind(_delete_structure, "delete"),
    "spurious": _kind(_add_spurious, "spurious"),
    "swap": _kind(_swap_classes, "swap"),
}

#: Further kinds, not in the default mix.
EXTRA_CORRUPTIONS: dict[str, CorruptionFn] = {
    "dilate_5_13": _ed(5, 13, "dilate"),
    "erode_5_13": _ed(5, 13, "erode"),
    "shift": _kind(_shift, "shift"),
    "foreign": _kind(_foreign, "foreign"),
    "delete_object": _kind(_delete_component, "delete_object"),
    "jagged": _kind(_jagged, "jagged"),
    "smooth": _kind(_smooth, "smooth"),
}

#: Kinds that need a ``donor`` (another sample's masks).
NEEDS_DONOR = frozenset({"foreign"})


def get_corruption(kind: str) -> CorruptionFn:
    """Look a kind up in :data:`CORRUPTIONS` or :data:`EXTRA_CORRUPTIONS`."""
    if kind in CORRUPTIONS:
        return CORRUPTIONS[kind]
    if kind in EXTRA_CORRUPTIONS:
        return EXTRA_CORRUPTIONS[kind]
    known = ", ".join([*CORRUPTIONS, *EXTRA_CORRUPTIONS])
    raise ValueError(f"unknown corruption kind {kind!r}; known: {known}")


#: The families the label critic trains on, each with random strengths (see :func:`random_corruption`).
CRITIC_FAMILIES = ("erode", "dilate", "shift", "delete", "delete_object", "spurious", "swap", "foreign",
                   "jagged", "smooth")


#: Strength ranges (px at 256 px) of the families with a strength: ``subtle`` ones train the critic to
#: see small errors; the ``probe`` ones stand for the errors a relabeling queue wants (the fusion's probes).
STRENGTHS = {
    "subtle": {"erode": (1, 14), "dilate": (1, 14), "shift": (3, 30), "jagged": (1, 6), "smooth": (4, 20)},
    "probe": {"erode": (5, 14), "dilate": (5, 14), "shift": (8, 30), "jagged": (4, 6), "smooth": (10, 20)},
}


def _critic_family(family: str, masks: np.ndarray, rng: np.random.Generator, classes, donor,
                   strengths: dict[str, tuple[int, int]]) -> tuple[np.ndarray, str]:
    """One corruption of ``family`` at a random strength from ``strengths``."""
    if family in ("erode", "dilate"):
        low, high = strengths[family]
        return _erode_dilate(masks, rng, low=low, high=high, mode=family, ref_size=REFERENCE_SIZE)
    if family in ("shift", "jagged", "smooth"):
        low, high = strengths[family]
        return {"shift": _shift, "jagged": _jagged, "smooth": _smooth}[family](masks, rng, low=low, high=high)
    return get_corruption(family)(masks, rng, classes=classes, donor=donor)


def _family_order(families: Sequence[str], rng: np.random.Generator,
                  weights: Mapping[str, float] | None) -> list[str]:
    """``families`` in random order: a uniform shuffle, or, with ``weights`` (>= 0, 1 for a family
    not named, 0 never drawn), each next family drawn in proportion to its weight among those left."""
    options = list(families)
    if weights is None:
        rng.shuffle(options)
        return options
    options = [family for family in options if weights.get(family, 1.0) > 0]  # weight 0: never drawn
    if not options:
        return options
    share = np.array([float(weights.get(family, 1.0)) for family in options])
    return [options[i] for i in rng.choice(len(options), len(options), replace=False, p=share / share.sum())]


def random_corruption(masks: np.ndarray, rng: np.random.Generator, **options) -> tuple[np.ndarray, str]:
    """:func:`family_corruption` (same ``options``) without the family: ``(new_masks, detail)``."""
    out, detail, _ = family_corruption(masks, rng, **options)
    return out, detail


def family_corruption(
    masks: np.ndarray,
    rng: np.random.Generator,
    *,
    families: Sequence[str] = CRITIC_FAMILIES,
    classes: Sequence[str] | None = None,
    donor: np.ndarray | None = None,
    second: float = 0.25,
    strength: str = "subtle",
    weights: Mapping[str, float] | None = None,
) -> tuple[np.ndarray, str, str]:
    """A random corruption of one sample's masks (K, H, W) that differs from them.

    A family is drawn uniformly (or in proportion to ``weights``, 1 for a family not named) from
    those that apply (``swap`` needs two non-empty classes, ``foreign`` a ``donor``; an empty mask
    can only gain a blob or a donor's mask), at a random strength (``strength``: a key of
    :data:`STRENGTHS`); with probability ``second`` a second family is applied on top (a mixture),
    so that the critic does not learn one corruption's fingerprint. Returns ``(new_masks, detail,
    family)``, family the one applied first; ``(masks, "", "")`` when nothing applies (an empty
    mask and no donor: K = 1, all empty).
    """
    if weights is not None and (set(weights) - set(CRITIC_FAMILIES) or min(weights.values(), default=1.0) < 0):
        raise ValueError(f"family weights must be >= 0 and name families of {CRITIC_FAMILIES}, got {dict(weights)}")
    current, details, first = _as_masks(masks), [], ""
    for round_ in range(2 if rng.random() < second else 1):
        for family in _family_order(families, rng, weights):
            try:
                out, detail = _critic_family(family, current, rng, classes, donor, STRENGTHS[strength])
            except ValueError:
                continue
            if not np.array_equal(out, current):
                current, details, first = out, [*details, detail], first or family
                break
    return current, "; ".join(details), first


# --------------------------------------------------------------------------- datasets


def sample_rng(seed: int, sample_id: str) -> np.random.Generator:
    """The generator for one sample: depends on the seed and the id only, not on the order."""
    return np.random.default_rng([int(seed), zlib.crc32(sample_id.encode("utf-8"))])


def plan_corruptions(
    ids: Iterable[str], *, fraction: float, kinds: Sequence[str], seed: int,
    eligible: Iterable[str] | None = None,
) -> dict[str, str | None]:
    """Choose which samples to corrupt and how: ``{id: kind or None}``.

    ``round(fraction * N)`` samples are drawn (deterministic given ``seed`` and the set of
    ids, whatever their order) and the kinds are dealt out in turn over the drawn samples,
    so the counts per kind differ by at most one. Only ``eligible`` ids (default: all; e.g. the
    samples whose mask is not empty) are drawn; N still counts every id.
    """
    ids = sorted(set(ids))
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    if not kinds:
        raise ValueError("kinds must name at least one corruption")
    for kind in kinds:
        get_corruption(kind)
    n_bad = int(round(fraction * len(ids)))
    pool = ids if eligible is None else sorted(set(eligible) & set(ids))
    if n_bad > len(pool):
        raise ValueError(f"cannot corrupt {n_bad} samples: only {len(pool)} are eligible")
    order = np.random.default_rng(seed).permutation(len(pool))
    plan: dict[str, str | None] = {i: None for i in ids}
    for rank, idx in enumerate(order[:n_bad]):
        plan[pool[idx]] = kinds[rank % len(kinds)]
    return plan


@dataclass(frozen=True)
class CorruptedSample:
    id: str
    masks: np.ndarray  # (K, H, W) bool, corrupted or an unchanged copy
    kind: str | None  # None: clean
    detail: str  # "" for clean samples


DonorFn = Callable[[str, np.random.Generator], np.ndarray]


def corrupt_dataset(
    masks_iter: Iterable[tuple[str, np.ndarray]],
    plan: dict[str, str | None],
    *,
    seed: int,
    classes: Sequence[str] | None = None,
    donor: DonorFn | None = None,
) -> Iterator[CorruptedSample]:
    """Apply a plan from :func:`plan_corruptions` to ``(id, masks (K, H, W))`` pairs, lazily.

    Each sample gets its own generator :func:`sample_rng` ``(seed, id)``, so the result for a
    sample does not depend on the order or on which other samples are present. Ids missing
    from ``plan`` are treated as clean. ``donor(id, rng)`` returns another sample's masks for the
    kinds in :data:`NEEDS_DONOR`. A ``ValueError`` from a corruption is re-raised with the sample id.
    """
    for sample_id, masks in masks_iter:
        kind = plan.get(sample_id)
        if kind is None:
            yield CorruptedSample(sample_id, _as_masks(masks), None, "")
            continue
        rng = sample_rng(seed, sample_id)
        try:
            other = donor(sample_id, rng) if kind in NEEDS_DONOR and donor is not None else None
            out, detail = get_corruption(kind)(masks, rng, classes=classes, donor=other)
        except ValueError as exc:
            raise ValueError(f"sample {sample_id}: cannot apply {kind!r}: {exc}") from exc
        yield CorruptedSample(sample_id, out, kind, detail)


def corrupt_arrays(
    masks: np.ndarray,
    ids: Sequence[str],
    *,
    fraction: float,
    kinds: Sequence[str],
    seed: int,
    classes: Sequence[str] | None = None,
) -> tuple[np.ndarray, dict[str, tuple[bool, str | None]]]:
    """Corrupt an in-memory dataset (N, K, H, W); only samples with a non-empty mask are drawn.

    Returns the corrupted masks in the input's dtype (bool, or uint8 {0, 1} otherwise
    cast back) and ``truth = {id: (corrupted, kind)}``, the format
    :func:`benchmarks.detection_metrics.detection_report` takes. ``foreign`` takes its donor
    from the other samples.
    """
    arr = np.asarray(masks)
    if arr.ndim != 4 or arr.shape[0] != len(ids):
        raise ValueError(f"masks must be (N, K, H, W) with N = len(ids), got {arr.shape}")
    nonempty = [i for i, m in zip(ids, arr) if m.any()]
    plan = plan_corruptions(ids, fraction=fraction, kinds=kinds, seed=seed, eligible=nonempty)
    position = {sample_id: n for n, sample_id in enumerate(ids)}
    out = np.empty_like(arr)
    truth: dict[str, tuple[bool, str | None]] = {}
    samples = corrupt_dataset(zip(ids, arr), plan, seed=seed, classes=classes,
                              donor=lambda sample_id, rng: pick_donor(arr, position[sample_id], rng))
    for n, s in enumerate(samples):
        out[n] = s.masks.astype(arr.dtype)
        truth[s.id] = (s.kind is not None, s.kind)
    return out, truth


def pick_donor(masks: np.ndarray, own: int, rng: np.random.Generator, *, tries: int = 20) -> np.ndarray:
    """Another sample's masks from ``masks`` (N, K, H, W) that are non-empty and differ from sample
    ``own``'s; raises ``ValueError`` when there is none."""
    for _ in range(tries):
        other = int(rng.integers(0, len(masks)))
        candidate = np.asarray(masks[other], dtype=bool)
        if other != own and candidate.any() and not np.array_equal(candidate, np.asarray(masks[own], dtype=bool)):
            return candidate
    raise ValueError("no other sample has a different, non-empty mask to lend")

"""How the values stored in layout A label masks become classes, void pixels or background.

A dataset's masks are summarised once as a histogram of their values (:class:`ValueCounts`);
:func:`decide_label_values` turns it, with the classes file and ``--ignore-value``, into a
:class:`LabelValues`, and :meth:`LabelValues.split` applies that decision to one mask.

Rules, in order (docs in README.md, "Dataset layouts"):

1. Classes are the values that occur (0 is background), or those a classes file declares.
2. Binary masks saved as 0/255 are one class; when a few other values occur as well (under
   :data:`STRAY_SHARE` of the labelled pixels, from resampling or JPEG) the masks are thresholded
   at 128 and a note says so.
3. The void value (``ignore`` = 255 by default) marks pixels that are neither background nor a
   class (the PASCAL VOC border band); by default 255 is void only when the other values form a
   small set (at most :data:`MAX_CLASSES`). ``ignore=None`` disables it, an int sets it.
4. More than :data:`MAX_CLASSES` classes, most of them under :data:`TINY_SHARE` of the pixels,
   are refused: such masks are grey images or resampled, not label indices.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import DatasetError

__all__ = [
    "AUTO",
    "DEFAULT_VOID",
    "LabelValues",
    "MAX_CLASSES",
    "ValueCounts",
    "decide_label_values",
    "parse_ignore_value",
]

AUTO = "auto"
DEFAULT_VOID = 255
MAX_CLASSES = 64         # more classes than this, mostly tiny, are refused
TINY_SHARE = 1e-3        # a class under this share of all pixels is "tiny" for the guard
STRAY_SHARE = 0.01       # in 0/255 masks, other values under this share of labelled pixels are strays
BINARY_THRESHOLD = 128


@dataclass
class ValueCounts:
    """Pixel counts per stored label value over a set of masks.

    Attributes
    ----------
    pixels : dict of int to int
        Value -> number of pixels holding it (0 included).
    """

    pixels: dict[int, int] = field(default_factory=dict)

    def add(self, labels: np.ndarray) -> None:
        """Count one (H, W) integer mask."""
        if labels.dtype == np.uint8:
            counts = np.bincount(labels.ravel(), minlength=256)
            values = np.flatnonzero(counts)
            counts = counts[values]
        else:
            values, counts = np.unique(labels, return_counts=True)
        for value, count in zip(values.tolist(), counts.tolist()):
            self.pixels[value] = self.pixels.get(value, 0) + count

    @property
    def total(self) -> int:
        return sum(self.pixels.values())

    def labelled(self, values) -> int:
        """Pixels holding any of ``values``."""
        return sum(self.pixels.get(value, 0) for value in values)


@dataclass(frozen=True)
class LabelValues:
    """The decision on what each stored value of a layout A mask means.

    Attributes
    ----------
    values : tuple of int
        The stored value of each class, in class order (K values).
    void : int or None
        The value of void / ignore pixels, or None.
    binary : bool
        0/255 masks (one class, stored as 255): a value >= 128 is the class, any other background,
        so that stray values from resampling or JPEG do not become classes.
    notes : tuple of str
        What was decided beyond the obvious, and why (for ``inspect`` and run.json).
    """

    values: tuple[int, ...] = ()
    void: int | None = None
    binary: bool = False
    notes: tuple[str, ...] = ()

    def split(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, tuple[int, ...]]:
        """One mask as class channels and void pixels.

        Parameters
        ----------
        labels : np.ndarray
            (H, W) integer label mask as stored.

        Returns
        -------
        masks : np.ndarray
            (K, H, W) ``bool``, channel k is ``labels == values[k]``.
        void : np.ndarray or None
            (H, W) ``bool`` void pixels, or None when this decision has no void value.
        unknown : tuple of int
            Values that are neither background, a class nor void (the mask cannot be used).
        """
        if self.binary:
            foreground = labels >= BINARY_THRESHOLD
            return foreground[None], None, ()
        masks = np.stack([labels == value for value in self.values]) if self.values else np.zeros(
            (0, *labels.shape), dtype=bool
        )
        void = labels == self.void if self.void is not None else None
        known = {0, *self.values} | ({self.void} if self.void is not None else set())
        present = np.unique(labels).tolist()
        unknown = tuple(value for value in present if value not in known)
        return masks, void, unknown

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form for inspect and run.json."""
        return {"values": list(self.values), "void": self.void, "binary": self.binary,
                "notes": list(self.notes)}


def parse_ignore_value(text: str) -> int | None | str:
    """``--ignore-value`` text to :data:`AUTO`, None (``"none"``) or a non-negative int.

    Raises
    ------
    ValueError
        For anything else.
    """
    word = text.strip().lower()
    if word in (AUTO, "none"):
        return AUTO if word == AUTO else None
    if not word.isdigit():
        raise ValueError(f"{text!r} is not a label value; use a number such as 255, 'none' or 'auto'")
    return int(word)


def decide_label_values(
    counts: ValueCounts, *, declared: tuple[int, ...] | None = None, ignore: int | None | str = AUTO
) -> LabelValues:
    """Which stored values are classes, which is void, and whether masks are thresholded.

    Parameters
    ----------
    counts : ValueCounts
        Histogram of every usable mask's values.
    declared : tuple of int, optional
        Class values a classes file declares, in class order; None to take the values that occur.
    ignore : int, None or "auto"
        The void value; None for no void; ``"auto"``: 255 when the other values form a small set.

    Returns
    -------
    LabelValues

    Raises
    ------
    DatasetError
        When more than :data:`MAX_CLASSES` values would become classes and most of them are tiny.
    """
    found = sorted(value for value in counts.pixels if value != 0)
    notes: list[str] = []
    if ignore != DEFAULT_VOID and _is_binary_255(counts, declared):
        strays = [value for value in found if value != DEFAULT_VOID]
        if not strays:
            return LabelValues(values=(DEFAULT_VOID,), binary=True)
        share = counts.labelled(strays) / max(counts.labelled(found), 1)
        notes.append(
            f"binary masks (0/255) with stray values ({_value_list(strays)}: {100 * share:.2f} % of labelled"
            f" pixels, e.g. from resampling or JPEG): thresholded at {BINARY_THRESHOLD}"
        )
        return LabelValues(values=(DEFAULT_VOID,), binary=True, notes=tuple(notes))

    void = _decide_void(counts, found, declared, ignore, notes)
    if declared is not None:
        return LabelValues(values=declared, void=void, notes=tuple(notes))
    values = tuple(value for value in found if value != void) or (1,)  # every mask empty: one class, never seen
    _guard_many_tiny(counts, values)
    return LabelValues(values=values, void=void, notes=tuple(notes))


def class_names_for(values: tuple[int, ...]) -> tuple[str, ...]:
    """Default class names: ``class_<value>``, and ``class_1`` for a 0/255 binary mask."""
    if values == (DEFAULT_VOID,):
        return ("class_1",)
    return tuple(f"class_{value}" for value in values)


# -- helpers -------------------------------------------------------------------------------------


def _is_binary_255(counts: ValueCounts, declared: tuple[int, ...] | None) -> bool:
    """0/255 masks (one class) with at most a stray share of other values."""
    if declared is not None and (len(declared) != 1 or DEFAULT_VOID in declared):
        return False
    foreground = counts.pixels.get(DEFAULT_VOID, 0)
    others = counts.labelled(value for value in counts.pixels if value not in (0, DEFAULT_VOID))
    if declared is not None and declared[0] in counts.pixels and foreground <= others:
        return False  # a declared class value that is really used: not a 0/255 mask
    return foreground > 0 and others < STRAY_SHARE * (foreground + others)


def _decide_void(
    counts: ValueCounts, found: list[int], declared: tuple[int, ...] | None, ignore: int | None | str,
    notes: list[str],
) -> int | None:
    if ignore is None:
        return None
    if ignore != AUTO:
        if declared is not None and ignore in declared:
            raise DatasetError(
                f"--ignore-value {ignore} is also a class in the classes file; remove it there or pick another value"
            )
        notes.append(f"value {ignore} is void: set by --ignore-value")
        return int(ignore)
    if DEFAULT_VOID not in counts.pixels or (declared is not None and DEFAULT_VOID in declared):
        return None
    others = [value for value in found if value != DEFAULT_VOID] if declared is None else list(declared)
    if not others or len(others) > MAX_CLASSES:
        return None
    notes.append(
        f"value {DEFAULT_VOID} is void: the other values ({_value_list(others)}) form a small set, as in"
        f" PASCAL VOC; --ignore-value none makes {DEFAULT_VOID} a class"
    )
    return DEFAULT_VOID


def _guard_many_tiny(counts: ValueCounts, values: tuple[int, ...]) -> None:
    if len(values) <= MAX_CLASSES:
        return
    total = max(counts.total, 1)
    tiny = [value for value in values if counts.pixels[value] < TINY_SHARE * total]
    if 2 * len(tiny) <= len(values):
        return
    raise DatasetError(
        f"the masks hold {len(values)} distinct label values ({_value_list(values)}), {len(tiny)} of them under"
        f" {100 * TINY_SHARE:g} % of the pixels: they look like grey or resampled images, not label indices;"
        " save masks as label values 0 = background, 1..K (nearest-neighbour resize), declare the classes"
        ' in classes.json ({"1": "name", ...}), or set the void value with --ignore-value N'
    )


def _value_list(values, limit: int = 8) -> str:
    values = list(values)
    shown = ", ".join(str(value) for value in values[:limit])
    return shown + (f", ... {values[-1]}" if len(values) > limit else "")

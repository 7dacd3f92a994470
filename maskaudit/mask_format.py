"""How a dataset stores its masks, so that the masks maskaudit writes back are stored the same way.

A scan records the :class:`MaskFormat` of its dataset in the checkpoint (``model.pt``, key
``mask_format``); ``maskaudit predict`` and the scan's suggested masks write through it:

- layout B (``masks/<class>/``, also COCO): one binary PNG per class, 0/255 or 0/1 as the
  dataset's own masks are (0/255 for COCO);
- layout A (one label image per sample, also nnU-Net slices): one PNG whose pixels hold the
  dataset's own label values (``{0, 10, 20}`` stays ``{0, 10, 20}``, a 0/255 mask stays 0/255,
  VOC's ``{0, 3, 7}`` stays ``{0, 3, 7}``), with the dataset's palette when its masks are palette
  PNGs. Written masks never hold the void value except where a given mask held it (suggestions).

A checkpoint from before this record (no ``mask_format`` key) reads as what those versions
wrote: layout A class k as the value k + 1 in a grey PNG.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import CheckpointError
from .imageio import read_palette

if TYPE_CHECKING:
    from .dataset import DatasetIndex

__all__ = ["MaskFormat", "mask_format_of"]


@dataclass(frozen=True)
class MaskFormat:
    """The way a dataset's masks are stored.

    Attributes
    ----------
    layout : str
        ``"A"``: one label image per sample; ``"B"``: one binary mask per class (``masks/<class>/``).
    values : tuple of int
        Layout A: the stored value of each class, in class order (K values); empty for layout B.
    void : int or None
        Layout A: the stored value of void / ignore pixels, or None.
    palette : tuple of int or None
        Layout A palette PNGs: 768 ints, (R, G, B) of palette indices 0..255; None for grey masks.
    foreground : int
        Layout B: the stored value of a class's pixels, 255 or 1.
    """

    layout: str
    values: tuple[int, ...] = ()
    void: int | None = None
    palette: tuple[int, ...] | None = None
    foreground: int = 255

    @property
    def multilabel(self) -> bool:
        return self.layout == "B"

    def as_dict(self) -> dict[str, object]:
        """Checkpoint form: lists, ints, strings and None only (loads with ``weights_only=True``)."""
        return {"layout": self.layout, "values": list(self.values), "void": self.void,
                "palette": None if self.palette is None else list(self.palette), "foreground": self.foreground}

    @classmethod
    def from_checkpoint(cls, state: dict) -> MaskFormat:
        """The format a checkpoint recorded; for older checkpoints layout A values 1..K, grey.

        Raises
        ------
        CheckpointError
            If the record is malformed or does not give one value per class.
        """
        num_classes = len(state["classes"])
        layout = "B" if state["multilabel"] else "A"
        record = state.get("mask_format")
        if record is None:  # written before maskaudit kept the dataset's own values
            return cls(layout=layout, values=() if layout == "B" else tuple(range(1, num_classes + 1)))
        try:
            found = cls(layout=str(record["layout"]), values=tuple(int(value) for value in record["values"]),
                        void=None if record["void"] is None else int(record["void"]),
                        palette=None if record["palette"] is None else tuple(int(value) for value in record["palette"]),
                        foreground=int(record.get("foreground", 255)))  # 0.3 checkpoints: layout B written 0/255
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"the checkpoint's mask format record is damaged ({error!r})") from error
        if found.layout != layout or (layout == "A" and len(found.values) != num_classes) or (
            found.palette is not None and len(found.palette) != 768
        ) or found.foreground not in (1, 255):
            raise CheckpointError("the checkpoint's mask format does not match its classes")
        return found


def mask_format_of(index: DatasetIndex) -> MaskFormat:
    """The :class:`MaskFormat` of a dataset; the palette is that of its first mask, if a palette PNG."""
    from .prepare import label_values

    if index.multilabel:
        return MaskFormat(layout="B", foreground=_binary_foreground(index))
    labels = label_values(index)
    first = index.samples[0].masks[0] if index.samples and index.samples[0].masks else None
    palette = None
    if first is not None and first.suffix.lower() == ".png" and max(labels.values, default=0) <= 255:
        palette = read_palette(index.root / first)
    return MaskFormat(layout="A", values=tuple(labels.values), void=labels.void, palette=palette)


def _binary_foreground(index: DatasetIndex, *, files: int = 16) -> int:
    """1 when the first non-empty layout B mask files hold 0/1, else 255 (also when none can be read,
    as for COCO, whose masks are decoded from polygons)."""
    from .errors import InputFileError
    from .imageio import read_mask

    paths = [index.root / path for sample in index.samples for path in sample.masks][:files]
    for path in paths:
        try:
            largest = int(read_mask(path).max(initial=0))
        except (OSError, ValueError, InputFileError):
            return 255
        if largest > 0:
            return 1 if largest == 1 else 255
    return 255

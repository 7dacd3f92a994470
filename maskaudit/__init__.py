"""maskaudit: find the wrong masks in a segmentation dataset."""

__version__ = "0.3.0"

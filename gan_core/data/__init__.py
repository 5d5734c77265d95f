"""Datasets: one interface over every source, images in [-1, 1], labels, class names, a fingerprint."""
from .dataset import ImageDataset, content_fingerprint
from .errors import DataError
from .hf_layout import (IMAGE_TYPE, class_names_from_metadata, encode_png, encode_pngs, features_metadata,
                        from_uint8, to_uint8)
from .idx import read_idx, write_idx
from .sources import SOURCES, load_dataset, native_side

__all__ = ["ImageDataset", "DataError", "load_dataset", "native_side", "SOURCES", "content_fingerprint", "read_idx",
           "write_idx", "IMAGE_TYPE", "features_metadata", "class_names_from_metadata", "encode_png", "encode_pngs",
           "from_uint8", "to_uint8"]

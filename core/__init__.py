"""The bottom layer: box geometry, image I/O, atomic output, the nets and their weights.

Imports no other package of the project; every other package may import it.
"""

from core.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from core.imageio import ImageReadError, encode_image, image_size, read_image_rgb, to_rgb_uint8, try_read_image_rgb
from core.nets import INPUT_SIZES, NET_NAMES, NetOutput, build_net, normalize_images
from core.weights import WeightsSpec, load_nets, load_state_dict, parse_weights, resolve_weights

__all__ = [
    "INPUT_SIZES", "NET_NAMES", "ImageReadError", "NetOutput", "WeightsSpec",
    "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "build_net", "encode_image", "image_size",
    "load_nets", "load_state_dict", "normalize_images", "parse_weights", "read_image_rgb", "resolve_weights",
    "to_rgb_uint8", "try_read_image_rgb",
]

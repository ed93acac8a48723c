"""The face crops a recognition stage embeds: the detector that finds the faces and how they are aligned.

One declaration for the stages that detect, align and embed (eval-lfw, eval-ident, enroll, identify,
cluster); each nests it as its ``crops`` field, and core.cli flattens it onto the command line, so the
flags stay ``--weights``, ``--min-face`` (and the cascade's others), ``--align``, ``--image-size``, ``--margin``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from detector.align import ALIGN_MODES, AlignConfig
from detector.cascade import DetectorConfig


@dataclass(frozen=True)
class FaceCrops:
    weights: str = "shipped"
    """The detector: shipped | original:PATH | a folder with pnet.pt rnet.pt onet.pt."""
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    """The cascade's settings (--min-face, --thresholds, --device, ...)."""
    align: str = field(default="similarity", metadata={"choices": ALIGN_MODES})
    """similarity or margin: as the embedder's training build (and as a gallery was enrolled)."""
    image_size: int = 64
    """Side of the aligned crops: as the embedder's training build (and as a gallery was enrolled)."""
    margin: int = 32
    """margin mode: pixels added around the box in total."""

    def settings(self) -> dict:
        """The fields a results file records (the cascade's own are recorded apart, as its result_settings)."""
        return {"weights": self.weights, "align": self.align, "image_size": self.image_size, "margin": self.margin}

    def align_config(self, images: str, out: str, largest: bool, progress: bool) -> AlignConfig:
        """detector.align's config for these crops of ``images``, written to (or read from) ``out``."""
        return AlignConfig(images=images, out=out, weights=self.weights, detector=self.detector, largest=largest,
                           align=self.align, margin=self.margin, image_size=self.image_size, progress=progress)

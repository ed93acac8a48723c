"""The MTCNN cascade detector (``detector/cascade.py``); its public API at package level::

    from detector import Detector, DetectorConfig, Detections, load_detector

``DetectorConfig`` holds the one copy of the cascade's defaults (minimum face, pyramid factor,
thresholds, NMS); every stage that runs the detector takes its defaults from there.
"""

from detector.cascade import Detections, Detector, DetectorConfig, load_detector, pyramid_scales

__all__ = ["Detector", "DetectorConfig", "Detections", "load_detector", "pyramid_scales"]

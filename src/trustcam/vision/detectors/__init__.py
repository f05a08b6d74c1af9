"""Object detectors behind one interface."""

from trustcam.vision.detectors.base import Detector
from trustcam.vision.detectors.onnx_models import NanodetDetector, YoloxDetector, load_detector

__all__ = ["Detector", "NanodetDetector", "YoloxDetector", "load_detector"]

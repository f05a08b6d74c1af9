"""trustcam: self-hosted AI video surveillance whose AI measures and proves its own reliability."""

__version__ = "0.1.0"

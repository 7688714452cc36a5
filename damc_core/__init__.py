"""DAMC: an audio-driven NeRF talking head whose audio condition couples content and lip-sync features."""

__version__ = "0.1.0"

"""nvr-playback-agent: indexes NVR recordings and serves them as HLS playback sessions."""

__version__ = "0.1.0"

"""ecgpipe: raw ECG recordings -> spectrograms -> pretrained CNN features -> cross-validated rhythm classification."""

__version__ = "0.22.0"

"""blobctl: a content-addressed store for the command line."""

__version__ = "0.1.0"

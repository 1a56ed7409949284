"""The version of irli, in one place (the package face and saved manifests read it)."""

__version__ = "0.1.0"

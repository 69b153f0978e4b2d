"""Export: manifests, reports, atomic output directories, reload checks."""
from .manifest import build_manifest, versions
from .report import plot_plan, write_json, write_report

__all__ = ["build_manifest", "versions", "plot_plan", "write_json", "write_report"]

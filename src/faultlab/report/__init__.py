"""Reports: CSV tables, the per-layer summary, HTML with PNG plots."""
from .tables import REPORT_COLUMNS, layer_table, report_frame, write_report_csv

__all__ = ["REPORT_COLUMNS", "layer_table", "report_frame", "write_report_csv"]

"""Reports: CSV tables, the per-layer summary, HTML with PNG plots."""
from .compare import Comparison, compare_campaigns, write_comparison_html
from .export import bit_table, field_table, per_input_frame, rate_table, write_per_input_parquet
from .html import ReportFiles, build_report, resolve_sites
from .tables import REPORT_COLUMNS, layer_table, report_frame, write_report_csv

__all__ = [
    "REPORT_COLUMNS", "layer_table", "report_frame", "write_report_csv",
    "ReportFiles", "build_report", "resolve_sites", "rate_table", "bit_table", "field_table", "per_input_frame",
    "write_per_input_parquet", "Comparison", "compare_campaigns", "write_comparison_html",
]

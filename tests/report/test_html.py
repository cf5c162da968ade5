"""The HTML report: sections, self-containment, and numbers equal to ones computed from the store."""
from __future__ import annotations

import base64
import sqlite3
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.proportion import proportion_confint

from faultlab.report.html import build_report, resolve_sites
from report_helpers import fpc_wilson


class Page(HTMLParser):
    """Collects ids, <img> sources and the data-* attributes of table rows and cells."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.imgs: list[dict] = []
        self.rows: dict[str, list[tuple[dict, list[dict]]]] = {}
        self.tags: set[str] = set()
        self._table: str | None = None
        self._body = False
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "img":
            self.imgs.append(a)
        if tag in ("link", "script") or (tag == "a" and not str(a.get("href", "#")).startswith("#")):
            self.links.append(tag)
        if tag == "table":
            self._table = a.get("id")
            self.rows[self._table] = []
        elif tag == "tbody":
            self._body = True
        elif tag == "tr" and self._table and self._body:
            self.rows[self._table].append((a, []))
        elif tag == "td" and self._table and self.rows[self._table]:
            self.rows[self._table][-1][1].append(a)

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag == "tbody":
            self._body = False


def store_rows(directory: Path) -> pd.DataFrame:
    """The campaign's per-fault results read straight from SQLite, not through faultlab."""
    con = sqlite3.connect(directory / "campaign.sqlite")
    df = pd.read_sql_query(
        "SELECT f.id, f.layer, f.site, f.bits, r.n, r.sdc1, r.sdc5, r.due, r.codes FROM results r JOIN faults f ON f.id = r.fault_id ORDER BY f.id", con
    )
    con.close()
    df["codes"] = [np.frombuffer(zlib.decompress(b), np.uint8) for b in df["codes"]]
    return df


@pytest.fixture(scope="module")
def report(campaign_dir):
    from faultlab.store import CampaignStore

    with CampaignStore.open_existing(campaign_dir) as st:
        settings = st.settings()
    sites, note = resolve_sites(settings)
    files = build_report(campaign_dir, confidence=0.9, sites=sites, sites_note=note, per_input=True)
    page = Page()
    page.feed(files.html.read_text())
    return files, page, sites


def test_sections_and_self_contained(report):
    files, page, _ = report
    for sec in ("outcomes", "layer-rates", "heatmap", "bits", "critical", "settings", "assumptions", "seed", "versions", "margin"):
        assert sec in page.ids, sec
    text = files.html.read_text()
    assert "<script" not in text and "http://" not in text and "https://" not in text and not page.links
    assert len(page.imgs) == 4
    names = {p.stem: p.read_bytes() for p in files.plots}
    assert set(names) == {"outcomes", "layer_rates", "layer_bit_heatmap", "bit_position"}
    for img in page.imgs:
        prefix = "data:image/png;base64,"
        assert img["src"].startswith(prefix)
        data = base64.b64decode(img["src"][len(prefix):])
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert data == names[img["id"][4:]]  # the inline image is the file in plots/
    for v in ("torch", "numpy", "keras", "faultlab", "python"):
        assert f"<dt>{v}</dt>" in text
    assert '<code id="seed">3</code>' in text


def test_layer_rates_equal_store_numbers(report, campaign_dir):
    from scipy.stats import norm

    _, page, sites = report
    df = store_rows(campaign_dir)
    z = norm.ppf(0.95)
    rows = [r for r in page.rows["rate-table"] if r[0].get("data-layer") != "(all layers)"]
    assert len(rows) == df.groupby(["site", "layer"]).ngroups
    for attrs, cells in rows:
        g = df[(df["site"] == attrs["data-site"]) & (df["layer"] == attrs["data-layer"])]
        s = sites[(attrs["data-site"], attrs["data-layer"])]
        big_n = s.numel * s.bit_width
        rate_cells = [c for c in cells if "data-rate" in c]
        for c, e in zip(rate_cells, ("sdc1", "sdc5", "due")):
            k = int((g[e] > 0).sum())
            assert int(c["data-k"]) == k and int(c["data-n"]) == len(g)
            lo, hi = fpc_wilson(k, len(g), big_n, z)
            assert float(c["data-rate"]) == pytest.approx(k / len(g))
            assert (float(c["data-lo"]), float(c["data-hi"])) == pytest.approx((lo, hi), abs=1e-9)
    for attrs, cells in page.rows["pair-rate-table"]:
        sel = df["site"] == attrs["data-site"]
        if attrs["data-layer"] != "(all layers)":
            sel &= df["layer"] == attrs["data-layer"]
        g = df[sel]
        for c, e in zip([c for c in cells if "data-rate" in c], ("sdc1", "sdc5", "due")):
            k, n = int(g[e].sum()), int(g["n"].sum())
            n_eff = n * n / float((g["n"].astype(float) ** 2).sum())  # faults, not pairs, are the units
            lo, hi = proportion_confint(k / n * n_eff, n_eff, alpha=0.1, method="wilson")
            assert (float(c["data-rate"]), float(c["data-lo"]), float(c["data-hi"])) == pytest.approx((k / n, lo, hi), abs=1e-9)


def test_outcome_table_counts_codes(report, campaign_dir):
    _, page, _ = report
    df = store_rows(campaign_dir)
    for attrs, cells in page.rows["outcome-table"]:
        g = df[df["site"] == attrs["data-site"]]
        if attrs["data-unit"] == "pairs":
            want = np.bincount(np.concatenate(list(g["codes"])), minlength=5)
        else:
            want = np.bincount([int(c.max()) for c in g["codes"]], minlength=5)
        got = [int(c["data-count"]) for c in cells if "data-count" in c]
        assert got == list(want)


def test_critical_faults_are_the_most_sdc(report, campaign_dir):
    _, page, _ = report
    df = store_rows(campaign_dir)
    shown = [int(a["data-fault"]) for a, _ in page.rows["critical-table"]]
    ranked = df.sort_values(["sdc1", "sdc5", "due", "id"], ascending=[False, False, False, True])
    assert shown == list(ranked[(ranked["sdc1"] > 0) | (ranked["due"] > 0)]["id"][: len(shown)])


def test_per_input_parquet(report, campaign_dir):
    files, _, _ = report
    pq = pd.read_parquet(files.per_input)
    df = store_rows(campaign_dir)
    assert list(pq.columns) == ["fault_id", "layer", "site", "bit", "input", "outcome"]
    assert len(pq) == sum(len(c) for c in df["codes"])
    names = np.array(["masked", "non_critical", "sdc1", "sdc5", "due"])
    for r in df.sample(10, random_state=0).itertuples():
        sub = pq[pq["fault_id"] == r.id]
        assert list(sub["input"]) == list(range(len(r.codes)))
        assert list(sub["outcome"].astype(str)) == list(names[r.codes])
        assert set(sub["bit"]) == {int(r.bits.split(";")[0])}


def test_no_results_is_a_one_line_error(tmp_path):
    from faultlab.errors import FaultlabError
    from faultlab.store import CampaignStore

    CampaignStore(tmp_path).close()
    with pytest.raises(FaultlabError, match="no results"):
        build_report(tmp_path)


def test_strata_and_adaptive_saving(campaign_dir, tmp_path):
    """Faults stored with a stratum (adaptive rounds) get a per-stratum table; the saving is shown."""
    import shutil

    from faultlab.store import CampaignStore

    d = tmp_path / "adaptive"
    shutil.copytree(campaign_dir, d, ignore=shutil.ignore_patterns("plots", "*.html", "*.parquet"))
    con = sqlite3.connect(d / "campaign.sqlite")
    con.execute("UPDATE faults SET stratum = layer || ':' || site")
    con.commit()
    con.close()
    df = store_rows(d)
    with CampaignStore.open_existing(d) as st:
        st.set_meta("settings", {**st.settings(), "adaptive": {"fixed_plan_faults": 5000, "populations": {"conv1:weight": 2304}}})
    files = build_report(d)
    page = Page()
    text = files.html.read_text()
    page.feed(text)
    assert f'data-fixed="5000" data-run="{len(df)}" data-saved="{5000 - len(df)}"' in text
    rows = {a["data-stratum"]: c for a, c in page.rows["strata-table"]}
    assert set(rows) == {f"{l}:{s}" for l, s in zip(df["layer"], df["site"])}
    g = df[(df["layer"] == "conv1") & (df["site"] == "weight")]
    cell = next(c for c in rows["conv1:weight"] if "data-rate" in c)
    from scipy.stats import norm

    lo, hi = fpc_wilson(int((g["sdc1"] > 0).sum()), len(g), 2304, norm.ppf(0.975))
    assert (float(cell["data-lo"]), float(cell["data-hi"])) == pytest.approx((lo, hi), abs=1e-9)

"""report.html in a real browser: images embedded and decoded, text escaped, nothing external.

Needs Debian's Chromium at /usr/bin/chromium and the playwright package, like test_browser.py;
Playwright drives that browser, it never downloads one.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from medpipe.evaluation.html_report import (  # noqa: E402
    Section,
    format_ci,
    plot_training_curves,
    render_html,
    write_html_report,
)

from conftest import CHROMIUM, CHROMIUM_FLAGS  # noqa: E402

HISTORY = """epoch,train/loss,val/loss,val/auroc,val/acc,lr
1,0.69,0.66,0.71,0.62,0.001
2,0.52,0.55,0.82,0.74,0.001
3,0.41,0.47,,0.79,0.0005
"""


def _figure(path: Path, kind: str) -> Path:
    fig, ax = plt.subplots(figsize=(3, 3))
    if kind == "line":
        ax.plot([0, 0.2, 1], [0, 0.8, 1])
    else:
        ax.imshow([[30, 5], [4, 61]], cmap="Blues")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _sections(tmp_path: Path) -> list[Section]:
    (tmp_path / "history.csv").write_text(HISTORY)
    curves = plot_training_curves(tmp_path / "history.csv", tmp_path / "curves.png")
    assert curves is not None
    return [
        Section("Run summary", text="model resnet18 <b>not bold</b>\n\nsecond paragraph"),
        Section(
            "Data",
            table=[["split", "normal", "pneumonia"], ["train", 1214, 3494], ["test", 234, 390]],
        ),
        Section("Training curves", images=[("loss and validation metrics", curves)]),
        Section(
            "Test metrics",
            table=[["metric", "value [95% CI]"], ["auroc", format_ci(0.956, 0.941, 0.969)]],
        ),
        Section(
            "Operating point",
            text="youden on validation: threshold 0.37",
            images=[
                ("ROC", _figure(tmp_path / "roc.png", "line")),
                ("confusion matrix", _figure(tmp_path / "cm.png", "matrix")),
                ("Grad-CAM", tmp_path / "missing.png"),
            ],
        ),
    ]


def test_format_ci_and_escaping(tmp_path):
    assert format_ci(0.956, 0.941, 0.969) == "0.956 [0.941, 0.969]"
    assert format_ci(0.9) == "0.900" and format_ci(None) == "n/a"
    page = render_html("A & B <report>", [Section("x<y", text="<script>alert(1)</script>")])
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<title>A &amp; B &lt;report&gt;</title>" in page
    assert plot_training_curves(tmp_path / "nope.csv", tmp_path / "c.png") is None
    (tmp_path / "lr_only.csv").write_text("epoch,lr\n1,0.001\n")  # nothing to draw
    assert plot_training_curves(tmp_path / "lr_only.csv", tmp_path / "c.png") is None
    assert not (tmp_path / "c.png").exists()


def test_report_opens_in_chromium_self_contained(tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    start = time.perf_counter()
    path = write_html_report(
        tmp_path / "out" / "report.html", title="Run 1", sections=_sections(tmp_path)
    )
    source = path.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", source, re.I)
    assert "http://" not in source and "https://" not in source
    assert source.count('<img src="data:image/png;base64,') == 3

    requested = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(10_000)
            page.on("request", lambda r: requested.append(r.url))
            page.goto(path.as_uri(), wait_until="load")
            images = page.locator("img").evaluate_all(
                "imgs => imgs.map(i => [i.complete, i.naturalWidth, i.naturalHeight, i.alt])"
            )
            assert len(images) == 3
            for complete, width, height, alt in images:
                assert complete and width > 0 and height > 0, alt
            for heading in ("Run 1", "Run summary", "Data", "Test metrics", "Operating point"):
                assert page.get_by_role("heading", name=heading, exact=True).is_visible()
            assert page.get_by_text("0.956 [0.941, 0.969]", exact=True).is_visible()
            assert page.get_by_text("model resnet18 <b>not bold</b>").is_visible()  # escaped
            assert page.locator("b").count() == 0
            assert page.get_by_role("cell", name="3494", exact=True).is_visible()
            assert page.get_by_text("Grad-CAM: figure not available").is_visible()
            assert page.locator("script").count() == 0
            links = page.locator("[src], [href]").evaluate_all(
                "els => els.map(e => e.getAttribute('src') || e.getAttribute('href'))"
            )
            assert all(link.startswith("data:") for link in links), links
        finally:
            browser.close()
    # the only loads were the file itself and its embedded data URIs
    assert all(u.startswith(("file://", "data:")) for u in requested), requested
    assert time.perf_counter() - start < 15

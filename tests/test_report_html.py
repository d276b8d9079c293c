"""report: a self-contained page with its PNGs; escaped text; an empty run; a real browser loads every image."""

from __future__ import annotations

import base64
import re
import sys

import pytest

from selfinstruct import cli
from selfinstruct import config as C
from selfinstruct.report_html import build
from selfinstruct.store import RunStore
from tests import browser
from tests.helpers import cfg_for, make_seeds, run_job
from tests.test_stats import TASKS, _task, make_run

pytest.importorskip("matplotlib", reason="the report extra is not installed (pip install -e '.[report]')")

PNG = b"\x89PNG\r\n\x1a\n"


def _fake_run(tmp_path):
    cfg = cfg_for(tmp_path, target=12)
    run_job(cfg, make_seeds())
    return tmp_path / "run"


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def test_page_is_self_contained_with_pngs_beside_it(tmp_path):
    run = _fake_run(tmp_path)
    page = build(run)
    assert page == run / "report" / "report.html"
    html = page.read_text(encoding="utf-8")
    images = _images(html)
    assert len(images) == html.count("<img") == 5 and all(i.startswith(PNG) for i in images)
    for name in ("funnel", "rouge", "lengths", "mix", "verbs"):
        assert (run / "report" / f"{name}.png").read_bytes() in images
    assert not re.search(r"""(src|href)=(?!["']data:)""", html)  # nothing to fetch: opens offline
    assert "<script" not in html
    for section in ("Funnel per round", "highest ROUGE-L", "Lengths (words)", "Human-to-model", "Task types",
                    "Leading verbs", "Sample of accepted", "Sample of rejected", "Hand audit"):
        assert section in html


def test_text_from_the_model_is_escaped(tmp_path):
    evil = _task("r1-b0-c9", "Write <script>alert(1)</script> & <b>bold</b>", [("<img src=x>", "</td></table>")],
                 False, 1, 1, ["s1"], [], 0.1)
    run = make_run(tmp_path, tasks=[*TASKS, evil], rejected=[
        {"id": "r1-b0-c1", "round": 1, "batch": 0, "stage": "filter", "reason": "too_short", "score": None,
         "text": "<iframe src=//x>"}])
    html = build(run, tmp_path / "out").read_text(encoding="utf-8")
    assert "<script" not in html and "<iframe" not in html and "<img src=x>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in html
    assert "&lt;iframe src=//x&gt;" in html and "&lt;/td&gt;&lt;/table&gt;" in html


def test_audit_rates_shown(tmp_path):
    audit = [{"id": "r1-b0-c0", "instruction": True, "input": True, "output": False, "all": False}]
    html = build(make_run(tmp_path, audit=audit)).read_text(encoding="utf-8")
    assert "1 tasks graded by hand" in html and "valid instruction" in html


def test_empty_run_still_gives_a_page(tmp_path):
    cfg = cfg_for(tmp_path)
    RunStore.create(tmp_path / "run", C.dump(cfg), cfg.fingerprint()).close()  # created, nothing committed
    html = build(tmp_path / "run").read_text(encoding="utf-8")
    assert "No accepted tasks" in html and len(_images(html)) == 5


def test_cli_report_and_its_errors(tmp_path, capsys, monkeypatch):
    run = _fake_run(tmp_path)
    assert cli.main(["report", str(run), "-o", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "report.html").is_file()
    assert cli.main(["report", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and err.count("\n") == 1
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the extra were not installed
    assert cli.main(["report", str(run), "-o", str(tmp_path / "r2")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install -e ".[report]"' in err
    assert not (tmp_path / "r2").exists()


@pytest.mark.skipif(browser.skip_reason() is not None, reason=str(browser.skip_reason()))
def test_a_real_browser_loads_every_image_without_console_errors(tmp_path):
    html = tmp_path / "bad.html"  # the check itself must be able to fail
    html.write_text('<img src="data:image/png;base64,AAAA"><script>console.error("boom")</script>', encoding="utf-8")
    bad = browser.check_page(html)
    assert [i["width"] for i in bad["images"]] == [0] and any("boom" in e for e in bad["errors"])

    page = build(_fake_run(tmp_path))
    got = browser.check_page(page)
    assert len(got["images"]) == 5
    assert all(i["complete"] and i["width"] > 0 for i in got["images"]), got["images"]
    assert got["errors"] == []

"""Selection provenance, Hub-ready export (round trip through `load_dataset`, `DatasetCard`), push failing cleanly
offline, and the HTML/markdown report, on a real tiny-model LESS selection for two targets."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from datasets import load_dataset, load_from_disk

from less_hf import GradientConfig, LESSSelector, ProjectionConfig
from less_hf.output.provenance import less_settings, load_selection, save_selection, selection_metadata


@pytest.fixture(scope="module")
def selection_dir(tmp_path_factory, warmup_dir, pool):
    out = tmp_path_factory.mktemp("selection")
    targets = {
        "add": pool.filter(lambda r: r["source"] == "add").select(range(3)),
        "capital": pool.filter(lambda r: r["source"] == "capital").select(range(3)),
    }
    selector = LESSSelector(warmup_dir, out / "datastore", GradientConfig(max_length=64), ProjectionConfig(dims=[128]))
    selected = selector.select(pool, targets, n=6)
    meta = selection_metadata(pool, targets, selected, selector.scores_, "less", less_settings(selector), None, "toy")
    save_selection(out / "sel", selected, selector.scores_, meta)
    return out / "sel"


def test_provenance_records_what_the_card_needs(selection_dir, pool):
    meta = load_selection(selection_dir)
    assert meta["method"] == "less" and meta["pool"]["n_rows"] == len(pool) and meta["pool"]["fingerprint"]
    assert meta["pool"]["counts_per_source"] == {"add": 16, "capital": 16, "reverse": 16}
    settings = meta["settings"]
    assert [c["step"] for c in settings["checkpoints"]] == [3, 6]
    assert sum(c["weight"] for c in settings["checkpoints"]) == pytest.approx(1.0)
    assert settings["projection"]["dims"] == [128] and settings["warmup_seed"] == 0
    for name in ("add", "capital"):
        t = meta["targets"][name]
        subset = load_from_disk(str(selection_dir / name))
        scores = np.load(selection_dir / "scores" / f"{name}.npy")
        assert scores.shape == (len(pool),)
        assert t["n_selected"] == 6 and sum(t["counts_per_source"].values()) == 6
        # the saved array reproduces the subset: its top 6 rows, in order, with the same scores
        assert np.allclose(np.sort(scores[np.isfinite(scores)])[::-1][:6], subset["less_score"], atol=1e-6)
        assert t["top_examples"][0]["score"] == pytest.approx(subset[0]["less_score"], abs=1e-6)
        assert t["bottom_examples"][0]["score"] <= t["threshold"]


def test_export_round_trips_through_load_dataset(selection_dir, tmp_path):
    from less_hf.output.hub import export_selection

    folder = export_selection(selection_dir, tmp_path / "export", repo_id="me/toy-less")
    assert sorted(p.name for p in (folder / "data").iterdir()) == [
        "add-00000-of-00001.parquet",
        "capital-00000-of-00001.parquet",
    ]
    for name in ("add", "capital"):
        original = load_from_disk(str(selection_dir / name))
        loaded = load_dataset(str(folder), name=name, split="train", cache_dir=str(tmp_path / "hf"))
        assert loaded.to_list() == original.to_list()
        assert {"less_score", "less_score_rank", "messages", "source"} <= set(loaded.column_names)
    default = load_dataset(str(folder), split="train", cache_dir=str(tmp_path / "hf"))  # the first target is the default config
    assert default.to_list() == load_from_disk(str(selection_dir / "add")).to_list()


def test_card_parses_with_huggingface_hub(selection_dir, tmp_path):
    from huggingface_hub import DatasetCard

    from less_hf.output.hub import export_selection

    folder = export_selection(selection_dir, tmp_path / "export", repo_id="me/toy-less")
    card = DatasetCard.load(folder / "README.md")
    data = card.data.to_dict()
    assert [c["config_name"] for c in data["configs"]] == ["add", "capital"]
    less = data["less_hf"]
    assert less["method"] == "less" and less["source_dataset"] == "toy" and less["source_rows"] == 48
    assert less["source_fingerprint"] == load_selection(selection_dir)["pool"]["fingerprint"]
    assert [c["name"] for c in less["checkpoints"]] == ["checkpoint-3", "checkpoint-6"]
    assert less["projection"]["kind"] == "sparse" and less["seed"] == {"warmup": 0, "projection": 0}
    assert less["target_tasks"]["add"]["selected"] == 6 and less["target_tasks"]["add"]["examples"] == 3
    assert 'load_dataset("me/toy-less", name="add"' in card.text
    assert "| add | 3 |" in card.text


def test_push_fails_cleanly_when_the_hub_is_unreachable(selection_dir, tmp_path, monkeypatch, caplog):
    from less_hf.cli import main

    secret = "hf_doNotLeakThisTokenAnywhere123"
    monkeypatch.setenv("HF_TOKEN", secret)
    export = tmp_path / "kept"
    # port 9 (discard) on loopback: nothing listens, the connection is refused at once
    code = main(
        ["push", str(selection_dir), "me/toy-less", "--export-dir", str(export), "--endpoint", "http://127.0.0.1:9"]
    )
    assert code == 2
    assert load_dataset(str(export), name="capital", split="train").num_rows == 6  # the local export is kept
    assert secret not in caplog.text
    assert secret not in "".join(
        p.read_text(errors="ignore") for p in export.rglob("*") if p.suffix in (".md", ".json")
    )


def test_push_error_names_the_kept_export(selection_dir, tmp_path, monkeypatch):
    from less_hf.output.hub import HubUnreachableError, push_selection

    monkeypatch.setenv("HF_TOKEN", "hf_fake")
    with pytest.raises(HubUnreachableError, match=re.escape(str(tmp_path / "kept"))):
        push_selection(selection_dir, "me/toy-less", tmp_path / "kept", endpoint="http://127.0.0.1:9")


def test_report_html_is_self_contained_with_every_section(selection_dir, tmp_path):
    from less_hf.output.report import write_report

    paths = write_report(selection_dir, tmp_path / "report")
    page = paths["html"].read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert not re.search(r'src="(?!data:image/png;base64,)', page)  # no external images or scripts
    assert page.count("data:image/png;base64,") == 4  # histogram + source mix per target
    for text in (
        "Target: add",
        "Target: capital",
        "Top pool rows",
        "Bottom pool rows",
        "Overlap",
        "Settings",
        "checkpoint-3",
        "sparse",
    ):
        assert text in page, text
    # overlap table: diagonal = selection size
    assert re.search(r"<td>add</td><td class=\"num\">6</td>", page)
    md = paths["markdown"].read_text()
    assert "![add histogram](report_files/add_histogram.png)" in md
    assert (tmp_path / "report" / "report_files" / "capital_source_mix.png").read_bytes()[:4] == b"\x89PNG"
    meta = json.loads((selection_dir / "selection.json").read_text())
    assert f"{meta['targets']['add']['threshold']:+.4f}" in page


def test_python_save_report_export_match_the_cli(cli_like_selection, tmp_path):
    """`selector.save(dir)` writes the folder `less-hf select` writes; less_hf.report/export work on it."""
    import less_hf

    selector, pool = cli_like_selection
    out = selector.save(tmp_path / "sel", pool_spec="memory")
    meta = json.loads((out / "selection.json").read_text())
    assert meta["method"] == "bm25" and meta["pool"]["spec"] == "memory"
    assert set(meta["targets"]) == {"add"} and meta["targets"]["add"]["n_selected"] == 3
    paths = less_hf.report(out)
    assert paths["html"].exists()
    folder = less_hf.export(out, tmp_path / "export")
    from datasets import load_dataset

    rows = load_dataset("parquet", data_files=str(folder / "data" / "add-*.parquet"), split="train")
    assert len(rows) == 3 and "bm25_score" in rows.column_names


@pytest.fixture
def cli_like_selection(pool):
    from less_hf import BM25Selector

    selector = BM25Selector()
    selector.select(pool, {"add": pool.select([0, 3, 6])}, n=3)
    return selector, pool


def test_save_before_select_is_a_clear_error(tmp_path):
    from less_hf import BM25Selector, LessHFError

    with pytest.raises(LessHFError, match=r"call select\(pool, targets, \.\.\.\) first"):
        BM25Selector().save(tmp_path / "x")


def test_report_of_a_sampled_selection_shows_drawn_rows_not_a_threshold(pool, tmp_path):
    """A sampled method (TSDS, DSIR, random) has no threshold and no "top rows": the report shows what was drawn;
    a target without a subtask column shows no "0 subtasks"."""
    import less_hf
    from less_hf import RandomSelector

    selector = RandomSelector(seed=1)
    selector.select(pool, {"add": pool.select([0, 3])}, n=6)
    out = selector.save(tmp_path / "sel")
    meta = json.loads((out / "selection.json").read_text())
    assert meta["sampled"] and meta["targets"]["add"]["threshold"] is None
    assert sum(e["count"] for e in meta["targets"]["add"]["drawn_examples"]) == 6
    paths = less_hf.report(out)
    page, markdown = paths["html"].read_text(), paths["markdown"].read_text()
    assert "Most drawn rows" in page and "Top pool rows" not in page and "selection threshold" not in page
    assert "(drawn at random)" in markdown and "threshold" not in markdown.split("## Settings")[0]
    assert '<td class="num">0</td>' not in page.split("</table>")[0]  # the subtasks cell of the summary


def test_report_renders_in_headless_chromium_without_network(selection_dir, tmp_path):
    """The self-contained report.html opens in a real browser, draws something, and loads nothing from outside."""
    import re
    import shutil
    import subprocess

    from matplotlib.image import imread

    from less_hf.output.report import write_report

    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        pytest.skip("no Chromium on this machine (Debian: apt-get install chromium); the report is checked statically")
    page = write_report(selection_dir, tmp_path / "report")["html"]
    html = page.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|url\(\s*["']?(https?:)?//|<script""", html)
    shot, netlog = tmp_path / "shot.png", tmp_path / "net.json"
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync", "--hide-scrollbars",
         "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,MediaRouter", "--no-pings",
         "--window-size=1280,2400", f"--screenshot={shot}", f"--log-net-log={netlog}", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    pixels = imread(str(shot))[..., :3]
    assert pixels.std() > 0.05 and (pixels.mean(axis=2) < 0.9).mean() > 0.02  # text, tables and plots were drawn
    requested = set(re.findall(r'"url"\s*:\s*"([^"]+)"', netlog.read_text(errors="replace")))
    # the browser's own background services (update checks, network time) are not the page's requests; anything the
    # page could load from these hosts (fonts, scripts) is caught by the static check above
    browser = re.compile(r"^https?://([a-z0-9-]+\.)*(googleapis|google|gstatic|gvt1)\.com/")
    external = sorted(
        u for u in requested if u.startswith(("http:", "https:", "ws:", "wss:")) and not browser.match(u)
    )
    assert not external, external

"""Showing where a model fails: masks that open coloured, the run's per-image files, and the
report page opened in a real browser (headless Chromium)."""

import csv
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unet_tf import plots


def _photo(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_predicted_masks_are_palette_pngs_in_the_overlay_colours(tiny_run, tmp_path):
    from unet_tf.export import main as export_main
    from unet_tf.predict import main as predict_main

    Image.fromarray(_photo(45, 70)).save(tmp_path / "cat.png")
    out = tmp_path / "out"
    assert predict_main(["--model", str(tiny_run / "model.keras"), "--out", str(out),
                         str(tmp_path / "cat.png")]) == 0
    mask = Image.open(out / "cat_mask.png")
    assert mask.mode == "P"  # opens coloured in any viewer
    values = np.asarray(mask)
    assert values.shape == (45, 70) and set(np.unique(values)) <= {0, 1, 2}  # indices as stored
    classes = json.loads((out / "classes.json").read_text())["classes"]
    assert [c["name"] for c in classes] == ["pet", "background", "border"]
    palette = np.array(mask.getpalette()[:9]).reshape(3, 3)
    for entry, color in zip(classes, palette):
        assert entry["color"] == "#{:02x}{:02x}{:02x}".format(*color)
    np.testing.assert_array_equal(palette[1], [0, 0, 0])  # background black
    np.testing.assert_array_equal(palette[[0, 2]], plots.class_colors(
        ("pet", "background", "border"))[[0, 2]])  # the overlay's tints
    overlay = np.asarray(Image.open(out / "cat_overlay.png"))
    assert overlay.shape[1] == 70 and overlay.shape[0] > 45  # the legend strip underneath
    strip = overlay[45:].reshape(-1, 3)
    for color in palette[[0, 2]]:  # a swatch of each tinted class
        assert (strip == color).all(axis=1).any()
    export = tmp_path / "export"
    assert export_main(["--model", str(tiny_run / "model.keras"), "--out", str(export)]) == 0
    assert json.loads((export / "metadata.json").read_text())["classes"] == classes


def test_a_run_ends_with_per_image_scores_its_worst_photos_and_a_report(tiny_run):
    with open(tiny_run / "per_image.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert len(rows) == metrics["examples"] == 16
    assert {"file", "height", "width", "dice_pet", "iou_border", "foreground_dice",
            "pixel_accuracy"} <= set(rows[0])
    for name in ("worst.png", "confusion.png", "report.html"):
        assert (tiny_run / name).stat().st_size > 0
    page = (tiny_run / "report.html").read_text()
    assert page.count("<tr><td data-value=") == 16 and "learning curves" in page


def _missing(reason: str):
    """Skips, or fails where a browser is required (.ci/run sets UNET_TF_REQUIRE_BROWSER)."""
    if os.environ.get("UNET_TF_REQUIRE_BROWSER"):
        pytest.fail(reason)
    pytest.skip(reason)


def _browser():
    """Headless Chromium driven by Selenium, or a skip saying what is missing."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed (pip install -e '.[test]')")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        _missing("no Chromium here to open the report page in (Debian: apt-get install "
                 "chromium chromium-driver; .ci/run installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1300,1800"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(driver), options=options)


def _natural(text):
    """Text with its numbers compared as numbers, as the page sorts it ("a_2" before "a_10")."""
    return [int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", text))]


def _column(browser, index):
    return browser.execute_script(
        "return Array.from(document.querySelectorAll('#per-image tbody tr'))"
        ".map(r => r.cells[arguments[0]].dataset.value);", index)


def test_report_page_renders_loads_its_pictures_and_sorts_in_a_browser(tiny_run, tmp_path):
    from unet_tf.evaluate import main

    json_path = tmp_path / "eval.json"
    assert main(["--model", str(tiny_run / "model.keras"), "--json", str(json_path),
                 "--report", "--worst", "4"]) == 0
    page = tmp_path / "eval_report.html"
    with open(tmp_path / "eval_per_image.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    browser = _browser()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        browser.get(page.as_uri())
        WebDriverWait(browser, 120).until(lambda b: b.execute_script(
            "return document.readyState === 'complete' && "
            "Array.from(document.images).every(i => i.complete);"))
        widths = browser.execute_script("return Array.from(document.images).map(i => i.naturalWidth);")
        assert len(widths) == 2 and all(w > 0 for w in widths)  # curves and worst photos
        headings = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#per-image th")]
        assert headings == list(rows[0])
        assert sorted(_column(browser, 0)) == sorted(r["file"] for r in rows)  # every row shown
        score = headings.index("foreground_dice")
        shown = [float(v) for v in _column(browser, score)]
        assert shown == sorted(shown)  # lowest first, as written
        files = headings.index("file")
        names = sorted((r["file"] for r in rows), key=_natural)
        assert names != _column(browser, files)  # sorting by name is a new order
        browser.find_elements(By.CSS_SELECTOR, "#per-image th")[files].click()
        WebDriverWait(browser, 30).until(lambda b: _column(b, files) == names)
        browser.find_elements(By.CSS_SELECTOR, "#per-image th")[files].click()
        WebDriverWait(browser, 30).until(lambda b: _column(b, files) == names[::-1])
        accuracy = headings.index("pixel_accuracy")
        browser.find_elements(By.CSS_SELECTOR, "#per-image th")[accuracy].click()
        expected = sorted(float(r["pixel_accuracy"]) for r in rows)
        WebDriverWait(browser, 30).until(
            lambda b: [round(float(v), 6) for v in _column(b, accuracy)] == pytest.approx(expected))
        shot = tmp_path / "report.png"
        assert browser.save_screenshot(str(shot))
        assert Image.open(shot).size[0] > 0
    finally:
        browser.quit()


def test_the_docs_pictures_script_draws_from_a_run(tiny_run, pets_sample, tmp_path):
    import runpy

    script = runpy.run_path(str(Path(__file__).parents[1] / "docs" / "figures.py"))
    assert script["main"](["--run", str(tiny_run), "--data-dir", str(pets_sample),
                           "--out", str(tmp_path)]) == 0
    for name in ("pets-test.png", "worst.png", "curves.png"):
        assert Image.open(tmp_path / name).size[0] > 0

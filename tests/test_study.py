"""The human-study kit (TPAMI Table 4): the blinded page, the key, and the tally of rankings.

The browser test drives the real page in headless Chromium through chromedriver's W3C WebDriver
HTTP interface (no Python package needed).  It is skipped when they are absent; install them with
``apt-get install -y chromium chromium-driver`` (Debian/Ubuntu).
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from coopcore.errors import UsageError
from coopcore.study import (
    KEY_FILE, aggregate_rankings, load_key, split_method_name, study_cells, study_results, write_study,
    write_study_kit,
)

METHODS = ("CoopNets", "DCGAN", "W-GAN", "VAE")


def _images(level: float, n: int = 16, size: int = 8) -> torch.Tensor:
    """A batch whose pixels are all `level` (so each method's grid is recognisable by its grey)."""
    return torch.full((n, 1, size, size), level)


def _kit(tmp_path: Path, tasks=("Cifar-10",), seed: int = 3) -> tuple[Path, dict]:
    levels = dict(zip(METHODS, (-0.75, -0.25, 0.25, 0.75)))
    page = write_study(tmp_path / "study", {t: {m: _images(levels[m]) for m in METHODS} for t in tasks}, 16, seed)
    return page, load_key(page.parent / KEY_FILE)


def _ranking(tmp_path: Path, key: dict, rater: str, orders: dict[str, list[str]]) -> Path:
    """A ranking file as the page saves it: `orders` = {task name: methods best first}."""
    rankings = {}
    for task_id, task in key["tasks"].items():
        blind = {m: b for b, m in task["methods"].items()}
        rankings[task_id] = {blind[m]: k + 1 for k, m in enumerate(orders[task["name"]])}
    path = tmp_path / f"ranking-{rater}.json"
    path.write_text(json.dumps({"kit_version": 1, "study": key["study"], "rater": rater, "rankings": rankings}))
    return path


def _panel_images(page: Path) -> dict[str, np.ndarray]:
    """blinded id -> the decoded grid PNG of that panel (from the page's embedded data)."""
    from PIL import Image

    text = page.read_text()
    data = json.loads(re.search(r"const STUDY = (\{.*?\});\n", text, re.S).group(1).replace("<\\/", "</"))
    out = {}
    for task in data["tasks"]:
        for p in task["panels"]:
            raw = base64.b64decode(p["src"].split(",", 1)[1])
            out[p["id"]] = np.asarray(Image.open(io.BytesIO(raw)).convert("L"), dtype=np.float64)
    return out


# -- the page and the key ---------------------------------------------------------------------------
def test_page_is_blinded_self_contained_and_the_key_names_the_methods(tmp_path):
    page, key = _kit(tmp_path)
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page.read_text())  # base64 may spell anything
    for m in METHODS:
        assert m not in text  # nothing on the page names a method ...
    assert key["study"] in text and "http://" not in text and "https://" not in text  # ... and nothing is fetched
    (task,) = key["tasks"].values()
    assert sorted(task["methods"].values()) == sorted(METHODS)
    panels = _panel_images(page)
    assert set(panels) == set(task["methods"])
    # Each panel is its method's own images: the grey level of the grid's cells says which.
    greys = {task["methods"][b]: float(np.median(img[img < 250])) for b, img in panels.items()}
    assert greys["CoopNets"] < greys["DCGAN"] < greys["W-GAN"] < greys["VAE"]
    # A 4x4 grid of 16 images of 8x8 pixels, padded by 2 and enlarged 16x: (4 * 10 + 2) * 16.
    assert all(img.shape == (672, 672) for img in panels.values())


def test_blinding_is_seeded_and_differs_between_seeds(tmp_path):
    _, key_a = _kit(tmp_path / "a", seed=1)
    _, key_b = _kit(tmp_path / "b", seed=1)
    _, key_c = _kit(tmp_path / "c", seed=2)
    assert key_a["tasks"] == key_b["tasks"] and key_a["study"] == key_b["study"]
    assert key_a["tasks"]["T1"]["methods"].keys() != key_c["tasks"]["T1"]["methods"].keys()


def test_kit_from_image_files(tmp_path):
    from PIL import Image

    files = {}
    for m, level in zip(METHODS[:2], (40, 200)):
        files[m] = []
        for i in range(3):
            p = tmp_path / f"{m}-{i}.png"
            Image.fromarray(np.full((6, 6, 3), level, dtype=np.uint8)).save(p)
            files[m].append(p)
    page = write_study_kit(tmp_path / "kit", files, images_per_method=3, seed=0, task="CelebA")
    key = load_key(page.parent / KEY_FILE)
    panels = _panel_images(page)
    greys = {key["tasks"]["T1"]["methods"][b]: float(np.median(img[img < 250])) for b, img in panels.items()}
    assert abs(greys["CoopNets"] - 40) <= 1 and abs(greys["DCGAN"] - 200) <= 1
    with pytest.raises(UsageError, match="needs 4 images of '(CoopNets|DCGAN)', got 3"):
        write_study_kit(tmp_path / "kit2", files, images_per_method=4)


def test_rebuilding_keeps_the_blinding_and_another_kit_keeps_the_old_key(tmp_path):
    page, key = _kit(tmp_path, seed=4)
    again, key_again = _kit(tmp_path, seed=4)  # the same methods and seed: the same study
    assert key_again["study"] == key["study"] and key_again["tasks"] == key["tasks"]
    assert not list((tmp_path / "study").glob("previous-*"))
    other = write_study(tmp_path / "study", {"Cifar-10": {m: _images(0.0) for m in METHODS[:3]}}, 16, 4)
    new_key = load_key(other.parent / KEY_FILE)
    assert new_key["study"] != key["study"]
    kept = tmp_path / "study" / f"previous-{key['study']}"
    assert load_key(kept / KEY_FILE) == key and (kept / "index.html").exists()


def test_table_study_without_any_trained_run_says_why(tmp_path):
    from types import SimpleNamespace

    from coopcore.study import build_table_study

    spec = SimpleNamespace(methods={"CoopNets @ Cifar-10": "coopnets-cifar"}, images_per_method=4, column="")
    note = build_table_study(spec, {"CoopNets @ Cifar-10": tmp_path / "never-trained"}, tmp_path / "study", 0)
    assert note.name == "NOT-BUILT.txt" and "CoopNets @ Cifar-10" in note.read_text()
    assert not (tmp_path / "study" / "index.html").exists()


# -- the tally --------------------------------------------------------------------------------------
def test_mean_ranks_of_known_rankings(tmp_path):
    _, key = _kit(tmp_path, tasks=("LSUN", "Cifar-10"))
    orders = [
        {"LSUN": ["CoopNets", "DCGAN", "W-GAN", "VAE"], "Cifar-10": ["CoopNets", "W-GAN", "DCGAN", "VAE"]},
        {"LSUN": ["DCGAN", "CoopNets", "W-GAN", "VAE"], "Cifar-10": ["CoopNets", "DCGAN", "W-GAN", "VAE"]},
        {"LSUN": ["CoopNets", "W-GAN", "DCGAN", "VAE"], "Cifar-10": ["W-GAN", "CoopNets", "VAE", "DCGAN"]},
    ]
    files = [_ranking(tmp_path, key, f"r{i}", o) for i, o in enumerate(orders)]
    lsun = aggregate_rankings(files, tmp_path / "study" / KEY_FILE, task="LSUN")
    assert lsun == pytest.approx({"CoopNets": 4 / 3, "DCGAN": 2.0, "W-GAN": 8 / 3, "VAE": 4.0})
    cifar = aggregate_rankings(files, key, task="Cifar-10")
    assert cifar == pytest.approx({"CoopNets": 4 / 3, "DCGAN": 3.0, "W-GAN": 2.0, "VAE": 11 / 3})
    # Mean ranks of k methods always sum to 1 + ... + k.
    assert sum(cifar.values()) == pytest.approx(10.0)
    res = study_results(files, key)
    assert res["LSUN"]["DCGAN"]["ranks"] == [2, 1, 3]
    assert res["LSUN"]["DCGAN"]["sd"] == pytest.approx(1.0)
    assert res["LSUN"]["DCGAN"]["std_error"] == pytest.approx(1.0 / np.sqrt(3))
    cells = {(c["row"], c["column"]): c for c in study_cells(files, key)}
    assert len(cells) == 8 and cells[("VAE", "LSUN")]["value"] == 4.0 and cells[("VAE", "LSUN")]["sd"] == 0.0
    assert cells[("W-GAN", "Cifar-10")]["n_raters"] == 3


def test_bad_rankings_are_refused_with_the_file_named(tmp_path):
    _, key = _kit(tmp_path, tasks=("LSUN", "Cifar-10"))
    order = {"LSUN": list(METHODS), "Cifar-10": list(METHODS)}
    good = _ranking(tmp_path, key, "ann", order)
    with pytest.raises(UsageError, match="say which one"):
        aggregate_rankings([good], key)
    with pytest.raises(UsageError, match="no task 'CelebA'"):
        aggregate_rankings([good], key, task="CelebA")
    again = tmp_path / "again.json"
    again.write_text(good.read_text())
    with pytest.raises(UsageError, match="rater 'ann' appears twice"):
        aggregate_rankings([good, again], key, task="LSUN")
    data = json.loads(good.read_text())
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({**data, "study": "SOMETHINGELSE"}))
    with pytest.raises(UsageError, match="foreign.json belongs to study"):
        aggregate_rankings([foreign], key, task="LSUN")
    t1 = dict(data["rankings"]["T1"])
    t1.pop(next(iter(t1)))
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({**data, "rankings": {**data["rankings"], "T1": t1}}))
    with pytest.raises(UsageError, match="partial.json: task T1 .* must rank exactly"):
        aggregate_rankings([partial], key, task="LSUN")
    tie = tmp_path / "tie.json"
    tie.write_text(json.dumps({**data, "rankings": {**data["rankings"], "T1": {b: 1 for b in data["rankings"]["T1"]}}}))
    with pytest.raises(UsageError, match="ranks must be 1..4 each once"):
        aggregate_rankings([tie], key, task="LSUN")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(UsageError, match="broken.json is not valid JSON"):
        aggregate_rankings([broken], key, task="LSUN")
    with pytest.raises(UsageError, match="does not exist"):
        aggregate_rankings([good], tmp_path / "nokey.json", task="LSUN")
    with pytest.raises(UsageError, match="no ranking files"):
        aggregate_rankings([], key, task="LSUN")


def test_split_method_name():
    assert split_method_name("CoopNets (ours) @ Cifar-10") == ("CoopNets (ours)", "Cifar-10")
    assert split_method_name("DCGAN", "CelebA") == ("DCGAN", "CelebA")


# -- the page in a real browser -------------------------------------------------------------------------
def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        why = ("headless Chromium and chromedriver are not installed "
               "(Debian/Ubuntu: apt-get install -y chromium chromium-driver)")
        if os.environ.get("COOP_REQUIRE_BROWSER") == "1":  # CI installs them: a skip there would hide a failure
            pytest.fail(why)
        pytest.skip(why)
    return browser, driver


class WebDriver:
    """The few W3C WebDriver commands this test needs, over chromedriver's HTTP interface."""

    ELEMENT = "element-6066-11e4-a52e-4f735466cecf"

    def __init__(self, port: int, browser: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": browser, "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]}}}}
        self.session = self._call("POST", "/session", caps)["sessionId"]

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())["value"]

    def cmd(self, method: str, path: str, body: dict | None = None) -> dict:
        return self._call(method, f"/session/{self.session}{path}", body)

    def find_all(self, css: str) -> list[str]:
        return [e[self.ELEMENT] for e in self.cmd("POST", "/elements", {"using": "css selector", "value": css})]

    def attribute(self, element: str, name: str) -> str:
        return self.cmd("GET", f"/element/{element}/attribute/{name}")

    def quit(self) -> None:
        try:
            self._call("DELETE", f"/session/{self.session}")
        except (urllib.error.URLError, OSError):
            pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_page_in_headless_chromium_records_the_clicked_ranking(tmp_path):
    browser, driver = _chromium()
    page, key = _kit(tmp_path, tasks=("LSUN", "Cifar-10"))
    port = _free_port()
    proc = subprocess.Popen([driver, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wd = None
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=1)
                break
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        wd = WebDriver(port, browser)
        wd.cmd("POST", "/url", {"url": page.resolve().as_uri()})
        # Saving before everything is ranked is refused and records nothing.
        (save,) = wd.find_all("#save")
        wd.cmd("POST", f"/element/{save}/click", {})
        assert wd.cmd("POST", "/execute/sync", {"script": "return window.coopStudyResult || null;", "args": []}) is None
        wanted = {"LSUN": ["VAE", "CoopNets", "W-GAN", "DCGAN"], "Cifar-10": ["CoopNets", "DCGAN", "VAE", "W-GAN"]}
        shown = {}
        for task_id, task in key["tasks"].items():
            panels = {wd.attribute(e, "data-id"): e for e in wd.find_all(f"#task-{task_id} .panel")}
            shown[task_id] = list(panels)
            blind = {m: b for b, m in task["methods"].items()}
            for method in wanted[task["name"]]:
                wd.cmd("POST", f"/element/{panels[blind[method]]}/click", {})
        (rater,) = wd.find_all("#rater")
        wd.cmd("POST", f"/element/{rater}/value", {"text": "rater-007"})
        wd.cmd("POST", f"/element/{save}/click", {})
        (box,) = wd.find_all("#ranking-json")
        recorded = json.loads(wd.cmd("GET", f"/element/{box}/property/value"))
    finally:
        if wd is not None:
            wd.quit()
        proc.terminate()
        proc.wait(timeout=10)
    assert recorded["study"] == key["study"] and recorded["rater"] == "rater-007"
    assert recorded["shown_order"] == shown  # what the rater saw, in the page's own (random) order
    for task_id, task in key["tasks"].items():
        by_rank = sorted(recorded["rankings"][task_id], key=recorded["rankings"][task_id].get)
        assert [task["methods"][b] for b in by_rank] == wanted[task["name"]]
    saved = tmp_path / "ranking-rater-007.json"
    saved.write_text(json.dumps(recorded))
    assert aggregate_rankings([saved], key, task="LSUN") == {"VAE": 1.0, "CoopNets": 2.0, "W-GAN": 3.0, "DCGAN": 4.0}

"""`coop repro coopnets:table4 --scale smoke` (TPAMI Table 4, the human perceptual study).

The four models (CoopNets, DCGAN, W-GAN, VAE) train for seconds on the digits and the table
writes the study kit: a blinded page with one 16-image grid per model and the key beside it.
The golden numbers are the mean grey level of each model's grid as the raters would see it.
A tally of rankings in the paper's order gives the paper's ordering of mean ranks.
"""
from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
from conftest import run_cli

from coopcore.study import KEY_FILE, load_key, study_cells

TABLE_TOL = dict(default_tolerance=dict(rtol=1e-3, atol=1e-6))
ROWS = ["W-GAN", "DCGAN", "VAE", "CoopNets (ours)"]


def test_golden_repro_coopnets_table4_smoke(tmp_path, num_regression):
    from PIL import Image

    out = tmp_path / "repro"
    code = run_cli(["repro", "coopnets:table4", "--scale", "smoke", "--out", out, "--no-progress",
                    "--set", "run.threads=1"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert sorted(results["runs"]) == ["coopnets-cifar", "dcgan-cifar", "vae-cifar", "wgan-cifar"]
    assert len(results["quoted"]) == 12  # without raters, the table is the paper's
    assert "| CoopNets (ours) *(published)* | 1.700 | 1.438 | 1.447 |" in (out / "report.md").read_text()
    page = (out / "study" / "index.html").read_text()
    key = load_key(out / "study" / KEY_FILE)
    assert list(key["tasks"]) == ["T1"] and key["tasks"]["T1"]["name"] == "Cifar-10"
    methods = key["tasks"]["T1"]["methods"]
    assert sorted(methods.values()) == sorted(ROWS)
    assert key["notes"]["sources"]["CoopNets (ours) @ Cifar-10"]["samples"] == "revised"
    # Nothing but the images' base64 data could spell a method's name by chance.
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)
    for name in ROWS + ["coopnets", "dcgan", "wgan", "vae"]:
        assert name not in text
    data = json.loads(re.search(r"const STUDY = (\{.*?\});\n", page, re.S).group(1).replace("<\\/", "</"))
    values = {}
    for p in data["tasks"][0]["panels"]:
        img = np.asarray(Image.open(io.BytesIO(base64.b64decode(p["src"].split(",", 1)[1]))).convert("L"))
        assert img.shape == ((4 * 18 + 2) * 8, (4 * 18 + 2) * 8)  # 4x4 grid of 16x16 digits, x8
        values[f"mean_grey|{methods[p['id']]}"] = float(img.mean())
    # Rankings in the paper's Cifar-10 order (CoopNets, W-GAN, DCGAN, VAE) by two raters.
    blind = {m: b for b, m in methods.items()}
    files = []
    for rater in ("a", "b"):
        order = ["CoopNets (ours)", "W-GAN", "DCGAN", "VAE"]
        f = tmp_path / f"{rater}.json"
        f.write_text(json.dumps({"study": key["study"], "rater": rater,
                                 "rankings": {"T1": {blind[m]: k + 1 for k, m in enumerate(order)}}}))
        files.append(f)
    cells = {c["row"]: c["value"] for c in study_cells(files, out / "study" / KEY_FILE)}
    assert sorted(cells, key=cells.get) == ["CoopNets (ours)", "W-GAN", "DCGAN", "VAE"]
    # The same tally through the command: nothing retrains, the ranks become the table's cells.
    assert run_cli(["repro", "coopnets:table4", "--scale", "smoke", "--out", out, "--no-progress",
                    "--rankings", files[0], "--rankings", files[1]]) == 0
    tallied = json.loads((out / "results.json").read_text())
    assert {r["status"] for r in tallied["runs"].values()} == {"already-complete"}
    got = {(c["row"], c["column"]): (c["ours"], c["n_samples"], c["published"]) for c in tallied["cells"]}
    assert got[("CoopNets (ours)", "Cifar-10")] == (1.0, [2], 1.447)
    assert got[("VAE", "Cifar-10")] == (4.0, [2], 3.987)
    assert tallied["quoted"] == []
    num_regression.check(values, **TABLE_TOL)

"""Human perceptual studies (TPAMI Table 4): a blinded ranking page for raters, and the tally.

TPAMI Section 4.5: 80 raters each saw 16 synthesised images per model, "without telling the
subject which model generates the images", with "the model order randomized", ranked the
models by quality, and Table 4 reports each model's average rank per dataset.  The framework
cannot produce the raters, but it produces everything around them:

- `write_study` / `write_study_kit` write a self-contained HTML page (``index.html``: images
  inlined as PNG data URIs, no script or style from the network, so it can be mailed or opened
  offline) and a **key file** (``key.json``) beside it.  The page has one *task* per dataset
  (a Table 4 column); a task shows one unlabelled 4x4 grid of `images_per_method` images per
  method, in a random order drawn anew each time the page is opened (per rater), titled only
  "Set A", "Set B", ... by position.  Each grid carries a random *blinded id*; only the key
  maps blinded ids to methods, and the page holds nothing else that names a method (the order
  of the grids in the file is a seeded shuffle too).
- The rater ranks the grids of every task by clicking them from best to worst, types a rater
  id and presses "Save ranking": the page downloads ``ranking-<rater>.json`` and shows the
  same JSON in a text box (for copy and paste where downloads are blocked).  The file holds the
  study id, the rater id, and per task the rank of every blinded id and the order it was shown.
- `aggregate_rankings` reads ranking files with the key and returns each method's mean rank
  (Table 4's number); `study_results` adds the spread and the number of raters per task, and
  `study_cells` turns it into the table's cells (row = method, column = task).  Malformed,
  incomplete, foreign (another study's) or duplicated rankings are rejected with a
  `UsageError` naming the file.
- `build_table_study` is what `coop repro` calls for a spec with a ``[study]`` section: it
  draws the samples of each method from its trained run and writes the kit.

Method names in a spec's study may be ``"Row @ Column"`` (several columns, one task each, in
one page) or plain ``"Row"`` (the study's `column`, one task).
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import random
import string
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor

from .errors import UsageError

__all__ = [
    "KEY_FILE", "PAGE_FILE", "TASK_SEPARATOR", "write_study", "write_study_kit", "load_key", "read_ranking",
    "aggregate_rankings", "study_results", "study_cells", "build_table_study", "split_method_name",
]

PAGE_FILE = "index.html"
KEY_FILE = "key.json"
#: Separates the row (method) from the column (task) in a spec's study method names.
TASK_SEPARATOR = " @ "
KIT_VERSION = 1
GRID_COLUMNS = 4

Images = Union[Tensor, Sequence[Union[str, Path, Tensor]]]


# -- images ------------------------------------------------------------------------------------
def _as_batch(images: Images, n: int, value_range: tuple[float, float], method: str) -> Tensor:
    """The first `n` images as a float batch [n, C, H, W] in `value_range` (files are read as
    8-bit RGB/greyscale and mapped onto the range)."""
    if isinstance(images, Tensor):
        batch = images.detach().float().cpu()
        if batch.dim() == 3:
            batch = batch.unsqueeze(1)
        if batch.dim() not in (4, 5):
            raise UsageError(f"study images of '{method}' must be [N, C, H, W] (or videos [N, C, T, H, W]), "
                             f"got shape {list(batch.shape)}")
    else:
        items = list(images)
        if items and all(isinstance(x, Tensor) for x in items):
            batch = torch.stack([x.detach().float().cpu() for x in items[:n]])
        else:
            batch = torch.stack([_read_image(Path(p), value_range) for p in items[:n]]) if items else torch.empty(0)
    if batch.shape[0] < n:
        raise UsageError(f"the study needs {n} images of '{method}', got {batch.shape[0]}")
    return batch[:n]


def _read_image(path: Path, value_range: tuple[float, float]) -> Tensor:
    from PIL import Image

    if not path.is_file():
        raise UsageError(f"study image {path} does not exist")
    import numpy as np

    with Image.open(path) as img:
        img = img.convert("RGB") if img.mode not in ("L", "RGB") else img
        arr = np.asarray(img, dtype=np.float32)
    x = torch.from_numpy(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1).copy()) / 255.0
    lo, hi = value_range
    return lo + (hi - lo) * x


def _grid_png(batch: Tensor, value_range: tuple[float, float]) -> bytes:
    """A 4-column grid of the batch as PNG bytes, enlarged so small images are visible."""
    from PIL import Image

    from .images import display_scale, make_grid

    arr = make_grid(batch, nrow=GRID_COLUMNS, value_range=value_range)
    img = Image.fromarray(arr)
    scale = display_scale(batch)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# -- the kit -----------------------------------------------------------------------------------
def _token(rng: random.Random, taken: set[str], length: int = 6) -> str:
    alphabet = string.ascii_uppercase + string.digits
    while True:
        tok = "".join(rng.choice(alphabet) for _ in range(length))
        if tok not in taken:
            taken.add(tok)
            return tok


def write_study(
    out_dir: Path,
    tasks: Mapping[str, Mapping[str, Images]],
    images_per_method: int = 16,
    seed: int = 0,
    *,
    title: str = "Which images look most realistic?",
    value_range: tuple[float, float] = (-1.0, 1.0),
    notes: Optional[Mapping[str, Any]] = None,
) -> Path:
    """Write ``index.html`` (the raters' page) and ``key.json`` (blinded id -> method) into
    `out_dir` for `tasks` = {task (a table column): {method: images}}; returns the page's path.

    Every method of a task gets a grid of its first `images_per_method` images.  The blinded
    ids, the study id and the order of the grids in the file come from `seed`; the order raters
    see is re-drawn by the page each time it is opened.  `notes` are stored in the key only."""
    if images_per_method < 1:
        raise UsageError(f"images_per_method must be >= 1, got {images_per_method}")
    if not tasks or any(not methods for methods in tasks.values()):
        raise UsageError("a study needs at least one task with at least one method")
    # The seed and the tasks' method names fix the blinding, so rebuilding the same kit gives
    # the same study id and ids (rankings already returned stay valid), while a kit with other
    # methods gets another study id (its key refuses rankings of the old page).
    structure = json.dumps([[task, sorted(methods)] for task, methods in tasks.items()])
    rng = random.Random(f"{seed}|{structure}")
    taken: set[str] = set()
    study_id = _token(rng, taken, 10)
    key: dict[str, Any] = {"kit_version": KIT_VERSION, "study": study_id, "seed": seed,
                           "images_per_method": images_per_method, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                           "tasks": {}, "notes": dict(notes or {})}
    page_tasks = []
    for t_index, (task, methods) in enumerate(tasks.items()):
        names = list(methods)
        rng.shuffle(names)  # the file's order says nothing about which method is which
        panels, mapping = [], {}
        for name in names:
            blinded = _token(rng, taken)
            mapping[blinded] = name
            batch = _as_batch(methods[name], images_per_method, value_range, name)
            uri = "data:image/png;base64," + base64.b64encode(_grid_png(batch, value_range)).decode("ascii")
            panels.append({"id": blinded, "src": uri})
        task_id = f"T{t_index + 1}"
        key["tasks"][task_id] = {"name": task, "methods": mapping}
        page_tasks.append({"id": task_id, "name": task, "panels": panels})
    out_dir = Path(out_dir)
    _keep_previous_kit(out_dir, study_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    page = out_dir / PAGE_FILE
    page.write_text(_render_page(title, study_id, images_per_method, page_tasks), encoding="utf-8")
    (out_dir / KEY_FILE).write_text(json.dumps(key, indent=2), encoding="utf-8")
    return page


def _keep_previous_kit(out_dir: Path, study_id: str) -> None:
    """A kit of another study already in `out_dir` moves to ``previous-<its study id>/``: its key
    is the only way to read the rankings raters return for it."""
    old_key = out_dir / KEY_FILE
    if not old_key.is_file():
        return
    try:
        old_id = str(json.loads(old_key.read_text(encoding="utf-8")).get("study", ""))
    except (json.JSONDecodeError, OSError, AttributeError):
        old_id = ""
    if old_id == study_id:
        return
    keep = out_dir / f"previous-{old_id or 'unknown'}"
    keep.mkdir(parents=True, exist_ok=True)
    for name in (PAGE_FILE, KEY_FILE):
        if (out_dir / name).exists():
            (out_dir / name).replace(keep / name)


def write_study_kit(
    out_dir: Path,
    methods: Mapping[str, Images],
    images_per_method: int = 16,
    seed: int = 0,
    *,
    task: str = "",
    title: str = "Which images look most realistic?",
    value_range: tuple[float, float] = (-1.0, 1.0),
) -> Path:
    """One-task study: `methods` = {method: image files, a tensor [N, C, H, W] or a list of
    [C, H, W] tensors}; see `write_study`."""
    return write_study(out_dir, {task: methods}, images_per_method, seed, title=title, value_range=value_range)


def _render_page(title: str, study_id: str, per_method: int, tasks: list[dict[str, Any]]) -> str:
    data = json.dumps({"study": study_id, "tasks": tasks}).replace("</", "<\\/")
    esc = html.escape(title)
    return _PAGE.replace("@TITLE@", esc).replace("@PER_METHOD@", str(per_method)).replace("@DATA@", data)


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>@TITLE@</title>
<style>
body { font-family: sans-serif; margin: 1.5em; max-width: 1400px; }
.task { border-top: 2px solid #888; margin-top: 1.5em; padding-top: .5em; }
.panels { display: flex; flex-wrap: wrap; gap: 1em; }
.panel { border: 3px solid #ccc; padding: .4em; cursor: pointer; text-align: center; background: #fafafa; }
.panel.ranked { border-color: #2a7; }
.panel img { display: block; image-rendering: pixelated; max-width: 320px; }
.rank { font-size: 1.3em; font-weight: bold; min-height: 1.4em; }
#status { margin: 1em 0; font-weight: bold; }
textarea { width: 100%; height: 10em; font-family: monospace; }
</style>
</head>
<body>
<h1>@TITLE@</h1>
<p>Each group below shows several sets of @PER_METHOD@ images.  For every group, click the sets
from <b>most</b> realistic (rank 1) to <b>least</b> realistic.  "Reset" starts a group again.
When every group is ranked, enter your rater id and press "Save ranking": a file downloads
(send it back); the same text appears in the box at the bottom.</p>
<div id="tasks"></div>
<p><label>Rater id: <input id="rater" type="text" autocomplete="off"></label>
<button id="save" type="button">Save ranking</button></p>
<div id="status"></div>
<textarea id="ranking-json" readonly></textarea>
<script>
"use strict";
const STUDY = @DATA@;
const state = {};   // task id -> blinded ids in the order clicked (rank 1 first)
const shown = {};   // task id -> blinded ids in the order displayed to this rater
function shuffle(a) {
  const r = new Uint32Array(a.length);
  (window.crypto || window.msCrypto).getRandomValues(r);
  for (let i = a.length - 1; i > 0; i--) { const j = r[i] % (i + 1); [a[i], a[j]] = [a[j], a[i]]; }
  return a;
}
function letter(i) { return String.fromCharCode(65 + i); }
function render() {
  const root = document.getElementById("tasks");
  STUDY.tasks.forEach((task, t) => {
    state[task.id] = [];
    const order = shuffle(task.panels.slice());
    shown[task.id] = order.map(p => p.id);
    const sec = document.createElement("div");
    sec.className = "task"; sec.id = "task-" + task.id;
    const h = document.createElement("h2");
    h.textContent = "Group " + (t + 1) + (task.name ? " (" + task.name + ")" : "");
    sec.appendChild(h);
    const reset = document.createElement("button");
    reset.type = "button"; reset.textContent = "Reset"; reset.className = "reset";
    reset.addEventListener("click", () => { state[task.id] = []; update(); });
    sec.appendChild(reset);
    const box = document.createElement("div");
    box.className = "panels";
    order.forEach((p, i) => {
      const d = document.createElement("div");
      d.className = "panel"; d.dataset.task = task.id; d.dataset.id = p.id;
      d.innerHTML = '<div class="label">Set ' + letter(i) + '</div><img alt="Set ' + letter(i) + '"><div class="rank"></div>';
      d.querySelector("img").src = p.src;
      d.addEventListener("click", () => {
        const s = state[task.id];
        if (!s.includes(p.id)) { s.push(p.id); update(); }
      });
      box.appendChild(d);
    });
    sec.appendChild(box);
    root.appendChild(sec);
  });
  update();
}
function complete() { return STUDY.tasks.every(t => state[t.id].length === t.panels.length); }
function update() {
  document.querySelectorAll(".panel").forEach(d => {
    const k = state[d.dataset.task].indexOf(d.dataset.id);
    d.classList.toggle("ranked", k >= 0);
    d.querySelector(".rank").textContent = k >= 0 ? "rank " + (k + 1) : "";
  });
  const left = STUDY.tasks.filter(t => state[t.id].length !== t.panels.length).length;
  document.getElementById("status").textContent = left ? left + " group(s) still to rank" : "all groups ranked";
}
function save() {
  const rater = document.getElementById("rater").value.trim();
  if (!complete()) { document.getElementById("status").textContent = "rank every set of every group first"; return null; }
  if (!rater) { document.getElementById("status").textContent = "enter your rater id first"; return null; }
  const rankings = {};
  STUDY.tasks.forEach(t => { rankings[t.id] = {}; state[t.id].forEach((id, k) => { rankings[t.id][id] = k + 1; }); });
  const result = { kit_version: 1, study: STUDY.study, rater: rater, saved: new Date().toISOString(),
                   rankings: rankings, shown_order: shown };
  const text = JSON.stringify(result, null, 2);
  document.getElementById("ranking-json").value = text;
  window.coopStudyResult = result;
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], { type: "application/json" }));
  a.download = "ranking-" + rater.replace(/[^A-Za-z0-9_.-]/g, "_") + ".json";
  document.body.appendChild(a); a.click(); a.remove();
  document.getElementById("status").textContent = "saved: send the downloaded file back";
  return result;
}
document.getElementById("save").addEventListener("click", save);
render();
</script>
</body>
</html>
"""


# -- reading rankings ----------------------------------------------------------------------------
def load_key(key: Union[str, Path, Mapping[str, Any]]) -> dict[str, Any]:
    """A study key from its file (or an already loaded dict), checked."""
    if isinstance(key, Mapping):
        data = dict(key)
        where = "the study key"
    else:
        path = Path(key)
        where = str(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UsageError(f"study key {path} does not exist (it is written next to the study page as {KEY_FILE})") from None
        except json.JSONDecodeError as exc:
            raise UsageError(f"study key {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict) or not data.get("study"):
        raise UsageError(f"{where} is not a study key (expected 'study' and 'tasks')")
    return data


def read_ranking(path: Union[str, Path], key: Mapping[str, Any]) -> dict[str, Any]:
    """One rater's ranking file, checked against the key: same study, every task, and in each
    task a rank 1..k for each of its k blinded ids exactly once."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"ranking file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"ranking file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("rankings"), dict):
        raise UsageError(f"ranking file {path} has no 'rankings' (was it saved by the study page?)")
    if data.get("study") != key["study"]:
        raise UsageError(f"ranking file {path} belongs to study {data.get('study')!r}, not to this key's "
                         f"{key['study']!r}")
    rater = data.get("rater")
    if not isinstance(rater, str) or not rater.strip():
        raise UsageError(f"ranking file {path} has no rater id")
    for task_id, task in key["tasks"].items():
        ranks = data["rankings"].get(task_id)
        ids = set(task["methods"])
        if not isinstance(ranks, dict) or set(ranks) != ids:
            raise UsageError(f"ranking file {path}: task {task_id} ({task['name'] or 'unnamed'}) must rank exactly "
                             f"the sets {', '.join(sorted(ids))}; got {sorted(ranks) if isinstance(ranks, dict) else ranks!r}")
        values = sorted(ranks.values()) if all(isinstance(v, int) and not isinstance(v, bool) for v in ranks.values()) else None
        if values != list(range(1, len(ids) + 1)):
            raise UsageError(f"ranking file {path}: task {task_id} ranks must be 1..{len(ids)} each once, "
                             f"got {sorted(ranks.values(), key=str)}")
    return data


def _collect(files: Iterable[Union[str, Path]], key: Mapping[str, Any]) -> dict[str, dict[str, list[int]]]:
    """task id -> method -> the ranks the raters gave it."""
    ranks: dict[str, dict[str, list[int]]] = {t: {m: [] for m in task["methods"].values()}
                                              for t, task in key["tasks"].items()}
    raters: dict[str, Path] = {}
    files = list(files)
    if not files:
        raise UsageError("no ranking files given")
    for f in files:
        data = read_ranking(f, key)
        rater = data["rater"].strip()
        if rater in raters:
            raise UsageError(f"rater {rater!r} appears twice ({raters[rater]} and {f}); each rater counts once")
        raters[rater] = Path(f)
        for task_id, task in key["tasks"].items():
            for blinded, rank in data["rankings"][task_id].items():
                ranks[task_id][task["methods"][blinded]].append(int(rank))
    return ranks


def _task_id(key: Mapping[str, Any], task: Optional[str]) -> str:
    tasks = key["tasks"]
    if task is None:
        if len(tasks) == 1:
            return next(iter(tasks))
        names = ", ".join(repr(t["name"]) for t in tasks.values())
        raise UsageError(f"this study has {len(tasks)} tasks ({names}): say which one")
    for task_id, t in tasks.items():
        if task in (task_id, t["name"]):
            return task_id
    raise UsageError(f"the study has no task {task!r}; it has {', '.join(repr(t['name']) for t in tasks.values())}")


def aggregate_rankings(files: Iterable[Union[str, Path]], key: Union[str, Path, Mapping[str, Any]],
                       task: Optional[str] = None) -> dict[str, float]:
    """{method: mean rank over raters} for one task (Table 4's number; 1 = best).  `task` (its
    name or id) is needed only when the study has several."""
    k = load_key(key)
    task_id = _task_id(k, task)
    ranks = _collect(files, k)[task_id]
    return {m: sum(r) / len(r) for m, r in ranks.items()}


def study_results(files: Iterable[Union[str, Path]], key: Union[str, Path, Mapping[str, Any]]) -> dict[str, Any]:
    """Every task's tally: {task name: {method: {mean, sd, std_error, n_raters, ranks}}}."""
    k = load_key(key)
    collected = _collect(files, k)
    out: dict[str, Any] = {}
    for task_id, per_method in collected.items():
        rows = {}
        for method, r in per_method.items():
            n = len(r)
            mean = sum(r) / n
            sd = math.sqrt(sum((v - mean) ** 2 for v in r) / (n - 1)) if n > 1 else None
            rows[method] = {"mean": mean, "sd": sd, "std_error": None if sd is None else sd / math.sqrt(n),
                            "n_raters": n, "ranks": r}
        out[k["tasks"][task_id]["name"]] = rows
    return out


def study_cells(files: Iterable[Union[str, Path]], key: Union[str, Path, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The table's cells from returned rankings: one per (method, task) with row = the method,
    column = the task name, value = the mean rank, error = its standard error over raters."""
    cells = []
    for column, rows in study_results(files, key).items():
        for row, r in rows.items():
            cells.append({"row": row, "column": column, "value": r["mean"], "error": r["std_error"],
                          "n_raters": r["n_raters"], "sd": r["sd"]})
    return cells


# -- from a table's runs ------------------------------------------------------------------------------
def split_method_name(name: str, column: str = "") -> tuple[str, str]:
    """A spec's study method name -> (row, column): ``"Row @ Column"`` or ``"Row"`` (+ `column`)."""
    if TASK_SEPARATOR in name:
        row, col = name.split(TASK_SEPARATOR, 1)
        return row.strip(), col.strip()
    return name.strip(), column


#: Which named samples of an objective a study shows: the model's final synthesis first
#: (CoopNets' Langevin-revised images), else the generator's.
SAMPLE_PREFERENCE = ("revised", "generator")


def _run_samples(run_dir: Path, n: int, seed: int) -> tuple[Tensor, tuple[float, float], str]:
    from .data import value_range
    from .rng import make_generator
    from .run import open_run

    opened = open_run(Path(run_dir), echo=lambda m: None)
    exp = opened.experiment
    named = exp.objective.samples(n, make_generator(seed, exp.device))
    kind = next((k for k in SAMPLE_PREFERENCE if k in named), next(iter(named)))
    return named[kind].detach().cpu(), value_range(exp.dataset), kind


def build_table_study(spec_study_options: Any, run_dirs: Mapping[str, Path], out: Path, seed: int) -> Path:
    """The study kit of a table (``[study]`` of its spec) from its trained runs.

    `spec_study_options` has `methods` ({method name: run id}), `images_per_method` and `column`;
    `run_dirs` maps method names to run directories (methods without one are left out, e.g.
    runs a smaller scale does not have).  A method whose run has no checkpoint (it failed) is
    left out too and listed under ``missing`` in the key.  Returns the page's path (or, when no
    method has a trained run, the path of a ``NOT-BUILT.txt`` saying why)."""
    n = int(spec_study_options.images_per_method)
    column = str(getattr(spec_study_options, "column", "") or "")
    tasks: dict[str, dict[str, Tensor]] = {}
    sources: dict[str, Any] = {}
    missing: dict[str, str] = {}
    for i, (method, run_id) in enumerate(spec_study_options.methods.items()):
        if method not in run_dirs:
            continue
        row, col = split_method_name(method, column)
        try:
            images, (lo, hi), kind = _run_samples(Path(run_dirs[method]), n, seed * 1000 + i)
        except UsageError as exc:  # no checkpoint: the run failed or never ran
            missing[method] = str(exc).splitlines()[0]
            continue
        # Every method onto [-1, 1] (runs may keep other pixel scales, e.g. raw 0..255).
        tasks.setdefault(col, {})[row] = (images.float() - lo) / (hi - lo) * 2.0 - 1.0
        sources[method] = {"run": run_id, "dir": str(run_dirs[method]), "samples": kind}
    if not tasks:
        # The table's runs all failed: say so where the kit would be, and let the table's
        # report (which records the failures) stand.
        Path(out).mkdir(parents=True, exist_ok=True)
        note = Path(out) / "NOT-BUILT.txt"
        note.write_text("No study kit: no method of the study has a trained run to take samples from.\n"
                        + "".join(f"- {m}: {why}\n" for m, why in missing.items()), encoding="utf-8")
        return note
    return write_study(Path(out), tasks, n, seed, notes={"sources": sources, "missing": missing})

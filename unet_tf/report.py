"""What a model gets wrong, image by image: `per_image.csv` and `report.html`.

    python -m unet_tf.evaluate --model runs/RUN/model.keras --split test --report

`per_image.csv` holds one row per image (see `evaluation.per_image_scores`): the file, its size,
Dice and IoU of every class (empty where a class is neither true nor predicted in the image), the
score photos are ranked by (objects vs background Dice, `foreground_dice`, or `mean_dice` for
models without a background class) and pixel accuracy.

`report.html` is one self-contained page (its pictures inside it, no script or style fetched from
anywhere, so it opens offline and can be mailed): the scores, the confusion matrix, the learning
curves of a run, the per-image table (click a column's heading to sort by it, again to reverse),
the worst photos with their errors, and the configuration.
"""

from __future__ import annotations

import base64
import csv
import html
import json
from pathlib import Path

import numpy as np

from unet_tf import plots
from unet_tf.evaluation import (
    SELECTION_NOTE,
    per_image_scores,
    photo_title,
    score_column,
    worst_first,
)
from unet_tf.files import atomic_path

# What evaluate writes beside its JSON (as <json name>_<file>), and a run into its folder.
FILES = {"confusion.png": "confusion matrix", "per_image.csv": "per-image scores",
         "worst.png": "worst photos", "report.html": "report page"}


def write_evaluation_files(outputs: dict, report: dict, cm, split, predicted, class_names,
                           worst: int = 8, page: bool = True, curves=None, title: str = "",
                           config: dict | None = None, rows: list | None = None) -> dict:
    """Writes the confusion matrix, the per-image table, the `worst` photos (none for 0) and with
    `page` the report page to `outputs`' paths (by kind, the keys of `FILES`), for the masks
    `predicted` of `split` scored in `report`; the page shows `curves` (a PNG) and `config` when
    given. Returns the paths written, by kind, in the order written."""
    plots.plot_confusion(cm, class_names, outputs["confusion.png"])
    rows = rows or per_image_scores(split.names, split.masks, predicted, class_names)
    write_per_image_csv(outputs["per_image.csv"], rows)
    column = score_column(class_names)
    written = {kind: outputs[kind] for kind in ("confusion.png", "per_image.csv")}
    pictures = [("learning curves", curves)] if curves else []
    if worst:
        picks = worst_first(rows, worst, column)
        plots.plot_worst([split.images[i] for i in picks], [split.masks[i] for i in picks],
                         [predicted[i] for i in picks], class_names,
                         [photo_title(rows[i], column) for i in picks], outputs["worst.png"])
        written["worst.png"] = outputs["worst.png"]
        pictures.append((f"the {len(picks)} photos with the lowest {column}", outputs["worst.png"]))
    if page:
        write_report_page(outputs["report.html"], title, report, class_names, cm, rows, column,
                          pictures, config,
                          notes=[SELECTION_NOTE] if report.get("chose_the_model") else [])
        written["report.html"] = outputs["report.html"]
    return written


def write_per_image_csv(path, rows: list) -> None:
    """`rows` (dicts of one set of keys) as CSV; None as an empty cell, scores to 6 decimals."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(rows[0]) if rows else ["file"])
            writer.writeheader()
            writer.writerows({key: _csv_value(value) for key, value in row.items()}
                             for row in rows)


def _csv_value(value):
    if value is None:
        return ""
    return f"{value:.6f}" if isinstance(value, float) else value


def write_report_page(path, title: str, report: dict, class_names, confusion, rows: list,
                      score_column: str, pictures=(), config: dict | None = None,
                      notes=()) -> None:
    """report.html: `report` (evaluation.evaluate_split's scores), the confusion matrix, the
    per-image `rows` sortable by any column (`score_column` first, lowest first), `pictures`
    ((caption, PNG path) pairs, embedded; missing files are left out), the configuration and
    `notes` (lines shown under the title)."""
    sections = [_scores_section(report, class_names), _confusion_section(confusion, class_names)]
    for caption, picture in pictures:
        if Path(picture).is_file():
            sections.append(f"<h2>{html.escape(caption)}</h2>\n{_image(picture, caption)}")
    order = worst_first(rows, len(rows), score_column)
    sections.append(_table_section([rows[i] for i in order], score_column))
    if config:
        sections.append("<h2>configuration</h2>\n<pre>"
                        + html.escape(json.dumps(config, indent=2)) + "</pre>")
    body = "\n".join(f"<section>{s}</section>" for s in sections)
    page = _PAGE.format(title=html.escape(title), style=_STYLE, script=_SCRIPT,
                        notes="".join(f"<p class=note>{html.escape(n)}</p>" for n in notes),
                        body=body)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")


def _scores_section(report: dict, class_names) -> str:
    lines = [f"<h2>scores: {html.escape(str(report.get('split', '')))}, "
             f"{report.get('examples', 0)} images</h2>",
             "<table class=scores><thead><tr><th>class</th><th>Dice</th><th>IoU</th></tr>"
             "</thead><tbody>"]
    for name in class_names:
        lines.append(f"<tr><td>{html.escape(name)}</td><td>{_number(report['dice'][name])}</td>"
                     f"<td>{_number(report['iou'][name])}</td></tr>")
    lines.append(f"<tr class=total><td>mean</td><td>{_number(report['mean_dice'])}</td>"
                 f"<td>{_number(report['mean_iou'])}</td></tr></tbody></table>")
    lines.append(f"<p>pixel accuracy {_number(report['pixel_accuracy'])}</p>")
    if "pet_vs_background" in report:
        b = report["pet_vs_background"]
        lines.append(f"<p>objects vs background: Dice {_number(b['dice'])} (mean per image "
                     f"{_number(b['mean_dice_per_image'])}), IoU {_number(b['iou'])}</p>")
    return "\n".join(lines)


def _confusion_section(confusion, class_names) -> str:
    cm = np.asarray(confusion, np.int64)
    shares = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    head = "".join(f"<th>{html.escape(n)}</th>" for n in class_names)
    rows = "".join(
        f"<tr><th>{html.escape(name)}</th>" + "".join(
            f"<td style='background:rgba(31,119,180,{share:.3f})'>{share:.1%}<br>"
            f"<small>{int(count):,}</small></td>" for count, share in zip(cm[i], shares[i]))
        + "</tr>" for i, name in enumerate(class_names))
    return ("<h2>confusion matrix</h2><p>rows: true class, columns: predicted; each row's share "
            f"of its true pixels</p><table class=confusion><thead><tr><th></th>{head}</tr>"
            f"</thead><tbody>{rows}</tbody></table>")


def _table_section(rows: list, score_column: str) -> str:
    columns = list(rows[0]) if rows else ["file"]
    head = "".join(f"<th title='sort by {html.escape(c)}'>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_cell(row[c], c == score_column) for c in columns) + "</tr>"
                   for row in rows)
    return (f"<h2>per image ({len(rows)})</h2><p>lowest {html.escape(score_column)} first; click a "
            f"heading to sort by it</p><table id=per-image class=sortable><thead><tr>{head}</tr>"
            f"</thead><tbody>{body}</tbody></table>")


def _cell(value, shaded: bool) -> str:
    if value is None:
        return "<td data-value=''>n/a</td>"
    if isinstance(value, float):
        # Scores from red (0) through yellow to green (1), so the bad rows stand out.
        style = (f" style='background:hsl({120 * min(max(value, 0.0), 1.0):.0f},70%,85%)'"
                 if shaded else "")
        return f"<td data-value='{value!r}'{style}>{value:.4f}</td>"
    return f"<td data-value='{html.escape(str(value), quote=True)}'>{html.escape(str(value))}</td>"


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _image(path, caption: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"<img alt='{html.escape(caption, quote=True)}' src='data:image/png;base64,{data}'>"


_PAGE = """<!DOCTYPE html>
<html lang=en>
<head><meta charset=utf-8><meta name=viewport content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<h1>{title}</h1>
{notes}
{body}
<script>{script}</script>
</body>
</html>
"""

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em;
       color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
td:first-child, th:first-child { text-align: left; }
.sortable th { cursor: pointer; background: #f2f2f2; position: sticky; top: 0; }
.sortable th[data-order=asc]::after { content: " \\25B2"; }
.sortable th[data-order=desc]::after { content: " \\25BC"; }
tr.total td { font-weight: bold; }
.note { background: #fff4d6; padding: 0.4em 0.8em; border-left: 4px solid #f0b400; }
img { max-width: 100%; height: auto; }
pre { background: #f6f6f6; padding: 0.8em; overflow: auto; max-height: 30em; }
"""

# Sorting: numbers as numbers, text with the numbers in it as numbers ("cat_2" before "cat_10"),
# empty cells (n/a) last either way.
_SCRIPT = """
function natural(a, b) {
  var x = a.split(/(\\d+)/), y = b.split(/(\\d+)/);
  for (var i = 0; i < Math.min(x.length, y.length); i++) {
    if (x[i] === y[i]) { continue; }
    if (i % 2 === 1) { return Number(x[i]) - Number(y[i]) || (x[i] < y[i] ? -1 : 1); }
    return x[i] < y[i] ? -1 : 1;
  }
  return x.length - y.length;
}
document.querySelectorAll("table.sortable th").forEach(function (th, column) {
  th.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0];
    var ascending = th.dataset.order !== "asc";
    table.querySelectorAll("th").forEach(function (h) { delete h.dataset.order; });
    th.dataset.order = ascending ? "asc" : "desc";
    function key(row) {
      var text = row.cells[column].dataset.value, number = Number(text);
      return text === "" ? null : isNaN(number) ? text : number;
    }
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a), y = key(b);
      if (x === null || y === null) { return (x === null) - (y === null); }
      var order = typeof x === "number" && typeof y === "number" ? x - y
                  : natural(String(x), String(y));
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  });
});
"""

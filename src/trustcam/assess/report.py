"""Write an assessment as ``metrics.json`` (for machines) and a self-contained ``report.html`` (for people).

The HTML embeds its plots and thumbnails as data URIs, so the file can be mailed or archived as evidence
and still render years later without a server.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from trustcam.assess.runner import Assessment

_CSS = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#1d2228;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem} h2{margin-top:2.2rem;border-bottom:1px solid #d0d5db;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.6rem 0}
th,td{padding:.3rem .7rem;border-bottom:1px solid #e3e6ea;text-align:right}
th:first-child,td:first-child{text-align:left} th{background:#f4f6f8}
.muted{color:#5c6670;font-size:.9rem} .bad{color:#b00020;font-weight:600} .good{color:#1b7a35;font-weight:600}
img.plot{max-width:100%;border:1px solid #e3e6ea;margin:.5rem 0}
.thumbs{display:flex;flex-wrap:wrap;gap:.6rem} .thumbs figure{margin:0;font-size:.8rem;max-width:220px}
.cards{display:flex;gap:1rem;flex-wrap:wrap}
.card{background:#f4f6f8;border-radius:8px;padding:.8rem 1.1rem;min-width:9rem}
.card b{display:block;font-size:1.5rem}
"""


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.1%}" if pct else f"{value:.3f}"
    return html.escape(str(value))


def _figure_uri(fig: plt.Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _image_uri(image: np.ndarray) -> str:
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return "data:image/jpeg;base64," + base64.b64encode(encoded.tobytes()).decode() if ok else ""


def _pr_plot(metrics: dict[str, Any]) -> str:
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for label, curve in metrics.get("pr_curves", {}).items():
        ap = metrics["per_class"].get(label, {}).get("ap50")
        ax.plot(curve["recall"], curve["precision"], label=f"{label} (AP50 {_fmt(ap)})", linewidth=2)
    point = metrics["overall"]
    if point.get("recall") is not None and point.get("precision") is not None:
        ax.scatter([point["recall"]], [point["precision"]], color="black", zorder=5,
                   label=f"operating point (score ≥ {metrics['pipeline']['score_threshold']:g})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="Precision-recall (IoU 0.5)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=9)
    return _figure_uri(fig)


def _conditions_plot(metrics: dict[str, Any]) -> str:
    conditions = metrics["conditions"]
    fig, ax = plt.subplots(figsize=(8, 4.6))
    clean = metrics["overall"].get("recall")
    for name, result in conditions.items():
        sev = sorted(result["severities"], key=int)
        ax.plot([int(s) for s in sev], [result["severities"][s]["recall"] or 0 for s in sev], marker="o", label=name)
    if clean is not None:
        ax.axhline(clean, color="black", linestyle="--", label="clean")
    ax.set(xlabel="severity", ylabel="recall", ylim=(0, 1), title="Recall per condition and severity")
    ax.set_xticks(range(1, 6))
    ax.grid(alpha=0.3)
    ax.legend(ncol=2, fontsize=8, loc="lower left")
    return _figure_uri(fig)


def _attacks_plot(metrics: dict[str, Any]) -> str:
    attacks = metrics["attacks"]
    panels = [k for k in ("pgd", "patch") if k in attacks]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, name in zip(axes[0], panels, strict=True):
        result = attacks[name]
        if name == "pgd":
            eps = sorted(result["by_eps"], key=float)
            xs = [0.0] + [float(e) for e in eps]
            ax.plot(xs, [result["clean_recall"] or 0] + [result["by_eps"][e]["recall"] or 0 for e in eps],
                    marker="o", label=metrics["pipeline"]["model"] + " (attacked)")
            ax.plot(xs, [result["clean_transfer_recall"] or 0]
                    + [result["by_eps"][e]["transfer_recall"] or 0 for e in eps],
                    marker="s", label=result["transfer_model"] + " (transfer)")
            ax.set(xlabel="L∞ budget (pixel levels)", ylabel="person recall", ylim=(0, 1), title="PGD perturbation")
            ax.legend(fontsize=8)
        else:
            names = ["clean", "random patch", "adversarial patch", "transfer"]
            values = [result["clean_recall"], result["random_patch_recall"], result["recall"],
                      result["transfer_recall"]]
            ax.bar(names, [v or 0 for v in values], color=["#4c78a8", "#9ecae9", "#e45756", "#f58518"])
            ax.set(ylabel="person recall", ylim=(0, 1), title="Printable adversarial patch")
            ax.tick_params(axis="x", labelrotation=15)
        ax.grid(alpha=0.3, axis="y")
    return _figure_uri(fig)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _ci(overall: dict[str, Any], key: str) -> str:
    ci = (overall.get("ci") or {}).get(key)
    return f" <span class='muted'>[{_fmt(ci[0])}–{_fmt(ci[1])}]</span>" if ci and None not in ci else ""


def _interval(ci: list[Any] | None) -> str:
    return f" <span class='muted'>[{_fmt(ci[0])}–{_fmt(ci[1])}]</span>" if ci and None not in ci else ""


def _flag(met: bool | None) -> str:
    return "–" if met is None else ("<span class='good'>met</span>" if met else "<span class='bad'>not met</span>")


def _video_attack_section(v: dict[str, Any]) -> list[str]:
    """The worn patch on video: share of per-person clips that still raise an event, without and with the defence."""
    parts = ["<h3>Video patch attack (event level)</h3>",
             f"<p>{v['people']} people in {html.escape(', '.join(v['clips']))}; patch {v['patch']['size']} px "
             f"worn on the torso following each track. <span class='muted'>Ground truth: "
             f"{html.escape(v['ground_truth'])}.</span></p>"]
    rows = []
    for name, c in v["conditions"].items():
        rows.append([html.escape(name), _fmt(c["primary_recall"]),
                     f"{c['no_defence']['events']}/{c['no_defence']['clips']}" + _interval(
                         c["no_defence"]["event_rate_ci95"]),
                     f"{c['defence']['events']}/{c['defence']['clips']}" + _interval(c["defence"]["event_rate_ci95"]),
                     str(c["defence"]["clips_with_evasion_alert"])])
    parts.append(_table(["worn", "primary per-frame recall", "events without defence", "events with defence",
                         "clips with evasion alert"], rows))
    goal = v["goal"]
    parts.append(f"<p>Goal: events in ≥ {goal['defended_event_rate_min']:.0%} of attacked clips with the defence — "
                 f"{'met' if goal['met'] else 'NOT met'}. False evasion alerts on the clean pass: "
                 f"{v['clean_pass']['false_evasion_alerts']}.</p>")
    return parts


def _defences_section(d: dict[str, Any]) -> list[str]:
    """The second opinion side by side with the primary alone: recall per attacked set, goals, costs, false alarms."""
    parts = ["<h2>Defences</h2>",
             f"<p>Second opinion: <b>{html.escape(d['model'])}</b> beside <b>{html.escape(d['primary'])}</b>; "
             "“with” = the primary's detections plus those only the second model found (same filters). "
             f"<span class='muted'>{html.escape(d['assumes'])}.</span></p>"]
    rows = []
    for row in d["image_sets"].values():
        w, d_ = row["without"], row["with"]
        rows.append([html.escape(row["description"]), str(row["images"]), _fmt(w["recall"]) + _interval(w["recall_ci"]),
                     _fmt(d_["recall"]) + _interval(d_["recall_ci"]), _fmt(w.get("ratio_to_clean"), True),
                     _fmt(d_.get("ratio_to_clean"), True)])
    if rows:
        parts.append(_table(["image set", "images", "person recall without", "with second opinion",
                             "without / clean", "with / clean"], rows))
    else:
        parts.append("<p class='muted'>No attacked image sets: add --attacks pgd,patch.</p>")
    goal_rows = [[f"{html.escape(name)}: with defence ≥ {g['target_ratio']:.0%} of clean recall "
                  f"({html.escape(g['set'])})", f"{_fmt(g['ratio_without'], True)} → {_fmt(g['ratio_with'], True)}",
                  _flag(g["met"])] for name, g in d["goals"].items() if name != "false_alarms"]
    fa = d["false_alarms"]
    goal_rows.append(["0 false evasion_suspected alerts on clean footage", _fmt(fa["evasion_alerts"]),
                      _flag(d["goals"]["false_alarms"]["met"])])
    parts.append(_table(["goal", "measured", ""], goal_rows))
    pc = d["precision_cost"]
    parts.append(f"<p>Cost on {pc['images']} clean images (labels {html.escape(', '.join(pc['labels']))}):</p>")
    parts.append(_table(["", "precision", "recall", "false positives / image"], [
        [name, _fmt(pc[key]["precision"]) + _interval(pc[key]["precision_ci"]),
         _fmt(pc[key]["recall"]) + _interval(pc[key]["recall_ci"]), _fmt(pc[key]["fp_per_image"])]
        for name, key in (("primary alone", "without"), ("with second opinion", "with"))]))
    if fa["source"] is None:
        parts.append(f"<p class='muted'>{html.escape(fa['note'])}.</p>")
    else:
        parts.append(f"<p>False alarms on clean footage ({html.escape(fa['source'])}, {fa['hours'] * 60:.1f} min, "
                     "camera pipeline with the second opinion on): <b>"
                     f"{_fmt(fa['evasion_alerts_per_hour'])}</b> evasion_suspected alerts per hour, "
                     f"<b>{_fmt(fa['secondary_only_events_per_hour'])}</b> events seen by the second model only per "
                     "hour.</p>")
        parts.append(_table(["clip", "seconds", "events", "seen by second model only", "evasion_suspected",
                             "frames checked", "detector time ratio"], [
            [html.escape(c["clip"]), f"{c['seconds']:.0f}", str(c["events"]), str(c["secondary_only_events"]),
             str(c["evasion_alerts"]), _fmt(c["checked_share"], True), _fmt(c["detector_time_ratio"], True)]
            for c in fa["clips"]]))
    return parts


def _wilson(ci: list[float] | None) -> str:
    return f" <span class='muted'>[{_fmt(ci[0])}–{_fmt(ci[1])}]</span>" if ci else ""


def _rate(value: Any, ci: list[Any] | None = None) -> str:
    """A rate with its interval: three decimals, or two significant digits below 0.01 (FMRs are small)."""
    def one(v: float) -> str:
        return f"{v:.3f}" if v == 0 or abs(v) >= 0.01 else f"{v:.2g}"

    if value is None:
        return "–"
    interval = f" <span class='muted'>[{one(ci[0])}–{one(ci[1])}]</span>" if ci and None not in ci else ""
    return f"{one(value)}{interval}"


def _px(value: Any) -> str:
    return "–" if value is None else f"{value:.0f}"


def _tar_cell(point: dict[str, Any]) -> str:
    if not point["supported"]:
        return f"<span class='muted'>not measured: {html.escape(point['note'])}</span>"
    return _rate(point["tar"], point["ci"]) + f" <span class='muted'>(threshold {point['threshold']:.4f})</span>"


def _faces_section(f: dict[str, Any]) -> list[str]:
    """Face recognition: threshold, verification, identification, conditions, groups (keys: docs/assess.md)."""
    c, t, ms = f["clean"], f["threshold"], f["measured"]
    parts = ["<h2>Faces</h2>",
             f"<p>{ms['people']} people, {ms['images']} images measured ({ms['gallery_per_person']} enrolment "
             f"image(s) per person in the gallery, {ms['probes']} probes). Operating threshold <b>{t['value']:.4f}"
             f"</b> for target FMR {t['target_fmr']:g}, {html.escape(t['source'])}: "
             f"<span class='muted'>{html.escape(t['note'])}.</span></p>"]
    rows = [[f"TAR at FMR {key}", _tar_cell(point)] for key, point in c["tar_at_fmr"].items()]
    rows += [["FNMR at the operating threshold", _rate(c["fnmr"], c["ci"]["fnmr"])],
             ["FMR at the operating threshold", _rate(c["fmr"], c["ci"]["fmr"])],
             ["rank-1 identification", _rate(c["rank1"], c["ci"]["rank1"])],
             ["no face found (counted as errors)", _rate(c["failure_to_acquire"])]]
    parts.append(_table(["clean images", "value (95% bootstrap interval over people)"], rows))
    if f.get("conditions"):
        first = next(iter(c["tar_at_fmr"]))
        parts.append("<h3>Per condition</h3><p class='muted'>Probes degraded, gallery clean (enrolment photos). "
                     "FNMR/FMR at the operating threshold above; TAR with the threshold re-fitted to the FMR.</p>")
        rows = [["clean", "", _px(c["median_face_px"]), _rate(c["failure_to_acquire"]),
                 _rate(c["rank1"], c["ci"]["rank1"]), _tar_cell(c["tar_at_fmr"][first]),
                 _rate(c["fnmr"], c["ci"]["fnmr"]), _rate(c["fmr"], c["ci"]["fmr"])]]
        for name, r in f["conditions"].items():
            about = html.escape(r["description"].removeprefix(f"{name}: "))
            for k, (sev, b) in enumerate(r["severities"].items()):
                rows.append([html.escape(name) + ("" if k else f"<br><span class='muted'>{about}</span>"), sev,
                             _px(b["median_face_px"]), _rate(b["failure_to_acquire"]),
                             _rate(b["rank1"], b["ci"]["rank1"]), _tar_cell(b["tar_at_fmr"][first]),
                             _rate(b["fnmr"], b["ci"]["fnmr"]), _rate(b["fmr"], b["ci"]["fmr"])])
        parts.append(_table(["condition", "severity", "face px (median)", "no face", "rank-1", f"TAR at FMR {first}",
                             "FNMR", "FMR"], rows))
    g = f.get("groups")
    if g:
        parts.append("<h3>Per group</h3><p class='muted'>At the operating threshold; FMR over impostor pairs within "
                     "the group.</p>")
        parts.append(_table(["group", "people", "FNMR", "FMR", "rank-1"], [
            [html.escape(name), str(r["people"]), _rate(r["fnmr"], r["ci"]["fnmr"]), _rate(r["fmr"], r["ci"]["fmr"]),
             _rate(r["rank1"], r["ci"]["rank1"])] for name, r in g["groups"].items()]))
        gaps = g["gaps"]
        ratio = gaps["fmr"].get("ratio")
        parts.append(f"<p>Largest gap between groups: FNMR <b>{_rate(gaps['fnmr']['gap'], gaps['fnmr']['ci'])}</b> "
                     f"(highest: {html.escape(str(gaps['fnmr']['highest']))}), FMR <b>"
                     f"{_rate(gaps['fmr']['gap'], gaps['fmr']['ci'])}</b> (highest: "
                     f"{html.escape(str(gaps['fmr']['highest']))}"
                     + (f", {ratio:.2g}× the lowest" if ratio is not None else "") + "), rank-1 <b>"
                     f"{_rate(gaps['rank1']['gap'], gaps['rank1']['ci'])}</b>.</p>")
    else:
        parts.append("<p class='muted'>The dataset carries no group labels: no per-group figures.</p>")
    parts.append("<p class='muted'>A face not found matches nobody (ISO/IEC 19795-1 generalised rates). Intervals: "
                 "bootstrap over people, not pairs. Public press photos (LFW) are easier than CCTV: calibrate and "
                 "measure on your own cameras' faces before relying on these figures.</p>")
    return parts


def _faces_page(m: dict[str, Any]) -> str:
    """The report of ``assess --faces``: the face section alone."""
    f = m["faces"]
    c, ds, mo = f["clean"], f["dataset"], f["model"]
    tar = c["tar_at_fmr"]
    key = next((k for k in reversed(list(tar)) if tar[k]["supported"]), next(iter(tar)))
    cards = [("rank-1", c["rank1"]), (f"TAR at FMR {key}", tar[key]["tar"]), ("FNMR at threshold", c["fnmr"]),
             ("FMR at threshold", c["fmr"])]
    variant = f", {html.escape(ds['variant'])}" if ds.get("variant") else ""
    return "\n".join([
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>trustcam face assessment – "
        f"{html.escape(ds['name'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>How reliable is face recognition here?</h1><p class='muted'>Dataset <b>{html.escape(ds['name'])}</b>"
        f"{variant} ({ds['people']} people, {ds['images']} images) · detector {html.escape(mo['detector'])} "
        f"<code>{mo['detector_sha256'][:16]}…</code> · embedding {html.escape(mo['embedding'])} "
        f"<code>{mo['embedding_sha256'][:16]}…</code> · trustcam {m['trustcam_version']} · {m['created']}</p>",
        "<div class='cards'>" + "".join(f"<div class='card'>{html.escape(n)}<b>{_rate(v)}</b></div>"
                                        for n, v in cards) + "</div>",
        *_faces_section(f),
        "<p class='muted'>Keys of metrics.json: docs/assess.md.</p></body></html>"])


def render_html(assessment: Assessment) -> str:
    m = assessment.metrics
    if "overall" not in m and "faces" in m:
        return _faces_page(m)
    o = m["overall"]
    ds, pl = m["dataset"], m["pipeline"]
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>trustcam assessment – "
             f"{html.escape(ds['name'])}</title><style>{_CSS}</style></head><body>",
             f"<h1>How reliable is this camera AI?</h1><p class='muted'>Dataset <b>{html.escape(ds['name'])}</b> "
             f"({ds['format']}, {ds['images']} images) · model <b>{html.escape(pl['model'])}</b> "
             f"<code>{pl['sha256'][:16]}…</code> · labels {', '.join(pl['labels'])} · operating point score ≥ "
             f"{pl['score_threshold']:g} · trustcam {m['trustcam_version']} · {m['created']}</p>",
             "<div class='cards'>"]
    cards = [("recall", o.get("recall"), True), ("precision", o.get("precision"), True), ("AP50", o.get("ap50"), False),
             ("false positives / image", o.get("fp_per_image"), False)]
    if "rpc" in m:
        cards.append(("rPC (robustness)", m.get("rpc"), True))
    if "pgd" in m.get("attacks", {}):
        cards.append((f"recall under PGD ε={m['attacks']['pgd']['eps']:g}", m["attacks"]["pgd"]["recall"], True))
    parts += [f"<div class='card'>{html.escape(n)}<b>{_fmt(v, pct)}</b></div>" for n, v, pct in cards]
    parts.append("</div>")

    parts.append("<h2>Accuracy on clean footage</h2>")
    parts.append(_table(["", "value (95% bootstrap interval)"], [
        ["recall (sensitivity)", _fmt(o.get("recall")) + _ci(o, "recall")],
        ["precision", _fmt(o.get("precision")) + _ci(o, "precision")],
        ["AP50", _fmt(o.get("ap50")) + _ci(o, "ap50")],
        ["AP50:95", _fmt(o.get("ap50_95"))],
        ["false positives per image", _fmt(o.get("fp_per_image"))],
        [f"score threshold for precision ≥ {_fmt(o.get('target_precision'))}",
         _fmt(o.get("threshold_for_target_precision"))],
        [f"frames with a {o['presence']['label']}: sensitivity / specificity",
         f"{_fmt(o['presence'].get('sensitivity'))} / {_fmt(o['presence'].get('specificity'))}"],
    ]))
    rows = [[html.escape(label), str(r.get("gt")), _fmt(r.get("recall")), _fmt(r.get("precision")), _fmt(r.get("ap50")),
             _fmt(r.get("ap50_95")), _fmt(r.get("fp_per_image"))] for label, r in m["per_class"].items()]
    parts.append(_table(["label", "objects", "recall", "precision", "AP50", "AP50:95", "FP / image"], rows))
    sizes = [("all labels", o.get("by_size") or {})] + [(label, r.get("by_size") or {})
                                                         for label, r in m["per_class"].items()]
    parts.append("<h3>By object size</h3><p class='muted'>COCO sizes by box area: small &lt; 32², medium &lt; 96², "
                 "large the rest (pixels of the image); Wilson 95% intervals. Small objects are where detectors "
                 "fail first.</p>" + _table(["label", "size", "objects", "recall", "precision", "FP"], [
                     [html.escape(label), size, str(r["gt"]), _fmt(r["recall"]) + _wilson(r.get("recall_ci")),
                      _fmt(r["precision"]) + _wilson(r.get("precision_ci")), str(r["fp"])]
                     for label, by_size in sizes for size, r in by_size.items()]))
    parts.append(f"<img class='plot' alt='precision-recall curves' src='{_pr_plot(m)}'>")

    if "tracking" in m:
        t, e = m["tracking"], m["events"]
        parts.append("<h2>Tracking and events (video)</h2>")
        parts.append(_table(["", "value"], [
            ["MOTA", _fmt(t.get("mota"))], ["IDF1", _fmt(t.get("idf1"))], ["ID switches", _fmt(t.get("id_switches"))],
            ["event recall (objects that raised an event)", _fmt(e.get("event_recall"))],
            ["false alarms per hour", _fmt(e.get("false_alarms_per_hour"))],
        ]))

    if "conditions" in m:
        parts.append("<h2>Conditions: night, weather, blur, compression</h2>")
        parts.append(f"<p>mPC (mean AP50 under corruption) <b>{_fmt(m.get('mpc'))}</b>, rPC (relative to clean) "
                     f"<b>{_fmt(m.get('rpc'), True)}</b>; mean recall under corruption {_fmt(m.get('mpc_recall'))} "
                     f"({_fmt(m.get('rpc_recall'), True)} of clean). As in Michaelis et al. 2019.</p>")
        rows = []
        for name, r in sorted(m["conditions"].items(), key=lambda kv: kv[1].get("recall") or 0):
            worst = min(r["severities"].values(), key=lambda v: v["recall"] or 0)
            about = r["description"].removeprefix(f"{name}: ")
            rows.append([f"{html.escape(name)}<br><span class='muted'>{html.escape(about)}</span>",
                         _fmt(r.get("recall")), _fmt(worst.get("recall")), _fmt(r.get("precision")),
                         _fmt(r.get("ap50"))])
        parts.append(_table(["condition", "recall (mean)", "recall (worst severity)", "precision", "AP50"], rows))
        parts.append(f"<img class='plot' alt='recall per condition' src='{_conditions_plot(m)}'>")

    if m.get("attacks"):
        parts.append("<h2>Adversarial attacks</h2>")
        rows = []
        a = m["attacks"]
        if "pgd" in a:
            for eps, r in a["pgd"]["by_eps"].items():
                rows.append([f"PGD L∞ ε={eps}, {a['pgd']['steps']} steps", _fmt(a["pgd"]["clean_recall"]),
                             _fmt(r["recall"]), _fmt(r["transfer_recall"])])
        if "patch" in a:
            p = a["patch"]
            rows.append([f"adversarial patch ({p['size']} px, {p['steps']} steps; random patch: "
                         f"{_fmt(p['random_patch_recall'])})", _fmt(p["clean_recall"]), _fmt(p["recall"]),
                         _fmt(p["transfer_recall"])])
        transfer = (a.get("pgd") or a.get("patch") or {}).get("transfer_model", "")
        parts.append(_table(["attack", "clean recall", "recall under attack",
                             f"transfer to {html.escape(transfer)}"], rows))
        parts.append(f"<img class='plot' alt='attack results' src='{_attacks_plot(m)}'>")
        if assessment.patch is not None:
            big = cv2.resize(assessment.patch, (160, 160), interpolation=cv2.INTER_NEAREST)
            parts.append(f"<p>The optimised patch:</p><img alt='adversarial patch' src='{_image_uri(big)}'>")

    if "second_opinion" in m.get("defences", {}):
        parts += _defences_section(m["defences"]["second_opinion"])
    if "video_patch" in m.get("defences", {}):
        parts += _video_attack_section(m["defences"]["video_patch"])

    if assessment.misses:
        parts.append("<h2>Worst misses</h2><p class='muted'>The largest objects the pipeline did not find "
                     "(clean footage), red box = ground truth.</p><div class='thumbs'>")
        for caption, thumb in assessment.misses:
            parts.append(f"<figure><img alt='{html.escape(caption)}' src='{_image_uri(thumb)}'>"
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        parts.append("</div>")
    parts.append("<h2>About these figures</h2><p class='muted'>Matching: IoU ≥ 0.5, each labelled object once; "
                 "ignore regions neither count as misses nor as false alarms. AP via pycocotools. Intervals: "
                 "bootstrap over images. Everything is measured through the same pipeline the cameras run "
                 "(tiling, filters, masks; motion gating and tracking for video). Keys of metrics.json: "
                 "docs/assess.md.</p></body></html>")
    return "\n".join(parts)


def write_report(assessment: Assessment, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.json"
    report_path = out / "report.html"
    metrics_path.write_text(json.dumps(assessment.metrics, indent=2, sort_keys=False) + "\n")
    report_path.write_text(render_html(assessment), encoding="utf-8")
    if assessment.patch is not None:
        cv2.imwrite(str(out / "patch.png"), assessment.patch)
    return metrics_path, report_path

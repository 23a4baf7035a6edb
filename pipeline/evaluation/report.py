"""The evaluation's report: the comparison as markdown (evaluation.md) and the figures worth recording in a manifest
(headline). Rendering only: the measuring is pipeline.evaluation.evaluate, the pictures pipeline.evaluation.figures."""

from __future__ import annotations

from typing import Any

from pipeline.core.recognition import HELLO_POLICIES

ROWS = {  # report key: what the row measures (the original project's comparison table)
    "backbone_baseline": "ImageNet backbone + linear classifier, whole photo",
    "whole_photo": "the classifier, whole photo",
    "hello_crop": "the classifier on the largest detector box, cropped",
    "hello": "what /hello answers (its policy: see below)",
}


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """The figures worth recording in a manifest: no per-class tables or matrices."""
    classifier = {row: {"top1": r["top1"], "top5": r["top5"], **({"top1_ci95": r["top1_ci95"]} if "top1_ci95" in r else {})}
                  for row, r in report["classifier"].items()}
    classifier["hello"]["no_detection_whole_photo_used"] = report["classifier"]["hello"]["no_detection_whole_photo_used"]
    return {"data": report["data"], "images": report["images"], "classifier": classifier,
            "hello_policy": report["hello_policy"], "whole_photo_share": report.get("whole_photo_share", 1.0),
            **({"selection": report["selection"]} if "selection" in report else {}),
            "calibration": report["calibration"], **({"detector": report["detector"]} if "detector" in report else {})}


def to_markdown(report: dict[str, Any]) -> str:
    rows = report["classifier"]
    hello, calibration = rows["hello"], report["calibration"]
    lines = [
        f"# Evaluation on {report['data'] or 'the labelled set'}",
        "",
        f"{report['images']} photos, {report['classes']} classes.",
        "",
        "| | top-1 (95% interval) | top-5 |",
        "|---|---|---|",
    ]
    for row, result in rows.items():
        note = f" (no detection, whole photo: {hello['no_detection_whole_photo_used']})" if row == "hello" else ""
        interval = result.get("top1_ci95")
        low_high = f" ({interval[0]:.1%}-{interval[1]:.1%})" if interval else ""
        lines.append(f"| {ROWS[row]}{note} | {result['top1']:.2%}{low_high} | {result['top5']:.2%} |")
    lines += [
        "",
        f"The whole-photo view: the centre {report.get('whole_photo_share', 1.0):.0%} of each side "
        "(pipeline.core.recognition.whole_photo_box). The interval is a bootstrap over the photos: figures whose "
        "intervals overlap this much may differ by chance.",
        "",
        f"/hello's policy: **{report['hello_policy']}** ({HELLO_POLICIES[report['hello_policy']]}).",
        "",
        (f"Unknown threshold for /hello answers (fitted on {calibration['fitted_on']}): "
         f"**{calibration['unknown_threshold']:.3f}** — answers at or above it are "
         f"right {calibration['precision']:.1%} of the time here (target {calibration['target_precision']:.0%}"
         f"{'' if calibration['target_met'] else ', not reached'}) and cover {calibration['coverage']:.1%} of the photos."),
        "",
    ]
    if "selection" in report:
        selection = report["selection"]
        lines += [f"Chosen on the selection split ({selection['photos']} photos held back from train):", ""]
        if "whole_photo_share" in selection:
            view = selection["whole_photo_share"]
            lines += ["| whole-photo view (centre share of each side) | top-1 | top-5 | log-loss |", "|---|---|---|---|"]
            lines += [f"| {share}{' (chosen)' if float(share) == view['chosen'] else ''} | {f['top1']:.2%} | {f['top5']:.2%} | "
                      f"{f['log_loss']:.4f} |" for share, f in view["shares"].items()]
            lines += [""]
        lines += [
                  f"| /hello policy | top-1 | top-5 | coverage at {calibration['target_precision']:.0%} precision |",
                  "|---|---|---|---|"]
        lines += [f"| {policy} | {f['top1']:.2%} | {f['top5']:.2%} | {f['coverage_at_target']:.1%} |"
                  for policy, f in selection["policies"].items()]
        if "flip_averaged" in selection:
            f = selection["flip_averaged"]
            lines.append(f"| {report['hello_policy']}, flip-averaged (not served: 2x the classifier) | {f['top1']:.2%} | "
                         f"{f['top5']:.2%} | |")
        fitted = selection["calibration"]
        lines += ["", f"Threshold there: {fitted['unknown_threshold']:.3f}, precision {fitted['precision']:.1%} at coverage "
                  f"{fitted['coverage']:.1%}.", ""]
    if "detector" in report:
        d = report["detector"]
        lines += [
            f"Detector on `{d['data']}`:",
            "",
            "| precision | recall | mAP50 | mAP50-95 |",
            "|---|---|---|---|",
            f"| {d['precision']:.3f} | {d['recall']:.3f} | {d['mAP50']:.3f} | {d['mAP50-95']:.3f} |",
            "",
        ]
    lines += ["## Per-class accuracy", "", "| class | photos | " + " | ".join(rows) + " |",
              "|---|---|" + "---|" * len(rows)]
    for label, entry in rows["whole_photo"]["per_class"].items():
        if entry["n"]:
            cells = " | ".join(f"{rows[row]['per_class'][label]['accuracy']:.0%}" for row in rows)
            lines.append(f"| {label} | {entry['n']} | {cells} |")
    return "\n".join(lines) + "\n"

"""`trustcam review`: what operators' verdicts say about the detector in the field, and the labels themselves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from trustcam.cli.common import ConfigOption, err, say, settings_from, user_errors

review_app = typer.Typer(help="Operators' true/false-positive verdicts on events.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(review_app, name="review")


@review_app.command("stats")
def stats(config: ConfigOption = None) -> None:
    """Field precision per camera, label and model: TP / (TP + FP) with a Wilson 95% interval."""
    from trustcam.storage.database import open_database
    from trustcam.storage.reviews import Reviews

    with user_errors():
        settings = settings_from(config)
        rows = Reviews(open_database(settings.resolved_database_url)).precision()
        if not rows:
            say("no reviewed events yet: mark events true or false positive in the web UI (or POST "
                "/api/events/{id}/review)")
            return
        typer.echo(f"{'camera':<16} {'label':<12} {'model':<28} {'TP':>5} {'FP':>5} {'precision':>9}  95% interval")
        for row in rows:
            low, high = row.interval
            typer.echo(f"{row.camera:<16} {row.label:<12} {row.model:<28} {row.true_positives:>5} "
                       f"{row.false_positives:>5} {row.precision:>9.3f}  [{low:.3f}, {high:.3f}]")


MaxShareOption = Annotated[float, typer.Option("--max-share", min=0.0, max=1.0,
                                               help="Flag a verdict set where one account gave more than this share.")]
MinVerdictsOption = Annotated[int, typer.Option("--min-verdicts", min=1,
                                                help="An account dominates only with at least this many verdicts.")]


@review_app.command("export")
def export(out: Annotated[Path, typer.Option("--out", "-o", help="JSON file to write.")],
           max_share: MaxShareOption = 0.5, min_verdicts: MinVerdictsOption = 10,
           config: ConfigOption = None) -> None:
    """Write every reviewed event as a label (event, camera, label, box, time, verdict, model sha256).

    A set dominated by one account is flagged on stderr and in the file's ``review_check``.
    """
    from trustcam.storage.database import open_database
    from trustcam.storage.reviews import Reviews, dominating_account

    with user_errors():
        settings = settings_from(config)
        labelled = Reviews(open_database(settings.resolved_database_url)).labelled()
        labels = [{"event": event.id, "camera": event.camera, "label": event.label, "box": event.box,
                   "start": event.start, "end": event.end, "score": event.best_score, "verdict": review.verdict,
                   "note": review.note, "reviewed_by": review.username, "reviewed_at": review.time,
                   "model": {"name": event.model_name, "sha256": event.model_sha256}}
                  for event, review in labelled]
        dominated = dominating_account((review for _, review in labelled), max_share, min_verdicts)
        groups: dict[tuple[str, str], list[Any]] = {}
        for event, review in labelled:
            groups.setdefault((event.camera, event.label), []).append(review)
        found = {key: dominating_account(reviews, max_share, min_verdicts) for key, reviews in sorted(groups.items())}
        dominated_groups = {key: group for key, group in found.items() if group is not None}
        if dominated is not None:
            warn(dominated.warning())
        for (camera, label), group in dominated_groups.items():
            warn(group.warning(f"{camera}/{label}"))
        check = {"max_share": max_share, "min_verdicts": min_verdicts,
                 "dominated": dominated.to_json() if dominated else None,
                 "dominated_groups": [{"camera": camera, "label": label, **group.to_json()}
                                      for (camera, label), group in dominated_groups.items()]}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"format": "trustcam-field-labels-v1", "review_check": check, "labels": labels},
                                  indent=2), encoding="utf-8")
        say(f"{len(labels)} reviewed event(s) written to {out}"
            + (" (flagged: dominated by one account)" if dominated or dominated_groups else ""))


@review_app.command("calibrate")
def calibrate(
    target_precision: Annotated[float, typer.Option(help="Precision the threshold must reach, with 95% confidence "
                                                    "(Wilson lower bound); below 1.")] = 0.95,
    min_samples: Annotated[int, typer.Option(min=1, help="Fewest verdicts at or above a proposed threshold.")] = 30,
    camera: Annotated[str | None, typer.Option(help="Only this camera (default: every camera with verdicts).")] = None,
    max_share: MaxShareOption = 0.5, min_verdicts: MinVerdictsOption = 10,
    allow_dominated: Annotated[bool, typer.Option("--allow-dominated", help="Propose thresholds even from a "
                                                  "verdict set dominated by one account.")] = False,
    config: ConfigOption = None,
) -> None:
    """Per camera and label, the lowest min_score whose events reach the target precision by operators' verdicts.

    Prints the proposal as a config snippet on stdout (nothing is changed); explanations go to stderr. Exit 1
    when a dominated verdict set was refused.
    """
    from trustcam.storage.database import open_database
    from trustcam.storage.reviews import Reviews, dominating_account
    from trustcam.storage.reviews import calibrate as calibrate_groups

    if not 0 < target_precision < 1:
        raise typer.BadParameter(f"--target-precision must lie between 0 and 1 (exclusive), got {target_precision}: "
                                 "no number of verdicts shows a precision of 1 with 95% confidence")
    with user_errors():
        settings = settings_from(config)
        labelled = Reviews(open_database(settings.resolved_database_url)).labelled()
        if camera is not None:
            labelled = [(event, review) for event, review in labelled if event.camera == camera]
        if not labelled:
            say(f"no reviewed events{f' on camera {camera!r}' if camera else ''} yet: mark events true or false "
                "positive in the web UI (or POST /api/events/{id}/review)")
            return
        overall = dominating_account((review for _, review in labelled), max_share, min_verdicts)
        if overall is not None:
            warn(overall.warning())
        proposals: dict[str, dict[str, tuple[float, str]]] = {}
        refused = False
        for group in calibrate_groups(labelled, target=target_precision, min_samples=min_samples,
                                      max_share=max_share, min_verdicts=min_verdicts):
            name = f"{group.camera}/{group.label} ({group.model}, {group.point.samples} verdicts"
            name += f"; {group.left_out} on other models or the second opinion left out)" if group.left_out else ")"
            if group.dominated is not None:
                warn(group.dominated.warning(f"{group.camera}/{group.label}"))
                if not allow_dominated:
                    refused = True
                    say(f"{name}: refused, the verdicts are dominated by {group.dominated.account!r}; pass "
                        "--allow-dominated to propose a threshold from them anyway")
                    continue
            say(f"{name}: {group.point.explain()}")
            if group.point.threshold is not None:
                p = group.point
                proposals.setdefault(group.camera, {})[group.label] = (
                    p.threshold, f"{p.true_positives}/{p.kept} true positive, lower bound {p.lower_bound:.3f}")
        if proposals:
            typer.echo(proposed_config(proposals, f"trustcam review calibrate: precision ≥ {target_precision:g} "
                                                  "with 95% confidence (Wilson lower bound) by operators' verdicts"))
        if refused:
            raise typer.Exit(1)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {escape(message)}")


def proposed_config(proposals: dict[str, dict[str, tuple[float, str]]], source: str) -> str:
    """A YAML snippet setting cameras.<camera>.objects.filters.<label>.min_score: a proposal, not applied."""
    lines = [f"# proposed by {source}", "# merge into your config by hand (nothing was changed), then restart",
             "cameras:"]
    for camera, labels in sorted(proposals.items()):
        lines += [f"  {_yaml_key(camera)}:", "    objects:", "      filters:"]
        for label, (threshold, note) in sorted(labels.items()):
            lines += [f"        {_yaml_key(label)}:", f"          min_score: {threshold:g}  # {note}"]
    return "\n".join(lines)


def _yaml_key(name: str) -> str:
    return name if name.replace("-", "").replace("_", "").isalnum() else json.dumps(name)

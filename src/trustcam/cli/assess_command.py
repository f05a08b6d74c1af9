"""``trustcam assess``: measure the pipeline on labelled footage, per condition and under attack."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from trustcam.cli.common import ConfigOption, camera_from, err, error, say, settings_from, user_errors

FORMATS = ("coco", "yolo", "mot")


def register(app: typer.Typer) -> None:
    app.command()(assess)


def parse_list(text: str | None, convert: Callable[[str], Any], what: str) -> tuple[Any, ...]:
    if not text:
        return ()
    try:
        return tuple(convert(part.strip()) for part in text.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(f"{what}: expected a comma-separated list, got {text!r}") from None


@contextmanager
def progress_bar() -> Iterator[Callable[[str, int], Callable[[], None]]]:
    """A rich progress bar on stderr (hidden when stderr is not a terminal) behind the runner's callback."""
    with Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=False, disable=not err.is_terminal) as bar:
        def start(description: str, total: int) -> Callable[[], None]:
            task = bar.add_task(description, total=total)
            return lambda: bar.advance(task)

        yield start


@contextmanager
def assess_errors() -> Iterator[None]:
    """Dataset, condition and attack problems are user errors too: one line, exit 1."""
    from trustcam.assess.adversarial import AttackUnavailable
    from trustcam.assess.conditions import ConditionError
    from trustcam.assess.datasets import DatasetError

    with user_errors():
        try:
            yield
        except (DatasetError, ConditionError, AttackUnavailable) as exc:
            error(exc)
            raise typer.Exit(1) from None


def options_from(settings: Any, *, conditions: str | None, severities: str | None, attacks: str | None,
                 eps: str, attack_images: int, patch_steps: int, labels: str | None, max_images: int | None,
                 bootstrap: int, seed: int, pgd_steps: int = 10, defence: str | None = None,
                 clean_clips: list[Path] | None = None, clean_clip_seconds: float | None = None,
                 target_precision: float | None = None, attack_clips: list[Path] | None = None) -> Any:
    from trustcam.assess.conditions import parse_conditions
    from trustcam.assess.defence import DEFENCES
    from trustcam.assess.runner import AssessOptions

    chosen_attacks = parse_list(attacks, str, "--attacks")
    unknown = [a for a in chosen_attacks if a not in ("pgd", "patch")]
    if unknown:
        raise typer.BadParameter(f"--attacks: unknown {', '.join(unknown)}; choose from pgd, patch")
    defences = parse_list(defence, str, "--defence")
    if any(d not in DEFENCES for d in defences):
        raise typer.BadParameter(f"--defence: unknown {defence!r}; choose from {', '.join(DEFENCES)}")
    if clean_clips and not defences:
        raise typer.BadParameter("--clean-clips measures a defence's false alarms: add --defence second-opinion")
    if attack_clips and not defences:
        raise typer.BadParameter("--attack-clips measures a defence against the video patch attack: add --defence "
                                 "second-opinion")
    sev = parse_list(severities, int, "--severities") or tuple(settings.assess.severities)
    if any(not 1 <= s <= 5 for s in sev):
        raise typer.BadParameter(f"--severities: each must be 1..5, got {severities}")
    return AssessOptions(
        conditions=parse_conditions(conditions), severities=sev, attacks=chosen_attacks,
        eps=parse_list(eps, float, "--eps"), pgd_steps=pgd_steps, attack_images=attack_images,
        patch_steps=patch_steps,
        labels=parse_list(labels, str, "--labels") or None,
        target_precision=target_precision or settings.assess.target_precision,
        bootstrap=bootstrap, seed=seed, max_images=max_images, defences=tuple(dict.fromkeys(defences)),
        clean_clips=tuple(str(p) for p in clean_clips or ()), clean_clip_seconds=clean_clip_seconds,
        attack_clips=tuple(str(p) for p in attack_clips or ()),
    )


DatasetOption = Annotated[Path | None, typer.Option("--dataset", "-d", help="Labelled images or video (COCO JSON, "
                                                    "YOLO folder, MOTChallenge sequence(s)).")]
FacesOption = Annotated[Path | None, typer.Option(
    "--faces", exists=True, file_okay=False, metavar="DATASET", help="Measure face recognition instead, on "
    "identity-labelled images (faces-id, or <person>/<images>): verification, rank-1, per condition and group.")]
IdentitiesOption = Annotated[int | None, typer.Option(min=4, help="--faces: only the first N people (quick look).")]
FormatOption = Annotated[str | None, typer.Option("--format", help="coco, yolo or mot (default: detected).")]
ConditionsOption = Annotated[str | None, typer.Option(help="'all', or a list such as fog,rain,low_light.")]
SeveritiesOption = Annotated[str | None, typer.Option(help="Corruption severities, e.g. 1,3,5 (default: config's).")]
AttacksOption = Annotated[str | None, typer.Option(help="pgd, patch or pgd,patch (needs the adversarial extra).")]
EpsOption = Annotated[str, typer.Option(help="PGD L∞ budgets in pixel levels (0..255).")]
AttackImagesOption = Annotated[int, typer.Option(min=2, help="Images with people used for attacks.")]
PatchStepsOption = Annotated[int, typer.Option(min=1, help="Optimisation steps of the adversarial patch.")]
LabelsOption = Annotated[str | None, typer.Option(help="Labels evaluated (default: the camera's tracked labels).")]
MaxImagesOption = Annotated[int | None, typer.Option(min=1, help="Assess only the first N images (quick look).")]
BootstrapOption = Annotated[int, typer.Option(min=0, help="Bootstrap resamples for confidence intervals.")]
SeedOption = Annotated[int, typer.Option(help="Seed of corruptions, attacks and bootstrap (reproducible).")]
DefenceOption = Annotated[str | None, typer.Option(
    "--defence", metavar="NAME", help="second-opinion: measure detector.second_opinion.model beside the primary, "
    "under each attack and on clean clips (false alarms).")]
CleanClipsOption = Annotated[list[Path] | None, typer.Option(
    "--clean-clips", exists=True, dir_okay=False, metavar="VIDEO",
    help="Clean video for the defence's false alarms (repeatable; default: a MOT dataset's own sequences).")]
AttackClipsOption = Annotated[list[Path] | None, typer.Option(
    "--attack-clips", exists=True, dir_okay=False, metavar="VIDEO",
    help="Video with people walking (repeatable): a patch optimised against the primary is worn by each person "
    "across their clip; events raised without and with the defence (minutes of CPU per clip).")]
CleanClipSecondsOption = Annotated[float | None, typer.Option(
    min=1, metavar="S", help="Only the first seconds of each clean clip.")]


def assess(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for metrics.json and report.html.")],
    dataset: DatasetOption = None,
    faces: FacesOption = None,
    identities: IdentitiesOption = None,
    fmt: FormatOption = None,
    config: ConfigOption = None,
    camera: Annotated[str | None, typer.Option(help="Camera whose settings are assessed (default: first).")] = None,
    model: Annotated[str | None, typer.Option(help="Detector model (default: the config's).")] = None,
    conditions: ConditionsOption = None,
    severities: SeveritiesOption = None,
    attacks: AttacksOption = None,
    eps: EpsOption = "2,4,8",
    attack_images: AttackImagesOption = 24,
    pgd_steps: Annotated[int, typer.Option(min=1, help="PGD iterations per image.")] = 10,
    patch_steps: PatchStepsOption = 200,
    labels: LabelsOption = None,
    max_images: MaxImagesOption = None,
    bootstrap: BootstrapOption = 1000,
    seed: SeedOption = 0,
    defence: DefenceOption = None,
    clean_clips: CleanClipsOption = None,
    clean_clip_seconds: CleanClipSecondsOption = None,
    attack_clips: AttackClipsOption = None,
    target_precision: Annotated[float | None, typer.Option(
        min=0.0, max=1.0, help="Propose the min_score reaching this precision with 95% confidence "
        "(default: assess.target_precision).")] = None,
) -> None:
    """Measure the pipeline's accuracy on labelled footage, per condition and under attack; or, with --faces,
    the accuracy of face recognition.

    Writes OUT/metrics.json and a self-contained OUT/report.html.
    """
    from trustcam.assess.datasets import load_dataset
    from trustcam.assess.report import write_report
    from trustcam.assess.runner import Assessor
    from trustcam.vision.detectors.onnx_models import load_detector

    if fmt is not None and fmt not in FORMATS:
        raise typer.BadParameter(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    if (dataset is None) == (faces is None):
        raise typer.BadParameter("give --dataset (detection) or --faces (face recognition); for both, run assess "
                                 "twice, each with its own --out")
    with assess_errors():
        settings = settings_from(config)
        camera_name, cam = camera_from(settings, camera)
        if faces is not None:
            if attacks or defence:
                raise typer.BadParameter("--attacks and --defence measure the detector: use them with --dataset")
            assess_faces(settings, cam, faces, out, conditions=conditions, severities=severities,
                         identities=identities, bootstrap=bootstrap, seed=seed)
            return
        assert dataset is not None
        options = options_from(settings, conditions=conditions, severities=severities, attacks=attacks, eps=eps,
                               attack_images=attack_images, patch_steps=patch_steps, labels=labels,
                               max_images=max_images, bootstrap=bootstrap, seed=seed, pgd_steps=pgd_steps,
                               defence=defence, clean_clips=clean_clips, clean_clip_seconds=clean_clip_seconds,
                               target_precision=target_precision, attack_clips=attack_clips)
        if options.attacks:
            from trustcam.assess.adversarial import AttackUnavailable, torch_available

            if not torch_available():
                raise AttackUnavailable("attacks need PyTorch: pip install 'trustcam[adversarial]' (make does)")
        data = load_dataset(dataset, fmt)
        detector = load_detector(model or settings.detector.model, threads=settings.detector.threads,
                                 score_threshold=settings.detector.score_threshold)
        with progress_bar() as progress:
            assessment = Assessor(data, settings, cam, detector, options, progress).assess()
        metrics_path, report_path = write_report(assessment, out)
        summarise(assessment.metrics)
        propose_thresholds(assessment.metrics, camera_name if settings.cameras else "CAMERA")
        say(f"wrote {metrics_path} and {report_path}")


def assess_faces(settings: Any, cam: Any, root: Path, out: Path, *, conditions: str | None, severities: str | None,
                 identities: int | None, bootstrap: int, seed: int) -> None:
    """``assess --faces``: the face assessment alone (metrics.json key ``faces``), at the camera's target FMR."""
    import time

    from trustcam import __version__
    from trustcam.assess.faces import FaceAssessOptions, parse_face_conditions
    from trustcam.assess.faces import assess_faces as measure
    from trustcam.assess.report import write_report
    from trustcam.assess.runner import Assessment
    from trustcam.vision.faces import FaceRecognizer

    sev = parse_list(severities, int, "--severities") or tuple(settings.assess.severities)
    if any(not 1 <= s <= 5 for s in sev):
        raise typer.BadParameter(f"--severities: each must be 1..5, got {severities}")
    options = FaceAssessOptions(conditions=parse_face_conditions(conditions), severities=sev, bootstrap=bootstrap,
                                seed=seed, identities=identities, target_fmr=cam.faces.target_fmr)
    with progress_bar() as progress:
        faces = measure(root, FaceRecognizer(), options, settings.data_dir, progress=progress)
    metrics = {"trustcam_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "faces": faces}
    metrics_path, report_path = write_report(Assessment(metrics), out)
    summarise_faces(faces)
    say(f"wrote {metrics_path} and {report_path}")


def summarise_faces(f: dict[str, Any]) -> None:
    def p(v: Any) -> str:
        return "–" if v is None else f"{v:.3f}"

    c, t = f["clean"], f["threshold"]
    say(f"{f['dataset']['name']}: {f['measured']['people']} people, {f['measured']['images']} images measured; "
        f"threshold {t['value']:.4f} for FMR {t['target_fmr']:g} ({t['source']})")
    tars = "  ".join(f"TAR@FMR {k} {p(v['tar'])}" + ("" if v["supported"] else " (too few impostor pairs)")
                     for k, v in c["tar_at_fmr"].items())
    say(f"  clean: {tars}  FNMR {p(c['fnmr'])}  FMR {p(c['fmr'])}  rank-1 {p(c['rank1'])}  "
        f"no face {p(c['failure_to_acquire'])}")
    for name, r in f.get("conditions", {}).items():
        say(f"  {name}: rank-1 {p(r['rank1'])}  FNMR {p(r['fnmr'])}  FMR {p(r['fmr'])}  "
            f"no face {p(r['failure_to_acquire'])} (mean over severities)")
    if f.get("groups"):
        gap = f["groups"]["gaps"]
        say("  groups: " + ", ".join(f"{g} FNMR {p(r['fnmr'])} FMR {p(r['fmr'])}" for g, r in
                                     f["groups"]["groups"].items())
            + f"; largest gap FNMR {p(gap['fnmr']['gap'])}, FMR {p(gap['fmr']['gap'])}")


def summarise(m: dict[str, Any]) -> None:
    o = m["overall"]

    def f(v: Any) -> str:
        return "–" if v is None else f"{v:.3f}"

    say(f"{m['dataset']['name']}: {m['dataset']['images']} images, model {m['pipeline']['model']}, "
        f"labels {', '.join(m['pipeline']['labels'])}")
    say(f"  recall {f(o['recall'])}  precision {f(o['precision'])}  AP50 {f(o['ap50'])}  AP50:95 {f(o['ap50_95'])}  "
        f"FP/image {f(o['fp_per_image'])}")
    if "conditions" in m:
        worst = min(m["conditions"].items(), key=lambda kv: kv[1]["recall"] or 0)
        say(f"  conditions: mPC {f(m['mpc'])}, rPC {f(m['rpc'])}; worst {worst[0]} (recall {f(worst[1]['recall'])})")
    for name, result in m.get("attacks", {}).items():
        say(f"  attack {name}: recall {f(result['recall'])} (clean {f(result['clean_recall'])}), transfer to "
            f"{result['transfer_model']} {f(result['transfer_recall'])}")
    if "second_opinion" in m.get("defences", {}):
        summarise_defence(m["defences"]["second_opinion"])


def summarise_defence(d: dict[str, Any]) -> None:
    """One line per attacked set (recall without → with the second opinion), the goals and the false alarms."""
    def f(v: Any) -> str:
        return "–" if v is None else f"{v:.3f}"

    say(f"  defence second opinion ({d['model']}, detection level):")
    for row in d["image_sets"].values():
        say(f"    {row['description']}: person recall {f(row['without']['recall'])} → {f(row['with']['recall'])}")
    for name, goal in d["goals"].items():
        if name != "false_alarms":
            state = {True: "met", False: "NOT met", None: "–"}[goal["met"]]
            say(f"    goal {name}: {f(goal['ratio_with'])} of clean recall with the defence (target "
                f"{goal['target_ratio']:g}): {state}")
    cost = d["precision_cost"]
    say(f"    clean images: precision {f(cost['without']['precision'])} → {f(cost['with']['precision'])}, FP/image "
        f"{f(cost['without']['fp_per_image'])} → {f(cost['with']['fp_per_image'])}")
    fa = d["false_alarms"]
    if fa["source"] is None:
        say(f"    {fa['note']}")
    else:
        say(f"    clean footage ({fa['hours'] * 60:.1f} min): {fa['evasion_alerts']} evasion_suspected alerts "
            f"({f(fa['evasion_alerts_per_hour'])}/h), {fa['secondary_only_events']} events seen by the second model "
            "only")


def propose_thresholds(m: dict[str, Any], camera: str) -> None:
    """Per label, the min_score reaching the target precision with 95% confidence, as a config snippet on stdout."""
    from trustcam.cli.review_commands import proposed_config
    from trustcam.storage.reviews import OperatingPoint

    proposals: dict[str, tuple[float, str]] = {}
    for label, result in m["per_class"].items():
        point = {k: v for k, v in result["operating_point"].items() if k != "precision"}
        if point["threshold"] is None:
            say(f"  {label}: {OperatingPoint(**point).explain('detections')}")
            continue
        proposals[label] = (point["threshold"], f"{point['true_positives']}/{point['kept']} detections right, "
                                                f"lower bound {point['lower_bound']:.3f}")
    if proposals:
        typer.echo(proposed_config({camera: proposals}, f"trustcam assess on {m['dataset']['name']}: precision ≥ "
                                                        f"{m['overall']['target_precision']:g} with 95% confidence "
                                                        "(Wilson lower bound), IoU ≥ 0.5"))

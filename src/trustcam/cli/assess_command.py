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
                 bootstrap: int, seed: int, pgd_steps: int = 10) -> Any:
    from trustcam.assess.conditions import parse_conditions
    from trustcam.assess.runner import AssessOptions

    chosen_attacks = parse_list(attacks, str, "--attacks")
    unknown = [a for a in chosen_attacks if a not in ("pgd", "patch")]
    if unknown:
        raise typer.BadParameter(f"--attacks: unknown {', '.join(unknown)}; choose from pgd, patch")
    sev = parse_list(severities, int, "--severities") or tuple(settings.assess.severities)
    if any(not 1 <= s <= 5 for s in sev):
        raise typer.BadParameter(f"--severities: each must be 1..5, got {severities}")
    return AssessOptions(
        conditions=parse_conditions(conditions), severities=sev, attacks=chosen_attacks,
        eps=parse_list(eps, float, "--eps"), pgd_steps=pgd_steps, attack_images=attack_images,
        patch_steps=patch_steps,
        labels=parse_list(labels, str, "--labels") or None, target_precision=settings.assess.target_precision,
        bootstrap=bootstrap, seed=seed, max_images=max_images,
    )


DatasetOption = Annotated[Path, typer.Option("--dataset", "-d", help="Labelled images or video (COCO JSON, YOLO "
                                             "folder, MOTChallenge sequence(s)).")]
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


def assess(
    dataset: DatasetOption,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for metrics.json and report.html.")],
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
) -> None:
    """Measure the pipeline's accuracy on labelled footage, per condition and under attack.

    Writes OUT/metrics.json and a self-contained OUT/report.html.
    """
    from trustcam.assess.datasets import load_dataset
    from trustcam.assess.report import write_report
    from trustcam.assess.runner import Assessor
    from trustcam.vision.detectors.onnx_models import load_detector

    if fmt is not None and fmt not in FORMATS:
        raise typer.BadParameter(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    with assess_errors():
        settings = settings_from(config)
        _, cam = camera_from(settings, camera)
        options = options_from(settings, conditions=conditions, severities=severities, attacks=attacks, eps=eps,
                               attack_images=attack_images, patch_steps=patch_steps, labels=labels,
                               max_images=max_images, bootstrap=bootstrap, seed=seed, pgd_steps=pgd_steps)
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
        say(f"wrote {metrics_path} and {report_path}")


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
